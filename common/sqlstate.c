/* SQLSTATE classification; see sqlstate.h. The "SQLSTATE classification"
 * table of docs/sqlstates.md is this table, row for row (a unit test checks). */
#include "sqlstate.h"

#include <stdio.h>
#include <string.h>

#define TRANSIENT 1
#define PERMANENT 0

/* A class fallback ("08") is followed by the specific codes of that class.
 * Rule of thumb for `ran`: an ERROR that PostgreSQL reports for a statement
 * means the statement (and an explicit transaction around it) was undone;
 * a connection that went away, or an error from deep inside the server,
 * leaves the outcome unknown; a refusal before sending means it never ran. */
#define E(c, n, t, r, d) { .code = c, .name = n, .transient = t, .ran = r, .description = d }
#define L(c, n, t, r, rep, d) \
	{ .code = c, .name = n, .transient = t, .ran = r, .reported_as = rep, .description = d }

static const struct sqlstate_info table[] = {
	E("00", "successful_completion", PERMANENT, RAN_YES, "not a failure"),
	E("01", "warning", PERMANENT, RAN_YES, "not a failure"),
	E("02", "no_data", PERMANENT, RAN_YES, "not a failure"),
	E("03", "sql_statement_not_yet_complete", PERMANENT, RAN_ROLLED_BACK, ""),
	E("08", "connection_exception", TRANSIENT, RAN_UNKNOWN,
	  "other connection problems: the connection may have broken after sending"),
	E("08000", "connection_exception", TRANSIENT, RAN_UNKNOWN,
	  "connection problem; the statement may have been sent"),
	E("08001", "sqlclient_unable_to_establish_sqlconnection", TRANSIENT, RAN_NO,
	  "could not connect, so nothing was sent"),
	E("08003", "connection_does_not_exist", TRANSIENT, RAN_NO,
	  "no connection to send on, so nothing was sent"),
	E("08004", "sqlserver_rejected_establishment_of_sqlconnection", TRANSIENT, RAN_NO,
	  "the server refused the connection, so nothing was sent"),
	E("08006", "connection_failure", TRANSIENT, RAN_UNKNOWN,
	  "the connection broke after sending; pgbroker uses it inside a transaction: "
	  "the transaction is gone, unless the statement was its COMMIT; and for every "
	  "later statement until ROLLBACK (a lost session: until pgb_reset)"),
	E("08007", "transaction_resolution_unknown", TRANSIENT, RAN_UNKNOWN,
	  "the connection broke while the statement ran: it may or may not have been applied"),
	E("08P01", "protocol_violation", PERMANENT, RAN_UNKNOWN,
	  "a protocol bug; trying again does not help"),
	E("09", "triggered_action_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("0A", "feature_not_supported", PERMANENT, RAN_ROLLED_BACK, ""),
	E("0B", "invalid_transaction_initiation", PERMANENT, RAN_ROLLED_BACK, ""),
	E("0F", "locator_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("0L", "invalid_grantor", PERMANENT, RAN_ROLLED_BACK, ""),
	E("0P", "invalid_role_specification", PERMANENT, RAN_ROLLED_BACK, ""),
	E("0Z", "diagnostics_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("20", "case_not_found", PERMANENT, RAN_ROLLED_BACK, ""),
	E("21", "cardinality_violation", PERMANENT, RAN_ROLLED_BACK, ""),
	E("22", "data_exception", PERMANENT, RAN_ROLLED_BACK, "bad data: the same data fails again"),
	E("23", "integrity_constraint_violation", PERMANENT, RAN_ROLLED_BACK,
	  "e.g. 23505 unique_violation"),
	E("24", "invalid_cursor_state", PERMANENT, RAN_ROLLED_BACK, ""),
	E("25", "invalid_transaction_state", PERMANENT, RAN_ROLLED_BACK, ""),
	E("25006", "read_only_sql_transaction", PERMANENT, RAN_NO,
	  "a write in a READ ONLY transaction, refused before it ran"),
	E("25P02", "in_failed_sql_transaction", PERMANENT, RAN_NO,
	  "an earlier statement failed: ignored until ROLLBACK"),
	E("26", "invalid_sql_statement_name", PERMANENT, RAN_ROLLED_BACK, ""),
	E("27", "triggered_data_change_violation", PERMANENT, RAN_ROLLED_BACK, ""),
	E("28", "invalid_authorization_specification", PERMANENT, RAN_NO,
	  "authentication failed, so nothing ran"),
	E("2B", "dependent_privilege_descriptors_still_exist", PERMANENT, RAN_ROLLED_BACK, ""),
	E("2D", "invalid_transaction_termination", PERMANENT, RAN_ROLLED_BACK, ""),
	E("2F", "sql_routine_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("34", "invalid_cursor_name", PERMANENT, RAN_ROLLED_BACK, ""),
	E("38", "external_routine_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("39", "external_routine_invocation_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("3B", "savepoint_exception", PERMANENT, RAN_ROLLED_BACK, ""),
	E("3D", "invalid_catalog_name", PERMANENT, RAN_ROLLED_BACK, ""),
	E("3F", "invalid_schema_name", PERMANENT, RAN_ROLLED_BACK, ""),
	E("40", "transaction_rollback", PERMANENT, RAN_ROLLED_BACK,
	  "the transaction was rolled back"),
	E("40000", "transaction_rollback", PERMANENT, RAN_ROLLED_BACK,
	  "the transaction was rolled back"),
	E("40001", "serialization_failure", TRANSIENT, RAN_ROLLED_BACK,
	  "rolled back to break a conflict: run the whole transaction again"),
	E("40002", "transaction_integrity_constraint_violation", PERMANENT, RAN_ROLLED_BACK,
	  "a deferred constraint failed at COMMIT"),
	E("40003", "statement_completion_unknown", TRANSIENT, RAN_UNKNOWN,
	  "PostgreSQL could not tell whether the statement completed"),
	E("40P01", "deadlock_detected", TRANSIENT, RAN_ROLLED_BACK,
	  "rolled back to break a deadlock: run the whole transaction again"),
	E("42", "syntax_error_or_access_rule_violation", PERMANENT, RAN_ROLLED_BACK,
	  "the statement itself is wrong (syntax, missing object, privilege)"),
	E("44", "with_check_option_violation", PERMANENT, RAN_ROLLED_BACK, ""),
	E("53", "insufficient_resources", TRANSIENT, RAN_ROLLED_BACK,
	  "the server ran short of something"),
	E("53000", "insufficient_resources", TRANSIENT, RAN_ROLLED_BACK,
	  "the server ran short of something"),
	E("53100", "disk_full", TRANSIENT, RAN_ROLLED_BACK, "may clear once space is freed"),
	E("53200", "out_of_memory", TRANSIENT, RAN_ROLLED_BACK, "may clear under less load"),
	E("53300", "too_many_connections", TRANSIENT, RAN_NO,
	  "the server refused a new connection, so nothing ran"),
	E("53400", "configuration_limit_exceeded", PERMANENT, RAN_ROLLED_BACK,
	  "a configured limit (e.g. temp_file_limit): the same statement hits it again"),
	E("54", "program_limit_exceeded", PERMANENT, RAN_ROLLED_BACK, ""),
	E("55", "object_not_in_prerequisite_state", PERMANENT, RAN_ROLLED_BACK, ""),
	E("55P03", "lock_not_available", TRANSIENT, RAN_ROLLED_BACK,
	  "NOWAIT or lock_timeout: the lock may be free later"),
	E("57", "operator_intervention", TRANSIENT, RAN_UNKNOWN, ""),
	E("57014", "query_canceled", PERMANENT, RAN_ROLLED_BACK,
	  "statement_timeout or a cancel request; not retried: it would most likely time out again"),
	E("57P01", "admin_shutdown", TRANSIENT, RAN_UNKNOWN,
	  "the backend was terminated (server stop, pg_terminate_backend)"),
	E("57P02", "crash_shutdown", TRANSIENT, RAN_UNKNOWN,
	  "another backend crashed and the server restarts"),
	E("57P03", "cannot_connect_now", TRANSIENT, RAN_NO,
	  "the server is starting up or shutting down: nothing ran"),
	E("57P04", "database_dropped", PERMANENT, RAN_UNKNOWN,
	  "the database went away under the session"),
	E("58", "system_error", TRANSIENT, RAN_UNKNOWN, "an error outside PostgreSQL"),
	E("58000", "system_error", TRANSIENT, RAN_UNKNOWN, "an error outside PostgreSQL"),
	E("58030", "io_error", TRANSIENT, RAN_UNKNOWN, "an I/O error on the server"),
	E("58P01", "undefined_file", PERMANENT, RAN_ROLLED_BACK, "a file the statement needs is missing"),
	E("58P02", "duplicate_file", PERMANENT, RAN_ROLLED_BACK, "a file the statement creates exists"),
	E("72", "snapshot_too_old", TRANSIENT, RAN_ROLLED_BACK, "a new snapshot may do"),
	E("F0", "config_file_error", PERMANENT, RAN_UNKNOWN, ""),
	E("HV", "fdw_error", PERMANENT, RAN_ROLLED_BACK, ""),
	E("P0", "plpgsql_error", PERMANENT, RAN_ROLLED_BACK, "e.g. P0001 raise_exception"),
	E("PB", "pgbroker", PERMANENT, RAN_UNKNOWN,
	  "another code of the broker's (from a newer broker)"),
	E("PB001", "acquire_timeout", TRANSIENT, RAN_NO,
	  "no backend became free within acquire_timeout_ms; never sent"),
	E("PB002", "breaker_open", TRANSIENT, RAN_NO,
	  "circuit breaker open (the broker's, or a pgb_breaker): failing fast; never sent"),
	E("PB003", "broker_gone", TRANSIENT, RAN_UNKNOWN,
	  "the broker process went away, perhaps while the statement ran"),
	E("PB004", "too_large", PERMANENT, RAN_UNKNOWN,
	  "statement over max_request_kb (never sent), or a result row over a quarter of "
	  "max_memory_mb or 2 GiB, or a large row while the memory budget is in use (it ran)"),
	E("PB005", "shutting_down", TRANSIENT, RAN_NO,
	  "the broker is shutting down; never sent"),
	E("PB006", "bad_request", PERMANENT, RAN_NO, "malformed request or bad argument; never sent"),
	E("PB007", "not_connected", PERMANENT, RAN_NO,
	  "the connection is closed, broken or inherited across fork(); never sent; reconnect"),
	E("PB008", "too_many", TRANSIENT, RAN_NO,
	  "too many statements in flight or waiting, or the agent holds half of max_memory_mb "
	  "(the broker all of it) in unread results; never sent"),
	E("PB009", "unsupported", PERMANENT, RAN_ROLLED_BACK,
	  "not relayed: a second COPY in one statement string (aborted), COPY BOTH"),
	E("PB010", "backend_failed", TRANSIENT, RAN_NO,
	  "no backend could be connected within acquire_timeout_ms, or at once while PostgreSQL "
	  "refuses the broker (misconfigured, with the server's message); never sent"),
	E("PB011", "batch_aborted", PERMANENT, RAN_ROLLED_BACK,
	  "another statement of the same pgb_batch failed, so this one was not applied"),
	E("XX", "internal_error", PERMANENT, RAN_UNKNOWN, ""),
	E("XX000", "internal_error", PERMANENT, RAN_UNKNOWN,
	  "a server bug, or pgbroker got no result from PostgreSQL"),
	E("XX001", "data_corrupted", PERMANENT, RAN_UNKNOWN, "corrupt data on the server"),
	E("XX002", "index_corrupted", PERMANENT, RAN_UNKNOWN, "a corrupt index on the server"),
	L(SQLSTATE_LIBPQ_CONNECT_FAILED, "connection refused or reset", TRANSIENT, RAN_NO, "PB010",
	  "opening a backend failed (refused, unreachable, reset); counts toward the breaker, "
	  "which then answers PB002"),
	L(SQLSTATE_LIBPQ_CONNECT_TIMEOUT, "connect timeout", TRANSIENT, RAN_NO, "PB010",
	  "opening a backend took longer than connection_timeout_ms; counts toward the breaker"),
	L(SQLSTATE_LIBPQ_SOCKET_IDLE, "socket closed while idle", TRANSIENT, RAN_NO, "",
	  "an idle backend's socket was found closed before use: the broker closes it and "
	  "uses another"),
	L(SQLSTATE_LIBPQ_SOCKET_BROKEN, "socket broken after sending", TRANSIENT, RAN_UNKNOWN,
	  "08007", "the backend's socket broke or timed out (keepalive) while the statement ran: "
	  "08007, or 08006 inside a transaction; re-run only if marked PGB_IDEMPOTENT"),
	L(SQLSTATE_LIBPQ_NO_RESULT, "no result", PERMANENT, RAN_UNKNOWN, "XX000",
	  "libpq returned no result for a statement that was sent"),
};

#define NTABLE (sizeof(table) / sizeof(table[0]))

static int up(int ch)
{
	return ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch;
}

static int sqlstate_char(int ch)
{
	ch = up(ch);
	return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z');
}

int sqlstate_valid(const char *code)
{
	if (!code)
		return 0;
	for (int i = 0; i < 5; i++)
		if (!sqlstate_char((unsigned char)code[i]))
			return 0;
	return code[5] == '\0';
}

/* Case-insensitive match of the first n characters of code against key,
 * which must have exactly n characters. */
static int match(const char *key, const char *code, size_t n)
{
	if (strlen(key) != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (up((unsigned char)key[i]) != up((unsigned char)code[i]))
			return 0;
	return 1;
}

const struct sqlstate_info *sqlstate_lookup(const char *code)
{
	const struct sqlstate_info *cls = NULL;

	if (!code || !*code)
		return NULL;
	if (!sqlstate_valid(code)) {
		for (size_t i = 0; i < NTABLE; i++)
			if (table[i].reported_as && strcmp(table[i].code, code) == 0)
				return &table[i];
		return NULL;
	}
	for (size_t i = 0; i < NTABLE; i++) {
		if (table[i].reported_as)
			continue;
		if (match(table[i].code, code, 5))
			return &table[i];
		if (!cls && match(table[i].code, code, 2))
			cls = &table[i];
	}
	return cls;
}

int sqlstate_is_transient(const char *code)
{
	const struct sqlstate_info *si = sqlstate_lookup(code);

	return si && si->transient;
}

enum sqlstate_ran sqlstate_ran(const char *code)
{
	const struct sqlstate_info *si = sqlstate_lookup(code);

	return si ? si->ran : RAN_UNKNOWN;
}

int sqlstate_retry_safe(const char *code)
{
	const struct sqlstate_info *si = sqlstate_lookup(code);

	return si && si->transient && (si->ran == RAN_NO || si->ran == RAN_ROLLED_BACK);
}

int sqlstate_txn_retryable(const char *code)
{
	const struct sqlstate_info *si = sqlstate_lookup(code);

	/* Class 40's transient members: only the exact codes are transient. */
	return si && si->transient && si->ran == RAN_ROLLED_BACK && strncmp(si->code, "40", 2) == 0;
}

void sqlstate_connect_error(const char *msg, char code[6], char *text, size_t n)
{
	static const char *const severities[] = { "FATAL:  ", "ERROR:  ", "PANIC:  " };
	const char *at = NULL, *nl;
	size_t before = 0, len;

	code[0] = '\0';
	if (!msg)
		msg = "";
	for (size_t i = 0; i < sizeof(severities) / sizeof(severities[0]) && !at; i++) {
		for (const char *p = strstr(msg, severities[i]); p; p = strstr(p + 1, severities[i])) {
			const char *c = p + strlen(severities[i]);
			char cand[6];

			if (strnlen(c, 7) < 7)
				continue;
			memcpy(cand, c, 5);
			cand[5] = '\0';
			if (sqlstate_valid(cand) && c[5] == ':' && c[6] == ' ') {
				memcpy(code, cand, 6);
				at = c;
				break;
			}
		}
	}
	if (!n)
		return;
	/* text: msg's first line with the "XXXXX: " after the severity cut out */
	if (at)
		before = (size_t)(at - msg);
	nl = strchr(msg, '\n');
	len = nl ? (size_t)(nl - msg) : strlen(msg);
	if (at && before + 7 <= len) {
		snprintf(text, n, "%.*s%.*s", (int)before, msg, (int)(len - before - 7), at + 7);
	} else {
		snprintf(text, n, "%.*s", (int)len, msg);
	}
}

int sqlstate_connect_refused(const char *code, const char *text)
{
	if (code && sqlstate_valid(code))
		return strncmp(code, "28", 2) == 0 || strcmp(code, "3D000") == 0 ||
		       strcmp(code, "42501") == 0;
	/* libpq's own: the server wants a password and the DSN has none */
	return text && strstr(text, "no password supplied") != NULL;
}

const struct sqlstate_info *sqlstate_table(size_t *n)
{
	if (n)
		*n = NTABLE;
	return table;
}

const char *sqlstate_ran_name(enum sqlstate_ran ran)
{
	switch (ran) {
	case RAN_NO: return "no";
	case RAN_ROLLED_BACK: return "rolled back";
	case RAN_UNKNOWN: return "unknown";
	case RAN_YES: return "yes";
	}
	return "?";
}

int sqlstate_markdown_row(const struct sqlstate_info *si, char *buf, size_t n)
{
	int cls = strlen(si->code) == 2;

	return snprintf(buf, n, "| `%s`%s | %s | %s | %s | %s%s%s%s |", si->code,
			cls ? " class" : "", si->name, si->transient ? "transient" : "permanent",
			sqlstate_ran_name(si->ran),
			si->reported_as ? "agents see " : "",
			si->reported_as ? (*si->reported_as ? si->reported_as : "nothing") : "",
			si->reported_as ? "; " : "",
			*si->description ? si->description : cls ? "any other code of the class" : "");
}
