/* The client helpers against a real broker and PostgreSQL: pgb_transaction
 * (real serialization failures and deadlocks re-run and committed exactly
 * once, rollback on failure, READ ONLY), pgb_retry and pgb_breaker around
 * operations that fail, and bad arguments that must never crash. */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static struct h_broker br;

static void pg_do(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

/* --- two agents whose transactions collide --- */

enum collide { SERIALIZE, DEADLOCK };

struct agent {
	enum collide how;
	int me, other;
	int to_peer, from_peer;  /* pipe ends of the barrier */
	int calls;
};

/* Both agents reach this point before either goes on (bounded). */
static int barrier(const struct agent *a)
{
	struct pollfd pf = { .fd = a->from_peer, .events = POLLIN };
	char x = 'x';

	if (write(a->to_peer, &x, 1) != 1)
		return -1;
	if (poll(&pf, 1, 10000) != 1 || read(a->from_peer, &x, 1) != 1)
		return -1;
	return 0;
}

static int exec_id(pgb_conn *c, const char *sql, int id, struct pgb_outcome *why)
{
	char s[16];
	const char *v[] = { s };
	pgb_result *r;

	snprintf(s, sizeof(s), "%d", id);
	r = pgb_exec_params(c, sql, 1, v);
	if (!pgb_result_ok(r))
		return pgb_fail(r, why);
	pgb_clear(r);
	return 0;
}

/* SERIALIZE: read the other's row, then update one's own (write skew: one
 * of the two gets 40001). DEADLOCK: update one's own row, then the other's
 * (one of the two gets 40P01). The barrier is on the first try only. */
static int collide_body(pgb_conn *c, void *arg, struct pgb_outcome *why)
{
	struct agent *a = arg;
	const char *first = a->how == SERIALIZE ? "select v from api_acct where id = $1"
						: "update api_acct set v = v + 1 where id = $1";
	const char *second = a->how == SERIALIZE ? "update api_acct set v = v + 1 where id = $1"
						 : "update api_acct set w = w + 1 where id = $1";

	a->calls++;
	if (exec_id(c, first, a->how == SERIALIZE ? a->other : a->me, why))
		return -1;
	if (a->calls == 1 && barrier(a) < 0) {
		snprintf(why->message, sizeof(why->message), "barrier failed");
		return -1;
	}
	if (exec_id(c, second, a->how == SERIALIZE ? a->me : a->other, why))
		return -1;
	return exec_id(c, "insert into api_log (agent) values ($1)", a->me, why);
}

/* Exit status: the number of tries on success, 100 + the failure else. */
static int collide_agent(void *arg)
{
	struct agent *a = arg;
	struct pgb_txn_opts opts = {
		.isolation = a->how == SERIALIZE ? PGB_SERIALIZABLE : PGB_ISOLATION_DEFAULT,
		.base_ms = 20,
	};
	struct pgb_outcome out;
	pgb_conn *c = pgb_connect(br.dir);
	int rc;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 120;
	rc = pgb_transaction(c, collide_body, a, &opts, &out);
	if (rc != PGB_OK) {
		fprintf(stderr, "agent %d: %d %s %s\n", a->me, rc, out.sqlstate, out.message);
		return 100 - rc;
	}
	pgb_finish(c);
	return out.attempts;
}

static void collide(enum collide how, const char *code)
{
	PGconn *pg = h_pg();
	int ab[2], ba[2], st[2];
	struct agent agents[2];
	pid_t kids[2];
	char sql[256];

	pg_do(pg, "set client_min_messages = warning;"
		  "drop table if exists api_acct, api_log;"
		  "create table api_acct (id int primary key, v int not null, w int not null);"
		  "insert into api_acct values (1, 0, 0), (2, 0, 0);"
		  "create table api_log (agent int not null)");
	h_broker_start(&br, NULL);
	cr_assert_eq(pipe(ab), 0);
	cr_assert_eq(pipe(ba), 0);
	agents[0] = (struct agent){ .how = how, .me = 1, .other = 2, .to_peer = ab[1],
				    .from_peer = ba[0] };
	agents[1] = (struct agent){ .how = how, .me = 2, .other = 1, .to_peer = ba[1],
				    .from_peer = ab[0] };
	for (int i = 0; i < 2; i++)
		kids[i] = h_fork(collide_agent, &agents[i]);
	for (int i = 0; i < 2; i++) {
		st[i] = h_wait(kids[i], 60000);
		cr_assert(st[i] >= 1 && st[i] <= 5, "agent %d failed (status %d)", i + 1, st[i]);
	}
	cr_assert_gt(st[0] + st[1], 2, "no %s happened: both committed at the first try", code);
	/* each transaction's effects are there exactly once */
	for (int id = 1; id <= 2; id++) {
		snprintf(sql, sizeof(sql), "select count(*) from api_log where agent = %d", id);
		cr_assert_eq(h_pg_num(pg, sql), 1, "agent %d committed %lld times", id,
			     h_pg_num(pg, sql));
		snprintf(sql, sizeof(sql), "select v + w from api_acct where id = %d", id);
		cr_assert_eq(h_pg_num(pg, sql), how == SERIALIZE ? 1 : 2, "row %d: %lld", id,
			     h_pg_num(pg, sql));
	}
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(api, transaction_serialization_failure_is_rerun_and_commits_once, .timeout = 90)
{
	collide(SERIALIZE, "40001");
}

Test(api, transaction_deadlock_is_rerun_and_commits_once, .timeout = 90)
{
	collide(DEADLOCK, "40P01");
}

/* --- rollback, READ ONLY, isolation --- */

struct body {
	const char *sql;     /* run first */
	int ret;             /* then return this (0: commit) */
	int report;          /* on a failed statement: report it (pgb_fail) or ignore it */
	char seen[2][32];    /* what `show` said, when sql is NULL */
	int calls;
};

static int plain_body(pgb_conn *c, void *arg, struct pgb_outcome *why)
{
	struct body *b = arg;
	pgb_result *r;

	b->calls++;
	if (!b->sql) {
		static const char *const q[] = { "show transaction_isolation",
						 "show transaction_read_only" };

		for (int i = 0; i < 2; i++) {
			r = pgb_exec(c, q[i]);
			if (!pgb_result_ok(r))
				return pgb_fail(r, why);
			snprintf(b->seen[i], sizeof(b->seen[i]), "%s", pgb_getvalue(r, 0, 0));
			pgb_clear(r);
		}
		return b->ret;
	}
	r = pgb_exec(c, b->sql);
	if (!pgb_result_ok(r) && b->report)
		return pgb_fail(r, why);
	pgb_clear(r);
	if (b->ret)
		snprintf(why->message, sizeof(why->message), "the body said no");
	return b->ret;
}

Test(api, transaction_failure_rolls_back, .timeout = 60)
{
	static const struct {
		const char *name;
		struct body body;
		int rc;
		const char *sqlstate;
		const char *message;   /* a part of it */
		long long rows;        /* in api_t afterwards */
	} cases[] = {
		{ .name = "commit", .body = { .sql = "insert into api_t values (1)" },
		  .rc = PGB_OK, .sqlstate = "", .message = "", .rows = 1 },
		{ .name = "body says no", .body = { .sql = "insert into api_t values (2)", .ret = -1 },
		  .rc = PGB_FAILED, .sqlstate = "", .message = "the body said no", .rows = 1 },
		{ .name = "body returns 7 silently",
		  .body = { .sql = "insert into api_t values (3)", .ret = 7 },
		  .rc = PGB_FAILED, .sqlstate = "", .message = "the body said no", .rows = 1 },
		{ .name = "unique violation",
		  .body = { .sql = "insert into api_t values (1)", .report = 1 },
		  .rc = PGB_FAILED, .sqlstate = "23505", .message = "duplicate key", .rows = 1 },
		{ .name = "error ignored, body returns 0",
		  .body = { .sql = "insert into api_t values (1)", .report = 0 },
		  .rc = PGB_FAILED, .sqlstate = "25P02", .message = "COMMIT rolled back", .rows = 1 },
		{ .name = "commit again", .body = { .sql = "insert into api_t values (4)" },
		  .rc = PGB_OK, .sqlstate = "", .message = "", .rows = 2 },
	};
	PGconn *pg = h_pg();
	pgb_conn *c;

	pg_do(pg, "set client_min_messages = warning; drop table if exists api_t;"
		  "create table api_t (k int primary key)");
	h_broker_start(&br, NULL);
	c = h_connect(&br);
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct body b = cases[i].body;
		struct pgb_outcome out;
		int rc = pgb_transaction(c, plain_body, &b, NULL, &out);

		cr_expect_eq(rc, cases[i].rc, "%s: rc %d (%s %s)", cases[i].name, rc, out.sqlstate,
			     out.message);
		cr_expect_eq(b.calls, 1, "%s: the body ran %d times", cases[i].name, b.calls);
		cr_expect_eq(out.attempts, 1, "%s", cases[i].name);
		cr_expect_str_eq(out.sqlstate, cases[i].sqlstate, "%s", cases[i].name);
		cr_expect_not_null(strstr(out.message, cases[i].message), "%s: message \"%s\"",
				   cases[i].name, out.message);
		cr_expect_eq(h_pg_num(pg, "select count(*) from api_t"), cases[i].rows, "%s",
			     cases[i].name);
		/* the connection is usable and outside any transaction */
		cr_expect_eq(h_backends(pg, &br, "state like 'idle in transaction%'"), 0,
			     "%s: left a transaction open", cases[i].name);
		cr_expect_eq(h_num(c, "select 1"), 1, "%s", cases[i].name);
	}
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(api, read_only_transaction_refuses_a_write, .timeout = 60)
{
	PGconn *pg = h_pg();
	struct body write = { .sql = "insert into api_ro values (1)", .report = 1 };
	struct body look = { 0 };
	struct pgb_txn_opts ro = { .read_only = 1, .isolation = PGB_REPEATABLE_READ };
	struct pgb_txn_opts ser = { .isolation = PGB_SERIALIZABLE };
	struct pgb_outcome out;
	pgb_conn *c;

	pg_do(pg, "set client_min_messages = warning; drop table if exists api_ro;"
		  "create table api_ro (k int)");
	h_broker_start(&br, NULL);
	c = h_connect(&br);
	cr_assert_eq(pgb_transaction(c, plain_body, &write, &ro, &out), PGB_FAILED);
	cr_assert_str_eq(out.sqlstate, "25006", "%s %s", out.sqlstate, out.message);
	cr_assert_eq(out.attempts, 1);
	cr_assert_eq(h_pg_num(pg, "select count(*) from api_ro"), 0);
	cr_assert_eq(pgb_transaction(c, plain_body, &look, &ro, &out), PGB_OK, "%s", out.message);
	cr_assert_str_eq(look.seen[0], "repeatable read");
	cr_assert_str_eq(look.seen[1], "on");
	cr_assert_eq(pgb_transaction(c, plain_body, &look, &ser, &out), PGB_OK, "%s", out.message);
	cr_assert_str_eq(look.seen[0], "serializable");
	cr_assert_str_eq(look.seen[1], "off");
	/* and the write goes through without READ ONLY */
	write.calls = 0;
	cr_assert_eq(pgb_transaction(c, plain_body, &write, NULL, &out), PGB_OK, "%s", out.message);
	cr_assert_eq(h_pg_num(pg, "select count(*) from api_ro"), 1);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int bad_body(pgb_conn *c, void *arg, struct pgb_outcome *why)
{
	(void)c, (void)arg, (void)why;
	return 0;
}

Test(api, transaction_bad_arguments, .timeout = 60)
{
	static const struct {
		struct pgb_txn_opts opts;
	} bad[] = {
		{ .opts = { .isolation = -1 } },
		{ .opts = { .isolation = PGB_SERIALIZABLE + 1 } },
		{ .opts = { .attempts = -1 } },
		{ .opts = { .base_ms = -5 } },
		{ .opts = { .max_ms = -5 } },
	};
	struct pgb_outcome out;
	pgb_conn *dead;

	h_broker_start(&br, NULL);
	pgb_conn *c = h_connect(&br);

	cr_assert_eq(pgb_transaction(NULL, bad_body, NULL, NULL, &out), PGB_BAD_ARGUMENT);
	cr_assert_str_eq(out.sqlstate, "PB006");
	cr_assert_eq(out.attempts, 0);
	cr_assert_eq(pgb_transaction(c, NULL, NULL, NULL, &out), PGB_BAD_ARGUMENT);
	cr_assert_str_eq(out.sqlstate, "PB006");
	cr_assert_eq(pgb_transaction(c, NULL, NULL, NULL, NULL), PGB_BAD_ARGUMENT);
	for (size_t i = 0; i < NELEM(bad); i++) {
		cr_expect_eq(pgb_transaction(c, bad_body, NULL, &bad[i].opts, &out),
			     PGB_BAD_ARGUMENT, "case %zu", i);
		cr_expect_str_eq(out.sqlstate, "PB006", "case %zu", i);
	}
	cr_assert_eq(pgb_fail(NULL, NULL), -1);
	/* a connection that is not connected: a clear error from BEGIN */
	dead = pgb_connect("/nonexistent/pgbroker-dir");
	cr_assert_eq(pgb_transaction(dead, bad_body, NULL, NULL, &out), PGB_FAILED);
	cr_assert_str_eq(out.sqlstate, "PB007", "%s %s", out.sqlstate, out.message);
	cr_assert_not_null(strstr(out.message, "BEGIN"), "%s", out.message);
	pgb_finish(dead);
	cr_assert_eq(h_num(c, "select 1"), 1);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* pgb_transaction inside the caller's own transaction: refused before it
 * sends anything (its BEGIN would only warn, its COMMIT would commit the
 * caller's work); after the caller's COMMIT or ROLLBACK it runs. Also in
 * a failed transaction, and after a savepoint. */
Test(api, transaction_inside_an_open_transaction_is_refused, .timeout = 60)
{
	struct body b = { .sql = "insert into t_nested values (2)", .report = 1 };
	struct pgb_outcome out;
	PGconn *pg = h_pg();

	h_broker_start(&br, NULL);
	pgb_conn *c = h_connect(&br);

	pgb_clear(h_ok(c, "drop table if exists t_nested"));
	pgb_clear(h_ok(c, "create table t_nested (v int)"));
	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "insert into t_nested values (1)"));
	cr_assert_eq(pgb_transaction(c, plain_body, &b, NULL, &out), PGB_BAD_ARGUMENT);
	cr_assert_str_eq(out.sqlstate, "PB006");
	cr_assert_not_null(strstr(out.message, "inside an open transaction"), "%s", out.message);
	cr_assert_eq(b.calls, 0, "the body ran");
	/* the caller's transaction is still open and uncommitted */
	cr_assert_eq(h_pg_num(pg, "select count(*) from t_nested"), 0);
	cr_assert_eq(h_num(c, "select count(*) from t_nested"), 1);
	pgb_clear(h_ok(c, "savepoint s"));
	cr_assert_eq(pgb_transaction(c, plain_body, &b, NULL, &out), PGB_BAD_ARGUMENT);
	/* failed: still inside it */
	pgb_clear(pgb_exec(c, "select 1/0"));
	cr_assert_eq(pgb_transaction(c, plain_body, &b, NULL, &out), PGB_BAD_ARGUMENT);
	pgb_clear(h_ok(c, "rollback"));
	cr_assert_eq(pgb_transaction(c, plain_body, &b, NULL, &out), PGB_OK, "%s", out.message);
	cr_assert_eq(b.calls, 1);
	cr_assert_eq(h_pg_num(pg, "select count(*) from t_nested"), 1);
	/* and after a COMMIT */
	pgb_clear(h_ok(c, "begin"));
	cr_assert_eq(pgb_transaction(c, plain_body, &b, NULL, &out), PGB_BAD_ARGUMENT);
	pgb_clear(h_ok(c, "commit"));
	cr_assert_eq(pgb_transaction(c, plain_body, &b, NULL, &out), PGB_OK, "%s", out.message);
	cr_assert_eq(h_pg_num(pg, "select count(*) from t_nested"), 2);
	pgb_clear(h_ok(c, "drop table t_nested"));
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* --- pgb_retry --- */

struct flaky {
	pgb_conn *c;
	const char *sql;
	int calls;
};

static int flaky_op(void *arg, struct pgb_outcome *why)
{
	struct flaky *f = arg;
	pgb_result *r;

	f->calls++;
	r = pgb_exec(f->c, f->sql);
	if (!pgb_result_ok(r))
		return pgb_fail(r, why);
	pgb_clear(r);
	return 0;
}

Test(api, retry_runs_a_flaky_operation_until_it_succeeds, .timeout = 60)
{
	struct pgb_retry_policy p = pgb_retry_policy_default();
	struct pgb_outcome out;
	struct flaky f;
	long long t0;

	cr_assert_eq(p.attempts, 5);
	cr_assert_eq(p.base_ms, 100);
	cr_assert_eq(p.max_ms, 30000);
	cr_assert_eq(p.jitter_pct, 5);
	cr_assert_eq(p.deadline_ms, 0);
	cr_assert_null(p.is_transient);

	h_broker_start(&br, NULL);
	f = (struct flaky){ .c = h_connect(&br) };
	/* fails with 55P03 (lock_not_available: transient; the broker itself does not
	 * retry it) twice, then succeeds */
	pgb_clear(h_ok(f.c, "drop sequence if exists api_seq; create sequence api_seq;"
			    "create or replace function api_flaky() returns bigint language plpgsql "
			    "as $$ declare n bigint := nextval('api_seq'); begin "
			    "if n <= 2 then raise exception 'busy, try again' using errcode = '55P03';"
			    " end if; return n; end $$"));
	f.sql = "select api_flaky()";
	p.base_ms = 40;
	t0 = h_now_ms();
	cr_assert_eq(pgb_retry(flaky_op, &f, &p, &out), PGB_OK, "%s %s", out.sqlstate,
		     out.message);
	cr_assert_eq(f.calls, 3);
	cr_assert_eq(out.attempts, 3);
	cr_assert_str_eq(out.sqlstate, "");
	cr_assert_geq(h_now_ms() - t0, (40 + 80) * 95 / 100, "did not back off");

	/* a permanent failure is not retried */
	f.calls = 0;
	f.sql = "select 1/0";
	cr_assert_eq(pgb_retry(flaky_op, &f, &p, &out), PGB_FAILED);
	cr_assert_eq(f.calls, 1);
	cr_assert_eq(out.attempts, 1);
	cr_assert_str_eq(out.sqlstate, "22012");
	cr_assert_not_null(strstr(out.message, "division by zero"), "%s", out.message);

	/* a transient failure is retried until the attempts are spent */
	pgb_clear(h_ok(f.c, "select setval('api_seq', 1, false)"));
	f.calls = 0;
	f.sql = "select api_flaky()";
	p.attempts = 2;
	p.base_ms = 1;
	cr_assert_eq(pgb_retry(flaky_op, &f, &p, &out), PGB_FAILED);
	cr_assert_eq(f.calls, 2);
	cr_assert_eq(out.attempts, 2);
	cr_assert_str_eq(out.sqlstate, "55P03");
	cr_assert_not_null(strstr(out.message, "busy, try again"), "%s", out.message);
	pgb_finish(f.c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct scripted {
	const char *const *states;   /* what each call fails with; NULL: succeed */
	int calls;
};

static int scripted_op(void *arg, struct pgb_outcome *why)
{
	struct scripted *s = arg;
	const char *st = s->states[s->calls++];

	if (!st)
		return 0;
	snprintf(why->sqlstate, sizeof(why->sqlstate), "%s", st);
	return -1;
}

Test(api, retry_policy_hooks_deadline_and_bad_arguments)
{
	static const char *const always_08007[] = { "08007", "08007", "08007", "08007", "08007",
						    "08007", "08007", "08007", NULL };
	static const char *const no_code_then_ok[] = { "", "", NULL };
	static const char *const endless[64] = { "40001", "40001", "40001", "40001", "40001",
						 "40001", "40001", "40001", "40001", "40001" };
	struct pgb_retry_policy p = pgb_retry_policy_default();
	struct pgb_outcome out;
	struct scripted s;
	long long t0;

	p.base_ms = 1;
	/* the default hook retries 08007 (transient) ... */
	s = (struct scripted){ .states = always_08007 };
	cr_assert_eq(pgb_retry(scripted_op, &s, &p, &out), PGB_FAILED);
	cr_assert_eq(s.calls, 5);
	cr_assert_str_eq(out.sqlstate, "08007");
	cr_assert_not_null(strstr(out.message, "transaction_resolution_unknown"), "%s",
			   out.message);
	/* ... pgb_sqlstate_retry_safe does not: its fate is unknown */
	p.is_transient = pgb_sqlstate_retry_safe;
	s = (struct scripted){ .states = always_08007 };
	cr_assert_eq(pgb_retry(scripted_op, &s, &p, &out), PGB_FAILED);
	cr_assert_eq(s.calls, 1);
	/* no SQLSTATE: the default hook retries, retry_safe does not */
	s = (struct scripted){ .states = no_code_then_ok };
	cr_assert_eq(pgb_retry(scripted_op, &s, &p, &out), PGB_FAILED);
	cr_assert_eq(s.calls, 1);
	p.is_transient = NULL;
	s = (struct scripted){ .states = no_code_then_ok };
	cr_assert_eq(pgb_retry(scripted_op, &s, NULL, &out), PGB_OK);   /* default policy */
	cr_assert_eq(s.calls, 3);
	cr_assert_eq(out.attempts, 3);
	/* the deadline stops it before the attempts are spent */
	p = pgb_retry_policy_default();
	p.attempts = 50;
	p.base_ms = 50;
	p.max_ms = 50;
	p.jitter_pct = 0;
	p.deadline_ms = 180;
	s = (struct scripted){ .states = endless };
	t0 = h_now_ms();
	cr_assert_eq(pgb_retry(scripted_op, &s, &p, &out), PGB_FAILED);
	cr_assert_leq(h_now_ms() - t0, 400);
	cr_assert(s.calls >= 2 && s.calls <= 4, "%d calls", s.calls);
	cr_assert_eq(out.attempts, s.calls);
	/* bad arguments */
	cr_assert_eq(pgb_retry(NULL, NULL, NULL, &out), PGB_BAD_ARGUMENT);
	cr_assert_str_eq(out.sqlstate, "PB006");
	cr_assert_eq(pgb_retry(NULL, NULL, NULL, NULL), PGB_BAD_ARGUMENT);
	static const struct pgb_retry_policy bad[] = {
		{ .attempts = 0 },
		{ .attempts = 1, .base_ms = -1 },
		{ .attempts = 1, .max_ms = -1 },
		{ .attempts = 1, .jitter_pct = 101 },
		{ .attempts = 1, .jitter_pct = -1 },
		{ .attempts = 1, .deadline_ms = -1 },
	};
	for (size_t i = 0; i < NELEM(bad); i++) {
		s = (struct scripted){ .states = no_code_then_ok };
		cr_expect_eq(pgb_retry(scripted_op, &s, &bad[i], &out), PGB_BAD_ARGUMENT, "%zu", i);
		cr_expect_eq(s.calls, 0, "%zu", i);
		cr_expect_str_eq(out.sqlstate, "PB006", "%zu", i);
	}
}

Test(api, sqlstate_classification_is_public)
{
	cr_assert(pgb_sqlstate_is_transient("40001"));
	cr_assert(pgb_sqlstate_is_transient("PB001"));
	cr_assert_not(pgb_sqlstate_is_transient("23505"));
	cr_assert_not(pgb_sqlstate_is_transient(NULL));
	cr_assert_eq(pgb_sqlstate_ran("08001"), PGB_RAN_NO);
	cr_assert_eq(pgb_sqlstate_ran("40P01"), PGB_RAN_ROLLED_BACK);
	cr_assert_eq(pgb_sqlstate_ran("08007"), PGB_RAN_UNKNOWN);
	cr_assert_eq(pgb_sqlstate_ran("garbage"), PGB_RAN_UNKNOWN);
	cr_assert(pgb_sqlstate_retry_safe("PB008"));
	cr_assert_not(pgb_sqlstate_retry_safe("PB003"));
}

/* --- pgb_breaker --- */

static long long fake_now;

static long long fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

Test(api, breaker_transitions_with_an_injected_clock)
{
	static const char *const fail[] = { "08006", "08006", "08006", "08006", "08006", "08006",
					    "08006", "08006", "08006", "08006", "08006" };
	static const char *const answer[] = { "23505", "23505", "23505", "23505", "23505",
					      "23505" };
	static const char *const ok[] = { NULL, NULL, NULL };
	struct pgb_breaker b;
	struct pgb_outcome out;
	struct scripted s = { .states = fail };

	cr_assert_eq(pgb_breaker_init(&b, 3, 1000), PGB_OK);
	b.clock_ms = fake_clock;
	fake_now = 5000;
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_CLOSED);
		cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_FAILED);
		cr_assert_str_eq(out.sqlstate, "08006");
	}
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_OPEN);
	cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_REJECTED);
	cr_assert_eq(s.calls, 3, "an open breaker ran the operation");
	cr_assert_str_eq(out.sqlstate, "PB002");
	cr_assert_eq(out.attempts, 0);
	cr_assert_not_null(strstr(out.message, "next probe in 1000 ms"), "%s", out.message);
	/* after reset_ms one probe; it fails: open again, for twice as long */
	fake_now += 1000;
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_HALF_OPEN);
	cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_FAILED);
	cr_assert_eq(s.calls, 4);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_OPEN);
	fake_now += 1999;
	cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_REJECTED);
	fake_now += 1;
	/* the probe succeeds: closed */
	s = (struct scripted){ .states = ok };
	cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_OK);
	cr_assert_eq(out.attempts, 1);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_CLOSED);
	/* permanent answers from PostgreSQL are not an outage */
	s = (struct scripted){ .states = answer };
	for (int i = 0; i < 6; i++)
		cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_FAILED);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_CLOSED);
	cr_assert_str_eq(out.sqlstate, "23505");
	/* bad arguments */
	struct pgb_breaker junk;
	memset(&junk, 0xa5, sizeof(junk));
	cr_assert_eq(pgb_breaker_call(&junk, scripted_op, &s, &out), PGB_BAD_ARGUMENT);
	cr_assert_str_eq(out.sqlstate, "PB006");
	cr_assert_eq(pgb_breaker_call(NULL, scripted_op, &s, NULL), PGB_BAD_ARGUMENT);
	cr_assert_eq(pgb_breaker_call(&b, NULL, NULL, &out), PGB_BAD_ARGUMENT);
	cr_assert_eq(pgb_breaker_state(NULL), -1);
	cr_assert_eq(pgb_breaker_state(&junk), -1);
	cr_assert_eq(pgb_breaker_init(NULL, 1, 1), PGB_BAD_ARGUMENT);
	cr_assert_eq(pgb_breaker_init(&junk, -1, -1), PGB_BAD_ARGUMENT);
	cr_assert_eq(pgb_breaker_state(&junk), PGB_BREAKER_CLOSED, "usable with the defaults");
	cr_assert_eq(pgb_breaker_init(&junk, 0, 0), PGB_OK);
}

Test(api, breaker_takes_a_custom_sqlstate_for_an_answer)
{
	/* RAISE ... USING ERRCODE = 'U0001': a class the table does not know
	 * is permanent, and it came from a PostgreSQL that answers */
	static const char *const custom[] = { "U0001", "U0001", "U0001", "U0001", "U0001",
					      "U0001" };
	struct pgb_breaker b;
	struct pgb_outcome out;
	struct scripted s = { .states = custom };

	cr_assert_eq(pgb_breaker_init(&b, 3, 1000), PGB_OK);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(pgb_breaker_call(&b, scripted_op, &s, &out), PGB_FAILED,
			     "call %d", i);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_CLOSED);
	cr_assert_str_eq(out.sqlstate, "U0001");
}

struct dial {
	const char *dir;
	int calls;
};

/* Connect to a broker and run one statement. */
static int dial_op(void *arg, struct pgb_outcome *why)
{
	struct dial *d = arg;
	pgb_conn *c = pgb_connect(d->dir);
	pgb_result *r;
	int rc;

	d->calls++;
	r = pgb_exec(c, "select 1");
	if (pgb_result_ok(r)) {
		pgb_clear(r);
		rc = 0;
	} else {
		rc = pgb_fail(r, why);
	}
	pgb_finish(c);
	return rc;
}

struct guarded {
	struct pgb_breaker *br;
	struct dial *d;
};

/* dial_op through a breaker, as an operation for pgb_retry. */
static int guarded_op(void *arg, struct pgb_outcome *why)
{
	struct guarded *g = arg;

	return pgb_breaker_call(g->br, dial_op, g->d, why) == PGB_OK ? 0 : -1;
}

Test(api, breaker_around_a_failing_operation_fails_fast, .timeout = 60)
{
	struct dial d = { .dir = "/nonexistent/pgbroker-dir" };
	struct pgb_breaker b;
	struct pgb_outcome out;
	long long t0;

	cr_assert_eq(pgb_breaker_init(&b, 3, 300), PGB_OK);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(pgb_breaker_call(&b, dial_op, &d, &out), PGB_FAILED);
	cr_assert_str_eq(out.sqlstate, "PB007", "%s", out.message);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_OPEN);
	t0 = h_now_ms();
	for (int i = 0; i < 100; i++)
		cr_assert_eq(pgb_breaker_call(&b, dial_op, &d, &out), PGB_REJECTED);
	cr_assert_eq(d.calls, 3);
	cr_assert_lt(h_now_ms() - t0, 250, "failing fast took long");
	/* the service comes back: after the reset time, the probe closes it */
	h_broker_start(&br, NULL);
	d.dir = br.dir;
	while (pgb_breaker_state(&b) == PGB_BREAKER_OPEN)
		usleep(10000);
	cr_assert_eq(pgb_breaker_call(&b, dial_op, &d, &out), PGB_OK, "%s", out.message);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_CLOSED);
	/* it trips again; pgb_retry over the breaker waits out the open breaker
	 * (PB002 is transient) and gets through with the probe */
	d.dir = "/nonexistent/pgbroker-dir";
	for (int i = 0; i < 3; i++)
		cr_assert_eq(pgb_breaker_call(&b, dial_op, &d, &out), PGB_FAILED);
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_OPEN);
	d.dir = br.dir;
	struct guarded g = { .br = &b, .d = &d };
	struct pgb_retry_policy p = pgb_retry_policy_default();

	p.attempts = 20;
	p.max_ms = 200;
	d.calls = 0;
	cr_assert_eq(pgb_retry(guarded_op, &g, &p, &out), PGB_OK, "%s %s", out.sqlstate,
		     out.message);
	cr_assert_gt(out.attempts, 1, "the breaker was not open");
	cr_assert_eq(d.calls, 1, "the operation ran while the breaker was open");
	cr_assert_eq(pgb_breaker_state(&b), PGB_BREAKER_CLOSED);
	cr_assert_eq(h_broker_stop(&br), 0);
}
