/* The working broker end to end: statements, parameters, errors, large
 * statements and results, transactions and isolation between agents. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct h_broker br;

static void start(void)
{
	h_broker_start(&br, NULL);
}

static void stop(void)
{
	cr_expect_eq(h_broker_stop(&br), 0, "broker did not exit cleanly");
}

TestSuite(core, .init = start, .fini = stop, .timeout = 60);

Test(core, select_values_and_names)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r = h_ok(c, "select 1 as one, null::text as nothing, ''::text as empty, "
			      "'héllo wörld' as word");

	cr_assert_eq(pgb_ntuples(r), 1);
	cr_assert_eq(pgb_nfields(r), 4);
	cr_assert_str_eq(pgb_fname(r, 0), "one");
	cr_assert_str_eq(pgb_fname(r, 3), "word");
	cr_assert_null(pgb_fname(r, 4));
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "1");
	cr_assert(pgb_getisnull(r, 0, 1));
	cr_assert_str_eq(pgb_getvalue(r, 0, 1), "");
	cr_assert_not(pgb_getisnull(r, 0, 2));
	cr_assert_eq(pgb_getlength(r, 0, 2), 0);
	cr_assert_str_eq(pgb_getvalue(r, 0, 3), "héllo wörld");
	cr_assert_eq(pgb_getlength(r, 0, 3), (int)strlen("héllo wörld"));
	cr_assert_null(pgb_getvalue(r, 1, 0));
	cr_assert_null(pgb_getvalue(r, 0, -1));
	cr_assert_str_eq(pgb_sqlstate(r), "");
	cr_assert_str_eq(pgb_result_error(r), "");
	pgb_clear(r);
	pgb_finish(c);
}

Test(core, parameters_and_nulls)
{
	pgb_conn *c = h_connect(&br);
	const char *v[] = { "41", NULL, "it's \"quoted\"", "" };
	pgb_result *r = pgb_exec_params(c, "select $1::int + 1, $2::text is null, $3::text, "
				     "length($4::text), $2::int", 4, v);

	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), "42");
	cr_assert_str_eq(pgb_getvalue(r, 0, 1), "t");
	cr_assert_str_eq(pgb_getvalue(r, 0, 2), "it's \"quoted\"");
	cr_assert_str_eq(pgb_getvalue(r, 0, 3), "0");
	cr_assert(pgb_getisnull(r, 0, 4));
	pgb_clear(r);

	/* parameters are never interpolated: an injection attempt is a value */
	const char *evil[] = { "1; drop table pg_class" };
	r = pgb_exec_params(c, "select $1::text", 1, evil);
	cr_assert(pgb_result_ok(r));
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), evil[0]);
	pgb_clear(r);

	/* a wrong parameter count is PostgreSQL's own error */
	r = pgb_exec_params(c, "select $1::int, $2::int", 1, v);
	cr_assert_not(pgb_result_ok(r));
	cr_assert_str_eq(pgb_sqlstate(r), "08P01");
	pgb_clear(r);
	r = pgb_exec_params(c, "select 1", -1, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BAD_REQUEST);
	pgb_clear(r);
	pgb_clear(h_ok(c, "select 1"));
	pgb_finish(c);
}

static const struct {
	const char *sql;
	const char *sqlstate;
} bad_sql[] = {
	{ .sql = "selec 1", .sqlstate = "42601" },
	{ .sql = "select 1/0", .sqlstate = "22012" },
	{ .sql = "select * from no_such_table", .sqlstate = "42P01" },
	{ .sql = "select no_such_column from pg_class", .sqlstate = "42703" },
	{ .sql = "select 'x'::int", .sqlstate = "22P02" },
	{ .sql = "select 1; selec 2", .sqlstate = "42601" },
};

Test(core, errors_keep_sqlstate_and_connection)
{
	pgb_conn *c = h_connect(&br);

	for (size_t i = 0; i < sizeof(bad_sql) / sizeof(bad_sql[0]); i++) {
		pgb_result *r = pgb_exec(c, bad_sql[i].sql);

		cr_assert_not(pgb_result_ok(r), "%s succeeded", bad_sql[i].sql);
		cr_assert_str_eq(pgb_sqlstate(r), bad_sql[i].sqlstate, "%s: %s", bad_sql[i].sql,
				 pgb_result_error(r));
		cr_assert_neq(strlen(pgb_result_error(r)), 0);
		pgb_clear(r);
		cr_assert_eq(h_num(c, "select 7"), 7, "connection unusable after an error");
	}
	pgb_clear(h_ok(c, "create temp table if not exists u (k int primary key)"));
	pgb_finish(c);
}

/* One form for every error message, PostgreSQL's, the broker's and the
 * library's own: "ERROR:  text\n", as libpq's PQresultErrorMessage, and the
 * text alone as the primary message field. Frees r. */
static void expect_error_form(pgb_result *r, const char *sqlstate, const char *what)
{
	const char *m = pgb_result_error(r);
	size_t n = strlen(m);

	cr_assert_not(pgb_result_ok(r), "%s succeeded", what);
	cr_expect_str_eq(pgb_sqlstate(r), sqlstate, "%s: %s", what, m);
	cr_expect(strncmp(m, "ERROR:  ", 8) == 0 && n > 9 && m[8] != ' ',
		  "%s: the message does not start with \"ERROR:  \": \"%s\"", what, m);
	cr_expect(n > 1 && m[n - 1] == '\n' && m[n - 2] != '\n',
		  "%s: the message does not end with one newline: \"%s\"", what, m);
	cr_expect_null(strstr(m + 1, "ERROR:  "), "%s: two prefixes: \"%s\"", what, m);
	/* The primary message is the text alone, as in libpq. */
	m = pgb_result_error_field(r, PGB_DIAG_MESSAGE_PRIMARY);
	cr_expect(m && *m && strncmp(m, "ERROR", 5) != 0 && !strchr(m, '\n'),
		  "%s: primary message \"%s\"", what, m ? m : "(null)");
	pgb_clear(r);
}

Test(core, every_error_message_has_the_same_form)
{
	pgb_conn *c = h_connect(&br);
	const char *zero[] = { "0" };
	struct pgb_stmt batch[] = {
		{ .sql = "select 1" },
		{ .sql = "select 1 / $1::int", .nparams = 1, .values = zero },
	};
	pgb_result *res[2];

	expect_error_form(pgb_exec(c, "select 1/0"), "22012", "PostgreSQL's error");
	cr_assert_eq(pgb_batch(c, batch, 2, res), -1);
	expect_error_form(res[0], "PB011", "the broker's PB011");
	expect_error_form(res[1], "22012", "PostgreSQL's error in a batch");
	expect_error_form(pgb_exec(c, NULL), "PB006", "the library's PB006");
	expect_error_form(pgb_exec_params(c, "select $1", -1, NULL), "PB006",
			  "the library's bad parameter count");
	pgb_finish(c);
}

Test(core, commands_report_rows_affected)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r;

	pgb_clear(h_ok(c, "drop table if exists t_cmd; create table t_cmd (k int primary key)"));
	r = h_ok(c, "insert into t_cmd select generate_series(1, 25)");
	cr_assert_eq(pgb_cmd_tuples(r), 25);
	cr_assert_str_eq(pgb_cmd_status(r), "INSERT 0 25");
	pgb_clear(r);
	r = h_ok(c, "delete from t_cmd where k <= 10");
	cr_assert_eq(pgb_cmd_tuples(r), 10);
	pgb_clear(r);
	r = pgb_exec(c, "insert into t_cmd values (11)");
	cr_assert_str_eq(pgb_sqlstate(r), "23505");
	pgb_clear(r);
	r = h_ok(c, "");
	cr_assert_eq(pgb_ntuples(r), 0);
	pgb_clear(r);
	pgb_clear(h_ok(c, "drop table t_cmd"));
	pgb_finish(c);
}

Test(core, large_statement_and_large_result)
{
	pgb_conn *c = h_connect(&br);
	size_t n = 4u << 20;
	char *sql = malloc(n + 64);
	const char *v[1];
	pgb_result *r;

	/* 4 MB of statement text streams through the 256 KiB ring */
	strcpy(sql, "select md5('");
	memset(sql + 12, 'q', n);
	strcpy(sql + 12 + n, "'), length('x')");
	r = h_ok(c, sql);
	cr_assert_eq(pgb_getlength(r, 0, 0), 32);
	cr_assert_str_eq(pgb_getvalue(r, 0, 1), "1");
	pgb_clear(r);
	/* the same text as a 4 MB parameter: md5 must match PostgreSQL's own */
	memset(sql, 'q', n);
	sql[n] = '\0';
	v[0] = sql;
	r = pgb_exec_params(c, "select md5($1), length($1)", 1, v);
	cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
	cr_assert_str_eq(pgb_getvalue(r, 0, 1), "4194304");
	PGconn *pg = h_pg();
	PGresult *pr = PQexec(pg, "select md5(repeat('q', 4194304))");
	cr_assert_str_eq(pgb_getvalue(r, 0, 0), PQgetvalue(pr, 0, 0));
	PQclear(pr);
	PQfinish(pg);
	pgb_clear(r);
	free(sql);

	/* a 20 MB result: 20000 rows of 1000 bytes, every row checked */
	r = h_ok(c, "select i, repeat(chr(65 + i % 26), 1000) from generate_series(0, 19999) i");
	cr_assert_eq(pgb_ntuples(r), 20000);
	for (int i = 0; i < 20000; i++) {
		const char *s = pgb_getvalue(r, i, 1);

		cr_assert_eq(atoi(pgb_getvalue(r, i, 0)), i);
		cr_assert_eq(pgb_getlength(r, i, 1), 1000);
		cr_assert(s[0] == 'A' + i % 26 && s[999] == 'A' + i % 26, "row %d corrupt", i);
	}
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 5"), 5);
	pgb_finish(c);
}

Test(core, transaction_pins_one_backend)
{
	pgb_conn *c = h_connect(&br);
	long long pid;

	pgb_clear(h_ok(c, "begin"));
	pid = h_num(c, "select pg_backend_pid()");
	for (int i = 0; i < 20; i++)
		cr_assert_eq(h_num(c, "select pg_backend_pid()"), pid);
	pgb_clear(h_ok(c, "commit"));
	pgb_finish(c);
}

Test(core, failed_transaction_reports_25P02_until_rollback)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r;

	pgb_clear(h_ok(c, "begin"));
	r = pgb_exec(c, "select 1/0");
	cr_assert_str_eq(pgb_sqlstate(r), "22012");
	pgb_clear(r);
	r = pgb_exec(c, "select 1");
	cr_assert_str_eq(pgb_sqlstate(r), "25P02");
	pgb_clear(r);
	pgb_clear(h_ok(c, "rollback"));
	cr_assert_eq(h_num(c, "select 3"), 3);
	pgb_finish(c);
}

Test(core, transactions_are_isolated_between_agents)
{
	pgb_conn *a = h_connect(&br), *b = h_connect(&br);

	pgb_clear(h_ok(a, "drop table if exists t_iso; create table t_iso (k int)"));
	pgb_clear(h_ok(a, "begin"));
	pgb_clear(h_ok(a, "insert into t_iso values (1)"));
	cr_assert_eq(h_num(a, "select count(*) from t_iso"), 1);
	cr_assert_eq(h_num(b, "select count(*) from t_iso"), 0, "uncommitted row leaked");
	pgb_clear(h_ok(a, "rollback"));
	cr_assert_eq(h_num(b, "select count(*) from t_iso"), 0);

	pgb_clear(h_ok(a, "begin"));
	pgb_clear(h_ok(a, "insert into t_iso values (2)"));
	pgb_clear(h_ok(a, "commit"));
	cr_assert_eq(h_num(b, "select count(*) from t_iso where k = 2"), 1);
	pgb_clear(h_ok(a, "drop table t_iso"));
	pgb_finish(a);
	pgb_finish(b);
}

Test(core, closed_connection_rolls_back_its_transaction)
{
	pgb_conn *a = h_connect(&br), *b = h_connect(&br);

	pgb_clear(h_ok(a, "drop table if exists t_fin; create table t_fin (k int)"));
	pgb_clear(h_ok(a, "begin"));
	pgb_clear(h_ok(a, "insert into t_fin values (1)"));
	pgb_finish(a);
	/* b can take the table lock only once a's transaction is gone */
	pgb_clear(h_ok(b, "begin"));
	pgb_clear(h_ok(b, "set local lock_timeout = '5s'"));
	pgb_clear(h_ok(b, "lock table t_fin in access exclusive mode"));
	cr_assert_eq(h_num(b, "select count(*) from t_fin"), 0);
	pgb_clear(h_ok(b, "drop table t_fin"));
	pgb_clear(h_ok(b, "commit"));
	pgb_finish(b);
}

/* COPY is relayed (tests/integ/test_copy.c); a second COPY in one
 * statement string is not: PB009 once the first one's data is through,
 * and the connection goes on. */
Test(core, second_copy_in_one_string_is_refused_clearly)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r = pgb_exec(c, "copy (select 1) to stdout; copy (select 2) to stdout");
	char *row;

	cr_assert_eq(pgb_result_status(r), PGB_COPY_OUT, "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(pgb_get_copy_data(c, &row, 0), 2);
	cr_assert_str_eq(row, "1\n");
	pgb_freemem(row);
	cr_assert_eq(pgb_get_copy_data(c, &row, 0), -1);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_UNSUPPORTED, "%s", pgb_result_error(r));
	pgb_clear(r);
	r = pgb_exec(c, "create temp table cp (k int); copy cp from stdin; copy cp from stdin");
	cr_assert_eq(pgb_result_status(r), PGB_COPY_IN, "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(pgb_put_copy_data(c, "7\n", 2), 1);
	cr_assert_eq(pgb_put_copy_end(c, NULL), 1);
	r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_UNSUPPORTED, "%s", pgb_result_error(r));
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 9"), 9);
	pgb_finish(c);
}

Test(core, null_and_closed_handles_are_errors_not_crashes)
{
	pgb_result *r = pgb_exec(NULL, "select 1");

	cr_assert_not(pgb_result_ok(r));
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED);
	pgb_clear(r);
	pgb_conn *c = h_connect(&br);
	r = pgb_exec(c, NULL);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BAD_REQUEST);
	pgb_clear(r);
	pgb_clear(NULL);
	cr_assert_eq(pgb_ntuples(NULL), 0);
	cr_assert_null(pgb_getvalue(NULL, 0, 0));
	pgb_finish(c);
	pgb_finish(NULL);

	pgb_conn *bad = pgb_connect("/nonexistent/dir");
	cr_assert_eq(pgb_status(bad), PGB_CONNECTION_BAD);
	cr_assert(strstr(pgb_error_message(bad), "/nonexistent/dir") != NULL);
	r = pgb_exec(bad, "select 1");
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED);
	pgb_clear(r);
	pgb_finish(bad);
}

/* Under AddressSanitizer the second clear is ASan's to report, not ours. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

Test(core, clearing_a_result_twice_is_caught, .signal = SIGABRT, .disabled = UNDER_ASAN)
{
	pgb_conn *c = h_connect(&br);
	pgb_result *r = h_ok(c, "select 1");

	pgb_clear(r);
	pgb_clear(r);   /* debug builds abort with a message, not a corrupt heap */
}
