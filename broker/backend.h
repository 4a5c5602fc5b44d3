/* backend.c: one backend connection. Connecting (breaker, capacity check),
 * the one armed poll, flushing, the broker's own statements, closing (its
 * statements fail), and cancelling on a helper thread. */
#ifndef PGB_BROKER_BACKEND_H
#define PGB_BROKER_BACKEND_H

#include <stdint.h>
#include <libpq-fe.h>

#include "broker.h"

enum close_reason {
	CLOSE_IDLE, CLOSE_BROKEN, CLOSE_VALIDATION, CLOSE_LIFETIME, CLOSE_RELOAD, CLOSE_SHUTDOWN,
	CLOSE_UNCLEAN,
	CLOSE_MEMORY,   /* its libpq buffers grew large, or a row was too large */
};

/* The backend a TAG_BACKEND completion is for; NULL when stale. */
struct backend *pool_by_tag(struct broker *b, uint64_t tag);
/* The one place a backend changes state: counters and lists follow it. */
void be_set_state(struct broker *b, struct backend *be, enum be_state to);
/* Keep exactly one poll armed, for these events. */
void be_arm(struct broker *b, struct backend *be, int events);
/* A free slot whose cancel thread (if any) is done; NULL when none. */
struct backend *be_free_slot(struct broker *b);
/* Set retire_ns from created_ns and max_connection_lifetime_ms. */
void be_set_retire(struct broker *b, struct backend *be);
/* Start one connection in a free slot (nothing when there is none), in
 * the breaker's round ticket (breaker_allow). */
void be_connect(struct broker *b, uint64_t ticket);
void be_connect_failed(struct broker *b, struct backend *be, const char *why);
/* Warn when max_pool_size cannot fit the server's room, as last counted. */
void be_capacity_check(struct broker *b);
/* The capacity query's answer (a probe's result). */
void be_capacity_result(struct broker *b, PGresult *x);
/* PQconnectPoll's next step for a BE_CONNECTING backend. */
void be_on_connect_poll(struct broker *b, struct backend *be);
/* Close and free the slot; its running and pipelined statements fail. */
void be_close(struct broker *b, struct backend *be, enum close_reason why);
/* be_close (CLOSE_MEMORY) for a statement whose rows would not fit the
 * memory budget (rows.c): it is answered PB004 with msg. */
void be_close_too_large(struct broker *b, struct backend *be, const char *msg);
/* Send corked then libpq's output: 0 all out, 1 some left, -errno broken. */
int be_flush(struct backend *be);
/* After queuing output: flush it and arm for the answer (and POLLOUT
 * while output remains). 0, or -EIO: broken, be is closed. */
int be_flush_arm(struct broker *b, struct backend *be);
/* Run the broker's own statement on a backend nobody owns: how is one of
 * BE_ROLLBACK, BE_DISCARD, BE_VALIDATE (an empty query), BE_PROBE. */
void be_reset(struct broker *b, struct backend *be, enum be_state how);
/* Running one of those (drain hands its results to nobody). */
int be_resetting(const struct backend *be);
/* Send a cancel from a helper thread; -errno when none could start. */
int be_cancel(struct broker *b, struct backend *be);
/* A cancel thread finished: parked backends whose cancel is through go back. */
void pool_on_cancel(struct broker *b);

#endif
