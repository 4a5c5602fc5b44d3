/* Operating the broker: reload (SIGHUP), draining shutdown (SIGTERM), the
 * fast one (SIGINT), restart after a crash, config file errors, logs,
 * --version, and readiness for a service manager. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <grp.h>
#include <unistd.h>

#include "harness.h"
#include "version.h"

TestSuite(ops, .timeout = 180);

static struct h_broker br;
static char conf[128];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

/* The whole file into buf ("" when it cannot be read). */
static const char *read_file(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	size_t got = 0;
	ssize_t r;

	buf[0] = '\0';
	if (fd < 0)
		return buf;
	while (got + 1 < n && (r = read(fd, buf + got, n - 1 - got)) > 0)
		got += (size_t)r;
	buf[got] = '\0';
	close(fd);
	return buf;
}

static char logbuf[1 << 20];

static int log_has(void *needle)
{
	return strstr(read_file(br.log, logbuf, sizeof(logbuf)), needle) != NULL;
}

/* Start a broker on a fresh directory that reads `text` as its config file. */
static void start_with_conf(const char *text, const char *const *extra)
{
	const char *args[16] = { "--config", conf };
	int n = 2;

	memset(&br, 0, sizeof(br));
	h_mkdtemp(br.dir, sizeof(br.dir), "pgb-ops");
	snprintf(conf, sizeof(conf), "%s/pgbroker.conf", br.dir);
	write_file(conf, text);
	for (int i = 0; extra && extra[i] && n < 15; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	h_broker_start(&br, args);
}

/* ---- poolstat --json, one field ----------------------------------------- */

static char statout[256 * 1024];

static int poolstat_json(void)
{
	char bin[512];
	const char *argv[] = { h_bin("tools/poolstat", bin, sizeof(bin)), "--json", br.dir, NULL };

	return h_run(argv, statout, sizeof(statout));
}

/* The number after "key": in the object that starts with "obj":{. */
static long long json_num(const char *obj, const char *key)
{
	char pat[64];
	const char *o, *k;

	snprintf(pat, sizeof(pat), "\"%s\":{", obj);
	if (!(o = strstr(statout, pat)))
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	if (!(k = strstr(o, pat)))
		return -1;
	return atoll(k + strlen(pat));
}

struct want { const char *obj, *key; long long val; };

static int stat_is(void *arg)
{
	const struct want *w = arg;

	poolstat_json();
	return json_num(w->obj, w->key) == w->val;
}

/* ---- agents that run statements until told to stop ---------------------- */

#define NLOAD 6

struct load {
	int stop;
	int ok[NLOAD], fail[NLOAD];
	int shutdown_err[NLOAD];  /* their last answer was the shutdown error */
	char why[NLOAD][160];
};

static struct load *load;
static pid_t loaders[NLOAD];

static int load_total(void)
{
	int n = 0;

	for (int i = 0; i < NLOAD; i++)
		n += __atomic_load_n(&load->ok[i], __ATOMIC_RELAXED);
	return n;
}

static int load_reached(void *arg)
{
	return load_total() >= *(int *)arg;
}

static void load_map(void)
{
	load = mmap(NULL, sizeof(*load), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(load, MAP_FAILED);
	memset(load, 0, sizeof(*load));
}

/* Insert rows (agent, n) until told to stop, or until the broker says it is
 * shutting down (PB005) or gone (PB003): every ok is counted. */
static int loader(void *arg)
{
	int me = (int)(long)arg;
	pgb_conn *c = pgb_connect(br.dir);
	char n[16], a[16];

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	snprintf(a, sizeof(a), "%d", me);
	for (int i = 0; !__atomic_load_n(&load->stop, __ATOMIC_RELAXED); i++) {
		const char *v[2] = { a, n };
		pgb_result *r;

		snprintf(n, sizeof(n), "%d", i);
		r = pgb_exec_params(c, "insert into ops_rows(agent, n) values ($1, $2)", 2, v);
		if (pgb_result_ok(r)) {
			__atomic_add_fetch(&load->ok[me], 1, __ATOMIC_RELAXED);
		} else if (!strcmp(pgb_sqlstate(r), "PB005") || !strcmp(pgb_sqlstate(r), "PB003")) {
			load->shutdown_err[me] = 1;
			pgb_clear(r);
			break;
		} else {
			load->fail[me]++;
			snprintf(load->why[me], sizeof(load->why[me]), "%s %s", pgb_sqlstate(r),
				 pgb_result_error(r));
		}
		pgb_clear(r);
	}
	pgb_finish(c);
	return 0;
}

static void loaders_start(void)
{
	PGconn *pg = h_pg();
	PGresult *x = PQexec(pg, "drop table if exists ops_rows; "
			     "create table ops_rows(agent int, n int, primary key (agent, n))");

	cr_assert_eq(PQresultStatus(x), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(x);
	PQfinish(pg);
	load_map();
	for (int i = 0; i < NLOAD; i++)
		loaders[i] = h_fork(loader, (void *)(long)i);
}

static void loaders_wait(void)
{
	__atomic_store_n(&load->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NLOAD; i++)
		cr_assert_eq(h_wait(loaders[i], 20000), 0, "loader %d did not end cleanly", i);
}

static int backends_at_most(void *arg)
{
	PGconn *pg = h_pg();
	long long n = h_backends(pg, &br, NULL);

	PQfinish(pg);
	return n >= 0 && n <= *(long long *)arg;
}

static int backends_at_least(void *arg)
{
	PGconn *pg = h_pg();
	long long n = h_backends(pg, &br, NULL);

	PQfinish(pg);
	return n >= *(long long *)arg;
}

Test(ops, sighup_resizes_the_pool_under_load_without_failures)
{
	int target;
	long long four = 4, one = 1;
	struct want max4 = { "pool", "max", 4 }, max1 = { "pool", "max", 1 };

	start_with_conf("# two backends\npool_size = 2\nmin_pool_size = 1\nmax_pool_size = 2\n",
			NULL);
	loaders_start();
	target = 200;
	cr_assert(h_until(load_reached, &target, 20000), "load did not start");

	write_file(conf, "pool_size = 4\nmin_pool_size = 1\nmax_pool_size = 4\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &max4, 10000), "max_pool_size 4 never showed:\n%s", statout);
	cr_assert(h_until(backends_at_least, &four, 10000), "the pool did not grow to 4");
	target = load_total() + 200;
	cr_assert(h_until(load_reached, &target, 20000));

	write_file(conf, "pool_size = 1\nmin_pool_size = 1\nmax_pool_size = 1\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &max1, 10000), "max_pool_size 1 never showed:\n%s", statout);
	cr_assert(h_until(backends_at_most, &one, 10000), "the pool did not shrink to 1");
	target = load_total() + 200;
	cr_assert(h_until(load_reached, &target, 20000));

	loaders_wait();
	for (int i = 0; i < NLOAD; i++)
		cr_expect_eq(load->fail[i], 0, "agent %d: %d failures, e.g. %s", i, load->fail[i],
			     load->why[i]);
	cr_assert(log_has("reloaded"), "no reload in the log");
	poolstat_json();
	cr_expect_eq(json_num("broker", "reloads"), 2);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(ops, sighup_with_a_bad_file_keeps_the_configuration)
{
	struct want failed1 = { "broker", "reload_failures", 1 };
	struct want failed2 = { "broker", "reload_failures", 2 };
	struct want reloaded = { "broker", "reloads", 1 };
	char msg[256];
	pgb_conn *c;

	start_with_conf("pool_size = 3\nmin_pool_size = 1\nmax_pool_size = 3\n", NULL);
	c = h_connect(&br);
	write_file(conf, "pool_size = 3\nmin_pool_size = 1\nmax_pool_sise = 9\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &failed1, 10000), "no failed reload counted:\n%s", statout);
	cr_expect_eq(json_num("pool", "max"), 3);
	snprintf(msg, sizeof(msg), "%s:3: unknown key \"max_pool_sise\"", conf);
	cr_assert(log_has(msg), "the log does not say \"%s\":\n%s", msg, logbuf);

	write_file(conf, "pool_size = 3\nmin_pool_size = 1\nmax_pool_size = lots\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &failed2, 10000));
	cr_assert(log_has("integer 1..10000"), "no allowed range in the log:\n%s", logbuf);

	/* What cannot change live is reported and kept; the rest applies. */
	write_file(conf, "pool_size = 3\nmin_pool_size = 1\nmax_pool_size = 5\n"
		   "max_agents = 77\nloop = io_uring\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &reloaded, 10000));
	cr_expect_eq(json_num("pool", "max"), 5);
	cr_assert(log_has("max_agents cannot change while running: keeping 4096"), "%s", logbuf);
	/* (PGBROKER_LOOP, when the suite runs with it, wins over the file.) */
	if (!getenv("PGBROKER_LOOP"))
		cr_assert(log_has("loop cannot change while running: keeping auto"), "%s", logbuf);
	cr_expect_eq(h_num(c, "select 41 + 1"), 42);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int stat_at_least(void *arg)
{
	const struct want *w = arg;

	poolstat_json();
	return json_num(w->obj, w->key) >= w->val;
}

/* A new max_connection_lifetime_ms counts for the backends already open,
 * not only for those opened after the reload. */
Test(ops, sighup_applies_a_new_connection_lifetime_to_open_backends)
{
	struct want retired = { "closed", "lifetime", 1 };
	struct want reloaded = { "broker", "reloads", 1 };
	long long before;
	pgb_conn *c;

	start_with_conf("pool_size = 1\nmin_pool_size = 1\nmax_pool_size = 1\n"
			"max_connection_lifetime_ms = 0\n", NULL);
	c = h_connect(&br);
	before = h_num(c, "select pg_backend_pid()");
	write_file(conf, "pool_size = 1\nmin_pool_size = 1\nmax_pool_size = 1\n"
		   "max_connection_lifetime_ms = 1000\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &reloaded, 10000), "no reload:\n%s", statout);
	cr_assert(h_until(stat_at_least, &retired, 10000),
		  "the open backend was never retired:\n%s", statout);
	cr_expect_neq(h_num(c, "select pg_backend_pid()"), before);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A reload that raises max_pool_size past the server's room says so, as
 * the start does (the test server allows 300 connections). */
Test(ops, sighup_raising_max_pool_size_past_the_server_warns)
{
	struct want counted = { "server", "max_connections", 300 };
	struct want reloaded = { "broker", "reloads", 1 };

	/* 200 fits; a reload may raise it up to twice that */
	start_with_conf("pool_size = 2\nmin_pool_size = 1\nmax_pool_size = 200\n", NULL);
	cr_assert(h_until(stat_is, &counted, 10000), "the server's room was never counted:\n%s",
		  statout);
	cr_assert(!log_has("cannot fit"), "%s", logbuf);
	write_file(conf, "pool_size = 2\nmin_pool_size = 1\nmax_pool_size = 400\n");
	kill(br.pid, SIGHUP);
	cr_assert(h_until(stat_is, &reloaded, 10000), "no reload:\n%s", statout);
	cr_assert(h_until(log_has, "max_pool_size=400 cannot fit", 5000), "no warning:\n%s", logbuf);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int file_has(void *arg)
{
	const char *const *pn = arg;

	return strstr(read_file(pn[0], logbuf, sizeof(logbuf)), pn[1]) != NULL;
}

/* --ready-fd 2: "ready" goes to stderr, which must stay the log (a closed
 * fd 2 would be reused, and log lines written into whatever got it). */
Test(ops, ready_fd_on_stderr_keeps_the_log)
{
	char bin[512], dir[64], log[96], dsn[1024];
	const char *ready[] = { log, "ready\n" }, *stopped[] = { log, "INFO: stopped" };
	pgb_conn *c;
	pid_t pid;

	h_mkdtemp(dir, sizeof(dir), "pgb-ops");
	snprintf(log, sizeof(log), "%s/broker.log", dir);
	snprintf(dsn, sizeof(dsn), "%s application_name=%s", h_dsn(), strrchr(dir, '/') + 1);
	h_bin("broker/pgbroker", bin, sizeof(bin));
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, 2);
		close(fd);
		execl(bin, bin, "--dir", dir, "--dsn", dsn, "--min-pool-size", "1",
		      "--ready-fd", "2", (char *)NULL);
		_exit(127);
	}
	br.pid = pid;
	cr_assert(h_until(file_has, ready, 15000), "no ready line:\n%s", logbuf);
	snprintf(br.dir, sizeof(br.dir), "%s", dir);
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 5"), 5);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
	cr_assert(file_has(stopped), "the log lost its last lines:\n%s", logbuf);
}

/* ---- SIGTERM drains ------------------------------------------------------ */

struct txn_agent {
	int in_txn, done;
	char last[32];         /* sqlstate of the statement after COMMIT */
	char err[160];
};

static struct txn_agent *tx;

/* Opens a transaction, waits for the test's byte on the pipe go[] (at most
 * 20 s), then finishes it. */
static int txn_agent(void *arg)
{
	int *go = arg;
	struct pollfd p = { .fd = go[0], .events = POLLIN };
	pgb_conn *c;
	pgb_result *r;
	char x;

	close(go[1]);
	c = pgb_connect(br.dir);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	pgb_clear(pgb_exec(c, "begin"));
	r = pgb_exec(c, "insert into ops_rows(agent, n) values (100, 1)");
	if (!pgb_result_ok(r))
		return 3;
	pgb_clear(r);
	__atomic_store_n(&tx->in_txn, 1, __ATOMIC_RELEASE);
	if (poll(&p, 1, 20000) != 1 || read(go[0], &x, 1) != 1)
		return 4;
	r = pgb_exec(c, "insert into ops_rows(agent, n) values (100, 2)");
	if (!pgb_result_ok(r)) {
		snprintf(tx->err, sizeof(tx->err), "insert: %s %s", pgb_sqlstate(r), pgb_result_error(r));
		return 5;
	}
	pgb_clear(r);
	r = pgb_exec(c, "commit");
	if (!pgb_result_ok(r)) {
		snprintf(tx->err, sizeof(tx->err), "commit: %s %s", pgb_sqlstate(r), pgb_result_error(r));
		return 6;
	}
	pgb_clear(r);
	r = pgb_exec(c, "select 1");
	snprintf(tx->last, sizeof(tx->last), "%s", pgb_sqlstate(r));
	pgb_clear(r);
	pgb_finish(c);
	return 0;
}

static int sleeper(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;
	int ok;
	(void)arg;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	r = pgb_exec(c, "select pg_sleep(1.5), 'slept'");
	ok = pgb_result_ok(r) && !strcmp(pgb_getvalue(r, 0, 1), "slept");
	pgb_clear(r);
	pgb_finish(c);
	return ok ? 0 : 7;
}

static int flag_set(void *arg)
{
	return __atomic_load_n((int *)arg, __ATOMIC_ACQUIRE) != 0;
}

static int sleeping_backend(void *arg)
{
	PGconn *pg = h_pg();
	long long n = h_backends(pg, &br, arg);

	PQfinish(pg);
	return n >= 1;
}

/* Files left in the run directory besides the test's broker.log. */
static int leftovers(const char *dir, char *names, size_t n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int count = 0;

	names[0] = '\0';
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    !strcmp(e->d_name, "broker.log") || !strcmp(e->d_name, "pgbroker.conf"))
			continue;
		count++;
		strncat(names, e->d_name, n - strlen(names) - 2);
		strcat(names, " ");
	}
	closedir(d);
	return count;
}

Test(ops, sigterm_finishes_work_in_flight_refuses_new_and_cleans_up)
{
	PGconn *pg;
	pid_t t, s;
	int target = 100, st, go[2];
	char left[512];

	start_with_conf("pool_size = 4\nmin_pool_size = 1\nmax_pool_size = 4\n", NULL);
	loaders_start();
	tx = mmap(NULL, sizeof(*tx), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(tx, MAP_FAILED);
	memset(tx, 0, sizeof(*tx));
	cr_assert_eq(pipe(go), 0);
	t = h_fork(txn_agent, go);
	close(go[0]);
	cr_assert(h_until(flag_set, &tx->in_txn, 10000), "transaction agent did not start");
	s = h_fork(sleeper, NULL);
	cr_assert(h_until(sleeping_backend, "query like '%pg_sleep(1.5)%' and state = 'active'",
			  10000), "the sleeper's statement never ran");
	cr_assert(h_until(load_reached, &target, 20000));

	kill(br.pid, SIGTERM);
	cr_assert(h_until(log_has, "SIGTERM", 5000));
	cr_assert_eq(write(go[1], "x", 1), 1);
	close(go[1]);
	st = h_wait(br.pid, 20000);
	br.pid = 0;
	cr_assert_eq(st, 0, "broker exit status %d", st);

	cr_assert_eq(h_wait(t, 10000), 0, "transaction agent: %s", tx->err);
	cr_expect(!strcmp(tx->last, "PB005") || !strcmp(tx->last, "PB003"),
		  "after COMMIT: %s", tx->last);
	cr_assert_eq(h_wait(s, 10000), 0, "the statement in flight did not finish");
	loaders_wait();

	/* Every acknowledged row is there, and nothing else. */
	pg = h_pg();
	for (int i = 0; i < NLOAD; i++) {
		char sql[128];

		snprintf(sql, sizeof(sql), "select count(*) from ops_rows where agent = %d", i);
		cr_expect_eq(load->fail[i], 0, "agent %d: %s", i, load->why[i]);
		cr_expect(load->shutdown_err[i], "agent %d never heard of the shutdown", i);
		cr_expect_eq(h_pg_num(pg, sql), load->ok[i], "agent %d: rows vs acks", i);
	}
	cr_expect_eq(h_pg_num(pg, "select count(*) from ops_rows where agent = 100"), 2,
		     "the open transaction did not commit");
	PQfinish(pg);
	cr_expect_eq(leftovers(br.dir, left, sizeof(left)), 0, "left behind: %s", left);
}

/* ---- SIGINT: the fast way ----------------------------------------------- */

struct fast {
	char state[8];
	long long ms;
};

static struct fast *fa;

static int long_runner(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;
	long long t0;
	(void)arg;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	pgb_clear(pgb_exec(c, "begin"));
	r = pgb_exec(c, "insert into ops_rows(agent, n) values (200, 1)");
	if (!pgb_result_ok(r))
		return 3;
	pgb_clear(r);
	t0 = h_now_ms();
	r = pgb_exec(c, "select pg_sleep(60)");
	fa->ms = h_now_ms() - t0;
	snprintf(fa->state, sizeof(fa->state), "%s", pgb_sqlstate(r));
	pgb_clear(r);
	pgb_finish(c);
	return 0;
}

Test(ops, sigint_cancels_rolls_back_and_exits)
{
	PGconn *pg = h_pg();
	PGresult *x = PQexec(pg, "drop table if exists ops_rows; "
			     "create table ops_rows(agent int, n int, primary key (agent, n))");
	pgb_conn *idle;
	pid_t p;
	int st;
	char left[512];

	PQclear(x);
	start_with_conf("pool_size = 3\nmin_pool_size = 1\nmax_pool_size = 3\n", NULL);
	fa = mmap(NULL, sizeof(*fa), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(fa, MAP_FAILED);
	memset(fa, 0, sizeof(*fa));
	/* One agent idle inside a transaction, one running a long statement. */
	idle = h_connect(&br);
	pgb_clear(h_ok(idle, "begin"));
	pgb_clear(h_ok(idle, "insert into ops_rows(agent, n) values (201, 1)"));
	p = h_fork(long_runner, NULL);
	cr_assert(h_until(sleeping_backend, "query = 'select pg_sleep(60)' and state = 'active'",
			  10000));

	kill(br.pid, SIGINT);
	st = h_wait(br.pid, 10000);
	br.pid = 0;
	cr_assert_eq(st, 0, "broker exit status %d", st);
	cr_assert_eq(h_wait(p, 10000), 0);
	cr_expect_str_eq(fa->state, "57014", "the running statement was not cancelled");
	cr_expect_lt(fa->ms, 10000);
	cr_expect_eq(h_pg_num(pg, "select count(*) from ops_rows where agent in (200, 201)"), 0,
		     "an open transaction was not rolled back");
	cr_expect_eq(h_pg_num(pg, "select count(*) from pg_stat_activity where "
			      "query = 'select pg_sleep(60)' and state = 'active'"), 0);
	pgb_finish(idle);
	PQfinish(pg);
	cr_expect_eq(leftovers(br.dir, left, sizeof(left)), 0, "left behind: %s", left);
}

Test(ops, a_killed_broker_is_replaced_on_the_same_directory)
{
	char path[160];
	pgb_conn *old, *c;
	pgb_result *r;

	start_with_conf("min_pool_size = 1\n", NULL);
	old = h_connect(&br);
	cr_assert_eq(h_num(old, "select 1"), 1);
	h_broker_kill(&br);
	snprintf(path, sizeof(path), "%s/pgbroker.pid", br.dir);
	cr_assert_eq(access(path, F_OK), 0, "a crash leaves its pid file");
	snprintf(path, sizeof(path), "%s/pgbroker.sock", br.dir);
	cr_assert_eq(access(path, F_OK), 0, "a crash leaves its socket");

	r = pgb_exec(old, "select 1");
	cr_expect_str_eq(pgb_sqlstate(r), "PB003");
	pgb_clear(r);
	pgb_finish(old);

	{
		const char *args[] = { "--config", conf, NULL };

		h_broker_start(&br, args);   /* same directory: br.dir is set */
	}
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 2"), 2);
	pgb_finish(c);
	cr_assert(log_has("did not shut down cleanly"), "%s", logbuf);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(ops, a_config_file_with_a_typo_is_refused_with_its_line)
{
	char bin[512], out[4096], path[] = "/tmp/pgb-ops-conf.XXXXXX", want[128];
	int fd = mkstemp(path), st;
	const char *argv[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--config", path,
			       "--check-config", NULL };

	cr_assert_geq(fd, 0);
	close(fd);
	write_file(path, "# pgbroker\npool_size = 10\n\nmax_pool_szie = 20\n");
	st = h_run(argv, out, sizeof(out));
	cr_assert_eq(st, 2, "exit %d: %s", st, out);
	snprintf(want, sizeof(want), "%s:4: unknown key \"max_pool_szie\"", path);
	cr_assert(strstr(out, want), "%s", out);

	write_file(path, "pool_size = 10\nacquire_timeout_ms = -5\n");
	st = h_run(argv, out, sizeof(out));
	cr_assert_eq(st, 2);
	snprintf(want, sizeof(want), "%s:2:", path);
	cr_assert(strstr(out, want) && strstr(out, "allowed: integer 1..604800000"), "%s", out);

	write_file(path, "pool_size = 10\nshutdown_timeout_ms = 100\nsyslog = off\n");
	st = h_run(argv, out, sizeof(out));
	cr_assert_eq(st, 0, "%s", out);
	cr_assert(strstr(out, "shutdown_timeout_ms = 100"), "%s", out);

	/* Valid, but the pool could never use its reserve: a warning. */
	write_file(path, "acquire_timeout_ms = 2000\n");
	st = h_run(argv, out, sizeof(out));
	cr_assert_eq(st, 0, "%s", out);
	cr_assert(strstr(out, "warning: max_pool_size (50) is never reached"), "%s", out);
	unlink(path);
}

Test(ops, version_and_help)
{
	char bin[512], out[65536];
	const char *v[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--version", NULL };
	const char *h[] = { bin, "--help", NULL };
	const char *flags[] = { "--config", "--check-config", "--ready-fd", "--help", "--version",
				"--syslog", "--shutdown-timeout-ms", "--log-level", "--dir", "--dsn",
				"--max-pool-size", "SIGHUP", "SIGTERM", "SIGINT" };

	cr_assert_eq(h_run(v, out, sizeof(out)), 0);
	cr_assert(strncmp(out, "pgbroker " PGB_VERSION "\n", strlen("pgbroker " PGB_VERSION) + 1) == 0,
		  "%s", out);
	cr_assert_eq(h_run(h, out, sizeof(out)), 0);
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		cr_expect(strstr(out, flags[i]), "--help does not mention %s", flags[i]);
}

static int crasher(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	(void)arg;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	pgb_clear(pgb_exec(c, "begin"));
	pgb_clear(pgb_exec(c, "select 'sekrit-4711-in-txn'"));
	_exit(0);   /* no pgb_finish, transaction open */
}

Test(ops, the_log_tells_events_but_never_query_text)
{
	pgb_conn *c;
	pgb_result *r;
	char path[160];

	start_with_conf("min_pool_size = 1\nlog_level = info\n", NULL);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "select 'sekrit-4711-ok'"));
	r = pgb_exec(c, "select sekrit_4711_col from sekrit_4711_table");
	cr_assert(!pgb_result_ok(r));
	pgb_clear(r);
	r = pgb_exec(c, "select pg_sleep(0.01) where 'sekrit-4711-p' = $1");
	pgb_clear(r);
	cr_assert_eq(h_wait(h_fork(crasher, NULL), 10000), 0);
	cr_assert(h_until(log_has, "died", 5000), "agent crash not logged:\n%s", logbuf);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
	read_file(br.log, logbuf, sizeof(logbuf));
	cr_expect(strstr(logbuf, "INFO: backend 0 connected"), "%s", logbuf);
	cr_expect(strstr(logbuf, "closed (shutdown)"), "%s", logbuf);
	cr_expect(strstr(logbuf, "open transaction is rolled back"), "%s", logbuf);
	cr_expect(strstr(logbuf, "SIGTERM"), "%s", logbuf);
	cr_expect(!strstr(logbuf, "sekrit"), "query text in the log:\n%s", logbuf);
	snprintf(path, sizeof(path), "%s/pgbroker.sock", br.dir);
	cr_expect_neq(access(path, F_OK), 0, "socket left behind");
}

#ifdef HAVE_SYSTEMD
/* The next datagram on fd within timeout_ms into buf ("" on timeout). */
static const char *next_note(int fd, char *buf, size_t n, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t r = 0;

	buf[0] = '\0';
	if (poll(&p, 1, timeout_ms) == 1 && (r = recv(fd, buf, n - 1, 0)) > 0)
		buf[r] = '\0';
	return buf;
}

Test(ops, readiness_reload_and_stop_reach_the_service_manager)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char note[512];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/pgb-notify.%d", (int)getpid());
	unlink(sa.sun_path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	start_with_conf("min_pool_size = 1\n", NULL);
	unsetenv("NOTIFY_SOCKET");
	cr_assert(strstr(next_note(fd, note, sizeof(note), 10000), "READY=1"), "got: %s", note);
	kill(br.pid, SIGHUP);
	cr_assert(strstr(next_note(fd, note, sizeof(note), 10000), "RELOADING=1"), "got: %s", note);
	cr_assert(strstr(note, "MONOTONIC_USEC="), "got: %s", note);
	cr_assert(strstr(next_note(fd, note, sizeof(note), 10000), "READY=1"), "got: %s", note);
	kill(br.pid, SIGTERM);
	cr_assert(strstr(next_note(fd, note, sizeof(note), 10000), "STOPPING=1"), "got: %s", note);
	cr_assert_eq(h_wait(br.pid, 15000), 0);
	br.pid = 0;
	close(fd);
	unlink(sa.sun_path);
}
#endif

/* ---- who may register ---------------------------------------------------- */

struct ident { uid_t uid; gid_t gid; gid_t extra; };

/* As another user: 0 registered and ran a statement, 1 refused with a
 * message that names the settings which would let it in. */
static int register_as(void *arg)
{
	const struct ident *id = arg;
	gid_t extra = id->extra;
	pgb_conn *c;
	const char *why;
	int rc;

	if (setgroups(extra ? 1 : 0, &extra) < 0 || setgid(id->gid) < 0 || setuid(id->uid) < 0)
		return 20;
	c = pgb_connect(br.dir);
	why = pgb_error_message(c);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		rc = strstr(why, "not allowed") && strstr(why, "allow_uids") &&
		     strstr(why, "allow_gids") ? 1 : 21;
	else
		rc = h_num(c, "select 7") == 7 ? 0 : 22;
	pgb_finish(c);
	return rc;
}

Test(ops, peer_credentials_decide_who_may_register)
{
	const char *args[] = { "--allow-uids", "4243", "--allow-gids", "4242", NULL };
	static const struct { struct ident id; int want; const char *who; } cases[] = {
		{ { 65534, 65534, 0 }, 1, "a stranger" },
		{ { 65534, 65534, 4242 }, 0, "a supplementary member of an allowed group" },
		{ { 65534, 4242, 0 }, 0, "a primary member of an allowed group" },
		{ { 4243, 65534, 0 }, 0, "an allowed uid" },
	};

	if (geteuid() != 0)
		cr_skip_test("needs root to act as other users");
	start_with_conf("min_pool_size = 1\n", args);
	cr_assert_eq(chmod(br.dir, 0711), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = h_wait(h_fork(register_as, (void *)&cases[i].id), 10000);

		cr_expect_eq(got, cases[i].want, "%s: %d", cases[i].who, got);
	}
	cr_assert_eq(h_broker_stop(&br), 0);
}
