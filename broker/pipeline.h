/* pipeline.c: shared pipelines: autocommit statements of several agents on
 * one backend, each with its own Sync, flushed once per loop pass. */
#ifndef PGB_BROKER_PIPELINE_H
#define PGB_BROKER_PIPELINE_H

#include <libpq-fe.h>

#define PIPE_HEAD_FRESH_NS (8 * MS) /* join only pipelines whose head is quick */

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
/* Take be off the list of pipelines (its statements are elsewhere now). */
void pipe_leave(struct broker *b, struct backend *be);
/* Leave pipeline mode after the last Sync: 0, or -EIO when broken. */
int pipe_exit(PGconn *pg);
/* Once per loop pass: send what every pipeline queued. */
void pool_flush(struct broker *b);

#endif
