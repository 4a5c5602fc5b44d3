/* The drop-in libpq.so.5: libpq's ABI (the system's libpq-fe.h, every
 * function libpq 15 exports) as a face over libpgbroker. A PGconn is one
 * pgb_conn; a PGresult wraps one pgb_result or is made here. This header
 * is the face's own: its files' shared structs and calls. */
#ifndef PGB_LIBPQ_FACE_H
#define PGB_LIBPQ_FACE_H

#include <stddef.h>
#include <libpq-fe.h>
#include <libpq-events.h>

#include "pgbroker.h"

#define FACE_API __attribute__((visibility("default")))

/* Server parameters libpq reports (ParameterStatus), read from the server. */
enum {
	PS_SERVER_VERSION,
	PS_SERVER_ENCODING,
	PS_CLIENT_ENCODING,
	PS_APPLICATION_NAME,
	PS_DEFAULT_TRANSACTION_READ_ONLY,
	PS_IN_HOT_STANDBY,
	PS_IS_SUPERUSER,
	PS_SESSION_AUTHORIZATION,
	PS_DATESTYLE,
	PS_INTERVALSTYLE,
	PS_TIMEZONE,
	PS_INTEGER_DATETIMES,
	PS_STANDARD_CONFORMING_STRINGS,
	PS_COUNT
};
extern const char *const face_param_names[PS_COUNT];

/* One keyword=value of the connection options. */
struct face_opt {
	char *key;
	char *val;
};

/* A statement prepared with PQprepare: kept here, run by text (the broker
 * prepares hot texts on its backends itself). */
struct face_prep {
	struct face_prep *next;
	char *name;
	char *sql;
	int nparams;
	Oid *types;
};

/* A result waiting for PQgetResult. */
struct face_pending {
	struct face_pending *next;
	PGresult *res;     /* NULL: the end of one command's results */
};

/* What the connection is doing, as PQgetResult sees it. */
enum face_async {
	ASYNC_IDLE = 0,    /* nothing sent */
	ASYNC_BUSY = 1,    /* a statement is in flight (id) */
	ASYNC_READY = 2,   /* results are queued, then a NULL */
};

struct pg_conn {
	pgb_conn *c;
	ConnStatusType status;
	char *errmsg;                 /* PQerrorMessage: "" or lines ending in \n */
	struct face_opt *opts;        /* the options as given and defaulted */
	int nopts;
	char *param[PS_COUNT];        /* server parameters; NULL: not reported */
	int server_version;           /* PQserverVersion */
	int client_encoding;          /* PQclientEncoding */
	int params_stale;             /* a SET may have changed them: read again */
	PGTransactionStatusType xact; /* after the last answer */
	int nonblocking;
	PGVerbosity verbosity;
	PGContextVisibility show_context;
	PQnoticeReceiver notice_rcv;
	void *notice_rcv_arg;
	PQnoticeProcessor notice_proc;
	void *notice_proc_arg;
	/* PQsend* and PQgetResult */
	enum face_async async;
	long long inflight;           /* pgb_send id while ASYNC_BUSY */
	ExecStatusType inflight_kind; /* PGRES_COMMAND_OK for PQsendPrepare's answer */
	struct face_pending *pend, *pend_tail;
	struct face_prep *preps;
	/* pipeline mode: commands sent, each answered by one result then NULL */
	PGpipelineStatus pipeline;
	struct face_pipe_cmd *pipe_head, *pipe_tail;
	int pipe_aborted;             /* a command failed: the rest up to the sync abort */
	PGcancel *cancel;
};

/* A command of pipeline mode, in the order sent. */
struct face_pipe_cmd {
	struct face_pipe_cmd *next;
	long long id;                 /* pgb_send id; 0: answered locally (res) */
	int sync;                     /* a PQpipelineSync marker */
	ExecStatusType kind;          /* PGRES_COMMAND_OK: a PQsendPrepare */
	PGresult *res;                /* a local answer */
};

struct face_block;

struct pg_result {
	ExecStatusType status;
	pgb_result *src;              /* the broker's answer, or NULL */
	int ntups, nfields, capvals;
	PGresAttDesc *att;
	char **vals;                  /* ntups * nfields; NULL: SQL NULL */
	int *lens;
	char cmd[64];                 /* PQcmdStatus */
	char *errmsg;                 /* PQresultErrorMessage: "" when none */
	char *fields;                 /* our own error fields: "Ctext\0..." ending in "\0" */
	int nparams;
	Oid *paramtypes;
	int client_encoding;
	PQnoticeProcessor notice_proc;  /* inherited from the connection (PQcopyResult) */
	void *notice_proc_arg;
	struct face_block *blocks;    /* PQresultAlloc memory, freed with the result */
	size_t memsize;
};

/* result.c */
/* A result from a pgb_result (taken over: freed with it); NULL out of memory. */
PGresult *face_result_wrap(PGconn *conn, pgb_result *r);
/* A result of status st made here; NULL out of memory. */
PGresult *face_result_new(PGconn *conn, ExecStatusType st);
/* A failed result with SQLSTATE state and the message made from fmt. */
PGresult *face_result_error(PGconn *conn, const char *state, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Copy of s into the result's own memory. */
char *face_result_strdup(PGresult *res, const char *s);

/* conn.c */
/* Set PQerrorMessage (a trailing newline is added when missing). */
void face_set_error(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* After an answer: transaction status, server parameters, the error. */
void face_after_result(PGconn *conn, const PGresult *res);
/* Read the server parameters again when a SET may have changed them
 * and nothing is in flight. */
void face_refresh_params(PGconn *conn);
/* Parse conninfo (keyword=value or a postgres:// URI) into opts; 0 or -1
 * with *err (malloc). */
int face_parse_conninfo(const char *s, struct face_opt **opts, int *nopts, char **err);
void face_opts_free(struct face_opt *opts, int n);

/* encoding.c; libpq exports these without declaring them in libpq-fe.h */
int pg_valid_server_encoding(const char *name);
int pg_utf_mblen(const unsigned char *s);
int face_encoding_id(const char *name);
const char *face_encoding_name(int id);

#endif
