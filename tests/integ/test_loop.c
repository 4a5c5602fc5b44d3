/* The event loop backends: a broker whose io_uring is blocked by seccomp
 * (as Docker's default profile does) falls back to epoll and serves agents;
 * loop = io_uring then refuses to start (exit 2); an agent that cannot ring
 * an eventfd bell is refused clearly by a broker on epoll. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "chan.h"
#include "harness.h"

TestSuite(loop, .timeout = 180);

#define AGENTS 8
#define STATEMENTS 200

static const char *read_log(const struct h_broker *br, char *buf, size_t n)
{
	int fd = open(br->log, O_RDONLY);
	ssize_t got = fd >= 0 ? read(fd, buf, n - 1) : -1;

	buf[got > 0 ? got : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return buf;
}

/* Run the broker under tools/no_uring, in auto mode whatever the suite's
 * environment says. */
static void under_seccomp(void)
{
	static char wrap[512];

	h_bin("tools/no_uring", wrap, sizeof(wrap));
	cr_assert_eq(access(wrap, X_OK), 0, "%s is not built (make tools/no_uring)", wrap);
	setenv("PGB_BROKER_WRAPPER", wrap, 1);
	unsetenv("PGBROKER_LOOP");
}

static int agent_load(void *arg)
{
	const struct h_broker *br = arg;
	pgb_conn *c = pgb_connect(br->dir);
	int bad = 0;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	for (int i = 0; i < STATEMENTS; i++) {
		char sql[64];
		pgb_result *r;

		snprintf(sql, sizeof(sql), "select %d", i);
		r = pgb_exec(c, sql);
		if (!pgb_result_ok(r) || atoi(pgb_getvalue(r, 0, 0)) != i)
			bad++;
		pgb_clear(r);
	}
	/* A transaction pins a backend across statements on epoll too. */
	pgb_clear(pgb_exec(c, "begin"));
	pgb_result *r = pgb_exec(c, "select txid_current() = txid_current()");
	if (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), "t") != 0)
		bad++;
	pgb_clear(r);
	pgb_clear(pgb_exec(c, "commit"));
	pgb_finish(c);
	return bad ? 1 : 0;
}

Test(loop, seccomp_blocked_io_uring_falls_back_to_epoll)
{
	struct h_broker br = { 0 };
	const char *args[] = { "--pool-size", "4", "--min-pool-size", "1", NULL };
	pid_t pids[AGENTS];
	char log[8192];

	under_seccomp();
	h_broker_start(&br, args);
	for (int i = 0; i < AGENTS; i++)
		pids[i] = h_fork(agent_load, &br);
	for (int i = 0; i < AGENTS; i++)
		cr_assert_eq(h_wait(pids[i], 120000), 0, "agent %d failed", i);
	read_log(&br, log, sizeof(log));
	cr_assert(strstr(log, "io_uring blocked (seccomp or io_uring_disabled): using epoll"),
		  "log does not say why epoll runs:\n%s", log);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* etc/seccomp-pgbroker.json, the example profile for a broker's container,
 * loaded with libseccomp as Docker would load it: everything but the
 * calls it names fails with EPERM. The broker runs on io_uring under it
 * (where the kernel has io_uring at all), serves agents, reloads and
 * stops cleanly. */
Test(loop, seccomp_profile_example_lets_the_broker_run)
{
	static char wrap[1200];
	char py[64] = "python3", tool[512], prof[512], text[16384], log[8192];
	struct h_broker br = { 0 };
	const char *args[] = { "--pool-size", "4", "--min-pool-size", "1", NULL };
	pid_t pids[AGENTS / 2];
	int fd;
	ssize_t n;

	h_bin("tools/seccomp_profile.py", tool, sizeof(tool));
	h_bin("etc/seccomp-pgbroker.json", prof, sizeof(prof));
	fd = open(prof, O_RDONLY);
	cr_assert_geq(fd, 0, "%s: %s", prof, strerror(errno));
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	cr_assert_gt(n, 0);
	text[n] = '\0';
	for (const char *const *sc = (const char *const[]){ "\"io_uring_setup\"",
		"\"io_uring_enter\"", "\"io_uring_register\"", "\"epoll_wait\"",
		"\"memfd_create\"", NULL }; *sc; sc++)
		cr_assert(strstr(text, *sc), "the profile does not name %s", *sc);
	if (access("/usr/bin/python3", X_OK) == 0)
		snprintf(py, sizeof(py), "/usr/bin/python3");
	snprintf(wrap, sizeof(wrap), "%s %s %s", py, tool, prof);
	setenv("PGB_BROKER_WRAPPER", wrap, 1);
	/* In a sanitizer build LeakSanitizer's check at exit ptraces the
	 * broker, which the profile refuses, as it should. */
	const char *ao = getenv("ASAN_OPTIONS");
	static char asan[512];
	snprintf(asan, sizeof(asan), "%s%sdetect_leaks=0", ao ? ao : "", ao && *ao ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	unsetenv("PGBROKER_LOOP");
	h_broker_start(&br, args);
	for (int i = 0; i < AGENTS / 2; i++)
		pids[i] = h_fork(agent_load, &br);
	for (int i = 0; i < AGENTS / 2; i++)
		cr_assert_eq(h_wait(pids[i], 120000), 0, "agent %d failed", i);
	cr_assert_eq(kill(br.pid, SIGHUP), 0);
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 5"), 5);
	pgb_finish(c);
	read_log(&br, log, sizeof(log));
	cr_assert_null(strstr(log, "io_uring blocked"), "the profile blocks io_uring:\n%s", log);
	cr_assert_eq(h_broker_stop(&br), 0, "log:\n%s", read_log(&br, log, sizeof(log)));
}

Test(loop, seccomp_blocked_io_uring_required_exits_2)
{
	char wrap[512], bin[512], dir[128], out[4096];
	const char *argv[] = { wrap, bin, "--dir", dir, "--loop", "io_uring", NULL };

	under_seccomp();
	h_bin("tools/no_uring", wrap, sizeof(wrap));
	h_bin("broker/pgbroker", bin, sizeof(bin));
	h_mkdtemp(dir, sizeof(dir), "pgb-loop");
	cr_assert_eq(h_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "io_uring blocked"), "%s", out);
	cr_assert(strstr(out, "loop = auto"), "the fix is not named: %s", out);
}

Test(loop, bad_loop_value_exits_2)
{
	char bin[512], out[4096];
	const char *argv[] = { bin, "--loop", "select", "--check-config", NULL };

	h_bin("broker/pgbroker", bin, sizeof(bin));
	cr_assert_eq(h_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "auto, io_uring, epoll"), "%s", out);
}

/* An agent whose library predates the eventfd bell says nothing of it in
 * its hello: a broker on epoll could not hear it, and tells it so. */
Test(loop, epoll_refuses_agent_without_eventfd_bell)
{
	struct h_broker br = { 0 };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct reg_hello h = { .magic = REG_MAGIC, .version = CHAN_VERSION };
	struct reg_reply rep;
	const char *args[] = { "--loop", "epoll", NULL };
	int sock;

	h_broker_start(&br, args);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", br.dir);
	sock = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(connect(sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(send(sock, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(recv(sock, &rep, sizeof(rep), MSG_WAITALL), (ssize_t)sizeof(rep));
	cr_assert_neq(rep.status, 0);
	rep.message[sizeof(rep.message) - 1] = '\0';
	cr_assert(strstr(rep.message, "relink"), "%s", rep.message);
	close(sock);
	/* ...and still serves agents that can. */
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 7"), 7);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A broker and an agent in separate mount namespaces, as in two
 * containers: the agent sees the run directory only through a bind mount
 * at another path (a shared volume), its /dev/shm is its own empty tmpfs
 * and the broker's path is hidden under another tmpfs. The channel is a
 * memfd that crosses the socket, so nothing else needs sharing. Needs
 * CAP_SYS_ADMIN (root): skipped without. */
struct ns_arg {
	const char *dir;      /* the broker's run directory */
	char vol[128];        /* where the agent mounts it */
};

static int agent_in_namespace(void *p)
{
	struct ns_arg *x = p;
	char hide[192];
	pgb_conn *c;
	pgb_result *r;
	int ok;

	snprintf(hide, sizeof(hide), "%s", x->dir);
	*strrchr(hide, '/') = '\0';
	if (unshare(CLONE_NEWNS) < 0)
		return 77;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") < 0 ||
	    mkdir(x->vol, 0755) < 0 || mount(x->dir, x->vol, NULL, MS_BIND, NULL) < 0 ||
	    mount("tmpfs", hide, "tmpfs", 0, "size=1m") < 0)
		return 3;
	if (access(x->dir, F_OK) == 0)
		return 4;	/* the broker's own path must be gone here */
	c = pgb_connect(x->vol);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 5;
	r = pgb_exec(c, "select 40 + 2");
	ok = pgb_result_ok(r) && strcmp(pgb_getvalue(r, 0, 0), "42") == 0;
	pgb_clear(r);
	pgb_finish(c);
	return ok ? 0 : 6;
}

Test(loop, agent_in_another_mount_namespace)
{
	struct h_broker br = { 0 };
	struct ns_arg x;
	char base[128];
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root for unshare(CLONE_NEWNS)");
	/* The broker's directory one level down, so that its parent can be
	 * hidden in the agent's namespace. */
	h_mkdtemp(base, sizeof(base), "pgb-ns");
	cr_assert_lt(strlen(base) + sizeof("/run"), sizeof(br.dir));
	snprintf(br.dir, sizeof(br.dir), "%.58s/run", base);
	cr_assert_eq(mkdir(br.dir, 0755), 0);
	snprintf(x.vol, sizeof(x.vol), "/tmp/pgb-ns-vol.%d", (int)getpid());
	x.dir = br.dir;
	h_broker_start(&br, NULL);
	rc = h_wait(h_fork(agent_in_namespace, &x), 60000);
	rmdir(x.vol);
	if (rc == 77)
		cr_skip_test("unshare(CLONE_NEWNS) not permitted here");
	cr_assert_eq(rc, 0, "agent in its own mount namespace failed at step %d", rc);
	cr_assert_eq(h_broker_stop(&br), 0);
	rmdir(base);
}
