/* The messages inside the rings. A request or a response is one logical
 * byte string ("blob") carried by one or more frames of the same id: the
 * first has FRAME_FIRST and, in aux, the blob's total length; the last has
 * FRAME_LAST. Blobs are built and parsed here; nothing here trusts its input. */
#ifndef PGB_PROTO_H
#define PGB_PROTO_H

#include <stdint.h>
#include "ring.h"

enum frame_type {
	FRAME_REQ = 1,    /* agent -> broker: a statement */
	FRAME_RESP = 2,   /* broker -> agent: its result */
	FRAME_NOTIFY = 3, /* broker -> agent: a notification (id 0), in the response ring */
	/* Inside a COPY (docs/copy.md), tagged with the COPY's request id:
	 * agent -> broker: raw COPY FROM STDIN data, each frame a message of
	 * its own (FRAME_FIRST | FRAME_LAST, aux = len), forwarded as it is;
	 * broker -> agent: one chunk of COPY TO STDOUT rows (copy_chunk_*),
	 * a message of one or more frames. */
	FRAME_COPY_DATA = 8,
	/* agent -> broker: the end of COPY FROM STDIN, one frame (copy_end_*) */
	FRAME_COPY_END = 9,
};

enum frame_flags {
	FRAME_FIRST = 1u << 0,
	FRAME_LAST = 1u << 1,
};

/* Request flags (req_head.flags). */
enum req_flags {
	REQ_IDEMPOTENT = 1u << 0,  /* may be re-run when its fate is unknown */
	REQ_INDEPENDENT = 1u << 1, /* may run beside this agent's other statements */
	REQ_BATCH = 1u << 2,       /* several statements, one atomic pipeline */
	REQ_SPREAD = 1u << 3,      /* wants a backend of its own (pgb_parallel) */
	REQ_RESET = 1u << 4,       /* no statement: pgb_reset, a clean session */
	REQ_CHUNKED = 1u << 5,     /* every row in rows messages (RESP_ROWS) */
};

#define REQ_MAX_BATCH 65535u

#define REQ_MAX_PARAMS 65535u

/* Request blob: req_head, sql (sql_len bytes, the last one NUL), nparams
 * int32 lengths (-1 = NULL), then each non-NULL value followed by a NUL. */
struct req_head {
	uint32_t sql_len;
	uint32_t nparams;
	uint32_t flags;
	uint32_t reserved;
};

struct req_view {
	const char *sql;
	uint32_t nparams;
	uint32_t flags;
	const uint8_t *lens;   /* unaligned int32 array */
	const char *data;      /* first parameter value */
};

/* Bytes needed to encode a request. Returns 0 when it cannot be encoded. */
uint64_t req_encoded_len(const char *sql, uint32_t nparams, const char *const *values);
/* Encode into buf (req_encoded_len bytes). */
void req_encode(uint8_t *buf, const char *sql, uint32_t nparams,
		const char *const *values, uint32_t flags);
/* Check a whole request blob. 0 ok, or -1 with *why set to a static text. */
int req_decode(const uint8_t *buf, uint64_t n, struct req_view *v, const char **why);
/* Fill vals[0..nparams) from a decoded view (NULL for SQL NULL). */
void req_params(const struct req_view *v, const char **vals);

/* Batch blob: a req_head with REQ_BATCH, sql "" and no parameters, then
 * u32 count, then count times (u32 length, one request blob). */
struct req_stmt {
	const char *sql;
	uint32_t nparams;
	const char *const *values;
};
uint64_t batch_encoded_len(const struct req_stmt *stmts, uint32_t n);
void batch_encode(uint8_t *buf, const struct req_stmt *stmts, uint32_t n, uint32_t flags);
/* Check a whole batch blob; fills views[count] (count from batch_count). */
int batch_count(const uint8_t *buf, uint64_t n, uint32_t *count, const char **why);
int batch_decode(const uint8_t *buf, uint64_t n, struct req_view *views, const char **why);

/* COPY TO STDOUT rows, broker -> agent: a chunk is one or more rows, each
 * "u32 length, bytes" (the host's byte order), filling the message
 * exactly. A row longer than COPY_CHUNK goes alone in its chunk. */
#define COPY_CHUNK (64u * 1024)
#define COPY_ROW_MAX 0x7fffffffu   /* a row's length fits an int */
/* The next row of a chunk at *at: 1 with *row and *len (at advances), 0 at
 * the end, -1 when the chunk is malformed. */
int copy_chunk_next(const uint8_t *buf, uint64_t n, uint64_t *at, const uint8_t **row,
		    uint32_t *len);

/* The end of COPY FROM STDIN, agent -> broker: u8 COPY_END_DONE or
 * COPY_END_FAIL, then (FAIL) the error message, then a NUL. */
enum { COPY_END_DONE = 0, COPY_END_FAIL = 1 };
/* Bytes needed to encode an end with errmsg (NULL: done). */
uint32_t copy_end_len(const char *errmsg);
void copy_end_encode(uint8_t *buf, const char *errmsg);
/* Check an end message: 0 with *errmsg (NULL: done, else a string inside
 * buf), or -1 when malformed. */
int copy_end_decode(const uint8_t *buf, uint32_t n, const char **errmsg);
/* The longest error message an end carries (longer ones are cut). */
#define COPY_END_MSG_MAX 1024u

/* Response blob: resp_head, then items "u32 len, bytes, NUL" (len
 * 0xffffffff = NULL, no bytes): error message, command status, error fields,
 * notices, nfields column items, ntuples * nfields values in row order.
 * - error fields: PostgreSQL's diagnostics packed as in its ErrorResponse,
 *   one "<code letter>text NUL" per field (code letters are libpq's
 *   PG_DIAG_*); empty when the statement succeeded or the broker failed it.
 * - notices: PostgreSQL's NOTICE, WARNING, INFO, ... messages that came
 *   before this result, each packed as the error fields followed by one
 *   NUL (an empty field); empty when none.
 * - a column item: its descriptor (u32 type OID, i32 typmod, the host's byte
 *   order; RESP_COL_DESC bytes) followed by its name.
 * The channel's version (CHAN_VERSION) names this layout. */
#define RESP_NULL 0xffffffffu
#define RESP_MORE 1u   /* resp_head.flags: more responses follow for this id (batch) */
#define RESP_IN_TXN 2u /* ...: the agent's session was inside a transaction when
			  this response was queued (its backend is pinned) */
/* A rows message (resp_head.flags RESP_ROWS): some of the rows of a result
 * too large to hold whole, streamed ahead of its final response. Its layout
 * is a response blob's: status RESP_TUPLES_OK, ok 1, empty error, command
 * and error fields, the columns, then ntuples rows. Rows messages of one
 * statement id come in row order, all before its final response (the one
 * without RESP_ROWS), whose own rows, if any, come after theirs. A final
 * response that failed voids the rows sent ahead of it. A statement sent
 * with REQ_CHUNKED gets every row in rows messages and a final response
 * with none. */
#define RESP_ROWS 4u
#define RESP_COL_DESC 8u

/* resp_head.status: libpq's ExecStatusType numbers (the public PGB_* ones). */
enum resp_status {
	RESP_EMPTY_QUERY = 0,
	RESP_COMMAND_OK = 1,
	RESP_TUPLES_OK = 2,
	RESP_COPY_OUT = 3,
	RESP_COPY_IN = 4,
	RESP_FATAL_ERROR = 7,
};

struct resp_head {
	uint64_t total;       /* bytes of the whole blob */
	uint64_t cmd_tuples;
	uint32_t ok;          /* 1: the statement succeeded */
	uint32_t ntuples;
	uint32_t nfields;
	uint32_t flags;
	char sqlstate[8];     /* five characters and a NUL; "" when ok */
	uint32_t status;      /* enum resp_status */
	uint32_t reserved;    /* 0 */
};

/* Where a response's content comes from: a PGresult in the broker, plain
 * strings for the broker's own errors, an array in tests. */
struct resp_src {
	struct resp_head head;   /* total is filled by resp_measure */
	const char *err;
	const char *cmd;
	const char *diag;        /* packed error fields (see above); NULL: none */
	uint32_t diag_len;       /* bytes of diag, without the item's own NUL */
	const char *notices;     /* packed notices (see above); NULL: none */
	uint32_t notices_len;
	void *ctx;
	const char *(*fname)(void *ctx, uint32_t col);
	/* a column's type OID and typmod; NULL: 0 and -1 for every column */
	void (*ftype)(void *ctx, uint32_t col, uint32_t *oid, int32_t *typmod);
	/* value of a cell and its length; NULL for SQL NULL */
	const char *(*value)(void *ctx, uint32_t row, uint32_t col, uint32_t *len);
	/* Or, when rows is set, the ntuples rows already encoded as the
	 * blob's value items (resp_rows_put), rows_len bytes; value unused. */
	const uint8_t *rows;
	uint64_t rows_len;
};

void resp_row_put(uint8_t *buf, uint32_t nfields, const char *const *vals, const int32_t *lens);

/* Pack error fields into buf (cap bytes) as the error-fields item wants
 * them: for each code in codes with a value from get (NULL: absent), the
 * code, the text and a NUL. Returns the bytes needed (call with cap 0 to
 * size buf); writes only when they fit. */
uint32_t resp_diag_pack(char *buf, uint32_t cap, const char *codes,
			const char *(*get)(void *ctx, int code), void *ctx);
/* Field code of a packed error-fields item (checked by resp_parse), or
 * NULL when absent. */
const char *resp_diag_find(const char *diag, uint32_t len, int code);

/* Streaming position inside a response being written. */
struct resp_cursor {
	uint64_t done;       /* bytes emitted so far */
	uint64_t item;       /* 0 head, 1 err, 2 cmd, then names, then values */
	uint32_t off;        /* bytes of the current item emitted */
};

/* Compute and store src->head.total; 0 when the result is too large. */
uint64_t resp_measure(struct resp_src *src);
/* Emit up to max bytes of the blob into r at offset off from r's tail.
 * Returns the bytes written; the cursor advances. */
uint32_t resp_emit(struct resp_cursor *cur, const struct resp_src *src,
		   struct ring *r, uint32_t off, uint32_t max);

/* Parsed response: pointers into the blob. */
struct resp_view {
	struct resp_head head;
	const char *err;
	const char *cmd;
	const char *diag;   /* the error fields item (checked), diag_len bytes */
	uint32_t diag_len;
	const char *notices; /* the notices item (checked), notices_len bytes */
	uint32_t notices_len;
};
/* Check a whole response blob and fill fnames[nfields], vals[ntuples*nfields],
 * lens[...] (arrays sized from resp_parse_head). 0 ok, -1 corrupt.
 * fnames[i] points at the name, just after the column's descriptor: read
 * that with resp_col_desc. */
int resp_parse_head(const uint8_t *buf, uint64_t n, struct resp_head *h);
int resp_parse(const uint8_t *buf, uint64_t n, struct resp_view *v,
	       const char **fnames, const char **vals, uint32_t *lens);

/* The type OID and typmod of the column whose name resp_parse gave. */
static inline void resp_col_desc(const char *fname, uint32_t *oid, int32_t *typmod)
{
	__builtin_memcpy(oid, fname - RESP_COL_DESC, 4);
	__builtin_memcpy(typmod, fname - RESP_COL_DESC + 4, 4);
}

/* Notification blob (FRAME_NOTIFY, id 0): notify_head, the channel name
 * (relname_len bytes, then a NUL), the payload (extra_len bytes, then a
 * NUL). NOTIFY_MISSED marks the broker's own notice that notifications on
 * that channel may have been missed here (be_pid is then 0, extra says why). */
#define NOTIFY_MISSED 1u
#define NOTIFY_NAME_MAX 63u      /* PostgreSQL's NAMEDATALEN - 1 */
#define NOTIFY_EXTRA_MAX 65536u  /* PostgreSQL allows under 8000 bytes */

struct notify_head {
	int32_t be_pid;
	uint32_t flags;
	uint32_t relname_len;
	uint32_t extra_len;
};

struct notify_view {
	int32_t be_pid;
	uint32_t flags;
	const char *relname;
	const char *extra;
};

/* Bytes needed to encode a notification; 0 when a part is too long. */
uint64_t notify_encoded_len(const char *relname, const char *extra);
/* Encode into buf (notify_encoded_len bytes). */
void notify_encode(uint8_t *buf, int32_t be_pid, uint32_t flags, const char *relname,
		   const char *extra);
/* Check a whole notification blob; v points into buf. 0 ok, -1 corrupt. */
int notify_decode(const uint8_t *buf, uint64_t n, struct notify_view *v);

#endif
