/* The backend pool: non-blocking libpq connections, who runs what where,
 * transaction pinning, the FIFO of statements waiting for a backend, and
 * growing and shrinking between min_pool_size and max_pool_size. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "backoff.h"
#include "broker.h"
#include "clock.h"
#include "cork.h"
#include "classify.h"
#include "sqlstate.h"

#define MS 1000000LL
#define CANCEL_WAIT_NS (2000 * MS)   /* at exit, for cancel threads still out */
/* The breaker's schedule: after the n-th consecutive failed connect
 * observation the next connect waits min(100 ms * 2^(n-1),
 * breaker_reset_timeout_ms) (docs/failures.md). */
#define BREAKER_FIRST_WAIT_MS 100

enum close_reason {
	CLOSE_IDLE, CLOSE_BROKEN, CLOSE_VALIDATION, CLOSE_LIFETIME, CLOSE_RELOAD, CLOSE_SHUTDOWN,
	CLOSE_UNCLEAN,
};
static const char *const close_names[] = {
	"idle timeout", "broken", "failed validation", "max_connection_lifetime_ms",
	"settings changed by reload", "shutdown", "session state DISCARD ALL cannot undo",
};

static void be_close(struct broker *b, struct backend *be, enum close_reason why);
static void be_start(struct broker *b, struct backend *be, struct request *r);
static void be_reset(struct broker *b, struct backend *be, const char *sql);
static void be_start_batch(struct broker *b, struct backend *be, struct request *r);
static int be_cancel(struct broker *b, struct backend *be);
static void fail_waiters(struct broker *b);
static int request_retry(struct broker *b, struct request *r, const char *why);
static void pool_grow(struct broker *b);
static void connect_failed(struct broker *b, struct backend *be, const char *why);
static void pipe_leave(struct broker *b, struct backend *be);
static void keep_result(struct backend *be, PGresult *x);
static int rolled_back(const char *state);
static int prepared_lost(const struct request *r, const char *state);
static int ends_transaction(const struct request *r);
static int fixed_at_prepare(const char *state);
static void stale_forget(struct broker *b, struct request *r);
static void capacity_result(struct broker *b, PGresult *x);
static void stats_connect_error(struct broker *b);

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

/* The one place a backend changes state: counters and lists follow it. */
static void be_set_state(struct broker *b, struct backend *be, enum be_state to)
{
	switch (be->state) {
	case BE_CONNECTING: b->nconnecting--; list_del(&be->link); break;
	case BE_IDLE: b->nidle--; list_del(&be->link); break;
	case BE_BUSY: b->nbusy--; break;
	case BE_PINNED: b->npinned--; break;
	default: break;
	}
	be->state = to;
	switch (to) {
	case BE_CONNECTING: b->nconnecting++; list_add_tail(&b->connecting, &be->link); break;
	case BE_IDLE: b->nidle++; list_add_head(&b->idle, &be->link); break;
	case BE_BUSY: b->nbusy++; break;
	case BE_PINNED: b->npinned++; break;
	default: break;
	}
}

/* Keep exactly one poll armed per backend, for the events it needs now. */
static void be_arm(struct broker *b, struct backend *be, int events)
{
	if (be->poll_events == events)
		return;
	if (be->poll_events)
		loop_cancel(b->loop, be->fd, tag_make(TAG_BACKEND, be->slot, be->poll_seq));
	be->poll_seq++;
	be->poll_events = events;
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
static struct backend *free_slot(struct broker *b)
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
static void be_set_retire(struct broker *b, struct backend *be)
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

static void connect_one(struct broker *b, uint64_t ticket)
{
	static const char *const keys[] = {
		"dbname", "options", "keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", "fallback_application_name", NULL,
	};
	char options[1024], idle[32];
	const char *vals[8];
	PQconninfoOption *info;
	const char *user_opts = "";
	struct backend *be = free_slot(b);

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
	be->parked = 0;
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
	be->copy_out = 0;
	b->ntotal++;
	be_set_state(b, be, BE_CONNECTING);
	if (!be->pg || PQstatus(be->pg) == CONNECTION_BAD) {
		connect_failed(b, be, be->pg ? PQerrorMessage(be->pg) : "out of memory");
		return;
	}
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
static void connect_failed(struct broker *b, struct backend *be, const char *why)
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
		fail_waiters(b);
}

/* A backend is free for the next statement: the oldest waiter gets it. */
static void be_release(struct broker *b, struct backend *be)
{
	be->owner = NULL;
	be->validated_ns = b->now_ns;
	if (be->cancel_pending) {
		/* Never reuse it while a cancel meant for the last statement
		 * may still arrive: it would hit the next agent's statement. */
		be->parked = 1;
		be_set_state(b, be, BE_RESET);
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
		be_reset(b, be, "DISCARD ALL");
		return;
	}
	if (b->now_ns >= be->retire_ns) {
		be_close(b, be, CLOSE_LIFETIME);
		return;
	}
	if (be->cfg_gen != b->cfg_gen || b->ntotal > (uint32_t)b->cfg.max_pool_size) {
		be_close(b, be, CLOSE_RELOAD);
		return;
	}
	if (!list_empty(&b->waitq)) {
		struct request *r = list_entry(list_pop(&b->waitq), struct request, link);

		r->waiting = 0;
		b->nwaiting--;
		be_start(b, be, r);
		return;
	}
	be_set_state(b, be, BE_IDLE);
	be_arm(b, be, POLLIN);
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
		be->probe = 1;
		be_reset(b, be, "select current_setting('max_connections')::int, "
			 "current_setting('superuser_reserved_connections')::int, "
			 "(select count(*) from pg_stat_activity where backend_type = 'client backend' "
			 "and application_name <> current_setting('application_name'))");
		return;
	}
	be_release(b, be);
}

/* Warn when max_pool_size cannot fit the server's room, as last counted. */
static void capacity_check(struct broker *b)
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
static void capacity_result(struct broker *b, PGresult *x)
{
	if (PQresultStatus(x) != PGRES_TUPLES_OK || PQntuples(x) != 1 || PQnfields(x) != 3)
		return;
	b->st.server_max_connections = (uint32_t)atoi(PQgetvalue(x, 0, 0));
	b->st.server_reserved_connections = (uint32_t)atoi(PQgetvalue(x, 0, 1));
	b->st.server_other_connections = (uint32_t)atoi(PQgetvalue(x, 0, 2));
	b->st.server_checked_ms = wall_ms();
	capacity_check(b);
}

static void on_connect_poll(struct broker *b, struct backend *be)
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
		connect_failed(b, be, PQerrorMessage(be->pg));
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
	if (in_txn ? !ends_transaction(r) && !sql_is_rollback(r->v.sql) : begins)
		return LOST_TXN;
	return LOST_NONE;
}

/* r was running (or pipelined) on a backend that is gone. Its agent
 * hears it from r, and from every later statement while what it lost is
 * unacknowledged (agent_lose). */
static void fail_request(struct broker *b, struct request *r, int in_txn)
{
	if (!r)
		return;
	r->be = NULL;
	if (r->agent)
		agent_lose(r->agent, request_lost(r, in_txn));
	if (r->agent && !in_txn && !r->agent->lost && (r->flags & REQ_IDEMPOTENT) &&
	    request_retry(b, r, "connection lost"))
		return;
	if (r->agent) {
		b->st.c.statements++;
		b->st.c.failed++;
		if (in_txn && !ends_transaction(r))
			agent_respond_error(b, r->agent, r->id, "08006",
					    "connection to PostgreSQL lost inside a transaction; "
					    "the transaction was rolled back");
		else
			agent_respond_error(b, r->agent, r->id, "08007",
					    "connection to PostgreSQL lost while the statement ran; "
					    "it may or may not have been applied");
	}
	agent_request_done(b, r);
}

static void be_close(struct broker *b, struct backend *be, enum close_reason why)
{
	int in_txn = be->in_txn;
	struct request *head;
	struct list orphans, *pos;

	if (be->state == BE_FREE)
		return;
	if (be->flush_due) {
		be->flush_due = 0;
		list_del(&be->flink);
	}
	if (be->state == BE_CONNECTING)
		;	/* connect_failed said why */
	else if (why == CLOSE_BROKEN || why == CLOSE_VALIDATION)
		log_info("backend %u (pid %d) closed (%s): %s", be->slot, be->pg_pid,
			 close_names[why], be->pg ? PQerrorMessage(be->pg) : "");
	else
		log_info("backend %u (pid %d) closed (%s), %u open", be->slot, be->pg_pid,
			 close_names[why], b->ntotal - 1);
	if (be->owner) {
		/* Its session state, or its open transaction, died with the
		 * backend (a statement of its own running here: fail_request). */
		be->owner->pinned = NULL;
		be->owner->txn_open = 0;
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
	be_set_state(b, be, BE_FREE);
	be->parked = 0;	/* its cancel thread finds nothing to release */
	b->ntotal--;
	switch (why) {
	case CLOSE_IDLE: b->st.c.closed_idle++; break;
	case CLOSE_BROKEN: b->st.c.closed_broken++; break;
	case CLOSE_VALIDATION: b->st.c.closed_validation++; break;
	case CLOSE_LIFETIME: b->st.c.closed_lifetime++; break;
	default: break;
	}
	if (be->res)
		PQclear(be->res);
	be->res = NULL;
	if (be->pg)
		PQfinish(be->pg);
	be->pg = NULL;
	stmt_cache_clear(&be->stmts);
	/* Answering wakes agents whose next statements are submitted at once:
	 * by then this slot must be out of every list and own no request, as
	 * it may even be reconnected for one of them. */
	head = be->req;
	be->req = NULL;
	list_init(&orphans);
	while ((pos = list_pop(&be->pipeq)))
		list_add_tail(&orphans, pos);
	pipe_leave(b, be);
	fail_request(b, head, in_txn);
	while ((pos = list_pop(&orphans)))
		fail_request(b, list_entry(pos, struct request, link), in_txn);
	pool_grow(b);
}

/* Send what is queued for the backend: its corked bytes, then libpq's.
 * 1 while some remain (wait for POLLOUT), -1 on a broken connection. */
static int be_flush(struct backend *be)
{
	int rc = cork_flush(be->fd);

	return rc ? rc : PQflush(be->pg);
}

/* Run the broker's own statement (ROLLBACK) on a backend nobody owns. */
static void be_reset(struct broker *b, struct backend *be, const char *sql)
{
	be->owner = NULL;
	be_set_state(b, be, BE_RESET);
	if (!PQsendQuery(be->pg, sql)) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	int rc = be_flush(be);
	if (rc < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be->flushing = rc == 1;
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

#define PIPE_MAX 32            /* statements in one backend's pipeline */
#define PREPARE_AFTER 3        /* sightings of a text before it is prepared */

/* Leave pipeline mode after the last Sync. libpq 15 may still count
 * itself busy right after handing out the Sync result until PQgetResult
 * has returned its NULL: collect that, then leave. 0 ok, -1 broken. */
static int pipeline_exit(PGconn *pg)
{
	for (int tries = 0; tries < 4; tries++) {
		PGresult *x;

		if (PQexitPipelineMode(pg))
			return 0;
		if (PQisBusy(pg))
			return -1;
		x = PQgetResult(pg);
		if (x)
			PQclear(x);
	}
	return -1;
}

/* Keep a moving average of how long statements execute. */
static void exec_time(struct broker *b, int64_t ns)
{
	b->exec_ewma_ns += (ns - b->exec_ewma_ns) / 8;
}
#define PIPE_HEAD_FRESH_NS (8 * MS) /* join only pipelines whose head is quick */

static void pipe_leave(struct broker *b, struct backend *be)
{
	(void)b;
	if (!be->piped)
		return;
	be->piped = 0;
	be->npipe = 0;
	list_del(&be->plink);
}

/* Send one autocommit statement into the backend's pipeline, with its
 * own Sync, so an error ends only that statement's implicit transaction. */
static int pipe_send(struct broker *b, struct backend *be, struct request *r)
{
	int nparams = (int)r->v.nparams, ok;
	uint32_t id = 0;

	r->be = be;
	if (!r->attempts)
		stats_hist_add(&b->st.acquire,
			       r->enq_ns ? (uint64_t)(b->now_ns - r->enq_ns) / 1000 : 0);
	r->prep_id = 0;
	r->prep_sent = r->prep_failed = 0;
	if (cork_hold(be->fd) < 0)	/* until pool_flush */
		return -1;
	if (!r->no_prep && b->heat) {
		uint64_t h = stmt_hash(r->v.sql, nparams);

		id = stmt_cache_find(&be->stmts, h, r->v.sql, nparams);
		if (!id && stmt_heat_see(b->heat, h) >= PREPARE_AFTER &&
		    (id = stmt_cache_add(&be->stmts, h, r->v.sql, nparams)))
			r->prep_sent = 1;
	}
	if (id) {
		char name[STMT_NAME_MAX];

		stmt_name(name, sizeof(name), b->stmt_token, id);
		r->prep_id = id;
		ok = (!r->prep_sent || PQsendPrepare(be->pg, name, r->v.sql, nparams, NULL)) &&
		     PQsendQueryPrepared(be->pg, name, nparams, r->params, NULL, NULL, 0);
	} else {
		ok = PQsendQueryParams(be->pg, r->v.sql, nparams, NULL, r->params, NULL, NULL, 0);
	}
#ifdef LIBPQ_HAS_SEND_PIPELINE_SYNC
	ok = ok && PQsendPipelineSync(be->pg);
#else
	ok = ok && PQpipelineSync(be->pg);	/* before libpq 17 this also flushes */
#endif
	if (!ok)
		return -1;
	/* Sent once per loop pass (pool_flush): one write for all the
	 * statements that joined this pipeline meanwhile. */
	if (!be->flush_due) {
		be->flush_due = 1;
		list_add_tail(&b->flushq, &be->flink);
	}
	be->npipe++;
	return 0;
}

void pool_flush(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->flushq))) {
		struct backend *be = list_entry(pos, struct backend, flink);
		int rc;

		be->flush_due = 0;
		rc = be_flush(be);
		if (rc < 0) {
			be_close(b, be, CLOSE_BROKEN);
			continue;
		}
		be->flushing = rc == 1;
		be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
	}
}

/* Start a pipeline on a free backend with r at its head. */
static void pipe_start(struct broker *b, struct backend *be, struct request *r)
{
	be->in_txn = 0;
	be->req = r;
	be->head_ns = b->now_ns;
	be_set_state(b, be, BE_BUSY);
	if (!PQenterPipelineMode(be->pg)) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be->piped = 1;
	be->npipe = 0;
	list_add_tail(&b->pipes, &be->plink);
	if (pipe_send(b, be, r) < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

/* The pipeline to join: the shortest one whose head is not a slow statement. */
static struct backend *pipe_pick(struct broker *b)
{
	struct backend *best = NULL;
	struct list *pos;

	for (pos = b->pipes.next; pos != &b->pipes; pos = pos->next) {
		struct backend *be = list_entry(pos, struct backend, plink);

		if (be->state != BE_BUSY || be->npipe >= PIPE_MAX ||
		    b->now_ns - be->head_ns > PIPE_HEAD_FRESH_NS)
			continue;
		/* Slow statements lately: a joiner would wait behind one. */
		if (b->exec_ewma_ns > PIPE_HEAD_FRESH_NS / 2)
			return NULL;
		if (!best || be->npipe < best->npipe)
			best = be;
	}
	return best;
}

static void pipe_join(struct broker *b, struct backend *be, struct request *r)
{
	/* A pipeline whose head just finished (pipe_done answering it) has
	 * no head: the joiner becomes it. */
	if (!be->req) {
		be->req = r;
		be->head_ns = b->now_ns;
	} else {
		list_add_tail(&be->pipeq, &r->link);
	}
	if (pipe_send(b, be, r) < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

/* Statements that queued while no pipeline took them join the pipeline
 * that just made room, oldest first: pipelines that keep running free no
 * backend, and the queue must not wait for one while newer statements
 * join (pool_submit does not let them overtake). */
static void pipe_refill(struct broker *b, struct backend *be)
{
	while (be->state == BE_BUSY && be->piped && be->npipe < PIPE_MAX &&
	       b->exec_ewma_ns <= PIPE_HEAD_FRESH_NS / 2 && !list_empty(&b->waitq)) {
		struct request *r = list_entry(b->waitq.next, struct request, link);

		if (!r->pipe_ok || (r->flags & REQ_SPREAD))
			break;
		list_del(&r->link);
		r->waiting = 0;
		b->nwaiting--;
		pipe_join(b, be, r);
	}
}

/* The head of a pipeline finished (its Sync arrived): answer it and move on. */
static void pipe_done(struct broker *b, struct backend *be)
{
	struct request *r = be->req;
	PGresult *res = be->res;
	struct agent *a = r->agent;
	int ok = result_ok(res);
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	int retry = 0;

	be->res = NULL;
	be->npipe--;
	be->served++;
	exec_time(b, b->now_ns - be->head_ns);
	r->be = NULL;
	if (r->prep_id && (r->prep_failed || prepared_lost(r, state))) {
		/* The server has no such prepared statement, or one that no
		 * longer fits the text: stop using it (a lost one stays on the
		 * server until DISCARD ALL or the connection ends). */
		stmt_cache_forget(&be->stmts, r->prep_id);
		stmt_heat_cool(b->heat, stmt_hash(r->v.sql, (int)r->v.nparams));
		/* It failed before running (in autocommit nothing is left of
		 * it): run the text itself once more, unless the failed Prepare
		 * was the text's own error. */
		if (a && (!r->prep_failed || (state && strcmp(state, "42P05") == 0))) {
			log_debug("backend %u: prepared statement %u unusable (%s): running the text",
				  be->slot, r->prep_id, state ? state : "");
			r->no_prep = 1;
			b->st.c.retried++;
			retry = 2;
		}
	} else if (a && r->prep_id && !r->prep_sent && !ok && fixed_at_prepare(state)) {
		/* Parameter types and plans were fixed by the Prepare, maybe
		 * before a table changed (a column's type): the text itself may
		 * work. Run it once (nothing ran: autocommit); when it works,
		 * the prepared statement is stale (stale_forget). */
		r->no_prep = 1;
		r->stale_id = r->prep_id;
		r->stale_slot = be->slot;
		b->st.c.retried++;
		retry = 2;
	}
	if (!retry && ok)
		stale_forget(b, r);
	if (!retry && a && !ok && rolled_back(state) && request_retry(b, r, state))
		retry = 1;
	if (!retry) {
		b->st.c.statements++;
		if (!ok)
			b->st.c.failed++;
		if (state && strcmp(state, "57014") == 0)
			b->st.c.statement_timeouts++;
		stats_hist_add(&b->st.stmt, (uint64_t)(b->now_ns - r->start_ns) / 1000);
		if (a && res)
			agent_respond(b, a, r->id, res), res = NULL;
		else if (a)
			agent_respond_error(b, a, r->id, "XX000", "no result from PostgreSQL");
	}
	if (res)
		PQclear(res);
	if (a)
		be->last_used_ns = b->now_ns;
	be->req = NULL;
	if (!list_empty(&be->pipeq)) {
		be->req = list_entry(list_pop(&be->pipeq), struct request, link);
		be->head_ns = b->now_ns;
	}
	if (!retry)
		agent_request_done(b, r);
	else if (retry == 2)
		pool_submit(b, r);
	pipe_refill(b, be);
	if (be->req || be->state != BE_BUSY)
		return;
	/* Drained: leave pipeline mode and free the backend. */
	pipe_leave(b, be);
	if (pipeline_exit(be->pg) < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	if (PQtransactionStatus(be->pg) != PQTRANS_IDLE)
		be_reset(b, be, "ROLLBACK");
	else
		be_release(b, be);
}

/* Results of a shared pipeline: per statement its result(s), a NULL, and
 * its Sync. */
static void pipe_drain(struct broker *b, struct backend *be)
{
	int nulls = 0;

	while (be->req && !PQisBusy(be->pg)) {
		PGresult *x = PQgetResult(be->pg);

		if (!x) {
			/* the end of one statement's results; two in a row
			 * means nothing more is queued yet */
			if (++nulls > 1)
				break;
			continue;
		}
		nulls = 0;
		switch (PQresultStatus(x)) {
		case PGRES_PIPELINE_SYNC:
			PQclear(x);
			pipe_done(b, be);
			if (be->state != BE_BUSY || !be->piped)
				return;
			break;
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
		case PGRES_COPY_BOTH:
			PQclear(x);
			be_close(b, be, CLOSE_BROKEN);
			return;
		case PGRES_PIPELINE_ABORTED:
			/* only the Execute behind a failed Prepare is aborted */
			if (be->req->prep_sent)
				be->req->prep_failed = 1;
			keep_result(be, x);
			break;
		default:
			keep_result(be, x);
			break;
		}
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

static void be_start(struct broker *b, struct backend *be, struct request *r)
{
	int ok, rc;

	be->in_txn = PQtransactionStatus(be->pg) != PQTRANS_IDLE;
	be->req = r;
	be->head_ns = b->now_ns;
	r->be = be;
	if (r->session && r->agent && !r->agent->session_pinned &&
	    (!r->agent->pinned || r->agent->pinned == be)) {
		log_debug("agent %u changes session state: keeping backend %u for its session",
			  r->agent->slot, be->slot);
		r->agent->session_pinned = 1;
		b->st.c.session_pins++;
	}
	if (r->session > be->discard)
		be->discard = r->session;
	if (b->cfg.reset_query_always && !be->discard)
		be->discard = DISCARD_ALL;

	/* A pipeline costs a little more per statement (extended protocol)
	 * and pays only when others can join it: start one when busy. */
	if (r->pipe_ok && be->state != BE_PINNED && b->nbusy + 1 >= b->busy_target) {
		pipe_start(b, be, r);	/* pipe_send counts its wait */
		return;
	}
	if (!r->attempts)
		stats_hist_add(&b->st.acquire,
			       r->enq_ns ? (uint64_t)(b->now_ns - r->enq_ns) / 1000 : 0);
	be_set_state(b, be, BE_BUSY);
	if (r->nsub) {
		be_start_batch(b, be, r);
		return;
	}
	if (r->v.nparams == 0)
		ok = PQsendQuery(be->pg, r->v.sql);
	else
		ok = PQsendQueryParams(be->pg, r->v.sql, (int)r->v.nparams, NULL, r->params,
				       NULL, NULL, 0);
	if (!ok) {
		/* Nothing went out: safe to run it elsewhere. */
		log_debug("backend %u: send failed: %s", be->slot, PQerrorMessage(be->pg));
		be->req = NULL;
		r->be = NULL;
		/* Not in the agent's transaction or session: those are gone
		 * with the connection, and r with them (fail_request). */
		if (!be->in_txn && be->owner != r->agent) {
			b->st.c.retried++;
			be_close(b, be, CLOSE_BROKEN);
			if (r->agent)
				pool_submit(b, r);
			else
				agent_request_done(b, r);
			return;
		}
		be->req = r;
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	rc = be_flush(be);
	if (rc < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be->flushing = rc == 1;
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

/* A batch goes out as one pipeline: every statement, one Sync. Until
 * the Sync the statements form one implicit transaction, so an error
 * rolls all of them back. */
static void be_start_batch(struct broker *b, struct backend *be, struct request *r)
{
	int rc;

	r->bdone = 0;
	for (uint32_t i = 0; i < r->nsub; i++) {
		if (r->bres[i])
			PQclear(r->bres[i]);
		r->bres[i] = NULL;
	}
	if (!PQenterPipelineMode(be->pg))
		goto broken;
	for (uint32_t i = 0; i < r->nsub; i++)
		if (!PQsendQueryParams(be->pg, r->subs[i].sql, (int)r->subs[i].nparams, NULL,
				       r->sparams[i], NULL, NULL, 0))
			goto broken;
	if (!PQpipelineSync(be->pg))
		goto broken;
	rc = be_flush(be);
	if (rc < 0)
		goto broken;
	be->flushing = rc == 1;
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
	return;
broken:
	log_debug("backend %u: batch send failed: %s", be->slot, PQerrorMessage(be->pg));
	be_close(b, be, CLOSE_BROKEN);
}

/* Results of a pipelined batch: one per statement, each followed by a
 * NULL, then the Sync. Returns 1 when the batch is complete. */
static int batch_result(struct backend *be, struct request *r, PGresult *x)
{
	if (!x) {
		if (r->bdone < r->nsub && r->bres[r->bdone])
			r->bdone++;
		return 0;
	}
	if (PQresultStatus(x) == PGRES_PIPELINE_SYNC) {
		PQclear(x);
		return 1;
	}
	if (r->bdone < r->nsub && !r->bres[r->bdone])
		r->bres[r->bdone] = x;
	else
		PQclear(x);
	(void)be;
	return 0;
}

/* The statement succeeded (a NULL result did not). */
int result_ok(const PGresult *x)
{
	ExecStatusType st = x ? PQresultStatus(x) : PGRES_FATAL_ERROR;

	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

/* Answer a finished batch: every result, or, when one failed, its error
 * and for every other statement a PB011 naming the one that failed. The
 * caller counts the batch as one statement. */
static void batch_respond(struct broker *b, struct agent *a, struct request *r)
{
	uint32_t failed = r->nsub;
	char msg[256];

	for (uint32_t i = 0; i < r->nsub && failed == r->nsub; i++)
		if (!result_ok(r->bres[i]))
			failed = i;
	if (failed < r->nsub) {
		const char *state = r->bres[failed] ?
			PQresultErrorField(r->bres[failed], PG_DIAG_SQLSTATE) : NULL;

		snprintf(msg, sizeof(msg), "not applied: statement %u of the batch failed (%s)",
			 failed + 1, state ? state : "no result");
	}
	for (uint32_t i = 0; i < r->nsub; i++) {
		if (!a)
			break;
		a->resp_more = i + 1 < r->nsub;
		if (failed < r->nsub && i != failed) {
			agent_respond_error(b, a, r->id, "PB011", "%s", msg);
		} else if (r->bres[i]) {
			agent_respond(b, a, r->id, r->bres[i]);
			r->bres[i] = NULL;
		} else {
			agent_respond_error(b, a, r->id, "XX000", "no result from PostgreSQL");
		}
	}
	if (a)
		a->resp_more = 0;
}

/* PQexec's rule: the last result, but an error wins. */
static void keep_result(struct backend *be, PGresult *x)
{
	if (!be->res || PQresultStatus(x) == PGRES_FATAL_ERROR ||
	    PQresultStatus(be->res) != PGRES_FATAL_ERROR) {
		if (be->res)
			PQclear(be->res);
		be->res = x;
	} else {
		PQclear(x);
	}
}

/* 40001 and 40P01 roll back what they interrupted: outside an explicit
 * transaction the statement may run again (the shared SQLSTATE table). */
static int rolled_back(const char *state)
{
	return state && sqlstate_txn_retryable(state);
}

/* An Execute of a statement prepared earlier failed because of the
 * prepared statement: 26000, it is gone (DEALLOCATE behind our back);
 * 0A000, "cached plan must not change result type" (a table changed). */
static int prepared_lost(const struct request *r, const char *state)
{
	return !r->prep_sent && state &&
	       (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0);
}

/* What a prepared statement may fail with where its text, analysed
 * afresh, would not: class 42 (no operator or function for the parameter
 * types inferred at Prepare) and class 22 (a parameter read as such a
 * type). */
static int fixed_at_prepare(const char *state)
{
	return state && (strncmp(state, "42", 2) == 0 || strncmp(state, "22", 2) == 0);
}

/* r, run as text after its prepared statement failed, worked: that
 * statement is stale. Ids are never reused on a slot, so a backend
 * reconnected meanwhile has no such entry. */
static void stale_forget(struct broker *b, struct request *r)
{
	if (!r->stale_id)
		return;
	stmt_cache_forget(&b->backends[r->stale_slot].stmts, r->stale_id);
	stmt_heat_cool(b->heat, stmt_hash(r->v.sql, (int)r->v.nparams));
	r->stale_id = 0;
}

/* An error undid all of r (sql_all_or_nothing for each statement). Asked
 * only when a retry is in question, not for every statement. */
static int all_or_nothing(const struct request *r)
{
	if (!sql_all_or_nothing(r->v.sql))
		return 0;
	for (uint32_t i = 1; i < r->nsub; i++)
		if (!sql_all_or_nothing(r->subs[i].sql))
			return 0;
	return 1;
}

/* COMMIT and its kin, in any statement of r: when the connection breaks
 * under one, the transaction may or may not have committed. */
static int ends_transaction(const struct request *r)
{
	if (sql_may_commit(r->v.sql))
		return 1;
	for (uint32_t i = 1; i < r->nsub; i++)
		if (sql_may_commit(r->subs[i].sql))
			return 1;
	return 0;
}

static void statement_done(struct broker *b, struct backend *be)
{
	struct request *r = be->req;
	PGresult *res = be->res;
	PGTransactionStatusType ts = PQtransactionStatus(be->pg);
	struct agent *a = r ? r->agent : NULL;
	int retry = 0;

	if (PQstatus(be->pg) == CONNECTION_BAD) {
		/* The connection died under the statement (a FATAL such as
		 * 57P01 may have come first): its fate is unknown unless it ran
		 * inside a transaction, which is certainly gone. */
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be->res = NULL;
	be->req = NULL;
	if (r) {
		int ok = result_ok(res);
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

		r->be = NULL;
		be->served++;
		exec_time(b, b->now_ns - be->head_ns);
		if (r->nsub) {
			ok = 1;
			state = NULL;
			for (uint32_t i = 0; i < r->nsub && ok; i++)
				if (!result_ok(r->bres[i])) {
					ok = 0;
					if (r->bres[i])
						state = PQresultErrorField(r->bres[i],
									   PG_DIAG_SQLSTATE);
				}
		}
		/* Ran in the agent's session (not beside it): the answer tells
		 * whether that is inside a transaction now. */
		if (a && (!a->pinned || a->pinned == be))
			a->txn_open = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
		/* Not a text that may have committed part of its work first
		 * (CALL, DO, a COMMIT between statements): that part would run
		 * twice. */
		if (a && !ok && !be->in_txn && ts == PQTRANS_IDLE && rolled_back(state) &&
		    !be->unsupported && all_or_nothing(r) && request_retry(b, r, state)) {
			retry = 1;
		} else {
			b->st.c.statements++;
			if (!ok || be->unsupported)
				b->st.c.failed++;
			if (state && strcmp(state, "57014") == 0)
				b->st.c.statement_timeouts++;
			stats_hist_add(&b->st.stmt, (uint64_t)(b->now_ns - r->start_ns) / 1000);
			if (ok)
				stale_forget(b, r);
			if (r->nsub)
				batch_respond(b, a, r);
			else if (a && be->unsupported)
				agent_respond_error(b, a, r->id, "PB009",
						    "COPY is not supported through pgbroker");
			else if (a && res)
				agent_respond(b, a, r->id, res), res = NULL;
			else if (a)
				agent_respond_error(b, a, r->id, "XX000", "no result from PostgreSQL");
		}
	}
	if (res)
		PQclear(res);
	be->unsupported = 0;

	if (PQstatus(be->pg) == CONNECTION_BAD || ts == PQTRANS_UNKNOWN ||
	    ts == PQTRANS_ACTIVE) {
		if (r && !retry)
			agent_request_done(b, r);
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	if (a && !a->doom && (!a->pinned || a->pinned == be) &&
	    (ts != PQTRANS_IDLE || (a->session_pinned && be->discard))) {
		/* Inside a transaction, or holding session state: this backend
		 * is the agent's until that ends. */
		be->owner = a;
		a->pinned = be;
		be->last_used_ns = b->now_ns;
		be->validated_ns = b->now_ns;
		be_set_state(b, be, BE_PINNED);
		be_arm(b, be, POLLIN);
	} else {
		if (a && a->pinned == be)
			a->pinned = NULL;
		if (a)
			be->last_used_ns = b->now_ns;
		if (ts != PQTRANS_IDLE)
			be_reset(b, be, "ROLLBACK");
		else
			be_release(b, be);
	}
	if (r && !retry)
		agent_request_done(b, r);
}

/* Read whatever the server sent; complete the statement when it is done. */
static void drain(struct broker *b, struct backend *be)
{
	for (;;) {
		PGresult *x;

		if (be->copy_out) {
			char *buf;
			int n;

			while ((n = PQgetCopyData(be->pg, &buf, 1)) > 0)
				PQfreemem(buf);
			if (n == 0)
				break;
			be->copy_out = 0;
		}
		if (PQisBusy(be->pg))
			break;
		x = PQgetResult(be->pg);
		if (be->req && be->req->nsub && be->state == BE_BUSY) {
			if (x && (PQresultStatus(x) == PGRES_COPY_IN ||
				  PQresultStatus(x) == PGRES_COPY_OUT ||
				  PQresultStatus(x) == PGRES_COPY_BOTH)) {
				PQclear(x);
				be_close(b, be, CLOSE_BROKEN);
				return;
			}
			if (batch_result(be, be->req, x)) {
				if (pipeline_exit(be->pg) < 0) {
					be_close(b, be, CLOSE_BROKEN);
					return;
				}
				statement_done(b, be);
				return;
			}
			continue;
		}
		if (!x) {
			if (be->state == BE_RESET) {
				if (PQtransactionStatus(be->pg) == PQTRANS_IDLE &&
				    PQstatus(be->pg) == CONNECTION_OK && !be->dirty)
					be_release(b, be);
				else
					be_close(b, be, CLOSE_VALIDATION);
			} else {
				statement_done(b, be);
			}
			return;
		}
		switch (PQresultStatus(x)) {
		case PGRES_COPY_IN:
			be->unsupported = 1;
			PQclear(x);
			PQputCopyEnd(be->pg, "COPY FROM STDIN is not supported through pgbroker");
			be->flushing = be_flush(be) == 1;
			break;
		case PGRES_COPY_OUT:
			be->unsupported = 1;
			be->copy_out = 1;
			PQclear(x);
			break;
		case PGRES_COPY_BOTH:
			PQclear(x);
			be->unsupported = 1;
			be_close(b, be, CLOSE_BROKEN);
			return;
		default:
			if (be->state != BE_RESET) {
				keep_result(be, x);
				break;
			}
			/* The broker's own statement must succeed, or the
			 * backend is not trusted again. */
			if (PQresultStatus(x) == PGRES_FATAL_ERROR)
				be->dirty = 1;
			if (be->probe) {
				be->probe = 0;
				capacity_result(b, x);
			}
			PQclear(x);
			break;
		}
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

void pool_on_poll(struct broker *b, struct backend *be, int res)
{
	be->poll_events = 0;   /* one-shot: it fired */
	if (be->state == BE_CONNECTING) {
		on_connect_poll(b, be);
		return;
	}
	if (res < 0 && res != -ECANCELED) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	if (be->flushing && (res & POLLOUT)) {
		int rc = be_flush(be);

		if (rc < 0) {
			be_close(b, be, CLOSE_BROKEN);
			return;
		}
		be->flushing = rc == 1;
	}
	if ((res & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(be->pg)) {
		log_info("backend %u (pid %d) lost: %s", be->slot, be->pg_pid,
			 PQerrorMessage(be->pg));
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	/* LISTEN keeps an agent's backend, but no notification reaches the
	 * agent: libpq would hold every one until the connection closes. */
	for (PGnotify *n; (n = PQnotifies(be->pg));)
		PQfreemem(n);
	switch (be->state) {
	case BE_RESET:
		if (be->parked) {
			/* Waiting for a cancel thread: input now means trouble. */
			if (PQstatus(be->pg) == CONNECTION_BAD)
				be_close(b, be, CLOSE_BROKEN);
			else
				be_arm(b, be, POLLIN);
			break;
		}
		drain(b, be);
		break;
	case BE_BUSY:
		if (be->piped)
			pipe_drain(b, be);
		else
			drain(b, be);
		break;
	case BE_IDLE:
	case BE_PINNED:
		/* Nothing is expected: a server that speaks now is closing. */
		if (PQstatus(be->pg) == CONNECTION_BAD) {
			be_close(b, be, CLOSE_BROKEN);
			return;
		}
		while (!PQisBusy(be->pg)) {
			PGresult *x = PQgetResult(be->pg);

			if (!x)
				break;
			PQclear(x);
		}
		if (PQstatus(be->pg) == CONNECTION_BAD) {
			be_close(b, be, CLOSE_BROKEN);
			return;
		}
		be_arm(b, be, POLLIN);
		break;
	default:
		break;
	}
}

/* Answer a request with the broker's own error and retire it. */
static void finish_error(struct broker *b, struct request *r, const char *state, const char *msg)
{
	b->st.c.statements++;
	b->st.c.failed++;
	if (r->agent)
		agent_respond_error(b, r->agent, r->id, state, "%s", msg);
	agent_request_done(b, r);
}

/* Run r again after a backoff, if attempts and the deadline allow. */
static int request_retry(struct broker *b, struct request *r, const char *why)
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
	list_add_tail(&b->delayed, &r->link);
	return 1;
}

/* Why statements fail fast while the breaker is open or misconfigured:
 * the SQLSTATE for the agent, and the message. */
static const char *fail_fast_error(struct broker *b, char *msg, size_t n)
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
static void fail_waiters(struct broker *b)
{
	struct list *pos;
	char msg[512];
	const char *code = fail_fast_error(b, msg, sizeof(msg));

	while ((pos = list_pop(&b->waitq))) {
		struct request *r = list_entry(pos, struct request, link);

		r->waiting = 0;
		b->nwaiting--;
		finish_error(b, r, code, msg);
	}
}

void pool_submit(struct broker *b, struct request *r)
{
	struct agent *a = r->agent;
	struct backend *be;

	if (b->stopping == STOP_FAST) {
		finish_error(b, r, "PB005", "broker is shutting down");
		return;
	}
	if (!r->attempts) {
		unsigned fl = sql_classify(r->v.sql);

		for (uint32_t i = 1; i < r->nsub; i++)
			fl |= sql_classify(r->subs[i].sql) & (SQL_SESSION | SQL_UNCLEAN);
		r->session = (fl & SQL_UNCLEAN) ? DISCARD_CLOSE : (fl & SQL_SESSION) ? DISCARD_ALL : 0;
		r->pipe_ok = !r->session && !r->nsub && (fl & SQL_PIPELINABLE);
	}
	/* The agent's statements run in its transaction or session. Not an
	 * independent one sent before that began and back now for a retry:
	 * the pinned backend may be busy with the agent's next statement. */
	if (a->pinned && r == a->running) {
		be_start(b, a->pinned, r);
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
		be_start(b, be, r);
		return;
	}
	if (breaker_failing_fast(&b->breaker, b->now_ns / MS)) {
		char msg[512];
		const char *code = fail_fast_error(b, msg, sizeof(msg));

		finish_error(b, r, code, msg);
		return;
	}
	if (b->nwaiting >= (uint32_t)b->cfg.max_waiting) {
		finish_error(b, r, "PB008", "too many statements waiting for a backend (max_waiting)");
		return;
	}
	r->enq_ns = b->now_ns;
	r->waiting = 1;
	list_add_tail(&b->waitq, &r->link);
	b->nwaiting++;
	pool_grow(b);
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

static int be_cancel(struct broker *b, struct backend *be)
{
	struct cancel_job *job = malloc(sizeof(*job));
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!job || !(job->cancel = PQgetCancel(be->pg))) {
		free(job);
		return -1;
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
		return -1;
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

		if (be->parked && !__atomic_load_n(&be->cancel_pending, __ATOMIC_ACQUIRE)) {
			be->parked = 0;
			be_release(b, be);
		}
	}
}

/* An agent left with statements out: waiting or retrying ones are
 * dropped, running ones are cancelled and their backends cleaned up. */
static void orphan(struct broker *b, struct agent *a, struct request *r)
{
	struct backend *be = r->be;

	r->agent = NULL;
	if (r->waiting || r->due_ns) {
		if (r->waiting)
			b->nwaiting--;
		list_del(&r->link);
		request_free(r);
		return;
	}
	/* A statement in a shared pipeline is not cancelled (the cancel could
	 * hit a neighbour's statement): it finishes and its answer is dropped. */
	if (!be || be->req != r || be->state != BE_BUSY || be->piped)
		return;
	if (a->pinned == be)
		a->pinned = NULL;
	be->owner = NULL;
	if (a->session_pinned && !be->discard)
		be->discard = DISCARD_ALL;
	/* Mid-statement: cancel it, then roll back and reuse the backend
	 * once it is idle and clean (see statement_done). */
	if (b->stopping) {	/* closing ends it: no cancel thread to wait for */
		be_close(b, be, CLOSE_SHUTDOWN);
		return;
	}
	log_info("agent %u gone mid-statement: cancelling on backend %u (pid %d)",
		 a->slot, be->slot, be->pg_pid);
	if (be_cancel(b, be) < 0)
		be_close(b, be, CLOSE_BROKEN);
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
		be_reset(b, be, "ROLLBACK");
	else
		be_release(b, be);
}

void pool_agent_gone(struct broker *b, struct agent *a)
{
	struct list *pos;

	a->running = NULL;
	while ((pos = list_pop(&a->active))) {
		a->nactive--;
		orphan(b, a, list_entry(pos, struct request, alink));
	}
	unpin(b, a);
}

/* pgb_reset: a, with no statement running, starts a clean session. */
void pool_agent_reset(struct broker *b, struct agent *a)
{
	unpin(b, a);
	a->session_pinned = 0;
	a->txn_open = 0;
}

static void pool_grow(struct broker *b)
{
	uint32_t limit = (uint32_t)b->cfg.pool_size;
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
	while (want-- > 0 && b->ntotal < limit && free_slot(b)) {
		enum breaker_state was = b->breaker.state;
		uint64_t ticket;

		if (!breaker_allow(&b->breaker, b->now_ns / MS, &ticket))
			break;
		if (was == BREAKER_OPEN && b->breaker.state == BREAKER_HALF_OPEN)
			log_info("circuit breaker half-open: one connection probes PostgreSQL");
		connect_one(b, ticket);
	}
}

static const char *acquire_error(struct broker *b, char *buf, size_t n)
{
	if (b->breaker.state == BREAKER_MISCONFIGURED)
		fail_fast_error(b, buf, n);
	else if (b->connect_fails)
		snprintf(buf, n, "no backend within acquire_timeout_ms=%d: cannot connect to "
			 "PostgreSQL: %s", b->cfg.acquire_timeout_ms, b->last_connect_error);
	else
		snprintf(buf, n, "no backend free within acquire_timeout_ms=%d (pool %u/%d busy)",
			 b->cfg.acquire_timeout_ms, b->ntotal, b->cfg.max_pool_size);
	return buf;
}

void pool_timers(struct broker *b, int64_t *next_ns)
{
	int64_t acq = (int64_t)b->cfg.acquire_timeout_ms * MS;
	int64_t idle = (int64_t)b->cfg.idle_timeout_ms * MS, retry_ns;
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
		list_del(&r->link);
		r->waiting = 0;
		b->nwaiting--;
		b->st.c.acquire_timeouts++;
		b->st.c.statements++;
		b->st.c.failed++;
		agent_respond_error(b, r->agent, r->id, b->connect_fails ? "PB010" : "PB001", "%s",
				    acquire_error(b, msg, sizeof(msg)));
		agent_request_done(b, r);
	}
	list_for_each_safe(pos, tmp, &b->delayed) {
		struct request *r = list_entry(pos, struct request, link);

		if (r->due_ns > b->now_ns) {
			if (r->due_ns < *next_ns)
				*next_ns = r->due_ns;
			continue;
		}
		list_del(&r->link);
		r->due_ns = 0;
		if (r->agent)
			pool_submit(b, r);
		else
			agent_request_done(b, r);
	}
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
			be_reset(b, be, "");
		else if (be->validated_ns + every < *next_ns)
			*next_ns = be->validated_ns + every;
	}
	list_for_each_safe(pos, tmp, &b->connecting) {
		struct backend *be = list_entry(pos, struct backend, link);

		if (be->deadline_ns <= b->now_ns)
			connect_failed(b, be, "connection_timeout_ms expired");
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
	b->exec_ewma_ns = PIPE_HEAD_FRESH_NS;  /* pipelines only once statements prove quick */
	b->heat = calloc(1, sizeof(*b->heat));	/* NULL: nothing is prepared */
	/* Names agents cannot guess ahead: _pgbroker_<token>_<n>. */
	if (getrandom(&b->stmt_token, sizeof(b->stmt_token), GRND_NONBLOCK) < 0)
		b->stmt_token = (uint32_t)getpid() ^ (uint32_t)b->now_ns;
	b->busy_target = (uint32_t)(sysconf(_SC_NPROCESSORS_ONLN) > 0 ?
					sysconf(_SC_NPROCESSORS_ONLN) : 1);
	list_init(&b->flushq);
	for (uint32_t i = 0; i < b->nslots; i++) {
		list_init(&b->backends[i].pipeq);
		list_init(&b->backends[i].plink);
		list_init(&b->backends[i].flink);
	}
	breaker_init(&b->breaker, b->cfg.breaker_threshold, BREAKER_FIRST_WAIT_MS,
		     b->cfg.breaker_reset_timeout_ms, BREAKER_PACE_FROM_FIRST);
	b->cancel_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->cancel_efd < 0)
		return -errno;
	loop_poll(b->loop, b->cancel_efd, POLLIN, tag_make(TAG_CANCEL, 0, 0));
	pool_grow(b);
	return 0;
}

/* Stop taking statements: waiting ones are answered now. */
void pool_shutdown(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->waitq))) {
		struct request *r = list_entry(pos, struct request, link);

		r->waiting = 0;
		b->nwaiting--;
		b->st.c.statements++;
		b->st.c.failed++;
		agent_respond_error(b, r->agent, r->id, "PB005", "broker is shutting down");
		agent_request_done(b, r);
	}
	while ((pos = list_pop(&b->delayed))) {
		struct request *r = list_entry(pos, struct request, link);

		r->due_ns = 0;
		finish_error(b, r, "PB005", "broker is shutting down");
	}
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

		if (be->state == BE_BUSY && !be->cancel_pending && be_cancel(b, be) < 0)
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
		capacity_check(b);
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
	if (pending) {
		log_warn("a cancel request is still out: exiting without waiting for it");
		return;
	}
	if (b->cancel_efd >= 0)
		close(b->cancel_efd);
	free(b->backends);
	b->backends = NULL;
}
