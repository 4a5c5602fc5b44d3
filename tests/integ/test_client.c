/* The client library's own promises: what a forked child may and may not
 * touch, how every wait ends when the broker dies (blocking calls, the
 * pgb_socket fd, statements in flight), and sends that outrun both rings. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

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
	usleep(300 * 1000);
	h_broker_kill(&br);
	cr_assert_eq(h_wait(kid, 10000), 0, "the agent did not see the broker go");
}
