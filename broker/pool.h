/* pool.c: the pool as a whole: its size between min_pool_size and
 * max_pool_size, idle, lifetime and connect timers, agents that leave with
 * statements out, reload and shutdown. */
#ifndef PGB_BROKER_POOL_H
#define PGB_BROKER_POOL_H

#include <stdint.h>

struct broker;
struct agent;
struct pgb_config;

int pool_init(struct broker *b);
/* Open connections for waiters and min_pool_size, within the limits. */
void pool_grow(struct broker *b);
/* Every pool timer; lowers *next_ns to the next one due. */
void pool_timers(struct broker *b, int64_t *next_ns);
/* a is leaving: drop, cancel or clean up what it has out. */
void pool_agent_gone(struct broker *b, struct agent *a);
/* pgb_reset: a, with no statement running, starts a clean session. */
void pool_agent_reset(struct broker *b, struct agent *a);
/* SIGTERM is done when nothing runs, waits or sits in a transaction. */
int pool_quiet(struct broker *b);
/* SIGTERM twice: every running statement is cancelled. */
void pool_cancel_all(struct broker *b);
/* After a reload: apply what changed to open backends and the breaker. */
void pool_reconfigure(struct broker *b, const struct pgb_config *old);
void pool_close_all(struct broker *b);

#endif
