/* No head-of-line stall: quick statements that share pipelines never wait
 * behind a slow one. Six agents loop `select 1` while another runs
 * `select pg_sleep(3)` several times, on a real broker and PostgreSQL. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define LOOPERS 6
#define SLEEPS 3
/* A select 1 queued behind a 3 s sleep takes about 3 s: a bound far from
 * both (no timing threshold that load could reach). */
#define STALLED_US 1000000LL

static struct h_broker br;

struct shared {
	volatile int stop;           /* set by the test when the sleeper is done */
	volatile int ready;          /* loopers connected and looping */
	struct {
		long long n;         /* select 1 done */
		long long n_during;  /* ... while a sleep was running */
		long long worst_us;
		long long worst_at;  /* its number, 0 the first */
		long long worst_later_us; /* the worst after the first (which
					     may wait for the pool to connect) */
	} loop[LOOPERS];
	volatile int sleeping;       /* a sleep is running */
};

static struct shared *sh;

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int looper(void *arg)
{
	int k = (int)(long)arg;
	pgb_conn *c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	while (!sh->stop) {
		int during = sh->sleeping;
		long long t0 = now_us(), dt;
		pgb_result *r = pgb_exec(c, "select 1");

		dt = now_us() - t0;
		if (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), "1") != 0) {
			fprintf(stderr, "looper %d: %s %s\n", k, pgb_sqlstate(r), pgb_result_error(r));
			return 1;
		}
		pgb_clear(r);
		sh->loop[k].n++;
		if (during && sh->sleeping)
			sh->loop[k].n_during++;
		if (dt > sh->loop[k].worst_us) {
			sh->loop[k].worst_us = dt;
			sh->loop[k].worst_at = sh->loop[k].n - 1;
		}
		if (sh->loop[k].n > 1 && dt > sh->loop[k].worst_later_us)
			sh->loop[k].worst_later_us = dt;
	}
	pgb_finish(c);
	return 0;
}

static int all_ready(void *arg)
{
	(void)arg;
	return sh->ready == LOOPERS;
}

Test(stall, select1_never_waits_behind_a_sleep, .timeout = 180)
{
	const char *args[] = { "--max-pool-size", "8", "--pool-size", "8", NULL };
	pid_t pid[LOOPERS];
	long long worst = 0;
	pgb_conn *c;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	h_broker_start(&br, args);
	for (int k = 0; k < LOOPERS; k++)
		pid[k] = h_fork(looper, (void *)(long)k);
	cr_assert(h_until(all_ready, NULL, 60000), "loopers did not start");
	c = h_connect(&br);
	for (int i = 0; i < SLEEPS; i++) {
		long long t0 = h_now_ms();

		sh->sleeping = 1;
		pgb_clear(h_ok(c, "select pg_sleep(3)"));
		sh->sleeping = 0;
		cr_assert_geq(h_now_ms() - t0, 3000, "the sleep did not sleep");
	}
	pgb_finish(c);
	sh->stop = 1;
	for (int k = 0; k < LOOPERS; k++)
		cr_assert_eq(h_wait(pid[k], 60000), 0, "looper %d failed", k);
	for (int k = 0; k < LOOPERS; k++) {
		fprintf(stderr, "stall: looper %d: %lld select 1 (%lld during sleeps), "
			"worst %lld us (statement %lld), after the first %lld us\n", k, sh->loop[k].n,
			sh->loop[k].n_during, sh->loop[k].worst_us, sh->loop[k].worst_at,
			sh->loop[k].worst_later_us);
		if (sh->loop[k].worst_us > worst)
			worst = sh->loop[k].worst_us;
		/* the loop really ran beside the sleeps */
		cr_expect_gt(sh->loop[k].n_during, 0, "looper %d ran nothing during the sleeps", k);
	}
	cr_expect_lt(worst, STALLED_US, "a select 1 took %lld us: queued behind a sleep", worst);
	cr_assert_eq(h_broker_stop(&br), 0);
	munmap(sh, sizeof(*sh));
}
