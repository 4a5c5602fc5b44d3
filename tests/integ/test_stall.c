/* No head-of-line stall: quick statements that share pipelines never wait
 * behind a slow one. Six agents loop `select 1` while another runs
 * `select pg_sleep(3)` several times, on a real broker and PostgreSQL.
 * And an agent that dies with statements in shared pipelines: they are
 * not cancelled, they run, and the log says how many. */
#include <criterion/criterion.h>
#include <signal.h>
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

/* ---- a dead agent's statements in a shared pipeline ---- */

#define DEAD_K 8                /* statements the agent leaves in pipelines */
#define DEAD_SQL "update stall_dead set v = v + 1 where k = 1"

static int sleeper(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);

	(void)arg;
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	pgb_clear(pgb_exec(c, "select pg_sleep(60)"));
	return 0;
}

/* Sends DEAD_K quick statements that wait for a row lock, then waits to be killed. */
static int victim(void *arg)
{
	pgb_conn *c = pgb_connect(br.dir);

	(void)arg;
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; i < DEAD_K; i++)
		if (pgb_send(c, DEAD_SQL, 0, NULL, PGB_INDEPENDENT) < 0)
			return 11;
	pause();
	return 0;
}

static PGconn *watch;

static int lock_waiters(void *arg)
{
	return h_backends(watch, &br, "wait_event_type = 'Lock'") >= *(long long *)arg;
}

static int backends_at_least(void *arg)
{
	return h_backends(watch, &br, "state = 'active' and query like 'select pg_sleep%'") >=
	       *(long long *)arg;
}

static long long dead_log_count(void)
{
	char line[4096];
	FILE *f = fopen(br.log, "r");
	long long n = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, "gone: ");

		if (p && strstr(line, "in shared pipelines run to completion"))
			n = atoll(p + 6);
	}
	fclose(f);
	return n;
}

static int dead_logged(void *arg)
{
	(void)arg;
	return dead_log_count() >= 0;
}

struct want_v {
	PGconn *pg;
	long long v;
};

static int v_is(void *arg)
{
	struct want_v *w = arg;

	return h_pg_num(w->pg, "select v from stall_dead where k = 1") == w->v;
}

Test(stall, a_dead_agents_piped_statements_run_to_completion_and_are_told, .timeout = 180)
{
	const char *args[] = { "--max-pool-size", "24", "--pool-size", "24",
			       "--max-backends-per-agent", "24", "--log-level", "info", NULL };
	long long cores = sysconf(_SC_NPROCESSORS_ONLN), one = 1;
	PGconn *lock;
	pid_t sl[64], vic;
	pgb_conn *c;
	struct want_v w;
	PGresult *res;

	cr_assert(cores > 0 && cores <= 16, "%lld cores", cores);
	watch = h_pg();
	lock = h_pg();
	res = PQexec(lock, "drop table if exists stall_dead; "
			   "create table stall_dead (k int primary key, v int not null); "
			   "insert into stall_dead values (1, 0)");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(lock));
	PQclear(res);
	h_broker_start(&br, args);
	/* the text runs alone, is timed, and proves quick (its slow first
	 * runs, planning on a loaded machine, decay by 1/8 per run; the last
	 * 40 took under 2 ms each as the agent saw them) */
	c = h_connect(&br);
	for (int i = 0, fast = 0; i < 100 || (fast < 40 && i < 3000); i++) {
		struct timespec t0, t1;
		long long us;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		pgb_clear(h_ok(c, DEAD_SQL));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		us = (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000;
		/* a loaded machine: go on until a run of quick ones */
		fast = us < 2000 ? fast + 1 : 0;
	}
	pgb_finish(c);
	res = PQexec(lock, "update stall_dead set v = 0; begin; "
			   "update stall_dead set v = v where k = 1");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(lock));
	PQclear(res);
	/* one busy backend per core: from now on quick statements share pipelines */
	for (long long i = 0; i < cores; i++)
		sl[i] = h_fork(sleeper, NULL);
	cr_assert(h_until(backends_at_least, &cores, 60000), "sleepers not running");
	vic = h_fork(victim, NULL);
	/* the head of a pipeline waits for the row lock, the rest behind it */
	cr_assert(h_until(lock_waiters, &one, 60000), "nothing waits for the lock");
	cr_assert_eq(kill(vic, SIGKILL), 0);
	h_wait(vic, 30000);
	if (!h_until(dead_logged, NULL, 30000)) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd), "tail -n 20 %s >&2", br.log);
		(void)!system(cmd);
		cr_assert_fail("the broker did not tell of them");
	}
	cr_expect_eq(dead_log_count(), DEAD_K, "told %lld of %d", dead_log_count(), DEAD_K);
	/* none was cancelled (a cancel could hit a neighbour's statement) */
	res = PQexec(lock, "commit");
	PQclear(res);
	/* and each of them ran, as the log said */
	w.pg = watch;
	w.v = DEAD_K;
	cr_assert(h_until(v_is, &w, 60000), "v = %lld, not %d",
		  h_pg_num(watch, "select v from stall_dead where k = 1"), DEAD_K);
	for (long long i = 0; i < cores; i++)
		kill(sl[i], SIGKILL);
	for (long long i = 0; i < cores; i++)
		h_wait(sl[i], 30000);
	cr_assert_eq(h_broker_stop(&br), 0);
	res = PQexec(lock, "drop table stall_dead");
	PQclear(res);
	PQfinish(lock);
	PQfinish(watch);
}
