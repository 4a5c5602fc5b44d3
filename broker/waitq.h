/* waitq.c: statements waiting for a backend: submitting, handing a freed
 * backend to the oldest waiter, the retry backoff list, and their timers. */
#ifndef PGB_BROKER_WAITQ_H
#define PGB_BROKER_WAITQ_H

#include <stddef.h>
#include <stdint.h>

struct broker;
struct backend;
struct request;

/* Run r now on a backend (its agent's pinned one, a pipeline, an idle
 * one), or queue it, or answer it with the broker's own error. */
void pool_submit(struct broker *b, struct request *r);
/* be is free for the next statement: the oldest waiter gets it, else it
 * goes idle (or is parked, cleaned, retired, closed first). */
void waitq_release(struct broker *b, struct backend *be);
/* Put r on the delayed list for another try after a backoff; 0 when
 * attempts or the acquire deadline do not allow one. */
int waitq_retry(struct broker *b, struct request *r, const char *why);
/* Why statements fail fast while the breaker is open (PB002) or
 * misconfigured (PB010): the SQLSTATE returned, the message in msg. */
const char *waitq_fail_fast_error(struct broker *b, char *msg, size_t n);
/* The breaker opened, or its probe failed: every waiter hears why now. */
void waitq_fail_all(struct broker *b);
/* Acquire timeouts and retries due; lowers *next_ns to the next due. */
void waitq_timers(struct broker *b, int64_t *next_ns);
/* Stop taking statements: waiting and delayed ones are answered now. */
void pool_shutdown(struct broker *b);

#endif
