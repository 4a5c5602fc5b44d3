/* A BEGIN costs no round trip of its own: the broker answers it and sends
 * it with the transaction's first statement, in one pipeline. What an
 * agent sees must stay what a direct connection shows: errors (of the
 * first statement, 25P02 after it), isolation levels, READ ONLY,
 * savepoints, BEGIN;COMMIT and BEGIN;ROLLBACK with nothing between (no
 * backend at all), pgb_reset and an agent dying in between. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

static struct h_broker br;

TestSuite(txn, .timeout = 120);

static int read_counters(struct stats_counters *c)
{
	struct stats_data d;

	if (h_stats(br.dir, &d) < 0)
		return -1;
	*c = d.c;
	return 0;
}

struct want_count {
	uint64_t deferred, local;
};

static int counters_reach(void *arg)
{
	const struct want_count *w = arg;
	struct stats_counters c;

	return read_counters(&c) == 0 && c.begins_deferred >= w->deferred &&
	       c.txns_local >= w->local;
}

/* The counters, once the broker has published at least w (bounded wait),
 * must be exactly w: nothing else deferred a BEGIN meanwhile. */
static void expect_counters(uint64_t deferred, uint64_t local)
{
	struct want_count w = { deferred, local };
	struct stats_counters c;

	cr_expect(h_until(counters_reach, &w, 10000), "counters never reached %llu/%llu",
		  (unsigned long long)deferred, (unsigned long long)local);
	cr_assert_eq(read_counters(&c), 0);
	cr_expect_eq(c.begins_deferred, deferred, "begins_deferred %llu, want %llu",
		     (unsigned long long)c.begins_deferred, (unsigned long long)deferred);
	cr_expect_eq(c.txns_local, local, "txns_local %llu, want %llu",
		     (unsigned long long)c.txns_local, (unsigned long long)local);
}

static void expect_state(pgb_result *r, const char *sqlstate, const char *what)
{
	cr_expect_not(pgb_result_ok(r), "%s succeeded", what);
	cr_expect_str_eq(pgb_sqlstate(r), sqlstate, "%s: %s", what, pgb_result_error(r));
	pgb_clear(r);
}

static void expect_tag(pgb_result *r, const char *tag, const char *what)
{
	cr_expect(pgb_result_ok(r), "%s failed: %s", what, pgb_result_error(r));
	cr_expect_eq(pgb_result_status(r), PGB_COMMAND_OK, "%s: status %d", what,
		     pgb_result_status(r));
	cr_expect_str_eq(pgb_cmd_status(r), tag, "%s", what);
	pgb_clear(r);
}

static void start(void)
{
	h_broker_start(&br, (const char *[]){ "--min-pool-size", "1", NULL });
}

static long long in_txn_backends(PGconn *pg)
{
	return h_backends(pg, &br, "state like 'idle in transaction%'");
}

Test(txn, begin_is_answered_at_once_and_sent_with_the_first_statement)
{
	PGconn *pg = h_pg();
	pgb_conn *c;

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_t; create table txn_t (k int)"));
	expect_tag(pgb_exec(c, "begin"), "BEGIN", "begin");
	cr_expect_eq(in_txn_backends(pg), 0, "the BEGIN reached a backend on its own");
	expect_tag(pgb_exec(c, "insert into txn_t values (1)"), "INSERT 0 1", "insert");
	cr_expect_eq(in_txn_backends(pg), 1, "the first statement did not open the transaction");
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_t"), 0, "uncommitted row visible");
	pgb_clear(h_ok(c, "insert into txn_t values (2)"));
	expect_tag(pgb_exec(c, "commit"), "COMMIT", "commit");
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_t"), 2);
	expect_counters(1, 0);

	/* with parameters, and START TRANSACTION */
	expect_tag(pgb_exec(c, "start transaction"), "START TRANSACTION", "start transaction");
	{
		const char *v[] = { "3" };
		pgb_result *r = pgb_exec_params(c, "insert into txn_t values ($1::int)", 1, v);

		expect_tag(r, "INSERT 0 1", "insert with a parameter");
	}
	expect_tag(pgb_exec(c, "rollback"), "ROLLBACK", "rollback");
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_t where k = 3"), 0);
	expect_counters(2, 0);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The first statement fails after a deferred BEGIN: the transaction is
 * aborted (25P02 next), COMMIT answers ROLLBACK, ROLLBACK works; the same
 * with a parameter error and a text of several statements. */
Test(txn, a_failed_first_statement_leaves_the_transaction_aborted)
{
	PGconn *pg = h_pg();
	pgb_conn *c;
	const char *bad[] = { "x" };

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_e; create table txn_e (k int)"));

	expect_tag(pgb_exec(c, "begin"), "BEGIN", "begin");
	expect_state(pgb_exec(c, "select 1/0"), "22012", "division by zero");
	expect_state(pgb_exec(c, "select 1"), "25P02", "a statement after the error");
	expect_tag(pgb_exec(c, "commit"), "ROLLBACK", "commit of an aborted transaction");

	expect_tag(pgb_exec(c, "begin"), "BEGIN", "begin");
	expect_state(pgb_exec_params(c, "insert into txn_e values ($1::int)", 1, bad), "22P02",
		     "bad parameter");
	expect_state(pgb_exec(c, "insert into txn_e values (1)"), "25P02", "insert after error");
	expect_tag(pgb_exec(c, "rollback"), "ROLLBACK", "rollback");

	/* a syntax error: its position is the statement's own, not shifted */
	expect_tag(pgb_exec(c, "begin"), "BEGIN", "begin");
	{
		pgb_result *r = pgb_exec(c, "select 1 frm txn_e");

		cr_expect_str_eq(pgb_sqlstate(r), "42601");
		cr_expect_str_eq(pgb_result_error_field(r, PGB_DIAG_STATEMENT_POSITION), "14");
		pgb_clear(r);
	}
	expect_tag(pgb_exec(c, "rollback"), "ROLLBACK", "rollback");

	/* several statements in the first text: BEGIN alone, then the text */
	expect_tag(pgb_exec(c, "begin"), "BEGIN", "begin");
	expect_state(pgb_exec(c, "insert into txn_e values (2); select 1/0"), "22012",
		     "a text of two statements");
	expect_state(pgb_exec(c, "select 1"), "25P02", "a statement after the error");
	expect_tag(pgb_exec(c, "rollback"), "ROLLBACK", "rollback");
	expect_tag(pgb_exec(c, "begin"), "BEGIN", "begin");
	pgb_clear(h_ok(c, "insert into txn_e values (3); insert into txn_e values (4)"));
	expect_tag(pgb_exec(c, "commit"), "COMMIT", "commit");

	cr_expect_eq(h_pg_num(pg, "select coalesce(sum(k), 0) from txn_e"), 7);
	cr_expect_eq(in_txn_backends(pg), 0);
	expect_counters(5, 0);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct iso {
	const char *begin;
	const char *level;
	const char *read_only;
};

Test(txn, isolation_levels_and_read_only_hold_inside)
{
	static const struct iso cases[] = {
		{ .begin = "begin", .level = "read committed", .read_only = "off" },
		{ .begin = "begin isolation level repeatable read", .level = "repeatable read",
		  .read_only = "off" },
		{ .begin = "BEGIN ISOLATION LEVEL SERIALIZABLE", .level = "serializable",
		  .read_only = "off" },
		{ .begin = "start transaction isolation level read uncommitted, read only",
		  .level = "read uncommitted", .read_only = "on" },
		{ .begin = "begin read only", .level = "read committed", .read_only = "on" },
		{ .begin = "begin isolation level serializable, read only, deferrable",
		  .level = "serializable", .read_only = "on" },
		{ .begin = "begin read write", .level = "read committed", .read_only = "off" },
	};
	const size_t n = sizeof(cases) / sizeof(cases[0]);
	pgb_conn *c;

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_ro; create table txn_ro (k int)"));
	for (size_t i = 0; i < n; i++) {
		pgb_result *r;

		pgb_clear(h_ok(c, cases[i].begin));
		r = h_ok(c, "select current_setting('transaction_isolation'), "
			    "current_setting('transaction_read_only')");
		cr_expect_str_eq(pgb_getvalue(r, 0, 0), cases[i].level, "%s", cases[i].begin);
		cr_expect_str_eq(pgb_getvalue(r, 0, 1), cases[i].read_only, "%s", cases[i].begin);
		pgb_clear(r);
		expect_tag(pgb_exec(c, "commit"), "COMMIT", cases[i].begin);
	}
	/* a write in a READ ONLY transaction: 25006, as its first statement too */
	pgb_clear(h_ok(c, "begin read only"));
	expect_state(pgb_exec(c, "insert into txn_ro values (1)"), "25006", "write in read only");
	expect_state(pgb_exec(c, "select 1"), "25P02", "after the refused write");
	pgb_clear(h_ok(c, "rollback"));
	cr_expect_eq(h_num(c, "select count(*) from txn_ro"), 0);
	expect_counters(n + 1, 0);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct txn_check {
	int isolation, read_only;
	const char *level;
	int calls;
};

static int check_body(pgb_conn *c, void *arg, struct pgb_outcome *why)
{
	struct txn_check *t = arg;
	pgb_result *r = pgb_exec(c, "select current_setting('transaction_isolation'), "
				    "current_setting('transaction_read_only')");

	(void)why;
	t->calls++;
	cr_expect(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), t->level);
	cr_expect_str_eq(pgb_getvalue(r, 0, 1), t->read_only ? "on" : "off");
	pgb_clear(r);
	r = pgb_exec(c, "insert into txn_pt values (1)");
	if (t->read_only)
		cr_expect_str_eq(pgb_sqlstate(r), "25006");
	else
		cr_expect(pgb_result_ok(r), "%s", pgb_result_error(r));
	pgb_clear(r);
	return t->read_only ? -1 : 0;
}

Test(txn, pgb_transaction_isolation_levels)
{
	static const struct txn_check cases[] = {
		{ .isolation = PGB_ISOLATION_DEFAULT, .level = "read committed" },
		{ .isolation = PGB_READ_COMMITTED, .level = "read committed" },
		{ .isolation = PGB_REPEATABLE_READ, .level = "repeatable read" },
		{ .isolation = PGB_SERIALIZABLE, .level = "serializable" },
		{ .isolation = PGB_SERIALIZABLE, .read_only = 1, .level = "serializable" },
		{ .isolation = PGB_REPEATABLE_READ, .read_only = 1, .level = "repeatable read" },
	};
	const size_t n = sizeof(cases) / sizeof(cases[0]);
	pgb_conn *c;
	int committed = 0;

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_pt; create table txn_pt (k int)"));
	for (size_t i = 0; i < n; i++) {
		struct txn_check t = cases[i];
		struct pgb_txn_opts o = { .isolation = t.isolation, .read_only = t.read_only,
					  .attempts = 1 };
		struct pgb_outcome out;
		int rc = pgb_transaction(c, check_body, &t, &o, &out);

		cr_expect_eq(t.calls, 1);
		cr_expect_eq(rc, t.read_only ? PGB_FAILED : PGB_OK, "case %zu: %s", i, out.message);
		committed += !t.read_only;
	}
	cr_expect_eq(h_num(c, "select count(*) from txn_pt"), committed);
	expect_counters(n, 0);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(txn, savepoints_after_a_deferred_begin)
{
	pgb_conn *c;

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_sp; create table txn_sp (k int)"));
	/* a savepoint as the first statement */
	pgb_clear(h_ok(c, "begin"));
	expect_tag(pgb_exec(c, "savepoint a"), "SAVEPOINT", "savepoint");
	pgb_clear(h_ok(c, "insert into txn_sp values (1)"));
	expect_tag(pgb_exec(c, "rollback to savepoint a"), "ROLLBACK", "rollback to");
	pgb_clear(h_ok(c, "insert into txn_sp values (2)"));
	expect_tag(pgb_exec(c, "release a"), "RELEASE", "release");
	pgb_clear(h_ok(c, "savepoint b"));
	expect_state(pgb_exec(c, "select 1/0"), "22012", "error under savepoint");
	pgb_clear(h_ok(c, "rollback to b"));
	pgb_clear(h_ok(c, "insert into txn_sp values (3)"));
	pgb_clear(h_ok(c, "commit"));
	{
		pgb_result *r = h_ok(c, "select string_agg(k::text, ',' order by k) from txn_sp");

		cr_expect_str_eq(pgb_getvalue(r, 0, 0), "2,3");
		pgb_clear(r);
	}
	/* ROLLBACK TO a savepoint that does not exist, as the first statement */
	pgb_clear(h_ok(c, "begin"));
	expect_state(pgb_exec(c, "rollback to savepoint nowhere"), "3B001", "no such savepoint");
	expect_state(pgb_exec(c, "select 1"), "25P02", "after it");
	pgb_clear(h_ok(c, "rollback"));
	expect_counters(2, 0);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* BEGIN;COMMIT and BEGIN;ROLLBACK need no backend: PostgreSQL answers
 * them with their tags and no warning, and so does the broker. */
Test(txn, an_empty_transaction_uses_no_backend)
{
	static const struct {
		const char *end, *tag;
	} ends[] = {
		{ "commit", "COMMIT" }, { "rollback", "ROLLBACK" }, { "end", "COMMIT" },
		{ "abort", "ROLLBACK" }, { "COMMIT WORK", "COMMIT" },
	};
	const size_t n = sizeof(ends) / sizeof(ends[0]);
	PGconn *pg = h_pg();
	pgb_conn *c;

	start();
	c = h_connect(&br);
	/* a backend has connected: the broker knows it is no standby */
	pgb_clear(h_ok(c, "select 1"));
	/* What PostgreSQL itself answers, to compare with. */
	for (size_t i = 0; i < n; i++) {
		PGresult *x = PQexec(pg, "begin");

		PQclear(x);
		x = PQexec(pg, ends[i].end);
		cr_expect_eq(PQresultStatus(x), PGRES_COMMAND_OK);
		cr_expect_str_eq(PQcmdStatus(x), ends[i].tag, "PostgreSQL: %s", ends[i].end);
		PQclear(x);
	}
	for (size_t i = 0; i < n; i++) {
		pgb_result *r;

		expect_tag(pgb_exec(c, "begin isolation level repeatable read"), "BEGIN", "begin");
		r = pgb_exec(c, ends[i].end);
		cr_expect(pgb_result_ok(r), "%s: %s", ends[i].end, pgb_result_error(r));
		cr_expect_str_eq(pgb_cmd_status(r), ends[i].tag, "%s", ends[i].end);
		cr_expect_str_eq(pgb_result_error(r), "");
		pgb_clear(r);
	}
	expect_counters(n, n);
	/* ...but COMMIT AND CHAIN goes to the server: a transaction follows */
	pgb_clear(h_ok(c, "begin isolation level serializable"));
	expect_tag(pgb_exec(c, "commit and chain"), "COMMIT", "commit and chain");
	cr_expect_eq(in_txn_backends(pg), 1, "no transaction after COMMIT AND CHAIN");
	{
		pgb_result *r = h_ok(c, "select current_setting('transaction_isolation')");

		cr_expect_str_eq(pgb_getvalue(r, 0, 0), "serializable");
		pgb_clear(r);
	}
	pgb_clear(h_ok(c, "commit"));
	cr_expect_eq(in_txn_backends(pg), 0);
	expect_counters(n + 1, n);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A BEGIN the broker deferred, then pgb_reset: no transaction is left, the
 * next statement runs (and commits) on its own. A batch as the first
 * statement runs inside the transaction. */
Test(txn, reset_and_batch_after_a_deferred_begin)
{
	PGconn *pg = h_pg();
	pgb_conn *c;

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_r; create table txn_r (k int)"));
	pgb_clear(h_ok(c, "begin"));
	cr_assert_eq(pgb_reset(c), 0);
	pgb_clear(h_ok(c, "insert into txn_r values (1)"));
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_r"), 1, "the insert did not commit");
	cr_expect_eq(in_txn_backends(pg), 0);

	pgb_clear(h_ok(c, "begin"));
	{
		struct pgb_stmt batch[] = {
			{ .sql = "insert into txn_r values (2)" },
			{ .sql = "insert into txn_r values (3)" },
		};
		pgb_result *res[2];

		cr_expect_eq(pgb_batch(c, batch, 2, res), 0);
		pgb_clear(res[0]);
		pgb_clear(res[1]);
	}
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_r"), 1, "the batch committed alone");
	pgb_clear(h_ok(c, "rollback"));
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_r"), 1);
	expect_counters(2, 0);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct die {
	int after_insert;   /* 0: killed right after the BEGIN */
};

static int die_in_txn(void *arg)
{
	const struct die *d = arg;
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	r = pgb_exec(c, "begin");
	if (!pgb_result_ok(r))
		return 3;
	pgb_clear(r);
	if (d->after_insert) {
		r = pgb_exec(c, "insert into txn_k values (1)");
		if (!pgb_result_ok(r))
			return 4;
		pgb_clear(r);
	}
	raise(SIGKILL);
	return 5;
}

static int agents_gone(void *arg)
{
	const uint64_t *want = arg;
	struct stats_counters c;

	return read_counters(&c) == 0 && c.agents_gone >= *want;
}

static int no_txn_left(void *arg)
{
	return in_txn_backends(arg) == 0;
}

Test(txn, an_agent_killed_after_begin_leaves_nothing)
{
	PGconn *pg = h_pg();
	pgb_conn *c;
	uint64_t gone = 0;

	start();
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists txn_k; create table txn_k (k int)"));
	for (int after_insert = 0; after_insert <= 1; after_insert++) {
		struct die d = { .after_insert = after_insert };
		pid_t pid = h_fork(die_in_txn, &d);

		cr_assert_eq(h_wait(pid, 30000), 128 + SIGKILL, "the agent did not get to die");
		gone++;
		cr_assert(h_until(agents_gone, &gone, 10000), "the broker did not see it go");
		cr_expect(h_until(no_txn_left, pg, 10000), "a transaction was left open");
	}
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_k"), 0);
	/* the broker serves on, and the pool is clean */
	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "insert into txn_k values (2)"));
	pgb_clear(h_ok(c, "commit"));
	cr_expect_eq(h_pg_num(pg, "select count(*) from txn_k"), 1);
	expect_counters(3, 0);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}
