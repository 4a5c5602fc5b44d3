/* COPY streamed through the rings both ways (see copy.h, docs/copy.md).
 * Flow control, in short: COPY FROM STDIN takes a frame from the agent only
 * when libpq's output is flushed, so libpq never buffers more than one
 * frame; COPY TO STDOUT reads rows from libpq only while the agent has less
 * than COPY_QUEUE_MAX bytes queued, and polls the backend's socket only
 * then, so PostgreSQL waits on TCP instead of the broker's memory. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "backend.h"
#include "copy.h"
#include "exec.h"
#include "log.h"
#include "response.h"

/* Read on at the end of this pass (not from under agent_flush or drain). */
static void copy_kick(struct broker *b, struct backend *be)
{
	if (be->copy_due)
		return;
	be->copy_due = 1;
	list_add_tail(&b->copyq, &be->copy_link);
}

static void copy_arm(struct broker *b, struct backend *be)
{
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

/* Flush be after a put; 0, or -1 when it broke (closed). */
static int copy_flush(struct broker *b, struct backend *be)
{
	int rc = be_flush(be);

	if (rc < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return -1;
	}
	be->flushing = rc == 1;
	copy_arm(b, be);
	return 0;
}

/* End COPY IN with the server: errmsg NULL finishes it, else fails it. 0,
 * or -1 when the backend broke (closed). The results come by drain. */
static int copy_in_end(struct broker *b, struct backend *be, const char *errmsg)
{
	be->copy_in = 0;
	if (PQputCopyEnd(be->pg, errmsg) != 1) {
		be_close(b, be, CLOSE_BROKEN);
		return -1;
	}
	if (copy_flush(b, be) < 0)
		return -1;
	/* The server may have answered already (an error mid-COPY is read but
	 * not parsed while libpq is in COPY IN): no poll would report it. */
	copy_kick(b, be);
	return 0;
}

int copy_begin(struct broker *b, struct backend *be, PGresult *x)
{
	struct request *r = be->req;
	struct agent *a = r ? r->agent : NULL;
	int in = PQresultStatus(x) == PGRES_COPY_IN;

	if (!r || !a || r->copied || r->nsub) {
		/* Not relayed: a second COPY of one string (PB009 at the end),
		 * or nobody to take it. */
		PQclear(x);
		if (r && a)
			be->unsupported = 1;
		if (!in) {
			be->copy_out = 1;
			return 0;
		}
		if (PQputCopyEnd(be->pg, a ? "only one COPY per statement string is relayed by "
					     "pgbroker" : "the agent disconnected") != 1) {
			be_close(b, be, CLOSE_BROKEN);
			return 1;
		}
		return copy_flush(b, be) < 0;
	}
	r->copied = 1;
	a->resp_more = 1;
	agent_respond(b, a, r->id, x);
	a->resp_more = 0;
	if (!in) {
		be->copy_out = 1;
		return 0;
	}
	be->copy_in = 1;
	copy_arm(b, be);
	return 1;
}

/* Queue the rows gathered so far to a. */
static void chunk_send(struct broker *b, struct backend *be, struct agent *a, uint32_t id)
{
	uint8_t *chunk = be->chunk;
	uint32_t len = be->chunk_len;

	be->chunk = NULL;
	be->chunk_len = 0;
	if (chunk)
		agent_respond_chunk(b, a, id, chunk, len);
}

/* Add one row to the chunk being gathered; a full chunk goes to a. -1 out
 * of memory. */
static int chunk_put(struct broker *b, struct backend *be, struct agent *a, uint32_t id,
		     const char *row, uint32_t n)
{
	if (be->chunk && be->chunk_len + 4ull + n > COPY_CHUNK)
		chunk_send(b, be, a, id);
	if (!be->chunk) {
		be->chunk = malloc(n + 4ull > COPY_CHUNK ? n + 4ull : COPY_CHUNK);
		if (!be->chunk)
			return -1;
	}
	memcpy(be->chunk + be->chunk_len, &n, 4);
	memcpy(be->chunk + be->chunk_len + 4, row, n);
	be->chunk_len += 4 + n;
	if (be->chunk_len >= COPY_CHUNK)
		chunk_send(b, be, a, id);
	return 0;
}

enum copy_pump copy_out_pump(struct broker *b, struct backend *be)
{
	struct request *r = be->req;
	/* a second COPY of one string (unsupported) is read and dropped */
	struct agent *a = r && r->copied && !be->unsupported ? r->agent : NULL;

	be->copy_paused = 0;
	for (;;) {
		char *row;
		int n;

		if (a && a->doom)
			a = NULL;
		if (a && a->copy_queued >= COPY_QUEUE_MAX) {
			chunk_send(b, be, a, r->id);
			be->copy_paused = 1;
			return COPY_WAIT_AGENT;
		}
		n = PQgetCopyData(be->pg, &row, 1);
		if (n > 0) {
			if (a && chunk_put(b, be, a, r->id, row, (uint32_t)n) < 0) {
				agent_fail(b, a, DOOM_COPY_NOMEM);
				a = NULL;
			}
			PQfreemem(row);
			continue;
		}
		if (a)
			chunk_send(b, be, a, r->id);
		free(be->chunk);	/* the agent went meanwhile */
		be->chunk = NULL;
		be->chunk_len = 0;
		if (n == 0)
			return COPY_WAIT_INPUT;
		be->copy_out = 0;	/* -1 the end, -2 an error: the results say */
		return COPY_ENDED;
	}
}

void copy_sent(struct broker *b, struct agent *a, uint32_t n)
{
	struct request *r = a->running;
	struct list *pos, *tmp;

	a->copy_queued -= n;
	if (a->copy_queued > COPY_QUEUE_MAX / 2)
		return;
	/* The COPY is the agent's serial statement, or an independent one. */
	if (r && r->be && r->be->copy_paused && r->be->req == r) {
		copy_kick(b, r->be);
		return;
	}
	list_for_each_safe(pos, tmp, &a->active) {
		r = list_entry(pos, struct request, alink);
		if (r->be && r->be->copy_paused && r->be->req == r)
			copy_kick(b, r->be);
	}
}

/* The request of a's whose COPY IN runs under id, or NULL. */
static struct backend *copy_in_backend(struct agent *a, uint32_t id)
{
	struct request *r = a->running;
	struct list *pos, *tmp;

	if (!r || r->id != id) {
		r = NULL;
		list_for_each_safe(pos, tmp, &a->active) {
			struct request *x = list_entry(pos, struct request, alink);

			if (x->id == id) {
				r = x;
				break;
			}
		}
	}
	if (!r || !r->be || r->be->req != r || !r->be->copy_in || r->be->state != BE_BUSY)
		return NULL;
	return r->be;
}

static uint8_t *copy_scratch(struct broker *b, uint32_t n)
{
	if (n > b->copy_buf_size) {
		uint8_t *p = realloc(b->copy_buf, n);

		if (!p)
			return NULL;
		b->copy_buf = p;
		b->copy_buf_size = n;
	}
	return b->copy_buf;
}

int copy_in_frame(struct broker *b, struct agent *a, const struct frame_hdr *h,
		  enum agent_doom *why)
{
	struct backend *be;
	const char *errmsg;
	uint8_t *buf;
	int rc;

	if (a->rx.buf || a->rx.discard) {
		*why = DOOM_COPY_NESTED;
		return -1;
	}
	if (h->flags != (FRAME_FIRST | FRAME_LAST) || h->aux != h->len || h->len == 0 ||
	    (h->type == FRAME_COPY_END && h->len > 2 + COPY_END_MSG_MAX)) {
		*why = DOOM_COPY_FRAME;
		return -1;
	}
	be = copy_in_backend(a, h->id);
	if (be && h->type == FRAME_COPY_DATA && be->flushing) {
		/* One frame in libpq at a time: the agent waits (its ring fills). */
		a->copy_stalled = 1;
		return 0;
	}
	if (!be) {
		/* Its COPY is over (the backend failed, or the statement ended
		 * before the agent's data): the agent hears it from the result. */
		ring_consume(&a->req, h);
		return 1;
	}
	buf = copy_scratch(b, h->len);
	if (!buf) {
		*why = DOOM_COPY_NOMEM;
		return -1;
	}
	ring_read(&a->req, 0, buf, h->len);
	ring_consume(&a->req, h);
	if (h->type == FRAME_COPY_END) {
		if (copy_end_decode(buf, h->len, &errmsg) < 0) {
			*why = DOOM_COPY_FRAME;
			return -1;
		}
		copy_in_end(b, be, errmsg);
		return 1;
	}
	rc = PQputCopyData(be->pg, (const char *)buf, (int)h->len);
	if (rc != 1) {
		log_debug("backend %u: COPY data refused: %s", be->slot, PQerrorMessage(be->pg));
		be_close(b, be, CLOSE_BROKEN);
		return 1;
	}
	copy_flush(b, be);
	return 1;
}

/* The agent whose COPY IN runs on be, or NULL. */
static struct agent *copy_agent(struct backend *be)
{
	return be->req ? be->req->agent : NULL;
}

void copy_flushed(struct broker *b, struct backend *be)
{
	struct agent *a = copy_agent(be);

	if (!be->copy_in || !a || !a->copy_stalled)
		return;
	a->copy_stalled = 0;
	agent_unthrottle(b, a);
}

int copy_orphan(struct broker *b, struct backend *be)
{
	free(be->chunk);
	be->chunk = NULL;
	be->chunk_len = 0;
	if (be->copy_in) {
		log_info("agent gone mid-COPY FROM STDIN: ending it on backend %u (pid %d)",
			 be->slot, be->pg_pid);
		copy_in_end(b, be, "the agent disconnected during COPY FROM STDIN");
		return 1;
	}
	if (be->copy_out && be->copy_paused)
		copy_kick(b, be);	/* read on, dropping the rows */
	return 0;
}

void copy_forget(struct broker *b, struct backend *be)
{
	struct agent *a = copy_agent(be);

	if (be->copy_in && a && a->copy_stalled) {
		a->copy_stalled = 0;
		agent_unthrottle(b, a);
	}
	if (be->copy_due) {
		be->copy_due = 0;
		list_del(&be->copy_link);
	}
	free(be->chunk);
	be->chunk = NULL;
	be->chunk_len = 0;
	be->copy_in = be->copy_out = be->copy_paused = 0;
}

void copy_run(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->copyq))) {
		struct backend *be = list_entry(pos, struct backend, copy_link);

		be->copy_due = 0;
		if (be->state == BE_BUSY)
			exec_drain(b, be);
	}
}
