/* SQLSTATE classification: one table, shared by the broker (which failures
 * it may retry) and the client helpers (pgb_retry, pgb_transaction,
 * pgb_breaker_call). Each entry says whether the failure may go away by
 * itself and whether the failed statement was applied. */
#ifndef PGB_SQLSTATE_H
#define PGB_SQLSTATE_H

#include <stddef.h>

/* Whether the statement that failed was applied. */
enum sqlstate_ran {
	RAN_NO = 0,          /* never started: not sent, or refused before it ran */
	RAN_ROLLED_BACK = 1, /* started, and PostgreSQL undid it: nothing applied */
	RAN_UNKNOWN = 2,     /* may or may not have been applied */
	RAN_YES = 3,         /* completed (classes 00, 01, 02: not failures) */
};

struct sqlstate_info {
	const char *code;        /* "40001"; a class fallback "08"; a pseudo-entry "libpq:..." */
	const char *name;        /* PostgreSQL's condition name, e.g. "serialization_failure" */
	int transient;           /* 1: the same statement may succeed when tried again later */
	enum sqlstate_ran ran;
	const char *reported_as; /* pseudo-entries: the SQLSTATE an agent sees ("" none); else NULL */
	const char *description;
};

/* libpq-level failures that carry no SQLSTATE (seen by the broker only). */
#define SQLSTATE_LIBPQ_CONNECT_FAILED  "libpq:connect-failed"
#define SQLSTATE_LIBPQ_CONNECT_TIMEOUT "libpq:connect-timeout"
#define SQLSTATE_LIBPQ_SOCKET_IDLE     "libpq:socket-closed-idle"
#define SQLSTATE_LIBPQ_SOCKET_BROKEN   "libpq:socket-broken"
#define SQLSTATE_LIBPQ_NO_RESULT       "libpq:no-result"

/* 1 if code is five characters of [0-9A-Z] (lower case accepted). */
int sqlstate_valid(const char *code);
/* The entry for code: the exact code, else its class ("23505" -> "23"), else
 * NULL (unknown class, malformed, NULL or ""). Pseudo-entries by exact name. */
const struct sqlstate_info *sqlstate_lookup(const char *code);
/* 1 if a failure with this code may go away by itself; 0 for unknown codes. */
int sqlstate_is_transient(const char *code);
/* Whether the failed statement was applied; RAN_UNKNOWN for unknown codes. */
enum sqlstate_ran sqlstate_ran(const char *code);
/* Transient and known not applied (RAN_NO or RAN_ROLLED_BACK): running the
 * same statement again can not apply it twice. */
int sqlstate_retry_safe(const char *code);
/* 40001 and 40P01: PostgreSQL rolled the whole transaction back to break a
 * conflict; running the transaction again is the documented remedy. */
int sqlstate_txn_retryable(const char *code);
/* A failed connect's libpq message (PQERRORS_VERBOSE puts the server's
 * SQLSTATE after "FATAL:  "): code gets that SQLSTATE, or "" when the
 * server sent none (refused, reset, timed out); text gets the first line,
 * without the code. */
void sqlstate_connect_error(const char *msg, char code[6], char *text, size_t n);
/* Did the server answer a connect with "not you, not here" (wrong password,
 * no such role or database, no pg_hba.conf entry, no CONNECT privilege, or
 * libpq had no password to send)? Trying again will not help until someone
 * changes the configuration: the broker calls that "misconfigured". */
int sqlstate_connect_refused(const char *code, const char *text);
/* The whole table, in the order of docs/sqlstates.md (for tests and the docs). */
const struct sqlstate_info *sqlstate_table(size_t *n);
/* "no", "rolled back", "unknown", "yes". */
const char *sqlstate_ran_name(enum sqlstate_ran ran);
/* The entry as a row of docs/sqlstates.md's Markdown table (SQLSTATE | name |
 * transient | ran | meaning); returns what snprintf returns. */
int sqlstate_markdown_row(const struct sqlstate_info *si, char *buf, size_t n);

#endif
