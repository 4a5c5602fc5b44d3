/* Notifications without pinning: LISTEN through the broker, delivery from
 * agents and from plain libpq clients, many listener processes on a small
 * pool, a queue that overflows, and a listening connection that is killed.
 * Every wait is bounded; nothing sleeps for a fixed time. */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define WAIT_MS 30000

static struct h_broker br;

static void stop(void)
{
	cr_expect_eq(h_broker_stop(&br), 0, "broker did not exit cleanly");
}

TestSuite(notify, .fini = stop, .timeout = 240);

static int snap(struct stats_data *d)
{
	return h_stats(br.dir, d);
}

static uint64_t delivered_want;

static int delivered_reached(void *arg)
{
	struct stats_data *d = arg;

	return snap(d) == 0 && d->c.notify_delivered >= delivered_want;
}

/* The stats once they count n notifications delivered (the segment is
 * published at the end of the broker's loop pass, perhaps after an agent
 * already took the last one). */
static void snap_delivered(struct stats_data *d, uint64_t n)
{
	delivered_want = n;
	cr_assert(h_until(delivered_reached, d, WAIT_MS), "delivered %llu, not %llu",
		  (unsigned long long)d->c.notify_delivered, (unsigned long long)n);
}

/* The next notification within ms, waiting on pgb_socket; NULL after. */
static pgb_notify *next_notify(pgb_conn *c, int ms)
{
	long long end = h_now_ms() + ms;

	for (;;) {
		pgb_notify *n = pgb_notifies(c);
		struct pollfd p = { .fd = pgb_socket(c), .events = POLLIN };
		long long left = end - h_now_ms();

		if (n || left <= 0 || p.fd < 0)
			return n;
		poll(&p, 1, (int)(left > 1000 ? 1000 : left));
	}
}

static void expect_notify(pgb_conn *c, const char *chan, const char *extra, int from_broker)
{
	pgb_notify *n = next_notify(c, WAIT_MS);

	cr_assert_not_null(n, "no notification on %s (%s) within %d ms", chan, extra, WAIT_MS);
	cr_expect_str_eq(n->relname, chan);
	if (extra)
		cr_expect_str_eq(n->extra, extra);
	if (from_broker)
		cr_expect_eq(n->be_pid, 0, "%s: %s from pid %d", n->relname, n->extra, n->be_pid);
	else
		cr_expect_gt(n->be_pid, 0, "%s: %s", n->relname, n->extra);
	pgb_freemem(n);
}

static void pg_do(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

Test(notify, from_an_agent_and_from_libpq_without_pinning)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "2",
			       NULL };
	PGconn *pg = h_pg();
	pgb_conn *l, *s;
	pgb_result *r;
	struct stats_data d;

	h_broker_start(&br, args);
	l = h_connect(&br);
	s = h_connect(&br);
	cr_assert_null(pgb_notifies(l), "a notification before any LISTEN");
	r = h_ok(l, "LISTEN nt_basic");
	cr_expect_str_eq(pgb_cmd_status(r), "LISTEN");
	pgb_clear(r);
	pgb_clear(h_ok(l, "listen \"Nt Quoted\""));
	/* from another agent, with and without a payload */
	pgb_clear(h_ok(s, "NOTIFY nt_basic, 'from an agent'"));
	expect_notify(l, "nt_basic", "from an agent", 0);
	pgb_clear(h_ok(s, "notify nt_basic"));
	expect_notify(l, "nt_basic", "", 0);
	/* from a plain libpq client, and through pg_notify */
	pg_do(pg, "select pg_notify('Nt Quoted', 'from libpq')");
	expect_notify(l, "Nt Quoted", "from libpq", 0);
	/* in commit order, and a rolled back one never */
	pg_do(pg, "begin; notify nt_basic, 'rolled back'; rollback");
	pg_do(pg, "begin; notify nt_basic, 'one'; notify nt_basic, 'two'; commit");
	expect_notify(l, "nt_basic", "one", 0);
	expect_notify(l, "nt_basic", "two", 0);
	/* the listener's statements run as before, on any backend */
	cr_expect_eq(h_num(l, "select 42"), 42);
	/* UNLISTEN ch: nothing more from it; order proves it (sent first) */
	r = h_ok(l, "UNLISTEN nt_basic");
	cr_expect_str_eq(pgb_cmd_status(r), "UNLISTEN");
	pgb_clear(r);
	pg_do(pg, "notify nt_basic, 'not heard'");
	pg_do(pg, "notify \"Nt Quoted\", 'heard'");
	expect_notify(l, "Nt Quoted", "heard", 0);
	/* UNLISTEN *: nothing from any; a new LISTEN works */
	pgb_clear(h_ok(l, "unlisten *"));
	pgb_clear(h_ok(l, "listen nt_after"));
	pg_do(pg, "notify \"Nt Quoted\", 'not heard'");
	pg_do(pg, "notify nt_after, 'after'");
	expect_notify(l, "nt_after", "after", 0);
	cr_expect_null(pgb_notifies(l));
	/* no backend was pinned for any of it */
	snap_delivered(&d, 7);
	cr_expect_eq(d.c.session_pins, 0, "LISTEN pinned a backend");
	cr_expect_eq(d.pool.pinned, 0);
	cr_expect_eq(h_backends(pg, &br, "state like 'idle in transaction%'"), 0);
	/* a LISTEN inside a batch or beside another statement still pins */
	pgb_finish(l);
	pgb_finish(s);
	PQfinish(pg);
}

/* 100 listener processes on 5 channels, 10 notifier processes, a pool of
 * 4: every notification reaches exactly the listeners of its channel, in
 * each notifier's order, with no backend pinned. */
#define NLISTEN 100
#define NCHAN 5
#define NNOTIFIER 10
#define NPER 20 /* notifications per notifier, spread over the channels */

struct fan {
	int ready[2];   /* listeners: one byte once listening */
	int go[2];      /* notifiers: start when readable */
	int idx;
};

static struct fan fan;

static int listener_main(void *arg)
{
	struct fan *f = arg;
	int ch = f->idx % NCHAN, got = 0, last[NNOTIFIER];
	char sql[64], want[16];
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;

	for (int i = 0; i < NNOTIFIER; i++)
		last[i] = -1;
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	snprintf(sql, sizeof(sql), "listen nt_fan_%d", ch);
	snprintf(want, sizeof(want), "nt_fan_%d", ch);
	r = pgb_exec(c, sql);
	if (!pgb_result_ok(r))
		return 11;
	pgb_clear(r);
	if (write(f->ready[1], "r", 1) != 1)
		return 12;
	for (;;) {
		pgb_notify *n = next_notify(c, 120000);
		int who, k;

		if (!n)
			return 13;	/* the end never came */
		if (strcmp(n->relname, want) != 0 || n->be_pid <= 0)
			return 14;	/* another channel's, or a loss */
		if (strcmp(n->extra, "end") == 0) {
			pgb_freemem(n);
			break;
		}
		if (sscanf(n->extra, "%d:%d", &who, &k) != 2 || who < 0 || who >= NNOTIFIER ||
		    k % NCHAN != ch || k <= last[who])
			return 15;	/* not ours, a duplicate, or out of order */
		last[who] = k;
		got++;
		pgb_freemem(n);
	}
	pgb_finish(c);
	/* each notifier sent NPER / NCHAN on each channel */
	return got == NNOTIFIER * NPER / NCHAN ? 0 : 16;
}

static int notifier_main(void *arg)
{
	struct fan *f = arg;
	pgb_conn *c = pgb_connect(br.dir);
	char x;

	close(f->go[1]);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 20;
	if (read(f->go[0], &x, 1) != 0)
		return 21;	/* the parent closes it: go */
	for (int k = 0; k < NPER; k++) {
		char sql[96];
		pgb_result *r;

		snprintf(sql, sizeof(sql), "notify nt_fan_%d, '%d:%d'", k % NCHAN, f->idx, k);
		r = pgb_exec(c, sql);
		if (!pgb_result_ok(r))
			return 22;
		pgb_clear(r);
	}
	pgb_finish(c);
	return 0;
}

Test(notify, a_hundred_listeners_five_channels_ten_notifiers_pool_of_four)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "4", "--max-pool-size", "4",
			       NULL };
	pid_t lis[NLISTEN], nots[NNOTIFIER];
	PGconn *pg = h_pg();
	struct stats_data d;
	char x;

	h_broker_start(&br, args);
	cr_assert_eq(pipe(fan.ready), 0);
	for (int i = 0; i < NLISTEN; i++) {
		fan.idx = i;
		lis[i] = h_fork(listener_main, &fan);
	}
	for (int i = 0; i < NLISTEN; i++)
		cr_assert_eq(read(fan.ready[0], &x, 1), 1, "listener %d never listened", i);
	cr_assert_eq(pipe(fan.go), 0);
	for (int i = 0; i < NNOTIFIER; i++) {
		fan.idx = i;
		nots[i] = h_fork(notifier_main, &fan);
	}
	/* all at once */
	close(fan.go[0]);
	close(fan.go[1]);
	for (int i = 0; i < NNOTIFIER; i++)
		cr_assert_eq(h_wait(nots[i], 120000), 0, "notifier %d failed", i);
	/* no backend pinned: a pool of 4 served 100 listeners and 10 notifiers */
	cr_assert_eq(snap(&d), 0);
	cr_expect_eq(d.c.session_pins, 0);
	cr_expect_eq(d.pool.pinned, 0);
	cr_expect_leq(h_backends(pg, &br, NULL), 4);
	/* the end, after everything (commit order) */
	for (int ch = 0; ch < NCHAN; ch++) {
		char sql[64];

		snprintf(sql, sizeof(sql), "notify nt_fan_%d, 'end'", ch);
		pg_do(pg, sql);
	}
	for (int i = 0; i < NLISTEN; i++)
		cr_expect_eq(h_wait(lis[i], 120000), 0, "listener %d failed", i);
	snap_delivered(&d, (uint64_t)NLISTEN * (NNOTIFIER * NPER / NCHAN + 1));
	cr_expect_eq(d.c.notify_delivered, (uint64_t)NLISTEN * (NNOTIFIER * NPER / NCHAN + 1));
	cr_expect_eq(d.c.notify_dropped, 0);
	close(fan.ready[0]);
	close(fan.ready[1]);
	PQfinish(pg);
}

/* An agent that does not read: LSN_QUEUE_MAX (1024) wait for it, then one
 * notice that some were dropped; the broker counts the drops, and the
 * agent is not disconnected for it. */
Test(notify, a_full_queue_drops_and_says_so)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "2",
			       "--send-timeout-ms", "1000", NULL };
	PGconn *pg = h_pg();
	pgb_conn *l;
	struct stats_data d;
	long long end;
	int i;

	h_broker_start(&br, args);
	l = h_connect(&br);
	pgb_clear(h_ok(l, "listen nt_full"));
	pg_do(pg, "select pg_notify('nt_full', g::text) from generate_series(1, 3000) g");
	/* wait until the broker has seen them all (drops counted) */
	end = h_now_ms() + WAIT_MS;
	while (snap(&d) == 0 && d.c.notify_delivered + d.c.notify_dropped < 3000 &&
	       h_now_ms() < end) {
		struct pollfd p = { .fd = -1 };

		poll(&p, 0, 20);
	}
	cr_assert_eq(d.c.notify_delivered, 1024, "delivered %llu",
		     (unsigned long long)d.c.notify_delivered);
	cr_assert_eq(d.c.notify_dropped, 3000 - 1024);
	for (i = 1; i <= 1024; i++) {
		char want[16];

		snprintf(want, sizeof(want), "%d", i);
		expect_notify(l, "nt_full", want, 0);
	}
	/* then the notice, and nothing else */
	expect_notify(l, "nt_full", NULL, 1);
	cr_expect_null(pgb_notifies(l));
	/* read: room again */
	pg_do(pg, "notify nt_full, 'again'");
	expect_notify(l, "nt_full", "again", 0);
	cr_expect_eq(h_num(l, "select 7"), 7, "the agent lost its connection");
	pgb_finish(l);
	PQfinish(pg);
}

static int listener_pid(PGconn *pg)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "select coalesce(max(pid), 0) from pg_stat_activity "
		 "where application_name = '%s:listener'", strrchr(br.dir, '/') + 1);
	return (int)h_pg_num(pg, sql);
}

/* pg_terminate_backend on the listening connection: its listeners hear
 * that they may have missed some, twice (lost, listening again), and get
 * what is sent after that. */
Test(notify, a_killed_listening_connection_is_never_silent)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "2",
			       NULL };
	PGconn *pg = h_pg();
	pgb_conn *l;
	struct stats_data d;
	char sql[128];
	int pid, pid2 = 0;
	long long end;

	h_broker_start(&br, args);
	l = h_connect(&br);
	pgb_clear(h_ok(l, "listen nt_kill"));
	pid = listener_pid(pg);
	cr_assert_gt(pid, 0, "no listening connection in pg_stat_activity");
	snprintf(sql, sizeof(sql), "select pg_terminate_backend(%d)", pid);
	pg_do(pg, sql);
	expect_notify(l, "nt_kill", NULL, 1);	/* lost */
	expect_notify(l, "nt_kill", NULL, 1);	/* listening again */
	end = h_now_ms() + WAIT_MS;
	while ((pid2 = listener_pid(pg)) == pid && h_now_ms() < end) {
		struct pollfd p = { .fd = -1 };

		poll(&p, 0, 20);
	}
	cr_expect(pid2 > 0 && pid2 != pid, "no new listening connection (%d, %d)", pid, pid2);
	pg_do(pg, "notify nt_kill, 'after'");
	expect_notify(l, "nt_kill", "after", 0);
	cr_assert_eq(snap(&d), 0);
	cr_expect_eq(d.c.notify_lost, 1);
	pgb_finish(l);
	PQfinish(pg);
}
