/* Outages: agents SIGKILLed while a large result or a large statement is in
 * the rings, PostgreSQL fast-stopped under a write load (nothing acknowledged
 * is lost, nothing is applied twice), and acquire timeouts in FIFO order. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

static void *shared(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

/* ---- a) agents killed with a large result or statement in the rings ---- */

struct victim {
	int fd;
	const char *sql;
};

static int run_victim(void *arg)
{
	struct victim *v = arg;
	pgb_conn *c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	(void)!write(v->fd, "x", 1);
	pgb_clear(pgb_exec(c, v->sql));
	pause();   /* killed before or after the result arrived: either way it dies here */
	return 0;
}

/* Bystanders run all through the kill: each answer must be their own. */
struct bystanders {
	volatile int stop;
	volatile int rounds[4];
	volatile int bad[4];
	volatile long long worst_ms[4];
};

struct by_arg {
	struct bystanders *b;
	int me;
};

static int bystander_loop(void *arg)
{
	struct by_arg *a = arg;
	struct bystanders *b = a->b;
	pgb_conn *c = pgb_connect(br.dir);
	char val[32];
	const char *vals[1] = { val };

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; !b->stop; i++) {
		long long t0 = h_now_ms();
		pgb_result *r;

		snprintf(val, sizeof(val), "%d", a->me * 100000 + i);
		r = pgb_exec_params(c, "select $1::int", 1, vals);
		if (!pgb_result_ok(r) || strcmp(pgb_getvalue(r, 0, 0), val) != 0) {
			fprintf(stderr, "bystander %d: %s %s\n", a->me, pgb_sqlstate(r),
				pgb_result_error(r));
			b->bad[a->me]++;
		}
		pgb_clear(r);
		if (h_now_ms() - t0 > b->worst_ms[a->me])
			b->worst_ms[a->me] = h_now_ms() - t0;
		b->rounds[a->me]++;
	}
	pgb_finish(c);
	return 0;
}

struct seen {
	PGconn *pg;
	const char *tag;
};

static int query_seen(void *arg)
{
	struct seen *s = arg;
	char sql[256];

	snprintf(sql, sizeof(sql), "select count(*) from pg_stat_activity where query like '%%%s%%' "
		 "and pid <> pg_backend_pid()", s->tag);
	return h_pg_num(s->pg, sql) > 0;
}

static int query_settled(void *arg)
{
	struct seen *s = arg;
	char sql[320];

	snprintf(sql, sizeof(sql), "select count(*) from pg_stat_activity where query like '%%%s%%' "
		 "and state in ('active', 'idle in transaction', 'idle in transaction (aborted)') "
		 "and pid <> pg_backend_pid()", s->tag);
	return h_pg_num(s->pg, sql) == 0;
}

static int all_moved(void *arg)
{
	struct bystanders *b = arg;
	static int mark[4];

	for (int i = 0; i < 4; i++)
		if (b->rounds[i] < mark[i] + 5)
			return 0;
	for (int i = 0; i < 4; i++)
		mark[i] = b->rounds[i];
	return 1;
}

/* Kill `sql`'s agent `delay_ms` after its statement shows up in PostgreSQL
 * (or, for a statement still being sent, after it started sending), with
 * bystanders running; then everything must be clean and served. */
static void kill_mid_flight(const char *sql, const char *tag, int wait_for_pg, const int *delays,
			    int ndelays)
{
	PGconn *pg = h_pg();
	struct bystanders *b = shared(sizeof(*b));
	struct by_arg args[4];
	pid_t by[4];
	struct seen s = { .pg = pg, .tag = tag };
	int p[2];

	cr_assert_eq(pipe(p), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct by_arg){ .b = b, .me = i };
		by[i] = h_fork(bystander_loop, &args[i]);
	}
	for (int k = 0; k < ndelays; k++) {
		struct victim v = { .fd = p[1], .sql = sql };
		pid_t kid;
		char x;

		kid = h_fork(run_victim, &v);
		cr_assert_eq(read(p[0], &x, 1), 1, "victim did not connect");
		if (wait_for_pg)
			cr_assert(h_until(query_seen, &s, 10000), "the statement never reached PostgreSQL");
		/* The kill point is varied on purpose (fault injection, not a wait). */
		if (delays[k])
			usleep((useconds_t)delays[k] * 1000);
		kill(kid, SIGKILL);
		cr_assert_eq(h_wait(kid, 5000), 128 + SIGKILL);
		cr_assert_eq(kill(br.pid, 0), 0, "the broker died (kill %d after %d ms)", k, delays[k]);
		/* no backend is left running or holding a transaction for it */
		cr_assert(h_until(query_settled, &s, 5000),
			  "a backend still runs the dead agent's statement (delay %d ms)", delays[k]);
		/* bystanders keep being served, at once */
		cr_assert(h_until(all_moved, b, 5000), "bystanders stalled after kill %d", k);
		cr_assert_leq(h_backends(pg, &br, NULL), 3, "more backends than max_pool_size");
	}
	b->stop = 1;
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(h_wait(by[i], 15000), 0, "bystander %d", i);
		cr_assert_eq(b->bad[i], 0, "bystander %d got %d wrong answers", i, b->bad[i]);
		cr_assert_lt(b->worst_ms[i], 5000, "bystander %d waited %lld ms", i, b->worst_ms[i]);
	}
	/* and a new agent is served normally afterwards */
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 31"), 31);
	pgb_finish(c);
	close(p[0]);
	close(p[1]);
	munmap(b, sizeof(*b));
	PQfinish(pg);
}

Test(outage, agent_killed_while_reading_a_20mb_result, .timeout = 120)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "3", "--max-pool-size", "3",
			       NULL };
	/* 20 000 rows of 1 000 bytes: a 20 MB result through a 256 KiB ring */
	const char *sql = "select repeat('r', 990) || lpad(i::text, 10, '0') /* big-result */ "
			  "from generate_series(1, 20000) i";
	const int delays[] = { 0, 0, 20, 60, 150, 300 };

	h_broker_start(&br, args);
	kill_mid_flight(sql, "big-result", 1, delays, 6);
	/* the whole result, for whoever reads it */
	pgb_conn *c = h_connect(&br);
	long long t0 = h_now_ms();
	pgb_result *r = h_ok(c, sql);
	fprintf(stderr, "outage: the 20 MB result took %lld ms in all\n", h_now_ms() - t0);
	cr_assert_eq(pgb_ntuples(r), 20000);
	cr_assert_str_eq(pgb_getvalue(r, 19999, 0) + 990, "0000020000");
	pgb_clear(r);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(outage, agent_killed_while_sending_a_32mb_statement, .timeout = 120)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "3", "--max-pool-size", "3",
			       "--max-request-kb", "65536", NULL };
	size_t n = 32u << 20;
	char *sql = malloc(n + 128);
	const int delays[] = { 0, 1, 3, 10, 30, 100 };

	cr_assert_not_null(sql);
	/* the tag comes first: pg_stat_activity keeps only the first 1 kB */
	const char *pre = "select /* big-statement */ length('";
	size_t np = strlen(pre);

	strcpy(sql, pre);
	memset(sql + np, 's', n);
	strcpy(sql + np + n, "')");
	h_broker_start(&br, args);
	kill_mid_flight(sql, "big-statement", 0, delays, 6);
	/* the statement itself works when nobody dies */
	pgb_conn *c = h_connect(&br);
	long long t0 = h_now_ms();
	cr_assert_eq(h_num(c, sql), (long long)n);
	fprintf(stderr, "outage: the 32 MB statement took %lld ms in all\n", h_now_ms() - t0);
	pgb_finish(c);
	free(sql);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- b) PostgreSQL fast-stopped under a 20-agent write load ---- */

#define W_AGENTS 20
#define W_MAX 100000

enum { S_NONE = 0, S_OK, S_NEVER_RAN, S_UNKNOWN, S_OTHER };

struct wload {
	volatile int stop;
	volatile int restarted;            /* PostgreSQL is back */
	volatile int n[W_AGENTS];          /* statements issued */
	volatile int ok[W_AGENTS];
	volatile int err[W_AGENTS];
	volatile int unclassified[W_AGENTS];
	volatile int ok_after[W_AGENTS];   /* successes after the restart */
	volatile long long worst_ms[W_AGENTS];
	volatile int pb002;
	char state[W_AGENTS][W_MAX];       /* S_* for each id */
	char first_err[W_AGENTS][64];
};

struct w_arg {
	struct wload *w;
	int me;
};

static int classify(const char *st)
{
	if (strncmp(st, "PB", 2) == 0)
		return S_NEVER_RAN;  /* the broker never sent it (PB001, PB002, PB010, ...) */
	if (strcmp(st, "08007") == 0 || strcmp(st, "08006") == 0)
		return S_UNKNOWN;
	return S_OTHER;
}

static int writer(void *arg)
{
	struct w_arg *a = arg;
	struct wload *w = a->w;
	pgb_conn *c = pgb_connect(br.dir);
	char sql[128];

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; !w->stop && i < W_MAX; i++) {
		long long t0 = h_now_ms(), dt;
		long long id = (long long)a->me * 1000000 + i;
		int restarted = w->restarted;
		pgb_result *r;

		snprintf(sql, sizeof(sql), "insert into outage_w (id, agent) values (%lld, %d)", id,
			 a->me);
		r = pgb_exec(c, sql);
		dt = h_now_ms() - t0;
		if (dt > w->worst_ms[a->me])
			w->worst_ms[a->me] = dt;
		if (pgb_result_ok(r) && pgb_cmd_tuples(r) == 1) {
			w->state[a->me][i] = S_OK;
			w->ok[a->me]++;
			if (restarted)
				w->ok_after[a->me]++;
		} else {
			const char *st = pgb_sqlstate(r);

			w->err[a->me]++;
			if (!st || !*st) {
				w->unclassified[a->me]++;
				w->state[a->me][i] = S_OTHER;
			} else {
				w->state[a->me][i] = (char)classify(st);
			}
			if (st && strcmp(st, PGB_SQLSTATE_BREAKER_OPEN) == 0)
				__atomic_add_fetch(&w->pb002, 1, __ATOMIC_RELAXED);
			if (!w->first_err[a->me][0])
				snprintf(w->first_err[a->me], sizeof(w->first_err[a->me]), "%s %.50s",
					 st ? st : "(null)", pgb_result_error(r));
			usleep(20000);   /* pace the retries of an agent during the outage */
		}
		w->n[a->me] = i + 1;
		pgb_clear(r);
	}
	pgb_finish(c);
	return 0;
}

static int w_each(struct wload *w, const volatile int *field, int min)
{
	(void)w;
	for (int i = 0; i < W_AGENTS; i++)
		if (field[i] < min)
			return 0;
	return 1;
}

static int w_warm(void *arg)
{
	struct wload *w = arg;
	return w_each(w, w->ok, 20);
}

static int w_all_failed(void *arg)
{
	struct wload *w = arg;
	return w_each(w, w->err, 1);
}

static int w_breaker(void *arg)
{
	struct wload *w = arg;
	return w->pb002 > 0;
}

static int w_all_back(void *arg)
{
	struct wload *w = arg;
	return w_each(w, w->ok_after, 3);
}

Test(outage, postgresql_fast_stopped_under_write_load_loses_nothing, .timeout = 240)
{
	const char *args[] = { "--min-pool-size", "4", "--pool-size", "8", "--max-pool-size", "8",
			       "--acquire-timeout-ms", "2000", "--breaker-threshold", "3",
			       "--breaker-reset-timeout-ms", "300", "--retry-delay-ms", "20",
			       "--retry-max-delay-ms", "200", NULL };
	struct wload *w = shared(sizeof(*w));
	struct w_arg wa[W_AGENTS];
	pid_t kids[W_AGENTS];
	PGconn *pg = h_pg();
	PGresult *res;
	long long t_restart, acked = 0, never = 0, unknown = 0, other = 0, rows;
	long long back_ms, present_unacked = 0, never_present = 0, acked_missing = 0;
	int worst = 0;

	res = PQexec(pg, "drop table if exists outage_w; create table outage_w (id bigint, agent int)");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(res);
	PQfinish(pg);
	h_broker_start(&br, args);
	for (int i = 0; i < W_AGENTS; i++) {
		wa[i] = (struct w_arg){ .w = w, .me = i };
		kids[i] = h_fork(writer, &wa[i]);
	}
	cr_assert(h_until(w_warm, w, 30000), "the write load never got going");
	h_pgtmp("pause");
	cr_assert(h_until(w_all_failed, w, 20000), "some agent saw no error during the outage");
	cr_assert(h_until(w_breaker, w, 20000), "the breaker never opened");
	h_pgtmp("start");
	t_restart = h_now_ms();
	w->restarted = 1;
	cr_assert(h_until(w_all_back, w, 20000), "not every agent succeeded within 20 s of the restart");
	back_ms = h_now_ms() - t_restart;
	w->stop = 1;
	for (int i = 0; i < W_AGENTS; i++) {
		cr_assert_eq(h_wait(kids[i], 20000), 0, "agent %d hung or failed", i);
		cr_assert_eq(w->unclassified[i], 0, "agent %d: an error without SQLSTATE: %s", i,
			     w->first_err[i]);
		if (w->worst_ms[i] > worst)
			worst = (int)w->worst_ms[i];
	}
	/* every statement was answered within acquire_timeout_ms plus slack */
	cr_assert_lt(worst, 10000, "a statement took %d ms", worst);

	pg = h_pg();
	res = PQexec(pg, "select count(*), count(distinct id) from outage_w");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
	rows = atoll(PQgetvalue(res, 0, 0));
	cr_assert_eq(rows, atoll(PQgetvalue(res, 0, 1)), "an insert was applied twice");
	PQclear(res);
	res = PQexec(pg, "select id from outage_w");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	static char present[W_AGENTS][W_MAX];
	memset(present, 0, sizeof(present));
	for (int r = 0; r < PQntuples(res); r++) {
		long long id = atoll(PQgetvalue(res, r, 0));
		long long ag = id / 1000000, i = id % 1000000;

		cr_assert(ag >= 0 && ag < W_AGENTS && i < W_MAX, "stray id %lld", id);
		present[ag][i] = 1;
	}
	PQclear(res);
	for (int a = 0; a < W_AGENTS; a++) {
		for (int i = 0; i < w->n[a]; i++) {
			switch (w->state[a][i]) {
			case S_OK:
				acked++;
				acked_missing += !present[a][i];
				break;
			case S_NEVER_RAN:
				never++;
				never_present += present[a][i];
				break;
			case S_UNKNOWN:
				unknown++;
				present_unacked += present[a][i];
				break;
			default:
				other++;
				present_unacked += present[a][i];
				break;
			}
		}
		for (int i = w->n[a]; i < W_MAX; i++)
			cr_assert_not(present[a][i], "id %d of agent %d was never issued", i, a);
	}
	fprintf(stderr, "outage: %lld rows; acknowledged %lld, never ran (PB) %lld, fate unknown "
		"(08007/08006) %lld, other errors %lld; present without ack %lld; slowest "
		"statement %d ms; all agents succeeding %lld ms after the restart\n", rows, acked,
		never, unknown, other, present_unacked, worst, back_ms);
	cr_assert_eq(acked_missing, 0, "%lld acknowledged inserts are missing", acked_missing);
	cr_assert_eq(never_present, 0, "%lld inserts answered with a PB error were applied",
		     never_present);
	cr_assert_eq(rows, acked + present_unacked);
	res = PQexec(pg, "drop table outage_w");
	PQclear(res);
	PQfinish(pg);
	munmap(w, sizeof(*w));
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- c) acquire timeouts in FIFO order ---- */

struct fifo {
	volatile long long start_ms[4], end_ms[4];
	char sqlstate[4][8];
};

struct f_arg {
	struct fifo *f;
	int me;
	const char *sql;
	int fd;
};

static int fifo_agent(void *arg)
{
	struct f_arg *a = arg;
	pgb_conn *c = pgb_connect(br.dir);
	pgb_result *r;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	a->f->start_ms[a->me] = h_now_ms();
	(void)!write(a->fd, "x", 1);
	r = pgb_exec(c, a->sql);
	a->f->end_ms[a->me] = h_now_ms();
	snprintf(a->f->sqlstate[a->me], sizeof(a->f->sqlstate[a->me]), "%s",
		 pgb_result_ok(r) ? "ok" : pgb_sqlstate(r));
	pgb_clear(r);
	pgb_finish(c);
	return 0;
}

static int waiting_n;

static int waiting_reached(void *arg)
{
	struct pgb_health h;

	(void)arg;
	return pgb_pool_health(br.dir, &h) == 0 && h.waiting >= waiting_n;
}

static int holder_running(void *arg)
{
	return h_backends(arg, &br, "query like '%fifo-holder%' and state = 'active'") == 1;
}

/* A holder, then three waiters started one after the other, each once the
 * previous one is visibly waiting. */
static void run_fifo(struct fifo *f, const char *holder_sql, const char *waiter_sql, pid_t *kids)
{
	PGconn *pg = h_pg();
	struct f_arg args[4];
	int p[2];
	char x;

	cr_assert_eq(pipe(p), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct f_arg){ .f = f, .me = i, .sql = i ? waiter_sql : holder_sql,
					  .fd = p[1] };
		kids[i] = h_fork(fifo_agent, &args[i]);
		cr_assert_eq(read(p[0], &x, 1), 1);
		if (i == 0) {
			cr_assert(h_until(holder_running, pg, 5000), "the holder never ran");
		} else {
			waiting_n = i;
			cr_assert(h_until(waiting_reached, NULL, 5000), "waiter %d never queued", i);
		}
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(h_wait(kids[i], 15000), 0, "agent %d", i);
	close(p[0]);
	close(p[1]);
	PQfinish(pg);
}

Test(outage, acquire_timeouts_come_in_fifo_order, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       "--acquire-timeout-ms", "1000", "--retry-attempts", "0", NULL };
	struct fifo *f = shared(sizeof(*f));
	pid_t kids[4];

	h_broker_start(&br, args);
	run_fifo(f, "select pg_sleep(2) /* fifo-holder */", "select 1", kids);
	cr_assert_str_eq(f->sqlstate[0], "ok");
	for (int i = 1; i < 4; i++) {
		long long waited = f->end_ms[i] - f->start_ms[i];

		cr_assert_str_eq(f->sqlstate[i], PGB_SQLSTATE_ACQUIRE_TIMEOUT, "waiter %d", i);
		cr_assert_geq(waited, 900, "waiter %d gave up early (%lld ms)", i, waited);
		cr_assert_lt(waited, 1900, "waiter %d timed out late (%lld ms)", i, waited);
		if (i > 1)
			cr_assert_geq(f->end_ms[i], f->end_ms[i - 1],
				      "waiter %d timed out before waiter %d", i, i - 1);
	}
	/* the holder finished normally after all of them */
	cr_assert_geq(f->end_ms[0], f->end_ms[3]);
	munmap(f, sizeof(*f));
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(outage, waiters_are_served_first_come_first_served, .timeout = 60)
{
	/* holder 1 s, then each waiter holds the backend 0.8 s: FIFO serves
	 * waiter 1 at ~1.0 s, waiter 2 at ~1.8 s, and waiter 3 (queued at
	 * ~0.1-0.3 s, deadline ~2.1-2.3 s) would need it at ~2.6 s: PB001. Served
	 * last-come-first, waiter 1 would be the one to time out. */
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			       "--acquire-timeout-ms", "2000", "--retry-attempts", "0", NULL };
	struct fifo *f = shared(sizeof(*f));
	pid_t kids[4];

	h_broker_start(&br, args);
	run_fifo(f, "select pg_sleep(1) /* fifo-holder */", "select pg_sleep(0.8)", kids);
	cr_assert_str_eq(f->sqlstate[0], "ok");
	cr_assert_str_eq(f->sqlstate[1], "ok", "the first waiter was not served first");
	cr_assert_str_eq(f->sqlstate[2], "ok", "the second waiter was not served second");
	cr_assert_str_eq(f->sqlstate[3], PGB_SQLSTATE_ACQUIRE_TIMEOUT, "the last waiter");
	cr_assert_lt(f->end_ms[1], f->end_ms[2]);
	munmap(f, sizeof(*f));
	cr_assert_eq(h_broker_stop(&br), 0);
}
