/* libpgbroker: run SQL through a pgbroker on this host. Shaped after libpq:
 * a connection, statements, results with the familiar accessors. A failure
 * inside the broker comes back as a result with a SQLSTATE of class "PB". */
#ifndef PGBROKER_H
#define PGBROKER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pgb_conn pgb_conn;
typedef struct pgb_result pgb_result;

enum { PGB_CONNECTION_OK = 0, PGB_CONNECTION_BAD = 1 };

/* Broker-side SQLSTATEs (class PB). */
#define PGB_SQLSTATE_ACQUIRE_TIMEOUT  "PB001" /* no backend within acquire_timeout_ms */
#define PGB_SQLSTATE_BREAKER_OPEN     "PB002" /* circuit breaker open: backend unreachable */
#define PGB_SQLSTATE_BROKER_GONE      "PB003" /* the broker process went away */
#define PGB_SQLSTATE_TOO_LARGE        "PB004" /* statement or result over the limit */
#define PGB_SQLSTATE_SHUTTING_DOWN    "PB005" /* the broker is shutting down */
#define PGB_SQLSTATE_BAD_REQUEST      "PB006" /* malformed request or bad argument */
#define PGB_SQLSTATE_NOT_CONNECTED    "PB007" /* the connection is closed or unusable */
#define PGB_SQLSTATE_TOO_MANY         "PB008" /* too many statements in flight or waiting */
#define PGB_SQLSTATE_UNSUPPORTED      "PB009" /* e.g. COPY, which the broker does not relay */
#define PGB_SQLSTATE_BACKEND_FAILED   "PB010" /* could not connect to PostgreSQL */

/* Connect to the broker whose run directory is dir (NULL: $PGBROKER_DIR, else
 * /tmp/pgbroker). Always returns a connection object (NULL only when out of
 * memory); check pgb_status. */
pgb_conn *pgb_connect(const char *dir);
/* PGB_CONNECTION_OK or PGB_CONNECTION_BAD. */
int pgb_status(const pgb_conn *c);
/* Why the connection is bad or what last went wrong; "" when nothing. */
const char *pgb_error_message(const pgb_conn *c);
/* Close the connection and free it; a transaction still open is rolled back. */
void pgb_finish(pgb_conn *c);

/* Run one SQL string (several statements allowed; the last result is
 * returned). Never NULL except out of memory. */
pgb_result *pgb_exec(pgb_conn *c, const char *sql);
/* Run one statement with text parameters $1..$n (values[i] NULL = SQL NULL). */
pgb_result *pgb_exec_params(pgb_conn *c, const char *sql, int nparams,
			    const char *const *values);

/* Statement flags for pgb_exec_flags. */
enum {
	PGB_IDEMPOTENT = 1 << 0,  /* the broker may run it again after a lost
				     connection, even when its fate is unknown */
};
/* pgb_exec_params with flags (PGB_IDEMPOTENT). */
pgb_result *pgb_exec_flags(pgb_conn *c, const char *sql, int nparams,
			   const char *const *values, int flags);

/* 1 if the statement succeeded. */
int pgb_result_ok(const pgb_result *r);
/* The error message, "" when ok. */
const char *pgb_result_error(const pgb_result *r);
/* PostgreSQL's SQLSTATE, or the broker's own (class "PB"); "" when ok. */
const char *pgb_sqlstate(const pgb_result *r);
/* Rows returned. */
int pgb_ntuples(const pgb_result *r);
/* Columns returned. */
int pgb_nfields(const pgb_result *r);
/* Column name, NULL when col is out of range. */
const char *pgb_fname(const pgb_result *r, int col);
/* Value as text ("" for NULL, NULL when out of range). */
const char *pgb_getvalue(const pgb_result *r, int row, int col);
/* 1 if the value is SQL NULL. */
int pgb_getisnull(const pgb_result *r, int row, int col);
/* Length of the value in bytes. */
int pgb_getlength(const pgb_result *r, int row, int col);
/* Rows affected by INSERT/UPDATE/DELETE/..., 0 otherwise. */
long long pgb_cmd_tuples(const pgb_result *r);
/* The command tag, e.g. "INSERT 0 1". */
const char *pgb_cmd_status(const pgb_result *r);
/* Free a result (NULL is fine). */
void pgb_clear(pgb_result *r);

#ifdef __cplusplus
}
#endif
#endif
