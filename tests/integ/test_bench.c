/* poolbench end to end: a short broker run against the test database, its
 * JSON checked for the expected keys and zero errors. No speed is asserted. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(bench, .timeout = 120);

/* The whole file (NUL-terminated, malloc'd). */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	cr_assert_not_null(f, "poolbench wrote no %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The number after "key": in s; fails the test when the key is missing. */
static double json_number(const char *s, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(s, pat);
	cr_assert_not_null(p, "no \"%s\" in\n%s", key, s);
	return strtod(p + strlen(pat), NULL);
}

Test(bench, broker_run_writes_json)
{
	char bin[512], dir[] = "/tmp/pgb-test-bench.XXXXXX", path[96], out[16384];
	const char *argv[] = { NULL, "--mode", "broker", "--agents", "4", "--duration", "1",
			       "--json", path, "--dsn", h_dsn(), NULL };
	static const char *const keys[] = {
		"\"tool\": \"poolbench\"", "\"machine\"", "\"nproc\"", "\"postgresql\"", "\"runs\"",
		"\"mode\": \"broker\"", "\"workload\": \"select1\"", "\"agents\": 4",
		"\"failed\": false", "\"ops\"", "\"rate\"", "\"unit\": \"q/s\"", "\"errors\": 0,",
		"\"connect_errors\": 0,", "\"avg_us\"", "\"p50_us\"", "\"p95_us\"", "\"p99_us\"",
		"\"max_us\"", "\"backends\"", "\"cpu_pooler_s\"", "\"cpu_postgresql_s\"",
		"\"cpu_agents_s\"", "\"ratios\"",
	};
	char *json;
	int st;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/out.json", dir);
	argv[0] = h_bin("tools/poolbench", bin, sizeof(bin));
	st = h_run(argv, out, sizeof(out));
	cr_assert_eq(st, 0, "poolbench exited with %d:\n%s", st, out);

	json = slurp(path);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cr_assert_not_null(strstr(json, keys[i]), "no %s in\n%s", keys[i], json);
	cr_assert_gt(json_number(json, "ops"), 0, "%s", json);
	cr_assert_gt(json_number(json, "rate"), 0);
	cr_assert_eq(json_number(json, "errors"), 0);
	cr_assert_geq(json_number(json, "p99_us"), json_number(json, "p50_us"));
	cr_assert_geq(json_number(json, "max_us"), json_number(json, "p99_us"));
	/* The broker keeps min = max = pool size backends, at least one. */
	cr_assert_gt(json_number(json, "backends"), 0);
	/* The text report went to stdout. */
	cr_assert_not_null(strstr(out, "| select1 | 4 | broker |"), "%s", out);
	free(json);
	unlink(path);
	rmdir(dir);
}

/* pgbench tables of the right size but without their primary keys (what an
 * interrupted set-up used to leave) would turn every point read into a scan
 * of a million rows: poolbench must not measure on them. */
Test(bench, pgbench_tables_without_keys_are_refused)
{
	char bin[512], dsn[1024], out[16384];
	const char *argv[] = { NULL, "--mode", "direct", "--workload", "pgbench-select",
			       "--agents", "1", "--duration", "0.2", "--warmup", "0", "--dsn", dsn,
			       NULL };
	PGconn *pg = h_pg();
	PGresult *r;
	int st;

	r = PQexec(pg, "set client_min_messages = warning; "
		       "drop schema if exists bench_nokeys cascade; create schema bench_nokeys; "
		       "set search_path = bench_nokeys; "
		       "create table pgbench_branches(bid int, bbalance int, filler char(88)); "
		       "create table pgbench_tellers(tid int, bid int, tbalance int, filler char(84)); "
		       "create table pgbench_accounts(aid int, bid int, abalance int, filler char(84)); "
		       "create table pgbench_history(tid int, bid int, aid int, delta int, "
		       "mtime timestamp, filler char(22)); "
		       "insert into pgbench_branches select g, 0 from generate_series(1, 10) g; "
		       "insert into pgbench_tellers select g, (g - 1) / 10 + 1, 0 "
		       "from generate_series(1, 100) g; "
		       "insert into pgbench_accounts select g, 10, 0, '' "
		       "from generate_series(999990, 1000000) g");
	cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(r);

	snprintf(dsn, sizeof(dsn), "%s options='-c search_path=bench_nokeys'", h_dsn());
	argv[0] = h_bin("tools/poolbench", bin, sizeof(bin));
	st = h_run(argv, out, sizeof(out));
	cr_expect_eq(st, 1, "poolbench exited with %d:\n%s", st, out);
	cr_expect_not_null(strstr(out, "primary key"), "%s", out);
	cr_expect_null(strstr(out, "[1/1]"), "poolbench measured on them:\n%s", out);

	r = PQexec(pg, "drop schema bench_nokeys cascade");
	PQclear(r);
	PQfinish(pg);
}
