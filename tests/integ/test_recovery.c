/* Surviving faults safely: session state that never leaks between agents,
 * cancels that free a backend for reuse, retries only where they are safe,
 * and the circuit breaker around a PostgreSQL that goes away and comes back. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

static int other_agent_sees_nothing(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	int bad = 0;
	pgb_result *r;

	(void)arg;
	for (int i = 0; i < 20; i++) {
		r = pgb_exec(c, "select current_setting('statement_timeout'), "
				"current_setting('search_path'), "
				"(select count(*) from pg_prepared_statements "
				" where name not like '\\_pgbroker\\_%'), "
				"to_regclass('pg_temp.a_private') is null");
		if (!pgb_result_ok(r))
			return 10;
		if (strcmp(pgb_getvalue(r, 0, 0), "1234ms") == 0)
			bad |= 1;
		if (strstr(pgb_getvalue(r, 0, 1), "a_schema"))
			bad |= 2;
		if (strcmp(pgb_getvalue(r, 0, 2), "0") != 0)
			bad |= 4;
		if (strcmp(pgb_getvalue(r, 0, 3), "t") != 0)
			bad |= 8;
		pgb_clear(r);
	}
	pgb_finish(c);
	return bad;
}

Test(recovery, session_state_never_leaks_between_agents, .timeout = 90)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "2",
			       NULL };
	pgb_conn *a;
	pgb_result *r;
	pid_t kids[6];

	h_broker_start(&br, args);
	a = h_connect(&br);
	pgb_clear(h_ok(a, "set statement_timeout = '1234ms'"));
	pgb_clear(h_ok(a, "set search_path = a_schema, public"));
	pgb_clear(h_ok(a, "prepare a_stmt as select 42"));
	pgb_clear(h_ok(a, "create temp table a_private (k int)"));
	pgb_clear(h_ok(a, "select pg_advisory_lock(4242)"));
	/* others, running at the same time, see none of it */
	for (int i = 0; i < 6; i++)
		kids[i] = h_fork(other_agent_sees_nothing, NULL);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(h_wait(kids[i], 30000), 0, "agent %d saw A's session state", i);
	/* and A keeps its own */
	r = h_ok(a, "select current_setting('statement_timeout')");
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "1234ms");
	pgb_clear(r);
	cr_assert_eq(h_num(a, "execute a_stmt"), 42);
	cr_assert_eq(h_num(a, "select count(*) from a_private"), 0);
	pgb_conn *b = h_connect(&br);
	r = h_ok(b, "select pg_try_advisory_lock(4242)");
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "f", "A's advisory lock is not A's any more");
	pgb_clear(r);
	pgb_finish(b);
	pgb_finish(a);
	/* after A left, its backend was reset before anyone else got it */
	for (int i = 0; i < 4; i++)
		kids[i] = h_fork(other_agent_sees_nothing, NULL);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(h_wait(kids[i], 30000), 0, "agent %d saw A's state after A left", i);
	b = h_connect(&br);
	r = h_ok(b, "select pg_try_advisory_lock(4242)");
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "t", "A's advisory lock outlived A");
	pgb_clear(r);
	pgb_finish(b);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int sleep_forever(void *arg)
{
	int fd = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);

	(void)!write(fd, "x", 1);
	pgb_clear(pgb_exec(c, "select pg_sleep(60) /* cancel-me */"));
	return 0;
}

static int cancelled(void *arg)
{
	return h_pg_num(arg, "select count(*) from pg_stat_activity where query like "
			     "'%cancel-me%' and state = 'active' and pid <> pg_backend_pid()") == 0;
}

Test(recovery, dead_agents_statement_is_cancelled_and_backend_reused, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       NULL };
	PGconn *pg = h_pg();
	pgb_conn *c;
	long long before, after;
	int p[2];
	char x;
	pid_t kid;

	h_broker_start(&br, args);
	c = h_connect(&br);
	before = h_num(c, "select pg_backend_pid()");
	cr_assert_eq(pipe(p), 0);
	kid = h_fork(sleep_forever, &p[1]);
	cr_assert_eq(read(p[0], &x, 1), 1);
	cr_assert(!h_until(cancelled, pg, 300) || 1);
	while (cancelled(pg))   /* until the statement runs (bounded by the test timeout) */
		usleep(5000);
	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	cr_assert(h_until(cancelled, pg, 3000), "the dead agent's statement was not cancelled");
	after = h_num(c, "select pg_backend_pid()");
	cr_assert_eq(after, before, "the backend was closed instead of cancelled and reused");
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(recovery, serialization_failure_outside_a_transaction_is_retried, .timeout = 60)
{
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, (const char *[]){ "--retry-delay-ms", "10", NULL });
	c = h_connect(&br);
	/* fails with 40001 twice (a sequence is not rolled back), then succeeds */
	pgb_clear(h_ok(c, "drop sequence if exists flaky_seq; create sequence flaky_seq;"
			  "create or replace function flaky() returns bigint language plpgsql as $$"
			  "declare n bigint := nextval('flaky_seq'); begin "
			  "if n <= 2 then raise exception 'try again' using errcode = '40001'; end if;"
			  "return n; end $$"));
	r = h_ok(c, "select flaky()");
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "3");
	pgb_clear(r);
	/* inside an explicit transaction it is the agent's to handle */
	pgb_clear(h_ok(c, "select setval('flaky_seq', 1, false)"));
	pgb_clear(h_ok(c, "begin"));
	r = pgb_exec(c, "select flaky()");
	cr_assert_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	pgb_clear(h_ok(c, "rollback"));
	/* it gives up after retry_attempts */
	pgb_clear(h_ok(c, "create or replace function always() returns int language plpgsql as $$"
			  "begin raise exception 'never' using errcode = '40P01'; end $$"));
	r = pgb_exec(c, "select always()");
	cr_assert_str_eq(pgb_sqlstate(r), "40P01");
	pgb_clear(r);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct victim {
	int flags;
	int fd;
};

static int run_until_killed(void *arg)
{
	struct victim *v = arg;
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;
	int rc;

	(void)!write(v->fd, "x", 1);
	r = pgb_exec_flags(c, "select pg_sleep(1.5) /* victim */, 7", 0, NULL, v->flags);
	if (v->flags & PGB_IDEMPOTENT)
		rc = pgb_result_ok(r) && strcmp(pgb_getvalue(r, 0, 1), "7") == 0 ? 0 : 1;
	else
		rc = strcmp(pgb_sqlstate(r), "08007") == 0 ? 0 : 2;
	if (rc)
		fprintf(stderr, "victim flags %d: %s %s\n", v->flags, pgb_sqlstate(r),
			pgb_result_error(r));
	pgb_clear(r);
	/* the connection is still good */
	r = pgb_exec(c, "select 1");
	if (!pgb_result_ok(r))
		rc = 3;
	pgb_clear(r);
	pgb_finish(c);
	return rc;
}

static int victims_running(void *arg)
{
	return h_backends(arg, &br, "query like '%victim%' and state = 'active'") == 2;
}

Test(recovery, terminated_backends_retry_only_what_is_safe, .timeout = 60)
{
	PGconn *pg = h_pg();
	struct victim safe = { .flags = PGB_IDEMPOTENT }, unsafe = { .flags = 0 };
	int p[2];
	char x;
	pid_t k1, k2;
	char sql[256];

	h_broker_start(&br, (const char *[]){ "--retry-delay-ms", "10", NULL });
	cr_assert_eq(pipe(p), 0);
	safe.fd = unsafe.fd = p[1];
	k1 = h_fork(run_until_killed, &safe);
	k2 = h_fork(run_until_killed, &unsafe);
	cr_assert_eq(read(p[0], &x, 1), 1);
	cr_assert_eq(read(p[0], &x, 1), 1);
	cr_assert(h_until(victims_running, pg, 5000), "statements never started");
	snprintf(sql, sizeof(sql), "select count(pg_terminate_backend(pid)) from pg_stat_activity "
		 "where application_name = '%s' and query like '%%victim%%'",
		 strrchr(br.dir, '/') + 1);
	cr_assert_eq(h_pg_num(pg, sql), 2);
	cr_assert_eq(h_wait(k1, 20000), 0, "the idempotent statement was not retried");
	cr_assert_eq(h_wait(k2, 20000), 0, "the unsafe statement did not get 08007");
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(recovery, breaker_opens_when_postgresql_stops_and_closes_after, .timeout = 120)
{
	const char *args[] = { "--min-pool-size", "2", "--breaker-threshold", "2",
			       "--breaker-reset-timeout-ms", "300", "--retry-delay-ms", "20",
			       "--retry-max-delay-ms", "200", "--acquire-timeout-ms", "2000", NULL };
	pgb_conn *c;
	pgb_result *r;
	long long t0;
	int saw_breaker = 0, ok = 0;

	h_broker_start(&br, args);
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 1"), 1);
	h_pgtmp("pause");
	/* every statement gets an answer, fast, and the breaker opens */
	for (int i = 0; i < 40 && !saw_breaker; i++) {
		t0 = h_now_ms();
		r = pgb_exec(c, "select 1");
		cr_assert_not(pgb_result_ok(r));
		cr_assert_lt(h_now_ms() - t0, 10000, "a statement hung during the outage");
		saw_breaker = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_BREAKER_OPEN) == 0;
		pgb_clear(r);
		usleep(50000);
	}
	cr_assert(saw_breaker, "the breaker never opened");
	h_pgtmp("start");
	/* the pool refills and statements succeed again within seconds */
	t0 = h_now_ms();
	while (!ok && h_now_ms() - t0 < 15000) {
		r = pgb_exec(c, "select 1");
		ok = pgb_result_ok(r);
		pgb_clear(r);
		if (!ok)
			usleep(50000);
	}
	cr_assert(ok, "statements did not succeed after PostgreSQL came back");
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int no_pinned_txn(void *arg)
{
	return h_backends(arg, &br, "state like 'idle in transaction%'") == 0;
}

Test(recovery, stalled_transaction_is_bounded_and_backend_recovered, .timeout = 60)
{
	const char *args[] = { "--idle-in-transaction-timeout-ms", "300", NULL };
	PGconn *pg = h_pg();
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, args);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "select 1"));
	/* the agent stalls inside its transaction: PostgreSQL ends it */
	cr_assert(h_until(no_pinned_txn, pg, 5000), "the stalled transaction was not ended");
	/* the transaction is lost until the agent acknowledges it */
	for (int i = 0; i < 2; i++) {
		r = pgb_exec(c, "select 2");
		cr_assert_str_eq(pgb_sqlstate(r), "08006", "%s", pgb_result_error(r));
		pgb_clear(r);
	}
	pgb_clear(h_ok(c, "rollback"));
	cr_assert_eq(h_num(c, "select 3"), 3, "the connection did not recover");
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* An agent that LISTENs and never reads: the broker does not keep its
 * notifications beyond the agent's bounded queue (docs/notifications.md). */
Test(recovery, notifications_to_a_listening_agent_are_not_hoarded, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "2",
			       NULL };
	PGconn *pg = h_pg();
	pgb_conn *c;
	long long before, after;

#if defined(__SANITIZE_ADDRESS__)
	/* Freed memory would stay in ASan's quarantine and count as grown. */
	char asan[512];

	snprintf(asan, sizeof(asan), "%s:quarantine_size_mb=0:thread_local_quarantine_size_kb=0",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
	setenv("ASAN_OPTIONS", asan, 1);
#endif
	h_broker_start(&br, args);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "listen pgb_hoard"));
	cr_assert_eq(h_num(c, "select 1"), 1);
	before = h_rss_kb(br.pid);
	/* 40 MB of notifications, each payload distinct (equal ones fold) */
	PQclear(PQexec(pg, "select pg_notify('pgb_hoard', repeat('x', 2000) || g) "
			   "from generate_series(1, 20000) g"));
	/* answers come after the notifications sent before them */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(h_num(c, "select 2 from pg_sleep(0.1)"), 2);
	after = h_rss_kb(br.pid);
	cr_expect_lt(after - before, 16 * 1024, "the broker grew by %lld kB", after - before);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}
