/* What an agent sees must be what one connection of its own would show:
 * statements that commit part of their work, prepared statements under
 * table changes, and neighbours in one pipeline. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

TestSuite(semantics, .timeout = 90);

/* A 40001 after a COMMIT inside the text: what was committed must not be
 * run again, so the broker must not retry it. */
Test(semantics, a_text_that_committed_part_of_its_work_is_not_retried)
{
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, (const char *[]){ "--retry-delay-ms", "10", NULL });
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists sem_log; create table sem_log (k int)"));
	pgb_clear(h_ok(c, "create or replace function sem_fail() returns int language plpgsql as $$"
			  "begin raise exception 'conflict' using errcode = '40001'; end $$"));
	pgb_clear(h_ok(c, "create or replace procedure sem_p() language plpgsql as $$"
			  "begin insert into sem_log values (1); commit; perform sem_fail(); end $$"));
	r = pgb_exec(c, "call sem_p()");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 1"), 1,
		     "CALL of a procedure that committed was run again");

	r = pgb_exec(c, "do $$ begin insert into sem_log values (2); commit; "
			"perform sem_fail(); end $$");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	pgb_finish(c);
	c = h_connect(&br);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 2"), 1,
		     "a DO block that committed was run again");

	r = pgb_exec(c, "insert into sem_log values (3); commit; select sem_fail()");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 3"), 1,
		     "a text with a COMMIT in it was run again");

	r = pgb_exec(c, "begin; insert into sem_log values (4); commit; "
			"begin; select sem_fail(); commit");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	pgb_clear(pgb_exec(c, "rollback"));
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 4"), 1,
		     "a text with two transactions was run again");

	/* a batch with a COMMIT in it would not be one transaction: refused
	 * before it is sent (the broker would not run it again either) */
	struct pgb_stmt batch[] = {
		{ .sql = "insert into sem_log values (5)" },
		{ .sql = "commit" },
		{ .sql = "select sem_fail()" },
	};
	pgb_result *res[3];

	cr_expect_eq(pgb_batch(c, batch, 3, res), -1);
	for (int i = 0; i < 3; i++) {
		cr_expect_str_eq(pgb_sqlstate(res[i]), PGB_SQLSTATE_BAD_REQUEST);
		pgb_clear(res[i]);
	}
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 5"), 0,
		     "a batch with a COMMIT in it ran");
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Backends kept busy so that the agent's statements run in pipelines,
 * where repeated texts become prepared statements. Two statements: the
 * sleep itself never runs in a pipeline, so a killed sleeper's statement
 * is cancelled (one in a shared pipeline would run to its end). */
static int sleeper(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);

	(void)arg;
	pgb_clear(pgb_exec(c, "select pg_sleep(60) /* sem_sleeper */; select 1"));
	pgb_finish(c);
	return 0;
}

static int sleepers_running(void *arg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return h_backends(arg, &br, "query like '%sem_sleeper%' and state = 'active'") >= n;
}

static void with_pipelines(pid_t *kids, int n, PGconn *pg)
{
	for (int i = 0; i < n; i++)
		kids[i] = h_fork(sleeper, NULL);
	cr_assert(h_until(sleepers_running, pg, 10000), "sleepers did not start");
}

static void without_pipelines(pid_t *kids, int n)
{
	for (int i = 0; i < n; i++) {
		kill(kids[i], SIGKILL);
		h_wait(kids[i], 10000);
	}
}

/* A column's type changes under a prepared statement with a parameter:
 * the text run by itself finds the new type; so must the broker. */
Test(semantics, a_column_type_change_under_a_prepared_statement_is_invisible)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	char size[16];
	pid_t kids[64];
	PGconn *pg = h_pg();
	PGresult *x;
	pgb_conn *c;
	const char *v[] = { "7" };

	cr_assert(n > 0 && n < 60);
	snprintf(size, sizeof(size), "%ld", n + 2);
	h_broker_start(&br, (const char *[]){ "--min-pool-size", "1", "--pool-size", size,
					"--max-pool-size", size, NULL });
	x = PQexec(pg, "drop table if exists sem_ty; create table sem_ty (a int); "
		       "insert into sem_ty values (7)");
	cr_assert_eq(PQresultStatus(x), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(x);
	with_pipelines(kids, (int)n, pg);
	c = h_connect(&br);
	for (int i = 0; i < 20; i++) {
		pgb_result *r = pgb_exec_params(c, "select a from sem_ty where a = $1", 1, v);

		cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
		cr_assert_eq(pgb_ntuples(r), 1);
		pgb_clear(r);
	}
	x = PQexec(pg, "alter table sem_ty alter a type text");
	cr_assert_eq(PQresultStatus(x), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(x);
	for (int i = 0; i < 20; i++) {
		pgb_result *r = pgb_exec_params(c, "select a from sem_ty where a = $1", 1, v);

		cr_assert(pgb_result_ok(r), "round %d: %s %s", i, pgb_sqlstate(r),
			  pgb_result_error(r));
		cr_assert_str_eq(pgb_getvalue(r, 0, 0), "7");
		pgb_clear(r);
	}
	/* A prepared statement's own errors run the text once more, and that
	 * fails the same way: the prepared statement is kept, not forgotten
	 * and prepared again under a new name each time (the server would
	 * hold every one of them). */
	for (int i = 0; i < 40; i++) {
		pgb_result *r = pgb_exec_params(c, "select 1 / ($1::int - 7)", 1, v);

		cr_assert_str_eq(pgb_sqlstate(r), "22012", "round %d", i);
		pgb_clear(r);
	}
	for (int i = 0; i < 10; i++)
		cr_assert_leq(h_num(c, "select count(*) from pg_prepared_statements "
				    "where name like '\\_pgbroker\\_%'"), 4,
			      "prepared statements pile up on the server");
	pgb_finish(c);
	without_pipelines(kids, (int)n);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Session state through a quoted name is session state all the same: the
 * agent keeps its backend, and the next agent on one backend sees none. */
Test(semantics, quoted_names_do_not_hide_session_state)
{
	pgb_conn *a, *b;
	pgb_result *r;

	h_broker_start(&br, (const char *[]){ "--min-pool-size", "1", "--pool-size", "1",
					       "--max-pool-size", "1", "--acquire-timeout-ms", "500",
					       NULL });
	a = h_connect(&br);
	pgb_clear(h_ok(a, "select \"set_config\"('search_path', 'sem_evil', false)"));
	r = h_ok(a, "select current_setting('search_path')");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "sem_evil", "the agent lost its own setting");
	pgb_clear(r);
	b = h_connect(&br);
	r = pgb_exec(b, "select current_setting('search_path')");
	if (pgb_result_ok(r))
		cr_expect_str_neq(pgb_getvalue(r, 0, 0), "sem_evil",
				  "another agent got the first one's search_path");
	else	/* the one backend is the first agent's */
		cr_expect_str_eq(pgb_sqlstate(r), "PB001");
	pgb_clear(r);
	pgb_finish(a);
	pgb_clear(h_ok(b, "create table \"pg_temp\".sem_scratch (k int)"));
	pgb_clear(h_ok(b, "insert into sem_scratch values (1)"));
	pgb_finish(b);
	a = h_connect(&br);
	r = h_ok(a, "select to_regclass('pg_temp.sem_scratch') is null");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "t", "another agent's temporary table is visible");
	pgb_clear(r);
	pgb_finish(a);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Agents sharing pipelines each get their own answers: neighbours that
 * fail, time out (57014) or die with a statement in the pipeline change
 * nothing for the others. */
#define NAG 4

struct shared {
	int stop;
	int done[NAG], bad[NAG], timeouts[NAG];
	char why[NAG][200];
};

static struct shared *sh;

static int neighbour(void *arg)
{
	int me = (int)(long)arg;
	pgb_conn *c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	for (int i = 0; !__atomic_load_n(&sh->stop, __ATOMIC_RELAXED); i++) {
		char v[16], want[32], sql[96];
		const char *p[1] = { v };
		const char *state = "";
		pgb_result *r;

		snprintf(v, sizeof(v), "%d", i);
		snprintf(want, sizeof(want), "%d", i * 10 + me);
		if (i % 97 == 50) {
			r = pgb_exec_params(c, "select pg_sleep(0.5), $1::int", 1, p);
			state = "57014";
		} else if (i % 7 == 3) {
			r = pgb_exec_params(c, "select 1 / ($1::int - $1::int)", 1, p);
			state = "22012";
		} else {
			snprintf(sql, sizeof(sql), "select $1::int * 10 + %d", me);
			r = pgb_exec_params(c, sql, 1, p);
		}
		if (*state ? strcmp(pgb_sqlstate(r), state) != 0 :
			     !pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), want) != 0) {
			sh->bad[me]++;
			snprintf(sh->why[me], sizeof(sh->why[me]), "round %d: want %s, got %s %s %s",
				 i, *state ? state : want, pgb_sqlstate(r),
				 pgb_result_ok(r) && pgb_nfields(r) ? pgb_getvalue(r, 0, 0) : "",
				 pgb_result_error(r));
		}
		if (*state && strcmp(pgb_sqlstate(r), "57014") == 0)
			sh->timeouts[me]++;
		pgb_clear(r);
		__atomic_add_fetch(&sh->done[me], 1, __ATOMIC_RELAXED);
	}
	pgb_finish(c);
	return 0;
}

/* Runs its statements until it is killed. */
static int victim(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);

	(void)arg;
	for (;;)
		pgb_clear(pgb_exec(c, "select 1 + 1, pg_sleep(0.001)"));
	return 0;
}

static int total_done(void)
{
	int n = 0;

	for (int i = 0; i < NAG; i++)
		n += __atomic_load_n(&sh->done[i], __ATOMIC_RELAXED);
	return n;
}

static int reached(void *arg)
{
	return total_done() >= *(int *)arg;
}

Test(semantics, neighbours_in_a_pipeline_get_their_own_answers, .timeout = 150)
{
	pid_t kids[NAG];
	int target;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	h_broker_start(&br, (const char *[]){ "--min-pool-size", "2", "--pool-size", "2",
					       "--max-pool-size", "2", "--statement-timeout-ms",
					       "200", NULL });
	for (int i = 0; i < NAG; i++)
		kids[i] = h_fork(neighbour, (void *)(long)i);
	for (int k = 0; k < 6; k++) {
		pid_t v = h_fork(victim, NULL);

		target = total_done() + 300;
		cr_assert(h_until(reached, &target, 60000), "too slow: %d", total_done());
		kill(v, SIGKILL);
		h_wait(v, 10000);
	}
	__atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NAG; i++) {
		cr_assert_eq(h_wait(kids[i], 30000), 0, "agent %d", i);
		cr_expect_eq(sh->bad[i], 0, "agent %d: %d wrong answers, e.g. %s", i, sh->bad[i],
			     sh->why[i]);
	}
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The connection breaks while a text that commits runs inside a
 * transaction: it may have committed, so the agent must hear 08007
 * (unknown), not 08006 (rolled back), however the COMMIT is written. */
static int committing(void *arg)
{
	return h_backends(arg, &br, "query like '%sem_commit%' and state = 'active'") == 1;
}

Test(semantics, a_commit_in_flight_is_never_reported_rolled_back)
{
	static const char *const texts[] = {
		"/* sem_commit */ commit",
		"commit /* sem_commit */",
		"insert into sem_c values (2); commit /* sem_commit */",
	};
	PGconn *pg = h_pg();
	PGresult *x;
	pgb_conn *c;
	char sql[256];

	h_broker_start(&br, NULL);
	x = PQexec(pg, "drop table if exists sem_c; create table sem_c (k int);"
		       "create or replace function sem_slow() returns trigger language plpgsql as $$"
		       "begin perform pg_sleep(30); return null; end $$;"
		       "create constraint trigger sem_slow after insert on sem_c "
		       "deferrable initially deferred for each row execute function sem_slow()");
	cr_assert_eq(PQresultStatus(x), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(x);
	snprintf(sql, sizeof(sql), "select count(pg_terminate_backend(pid)) from pg_stat_activity "
		 "where application_name = '%s' and query like '%%sem_commit%%'",
		 strrchr(br.dir, '/') + 1);
	c = h_connect(&br);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		long long id;
		pgb_result *r;

		pgb_clear(h_ok(c, "begin"));
		pgb_clear(h_ok(c, "insert into sem_c values (1)"));
		id = pgb_send(c, texts[i], 0, NULL, 0);
		cr_assert_gt(id, 0);
		cr_assert(h_until(committing, pg, 10000), "the COMMIT never ran");
		cr_assert_eq(h_pg_num(pg, sql), 1);
		r = pgb_get_result(c, &id);
		cr_expect_str_eq(pgb_sqlstate(r), "08007", "%s: %s", texts[i], pgb_result_error(r));
		pgb_clear(r);
		pgb_clear(pgb_exec(c, "select 1"));	/* the connection is good again */
	}
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Transaction control inside texts of several statements pins and unpins
 * as on a connection of one's own; SET LOCAL ends with its transaction. */
Test(semantics, transactions_opened_and_closed_inside_texts)
{
	pgb_conn *a, *b;
	pgb_result *r;

	h_broker_start(&br, (const char *[]){ "--min-pool-size", "2", "--pool-size", "2",
					       "--max-pool-size", "2", NULL });
	a = h_connect(&br);
	b = h_connect(&br);
	pgb_clear(h_ok(a, "drop table if exists sem_m; create table sem_m (k int)"));
	pgb_clear(h_ok(a, "select 1; begin; set local statement_timeout = '4321ms'"));
	pgb_clear(h_ok(a, "insert into sem_m values (1)"));
	cr_expect_eq(h_num(b, "select count(*) from sem_m"), 0, "uncommitted work is visible");
	r = h_ok(a, "select current_setting('statement_timeout')");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "4321ms");
	pgb_clear(r);
	r = h_ok(a, "commit; select 2");
	cr_expect_str_eq(pgb_getvalue(r, 0, 0), "2");
	pgb_clear(r);
	cr_expect_eq(h_num(b, "select count(*) from sem_m"), 1);
	for (int i = 0; i < 4; i++) {
		r = h_ok(i % 2 ? a : b, "select current_setting('statement_timeout')");
		cr_expect_str_neq(pgb_getvalue(r, 0, 0), "4321ms", "SET LOCAL outlived COMMIT");
		pgb_clear(r);
	}
	/* a COMMIT of a failed transaction rolls back */
	pgb_clear(h_ok(a, "begin; insert into sem_m values (2); savepoint s"));
	r = pgb_exec(a, "insert into sem_m values (1/0)");
	cr_expect_str_eq(pgb_sqlstate(r), "22012");
	pgb_clear(r);
	pgb_clear(h_ok(a, "rollback to savepoint s; insert into sem_m values (3)"));
	r = pgb_exec(a, "select 1/0");
	pgb_clear(r);
	pgb_clear(h_ok(a, "commit"));
	cr_expect_eq(h_num(b, "select count(*) from sem_m"), 1, "a failed transaction committed");
	/* one text, a whole transaction */
	pgb_clear(h_ok(a, "begin; insert into sem_m values (4); commit"));
	cr_expect_eq(h_num(b, "select count(*) from sem_m where k = 4"), 1);
	pgb_finish(a);
	pgb_finish(b);
	cr_assert_eq(h_broker_stop(&br), 0);
}
