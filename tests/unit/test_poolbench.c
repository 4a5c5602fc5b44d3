/* Unit tests for tools/bench.c, poolbench's pure parts: argument parsing,
 * latency percentiles from the agents' histograms, the ratio table and the
 * report, JSON and SVG writers, /proc/PID/stat parsing. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/bench.h"

#define MAXARGS 24

/* Parse a NULL-terminated argument list (argv[0] is added). */
static int parse(struct bench_opts *o, char *err, size_t errlen, const char *const *args)
{
	char *argv[MAXARGS + 2];
	int argc = 0;

	argv[argc++] = "poolbench";
	for (int i = 0; args[i] && argc <= MAXARGS; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;
	return bench_parse_args(argc, argv, o, err, errlen);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

Test(poolbench, defaults)
{
	struct bench_opts o;
	char err[256];
	const char *const none[] = { NULL };

	cr_assert_eq(parse(&o, err, sizeof(err), none), 0, "%s", err);
	cr_assert_eq(o.modes, 1u << BENCH_BROKER);
	cr_assert_eq(o.nworkloads, 1);
	cr_assert_eq(o.workloads[0], BENCH_SELECT1);
	cr_assert_eq(o.nagents, 1);
	cr_assert_eq(o.agents[0], 10);
	cr_assert_float_eq(o.duration_s, 10, 1e-9);
	cr_assert_float_eq(o.warmup_s, 1, 1e-9);
	cr_assert_eq(o.pool_size, 0);
	cr_assert_eq(o.compare, 0);
	cr_assert_null(o.dsn);
	cr_assert_null(o.json);
	cr_assert_null(o.plot);
	cr_assert_null(o.broker);
}

Test(poolbench, every_flag)
{
	struct bench_opts o;
	char err[256];

	cr_assert_eq(parse(&o, err, sizeof(err),
			   ARGS("--mode", "pgbouncer", "--agents", "4", "--duration", "1.5",
				"--workload", "tpcb", "--pool-size", "12", "--json", "out.json",
				"--plot", "out.svg", "--dsn", "host=/tmp dbname=x", "--warmup", "0",
				"--broker", "/opt/pgbroker")), 0, "%s", err);
	cr_assert_eq(o.modes, 1u << BENCH_PGBOUNCER);
	cr_assert_eq(o.nagents, 1);
	cr_assert_eq(o.agents[0], 4);
	cr_assert_float_eq(o.duration_s, 1.5, 1e-9);
	cr_assert_float_eq(o.warmup_s, 0, 1e-9);
	cr_assert_eq(o.nworkloads, 1);
	cr_assert_eq(o.workloads[0], BENCH_TPCB);
	cr_assert_eq(o.pool_size, 12);
	cr_assert_str_eq(o.json, "out.json");
	cr_assert_str_eq(o.plot, "out.svg");
	cr_assert_str_eq(o.dsn, "host=/tmp dbname=x");
	cr_assert_str_eq(o.broker, "/opt/pgbroker");

	/* --key=value works too, and a second call starts from scratch. */
	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--agents=7", "--mode=direct")), 0, "%s", err);
	cr_assert_eq(o.agents[0], 7);
	cr_assert_eq(o.modes, 1u << BENCH_DIRECT);
	cr_assert_null(o.json);
}

Test(poolbench, compare_lists_and_help)
{
	struct bench_opts o;
	char err[256];

	cr_assert_eq(parse(&o, err, sizeof(err),
			   ARGS("--compare", "--agents-list", "1,10,50,200", "--workload",
				"pgbench-select,select1")), 0, "%s", err);
	cr_assert_eq(o.compare, 1);
	cr_assert_eq(o.modes, (1u << BENCH_DIRECT) | (1u << BENCH_PGBOUNCER) | (1u << BENCH_BROKER));
	cr_assert_eq(o.nagents, 4);
	cr_assert_eq(o.agents[0], 1);
	cr_assert_eq(o.agents[3], 200);
	/* Workloads run in their fixed order, whatever the order given. */
	cr_assert_eq(o.nworkloads, 2);
	cr_assert_eq(o.workloads[0], BENCH_SELECT1);
	cr_assert_eq(o.workloads[1], BENCH_PGBENCH_SELECT);

	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--mode", "broker,direct")), 0, "%s", err);
	cr_assert_eq(o.modes, (1u << BENCH_DIRECT) | (1u << BENCH_BROKER));

	/* --epoll adds the broker on its epoll loop, with --compare or alone. */
	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--compare", "--epoll")), 0, "%s", err);
	cr_assert_eq(o.modes, (1u << BENCH_DIRECT) | (1u << BENCH_PGBOUNCER) | (1u << BENCH_BROKER) |
		     (1u << BENCH_BROKER_EPOLL));
	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--mode", "broker-epoll")), 0, "%s", err);
	cr_assert_eq(o.modes, 1u << BENCH_BROKER_EPOLL);

	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--help")), 0);
	cr_assert_eq(o.help, 1);
	cr_assert_not_null(strstr(bench_usage(), "--agents-list"));
}

struct bad_case {
	const char *const *args;
	const char *err;      /* a part of the message */
};

Test(poolbench, bad_arguments)
{
	const struct bad_case cases[] = {
		{ .args = ARGS("--agents", "0"), .err = "--agents: invalid value \"0\"" },
		{ .args = ARGS("--agents", "10001"), .err = "integer 1..10000" },
		{ .args = ARGS("--agents", "ten"), .err = "--agents" },
		{ .args = ARGS("--agents", "-5"), .err = "--agents" },
		{ .args = ARGS("--agents-list", "1,,2"), .err = "--agents-list" },
		{ .args = ARGS("--agents-list", "1,2,"), .err = "--agents-list" },
		{ .args = ARGS("--agents-list", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"),
		  .err = "at most 16" },
		{ .args = ARGS("--duration", "0"), .err = "--duration" },
		{ .args = ARGS("--duration", "-1"), .err = "--duration" },
		{ .args = ARGS("--duration", "5s"), .err = "--duration" },
		{ .args = ARGS("--duration", "nan"), .err = "--duration" },
		{ .args = ARGS("--warmup", "-0.5"), .err = "--warmup" },
		{ .args = ARGS("--workload", "select2"), .err = "--workload: invalid value \"select2\"" },
		{ .args = ARGS("--workload", "select1,"), .err = "--workload" },
		{ .args = ARGS("--mode", "pgpool"), .err = "--mode" },
		{ .args = ARGS("--pool-size", "0"), .err = "--pool-size" },
		{ .args = ARGS("--pool-size", "8x"), .err = "--pool-size" },
		{ .args = ARGS("--compare", "--mode", "broker"), .err = "leave out --mode" },
		{ .args = ARGS("--json"), .err = "--json needs a value" },
		{ .args = ARGS("--frobnicate"), .err = "unknown argument: --frobnicate" },
		{ .args = ARGS("extra"), .err = "unexpected argument: extra" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bench_opts o;
		char err[256];

		cr_assert_eq(parse(&o, err, sizeof(err), cases[i].args), -1, "case %zu accepted", i);
		cr_assert_not_null(strstr(err, cases[i].err), "case %zu: \"%s\" lacks \"%s\"", i, err,
				   cases[i].err);
	}
}

Test(poolbench, number_lists)
{
	int v[4];

	cr_assert_eq(bench_parse_list("5", v, 4, 1, 10), 1);
	cr_assert_eq(v[0], 5);
	cr_assert_eq(bench_parse_list("1,2,10", v, 4, 1, 10), 3);
	cr_assert_eq(v[2], 10);
	cr_assert_eq(bench_parse_list("1,2,3,4,5", v, 4, 1, 10), -1);
	cr_assert_eq(bench_parse_list("11", v, 4, 1, 10), -1);
	cr_assert_eq(bench_parse_list("", v, 4, 1, 10), -1);
	cr_assert_eq(bench_parse_list(" 1", v, 4, 1, 10), -1);
	cr_assert_eq(bench_parse_list("1, 2", v, 4, 1, 10), -1);
	cr_assert_eq(bench_parse_list("99999999999999999999", v, 4, 1, 10), -1);
}

Test(poolbench, default_pool_size)
{
	cr_assert_eq(bench_default_pool_size(2), 8);
	cr_assert_eq(bench_default_pool_size(1), 4);
	cr_assert_eq(bench_default_pool_size(0), 4);
	cr_assert_eq(bench_default_pool_size(-1), 4);
	cr_assert_eq(bench_default_pool_size(8), 32);
	cr_assert_eq(bench_default_pool_size(64), 64);
}

Test(poolbench, names)
{
	for (int m = 0; m < BENCH_NMODES; m++)
		cr_assert_eq(bench_mode_from_name(bench_mode_name(m)), m);
	for (int w = 0; w < BENCH_NWORKLOADS; w++)
		cr_assert_eq(bench_workload_from_name(bench_workload_name(w)), w);
	cr_assert_eq(bench_mode_from_name("Broker"), -1);
	cr_assert_str_eq(bench_workload_unit(BENCH_TPCB), "tx/s");
	cr_assert_str_eq(bench_workload_unit(BENCH_SELECT1), "q/s");
	cr_assert_str_eq(bench_workload_unit(BENCH_MIXED), "ops/s");
}

/* --- latency --- */

Test(poolbench, percentiles_of_uniform_latencies)
{
	struct stats_hist h = { 0 };
	struct bench_result r = { 0 };

	for (uint64_t us = 1; us <= 1000; us++)
		stats_hist_add(&h, us);
	bench_result_latency(&r, &h);
	cr_assert_float_eq(r.avg_us, 500.5, 1e-9);
	/* The upper edge of the right bucket: true value .. +25 %. */
	cr_assert(r.p50_us >= 500 && r.p50_us <= 625, "p50 %llu", (unsigned long long)r.p50_us);
	cr_assert(r.p95_us >= 950 && r.p95_us <= 1000, "p95 %llu", (unsigned long long)r.p95_us);
	cr_assert(r.p99_us >= 990 && r.p99_us <= 1000, "p99 %llu", (unsigned long long)r.p99_us);
	cr_assert_eq(r.max_us, 1000);
	cr_assert(r.p50_us <= r.p95_us && r.p95_us <= r.p99_us && r.p99_us <= r.max_us);
}

Test(poolbench, percentiles_with_a_tail)
{
	struct stats_hist h = { 0 };
	struct bench_result r = { 0 };

	/* 98 fast, 2 slow: p50 and p95 fast, p99 slow. */
	for (int i = 0; i < 98; i++)
		stats_hist_add(&h, 100);
	stats_hist_add(&h, 50000);
	stats_hist_add(&h, 80000);
	bench_result_latency(&r, &h);
	cr_assert(r.p50_us >= 100 && r.p50_us <= 125);
	cr_assert(r.p95_us >= 100 && r.p95_us <= 125);
	cr_assert(r.p99_us >= 50000 && r.p99_us <= 62500, "p99 %llu", (unsigned long long)r.p99_us);
	cr_assert_eq(r.max_us, 80000);

	/* Empty: all zero. */
	memset(&h, 0, sizeof(h));
	bench_result_latency(&r, &h);
	cr_assert_eq(r.p50_us, 0);
	cr_assert_eq(r.p99_us, 0);
	cr_assert_eq(r.max_us, 0);
	cr_assert_float_eq(r.avg_us, 0, 1e-9);
}

Test(poolbench, merged_histograms_equal_one_histogram)
{
	struct stats_hist all = { 0 }, a = { 0 }, b = { 0 }, sum = { 0 };

	for (uint64_t us = 1; us < 5000; us += 7) {
		stats_hist_add(&all, us);
		stats_hist_add(us % 2 ? &a : &b, us);
	}
	bench_hist_merge(&sum, &a);
	bench_hist_merge(&sum, &b);
	cr_assert_eq(memcmp(&sum, &all, sizeof(all)), 0);
	for (double p = 0.1; p < 1; p += 0.1)
		cr_assert_eq(stats_hist_pct(&sum, p), stats_hist_pct(&all, p));
}

Test(poolbench, milliseconds)
{
	char buf[16];

	bench_fmt_ms(buf, sizeof(buf), 64);
	cr_assert_str_eq(buf, "0.064");
	bench_fmt_ms(buf, sizeof(buf), 1500);
	cr_assert_str_eq(buf, "1.50");
	bench_fmt_ms(buf, sizeof(buf), 46100);
	cr_assert_str_eq(buf, "46.1");
	bench_fmt_ms(buf, sizeof(buf), 123456);
	cr_assert_str_eq(buf, "123");
}

/* --- ratio table and writers --- */

static struct bench_result run(int mode, int workload, int agents, double rate, uint64_t p50,
			       uint64_t p99)
{
	return (struct bench_result){
		.mode = mode, .workload = workload, .agents = agents, .seconds = 1,
		.ops = (uint64_t)rate, .rate = rate, .p50_us = p50, .p95_us = p99, .p99_us = p99,
		.max_us = p99 * 2, .cpu_pooler_s = 0.5, .cpu_pg_s = 1, .cpu_agents_s = 0.25,
		.backends = mode == BENCH_DIRECT ? agents : 8,
		.pool_size = mode == BENCH_DIRECT ? 0 : 8,
	};
}

/* select1 at 1 and 50 agents with all three modes; pgbench-select at 50
 * without pgbouncer. */
static int sample(struct bench_result *r)
{
	int n = 0;

	r[n++] = run(BENCH_DIRECT, BENCH_SELECT1, 1, 16000, 64, 100);
	r[n++] = run(BENCH_PGBOUNCER, BENCH_SELECT1, 1, 10000, 100, 200);
	r[n++] = run(BENCH_BROKER, BENCH_SELECT1, 1, 12000, 80, 100);
	r[n++] = run(BENCH_DIRECT, BENCH_SELECT1, 50, 25000, 1500, 8000);
	r[n++] = run(BENCH_PGBOUNCER, BENCH_SELECT1, 50, 18000, 2500, 4000);
	r[n++] = run(BENCH_BROKER, BENCH_SELECT1, 50, 40000, 1000, 2000);
	r[n++] = run(BENCH_DIRECT, BENCH_PGBENCH_SELECT, 50, 10000, 4000, 20000);
	r[n++] = run(BENCH_BROKER, BENCH_PGBENCH_SELECT, 50, 15000, 3000, 10000);
	return n;
}

Test(poolbench, epoll_ratio_rows)
{
	struct bench_result r[8];
	struct bench_epoll_row rows[8];
	int n = 0;

	r[n++] = run(BENCH_PGBOUNCER, BENCH_SELECT1, 50, 18000, 2500, 4000);
	r[n++] = run(BENCH_BROKER, BENCH_SELECT1, 50, 40000, 1000, 2000);
	r[n++] = run(BENCH_BROKER_EPOLL, BENCH_SELECT1, 50, 36000, 1100, 3000);
	r[n++] = run(BENCH_BROKER_EPOLL, BENCH_PGBENCH_SELECT, 50, 9000, 1100, 3000);
	cr_assert_eq(bench_epoll_ratios(r, n, rows, 8), 1, "no io_uring or pgbouncer run: no row");
	cr_assert_eq(rows[0].agents, 50);
	cr_assert_float_eq(rows[0].vs_uring_rate, 0.9, 1e-12);
	cr_assert_float_eq(rows[0].vs_uring_p50, 1.1, 1e-12);
	cr_assert_float_eq(rows[0].vs_uring_p99, 1.5, 1e-12);
	cr_assert_float_eq(rows[0].vs_bouncer_rate, 2.0, 1e-12);
	/* The io_uring broker's own ratio rows leave broker-epoll out. */
	struct bench_ratio_row br[8];
	cr_assert_eq(bench_ratios(r, n, br, 8), 1);
}

Test(poolbench, ratio)
{
	cr_assert_float_eq(bench_ratio(3, 2), 1.5, 1e-12);
	cr_assert_float_eq(bench_ratio(1, 0), -1, 1e-12);
	cr_assert_float_eq(bench_ratio(0, 1), -1, 1e-12);
	cr_assert_float_eq(bench_ratio(-1, 1), -1, 1e-12);
}

Test(poolbench, ratio_rows)
{
	struct bench_result r[16];
	struct bench_ratio_row rows[16];
	int n = sample(r), nrows = bench_ratios(r, n, rows, 16);

	cr_assert_eq(nrows, 3);
	cr_assert_eq(rows[0].workload, BENCH_SELECT1);
	cr_assert_eq(rows[0].agents, 1);
	cr_assert_float_eq(rows[0].vs_direct_rate, 0.75, 1e-12);
	cr_assert_float_eq(rows[0].vs_direct_p50, 1.25, 1e-12);
	cr_assert_float_eq(rows[0].vs_bouncer_rate, 1.2, 1e-12);
	cr_assert_float_eq(rows[0].vs_bouncer_p50, 0.8, 1e-12);
	cr_assert_float_eq(rows[0].vs_bouncer_p99, 0.5, 1e-12);
	cr_assert_eq(rows[1].agents, 50);
	cr_assert_float_eq(rows[1].vs_direct_rate, 1.6, 1e-12);
	cr_assert_float_eq(rows[1].vs_direct_p99, 0.25, 1e-12);
	cr_assert_float_eq(rows[1].vs_bouncer_rate, 40000.0 / 18000.0, 1e-12);
	/* No pgbouncer run: those ratios are missing, not zero. */
	cr_assert_eq(rows[2].workload, BENCH_PGBENCH_SELECT);
	cr_assert_float_eq(rows[2].vs_direct_rate, 1.5, 1e-12);
	cr_assert_float_eq(rows[2].vs_bouncer_rate, -1, 1e-12);
	cr_assert_float_eq(rows[2].vs_bouncer_p99, -1, 1e-12);

	/* A failed run takes no part; max bounds the rows. */
	r[5].failed = 1;
	cr_assert_eq(bench_ratios(r, n, rows, 16), 2);
	r[5].failed = 0;
	r[0].failed = 1;
	nrows = bench_ratios(r, n, rows, 1);
	cr_assert_eq(nrows, 1);
	cr_assert_float_eq(rows[0].vs_direct_rate, -1, 1e-12);
	cr_assert_float_eq(rows[0].vs_bouncer_rate, 1.2, 1e-12);
}

/* An agent count given twice (to see how much runs vary): each broker run
 * is set against the runs made just before it, not against the first ones. */
Test(poolbench, ratio_rows_of_repeated_steps)
{
	struct bench_result r[4];
	struct bench_ratio_row rows[4];

	r[0] = run(BENCH_DIRECT, BENCH_SELECT1, 10, 20000, 100, 200);
	r[1] = run(BENCH_BROKER, BENCH_SELECT1, 10, 20000, 100, 200);
	r[2] = run(BENCH_DIRECT, BENCH_SELECT1, 10, 10000, 200, 800);
	r[3] = run(BENCH_BROKER, BENCH_SELECT1, 10, 20000, 100, 200);
	cr_assert_eq(bench_ratios(r, 4, rows, 4), 2);
	cr_assert_float_eq(rows[0].vs_direct_rate, 1.0, 1e-12);
	cr_assert_float_eq(rows[1].vs_direct_rate, 2.0, 1e-12);
	cr_assert_float_eq(rows[1].vs_direct_p50, 0.5, 1e-12);
	cr_assert_float_eq(rows[1].vs_direct_p99, 0.25, 1e-12);

	/* The direct run of the second step failed: no ratio, not the first one's. */
	r[2].failed = 1;
	cr_assert_eq(bench_ratios(r, 4, rows, 4), 1);
}

/* --bouncer-pools: pgbouncer ran once per pool size in one step; the
 * broker is set against the best of them, and the report names each pool. */
Test(poolbench, ratio_rows_of_a_pool_sweep)
{
	struct bench_result r[5];
	struct bench_ratio_row rows[5];
	struct bench_opts o;
	char err[256];

	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--bouncer-pools", "8,16,32")), 0, "%s", err);
	cr_assert_eq(o.nbouncer_pools, 3);
	cr_assert_eq(o.bouncer_pools[2], 32);
	cr_assert_eq(parse(&o, err, sizeof(err), ARGS("--bouncer-pools", "8,,16")), -1);
	cr_assert(strstr(err, "--bouncer-pools") != NULL, "%s", err);

	r[0] = run(BENCH_DIRECT, BENCH_TPCB, 50, 1000, 100, 200);
	r[1] = run(BENCH_PGBOUNCER, BENCH_TPCB, 50, 800, 100, 200);
	r[2] = run(BENCH_PGBOUNCER, BENCH_TPCB, 50, 900, 100, 400);
	r[3] = run(BENCH_PGBOUNCER, BENCH_TPCB, 50, 850, 100, 200);
	r[4] = run(BENCH_BROKER, BENCH_TPCB, 50, 1800, 100, 200);
	r[2].pool_size = 16;
	r[3].pool_size = 32;
	cr_assert_eq(bench_ratios(r, 5, rows, 5), 1);
	cr_assert_float_eq(rows[0].vs_bouncer_rate, 2.0, 1e-12);
	cr_assert_float_eq(rows[0].vs_bouncer_p99, 0.5, 1e-12);
	cr_assert_float_eq(rows[0].vs_direct_rate, 1.8, 1e-12);

	/* The best failed: the next best stands in. */
	r[2].failed = 1;
	cr_assert_eq(bench_ratios(r, 5, rows, 5), 1);
	cr_assert_float_eq(rows[0].vs_bouncer_rate, 1800.0 / 850.0, 1e-12);
}

/* What a writer produced, as a string (free it). */
static char *capture(int kind, const struct bench_result *r, int n)
{
	struct bench_machine m = { .ncpu = 2, .mem_mib = 2048, .cpu = "Test CPU",
				   .kernel = "Linux 6.0", .postgresql = "15.18",
				   .date = "2025-01-01T00:00:00Z", .loadavg = "0.50 0.40 0.30" };
	struct bench_opts o;
	const char *notes[] = { "pgbouncer \"skipped\"" };
	char *buf = NULL, err[64];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	const char *const none[] = { NULL };

	cr_assert_not_null(f);
	cr_assert_eq(parse(&o, err, sizeof(err), none), 0);
	if (kind == 'r')
		bench_write_report(f, &m, &o, 8, r, n, notes, 1);
	else if (kind == 'j')
		bench_write_json(f, &m, &o, 8, r, n, notes, 1);
	else
		bench_write_svg(f, r, n);
	cr_assert_eq(fclose(f), 0);
	return buf;
}

Test(poolbench, report_names_swept_pools)
{
	struct bench_result r[3];
	char *out;

	r[0] = run(BENCH_PGBOUNCER, BENCH_SELECT1, 10, 800, 100, 200);
	r[1] = run(BENCH_PGBOUNCER, BENCH_SELECT1, 10, 900, 100, 200);
	r[2] = run(BENCH_BROKER, BENCH_SELECT1, 10, 1800, 100, 200);
	r[1].pool_size = 16;
	out = capture('r', r, 3);
	cr_assert(strstr(out, "| pgbouncer (pool 16) |") != NULL, "%s", out);
	cr_assert(strstr(out, "| pgbouncer |") != NULL, "%s", out);
	free(out);
}

Test(poolbench, report_tables)
{
	struct bench_result r[16];
	int n = sample(r);
	char *s;

	snprintf(r[7].note, sizeof(r[7].note), "x");
	s = capture('r', r, n);
	cr_assert_not_null(strstr(s, "- CPU: 2 × Test CPU\n"));
	cr_assert_not_null(strstr(s, "- PgBouncer: not installed\n"));
	cr_assert_not_null(strstr(s, "(1, 5, 15 min): 0.50 0.40 0.30\n"));
	cr_assert_not_null(strstr(s, "| select1 | 50 | broker | 40000 q/s | 1.00 | 2.00 | 2.00 | "
				     "4.00 | 0 | 8 | 0.50 | 1.00 | 0.25 | 44 |"), "%s", s);
	cr_assert_not_null(strstr(s, "| select1 | 50 | direct | 25000 q/s | 1.50 | 8.00 | 8.00 | "
				     "16.0 | 0 | 50 | — |"), "%s", s);
	cr_assert_not_null(strstr(s, "| select1 | 1 | 0.75× | 1.25× | 1.00× | 1.20× | 0.80× | "
				     "0.50× |"), "%s", s);
	cr_assert_not_null(strstr(s, "| pgbench-select | 50 | 1.50× | 0.75× | 0.50× | — | — | — |"),
			   "%s", s);
	cr_assert_not_null(strstr(s, "Note: pgbouncer \"skipped\"\n"));
	free(s);

	r[3].failed = 1;
	r[3].errors = 3;
	snprintf(r[3].note, sizeof(r[3].note), "agents did not connect");
	s = capture('r', r, n);
	cr_assert_not_null(strstr(s, "| select1 | 50 | direct | failed: agents did not connect |"),
			   "%s", s);
	cr_assert_not_null(strstr(s, "| select1 | 50 | — | — | — | 2.22× |"), "%s", s);
	free(s);
}

Test(poolbench, json_keys)
{
	struct bench_result r[16];
	int n = sample(r);
	char *s;

	r[2].cpu_pg_s = -1;   /* not measurable */
	snprintf(r[2].note, sizeof(r[2].note), "say \"hi\"\n");
	s = capture('j', r, n);
	cr_assert_eq(s[0], '{');
	cr_assert_eq(s[strlen(s) - 2], '}');
	for (const char *const *k = (const char *const[]){ "\"tool\": \"poolbench\"", "\"machine\"",
		     "\"nproc\": 2", "\"postgresql\": \"15.18\"", "\"pgbouncer\": null",
		     "\"loadavg\": \"0.50 0.40 0.30\"",
		     "\"runs\": [", "\"ratios\": [", "\"notes\": [\"pgbouncer \\\"skipped\\\"\"]",
		     "\"mode\": \"broker\"", "\"workload\": \"pgbench-select\"", "\"rate\": 40000",
		     "\"p50_us\": 1000", "\"p95_us\": 2000", "\"p99_us\": 2000", "\"max_us\": 4000",
		     "\"errors\": 0,", "\"backends\": 8", "\"cpu_pooler_s\": null",
		     "\"cpu_postgresql_s\": null", "\"cpu_agents_s\": 0.25",
		     "\"note\": \"say \\\"hi\\\"\\n\"", "\"broker_vs_direct\": {\"rate\": 1.6,",
		     "\"broker_vs_pgbouncer\": {\"rate\": null", NULL }; *k; k++)
		cr_assert_not_null(strstr(s, *k), "no %s in\n%s", *k, s);
	free(s);
}

/* A note cut in the middle of a character, or in Latin-1 (an error message
 * from a server whose client encoding is not UTF-8), must not make the
 * file invalid JSON: such bytes become U+FFFD. */
Test(poolbench, json_is_utf8)
{
	struct bench_result r[16];
	int n = sample(r);
	char *s;

	snprintf(r[0].note, sizeof(r[0].note), "Schl\xfcssel \xc3\xbc \xe2\x80");
	s = capture('j', r, n);
	cr_assert_not_null(strstr(s, "\"note\": \"Schl\\ufffdssel \xc3\xbc \\ufffd\\ufffd\""),
			   "%s", s);
	free(s);
}

static int count(const char *s, const char *what)
{
	int n = 0;

	for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
		n++;
	return n;
}

Test(poolbench, svg_plot)
{
	struct bench_result r[16];
	int n = sample(r);
	char *s = capture('s', r, n);

	cr_assert_eq(strncmp(s, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39), 0);
	cr_assert_not_null(strstr(s, "</svg>\n"));
	/* Two workloads, two panels each; one line per mode that has data
	 * (select1: 3 modes; pgbench-select: 2) in each panel. */
	cr_assert_eq(count(s, "<polyline"), 2 * 3 + 2 * 2);
	cr_assert_eq(count(s, "<circle"), 2 * 6 + 2 * 2);
	cr_assert_not_null(strstr(s, "select1: throughput, q/s"));
	cr_assert_not_null(strstr(s, "pgbench-select: p99 latency"));
	free(s);

	s = capture('s', r, 0);
	cr_assert_not_null(strstr(s, "</svg>"));
	cr_assert_eq(count(s, "<polyline"), 0);
	free(s);
}

Test(poolbench, proc_stat_lines)
{
	int ppid;
	uint64_t t, ct;
	const char *line = "4242 (postgres: a) b) S 4000 4000 4000 0 -1 4194560 120 0 0 0 "
			   "250 75 30 12 20 0 1 0 123 1000 200 18446744073709551615";

	cr_assert_eq(bench_parse_proc_stat(line, &ppid, &t, &ct), 0);
	cr_assert_eq(ppid, 4000);
	cr_assert_eq(t, 325);
	cr_assert_eq(ct, 42);
	cr_assert_eq(bench_parse_proc_stat("garbage", &ppid, &t, &ct), -1);
	cr_assert_eq(bench_parse_proc_stat("1 (x) S 0 1", &ppid, &t, &ct), -1);
}
