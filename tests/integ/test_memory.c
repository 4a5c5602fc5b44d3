/* The memory budget against a real broker: results nobody reads keep the
 * broker within max_memory_mb and give their memory back when the agent
 * leaves, a large result streams through with bounded broker memory (whole
 * through pgb_exec, chunk by chunk with PGB_CHUNKED), an agent over its
 * share gets PB008 for new work, and a backend whose libpq buffer grew is
 * closed after use. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define BUDGET_MB 32
/* Beside the budget: libpq's socket reads, a chunk in flight, allocator slack. */
#define SLACK_KB (16 * 1024)

static struct h_broker br;

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

/* Freed memory would stay in ASan's quarantine and count in the RSS. */
static void no_quarantine(void)
{
#if defined(__SANITIZE_ADDRESS__)
	char asan[512];

	snprintf(asan, sizeof(asan), "%s:quarantine_size_mb=0:thread_local_quarantine_size_kb=0",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
	setenv("ASAN_OPTIONS", asan, 1);
#endif
}

static int snap(struct stats_snap *s)
{
	struct stats_map m;
	char err[600];
	int rc;

	memset(s, 0, sizeof(*s));
	if (stats_map_open(br.dir, &m, err, sizeof(err)) < 0)
		return -1;
	rc = stats_read(m.seg, s);
	stats_map_close(&m);
	return rc;
}

/* Broker RSS: its most seen while waiting on a condition. */
struct watch {
	long long max_kb;
	long long below_kb;   /* the bound */
	PGconn *pg;
};

static void watch_rss(struct watch *w)
{
	long long kb = h_rss_kb(br.pid);

	if (kb > w->max_kb)
		w->max_kb = kb;
}

/* The warmed-up broker's RSS: a few statements through it first. */
static long long baseline_kb(void)
{
	pgb_conn *c = h_connect(&br);

	for (int i = 0; i < 4; i++)
		pgb_clear(h_ok(c, "select repeat('w', 100000) from generate_series(1, 3)"));
	pgb_finish(c);
	return h_rss_kb(br.pid);
}

/* An agent that sends eight 400 MB results and never reads them; it says
 * so on the pipe fd and waits for its end of the pipe to close. */
static int never_reads(void *arg)
{
	int *fds = arg;
	pgb_conn *c = pgb_connect(br.dir);
	char x;

	close(fds[2]);	/* the parent's end: its close is the signal */
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; i < 8; i++)
		if (pgb_send(c, "select repeat('x', 400000000) /* never-read */", 0, NULL,
			     PGB_INDEPENDENT) < 0)
			return 11;
	if (write(fds[1], "s", 1) != 1)
		return 12;
	(void)!read(fds[0], &x, 1);
	return 0;
}

/* The eight statements are over (answered, never read). */
static int all_answered(void *arg)
{
	struct watch *w = arg;
	struct stats_snap s;

	watch_rss(w);
	if (w->max_kb > w->below_kb && !UNDER_ASAN)
		return 1;	/* over already: no use waiting for gigabytes */
	return snap(&s) == 0 && s.d.c.statements >= 12 &&
	       h_backends(w->pg, &br, "query like '%never-read%' and state = 'active'") == 0;
}

static int rss_below(void *arg)
{
	struct watch *w = arg;

	return h_rss_kb(br.pid) < w->below_kb;
}

Test(memory, eight_unread_400mb_results_keep_the_broker_within_its_budget, .timeout = 600)
{
	/* four at once: together they would hold the whole budget */
	const char *args[] = { "--max-memory-mb", "32", "--min-pool-size", "1", "--pool-size", "4",
			       "--max-pool-size", "4", "--max-backends-per-agent", "4", NULL };
	struct watch w = { .pg = h_pg() };
	int to_kid[2], from_kid[2], fds[3];
	struct stats_snap s;
	long long base;
	pid_t kid;
	char x;

	no_quarantine();
	h_broker_start(&br, args);
	base = baseline_kb();
	cr_assert_gt(base, 0);
	w.below_kb = base + BUDGET_MB * 1024 + SLACK_KB;
	cr_assert_eq(pipe(to_kid), 0);
	cr_assert_eq(pipe(from_kid), 0);
	fds[0] = to_kid[0];
	fds[1] = from_kid[1];
	fds[2] = to_kid[1];
	kid = h_fork(never_reads, fds);
	close(to_kid[0]);
	close(from_kid[1]);
	cr_assert_eq(read(from_kid[0], &x, 1), 1, "the agent did not send its statements");
	/* 4 warm-up statements + 8 = 12 statements before */
	/* PostgreSQL builds each 400 MB value before its first byte: slow on
	 * a loaded machine, hence the long bound */
	cr_assert(h_until(all_answered, &w, 480000), "the eight statements never ended");
	watch_rss(&w);
	fprintf(stderr, "memory: broker RSS %lld kB at rest, at most %lld kB with eight unread "
		"400 MB results (max_memory_mb %d)\n", base, w.max_kb, BUDGET_MB);
	/* Under ASan, libpq's reservation of a 400 MB buffer (touched only as
	 * far as it is read) gets its shadow written, 50 MB each: only the
	 * broker's own count is checked there. */
	if (!UNDER_ASAN)
		cr_assert_lt(w.max_kb, w.below_kb,
			     "broker RSS reached %lld kB (at rest %lld kB, budget %d MB)", w.max_kb,
			     base, BUDGET_MB);
	cr_assert_eq(snap(&s), 0);
	cr_assert_geq(s.d.c.rows_too_large, 1, "no statement was refused its row");
	cr_assert_leq(s.d.mem.peak, s.d.mem.budget + (SLACK_KB << 10),
		      "counted %llu bytes at most, budget %llu", (unsigned long long)s.d.mem.peak,
		      (unsigned long long)s.d.mem.budget);
	/* the agent leaves: the memory goes back */
	close(to_kid[1]);
	cr_assert_eq(h_wait(kid, 10000), 0);
	w.below_kb = base + 8 * 1024;
	cr_assert(h_until(rss_below, &w, 10000), "broker RSS stayed at %lld kB after the agent "
		  "left (at rest %lld kB)", h_rss_kb(br.pid), base);
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 7"), 7, "the broker does not serve after that");
	pgb_finish(c);
	close(from_kid[0]);
	PQfinish(w.pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* of 1000 bytes: 128 MB through a 32 MB budget (a 2 GB run by hand
 * shows the same) */
#define STREAM_ROWS 131072

Test(memory, a_large_result_streams_in_chunks_with_bounded_broker_memory, .timeout = 300)
{
	const char *args[] = { "--max-memory-mb", "32", "--statement-timeout-ms", "0", NULL };
	struct watch w = { 0 };
	long long id, base, rows = 0, bytes = 0, chunks = 0;
	pgb_conn *c;
	pgb_result *r;

	no_quarantine();
	h_broker_start(&br, args);
	base = baseline_kb();
	c = h_connect(&br);
	id = pgb_send(c, "select g, repeat('y', 1000) from generate_series(1, 131072) g", 0, NULL,
		      PGB_CHUNKED);
	cr_assert_gt(id, 0, "%s", pgb_error_message(c));
	while ((r = pgb_get_result(c, NULL))) {
		int st = pgb_result_status(r);

		cr_assert(st == PGB_TUPLES_CHUNK || st == PGB_TUPLES_OK, "%s %s", pgb_sqlstate(r),
			  pgb_result_error(r));
		for (int i = 0; i < pgb_ntuples(r); i++) {
			cr_assert_eq(atoll(pgb_getvalue(r, i, 0)), rows + 1, "row %lld out of order",
				     rows + 1);
			bytes += pgb_getlength(r, i, 1);
			rows++;
		}
		if (st == PGB_TUPLES_OK) {
			cr_assert_eq(pgb_ntuples(r), 0, "the final result carries rows");
			cr_assert_str_eq(pgb_cmd_status(r), "SELECT 131072");
		}
		if (chunks++ % 64 == 0)
			watch_rss(&w);
		pgb_clear(r);
	}
	cr_assert_eq(rows, STREAM_ROWS);
	cr_assert_eq(bytes, STREAM_ROWS * 1000LL);
	cr_assert_gt(chunks, 100, "only %lld results: it did not stream", chunks);
	fprintf(stderr, "memory: %lld MB streamed in %lld chunks; broker RSS %lld kB at rest, "
		"at most %lld kB\n", bytes >> 20, chunks, base, w.max_kb);
	cr_assert_lt(w.max_kb, base + BUDGET_MB * 1024 + SLACK_KB,
		     "broker RSS reached %lld kB (at rest %lld kB)", w.max_kb, base);

	/* The same through pgb_exec: reassembled into one result. */
	r = pgb_exec(c, "select g, repeat('z', 1000) from generate_series(1, 30000) g");
	cr_assert(pgb_result_ok(r), "%s %s", pgb_sqlstate(r), pgb_result_error(r));
	cr_assert_eq(pgb_result_status(r), PGB_TUPLES_OK);
	cr_assert_eq(pgb_ntuples(r), 30000);
	cr_assert_eq(pgb_nfields(r), 2);
	for (int i = 0; i < 30000; i += 997) {
		cr_assert_eq(atoi(pgb_getvalue(r, i, 0)), i + 1);
		cr_assert_eq(pgb_getlength(r, i, 1), 1000);
	}
	cr_assert_eq(pgb_cmd_tuples(r), 30000);
	pgb_clear(r);
	/* An error after rows went ahead voids them; the connection goes on. */
	r = pgb_exec(c, "select case when g < 20000 then repeat('e', 1000) "
			"else (1 / (g - g))::text end from generate_series(1, 30000) g");
	cr_assert_str_eq(pgb_sqlstate(r), "22012", "%s", pgb_result_error(r));
	cr_assert_eq(pgb_ntuples(r), 0);
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 8"), 8);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int over_share(void *arg)
{
	struct stats_snap s;

	(void)arg;
	return snap(&s) == 0 && s.d.mem.used >= s.d.mem.budget / 2;
}

Test(memory, an_agent_over_its_share_gets_pb008_for_new_work, .timeout = 120)
{
	const char *args[] = { "--max-memory-mb", "32", "--max-inflight-per-agent", "1024", NULL };
	pgb_conn *c, *other;
	pgb_result *r;
	struct stats_snap s;
	int n = 0, ok = 0;

	h_broker_start(&br, args);
	c = h_connect(&br);
	/* 200 results of 100 kB, none read: 20 MB held for this agent */
	for (; n < 200; n++)
		cr_assert_gt(pgb_send(c, "select repeat('s', 100000)", 0, NULL, PGB_INDEPENDENT), 0,
			     "%s", pgb_error_message(c));
	cr_assert(h_until(over_share, NULL, 60000), "the agent never held half the budget");
	cr_assert_gt(pgb_send(c, "select 'refused'", 0, NULL, 0), 0);
	n++;
	/* another agent still has its share */
	other = h_connect(&br);
	cr_assert_eq(h_num(other, "select 9"), 9, "a bystander was refused");
	pgb_finish(other);
	while ((r = pgb_get_result(c, NULL))) {
		if (pgb_result_ok(r))
			ok++;
		else
			cr_assert_str_eq(pgb_sqlstate(r), "PB008", "%s", pgb_result_error(r));
		if (!pgb_result_ok(r))
			cr_assert(strstr(pgb_result_error(r), "max_memory_mb"), "%s",
				  pgb_result_error(r));
		pgb_clear(r);
		n--;
	}
	cr_assert_eq(n, 0);
	cr_assert_eq(ok, 200, "%d of the statements before it failed", 200 - ok);
	cr_assert_eq(snap(&s), 0);
	cr_assert_geq(s.d.c.memory_refused, 1);
	/* read: new work is welcome again */
	cr_assert_eq(h_num(c, "select 10"), 10);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(memory, a_backend_that_read_a_large_row_is_closed_after_use, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       NULL };
	PGconn *pg = h_pg();
	struct stats_snap s;
	long long pid1, pid2;
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, args);
	c = h_connect(&br);
	pid1 = h_num(c, "select pg_backend_pid()");
	r = pgb_exec(c, "select repeat('b', 3000000)");
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_eq(pgb_getlength(r, 0, 0), 3000000);
	pgb_clear(r);
	pid2 = h_num(c, "select pg_backend_pid()");
	cr_assert_neq(pid1, pid2, "the backend that read a 3 MB row was reused");
	cr_assert_eq(snap(&s), 0);
	cr_assert_geq(s.d.c.closed_memory, 1);
	/* a small result keeps its backend */
	cr_assert_eq(h_num(c, "select pg_backend_pid()"), pid2);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}
