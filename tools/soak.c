/* Soak test driver (make soak; tools/soak.sh starts PostgreSQL and the
 * broker and runs this). For --seconds it keeps --agents agent processes
 * running a mixed load through the broker, validating every row of every
 * answer; it SIGKILLs random agents, and 15 % of the agents drop their
 * connection in the middle of a large result. Once a second it samples the
 * broker's RSS (/proc/PID/status) and its backends (pg_stat_activity).
 *
 * Fails (exit 1) on: any wrong answer, an error other than the expected
 * ones, an agent dying other than by our SIGKILL, the broker dying, more
 * backends than --max-backends, or broker RSS after the warm-up growing
 * more than max(10 %, 16 MiB) above its warm-up peak. Prints a summary
 * either way.
 *
 *   tools/soak --dir DIR --broker-pid PID --dsn DSN --app NAME
 *              [--seconds 600] [--agents 40] [--max-backends 10] */
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "pgbroker.h"

#define MAX_AGENTS 256
#define KV_ROWS 1000

struct shared {
	volatile int stop;
	long long ops, wrong, errors, drops, killed;
	char first_wrong[256];
};

static struct shared *sh;
static const char *dir;

static long long now_ms(void)
{
	return (long long)clock_ms();
}

static void wrong(const char *what, const char *detail)
{
	if (__atomic_add_fetch(&sh->wrong, 1, __ATOMIC_SEQ_CST) == 1)
		snprintf(sh->first_wrong, sizeof(sh->first_wrong), "pid %d: %s: %.150s", getpid(),
			 what, detail ? detail : "");
}

/* Errors a healthy broker may answer under this load: none are expected
 * except a statement timeout or a PB001 when the pool is saturated. */
static void failed(pgb_result *r, const char *what)
{
	const char *st = pgb_sqlstate(r);

	__atomic_add_fetch(&sh->errors, 1, __ATOMIC_RELAXED);
	if (strcmp(st, PGB_SQLSTATE_ACQUIRE_TIMEOUT) != 0 && strcmp(st, "57014") != 0) {
		char d[200];

		snprintf(d, sizeof(d), "%s %s", st, pgb_result_error(r));
		wrong(what, d);
	}
}

/* The one value of a one-row answer is want. */
static int one_value(const pgb_result *r, const char *want)
{
	const char *v = pgb_ntuples(r) == 1 ? pgb_getvalue(r, 0, 0) : NULL;

	return v && strcmp(v, want) == 0;
}

/* First value of an answer, for a message. */
static const char *first_value(const pgb_result *r)
{
	const char *v = pgb_getvalue(r, 0, 0);

	return v ? v : "(no row)";
}

static unsigned rnd(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return (*s >> 8) & 0xffffff;
}

static int agent(int dropper, unsigned seed)
{
	pgb_conn *c = pgb_connect(dir);
	char a[32], b[32], want[96];
	const char *v[2] = { a, b };
	long long seq = 0;

	if (pgb_status(c) != PGB_CONNECTION_OK) {
		wrong("connect", pgb_error_message(c));
		return 1;
	}
	while (!sh->stop) {
		unsigned op = rnd(&seed) % 100;
		pgb_result *r;

		seq++;
		if (dropper && op < 10) {
			/* drop in the middle of a large result (2 MB) */
			pgb_send(c, "select repeat('d', 1000) from generate_series(1, 2000)", 0, NULL, 0);
			usleep(rnd(&seed) % 30000);
			__atomic_add_fetch(&sh->drops, 1, __ATOMIC_RELAXED);
			_exit(0);
		}
		if (op < 40) {
			/* a point read with a fixed answer */
			int k = 1 + (int)(rnd(&seed) % KV_ROWS);

			snprintf(a, sizeof(a), "%d", k);
			r = pgb_exec_params(c, "select v from soak_kv where k = $1", 1, v);
			snprintf(want, sizeof(want), "%lld", (long long)k * 7);
			if (!pgb_result_ok(r))
				failed(r, "point read");
			else if (!one_value(r, want))
				wrong("point read", first_value(r));
		} else if (op < 70) {
			/* an answer unique to this agent and this statement */
			snprintf(a, sizeof(a), "%d", getpid());
			snprintf(b, sizeof(b), "%lld", seq);
			snprintf(want, sizeof(want), "%d:%lld", getpid(), seq);
			r = pgb_exec_params(c, "select $1::text || ':' || $2::text", 2, v);
			if (!pgb_result_ok(r))
				failed(r, "unique");
			else if (!one_value(r, want))
				wrong("unique answer crossed", first_value(r));
		} else if (op < 85) {
			/* a medium result, every row checked */
			int n = 100 + (int)(rnd(&seed) % 3000);
			long long tok = getpid() * 1000LL + (seq % 1000);

			snprintf(a, sizeof(a), "%d", n);
			snprintf(b, sizeof(b), "%lld", tok);
			r = pgb_exec_params(c, "select i, i * $2::bigint, repeat('m', i % 200) "
					       "from generate_series(1, $1::int) i", 2, v);
			if (!pgb_result_ok(r)) {
				failed(r, "rows");
			} else if (pgb_ntuples(r) != n || pgb_nfields(r) != 3) {
				wrong("row count", pgb_cmd_status(r));
			} else {
				for (int i = 0; i < n; i++) {
					if (atoll(pgb_getvalue(r, i, 0)) != i + 1 ||
					    atoll(pgb_getvalue(r, i, 1)) != (i + 1) * tok ||
					    pgb_getlength(r, i, 2) != (i + 1) % 200) {
						wrong("row content", pgb_getvalue(r, i, 1));
						break;
					}
				}
			}
		} else {
			/* a short transaction that keeps the invariant v = 7k */
			int k = 1 + (int)(rnd(&seed) % KV_ROWS);

			snprintf(a, sizeof(a), "%d", k);
			snprintf(want, sizeof(want), "%lld", (long long)k * 7);
			r = pgb_exec(c, "begin");
			if (!pgb_result_ok(r)) {
				failed(r, "begin");
			} else {
				pgb_clear(r);
				r = pgb_exec_params(c, "update soak_kv set v = k * 7, n = n + 1 "
						       "where k = $1 returning v", 1, v);
				if (!pgb_result_ok(r))
					failed(r, "update");
				else if (!one_value(r, want))
					wrong("update", first_value(r));
				pgb_clear(r);
				r = pgb_exec(c, rnd(&seed) % 4 ? "commit" : "rollback");
				if (!pgb_result_ok(r))
					failed(r, "commit");
			}
		}
		pgb_clear(r);
		__atomic_add_fetch(&sh->ops, 1, __ATOMIC_RELAXED);
	}
	pgb_finish(c);
	return 0;
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static long long pg_num(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);
	long long v = -1;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		v = atoll(PQgetvalue(r, 0, 0));
	else
		fprintf(stderr, "soak: %s: %s", sql, PQerrorMessage(pg));
	PQclear(r);
	return v;
}

/* An agent that ended other than by leaving (exit 0) or by our SIGKILL
 * crashed: that is a failure, not something to respawn quietly. */
static void check_exit(pid_t pid, int st)
{
	char d[64];

	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
		return;
	if (WIFSIGNALED(st))
		snprintf(d, sizeof(d), "pid %d killed by signal %d", (int)pid, WTERMSIG(st));
	else
		snprintf(d, sizeof(d), "pid %d exit status %d", (int)pid, WEXITSTATUS(st));
	wrong("agent died", d);
}

/* 15 % of the agent slots are droppers: they leave in the middle of a result. */
static pid_t spawn(int i, int nagents, unsigned seed)
{
	pid_t p = fork();

	if (p == 0)
		_exit(agent(i * 100 / nagents < 15, seed));
	return p;
}

int main(int argc, char **argv)
{
	const char *dsn = NULL, *app = NULL;
	pid_t broker = 0, kids[MAX_AGENTS];
	int seconds = 600, nagents = 40, max_backends = 10, fail = 0;
	long warm_peak = 0, late_peak = 0, first_rss = 0, last_rss = 0;
	long long max_seen_backends = 0, t0, t_end, warm_end, next_kill, next_sample;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	char sql[512];
	PGconn *pg;
	PGresult *res;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
		else if (!strcmp(argv[i], "--dsn")) dsn = argv[i + 1];
		else if (!strcmp(argv[i], "--app")) app = argv[i + 1];
		else if (!strcmp(argv[i], "--broker-pid")) broker = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds")) seconds = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--agents")) nagents = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--max-backends")) max_backends = atoi(argv[i + 1]);
		else {
			fprintf(stderr, "soak: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (!dir || !dsn || !app || broker <= 0 || seconds < 10 || nagents < 1 ||
	    nagents > MAX_AGENTS) {
		fprintf(stderr, "usage: soak --dir DIR --broker-pid PID --dsn DSN --app NAME "
				"[--seconds >=10] [--agents 1..%d] [--max-backends N]\n", MAX_AGENTS);
		return 2;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 1;
	pg = PQconnectdb(dsn);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "soak: %s", PQerrorMessage(pg));
		return 1;
	}
	res = PQexec(pg, "drop table if exists soak_kv; "
			 "create table soak_kv (k int primary key, v bigint not null, n bigint not null default 0); "
			 "insert into soak_kv (k, v) select k, k * 7 from generate_series(1, 1000) k");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fprintf(stderr, "soak: setup: %s", PQerrorMessage(pg));
		return 1;
	}
	PQclear(res);
	snprintf(sql, sizeof(sql), "select count(*) from pg_stat_activity where application_name = '%s'",
		 app);

	t0 = now_ms();
	t_end = t0 + seconds * 1000LL;
	warm_end = t0 + (seconds / 5 > 10 ? seconds / 5 : 10) * 1000LL;
	next_kill = t0 + 500;
	next_sample = t0;
	for (int i = 0; i < nagents; i++)
		kids[i] = spawn(i, nagents, rnd(&seed));
	while (now_ms() < t_end && !fail) {
		long long t = now_ms();
		int st;
		pid_t p;

		/* respawn agents that dropped or were killed */
		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			for (int i = 0; i < nagents; i++) {
				if (kids[i] == p) {
					check_exit(p, st);
					kids[i] = spawn(i, nagents, rnd(&seed));
					break;
				}
			}
		}
		if (t >= next_kill) {
			int i = (int)(rnd(&seed) % (unsigned)nagents);

			if (kids[i] > 0 && kill(kids[i], SIGKILL) == 0)
				sh->killed++;
			next_kill = t + 100 + rnd(&seed) % 400;
		}
		if (t >= next_sample) {
			long kb = rss_kb(broker);
			long long be = pg_num(pg, sql);

			if (kb < 0) {
				fprintf(stderr, "soak: FAIL the broker (pid %d) is gone\n", broker);
				fail = 1;
				break;
			}
			if (!first_rss)
				first_rss = kb;
			last_rss = kb;
			if (t < warm_end) {
				if (kb > warm_peak)
					warm_peak = kb;
			} else if (kb > late_peak) {
				late_peak = kb;
			}
			if (be > max_seen_backends)
				max_seen_backends = be;
			if (be > max_backends) {
				fprintf(stderr, "soak: FAIL %lld backends, more than the maximum %d\n", be,
					max_backends);
				fail = 1;
			}
			if (sh->wrong) {
				fprintf(stderr, "soak: FAIL wrong answer: %s\n", sh->first_wrong);
				fail = 1;
			}
			if ((t - t0) / 1000 % 10 == 0)
				fprintf(stderr, "soak: %3llds ops %lld errors %lld killed %lld drops %lld "
					"rss %ld kB backends %lld\n", (t - t0) / 1000, sh->ops,
					sh->errors, sh->killed, sh->drops, kb, be);
			next_sample = t + 1000;
		}
		usleep(20000);
	}
	sh->stop = 1;
	{
		long long deadline = now_ms() + 30000;
		int left = 1;

		while (left && now_ms() < deadline) {
			left = 0;
			for (int i = 0; i < nagents; i++) {
				int st;
				pid_t p = kids[i] > 0 ? waitpid(kids[i], &st, WNOHANG) : 0;

				if (p == kids[i])
					check_exit(p, st);
				if (p != 0)
					kids[i] = 0;
				if (kids[i] > 0)
					left = 1;
			}
			if (left)
				usleep(20000);
		}
		if (left) {
			fprintf(stderr, "soak: FAIL agents did not finish within 30 s of the stop\n");
			for (int i = 0; i < nagents; i++)
				if (kids[i] > 0)
					kill(kids[i], SIGKILL);
			while (waitpid(-1, NULL, 0) > 0)
				;
			fail = 1;
		}
	}
	long margin = warm_peak / 10 > 16384 ? warm_peak / 10 : 16384;
	if (!fail && late_peak > warm_peak + margin) {
		fprintf(stderr, "soak: FAIL broker RSS grew after warm-up: peak %ld kB, warm-up peak %ld kB "
			"(margin %ld kB)\n", late_peak, warm_peak, margin);
		fail = 1;
	}
	if (sh->wrong && !fail) {
		fprintf(stderr, "soak: FAIL wrong answer: %s\n", sh->first_wrong);
		fail = 1;
	}
	res = PQexec(pg, "select count(*) from soak_kv where v <> k * 7");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || atoll(PQgetvalue(res, 0, 0)) != 0) {
		fprintf(stderr, "soak: FAIL soak_kv lost its invariant\n");
		fail = 1;
	}
	PQclear(res);
	printf("soak: %s after %llds: ops %lld, wrong %lld, errors %lld (PB001/57014), agents killed %lld, "
	       "dropped mid-result %lld; broker RSS kB: start %ld, warm-up peak %ld, later peak %ld, "
	       "end %ld; backends max %lld (limit %d)\n", fail ? "FAIL" : "ok",
	       (now_ms() - t0) / 1000, sh->ops, sh->wrong, sh->errors, sh->killed, sh->drops,
	       first_rss, warm_peak, late_peak, last_rss, max_seen_backends, max_backends);
	res = PQexec(pg, "drop table soak_kv");
	PQclear(res);
	PQfinish(pg);
	return fail;
}
