/* poolbench: N agent processes drive one workload through pgbroker, through
 * PgBouncer, or over direct libpq connections, on a PostgreSQL it starts
 * itself, and report throughput, latency, errors, CPU time and backends. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "errbuf.h"
#include "bench.h"
#include "pgbroker.h"
#include "stats.h"
#include "version.h"

#define SCALE            10              /* pgbench scale of pgbench_accounts */
#define NACCOUNTS        (100000 * SCALE)
#define NTELLERS         (10 * SCALE)
#define NBRANCHES        SCALE
#define BOUNCER_PORT     "6432"
#define READY_TIMEOUT_S  60.0            /* agents connecting; pooler coming up */
#define REPORT_GRACE_S   30.0            /* after the window, for the last reports */
#define STOP_GRACE_S     15              /* SIGTERM, then SIGKILL */
#define SETTLE_TIMEOUT_S 10.0            /* backends of the last run going away */
#define SAMPLE_EVERY_S   0.5             /* backend count during the window */
#define MAX_SHOWN        3               /* errors printed per agent */
#define MAX_NOTES        16
#define AGENT_APP        "poolbench"
#define BACKENDS_SQL \
	"select count(*) from pg_stat_activity where backend_type = 'client backend' " \
	"and pid <> pg_backend_pid()"

static volatile sig_atomic_t g_stop;   /* the signal that asked us to stop */

/* Everything that must be undone on any exit path (see cleanup()). */
static struct {
	char work[64];           /* our temporary directory; "" when none */
	char pgdir[96];          /* the throwaway cluster in it; "" with --dsn */
	char pgtmp[PATH_MAX];    /* tools/pgtmp.sh */
	pid_t pooler;            /* the broker or pgbouncer of the current run */
	pid_t *agents;           /* of the current run; 0 once reaped */
	int nagents;
	PGconn *mon;             /* our own connection: backend counts, set-up */
	int nice0;               /* our priority at start; children get it back */
} g;

/* What every run shares. */
struct ctx {
	const struct bench_opts *o;
	int pool_size;
	char dsn[1024];          /* PostgreSQL for direct agents and the broker */
	char broker[PATH_MAX];
	char bouncer[PATH_MAX];  /* "" when not installed */
	char host[512], port[32], user[128], db[128], pass[128];
	int pm_pid;              /* postmaster, -1 when not visible in /proc */
	long long baseline;      /* client backends before the first run, ours excluded */
};

/* --- small helpers --- */

static double now_s(void)
{
	return (double)clock_ns() / 1e9;
}

static uint64_t now_us(void)
{
	return (uint64_t)clock_ns() / 1000u;
}

static void on_signal(int sig)
{
	g_stop = sig;
}

/* Sleep until the monotonic time t; -1 when a stop was requested. */
static int sleep_until(double t)
{
	while (!g_stop) {
		double d = t - now_s();
		struct timespec ts;

		if (d <= 0)
			return 0;
		ts.tv_sec = (time_t)d;
		ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
		nanosleep(&ts, NULL);   /* EINTR on a signal: the loop checks g_stop */
	}
	return -1;
}

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("poolbench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* snprintf that says whether it all fit: 0, or -1 when buf holds a cut
 * string (fine for a message, an error for a path). */
static int fmt(char *buf, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));

static int fmt(char *buf, size_t n, const char *f, ...)
{
	va_list ap;
	int len;

	va_start(ap, f);
	len = vsnprintf(buf, n, f, ap);
	va_end(ap);
	return len >= 0 && (size_t)len < n ? 0 : -1;
}

/* Cut a trailing newline off (libpq's messages end in one). */
/* Signals and priority of a forked child that is about to exec or to be an
 * agent: as they were when poolbench started. */
static void child_setup(void)
{
	sigset_t none;

	setpriority(PRIO_PROCESS, 0, g.nice0);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Run argv, wait for it; its stdout goes into out (when not NULL). Returns
 * its exit status, or -1. */
static int run_capture(char *const argv[], char *out, size_t n)
{
	int p[2], st;
	size_t got = 0;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		child_setup();
		dup2(p[1], 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		char sink[512];
		ssize_t r;

		if (out && got + 1 < n)
			r = read(p[0], out + got, n - 1 - got);
		else
			r = read(p[0], sink, sizeof(sink));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (out && got + 1 < n)
			got += (size_t)r;
	}
	close(p[0]);
	if (out && n)
		out[got] = '\0';
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "exit status N" or "signal N" for a wait status. */
static const char *wait_str(int st, char *buf, size_t n)
{
	if (st < 0)
		snprintf(buf, n, "unknown status");
	else if (WIFEXITED(st))
		snprintf(buf, n, "exit status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
	else
		snprintf(buf, n, "wait status %d", st);
	return buf;
}

/* SIGTERM, up to grace_s seconds, then SIGKILL; reaps. Returns the wait
 * status, or -1. */
static int stop_pid(pid_t pid, int grace_s)
{
	int st;
	double until = now_s() + grace_s;

	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_s() >= until)
			break;
		usleep(20000);
	}
	msg("pid %d ignored SIGTERM for %d s: killing it", (int)pid, grace_s);
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return st;
}

static void kill_agents(void)
{
	for (int i = 0; i < g.nagents; i++)
		if (g.agents[i] > 0)
			kill(g.agents[i], SIGKILL);
	for (int i = 0; i < g.nagents; i++) {
		if (g.agents[i] > 0) {
			while (waitpid(g.agents[i], NULL, 0) < 0 && errno == EINTR)
				;
			g.agents[i] = 0;
		}
	}
	free(g.agents);
	g.agents = NULL;
	g.nagents = 0;
}

/* Wait up to timeout_s for the agents to exit by themselves, then kill the rest. */
static void reap_agents(double timeout_s)
{
	double until = now_s() + timeout_s;
	int left = 0;

	for (int i = 0; i < g.nagents; i++)
		left += g.agents[i] > 0;
	while (left > 0 && now_s() < until && !g_stop) {
		for (int i = 0; i < g.nagents; i++) {
			if (g.agents[i] > 0 && waitpid(g.agents[i], NULL, WNOHANG) == g.agents[i]) {
				g.agents[i] = 0;
				left--;
			}
		}
		if (left > 0)
			usleep(10000);
	}
	if (left > 0 && !g_stop)
		msg("%d agents did not exit within %.0f s: killing them", left, timeout_s);
	kill_agents();
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0 && errno != ENOENT)
		msg("cannot remove %s: %s", path, strerror(errno));
	return 0;
}

/* Undo everything, in reverse order of acquisition; safe to call twice. */
static void cleanup(void)
{
	kill_agents();
	if (g.pooler > 0) {
		stop_pid(g.pooler, STOP_GRACE_S);
		g.pooler = 0;
	}
	if (g.mon) {
		PQfinish(g.mon);
		g.mon = NULL;
	}
	if (g.pgdir[0]) {
		char *argv[] = { "sh", g.pgtmp, "stop", g.pgdir, NULL };

		if (run_capture(argv, NULL, 0) != 0) {
			msg("could not stop PostgreSQL in %s; leaving %s in place", g.pgdir, g.work);
			g.work[0] = '\0';
		}
		g.pgdir[0] = '\0';
	}
	if (g.work[0]) {
		nftw(g.work, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		g.work[0] = '\0';
	}
}

/* The directory of our own executable (tools/ in the source tree). */
static int exe_dir(char *buf, size_t n)
{
	ssize_t len = readlink("/proc/self/exe", buf, n - 1);
	char *slash;

	if (len <= 0)
		return -1;
	buf[len] = '\0';
	slash = strrchr(buf, '/');
	if (!slash)
		return -1;
	*slash = '\0';
	return 0;
}

static bool is_exec(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* name in $PATH or in one of the sbin directories (Debian's pgbouncer is in
 * /usr/sbin, which a non-root PATH may lack). */
static bool find_in_path(const char *name, char *out, size_t n)
{
	const char *path = getenv("PATH");
	char buf[4096], *save = NULL;
	static const char *const extra[] = { "/usr/sbin", "/usr/local/sbin", "/sbin" };

	snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/bin:/bin");
	for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(out, n, "%s/%s", *d ? d : ".", name);
		if (is_exec(out))
			return true;
	}
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		snprintf(out, n, "%s/%s", extra[i], name);
		if (is_exec(out))
			return true;
	}
	out[0] = '\0';
	return false;
}

/* pgbroker: ../broker/pgbroker beside us (the source tree), else pgbroker
 * beside us (installed), else $PATH. out is "" when none is found. */
static void find_broker(const char *here, char *out, size_t n)
{
	if (fmt(out, n, "%s/../broker/pgbroker", here) == 0 && is_exec(out))
		return;
	if (fmt(out, n, "%s/pgbroker", here) == 0 && is_exec(out))
		return;
	find_in_path("pgbroker", out, n);
}

/* --- PostgreSQL: our monitor connection, /proc CPU accounting --- */

/* Connect with application_name set; dsn may be a conninfo string or a URI. */
static PGconn *pg_connect(const char *dsn, const char *app)
{
	const char *const keys[] = { "dbname", "application_name", NULL };
	const char *const vals[] = { dsn, app, NULL };

	return PQconnectdbParams(keys, vals, 1);
}

/* One integer from a query on the monitor connection; -1 on error. */
static long long mon_int(const char *sql)
{
	PGresult *r = PQexec(g.mon, sql);
	long long v = -1;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		msg("\"%s\": %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	return v;
}

static int mon_exec(const char *sql)
{
	PGresult *r = PQexec(g.mon, sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	if (!ok)
		msg("\"%.60s\": %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -1;
}

/* Parent pid and CPU ticks (own, and of waited-for children) of a process;
 * -1 when it is not there. */
static int proc_stat(int pid, int *ppid, uint64_t *ticks, uint64_t *child_ticks)
{
	char path[64], line[1024];
	FILE *f;
	int rc = -1;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fgets(line, sizeof(line), f))
		rc = bench_parse_proc_stat(line, ppid, ticks, child_ticks);
	fclose(f);
	return rc;
}

/* CPU ticks of one process, -1 when it is gone. */
static int64_t pid_ticks(int pid)
{
	uint64_t t, ct;
	int ppid;

	if (pid <= 0 || proc_stat(pid, &ppid, &t, &ct) < 0)
		return -1;
	return (int64_t)t;
}

/* CPU ticks of PostgreSQL: the postmaster, its live children (backends,
 * background processes) and the children it has reaped (their time moves
 * into its cutime + cstime when they exit, so the sum never goes down).
 * -1 when /proc does not show them. */
static int64_t pg_ticks(int pm)
{
	DIR *d;
	struct dirent *e;
	uint64_t t, ct;
	int64_t sum;
	int ppid;

	if (pm <= 0 || proc_stat(pm, &ppid, &t, &ct) < 0 || !(d = opendir("/proc")))
		return -1;
	sum = (int64_t)(t + ct);
	while ((e = readdir(d))) {
		int pid = atoi(e->d_name);

		if (pid > 0 && proc_stat(pid, &ppid, &t, &ct) == 0 && ppid == pm)
			sum += (int64_t)t;
	}
	closedir(d);
	return sum;
}

/* CPU ticks of the pooler and of PostgreSQL, and when they were read. */
struct cpu_snap {
	int64_t pooler, pg;   /* -1: unknown */
	double t;             /* the middle of the reading */
};

static void cpu_snap_take(struct cpu_snap *s, int pm, pid_t pooler)
{
	double t0 = now_s();

	s->pooler = pooler > 0 ? pid_ticks(pooler) : -1;
	s->pg = pg_ticks(pm);
	s->t = (t0 + now_s()) / 2;
}

/* CPU seconds from tick counts read dt seconds apart, scaled to the window
 * (they are dt apart rather than window_s when poolbench itself ran late).
 * -1 when unknown. */
static double cpu_window_s(int64_t a, int64_t b, double dt, double window_s)
{
	if (a < 0 || b < 0 || dt <= 0)
		return -1;
	return (double)(b - a) / (double)sysconf(_SC_CLK_TCK) * window_s / dt;
}

/* Wait until deadline for the answer to BACKENDS_SQL sent on the monitor
 * connection: 1 with *n set, 0 when it has not come yet, -1 on an error
 * (the result is drained in every case but 0). */
static int backends_wait(double deadline, long long *n)
{
	while (!g_stop) {
		struct pollfd pf = { .fd = PQsocket(g.mon), .events = POLLIN };
		int left;

		if (!PQconsumeInput(g.mon))
			return -1;
		if (!PQisBusy(g.mon)) {
			PGresult *r;
			long long v = -1;

			while ((r = PQgetResult(g.mon))) {
				if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
					v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
				PQclear(r);
			}
			*n = v;
			return v >= 0 ? 1 : -1;
		}
		left = (int)((deadline - now_s()) * 1000);
		if (left <= 0)
			return 0;
		poll(&pf, 1, left);
	}
	return -1;
}

/* Wait until the client backends are down to the baseline again (the last
 * run's are still exiting); bounded. */
static void settle_backends(const struct ctx *cx)
{
	double until = now_s() + SETTLE_TIMEOUT_S;
	long long n;

	while ((n = mon_int(BACKENDS_SQL)) > cx->baseline && now_s() < until && !g_stop)
		usleep(50000);
	if (n > cx->baseline)
		msg("%lld client backends still there (%lld before the first run); going on",
		    n, cx->baseline);
}

/* pgbench's tables at scale 10, made with SQL (no pgbench binary needed),
 * like `pgbench -i -s 10`: load, then primary keys, in one transaction (an
 * interrupted set-up leaves nothing behind), then vacuum analyze. Reused
 * when they are already there at this scale with their primary keys;
 * other tables of these names are never dropped (they may be someone's). */
static int setup_pgbench_tables(void)
{
	static const char *const create[] = {
		"begin",
		"create table pgbench_branches(bid int not null, bbalance int, filler char(88)) "
		"with (fillfactor = 100)",
		"create table pgbench_tellers(tid int not null, bid int, tbalance int, "
		"filler char(84)) with (fillfactor = 100)",
		"create table pgbench_accounts(aid int not null, bid int, abalance int, "
		"filler char(84)) with (fillfactor = 100)",
		"create table pgbench_history(tid int, bid int, aid int, delta int, "
		"mtime timestamp, filler char(22))",
		"insert into pgbench_branches(bid, bbalance) select g, 0 "
		"from generate_series(1, 10) g",
		"insert into pgbench_tellers(tid, bid, tbalance) select g, (g - 1) / 10 + 1, 0 "
		"from generate_series(1, 100) g",
		"insert into pgbench_accounts(aid, bid, abalance, filler) "
		"select g, (g - 1) / 100000 + 1, 0, '' from generate_series(1, 1000000) g",
		"alter table pgbench_branches add primary key (bid)",
		"alter table pgbench_tellers add primary key (tid)",
		"alter table pgbench_accounts add primary key (aid)",
		"commit",
		"vacuum analyze pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history",
	};
	long long have = mon_int("select count(*) from pg_class where relkind = 'r' and relname "
				 "in ('pgbench_branches', 'pgbench_tellers', 'pgbench_accounts', "
				 "'pgbench_history') and pg_table_is_visible(oid)");
	double t0 = now_s();

	if (have < 0)
		return -1;
	if (have == 4) {
		if (mon_int("select count(*) from pgbench_branches") != NBRANCHES ||
		    mon_int("select count(*) from pgbench_tellers") != NTELLERS ||
		    mon_int("select coalesce(max(aid), 0) from pgbench_accounts") != NACCOUNTS) {
			msg("pgbench tables exist but not at scale %d: drop them or use another "
			    "database (--dsn)", SCALE);
			return -1;
		}
		/* Without them every point read scans a million rows. */
		if (mon_int("select count(*) from pg_constraint where contype = 'p' and conrelid in "
			    "('pgbench_branches'::regclass, 'pgbench_tellers'::regclass, "
			    "'pgbench_accounts'::regclass)") != 3) {
			msg("pgbench tables exist at scale %d but without their primary keys: drop "
			    "them or use another database (--dsn)", SCALE);
			return -1;
		}
		return 0;
	}
	if (have != 0) {
		msg("pgbench tables exist but not all four of them: drop them or use another "
		    "database (--dsn)");
		return -1;
	}
	msg("creating pgbench tables, scale %d (%d accounts)", SCALE, NACCOUNTS);
	for (size_t i = 0; i < sizeof(create) / sizeof(create[0]); i++) {
		if (g_stop || mon_exec(create[i]) < 0) {
			if (PQtransactionStatus(g.mon) != PQTRANS_IDLE)
				(void)mon_exec("rollback");
			return -1;
		}
	}
	msg("pgbench tables ready in %.1f s", now_s() - t0);
	return 0;
}

/* --- poolers --- */

/* Wait for "ready" on fd from a pooler we started (bounded): 0 when it
 * came, -2 when the writer closed its end (it exited), else -1. */
static int wait_ready_fd(int fd, double timeout_s)
{
	double until = now_s() + timeout_s;
	char line[16] = "";
	size_t got = 0;

	while (!g_stop && got < 6) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int left = (int)((until - now_s()) * 1000);
		ssize_t r;

		if (left <= 0)
			return -1;
		if (poll(&pf, 1, left) <= 0)
			continue;
		r = read(fd, line + got, sizeof(line) - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -2;   /* EOF: it exited */
		got += (size_t)r;
	}
	return strncmp(line, "ready", 5) == 0 ? 0 : -1;
}

static void print_log_tail(const char *path)
{
	char buf[4096];
	FILE *f = fopen(path, "r");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	msg("last lines of %s:\n%s", path, buf);
}

/* Open path for a child's stdout/stderr. */
static int open_log(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

/* broker/pgbroker with min = max = pool_size; returns its pid, or -1. */
static pid_t broker_start(const struct ctx *cx, const char *dir, const char *log, int epoll)
{
	char fdarg[16], pool[16];
	int p[2], logfd, ready;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	logfd = open_log(log);
	if (logfd < 0) {
		msg("%s: %s", log, strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
	snprintf(pool, sizeof(pool), "%d", cx->pool_size);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		char *argv[] = { (char *)cx->broker, "--dir", (char *)dir, "--dsn", (char *)cx->dsn,
				 "--ready-fd", fdarg, "--pool-size", pool, "--min-pool-size", pool,
				 "--max-pool-size", pool, "--loop", epoll ? "epoll" : "auto", NULL };

		child_setup();
		/* Never outlive poolbench, even when it is killed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fcntl(p[1], F_SETFD, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	close(logfd);
	if (pid < 0) {
		close(p[0]);
		return -1;
	}
	g.pooler = pid;
	ready = wait_ready_fd(p[0], 30);
	close(p[0]);
	if (ready < 0) {
		int st = stop_pid(pid, STOP_GRACE_S);
		char how[48];

		if (ready == -2)
			msg("the broker exited before it was ready (%s)", wait_str(st, how, sizeof(how)));
		else if (!g_stop)
			msg("the broker did not report ready within 30 s");
		if (!g_stop)
			print_log_tail(log);
		g.pooler = 0;
		return -1;
	}
	return pid;
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int rc;

	if (!f) {
		msg("%s: %s", path, strerror(errno));
		return -1;
	}
	fputs(text, f);
	rc = fclose(f);
	return rc == 0 ? 0 : -1;
}

/* PgBouncer in transaction mode with pool_size server connections, on a
 * unix socket in dir only; as root it runs as user postgres (it refuses
 * root). Returns its pid and the agents' conninfo, or -1. */
static pid_t bouncer_start(const struct ctx *cx, const char *dir, int nagents,
			   char *agent_dsn, size_t n)
{
	char ini[4096], path[PATH_MAX], users[PATH_MAX], log[PATH_MAX], pass[160] = "";
	struct passwd *pw = NULL;
	double until;
	int logfd;
	pid_t pid;

	if (geteuid() == 0) {
		pw = getpwnam("postgres");
		if (!pw) {
			msg("running as root, but there is no user postgres to run pgbouncer as");
			return -1;
		}
		if (chown(dir, pw->pw_uid, pw->pw_gid) < 0) {
			msg("chown %s: %s", dir, strerror(errno));
			return -1;
		}
	}
	if (fmt(users, sizeof(users), "%s/users.txt", dir) < 0 ||
	    fmt(path, sizeof(path), "%s/pgbouncer.ini", dir) < 0 ||
	    fmt(log, sizeof(log), "%s/pgbouncer.log", dir) < 0) {
		msg("path too long: %s", dir);
		return -1;
	}
	if (cx->pass[0])
		snprintf(pass, sizeof(pass), " password='%s'", cx->pass);
	if (fmt(ini, sizeof(ini),
		    "[databases]\n"
		    "%s = host=%s port=%s dbname=%s user=%s%s\n"
		    "[pgbouncer]\n"
		    "listen_port = " BOUNCER_PORT "\n"
		    "unix_socket_dir = %s\n"
		    "auth_type = trust\n"
		    "auth_file = %s\n"
		    "pool_mode = transaction\n"
		    "default_pool_size = %d\n"
		    "min_pool_size = %d\n"
		    "reserve_pool_size = 0\n"
		    "max_db_connections = %d\n"
		    "max_client_conn = %d\n"
		    "ignore_startup_parameters = extra_float_digits\n"
		    "log_connections = 0\n"
		    "log_disconnections = 0\n",
		    cx->db, cx->host, cx->port, cx->db, cx->user, pass, dir, users, cx->pool_size,
		    cx->pool_size, cx->pool_size, nagents + 32) < 0) {
		msg("pgbouncer configuration too long");
		return -1;
	}
	if (write_file(path, ini) < 0)
		return -1;
	snprintf(ini, sizeof(ini), "\"%s\" \"\"\n", cx->user);
	if (write_file(users, ini) < 0)
		return -1;
	logfd = open_log(log);
	if (logfd < 0) {
		msg("%s: %s", log, strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		char *argv[] = { (char *)cx->bouncer, path, NULL };
		struct rlimit rl;

		child_setup();
		/* Enough descriptors for every agent and backend. */
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (pw && (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
			   setuid(pw->pw_uid) < 0))
			_exit(126);
		/* After setuid: a change of credentials clears the death signal. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(logfd, 1);
		dup2(logfd, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(logfd);
	if (pid < 0)
		return -1;
	g.pooler = pid;
	(void)fmt(agent_dsn, n, "host=%s port=" BOUNCER_PORT " dbname=%s user=%s", dir, cx->db,
		  cx->user);
	/* Ready when it answers a connection attempt at all (bounded). */
	until = now_s() + 30;
	while (!g_stop && now_s() < until) {
		char ping[PATH_MAX + 256];

		if (waitpid(pid, NULL, WNOHANG) == pid) {
			g.pooler = 0;
			msg("pgbouncer exited at start");
			print_log_tail(log);
			return -1;
		}
		(void)fmt(ping, sizeof(ping), "%s connect_timeout=2", agent_dsn);
		if (PQping(ping) != PQPING_NO_RESPONSE)
			return pid;
		usleep(20000);
	}
	if (!g_stop) {
		msg("pgbouncer did not answer within 30 s");
		print_log_tail(log);
	}
	stop_pid(pid, STOP_GRACE_S);
	g.pooler = 0;
	return -1;
}

/* --- agents --- */

/* What an agent sends back at the end: one atomic write to a shared pipe. */
struct agent_report {
	uint64_t ops;             /* successful operations completed in the window */
	uint64_t errors;          /* failed operations, any time; a failed connect is one */
	uint64_t connect_errors;
	uint64_t cpu_us;          /* user + system in the window */
	struct stats_hist hist;   /* latency of the ops counted */
	char first_error[240];
};
_Static_assert(sizeof(struct agent_report) <= PIPE_BUF, "a report is one atomic pipe write");

struct agent {
	int workload;
	PGconn *pg;               /* direct and pgbouncer */
	pgb_conn *pb;             /* broker */
	uint64_t rng;
	struct agent_report rep;
};

/* What a statement must return besides success. */
struct want {
	bool one_row;
	bool one_affected;        /* rows affected == 1 */
	const char *value;        /* first value of the first row */
	const char *tag;          /* exact command tag */
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int rand_between(struct agent *a, int lo, int hi)
{
	return lo + (int)(xorshift(&a->rng) % (uint64_t)(hi - lo + 1));
}

static void agent_error(struct agent *a, const char *sql, const char *why)
{
	if (!a->rep.first_error[0])
		snprintf(a->rep.first_error, sizeof(a->rep.first_error), "\"%.60s\": %s", sql, why);
	if (a->rep.errors++ < MAX_SHOWN)
		fprintf(stderr, "poolbench: agent %d: \"%s\": %s\n", (int)getpid(), sql, why);
}

/* Does a successful result match w? Fills why when not. */
static void check_want(const struct want *w, int ntuples, long long affected,
		       const char *value, const char *tag, char *why, size_t n)
{
	if (w->one_row && ntuples != 1)
		snprintf(why, n, "%d rows, want 1", ntuples);
	else if (w->one_affected && affected != 1)
		snprintf(why, n, "%lld rows affected, want 1", affected);
	else if (w->value && (!value || strcmp(value, w->value)))
		snprintf(why, n, "value \"%s\", want \"%s\"", value ? value : "(none)", w->value);
	else if (w->tag && strcmp(tag, w->tag))
		snprintf(why, n, "command tag \"%s\", want \"%s\"", tag, w->tag);
}

/* Run one statement (the simple protocol without parameters, the extended
 * one with) and check it; counts an error when it is not what was wanted. */
static bool agent_exec(struct agent *a, const char *sql, int n, const char *const *v,
		       struct want w)
{
	char why[200] = "";

	if (a->pb) {
		pgb_result *r = n ? pgb_exec_params(a->pb, sql, n, v) : pgb_exec(a->pb, sql);

		if (!r)
			snprintf(why, sizeof(why), "out of memory");
		else if (!pgb_result_ok(r))
			snprintf(why, sizeof(why), "%s: %s", pgb_sqlstate(r), pgb_result_error(r));
		else
			check_want(&w, pgb_ntuples(r), pgb_cmd_tuples(r),
				   pgb_ntuples(r) > 0 && pgb_nfields(r) > 0 ? pgb_getvalue(r, 0, 0)
									    : NULL,
				   pgb_cmd_status(r), why, sizeof(why));
		pgb_clear(r);
	} else {
		PGresult *r = n ? PQexecParams(a->pg, sql, n, NULL, v, NULL, NULL, 0)
				: PQexec(a->pg, sql);
		ExecStatusType st = PQresultStatus(r);

		if (!r) {
			snprintf(why, sizeof(why), "%s", PQerrorMessage(a->pg));
		} else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
			const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);

			snprintf(why, sizeof(why), "%s: %s", code ? code : "(no sqlstate)",
				 PQresultErrorMessage(r));
		} else {
			check_want(&w, PQntuples(r), strtoll(PQcmdTuples(r), NULL, 10),
				   PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : NULL,
				   PQcmdStatus(r), why, sizeof(why));
		}
		PQclear(r);
	}
	if (!why[0])
		return true;
	chomp(why);
	agent_error(a, sql, why);
	/* A broken libpq connection: reconnect, and do not spin while it is down. */
	if (a->pg && PQstatus(a->pg) == CONNECTION_BAD) {
		PQreset(a->pg);
		if (PQstatus(a->pg) == CONNECTION_BAD)
			usleep(100000);
	}
	return false;
}

/* After a failed statement inside a transaction; not counted. */
static void agent_rollback(struct agent *a)
{
	if (a->pb)
		pgb_clear(pgb_exec(a->pb, "ROLLBACK"));
	else
		PQclear(PQexec(a->pg, "ROLLBACK"));
}

static bool op_select1(struct agent *a)
{
	return agent_exec(a, "SELECT 1", 0, NULL, (struct want){ .one_row = true, .value = "1" });
}

/* The statements of the pgbench workloads. */
#define SQL_ACCOUNT_GET "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
#define SQL_ACCOUNT_ADD "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"
#define SQL_HISTORY_ADD "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) " \
			"VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)"

/* pgbench -S: one random account. */
static bool op_point_read(struct agent *a)
{
	char aid[16];
	const char *const v[] = { aid };

	snprintf(aid, sizeof(aid), "%d", rand_between(a, 1, NACCOUNTS));
	return agent_exec(a, SQL_ACCOUNT_GET, 1, v, (struct want){ .one_row = true });
}

/* One statement of a transaction, for agent_txn(). */
struct step {
	const char *sql;
	int n;
	const char *const *v;
	struct want w;
};

/* BEGIN, the steps in order, COMMIT. After the first failure, ROLLBACK (not
 * counted) and false. */
static bool agent_txn(struct agent *a, const struct step *s, size_t nsteps)
{
	bool ok = agent_exec(a, "BEGIN", 0, NULL, (struct want){ .tag = "BEGIN" });

	for (size_t i = 0; ok && i < nsteps; i++)
		ok = agent_exec(a, s[i].sql, s[i].n, s[i].v, s[i].w);
	/* COMMIT of an aborted transaction succeeds with the tag ROLLBACK. */
	if (ok)
		return agent_exec(a, "COMMIT", 0, NULL, (struct want){ .tag = "COMMIT" });
	agent_rollback(a);
	return false;
}

/* pgbench's TPC-B-like transaction: five statements between BEGIN and COMMIT.
 * Every transaction takes its row locks in the same table order, so they
 * wait on each other but cannot deadlock. */
static bool op_tpcb(struct agent *a)
{
	char aid[16], tid[16], bid[16], delta[16];
	const char *const acc[] = { delta, aid }, *const sel[] = { aid };
	const char *const tel[] = { delta, tid }, *const bra[] = { delta, bid };
	const char *const his[] = { tid, bid, aid, delta };
	const struct want one = { .one_affected = true };
	const struct step s[] = {
		{ .sql = SQL_ACCOUNT_ADD, .n = 2, .v = acc, .w = one },
		{ .sql = SQL_ACCOUNT_GET, .n = 1, .v = sel, .w = { .one_row = true } },
		{ .sql = "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
		  .n = 2, .v = tel, .w = one },
		{ .sql = "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
		  .n = 2, .v = bra, .w = one },
		{ .sql = SQL_HISTORY_ADD, .n = 4, .v = his, .w = one },
	};

	snprintf(aid, sizeof(aid), "%d", rand_between(a, 1, NACCOUNTS));
	snprintf(tid, sizeof(tid), "%d", rand_between(a, 1, NTELLERS));
	snprintf(bid, sizeof(bid), "%d", rand_between(a, 1, NBRANCHES));
	snprintf(delta, sizeof(delta), "%d", rand_between(a, -5000, 5000));
	return agent_txn(a, s, sizeof(s) / sizeof(s[0]));
}

/* 80 % point reads, 15 % single-row updates, 5 % transactions of three
 * statements (move an amount between two accounts, lower aid first so that
 * they cannot deadlock, and log it). */
static bool op_mixed(struct agent *a)
{
	int dice = rand_between(a, 0, 99), x, y;
	char lo[16], hi[16], delta[16], neg[24], tid[16], bid[16];
	const char *const upd[] = { delta, lo }, *const dn[] = { neg, lo }, *const up[] = { delta, hi };
	const char *const his[] = { tid, bid, lo, delta };
	const struct want one = { .one_affected = true };
	const struct step s[] = {
		{ .sql = SQL_ACCOUNT_ADD, .n = 2, .v = dn, .w = one },
		{ .sql = SQL_ACCOUNT_ADD, .n = 2, .v = up, .w = one },
		{ .sql = SQL_HISTORY_ADD, .n = 4, .v = his, .w = one },
	};

	if (dice < 80)
		return op_point_read(a);
	x = rand_between(a, 1, NACCOUNTS);
	snprintf(lo, sizeof(lo), "%d", x);
	snprintf(delta, sizeof(delta), "%d", rand_between(a, 1, 100));
	if (dice < 95)
		return agent_exec(a, SQL_ACCOUNT_ADD, 2, upd, one);
	do
		y = rand_between(a, 1, NACCOUNTS);
	while (y == x);
	snprintf(lo, sizeof(lo), "%d", x < y ? x : y);
	snprintf(hi, sizeof(hi), "%d", x < y ? y : x);
	snprintf(neg, sizeof(neg), "-%s", delta);
	snprintf(tid, sizeof(tid), "%d", rand_between(a, 1, NTELLERS));
	snprintf(bid, sizeof(bid), "%d", rand_between(a, 1, NBRANCHES));
	return agent_txn(a, s, sizeof(s) / sizeof(s[0]));
}

static bool agent_op(struct agent *a)
{
	switch (a->workload) {
	case BENCH_SELECT1:
		return op_select1(a);
	case BENCH_PGBENCH_SELECT:
		return op_point_read(a);
	case BENCH_TPCB:
		return op_tpcb(a);
	default:
		return op_mixed(a);
	}
}

static uint64_t cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* The measured window, on CLOCK_MONOTONIC: set by poolbench before it
 * lets the agents go, in memory it shares with them, so that every agent
 * counts the window poolbench reads the CPU figures over, however late the
 * scheduler wakes it. */
struct bench_window {
	uint64_t meas_us, end_us;
};

struct agent_args {
	int mode, workload;
	const char *target;       /* conninfo, or the broker's run directory */
	int ready_w, go_r, report_w, done_r;
	const struct bench_window *win;
	pid_t parent;
};

/* Child body: connect, say so on ready_w ('R', or 'E' when the connect
 * failed), wait for the start barrier (EOF on go_r), run the workload for
 * warmup + duration, report, and disconnect once released (EOF on done_r).
 * Never returns. */
static void agent_main(const struct agent_args *x) __attribute__((noreturn));

static void agent_main(const struct agent_args *x)
{
	struct agent a = { .workload = x->workload };
	uint64_t t_meas, t_end, cpu0 = 0;
	bool measuring = false, up;
	char byte = 'R';
	int rc;

	child_setup();
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != x->parent)
		_exit(1);
	a.rng = ((uint64_t)getpid() << 32 ^ now_us()) | 1;
	if (bench_mode_is_broker(x->mode)) {
		a.pb = pgb_connect(x->target);
		up = a.pb && pgb_status(a.pb) == PGB_CONNECTION_OK;
		if (!up)
			agent_error(&a, "(connect)", a.pb ? pgb_error_message(a.pb) : "out of memory");
	} else {
		a.pg = pg_connect(x->target, AGENT_APP);
		up = a.pg && PQstatus(a.pg) == CONNECTION_OK;
		if (!up) {
			char why[200];

			snprintf(why, sizeof(why), "%s", a.pg ? PQerrorMessage(a.pg) : "out of memory");
			chomp(why);
			agent_error(&a, "(connect)", why);
		}
	}
	if (!up) {
		a.rep.connect_errors = 1;
		byte = 'E';
	}
	if (write(x->ready_w, &byte, 1) != 1)
		_exit(1);
	while (read(x->go_r, &byte, 1) < 0 && errno == EINTR)
		;
	/* Written before the go pipe was closed; the EOF orders it. */
	t_meas = x->win->meas_us;
	t_end = x->win->end_us;
	while (up) {
		uint64_t start = now_us(), end;
		bool ok;

		if (start >= t_end)
			break;
		if (!measuring && start >= t_meas) {
			measuring = true;
			cpu0 = cpu_us();
		}
		ok = agent_op(&a);
		end = now_us();
		if (ok && end >= t_meas && end < t_end) {
			a.rep.ops++;
			stats_hist_add(&a.rep.hist, end - start);
		}
	}
	if (measuring)
		a.rep.cpu_us = cpu_us() - cpu0;
	rc = write(x->report_w, &a.rep, sizeof(a.rep)) == (ssize_t)sizeof(a.rep) ? 0 : 1;
	/* Keep the connection, and so its backend, until the parent has taken
	 * its end-of-window figures: on a loaded machine it may be late, and a
	 * backend that exits takes its CPU time out of /proc. */
	while (read(x->done_r, &byte, 1) < 0 && errno == EINTR)
		;
	if (a.pb)
		pgb_finish(a.pb);
	if (a.pg)
		PQfinish(a.pg);
	_exit(rc);
}

/* --- one run --- */

/* Read whole reports from fd into the result; buf/len carry partial ones. */
static int read_reports(int fd, char *buf, size_t *len, struct stats_hist *hist,
			struct bench_result *res, double *cpu_agents)
{
	ssize_t r = read(fd, buf + *len, sizeof(struct agent_report) * 8 - *len);
	int got = 0;

	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (r == 0)
		return -1;
	*len += (size_t)r;
	while (*len >= sizeof(struct agent_report)) {
		struct agent_report rep;

		memcpy(&rep, buf, sizeof(rep));
		memmove(buf, buf + sizeof(rep), *len - sizeof(rep));
		*len -= sizeof(rep);
		res->ops += rep.ops;
		res->errors += rep.errors;
		res->connect_errors += rep.connect_errors;
		*cpu_agents += (double)rep.cpu_us / 1e6;
		bench_hist_merge(hist, &rep.hist);
		if (!res->note[0] && rep.first_error[0])
			(void)fmt(res->note, sizeof(res->note), "%s", rep.first_error);
		got++;
	}
	return got;
}

static void fail_run(struct bench_result *res, const char *why)
{
	res->failed = 1;
	snprintf(res->note, sizeof(res->note), "%s", why);
}

/* Start the pooler of this mode, fork the agents, run them, collect. 0, or
 * -1 when the run could not be done (res->failed and res->note say why). */
static int run_one(const struct ctx *cx, int mode, int workload, int nagents,
		   struct bench_result *res)
{
	const struct bench_opts *o = cx->o;
	char target[PATH_MAX + 256], dir[PATH_MAX], log[PATH_MAX], *buf = NULL;
	int ready[2] = { -1, -1 }, go[2] = { -1, -1 }, report[2] = { -1, -1 };
	int done[2] = { -1, -1 };
	int nready = 0, nreports = 0, rc = -1;
	struct cpu_snap c0, c1;
	double t0, t_meas, t_end, cpu_agents = 0;
	struct stats_hist hist = { 0 };
	struct agent_args args;
	struct bench_window *win = MAP_FAILED;
	size_t buflen = 0;
	long long max_backends = 0;
	bool in_flight = false;

	memset(res, 0, sizeof(*res));
	res->mode = mode;
	res->workload = workload;
	res->agents = nagents;
	res->pool_size = mode == BENCH_DIRECT ? 0 : cx->pool_size;
	res->seconds = o->duration_s;
	res->cpu_pooler_s = res->cpu_pg_s = res->cpu_agents_s = -1;

	settle_backends(cx);
	if (bench_mode_is_broker(mode)) {
		snprintf(dir, sizeof(dir), "%s/run", g.work);
		snprintf(log, sizeof(log), "%s/broker.log", g.work);
		if (broker_start(cx, dir, log, mode == BENCH_BROKER_EPOLL) < 0) {
			fail_run(res, "the broker did not start");
			return -1;
		}
		snprintf(target, sizeof(target), "%s", dir);
	} else if (mode == BENCH_PGBOUNCER) {
		snprintf(dir, sizeof(dir), "%s/bouncer", g.work);
		if (bouncer_start(cx, dir, nagents, target, sizeof(target)) < 0) {
			fail_run(res, "pgbouncer did not start");
			return -1;
		}
	} else {
		snprintf(target, sizeof(target), "%s", cx->dsn);
	}

	buf = malloc(sizeof(struct agent_report) * 8);
	g.agents = calloc((size_t)nagents, sizeof(pid_t));
	win = mmap(NULL, sizeof(*win), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!buf || !g.agents || win == MAP_FAILED || pipe2(ready, O_CLOEXEC) < 0 ||
	    pipe2(go, O_CLOEXEC) < 0 || pipe2(report, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) {
		fail_run(res, "out of memory or descriptors");
		goto out;
	}
	args = (struct agent_args){ .mode = mode, .workload = workload, .target = target,
				    .ready_w = ready[1], .go_r = go[0], .report_w = report[1],
				    .done_r = done[0], .win = win, .parent = getpid() };
	fflush(NULL);
	for (int i = 0; i < nagents; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			close(ready[0]);
			close(go[1]);
			close(report[0]);
			close(done[1]);
			agent_main(&args);
		}
		if (pid < 0) {
			fail_run(res, "fork failed");
			msg("fork: %s", strerror(errno));
			goto out;
		}
		g.agents[g.nagents++] = pid;
	}
	close(ready[1]);
	close(go[0]);
	close(report[1]);
	close(done[0]);
	ready[1] = go[0] = report[1] = done[0] = -1;

	/* The barrier: one byte per agent once it has connected. */
	t0 = now_s() + READY_TIMEOUT_S;
	while (nready < nagents && !g_stop) {
		struct pollfd pf = { .fd = ready[0], .events = POLLIN };
		char bytes[256];
		ssize_t r;
		int left = (int)((t0 - now_s()) * 1000);

		if (left <= 0)
			break;
		if (poll(&pf, 1, left) <= 0)
			continue;
		r = read(ready[0], bytes, sizeof(bytes));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		nready += (int)r;
	}
	if (nready < nagents) {
		char why[96];

		snprintf(why, sizeof(why), "%s: %d of %d agents ready",
			 g_stop ? "interrupted" : "agents did not connect in time", nready, nagents);
		fail_run(res, why);
		goto out;
	}

	/* All agents are connected: direct mode has its backends now. */
	max_backends = mon_int(BACKENDS_SQL) - cx->baseline;

	/* Go: every agent's read of the go pipe returns EOF at once. */
	win->meas_us = now_us() + (uint64_t)(o->warmup_s * 1e6);
	win->end_us = win->meas_us + (uint64_t)(o->duration_s * 1e6);
	t_meas = (double)win->meas_us / 1e6;
	t_end = (double)win->end_us / 1e6;
	close(go[1]);
	go[1] = -1;
	if (sleep_until(t_meas) < 0)
		goto interrupted;
	cpu_snap_take(&c0, cx->pm_pid, g.pooler);
	/* Sample the backend count; a busy server may take seconds to answer,
	 * which must not move the end of the window. */
	for (;;) {
		double next = now_s() + SAMPLE_EVERY_S;
		long long b;
		int got;

		if (!PQsendQuery(g.mon, BACKENDS_SQL)) {
			msg("backend count: %s", PQerrorMessage(g.mon));
			break;
		}
		got = backends_wait(t_end, &b);
		if (got == 0) {
			in_flight = true;   /* answered after the window */
			break;
		}
		if (got < 0) {
			msg("backend count: %s", PQerrorMessage(g.mon));
			break;
		}
		if (b - cx->baseline > max_backends)
			max_backends = b - cx->baseline;
		if (now_s() >= t_end || sleep_until(next < t_end ? next : t_end) < 0)
			break;
	}
	/* A backend count that failed ends the sampling, not the window. */
	if (g_stop || sleep_until(t_end) < 0)
		goto interrupted;
	cpu_snap_take(&c1, cx->pm_pid, g.pooler);
	if (c1.t - c0.t < 0.9 * o->duration_s || c1.t - c0.t > 1.1 * o->duration_s)
		msg("CPU read %.2f s apart, not %.2f s (poolbench ran late): scaled to the window",
		    c1.t - c0.t, o->duration_s);
	res->backends = (int)max_backends;
	if (in_flight)
		(void)backends_wait(now_s() + REPORT_GRACE_S, &(long long){ 0 });

	/* Collect the reports (bounded), then reap every agent. */
	t0 = t_end + REPORT_GRACE_S;
	while (nreports < nagents && !g_stop) {
		struct pollfd pf = { .fd = report[0], .events = POLLIN };
		int left = (int)((t0 - now_s()) * 1000), got;

		if (left <= 0)
			break;
		if (poll(&pf, 1, left) <= 0)
			continue;
		got = read_reports(report[0], buf, &buflen, &hist, res, &cpu_agents);
		if (got < 0)
			break;   /* EOF: every agent is gone */
		nreports += got;
	}
	if (g_stop)
		goto interrupted;
	if (nreports < nagents) {
		res->errors += (uint64_t)(nagents - nreports);
		msg("%d of %d agents gave no report (killed, or hung past %.0f s)",
		    nagents - nreports, nagents, REPORT_GRACE_S);
		if (!res->note[0])
			snprintf(res->note, sizeof(res->note), "%d agents gave no report",
				 nagents - nreports);
	}
	/* Release the agents: they disconnect and exit. */
	close(done[1]);
	done[1] = -1;
	reap_agents(STOP_GRACE_S);
	if (mode != BENCH_DIRECT && waitpid(g.pooler, NULL, WNOHANG) == g.pooler) {
		g.pooler = 0;
		res->errors++;
		snprintf(res->note, sizeof(res->note), "the %s died during the run",
			 bench_mode_name(mode));
		if (bench_mode_is_broker(mode))
			print_log_tail(log);
	}

	res->rate = (double)res->ops / o->duration_s;
	bench_result_latency(res, &hist);
	res->cpu_agents_s = cpu_agents;
	res->cpu_pg_s = cpu_window_s(c0.pg, c1.pg, c1.t - c0.t, o->duration_s);
	res->cpu_pooler_s = cpu_window_s(c0.pooler, c1.pooler, c1.t - c0.t, o->duration_s);
	rc = 0;
	goto out;

interrupted:
	fail_run(res, "interrupted");
out:
	kill_agents();
	if (g.pooler > 0) {
		int st = stop_pid(g.pooler, STOP_GRACE_S);
		char how[48];

		g.pooler = 0;
		if (rc == 0 && bench_mode_is_broker(mode) && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			msg("the broker did not exit cleanly (%s)", wait_str(st, how, sizeof(how)));
	}
	for (int i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (go[i] >= 0)
			close(go[i]);
		if (report[i] >= 0)
			close(report[i]);
		if (done[i] >= 0)
			close(done[i]);
	}
	if (win != MAP_FAILED)
		munmap(win, sizeof(*win));
	free(buf);
	return rc;
}

/* --- set-up --- */

static void machine_info(struct bench_machine *m, const struct ctx *cx)
{
	struct utsname u;
	char line[256];
	time_t t = time(NULL);
	struct tm tm;
	FILE *f;
	PGresult *r;

	memset(m, 0, sizeof(*m));
	m->ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	m->mem_mib = (long long)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / (1024 * 1024);
	if (uname(&u) == 0)
		(void)fmt(m->kernel, sizeof(m->kernel), "%s %s %s", u.sysname, u.release, u.machine);
	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && colon) {
			snprintf(m->cpu, sizeof(m->cpu), "%s", colon + 2);
			chomp(m->cpu);
			break;
		}
	}
	if (f)
		fclose(f);
	r = PQexec(g.mon, "show server_version");
	snprintf(m->postgresql, sizeof(m->postgresql), "%s",
		 PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "unknown");
	PQclear(r);
	if (cx->bouncer[0]) {
		char *argv[] = { (char *)cx->bouncer, "--version", NULL };

		if (run_capture(argv, line, sizeof(line)) == 0) {
			line[strcspn(line, "\n")] = '\0';
			(void)fmt(m->pgbouncer, sizeof(m->pgbouncer), "%s", line);
		}
	}
	f = fopen("/proc/loadavg", "r");
	if (f && fgets(line, sizeof(line), f)) {
		char *third = line;

		/* "0.50 0.40 0.30 1/123 4567": keep the three averages. */
		for (int i = 0; i < 3 && third; i++)
			third = strchr(third + 1, ' ');
		if (third)
			*third = '\0';
		(void)fmt(m->loadavg, sizeof(m->loadavg), "%s", line);
	}
	if (f)
		fclose(f);
	gmtime_r(&t, &tm);
	strftime(m->date, sizeof(m->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Is pid a PostgreSQL process (its command name, which the process title
 * does not change)? */
static bool is_postgres(int pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	chomp(comm);
	return !strcmp(comm, "postgres") || !strcmp(comm, "postmaster");
}

/* The postmaster: the parent of our own backend, when /proc shows it. A
 * server on another host or in another PID namespace (a container) names
 * a pid that is some other process here, or none. */
static int find_postmaster(void)
{
	long long me = mon_int("select pg_backend_pid()");
	uint64_t t, ct;
	int ppid;

	if (me <= 0 || me > INT_MAX || !is_postgres((int)me) ||
	    proc_stat((int)me, &ppid, &t, &ct) < 0 || !is_postgres(ppid) || pid_ticks(ppid) < 0) {
		msg("PostgreSQL's processes are not visible in /proc (another host, or a "
		    "container?): its CPU time is not reported");
		return -1;
	}
	return ppid;
}

static int start_postgres(struct ctx *cx)
{
	char *argv[] = { "sh", g.pgtmp, "start", g.pgdir, NULL };
	char out[1024];

	msg("starting a throwaway PostgreSQL in %s", g.pgdir);
	if (run_capture(argv, out, sizeof(out)) != 0) {
		msg("could not start PostgreSQL (tools/pgtmp.sh)");
		return -1;
	}
	out[strcspn(out, "\n")] = '\0';
	snprintf(cx->dsn, sizeof(cx->dsn), "%s", out);
	return 0;
}

static int write_output(const char *path, int kind, const struct bench_machine *m,
			const struct ctx *cx, const struct bench_result *r, int n,
			const char *const *notes, int nnotes)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		msg("%s: %s", path, strerror(errno));
		return -1;
	}
	if (kind == 'j')
		bench_write_json(f, m, cx->o, cx->pool_size, r, n, notes, nnotes);
	else
		bench_write_svg(f, r, n);
	if (fclose(f) != 0) {
		msg("%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* One run and its line of progress; -1 when it failed or saw errors. */
static int run_step(const struct ctx *cx, int mode, int workload, int nagents,
		    struct bench_result *res)
{
	char p50[16], p99[16];

	run_one(cx, mode, workload, nagents, res);
	if (res->failed) {
		msg("    failed: %s", res->note);
		return -1;
	}
	bench_fmt_ms(p50, sizeof(p50), res->p50_us);
	bench_fmt_ms(p99, sizeof(p99), res->p99_us);
	msg("    %.0f %s, p50 %s ms, p99 %s ms, errors %" PRIu64 ", backends %d",
	    res->rate, bench_workload_unit(res->workload), p50, p99, res->errors, res->backends);
	return res->errors ? -1 : 0;
}

int main(int argc, char **argv)
{
	static struct bench_result results[BENCH_MAX_RUNS];
	static struct ctx cx;
	struct bench_opts o;
	struct bench_machine m;
	struct sigaction sa = { .sa_handler = on_signal };
	const char *notes[MAX_NOTES];
	char err[256], here[PATH_MAX], path[PATH_MAX], path2[PATH_MAX];
	int nres = 0, nnotes = 0, status = 0, nruns, done = 0;
	bool need_tables = false;

	if (bench_parse_args(argc, argv, &o, err, sizeof(err)) < 0) {
		fprintf(stderr, "poolbench: %s\n%s", err, bench_usage());
		return 2;
	}
	if (o.help) {
		fputs(bench_usage(), stdout);
		return 0;
	}
	if (o.version) {
		printf("poolbench (pgbroker) %s\n", PGB_VERSION);
		return 0;
	}
	cx.o = &o;
	cx.pool_size = o.pool_size ? o.pool_size : bench_default_pool_size(sysconf(_SC_NPROCESSORS_ONLN));

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	atexit(cleanup);
	/* With hundreds of busy agents on 2 cores, poolbench must still read
	 * the CPU counters on time: it raises its own priority when allowed
	 * (root); everything it starts gets the original one back. */
	errno = 0;
	g.nice0 = getpriority(PRIO_PROCESS, 0);
	if (errno)
		g.nice0 = 0;
	(void)setpriority(PRIO_PROCESS, 0, g.nice0 - 10);

	if (exe_dir(here, sizeof(here)) < 0)
		snprintf(here, sizeof(here), ".");
	/* The binaries: pgbroker from the tree (or installed beside poolbench),
	 * pgtmp.sh beside poolbench, pgbouncer from the system. */
	if (o.modes & (1u << BENCH_BROKER | 1u << BENCH_BROKER_EPOLL)) {
		if (o.broker)
			snprintf(cx.broker, sizeof(cx.broker), "%s", o.broker);
		else
			find_broker(here, cx.broker, sizeof(cx.broker));
		if (!is_exec(cx.broker)) {
			msg("pgbroker not found (build it with make, or give --broker PATH)");
			return 1;
		}
	}
	/* Looked up in every mode: the machine description names its version. */
	if (!find_in_path("pgbouncer", cx.bouncer, sizeof(cx.bouncer)) &&
	    (o.modes & (1u << BENCH_PGBOUNCER))) {
		if (!o.compare) {
			msg("pgbouncer is not installed (install it: sh tools/deps.sh --bench)");
			return 1;
		}
		o.modes &= ~(1u << BENCH_PGBOUNCER);
		notes[nnotes++] = "pgbouncer is not installed, so its runs were skipped "
				  "(install it: sh tools/deps.sh --bench)";
		msg("%s", notes[nnotes - 1]);
	}

	snprintf(g.work, sizeof(g.work), "/tmp/poolbench.XXXXXX");
	if (!mkdtemp(g.work)) {
		msg("mkdtemp: %s", strerror(errno));
		g.work[0] = '\0';
		return 1;
	}
	/* Traversable by user postgres (the throwaway cluster, pgbouncer). */
	chmod(g.work, 0755);
	if (!o.dsn) {
		if (fmt(g.pgtmp, sizeof(g.pgtmp), "%s/pgtmp.sh", here) < 0 ||
		    access(g.pgtmp, R_OK) != 0) {
			msg("%s not found: give --dsn CONNINFO of a PostgreSQL to use", g.pgtmp);
			return 1;
		}
		snprintf(g.pgdir, sizeof(g.pgdir), "%s/pg", g.work);
		if (start_postgres(&cx) < 0) {
			g.pgdir[0] = '\0';   /* pgtmp.sh cleaned up after itself */
			return 1;
		}
	} else {
		snprintf(cx.dsn, sizeof(cx.dsn), "%s", o.dsn);
	}
	snprintf(path, sizeof(path), "%s/run", g.work);
	snprintf(path2, sizeof(path2), "%s/bouncer", g.work);
	if (mkdir(path, 0700) < 0 || mkdir(path2, 0755) < 0) {
		msg("mkdir in %s: %s", g.work, strerror(errno));
		return 1;
	}

	g.mon = pg_connect(cx.dsn, "poolbench-monitor");
	if (PQstatus(g.mon) != CONNECTION_OK) {
		msg("cannot connect to PostgreSQL: %s", PQerrorMessage(g.mon));
		return 1;
	}
	snprintf(cx.host, sizeof(cx.host), "%s", PQhost(g.mon));
	snprintf(cx.port, sizeof(cx.port), "%s", PQport(g.mon));
	snprintf(cx.user, sizeof(cx.user), "%s", PQuser(g.mon));
	snprintf(cx.db, sizeof(cx.db), "%s", PQdb(g.mon));
	snprintf(cx.pass, sizeof(cx.pass), "%s", PQpass(g.mon) ? PQpass(g.mon) : "");
	cx.pm_pid = find_postmaster();
	machine_info(&m, &cx);
	for (int i = 0; i < o.nworkloads; i++)
		need_tables |= o.workloads[i] != BENCH_SELECT1;
	if (need_tables && setup_pgbench_tables() < 0)
		return 1;
	cx.baseline = mon_int(BACKENDS_SQL);
	if (cx.baseline < 0)
		return 1;

	nruns = o.nworkloads * o.nagents * __builtin_popcount(o.modes);
	if (o.nbouncer_pools > 1 && (o.modes & (1u << BENCH_PGBOUNCER)))
		nruns += o.nworkloads * o.nagents * (o.nbouncer_pools - 1);
	for (int w = 0; w < o.nworkloads && !g_stop; w++) {
		for (int a = 0; a < o.nagents && !g_stop; a++) {
			for (int md = 0; md < BENCH_NMODES && !g_stop; md++) {
				/* pgbouncer with --bouncer-pools: once per pool size. */
				int sweep = md == BENCH_PGBOUNCER ? o.nbouncer_pools : 0;

				if (!(o.modes & (1u << md)))
					continue;
				for (int k = 0; k < (sweep ? sweep : 1) && !g_stop &&
						nres < BENCH_MAX_RUNS; k++) {
					struct ctx run = cx;

					if (sweep)
						run.pool_size = o.bouncer_pools[k];
					msg("[%d/%d] %s, %d agents, %s (pool %d) ...", ++done, nruns,
					    bench_workload_name(o.workloads[w]), o.agents[a],
					    bench_mode_name(md), md == BENCH_DIRECT ? 0 : run.pool_size);
					if (run_step(&run, md, o.workloads[w], o.agents[a],
						     &results[nres++]) < 0)
						status = 1;
				}
			}
		}
	}
	if (g_stop) {
		msg("interrupted; cleaning up");
		notes[nnotes++] = "interrupted: the results are incomplete";
		status = 1;
	}

	bench_write_report(stdout, &m, &o, cx.pool_size, results, nres, notes, nnotes);
	fflush(stdout);
	if (o.json && write_output(o.json, 'j', &m, &cx, results, nres, notes, nnotes) < 0)
		status = 1;
	if (o.plot && write_output(o.plot, 's', &m, &cx, results, nres, notes, nnotes) < 0)
		status = 1;
	cleanup();
	return g_stop ? 128 + g_stop : status;
}
