/* libpgbroker: statements. Each goes out as a framed request (chanio.c);
 * answers come back in the order the broker finishes them and are matched
 * by request id: the ones nobody asked for yet wait on the stash. */
#include "clock.h"
#include "pgbroker.h"
#include "internal.h"
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "errform.h"
#include "proto.h"

void pgbi_stash_drop(pgb_conn *c)
{
	while (c->stash) {
		struct stash *st = c->stash;

		c->stash = st->next;
		pgb_clear(st->r);
		free(st);
	}
	c->stash_tail = NULL;
}

static int flight_add(pgb_conn *c, uint32_t id)
{
	if (c->nflights == c->capflights) {
		uint32_t cap = c->capflights ? 2 * c->capflights : 16;
		struct flight *f = realloc(c->flights, cap * sizeof(*f));

		if (!f)
			return -1;
		c->flights = f;
		c->capflights = cap;
	}
	c->flights[c->nflights++] = (struct flight){ .id = id, .t0 = clock_ns() };
	return 0;
}

/* Where id is among the flights, -1 when it is not in flight. */
static int flight_find(const pgb_conn *c, uint32_t id)
{
	for (uint32_t i = 0; i < c->nflights; i++)
		if (c->flights[i].id == id)
			return (int)i;
	return -1;
}

static void flight_drop(pgb_conn *c, int i)
{
	c->flights[i] = c->flights[--c->nflights];
}

/* The final response for id arrived: count it. */
static void flight_done(pgb_conn *c, uint32_t id, const pgb_result *r)
{
	int i = flight_find(c, id);
	uint64_t rtt;

	if (i < 0)
		return;
	rtt = (uint64_t)(clock_ns() - c->flights[i].t0);
	c->stats.total++;
	if (!pgb_result_ok(r))
		c->stats.failed++;
	c->rtt_sum_ns += rtt;
	if (rtt / 1000 > c->stats.max_rtt_us)
		c->stats.max_rtt_us = rtt / 1000;
	flight_drop(c, i);
}

static int is_final(const pgb_result *r)
{
	return !(r->v.head.flags & (RESP_MORE | RESP_ROWS));
}

int pgbi_flight_chunked(const pgb_conn *c, uint32_t id)
{
	int i = flight_find(c, id);

	return i < 0 ? -1 : c->flights[i].chunked;
}

static void stash_push(pgb_conn *c, uint32_t id, pgb_result *r)
{
	struct stash *st = malloc(sizeof(*st));

	if (!st) {
		pgb_clear(r);
		return;
	}
	*st = (struct stash){ .id = id, .r = r };
	if (c->stash_tail)
		c->stash_tail->next = st;
	else
		c->stash = st;
	c->stash_tail = st;
}

/* Stash every response that has arrived, without waiting for more. 0, or
 * -EPIPE (broker gone) / -EPROTO (corrupt ring) when the connection broke. */
int pgbi_drain_responses(pgb_conn *c)
{
	for (;;) {
		uint32_t got;
		pgb_result *r = pgbi_recv_next(c, 0, &got);

		if (!r)
			return 0;
		if (c->status != PGB_CONNECTION_OK) {
			int gone = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_BROKER_GONE) == 0;

			pgb_clear(r);
			return gone ? -EPIPE : -EPROTO;
		}
		if (is_final(r))
			flight_done(c, got, r);
		stash_push(c, got, r);
	}
}

static pgb_result *stash_take(pgb_conn *c, int any, uint32_t id, uint32_t *got)
{
	struct stash **pp = &c->stash, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->next) {
		struct stash *st = *pp;
		pgb_result *r;

		if (!any && st->id != id)
			continue;
		*pp = st->next;
		if (c->stash_tail == st)
			c->stash_tail = prev;
		r = st->r;
		*got = st->id;
		free(st);
		return r;
	}
	return NULL;
}

/* The next response for id (any id when any is set), stashing others. A
 * broken connection answers every outstanding id with its error. */
static pgb_result *wait_result(pgb_conn *c, int any, uint32_t id, int block, uint32_t *got)
{
	if (pgbi_inherited(c)) {
		/* the parent's results, not the child's */
		pgbi_part_drop(c);
		pgbi_stash_drop(c);
	}
	for (;;) {
		pgb_result *r = stash_take(c, any, id, got);

		if (r)
			return r;
		if (c->status != PGB_CONNECTION_OK) {
			int sent;

			*got = id;
			if (any && c->nflights)
				*got = c->flights[0].id;
			sent = flight_find(c, *got) >= 0;
			if (sent && !pgbi_inherited(c))
				/* It reached the broker, which may have run it. */
				r = pgbi_local_error(PGB_SQLSTATE_BROKER_GONE,
						"connection lost before the answer (%s); the "
						"statement may or may not have run", c->errmsg);
			else
				r = pgbi_local_error(PGB_SQLSTATE_NOT_CONNECTED,
						"connection is not open: %s", c->errmsg);
			if (r && sent)
				flight_done(c, *got, r);
			return r;
		}
		if (!any && c->nflights == 0)
			return pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST, "no such statement in flight");
		r = pgbi_recv_next(c, block, got);
		if (!r)
			return NULL;
		if (!r->blob && *got == 0)
			/* our own error: the connection broke while waiting */
			*got = any ? (c->nflights ? c->flights[0].id : 0) : id;
		if (is_final(r))
			flight_done(c, *got, r);
		if (any || *got == id)
			return r;
		stash_push(c, *got, r);
	}
}

static pgb_result *check_usable(pgb_conn *c)
{
	if (!c)
		return pgbi_local_error(PGB_SQLSTATE_NOT_CONNECTED, "no connection");
	if (pgbi_inherited(c))
		return pgbi_local_error(PGB_SQLSTATE_NOT_CONNECTED,
				   "connection was opened by the parent process before fork(); "
				   "connect again in the child");
	if (c->status != PGB_CONNECTION_OK)
		return pgbi_local_error(PGB_SQLSTATE_NOT_CONNECTED, "connection is not open: %s",
				   c->errmsg);
	return NULL;
}

/* Encode and send one request; returns its id, or 0 with *err set. */
static uint32_t send_request(pgb_conn *c, const char *sql, int nparams,
			     const char *const *values, uint32_t flags,
			     const struct req_stmt *batch, uint32_t nbatch, pgb_result **err)
{
	uint64_t total;
	uint8_t *blob;
	uint32_t id;
	int rc;

	if ((*err = check_usable(c)))
		return 0;
	if (c->copy) {
		*err = pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST,
					"a COPY is in progress on this connection: end it first "
					"(pgb_put_copy_end, or pgb_get_copy_data until -1)");
		return 0;
	}
	if (!batch && !sql) {
		*err = pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST, "statement text is NULL");
		return 0;
	}
	if (nparams < 0 || (nparams > 0 && !values)) {
		*err = pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST, "bad parameter count %d", nparams);
		return 0;
	}
	if ((unsigned)nparams > REQ_MAX_PARAMS) {
		*err = pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST, "too many parameters: %d (at most %u)",
				   nparams, REQ_MAX_PARAMS);
		return 0;
	}
	total = batch ? batch_encoded_len(batch, nbatch)
		      : req_encoded_len(sql, (uint32_t)nparams, values);
	if (total == 0 || total > UINT32_MAX) {
		*err = pgbi_local_error(batch ? PGB_SQLSTATE_BAD_REQUEST : PGB_SQLSTATE_TOO_LARGE,
				   batch ? "batch is empty, has a NULL statement or is too large"
					 : "statement too large to send");
		return 0;
	}
	blob = malloc(total);
	if (!blob || flight_add(c, 0) < 0) {
		free(blob);
		*err = pgbi_local_error(PGB_SQLSTATE_TOO_LARGE, "out of memory encoding the statement");
		return 0;
	}
	if (batch)
		batch_encode(blob, batch, nbatch, flags);
	else
		req_encode(blob, sql, (uint32_t)nparams, values, flags);
	id = ++c->next_id;
	if (id == 0)
		id = ++c->next_id;
	c->flights[c->nflights - 1].id = id;
	rc = pgbi_send_blob(c, blob, total, id);
	free(blob);
	if (rc < 0) {
		/* Not necessarily the last one: responses taken in meanwhile
		 * moved the flights around. */
		int i = flight_find(c, id);

		if (i >= 0)
			flight_drop(c, i);
		if (rc == -EPIPE)
			*err = pgbi_gone_error(c);
		else if (c->status != PGB_CONNECTION_OK)
			*err = pgbi_local_error(PGB_SQLSTATE_NOT_CONNECTED, "%s", c->errmsg);
		else
			*err = pgbi_broken(c, "request ring is corrupt");
		return 0;
	}
	return id;
}

static pgb_result *exec_blob(pgb_conn *c, const char *sql, int nparams,
			     const char *const *values, uint32_t flags)
{
	pgb_result *err;
	uint32_t id = send_request(c, sql, nparams, values, flags, NULL, 0, &err), got;

	if (!id)
		return err;
	return wait_result(c, 0, id, 1, &got);
}

PGB_API pgb_result *pgb_exec(pgb_conn *c, const char *sql)
{
	return exec_blob(c, sql, 0, NULL, 0);
}

PGB_API pgb_result *pgb_exec_params(pgb_conn *c, const char *sql, int nparams,
				    const char *const *values)
{
	return exec_blob(c, sql, nparams, values, 0);
}

PGB_API pgb_result *pgb_exec_flags(pgb_conn *c, const char *sql, int nparams,
				   const char *const *values, int flags)
{
	if (flags & ~PGB_IDEMPOTENT)
		return pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST, "unknown statement flags 0x%x", flags);
	return exec_blob(c, sql, nparams, values,
			 (flags & PGB_IDEMPOTENT) ? REQ_IDEMPOTENT : 0);
}

PGB_API long long pgb_send(pgb_conn *c, const char *sql, int nparams,
			   const char *const *values, int flags)
{
	pgb_result *err;
	uint32_t rf = 0, id;

	if (flags & ~(PGB_IDEMPOTENT | PGB_INDEPENDENT | PGB_CHUNKED)) {
		if (c)
			pgbi_set_error(c, "unknown statement flags 0x%x", flags);
		return -1;
	}
	if (flags & PGB_IDEMPOTENT)
		rf |= REQ_IDEMPOTENT;
	if (flags & PGB_INDEPENDENT)
		rf |= REQ_INDEPENDENT;
	if (flags & PGB_CHUNKED)
		rf |= REQ_CHUNKED;
	id = send_request(c, sql, nparams, values, rf, NULL, 0, &err);
	if (id && (flags & PGB_CHUNKED) && flight_find(c, id) >= 0)
		c->flights[flight_find(c, id)].chunked = 1;
	if (!id) {
		if (c) {
			int len;
			const char *text = errform_text(pgb_result_error(err), &len);

			pgbi_set_error(c, "%.*s", len, text);
		}
		pgb_clear(err);
		return -1;
	}
	return id;
}

PGB_API int pgb_reset(pgb_conn *c)
{
	pgb_result *r;
	uint32_t id, got;
	int ok;

	if (!c)
		return -1;
	if (c->status == PGB_CONNECTION_OK && !pgbi_inherited(c) && c->copy) {
		/* A COPY first: COPY IN fails, COPY OUT's rows are dropped; its
		 * result goes too. */
		uint32_t cid = c->copy_id;

		if (c->copy == PGBI_COPY_IN && !c->copy_ended)
			pgb_put_copy_end(c, "COPY aborted by pgb_reset");
		pgbi_copy_drop(c);
		r = stash_take(c, 0, cid, &got);
		if (!r && c->status == PGB_CONNECTION_OK && flight_find(c, cid) >= 0)
			r = wait_result(c, 0, cid, 1, &got);
		pgb_clear(r);
	}
	if (c->status == PGB_CONNECTION_OK && !pgbi_inherited(c)) {
		/* In its turn after what is in flight: the broker rolls back,
		 * discards and unpins, and forgets what was lost. */
		id = send_request(c, "", 0, NULL, REQ_RESET, NULL, 0, &r);
		if (id)
			r = wait_result(c, 0, id, 1, &got);
		ok = pgb_result_ok(r);
		if (!ok && c->status == PGB_CONNECTION_OK) {
			pgbi_set_error(c, "pgb_reset: %s", r ? pgb_result_error(r) : "out of memory");
			pgb_clear(r);
			return -1;
		}
		pgb_clear(r);
		if (ok)
			return 0;
	}
	return pgbi_reconnect(c);
}

static pgb_result *next_result(pgb_conn *c, long long *id, int block)
{
	uint32_t got = 0;
	pgb_result *r;

	if (id)
		*id = 0;
	if (!c || (c->nflights == 0 && !c->stash))
		return NULL;
	if (c->copy == PGBI_COPY_IN && !c->copy_ended)
		return pgbi_local_error(PGB_SQLSTATE_BAD_REQUEST, "COPY FROM STDIN in progress: "
					"end it with pgb_put_copy_end first");
	if (c->copy == PGBI_COPY_OUT) {
		/* The rows not taken yet are dropped (docs/copy.md). */
		free(c->chunk);
		c->chunk = NULL;
		c->chunk_len = c->chunk_at = 0;
		if (!c->copy_ended)
			c->copy = PGBI_COPY_NONE;
	}
	r = wait_result(c, 1, 0, block, &got);
	if (r && c->copy && c->copy_ended && got == c->copy_id)
		pgbi_copy_drop(c);
	if (r && id)
		*id = got;
	return r;
}

PGB_API pgb_result *pgb_get_result(pgb_conn *c, long long *id)
{
	return next_result(c, id, 1);
}

PGB_API pgb_result *pgb_try_result(pgb_conn *c, long long *id)
{
	pgb_result *r;
	char buf[64];
	ssize_t got;
	int signalled, was_armed;

	if (!c || c->status != PGB_CONNECTION_OK)
		return next_result(c, id, 0);
	/* Drain the wake-up bytes first, then look: a result published after
	 * the look finds fd_armed set and signals the socket again. */
	was_armed = chan_fd_armed(c->chan);
	got = recv(c->sock, buf, sizeof(buf), MSG_DONTWAIT);
	signalled = got > 0;
	if (got == 0) {
		/* end of file: the broker went away */
		pgbi_mark_gone(c);
		return next_result(c, id, 0);
	}
	r = next_result(c, id, 0);
	if (r)
		return r;
	chan_fd_arm(c->chan);
	if (ring_has_data(&c->resp))
		return next_result(c, id, 0);
	/* Armed since the last call and still not signalled: perhaps woken
	 * by the socket's hang-up. Then what is in flight gets its answer now
	 * (PB003), not never. (Only then: the check costs a system call.) */
	if (was_armed && !signalled && pgbi_broker_gone(c)) {
		pgbi_mark_gone(c);
		return next_result(c, id, 0);
	}
	return NULL;
}

PGB_API int pgb_socket(const pgb_conn *c)
{
	return c && c->status == PGB_CONNECTION_OK ? c->pfd : -1;
}

PGB_API int pgb_in_flight(const pgb_conn *c)
{
	return c ? (int)c->nflights : 0;
}

const char *pgbi_result_notices(const pgb_result *r, uint32_t *len)
{
	*len = r && r->v.notices ? r->v.notices_len : 0;
	return *len ? r->v.notices : NULL;
}

int pgbi_in_transaction(const pgb_conn *c)
{
	return c && c->status == PGB_CONNECTION_OK && c->in_txn;
}

static void fill_errors(pgb_result **results, int from, int n, const pgb_result *why)
{
	int len;
	const char *text = errform_text(pgb_result_error(why), &len);

	for (int i = from; i < n; i++)
		results[i] = pgbi_local_error(pgb_sqlstate(why), "not run: %.*s", len, text);
}

PGB_API int pgb_batch(pgb_conn *c, const struct pgb_stmt *stmts, int n, pgb_result **results)
{
	struct req_stmt *rs;
	pgb_result *err;
	uint32_t id, got;
	int i, ok = 1;

	if (!results || n <= 0 || !stmts || (unsigned)n > REQ_MAX_BATCH) {
		if (c)
			pgbi_set_error(c, "pgb_batch: need 1..%u statements and a results array",
				  REQ_MAX_BATCH);
		return -1;
	}
	/* The batch is one transaction: the broker refuses one that would
	 * begin or end a transaction inside (PB006, nothing run), since only
	 * its parser can tell. */
	rs = calloc((size_t)n, sizeof(*rs));
	if (!rs) {
		fill_errors(results, 0, n, &(pgb_result){ .v = { .err = "out of memory",
								  .head.sqlstate = PGB_SQLSTATE_TOO_LARGE } });
		return -1;
	}
	for (i = 0; i < n; i++) {
		rs[i].sql = stmts[i].sql;
		rs[i].nparams = stmts[i].nparams > 0 ? (uint32_t)stmts[i].nparams : 0;
		rs[i].values = stmts[i].values;
		if (stmts[i].nparams < 0 || (stmts[i].nparams > 0 && !stmts[i].values))
			rs[i].sql = NULL;
	}
	id = send_request(c, NULL, 0, NULL, 0, rs, (uint32_t)n, &err);
	free(rs);
	if (!id) {
		results[0] = err;
		fill_errors(results, 1, n, err);
		return -1;
	}
	for (i = 0; i < n; i++) {
		results[i] = wait_result(c, 0, id, 1, &got);
		if (!pgb_result_ok(results[i]))
			ok = 0;
		if (!results[i] || is_final(results[i]))
			break;
	}
	/* The broker answered the whole batch with one error. */
	if (i < n - 1)
		fill_errors(results, i + 1, n, results[i]);
	return ok ? 0 : -1;
}

PGB_API int pgb_parallel(pgb_conn *c, const struct pgb_stmt *stmts, int n, pgb_result **results)
{
	long long *ids;
	int ok = 1;

	if (!results || n <= 0 || !stmts) {
		if (c)
			pgbi_set_error(c, "pgb_parallel: need at least one statement and a results array");
		return -1;
	}
	ids = calloc((size_t)n, sizeof(*ids));
	if (!ids) {
		/* The caller clears every result: none may be left unset. */
		fill_errors(results, 0, n, &(pgb_result){ .v = { .err = "out of memory",
								  .head.sqlstate = PGB_SQLSTATE_TOO_LARGE } });
		return -1;
	}
	for (int i = 0; i < n; i++) {
		/* Each on a backend of its own: never queued behind a sibling. */
		ids[i] = send_request(c, stmts[i].sql, stmts[i].nparams, stmts[i].values,
				      REQ_INDEPENDENT | REQ_SPREAD, NULL, 0, &results[i]);
		if (ids[i] == 0)
			ids[i] = -1;
	}
	for (int i = 0; i < n; i++) {
		uint32_t got;

		if (ids[i] > 0)
			results[i] = wait_result(c, 0, (uint32_t)ids[i], 1, &got);
		if (!pgb_result_ok(results[i]))
			ok = 0;
	}
	free(ids);
	return ok ? 0 : -1;
}

PGB_API int pgb_conn_stats(const pgb_conn *c, struct pgb_conn_stats *st)
{
	if (!c || !st)
		return -1;
	*st = c->stats;
	st->success_rate = st->total ? (double)(st->total - st->failed) / (double)st->total : 1.0;
	st->mean_rtt_us = st->total ? (double)c->rtt_sum_ns / 1000.0 / (double)st->total : 0;
	return 0;
}
