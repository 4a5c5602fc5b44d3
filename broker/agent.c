/* Agents: the bell (arm, wake), servicing their rings each pass,
 * throttling, timers, and disconnecting at the end of a pass. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "broker.h"
#include "futex.h"
#include "listen.h"
#include "listener.h"
#include "log.h"
#include "memory.h"
#include "pool.h"
#include "request.h"
#include "response.h"

/* Fair service: an agent costs the broker a bounded amount per loop pass,
 * however fast it writes or rings. It reads at most SERVICE_BUDGET frames
 * per pass (the rest wait on broker->ready for the next pass, behind the
 * others), and an agent whose bell rang BELL_IDLE_MAX times in a row with
 * nothing to do is not listened to for BELL_SNOOZE_NS: its ring is read
 * then, so only its own statements wait. */
#define SERVICE_BUDGET 64
#define BELL_IDLE_MAX  8
#define BELL_SNOOZE_NS (2 * 1000000LL)

/* A warning that a flood would repeat (refusals, silent connections): a
 * few lines per window, then one count ("... N more suppressed"). */
void agent_warn_limited(struct broker *b, struct ratelimit *rl, const char *fmt, ...)
{
	uint64_t told = 0;
	char line[512];
	va_list ap;

	if (log_level < LV_WARN || !ratelimit_take(rl, b->now_ns / 1000000, &told))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (told)
		log_warn("%s (and %llu more like it suppressed)", line, (unsigned long long)told);
	else
		log_warn("%s", line);
}

/* At the end of a window: the count of what it suppressed. */
static void warn_flush(struct broker *b, struct ratelimit *rl, const char *what,
		       int64_t *next_ns)
{
	int64_t next_ms = INT64_MAX;
	uint64_t n = ratelimit_flush(rl, b->now_ns / 1000000, &next_ms);

	if (n)
		log_warn("... %llu more %s suppressed", (unsigned long long)n, what);
	if (next_ms != INT64_MAX && next_ms * 1000000 < *next_ns)
		*next_ns = next_ms * 1000000;
}

struct agent *agent_by_tag(struct broker *b, uint64_t tag)
{
	uint32_t slot = TAG_SLOT(tag);
	struct agent *a;

	if (slot >= (uint32_t)b->cfg.max_agents)
		return NULL;
	a = b->agents[slot];
	if (!a || a->gen != TAG_GEN(tag) || a->state == AG_GONE)
		return NULL;
	return a;
}

/* Reading stops while an agent's COPY data waits for its backend, or while
 * it has this much outstanding: statements,
 * responses, or request bytes held (a queue of max_inflight_per_agent
 * statements of max_request_kb each would be gigabytes). */
int agent_backlogged(const struct broker *b, const struct agent *a)
{
	return a->copy_stalled ||
	       a->nqueued + a->nactive >= (uint32_t)b->cfg.max_inflight_per_agent ||
	       a->nresponses >= (uint32_t)b->cfg.max_inflight_per_agent ||
	       a->nbytes >= (uint64_t)b->cfg.max_request_kb * 1024;
}

/* Arm the futex wait on the agent's bell unless there is work right now.
 * Returns 1 when there is (the caller services the agent again). */
static __attribute__((warn_unused_result)) int agent_arm(struct broker *b, struct agent *a)
{
	uint32_t v;

	if (a->bell_armed || a->doom)
		return 0;
	v = chan_bell_arm(&a->chan->broker_armed, &a->chan->broker_bell);
	if (ring_has_data(&a->req) && !agent_backlogged(b, a))
		return 1;
	/* A response waits for room: the agent may have made some while
	 * broker_armed was clear, and then its notify rang no bell. */
	if (!list_empty(&a->responses) && ring_space(&a->resp) > a->blocked_space)
		return 1;
	loop_bell_wait(b->loop, &a->chan->broker_bell, v, a->bell_fd,
		       tag_make(TAG_BELL, a->slot, a->gen));
	a->bell_armed = 1;
	return 0;
}

void agent_lose(struct agent *a, enum agent_lost what)
{
	if (what <= a->lost)
		return;
	log_info("agent %u (pid %d): its %s died with its backend; its statements fail until %s",
		 a->slot, (int)a->pid, what == LOST_TXN ? "transaction" : "session",
		 what == LOST_TXN ? "it rolls back" : "it resets its session");
	a->lost = what;
}

void agent_wake(struct broker *b, struct agent *a)
{
	if (!a->want_wake) {
		a->want_wake = 1;
		list_add_tail(&b->wake, &a->wake_link);
	}
}

/* Make the agent's pgb_socket readable: a byte on its registration socket
 * (REG_F_SOCK_WAKE), which it drains; else its eventfd. */
static void agent_fd_signal(struct broker *b, struct agent *a)
{
	if (a->sock_wake)
		(void)!send(a->sock, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	else
		loop_eventfd_signal(b->loop, a->efd);
}

/* Once per loop pass: wake the agents we produced for that sleep. The
 * FUTEX_WAKEs ride in the loop's next submit (io_uring) or are made at
 * once (epoll). */
void agent_run_wakes(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->wake))) {
		struct agent *a = list_entry(pos, struct agent, wake_link);

		a->want_wake = 0;
		if (chan_bell_ring(&a->chan->agent_bell, &a->chan->agent_sleeping))
			loop_futex_wake(b->loop, &a->chan->agent_bell);
		if (chan_fd_take(a->chan))
			agent_fd_signal(b, a);
	}
}

/* A throttled agent's backlog drained: read its ring again this pass,
 * without waiting for a bell it has no reason to ring. */
void agent_unthrottle(struct broker *b, struct agent *a)
{
	if (!a->throttled || agent_backlogged(b, a) || a->doom)
		return;
	a->throttled = 0;
	if (list_empty(&a->ready_link))
		list_add_tail(&b->ready, &a->ready_link);
}

/* The agent rang for nothing too often: stop hearing its bell for a
 * while. On epoll its eventfd leaves the set, so its writes wake nobody. */
static void agent_snooze(struct broker *b, struct agent *a)
{
	if (a->bell_fd >= 0) {
		uint64_t rings;

		loop_cancel(b->loop, a->bell_fd, tag_make(TAG_BELL, a->slot, a->gen));
		/* cleared: back in the set, it is heard only if rung again */
		(void)!read(a->bell_fd, &rings, sizeof(rings));
	}
	a->snooze_ns = b->now_ns + BELL_SNOOZE_NS;
	list_del(&a->snooze_link);
	list_add_tail(&b->snoozed, &a->snooze_link);
}

/* from_bell: called for the bell's completion (the wait is used up);
 * otherwise a wait may still be armed and stays so. */
void agent_service(struct broker *b, struct agent *a, int from_bell)
{
	uint64_t frames = a->resp_frames;
	int start;

	if (a->svc_pass != b->pass) {
		a->svc_pass = b->pass;
		a->svc_budget = SERVICE_BUDGET;
	}
	start = a->svc_budget;
	if (from_bell) {
		a->bell_armed = 0;
		chan_bell_disarm(&a->chan->broker_armed);
	}
	for (;;) {
		request_read(b, a, &a->svc_budget);
		agent_flush(b, a);
		if (a->doom)
			return;
		if (a->svc_budget <= 0) {
			if (list_empty(&a->ready_link))
				list_add_tail(&b->ready, &a->ready_link);
			return;
		}
		/* A ring that finds work written just after the last look
		 * is idle once: only a run of them is a loop. */
		if (a->svc_budget < start || a->resp_frames != frames) {
			a->idle_bells = 0;
		} else if (from_bell && ++a->idle_bells >= BELL_IDLE_MAX) {
			agent_snooze(b, a);
			return;
		}
		from_bell = 0;
		if (!agent_arm(b, a))
			return;
	}
}

void agent_run_ready(struct broker *b)
{
	struct list batch;
	struct list *pos;

	/* Take this pass's list: agents that still have work re-add themselves. */
	list_init(&batch);
	if (list_empty(&b->ready))
		return;
	batch = b->ready;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	list_init(&b->ready);
	while ((pos = list_pop(&batch))) {
		struct agent *a = list_entry(pos, struct agent, ready_link);

		if (!a->doom)
			agent_service(b, a, 0);
	}
}

static const char *const agent_doom_names[] = {
	[DOOM_NONE] = "",
	[DOOM_HANGUP] = "hang-up",
	[DOOM_HELLO_POLL] = "registration poll failed",
	[DOOM_HELLO_BAD] = "bad registration message",
	[DOOM_HELLO_VERSION] = "client version mismatch",
	[DOOM_HELLO_BELL] = "client cannot ring an eventfd bell (epoll loop)",
	[DOOM_HELLO_CHANNEL] = "channel creation failed",
	[DOOM_HELLO_EVENTFD] = "eventfd creation failed",
	[DOOM_HELLO_TIMEOUT] = "not registered within hello_timeout_ms",
	[DOOM_REQ_CORRUPT] = "request ring corrupt",
	[DOOM_REQ_TYPE] = "unknown frame type",
	[DOOM_REQ_NESTED] = "new request inside an unfinished one",
	[DOOM_REQ_LENGTH] = "request length out of range",
	[DOOM_REQ_SEQUENCE] = "request frame out of sequence",
	[DOOM_REQ_LONG] = "request frame longer than its request",
	[DOOM_REQ_SHORT] = "request shorter than announced",
	[DOOM_RESP_CORRUPT] = "response ring corrupt",
	[DOOM_RESP_NOMEM] = "out of memory for a response",
	[DOOM_SEND_TIMEOUT] = "stopped reading its responses (send_timeout_ms)",
	[DOOM_CANCEL_DONE] = "cancel request answered",
	[DOOM_COPY_FRAME] = "malformed COPY frame",
	[DOOM_COPY_NESTED] = "COPY frame inside an unfinished request",
	[DOOM_COPY_NOMEM] = "out of memory for COPY data",
};

/* The transitions an agent may make (docs/architecture.md). */
static const unsigned char agent_moves[][AG_GONE + 1] = {
	[AG_NEW] = { [AG_HELLO] = 1 },
	[AG_HELLO] = { [AG_READY] = 1, [AG_GONE] = 1 },
	[AG_READY] = { [AG_GONE] = 1 },
};

void agent_set_state(struct broker *b, struct agent *a, enum agent_state to)
{
	assert(agent_moves[a->state][to]);
	if (a->state == AG_HELLO)
		list_del(&a->hello_link);
	a->state = to;
	if (to == AG_HELLO)
		list_add_tail(&b->hello, &a->hello_link);
	else if (to == AG_READY)
		b->st.c.agents_registered++;
}

void agent_fail(struct broker *b, struct agent *a, enum agent_doom why)
{
	if (a->doom)
		return;
	a->doom = why;
	list_add_tail(&b->doomed, &a->doom_link);
}

/* A hang-up after pgb_finish is a goodbye; without one the agent died. */
static void log_hangup(const struct agent *a)
{
	const char *txn = a->pinned && PQtransactionStatus(a->pinned->pg) != PQTRANS_IDLE ?
		"; its open transaction is rolled back" : "";
	uint32_t inflight = a->nqueued + a->nactive;

	if (a->state != AG_READY || !a->chan)
		log_debug("agent %u (pid %d) left before registering", a->slot, (int)a->pid);
	else if (!chan_said_bye(a->chan))
		log_info("agent %u (pid %d) died (no pgb_finish): %u statement%s in flight%s",
			 a->slot, (int)a->pid, inflight, inflight == 1 ? "" : "s", txn);
	else if (inflight || *txn)
		log_info("agent %u (pid %d) disconnected with %u statement%s in flight%s",
			 a->slot, (int)a->pid, inflight, inflight == 1 ? "" : "s", txn);
	else
		log_debug("agent %u (pid %d) disconnected", a->slot, (int)a->pid);
}

void agent_free(struct broker *b, struct agent *a)
{
	struct list *pos;

	agent_set_state(b, a, AG_GONE);
	uidcount_del(&b->per_uid, a->uid);
	/* Held back, never given to the pool: nobody else will free them. */
	while (!list_empty(&a->held)) {
		struct request *r = list_entry(a->held.next, struct request, link);

		req_set_state(b, r, RQ_NONE, NULL);
		list_del(&r->alink);
		a->nactive--;
		request_free(r);
	}
	pool_agent_gone(b, a);
	listener_agent_gone(b, a);
	while (!list_empty(&a->queue)) {
		struct request *r = list_entry(a->queue.next, struct request, link);

		req_set_state(b, r, RQ_NONE, NULL);
		request_free(r);
	}
	while ((pos = list_pop(&a->responses)))
		response_free(b, a, list_entry(pos, struct response, link));
	mem_agent_gone(b, a);
	if (a->rx_mem)
		mem_uncharge(b, NULL, a->rx_mem);
	list_del(&a->wake_link);
	list_del(&a->kick_link);
	list_del(&a->ready_link);
	list_del(&a->snooze_link);
	list_del(&a->blocked_link);
	chan_rx_reset(&a->rx);
	/* An armed bell, or (epoll) the bell eventfd the agent also holds. */
	if (a->bell_armed || a->bell_fd >= 0)
		loop_cancel(b->loop, a->bell_fd, tag_make(TAG_BELL, a->slot, a->gen));
	loop_cancel(b->loop, a->sock, tag_make(TAG_HUP, a->slot, a->gen));
	loop_cancel(b->loop, a->sock, tag_make(TAG_HELLO, a->slot, a->gen));
	if (a->chan)
		munmap(a->chan, a->chan_size);
	if (a->efd >= 0)
		close(a->efd);
	if (a->bell_fd >= 0)
		close(a->bell_fd);
	close(a->sock);
	b->agents[a->slot] = NULL;
	b->free_slots[b->nfree++] = a->slot;
	b->nagents--;
	b->st.c.agents_gone++;
	free(a);
}

/* Disconnects happen here, at the end of a pass, so no handler ever finds
 * an agent freed under it. */
void agent_run_doomed(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->doomed))) {
		struct agent *a = list_entry(pos, struct agent, doom_link);

		if (a->doom == DOOM_HANGUP)
			log_hangup(a);
		else if (a->doom == DOOM_CANCEL_DONE)
			log_debug("connection %u (pid %d): %s", a->slot, (int)a->pid,
				  agent_doom_names[a->doom]);
		else if (a->state == AG_HELLO)
			agent_warn_limited(b, &b->rl_silent, "agent %u (pid %d uid %d) disconnected: %s",
					   a->slot, (int)a->pid, (int)a->uid, agent_doom_names[a->doom]);
		else
			log_warn("agent %u (pid %d) disconnected: %s", a->slot, (int)a->pid,
				 agent_doom_names[a->doom]);
		if (a->doom != DOOM_HANGUP && a->state == AG_READY)
			b->st.c.protocol_errors++;
		agent_free(b, a);
	}
}

void agent_timers(struct broker *b, int64_t *next_ns)
{
	struct list *pos, *tmp;
	int64_t send_timeout = (int64_t)b->cfg.send_timeout_ms * 1000000;

	warn_flush(b, &b->rl_refused, "refused agents", next_ns);
	warn_flush(b, &b->rl_silent, "connections closed before registering", next_ns);
	/* Out of descriptors, accepting paused: try again now? */
	if (b->accept_retry_ns && b->now_ns >= b->accept_retry_ns) {
		b->accept_retry_ns = 0;
		if (!b->stopping)
			agent_accept_arm(b);
	} else if (b->accept_retry_ns && b->accept_retry_ns < *next_ns) {
		*next_ns = b->accept_retry_ns;
	}
	while (!list_empty(&b->snoozed)) {
		struct agent *a = list_entry(b->snoozed.next, struct agent, snooze_link);

		if (a->snooze_ns > b->now_ns) {
			if (a->snooze_ns < *next_ns)
				*next_ns = a->snooze_ns;
			break;
		}
		list_del(&a->snooze_link);
		if (!a->doom)
			agent_service(b, a, 0);	/* reads its ring, hears its bell again */
	}
	/* Oldest first; one timed out stays on the list, doomed, until its
	 * agent_free at the end of this pass. */
	list_for_each_safe(pos, tmp, &b->hello) {
		struct agent *a = list_entry(pos, struct agent, hello_link);

		if (a->doom)
			continue;
		if (a->hello_deadline_ns > b->now_ns) {
			if (a->hello_deadline_ns < *next_ns)
				*next_ns = a->hello_deadline_ns;
			break;
		}
		agent_fail(b, a, DOOM_HELLO_TIMEOUT);
	}
	list_for_each_safe(pos, tmp, &b->blocked) {
		struct agent *a = list_entry(pos, struct agent, blocked_link);
		int64_t due = a->blocked_since_ns + send_timeout;

		if (due <= b->now_ns)
			agent_fail(b, a, DOOM_SEND_TIMEOUT);
		else if (due < *next_ns)
			*next_ns = due;
	}
}

/* Every response handed to its agent's ring (SIGTERM waits for that). */
int agent_all_sent(const struct broker *b)
{
	return list_empty(&b->blocked);
}

void agent_close_all(struct broker *b)
{
	for (int i = 0; i < b->cfg.max_agents; i++) {
		struct agent *a = b->agents[i];

		if (!a)
			continue;
		if (a->chan) {
			uint64_t one = 1;

			chan_set_closing(a->chan);
			futex_wake(&a->chan->agent_bell);
			/* an agent polling pgb_socket() must wake up too */
			if (a->efd >= 0)
				(void)!write(a->efd, &one, sizeof(one));
		}
		agent_fail(b, a, DOOM_HANGUP);
	}
	agent_run_doomed(b);
}
