/* exec.c: running statements on a backend: sending one (or a batch),
 * reading its results, and finishing it: retry, answer, pin or release. */
#ifndef PGB_BROKER_EXEC_H
#define PGB_BROKER_EXEC_H

#include <stdint.h>
#include <libpq-fe.h>

struct broker;
struct backend;
struct request;

/* The statement succeeded (a NULL result did not). */
int result_ok(const PGresult *x);
/* Run r on be (idle, or pinned to r's agent): alone, as a batch, or at
 * the head of a new shared pipeline. */
void exec_start(struct broker *b, struct backend *be, struct request *r);
/* A poll on be fired (res: its events or -errno): flush, read, finish. */
void pool_on_poll(struct broker *b, struct backend *be, int res);
/* Read what be's server sent and finish its statement when it is done
 * (what a poll does after reading); COPY goes on from here (copy_run). */
void exec_drain(struct broker *b, struct backend *be);
/* be was paused (memory.c) and may read again: take what libpq holds
 * already, then wait for its socket. */
void exec_resume(struct broker *b, struct backend *be);
/* Fold one statement's execution time into the moving average. */
void exec_time(struct broker *b, const struct request *r, int64_t ns);
/* PQexec's rule: keep the last result, but an error wins. */
void exec_keep_result(struct backend *be, PGresult *x);
/* r ran as text after its prepared statement failed, and worked: forget
 * that prepared statement (it is stale). */
void exec_stale_forget(struct broker *b, struct request *r);

#endif
