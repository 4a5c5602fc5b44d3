/* The channel's framing, shared by client and broker: the frame writer and
 * the reassembler (see chan.h). Everything read from the ring is the peer's
 * and untrusted: lengths and ids are checked before any byte is copied. */
#include <stdlib.h>

#include "chan.h"
#include "proto.h"

int64_t chan_frame_next(struct ring *r, struct frame_hdr *h, uint64_t total, uint64_t done,
			int64_t *space)
{
	uint32_t max_frame = r->size / 2;
	uint64_t left = total - done;
	int64_t free_bytes = ring_space(r);
	uint32_t room, n;

	if (space)
		*space = free_bytes;
	if (free_bytes < 0)
		return -1;
	room = ring_frame_room((uint32_t)free_bytes);
	if (room > max_frame)
		room = max_frame;
	/* Wait for a useful amount of room rather than dribbling. */
	if (room < left && room < r->size / 8)
		return 0;
	n = left < room ? (uint32_t)left : room;
	h->len = n;
	h->aux = (uint32_t)total;
	h->flags = (done == 0 ? FRAME_FIRST : 0) | (done + n == total ? FRAME_LAST : 0);
	return n;
}

void chan_frame_publish(struct ring *r, const struct frame_hdr *h)
{
	ring_write_hdr(r, h);
	ring_publish(r, h->len);
}

void chan_rx_reset(struct chan_rx *rx)
{
	free(rx->buf);
	rx->buf = NULL;
	rx->discard = 0;
}

uint8_t *chan_rx_take(struct chan_rx *rx)
{
	uint8_t *buf = rx->buf;

	rx->buf = NULL;
	return buf;
}

static enum chan_rx_rc rx_fail(struct chan_rx *rx, enum chan_rx_rc rc)
{
	chan_rx_reset(rx);
	return rc;
}

enum chan_rx_rc chan_rx_frame(struct chan_rx *rx, struct ring *r, uint32_t types, uint64_t min,
			      uint64_t max)
{
	struct frame_hdr h;
	int rc = ring_peek(r, &h);

	if (rc == 0)
		return CHAN_RX_EMPTY;
	if (rc < 0)
		return rx_fail(rx, CHAN_RX_CORRUPT);
	if (h.type >= 32 || !(types & CHAN_TYPE(h.type)))
		return rx_fail(rx, CHAN_RX_TYPE);
	if (h.flags & FRAME_FIRST) {
		if (rx->buf || rx->discard)
			return rx_fail(rx, CHAN_RX_NESTED);
		rx->id = h.id;
		rx->type = h.type;
		rx->total = h.aux;
		rx->got = 0;
		if (rx->total > max)
			rx->discard = 1;
		else if (rx->total < min)
			return CHAN_RX_LENGTH;
		else if (!(rx->buf = malloc(rx->total ? rx->total : 1)))
			return CHAN_RX_NOMEM;
	} else if ((!rx->buf && !rx->discard) || h.id != rx->id) {
		return rx_fail(rx, CHAN_RX_SEQUENCE);
	} else if (h.type != rx->type) {
		return rx_fail(rx, CHAN_RX_TYPE);
	}
	if (h.len > rx->total - rx->got)
		return rx_fail(rx, CHAN_RX_LONG);
	if (rx->buf)
		ring_read(r, 0, rx->buf + rx->got, h.len);
	rx->got += h.len;
	ring_consume(r, &h);
	if (!(h.flags & FRAME_LAST))
		return CHAN_RX_PART;
	if (rx->got != rx->total)
		return rx_fail(rx, CHAN_RX_SHORT);
	if (rx->discard) {
		rx->discard = 0;
		return CHAN_RX_DROPPED;
	}
	return CHAN_RX_DONE;
}
