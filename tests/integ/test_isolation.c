/* One agent never sees another's session state. A corpus of statements is
 * run on a direct connection, where the server shows what each changed in
 * the session; the broker's classifier must call every such text
 * session-changing. The same corpus then runs through a broker with one
 * backend, and a second agent process must see none of it. Last, what no
 * parser sees (a function body) and reset_query_always for it. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/classify.h"
#include "harness.h"

static struct h_broker br;

TestSuite(isolation, .timeout = 240);

/* What a session holds, as one text: settings, temporary objects, prepared
 * statements (not the broker's own), cursors, channels, session advisory
 * locks, the user. */
#define SNAP_SQL(where)                                                                    \
	"select concat_ws(E'\\n', "                                                        \
	"(select string_agg(name || '=' || coalesce(setting, ''), ',' order by name) "     \
	" from pg_settings " where "), "                                                   \
	"'temp:' || coalesce((select string_agg(relname, ',' order by relname) from pg_class " \
	" where relnamespace = pg_my_temp_schema()), ''), "                                \
	"'tempfn:' || coalesce((select string_agg(proname, ',' order by proname) from pg_proc " \
	" where pronamespace = pg_my_temp_schema()), ''), "                                \
	"'prep:' || coalesce((select string_agg(name, ',' order by name) "                 \
	" from pg_prepared_statements where name not like '\\_pgbroker\\_%'), ''), "       \
	"'cursors:' || coalesce((select string_agg(name, ',' order by name) from pg_cursors), ''), " \
	"'listen:' || coalesce((select string_agg(c, ',' order by c) "                     \
	" from pg_listening_channels() c), ''), "                                          \
	"'locks:' || coalesce((select string_agg(objid::text || '/' || mode, ',' order by 1) " \
	" from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()), ''), "    \
	"'user:' || current_user || '/' || session_user"
/* On a direct connection also whether the session got a temporary schema
 * (a temp table ON COMMIT DROP leaves nothing else behind). */
#define SNAP_DIRECT SNAP_SQL("") ", 'tempns:' || pg_my_temp_schema()::oid)"
/* Through the broker, plpgsql's own settings are left out: the library
 * registers them in a backend on its first use there, by whoever. */
#define SNAP_BROKER SNAP_SQL("where name not like 'plpgsql.%'") ")"

#define ROLE "pgb_iso_role"

/* .changes: the text surely changes the session (checks the detector). */
struct text {
	const char *sql;
	int changes;
};

static const struct text corpus[] = {
	/* the bypasses of the hand-written scanner */
	{ .sql = "UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'", .changes = 1 },
	{ .sql = "select 1 as x$$$, set_config('search_path','e',false), 2 as y$$", .changes = 1 },
	{ .sql = "select 1 as \xc3\xa9$a$, set_config('statement_timeout','1ms',false), 2 as \xc3\xa9$a$",
	  .changes = 1 },
	{ .sql = "select U&\"set\\005fconfig\"('search_path','e',false)", .changes = 1 },
	{ .sql = "create table U&\"pg\\005ftemp\".t as select 42", .changes = 1 },
	/* (on the test server both are 0 already; the broker sets them) */
	{ .sql = "UPDATE pg_settings SET setting = '0' WHERE name IN "
		 "('statement_timeout', 'idle_in_transaction_session_timeout')" },
	{ .sql = "UPDATE pg_settings SET setting = '4321' WHERE name IN "
		 "('statement_timeout', 'idle_in_transaction_session_timeout')", .changes = 1 },
	/* every form of SET */
	{ .sql = "SET search_path = iso_a", .changes = 1 },
	{ .sql = "SET search_path TO public, iso_b", .changes = 1 },
	{ .sql = "set work_mem to '64MB'", .changes = 1 },
	{ .sql = "SET SESSION work_mem = '65MB'", .changes = 1 },
	{ .sql = "SET LOCAL work_mem = '66MB'" },
	{ .sql = "SET TIME ZONE 'Asia/Tokyo'", .changes = 1 },
	{ .sql = "set timezone = 'UTC-3'", .changes = 1 },
	{ .sql = "SET datestyle = 'German'", .changes = 1 },
	{ .sql = "SET SCHEMA 'iso_c'", .changes = 1 },
	{ .sql = "SET statement_timeout = 1234", .changes = 1 },
	{ .sql = "set statement_timeout to default" },
	{ .sql = "RESET statement_timeout" },
	{ .sql = "RESET ALL" },
	{ .sql = "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
	  .changes = 1 },
	{ .sql = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ" },
	{ .sql = "set application_name = 'iso_app'", .changes = 1 },
	{ .sql = "SET XML OPTION DOCUMENT", .changes = 1 },
	{ .sql = "set enable_seqscan = off", .changes = 1 },
	{ .sql = "set client_min_messages = warning", .changes = 1 },
	{ .sql = "/* hint */ SET search_path = iso_d", .changes = 1 },
	{ .sql = "-- note\nSET work_mem = '70MB'", .changes = 1 },
	{ .sql = "SeT   SeArCh_PaTh = iso_e", .changes = 1 },
	{ .sql = "SET \"search_path\" = iso_f", .changes = 1 },
	{ .sql = "SET U&\"search\\005fpath\" = iso_g", .changes = 1 },
	{ .sql = "set search_path = $$iso_h$$", .changes = 1 },
	{ .sql = "set search_path = $t$iso_h2$t$", .changes = 1 },
	{ .sql = "set search_path = E'iso\\x5fi'", .changes = 1 },
	{ .sql = "select 1; set work_mem = '71MB'", .changes = 1 },
	{ .sql = "set work_mem = '72MB'; select 1", .changes = 1 },
	{ .sql = "select 'a\\'; set search_path = iso_k; select 'b'", .changes = 1 },
	{ .sql = "SET ROLE " ROLE, .changes = 1 },
	{ .sql = "SET ROLE NONE" },
	{ .sql = "RESET ROLE" },
	{ .sql = "SET SESSION AUTHORIZATION " ROLE, .changes = 1 },
	{ .sql = "SET SESSION AUTHORIZATION DEFAULT" },
	{ .sql = "set local role " ROLE },
	/* set_config under every spelling */
	{ .sql = "select set_config('search_path', 'iso_l', false)", .changes = 1 },
	{ .sql = "select set_config('search_path', 'iso_m', true)" },
	{ .sql = "SELECT pg_catalog.set_config('work_mem', '73MB', false)", .changes = 1 },
	{ .sql = "select \"pg_catalog\".\"set_config\"('work_mem', '74MB', false)", .changes = 1 },
	{ .sql = "select PG_CATALOG.SET_CONFIG('work_mem', '75MB', false)", .changes = 1 },
	{ .sql = "select * from set_config('work_mem', '76MB', false)", .changes = 1 },
	{ .sql = "select (select set_config('work_mem', '77MB', false))", .changes = 1 },
	{ .sql = "with s as (select set_config('work_mem', '78MB', false)) select * from s",
	  .changes = 1 },
	{ .sql = "select set_config(name, '79MB', false) from pg_settings where name = 'work_mem'",
	  .changes = 1 },
	{ .sql = "select 1 where set_config('work_mem', '80MB', false) is not null", .changes = 1 },
	{ .sql = "values (set_config('work_mem', '81MB', false))", .changes = 1 },
	{ .sql = "select U&\"\\0073et_config\"('work_mem', '82MB', false)", .changes = 1 },
	{ .sql = "select U&\"set!005fconfig\" UESCAPE '!' ('work_mem', '83MB', false)", .changes = 1 },
	{ .sql = "select set_config/*x*/('work_mem', '84MB', false)", .changes = 1 },
	{ .sql = "select\tset_config\n('work_mem', '85MB', false)", .changes = 1 },
	{ .sql = "explain analyze select set_config('work_mem', '86MB', false)", .changes = 1 },
	{ .sql = "select set_config('search_path', $$iso_n$$, false)", .changes = 1 },
	{ .sql = "select set_config('search_path', $q$iso_o$q$, false)", .changes = 1 },
	{ .sql = "select set_config(E'search\\x5fpath', 'iso_p', false)", .changes = 1 },
	{ .sql = "select set_config('role', '" ROLE "', false)", .changes = 1 },
	{ .sql = "select case when true then set_config('work_mem', '87MB', false) end",
	  .changes = 1 },
	/* pg_settings */
	{ .sql = "update pg_settings set setting = 'iso_q' where name = 'search_path'", .changes = 1 },
	{ .sql = "UPDATE pg_catalog.pg_settings SET setting = '88MB' WHERE name = 'work_mem'",
	  .changes = 1 },
	{ .sql = "update \"pg_settings\" set setting = '89MB' where name = 'work_mem'", .changes = 1 },
	{ .sql = "update U&\"pg\\005fsettings\" set setting = '90MB' where name = 'work_mem'",
	  .changes = 1 },
	/* (refused: a rule's DO INSTEAD in WITH) */
	{ .sql = "with u as (update pg_settings set setting = '91MB' where name = 'work_mem' "
		 "returning 1) select count(*) from u" },
	{ .sql = "update pg_settings s set setting = '92MB' from (select 'work_mem' n) x "
		 "where s.name = x.n", .changes = 1 },
	{ .sql = "select * from pg_settings where name = 'work_mem'" },
	/* temporary objects */
	{ .sql = "create temp table iso_t1 (a int)", .changes = 1 },
	{ .sql = "CREATE TEMPORARY TABLE iso_t2 AS SELECT 1 AS a", .changes = 1 },
	{ .sql = "create local temporary table iso_t3 (a int)", .changes = 1 },
	{ .sql = "create temp view iso_v1 as select 1", .changes = 1 },
	{ .sql = "create temp sequence iso_s1", .changes = 1 },
	{ .sql = "create table pg_temp.iso_t4 (a int)", .changes = 1 },
	{ .sql = "create table \"pg_temp\".iso_t5 (a int)", .changes = 1 },
	{ .sql = "select 1 as a into temp iso_t6", .changes = 1 },
	{ .sql = "select 1 as a into temporary table iso_t7", .changes = 1 },
	{ .sql = "create function pg_temp.iso_f() returns int language sql as 'select 1'",
	  .changes = 1 },
	{ .sql = "create temp table iso_t8 (a int) on commit drop", .changes = 1 },
	{ .sql = "begin; create temp table iso_t9 (a int); commit", .changes = 1 },
	{ .sql = "create view pg_temp.iso_v2 as select 1", .changes = 1 },
	/* prepared statements */
	{ .sql = "PREPARE iso_p1 AS SELECT 1", .changes = 1 },
	{ .sql = "prepare iso_p2 (int) as select $1", .changes = 1 },
	{ .sql = "PREPARE iso_p3 AS SELECT 1; EXECUTE iso_p3", .changes = 1 },
	{ .sql = "/* c */ prepare iso_p4 as select 2", .changes = 1 },
	{ .sql = "select 1; select 2; prepare iso_p5 as select 3", .changes = 1 },
	{ .sql = "deallocate all" },
	/* LISTEN */
	{ .sql = "LISTEN iso_chan", .changes = 1 },
	{ .sql = "listen \"Iso Chan\"", .changes = 1 },
	{ .sql = "select 1; listen iso_chan2", .changes = 1 },
	{ .sql = "listen U&\"iso\\005fchan3\"", .changes = 1 },
	{ .sql = "UNLISTEN *" },
	{ .sql = "NOTIFY iso_chan" },
	{ .sql = "select pg_notify('iso_chan', 'x')" },
	/* cursors WITH HOLD */
	{ .sql = "DECLARE iso_c1 CURSOR WITH HOLD FOR SELECT 1", .changes = 1 },
	{ .sql = "declare iso_c2 no scroll cursor with hold for select 1", .changes = 1 },
	{ .sql = "begin; declare iso_c3 cursor for select 1; commit" },
	{ .sql = "begin; declare iso_c4 cursor with hold for select 1; commit", .changes = 1 },
	{ .sql = "DECLARE iso_c5 BINARY CURSOR WITH HOLD FOR SELECT 1", .changes = 1 },
	/* advisory locks */
	{ .sql = "select pg_advisory_lock(42)", .changes = 1 },
	{ .sql = "SELECT pg_try_advisory_lock(43)", .changes = 1 },
	{ .sql = "select pg_advisory_lock_shared(44)", .changes = 1 },
	{ .sql = "select pg_try_advisory_lock_shared(1, 2)", .changes = 1 },
	{ .sql = "select pg_catalog.pg_advisory_lock(46)", .changes = 1 },
	{ .sql = "select \"pg_advisory_lock\"(47)", .changes = 1 },
	{ .sql = "select U&\"pg\\005fadvisory\\005flock\"(48)", .changes = 1 },
	{ .sql = "select * from pg_advisory_lock(49)", .changes = 1 },
	{ .sql = "select pg_advisory_xact_lock(45)" },
	{ .sql = "select pg_advisory_unlock_all()" },
	/* LOAD: a library stays loaded, its settings with it */
	{ .sql = "LOAD 'auto_explain'", .changes = 1 },
	/* DO: its body is not read */
	{ .sql = "do $$ begin perform set_config('work_mem', '93MB', false); end $$", .changes = 1 },
	{ .sql = "DO LANGUAGE plpgsql $x$ begin execute 'set search_path = iso_r'; end $x$",
	  .changes = 1 },
	/* comments, dollar quotes and E'' strings that hide nothing */
	{ .sql = "select 'set role x'" },
	{ .sql = "select 1 -- ; set search_path = x" },
	{ .sql = "select 1 /* ; set search_path = x */" },
	{ .sql = "select $$; set search_path = x$$" },
	{ .sql = "select $a$ $$ ; set search_path = x $$ $a$" },
	{ .sql = "select E'\\'; set search_path = iso_j; select \\''" },
	{ .sql = "select E'set_config(\\'search_path\\', \\'x\\', false)'" },
	{ .sql = "select 1 as \"set_config\"" },
	{ .sql = "select 'pg_temp.t'" },
	/* multi-statement texts */
	{ .sql = "begin; set local work_mem = '94MB'; commit" },
	{ .sql = "begin; set work_mem = '95MB'; commit", .changes = 1 },
	{ .sql = "begin; set work_mem = '96MB'; rollback" },
	{ .sql = "set work_mem = '97MB'; reset work_mem" },
	{ .sql = "select 1; select pg_advisory_lock(50); select 2", .changes = 1 },
	/* plain statements */
	{ .sql = "select 1" },
	{ .sql = "values (1), (2)" },
	{ .sql = "select current_setting('work_mem')" },
	{ .sql = "show work_mem" },
	/* not PostgreSQL */
	{ .sql = "selec 1" },
	{ .sql = "set" },
};

#define NCORPUS (sizeof(corpus) / sizeof(corpus[0]))

/* A snapshot that fails (statement_timeout = 1ms) is a change too. */
static char *pg_snapshot(PGconn *pg)
{
	PGresult *r = PQexec(pg, SNAP_DIRECT);
	char *s;

	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		s = strdup(PQgetvalue(r, 0, 0));
	else
		s = strdup(PQresultErrorField(r, PG_DIAG_SQLSTATE) ?: "error");
	PQclear(r);
	cr_assert(s);
	return s;
}

/* The items (settings, lines) of b that a lacks, for the failure message. */
static void missing_items(const char *a, const char *b, char *out, size_t n)
{
	char *ca = strdup(a), *cb = strdup(b), *save = NULL;
	size_t used = 0;

	cr_assert(ca && cb);
	out[0] = '\0';
	for (char *t = strtok_r(cb, ",\n", &save); t; t = strtok_r(NULL, ",\n", &save)) {
		int found = 0;

		for (const char *p = ca; !found && (p = strstr(p, t)); p++)
			found = (p == ca || p[-1] == ',' || p[-1] == '\n') &&
				(p[strlen(t)] == ',' || p[strlen(t)] == '\n' || !p[strlen(t)]);
		if (!found && used + strlen(t) + 3 < n)
			used += (size_t)snprintf(out + used, n - used, "%s; ", t);
	}
	free(ca);
	free(cb);
}

static void pg_run(PGconn *pg, const char *sql)
{
	PQclear(PQexec(pg, sql));
	if (PQtransactionStatus(pg) != PQTRANS_IDLE)
		PQclear(PQexec(pg, "rollback"));
}

static void role_setup(void)
{
	PGconn *pg = h_pg();

	PQclear(PQexec(pg, "drop role if exists " ROLE));
	pg_run(pg, "create role " ROLE);
	PQfinish(pg);
}

static void role_drop(void)
{
	PGconn *pg = h_pg();

	PQclear(PQexec(pg, "drop role if exists " ROLE));
	PQfinish(pg);
}

/* Every text that changes the session, as the server shows it, is one the
 * classifier calls session-changing. */
Test(isolation, every_text_that_changes_the_session_is_classified_so, .fini = role_drop)
{
	int changed = 0;

	role_setup();
	for (size_t i = 0; i < NCORPUS; i++) {
		PGconn *pg = h_pg();
		char *before = pg_snapshot(pg), *after;
		int differs;

		pg_run(pg, corpus[i].sql);
		after = pg_snapshot(pg);
		differs = strcmp(before, after) != 0;
		changed += differs;
		if (corpus[i].changes)
			cr_expect(differs, "the server shows no change from: %s", corpus[i].sql);
		if (differs)
			cr_expect(sql_changes_session(corpus[i].sql),
				  "changes the session but is not classified so: %s", corpus[i].sql);
		free(before);
		free(after);
		PQfinish(pg);
	}
	cr_expect_geq(changed, 60, "only %d texts of %zu changed the session", changed, NCORPUS);
	sql_class_reset();
}

/* The second agent: takes a snapshot through the broker whenever the test
 * writes a byte to cmd, answers on res (length, then text). */
struct agent_b {
	int cmd[2], res[2];
};

static int write_all(int fd, const void *p, size_t n)
{
	for (const char *c = p; n;) {
		ssize_t w = write(fd, c, n);

		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	for (char *c = p; n;) {
		ssize_t r = read(fd, c, n);

		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static int agent_b_main(void *arg)
{
	struct agent_b *b = arg;
	pgb_conn *c = pgb_connect(br.dir);
	char cmd;

	close(b->cmd[1]);
	close(b->res[0]);
	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 2;
	while (read(b->cmd[0], &cmd, 1) == 1 && cmd == 's') {
		pgb_result *r = pgb_exec(c, SNAP_BROKER);
		char buf[64];
		const char *v = buf;
		uint32_t n;

		if (pgb_result_ok(r))
			v = pgb_getvalue(r, 0, 0);
		else
			snprintf(buf, sizeof(buf), "error %s", pgb_sqlstate(r));
		n = (uint32_t)strlen(v);
		if (write_all(b->res[1], &n, sizeof(n)) < 0 || write_all(b->res[1], v, n) < 0)
			return 3;
		pgb_clear(r);
	}
	pgb_finish(c);
	return 0;
}

static char *agent_b_snapshot(struct agent_b *b)
{
	uint32_t n;
	char *s;

	cr_assert_eq(write(b->cmd[1], "s", 1), 1);
	cr_assert_eq(read_all(b->res[0], &n, sizeof(n)), 0, "the second agent died");
	s = malloc(n + 1);
	cr_assert(s);
	cr_assert_eq(read_all(b->res[0], s, n), 0, "the second agent died");
	s[n] = '\0';
	return s;
}

/* With one backend, each text from one agent, then a snapshot from a second
 * agent process: the second sees what it saw before the first ran. */
Test(isolation, a_second_agent_sees_none_of_the_first_agents_state, .fini = role_drop)
{
	struct agent_b b;
	char *base;
	pid_t kid;
	int leaks = 0;

	role_setup();
	h_broker_start(&br, (const char *[]){ "--min-pool-size", "1", "--pool-size", "1",
					       "--max-pool-size", "1", NULL });
	cr_assert_eq(pipe(b.cmd), 0);
	cr_assert_eq(pipe(b.res), 0);
	kid = h_fork(agent_b_main, &b);
	close(b.cmd[0]);
	close(b.res[1]);
	base = agent_b_snapshot(&b);
	cr_assert(strncmp(base, "error", 5) != 0, "%s", base);
	for (size_t i = 0; i < NCORPUS; i++) {
		pgb_conn *a = h_connect(&br);
		char *now;

		pgb_clear(pgb_exec(a, corpus[i].sql));
		pgb_finish(a);
		now = agent_b_snapshot(&b);
		if (strcmp(base, now) != 0) {
			char gone[2048], added[2048];

			missing_items(now, base, gone, sizeof(gone));
			missing_items(base, now, added, sizeof(added));
			leaks++;
			cr_expect_fail("the second agent sees the first one's state after: %s\n"
				       "before: %s\nnow: %s", corpus[i].sql, gone, added);
			free(base);
			base = now;	/* report each leak once */
		} else {
			free(now);
		}
	}
	free(base);
	close(b.cmd[1]);
	cr_expect_eq(h_wait(kid, 10000), 0, "the second agent failed");
	close(b.res[0]);
	cr_expect_eq(leaks, 0);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static void sneaky_setup(void)
{
	PGconn *pg = h_pg();

	pg_run(pg, "create or replace function iso_sneaky() returns text language sql as "
		   "$$ select set_config('work_mem', '123MB', false) $$");
	PQfinish(pg);
}

static void sneaky_drop(void)
{
	PGconn *pg = h_pg();

	PQclear(PQexec(pg, "drop function if exists iso_sneaky()"));
	PQfinish(pg);
}

/* work_mem as a second agent sees it after a first called iso_sneaky(). */
static char *sneaky_seen(void)
{
	pgb_conn *a = h_connect(&br), *b;
	pgb_result *r;
	char *v;

	pgb_clear(h_ok(a, "select iso_sneaky()"));
	b = h_connect(&br);
	r = h_ok(b, "select current_setting('work_mem')");
	v = strdup(pgb_getvalue(r, 0, 0));
	pgb_clear(r);
	pgb_finish(b);
	pgb_finish(a);
	return v;
}

/* No parser sees into a function body: without reset_query_always the
 * next agent on the backend gets what the function set; with it, never. */
Test(isolation, reset_query_always_cleans_what_no_parser_sees, .init = sneaky_setup,
     .fini = sneaky_drop)
{
	const char *one[] = { "--min-pool-size", "1", "--pool-size", "1", "--max-pool-size", "1",
			      NULL };
	const char *one_reset[] = { "--min-pool-size", "1", "--pool-size", "1",
				    "--max-pool-size", "1", "--reset-query-always", NULL };
	char *v;

	cr_assert_eq(sql_changes_session("select iso_sneaky()"), 0);
	sql_class_reset();
	h_broker_start(&br, one);
	v = sneaky_seen();
	cr_expect_str_eq(v, "123MB", "the function's setting did not reach the next agent: "
		       "is the test still showing the limit?");
	free(v);
	cr_assert_eq(h_broker_stop(&br), 0);

	memset(&br, 0, sizeof(br));
	h_broker_start(&br, one_reset);
	for (int i = 0; i < 3; i++) {
		v = sneaky_seen();
		cr_expect_str_neq(v, "123MB", "reset_query_always left a function's setting");
		free(v);
	}
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(isolation, reset_query_always_is_validated)
{
	char bin[512], out[65536];
	const char *bad[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--check-config",
			      "--reset-query-always=maybe", NULL };
	const char *good[] = { bin, "--check-config", "--reset-query-always=on", NULL };
	const char *help[] = { bin, "--help", NULL };

	cr_expect_eq(h_run(bad, out, sizeof(out)), 2);
	cr_expect(strstr(out, "reset_query_always") && strstr(out, "maybe"), "%s", out);
	cr_expect_eq(h_run(good, out, sizeof(out)), 0, "%s", out);
	cr_expect_eq(h_run(help, out, sizeof(out)), 0);
	cr_expect(strstr(out, "--reset-query-always"), "--help does not show the key");
}
