/* pgb_demo: fork N agents that hammer a pgbroker with reads, writes and short
 * transfer transactions, then check through the broker that nothing was lost. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "pgbroker.h"

#define NACCOUNTS 1000
#define TOTAL_BALANCE (NACCOUNTS * 1000LL)
#define MAX_ERRORS_SHOWN 3 /* per agent */
#define KILL_GRACE_S 30
#define BACKENDS_SQL "select count(*) from pg_stat_activity where application_name = 'pgbroker'"

/* What an agent sends back; far below PIPE_BUF, so each write is atomic. */
struct report {
	uint64_t queries, transactions, errors;
};

struct agent {
	pgb_conn *conn;
	uint64_t rng;
	struct report rep;
};

/* What a statement must return besides success. */
struct want {
	bool one_row;      /* exactly one row */
	bool one_affected; /* cmd_tuples == 1 */
	const char *tag;   /* exact command tag */
};

static const char *const setup_sql[] = {
	"drop table if exists pgb_demo_accounts, pgb_demo_log",
	"create table pgb_demo_accounts(id int primary key, balance bigint not null, "
	"updated_at timestamptz)",
	"insert into pgb_demo_accounts select g, 1000, now() from generate_series(1, 1000) g",
	"create table pgb_demo_log(id bigserial primary key, agent int, amount bigint)",
};

static double now_s(void)
{
	return (double)clock_ns() / 1e9;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int random_id(struct agent *a)
{
	return (int)(xorshift(&a->rng) % NACCOUNTS) + 1;
}

/* Print why r is not what was wanted; NULL r means out of memory. */
static void show_error(const char *who, const char *sql, const pgb_result *r)
{
	if (!r)
		fprintf(stderr, "%s: \"%s\": out of memory\n", who, sql);
	else if (!pgb_result_ok(r))
		fprintf(stderr, "%s: \"%s\": %s: %s\n", who, sql, pgb_sqlstate(r),
			pgb_result_error(r));
	else
		fprintf(stderr, "%s: \"%s\": unexpected result: %d rows, %lld affected, tag %s\n",
			who, sql, pgb_ntuples(r), pgb_cmd_tuples(r), pgb_cmd_status(r));
}

/* Run one statement and check it against w; counts the query and any error. */
static bool run(struct agent *a, const char *sql, int nparams, const char *const *vals,
		struct want w)
{
	pgb_result *r = pgb_exec_params(a->conn, sql, nparams, vals);
	bool ok = r && pgb_result_ok(r) && (!w.one_row || pgb_ntuples(r) == 1) &&
		  (!w.one_affected || pgb_cmd_tuples(r) == 1) &&
		  (!w.tag || !strcmp(pgb_cmd_status(r), w.tag));
	char who[32];

	a->rep.queries++;
	if (!ok && a->rep.errors++ < MAX_ERRORS_SHOWN) {
		snprintf(who, sizeof(who), "agent %d", (int)getpid());
		show_error(who, sql, r);
	}
	pgb_clear(r);
	return ok;
}

/* Move a random amount between two different accounts. The lower id is
 * updated first so that concurrent transfers cannot deadlock. */
static void transfer(struct agent *a)
{
	char lo[16], hi[16], amount[16], agent[16];
	const char *const p_lo[] = { lo, amount }, *const p_hi[] = { hi, amount };
	const char *const p_log[] = { agent, amount };
	int x = random_id(a), y = random_id(a);
	bool down = xorshift(&a->rng) & 1; /* direction: lo -> hi or hi -> lo */

	while (y == x)
		y = random_id(a);
	snprintf(lo, sizeof(lo), "%d", x < y ? x : y);
	snprintf(hi, sizeof(hi), "%d", x < y ? y : x);
	snprintf(amount, sizeof(amount), "%d", (down ? -1 : 1) * (int)(xorshift(&a->rng) % 100 + 1));
	snprintf(agent, sizeof(agent), "%d", (int)getpid());
	if (run(a, "begin", 0, NULL, (struct want){ .tag = "BEGIN" }) &&
	    run(a, "update pgb_demo_accounts set balance = balance - $2 where id = $1", 2, p_lo,
		(struct want){ .one_affected = true }) &&
	    run(a, "update pgb_demo_accounts set balance = balance + $2 where id = $1", 2, p_hi,
		(struct want){ .one_affected = true }) &&
	    run(a, "insert into pgb_demo_log(agent, amount) values ($1, $2)", 2, p_log,
		(struct want){ .one_affected = true })) {
		/* A COMMIT of an aborted transaction succeeds with tag ROLLBACK. */
		if (run(a, "commit", 0, NULL, (struct want){ .tag = "COMMIT" }))
			a->rep.transactions++;
		return;
	}
	run(a, "rollback", 0, NULL, (struct want){ 0 });
}

static void agent_step(struct agent *a)
{
	unsigned dice = (unsigned)(xorshift(&a->rng) % 100);
	char id[16];
	const char *const p[] = { id };

	snprintf(id, sizeof(id), "%d", random_id(a));
	if (dice < 70)
		run(a, "select balance from pgb_demo_accounts where id = $1", 1, p,
		    (struct want){ .one_row = true });
	else if (dice < 90)
		run(a, "update pgb_demo_accounts set balance = balance + 0, updated_at = now() "
		       "where id = $1", 1, p, (struct want){ .one_affected = true });
	else
		transfer(a);
}

/* Child body: connect, say so, wait for the start barrier (EOF on start_r),
 * work until the deadline, send the report. Never returns. */
static void agent_main(const char *dir, int ready_w, int start_r, int report_w, int seconds)
{
	struct agent a = { .rng = (((uint64_t)getpid() << 32) ^ (uint64_t)(now_s() * 1e9)) | 1 };
	char byte = 1;
	double deadline;

	a.conn = pgb_connect(dir);
	if (!a.conn || pgb_status(a.conn) != PGB_CONNECTION_OK) {
		fprintf(stderr, "agent %d: %s\n", (int)getpid(),
			a.conn ? pgb_error_message(a.conn) : "out of memory");
		a.rep.errors++;
	}
	if (write(ready_w, &byte, 1) != 1)
		a.rep.errors++;
	while (read(start_r, &byte, 1) < 0 && errno == EINTR)
		;
	/* Go on after a failed statement; stop once the connection is broken. */
	deadline = now_s() + seconds;
	while (a.conn && pgb_status(a.conn) == PGB_CONNECTION_OK && now_s() < deadline)
		agent_step(&a);
	pgb_finish(a.conn);
	_exit(write(report_w, &a.rep, sizeof(a.rep)) == sizeof(a.rep) ? 0 : 1);
}

/* A one-value integer query on the parent's connection; -1 on any error. */
static long long query_int(pgb_conn *c, const char *sql)
{
	pgb_result *r = pgb_exec(c, sql);
	long long v = -1;

	if (r && pgb_result_ok(r) && pgb_ntuples(r) == 1 && pgb_nfields(r) == 1)
		v = strtoll(pgb_getvalue(r, 0, 0), NULL, 10);
	else
		show_error("pgb_demo", sql, r);
	pgb_clear(r);
	return v;
}

static int setup(const char *dir)
{
	pgb_conn *c = pgb_connect(dir);
	bool ok = c && pgb_status(c) == PGB_CONNECTION_OK;

	if (!ok)
		fprintf(stderr, "pgb_demo: no broker at %s: %s\n", dir ? dir : "the default run directory",
			c ? pgb_error_message(c) : "out of memory");
	for (size_t i = 0; ok && i < sizeof(setup_sql) / sizeof(setup_sql[0]); i++) {
		pgb_result *r = pgb_exec(c, setup_sql[i]);

		ok = r && pgb_result_ok(r);
		if (!ok)
			show_error("pgb_demo: setup", setup_sql[i], r);
		pgb_clear(r);
	}
	pgb_finish(c);
	return ok ? 0 : -1;
}

static void add_reports(int fd, struct report *sum)
{
	struct report rep;

	while (read(fd, &rep, sizeof(rep)) == (ssize_t)sizeof(rep)) {
		sum->queries += rep.queries;
		sum->transactions += rep.transactions;
		sum->errors += rep.errors;
	}
}

/* Reap the agents and add up their reports until all are gone or kill_at has
 * passed; each agent still running then is killed and counts as an error. */
static void collect(pid_t *pids, int n, int report_r, double kill_at, struct report *sum)
{
	struct pollfd pfd = { .fd = report_r, .events = POLLIN };
	int alive = n, status;
	pid_t pid;

	while (alive > 0 && now_s() < kill_at) {
		if (poll(&pfd, 1, 100) > 0 && (pfd.revents & POLLIN))
			add_reports(report_r, sum);
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (int i = 0; i < n; i++)
				if (pids[i] == pid)
					pids[i] = 0;
			alive--;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				sum->errors++;
		}
	}
	for (int i = 0; i < n; i++) {
		if (pids[i] > 0) {
			fprintf(stderr, "pgb_demo: agent %d still running: killed\n", (int)pids[i]);
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
			sum->errors++;
		}
	}
	add_reports(report_r, sum); /* every writer is gone: reads to EOF */
}

static int parse_int(const char *s, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (!*s || *end || v < 1 || v > 100000) {
		fprintf(stderr, "pgb_demo: bad %s: %s\n", what, s);
		exit(2);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "agents", required_argument, NULL, 'n' },
		{ "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL;   /* NULL: libpgbroker's default ($PGBROKER_DIR, ...) */
	int nagents = 60, seconds = 10, ready[2], start[2], report[2], nready = 0, opt;
	long long backends, max_backends = 0, balance, logged;
	struct report sum = { 0 };
	double t0, elapsed, next;
	bool held;
	pgb_conn *mon;
	pid_t *pids;
	char byte;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'd') {
			dir = optarg;
		} else if (opt == 'n') {
			nagents = parse_int(optarg, "--agents");
		} else if (opt == 's') {
			seconds = parse_int(optarg, "--seconds");
		} else {
			fprintf(stderr, "usage: pgb_demo [--dir RUNDIR] [--agents N] [--seconds S]\n");
			return 2;
		}
	}
	if (setup(dir) < 0)
		return 1;
	pids = calloc((size_t)nagents, sizeof(*pids));
	if (!pids || pipe(ready) < 0 || pipe(start) < 0 || pipe(report) < 0) {
		perror("pgb_demo");
		return 1;
	}
	fflush(NULL);
	for (int i = 0; i < nagents; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("pgb_demo: fork");
			sum.errors++;
			nagents = i;
		} else if (pids[i] == 0) {
			close(ready[0]);
			close(start[1]);
			close(report[0]);
			agent_main(dir, ready[1], start[0], report[1], seconds);
		}
	}
	close(ready[1]);
	close(start[0]);
	close(report[1]);
	/* One byte per agent once connected; EOF early means some died. */
	while (nready < nagents && read(ready[0], &byte, 1) == 1)
		nready++;
	close(start[1]);
	t0 = now_s();

	/* While the agents run, only sample the backend count once a second. */
	mon = pgb_connect(dir);
	if (!mon || pgb_status(mon) != PGB_CONNECTION_OK) {
		fprintf(stderr, "pgb_demo: monitor connection: %s\n",
			mon ? pgb_error_message(mon) : "out of memory");
		sum.errors++;
	}
	for (int tick = 1; now_s() < t0 + seconds; tick++) {
		backends = query_int(mon, BACKENDS_SQL);
		if (backends > max_backends)
			max_backends = backends;
		next = t0 + (tick < seconds ? tick : seconds);
		if (next > now_s())
			usleep((useconds_t)((next - now_s()) * 1e6));
	}
	collect(pids, nagents, report[0], t0 + seconds + KILL_GRACE_S, &sum);
	elapsed = now_s() - t0;

	backends = query_int(mon, BACKENDS_SQL);
	if (backends > max_backends)
		max_backends = backends;
	balance = query_int(mon, "select sum(balance) from pgb_demo_accounts");
	logged = query_int(mon, "select count(*) from pgb_demo_log");
	pgb_finish(mon);
	held = balance == TOTAL_BALANCE && logged >= 0 && (uint64_t)logged == sum.transactions;

	printf("agents %d, seconds %.2f, queries %" PRIu64 ", transactions %" PRIu64
	       ", errors %" PRIu64 ", queries/s %.0f\n", nagents, elapsed, sum.queries,
	       sum.transactions, sum.errors, sum.queries / elapsed);
	printf("backends (application_name pgbroker): %lld at the end, max %lld sampled\n",
	       backends, max_backends);
	printf("sum(balance) %lld (want %lld), pgb_demo_log rows %lld (want %" PRIu64 "): %s\n",
	       balance, TOTAL_BALANCE, logged, sum.transactions, held ? "ok" : "FAILED");
	free(pids);
	return sum.errors == 0 && held ? 0 : 1;
}
