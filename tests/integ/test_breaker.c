/* The broker's circuit breaker against a real PostgreSQL: a short restart
 * under a write load and a start while PostgreSQL is down are served again
 * within one step of the connect schedule, not after breaker_reset_timeout_ms;
 * a server that refuses the broker (no such database, no such role) is
 * "misconfigured", reported with its own words, and recovers once fixed;
 * so is a wrong password (a role of its own, asked for by pg_hba.conf). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

static struct h_broker br;

static void *shared(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, 0, n);
	return p;
}

static const char *pgdir(void)
{
	const char *dir = getenv("PGB_TEST_PGDIR");

	cr_assert_not_null(dir, "PGB_TEST_PGDIR is not set");
	return dir;
}

static void pg_ctl(const char *cmd)
{
	char bin[512], out[2048];
	const char *argv[] = { "/bin/sh", h_bin("tools/pgtmp.sh", bin, sizeof(bin)), cmd, pgdir(),
			       NULL };

	cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "pgtmp.sh %s: %s", cmd, out);
}

static int run_pg_ctl(void *arg)
{
	pg_ctl(arg);
	return 0;
}

/* pgtmp.sh `cmd` (start or restart), watched by PQping every 2 ms: returns
 * when PostgreSQL accepts connections again, the moment the broker could be
 * serving again; *down_ms (may be NULL) gets when it first did not. */
static long long pg_ctl_watched(const char *cmd, long long *down_ms)
{
	char conninfo[1024];
	long long deadline = h_now_ms() + 60000, t;
	int was_down = 0;
	pid_t kid;

	snprintf(conninfo, sizeof(conninfo), "%s connect_timeout=2", h_dsn());
	kid = h_fork(run_pg_ctl, (void *)cmd);
	for (;;) {
		int up = PQping(conninfo) == PQPING_OK;

		t = h_now_ms();
		if (!up && !was_down) {
			was_down = 1;
			if (down_ms)
				*down_ms = t;
		}
		if (up && was_down)
			break;
		cr_assert_lt(t, deadline, "PostgreSQL did not %s", cmd);
		usleep(2000);
	}
	cr_assert_eq(h_wait(kid, 60000), 0, "pgtmp.sh %s failed", cmd);
	return t;
}

static int connect_failed_once(void *arg)
{
	struct stats_data d;

	(void)arg;
	return h_stats(br.dir, &d) == 0 && d.c.connect_failures > 0;
}

static int log_has(const char *needle)
{
	char buf[1 << 16];
	FILE *f = fopen(br.log, "r");
	size_t n;

	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return strstr(buf, needle) != NULL;
}

/* ---- a short restart under a write load ---- */

#define AGENTS 8

struct load {
	volatile int stop;
	volatile long long since_ms;          /* successes completed after this count */
	volatile long long first_ok_ms[AGENTS];  /* the first one after since_ms */
	volatile int ok[AGENTS], err[AGENTS], pb002[AGENTS], pb010[AGENTS], other[AGENTS];
	char first_other[AGENTS][96];
};

struct l_arg {
	struct load *l;
	int me;
};

static int writer(void *arg)
{
	struct l_arg *a = arg;
	struct load *l = a->l;
	pgb_conn *c;
	char sql[128];

	prctl(PR_SET_PDEATHSIG, SIGKILL);	/* a failed test does not leave it looping */
	c = pgb_connect(br.dir);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (long long i = 0; !l->stop; i++) {
		pgb_result *r;
		const char *st;

		snprintf(sql, sizeof(sql), "insert into brk_w (agent, n) values (%d, %lld)", a->me, i);
		r = pgb_exec(c, sql);
		if (pgb_result_ok(r)) {
			long long t = h_now_ms();

			l->ok[a->me]++;
			if (l->since_ms && t >= l->since_ms && !l->first_ok_ms[a->me])
				l->first_ok_ms[a->me] = t;
			pgb_clear(r);
			continue;
		}
		st = pgb_sqlstate(r);
		l->err[a->me]++;
		if (strcmp(st, "PB002") == 0)
			l->pb002[a->me]++;
		else if (strcmp(st, "PB010") == 0)
			l->pb010[a->me]++;
		else if (strncmp(st, "PB", 2) != 0 && strncmp(st, "08", 2) != 0 &&
			 strncmp(st, "57P", 3) != 0 && !l->other[a->me]++)
			snprintf(l->first_other[a->me], sizeof(l->first_other[a->me]), "%s %.80s", st,
				 pgb_result_error(r));
		pgb_clear(r);
		usleep(2000);	/* fail-fast answers: do not spin */
	}
	pgb_finish(c);
	return 0;
}

static int all_ok(struct load *l, int n)
{
	for (int i = 0; i < AGENTS; i++)
		if (l->ok[i] < n)
			return 0;
	return 1;
}

static int warm(void *arg)
{
	return all_ok(arg, 20);
}

static int all_back(void *arg)
{
	struct load *l = arg;

	for (int i = 0; i < AGENTS; i++)
		if (!l->first_ok_ms[i])
			return 0;
	return 1;
}

Test(breaker, a_short_restart_under_load_is_served_again_within_a_probe_interval, .timeout = 120)
{
	/* the defaults that turned a 0.4 s restart into 30 s of PB002 */
	const char *args[] = { "--min-pool-size", "5", "--pool-size", "8", "--max-pool-size", "8",
			       NULL };
	struct load *l = shared(sizeof(*l));
	struct l_arg la[AGENTS];
	pid_t kids[AGENTS];
	PGconn *pg = h_pg();
	PGresult *res;
	long long t_down = 0, t_accept, first = -1, last = 0, pb002 = 0, pb010 = 0, errs = 0;
	struct stats_data d;

	res = PQexec(pg, "drop table if exists brk_w; create table brk_w (agent int, n bigint)");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(res);
	PQfinish(pg);
	h_broker_start(&br, args);
	for (int i = 0; i < AGENTS; i++) {
		la[i] = (struct l_arg){ .l = l, .me = i };
		kids[i] = h_fork(writer, &la[i]);
	}
	cr_assert(h_until(warm, l, 30000), "the write load never got going");
	t_accept = pg_ctl_watched("restart", &t_down);	/* pg_ctl restart -m fast */
	l->since_ms = t_accept;
	cr_assert(h_until(all_back, l, 20000), "not every agent was served within 20 s of "
		  "PostgreSQL accepting connections again");
	l->stop = 1;
	for (int i = 0; i < AGENTS; i++) {
		long long dt = l->first_ok_ms[i] - t_accept;

		cr_assert_eq(h_wait(kids[i], 20000), 0, "agent %d", i);
		cr_assert_eq(l->other[i], 0, "agent %d: %s", i, l->first_other[i]);
		if (first < 0 || dt < first)
			first = dt;
		if (dt > last)
			last = dt;
		pb002 += l->pb002[i];
		pb010 += l->pb010[i];
		errs += l->err[i];
	}
	cr_assert_eq(h_stats(br.dir, &d), 0);
	fprintf(stderr, "breaker: PostgreSQL restarted in %lld ms; served again %lld ms "
		"(first agent) and %lld ms (all %d agents) after it accepted connections; "
		"errors %lld (PB002 %lld, PB010 %lld); connect failures %llu, breaker opened %llu "
		"times\n", t_accept - t_down, first, last, AGENTS, errs, pb002, pb010,
		(unsigned long long)d.c.connect_failures, (unsigned long long)d.breaker_opened);
	/* Before: the five parallel reconnects opened the breaker at once and
	 * everybody got PB002 for breaker_reset_timeout_ms (30 s). */
	cr_assert_lt(last, 10000, "served again only %lld ms after PostgreSQL came back", last);
	cr_assert_eq(d.breaker_state, 0, "the breaker is %s", stats_breaker_name(d.breaker_state));
	pg = h_pg();
	res = PQexec(pg, "drop table brk_w");
	PQclear(res);
	PQfinish(pg);
	munmap(l, sizeof(*l));
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- a start while PostgreSQL is down ---- */

struct first_ok {
	volatile int stop;
	volatile long long ok_ms;
	volatile int errors;
	char last_err[128];
};

static int keep_trying(void *arg)
{
	struct first_ok *f = arg;
	pgb_conn *c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);	/* a failed test does not leave it looping */
	c = pgb_connect(br.dir);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	while (!f->stop && !f->ok_ms) {
		pgb_result *r = pgb_exec(c, "select 1");

		if (pgb_result_ok(r)) {
			f->ok_ms = h_now_ms();
		} else {
			f->errors++;
			snprintf(f->last_err, sizeof(f->last_err), "%s %.100s", pgb_sqlstate(r),
				 pgb_result_error(r));
			usleep(2000);
		}
		pgb_clear(r);
	}
	pgb_finish(c);
	return 0;
}

static int served(void *arg)
{
	return ((struct first_ok *)arg)->ok_ms != 0;
}

Test(breaker, a_start_while_postgresql_is_down_serves_soon_after_it_comes_up, .timeout = 120)
{
	struct first_ok *f = shared(sizeof(*f));
	long long t_accept;
	pid_t kid;

	pg_ctl("pause");
	h_broker_start(&br, NULL);	/* min_pool_size 5: five connects fail at once */
	kid = h_fork(keep_trying, f);
	cr_assert(h_until(connect_failed_once, NULL, 10000), "no connect failed");
	usleep(1000 * 1000);	/* PostgreSQL stays down a second (fault injection) */
	t_accept = pg_ctl_watched("start", NULL);
	cr_assert(h_until(served, f, 20000), "not served within 20 s of PostgreSQL coming up: %s",
		  f->last_err);
	cr_assert_eq(h_wait(kid, 10000), 0);
	fprintf(stderr, "breaker: after a start with PostgreSQL down, the first statement was "
		"served %lld ms after PostgreSQL accepted connections (%d errors before: %s)\n",
		f->ok_ms - t_accept, f->errors, f->last_err);
	/* Before: 29 s, the breaker having opened on the five start-up connects. */
	cr_assert_lt(f->ok_ms - t_accept, 10000);
	munmap(f, sizeof(*f));
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- misconfigured: the server answers, and will not have us ---- */

struct refusal {
	const char *dsn_extra;   /* appended to the test DSN */
	const char *sqlstate;    /* the server's */
	const char *words;       /* in its message */
	const char *fix, *undo;  /* SQL that makes the DSN good, and takes that back */
};

static int poolstat_says(const char *mode, const char *want, char *out, size_t n)
{
	char bin[512];
	const char *argv[] = { h_bin("tools/poolstat", bin, sizeof(bin)), mode, br.dir, NULL };

	h_run(argv, out, n);
	return strstr(out, want) != NULL;
}

static int health_misconfigured(void *arg)
{
	struct pgb_health *h = arg;

	return pgb_pool_health(br.dir, h) == 0 && strstr(h->reasons, "misconfigured");
}

static void check_refusal(const struct refusal *c)
{
	char dsn[1200], out[16384];
	const char *args[] = { "--dsn", dsn, "--min-pool-size", "2", "--breaker-reset-timeout-ms",
			       "1000", NULL };
	struct pgb_health h;
	struct stats_data d;
	pgb_conn *conn;
	pgb_result *r;
	PGconn *pg;
	PGresult *res;
	int ok = 0;

	snprintf(dsn, sizeof(dsn), "%s %s", h_dsn(), c->dsn_extra);
	h_broker_start(&br, args);
	conn = h_connect(&br);
	/* The first statement may have waited for the first connect; later
	 * ones fail fast. Both say what the server said. */
	for (int i = 0; i < 3; i++) {
		r = pgb_exec(conn, "select 1");
		cr_assert_not(pgb_result_ok(r), "%s: served", c->dsn_extra);
		cr_assert_str_eq(pgb_sqlstate(r), "PB010", "%s: %s", c->dsn_extra,
				 pgb_result_error(r));
		cr_assert(strstr(pgb_result_error(r), c->words), "%s: \"%s\" lacks \"%s\"",
			  c->dsn_extra, pgb_result_error(r), c->words);
		cr_assert(strstr(pgb_result_error(r), "misconfigured"), "%s", pgb_result_error(r));
		cr_assert_null(strstr(pgb_result_error(r), "unreachable"), "%s", pgb_result_error(r));
		pgb_clear(r);
	}
	cr_assert_eq(h_stats(br.dir, &d), 0);
	cr_assert_str_eq(stats_breaker_name(d.breaker_state), "misconfigured");
	cr_assert_str_eq(d.connect_code, c->sqlstate);
	cr_assert(strstr(d.connect_error, c->words), "segment: %s", d.connect_error);
	/* health reasons, poolstat and the log say so too, never "unreachable" */
	cr_assert(h_until(health_misconfigured, &h, 10000), "health: %s", h.reasons);
	cr_assert(strstr(h.reasons, c->words), "health: %s", h.reasons);
	cr_assert_null(strstr(h.reasons, "unreachable"), "health: %s", h.reasons);
	cr_assert_null(strstr(h.recommendations, "unreachable"), "%s", h.recommendations);
	cr_assert(poolstat_says("--once", "misconfigured", out, sizeof(out)), "%s", out);
	cr_assert(strstr(out, c->words), "poolstat: %s", out);
	cr_assert(strstr(out, c->sqlstate), "poolstat: %s", out);
	cr_assert_null(strstr(out, "unreachable"), "poolstat: %s", out);
	cr_assert(poolstat_says("--json", "\"misconfigured\"", out, sizeof(out)), "%s", out);
	cr_assert(log_has(c->words), "the log lacks the server's message");
	cr_assert(log_has("misconfigured"));
	cr_assert_not(log_has("unreachable"));
	/* fixed on the server: the next probe (at most 1 s away) gets in */
	pg = h_pg();
	res = PQexec(pg, c->fix);
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(res);
	for (long long until = h_now_ms() + 15000; !ok && h_now_ms() < until;) {
		r = pgb_exec(conn, "select 1");
		ok = pgb_result_ok(r);
		pgb_clear(r);
		if (!ok)
			usleep(20000);
	}
	cr_assert(ok, "%s: not served after the fix", c->dsn_extra);
	pgb_finish(conn);
	cr_assert_eq(h_broker_stop(&br), 0);
	memset(&br, 0, sizeof(br));
	res = PQexec(pg, c->undo);
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
	PQclear(res);
	PQfinish(pg);
}

Test(breaker, a_missing_database_is_misconfigured_not_unreachable, .timeout = 90)
{
	const struct refusal c = {
		.dsn_extra = "dbname=pgb_no_such_db", .sqlstate = "3D000",
		.words = "database \"pgb_no_such_db\" does not exist",
		.fix = "create database pgb_no_such_db", .undo = "drop database pgb_no_such_db",
	};

	check_refusal(&c);
}

Test(breaker, a_missing_role_is_misconfigured_not_unreachable, .timeout = 90)
{
	const struct refusal c = {
		.dsn_extra = "user=pgb_no_such_role", .sqlstate = "28000",
		.words = "role \"pgb_no_such_role\" does not exist",
		.fix = "create role pgb_no_such_role login superuser",
		.undo = "drop role pgb_no_such_role",
	};

	check_refusal(&c);
}

/* ---- a wrong password: the role exists, pg_hba.conf asks for its password ---- */

#define PW_ROLE "pgb_pw_role"
#define PW_HBA_LINE "local all " PW_ROLE " scram-sha-256\n"

static char hba_path[1024];
static char *hba_saved;         /* pg_hba.conf as it was, restored in fini */
static size_t hba_len;

static void pg_do(PGconn *pg, const char *sql)
{
	PGresult *res = PQexec(pg, sql);

	cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQerrorMessage(pg));
	PQclear(res);
}

/* A direct connect as the role with a wrong password is refused: the
 * reloaded pg_hba.conf is in force. */
static int password_asked(void *arg)
{
	char conninfo[1200];
	PGconn *pg;
	int refused;

	(void)arg;
	snprintf(conninfo, sizeof(conninfo), "%s user=" PW_ROLE " password=pgb_wrong", h_dsn());
	pg = PQconnectdb(conninfo);
	refused = PQstatus(pg) == CONNECTION_BAD &&
		  strstr(PQerrorMessage(pg), "password authentication failed");
	PQfinish(pg);
	return refused;
}

static void hba_password_role(void)
{
	PGconn *pg = h_pg();
	PGresult *res = PQexec(pg, "show hba_file");
	FILE *f;
	long n;

	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
	snprintf(hba_path, sizeof(hba_path), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	f = fopen(hba_path, "r");
	cr_assert_not_null(f, "%s", hba_path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	hba_saved = malloc((size_t)n + 1);
	cr_assert_not_null(hba_saved);
	hba_len = fread(hba_saved, 1, (size_t)n, f);
	fclose(f);
	cr_assert_eq(hba_len, (size_t)n);
	pg_do(pg, "drop role if exists " PW_ROLE);
	pg_do(pg, "create role " PW_ROLE " login superuser password 'pgb_right'");
	/* first match wins: the role's line goes before the trust lines */
	f = fopen(hba_path, "w");
	cr_assert_not_null(f, "%s", hba_path);
	fputs(PW_HBA_LINE, f);
	fwrite(hba_saved, 1, hba_len, f);
	cr_assert_eq(fclose(f), 0);
	pg_do(pg, "select pg_reload_conf()");
	PQfinish(pg);
	cr_assert(h_until(password_asked, NULL, 20000), "pg_hba.conf reload not in force");
}

/* pg_hba.conf back as it was, the role gone, whatever the test did. */
static void hba_restore(void)
{
	PGconn *pg;

	if (br.pid > 0)
		h_broker_kill(&br);
	if (hba_saved) {
		FILE *f = fopen(hba_path, "w");

		if (f) {
			fwrite(hba_saved, 1, hba_len, f);
			fclose(f);
		}
		free(hba_saved);
		hba_saved = NULL;
	}
	pg = PQconnectdb(h_dsn());
	if (PQstatus(pg) == CONNECTION_OK) {
		PQclear(PQexec(pg, "select pg_reload_conf()"));
		PQclear(PQexec(pg, "drop role if exists " PW_ROLE));
	}
	PQfinish(pg);
}

Test(breaker, a_wrong_password_is_misconfigured_not_unreachable, .timeout = 90,
     .fini = hba_restore)
{
	const struct refusal c = {
		.dsn_extra = "user=" PW_ROLE " password=pgb_wrong", .sqlstate = "28P01",
		.words = "password authentication failed for user \"" PW_ROLE "\"",
		.fix = "alter role " PW_ROLE " password 'pgb_wrong'",
		.undo = "drop role " PW_ROLE,
	};

	hba_password_role();
	check_refusal(&c);
}
