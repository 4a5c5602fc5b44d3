/* A lost transaction or session stays lost until the agent says so: after
 * the backend of an open transaction dies (pg_terminate_backend, or a
 * PostgreSQL fast restart), every later statement of that agent fails with
 * 08006 until it sends ROLLBACK; a session pinned for its state stays lost
 * until pgb_reset. Nothing of the transaction commits. pgb_reset also
 * reconnects a connection whose broker went away. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

static void pg_do(PGconn *pg, const char *sql)
{
	PGresult *x = PQexec(pg, sql);

	cr_assert(PQresultStatus(x) == PGRES_COMMAND_OK || PQresultStatus(x) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQerrorMessage(pg));
	PQclear(x);
}

/* The keys of a table, in order, as "110,130" ("" when empty). */
static void keys(PGconn *pg, const char *table, char *buf, size_t n)
{
	char sql[160];
	PGresult *x;

	snprintf(sql, sizeof(sql), "select coalesce(string_agg(k::text, ',' order by k), '') from %s",
		 table);
	x = PQexec(pg, sql);
	cr_assert_eq(PQresultStatus(x), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
	snprintf(buf, n, "%s", PQgetvalue(x, 0, 0));
	PQclear(x);
}

static void expect_keys(PGconn *pg, const char *table, const char *want)
{
	char got[256];

	keys(pg, table, got, sizeof(got));
	cr_expect_str_eq(got, want, "%s holds {%s}, not {%s}", table, got, want);
}

struct gone {
	PGconn *pg;
	long long pid;
};

static int backend_gone(void *arg)
{
	struct gone *g = arg;
	char sql[128];

	snprintf(sql, sizeof(sql), "select count(*) from pg_stat_activity where pid = %lld", g->pid);
	return h_pg_num(g->pg, sql) == 0;
}

/* Terminate the broker's backend whose last statement carries tag, and
 * wait until PostgreSQL no longer lists it. */
static void terminate(PGconn *pg, const char *tag)
{
	char sql[384];
	struct gone g = { .pg = pg };

	snprintf(sql, sizeof(sql), "select pid from pg_stat_activity where application_name = '%s' "
		 "and query like '%%%s%%' and pid <> pg_backend_pid()", strrchr(br.dir, '/') + 1, tag);
	g.pid = h_pg_num(pg, sql);
	cr_assert_gt(g.pid, 0, "no backend ran the statement tagged %s", tag);
	snprintf(sql, sizeof(sql), "select pg_terminate_backend(%lld)::int", g.pid);
	cr_assert_eq(h_pg_num(pg, sql), 1);
	cr_assert(h_until(backend_gone, &g, 10000), "backend %lld did not go away", g.pid);
}

/* A statement that must fail as part of a lost transaction or session. */
static void expect_lost(pgb_result *r, const char *what)
{
	cr_expect_not(pgb_result_ok(r), "%s succeeded (%s) after its transaction was lost", what,
		      pgb_cmd_status(r));
	cr_expect_str_eq(pgb_sqlstate(r), "08006", "%s: %s %s", what, pgb_sqlstate(r),
			 pgb_result_error(r));
	pgb_clear(r);
}

static void lost_exec(pgb_conn *c, const char *sql)
{
	expect_lost(pgb_exec(c, sql), sql);
}

static PGconn *setup(const char *const *args)
{
	PGconn *pg = h_pg();

	pg_do(pg, "drop table if exists lost_t; create table lost_t (k int)");
	h_broker_start(&br, args);
	return pg;
}

/* The rest of the transaction and its COMMIT fail, one at a time; nothing
 * of it is in the table; ROLLBACK ends the lost state. */
static void finish_blocking(pgb_conn *c, PGconn *pg)
{
	lost_exec(c, "insert into lost_t values (120)");
	lost_exec(c, "insert into lost_t values (130)");
	lost_exec(c, "commit");
	expect_keys(pg, "lost_t", "");
	pgb_clear(h_ok(c, "rollback"));
	pgb_clear(h_ok(c, "insert into lost_t values (140)"));
	expect_keys(pg, "lost_t", "140");
}

/* The same, sent without waiting. */
static void finish_pipelined(pgb_conn *c, PGconn *pg)
{
	static const char *const rest[] = { "insert into lost_t values (120)",
					    "insert into lost_t values (130)", "commit" };
	long long ids[3], id;
	pgb_result *r;

	for (int i = 0; i < 3; i++)
		cr_assert_gt(ids[i] = pgb_send(c, rest[i], 0, NULL, 0), 0, "%s",
			     pgb_error_message(c));
	for (int i = 0; i < 3; i++) {
		r = pgb_get_result(c, &id);
		cr_assert_not_null(r);
		cr_expect_eq(id, ids[i], "results out of order");
		expect_lost(r, rest[i]);
	}
	expect_keys(pg, "lost_t", "");
	id = pgb_send(c, "rollback", 0, NULL, 0);
	cr_assert_gt(id, 0);
	r = pgb_get_result(c, &id);
	cr_expect(pgb_result_ok(r), "rollback: %s %s", pgb_sqlstate(r), pgb_result_error(r));
	pgb_clear(r);
	pgb_clear(h_ok(c, "insert into lost_t values (140)"));
	expect_keys(pg, "lost_t", "140");
}

Test(lost, terminated_backend_fails_the_rest_of_the_transaction, .timeout = 60)
{
	PGconn *pg = setup(NULL);
	pgb_conn *c = h_connect(&br);

	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "insert into lost_t values (110) /* lost_blk */"));
	terminate(pg, "lost_blk");
	finish_blocking(c, pg);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(lost, terminated_backend_fails_the_rest_pipelined, .timeout = 60)
{
	PGconn *pg = setup(NULL);
	pgb_conn *c = h_connect(&br);
	long long id;

	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "insert into lost_t values (110) /* lost_pipe */"));
	terminate(pg, "lost_pipe");
	/* an independent statement cannot slip out of the lost transaction either */
	id = pgb_send(c, "insert into lost_t values (115)", 0, NULL, PGB_INDEPENDENT);
	cr_assert_gt(id, 0);
	expect_lost(pgb_get_result(c, &id), "an independent insert");
	finish_pipelined(c, pg);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int sleeping(void *arg)
{
	return h_backends(arg, &br, "query like '%lost_sleep%' and state = 'active'") == 1;
}

/* Statements already queued behind the one that dies with the backend. */
Test(lost, terminated_under_a_running_statement_fails_those_queued_behind, .timeout = 60)
{
	static const char *const sql[] = {
		"begin", "insert into lost_t values (110)", "select pg_sleep(30) /* lost_sleep */",
		"insert into lost_t values (120)", "insert into lost_t values (130)", "commit",
	};
	PGconn *pg = setup(NULL);
	pgb_conn *c = h_connect(&br);
	long long ids[6], id;

	for (int i = 0; i < 6; i++)
		cr_assert_gt(ids[i] = pgb_send(c, sql[i], 0, NULL, 0), 0, "%s", pgb_error_message(c));
	cr_assert(h_until(sleeping, pg, 10000), "the sleep never ran");
	terminate(pg, "lost_sleep");
	for (int i = 0; i < 6; i++) {
		pgb_result *r = pgb_get_result(c, &id);

		cr_assert_not_null(r);
		cr_expect_eq(id, ids[i], "results out of order");
		if (i < 2) {
			cr_expect(pgb_result_ok(r), "%s: %s", sql[i], pgb_result_error(r));
			pgb_clear(r);
		} else {
			expect_lost(r, sql[i]);
		}
	}
	expect_keys(pg, "lost_t", "");
	pgb_clear(h_ok(c, "rollback"));
	pgb_clear(h_ok(c, "insert into lost_t values (140)"));
	expect_keys(pg, "lost_t", "140");
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Statements succeed again once PostgreSQL is back (bounded). */
static int statements_work(void *arg)
{
	pgb_result *r = pgb_exec(arg, "select 1");
	int ok = pgb_result_ok(r);

	pgb_clear(r);
	return ok;
}

static void restart_test(int pipelined)
{
	const char *args[] = { "--retry-delay-ms", "20", "--retry-max-delay-ms", "200",
			       "--breaker-reset-timeout-ms", "300", NULL };
	PGconn *pg = setup(args);
	pgb_conn *c = h_connect(&br);

	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "insert into lost_t values (110)"));
	PQfinish(pg);
	h_pgtmp("pause");
	h_pgtmp("start");
	pg = h_pg();
	if (pipelined) {
		static const char *const rest[] = { "insert into lost_t values (120)",
						    "insert into lost_t values (130)", "commit" };
		long long ids[3], id;

		for (int i = 0; i < 3; i++)
			cr_assert_gt(ids[i] = pgb_send(c, rest[i], 0, NULL, 0), 0);
		for (int i = 0; i < 3; i++) {
			pgb_result *r = pgb_get_result(c, &id);

			cr_expect_eq(id, ids[i]);
			expect_lost(r, rest[i]);
		}
	} else {
		lost_exec(c, "insert into lost_t values (120)");
		lost_exec(c, "insert into lost_t values (130)");
		lost_exec(c, "commit");
	}
	expect_keys(pg, "lost_t", "");
	pgb_clear(h_ok(c, "rollback"));
	cr_assert(h_until(statements_work, c, 20000), "statements fail after the restart");
	pgb_clear(h_ok(c, "insert into lost_t values (140)"));
	expect_keys(pg, "lost_t", "140");
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(lost, postgresql_fast_restart_fails_the_rest_of_the_transaction, .timeout = 120)
{
	restart_test(0);
}

Test(lost, postgresql_fast_restart_fails_the_rest_pipelined, .timeout = 120)
{
	restart_test(1);
}

/* A session pinned for its state (search_path) does not silently go on
 * without it: every statement fails until pgb_reset, ROLLBACK included. */
Test(lost, session_state_lost_until_pgb_reset, .timeout = 60)
{
	PGconn *pg = h_pg();
	pgb_conn *c;
	pgb_result *r;
	long long id;

	pg_do(pg, "drop schema if exists lost_tenant cascade; drop table if exists lost_s; "
		  "create schema lost_tenant; create table lost_tenant.lost_s (k int); "
		  "create table lost_s (k int)");
	h_broker_start(&br, NULL);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "set search_path = lost_tenant"));
	pgb_clear(h_ok(c, "insert into lost_s values (1) /* lost_sess */"));
	terminate(pg, "lost_sess");
	/* The broker may learn of the loss only from this statement, sent to
	 * the dead backend outside a transaction: its fate is unknown (08007). */
	r = pgb_exec(c, "insert into lost_s values (2)");
	cr_expect(strcmp(pgb_sqlstate(r), "08006") == 0 || strcmp(pgb_sqlstate(r), "08007") == 0,
		  "%s %s", pgb_sqlstate(r), pgb_result_error(r));
	pgb_clear(r);
	lost_exec(c, "rollback");
	lost_exec(c, "select 1");
	cr_assert_gt(id = pgb_send(c, "insert into lost_s values (3)", 0, NULL, 0), 0);
	expect_lost(pgb_get_result(c, &id), "a pipelined insert");
	expect_keys(pg, "lost_tenant.lost_s", "1");
	expect_keys(pg, "public.lost_s", "");
	cr_assert_eq(pgb_reset(c), 0, "pgb_reset: %s", pgb_error_message(c));
	cr_assert_eq(pgb_status(c), PGB_CONNECTION_OK);
	r = h_ok(c, "select current_setting('search_path')");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "\"$user\", public");
	pgb_clear(r);
	pgb_clear(h_ok(c, "insert into lost_s values (4)"));
	expect_keys(pg, "lost_tenant.lost_s", "1");
	expect_keys(pg, "public.lost_s", "4");
	pgb_finish(c);
	pg_do(pg, "drop schema lost_tenant cascade; drop table lost_s");
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* pgb_reset on a live session: its state is discarded, its transaction
 * rolled back, and its backend goes back to the pool for others. */
Test(lost, pgb_reset_returns_a_clean_unpinned_session, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       "--acquire-timeout-ms", "5000", NULL };
	PGconn *pg = setup(args);
	pgb_conn *a = h_connect(&br), *b = h_connect(&br);
	pgb_result *r;

	pgb_clear(h_ok(a, "set search_path = pg_catalog"));
	pgb_clear(h_ok(a, "begin"));
	pgb_clear(h_ok(a, "insert into public.lost_t values (1)"));
	cr_assert_eq(pgb_reset(a), 0, "pgb_reset: %s", pgb_error_message(a));
	/* the only backend is free again: b gets it, clean */
	r = h_ok(b, "select current_setting('search_path')");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "\"$user\", public");
	pgb_clear(r);
	r = h_ok(a, "select current_setting('search_path'), count(*) from lost_t");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "\"$user\", public");
	cr_expect_str_eq(pgb_getvalue(r, 0, 1), "0", "the reset transaction committed");
	pgb_clear(r);
	expect_keys(pg, "lost_t", "");
	/* on a clean connection it is a no-op */
	cr_assert_eq(pgb_reset(a), 0, "pgb_reset: %s", pgb_error_message(a));
	cr_assert_eq(h_num(a, "select 5"), 5);
	cr_assert_eq(pgb_reset(NULL), -1);
	pgb_finish(a);
	pgb_finish(b);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The broker restarts: statements answer PB003/PB007; pgb_reset fails
 * while it is away and reconnects the same pgb_conn once it is back. */
Test(lost, pgb_reset_reconnects_after_a_broker_restart, .timeout = 60)
{
	pgb_conn *c;
	pgb_result *r;
	const char *st;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 1"), 1);
	cr_assert_eq(h_broker_stop(&br), 0);
	r = pgb_exec(c, "select 2");
	st = pgb_sqlstate(r);
	cr_expect(strcmp(st, PGB_SQLSTATE_BROKER_GONE) == 0 ||
		  strcmp(st, PGB_SQLSTATE_NOT_CONNECTED) == 0, "%s %s", st, pgb_result_error(r));
	pgb_clear(r);
	cr_expect_eq(pgb_status(c), PGB_CONNECTION_BAD);
	cr_expect_eq(pgb_reset(c), -1, "pgb_reset succeeded with no broker");
	cr_expect_eq(pgb_status(c), PGB_CONNECTION_BAD);
	cr_expect_neq(pgb_error_message(c)[0], '\0');
	h_broker_start(&br, NULL);	/* the same run directory */
	cr_assert_eq(pgb_reset(c), 0, "pgb_reset: %s", pgb_error_message(c));
	cr_assert_eq(pgb_status(c), PGB_CONNECTION_OK);
	cr_assert_eq(h_num(c, "select 3"), 3);
	cr_assert_geq(pgb_socket(c), 0);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* pgb_transaction stops at the first error: a body that stops at its
 * failed statement, and one that ignores it and asks to commit, both end
 * in PGB_FAILED with 08006, nothing committed, no second attempt, and
 * the connection usable afterwards. */
struct body {
	PGconn *pg;
	int calls, ignore_errors;
};

static int lost_body(pgb_conn *c, void *arg, struct pgb_outcome *why)
{
	struct body *b = arg;
	pgb_result *r;

	b->calls++;
	r = pgb_exec(c, "insert into lost_t values (110) /* lost_txn_body */");
	if (!pgb_result_ok(r))
		return pgb_fail(r, why);
	pgb_clear(r);
	terminate(b->pg, "lost_txn_body");
	for (int k = 120; k <= 130; k += 10) {
		char sql[64];

		snprintf(sql, sizeof(sql), "insert into lost_t values (%d)", k);
		r = pgb_exec(c, sql);
		if (!pgb_result_ok(r) && !b->ignore_errors)
			return pgb_fail(r, why);
		pgb_clear(r);
	}
	return 0;
}

Test(lost, pgb_transaction_stops_at_the_first_error, .timeout = 60)
{
	PGconn *pg = setup(NULL);
	pgb_conn *c = h_connect(&br);

	for (int ignore = 0; ignore <= 1; ignore++) {
		struct body b = { .pg = pg, .ignore_errors = ignore };
		struct pgb_outcome out;

		cr_expect_eq(pgb_transaction(c, lost_body, &b, NULL, &out), PGB_FAILED,
			     "ignore=%d: the transaction committed", ignore);
		cr_expect_str_eq(out.sqlstate, "08006", "ignore=%d: %s", ignore, out.message);
		cr_expect_eq(b.calls, 1, "ignore=%d: the body ran %d times", ignore, b.calls);
		cr_expect_eq(out.attempts, 1);
		expect_keys(pg, "lost_t", "");
		cr_assert_eq(h_num(c, "select 7"), 7, "the connection is not usable afterwards");
	}
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A child of fork() may not use its parent's connection (PB007), but
 * pgb_reset gives it one of its own; the parent's goes on untouched. */
static int child_resets(void *arg)
{
	pgb_conn *c = arg;
	pgb_result *r = pgb_exec(c, "select 1");
	int rc = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED) == 0 ? 0 : 1;

	pgb_clear(r);
	if (rc == 0 && pgb_reset(c) != 0)
		rc = 2;
	r = rc ? NULL : pgb_exec(c, "select 41 + 1");
	if (rc == 0 && (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), "42") != 0))
		rc = 3;
	pgb_clear(r);
	pgb_finish(c);
	return rc;
}

Test(lost, pgb_reset_in_a_child_connects_it_anew, .timeout = 60)
{
	pgb_conn *c;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "begin"));
	cr_assert_eq(h_wait(h_fork(child_resets, c), 20000), 0);
	/* the parent's transaction is still its own */
	cr_assert_eq(h_num(c, "select 7"), 7);
	pgb_clear(h_ok(c, "commit"));
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}
