/* Responses: results queued per agent and streamed as frames into
 * its response ring as far as there is room. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "broker.h"
#include "copy.h"
#include "errform.h"
#include "exec.h"
#include "memory.h"
#include "response.h"
#include "bnotice.h"

void response_free(struct broker *b, struct agent *a, struct response *rs)
{
	if (rs->charged)
		mem_resp_uncharge(b, a, rs->charged);
	if (rs->res)
		PQclear(rs->res);
	free(rs->chunk);
	free(rs->rows);
	free(rs->diag);
	free(rs->nblob);
	free(rs);
}

void agent_notify(struct broker *b, struct agent *a, uint8_t *blob, uint32_t len)
{
	struct response *rs = calloc(1, sizeof(*rs));

	if (!rs) {
		free(blob);
		b->st.c.notify_dropped++;
		return;
	}
	rs->nblob = blob;
	rs->src.head.total = len;
	list_add_tail(&a->responses, &rs->link);
	a->nnotify++;
	agent_flush(b, a);
}

/* Stop the send_timeout_ms clock: nothing but notifications wait, which an
 * agent need not read (their queue is bounded and drops). */
static void unblock(struct agent *a)
{
	if (a->blocked_since_ns) {
		a->blocked_since_ns = 0;
		list_del(&a->blocked_link);
	}
}

static const char *pg_value(void *ctx, uint32_t row, uint32_t col, uint32_t *len)
{
	PGresult *res = ctx;

	if (PQgetisnull(res, (int)row, (int)col))
		return NULL;
	*len = (uint32_t)PQgetlength(res, (int)row, (int)col);
	return PQgetvalue(res, (int)row, (int)col);
}

static const char *pg_fname(void *ctx, uint32_t col)
{
	const char *s = PQfname(ctx, (int)col);

	return s ? s : "";	/* a COPY's columns have no names */
}

static void pg_ftype(void *ctx, uint32_t col, uint32_t *oid, int32_t *typmod)
{
	*oid = PQftype(ctx, (int)col);
	*typmod = PQfmod(ctx, (int)col);
}

static const char *pg_diag(void *ctx, int code)
{
	return PQresultErrorField(ctx, code);
}

/* The error fields a failed result carries, packed for the response (the
 * success path never comes here). 0, or -ENOMEM. */
static int pack_diag(struct response *rs, PGresult *res)
{
	static const char codes[] = "SVCMDHPpqWstcdnFLR";
	uint32_t need = resp_diag_pack(NULL, 0, codes, pg_diag, res);

	if (need == 0)
		return 0;
	rs->diag = malloc(need);
	if (!rs->diag)
		return -ENOMEM;
	resp_diag_pack(rs->diag, need, codes, pg_diag, res);
	rs->src.diag = rs->diag;
	rs->src.diag_len = need;
	return 0;
}

/* PostgreSQL's status as the response states it. */
static uint32_t resp_status_of(const PGresult *res)
{
	switch (res ? PQresultStatus(res) : PGRES_FATAL_ERROR) {
	case PGRES_EMPTY_QUERY:
		return RESP_EMPTY_QUERY;
	case PGRES_COMMAND_OK:
		return RESP_COMMAND_OK;
	case PGRES_TUPLES_OK:
	case PGRES_SINGLE_TUPLE:
		return RESP_TUPLES_OK;
	case PGRES_COPY_OUT:
		return RESP_COPY_OUT;
	case PGRES_COPY_IN:
	case PGRES_COPY_BOTH:
		return RESP_COPY_IN;
	default:
		return RESP_FATAL_ERROR;
	}
}

static void respond(struct broker *b, struct agent *a, struct response *rs)
{
	if (a->resp_more)
		rs->src.head.flags |= RESP_MORE;
	/* a lost transaction still waits for the agent's ROLLBACK */
	if (a->txn_open || a->lost == LOST_TXN)
		rs->src.head.flags |= RESP_IN_TXN;
	list_add_tail(&a->responses, &rs->link);
	a->nresponses++;
	rs->charged = rs->src.head.total;
	mem_resp_charge(b, a, rs->charged);
	agent_flush(b, a);
}

void agent_respond_tag(struct broker *b, struct agent *a, uint32_t id, const char *tag)
{
	struct response *rs = calloc(1, sizeof(*rs));

	if (!rs) {
		agent_fail(b, a, DOOM_RESP_NOMEM);
		return;
	}
	snprintf(rs->msg, sizeof(rs->msg), "%s", tag);
	rs->id = id;
	rs->src.head.ok = 1;
	rs->src.head.status = RESP_COMMAND_OK;	/* as PostgreSQL answers a command */
	rs->src.err = "";
	rs->src.cmd = rs->msg;
	resp_measure(&rs->src);
	respond(b, a, rs);
}

void agent_respond_error(struct broker *b, struct agent *a, uint32_t id,
			 const char *sqlstate, const char *fmt, ...)
{
	struct response *rs = calloc(1, sizeof(*rs));
	va_list ap;

	if (!rs) {
		agent_fail(b, a, DOOM_RESP_NOMEM);
		return;
	}
	va_start(ap, fmt);
	errform_v(rs->msg, sizeof(rs->msg), fmt, ap);
	va_end(ap);
	rs->id = id;
	snprintf(rs->src.head.sqlstate, sizeof(rs->src.head.sqlstate), "%s", sqlstate);
	rs->src.head.status = RESP_FATAL_ERROR;
	rs->src.err = rs->msg;
	rs->src.cmd = "";
	resp_measure(&rs->src);
	a->errors++;
	respond(b, a, rs);
}

/* res (now the response's) as the answer to id, or as a rows message
 * (RESP_ROWS in flags). With rows set, the n rows encoded there (len bytes,
 * now the response's too) stand for res's own. -1 when it is too large to
 * deliver (res and rows are freed). */
static int respond_result(struct broker *b, struct agent *a, uint32_t id, PGresult *res,
			  uint8_t *rows, uint64_t len, uint32_t n, uint32_t flags)
{
	struct response *rs;
	ExecStatusType st = PQresultStatus(res);
	/* a COPY that started is no failure: its data follows; a rows
	 * message's rows are PGRES_SINGLE_TUPLE */
	int ok = (flags & RESP_ROWS) || result_ok(res) || st == PGRES_COPY_IN ||
		 st == PGRES_COPY_OUT;

	rs = calloc(1, sizeof(*rs));
	if (!rs) {
		PQclear(res);
		free(rows);
		agent_fail(b, a, DOOM_RESP_NOMEM);
		return 0;
	}
	rs->id = id;
	rs->res = res;
	rs->rows = rows;
	rs->src.head.ok = ok;
	rs->src.head.flags = flags;
	rs->src.head.status = ok ? resp_status_of(res) : RESP_FATAL_ERROR;
	if (!ok) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		snprintf(rs->src.head.sqlstate, sizeof(rs->src.head.sqlstate), "%s",
			 state ? state : "XX000");
		a->errors++;
		if (pack_diag(rs, res) < 0) {
			response_free(b, a, rs);
			agent_fail(b, a, DOOM_RESP_NOMEM);
			return 0;
		}
	}
	rs->src.head.ntuples = (uint32_t)PQntuples(res);
	rs->src.head.nfields = (uint32_t)PQnfields(res);
	rs->src.head.cmd_tuples = strtoull(PQcmdTuples(res), NULL, 10);
	rs->src.err = (flags & RESP_ROWS) ? "" : PQresultErrorMessage(res);
	rs->src.cmd = (flags & RESP_ROWS) ? "" : PQcmdStatus(res);
	if (!(flags & RESP_ROWS))
		rs->src.notices = bnotice_of(res, &rs->src.notices_len);
	rs->src.ctx = res;
	rs->src.fname = pg_fname;
	rs->src.ftype = pg_ftype;
	rs->src.value = pg_value;
	if (rows) {
		rs->src.head.ntuples = n;
		rs->src.rows = rows;
		rs->src.rows_len = len;
	}
	if (flags & RESP_ROWS)
		rs->src.head.cmd_tuples = 0;
	if (resp_measure(&rs->src) == 0) {
		response_free(b, a, rs);
		return -1;
	}
	respond(b, a, rs);
	return 0;
}

void agent_respond(struct broker *b, struct agent *a, uint32_t id, PGresult *res)
{
	agent_respond_rows(b, a, id, res, NULL, 0, 0);
}

void agent_respond_rows(struct broker *b, struct agent *a, uint32_t id, PGresult *res,
			uint8_t *rows, uint64_t len, uint32_t n)
{
	if (respond_result(b, a, id, res, rows, len, n, 0) < 0)
		agent_respond_error(b, a, id, "PB004", "result too large to deliver (over 2 GiB)");
}

int agent_send_rows(struct broker *b, struct agent *a, uint32_t id, PGresult *res,
		    uint8_t *rows, uint64_t len, uint32_t n)
{
	return respond_result(b, a, id, res, rows, len, n, RESP_ROWS);
}

/* Answer a finished batch: every result, or, when one failed, its error
 * and for every other statement a PB011 naming the one that failed. The
 * caller counts the batch as one statement. */
void agent_respond_batch(struct broker *b, struct agent *a, struct request *r)
{
	uint32_t failed = r->nsub;
	char msg[256];

	for (uint32_t i = 0; i < r->nsub && failed == r->nsub; i++)
		if (!result_ok(r->bres[i]))
			failed = i;
	if (failed < r->nsub) {
		const char *state = r->bres[failed] ?
			PQresultErrorField(r->bres[failed], PG_DIAG_SQLSTATE) : NULL;

		snprintf(msg, sizeof(msg), "not applied: statement %u of the batch failed (%s)",
			 failed + 1, state ? state : "no result");
	}
	for (uint32_t i = 0; i < r->nsub; i++) {
		if (!a)
			break;
		a->resp_more = i + 1 < r->nsub;
		if (failed < r->nsub && i != failed) {
			agent_respond_error(b, a, r->id, "PB011", "%s", msg);
		} else if (r->bres[i]) {
			agent_respond(b, a, r->id, r->bres[i]);
			r->bres[i] = NULL;
		} else {
			agent_respond_error(b, a, r->id, "XX000", "no result from PostgreSQL");
		}
	}
	if (a)
		a->resp_more = 0;
}

void agent_respond_chunk(struct broker *b, struct agent *a, uint32_t id, uint8_t *chunk,
			 uint32_t len)
{
	struct response *rs = calloc(1, sizeof(*rs));

	if (!rs) {
		free(chunk);
		agent_fail(b, a, DOOM_RESP_NOMEM);
		return;
	}
	rs->id = id;
	rs->chunk = chunk;
	rs->src.head.total = len;
	a->copy_queued += len;
	list_add_tail(&a->responses, &rs->link);
	a->nresponses++;
	agent_flush(b, a);
}

/* Stream queued responses into the response ring as far as it has room. */
void agent_flush(struct broker *b, struct agent *a)
{
	while (!list_empty(&a->responses) && !a->doom) {
		struct response *rs = list_entry(a->responses.next, struct response, link);
		struct frame_hdr h = { .type = rs->chunk ? FRAME_COPY_DATA :
					       rs->nblob ? FRAME_NOTIFY : FRAME_RESP,
				       .id = rs->id };
		int64_t space, n = chan_frame_next(&a->resp, &h, rs->src.head.total, rs->cur.done,
						   &space);

		if (n < 0) {
			agent_fail(b, a, DOOM_RESP_CORRUPT);
			return;
		}
		if (n == 0) {
			chan_want_space(&a->chan->resp);
			if (rs->nblob) {
				unblock(a);
			} else if (!a->blocked_since_ns) {
				a->blocked_since_ns = b->now_ns;
				list_add_tail(&b->blocked, &a->blocked_link);
			}
			/* The agent may have drained the ring meanwhile. */
			if (ring_space(&a->resp) > space)
				continue;
			a->blocked_space = space;
			return;
		}
		if (rs->chunk || rs->nblob) {
			ring_write(&a->resp, FRAME_HDR,
				   (rs->chunk ? rs->chunk : rs->nblob) + rs->cur.done, (uint32_t)n);
			rs->cur.done += (uint64_t)n;
		} else {
			resp_emit(&rs->cur, &rs->src, &a->resp, FRAME_HDR, (uint32_t)n);
		}
		chan_frame_publish(&a->resp, &h);
		a->resp_frames++;
		agent_wake(b, a);
		/* The agent made room, so it reads: send_timeout_ms bounds a
		 * stall, not a long result streamed to a slow reader. */
		if (a->blocked_since_ns)
			a->blocked_since_ns = b->now_ns;
		if (rs->cur.done == rs->src.head.total) {
			list_del(&rs->link);
			if (rs->nblob)
				a->nnotify--;
			else
				a->nresponses--;
			if (rs->chunk)
				copy_sent(b, a, (uint32_t)rs->src.head.total);
			response_free(b, a, rs);
			agent_unthrottle(b, a);
		}
	}
	if (list_empty(&a->responses)) {
		unblock(a);
		chan_space_ok(&a->chan->resp);
	}
}
