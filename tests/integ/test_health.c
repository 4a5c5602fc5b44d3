/* Health that tells the truth: a broker that is killed or stopped reads as
 * gone (its pid, its heartbeat), the first second before a health sample is
 * "starting", an open breaker is never healthy, and --prometheus exports
 * latency as histograms that add up across brokers. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;
static char out[256 * 1024];

static void teardown(void)
{
	if (br.pid > 0) {
		kill(br.pid, SIGCONT);
		h_broker_kill(&br);
	}
}

TestSuite(health, .fini = teardown, .timeout = 120);

static int poolstat(const char *mode)
{
	char bin[512];
	const char *argv[] = { h_bin("tools/poolstat", bin, sizeof(bin)), mode, br.dir, NULL };

	return h_run(argv, out, sizeof(out));
}

static int is_gone(void *why)
{
	return poolstat("--once") == 3 && strstr(out, why);
}

static int is_back(void *arg)
{
	(void)arg;
	return poolstat("--once") < 3;
}

static int sampled(void *arg)
{
	(void)arg;
	return poolstat("--once") != 4;
}

Test(health, a_killed_broker_is_gone_at_once)
{
	struct pgb_health h;
	int st;

	h_broker_start(&br, NULL);
	cr_assert(h_until(sampled, NULL, 10000), "%s", out);
	cr_assert_lt(poolstat("--once"), 3, "%s", out);
	h_broker_kill(&br);
	st = poolstat("--once");
	cr_expect_eq(st, 3, "a dead broker read as status %d:\n%s", st, out);
	cr_expect(strstr(out, "not running"), "%s", out);
	cr_expect_eq(pgb_pool_health(br.dir, &h), -1);
	cr_expect_eq(h.status, PGB_NO_BROKER, "%s", h.status_name);
}

Test(health, a_stopped_broker_is_gone_once_its_heartbeat_is_two_seconds_old)
{
	long long until;

	h_broker_start(&br, NULL);
	cr_assert(h_until(sampled, NULL, 10000), "%s", out);
	/* Idle, it keeps its heartbeat fresh: never gone. */
	until = h_now_ms() + 3000;
	while (h_now_ms() < until)
		cr_assert_lt(poolstat("--once"), 3, "an idle broker read as gone:\n%s", out);
	cr_assert_eq(kill(br.pid, SIGSTOP), 0);
	cr_assert(h_until(is_gone, "heartbeat", 10000), "a stopped broker still reads:\n%s", out);
	cr_assert(strstr(out, "no broker at"), "%s", out);
	cr_assert_eq(kill(br.pid, SIGCONT), 0);
	cr_assert(h_until(is_back, NULL, 10000), "%s", out);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(health, no_sample_yet_is_its_own_state)
{
	const char *args[] = { "--health-interval-ms", "3600000", NULL };
	struct pgb_health h;
	int st;

	h_broker_start(&br, args);
	st = poolstat("--once");
	cr_expect_eq(st, 4, "exit %d:\n%s", st, out);
	cr_expect(strstr(out, "health: starting"), "%s", out);
	poolstat("--json");
	cr_expect(strstr(out, "\"status\":\"starting\""), "%s", out);
	cr_assert_eq(pgb_pool_health(br.dir, &h), 0, "%s", h.error);
	cr_expect_eq(h.status, PGB_STARTING);
	cr_expect_eq(h.healthy, 0);
	cr_expect_str_eq(h.status_name, "starting");
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int breaker_open(void *arg)
{
	(void)arg;
	poolstat("--json");
	return strstr(out, "\"breaker\":{\"state\":\"open\"") != NULL;
}

Test(health, an_open_breaker_is_never_healthy)
{
	char dsn[256];
	const char *args[] = { "--dsn", dsn, "--breaker-threshold", "1", "--min-pool-size", "1",
			       "--health-interval-ms", "3600000", NULL };
	struct pgb_health h;
	int st;

	/* Nobody listens there. */
	snprintf(dsn, sizeof(dsn), "host=/nonexistent-pgb-%d port=5432 dbname=x connect_timeout=2",
		 (int)getpid());
	h_broker_start(&br, args);
	cr_assert(h_until(breaker_open, NULL, 20000), "%s", out);
	st = poolstat("--once");
	cr_expect_eq(st, 2, "an open breaker read as %d:\n%s", st, out);
	cr_expect(strstr(out, "circuit breaker open"), "%s", out);
	cr_assert_eq(pgb_pool_health(br.dir, &h), 0, "%s", h.error);
	cr_expect_eq(h.status, PGB_UNHEALTHY, "%s", h.status_name);
	cr_expect_eq(h.healthy, 0);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The value of the sample line `name{...} v` or `name v` that starts with
 * key; -1 when there is none. */
static double prom_value(const char *key)
{
	char pat[256];
	const char *p;

	snprintf(pat, sizeof(pat), "\n%s ", key);
	p = strstr(out, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

Test(health, prometheus_latency_is_a_histogram)
{
	pgb_conn *c;
	const char *p;
	double prev = 0, le_prev = 0;
	int nb = 0;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(h_num(c, "select 1"), 1);
	pgb_finish(c);
	cr_assert_neq(poolstat("--prometheus"), 3, "%s", out);
	cr_expect(!strstr(out, "quantile="), "%s", out);
	cr_expect(strstr(out, "# TYPE pgbroker_statement_duration_seconds histogram\n"), "%s", out);
	cr_expect(strstr(out, "# TYPE pgbroker_acquire_wait_seconds histogram\n"), "%s", out);
	/* Cumulative buckets with rising edges, ending in +Inf = _count. */
	for (p = out; (p = strstr(p, "\npgbroker_statement_duration_seconds_bucket{le=\"")); ) {
		double le, v;
		char *end;

		p += strlen("\npgbroker_statement_duration_seconds_bucket{le=\"");
		if (strncmp(p, "+Inf", 4) == 0)
			break;
		le = strtod(p, &end);
		cr_assert(end != p && strncmp(end, "\"} ", 3) == 0, "%.40s", p);
		v = strtod(end + 3, NULL);
		cr_expect_gt(le, le_prev);
		cr_expect_geq(v, prev, "buckets not cumulative at le=%g", le);
		le_prev = le;
		prev = v;
		nb++;
	}
	cr_expect_geq(nb, 20, "%d buckets", nb);
	cr_expect_geq(prom_value("pgbroker_statement_duration_seconds_count"), 20);
	cr_expect_eq(prom_value("pgbroker_statement_duration_seconds_bucket{le=\"+Inf\"}"),
		     prom_value("pgbroker_statement_duration_seconds_count"));
	cr_expect_geq(prom_value("pgbroker_statement_duration_seconds_bucket{le=\"+Inf\"}"), prev);
	cr_expect_gt(prom_value("pgbroker_statement_duration_seconds_sum"), 0);
	cr_assert_eq(h_broker_stop(&br), 0);
}
