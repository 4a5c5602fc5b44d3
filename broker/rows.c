/* Rows of a running statement: read one at a time, encoded at once into
 * a chunk, sent ahead in rows messages when a chunk's worth has gathered
 * (a result up to one chunk still goes whole, in its final response), and
 * not read further while the agent's ring is full or the broker is over
 * its memory budget. Every byte held here is counted in the budget. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "backend.h"
#include "broker.h"
#include "exec.h"
#include "log.h"
#include "memory.h"
#include "request.h"
#include "response.h"
#include "rows.h"

#define ROWS_CHUNK_MIN (64u << 10)
#define READ_MIN (64u << 10)     /* less room than this left in the budget: pause */

/* A chunk: half the agent's ring, one frame. */
static uint64_t chunk_size(const struct agent *a)
{
	return a && a->resp.size / 2 > ROWS_CHUNK_MIN ? a->resp.size / 2 : ROWS_CHUNK_MIN;
}

static struct agent *agent_of(const struct backend *be)
{
	return be->req ? be->req->agent : NULL;
}

void rows_single(struct backend *be)
{
	(void)PQsetSingleRowMode(be->pg);
}

int rows_streamed(const struct backend *be)
{
	return be->rows.streamed;
}

/* Forget the rows gathered (a result set that does not count). */
static void rows_clear(struct rows *rw)
{
	rw->len = 0;
	rw->n = 0;
}

/* Give up be's statement: answer PB004, close be (libpq's buffer goes
 * with it; the statements piped behind fail as a closed backend's do). */
static void rows_fail(struct broker *b, struct backend *be, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void rows_fail(struct broker *b, struct backend *be, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("backend %u (pid %d): %s", be->slot, be->pg_pid, msg);
	b->st.c.rows_too_large++;
	be_close_too_large(b, be, msg);
}

uint64_t rows_read_quota(struct broker *b, struct backend *be)
{
	struct rows *rw = &be->rows;
	struct agent *a = agent_of(be);
	uint64_t budget = mem_budget(b), row_max = mem_row_max(b);

	if (be->paused)
		return 0;
	/* libpq holds the part of a row read so far: a row larger than
	 * row_max never completes within the budget */
	if (rw->in_est >= row_max) {
		rows_fail(b, be, "a row of the result is over %llu MB, the most max_memory_mb=%d "
			  "lets the broker read (a quarter of it)",
			  (unsigned long long)row_max >> 20, b->cfg.max_memory_mb);
		return 0;
	}
	if (b->mem.used + READ_MIN >= budget) {
		/* Midway through a large row nothing frees by waiting: the
		 * row cannot be had within the budget now. */
		if (rw->in_est >= chunk_size(a)) {
			rows_fail(b, be, "the broker's memory budget (max_memory_mb=%d) is in use: "
				  "a row of over %llu kB cannot be read now",
				  b->cfg.max_memory_mb, (unsigned long long)rw->in_est >> 10);
			return 0;
		}
		mem_pause(b, be, a, PAUSE_BUDGET);
		return 0;
	}
	return budget - b->mem.used < row_max - rw->in_est ? budget - b->mem.used
							   : row_max - rw->in_est;
}

void rows_read_done(struct broker *b, struct backend *be, uint64_t got)
{
	struct rows *rw = &be->rows;

	rw->in_est += got;
	mem_charge(b, agent_of(be), got);
	if (rw->in_est > BE_BUF_BLOAT)
		be->bloated = 1;
}

/* Room for n more bytes in be's chunk, counted. */
static int rows_grow(struct broker *b, struct backend *be, uint64_t n)
{
	struct rows *rw = &be->rows;
	uint64_t cap = rw->cap ? rw->cap : 4096;
	uint8_t *p;

	if (rw->len + n <= rw->cap)
		return 0;
	while (cap < rw->len + n)
		cap *= 2;
	p = realloc(rw->buf, cap);
	if (!p)
		return -ENOMEM;
	mem_charge(b, agent_of(be), cap - rw->cap);
	rw->buf = p;
	rw->cap = cap;
	return 0;
}

/* Send the rows gathered as a rows message of statement id to a; cols
 * gives the columns (it stays the caller's). */
static void rows_flush(struct broker *b, struct backend *be, struct agent *a, uint32_t id,
		       const PGresult *cols)
{
	struct rows *rw = &be->rows;
	PGresult *attrs;

	if (!rw->n || !a)
		return;
	attrs = PQcopyResult(cols, PG_COPYRES_ATTRS);
	mem_uncharge(b, a, rw->cap);
	if (!rw->streamed)
		b->st.c.streamed++;
	rw->streamed = 1;
	if (!attrs) {
		free(rw->buf);
		agent_fail(b, a, DOOM_RESP_NOMEM);
	} else if (agent_send_rows(b, a, id, attrs, rw->buf, rw->len, rw->n) < 0) {
		rw->too_large = 1;
	}
	rw->buf = NULL;
	rw->len = rw->cap = 0;
	rw->n = 0;
}

/* Too much waits for the agent's ring: stop reading until it drains. */
static void rows_backpressure(struct broker *b, struct backend *be)
{
	struct agent *a = agent_of(be);

	if (a && !be->paused && mem_agent_full(b, a))
		mem_pause(b, be, a, PAUSE_AGENT);
}

void rows_add(struct broker *b, struct backend *be, PGresult *x)
{
	struct rows *rw = &be->rows;
	struct agent *a = agent_of(be);
	uint32_t nf = (uint32_t)PQnfields(x);
	uint64_t size = 0, wire = 7, dec;
	uint8_t *p;

	for (uint32_t i = 0; i < nf; i++) {
		uint64_t len = PQgetisnull(x, 0, (int)i) ? 0 : (uint64_t)PQgetlength(x, 0, (int)i);

		size += 4 + (PQgetisnull(x, 0, (int)i) ? 0 : len + 1);
		wire += 4 + len;
	}
	/* This row's input is handed out: no longer held by libpq. */
	dec = wire < rw->in_est ? wire : rw->in_est;
	rw->in_est -= dec;
	mem_uncharge(b, a, dec);
	if (wire > BE_BUF_BLOAT)
		be->bloated = 1;
	if (rw->set_done) {
		/* A later result set: PQexec answers with the last one, unless
		 * an earlier one went out already. */
		if (rw->streamed || !a) {
			PQclear(x);
			return;
		}
		rows_clear(rw);
		rw->set_done = 0;
	}
	if (!a || rw->too_large) {	/* nobody to send them to */
		PQclear(x);
		return;
	}
	if (size >= chunk_size(a)) {
		/* A large row goes alone, straight from libpq's result. */
		rows_flush(b, be, a, be->req->id, x);
		if (!rw->streamed)
			b->st.c.streamed++;
		rw->streamed = 1;
		if (agent_send_rows(b, a, be->req->id, x, NULL, 0, 1) < 0)
			rw->too_large = 1;
		rows_backpressure(b, be);
		return;
	}
	if (rows_grow(b, be, size) < 0) {
		PQclear(x);
		agent_fail(b, a, DOOM_RESP_NOMEM);
		return;
	}
	p = rw->buf + rw->len;
	for (uint32_t i = 0; i < nf; i++) {
		uint32_t len = (uint32_t)PQgetlength(x, 0, (int)i);

		if (PQgetisnull(x, 0, (int)i)) {
			memcpy(p, &(uint32_t){ RESP_NULL }, 4);
			p += 4;
			continue;
		}
		memcpy(p, &len, 4);
		memcpy(p + 4, PQgetvalue(x, 0, (int)i), len);
		p[4 + len] = '\0';
		p += 5 + (uint64_t)len;
	}
	rw->len += size;
	rw->n++;
	rw->nfields = nf;
	if (rw->len >= chunk_size(a)) {
		rows_flush(b, be, a, be->req->id, x);
		rows_backpressure(b, be);
	}
	PQclear(x);
}

void rows_keep(struct broker *b, struct backend *be, PGresult *x)
{
	struct rows *rw = &be->rows;

	(void)b;
	if (PQresultStatus(x) == PGRES_FATAL_ERROR) {
		rows_clear(rw);	/* an error wins, and voids rows sent ahead */
	} else if (rw->set_done) {
		/* x replaces the result set before it, and that one's rows */
		if (rw->streamed) {
			PQclear(x);
			return;
		}
		rows_clear(rw);
	}
	rw->set_done = 1;
	exec_keep_result(be, x);
}

void rows_respond(struct broker *b, struct backend *be, struct agent *a, struct request *r,
		  PGresult *res)
{
	struct rows *rw = &be->rows;
	int ok = result_ok(res);

	if (rw->too_large) {
		PQclear(res);
		agent_respond_error(b, a, r->id, "PB004",
				    "result too large to deliver (a row over 2 GiB)");
		return;
	}
	if (ok && (r->flags & REQ_CHUNKED)) {
		/* Every row ahead of the final response, which has none; also
		 * rows libpq gathered itself (single-row mode did not apply). */
		PGresult *own = NULL;
		uint8_t *none = malloc(1);

		rows_flush(b, be, a, r->id, res);
		if (PQntuples(res) > 0 && !(own = PQcopyResult(res, PG_COPYRES_ATTRS |
								    PG_COPYRES_TUPLES)))
			goto nomem;
		if (!none)
			goto nomem;
		if (own && agent_send_rows(b, a, r->id, own, NULL, 0, 1) < 0) {
			free(none);
			PQclear(res);
			agent_respond_error(b, a, r->id, "PB004",
					    "result too large to deliver (over 2 GiB)");
			return;
		}
		agent_respond_rows(b, a, r->id, res, none, 0, 0);
		return;
nomem:
		PQclear(own);
		free(none);
		PQclear(res);
		agent_fail(b, a, DOOM_RESP_NOMEM);
		return;
	}
	if (ok && rw->n) {
		uint8_t *rows = rw->buf;

		mem_uncharge(b, a, rw->cap);
		rw->buf = NULL;
		agent_respond_rows(b, a, r->id, res, rows, rw->len, rw->n);
		rw->len = rw->cap = 0;
		rw->n = 0;
		return;
	}
	agent_respond(b, a, r->id, res);
}

void rows_reset(struct broker *b, struct backend *be, struct agent *a)
{
	struct rows *rw = &be->rows;

	mem_uncharge(b, a, rw->cap + rw->in_est);
	free(rw->buf);
	memset(rw, 0, sizeof(*rw));
	if (be->paused)
		mem_unpause(be);
}
