/* Statements waiting for a backend: submitting, handing a freed
 * backend to the oldest waiter, the retry backoff list, and their timers. */
#include <poll.h>
#include <stdio.h>

#include "backend.h"
#include "backoff.h"
#include "broker.h"
#include "classify.h"
#include "exec.h"
#include "listener.h"
#include "log.h"
#include "pipeline.h"
#include "pool.h"
#include "request.h"
#include "response.h"
#include "waitq.h"

/* A backend is free for the next statement: the oldest waiter gets it. */
void waitq_release(struct broker *b, struct backend *be)
{
	be->owner = NULL;
	be->validated_ns = b->now_ns;
	if (be->cancel_pending) {
		/* Never reuse it while a cancel meant for the last statement
		 * may still arrive: it would hit the next agent's statement. */
		be_set_state(b, be, BE_PARKED);
		be_arm(b, be, POLLIN);
		return;
	}
	if (be->discard == DISCARD_CLOSE) {
		be->discard = 0;
		be_close(b, be, CLOSE_UNCLEAN);
		return;
	}
	if (be->discard) {
		be->discard = 0;
		stmt_cache_clear(&be->stmts);
		be_reset(b, be, BE_DISCARD);
		return;
	}
	if (b->now_ns >= be->retire_ns) {
		be_close(b, be, CLOSE_LIFETIME);
		return;
	}
	/* libpq keeps its buffers at their peak: a large result's memory
	 * goes back only with the connection. */
	if (be->bloated) {
		be_close(b, be, CLOSE_MEMORY);
		return;
	}
	if (be->cfg_gen != b->cfg_gen || b->ntotal > (uint32_t)b->cfg.max_pool_size) {
		be_close(b, be, CLOSE_RELOAD);
		return;
	}
	if (!list_empty(&b->waitq)) {
		struct request *r = list_entry(b->waitq.next, struct request, link);

		req_set_state(b, r, RQ_NONE, NULL);
		exec_start(b, be, r);
		return;
	}
	be_set_state(b, be, BE_IDLE);
	be_arm(b, be, POLLIN);
}

/* Run r again after a backoff, if attempts and the deadline allow. */
int waitq_retry(struct broker *b, struct request *r, const char *why)
{
	struct backoff bo = {
		.base_ms = b->cfg.retry_delay_ms,
		.cap_ms = b->cfg.retry_max_delay_ms,
		.jitter_pct = 100,
		.rng = b->rng,
	};
	int64_t delay;

	if (r->attempts >= b->cfg.retry_attempts || b->stopping)
		return 0;
	delay = backoff_delay_ms(&bo, r->attempts + 1) * MS;
	b->rng = bo.rng;
	if (b->now_ns + delay - r->start_ns > (int64_t)b->cfg.acquire_timeout_ms * MS)
		return 0;
	r->attempts++;
	r->due_ns = b->now_ns + delay;
	b->st.c.retried++;
	log_debug("retrying a statement (%s), attempt %d in %lld ms", why, r->attempts,
		  (long long)(delay / MS));
	req_set_state(b, r, RQ_DELAYED, NULL);
	return 1;
}

/* Why statements fail fast while the breaker is open or misconfigured:
 * the SQLSTATE for the agent, and the message. */
const char *waitq_fail_fast_error(struct broker *b, char *msg, size_t n)
{
	long long next = (long long)(breaker_retry_at(&b->breaker) - b->now_ns / MS);

	if (next < 0)
		next = 0;
	if (b->breaker.state == BREAKER_MISCONFIGURED) {
		snprintf(msg, n, "PostgreSQL refuses the broker's connections (misconfigured%s%s): "
			 "%s; next try in %lld ms", *b->last_connect_code ? ", SQLSTATE " : "",
			 b->last_connect_code, b->last_connect_error, next);
		return "PB010";
	}
	snprintf(msg, n, "circuit breaker open after %d failed connection attempts (%s); "
		 "next try in %lld ms", b->breaker.failures, b->last_connect_error, next);
	return "PB002";
}

/* The breaker opened, or the probe failed: nobody waits out the acquire
 * timeout for nothing. */
void waitq_fail_all(struct broker *b)
{
	char msg[512];
	const char *code = waitq_fail_fast_error(b, msg, sizeof(msg));

	while (!list_empty(&b->waitq)) {
		struct request *r = list_entry(b->waitq.next, struct request, link);

		req_set_state(b, r, RQ_NONE, NULL);
		request_fail(b, r, code, "%s", msg);
	}
}

void pool_submit(struct broker *b, struct request *r)
{
	struct agent *a = r->agent;
	struct backend *be;

	if (b->stopping == STOP_FAST) {
		request_fail(b, r, "PB005", "broker is shutting down");
		return;
	}
	if (!r->attempts) {
		unsigned fl = sql_classify(r->v.sql);

		for (uint32_t i = 1; i < r->nsub; i++)
			fl |= sql_classify(r->subs[i].sql) & (SQL_SESSION | SQL_UNCLEAN);
		r->session = (fl & SQL_UNCLEAN) ? DISCARD_CLOSE : (fl & SQL_SESSION) ? DISCARD_ALL : 0;
		r->pipe_ok = 0;
		/* after a deferred BEGIN it opens the transaction: never shared */
		if (!r->session && !r->nsub && !r->begin && (fl & SQL_PIPELINABLE) && b->heat) {
			/* Timed from now on; shared only when quick lately. */
			r->text_hash = stmt_hash(r->v.sql, (int)r->v.nparams);
			r->pipe_ok = stmt_time_quick(b->heat, r->text_hash, PIPE_QUICK_EWMA_US,
						     PIPE_QUICK_MAX_US);
		}
		/* LISTEN/UNLISTEN: the broker's listening connection, no backend */
		if ((fl & SQL_LISTEN) && listener_take(b, r))
			return;
	}
	/* The agent's statements run in its transaction or session. Not an
	 * independent one sent before that began and back now for a retry:
	 * the pinned backend may be busy with the agent's next statement. */
	if (a->pinned && r == a->running) {
		exec_start(b, a->pinned, r);
		return;
	}
	/* Few busy backends, each with a pipeline of many agents' statements,
	 * beat many backends on few cores: join a quick pipeline once the
	 * busy backends are enough to keep the cores busy. */
	if (r->pipe_ok && !(r->flags & REQ_SPREAD) && list_empty(&b->waitq) &&
	    (b->nbusy >= b->busy_target || list_empty(&b->idle)) && (be = pipe_pick(b))) {
		pipe_join(b, be, r);
		return;
	}
	while (!list_empty(&b->idle)) {
		be = list_entry(b->idle.next, struct backend, link);
		if (PQstatus(be->pg) != CONNECTION_OK) {
			be_close(b, be, CLOSE_VALIDATION);
			continue;
		}
		exec_start(b, be, r);
		return;
	}
	if (breaker_failing_fast(&b->breaker, b->now_ns / MS)) {
		char msg[512];
		const char *code = waitq_fail_fast_error(b, msg, sizeof(msg));

		request_fail(b, r, code, "%s", msg);
		return;
	}
	if (b->nwaiting >= (uint32_t)b->cfg.max_waiting) {
		request_fail(b, r, "PB008", "too many statements waiting for a backend (max_waiting)");
		return;
	}
	r->enq_ns = b->now_ns;
	req_set_state(b, r, RQ_WAITING, NULL);
	pool_grow(b);
}

static const char *acquire_error(struct broker *b, char *buf, size_t n)
{
	if (b->breaker.state == BREAKER_MISCONFIGURED)
		waitq_fail_fast_error(b, buf, n);
	else if (b->connect_fails)
		snprintf(buf, n, "no backend within acquire_timeout_ms=%d: cannot connect to "
			 "PostgreSQL: %s", b->cfg.acquire_timeout_ms, b->last_connect_error);
	else
		snprintf(buf, n, "no backend free within acquire_timeout_ms=%d (pool %u/%d busy)",
			 b->cfg.acquire_timeout_ms, b->ntotal, b->cfg.max_pool_size);
	return buf;
}

void waitq_timers(struct broker *b, int64_t *next_ns)
{
	int64_t acq = (int64_t)b->cfg.acquire_timeout_ms * MS;
	struct list *pos, *tmp;

	while (!list_empty(&b->waitq)) {
		struct request *r = list_entry(b->waitq.next, struct request, link);
		char msg[512];

		if (r->enq_ns + acq > b->now_ns) {
			if (r->enq_ns + acq < *next_ns)
				*next_ns = r->enq_ns + acq;
			if (r->enq_ns + (int64_t)b->cfg.reserve_timeout_ms * MS > b->now_ns &&
			    r->enq_ns + (int64_t)b->cfg.reserve_timeout_ms * MS < *next_ns)
				*next_ns = r->enq_ns + (int64_t)b->cfg.reserve_timeout_ms * MS;
			break;
		}
		req_set_state(b, r, RQ_NONE, NULL);
		b->st.c.acquire_timeouts++;
		request_fail(b, r, b->connect_fails ? "PB010" : "PB001", "%s",
			     acquire_error(b, msg, sizeof(msg)));
	}
	list_for_each_safe(pos, tmp, &b->delayed) {
		struct request *r = list_entry(pos, struct request, link);

		if (r->due_ns > b->now_ns) {
			if (r->due_ns < *next_ns)
				*next_ns = r->due_ns;
			continue;
		}
		req_set_state(b, r, RQ_NONE, NULL);
		r->due_ns = 0;
		if (r->agent)
			pool_submit(b, r);
		else
			request_done(b, r);
	}
}

/* Stop taking statements: waiting ones are answered now. */
void pool_shutdown(struct broker *b)
{
	struct list *lists[] = { &b->waitq, &b->delayed };

	for (int i = 0; i < 2; i++) {
		while (!list_empty(lists[i])) {
			struct request *r = list_entry(lists[i]->next, struct request, link);

			req_set_state(b, r, RQ_NONE, NULL);
			r->due_ns = 0;
			request_fail(b, r, "PB005", "broker is shutting down");
		}
	}
}
