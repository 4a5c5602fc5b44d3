/* One backend connection: connecting (with the breaker and the
 * server capacity check), the one armed poll, flushing, resetting, closing,
 * and cancelling on a helper thread. */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "backend.h"
#include "bnotice.h"
#include "backoff.h"
#include "broker.h"
#include "copy.h"
#include "classify.h"
#include "clock.h"
#include "cork.h"
#include "log.h"
#include "memory.h"
#include "pipeline.h"
#include "policy.h"
#include "pool.h"
#include "sqlstate.h"
#include "request.h"
#include "response.h"
#include "rows.h"
#include "waitq.h"

static const char *const close_names[] = {
	"idle timeout", "broken", "failed validation", "max_connection_lifetime_ms",
	"settings changed by reload", "shutdown", "session state DISCARD ALL cannot undo",
	"memory: its buffers grew large",
};

struct backend *pool_by_tag(struct broker *b, uint64_t tag)
{
	uint32_t slot = TAG_SLOT(tag);
	struct backend *be;

	if (slot >= b->nslots)
		return NULL;
	be = &b->backends[slot];
	if (be->state == BE_FREE || be->poll_seq != TAG_GEN(tag))
		return NULL;
	return be;
}

/* The transitions a backend may make (docs/architecture.md): any state
 * but BE_FREE may close; "release" (waitq_release) leads to BE_IDLE,
 * BE_BUSY, BE_PIPELINE (the next waiter), BE_DISCARD or BE_PARKED. */
#define RELEASE (1u << BE_IDLE | 1u << BE_BUSY | 1u << BE_PIPELINE | 1u << BE_DISCARD | \
		 1u << BE_PARKED | 1u << BE_FREE)
static const unsigned be_moves[] = {
	[BE_FREE] = 1u << BE_CONNECTING,
	[BE_CONNECTING] = 1u << BE_PROBE | RELEASE,
	[BE_IDLE] = 1u << BE_BUSY | 1u << BE_PIPELINE | 1u << BE_VALIDATE | 1u << BE_FREE,
	[BE_BUSY] = 1u << BE_PINNED | 1u << BE_ROLLBACK | RELEASE,
	[BE_PIPELINE] = 1u << BE_ROLLBACK | RELEASE,
	[BE_PINNED] = 1u << BE_BUSY | 1u << BE_ROLLBACK | RELEASE,
	[BE_ROLLBACK] = RELEASE,
	[BE_DISCARD] = RELEASE,
	[BE_VALIDATE] = RELEASE,
	[BE_PROBE] = RELEASE,
	[BE_PARKED] = RELEASE,
};

void be_set_state(struct broker *b, struct backend *be, enum be_state to)
{
	assert(be_moves[be->state] & (1u << to));
	switch (be->state) {
	case BE_CONNECTING: b->nconnecting--; list_del(&be->link); break;
	case BE_IDLE: b->nidle--; list_del(&be->link); break;
	case BE_BUSY: b->nbusy--; break;
	case BE_PIPELINE: b->nbusy--; be->npipe = 0; list_del(&be->plink); break;
	case BE_PINNED: b->npinned--; break;
	default: break;
	}
	be->state = to;
	switch (to) {
	case BE_CONNECTING: b->nconnecting++; list_add_tail(&b->connecting, &be->link); break;
	case BE_IDLE: b->nidle++; list_add_head(&b->idle, &be->link); break;
	case BE_BUSY: b->nbusy++; break;
	case BE_PIPELINE: b->nbusy++; be->npipe = 0; list_add_tail(&b->pipes, &be->plink); break;
	case BE_PINNED: b->npinned++; break;
	default: break;
	}
	/* the pool controller's peaks (pool_ctl_tick) */
	if (b->nbusy > b->ctl_busy_peak)
		b->ctl_busy_peak = b->nbusy;
	if (b->npinned > b->ctl_pinned_peak)
		b->ctl_pinned_peak = b->npinned;
}

int be_resetting(const struct backend *be)
{
	return be->state >= BE_ROLLBACK && be->state <= BE_PROBE;
}

/* Keep exactly one poll armed per backend, for the events it needs now. */
void be_arm(struct broker *b, struct backend *be, int events)
{
	if (be->paused)
		events &= ~POLLIN;	/* not read while paused (memory.c) */
	if (be->poll_events == events)
		return;
	if (be->poll_events)
		loop_cancel(b->loop, be->fd, tag_make(TAG_BACKEND, be->slot, be->poll_seq));
	be->poll_seq++;
	be->poll_events = events;
	if (!events)
		return;
	loop_poll(b->loop, be->fd, (unsigned)events,
		  tag_make(TAG_BACKEND, be->slot, be->poll_seq));
}

static void notice_quiet(void *arg, const char *msg)
{
	(void)arg;
	log_debug("backend notice: %s", msg);
}

/* A slot for a new connection. Not one whose cancel thread is still out:
 * the thread clears that slot's cancel_pending when it is done, which
 * must not tell a later backend there that its own cancel is through. */
struct backend *be_free_slot(struct broker *b)
{
	for (uint32_t i = 0; i < b->nslots; i++) {
		struct backend *be = &b->backends[i];

		if (be->state == BE_FREE && !__atomic_load_n(&be->cancel_pending, __ATOMIC_ACQUIRE))
			return be;
	}
	return NULL;
}

/* When be is retired, from its age and max_connection_lifetime_ms: at
 * connect and again for every open backend when a reload changes it. */
void be_set_retire(struct broker *b, struct backend *be)
{
	int64_t life = (int64_t)b->cfg.max_connection_lifetime_ms * MS;
	struct backoff jit = { .base_ms = life / 10 / MS, .cap_ms = life / 10 / MS,
			       .jitter_pct = 100, .rng = b->rng };

	be->retire_ns = INT64_MAX;
	if (!life)
		return;
	/* Spread retirements over the last tenth of the lifetime so that
	 * backends opened together are not all closed together. */
	be->retire_ns = be->created_ns + life - backoff_delay_ms(&jit, 1) * MS;
	b->rng = jit.rng;
}

void be_connect(struct broker *b, uint64_t ticket)
{
	static const char *const keys[] = {
		"dbname", "options", "keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", "fallback_application_name", NULL,
	};
	char options[1024], idle[32];
	const char *vals[8];
	PQconninfoOption *info;
	const char *user_opts = "";
	struct backend *be = be_free_slot(b);

	if (!be)
		return;
	/* Merge the broker's session settings into the user's own options. */
	info = PQconninfoParse(b->cfg.dsn, NULL);
	for (PQconninfoOption *o = info; o && o->keyword; o++)
		if (strcmp(o->keyword, "options") == 0 && o->val)
			user_opts = o->val;
	snprintf(options, sizeof(options),
		 "%s -c statement_timeout=%d -c idle_in_transaction_session_timeout=%d "
		 "-c client_connection_check_interval=1000 -c standard_conforming_strings=on",
		 user_opts, b->cfg.statement_timeout_ms, b->cfg.idle_in_transaction_timeout_ms);
	PQconninfoFree(info);
	snprintf(idle, sizeof(idle), "%d", (b->cfg.keepalive_initial_delay_ms + 999) / 1000);
	vals[0] = b->cfg.dsn;
	vals[1] = options;
	vals[2] = "1";
	vals[3] = idle;
	vals[4] = "10";
	vals[5] = "3";
	vals[6] = "pgbroker";
	vals[7] = NULL;

	memset(&be->link, 0, sizeof(be->link));
	list_init(&be->link);
	be->pg = PQconnectStartParams(keys, vals, 1);
	be->breaker_ticket = ticket;
	be->cfg_gen = b->cfg_gen;
	be->created_ns = b->now_ns;
	be->validated_ns = b->now_ns;
	be_set_retire(b, be);
	be->discard = 0;
	be->dirty = 0;
	be->deadline_ns = b->now_ns + (int64_t)b->cfg.connection_timeout_ms * MS;
	be->req = NULL;
	be->owner = NULL;
	be->res = NULL;
	be->served = 0;
	be->flushing = 0;
	be->poll_events = 0;
	be->unsupported = 0;
	copy_forget(b, be);
	b->ntotal++;
	be_set_state(b, be, BE_CONNECTING);
	if (!be->pg || PQstatus(be->pg) == CONNECTION_BAD) {
		be_connect_failed(b, be, be->pg ? PQerrorMessage(be->pg) : "out of memory");
		return;
	}
	if (bnotice_attach(be->pg) < 0)
		PQsetNoticeProcessor(be->pg, notice_quiet, NULL);
	/* The server's SQLSTATE in a failed connect's message: is it refusing
	 * us (misconfigured) or not there (an outage)? connect_done resets it. */
	PQsetErrorVerbosity(be->pg, PQERRORS_VERBOSE);
	be->fd = PQsocket(be->pg);
	/* PQconnectStart: behave as if PGRES_POLLING_WRITING was returned. */
	be_arm(b, be, POLLOUT);
}

/* A connect failed: one more failed observation for the breaker, unless a
 * connect started in the same round failed already (the pool's parallel
 * connects failing together are one outage, not several). */
void be_connect_failed(struct broker *b, struct backend *be, const char *why)
{
	int64_t now_ms = b->now_ns / MS;
	enum breaker_state was = b->breaker.state;
	int refused, changed;

	sqlstate_connect_error(why, b->last_connect_code, b->last_connect_error,
			       sizeof(b->last_connect_error));
	refused = sqlstate_connect_refused(b->last_connect_code, b->last_connect_error);
	b->connect_fails++;
	b->st.c.connect_failures++;
	changed = breaker_failure(&b->breaker, be->breaker_ticket,
				  refused ? BREAKER_REFUSED : BREAKER_OUTAGE, now_ms);
	if (refused)
		log_warn("PostgreSQL refuses the broker's connection (misconfigured%s%s): %s",
			 *b->last_connect_code ? ", SQLSTATE " : "", b->last_connect_code,
			 b->last_connect_error);
	else
		log_warn("connection to PostgreSQL failed (%u in a row): %s", b->connect_fails,
			 b->last_connect_error);
	if (changed && b->breaker.state == BREAKER_MISCONFIGURED)
		log_error("misconfigured: PostgreSQL answers but will not let the broker in; "
			  "statements fail fast with PB010 and its message; fix the DSN, the role, "
			  "the database or pg_hba.conf (or reload); next try in %lld ms",
			  (long long)(breaker_retry_at(&b->breaker) - now_ms));
	else if (changed)
		log_warn("circuit breaker open after %d consecutive failed connection attempts: "
			 "statements fail fast with PB002; next try in %lld ms", b->breaker.failures,
			 (long long)(breaker_retry_at(&b->breaker) - now_ms));
	else if (was == BREAKER_HALF_OPEN && b->breaker.state == BREAKER_OPEN)
		log_info("circuit breaker probe failed: open again, next try in %lld ms",
			 (long long)(breaker_retry_at(&b->breaker) - now_ms));
	be_close(b, be, CLOSE_BROKEN);
	if (breaker_failing_fast(&b->breaker, now_ms))
		waitq_fail_all(b);
}

static void connect_done(struct broker *b, struct backend *be)
{
	PQsetnonblocking(be->pg, 1);
	PQsetErrorVerbosity(be->pg, PQERRORS_DEFAULT);
	be->pg_pid = PQbackendPID(be->pg);
	be->fd = PQsocket(be->pg);
	int had_failures = b->connect_fails > 0;

	b->connect_fails = 0;
	b->st.c.connects++;
	{
		/* reported by PostgreSQL 14 and later; unknown: not a primary */
		const char *hs = PQparameterStatus(be->pg, "in_hot_standby");

		b->primary = hs && strcmp(hs, "off") == 0;
	}
	if (b->breaker.state == BREAKER_MISCONFIGURED)
		log_info("PostgreSQL lets the broker in again: no longer misconfigured");
	else if (b->breaker.state != BREAKER_CLOSED)
		log_info("circuit breaker closed: PostgreSQL is reachable again");
	breaker_success(&b->breaker, b->now_ns / MS);
	b->last_connect_code[0] = '\0';
	log_info("backend %u connected (pid %d), %u open", be->slot, be->pg_pid, b->ntotal);
	be->last_used_ns = b->now_ns;
	/* At start and after each reconnect: can max_pool_size fit? */
	if (!b->st.server_checked_ms || had_failures) {
		be_reset(b, be, BE_PROBE);
		return;
	}
	waitq_release(b, be);
}

/* Warn when max_pool_size cannot fit the server's room, as last counted. */
void be_capacity_check(struct broker *b)
{
	int64_t room = (int64_t)b->st.server_max_connections - b->st.server_reserved_connections -
		       b->st.server_other_connections;

	if (b->st.server_checked_ms && room < b->cfg.max_pool_size)
		log_warn("max_pool_size=%d cannot fit: the server allows %u connections, %u "
			 "reserved for superusers, %u held by other clients: room for %lld",
			 b->cfg.max_pool_size, b->st.server_max_connections,
			 b->st.server_reserved_connections, b->st.server_other_connections,
			 (long long)(room > 0 ? room : 0));
}

/* The capacity query's answer: record it and warn when the pool cannot fit. */
void be_capacity_result(struct broker *b, PGresult *x)
{
	if (PQresultStatus(x) != PGRES_TUPLES_OK || PQntuples(x) != 1 || PQnfields(x) != 3)
		return;
	b->st.server_max_connections = (uint32_t)atoi(PQgetvalue(x, 0, 0));
	b->st.server_reserved_connections = (uint32_t)atoi(PQgetvalue(x, 0, 1));
	b->st.server_other_connections = (uint32_t)atoi(PQgetvalue(x, 0, 2));
	b->st.server_checked_ms = wall_ms();
	be_capacity_check(b);
}

void be_on_connect_poll(struct broker *b, struct backend *be)
{
	switch (PQconnectPoll(be->pg)) {
	case PGRES_POLLING_READING:
		be->fd = PQsocket(be->pg);
		be_arm(b, be, POLLIN);
		break;
	case PGRES_POLLING_WRITING:
		be->fd = PQsocket(be->pg);
		be_arm(b, be, POLLOUT);
		break;
	case PGRES_POLLING_OK:
		connect_done(b, be);
		break;
	default:
		be_connect_failed(b, be, PQerrorMessage(be->pg));
		break;
	}
}

/* What the agent of r, which ran on a backend that broke, lost with it:
 * its session state when r may have changed it; its transaction when r
 * ran inside one (unless r ended it) or may have opened one. */
static enum agent_lost request_lost(const struct request *r, int in_txn)
{
	int begins = sql_txn_control(r->v.sql) && !sql_may_commit(r->v.sql) &&
		     !sql_is_rollback(r->v.sql);

	if (r->session)
		return LOST_SESSION;
	if (in_txn ? !policy_ends_transaction(&r->v, r->subs, r->nsub) &&
		     !sql_is_rollback(r->v.sql) : begins)
		return LOST_TXN;
	return LOST_NONE;
}

/* r was running (or pipelined) on a backend that is gone. Its agent
 * hears it from r, and from every later statement while what it lost is
 * unacknowledged (agent_lose). */
static void fail_request(struct broker *b, struct request *r, int in_txn, const char *too_large)
{
	if (!r)
		return;
	r->be = NULL;
	req_set_state(b, r, RQ_NONE, NULL);
	if (r->agent)
		agent_lose(r->agent, request_lost(r, in_txn));
	if (too_large) {	/* be_close_too_large: it ran, but its answer was too large */
		request_fail(b, r, "PB004", "%s", too_large);
		return;
	}
	if (r->agent && !in_txn && !r->agent->lost && (r->flags & REQ_IDEMPOTENT) &&
	    waitq_retry(b, r, "connection lost"))
		return;
	if (in_txn && !policy_ends_transaction(&r->v, r->subs, r->nsub))
		request_fail(b, r, "08006", "connection to PostgreSQL lost inside a transaction; "
			     "the transaction was rolled back");
	else
		request_fail(b, r, "08007", "connection to PostgreSQL lost while the statement "
			     "ran; it may or may not have been applied");
}

void be_close(struct broker *b, struct backend *be, enum close_reason why)
{
	int in_txn = be->in_txn;
	struct request *head;

	if (be->state == BE_FREE)
		return;
	if (be->flush_due) {
		be->flush_due = 0;
		list_del(&be->flink);
	}
	copy_forget(b, be);
	if (be->state == BE_CONNECTING)
		;	/* connect_failed said why */
	else if (why == CLOSE_BROKEN || why == CLOSE_VALIDATION)
		log_info("backend %u (pid %d) closed (%s): %s", be->slot, be->pg_pid,
			 close_names[why], be->pg ? PQerrorMessage(be->pg) : "");
	else
		log_info("backend %u (pid %d) closed (%s), %u open", be->slot, be->pg_pid,
			 close_names[why], b->ntotal - 1);
	if (be->owner) {
		be->owner->pinned = NULL;
		be->owner->txn_open = 0;
		/* Its session state, or its open transaction, died with the
		 * backend (a statement of its own running here: fail_request). */
		if (be->owner->session_pinned)
			agent_lose(be->owner, LOST_SESSION);
		else if (be->state == BE_PINNED)
			agent_lose(be->owner, LOST_TXN);
		be->owner->session_pinned = 0;
		be->owner = NULL;
	}
	if (be->poll_events)
		loop_cancel(b->loop, be->fd, tag_make(TAG_BACKEND, be->slot, be->poll_seq));
	be->poll_events = 0;
	be->poll_seq++;
	be_set_state(b, be, BE_FREE);	/* its cancel thread finds nothing to release */
	b->ntotal--;
	switch (why) {
	case CLOSE_IDLE: b->st.c.closed_idle++; break;
	case CLOSE_BROKEN: b->st.c.closed_broken++; break;
	case CLOSE_VALIDATION: b->st.c.closed_validation++; break;
	case CLOSE_LIFETIME: b->st.c.closed_lifetime++; break;
	case CLOSE_MEMORY: b->st.c.closed_memory++; break;
	default: break;
	}
	if (be->res)
		PQclear(be->res);
	be->res = NULL;
	be->begin_step = 0;
	rows_reset(b, be, be->req ? be->req->agent : NULL);
	be->bloated = 0;
	if (be->pg)
		PQfinish(be->pg);
	be->pg = NULL;
	stmt_cache_clear(&be->stmts);
	/* Its statements are answered (or retried) now; their agents' next
	 * statements wait for the end of the pass (agent_run_kicks), so
	 * nothing reuses this slot meanwhile. */
	head = be->req;
	be->req = NULL;
	fail_request(b, head, in_txn, be->too_large);
	be->too_large = NULL;
	while (!list_empty(&be->pipeq))
		fail_request(b, list_entry(be->pipeq.next, struct request, link), in_txn, NULL);
	pool_grow(b);
}

void be_close_too_large(struct broker *b, struct backend *be, const char *msg)
{
	be->too_large = msg;
	be_close(b, be, CLOSE_MEMORY);
}

/* Send what is queued for the backend: its corked bytes, then libpq's.
 * 1 while some remain (wait for POLLOUT), -1 on a broken connection. */
int be_flush(struct backend *be)
{
	int rc = cork_flush(be->fd);

	if (rc)
		return rc;
	rc = PQflush(be->pg);
	return rc < 0 ? -EIO : rc;
}

void be_reset(struct broker *b, struct backend *be, enum be_state how)
{
	static const char *const sql[] = {
		[BE_ROLLBACK] = "ROLLBACK",
		[BE_DISCARD] = "DISCARD ALL",
		[BE_VALIDATE] = "",
		[BE_PROBE] = "select current_setting('max_connections')::int, "
			"current_setting('superuser_reserved_connections')::int, "
			"(select count(*) from pg_stat_activity where backend_type = 'client backend' "
			"and application_name <> current_setting('application_name'))",
	};

	be->owner = NULL;
	be_set_state(b, be, how);
	if (!PQsendQuery(be->pg, sql[how])) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be_flush_arm(b, be);
}

int be_flush_arm(struct broker *b, struct backend *be)
{
	int rc = be_flush(be);

	if (rc < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return -EIO;
	}
	be->flushing = rc == 1;
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
	return 0;
}

struct cancel_job {
	PGcancel *cancel;
	int *pending;
	int efd;
};

/* PQcancel blocks (it opens a connection to the server), so it runs on a
 * short-lived thread that touches nothing but its own job and reports
 * through an eventfd the loop waits on. */
static void *cancel_thread(void *arg)
{
	struct cancel_job *job = arg;
	char err[256];
	uint64_t one = 1;

	if (!PQcancel(job->cancel, err, sizeof(err)))
		log_warn("cancel request failed: %s", err);
	PQfreeCancel(job->cancel);
	__atomic_store_n(job->pending, 0, __ATOMIC_RELEASE);
	(void)!write(job->efd, &one, sizeof(one));
	free(job);
	return NULL;
}

int be_cancel(struct broker *b, struct backend *be)
{
	struct cancel_job *job = malloc(sizeof(*job));
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!job || !(job->cancel = PQgetCancel(be->pg))) {
		free(job);
		return -ENOMEM;
	}
	job->pending = &be->cancel_pending;
	job->efd = b->cancel_efd;
	be->cancel_pending = 1;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 512 * 1024);  /* name lookups can be deep */
	rc = pthread_create(&t, &attr, cancel_thread, job);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		be->cancel_pending = 0;
		PQfreeCancel(job->cancel);
		free(job);
		return -rc;
	}
	return 0;
}

void pool_on_cancel(struct broker *b)
{
	uint64_t n;

	(void)!read(b->cancel_efd, &n, sizeof(n));
	loop_poll(b->loop, b->cancel_efd, POLLIN, tag_make(TAG_CANCEL, 0, 0));
	/* The pool is small (max_pool_size): look for parked backends. */
	for (uint32_t i = 0; i < b->nslots; i++) {
		struct backend *be = &b->backends[i];

		if (be->state == BE_PARKED &&
		    !__atomic_load_n(&be->cancel_pending, __ATOMIC_ACQUIRE))
			waitq_release(b, be);
	}
}
