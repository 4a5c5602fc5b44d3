/* Batch, parallel and asynchronous statements, and per-connection stats. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct h_broker br;

static void start(void)
{
	h_broker_start(&br, (const char *[]){ "--min-pool-size", "2", "--pool-size", "8",
					       "--max-pool-size", "8", NULL });
}

static void stop(void)
{
	cr_expect_eq(h_broker_stop(&br), 0);
}

TestSuite(async, .init = start, .fini = stop, .timeout = 90);

Test(async, batch_is_atomic_and_names_the_failing_statement)
{
	pgb_conn *c = h_connect(&br);
	const char *v1[] = { "1" }, *v2[] = { "2" };
	struct pgb_stmt good[] = {
		{ .sql = "insert into t_batch values ($1)", .nparams = 1, .values = v1 },
		{ .sql = "insert into t_batch values ($1)", .nparams = 1, .values = v2 },
		{ .sql = "select count(*) from t_batch" },
	};
	struct pgb_stmt bad[] = {
		{ .sql = "insert into t_batch values (3)" },
		{ .sql = "insert into t_batch values (4)" },
		{ .sql = "insert into t_batch values (1)" },   /* duplicate key */
		{ .sql = "insert into t_batch values (5)" },
	};
	pgb_result *res[4];

	pgb_clear(h_ok(c, "drop table if exists t_batch; create table t_batch (k int primary key)"));
	cr_assert_eq(pgb_batch(c, good, 3, res), 0, "%s", pgb_result_error(res[0]));
	cr_assert_eq(pgb_cmd_tuples(res[0]), 1);
	cr_assert_str_eq(pgb_getvalue(res[2], 0, 0), "2", "the batch sees its own writes");
	for (int i = 0; i < 3; i++)
		pgb_clear(res[i]);

	/* one transaction of its own: a COMMIT inside would apply half of it */
	struct pgb_stmt split[] = {
		{ .sql = "insert into t_batch values (7)" },
		{ .sql = "/* done */ COMMIT" },
		{ .sql = "insert into t_batch values (1)" },
	};
	cr_assert_eq(pgb_batch(c, split, 3, res), -1);
	for (int i = 0; i < 3; i++) {
		cr_assert_str_eq(pgb_sqlstate(res[i]), PGB_SQLSTATE_BAD_REQUEST, "statement %d", i);
		cr_assert(strstr(pgb_result_error(res[i]), "statement 1 begins or ends a transaction"),
			  "%s", pgb_result_error(res[i]));
		pgb_clear(res[i]);
	}
	cr_assert_eq(h_num(c, "select count(*) from t_batch where k = 7"), 0, "the batch ran");

	cr_assert_eq(pgb_batch(c, bad, 4, res), -1);
	cr_assert_str_eq(pgb_sqlstate(res[2]), "23505");
	for (int i = 0; i < 4; i++) {
		if (i != 2) {
			cr_assert_str_eq(pgb_sqlstate(res[i]), "PB011", "statement %d", i);
			cr_assert(strstr(pgb_result_error(res[i]), "statement 3") != NULL,
				  "%s", pgb_result_error(res[i]));
		}
		pgb_clear(res[i]);
	}
	cr_assert_eq(h_num(c, "select count(*) from t_batch"), 2, "a failed batch applied something");

	/* bad input is an error, not a crash */
	cr_assert_eq(pgb_batch(c, NULL, 3, res), -1);
	cr_assert_eq(pgb_batch(c, good, 0, res), -1);
	cr_assert_eq(pgb_batch(c, good, 3, NULL), -1);
	struct pgb_stmt nul[] = { { .sql = NULL } };
	cr_assert_eq(pgb_batch(c, nul, 1, res), -1);
	cr_assert_str_eq(pgb_sqlstate(res[0]), PGB_SQLSTATE_BAD_REQUEST);
	pgb_clear(res[0]);
	cr_assert_eq(h_num(c, "select 1"), 1);
	pgb_clear(h_ok(c, "drop table t_batch"));
	pgb_finish(c);
}

Test(async, parallel_runs_concurrently)
{
	pgb_conn *c = h_connect(&br);
	struct pgb_stmt s[8];
	pgb_result *res[8];
	long long t0;

	for (int i = 0; i < 8; i++)
		s[i] = (struct pgb_stmt){ .sql = "select pg_sleep(0.5), pg_backend_pid()" };
	t0 = h_now_ms();
	cr_assert_eq(pgb_parallel(c, s, 8, res), 0);
	/* eight half-second sleeps: close to the slowest, far from the sum (4 s) */
	cr_assert_lt(h_now_ms() - t0, 3500, "parallel took %lld ms", h_now_ms() - t0);
	for (int i = 0; i < 8; i++) {
		cr_assert(pgb_result_ok(res[i]));
		pgb_clear(res[i]);
	}
	cr_assert_eq(pgb_parallel(c, NULL, 8, res), -1);
	pgb_finish(c);
}

static int async_agent(void *arg)
{
	int me = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);
	long long ids[100];
	char vals[100][32];
	int seen = 0;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; i < 100; i++) {
		const char *v[1] = { vals[i] };

		snprintf(vals[i], sizeof(vals[i]), "%d-%d", me, i);
		ids[i] = pgb_send(c, "select $1::text", 1, v, PGB_INDEPENDENT);
		if (ids[i] <= 0)
			return 11;
	}
	while (pgb_in_flight(c) > 0) {
		long long id;
		pgb_result *r = pgb_get_result(c, &id);
		int i;

		for (i = 0; i < 100 && ids[i] != id; i++)
			;
		if (i == 100 || !pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), vals[i]) != 0)
			return 12;
		ids[i] = 0;
		seen++;
		pgb_clear(r);
	}
	pgb_finish(c);
	return seen == 100 ? 0 : 13;
}

Test(async, many_requests_in_flight_every_result_matched)
{
	pid_t kids[20];
	int who[20];

	for (int i = 0; i < 20; i++) {
		who[i] = i;
		kids[i] = h_fork(async_agent, &who[i]);
	}
	for (int i = 0; i < 20; i++)
		cr_assert_eq(h_wait(kids[i], 60000), 0, "agent %d", i);
}

Test(async, serial_sends_keep_their_order_and_transaction)
{
	pgb_conn *c = h_connect(&br);
	long long ids[4];
	const char *sql[] = { "begin", "create temp table if not exists q (k int)",
			      "insert into q values (1)", "commit" };

	for (int i = 0; i < 4; i++)
		ids[i] = pgb_send(c, sql[i], 0, NULL, 0);
	for (int i = 0; i < 4; i++) {
		long long id;
		pgb_result *r = pgb_get_result(c, &id);

		cr_assert_eq(id, ids[i], "results out of order");
		cr_assert(pgb_result_ok(r), "%s: %s", sql[i], pgb_result_error(r));
		pgb_clear(r);
	}
	cr_assert_null(pgb_get_result(c, NULL), "a result with nothing in flight");
	cr_assert_eq(pgb_send(c, "select 1", 0, NULL, 1 << 20), -1);
	pgb_finish(c);
}

Test(async, socket_becomes_readable_for_a_result)
{
	pgb_conn *c = h_connect(&br);
	struct pollfd p = { .fd = pgb_socket(c), .events = POLLIN };
	long long id, got;
	pgb_result *r;

	cr_assert_geq(p.fd, 0);
	id = pgb_send(c, "select pg_sleep(0.2), 5", 0, NULL, 0);
	cr_assert_gt(id, 0);
	cr_assert_null(pgb_try_result(c, &got), "a result before the statement could finish");
	cr_assert_eq(poll(&p, 1, 10000), 1, "pgb_socket never became readable");
	r = pgb_try_result(c, &got);
	cr_assert_not_null(r);
	cr_assert_eq(got, id);
	cr_assert_str_eq(pgb_getvalue(r, 0, 1), "5");
	pgb_clear(r);
	pgb_finish(c);
}

Test(async, connection_stats_count_this_agent)
{
	pgb_conn *c = h_connect(&br);
	struct pgb_conn_stats st;

	for (int i = 0; i < 10; i++)
		pgb_clear(pgb_exec(c, "select 1"));
	for (int i = 0; i < 3; i++)
		pgb_clear(pgb_exec(c, "select 1/0"));
	cr_assert_eq(pgb_conn_stats(c, &st), 0);
	cr_assert_eq(st.total, 13);
	cr_assert_eq(st.failed, 3);
	cr_assert_float_eq(st.success_rate, 10.0 / 13.0, 1e-9);
	cr_assert_gt(st.mean_rtt_us, 0);
	cr_assert_geq((double)st.max_rtt_us, st.mean_rtt_us - 1);
	cr_assert_eq(pgb_conn_stats(NULL, &st), -1);
	pgb_finish(c);
}

/* An independent statement rolled back by a serialization failure runs
 * again after a backoff. By then its agent may hold a transaction on a
 * backend busy with the next statement: the retry runs elsewhere and
 * every statement gets its own answer. */
Test(async, independent_retry_leaves_the_pinned_backend_alone)
{
	pgb_conn *c = h_connect(&br);
	const char *sql[] = { "select retry_once()", "begin", "select pg_sleep(1.5), 3", "commit" };
	const char *want[] = { "1", NULL, "3", NULL };
	long long ids[4];
	int seen = 0;

	pgb_clear(h_ok(c, "create sequence if not exists retry_once_seq"));
	pgb_clear(h_ok(c, "select setval('retry_once_seq', 1, false)"));
	pgb_clear(h_ok(c, "create or replace function retry_once() returns int language plpgsql as $$ "
			  "begin if nextval('retry_once_seq') = 1 then perform pg_sleep(0.3); "
			  "raise exception 'try again' using errcode = '40001'; end if; "
			  "return 1; end $$"));
	ids[0] = pgb_send(c, sql[0], 0, NULL, PGB_INDEPENDENT);
	for (int i = 1; i < 4; i++)
		ids[i] = pgb_send(c, sql[i], 0, NULL, 0);
	for (int n = 0; n < 4; n++) {
		long long id;
		pgb_result *r = pgb_get_result(c, &id);
		int i = 0;

		cr_assert_not_null(r, "a statement got no answer");
		while (i < 4 && ids[i] != id)
			i++;
		cr_assert_lt(i, 4, "an answer for an unknown id %lld", id);
		cr_assert_not(seen & 1 << i, "%s answered twice", sql[i]);
		seen |= 1 << i;
		cr_assert(pgb_result_ok(r), "%s: %s %s", sql[i], pgb_sqlstate(r), pgb_result_error(r));
		if (want[i])
			cr_expect_str_eq(pgb_getvalue(r, 0, pgb_nfields(r) - 1), want[i], "%s", sql[i]);
		pgb_clear(r);
	}
	pgb_clear(h_ok(c, "drop function retry_once()"));
	pgb_clear(h_ok(c, "drop sequence retry_once_seq"));
	pgb_finish(c);
}

/* pgb_try_result never waits for the rest of a response that has begun to
 * arrive: with the broker stopped in the middle of a result bigger than
 * the ring, it answers NULL at once (it used to wait for the last frame),
 * and the result completes once the broker goes on. */
Test(async, try_result_does_not_wait_for_the_rest_of_a_response, .timeout = 30)
{
	struct pollfd p;
	long long id, got;
	pgb_result *r = NULL;
	pgb_conn *c = h_connect(&br);

	p = (struct pollfd){ .fd = pgb_socket(c), .events = POLLIN };
	/* about 2 MB, eight ring-fulls */
	id = pgb_send(c, "select repeat('x', 1000) from generate_series(1, 2000)", 0, NULL, 0);
	cr_assert_gt(id, 0);
	cr_assert_null(pgb_try_result(c, &got));
	cr_assert_eq(poll(&p, 1, 10000), 1, "no frame arrived");
	cr_assert_eq(kill(br.pid, SIGSTOP), 0);
	cr_assert_null(pgb_try_result(c, &got), "a whole result cannot be there yet");
	cr_assert_eq(kill(br.pid, SIGCONT), 0);
	while (!r) {
		cr_assert_eq(poll(&p, 1, 10000), 1, "the rest never arrived");
		r = pgb_try_result(c, &got);
	}
	cr_assert_eq(got, id);
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_eq(pgb_ntuples(r), 2000);
	cr_assert_eq(strlen(pgb_getvalue(r, 1999, 0)), 1000);
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 5"), 5);
	pgb_finish(c);
}
