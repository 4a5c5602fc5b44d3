/* Unit tests for common/chan.c: the frame writer and the reassembler that
 * client and broker share, and the rules a hostile peer can break. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "proto.h"

#define SIZE 1024u

struct pair {
	struct ring_ctl ctl;
	uint8_t data[SIZE];
	struct ring w, r;
	struct chan_rx rx;
};

static void pair_init(struct pair *p, uint32_t start)
{
	memset(p, 0, sizeof(*p));
	ring_init(&p->w, &p->ctl, p->data, SIZE);
	ring_init(&p->r, &p->ctl, p->data, SIZE);
	p->w.pos = p->w.peer = p->r.pos = p->r.peer = start;
	p->ctl.tail = p->ctl.head = start;
}

/* One raw frame, as a peer may write it. */
static void put(struct pair *p, uint16_t type, uint16_t flags, uint32_t id, uint32_t aux,
		const void *payload, uint32_t len)
{
	struct frame_hdr h = { .len = len, .type = type, .flags = flags, .id = id, .aux = aux };

	ring_put(&p->w, &h, payload);
}

Test(chan, message_round_trips_in_frames_of_at_most_half_the_ring)
{
	static uint8_t msg[3000];
	struct pair p;
	uint64_t off = 0;
	int frames = 0;

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7);
	pair_init(&p, 0xfffffe00u);	/* the positions wrap on the way */
	while (off < sizeof(msg)) {
		struct frame_hdr h = { .type = FRAME_RESP, .id = 5 };
		int64_t n = chan_frame_next(&p.w, &h, sizeof(msg), off, NULL);

		cr_assert_gt(n, 0);
		cr_assert_leq(n, SIZE / 2);
		cr_assert_eq(h.flags & FRAME_FIRST, off == 0 ? FRAME_FIRST : 0);
		ring_write(&p.w, FRAME_HDR, msg + off, (uint32_t)n);
		chan_frame_publish(&p.w, &h);
		off += (uint64_t)n;
		frames++;
		cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_RESP), 0, UINT64_MAX),
			     off == sizeof(msg) ? CHAN_RX_DONE : CHAN_RX_PART);
	}
	cr_assert_geq(frames, 6);
	uint8_t *got = chan_rx_take(&p.rx);
	cr_assert_eq(p.rx.total, sizeof(msg));
	cr_assert_eq(p.rx.id, 5);
	cr_assert_eq(memcmp(got, msg, sizeof(msg)), 0);
	free(got);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_RESP), 0, UINT64_MAX), CHAN_RX_EMPTY);
}

Test(chan, writer_waits_for_a_useful_amount_of_room)
{
	static uint8_t msg[SIZE];
	struct pair p;
	struct frame_hdr h = { .type = FRAME_REQ, .id = 1 };
	int64_t space;

	pair_init(&p, 0);
	/* fill all but 96 bytes: less than an eighth of the ring */
	put(&p, FRAME_REQ, FRAME_FIRST | FRAME_LAST, 9, SIZE - 96 - FRAME_HDR, msg,
	    SIZE - 96 - FRAME_HDR);
	cr_assert_eq(chan_frame_next(&p.w, &h, 500, 0, &space), 0);
	cr_assert_eq(space, 96);
	/* but a message that fits is sent at once */
	cr_assert_eq(chan_frame_next(&p.w, &h, 64, 0, NULL), 64);
	cr_assert_eq(h.flags, FRAME_FIRST | FRAME_LAST);
	/* and an impossible consumer head is corruption */
	p.ctl.head = 12345;
	cr_assert_lt(chan_frame_next(&p.w, &h, 64, 0, NULL), 0);
}

Test(chan, oversized_message_is_dropped_whole_and_the_next_one_read)
{
	static uint8_t big[400], small[40];
	struct pair p;

	memset(small, 'x', sizeof(small));
	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_FIRST, 3, sizeof(big), big, 200);
	put(&p, FRAME_REQ, FRAME_LAST, 3, sizeof(big), big + 200, 200);
	put(&p, FRAME_REQ, FRAME_FIRST | FRAME_LAST, 4, sizeof(small), small, sizeof(small));
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 16, 100), CHAN_RX_PART);
	cr_assert_null(p.rx.buf);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 16, 100), CHAN_RX_DROPPED);
	cr_assert_eq(p.rx.id, 3);
	cr_assert_eq(p.rx.total, sizeof(big));
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 16, 100), CHAN_RX_DONE);
	uint8_t *got = chan_rx_take(&p.rx);
	cr_assert_eq(p.rx.id, 4);
	cr_assert_eq(memcmp(got, small, sizeof(small)), 0);
	free(got);
}

/* Each broken rule, from a fresh reassembler. */
Test(chan, broken_framing_is_reported_and_nothing_kept)
{
	static uint8_t b[64];
	struct pair p;

	pair_init(&p, 0);
	put(&p, FRAME_RESP, FRAME_FIRST | FRAME_LAST, 1, 32, b, 32);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_TYPE);

	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_FIRST | FRAME_LAST, 1, 8, b, 8);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 16, 100), CHAN_RX_LENGTH);

	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_FIRST, 1, 64, b, 32);
	put(&p, FRAME_REQ, FRAME_FIRST, 2, 64, b, 32);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_PART);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_NESTED);
	cr_assert_null(p.rx.buf);

	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_FIRST, 1, 64, b, 32);
	put(&p, FRAME_REQ, FRAME_LAST, 2, 64, b, 32);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_PART);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_SEQUENCE);
	cr_assert_null(p.rx.buf);

	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_LAST, 1, 64, b, 32);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_SEQUENCE);

	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_FIRST, 1, 40, b, 32);
	put(&p, FRAME_REQ, FRAME_LAST, 1, 40, b, 32);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_PART);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_LONG);
	cr_assert_null(p.rx.buf);

	pair_init(&p, 0);
	put(&p, FRAME_REQ, FRAME_FIRST | FRAME_LAST, 1, 64, b, 32);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_SHORT);
	cr_assert_null(p.rx.buf);

	pair_init(&p, 0);
	p.ctl.tail = 8;	/* not on a frame boundary */
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, CHAN_TYPE(FRAME_REQ), 0, 100), CHAN_RX_CORRUPT);
}

/* A reader of several types learns each message's type; a message whose
 * frames change type is refused. */
Test(chan, several_types_and_no_type_change_inside_a_message)
{
	struct pair p;
	uint32_t both = CHAN_TYPE(FRAME_RESP) | CHAN_TYPE(FRAME_NOTIFY);

	pair_init(&p, 0);
	put(&p, FRAME_NOTIFY, FRAME_FIRST | FRAME_LAST, 0, 3, "abc", 3);
	put(&p, FRAME_RESP, FRAME_FIRST | FRAME_LAST, 7, 2, "de", 2);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, both, 0, 100), CHAN_RX_DONE);
	cr_expect_eq(p.rx.type, FRAME_NOTIFY);
	free(chan_rx_take(&p.rx));
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, both, 0, 100), CHAN_RX_DONE);
	cr_expect_eq(p.rx.type, FRAME_RESP);
	cr_expect_eq(p.rx.id, 7u);
	free(chan_rx_take(&p.rx));
	/* a type outside the set */
	put(&p, FRAME_REQ, FRAME_FIRST | FRAME_LAST, 1, 1, "x", 1);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, both, 0, 100), CHAN_RX_TYPE);
	pair_init(&p, 0);
	put(&p, FRAME_RESP, FRAME_FIRST, 3, 4, "ab", 2);
	put(&p, FRAME_NOTIFY, FRAME_LAST, 3, 4, "cd", 2);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, both, 0, 100), CHAN_RX_PART);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, both, 0, 100), CHAN_RX_TYPE);
	cr_expect_null(p.rx.buf);
	pair_init(&p, 0);
	put(&p, 40, FRAME_FIRST | FRAME_LAST, 3, 1, "a", 1);
	cr_assert_eq(chan_rx_frame(&p.rx, &p.r, 0xffffffffu, 0, 100), CHAN_RX_TYPE);
}

Test(chan, need_space_handshake)
{
	struct ring_ctl c = { 0 };

	cr_assert_not(chan_space_wanted(&c));
	chan_want_space(&c);
	cr_assert(chan_space_wanted(&c));
	chan_space_ok(&c);
	cr_assert_not(chan_space_wanted(&c));
}

Test(chan, bell_rings_only_a_sleeper)
{
	uint32_t bell = 7, sleeping = 0;

	cr_assert_not(chan_bell_ring(&bell, &sleeping));
	cr_assert_eq(bell, 7);
	cr_assert_eq(chan_bell_arm(&sleeping, &bell), 7);
	cr_assert(chan_bell_ring(&bell, &sleeping));
	cr_assert_eq(bell, 8);
	chan_bell_disarm(&sleeping);
	cr_assert_not(chan_bell_ring(&bell, &sleeping));
}
