/* The client library's own promises: what a forked child may and may not
 * touch, how every wait ends when the broker dies (blocking calls, the
 * pgb_socket fd, statements in flight), sends that outrun both rings, and
 * a registration answer that does not add up. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chan.h"
#include "harness.h"

static struct h_broker br;

/* Child of a process with a statement in flight: it must get PB007 for
 * everything and leave the parent's channel (ring and eventfd) alone. */
static int child_of_sender(pgb_conn *c)
{
	long long id = 1;
	pgb_result *r;
	int rc = 0;

	/* the parent's answer is in the ring already */
	if (pgb_status(c) != PGB_CONNECTION_BAD)
		rc |= 1;
	if (pgb_socket(c) != -1)
		rc |= 2;
	r = pgb_try_result(c, &id);
	if (r && strcmp(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED) != 0)
		rc |= 4;
	pgb_clear(r);
	r = pgb_get_result(c, &id);
	if (r && strcmp(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED) != 0)
		rc |= 8;
	pgb_clear(r);
	pgb_finish(c);
	return rc;
}

Test(client, forked_child_leaves_its_parents_results_alone, .timeout = 60)
{
	struct pollfd p;
	long long id, got;
	pgb_conn *c;
	pgb_result *r;
	pid_t pid;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	p = (struct pollfd){ .fd = pgb_socket(c), .events = POLLIN };
	id = pgb_send(c, "select pg_sleep(0.2), 7", 0, NULL, 0);
	cr_assert_gt(id, 0);
	cr_assert_null(pgb_try_result(c, &got));
	cr_assert_eq(poll(&p, 1, 10000), 1, "the parent's pgb_socket never became readable");
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0)
		_exit(child_of_sender(c));
	cr_assert_eq(h_wait(pid, 10000), 0, "the child used its parent's connection");
	r = pgb_try_result(c, &got);
	cr_assert_not_null(r, "the parent's result is gone");
	cr_assert_eq(got, id);
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_str_eq(pgb_getvalue(r, 0, 1), "7");
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 2"), 2);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Opens a transaction holding a row lock, forks a child that lives on
 * without touching the connection, reports the child's pid, and waits to
 * be killed. */
static int txn_then_fork(void *arg)
{
	int fd = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;
	pid_t kid;

	pgb_clear(pgb_exec(c, "begin"));
	r = pgb_exec(c, "update t_forkdie set v = v + 1 where k = 1");
	if (!pgb_result_ok(r))
		return 1;
	pgb_clear(r);
	kid = fork();
	if (kid == 0) {
		sleep(60);  /* outlives its parent; the test kills it */
		_exit(0);
	}
	(void)!write(fd, &kid, sizeof(kid));
	pause();
	return 0;
}

static int no_idle_in_txn(void *arg)
{
	return h_backends(arg, &br, "state like 'idle in transaction%'") == 0;
}

Test(client, agent_dying_with_a_forked_child_alive_is_noticed, .timeout = 60)
{
	PGconn *pg = h_pg();
	pgb_conn *c;
	pid_t agent, kid;
	int p[2];

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists t_forkdie; create table t_forkdie (k int primary key, v int);"
			  "insert into t_forkdie values (1, 0)"));
	cr_assert_eq(pipe(p), 0);
	agent = h_fork(txn_then_fork, &p[1]);
	cr_assert_eq(read(p[0], &kid, sizeof(kid)), (ssize_t)sizeof(kid),
		     "the agent never took its lock");
	cr_assert_eq(h_backends(pg, &br, "state = 'idle in transaction'"), 1);
	kill(agent, SIGKILL);
	waitpid(agent, NULL, 0);
	/* its child still lives: it must not keep the dead agent registered */
	int closed = h_until(no_idle_in_txn, pg, 5000);
	kill(kid, SIGKILL);
	cr_assert(closed, "the dead agent's transaction stayed open while its child lived");
	pgb_clear(h_ok(c, "update t_forkdie set v = v + 1 where k = 1"));
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The broker runs "select pg_sleep(20)" on one of its backends. */
static int sleep_running(void *arg)
{
	PGconn *pg = h_pg();
	long long n = h_backends(pg, arg, "query = 'select pg_sleep(20)' and state = 'active'");

	PQfinish(pg);
	return n > 0;
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* An agent whose process takes a timer signal every 20 ms, waiting on a
 * long statement when the broker is killed. */
static int waiter_under_signals(void *arg)
{
	int fd = *(int *)arg;
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { { 0, 20000 }, { 0, 20000 } };
	pgb_conn *c = pgb_connect(br.dir);
	long long t0;
	pgb_result *r;
	int rc;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART */
	setitimer(ITIMER_REAL, &it, NULL);
	(void)!write(fd, "x", 1);
	t0 = h_now_ms();
	r = pgb_exec(c, "select pg_sleep(20)");
	rc = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_BROKER_GONE) == 0 ? 0 : 1;
	if (h_now_ms() - t0 > 3000)
		rc = 2;
	pgb_clear(r);
	pgb_finish(c);
	return rc;
}

Test(client, broker_death_is_seen_under_frequent_signals, .timeout = 60)
{
	pid_t kid;
	int p[2];
	char x;

	h_broker_start(&br, NULL);
	cr_assert_eq(pipe(p), 0);
	kid = h_fork(waiter_under_signals, &p[1]);
	cr_assert_eq(read(p[0], &x, 1), 1);
	cr_assert(h_until(sleep_running, &br, 10000), "the statement never started");
	h_broker_kill(&br);
	cr_assert_eq(h_wait(kid, 10000), 0, "the agent did not see the broker go");
}

Test(client, statements_in_flight_when_the_broker_dies_have_unknown_fate, .timeout = 60)
{
	long long ids[3], got;
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	for (int i = 0; i < 3; i++) {
		ids[i] = pgb_send(c, "select pg_sleep(20)", 0, NULL, PGB_INDEPENDENT);
		cr_assert_gt(ids[i], 0);
	}
	cr_assert(h_until(sleep_running, &br, 10000), "the statements never started");
	h_broker_kill(&br);
	for (int i = 0; i < 3; i++) {
		r = pgb_get_result(c, &got);
		cr_assert_not_null(r, "statement %d has no answer", i);
		cr_assert(got == ids[0] || got == ids[1] || got == ids[2], "unknown id %lld", got);
		/* they were sent and may have run: not "never sent" */
		cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BROKER_GONE, "statement %d: %s", i,
				 pgb_result_error(r));
		cr_assert_eq(pgb_sqlstate_ran(pgb_sqlstate(r)), PGB_RAN_UNKNOWN);
		pgb_clear(r);
	}
	cr_assert_null(pgb_get_result(c, &got));
	cr_assert_eq(pgb_in_flight(c), 0);
	/* a statement sent now never leaves: PB007 */
	r = pgb_exec(c, "select 1");
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED);
	pgb_clear(r);
	pgb_finish(c);
}

Test(client, socket_becomes_readable_when_the_broker_dies, .timeout = 60)
{
	struct pollfd p;
	long long id, got;
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	p = (struct pollfd){ .fd = pgb_socket(c), .events = POLLIN };
	cr_assert_geq(p.fd, 0);
	id = pgb_send(c, "select pg_sleep(20)", 0, NULL, 0);
	cr_assert_gt(id, 0);
	cr_assert_null(pgb_try_result(c, &got));
	cr_assert(h_until(sleep_running, &br, 10000), "the statement never started");
	h_broker_kill(&br);
	r = NULL;
	for (int i = 0; i < 10 && !r; i++) {
		cr_assert_eq(poll(&p, 1, 3000), 1, "pgb_socket stayed quiet after the broker died");
		r = pgb_try_result(c, &got);
	}
	cr_assert_not_null(r, "pgb_try_result never reported the broker gone");
	cr_assert_eq(got, id);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BROKER_GONE, "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(pgb_status(c), PGB_CONNECTION_BAD);
	pgb_finish(c);
}

Test(client, sends_that_fill_both_rings_all_complete, .timeout = 90)
{
	const char *args[] = { "--max-inflight-per-agent", "8", "--send-timeout-ms", "3000", NULL };
	enum { N = 8000 };
	pgb_conn *c;
	int got = 0;

	h_broker_start(&br, args);
	c = h_connect(&br);
	/* 2 kB answers fill the response ring after some 120; then the broker
	 * stops reading requests, and the request ring fills in turn */
	for (int i = 0; i < N; i++) {
		long long id = pgb_send(c, "select repeat('f', 2000)", 0, NULL, 0);

		cr_assert_gt(id, 0, "send %d: %s", i, pgb_error_message(c));
	}
	while (pgb_in_flight(c) > 0 || got < N) {
		pgb_result *r = pgb_get_result(c, NULL);

		cr_assert_not_null(r, "only %d of %d answers", got, N);
		cr_assert(pgb_result_ok(r), "answer %d: %s", got, pgb_result_error(r));
		cr_assert_eq(pgb_getlength(r, 0, 0), 2000);
		pgb_clear(r);
		got++;
	}
	cr_assert_eq(got, N);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A fake broker that answers one registration with a channel whose memfd
 * is smaller than the ring size it announces, then waits to be killed. */
static void fake_broker(int lsock)
{
	uint32_t ring = 1u << 20;
	struct reg_reply rep = { .magic = REG_MAGIC, .version = CHAN_VERSION,
				 .ring_size = ring, .chan_size = chan_size_for(ring), .nfds = 2 };
	struct reg_hello hello;
	char cbuf[CMSG_SPACE(2 * sizeof(int))] = { 0 };
	struct iovec iov = { &rep, sizeof(rep) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	int fds[2], a = accept(lsock, NULL, NULL);
	struct chan_shm *ch;

	fds[0] = memfd_create("short-channel", 0);
	fds[1] = eventfd(0, EFD_NONBLOCK);
	if (a < 0 || fds[0] < 0 || fds[1] < 0 || ftruncate(fds[0], CHAN_HDR_SIZE) < 0 ||
	    read(a, &hello, sizeof(hello)) != (ssize_t)sizeof(hello))
		_exit(1);
	ch = mmap(NULL, CHAN_HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	if (ch == MAP_FAILED)
		_exit(1);
	ch->magic = CHAN_MAGIC;
	ch->version = CHAN_VERSION;
	ch->ring_size = ring;
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	if (sendmsg(a, &msg, 0) != (ssize_t)sizeof(rep))
		_exit(1);
	pause();
	_exit(0);
}

static int use_short_channel(void *arg)
{
	pgb_conn *c = pgb_connect(arg);
	pgb_result *r;
	int rc;

	if (pgb_status(c) == PGB_CONNECTION_BAD)
		rc = strstr(pgb_error_message(c), "malformed") ? 0 : 2;
	else {
		r = pgb_exec(c, "select 1");  /* writes past the memfd's end */
		rc = 3;
		pgb_clear(r);
	}
	pgb_finish(c);
	return rc;
}

Test(client, channel_smaller_than_announced_is_refused, .timeout = 30)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[64];
	pid_t fake, agent;
	int lsock, rc;

	h_mkdtemp(dir, sizeof(dir), "fake");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", dir);
	lsock = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(lsock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(lsock, 4), 0);
	fake = fork();
	cr_assert_neq(fake, -1);
	if (fake == 0)
		fake_broker(lsock);
	close(lsock);
	agent = h_fork(use_short_channel, dir);
	rc = h_wait(agent, 10000);
	kill(fake, SIGKILL);
	waitpid(fake, NULL, 0);
	unlink(sa.sun_path);
	rmdir(dir);
	cr_assert_eq(rc, 0, "the agent %s", rc == 128 + SIGBUS ? "died of SIGBUS" :
		     "accepted a channel smaller than announced");
}

Test(client, too_many_parameters_is_a_bad_argument, .timeout = 30)
{
	static const char *values[70000];
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	for (int i = 0; i < 70000; i++)
		values[i] = "1";
	r = pgb_exec_params(c, "select $1", 70000, values);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BAD_REQUEST, "%s", pgb_result_error(r));
	cr_assert(strstr(pgb_result_error(r), "parameters") != NULL, "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 3"), 3);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}
