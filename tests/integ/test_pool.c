/* The pool under load: many agents, queueing when backends are short, the
 * backend count bounded by max_pool_size, and the stats segment agreeing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

struct load {
	int seconds;
	int sleep_ms;      /* pg_sleep per statement, 0: none */
	int agent;
};

/* One agent: statements whose answers are unique to it, every one checked. */
static int agent_load(void *arg)
{
	const struct load *l = arg;
	pgb_conn *c = pgb_connect(br.dir);
	long long end = h_now_ms() + l->seconds * 1000LL;
	char sql[160], want[32];
	int i = 0;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	while (h_now_ms() < end) {
		pgb_result *r;

		snprintf(want, sizeof(want), "%d:%d", l->agent, i);
		if (l->sleep_ms)
			snprintf(sql, sizeof(sql), "select '%s', pg_sleep(%d / 1000.0)", want,
				 l->sleep_ms);
		else if (i % 5 == 4)
			snprintf(sql, sizeof(sql), "begin; select '%s'; commit", want);
		else
			snprintf(sql, sizeof(sql), "select '%s'", want);
		r = pgb_exec(c, sql);
		if (i % 5 == 4 && !l->sleep_ms) {
			/* a multi-statement string returns the last result (COMMIT) */
			if (!pgb_result_ok(r)) {
				fprintf(stderr, "agent %d: %s %s\n", l->agent, pgb_sqlstate(r),
					pgb_result_error(r));
				return 1;
			}
		} else if (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), want) != 0) {
			fprintf(stderr, "agent %d: %s %s\n", l->agent, pgb_sqlstate(r),
				pgb_result_error(r));
			return 1;
		}
		pgb_clear(r);
		i++;
	}
	pgb_finish(c);
	return i > 0 ? 0 : 2;
}

static void run_agents(int n, struct load proto)
{
	pid_t *pids = calloc((size_t)n, sizeof(pid_t));
	struct load *loads = calloc((size_t)n, sizeof(*loads));
	int failed = 0;

	for (int i = 0; i < n; i++) {
		loads[i] = proto;
		loads[i].agent = i;
		pids[i] = h_fork(agent_load, &loads[i]);
	}
	for (int i = 0; i < n; i++)
		if (h_wait(pids[i], (proto.seconds + 60) * 1000) != 0)
			failed++;
	cr_assert_eq(failed, 0, "%d of %d agents failed", failed, n);
	free(pids);
	free(loads);
}

Test(pool, fifty_agents_five_seconds_no_failures, .timeout = 120)
{
	h_broker_start(&br, NULL);
	run_agents(50, (struct load){ .seconds = 5 });
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct sampler {
	PGconn *pg;
	long long max_seen;
};

static int count_backends(void *arg)
{
	struct sampler *s = arg;
	long long n = h_backends(s->pg, &br, NULL);

	if (n > s->max_seen)
		s->max_seen = n;
	return 0;
}

Test(pool, more_agents_than_backends_queue_and_stay_bounded, .timeout = 120)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "3", "--max-pool-size", "4",
			       "--reserve-timeout-ms", "100", NULL };
	struct sampler s = { .pg = h_pg() };
	struct load l = { .seconds = 3, .sleep_ms = 20 };
	pid_t pids[20];
	int failed = 0;

	h_broker_start(&br, args);
	for (int i = 0; i < 20; i++) {
		struct load li = l;

		li.agent = i;
		pids[i] = h_fork(agent_load, &li);
	}
	/* sample the real backend count while the agents run */
	h_until(count_backends, &s, 3500);
	for (int i = 0; i < 20; i++)
		if (h_wait(pids[i], 60000) != 0)
			failed++;
	cr_assert_eq(failed, 0, "%d agents failed", failed);
	cr_assert_leq(s.max_seen, 4, "saw %lld backends with max_pool_size=4", s.max_seen);
	cr_assert_geq(s.max_seen, 3, "the pool never grew (max %lld)", s.max_seen);
	cr_assert_eq(h_broker_stop(&br), 0);
	PQfinish(s.pg);
}

static int waiters_show(void *arg)
{
	char out[1024], bin[512];
	const char *argv[] = { h_bin("tools/poolstat", bin, sizeof(bin)), "--once", br.dir, NULL };

	(void)arg;
	h_run(argv, out, sizeof(out));
	return strstr(out, "waiting 0 ") == NULL && strstr(out, "waiting ") != NULL;
}

static int slow_agent(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r = pgb_exec(c, "select pg_sleep(1)");
	int ok = pgb_result_ok(r);

	(void)arg;
	pgb_clear(r);
	pgb_finish(c);
	return ok ? 0 : 1;
}

Test(pool, waiting_agents_are_visible_and_served, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       NULL };
	pid_t pids[4];

	h_broker_start(&br, args);
	for (int i = 0; i < 4; i++)
		pids[i] = h_fork(slow_agent, NULL);
	cr_assert(h_until(waiters_show, NULL, 5000), "poolstat never showed waiting agents");
	for (int i = 0; i < 4; i++)
		cr_assert_eq(h_wait(pids[i], 30000), 0);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct acq {
	int order;
	long long done_ms;
	char state[8];
};

static int acquire_agent(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r = pgb_exec(c, "select pg_sleep(3)");
	int rc = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_ACQUIRE_TIMEOUT) == 0 ? 3 :
		 pgb_result_ok(r) ? 0 : 1;

	(void)arg;
	pgb_clear(r);
	pgb_finish(c);
	return rc;
}

Test(pool, acquire_timeout_is_a_clear_error, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       "--acquire-timeout-ms", "500", NULL };
	pid_t first, second;
	pgb_conn *c;

	h_broker_start(&br, args);
	first = h_fork(acquire_agent, NULL);
	c = h_connect(&br);
	/* wait until the first agent holds the only backend */
	PGconn *pg = h_pg();
	for (int i = 0; i < 500 && h_pg_num(pg, "select count(*) from pg_stat_activity "
					"where query like 'select pg_sleep(3)%' and state = 'active'") < 1; i++)
		usleep(10000);
	PQfinish(pg);
	second = h_fork(acquire_agent, NULL);
	cr_assert_eq(h_wait(second, 20000), 3, "the waiter did not get PB001");
	cr_assert_eq(h_wait(first, 20000), 0, "the holder failed");
	cr_assert_eq(h_num(c, "select 1"), 1);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct shrink {
	PGconn *pg;
	long long want;
};

static int backends_are(void *arg)
{
	struct shrink *s = arg;

	return h_backends(s->pg, &br, NULL) == s->want;
}

Test(pool, grows_on_demand_and_shrinks_when_idle, .timeout = 90)
{
	const char *args[] = { "--min-pool-size", "2", "--pool-size", "6", "--max-pool-size", "6",
			       "--idle-timeout-ms", "500", NULL };
	struct shrink s = { .pg = h_pg(), .want = 2 };
	pid_t pids[6];

	h_broker_start(&br, args);
	cr_assert(h_until(backends_are, &s, 5000), "min_pool_size backends not opened at start");
	for (int i = 0; i < 6; i++)
		pids[i] = h_fork(slow_agent, NULL);
	s.want = 6;
	cr_assert(h_until(backends_are, &s, 5000), "the pool did not grow to pool_size");
	for (int i = 0; i < 6; i++)
		cr_assert_eq(h_wait(pids[i], 30000), 0);
	s.want = 2;
	cr_assert(h_until(backends_are, &s, 10000), "idle backends were not closed down to the minimum");
	cr_assert_eq(h_broker_stop(&br), 0);
	PQfinish(s.pg);
}

Test(pool, every_backend_has_the_statement_timeout, .timeout = 60)
{
	const char *args[] = { "--statement-timeout-ms", "1500", NULL };
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, args);
	c = h_connect(&br);
	r = h_ok(c, "show statement_timeout");
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "1500ms");
	pgb_clear(r);
	r = pgb_exec(c, "select pg_sleep(5)");
	cr_assert_str_eq(pgb_sqlstate(r), "57014", "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 1"), 1);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

struct retire {
	PGconn *pg;
	long long pid;   /* the backend opened at start */
};

/* The broker's one backend is no longer the one it opened at start. */
static int replaced(void *arg)
{
	struct retire *s = arg;
	char sql[256];

	snprintf(sql, sizeof(sql), "select count(*) from pg_stat_activity where application_name = "
		 "'%s' and pid <> %lld", strrchr(br.dir, '/') + 1, s->pid);
	return h_backends(s->pg, &br, NULL) == 1 && h_pg_num(s->pg, sql) == 1;
}

/* max_connection_lifetime_ms closes a backend that just sits idle, also
 * when idle backends are never pinged (validation_interval_ms = 0). */
Test(pool, idle_backends_retire_at_their_lifetime, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       "--validation-interval-ms", "0", "--max-connection-lifetime-ms", "1000",
			       NULL };
	struct retire s = { .pg = h_pg() };
	struct shrink one = { .pg = s.pg, .want = 1 };
	char sql[256];

	h_broker_start(&br, args);
	cr_assert(h_until(backends_are, &one, 5000), "min_pool_size backend not opened at start");
	snprintf(sql, sizeof(sql), "select pid from pg_stat_activity where application_name = '%s'",
		 strrchr(br.dir, '/') + 1);
	s.pid = h_pg_num(s.pg, sql);
	cr_assert_gt(s.pid, 0);
	cr_assert(h_until(replaced, &s, 5000), "an idle backend outlived max_connection_lifetime_ms");
	cr_assert_eq(h_broker_stop(&br), 0);
	PQfinish(s.pg);
}
