/* pipeline.c: shared pipelines: autocommit statements of several agents on
 * one backend, each with its own Sync, flushed once per loop pass. */
#ifndef PGB_BROKER_PIPELINE_H
#define PGB_BROKER_PIPELINE_H

#include <libpq-fe.h>

/* Which statements share a pipeline (pool_submit, pipe_pick), so that
 * none waits behind a slow one:
 * - only a pipelinable text (sql_classify) whose own recent runs were
 *   quick: timed at least once, an EWMA of at most PIPE_QUICK_EWMA_US and
 *   a max (decaying by 1/8 per run, stmtcache.h) of at most
 *   PIPE_QUICK_MAX_US. A text seen first, or slow lately, runs alone.
 * - a pipeline takes more statements only while its head has run for at
 *   most PIPE_HEAD_FRESH_NS (a quick text may still meet a lock). */
#define PIPE_QUICK_EWMA_US 4000
#define PIPE_QUICK_MAX_US  20000
#define PIPE_HEAD_FRESH_NS (8 * MS)

struct broker;
struct backend;
struct request;

/* Start a pipeline on a free backend with r at its head. */
void pipe_start(struct broker *b, struct backend *be, struct request *r);
/* The pipeline r may join now, or NULL. */
struct backend *pipe_pick(struct broker *b);
void pipe_join(struct broker *b, struct backend *be, struct request *r);
/* Read a pipelined backend's results; answer each statement at its Sync. */
void pipe_drain(struct broker *b, struct backend *be);
/* Leave pipeline mode after the last Sync: 0, or -EIO when broken. */
int pipe_exit(PGconn *pg);
/* Once per loop pass: send what every pipeline queued. */
void pool_flush(struct broker *b);

#endif
