/* COPY through the broker: byte-identical round trips against psql's
 * \copy (text and csv), errors in the middle, a failed end, COPY inside a
 * transaction, agents killed mid-COPY (the backend is cleaned and reused),
 * the asynchronous read, and a large COPY both ways with the broker's
 * resident memory bounded (PGB_COPY_MB, 128 by default). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;
static char tmp[256];

static void start(void)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size",
			       "1", NULL };

	h_asan_no_quarantine();	/* the large COPY measures the broker's VmRSS */
	h_broker_start(&br, args);
	h_mkdtemp(tmp, sizeof(tmp), "pgb-copy");
}

static void stop(void)
{
	char cmd[300];

	cr_expect_eq(h_broker_stop(&br), 0, "broker did not exit cleanly");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	(void)!system(cmd);
}

TestSuite(copy, .init = start, .fini = stop, .timeout = 120);

static void pg_do(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

/* psql -c CMD on the test database, which must succeed. */
static void psql(const char *cmd)
{
	pid_t pid = fork();
	int st;

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		execlp("psql", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", h_dsn(), "-c",
		       cmd, (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "psql -c \"%s\" failed", cmd);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* COPY ... TO STDOUT through c: every row, concatenated (malloc'd). */
static char *copy_out(pgb_conn *c, const char *sql, size_t *len)
{
	pgb_result *r = pgb_exec(c, sql);
	size_t cap = 1 << 16, n = 0;
	char *all = malloc(cap), *row;
	int k;

	cr_assert_eq(pgb_result_status(r), PGB_COPY_OUT, "%s: %s", sql, pgb_result_error(r));
	cr_assert(pgb_result_ok(r));
	pgb_clear(r);
	while ((k = pgb_get_copy_data(c, &row, 0)) >= 0) {
		cr_assert_eq(strlen(row), (size_t)k, "a row is NUL-terminated at its length");
		while (n + (size_t)k > cap)
			all = realloc(all, cap *= 2);
		memcpy(all + n, row, (size_t)k);
		n += (size_t)k;
		pgb_freemem(row);
	}
	cr_assert_eq(k, -1, "pgb_get_copy_data: %s", pgb_error_message(c));
	r = pgb_get_result(c, NULL);
	cr_assert(pgb_result_ok(r), "%s: %s", sql, pgb_result_error(r));
	cr_assert_eq(pgb_result_status(r), PGB_COMMAND_OK);
	pgb_clear(r);
	*len = n;
	return all;
}

/* COPY ... FROM STDIN through c, data sent in pieces of uneven sizes (a
 * row split anywhere). Returns the final result. */
static pgb_result *copy_in(pgb_conn *c, const char *sql, const char *data, size_t len,
			   const char *errmsg)
{
	static const size_t pieces[] = { 1, 7, 100, 4096, 65535, 65536, 200000, 3 };
	pgb_result *r = pgb_exec(c, sql);
	size_t off = 0;

	cr_assert_eq(pgb_result_status(r), PGB_COPY_IN, "%s: %s", sql, pgb_result_error(r));
	pgb_clear(r);
	for (unsigned i = 0; off < len; i++) {
		size_t n = pieces[i % (sizeof(pieces) / sizeof(pieces[0]))];

		if (n > len - off)
			n = len - off;
		cr_assert_eq(pgb_put_copy_data(c, data + off, (int)n), 1, "%s",
			     pgb_error_message(c));
		off += n;
	}
	cr_assert_eq(pgb_put_copy_end(c, errmsg), 1, "%s", pgb_error_message(c));
	r = pgb_get_result(c, NULL);
	cr_assert_not_null(r);
	return r;
}

/* Rows with what COPY must carry unchanged: NULLs, tabs, newlines, carriage
 * returns, backslashes, quotes, commas, unicode, empty strings, a row far
 * longer than a chunk and a frame, and many ordinary ones. */
static void make_source(PGconn *pg, const char *t)
{
	char sql[1024];

	snprintf(sql, sizeof(sql), "drop table if exists %s; create table %s (i int, a text, b text)",
		 t, t);
	pg_do(pg, sql);
	snprintf(sql, sizeof(sql),
		 "insert into %s values (1, 'plain', 'x'), (2, E'tab\\there', E'new\\nline'), "
		 "(3, E'back\\\\slash', E'\\\\N not null'), (4, 'unicode ✓ 日本語 é', ''), "
		 "(5, NULL, 'null a'), (6, 'quote \" and '' and ,comma', NULL), "
		 "(7, E'cr\\rret', repeat('long', 5000)), (8, repeat('z', 300000), 'big'); "
		 "insert into %s select g, md5(g::text), case when g %% 7 = 0 then null "
		 "else repeat(chr(65 + g %% 26), g %% 300) end from generate_series(9, 20000) g",
		 t, t);
	pg_do(pg, sql);
}

static void round_trip(const char *fmt)
{
	PGconn *pg = h_pg();
	pgb_conn *c = h_connect(&br);
	char src[64], dst[64], cmd[1024], f1[512], f2[512], with[64];
	size_t n1, n2, nb;
	char *d1, *d2, *viab;
	pgb_result *r;

	snprintf(src, sizeof(src), "cp_src_%s_%d", fmt, (int)getpid());
	snprintf(dst, sizeof(dst), "cp_dst_%s_%d", fmt, (int)getpid());
	snprintf(with, sizeof(with), "(format %s)", fmt);
	make_source(pg, src);
	snprintf(cmd, sizeof(cmd), "drop table if exists %s; create table %s (i int, a text, b text)",
		 dst, dst);
	pg_do(pg, cmd);

	/* psql's export and the broker's are the same bytes */
	snprintf(f1, sizeof(f1), "%s/%s.psql", tmp, src);
	snprintf(cmd, sizeof(cmd), "\\copy (select * from %s order by i) to '%s' with %s", src, f1,
		 with);
	psql(cmd);
	d1 = slurp(f1, &n1);
	snprintf(cmd, sizeof(cmd), "copy (select * from %s order by i) to stdout with %s", src, with);
	viab = copy_out(c, cmd, &nb);
	cr_assert_eq(nb, n1, "%s: broker gave %zu bytes, psql %zu", fmt, nb, n1);
	cr_assert(memcmp(viab, d1, n1) == 0, "%s: COPY TO STDOUT differs from psql's \\copy", fmt);

	/* psql's file loaded through the broker comes out of psql unchanged */
	snprintf(cmd, sizeof(cmd), "copy %s from stdin with %s", dst, with);
	r = copy_in(c, cmd, d1, n1, NULL);
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_str_eq(pgb_cmd_status(r), "COPY 20000");
	cr_assert_eq(pgb_cmd_tuples(r), 20000);
	pgb_clear(r);
	snprintf(f2, sizeof(f2), "%s/%s.psql", tmp, dst);
	snprintf(cmd, sizeof(cmd), "\\copy (select * from %s order by i) to '%s' with %s", dst, f2,
		 with);
	psql(cmd);
	d2 = slurp(f2, &n2);
	cr_assert_eq(n2, n1);
	cr_assert(memcmp(d1, d2, n1) == 0, "%s: the table loaded through the broker differs", fmt);
	snprintf(cmd, sizeof(cmd),
		 "select count(*) from ((table %s except all table %s) union all "
		 "(table %s except all table %s)) d", src, dst, dst, src);
	cr_assert_eq(h_pg_num(pg, cmd), 0);
	/* the connection goes on */
	cr_assert_eq(h_num(c, "select 41 + 1"), 42);
	snprintf(cmd, sizeof(cmd), "drop table %s; drop table %s", src, dst);
	pg_do(pg, cmd);
	free(d1);
	free(d2);
	free(viab);
	pgb_finish(c);
	PQfinish(pg);
}

Test(copy, text_round_trip_is_byte_identical_to_psql)
{
	round_trip("text");
}

Test(copy, csv_round_trip_is_byte_identical_to_psql)
{
	round_trip("csv");
}

Test(copy, bad_row_fails_the_copy_and_the_connection_goes_on)
{
	pgb_conn *c = h_connect(&br);
	static const char data[] = "1\tone\n2\ttwo\nthree\t3\n4\tfour\n";
	pgb_result *r;

	pgb_clear(h_ok(c, "create temp table bad (k int, v text)"));
	r = copy_in(c, "copy bad from stdin", data, sizeof(data) - 1, NULL);
	cr_assert_not(pgb_result_ok(r));
	cr_assert_eq(pgb_result_status(r), PGB_FATAL_ERROR);
	cr_assert_str_eq(pgb_sqlstate(r), "22P02", "%s", pgb_result_error(r));
	cr_assert_not_null(pgb_result_error_field(r, PGB_DIAG_CONTEXT));
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select count(*) from bad"), 0);
	/* a bad row in csv, and an error in COPY OUT's query half-way */
	r = copy_in(c, "copy bad from stdin with (format csv)", "1,a\n2,b,c\n", 10, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), "22P04", "%s", pgb_result_error(r));
	pgb_clear(r);
	r = pgb_exec(c, "copy (select 1 / (3 - g) from generate_series(1, 5) g) to stdout");
	cr_assert_eq(pgb_result_status(r), PGB_COPY_OUT, "%s", pgb_result_error(r));
	pgb_clear(r);
	char *row;
	int rows = 0, k;
	while ((k = pgb_get_copy_data(c, &row, 0)) >= 0) {
		rows++;
		pgb_freemem(row);
	}
	cr_assert_eq(k, -1);
	cr_assert_leq(rows, 2);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), "22012", "%s", pgb_result_error(r));
	pgb_clear(r);
	/* a COPY of a table that is not there fails at once: no COPY state */
	r = pgb_exec(c, "copy no_such_table from stdin");
	cr_assert_str_eq(pgb_sqlstate(r), "42P01");
	pgb_clear(r);
	cr_assert_eq(pgb_put_copy_data(c, "x", 1), -1);
	cr_assert(strstr(pgb_error_message(c), "no COPY FROM STDIN in progress"));
	cr_assert_eq(h_num(c, "select 7"), 7);
	pgb_finish(c);
}

Test(copy, end_with_errmsg_applies_nothing)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r;

	pgb_clear(h_ok(c, "create temp table ab (k int)"));
	r = copy_in(c, "copy ab from stdin", "1\n2\n3\n", 6, "the agent changed its mind");
	cr_assert_str_eq(pgb_sqlstate(r), "57014", "%s", pgb_result_error(r));
	cr_assert(strstr(pgb_result_error(r), "the agent changed its mind"), "%s",
		  pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select count(*) from ab"), 0);
	pgb_finish(c);
}

Test(copy, misuse_is_refused_clearly)
{
	pgb_conn *c = h_connect(&br);
	char *row = (char *)1;
	pgb_result *r;

	cr_assert_eq(pgb_get_copy_data(c, &row, 0), -2);
	cr_assert_null(row);
	cr_assert(strstr(pgb_error_message(c), "no COPY TO STDOUT in progress"));
	cr_assert_eq(pgb_put_copy_end(c, NULL), -1);
	cr_assert_eq(pgb_put_copy_data(NULL, "x", 1), -1);
	cr_assert_eq(pgb_get_copy_data(NULL, &row, 0), -2);
	pgb_clear(h_ok(c, "create temp table mu (k int)"));
	r = pgb_exec(c, "copy mu from stdin");
	cr_assert_eq(pgb_result_status(r), PGB_COPY_IN);
	pgb_clear(r);
	/* another statement, or a result, before the end: refused at once */
	r = pgb_exec(c, "select 1");
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BAD_REQUEST);
	pgb_clear(r);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BAD_REQUEST);
	pgb_clear(r);
	cr_assert_eq(pgb_put_copy_data(c, "5\n", 2), 1);
	cr_assert_eq(pgb_put_copy_end(c, NULL), 1);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_cmd_status(r), "COPY 1", "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_null(pgb_get_result(c, NULL));
	/* pgb_get_result during COPY OUT drops the rows and ends it */
	r = pgb_exec(c, "copy (select generate_series(1, 100000)) to stdout");
	cr_assert_eq(pgb_result_status(r), PGB_COPY_OUT);
	pgb_clear(r);
	cr_assert_eq(pgb_get_copy_data(c, &row, 0), 2);
	pgb_freemem(row);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_cmd_status(r), "COPY 100000", "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select count(*) from mu"), 1);
	/* pgb_reset in the middle of a COPY IN aborts it */
	r = pgb_exec(c, "copy mu from stdin");
	pgb_clear(r);
	cr_assert_eq(pgb_put_copy_data(c, "6\n", 2), 1);
	cr_assert_eq(pgb_reset(c), 0, "%s", pgb_error_message(c));
	cr_assert_eq(h_num(c, "select count(*) from pg_class where relname = 'mu'"), 0);
	pgb_finish(c);
}

Test(copy, inside_a_transaction)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r;
	size_t n;
	char *out;

	pgb_clear(h_ok(c, "create table cp_txn (k int)"));
	/* COPY as the transaction's first statement, then as a later one */
	pgb_clear(h_ok(c, "begin"));
	r = copy_in(c, "copy cp_txn from stdin", "9\n", 2, NULL);
	cr_assert_str_eq(pgb_cmd_status(r), "COPY 1", "%s", pgb_result_error(r));
	pgb_clear(r);
	pgb_clear(h_ok(c, "rollback"));
	pgb_clear(h_ok(c, "begin"));
	out = copy_out(c, "copy (select 5) to stdout", &n);
	cr_assert_eq(n, 2);
	free(out);
	pgb_clear(h_ok(c, "insert into cp_txn values (0)"));
	r = copy_in(c, "copy cp_txn from stdin", "1\n2\n", 4, NULL);
	cr_assert_str_eq(pgb_cmd_status(r), "COPY 2", "%s", pgb_result_error(r));
	pgb_clear(r);
	out = copy_out(c, "copy (select k from cp_txn order by k) to stdout", &n);
	cr_assert_eq(n, 6);
	cr_assert(memcmp(out, "0\n1\n2\n", 6) == 0);
	free(out);
	pgb_clear(h_ok(c, "rollback"));
	cr_assert_eq(h_num(c, "select count(*) from cp_txn"), 0);
	/* an error in a COPY inside a transaction aborts the transaction */
	pgb_clear(h_ok(c, "begin"));
	r = copy_in(c, "copy cp_txn from stdin", "1\nx\n", 4, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), "22P02");
	pgb_clear(r);
	r = pgb_exec(c, "select 1");
	cr_assert_str_eq(pgb_sqlstate(r), "25P02");
	pgb_clear(r);
	pgb_clear(h_ok(c, "rollback"));
	pgb_clear(h_ok(c, "begin"));
	r = copy_in(c, "copy cp_txn from stdin", "3\n", 2, NULL);
	pgb_clear(r);
	pgb_clear(h_ok(c, "commit"));
	cr_assert_eq(h_num(c, "select sum(k) from cp_txn"), 3);
	pgb_clear(h_ok(c, "drop table cp_txn"));
	pgb_finish(c);
}

Test(copy, async_read_with_the_pollable_fd)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r = pgb_exec(c, "copy (select g from generate_series(1, 50000) g) to stdout");
	long long sum = 0, rows = 0;
	int k, zeros = 0;
	char *row;

	cr_assert_eq(pgb_result_status(r), PGB_COPY_OUT);
	pgb_clear(r);
	for (;;) {
		k = pgb_get_copy_data(c, &row, 1);
		if (k == 0) {
			struct pollfd p = { .fd = pgb_socket(c), .events = POLLIN };

			zeros++;
			cr_assert_eq(poll(&p, 1, 10000), 1, "pgb_socket never became readable");
			continue;
		}
		if (k < 0)
			break;
		sum += atoll(row);
		rows++;
		pgb_freemem(row);
	}
	cr_assert_eq(k, -1, "%s", pgb_error_message(c));
	cr_assert_eq(rows, 50000);
	cr_assert_eq(sum, 50000LL * 50001 / 2);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_cmd_status(r), "COPY 50000");
	pgb_clear(r);
	cr_log_info("async COPY OUT: %d times no row yet", zeros);
	pgb_finish(c);
}

/* --- agents killed mid-COPY --- */

struct victim {
	const char *dir;
	int ready;       /* write end: one byte once the COPY runs */
	int out;         /* COPY OUT, else IN */
};

static int victim(void *arg)
{
	struct victim *v = arg;
	pgb_conn *c = pgb_connect(v->dir);
	pgb_result *r;
	char line[128];

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	if (v->out) {
		char *row;

		r = pgb_exec(c, "copy (select g, repeat('x', 100) from generate_series(1, 100000000) g) "
				"to stdout");
		if (pgb_result_status(r) != PGB_COPY_OUT)
			return 3;
		for (int i = 0; i < 1000; i++) {
			if (pgb_get_copy_data(c, &row, 0) <= 0)
				return 4;
			pgb_freemem(row);
		}
		(void)!write(v->ready, "x", 1);
		pause();	/* stops reading: the broker's queue fills */
		return 0;
	}
	r = pgb_exec(c, "copy cp_victim from stdin");
	if (pgb_result_status(r) != PGB_COPY_IN)
		return 3;
	/* more than one frame, so that some reached PostgreSQL */
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(line, sizeof(line), "%d\n", i);

		if (pgb_put_copy_data(c, line, n) != 1)
			return 4;
	}
	(void)!write(v->ready, "x", 1);
	for (int i = 0;; i++) {	/* sends until killed */
		int n = snprintf(line, sizeof(line), "%d\n", i);

		if (pgb_put_copy_data(c, line, n) != 1)
			return 5;
	}
}

static int no_copy_running(void *arg)
{
	PGconn *pg = arg;

	return h_pg_num(pg, "select count(*) from pg_stat_activity where query ilike 'copy %' "
			    "and state <> 'idle' and pid <> pg_backend_pid()") == 0;
}

static void kill_mid_copy(int out)
{
	int p[2];
	struct victim v = { .dir = br.dir, .out = out };
	pgb_conn *c = h_connect(&br);
	long long pid = h_num(c, "select pg_backend_pid()");
	struct pollfd pf;
	PGconn *pg = h_pg();
	char x;
	pid_t child;

	if (!out)
		pgb_clear(h_ok(c, "create table cp_victim (k int)"));
	cr_assert_eq(pipe(p), 0);
	v.ready = p[1];
	child = h_fork(victim, &v);
	close(p[1]);
	pf = (struct pollfd){ .fd = p[0], .events = POLLIN };
	cr_assert_eq(poll(&pf, 1, 60000), 1, "the victim's COPY never started");
	cr_assert_eq(read(p[0], &x, 1), 1, "the victim failed (exit %d)", h_wait(child, 1000));
	close(p[0]);
	kill(child, SIGKILL);
	cr_assert_eq(h_wait(child, 10000), 128 + SIGKILL);
	/* The one backend comes back clean: the same server process. */
	cr_assert_eq(h_num(c, "select pg_backend_pid()"), pid);
	cr_assert_eq(h_num(c, "select count(*) from pg_stat_activity where state = 'idle in transaction'"
			      " and application_name like 'pgb-test%'"), 0);
	cr_assert(h_until(no_copy_running, pg, 10000));
	if (!out) {
		cr_assert_eq(h_num(c, "select count(*) from cp_victim"), 0);
		pgb_clear(h_ok(c, "drop table cp_victim"));
	}
	PQfinish(pg);
	pgb_finish(c);
}

Test(copy, agent_killed_mid_copy_in_backend_cleaned_and_reused)
{
	kill_mid_copy(0);
}

Test(copy, agent_killed_mid_copy_out_backend_cleaned_and_reused)
{
	kill_mid_copy(1);
}

/* --- a large COPY both ways, with the broker's memory bounded --- */

static long long copy_mb(void)
{
	const char *s = getenv("PGB_COPY_MB");

	return s && atoll(s) > 0 ? atoll(s) : 128;
}

/* Its growth above the baseline must not depend on the size: a few chunks
 * per direction, libpq's buffers, the allocator's slack. */
#define RSS_SLACK_KB (48 * 1024)

Test(copy, large_copy_both_ways_with_bounded_broker_memory, .timeout = 1800)
{
	pgb_conn *c = h_connect(&br);
	long long mb = copy_mb(), rows = mb * 1024 * 1024 / 100, sent = 0, got = 0;
	long long base, peak_in = 0, peak_out = 0, t0, ms_in, ms_out, rss;
	char buf[65500], sql[256], *row;
	pgb_result *r;
	int k;

	/* 100-byte rows: 99 characters and a newline */
	for (int i = 0; i < 655; i++) {
		memset(buf + i * 100, 'a' + i % 26, 99);
		buf[i * 100 + 99] = '\n';
	}
	pgb_clear(h_ok(c, "drop table if exists cp_big; create unlogged table cp_big (t text)"));
	/* warm up: the first COPY allocates what every later one reuses */
	r = copy_in(c, "copy cp_big from stdin", buf, sizeof(buf), NULL);
	pgb_clear(r);
	pgb_clear(h_ok(c, "truncate cp_big"));
	base = h_rss_kb(br.pid);
	cr_assert_gt(base, 0);

	t0 = h_now_ms();
	r = pgb_exec(c, "copy cp_big from stdin");
	cr_assert_eq(pgb_result_status(r), PGB_COPY_IN, "%s", pgb_result_error(r));
	pgb_clear(r);
	while (sent < rows) {
		long long n = rows - sent < 655 ? rows - sent : 655;

		cr_assert_eq(pgb_put_copy_data(c, buf, (int)n * 100), 1, "%s", pgb_error_message(c));
		sent += n;
		if (sent % (655 * 160) == 0 && (rss = h_rss_kb(br.pid)) > peak_in)
			peak_in = rss;
	}
	cr_assert_eq(pgb_put_copy_end(c, NULL), 1);
	r = pgb_get_result(c, NULL);
	ms_in = h_now_ms() - t0;
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_eq(pgb_cmd_tuples(r), rows);
	pgb_clear(r);
	if ((rss = h_rss_kb(br.pid)) > peak_in)
		peak_in = rss;

	t0 = h_now_ms();
	snprintf(sql, sizeof(sql), "copy cp_big to stdout");
	r = pgb_exec(c, sql);
	cr_assert_eq(pgb_result_status(r), PGB_COPY_OUT, "%s", pgb_result_error(r));
	pgb_clear(r);
	while ((k = pgb_get_copy_data(c, &row, 0)) > 0) {
		cr_assert_eq(k, 100);
		got++;
		if (got == rows / 2) {
			/* A reader that stops for a moment: PostgreSQL must wait
			 * for it, not the broker's memory fill up. */
			poll(NULL, 0, 500);
		}
		if (got % (655 * 160) == 0 && (rss = h_rss_kb(br.pid)) > peak_out)
			peak_out = rss;
		pgb_freemem(row);
	}
	cr_assert_eq(k, -1, "%s", pgb_error_message(c));
	r = pgb_get_result(c, NULL);
	ms_out = h_now_ms() - t0;
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(got, rows);
	pgb_clear(h_ok(c, "drop table cp_big"));
	cr_log_info("COPY of %lld MB: in %lld ms (%.0f MB/s), out %lld ms (%.0f MB/s); broker VmRSS "
		    "%lld kB before, peak %lld kB in, %lld kB out", mb, ms_in,
		    mb * 1000.0 / (double)(ms_in ? ms_in : 1), ms_out,
		    mb * 1000.0 / (double)(ms_out ? ms_out : 1), base, peak_in, peak_out);
	fprintf(stderr, "copy: %lld MB in %lld ms, out %lld ms; broker VmRSS base %lld kB, peak in %lld kB, "
		"peak out %lld kB\n", mb, ms_in, ms_out, base, peak_in, peak_out);
	cr_assert_lt(peak_in - base, RSS_SLACK_KB, "COPY IN grew the broker by %lld kB",
		     peak_in - base);
	cr_assert_lt(peak_out - base, RSS_SLACK_KB, "COPY OUT grew the broker by %lld kB",
		     peak_out - base);
	pgb_finish(c);
}
