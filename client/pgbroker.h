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
#define PGB_SQLSTATE_UNSUPPORTED      "PB009" /* not relayed: COPY BOTH, a second COPY in one string */
#define PGB_SQLSTATE_BACKEND_FAILED   "PB010" /* could not connect to PostgreSQL */
#define PGB_SQLSTATE_BATCH_ABORTED    "PB011" /* another statement of the pgb_batch failed */

/* Connect to the broker whose run directory is dir (NULL: $PGBROKER_DIR, else
 * the broker's default: /run/pgbroker for root, $XDG_RUNTIME_DIR/pgbroker or
 * /tmp/pgbroker-UID for others). Always returns a connection object (NULL
 * only when out of memory); check pgb_status. The broker must pass the peer
 * check of pgb_connect_peer(dir, NULL). */
pgb_conn *pgb_connect(const char *dir);
/* pgb_connect, requiring the broker to run as require_uid (a uid or a user
 * name; NULL or "": $PGBROKER_REQUIRE_UID, else this process's uid or
 * root) in a run directory that uid owns and nobody else may write to.
 * pgb_connect is pgb_connect_peer(dir, NULL). The check (SO_PEERCRED) comes
 * before anything is sent; a broker that fails it is PGB_CONNECTION_BAD with
 * a message naming both uids. */
pgb_conn *pgb_connect_peer(const char *dir, const char *require_uid);
/* PGB_CONNECTION_OK or PGB_CONNECTION_BAD. */
int pgb_status(const pgb_conn *c);
/* Why the connection is bad or what last went wrong; "" when nothing. */
const char *pgb_error_message(const pgb_conn *c);
/* Close the connection and free it; a transaction still open is rolled back. */
void pgb_finish(pgb_conn *c);
/* Return c to a clean session of its own: the broker rolls back its open
 * transaction, discards its session state (SET, PREPARE, temporary tables,
 * ...), unpins its backend and forgets a transaction or session that was
 * lost (SQLSTATE 08006 until then). When the broker went away (PB003,
 * PB007), or c came through fork(), it connects again to the same run
 * directory with the same peer check instead. 0, or -1 (see
 * pgb_error_message). */
int pgb_reset(pgb_conn *c);

/* Run one SQL string (several statements allowed; the last result is
 * returned). Never NULL except out of memory. */
pgb_result *pgb_exec(pgb_conn *c, const char *sql);
/* Run one statement with text parameters $1..$n (values[i] NULL = SQL NULL). */
pgb_result *pgb_exec_params(pgb_conn *c, const char *sql, int nparams,
			    const char *const *values);

/* Statement flags for pgb_exec_flags and pgb_send. */
enum {
	PGB_IDEMPOTENT = 1 << 0,  /* the broker may run it again after a lost
				     connection, even when its fate is unknown */
	PGB_INDEPENDENT = 1 << 1, /* may run beside this connection's other
				     statements, on another backend, and finish
				     out of order (autocommit only) */
	PGB_CHUNKED = 1 << 2,     /* pgb_send only: its rows come as they are
				     read, in PGB_TUPLES_CHUNK results from
				     pgb_get_result, then a final result with
				     no rows (libpq's chunked-rows mode) */
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

/* What a result is (libpq's ExecStatusType numbers, as PQresultStatus). */
typedef enum {
	PGB_EMPTY_QUERY = 0,  /* the statement text was empty */
	PGB_COMMAND_OK = 1,   /* a command that returns no rows succeeded */
	PGB_TUPLES_OK = 2,    /* a query succeeded: rows (maybe none) and columns */
	PGB_COPY_OUT = 3,     /* COPY TO STDOUT started */
	PGB_COPY_IN = 4,      /* COPY FROM STDIN started */
	PGB_FATAL_ERROR = 7,  /* it failed: PostgreSQL's error or the broker's (PB...) */
	PGB_TUPLES_CHUNK = 12, /* PGB_CHUNKED: some of the rows; more results follow.
				  A final result that failed voids them */
} pgb_exec_status;
/* The result's status; PGB_FATAL_ERROR for NULL and for every failure. */
pgb_exec_status pgb_result_status(const pgb_result *r);
/* Column col's data type OID (as PQftype: 23 int4, 25 text, ...); 0 when
 * col is out of range. */
unsigned int pgb_ftype(const pgb_result *r, int col);
/* Column col's type modifier (as PQfmod: -1 when none or out of range). */
int pgb_fmod(const pgb_result *r, int col);

/* Error field codes for pgb_result_error_field: libpq's PG_DIAG_* letters. */
#define PGB_DIAG_SEVERITY 'S'              /* ERROR, FATAL, ... (localized) */
#define PGB_DIAG_SEVERITY_NONLOCALIZED 'V' /* ERROR, FATAL, ... */
#define PGB_DIAG_SQLSTATE 'C'
#define PGB_DIAG_MESSAGE_PRIMARY 'M'
#define PGB_DIAG_MESSAGE_DETAIL 'D'
#define PGB_DIAG_MESSAGE_HINT 'H'
#define PGB_DIAG_STATEMENT_POSITION 'P'    /* 1-based character index, as text */
#define PGB_DIAG_INTERNAL_POSITION 'p'
#define PGB_DIAG_INTERNAL_QUERY 'q'
#define PGB_DIAG_CONTEXT 'W'
#define PGB_DIAG_SCHEMA_NAME 's'
#define PGB_DIAG_TABLE_NAME 't'
#define PGB_DIAG_COLUMN_NAME 'c'
#define PGB_DIAG_DATATYPE_NAME 'd'
#define PGB_DIAG_CONSTRAINT_NAME 'n'
#define PGB_DIAG_SOURCE_FILE 'F'
#define PGB_DIAG_SOURCE_LINE 'L'
#define PGB_DIAG_SOURCE_FUNCTION 'R'
/* One field of a failed result's error, as PQresultErrorField: NULL when
 * the result succeeded or the error has no such field. A broker's own
 * error (class PB) has severity "ERROR", its SQLSTATE and its message's
 * text (without "ERROR:  " and the newline) as primary message, nothing
 * else. Valid until pgb_clear. */
const char *pgb_result_error_field(const pgb_result *r, int field);

/* --- Batch, parallel and asynchronous statements --- */

/* One statement of a batch or a parallel call. */
struct pgb_stmt {
	const char *sql;
	int nparams;
	const char *const *values;
};

/* Run n statements in order on one backend as one atomic transaction, in
 * one round trip (pipelined). results[i] gets statement i's result; when
 * one fails none is applied: it carries PostgreSQL's error and every other
 * statement PB011 naming it. 0 when all succeeded, else -1. Free each
 * result with pgb_clear. Inside an open transaction the batch joins it. */
int pgb_batch(pgb_conn *c, const struct pgb_stmt *stmts, int n, pgb_result **results);
/* Run n independent autocommit statements concurrently on up to n backends;
 * returns when all are done (0 when all succeeded, else -1). */
int pgb_parallel(pgb_conn *c, const struct pgb_stmt *stmts, int n, pgb_result **results);

/* Send a statement without waiting: returns its request id (> 0), or -1
 * (see pgb_error_message). Statements run in the order sent unless
 * flagged PGB_INDEPENDENT. */
long long pgb_send(pgb_conn *c, const char *sql, int nparams, const char *const *values,
		   int flags);
/* The next finished result and its id; blocks until one is there. NULL
 * when nothing is in flight. After a COPY (pgb_put_copy_end, or
 * pgb_get_copy_data's -1) it gives the COPY's final result. During COPY
 * FROM STDIN it answers PB006 at once; during COPY TO STDOUT the rows not
 * taken yet are dropped. */
pgb_result *pgb_get_result(pgb_conn *c, long long *id);
/* Like pgb_get_result but never blocks: NULL when no result is ready yet
 * (then pgb_socket becomes readable when one is). */
pgb_result *pgb_try_result(pgb_conn *c, long long *id);
/* A file descriptor for poll/epoll/io_uring: readable when pgb_try_result
 * has returned NULL and (part of) a result has since arrived, or the
 * broker went away (pgb_try_result then answers PB003). -1 when not
 * connected. */
int pgb_socket(const pgb_conn *c);
/* Statements sent whose results have not been taken yet. */
int pgb_in_flight(const pgb_conn *c);

/* --- COPY, streamed through the broker (docs/copy.md) --- */

/* After pgb_exec of COPY ... FROM STDIN returned a result whose status is
 * PGB_COPY_IN: send len bytes of COPY data (any split: rows may span
 * calls). Small pieces are gathered into 64 KiB frames; blocks while the
 * broker cannot take more. 1, or -1 (pgb_error_message): no COPY FROM
 * STDIN in progress, the connection broke, or the COPY already ended (the
 * broker's backend failed; its result waits for pgb_get_result). */
int pgb_put_copy_data(pgb_conn *c, const char *buf, int len);
/* End COPY FROM STDIN: errmsg NULL finishes it, else fails it with that
 * message (PostgreSQL's 57014, nothing applied). 1, or -1 as above. Then
 * pgb_get_result(c, NULL) gives the final result: "COPY n", or the error
 * (a bad row's 22P02, say). */
int pgb_put_copy_end(pgb_conn *c, const char *errmsg);
/* After pgb_exec of COPY ... TO STDOUT returned PGB_COPY_OUT: the next row.
 * Returns its length with *buf a NUL-terminated copy the caller frees with
 * pgb_freemem; -1 at the end of the data (then pgb_get_result(c, NULL)
 * gives the final result: "COPY n", or the error); -2 on error
 * (pgb_error_message: no COPY TO STDOUT in progress, the connection
 * broke). async non-zero: never blocks, 0 when no row has arrived yet
 * (then pgb_socket becomes readable when one does), as PQgetCopyData. */
int pgb_get_copy_data(pgb_conn *c, char **buf, int async);

/* --- Notifications (docs/notifications.md) --- */

/* One notification, shaped after libpq's PGnotify. be_pid 0 is the
 * broker's own notice that notifications on relname may have been missed
 * here (its queue was full, or its listening connection was lost); extra
 * then says which. */
typedef struct pgb_notify {
	const char *relname;   /* the channel */
	int be_pid;            /* the notifying server process, 0: missed some */
	const char *extra;     /* the payload, "" when none */
} pgb_notify;
/* The next notification received on a channel this connection LISTENs on
 * (LISTEN through pgb_exec), or NULL. Never blocks; after NULL,
 * pgb_socket becomes readable when one arrives. Free it with pgb_freemem. */
pgb_notify *pgb_notifies(pgb_conn *c);
/* Free what libpgbroker allocated for the caller (a COPY row, a pgb_notify). */
void pgb_freemem(void *p);

/* This connection's own statement statistics. */
struct pgb_conn_stats {
	unsigned long long total;      /* statements answered */
	unsigned long long failed;     /* of which failed */
	double success_rate;           /* (total - failed) / total, 1 when none */
	double mean_rtt_us;            /* mean round trip, microseconds */
	unsigned long long max_rtt_us; /* longest round trip */
};
/* Fill st with this connection's statistics; 0, or -1 for NULL arguments. */
int pgb_conn_stats(const pgb_conn *c, struct pgb_conn_stats *st);

/* --- Helpers: SQLSTATE classification, retry, circuit breaker, transactions --- */

/* What pgb_retry, pgb_breaker_call and pgb_transaction return. */
enum {
	PGB_OK = 0,            /* the operation succeeded */
	PGB_FAILED = -1,       /* it failed: permanently, or on every attempt */
	PGB_REJECTED = -2,     /* not run: the breaker is open (SQLSTATE PB002) */
	PGB_BAD_ARGUMENT = -3, /* NULL or invalid argument (PB006); nothing ran */
};

/* What happened, filled in by the helpers when the caller passes one; also
 * handed to each operation, which reports its failure in it. */
struct pgb_outcome {
	int attempts;          /* the current try (1, 2, ...); at the end: tries made */
	char sqlstate[6];      /* the last failure's SQLSTATE; "" on success or when none */
	char message[256];     /* the last failure in words; "" on success */
};

/* Whether a statement that failed with some SQLSTATE was applied. */
enum {
	PGB_RAN_NO = 0,          /* never ran: not sent, or refused before it started */
	PGB_RAN_ROLLED_BACK = 1, /* ran, and PostgreSQL undid it: nothing applied */
	PGB_RAN_UNKNOWN = 2,     /* may or may not have been applied */
	PGB_RAN_YES = 3,         /* completed (classes 00, 01, 02 are not failures) */
};

/* 1 if a failure with this SQLSTATE may go away by itself (docs/sqlstates.md). */
int pgb_sqlstate_is_transient(const char *sqlstate);
/* PGB_RAN_*: was the failed statement applied? Unknown codes: PGB_RAN_UNKNOWN. */
int pgb_sqlstate_ran(const char *sqlstate);
/* Transient and known not applied: running the statement again is safe. */
int pgb_sqlstate_retry_safe(const char *sqlstate);

/* An operation for pgb_retry and pgb_breaker_call: 0 on success; on failure
 * non-zero, after putting a SQLSTATE (and a message) into why if it has one. */
typedef int (*pgb_op)(void *arg, struct pgb_outcome *why);
/* For an operation or a transaction body: when r failed, copy its SQLSTATE
 * and message into why (may be NULL); free r; return -1. Use it as
 * `return pgb_fail(r, why);`. */
int pgb_fail(pgb_result *r, struct pgb_outcome *why);

struct pgb_retry_policy {
	int attempts;    /* tries in all, >= 1 */
	int base_ms;     /* delay before the first retry; doubles for each one after */
	int max_ms;      /* no delay is longer */
	int jitter_pct;  /* 0: none; 1..99: each delay is +-p % off; 100: uniform in [0, delay] */
	int deadline_ms; /* 0: none; else no retry starts later than this after the first try */
	/* Is this failure worth another try? Gets "" when the operation gave no
	 * SQLSTATE. NULL: "" or pgb_sqlstate_is_transient. For an operation that
	 * must never apply twice, use pgb_sqlstate_retry_safe. */
	int (*is_transient)(const char *sqlstate);
};
/* The pool's defaults: 5 attempts, 100 ms doubling, 30 s cap, +-5 % jitter, no deadline. */
struct pgb_retry_policy pgb_retry_policy_default(void);
/* Run op until it succeeds, fails with a SQLSTATE that is not transient, or
 * the attempts or the deadline are spent, sleeping the backoff in between
 * (policy NULL: defaults). PGB_OK, PGB_FAILED or PGB_BAD_ARGUMENT; out may be NULL. */
int pgb_retry(pgb_op op, void *arg, const struct pgb_retry_policy *policy,
	      struct pgb_outcome *out);

enum { PGB_BREAKER_CLOSED = 0, PGB_BREAKER_OPEN = 1, PGB_BREAKER_HALF_OPEN = 2 };
/* A circuit breaker around any operation.
 * Fill it with pgb_breaker_init; then set clock_ms to drive time yourself.
 * Not thread-safe: one per thread, or guard it with your own lock. */
struct pgb_breaker {
	long long (*clock_ms)(void *clock_arg); /* milliseconds; NULL: CLOCK_MONOTONIC */
	void *clock_arg;
	unsigned magic;                         /* set by pgb_breaker_init */
	long long opaque[12];                   /* private */
};
/* Open after threshold consecutive failures (0: 5); after reset_ms (0: 30000)
 * let one probe through; each failed probe doubles the wait, up to 8 x
 * reset_ms. PGB_OK, or PGB_BAD_ARGUMENT (negative values: defaults used). */
int pgb_breaker_init(struct pgb_breaker *br, int threshold, int reset_ms);
/* Run op unless the breaker is open (then PGB_REJECTED at once, PB002).
 * A failure with a permanent SQLSTATE proves the service answers: it is not
 * counted as an outage. PGB_OK, PGB_FAILED, PGB_REJECTED, PGB_BAD_ARGUMENT. */
int pgb_breaker_call(struct pgb_breaker *br, pgb_op op, void *arg, struct pgb_outcome *out);
/* PGB_BREAKER_*: HALF_OPEN when the next call would be the probe; -1 if br is
 * NULL or not initialised. */
int pgb_breaker_state(const struct pgb_breaker *br);

enum { PGB_ISOLATION_DEFAULT = 0, PGB_READ_COMMITTED, PGB_REPEATABLE_READ, PGB_SERIALIZABLE };
/* Options of pgb_transaction; all zero (or NULL) means the defaults. */
struct pgb_txn_opts {
	int isolation;  /* PGB_ISOLATION_DEFAULT: the server's default_transaction_isolation */
	int read_only;  /* 1: READ ONLY (a write fails with 25006) */
	int attempts;   /* tries in all on 40001/40P01; 0: 5 */
	int base_ms;    /* first backoff delay; 0: 100 (doubling, +-5 % jitter) */
	int max_ms;     /* backoff cap; 0: 30000 */
};
/* A transaction body: run statements on c; 0 to commit; non-zero to roll
 * back, after reporting the failing result in why (pgb_fail does both) so
 * that 40001 and 40P01 make pgb_transaction run the whole body again. */
typedef int (*pgb_txn_fn)(pgb_conn *c, void *arg, struct pgb_outcome *why);
/* BEGIN [ISOLATION LEVEL ...] [READ ONLY]; fn; COMMIT on one pinned backend.
 * Rolls back when fn or COMMIT fails; on 40001/40P01 re-runs it all after a
 * backoff. PGB_OK (committed once), PGB_FAILED or PGB_BAD_ARGUMENT; out may
 * be NULL. Call it outside a transaction; fn must not COMMIT or ROLLBACK. */
int pgb_transaction(pgb_conn *c, pgb_txn_fn fn, void *arg, const struct pgb_txn_opts *opts,
		    struct pgb_outcome *out);

/* --- Pool health, read from the broker's stats segment --- */

/* pgb_health.status; the same numbers as poolstat's exit status. An open
 * circuit breaker is always PGB_UNHEALTHY; PGB_STARTING: the broker runs but
 * has not taken its first health sample yet (not healthy either);
 * PGB_NO_BROKER also when the broker's heartbeat is over 2 s old or its
 * process is gone. */
enum { PGB_HEALTHY = 0, PGB_DEGRADED = 1, PGB_UNHEALTHY = 2, PGB_NO_BROKER = 3,
       PGB_STARTING = 4 };

struct pgb_health {
	int status;                 /* PGB_HEALTHY .. PGB_UNHEALTHY, PGB_STARTING; PGB_NO_BROKER on failure */
	int healthy;                /* 1 when status is PGB_HEALTHY */
	int total, idle, active;    /* backends: open or opening, idle, running a statement */
	int waiting;                /* statements waiting for a backend */
	double utilization_percent; /* busy backends (active + pinned) / max_pool_size */
	long long timestamp_ms;     /* when the broker published this (Unix time, ms) */
	char status_name[16];       /* "healthy", "degraded", "unhealthy", "starting" or "no broker" */
	char reasons[2048];         /* what is wrong, one per line; "" when healthy */
	char recommendations[2048]; /* what to do, one per line, in the order of reasons */
	char error[512];            /* why pgb_pool_health failed; "" on success */
};

/* Health of the pool in dir (NULL: as for pgb_connect): 0, or -1 with h->error. */
int pgb_pool_health(const char *dir, struct pgb_health *h);

#ifdef __cplusplus
}
#endif
#endif
