/* Fair service of doorbells: an agent that rings its bell in a loop, with
 * nothing to read, costs itself and not the others. Bystanders are served
 * throughout, and the broker's loop does not spin at the ringer's pace: its
 * passes (counted in the stats segment) stay bounded by the bystanders' work
 * and the elapsed time, whatever the ringer's rate. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define BYSTANDERS 4
#define STATEMENTS 300                  /* each, of 10 ms: seconds of ringing */
/* Passes a bystander's statement may cost (its bell, its backend's
 * answer, a wake-up), well above the two or three it takes. */
#define PASSES_PER_STATEMENT 6
/* A ringer is heard at most once per snooze (2 ms, broker/agent.c): a
 * pass per ms allows twice that. */
#define PASSES_PER_MS 1

static struct h_broker br;

struct shared {
	volatile int stop;
	volatile long long rings;
	volatile int ringing;
};

static struct shared *sh;

static int ringer(void *arg)
{
	int sock, bell_fd;
	uint64_t size;
	struct chan_shm *ch = h_raw_register(&br, &sock, &size, &bell_fd);

	(void)arg;
	sh->ringing = 1;
	while (!sh->stop) {
		if (h_raw_ring(ch, bell_fd) < 0)
			return 1;
		sh->rings++;
	}
	return 0;
}

static int bystander(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);
	char sql[96], want[32];

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; i < STATEMENTS; i++) {
		pgb_result *r;

		snprintf(want, sizeof(want), "%d:%d", (int)(long)arg, i);
		snprintf(sql, sizeof(sql), "select '%s', pg_sleep(0.01)", want);
		r = pgb_exec(c, sql);
		if (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), want) != 0) {
			fprintf(stderr, "bystander: %s %s\n", pgb_sqlstate(r), pgb_result_error(r));
			return 1;
		}
		pgb_clear(r);
	}
	pgb_finish(c);
	return 0;
}

static int ringing(void *arg)
{
	(void)arg;
	return sh->ringing && sh->rings > 1000;
}

static uint64_t passes(void)
{
	struct stats_map m;
	struct stats_snap s = { 0 };
	char err[256];

	cr_assert_eq(stats_map_open(br.dir, &m, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(stats_read(m.seg, &s), 0);
	stats_map_close(&m);
	return s.d.pass;
}

Test(fair, a_bell_rung_in_a_loop_costs_the_ringer_not_the_others, .timeout = 240)
{
	pid_t ring_pid, by[BYSTANDERS];
	uint64_t p0, p1, bound;
	long long t0, ms, rings0;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	h_broker_start(&br, NULL);
	ring_pid = h_fork(ringer, NULL);
	cr_assert(h_until(ringing, NULL, 30000), "the ringer did not start");
	p0 = passes();
	rings0 = sh->rings;
	t0 = h_now_ms();
	for (int k = 0; k < BYSTANDERS; k++)
		by[k] = h_fork(bystander, (void *)(long)k);
	/* every bystander is served, every answer right */
	for (int k = 0; k < BYSTANDERS; k++)
		cr_assert_eq(h_wait(by[k], 180000), 0, "bystander %d was not served", k);
	p1 = passes();
	ms = h_now_ms() - t0;
	cr_assert(sh->ringing && kill(ring_pid, 0) == 0, "the ringer stopped");
	bound = (uint64_t)BYSTANDERS * STATEMENTS * PASSES_PER_STATEMENT +
		(uint64_t)ms * PASSES_PER_MS + 1000;
	fprintf(stderr, "fair: %d bystanders x %d statements in %lld ms beside %lld rings; "
		"%llu broker passes (bound %llu)\n", BYSTANDERS, STATEMENTS, ms, sh->rings - rings0,
		(unsigned long long)(p1 - p0), (unsigned long long)bound);
	cr_expect_leq(p1 - p0, bound, "the broker's loop ran at the ringer's pace: %llu passes",
		      (unsigned long long)(p1 - p0));
	sh->stop = 1;
	cr_assert_eq(h_wait(ring_pid, 30000), 0);
	cr_assert_eq(h_broker_stop(&br), 0);
	munmap(sh, sizeof(*sh));
}
