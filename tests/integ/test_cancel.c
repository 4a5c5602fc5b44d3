/* Cancel requests that take their time: the broker reaches PostgreSQL
 * through a small unix-socket relay that forwards sessions and holds every
 * cancel request until the test lets it go, so a backend can change its
 * state (finish, die) while its cancel thread is still out. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define CANCEL_CODE 80877102

static struct h_broker br;

struct relay {
	char dir[64];           /* its socket: DIR/.s.PGSQL.5432 */
	char pgdir[512];        /* PostgreSQL's socket directory */
	volatile int cancels;   /* cancel requests being held */
	volatile int release;   /* set: answer them (close) */
	volatile int answered;  /* cancel requests answered */
};

static int unix_socket(const char *dir, int listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/.s.PGSQL.5432", dir);
	if (fd < 0)
		return -1;
	if (listening ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0
		      : connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int read_full(int fd, void *buf, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t k = read(fd, (char *)buf + got, n - got);

		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

/* One client of the relay: a cancel request is held, anything else is
 * passed through both ways until either side closes. */
static void relay_client(struct relay *rl, int cfd)
{
	unsigned char head[8];
	struct pollfd pf[2];
	char buf[65536];
	int up;

	if (read_full(cfd, head, sizeof(head)) < 0)
		_exit(0);
	if (((uint32_t)head[4] << 24 | (uint32_t)head[5] << 16 | (uint32_t)head[6] << 8 |
	     head[7]) == CANCEL_CODE) {
		long long until = h_now_ms() + 60000;	/* bounded: the test's own limit */

		__atomic_add_fetch(&rl->cancels, 1, __ATOMIC_SEQ_CST);
		while (!__atomic_load_n(&rl->release, __ATOMIC_SEQ_CST) && h_now_ms() < until)
			usleep(5000);
		__atomic_add_fetch(&rl->answered, 1, __ATOMIC_SEQ_CST);
		_exit(0);	/* closing is the postmaster's answer */
	}
	if ((up = unix_socket(rl->pgdir, 0)) < 0 || write(up, head, sizeof(head)) != sizeof(head))
		_exit(0);
	pf[0] = (struct pollfd){ .fd = cfd, .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = up, .events = POLLIN };
	for (;;) {
		if (poll(pf, 2, -1) < 0)
			_exit(0);
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (!pf[i].revents)
				continue;
			n = read(pf[i].fd, buf, sizeof(buf));
			if (n <= 0 || write(pf[1 - i].fd, buf, (size_t)n) != n)
				_exit(0);
		}
	}
}

static int relay_main(void *arg)
{
	struct relay *rl = arg;
	int lfd;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	lfd = unix_socket(rl->dir, 1);

	if (lfd < 0)
		return 1;
	for (;;) {
		int cfd = accept(lfd, NULL, NULL);

		if (cfd < 0)
			continue;
		if (fork() == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(lfd);
			relay_client(rl, cfd);
		}
		close(cfd);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
}

static int relay_listening(void *arg)
{
	struct relay *rl = arg;
	char path[128];

	snprintf(path, sizeof(path), "%s/.s.PGSQL.5432", rl->dir);
	return access(path, F_OK) == 0;
}

static pid_t relay_start(struct relay *rl, char *dsn, size_t n)
{
	const char *host = getenv("PGB_TEST_PGDIR");
	pid_t pid;

	cr_assert_not_null(host, "PGB_TEST_PGDIR is not set");
	snprintf(rl->pgdir, sizeof(rl->pgdir), "%s", host);
	h_mkdtemp(rl->dir, sizeof(rl->dir), "pgb-relay");
	pid = h_fork(relay_main, rl);
	cr_assert(h_until(relay_listening, rl, 5000), "the relay did not start");
	snprintf(dsn, n, "host=%s port=5432 user=postgres dbname=postgres", rl->dir);
	return pid;
}

static int sleeper(void *arg)
{
	int fd = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);

	(void)!write(fd, "x", 1);
	pgb_clear(pgb_exec(c, "select pg_sleep(0.5) /* slow-cancel */"));
	pause();
	return 0;
}

static int cancel_held(void *arg)
{
	struct relay *rl = arg;

	return __atomic_load_n(&rl->cancels, __ATOMIC_SEQ_CST) > 0;
}

/* The broker's backend sits idle after the statement ran to its end. */
static int sleep_finished(void *arg)
{
	return h_backends(arg, &br, "query like '%slow-cancel%' and state = 'idle'") == 1;
}

static int sleep_running(void *arg)
{
	return h_backends(arg, &br, "query like '%slow-cancel%' and state = 'active'") == 1;
}

static int cancel_answered(void *arg)
{
	struct relay *rl = arg;

	return __atomic_load_n(&rl->answered, __ATOMIC_SEQ_CST) > 0;
}

static struct pgb_health h;

/* Every backend the pool counts is one PostgreSQL has, and idle. */
static int pool_counts_right(void *arg)
{
	return pgb_pool_health(br.dir, &h) == 0 && h.total == h_backends(arg, &br, NULL) &&
	       h.idle == h.total;
}

static int pool_miscounted(void *arg)
{
	return !pool_counts_right(arg);
}

static int dead_one_gone(void *arg)
{
	return h_backends(arg, &br, "query like '%slow-cancel%'") == 0 && pool_counts_right(arg);
}

/* A backend waiting for its cancel thread dies; the thread comes back
 * later. The pool must not count or hand out the dead slot again. */
Test(cancel, backend_dying_while_its_cancel_is_out, .timeout = 60)
{
	struct relay *rl = mmap(NULL, sizeof(*rl), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char dsn[1024];
	PGconn *pg = h_pg();
	pid_t relay, child;
	pgb_conn *c;
	int p[2];
	char x;

	cr_assert_neq(rl, MAP_FAILED);
	memset(rl, 0, sizeof(*rl));
	relay = relay_start(rl, dsn, sizeof(dsn));
	h_mkdtemp(br.dir, sizeof(br.dir), "pgb-test");
	snprintf(dsn + strlen(dsn), sizeof(dsn) - strlen(dsn), " application_name=%s",
		 strrchr(br.dir, '/') + 1);
	const char *extra[] = { "--dsn", dsn, "--min-pool-size", "0", "--pool-size", "2",
				"--max-pool-size", "2", "--acquire-timeout-ms", "3000", NULL };
	h_broker_start(&br, extra);

	/* an agent dies mid-statement: the broker cancels, the relay holds it */
	cr_assert_eq(pipe(p), 0);
	child = h_fork(sleeper, &p[1]);
	cr_assert_eq(read(p[0], &x, 1), 1);
	cr_assert(h_until(sleep_running, pg, 5000), "statement never started");
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	cr_assert(h_until(cancel_held, rl, 5000), "no cancel request reached the relay");
	/* the statement ends by itself; its backend waits for the cancel */
	cr_assert(h_until(sleep_finished, pg, 5000), "the statement did not finish");
	/* ...and dies while it waits */
	PQclear(PQexec(pg, "select pg_terminate_backend(pid) from pg_stat_activity "
			   "where query like '%slow-cancel%' and pid <> pg_backend_pid()"));
	cr_assert(h_until(dead_one_gone, pg, 5000), "the dead backend is still counted");
	/* now the cancel thread comes back */
	__atomic_store_n(&rl->release, 1, __ATOMIC_SEQ_CST);
	cr_assert(h_until(cancel_answered, rl, 5000));
	cr_expect_not(h_until(pool_miscounted, pg, 300), "pool counts drifted: total %d idle %d",
		      h.total, h.idle);

	c = h_connect(&br);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(h_num(c, "select 7"), 7);
	pgb_finish(c);
	cr_assert_eq(pgb_pool_health(br.dir, &h), 0, "%s", h.error);
	cr_expect_leq(h.total, 2, "pool total %d beyond max_pool_size", h.total);
	cr_assert_eq(h_broker_stop(&br), 0);
	PQfinish(pg);
	kill(relay, SIGKILL);
	waitpid(relay, NULL, 0);
}
