/* libpgbroker: COPY FROM STDIN and TO STDOUT on a connection (docs/copy.md).
 * COPY IN data goes out as FRAME_COPY_DATA frames, each a message of its
 * own, gathered to COPY_CHUNK bytes; COPY OUT rows come in chunks that the
 * response reader (chanio.c) hands here, one chunk kept at a time. */
#include "pgbroker.h"
#include "internal.h"
#include "conn.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "proto.h"

void pgbi_copy_drop(pgb_conn *c)
{
	chan_rx_reset(&c->crx);
	free(c->chunk);
	c->chunk = NULL;
	c->chunk_len = c->chunk_at = 0;
	free(c->cbuf);
	c->cbuf = NULL;
	c->clen = 0;
	c->copy = PGBI_COPY_NONE;
	c->copy_ended = 0;
}

int pgbi_copy_rx(pgb_conn *c)
{
	enum chan_rx_rc rc = chan_rx_frame(&c->crx, &c->resp, CHAN_TYPE(FRAME_COPY_DATA), 4,
						 UINT32_MAX);
	uint64_t at = 0, n;
	const uint8_t *row;
	uint32_t len;
	uint8_t *buf;
	int more;

	if (rc == CHAN_RX_PART)
		return 0;
	if (rc != CHAN_RX_DONE)
		return -1;
	n = c->crx.total;
	buf = chan_rx_take(&c->crx);
	while ((more = copy_chunk_next(buf, n, &at, &row, &len)) > 0)
		;
	if (more < 0) {
		free(buf);
		return -1;
	}
	if (c->copy != PGBI_COPY_OUT || c->crx.id != c->copy_id) {
		free(buf);	/* a COPY given up (pgb_get_result, pgb_reset) */
		return 1;
	}
	if (c->chunk && c->chunk_at < c->chunk_len) {
		/* rows left from before: they come first */
		uint64_t left = c->chunk_len - c->chunk_at;
		uint8_t *both = malloc(left + n);

		if (!both) {
			free(buf);
			return -1;
		}
		memcpy(both, c->chunk + c->chunk_at, left);
		memcpy(both + left, buf, n);
		free(buf);
		buf = both;
		n += left;
	}
	free(c->chunk);
	c->chunk = buf;
	c->chunk_len = n;
	c->chunk_at = 0;
	return 1;
}

/* A COPY starts with a response that is not the last (status COPY IN or
 * OUT) and ends with the last response of its id. */
void pgbi_copy_track(pgb_conn *c, uint32_t id, const pgb_result *r)
{
	pgb_exec_status st = pgb_result_status(r);
	int final = !(r->v.head.flags & RESP_MORE);

	if (!final && (st == PGB_COPY_IN || st == PGB_COPY_OUT)) {
		pgbi_copy_drop(c);
		c->copy = st == PGB_COPY_IN ? PGBI_COPY_IN : PGBI_COPY_OUT;
		c->copy_id = id;
		return;
	}
	if (c->copy && id == c->copy_id && final)
		c->copy_ended = 1;
}

/* 1 when c can go on with a COPY of this mode, else 0 (errmsg says why). */
static int copy_usable(pgb_conn *c, int mode)
{
	if (!c)
		return 0;
	if (pgbi_inherited(c)) {
		pgbi_set_error(c, "connection was opened by the parent process before fork(); "
				  "connect again in the child");
		return 0;
	}
	if (c->status != PGB_CONNECTION_OK)
		return 0;	/* errmsg says why already */
	if (c->copy != mode) {
		pgbi_set_error(c, "no COPY %s in progress",
			       mode == PGBI_COPY_IN ? "FROM STDIN" : "TO STDOUT");
		return 0;
	}
	return 1;
}

/* Send n bytes as frames of type, each a message of its own, so that the
 * broker forwards each as it comes. While the ring is full the answers
 * that arrive are stashed: the COPY's own final one among them means it
 * ended. 0, or -1 (errmsg). */
static int copy_send(pgb_conn *c, uint16_t type, const uint8_t *p, uint64_t n)
{
	uint64_t off = 0;

	while (off < n) {
		struct frame_hdr h = { .type = type, .id = c->copy_id };
		int64_t k = chan_frame_next(&c->req, &h, n - off, 0, NULL);
		int rc;

		if (k < 0) {
			pgb_clear(pgbi_broken(c, "request ring is corrupt"));
			return -1;
		}
		if (k == 0) {
			pgbi_notify_broker(c);
			if ((rc = pgbi_drain_responses(c)) < 0) {
				if (rc == -EPIPE)
					pgb_clear(pgbi_gone_error(c));
				return -1;
			}
			if (c->copy_ended) {
				pgbi_set_error(c, "the COPY has ended: its result waits for "
						  "pgb_get_result");
				return -1;
			}
			if (pgbi_wait_space(c, c->ring_size / 4) < 0)
				return -1;
			continue;
		}
		h.flags = FRAME_FIRST | FRAME_LAST;
		h.aux = (uint32_t)k;
		ring_write(&c->req, FRAME_HDR, p + off, (uint32_t)k);
		chan_frame_publish(&c->req, &h);
		off += (uint64_t)k;
		chan_space_ok(&c->chan->req);
		pgbi_notify_broker(c);
	}
	return 0;
}

static int copy_send_buffered(pgb_conn *c)
{
	uint32_t n = c->clen;

	c->clen = 0;
	return n ? copy_send(c, FRAME_COPY_DATA, c->cbuf, n) : 0;
}

PGB_API int pgb_put_copy_data(pgb_conn *c, const char *buf, int len)
{
	if (!copy_usable(c, PGBI_COPY_IN))
		return -1;
	if (len < 0 || (len > 0 && !buf)) {
		pgbi_set_error(c, "pgb_put_copy_data: bad buffer or length %d", len);
		return -1;
	}
	if (c->copy_ended) {
		pgbi_set_error(c, "the COPY has ended: its result waits for pgb_get_result");
		return -1;
	}
	/* Small pieces (a row at a time) gather into one frame. */
	if (c->clen + (uint64_t)len <= COPY_CHUNK) {
		if (!c->cbuf && !(c->cbuf = malloc(COPY_CHUNK))) {
			pgbi_set_error(c, "out of memory for COPY data");
			return -1;
		}
		if (len)
			memcpy(c->cbuf + c->clen, buf, (size_t)len);
		c->clen += (uint32_t)len;
		if (c->clen < COPY_CHUNK)
			return 1;
		return copy_send_buffered(c) < 0 ? -1 : 1;
	}
	if (copy_send_buffered(c) < 0)
		return -1;
	if ((uint32_t)len < COPY_CHUNK)
		return pgb_put_copy_data(c, buf, len);
	return copy_send(c, FRAME_COPY_DATA, (const uint8_t *)buf, (uint64_t)len) < 0 ? -1 : 1;
}

PGB_API int pgb_put_copy_end(pgb_conn *c, const char *errmsg)
{
	uint8_t end[2 + COPY_END_MSG_MAX];
	int rc;

	if (!copy_usable(c, PGBI_COPY_IN))
		return -1;
	if (c->copy_ended) {
		pgbi_set_error(c, "the COPY has ended: its result waits for pgb_get_result");
		c->copy = PGBI_COPY_NONE;
		return -1;
	}
	/* The data first, then the end, in one ring: the broker keeps the order. */
	rc = copy_send_buffered(c);
	if (rc == 0) {
		copy_end_encode(end, errmsg);
		rc = copy_send(c, FRAME_COPY_END, end, copy_end_len(errmsg));
	}
	free(c->cbuf);
	c->cbuf = NULL;
	c->clen = 0;
	c->copy = PGBI_COPY_NONE;
	if (rc < 0 || c->copy_ended || c->status != PGB_CONNECTION_OK)
		return -1;
	return 1;
}

/* The next row of the chunk kept, as the caller's copy: its length, or -1
 * when none is left, -2 out of memory. */
static int copy_take_row(pgb_conn *c, char **buf)
{
	const uint8_t *row;
	uint32_t len;
	char *out;

	if (!c->chunk || copy_chunk_next(c->chunk, c->chunk_len, &c->chunk_at, &row, &len) <= 0) {
		free(c->chunk);
		c->chunk = NULL;
		c->chunk_len = c->chunk_at = 0;
		return -1;
	}
	out = malloc((size_t)len + 1);
	if (!out) {
		c->chunk_at -= 4 + (uint64_t)len;	/* it stays for the next call */
		pgbi_set_error(c, "out of memory for a COPY row");
		return -2;
	}
	memcpy(out, row, len);
	out[len] = '\0';
	*buf = out;
	return (int)len;
}

PGB_API int pgb_get_copy_data(pgb_conn *c, char **buf, int async)
{
	if (buf)
		*buf = NULL;
	if (!buf) {
		if (c)
			pgbi_set_error(c, "pgb_get_copy_data: buf is NULL");
		return -2;
	}
	if (!copy_usable(c, PGBI_COPY_OUT))
		return -2;
	for (;;) {
		int n = copy_take_row(c, buf), was_armed = 0, signalled = 0;
		char wake[64];
		ssize_t got;

		if (n != -1)
			return n;
		if (c->copy_ended) {
			/* pgb_get_result gives the final result (stashed) */
			c->copy = PGBI_COPY_NONE;
			c->copy_ended = 0;
			return -1;
		}
		if (async) {
			/* Drain the wake-up bytes first, then look, as
			 * pgb_try_result: a chunk published after the look finds
			 * fd_armed set and signals the socket again. */
			was_armed = chan_fd_armed(c->chan);
			got = recv(c->sock, wake, sizeof(wake), MSG_DONTWAIT);
			signalled = got > 0;
			if (got == 0) {
				pgbi_mark_gone(c);	/* end of file: the broker went away */
				return -2;
			}
		}
		/* What has arrived: a chunk stops it, answers are stashed. */
		c->copy_wait = 1;
		n = pgbi_drain_responses(c);
		c->copy_wait = 0;
		if (n < 0)
			return -2;
		if (c->chunk || c->copy_ended)
			continue;
		if (async) {
			chan_fd_arm(c->chan);
			if (ring_has_data(&c->resp))
				continue;
			if (was_armed && !signalled && pgbi_broker_gone(c)) {
				pgbi_mark_gone(c);
				return -2;
			}
			return 0;
		}
		if (!ring_has_data(&c->resp) && pgbi_wait_response(c) < 0)
			return -2;
	}
}

PGB_API void pgb_freemem(void *p)
{
	free(p);
}
