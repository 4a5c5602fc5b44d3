/* What a result says besides its rows: pgb_result_status, the column types
 * (pgb_ftype, pgb_fmod) and the error fields (pgb_result_error_field), each
 * compared with what libpq reports for the same statement on the same
 * PostgreSQL. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static struct h_broker br;

static void start(void)
{
	h_broker_start(&br, NULL);
}

static void stop(void)
{
	cr_expect_eq(h_broker_stop(&br), 0, "broker did not exit cleanly");
}

TestSuite(result, .init = start, .fini = stop, .timeout = 60);

static void pg_do(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

/* An error the broker makes itself: it refuses a batch that would begin a
 * transaction (PB006), before anything runs. */
static pgb_result *broker_error(pgb_conn *c)
{
	const struct pgb_stmt st[] = { { .sql = "begin" } };
	pgb_result *res[1] = { NULL };

	cr_assert_eq(pgb_batch(c, st, 1, res), -1);
	cr_assert_not_null(res[0]);
	return res[0];
}

Test(result, status_matches_libpq)
{
	static const struct {
		const char *sql;
		pgb_exec_status want;
	} cases[] = {
		{ .sql = "", .want = PGB_EMPTY_QUERY },
		{ .sql = "   ", .want = PGB_EMPTY_QUERY },
		{ .sql = "select 1", .want = PGB_TUPLES_OK },
		{ .sql = "select 1 where false", .want = PGB_TUPLES_OK },
		{ .sql = "values (1, 2), (3, 4)", .want = PGB_TUPLES_OK },
		{ .sql = "set statement_timeout = 60000", .want = PGB_COMMAND_OK },
		{ .sql = "do $$ begin end $$", .want = PGB_COMMAND_OK },
		{ .sql = "selec 1", .want = PGB_FATAL_ERROR },
		{ .sql = "select 1/0", .want = PGB_FATAL_ERROR },
	};
	PGconn *pg = h_pg();
	pgb_conn *c = h_connect(&br);

	/* The enum keeps libpq's numbers. */
	cr_assert_eq(PGB_EMPTY_QUERY, (int)PGRES_EMPTY_QUERY);
	cr_assert_eq(PGB_COMMAND_OK, (int)PGRES_COMMAND_OK);
	cr_assert_eq(PGB_TUPLES_OK, (int)PGRES_TUPLES_OK);
	cr_assert_eq(PGB_COPY_OUT, (int)PGRES_COPY_OUT);
	cr_assert_eq(PGB_COPY_IN, (int)PGRES_COPY_IN);
	cr_assert_eq(PGB_FATAL_ERROR, (int)PGRES_FATAL_ERROR);
	for (size_t i = 0; i < NELEM(cases); i++) {
		pgb_result *r = pgb_exec(c, cases[i].sql);
		PGresult *p = PQexec(pg, cases[i].sql);

		cr_assert_eq(pgb_result_status(r), cases[i].want, "'%s': status %d, want %d",
			     cases[i].sql, pgb_result_status(r), cases[i].want);
		cr_assert_eq((int)pgb_result_status(r), (int)PQresultStatus(p), "'%s'",
			     cases[i].sql);
		cr_assert_eq(pgb_result_ok(r), cases[i].want != PGB_FATAL_ERROR, "'%s'",
			     cases[i].sql);
		pgb_clear(r);
		PQclear(p);
	}
	/* An asynchronous statement carries its status too. */
	long long id = pgb_send(c, "create temp table rs_t (k int)", 0, NULL, 0);
	cr_assert_gt(id, 0);
	pgb_result *r = pgb_get_result(c, NULL);
	cr_assert_eq(pgb_result_status(r), PGB_COMMAND_OK, "%s", pgb_result_error(r));
	pgb_clear(r);
	/* Broker-side and local failures are PGB_FATAL_ERROR. */
	r = broker_error(c);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BAD_REQUEST);
	cr_assert_eq(pgb_result_status(r), PGB_FATAL_ERROR);
	pgb_clear(r);
	r = pgb_exec(c, NULL);
	cr_assert_eq(pgb_result_status(r), PGB_FATAL_ERROR);
	pgb_clear(r);
	cr_assert_eq(pgb_result_status(NULL), PGB_FATAL_ERROR);
	pgb_finish(c);
	PQfinish(pg);
}

Test(result, column_types_match_libpq)
{
	static const char *const sql =
		"select 1::int4 a, 2::int8 b, 3::int2 c, 'x'::text d, 1.5::numeric(10,2) e, "
		"'y'::varchar(12) f, 'z'::char(3) g, now() h, now()::timestamp(3) i, "
		"true j, '{\"k\":1}'::jsonb k, '[1]'::json l, '\\x00'::bytea m, "
		"array[1,2]::int4[] n, array['a']::text[] o, null::uuid p, "
		"1.0::float8 q, '1 day'::interval(0) r, 'a'::name s, 'b'::bit(5) t";
	PGconn *pg = h_pg();
	pgb_conn *c = h_connect(&br);
	PGresult *p = PQexec(pg, sql);
	pgb_result *r = h_ok(c, sql);

	cr_assert_eq(PQresultStatus(p), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(p));
	cr_assert_eq(pgb_nfields(r), PQnfields(p));
	cr_assert_eq(pgb_nfields(r), 20);
	for (int i = 0; i < PQnfields(p); i++) {
		cr_assert_eq(pgb_ftype(r, i), PQftype(p, i), "column %s: oid %u, libpq %u",
			     PQfname(p, i), pgb_ftype(r, i), PQftype(p, i));
		cr_assert_eq(pgb_fmod(r, i), PQfmod(p, i), "column %s: typmod %d, libpq %d",
			     PQfname(p, i), pgb_fmod(r, i), PQfmod(p, i));
	}
	/* A few spelled out, so that a wrong libpq answer would not hide ours. */
	cr_assert_eq(pgb_ftype(r, 0), 23);
	cr_assert_eq(pgb_ftype(r, 1), 20);
	cr_assert_eq(pgb_ftype(r, 3), 25);
	cr_assert_eq(pgb_ftype(r, 4), 1700);
	cr_assert_eq(pgb_fmod(r, 4), (10 << 16 | 2) + 4);
	cr_assert_eq(pgb_fmod(r, 5), 12 + 4);
	cr_assert_eq(pgb_ftype(r, 7), 1184);
	cr_assert_eq(pgb_ftype(r, 13), 1007);
	cr_assert_eq(pgb_fmod(r, 0), -1);
	/* out of range */
	cr_assert_eq(pgb_ftype(r, -1), 0);
	cr_assert_eq(pgb_ftype(r, 20), 0);
	cr_assert_eq(pgb_fmod(r, 20), -1);
	cr_assert_eq(pgb_ftype(NULL, 0), 0);
	cr_assert_eq(pgb_fmod(NULL, 0), -1);
	pgb_clear(r);
	PQclear(p);

	/* A table's columns, an empty result and a prepared (repeated) statement. */
	pg_do(pg, "drop table if exists rs_types; "
		  "create table rs_types (a varchar(40), b numeric(7,3), c timestamptz)");
	for (int round = 0; round < 3; round++) {
		const char *v[] = { "abc" };
		r = pgb_exec_params(c, "select * from rs_types where a = $1", 1, v);
		cr_assert_eq(pgb_result_status(r), PGB_TUPLES_OK, "%s", pgb_result_error(r));
		cr_assert_eq(pgb_ntuples(r), 0);
		cr_assert_eq(pgb_ftype(r, 0), 1043);
		cr_assert_eq(pgb_fmod(r, 0), 44);
		cr_assert_eq(pgb_ftype(r, 1), 1700);
		cr_assert_eq(pgb_fmod(r, 1), (7 << 16 | 3) + 4);
		cr_assert_eq(pgb_ftype(r, 2), 1184);
		pgb_clear(r);
	}
	pg_do(pg, "drop table rs_types");
	pgb_finish(c);
	PQfinish(pg);
}

static const int all_fields[] = {
	PGB_DIAG_SEVERITY, PGB_DIAG_SEVERITY_NONLOCALIZED, PGB_DIAG_SQLSTATE,
	PGB_DIAG_MESSAGE_PRIMARY, PGB_DIAG_MESSAGE_DETAIL, PGB_DIAG_MESSAGE_HINT,
	PGB_DIAG_STATEMENT_POSITION, PGB_DIAG_INTERNAL_POSITION, PGB_DIAG_INTERNAL_QUERY,
	PGB_DIAG_CONTEXT, PGB_DIAG_SCHEMA_NAME, PGB_DIAG_TABLE_NAME, PGB_DIAG_COLUMN_NAME,
	PGB_DIAG_DATATYPE_NAME, PGB_DIAG_CONSTRAINT_NAME, PGB_DIAG_SOURCE_FILE,
	PGB_DIAG_SOURCE_LINE, PGB_DIAG_SOURCE_FUNCTION,
};

/* Every field of r equals libpq's for p. */
static void same_fields(const pgb_result *r, const PGresult *p, const char *what)
{
	for (size_t i = 0; i < NELEM(all_fields); i++) {
		const char *ours = pgb_result_error_field(r, all_fields[i]);
		const char *theirs = PQresultErrorField(p, all_fields[i]);

		if (!theirs) {
			cr_assert_null(ours, "%s: field %c is '%s', libpq has none", what,
				       all_fields[i], ours);
			continue;
		}
		cr_assert_not_null(ours, "%s: field %c missing (libpq: '%s')", what,
				   all_fields[i], theirs);
		cr_assert_str_eq(ours, theirs, "%s: field %c", what, all_fields[i]);
	}
}

Test(result, error_fields_match_libpq)
{
	static const struct {
		const char *sql;
		const char *sqlstate;
		int field;        /* one field this error must have */
		const char *value;
	} cases[] = {
		{ .sql = "insert into rs_err.t values (1, 'a', 5)", .sqlstate = "23505",
		  .field = PGB_DIAG_CONSTRAINT_NAME, .value = "t_pkey" },
		{ .sql = "insert into rs_err.t values (1, 'a', 5)", .sqlstate = "23505",
		  .field = PGB_DIAG_MESSAGE_DETAIL, .value = "Key (id)=(1) already exists." },
		{ .sql = "insert into rs_err.t values (2, null, 5)", .sqlstate = "23502",
		  .field = PGB_DIAG_COLUMN_NAME, .value = "name" },
		{ .sql = "insert into rs_err.t values (3, 'c', -1)", .sqlstate = "23514",
		  .field = PGB_DIAG_CONSTRAINT_NAME, .value = "t_qty_check" },
		{ .sql = "insert into rs_err.t values (3, 'c', -1)", .sqlstate = "23514",
		  .field = PGB_DIAG_SCHEMA_NAME, .value = "rs_err" },
		{ .sql = "insert into rs_err.t values (3, 'c', -1)", .sqlstate = "23514",
		  .field = PGB_DIAG_TABLE_NAME, .value = "t" },
		{ .sql = "select nosuchcol from rs_err.t", .sqlstate = "42703",
		  .field = PGB_DIAG_STATEMENT_POSITION, .value = "8" },
		{ .sql = "select rs_nosuch_fn(1)", .sqlstate = "42883",
		  .field = PGB_DIAG_MESSAGE_HINT,
		  .value = "No function matches the given name and argument types. You might "
			   "need to add explicit type casts." },
		{ .sql = "select 1/0", .sqlstate = "22012", .field = PGB_DIAG_SEVERITY,
		  .value = "ERROR" },
		{ .sql = "selec 1", .sqlstate = "42601", .field = PGB_DIAG_SEVERITY_NONLOCALIZED,
		  .value = "ERROR" },
		{ .sql = "do $$ begin raise exception 'boom' using detail = 'd', hint = 'h'; end $$",
		  .sqlstate = "P0001", .field = PGB_DIAG_CONTEXT,
		  .value = "PL/pgSQL function inline_code_block line 1 at RAISE" },
	};
	PGconn *pg = h_pg();
	pgb_conn *c = h_connect(&br);

	pg_do(pg, "drop schema if exists rs_err cascade; create schema rs_err; "
		  "create table rs_err.t (id int primary key, name text not null, "
		  "qty int check (qty >= 0)); insert into rs_err.t values (1, 'a', 1)");
	for (size_t i = 0; i < NELEM(cases); i++) {
		pgb_result *r = pgb_exec(c, cases[i].sql);
		PGresult *p = PQexec(pg, cases[i].sql);
		char what[64];

		snprintf(what, sizeof(what), "case %zu", i);
		cr_assert_str_eq(pgb_sqlstate(r), cases[i].sqlstate, "%s: %s", what,
				 pgb_result_error(r));
		cr_assert_str_eq(pgb_result_error_field(r, PGB_DIAG_SQLSTATE), cases[i].sqlstate);
		const char *v = pgb_result_error_field(r, cases[i].field);
		cr_assert_not_null(v, "%s: no field %c", what, cases[i].field);
		cr_assert_str_eq(v, cases[i].value, "%s: field %c", what, cases[i].field);
		same_fields(r, p, what);
		pgb_clear(r);
		PQclear(p);
	}
	/* The same through pgb_send / pgb_try_result and in a batch. */
	long long id = pgb_send(c, cases[0].sql, 0, NULL, PGB_INDEPENDENT);
	cr_assert_gt(id, 0);
	pgb_result *r = pgb_get_result(c, NULL);
	cr_assert_str_eq(pgb_result_error_field(r, PGB_DIAG_CONSTRAINT_NAME), "t_pkey");
	pgb_clear(r);
	struct pgb_stmt stmts[] = { { .sql = "select 1" }, { .sql = cases[2].sql } };
	pgb_result *res[2];
	cr_assert_eq(pgb_batch(c, stmts, 2, res), -1);
	cr_assert_str_eq(pgb_result_error_field(res[1], PGB_DIAG_COLUMN_NAME), "name");
	cr_assert_str_eq(pgb_result_error_field(res[0], PGB_DIAG_SEVERITY), "ERROR");
	cr_assert_str_eq(pgb_result_error_field(res[0], PGB_DIAG_SQLSTATE), "PB011");
	pgb_clear(res[0]);
	pgb_clear(res[1]);

	/* A success has no fields. */
	r = h_ok(c, "select 1");
	for (size_t i = 0; i < NELEM(all_fields); i++)
		cr_assert_null(pgb_result_error_field(r, all_fields[i]));
	pgb_clear(r);
	/* The broker's own error: severity, code and message, nothing else. */
	r = broker_error(c);
	cr_assert_str_eq(pgb_result_error_field(r, PGB_DIAG_SEVERITY), "ERROR");
	cr_assert_str_eq(pgb_result_error_field(r, PGB_DIAG_SEVERITY_NONLOCALIZED), "ERROR");
	cr_assert_str_eq(pgb_result_error_field(r, PGB_DIAG_SQLSTATE), PGB_SQLSTATE_BAD_REQUEST);
	{
		/* the message is "ERROR:  ", the primary message and a newline */
		char full[512];

		snprintf(full, sizeof(full), "ERROR:  %s\n",
			 pgb_result_error_field(r, PGB_DIAG_MESSAGE_PRIMARY));
		cr_assert_str_eq(full, pgb_result_error(r));
	}
	cr_assert_null(pgb_result_error_field(r, PGB_DIAG_MESSAGE_DETAIL));
	cr_assert_null(pgb_result_error_field(r, PGB_DIAG_TABLE_NAME));
	pgb_clear(r);
	/* A local one likewise; NULL and unknown codes are NULL. */
	r = pgb_exec(c, NULL);
	cr_assert_str_eq(pgb_result_error_field(r, PGB_DIAG_SQLSTATE), PGB_SQLSTATE_BAD_REQUEST);
	cr_assert_null(pgb_result_error_field(r, 'Z'));
	pgb_clear(r);
	cr_assert_null(pgb_result_error_field(NULL, PGB_DIAG_SEVERITY));
	/* The connection is still fine after all of it. */
	cr_assert_eq(h_num(c, "select 7"), 7);
	pg_do(pg, "drop schema rs_err cascade");
	pgb_finish(c);
	PQfinish(pg);
}
