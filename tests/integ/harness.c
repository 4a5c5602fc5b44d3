/* Integration test harness; see harness.h. */
#include "harness.h"
#include "stats.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "futex.h"
#include "proto.h"


long long h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *h_dsn(void)
{
	const char *dsn = getenv("PGB_TEST_DSN");

	if (!dsn || !*dsn)
		cr_assert_fail("PGB_TEST_DSN is not set: run the integration tests via tools/run-integ.sh");
	return dsn;
}

void h_mkdtemp(char *buf, size_t n, const char *name)
{
	const char *base = getenv("PGB_TEST_TMP");

	snprintf(buf, n, "%s/%s.XXXXXX", base && *base ? base : "/tmp", name);
	cr_assert_not_null(mkdtemp(buf), "mkdtemp %s: %s", buf, strerror(errno));
}

const char *h_bin(const char *rel, char *buf, size_t n)
{
	const char *root = getenv("PGB_ROOT");

	snprintf(buf, n, "%s/%s", root && *root ? root : ".", rel);
	return buf;
}

void h_broker_start(struct h_broker *br, const char *const *extra)
{
	const char *argv[64];
	char bin[512], fdarg[16], line[16] = "";
	int p[2], n = 0;
	struct pollfd pf;

	if (!br->dir[0])
		h_mkdtemp(br->dir, sizeof(br->dir), "pgb-test");
	if (!br->log[0])
		snprintf(br->log, sizeof(br->log), "%s/broker.log", br->dir);
	cr_assert_eq(pipe(p), 0);
	snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
	/* PGB_BROKER_WRAPPER runs the broker under e.g. valgrind (make valgrind). */
	char *wrap = getenv("PGB_BROKER_WRAPPER") ? strdup(getenv("PGB_BROKER_WRAPPER")) : NULL;
	for (char *save = NULL, *w = wrap ? strtok_r(wrap, " ", &save) : NULL; w && n < 16;
	     w = strtok_r(NULL, " ", &save))
		argv[n++] = w;
	argv[n++] = h_bin("broker/pgbroker", bin, sizeof(bin));
	argv[n++] = "--dir";
	argv[n++] = br->dir;
	/* Each broker names its backends after its directory. */
	snprintf(br->dsn, sizeof(br->dsn), "%s application_name=%s", h_dsn(), strrchr(br->dir, '/') + 1);
	argv[n++] = "--dsn";
	argv[n++] = br->dsn;
	argv[n++] = "--ready-fd";
	argv[n++] = fdarg;
	for (int i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	br->pid = fork();
	cr_assert_neq(br->pid, -1);
	if (br->pid == 0) {
		int fd = open(br->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		close(p[0]);
		/* A test killed by its timeout must not leave its broker behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		execvp(argv[0], (char **)argv);
		_exit(127);
	}
	close(p[1]);
	pf.fd = p[0];
	pf.events = POLLIN;
	if (poll(&pf, 1, wrap ? 60000 : 15000) == 1)
		(void)!read(p[0], line, sizeof(line) - 1);
	close(p[0]);
	free(wrap);
	if (strncmp(line, "ready", 5) != 0) {
		char buf[2048] = "";
		int fd = open(br->log, O_RDONLY);

		if (fd >= 0) {
			(void)!read(fd, buf, sizeof(buf) - 1);
			close(fd);
		}
		kill(br->pid, SIGKILL);
		waitpid(br->pid, NULL, 0);
		cr_assert_fail("broker did not start; its log:\n%s", buf);
	}
}

long long h_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

int h_broker_stop(struct h_broker *br)
{
	int st;

	if (br->pid <= 0)
		return -1;
	kill(br->pid, SIGTERM);
	st = h_wait(br->pid, getenv("PGB_BROKER_WRAPPER") ? 60000 : 15000);
	br->pid = 0;
	return st;
}

void h_broker_kill(struct h_broker *br)
{
	if (br->pid <= 0)
		return;
	kill(br->pid, SIGKILL);
	waitpid(br->pid, NULL, 0);
	br->pid = 0;
}

int h_run(const char *const *argv, char *out, size_t n)
{
	int p[2], st;
	size_t got = 0;
	ssize_t r;
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], 1);
		dup2(p[1], 2);
		/* Daemons started by the command must not hold our pipe open. */
		close(p[1]);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		char sink[4096];

		if (got + 1 < n)
			r = read(p[0], out + got, n - 1 - got);
		else
			r = read(p[0], sink, sizeof(sink));  /* keep the child unblocked */
		if (r <= 0)
			break;
		if (got + 1 < n)
			got += (size_t)r;
	}
	out[got] = '\0';
	close(p[0]);
	st = h_wait(pid, 15000);
	return st;
}

void h_pgtmp(const char *cmd)
{
	char bin[512], out[2048];
	const char *dir = getenv("PGB_TEST_PGDIR");

	cr_assert_not_null(dir, "PGB_TEST_PGDIR is not set");
	const char *argv[] = { "/bin/sh", h_bin("tools/pgtmp.sh", bin, sizeof(bin)), cmd, dir, NULL };
	cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "pgtmp.sh %s: %s", cmd, out);
}

long long h_backends(PGconn *pg, const struct h_broker *br, const char *where)
{
	char sql[512];

	snprintf(sql, sizeof(sql), "select count(*) from pg_stat_activity where "
		 "application_name = '%s'%s%s", strrchr(br->dir, '/') + 1, where ? " and " : "",
		 where ? where : "");
	return h_pg_num(pg, sql);
}

pgb_conn *h_connect(const struct h_broker *br)
{
	pgb_conn *c = pgb_connect(br->dir);

	cr_assert_not_null(c);
	cr_assert_eq(pgb_status(c), PGB_CONNECTION_OK, "connect: %s", pgb_error_message(c));
	return c;
}

pgb_result *h_ok(pgb_conn *c, const char *sql)
{
	pgb_result *r = pgb_exec(c, sql);

	cr_assert(pgb_result_ok(r), "%s: %s %s", sql, pgb_sqlstate(r), pgb_result_error(r));
	return r;
}

long long h_num(pgb_conn *c, const char *sql)
{
	pgb_result *r = h_ok(c, sql);
	long long v;

	cr_assert_gt(pgb_ntuples(r), 0, "%s returned no rows", sql);
	v = atoll(pgb_getvalue(r, 0, 0));
	pgb_clear(r);
	return v;
}

PGconn *h_pg(void)
{
	PGconn *pg = PQconnectdb(h_dsn());

	cr_assert_eq(PQstatus(pg), CONNECTION_OK, "direct connect: %s", PQerrorMessage(pg));
	return pg;
}

long long h_pg_num(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);
	long long v = -1;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		v = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

pid_t h_fork(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0)
		_exit(fn(arg));
	return pid;
}

int h_wait(pid_t pid, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -1;
		if (h_now_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return -1;
		}
		usleep(2000);
	}
}

int h_until(int (*cond)(void *), void *arg, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;

	for (;;) {
		if (cond(arg))
			return 1;
		if (h_now_ms() >= end)
			return 0;
		usleep(5000);
	}
}

/* useradd/userdel take a lock on /etc/passwd: tests of other engineers may
 * hold it for a moment, so a failure to lock is retried (bounded). */
static int run_quiet(const char *const *argv)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	return pid < 0 ? -1 : h_wait(pid, 30000);
}

void h_user_add(struct h_user *u)
{
	const char *del[] = { "/usr/sbin/userdel", u->name, NULL };
	const char *add[] = { "/usr/sbin/useradd", "--system", "--user-group", "--no-create-home",
			      "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
			      u->name, NULL };
	struct passwd *pw;
	int st = -1;

	if (geteuid() != 0)
		cr_skip_test("needs root to create a second local user");
	snprintf(u->name, sizeof(u->name), "pgbt%d", (int)getpid());
	for (int tries = 0; tries < 100; tries++) {
		st = run_quiet(add);
		if (st == 0)
			break;
		if (st == 9)	/* left by a test killed before its clean-up */
			run_quiet(del);
		else
			usleep(100000);
	}
	cr_assert_eq(st, 0, "useradd %s: exit %d", u->name, st);
	pw = getpwnam(u->name);
	cr_assert_not_null(pw, "useradd made no %s", u->name);
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
}

void h_user_del(struct h_user *u)
{
	const char *del[] = { "/usr/sbin/userdel", u->name, NULL };

	if (!u->name[0])
		return;
	for (int tries = 0; tries < 100 && run_quiet(del) != 0 && getpwnam(u->name); tries++)
		usleep(100000);
	u->name[0] = '\0';
}

void h_become(const struct h_user *u)
{
	if (setgroups(0, NULL) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)
		_exit(120);
}

struct chan_shm *h_raw_register(const struct h_broker *br, int *sock, uint64_t *size, int *bell_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct reg_hello h = { .magic = REG_MAGIC, .version = CHAN_VERSION,
			       .flags = REG_F_BELL_EVENTFD };
	struct reg_reply rep;
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	int fds[3] = { -1, -1, -1 };
	struct iovec iov = { &rep, sizeof(rep) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	int fd;
	void *map;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", br->dir);
	*sock = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(connect(*sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(send(*sock, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(recvmsg(*sock, &msg, 0), (ssize_t)sizeof(rep));
	cr_assert(rep.nfds >= 2 && rep.nfds <= 3);
	memcpy(fds, CMSG_DATA(CMSG_FIRSTHDR(&msg)), rep.nfds * sizeof(int));
	fd = fds[0];
	*bell_fd = rep.nfds == 3 ? fds[2] : -1;
	*size = rep.chan_size;
	map = mmap(NULL, rep.chan_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	/* the channel is sealed: it cannot be shrunk under the broker */
	cr_assert_neq(ftruncate(fd, 0), 0);
	close(fd);
	return map;
}

int h_raw_ring(struct chan_shm *ch, int bell_fd)
{
	static const uint64_t one = 1;

	__atomic_add_fetch(&ch->broker_bell, 1, __ATOMIC_SEQ_CST);
	if (ch->bell_kind == CHAN_BELL_EVENTFD)
		return write(bell_fd, &one, sizeof(one)) == (ssize_t)sizeof(one) ? 0 : -errno;
	futex_wake(&ch->broker_bell);
	return 0;
}

int h_stats(const char *dir, struct stats_data *d)
{
	struct stats_map m;
	struct stats_snap s = { 0 };
	char err[256];
	int rc;

	if (stats_map_open(dir, &m, err, sizeof(err)) < 0)
		return -1;
	rc = stats_read(m.seg, &s);
	stats_map_close(&m);
	if (rc < 0)
		return -1;
	*d = s.d;
	return 0;
}

void h_asan_no_quarantine(void)
{
#if defined(__SANITIZE_ADDRESS__)
	char asan[512];

	snprintf(asan, sizeof(asan), "%s:quarantine_size_mb=0:thread_local_quarantine_size_kb=0",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
	setenv("ASAN_OPTIONS", asan, 1);
#endif
}
