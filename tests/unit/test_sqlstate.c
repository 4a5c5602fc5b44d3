/* Unit tests for common/sqlstate.c: the codes that matter, the class
 * fallbacks, the pseudo-entries for libpq failures, malformed input, the
 * table's own consistency, and that docs/sqlstates.md shows the table as it is. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlstate.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct want {
	const char *code;
	const char *entry;   /* the entry it must resolve to (its own code, or its class) */
	int transient;
	enum sqlstate_ran ran;
};

/* Every specific code the issue names must have its own row. */
static const struct want specific[] = {
	{ .code = "08000", .entry = "08000", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "08001", .entry = "08001", .transient = 1, .ran = RAN_NO },
	{ .code = "08003", .entry = "08003", .transient = 1, .ran = RAN_NO },
	{ .code = "08004", .entry = "08004", .transient = 1, .ran = RAN_NO },
	{ .code = "08006", .entry = "08006", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "08007", .entry = "08007", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "08P01", .entry = "08P01", .transient = 0, .ran = RAN_UNKNOWN },
	{ .code = "25006", .entry = "25006", .transient = 0, .ran = RAN_NO },
	{ .code = "40001", .entry = "40001", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "40P01", .entry = "40P01", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "53000", .entry = "53000", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "53100", .entry = "53100", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "53200", .entry = "53200", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "53300", .entry = "53300", .transient = 1, .ran = RAN_NO },
	{ .code = "53400", .entry = "53400", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "55P03", .entry = "55P03", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "57014", .entry = "57014", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "57P01", .entry = "57P01", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "57P02", .entry = "57P02", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "57P03", .entry = "57P03", .transient = 1, .ran = RAN_NO },
	{ .code = "58000", .entry = "58000", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "58030", .entry = "58030", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "XX000", .entry = "XX000", .transient = 0, .ran = RAN_UNKNOWN },
	{ .code = "PB001", .entry = "PB001", .transient = 1, .ran = RAN_NO },
	{ .code = "PB002", .entry = "PB002", .transient = 1, .ran = RAN_NO },
	{ .code = "PB003", .entry = "PB003", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "PB004", .entry = "PB004", .transient = 0, .ran = RAN_UNKNOWN },
	{ .code = "PB005", .entry = "PB005", .transient = 1, .ran = RAN_NO },
	{ .code = "PB006", .entry = "PB006", .transient = 0, .ran = RAN_NO },
	{ .code = "PB007", .entry = "PB007", .transient = 0, .ran = RAN_NO },
	{ .code = "PB008", .entry = "PB008", .transient = 1, .ran = RAN_NO },
	{ .code = "PB009", .entry = "PB009", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "PB010", .entry = "PB010", .transient = 1, .ran = RAN_NO },
	{ .code = "PB011", .entry = "PB011", .transient = 0, .ran = RAN_ROLLED_BACK },
};

/* Codes without their own row fall back to their class. */
static const struct want fallback[] = {
	{ .code = "08999", .entry = "08", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "22012", .entry = "22", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "22P02", .entry = "22", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "23505", .entry = "23", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "23503", .entry = "23", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "42601", .entry = "42", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "42P01", .entry = "42", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "28P01", .entry = "28", .transient = 0, .ran = RAN_NO },
	{ .code = "40004", .entry = "40", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "53999", .entry = "53", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "57P05", .entry = "57", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "58P03", .entry = "58", .transient = 1, .ran = RAN_UNKNOWN },
	{ .code = "XX003", .entry = "XX", .transient = 0, .ran = RAN_UNKNOWN },
	{ .code = "P0001", .entry = "P0", .transient = 0, .ran = RAN_ROLLED_BACK },
	{ .code = "PB999", .entry = "PB", .transient = 0, .ran = RAN_UNKNOWN },
	{ .code = "00000", .entry = "00", .transient = 0, .ran = RAN_YES },
	{ .code = "01000", .entry = "01", .transient = 0, .ran = RAN_YES },
	/* lower case is accepted */
	{ .code = "40p01", .entry = "40P01", .transient = 1, .ran = RAN_ROLLED_BACK },
	{ .code = "pb002", .entry = "PB002", .transient = 1, .ran = RAN_NO },
	{ .code = "xx999", .entry = "XX", .transient = 0, .ran = RAN_UNKNOWN },
};

static void check(const struct want *w, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		const struct sqlstate_info *si = sqlstate_lookup(w[i].code);

		cr_assert_not_null(si, "%s %s: no entry", what, w[i].code);
		cr_expect_str_eq(si->code, w[i].entry, "%s %s: resolved to %s", what, w[i].code,
				 si->code);
		cr_expect_eq(si->transient, w[i].transient, "%s %s: transient %d", what, w[i].code,
			     si->transient);
		cr_expect_eq(si->ran, w[i].ran, "%s %s: ran %s, want %s", what, w[i].code,
			     sqlstate_ran_name(si->ran), sqlstate_ran_name(w[i].ran));
		cr_expect_eq(sqlstate_is_transient(w[i].code), w[i].transient, "%s %s", what,
			     w[i].code);
		cr_expect_eq(sqlstate_ran(w[i].code), w[i].ran, "%s %s", what, w[i].code);
		cr_expect_eq(sqlstate_retry_safe(w[i].code),
			     w[i].transient && (w[i].ran == RAN_NO || w[i].ran == RAN_ROLLED_BACK),
			     "%s %s: retry_safe", what, w[i].code);
		cr_expect(si->name && *si->name && si->description, "%s %s: unnamed", what,
			  w[i].code);
		cr_expect_null(si->reported_as, "%s %s: a real code has no reported_as", what,
			       w[i].code);
	}
}

Test(sqlstate, specific_codes_have_their_own_rows)
{
	check(specific, NELEM(specific), "specific");
}

Test(sqlstate, other_codes_fall_back_to_their_class)
{
	check(fallback, NELEM(fallback), "fallback");
}

Test(sqlstate, unknown_and_malformed_codes)
{
	static const char *const bad[] = {
		"", "4", "4000", "400011", "40-01", "40 01", "ZZ000", "QQ123", "08\n01", "é0001",
	};

	cr_assert_null(sqlstate_lookup(NULL));
	cr_assert_not(sqlstate_is_transient(NULL));
	cr_assert_eq(sqlstate_ran(NULL), RAN_UNKNOWN);
	cr_assert_not(sqlstate_retry_safe(NULL));
	cr_assert_not(sqlstate_txn_retryable(NULL));
	for (size_t i = 0; i < NELEM(bad); i++) {
		cr_expect_null(sqlstate_lookup(bad[i]), "\"%s\" resolved", bad[i]);
		cr_expect_not(sqlstate_is_transient(bad[i]), "\"%s\" transient", bad[i]);
		cr_expect_eq(sqlstate_ran(bad[i]), RAN_UNKNOWN, "\"%s\"", bad[i]);
		cr_expect_not(sqlstate_retry_safe(bad[i]), "\"%s\"", bad[i]);
	}
	cr_assert(sqlstate_valid("40P01"));
	cr_assert(sqlstate_valid("pb001"));
	cr_assert_not(sqlstate_valid("40P0"));
	cr_assert_not(sqlstate_valid(NULL));
}

Test(sqlstate, only_serialization_and_deadlock_rerun_a_transaction)
{
	static const struct {
		const char *code;
		int want;
	} cases[] = {
		{ .code = "40001", .want = 1 }, { .code = "40P01", .want = 1 },
		{ .code = "40p01", .want = 1 }, { .code = "40000", .want = 0 },
		{ .code = "40002", .want = 0 }, { .code = "40003", .want = 0 },
		{ .code = "40004", .want = 0 }, { .code = "55P03", .want = 0 },
		{ .code = "08006", .want = 0 }, { .code = "08007", .want = 0 },
		{ .code = "PB003", .want = 0 }, { .code = "", .want = 0 },
	};

	for (size_t i = 0; i < NELEM(cases); i++)
		cr_expect_eq(sqlstate_txn_retryable(cases[i].code), cases[i].want, "%s",
			     cases[i].code);
}

Test(sqlstate, libpq_failures_are_pseudo_entries)
{
	static const struct {
		const char *code;
		int transient;
		enum sqlstate_ran ran;
		const char *reported_as;
	} cases[] = {
		{ .code = SQLSTATE_LIBPQ_CONNECT_FAILED, .transient = 1, .ran = RAN_NO,
		  .reported_as = "PB010" },
		{ .code = SQLSTATE_LIBPQ_CONNECT_TIMEOUT, .transient = 1, .ran = RAN_NO,
		  .reported_as = "PB010" },
		{ .code = SQLSTATE_LIBPQ_SOCKET_IDLE, .transient = 1, .ran = RAN_NO,
		  .reported_as = "" },
		{ .code = SQLSTATE_LIBPQ_SOCKET_BROKEN, .transient = 1, .ran = RAN_UNKNOWN,
		  .reported_as = "08007" },
		{ .code = SQLSTATE_LIBPQ_NO_RESULT, .transient = 0, .ran = RAN_UNKNOWN,
		  .reported_as = "XX000" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		const struct sqlstate_info *si = sqlstate_lookup(cases[i].code);

		cr_assert_not_null(si, "%s", cases[i].code);
		cr_expect_str_eq(si->code, cases[i].code);
		cr_expect_eq(si->transient, cases[i].transient, "%s", cases[i].code);
		cr_expect_eq(si->ran, cases[i].ran, "%s", cases[i].code);
		cr_assert_not_null(si->reported_as, "%s", cases[i].code);
		cr_expect_str_eq(si->reported_as, cases[i].reported_as, "%s", cases[i].code);
		/* what the agent sees is classified the same way, where it exists */
		if (*si->reported_as) {
			cr_expect_eq(sqlstate_ran(si->reported_as), si->ran, "%s -> %s",
				     cases[i].code, si->reported_as);
			cr_expect_eq(sqlstate_is_transient(si->reported_as), si->transient,
				     "%s -> %s", cases[i].code, si->reported_as);
		}
	}
	/* a pseudo name differing in case is not a match */
	cr_expect_null(sqlstate_lookup("LIBPQ:socket-broken"));
}

Test(sqlstate, table_is_consistent)
{
	size_t n;
	const struct sqlstate_info *t = sqlstate_table(&n);
	const char *cls = NULL;

	cr_assert_gt(n, 60);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(t[i].code);

		cr_assert(t[i].name && *t[i].name && t[i].description, "row %zu unnamed", i);
		cr_assert(t[i].ran >= RAN_NO && t[i].ran <= RAN_YES, "%s", t[i].code);
		cr_assert(t[i].transient == 0 || t[i].transient == 1, "%s", t[i].code);
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(t[i].code, t[j].code, "%s twice", t[i].code);
		if (t[i].reported_as) {
			cr_assert_not_null(strchr(t[i].code, ':'), "%s: pseudo names have a ':'",
					   t[i].code);
			cls = NULL;
			continue;
		}
		cr_assert(len == 2 || len == 5, "%s: a class or a code", t[i].code);
		for (size_t k = 0; k < len; k++)
			cr_assert((t[i].code[k] >= '0' && t[i].code[k] <= '9') ||
				  (t[i].code[k] >= 'A' && t[i].code[k] <= 'Z'), "%s", t[i].code);
		if (len == 2) {
			if (cls)
				cr_assert_lt(strcmp(cls, t[i].code), 0, "class %s after %s", t[i].code,
					     cls);
			cls = t[i].code;
		} else {
			cr_assert_not_null(cls, "%s before any class", t[i].code);
			cr_assert_eq(strncmp(cls, t[i].code, 2), 0, "%s is not under class %s",
				     t[i].code, cls);
			cr_assert(strcmp(t[i - 1].code, t[i].code) < 0, "%s out of order",
				  t[i].code);
			cr_assert_eq(sqlstate_lookup(t[i].code), &t[i], "%s shadowed", t[i].code);
		}
	}
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/* A file of the repository by its path from the top (rel): below $PGB_ROOT,
 * else the current directory, else two levels up; skips the test when it
 * is nowhere. */
static char *slurp_repo(const char *rel)
{
	const char *root = getenv("PGB_ROOT");
	char path[1024];
	char *text;

	snprintf(path, sizeof(path), "%s/%s", root && *root ? root : ".", rel);
	text = slurp(path);
	if (!text) {
		snprintf(path, sizeof(path), "../../%s", rel);
		text = slurp(path);
	}
	if (!text)
		cr_skip_test("%s not found (run from the repository root or set PGB_ROOT)", rel);
	return text;
}

/* docs/sqlstates.md's "SQLSTATE classification" table must be this table.
 * A mismatch prints the row as it should read. */
Test(sqlstate, docs_show_the_table)
{
	char row[1024];
	const struct sqlstate_info *t;
	char *doc = slurp_repo("docs/sqlstates.md");
	size_t n;

	cr_assert_not_null(strstr(doc, "SQLSTATE classification"));
	t = sqlstate_table(&n);
	for (size_t i = 0; i < n; i++) {
		sqlstate_markdown_row(&t[i], row, sizeof(row));
		cr_expect_not_null(strstr(doc, row), "docs/sqlstates.md lacks the row\n%s", row);
	}
	free(doc);
}

/* What libpq says when a connect fails (PQERRORS_VERBOSE), and whether that
 * is the server refusing the broker (misconfigured) or an outage. */
Test(sqlstate, connect_errors_name_their_sqlstate_and_refusals)
{
	static const struct {
		const char *msg, *code, *text;
		int refused;
	} cases[] = {
		{ .msg = "connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: FATAL:  "
			 "3D000: database \"nope\" does not exist\nLOCATION:  InitPostgres, "
			 "postinit.c:948\n",
		  .code = "3D000", .refused = 1,
		  .text = "connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: FATAL:  "
			  "database \"nope\" does not exist" },
		{ .msg = "connection to server at \"db\" (10.0.0.1), port 5432 failed: FATAL:  28P01: "
			 "password authentication failed for user \"app\"\n",
		  .code = "28P01", .refused = 1,
		  .text = "connection to server at \"db\" (10.0.0.1), port 5432 failed: FATAL:  "
			  "password authentication failed for user \"app\"" },
		{ .msg = "connection to server on socket \"/s\" failed: FATAL:  28000: role \"nobody\" "
			 "does not exist\nLOCATION:  InitializeSessionUserId, miscinit.c:768\n",
		  .code = "28000", .refused = 1,
		  .text = "connection to server on socket \"/s\" failed: FATAL:  role \"nobody\" "
			  "does not exist" },
		{ .msg = "FATAL:  42501: permission denied for database \"d\"\nDETAIL:  User does "
			 "not have CONNECT privilege.\n",
		  .code = "42501", .refused = 1, .text = "FATAL:  permission denied for database \"d\"" },
		{ .msg = "connection to server on socket \"/s\" failed: FATAL:  57P03: the database "
			 "system is starting up\n",
		  .code = "57P03", .refused = 0,
		  .text = "connection to server on socket \"/s\" failed: FATAL:  the database system "
			  "is starting up" },
		{ .msg = "connection to server at \"h\", port 5432 failed: FATAL:  53300: sorry, too "
			 "many clients already\n",
		  .code = "53300", .refused = 0,
		  .text = "connection to server at \"h\", port 5432 failed: FATAL:  sorry, too many "
			  "clients already" },
		{ .msg = "connection to server on socket \"/s/.s.PGSQL.5999\" failed: No such file or "
			 "directory\n\tIs the server running locally and accepting connections on that "
			 "socket?\n",
		  .code = "", .refused = 0,
		  .text = "connection to server on socket \"/s/.s.PGSQL.5999\" failed: No such file "
			  "or directory" },
		{ .msg = "connection to server at \"h\", port 5432 failed: fe_sendauth: no password "
			 "supplied\n",
		  .code = "", .refused = 1,
		  .text = "connection to server at \"h\", port 5432 failed: fe_sendauth: no password "
			  "supplied" },
		/* not verbose: no code to find, nothing misread */
		{ .msg = "FATAL:  database \"nope\" does not exist", .code = "", .refused = 0,
		  .text = "FATAL:  database \"nope\" does not exist" },
		{ .msg = "FATAL:  3D00", .code = "", .refused = 0, .text = "FATAL:  3D00" },
		{ .msg = "", .code = "", .refused = 0, .text = "" },
		{ .msg = NULL, .code = "", .refused = 0, .text = "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char code[6] = "junk", text[256];

		sqlstate_connect_error(cases[i].msg, code, text, sizeof(text));
		cr_expect_str_eq(code, cases[i].code, "case %zu", i);
		cr_expect_str_eq(text, cases[i].text, "case %zu", i);
		cr_expect_eq(sqlstate_connect_refused(code, text), cases[i].refused, "case %zu", i);
	}
	/* a short buffer truncates, never overruns */
	{
		char code[6], text[8];

		sqlstate_connect_error(cases[0].msg, code, text, sizeof(text));
		cr_expect_str_eq(text, "connect");
	}
}

/* Every code of the broker's own (PBnnn) has its macro in the public
 * header, named for the table's name: PB011 batch_aborted is
 * PGB_SQLSTATE_BATCH_ABORTED "PB011". */
Test(sqlstate, every_broker_code_has_a_public_macro)
{
	char want[128], *at;
	char *hdr = slurp_repo("client/pgbroker.h");
	const struct sqlstate_info *t;
	size_t n, k;

	t = sqlstate_table(&n);
	for (size_t i = 0; i < n; i++) {
		if (strncmp(t[i].code, "PB", 2) != 0 || strlen(t[i].code) != 5)
			continue;
		k = (size_t)snprintf(want, sizeof(want), "#define PGB_SQLSTATE_");
		for (const char *c = t[i].name; *c && k + 1 < sizeof(want); c++)
			want[k++] = (char)(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
		want[k] = '\0';
		at = strstr(hdr, want);
		cr_expect(at && strncmp(at + k + strspn(at + k, " \t") + 1, t[i].code, 5) == 0 &&
				  at[k + strspn(at + k, " \t")] == '"',
			  "client/pgbroker.h lacks: %s \"%s\"", want, t[i].code);
	}
	free(hdr);
}
