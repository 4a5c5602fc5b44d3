/* listener.c: notifications without pinning. The broker's own listening
 * connection is subscribed to the union of the channels its agents LISTEN
 * on; each notification goes to every agent listening on its channel, in
 * the order PostgreSQL sent them, through a bounded queue per agent
 * (docs/notifications.md). */
#ifndef PGB_BROKER_LISTENER_H
#define PGB_BROKER_LISTENER_H

#include <stdint.h>

#include "broker.h"

/* Notifications delivered to an agent and not yet taken (pgb_notifies):
 * beyond this they are dropped, and the agent is told (NOTIFY_MISSED). */
#define LSN_QUEUE_MAX 1024u
/* Channels one agent may listen on at once. */
#define LSN_AGENT_MAX 1024u

int listener_init(struct broker *b);
/* At exit: close the connection, free everything (after the agents). */
void listener_free(struct broker *b);
/* r (not a batch) is one LISTEN ch, UNLISTEN ch or UNLISTEN *: the broker
 * answers it, at once or (a channel the connection does not listen on yet)
 * once the listening connection listens. 1 when r was taken (it then ends
 * here), 0 for any other text. */
int listener_take(struct broker *b, struct request *r);
/* a leaves (or resets its session): it listens on nothing any more. */
void listener_agent_gone(struct broker *b, struct agent *a);
/* The listening connection's socket (TAG_LISTENER) is ready. */
void listener_on_poll(struct broker *b, uint64_t tag, int res);
/* Connect and connect-timeout timers; shutdown fails LISTENs that wait. */
void listener_timers(struct broker *b, int64_t *next_ns);
/* The listening connection's server pid, 0 while there is none. */
int listener_pid(const struct broker *b);
/* Channels listened on (by at least one agent). */
uint32_t listener_channels(const struct broker *b);

#endif
