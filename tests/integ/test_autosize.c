/* The pool sizes itself: it grows from pool_size while statements wait
 * and the backends are held by transactions, up to max_pool_size, and
 * shrinks back when the load is gone, without turning back meanwhile.
 * Asserted on the controller's decisions (the stats segment's counters and
 * its pool size), never on timing. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

static struct h_broker br;

TestSuite(autosize, .timeout = 120);

/* An agent running short transactions until its parent closes the pipe. */
static int txn_loop(void *arg)
{
	const int *p = arg;
	int fd = p[0];
	pgb_conn *c;

	close(p[1]);	/* the parent's end: its close is the EOF */
	c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	for (;;) {
		static const char *const sql[] = { "begin", "select count(*) from pg_class",
						   "select 1", "commit" };
		char b;

		for (int i = 0; i < 4; i++) {
			pgb_result *r = pgb_exec(c, sql[i]);

			if (!pgb_result_ok(r))
				return 3;
			pgb_clear(r);
		}
		if (read(fd, &b, 1) == 0)	/* non-blocking: EOF ends it */
			break;
	}
	pgb_finish(c);
	return 0;
}

static int stats(struct stats_data *d)
{
	return h_stats(br.dir, d);
}

static int grew(void *arg)
{
	struct stats_data d;

	(void)arg;
	return stats(&d) == 0 && d.c.pool_grows > 0 && d.pool.size > 3;
}

struct shrunk {
	uint32_t below;
};

static int shrank(void *arg)
{
	const struct shrunk *s = arg;
	struct stats_data d;

	return stats(&d) == 0 && d.c.pool_shrinks > 0 && d.pool.size < s->below;
}

Test(autosize, grows_under_load_and_shrinks_after_it_without_turning)
{
	enum { AGENTS = 8 };
	pid_t kids[AGENTS];
	int p[2];
	struct stats_data d;
	struct shrunk s;
	uint64_t grows;

	h_broker_start(&br, (const char *[]){ "--min-pool-size", "1", "--pool-size", "3",
					      "--max-pool-size", "8", NULL });
	cr_assert_eq(stats(&d), 0);
	/* from pool_size; an idle second may already have taken it down */
	cr_expect_leq(d.pool.size, 3, "starts above pool_size");
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	for (int i = 0; i < AGENTS; i++)
		kids[i] = h_fork(txn_loop, p);
	close(p[0]);
	cr_expect(h_until(grew, NULL, 60000), "the pool never grew under load");
	cr_assert_eq(stats(&d), 0);
	cr_expect_leq(d.pool.size, 8, "past max_pool_size");
	close(p[1]);
	for (int i = 0; i < AGENTS; i++)
		cr_expect_eq(h_wait(kids[i], 60000), 0, "agent %d failed", i);

	/* The load is gone: the pool shrinks (the interval the load ended in
	 * may still grow it once), and once it shrank it never grows again. */
	cr_assert_eq(stats(&d), 0);
	s.below = d.pool.size + 1;
	cr_expect(h_until(shrank, &s, 60000), "the pool never shrank");
	cr_assert_eq(stats(&d), 0);
	grows = d.c.pool_grows;
	s.below = d.pool.size;
	cr_expect(h_until(shrank, &s, 60000), "the pool stopped shrinking at %u", s.below);
	cr_assert_eq(stats(&d), 0);
	cr_expect_eq(d.c.pool_grows, grows, "grew again with nothing to do");
	cr_expect_geq(d.pool.size, 1);
	cr_assert_eq(h_broker_stop(&br), 0);
}
