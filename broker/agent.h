/* agent.c: agents: the bell (arm, wake), servicing their rings each pass,
 * throttling, timers, and disconnecting at the end of a pass. */
#ifndef PGB_BROKER_AGENT_H
#define PGB_BROKER_AGENT_H

#include <stdint.h>

#include "broker.h"

/* The agent a completion is for; NULL when stale or gone. */
struct agent *agent_by_tag(struct broker *b, uint64_t tag);
/* Read a's requests and stream its responses (from_bell: its bell rang). */
void agent_service(struct broker *b, struct agent *a, int from_bell);
/* Reading stops while a has this much outstanding. */
int agent_backlogged(const struct broker *b, const struct agent *a);
/* a's backlog may have drained: read its ring again this pass. */
void agent_unthrottle(struct broker *b, struct agent *a);
/* a's transaction or session died with its backend: every statement of
 * a fails until it acknowledges that (ROLLBACK, pgb_reset). */
void agent_lose(struct agent *a, enum agent_lost what);
/* Wake a at the end of this pass (agent_run_wakes). */
void agent_wake(struct broker *b, struct agent *a);
/* Free a now (only where no handler can still hold it: agent_run_doomed,
 * or a silent connection making room in agent_accept). */
void agent_free(struct broker *b, struct agent *a);
/* A warning a flood would repeat: a few per window, then a count. */
void agent_warn_limited(struct broker *b, struct ratelimit *rl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The one place an agent changes state (and joins or leaves the hello
 * list); debug builds assert the transition. */
void agent_set_state(struct broker *b, struct agent *a, enum agent_state to);
/* Disconnect a at the end of this pass (agent_run_doomed); the first
 * reason given is the one logged. */
void agent_fail(struct broker *b, struct agent *a, enum agent_doom why);
/* Once per loop pass, in this order after the completions. */
void agent_run_ready(struct broker *b);
void agent_run_doomed(struct broker *b);
void agent_run_wakes(struct broker *b);
void agent_timers(struct broker *b, int64_t *next_ns);
/* Every response handed to its agent's ring (SIGTERM waits for that). */
int agent_all_sent(const struct broker *b);
void agent_close_all(struct broker *b);

#endif
