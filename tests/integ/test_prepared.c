/* Statements that repeat run as prepared statements on the backends that
 * share pipelines; agents never notice: answers and errors stay the same,
 * a table change under a prepared statement, DEALLOCATE and DISCARD from an
 * agent are survived. Load keeps backends busy so that pipelines are used. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "harness.h"

TestSuite(prepared, .timeout = 120);

static struct h_broker br;

#define NAG 4

struct shared {
	int stop;
	int done[NAG], bad[NAG];
	char why[NAG][200];
};

static struct shared *sh;

/* Keeps repeating parameterised statements and checks every answer; some
 * fail on purpose (a missing table), and must fail the same way each time. */
static int worker(void *arg)
{
	int me = (int)(long)arg;
	pgb_conn *c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	for (int i = 0; !__atomic_load_n(&sh->stop, __ATOMIC_RELAXED); i++) {
		char v[16], want[16];
		const char *p[1] = { v };
		pgb_result *r;

		snprintf(v, sizeof(v), "%d", i);
		snprintf(want, sizeof(want), "%d", i + me);
		if (i % 7 == 3) {
			r = pgb_exec_params(c, "select a from prepared_missing where a = $1", 1, p);
			if (pgb_result_ok(r) || strcmp(pgb_sqlstate(r), "42P01") != 0) {
				sh->bad[me]++;
				snprintf(sh->why[me], sizeof(sh->why[me]), "missing table: %s %s",
					 pgb_sqlstate(r), pgb_result_error(r));
			}
		} else {
			const char *q = me % 2 ? "select $1::int + 1 - 1 + %d" : "select $1::int + %d";
			char sql[64];

			snprintf(sql, sizeof(sql), q, me);
			r = pgb_exec_params(c, sql, 1, p);
			if (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), want) != 0) {
				sh->bad[me]++;
				snprintf(sh->why[me], sizeof(sh->why[me]), "%s: %s %s", sql,
					 pgb_sqlstate(r), pgb_result_error(r));
			}
		}
		pgb_clear(r);
		__atomic_add_fetch(&sh->done[me], 1, __ATOMIC_RELAXED);
	}
	pgb_finish(c);
	return 0;
}

static pid_t pids[NAG];

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

static void load_start(void)
{
	const char *args[] = { "--pool-size", "2", "--min-pool-size", "2", "--max-pool-size", "2",
			       NULL };

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	memset(&br, 0, sizeof(br));
	h_broker_start(&br, args);
	for (int i = 0; i < NAG; i++)
		pids[i] = h_fork(worker, (void *)(long)i);
}

static void load_stop(void)
{
	__atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NAG; i++) {
		cr_assert_eq(h_wait(pids[i], 20000), 0, "worker %d", i);
		cr_expect_eq(sh->bad[i], 0, "worker %d: %d wrong answers, e.g. %s", i, sh->bad[i],
			     sh->why[i]);
	}
}

/* Prepared statements on the backend that runs this, by the broker's names. */
static long long prepared_here(pgb_conn *c)
{
	return h_num(c, "select count(*) from pg_prepared_statements "
		     "where name like '\\_pgbroker\\_%'");
}

static int saw_prepared(void *arg)
{
	return prepared_here(arg) > 0;
}

Test(prepared, repeated_statements_are_prepared_and_answer_the_same)
{
	int target = 3000;
	pgb_conn *c;

	load_start();
	cr_assert(h_until(reached, &target, 60000), "load too slow: %d", total_done());
	c = h_connect(&br);
	cr_assert(h_until(saw_prepared, c, 10000), "no backend has a prepared statement");
	pgb_finish(c);
	load_stop();
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(prepared, a_table_change_under_a_prepared_statement_is_invisible)
{
	int target = 2000;
	pgb_conn *c;
	PGconn *pg = h_pg();
	PGresult *x = PQexec(pg, "drop table if exists prepared_t; "
			     "create table prepared_t(a int); insert into prepared_t values (7)");

	cr_assert_eq(PQresultStatus(x), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(x);
	load_start();
	c = h_connect(&br);
	cr_assert(h_until(reached, &target, 60000));
	/* Hot while the pipelines run: prepared after a few sightings. */
	for (int i = 0; i < 200; i++) {
		pgb_result *r = h_ok(c, "select * from prepared_t");

		cr_assert_eq(pgb_nfields(r), 1);
		pgb_clear(r);
	}
	x = PQexec(pg, "alter table prepared_t add column b text default 'new'");
	cr_assert_eq(PQresultStatus(x), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(x);
	/* A prepared "select *" now fails with "cached plan must not change
	 * result type": the broker runs the text instead. */
	for (int i = 0; i < 200; i++) {
		pgb_result *r = h_ok(c, "select * from prepared_t");

		cr_assert_eq(pgb_nfields(r), 2, "round %d", i);
		cr_assert_str_eq(pgb_getvalue(r, 0, 1), "new");
		pgb_clear(r);
	}
	/* An agent that drops every prepared statement of its backend keeps
	 * that backend (session state) and leaves the others alone. */
	pgb_clear(h_ok(c, "deallocate all"));
	for (int i = 0; i < 50; i++)
		pgb_clear(h_ok(c, "select * from prepared_t"));
	pgb_clear(h_ok(c, "discard all"));
	pgb_finish(c);
	target = total_done() + 2000;
	cr_assert(h_until(reached, &target, 60000));
	load_stop();
	cr_assert_eq(h_broker_stop(&br), 0);
	PQfinish(pg);
}
