/* What PostgreSQL's parser says a statement text does (broker/classify.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/classify.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void fini(void)
{
	sql_class_reset();
}

TestSuite(classify, .fini = fini);

Test(classify, session_changing_statements)
{
	static const char *const yes[] = {
		"SET search_path = x", "set work_mem to '64MB'", "SET SESSION work_mem = '1MB'",
		"set time zone 'UTC'", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
		"RESET work_mem", "RESET ALL", "SET ROLE x", "RESET ROLE",
		"SET SESSION AUTHORIZATION x", "PREPARE p AS SELECT 1", "DEALLOCATE ALL",
		"discard all", "discard temp", "LISTEN chan", "UNLISTEN *", "LOAD 'auto_explain'",
		"CREATE TEMP TABLE t(a int)", "create temporary table t(a int)",
		"create temp view v as select 1", "create temp sequence s",
		"create temp table t as select 1", "select 1 as a into temp t",
		"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "select set_config('a.b', '1', false)",
		"SELECT pg_advisory_lock(1)", "select pg_try_advisory_lock_shared(1, 2)",
		"select setseed(0.5)", "select 1; set role x",
		"DO $$ begin execute 'deallocate all'; end $$",
		"select E'it\\'s'; set search_path = x", "select e'\\'' ; SET role x",
		/* temporary objects named by their schema */
		"create table pg_temp.scratch (a int)", "select 1 into pg_temp.t",
		"CREATE FUNCTION PG_TEMP.f() RETURNS int AS 'select 1' LANGUAGE sql",
		"create view pg_temp_3.v as select 1", "create type pg_temp.ty as (a int)",
		/* quoted names are the same names */
		"select \"set_config\"('search_path', 'x', false)",
		"select pg_catalog.\"pg_advisory_lock\"(1)", "create table \"pg_temp\".t (a int)",
		"select dblink_connect_u('c', 'dbname=x')",
		/* found anywhere in the tree */
		"select * from set_config('search_path', 'x', false)",
		"with x as (select set_config('a.b', '1', false)) select * from x",
		"select (select pg_advisory_lock(1))", "explain analyze select set_config('a.b','1',false)",
		"call p(set_config('a.b', '1', false))",
		/* the scanner's bypasses */
		"UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'",
		"update pg_catalog.pg_settings set setting = '0' where name in "
		"('statement_timeout', 'idle_in_transaction_session_timeout')",
		"with u as (update pg_settings set setting = 'x' where name = 'search_path' "
		"returning 1) select * from u",
		"select 1 as x$$$, set_config('search_path','e',false), 2 as y$$",
		"select 1 as \xc3\xa9$a$, set_config('statement_timeout','1ms',false), 2 as \xc3\xa9$a$",
		"select U&\"set\\005fconfig\"('search_path','e',false)",
		"create table U&\"pg\\005ftemp\".t as select 42",
		"select U&\"pg_advisory_lock\"(7)",
		/* not a statement PostgreSQL 15 reads: the worst is assumed */
		"selec 1", "select 'unterminated", "SET",
	};
	static const char *const no[] = {
		"SELECT 1", "SET LOCAL work_mem = '1MB'", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET CONSTRAINTS ALL DEFERRED", "select 'set role x'", "select 1 -- set role x",
		"UPDATE t SET a = 1", "insert into temps values (1)",
		"select E'it\\'s set role x'", "select 'C:\\' as dir",
		"select * from pg_temporary_stuff", "select 'pg_temp.x'",
		"select \"set_configs\" from t", "select 1 as \"pg_temp x\"",
		"select 'set_config(1)'", "select $$set_config('a','b',false)$$",
		"select current_setting('search_path')", "select * from pg_settings",
		"select pg_advisory_xact_lock(1)", "DECLARE c CURSOR FOR SELECT 1",
		"create function f() returns void as $$ select set_config('a.b','1',false) $$ "
		"language sql",
		"alter role current_user set work_mem = '1MB'",
		"select 1 as set_config", "",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_changes_session(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_changes_session(no[i]), 0, "%s", no[i]);
}

Test(classify, pipelinable_statements)
{
	static const char *const yes[] = {
		"SELECT 1", "  select abalance from pgbench_accounts where aid = $1",
		"UPDATE t SET a = $1 WHERE id = $2", "insert into t values (1);",
		"WITH x AS (SELECT 1) SELECT * FROM x", "(select 1)", "select ';'",
		"select 1 -- trailing ; comment", "values (1), (2)", "show work_mem", "table t",
		"select $$a;b$$", "select /* c */ 1", "delete from t where a = $1",
	};
	static const char *const no[] = {
		"BEGIN", "commit", "select 1; select 2", "select 'unterminated",
		"create table t(a int)", "copy t from stdin", "vacuum", "", "select set_config('a','b',false)",
		"set work_mem = '1MB'", "select pg_advisory_lock(1)",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_pipelinable(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_pipelinable(no[i]), 0, "%s", no[i]);
}

Test(classify, all_or_nothing_statements)
{
	static const char *const yes[] = {
		"select flaky()", "update t set a = 1", "insert into t values (';')",
		"select 1;", "with x as (select 1) select * from x", "select 'commit; call p()'",
		"select 1 -- ; commit", "select $$a; commit$$", "(select 1)",
		"/* call */ select 1", "create index i on t (a)",
	};
	static const char *const no[] = {
		"call p()", "CALL p()", "do $$ begin commit; end $$", "select 1; select 2",
		"insert into t values (1); commit; select 1", "begin; select 1; commit",
		"commit", "end", "rollback", "savepoint a", "prepare transaction 'x'",
		"prepare p as select 1", "vacuum t", "create index concurrently i on t (a)",
		"reindex table t", "select 'a\\'; call p(); select '", "selec 1",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_all_or_nothing(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_all_or_nothing(no[i]), 0, "%s", no[i]);
}

Test(classify, statements_that_may_commit)
{
	static const char *const yes[] = {
		"commit", "COMMIT", "end", "commit and chain", "commit prepared 'x'",
		"prepare transaction 'x'", "/* app */ commit", "insert into t values (1); commit",
		"-- note\ncommit", ";commit", "select 'a\\'; commit; select '", "not sql at all",
	};
	static const char *const no[] = {
		"rollback", "select 'commit'", "select 1 -- ; commit", "update t set ending = 1",
		"insert into commits values (1)", "select $$; commit$$", "begin", "savepoint s",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_may_commit(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_may_commit(no[i]), 0, "%s", no[i]);
}

Test(classify, transaction_control)
{
	static const char *const yes[] = {
		"begin", "BEGIN ISOLATION LEVEL SERIALIZABLE", "start transaction", "commit",
		"end", "rollback", "abort", "rollback to savepoint s", "/* x */ begin",
		"select 1; commit", "  Rollback", "prepare transaction 'x'",
		"rollback prepared 'x'", "commit prepared 'x'",
	};
	static const char *const no[] = {
		"select 'begin'", "savepoint s", "release s", "update t set ended = true",
		"insert into rollbacks values (1)", "select 1 -- ; commit", "prepare p as select 1",
		"call p()", "do $$ begin commit; end $$", "select $$; commit$$",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_txn_control(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_txn_control(no[i]), 0, "%s", no[i]);
}

/* Only a plain ROLLBACK ends a lost transaction: nothing else may ride
 * along, nor a ROLLBACK that leaves a transaction open. */
Test(classify, plain_rollback)
{
	static const char *const yes[] = {
		"rollback", "ROLLBACK;", "abort", "Rollback Work", "rollback transaction ;",
		"/* a /* nested */ comment */ rollback -- done\n", "abort and no chain",
		"\n\trollback\n",
	};
	static const char *const no[] = {
		"", "commit", "rollback to savepoint s", "rollback to s", "rollback prepared 'x'",
		"rollback and chain", "rollback; insert into t values (1)", "select 1; rollback",
		"rollback work work", "rollbacks", "abort and no", "rollback /* open comment",
		"'rollback'", "rollback x", "rollback; rollback",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_is_rollback(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_is_rollback(no[i]), 0, "%s", no[i]);
}

Test(classify, unparsable_text_is_pinned_and_never_safe)
{
	static const char *const bad[] = {
		"selec 1", "select 'unterminated", "select $$open", "update", "\x01\x02",
		"select (((((((((((((((((((((((((((((((1", "select 1 +",
	};

	for (size_t i = 0; i < N(bad); i++) {
		unsigned fl = sql_classify(bad[i]);

		cr_expect(fl & SQL_UNPARSED, "%s", bad[i]);
		cr_expect(fl & SQL_SESSION, "%s", bad[i]);
		cr_expect(fl & SQL_MAY_COMMIT, "%s", bad[i]);
		cr_expect(!(fl & (SQL_PIPELINABLE | SQL_ALL_OR_NOTHING)), "%s", bad[i]);
	}
}

/* A repeated text is parsed once; the cache stays within its bounds and
 * still answers right once it has dropped texts. */
Test(classify, cache_parses_a_text_once_and_stays_bounded)
{
	struct sql_class_stats st;
	char sql[64];
	int n = CLASS_SETS * CLASS_WAYS * 2;

	sql_class_reset();
	for (int k = 0; k < 100; k++)
		cr_assert_eq(sql_classify("select abalance from pgbench_accounts where aid = $1"),
			     SQL_ALL_OR_NOTHING | SQL_PIPELINABLE | SQL_SINGLE);
	sql_class_stats(&st);
	cr_assert_eq(st.parses, 1);
	cr_assert_eq(st.hits, 99);
	for (int i = 0; i < n; i++) {
		snprintf(sql, sizeof(sql), i % 2 ? "select %d" : "set work_mem = %d", i + 64);
		cr_assert_eq(sql_changes_session(sql), !(i % 2), "%s", sql);
	}
	sql_class_stats(&st);
	cr_assert_leq(st.entries, CLASS_SETS * CLASS_WAYS);
	cr_assert_leq(st.bytes, CLASS_BYTES_MAX);
	cr_assert_geq(st.entries, CLASS_SETS * CLASS_WAYS / 2, "the cache holds little");
	/* a text longer than the cache takes is parsed each time, still right */
	char *big = malloc(CLASS_TEXT_MAX + 64);

	cr_assert(big);
	memset(big, ' ', CLASS_TEXT_MAX + 32);
	memcpy(big, "set search_path = x", 19);
	big[CLASS_TEXT_MAX + 32] = '\0';
	cr_assert(sql_changes_session(big));
	cr_assert(sql_changes_session(big));
	free(big);
	/* the same hash bucket, another text: never confused */
	cr_assert_eq(sql_changes_session("select 1"), 0);
	cr_assert_eq(sql_changes_session("select 1 "), 0);
	cr_assert_eq(sql_changes_session("set x.y = 1"), 1);
}

/* State DISCARD ALL cannot undo: the backend is closed, not reused. */
Test(classify, state_discard_all_cannot_undo)
{
	static const char *const yes[] = {
		"LOAD 'auto_explain'", "select setseed(0.5)", "select 1; load 'x'",
		"select dblink_connect('c', 'dbname=x')", "select pg_catalog.setseed(0)",
		"select pg_create_logical_replication_slot('s', 'test_decoding', true)",
	};
	static const char *const no[] = {
		"set work_mem = '1MB'", "select pg_advisory_lock(1)", "create temp table t (a int)",
		"select 'setseed(1)'", "selec 1",
	};

	for (size_t i = 0; i < N(yes); i++)
		cr_expect_eq(sql_classify(yes[i]) & (SQL_UNCLEAN | SQL_SESSION),
			     SQL_UNCLEAN | SQL_SESSION, "%s", yes[i]);
	for (size_t i = 0; i < N(no); i++)
		cr_expect_eq(sql_classify(no[i]) & SQL_UNCLEAN, 0, "%s", no[i]);
}

/* BEGIN texts the broker may answer itself: a plain transaction start whose
 * modes cannot fail; SERIALIZABLE and READ WRITE flagged as needing a
 * primary. Everything else is sent as it is. */
Test(classify, deferrable_begin)
{
	static const struct {
		const char *sql;
		unsigned flags;   /* SQL_BEGIN | SQL_BEGIN_PRIMARY bits expected */
	} cases[] = {
		{ .sql = "begin", .flags = SQL_BEGIN },
		{ .sql = "BEGIN;", .flags = SQL_BEGIN },
		{ .sql = "begin work", .flags = SQL_BEGIN },
		{ .sql = "start transaction", .flags = SQL_BEGIN },
		{ .sql = "BEGIN ISOLATION LEVEL REPEATABLE READ", .flags = SQL_BEGIN },
		{ .sql = "begin isolation level read committed read only", .flags = SQL_BEGIN },
		{ .sql = "begin isolation level read uncommitted, deferrable", .flags = SQL_BEGIN },
		{ .sql = "BEGIN READ ONLY", .flags = SQL_BEGIN },
		{ .sql = "begin not deferrable", .flags = SQL_BEGIN },
		{ .sql = "BEGIN ISOLATION LEVEL SERIALIZABLE",
		  .flags = SQL_BEGIN | SQL_BEGIN_PRIMARY },
		{ .sql = "start transaction isolation level serializable, read only, deferrable",
		  .flags = SQL_BEGIN | SQL_BEGIN_PRIMARY },
		{ .sql = "begin read write", .flags = SQL_BEGIN | SQL_BEGIN_PRIMARY },
		/* not deferred */
		{ .sql = "begin read only, read write", .flags = 0 },
		{ .sql = "begin isolation level serializable isolation level read committed",
		  .flags = 0 },
		{ .sql = "begin; select 1", .flags = 0 },
		{ .sql = "select 1; begin", .flags = 0 },
		{ .sql = "begin isolation level bogus", .flags = 0 },
		{ .sql = "begin transaction isolation", .flags = 0 },
		{ .sql = "commit", .flags = 0 },
		{ .sql = "savepoint s", .flags = 0 },
		{ .sql = "set transaction isolation level serializable", .flags = 0 },
		{ .sql = "", .flags = 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(sql_classify(cases[i].sql) & (SQL_BEGIN | SQL_BEGIN_PRIMARY),
			     cases[i].flags, "%s", cases[i].sql);
}

Test(classify, plain_commit_and_single_statement)
{
	static const char *const commit[] = { "commit", "END", "commit work", "commit and no chain",
					      "COMMIT TRANSACTION;" };
	static const char *const not_commit[] = { "commit and chain", "commit prepared 'x'",
						  "prepare transaction 'x'", "commit; commit",
						  "rollback", "begin", "select 'commit'" };
	static const char *const single[] = { "select 1", "insert into t values (1);",
					      "savepoint s", "update t set a = $1", "commit" };
	static const char *const not_single[] = { "select 1; select 2", "", "copy t from stdin",
						  "copy t to stdout", "select (" };

	for (size_t i = 0; i < sizeof(commit) / sizeof(commit[0]); i++)
		cr_expect_eq(sql_is_commit(commit[i]), 1, "%s", commit[i]);
	for (size_t i = 0; i < sizeof(not_commit) / sizeof(not_commit[0]); i++)
		cr_expect_eq(sql_is_commit(not_commit[i]), 0, "%s", not_commit[i]);
	for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
		cr_expect(sql_classify(single[i]) & SQL_SINGLE, "%s", single[i]);
	for (size_t i = 0; i < sizeof(not_single) / sizeof(not_single[0]); i++)
		cr_expect(!(sql_classify(not_single[i]) & SQL_SINGLE), "%s", not_single[i]);
}

/* LISTEN and UNLISTEN alone in their text go to the broker's listening
 * connection, with the channel's name as PostgreSQL reads it. */
Test(classify, listen_and_unlisten_with_their_channel)
{
	static const struct {
		const char *sql;
		enum sql_listen_kind kind;
		const char *chan;
	} cases[] = {
		{ .sql = "LISTEN jobs", .kind = SQL_LISTEN_ON, .chan = "jobs" },
		{ .sql = "listen Jobs;", .kind = SQL_LISTEN_ON, .chan = "jobs" },
		{ .sql = " /* c */ listen \"Mixed Case\"", .kind = SQL_LISTEN_ON, .chan = "Mixed Case" },
		{ .sql = "listen U&\"a\\0062c\"", .kind = SQL_LISTEN_ON, .chan = "abc" },
		{ .sql = "UNLISTEN jobs", .kind = SQL_UNLISTEN, .chan = "jobs" },
		{ .sql = "unlisten *", .kind = SQL_UNLISTEN_ALL, .chan = "" },
		/* PostgreSQL cuts names to 63 bytes */
		{ .sql = "listen aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  .kind = SQL_LISTEN_ON,
		  .chan = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
		/* not alone, or not LISTEN: run on a backend as before */
		{ .sql = "select 1; listen jobs", .kind = SQL_LISTEN_NONE },
		{ .sql = "listen a; listen b", .kind = SQL_LISTEN_NONE },
		{ .sql = "notify jobs", .kind = SQL_LISTEN_NONE },
		{ .sql = "select 'listen jobs'", .kind = SQL_LISTEN_NONE },
		{ .sql = "listen", .kind = SQL_LISTEN_NONE },
	};
	char chan[64];

	for (size_t i = 0; i < N(cases); i++) {
		enum sql_listen_kind k = sql_listen(cases[i].sql, chan, sizeof(chan));

		cr_expect_eq(k, cases[i].kind, "%s: %d", cases[i].sql, k);
		cr_expect_eq((sql_classify(cases[i].sql) & SQL_LISTEN) != 0,
			     cases[i].kind != SQL_LISTEN_NONE, "%s", cases[i].sql);
		if (cases[i].kind != SQL_LISTEN_NONE)
			cr_expect_str_eq(chan, cases[i].chan, "%s", cases[i].sql);
	}
}
