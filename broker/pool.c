/* The pool as a whole: growing and shrinking between min_pool_size and
 * max_pool_size, idle and lifetime timers, agents that leave with
 * statements out, reload, shutdown. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "backend.h"
#include "broker.h"
#include "clock.h"
#include "copy.h"
#include "listener.h"
#include "log.h"
#include "memory.h"
#include "pipeline.h"
#include "pool.h"
#include "request.h"
#include "waitq.h"

#define CANCEL_WAIT_NS (2000 * MS)   /* at exit, for cancel threads still out */
/* The breaker's schedule: after the n-th consecutive failed connect
 * observation the next connect waits min(100 ms * 2^(n-1),
 * breaker_reset_timeout_ms) (docs/failures.md). */
#define BREAKER_FIRST_WAIT_MS 100

/* An agent left with statements out: waiting or retrying ones are
 * dropped, running ones are cancelled and their backends cleaned up.
 * Returns 1 for a statement left to run in a shared pipeline. */
static int orphan(struct broker *b, struct agent *a, struct request *r)
{
	struct backend *be = r->be;

	r->agent = NULL;
	if (r->state == RQ_WAITING || r->state == RQ_DELAYED) {
		req_set_state(b, r, RQ_NONE, NULL);
		request_free(r);
		return 0;
	}
	/* A statement in a shared pipeline is not cancelled (the cancel could
	 * hit a neighbour's statement): it finishes and its answer is dropped.
	 * Only quick texts share pipelines (pool_submit). */
	if (be && be->state == BE_PIPELINE)
		return 1;
	if (!be || be->req != r || be->state != BE_BUSY)
		return 0;
	if (a->pinned == be)
		a->pinned = NULL;
	be->owner = NULL;
	if (a->session_pinned && !be->discard)
		be->discard = DISCARD_ALL;
	/* Mid-COPY IN: ended with an error, no cancel needed. */
	if (copy_orphan(b, be))
		return 0;
	/* Mid-statement: cancel it, then roll back and reuse the backend
	 * once it is idle and clean (see statement_done). */
	if (b->stopping) {	/* closing ends it: no cancel thread to wait for */
		be_close(b, be, CLOSE_SHUTDOWN);
		return 0;
	}
	log_info("agent %u gone mid-statement: cancelling on backend %u (pid %d)",
		 a->slot, be->slot, be->pg_pid);
	if (be_cancel(b, be) < 0)
		be_close(b, be, CLOSE_BROKEN);
	return 0;
}

/* a lets go of its idle pinned backend: what it left there (a transaction,
 * session state) is rolled back and discarded before anyone else uses it. */
static void unpin(struct broker *b, struct agent *a)
{
	struct backend *be = a->pinned;

	a->pinned = NULL;
	if (!be || be->state != BE_PINNED)
		return;
	be->owner = NULL;
	if (a->session_pinned && !be->discard)
		be->discard = DISCARD_ALL;
	log_debug("agent %u lets go of backend %u: cleaning it", a->slot, be->slot);
	if (PQtransactionStatus(be->pg) != PQTRANS_IDLE)
		be_reset(b, be, BE_ROLLBACK);
	else
		waitq_release(b, be);
}

void pool_agent_gone(struct broker *b, struct agent *a)
{
	struct list *pos;
	uint32_t piped = 0;

	a->running = NULL;
	while ((pos = list_pop(&a->active))) {
		a->nactive--;
		piped += (uint32_t)orphan(b, a, list_entry(pos, struct request, alink));
	}
	if (piped)
		log_info("agent %u gone: %u statement%s in shared pipelines run to completion "
			 "(not cancelled: a cancel could hit another agent's); results dropped",
			 a->slot, piped, piped == 1 ? "" : "s");
	unpin(b, a);
	free(a->begin);	/* never sent: nothing to undo */
	a->begin = NULL;
}

/* pgb_reset: a, with no statement running, starts a clean session. */
void pool_agent_reset(struct broker *b, struct agent *a)
{
	unpin(b, a);
	listener_agent_gone(b, a);	/* a clean session listens on nothing */
	a->session_pinned = 0;
	a->txn_open = 0;
	free(a->begin);	/* a transaction with nothing in it yet */
	a->begin = NULL;
}

void pool_grow(struct broker *b)
{
	uint32_t limit = b->pool_target;
	uint32_t want = 0;

	if (b->stopping == STOP_FAST)
		return;
	if (!list_empty(&b->waitq)) {
		struct request *head = list_entry(b->waitq.next, struct request, link);

		if (b->now_ns - head->enq_ns >= (int64_t)b->cfg.reserve_timeout_ms * MS)
			limit = (uint32_t)b->cfg.max_pool_size;
	}
	if (b->nwaiting > b->nconnecting)
		want = b->nwaiting - b->nconnecting;
	if (b->ntotal + want < (uint32_t)b->cfg.min_pool_size && !b->stopping)
		want = (uint32_t)b->cfg.min_pool_size - b->ntotal;
	/* After a failure the breaker lets one connect through at a time, on
	 * its schedule (pool_timers wakes up for it). */
	while (want-- > 0 && b->ntotal < limit && be_free_slot(b)) {
		enum breaker_state was = b->breaker.state;
		uint64_t ticket;

		if (!breaker_allow(&b->breaker, b->now_ns / MS, &ticket))
			break;
		if (was == BREAKER_OPEN && b->breaker.state == BREAKER_HALF_OPEN)
			log_info("circuit breaker half-open: one connection probes PostgreSQL");
		be_connect(b, ticket);
	}
}

/* The segment gets the last failed connect's cause in short: what follows
 * libpq's "connection to server ... failed: ", the server's own words. */
static void stats_connect_error(struct broker *b)
{
	const char *msg = b->last_connect_error, *p;

	if (!b->connect_fails && b->breaker.state == BREAKER_CLOSED) {
		b->st.connect_code[0] = b->st.connect_error[0] = '\0';
		return;
	}
	if ((p = strstr(msg, " failed: ")))
		msg = p + strlen(" failed: ");
	snprintf(b->st.connect_code, sizeof(b->st.connect_code), "%s", b->last_connect_code);
	snprintf(b->st.connect_error, sizeof(b->st.connect_error), "%.*s",
		 (int)sizeof(b->st.connect_error) - 1, msg);
}

#define POOL_TICK_MS 200	/* the pool controller's interval */

/* Once per POOL_TICK_MS while the pool is in use: the controller's
 * decision from the interval's peaks and waits (policy_pool_size); idle
 * backends above a smaller size close now, busy ones when released (the
 * oldest waiter still gets a released backend first). */
static void pool_ctl_tick(struct broker *b, int64_t *next_ns)
{
	struct pool_sample s;
	uint32_t t;

	if (b->now_ns < b->ctl_next_ns) {
		if (b->ctl_next_ns < *next_ns)
			*next_ns = b->ctl_next_ns;
		return;
	}
	s = (struct pool_sample){
		.target = b->pool_target,
		.min = (uint32_t)b->cfg.min_pool_size,
		.max = (uint32_t)b->cfg.max_pool_size,
		.cores = b->busy_target,
		.busy_peak = b->ctl_busy_peak,
		.pinned_peak = b->ctl_pinned_peak,
		.waited = b->ctl_waited,
	};
	t = policy_pool_size(&b->ctl, &s);
	if (t > b->pool_target) {
		b->st.c.pool_grows++;
		log_info("pool grows to %u backends: %u statements waited, %u pinned idle",
			 t, s.waited, s.pinned_peak);
	} else if (t < b->pool_target) {
		b->st.c.pool_shrinks++;
		log_debug("pool shrinks to %u backends: %u in use at most", t,
			  s.busy_peak + s.pinned_peak);
	}
	b->pool_target = t;
	b->ctl_busy_peak = b->nbusy;
	b->ctl_pinned_peak = b->npinned;
	b->ctl_waited = b->nwaiting;
	while (b->ntotal > t && b->ntotal > (uint32_t)b->cfg.min_pool_size &&
	       !list_empty(&b->idle))
		be_close(b, list_entry(b->idle.prev, struct backend, link), CLOSE_IDLE);
	/* Asleep while nothing happens at min_pool_size. */
	b->ctl_next_ns = b->now_ns + POOL_TICK_MS * MS;
	if ((t > s.min || b->nbusy || b->npinned || b->nwaiting) && b->ctl_next_ns < *next_ns)
		*next_ns = b->ctl_next_ns;
}

void pool_timers(struct broker *b, int64_t *next_ns)
{
	int64_t idle = (int64_t)b->cfg.idle_timeout_ms * MS, retry_ns;
	struct list *pos, *tmp;

	waitq_timers(b, next_ns);
	pool_ctl_tick(b, next_ns);
	/* Retire idle backends past their lifetime, and ping those idle past
	 * the validation interval so a dead one is found before it is handed
	 * out. */
	list_for_each_safe(pos, tmp, &b->idle) {
		struct backend *be = list_entry(pos, struct backend, link);
		int64_t every = (int64_t)b->cfg.validation_interval_ms * MS;

		if (be->retire_ns <= b->now_ns) {
			be_close(b, be, CLOSE_LIFETIME);
			continue;
		}
		if (be->retire_ns < *next_ns)
			*next_ns = be->retire_ns;
		if (!every)
			continue;
		if (be->validated_ns + every <= b->now_ns)
			be_reset(b, be, BE_VALIDATE);
		else if (be->validated_ns + every < *next_ns)
			*next_ns = be->validated_ns + every;
	}
	list_for_each_safe(pos, tmp, &b->connecting) {
		struct backend *be = list_entry(pos, struct backend, link);

		if (be->deadline_ns <= b->now_ns)
			be_connect_failed(b, be, "connection_timeout_ms expired");
		else if (be->deadline_ns < *next_ns)
			*next_ns = be->deadline_ns;
	}
	while (idle > 0 && b->ntotal > (uint32_t)b->cfg.min_pool_size && !list_empty(&b->idle)) {
		struct backend *be = list_entry(b->idle.prev, struct backend, link);

		if (be->last_used_ns + idle > b->now_ns) {
			if (be->last_used_ns + idle < *next_ns)
				*next_ns = be->last_used_ns + idle;
			break;
		}
		be_close(b, be, CLOSE_IDLE);
	}
	pool_grow(b);
	retry_ns = breaker_retry_at(&b->breaker) * MS;
	if (retry_ns > b->now_ns && retry_ns < *next_ns &&
	    (b->nwaiting || b->ntotal < (uint32_t)b->cfg.min_pool_size))
		*next_ns = retry_ns;
	b->st.breaker_state = b->breaker.state;
	b->st.breaker_failures = (uint32_t)b->breaker.failures;
	b->st.breaker_opened = b->breaker.times_opened;
	/* the breaker keeps monotonic ms; the segment speaks wall-clock ms */
	b->st.breaker_changed_ms = b->breaker.changed_ms ?
		wall_ms() - (b->now_ns / MS - b->breaker.changed_ms) : 0;
	b->st.breaker_retry_ms = breaker_retry_at(&b->breaker) ?
		wall_ms() + (breaker_retry_at(&b->breaker) - b->now_ns / MS) : 0;
	stats_connect_error(b);
}

int pool_init(struct broker *b)
{
	b->backends = calloc(b->nslots, sizeof(*b->backends));
	if (!b->backends)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->nslots; i++) {
		b->backends[i].slot = i;
		list_init(&b->backends[i].link);
	}
	list_init(&b->idle);
	list_init(&b->connecting);
	list_init(&b->waitq);
	list_init(&b->delayed);
	list_init(&b->pipes);
	b->heat = calloc(1, sizeof(*b->heat));	/* NULL: nothing is prepared */
	/* Names agents cannot guess ahead: _pgbroker_<token>_<n>. */
	if (getrandom(&b->stmt_token, sizeof(b->stmt_token), GRND_NONBLOCK) < 0)
		b->stmt_token = (uint32_t)getpid() ^ (uint32_t)b->now_ns;
	b->busy_target = (uint32_t)(sysconf(_SC_NPROCESSORS_ONLN) > 0 ?
					sysconf(_SC_NPROCESSORS_ONLN) : 1);
	b->pool_target = (uint32_t)b->cfg.pool_size;
	list_init(&b->flushq);
	list_init(&b->copyq);
	for (uint32_t i = 0; i < b->nslots; i++) {
		list_init(&b->backends[i].copy_link);
		list_init(&b->backends[i].pipeq);
		list_init(&b->backends[i].plink);
		list_init(&b->backends[i].flink);
		list_init(&b->backends[i].pause_link);
	}
	mem_init(b);
	breaker_init(&b->breaker, b->cfg.breaker_threshold, BREAKER_FIRST_WAIT_MS,
		     b->cfg.breaker_reset_timeout_ms, BREAKER_PACE_FROM_FIRST);
	b->cancel_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->cancel_efd < 0)
		return -errno;
	loop_poll(b->loop, b->cancel_efd, POLLIN, tag_make(TAG_CANCEL, 0, 0));
	pool_grow(b);
	return 0;
}

/* SIGTERM is done when nothing runs, waits or sits in a transaction. */
int pool_quiet(struct broker *b)
{
	if (b->nbusy || b->nwaiting || !list_empty(&b->delayed))
		return 0;
	for (uint32_t i = 0; i < b->nslots; i++) {
		struct backend *be = &b->backends[i];

		if (be->state == BE_PINNED && PQtransactionStatus(be->pg) != PQTRANS_IDLE)
			return 0;
	}
	return 1;
}

/* The fast way out: every running statement is cancelled; its agent hears
 * PostgreSQL's 57014 (the statement was rolled back). */
void pool_cancel_all(struct broker *b)
{
	for (uint32_t i = 0; i < b->nslots; i++) {
		struct backend *be = &b->backends[i];

		if ((be->state == BE_BUSY || be->state == BE_PIPELINE) && !be->cancel_pending &&
		    be_cancel(b, be) < 0)
			be_close(b, be, CLOSE_SHUTDOWN);
	}
}

/* After a reload: the breaker takes its new limits (keeping its state) and
 * tries a connect now if connects were failing;
 * a new max_connection_lifetime_ms counts from each open backend's start;
 * backends opened with other session settings, or beyond a smaller
 * max_pool_size, are closed now when idle, else when they are released.
 * An idle backend now past its lifetime goes at the next pool_timers. */
void pool_reconfigure(struct broker *b, const struct pgb_config *old)
{
	struct list *pos, *tmp;

	breaker_set_limits(&b->breaker, b->cfg.breaker_threshold, BREAKER_FIRST_WAIT_MS,
			   b->cfg.breaker_reset_timeout_ms);
	/* SIGHUP after fixing what the connects failed on (pg_hba.conf, a
	 * password, a database): the next connect goes now, not at its time. */
	breaker_retry_now(&b->breaker, b->now_ns / MS);
	if (old->statement_timeout_ms != b->cfg.statement_timeout_ms ||
	    old->idle_in_transaction_timeout_ms != b->cfg.idle_in_transaction_timeout_ms ||
	    old->keepalive_initial_delay_ms != b->cfg.keepalive_initial_delay_ms)
		b->cfg_gen++;
	if (b->cfg.max_pool_size > old->max_pool_size)
		be_capacity_check(b);
	/* a new pool_size is where the controller starts again */
	if (old->pool_size != b->cfg.pool_size)
		b->pool_target = (uint32_t)b->cfg.pool_size;
	if (b->pool_target > (uint32_t)b->cfg.max_pool_size)
		b->pool_target = (uint32_t)b->cfg.max_pool_size;
	if (b->pool_target < (uint32_t)b->cfg.min_pool_size)
		b->pool_target = (uint32_t)b->cfg.min_pool_size;
	if (old->max_connection_lifetime_ms != b->cfg.max_connection_lifetime_ms)
		for (uint32_t i = 0; i < b->nslots; i++)
			if (b->backends[i].state != BE_FREE)
				be_set_retire(b, &b->backends[i]);
	list_for_each_safe(pos, tmp, &b->idle) {
		struct backend *be = list_entry(pos, struct backend, link);

		if (be->cfg_gen != b->cfg_gen || b->ntotal > (uint32_t)b->cfg.max_pool_size)
			be_close(b, be, CLOSE_RELOAD);
	}
	pool_grow(b);
}

static int cancels_out(const struct broker *b)
{
	for (uint32_t i = 0; i < b->nslots; i++)
		if (__atomic_load_n(&b->backends[i].cancel_pending, __ATOMIC_ACQUIRE))
			return 1;
	return 0;
}

void pool_close_all(struct broker *b)
{
	int64_t until = clock_ns() + CANCEL_WAIT_NS, left;
	int pending;

	/* Cancel threads write into their backend's slot and then the
	 * eventfd: wait for them a little, all together; any still out keep
	 * both. */
	while ((pending = cancels_out(b)) && (left = until - clock_ns()) > 0) {
		struct pollfd p = { .fd = b->cancel_efd, .events = POLLIN };
		uint64_t n;

		if (poll(&p, 1, (int)(left / MS) + 1) > 0)
			(void)!read(b->cancel_efd, &n, sizeof(n));
	}
	for (uint32_t i = 0; i < b->nslots; i++)
		be_close(b, &b->backends[i], CLOSE_SHUTDOWN);
	free(b->heat);
	b->heat = NULL;
	free(b->copy_buf);
	b->copy_buf = NULL;
	if (pending) {
		log_warn("a cancel request is still out: exiting without waiting for it");
		return;
	}
	if (b->cancel_efd >= 0)
		close(b->cancel_efd);
	free(b->backends);
	b->backends = NULL;
}
