/* rows.c: the rows of the statement a backend runs, read one at a time
 * (libpq's single-row mode), gathered into chunks and sent ahead to the
 * agent in rows messages, so that no result is held whole; reading pauses
 * while the agent's ring is full or the broker is over its memory budget. */
#ifndef PGB_BROKER_ROWS_H
#define PGB_BROKER_ROWS_H

#include <libpq-fe.h>

struct broker;
struct backend;
struct agent;
struct request;

/* Right after a statement was sent on be: its rows come one at a time.
 * Harmless when the statement sent is not the one libpq reads now. */
void rows_single(struct backend *be);
/* Before reading be's socket: the most libpq may take in now (pqread.h),
 * or 0 for not now (paused, or be was closed: its statement went over
 * max_memory_mb's limits and was answered PB004). */
uint64_t rows_read_quota(struct broker *b, struct backend *be);
/* After the read: libpq took in got bytes (held until rows hand them out). */
void rows_read_done(struct broker *b, struct backend *be, uint64_t got);
/* One row (PGRES_SINGLE_TUPLE, now ours) of be's running statement. */
void rows_add(struct broker *b, struct backend *be, PGresult *x);
/* Any other result of it (now ours): PQexec's rule (exec_keep_result),
 * and the rows of a result set that a later one replaces go too. */
void rows_keep(struct broker *b, struct backend *be, PGresult *x);
/* 1 when rows went out ahead: the statement may not run again. */
int rows_streamed(const struct backend *be);
/* Answer r's agent a with res (now its) and the rows kept. */
void rows_respond(struct broker *b, struct backend *be, struct agent *a, struct request *r,
		  PGresult *res);
/* be's statement, of agent a (NULL: gone), is over: drop what is left of
 * its rows and input. */
void rows_reset(struct broker *b, struct backend *be, struct agent *a);

#endif
