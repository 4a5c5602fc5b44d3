/* libpgbroker: the agent side of the channel. Requests go into the
 * request ring as frames and ring the broker's bell; responses are read
 * back frame by frame. Blocking waits are futex sleeps in bounded slices;
 * a slice that ends without an answer checks that the broker is still
 * there. */
#include "clock.h"
#include "pgbroker.h"
#include "internal.h"
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "futex.h"
#include "proto.h"

#define WAIT_SLICE_NS (250 * 1000000L)

static void rowparts_free(struct rowparts *rp)
{
	for (uint32_t i = 0; i < rp->n; i++)
		pgb_clear(rp->part[i]);
	free(rp->part);
	free(rp);
}

void pgbi_part_drop(pgb_conn *c)
{
	chan_rx_reset(&c->part);
	pgbi_copy_drop(c);
	while (c->rowparts) {
		struct rowparts *rp = c->rowparts;

		c->rowparts = rp->next;
		rowparts_free(rp);
	}
}

static struct rowparts **rowparts_find(pgb_conn *c, uint32_t id)
{
	struct rowparts **pp = &c->rowparts;

	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

/* A rows message r for id, kept until its final response. 0, or -1 out of
 * memory or when its columns differ from the ones before (r is freed). */
static int rowparts_add(pgb_conn *c, uint32_t id, pgb_result *r)
{
	struct rowparts **pp = rowparts_find(c, id), *rp = *pp;

	if (!rp) {
		rp = calloc(1, sizeof(*rp));
		if (!rp)
			goto fail;
		rp->id = id;
		*pp = rp;
	}
	if (rp->n && rp->part[0]->v.head.nfields != r->v.head.nfields)
		goto fail;
	if (rp->n == rp->cap) {
		uint32_t cap = rp->cap ? 2 * rp->cap : 8;
		pgb_result **p = realloc(rp->part, cap * sizeof(*p));

		if (!p)
			goto fail;
		rp->part = p;
		rp->cap = cap;
	}
	rp->part[rp->n++] = r;
	rp->rows += r->v.head.ntuples;
	return 0;
fail:
	pgb_clear(r);
	return -1;
}

/* The final response fin for id: the rows sent ahead of it come first.
 * A failed fin voids them. */
static pgb_result *rowparts_join(pgb_conn *c, uint32_t id, pgb_result *fin)
{
	struct rowparts **pp = rowparts_find(c, id), *rp = *pp;
	uint64_t nf, total, at = 0;
	const char **vals;
	uint32_t *lens;
	uint8_t **blobs;

	if (!rp)
		return fin;
	*pp = rp->next;
	if (!fin->blob || !fin->v.head.ok) {
		rowparts_free(rp);
		return fin;
	}
	nf = fin->v.head.nfields;
	total = rp->rows + fin->v.head.ntuples;
	if (nf != rp->part[0]->v.head.nfields || total > INT32_MAX) {
		rowparts_free(rp);
		pgb_clear(fin);
		return pgbi_local_error(nf ? PGB_SQLSTATE_TOO_LARGE : PGB_SQLSTATE_BAD_REQUEST,
				   nf ? "result of more rows than a pgb_result holds: send it with "
					"PGB_CHUNKED"
				      : "malformed response from broker (rows of another shape)");
	}
	vals = malloc(sizeof(*vals) * (total * nf + 1));
	lens = malloc(sizeof(*lens) * (total * nf + 1));
	blobs = malloc(sizeof(*blobs) * rp->n);
	if (!vals || !lens || !blobs) {
		free(vals);
		free(lens);
		free(blobs);
		rowparts_free(rp);
		pgb_clear(fin);
		return pgbi_local_error(PGB_SQLSTATE_TOO_LARGE, "out of memory for a result");
	}
	for (uint32_t i = 0; i < rp->n; i++) {
		pgb_result *p = rp->part[i];
		uint64_t cells = (uint64_t)p->v.head.ntuples * nf;

		memcpy(vals + at, p->vals, cells * sizeof(*vals));
		memcpy(lens + at, p->lens, cells * sizeof(*lens));
		at += cells;
		blobs[i] = p->blob;	/* vals point into it: it stays */
		p->blob = NULL;
		pgb_clear(p);
	}
	memcpy(vals + at, fin->vals, (uint64_t)fin->v.head.ntuples * nf * sizeof(*vals));
	memcpy(lens + at, fin->lens, (uint64_t)fin->v.head.ntuples * nf * sizeof(*lens));
	free(fin->vals);
	free(fin->lens);
	fin->vals = vals;
	fin->lens = lens;
	fin->blobs = blobs;
	fin->nblobs = rp->n;
	fin->v.head.ntuples = (uint32_t)total;
	free(rp->part);
	free(rp);
	return fin;
}



/* Wake the broker if it sleeps on our channel: the futex word its
 * io_uring loop waits on, or the eventfd its epoll loop polls. */
void pgbi_notify_broker(pgb_conn *c)
{
	if (!chan_bell_ring(&c->chan->broker_bell, &c->chan->broker_armed))
		return;
	if (c->bfd < 0) {
		futex_wake(&c->chan->broker_bell);
	} else {
		static const uint64_t one = 1;

		(void)!write(c->bfd, &one, sizeof(one));
	}
}

/* 1 when the broker has closed its end of the registration socket. */
int pgbi_broker_gone(pgb_conn *c)
{
	struct pollfd p = { .fd = c->sock, .events = POLLRDHUP };
	char buf[64];

	if (chan_closing(c->chan))
		return 1;
	/* POLLIN alone is a wake-up byte (REG_F_SOCK_WAKE); its end is not. */
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
		return 1;
	return recv(c->sock, buf, sizeof(buf), MSG_DONTWAIT | MSG_PEEK) == 0;
}

enum wait_for { WAIT_RESPONSE, WAIT_SPACE };

/* Waiting for request space ends on a response too: the broker may be
 * waiting for us to make room in the response ring before it reads on. */
static int wait_done(pgb_conn *c, enum wait_for what, uint32_t need)
{
	if (what == WAIT_RESPONSE)
		return ring_has_data(&c->resp);
	return ring_space(&c->req) >= (int64_t)need || ring_has_data(&c->resp);
}

/* Spin briefly for an answer about to arrive before paying for a futex
 * sleep and wake-up; the budget adapts: it grows while spins succeed and
 * halves when they fail, so a loaded machine (answers take longer than a
 * spin) stops spinning and leaves the CPU to PostgreSQL and the broker. */
static int spin_for_response(pgb_conn *c)
{
	int64_t start, limit = c->spin_ns;

	if (limit < SPIN_MIN_NS) {
		/* Now and then try again, in case the load went down. */
		if (++c->spin_skips < 64)
			return 0;
		c->spin_skips = 0;
		limit = SPIN_MIN_NS;
	}
	start = clock_ns();
	do {
		for (int i = 0; i < 64; i++) {
			if (ring_has_data(&c->resp)) {
				c->spin_ns = c->spin_ns * 2 + SPIN_MIN_NS;
				if (c->spin_ns > SPIN_MAX_NS)
					c->spin_ns = SPIN_MAX_NS;
				return 1;
			}
			__builtin_ia32_pause();
		}
	} while (clock_ns() - start < limit);
	c->spin_ns /= 2;
	return 0;
}

/* Sleep until the broker published a response (or freed request space).
 * Returns 0, or -1 when the broker is gone (the connection is then bad). */
static int wait_broker(pgb_conn *c, enum wait_for what, uint32_t need)
{
	struct chan_shm *ch = c->chan;

	if (what == WAIT_RESPONSE && spin_for_response(c))
		return 0;
	for (;;) {
		uint32_t v;

		if (wait_done(c, what, need))
			return 0;
		if (what == WAIT_SPACE)
			chan_want_space(&ch->req);
		v = chan_bell_arm(&ch->agent_sleeping, &ch->agent_bell);
		if (wait_done(c, what, need)) {
			chan_bell_disarm(&ch->agent_sleeping);
			continue;
		}
		int rc = futex_wait(&ch->agent_bell, v, WAIT_SLICE_NS);
		chan_bell_disarm(&ch->agent_sleeping);
		/* Check on EINTR too: a process that takes a signal more often
		 * than once a slice would never see a slice time out. */
		if ((rc == -ETIMEDOUT || rc == -EINTR) && pgbi_broker_gone(c)) {
			c->status = PGB_CONNECTION_BAD;
			pgbi_set_error(c, "broker gone");
			return -1;
		}
	}
}

int pgbi_wait_space(pgb_conn *c, uint32_t need)
{
	return wait_broker(c, WAIT_SPACE, need);
}

int pgbi_wait_response(pgb_conn *c)
{
	return wait_broker(c, WAIT_RESPONSE, 0);
}

pgb_result *pgbi_broken(pgb_conn *c, const char *why)
{
	c->status = PGB_CONNECTION_BAD;
	pgbi_set_error(c, "%s", why);
	return pgbi_local_error(PGB_SQLSTATE_NOT_CONNECTED, "%s", why);
}

/* The broker went away: the connection is bad. 1 when it said goodbye. */
int pgbi_mark_gone(pgb_conn *c)
{
	int closing = c->chan && chan_closing(c->chan);

	c->status = PGB_CONNECTION_BAD;
	pgbi_set_error(c, closing ? "broker shut down" : "broker gone");
	return closing;
}

pgb_result *pgbi_gone_error(pgb_conn *c)
{
	if (pgbi_mark_gone(c)) {
		/* Not PB005 (refused, never run): a statement already handed to
		 * the broker may have run before it closed. */
		return pgbi_local_error(PGB_SQLSTATE_BROKER_GONE,
				   "broker shut down before answering; the statement may or "
				   "may not have run");
	}
	return pgbi_local_error(PGB_SQLSTATE_BROKER_GONE, "broker gone: the pgbroker process exited");
}

int pgbi_drain_responses(pgb_conn *c);

/* Stream one request blob into the request ring, frame by frame. While
 * the ring is full, take in finished responses (like libpq reading while
 * it flushes): a broker whose response ring is full reads no requests. */
int pgbi_send_blob(pgb_conn *c, const uint8_t *blob, uint64_t total, uint32_t id)
{
	uint64_t off = 0;

	while (off < total) {
		struct frame_hdr h = { .type = FRAME_REQ, .id = id };
		int64_t n = chan_frame_next(&c->req, &h, total, off, NULL);

		if (n < 0)
			return -EPROTO;
		if (n == 0) {
			int rc;

			pgbi_notify_broker(c);
			if ((rc = pgbi_drain_responses(c)) < 0)
				return rc;
			if (wait_broker(c, WAIT_SPACE, c->ring_size / 4) < 0)
				return -EPIPE;
			continue;
		}
		ring_write(&c->req, FRAME_HDR, blob + off, (uint32_t)n);
		chan_frame_publish(&c->req, &h);
		off += (uint64_t)n;
		chan_space_ok(&c->chan->req);
		pgbi_notify_broker(c);
	}
	return 0;
}

/* Read the frames of the next response into one blob and build it. With
 * block == 0, returns NULL at once when nothing has arrived (or only part of
 * a response: the broker always finishes a response it has started, so we
 * then wait for the rest). */
pgb_result *pgbi_recv_next(pgb_conn *c, int block, uint32_t *id)
{
	*id = 0;
	for (;;) {
		struct frame_hdr fh;
		enum chan_rx_rc rc;
		pgb_result *r;

		int peeked = ring_peek(&c->resp, &fh);

		if (peeked > 0 && fh.type == FRAME_COPY_DATA) {
			int got = pgbi_copy_rx(c);

			if (got < 0)
				return pgbi_broken(c, "malformed COPY data from broker");
			if (chan_space_wanted(&c->chan->resp))
				pgbi_notify_broker(c);
			if (got > 0 && c->copy_wait)
				return NULL;	/* pgb_get_copy_data has a row */
			continue;
		}
		/* Only the frame just seen: one published since may be COPY data. */
		rc = peeked == 0 ? CHAN_RX_EMPTY
				 : chan_rx_frame(&c->part, &c->resp,
						CHAN_TYPE(FRAME_RESP) | CHAN_TYPE(FRAME_NOTIFY), 0,
						UINT64_MAX);

		switch (rc) {
		case CHAN_RX_EMPTY:
			if (!block)
				return NULL;
			if (wait_broker(c, WAIT_RESPONSE, 0) < 0) {
				pgbi_part_drop(c);
				return pgbi_gone_error(c);
			}
			continue;
		case CHAN_RX_PART:
		case CHAN_RX_DONE:
			break;
		case CHAN_RX_CORRUPT:
			return pgbi_broken(c, "response ring is corrupt");
		case CHAN_RX_TYPE:
			return pgbi_broken(c, "unexpected frame in the response ring");
		case CHAN_RX_NOMEM:
			return pgbi_broken(c, "out of memory for a response");
		case CHAN_RX_SHORT:
			return pgbi_broken(c, "response truncated");
		default:
			return pgbi_broken(c, "response frames out of order");
		}
		if (chan_space_wanted(&c->chan->resp))
			pgbi_notify_broker(c);
		if (rc != CHAN_RX_DONE)
			continue;
		if (c->part.type == FRAME_NOTIFY) {
			uint8_t *blob = chan_rx_take(&c->part);
			int bad = pgbi_notice_keep(c, blob, c->part.total);

			free(blob);
			if (bad)
				return pgbi_broken(c, "malformed notification from broker");
			continue;
		}
		*id = c->part.id;
		r = pgbi_build_result(chan_rx_take(&c->part), c->part.total);
		if (r && r->blob && (r->v.head.flags & RESP_ROWS)) {
			int chunked = pgbi_flight_chunked(c, *id);

			if (!r->v.head.ok || r->v.head.status != RESP_TUPLES_OK ||
			    (r->v.head.flags & RESP_MORE) || chunked < 0) {
				pgb_clear(r);
				return pgbi_broken(c, "malformed rows message from broker");
			}
			if (chunked)
				return r;
			if (rowparts_add(c, *id, r) < 0)
				return pgbi_broken(c, "out of memory for a result, or rows of "
						   "another shape");
			continue;
		}
		if (r) {
			c->in_txn = (r->v.head.flags & RESP_IN_TXN) != 0;
			pgbi_copy_track(c, *id, r);
		}
		if (r && !(r->v.head.flags & RESP_MORE))
			r = rowparts_join(c, *id, r);
		return r;
	}
}
