/* Which statements change session state, which may share a pipeline. */
#include <criterion/criterion.h>

#include "sqlscan.h"

Test(sqlscan, session_changing_statements)
{
	static const char *const yes[] = {
		"SET search_path = x", "set work_mem to '64MB'", "PREPARE p AS SELECT 1",
		"DEALLOCATE ALL", "discard all", "LISTEN chan", "LOAD 'auto_explain'",
		"CREATE TEMP TABLE t(a int)", "create temporary table t(a int)",
		"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "select set_config('a.b', '1', false)",
		"SELECT pg_advisory_lock(1)", "select 1; set role x",
		"DO $$ begin execute 'deallocate all'; end $$",
		/* a backslash-escaped quote does not end an E'' string */
		"select E'it\\'s'; set search_path = x", "select e'\\'' ; SET role x",
		/* with standard_conforming_strings off, nor a plain one */
		"select 'it\\'s'; set search_path = x",
		/* temporary objects named by their schema */
		"create table pg_temp.scratch (a int)", "select 1 into pg_temp.t",
		"CREATE FUNCTION PG_TEMP.f() RETURNS int AS 'select 1' LANGUAGE sql",
		"create view pg_temp_3.v as select 1",
		/* quoted names are the same names */
		"select \"set_config\"('search_path', 'x', false)",
		"select pg_catalog.\"pg_advisory_lock\"(1)", "create table \"pg_temp\".t (a int)",
		"select dblink_connect_u('c', 'dbname=x')",
	};
	static const char *const no[] = {
		"SELECT 1", "SET LOCAL work_mem = '1MB'", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET CONSTRAINTS ALL DEFERRED", "select 'set role x'", "select 1 -- set role x",
		"UPDATE t SET a = 1", "insert into temps values (1)",
		"select E'it\\'s set role x'", "select 'C:\\' as dir",
		"select * from pg_temporary_stuff", "select 'pg_temp.x'",
		"select \"set_configs\" from t", "select 1 as \"pg_temp x\"",
	};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_expect_eq(sql_changes_session(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_eq(sql_changes_session(no[i]), 0, "%s", no[i]);
}

Test(sqlscan, pipelinable_statements)
{
	static const char *const yes[] = {
		"SELECT 1", "  select abalance from pgbench_accounts where aid = $1",
		"UPDATE t SET a = $1 WHERE id = $2", "insert into t values (1);", "WITH x AS (SELECT 1) SELECT * FROM x",
		"(select 1)", "select ';'", "select 1 -- trailing ; comment", "values (1), (2)",
		"show work_mem", "table t",
	};
	static const char *const no[] = {
		"BEGIN", "commit", "select 1; select 2", "select $$a;b$$", "select $tag$x$tag$",
		"select /* c */ 1", "select 'unterminated", "create table t(a int)",
		"copy t from stdin", "vacuum", "",
	};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_expect_eq(sql_pipelinable(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_eq(sql_pipelinable(no[i]), 0, "%s", no[i]);
}

Test(sqlscan, all_or_nothing_statements)
{
	static const char *const yes[] = {
		"select flaky()", "update t set a = 1", "insert into t values (';')",
		"select 1;", "with x as (select 1) select * from x", "select 'commit; call p()'",
		"select 1 -- ; commit", "select $$a; commit$$", "(select 1)",
		"/* call */ select 1",
	};
	static const char *const no[] = {
		"call p()", "CALL p()", "do $$ begin commit; end $$", "select 1; select 2",
		"insert into t values (1); commit; select 1", "begin; select 1; commit",
		"commit", "end", "rollback", "savepoint a", "prepare transaction 'x'",
		/* with standard_conforming_strings off the ';' is outside a string */
		"select 'a\\'; call p(); select '",
	};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_expect_eq(sql_all_or_nothing(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_eq(sql_all_or_nothing(no[i]), 0, "%s", no[i]);
}

Test(sqlscan, statements_that_may_commit)
{
	static const char *const yes[] = {
		"commit", "COMMIT", "end", "commit and chain", "commit prepared 'x'",
		"prepare transaction 'x'", "/* app */ commit", "insert into t values (1); commit",
		"-- note\ncommit", ";commit", "select 'a\\'; commit; select '",
	};
	static const char *const no[] = {
		"rollback", "select 'commit'", "select 1 -- ; commit", "update t set ending = 1",
		"insert into commits values (1)", "select $$; commit$$",
	};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_expect_eq(sql_may_commit(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_eq(sql_may_commit(no[i]), 0, "%s", no[i]);
}

Test(sqlscan, transaction_control)
{
	static const char *const yes[] = {
		"begin", "BEGIN ISOLATION LEVEL SERIALIZABLE", "start transaction", "commit",
		"end", "rollback", "abort", "rollback to savepoint s", "/* x */ begin",
		"select 1; commit", "  Rollback",
	};
	static const char *const no[] = {
		"select 'begin'", "savepoint s", "release s", "update t set ended = true",
		"insert into rollbacks values (1)", "select 1 -- ; commit", "prepare p as select 1",
		"call p()", "do $$ begin commit; end $$",
	};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_expect_eq(sql_txn_control(yes[i]), 1, "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_expect_eq(sql_txn_control(no[i]), 0, "%s", no[i]);
}
