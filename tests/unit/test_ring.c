/* Unit tests for common/ring.c: framing, wrap-around of the payload and of
 * the u32 positions, space accounting, and a hostile peer's positions. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

/* One ring seen from both ends: a producer and a consumer sharing ctl and
 * data, as the agent and the broker do through shared memory. */
struct pair {
	struct ring_ctl ctl;
	uint8_t *data;
	struct ring prod;
	struct ring cons;
};

/* Both positions start at `start` (aligned): the ring behaves as if that
 * many bytes had already passed through it. data is malloc'd to the exact
 * size so that ASan sees any access outside the ring. */
static void pair_init(struct pair *p, uint32_t size, uint32_t start)
{
	memset(&p->ctl, 0, sizeof(p->ctl));
	p->data = malloc(size);
	cr_assert_not_null(p->data);
	memset(p->data, 0xAA, size);
	ring_init(&p->prod, &p->ctl, p->data, size);
	ring_init(&p->cons, &p->ctl, p->data, size);
	p->prod.pos = p->prod.peer = start;
	p->cons.pos = p->cons.peer = start;
	p->ctl.tail = p->ctl.head = start;
}

static void pair_free(struct pair *p)
{
	free(p->data);
	p->data = NULL;
}

static uint32_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic, good enough for test data */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Payload byte i of frame `id`: differs between frames and positions. */
static uint8_t pattern(uint32_t id, uint32_t i)
{
	return (uint8_t)(id * 131u + i * 7u + (i >> 8) + 1u);
}

static void fill(uint8_t *buf, uint32_t id, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		buf[i] = pattern(id, i);
}

/* Peek the next frame, check its header and payload against what
 * put_frame() wrote for `id`, consume it. */
static void expect_frame(struct pair *p, uint32_t id, uint32_t len)
{
	struct frame_hdr h;
	uint8_t *got = malloc(len + 1);

	cr_assert_not_null(got);
	cr_assert_eq(ring_has_data(&p->cons), 1, "id %u: no data", id);
	cr_assert_eq(ring_peek(&p->cons, &h), 1, "id %u: peek", id);
	cr_assert_eq(h.len, len, "id %u: len %u, want %u", id, h.len, len);
	cr_assert_eq(h.id, id);
	cr_assert_eq(h.type, (uint16_t)(id & 0xffff));
	cr_assert_eq(h.flags, (uint16_t)(id ^ 0x5a5a));
	cr_assert_eq(h.aux, ~id);
	ring_read(&p->cons, 0, got, len);
	for (uint32_t i = 0; i < len; i++)
		cr_assert_eq(got[i], pattern(id, i), "id %u len %u: byte %u is %u, want %u",
			     id, len, i, got[i], pattern(id, i));
	free(got);
	uint32_t before = p->cons.pos;
	ring_consume(&p->cons, &h);
	cr_assert_eq(p->cons.pos, before + FRAME_SPAN(len));
	cr_assert_eq(p->ctl.head, p->cons.pos);
}

static void put_frame(struct pair *p, uint32_t id, uint32_t len)
{
	struct frame_hdr h = {
		.len = len,
		.type = (uint16_t)(id & 0xffff),
		.flags = (uint16_t)(id ^ 0x5a5a),
		.id = id,
		.aux = ~id,
	};
	uint8_t *payload = malloc(len + 1);
	uint32_t before = p->prod.pos;

	cr_assert_not_null(payload);
	fill(payload, id, len);
	ring_put(&p->prod, &h, payload);
	free(payload);
	cr_assert_eq(p->prod.pos, before + FRAME_SPAN(len));
	cr_assert_eq(p->ctl.tail, p->prod.pos);
}

/* Overwrite the header of the frame the consumer would see next. */
static void scribble_len(struct pair *p, uint32_t len)
{
	struct frame_hdr h;
	uint8_t *at = p->data + (p->cons.pos & (p->cons.size - 1));

	memcpy(&h, at, sizeof(h));
	h.len = len;
	memcpy(at, &h, sizeof(h));
}

Test(ring, header_layout_and_span)
{
	static const struct {
		uint32_t len, span;
	} cases[] = {
		{ .len = 0, .span = 16 },   { .len = 1, .span = 32 },
		{ .len = 15, .span = 32 },  { .len = 16, .span = 32 },
		{ .len = 17, .span = 48 },  { .len = 32, .span = 48 },
		{ .len = 33, .span = 64 },  { .len = 240, .span = 256 },
		{ .len = 4095, .span = 4112 },
	};

	cr_assert_eq(sizeof(struct frame_hdr), FRAME_HDR);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(FRAME_SPAN(cases[i].len), cases[i].span, "len %u", cases[i].len);
	for (uint32_t len = 0; len < 1000; len++) {
		uint32_t s = FRAME_SPAN(len);

		cr_assert_eq(s % FRAME_ALIGN, 0, "len %u", len);
		cr_assert_geq(s, FRAME_HDR + len, "len %u", len);
		cr_assert_lt(s, FRAME_HDR + len + FRAME_ALIGN, "len %u", len);
	}
}

Test(ring, init_resets_positions)
{
	struct ring_ctl ctl = { 0 };
	uint8_t data[64];
	struct ring r;

	memset(&r, 0x55, sizeof(r));
	ring_init(&r, &ctl, data, sizeof(data));
	cr_assert_eq(r.ctl, &ctl);
	cr_assert_eq(r.data, data);
	cr_assert_eq(r.size, 64);
	cr_assert_eq(r.pos, 0);
	cr_assert_eq(r.peer, 0);
}

Test(ring, round_trip_one_frame)
{
	struct pair p;
	struct frame_hdr h = { .len = 5, .type = 2, .flags = 3, .id = 77, .aux = 99 };
	struct frame_hdr got;
	char buf[8] = { 0 };

	pair_init(&p, 256, 0);
	cr_assert_eq(ring_has_data(&p.cons), 0);
	cr_assert_eq(ring_peek(&p.cons, &got), 0);
	ring_put(&p.prod, &h, "hello");
	cr_assert_eq(p.ctl.tail, 32);
	cr_assert_eq(ring_has_data(&p.cons), 1);
	cr_assert_eq(ring_peek(&p.cons, &got), 1);
	cr_assert_eq(got.len, 5);
	cr_assert_eq(got.type, 2);
	cr_assert_eq(got.flags, 3);
	cr_assert_eq(got.id, 77);
	cr_assert_eq(got.aux, 99);
	cr_assert_eq(p.cons.peer, 32);
	ring_read(&p.cons, 0, buf, 5);
	cr_assert_str_eq(buf, "hello");
	memset(buf, 0, sizeof(buf));
	ring_read(&p.cons, 2, buf, 3);
	cr_assert_str_eq(buf, "llo");
	/* peeking again without consuming shows the same frame */
	cr_assert_eq(ring_peek(&p.cons, &got), 1);
	cr_assert_eq(got.id, 77);
	cr_assert_eq(ring_space(&p.prod), 256 - 32);
	ring_consume(&p.cons, &got);
	cr_assert_eq(p.ctl.head, 32);
	cr_assert_eq(ring_has_data(&p.cons), 0);
	cr_assert_eq(ring_peek(&p.cons, &got), 0);
	cr_assert_eq(ring_space(&p.prod), 256);
	pair_free(&p);
}

Test(ring, empty_frame)
{
	struct pair p;
	struct frame_hdr h = { .len = 0, .id = 1 }, got;

	pair_init(&p, 64, 0);
	ring_put(&p.prod, &h, NULL);
	cr_assert_eq(p.ctl.tail, FRAME_HDR);
	cr_assert_eq(ring_peek(&p.cons, &got), 1);
	cr_assert_eq(got.len, 0);
	cr_assert_eq(got.id, 1);
	ring_consume(&p.cons, &got);
	cr_assert_eq(p.ctl.head, FRAME_HDR);
	pair_free(&p);
}

/* Payload written piecewise with ring_write + ring_write_hdr + ring_publish,
 * as resp_emit does, across the end of the ring. */
Test(ring, piecewise_write_across_end)
{
	struct pair p;
	struct frame_hdr h = { .len = 40, .id = 9 }, got;
	uint8_t src[40], dst[40];

	pair_init(&p, 64, 48); /* header at 48..63, payload wraps to 0 */
	fill(src, 9, sizeof(src));
	ring_write_hdr(&p.prod, &h);
	ring_write(&p.prod, FRAME_HDR + 0, src, 3);
	ring_write(&p.prod, FRAME_HDR + 3, src + 3, 30);
	ring_write(&p.prod, FRAME_HDR + 33, src + 33, 7);
	/* not published yet: the consumer sees nothing */
	cr_assert_eq(ring_peek(&p.cons, &got), 0);
	ring_publish(&p.prod, 40);
	cr_assert_eq(p.ctl.tail, 48 + FRAME_SPAN(40));
	/* header did not wrap; payload starts at data[0] */
	cr_assert_eq(memcmp(p.data + 48, &h, FRAME_HDR), 0);
	cr_assert_eq(memcmp(p.data, src, 40), 0);
	cr_assert_eq(ring_peek(&p.cons, &got), 1);
	ring_read(&p.cons, 0, dst, 40);
	cr_assert_eq(memcmp(dst, src, 40), 0);
	/* partial reads straddling nothing and everything */
	memset(dst, 0, sizeof(dst));
	ring_read(&p.cons, 35, dst, 5);
	cr_assert_eq(memcmp(dst, src + 35, 5), 0);
	pair_free(&p);
}

/* A frame of every length at every aligned starting offset of the ring,
 * including payloads split across its end, for two start positions. */
Test(ring, every_offset_every_length)
{
	static const uint32_t size = 256;
	static const uint32_t bases[] = { 0, 0xFFFFFF00u };

	for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
		for (uint32_t off = 0; off < size; off += FRAME_ALIGN) {
			for (uint32_t len = 0; len <= size - FRAME_HDR; len++) {
				struct pair p;
				uint32_t id = off * 1000 + len;

				pair_init(&p, size, bases[b] + off);
				cr_assert_geq(ring_space(&p.prod), FRAME_SPAN(len));
				put_frame(&p, id, len);
				cr_assert_eq(ring_space(&p.prod), size - FRAME_SPAN(len));
				expect_frame(&p, id, len);
				cr_assert_eq(ring_space(&p.prod), size);
				cr_assert_eq(ring_peek(&p.cons, &(struct frame_hdr){ 0 }), 0);
				pair_free(&p);
			}
		}
	}
}

/* Exact bytes of a payload split across the end, checked in the raw data. */
Test(ring, payload_split_bytes_in_place)
{
	struct pair p;

	pair_init(&p, 128, 96);
	put_frame(&p, 5, 30); /* header 96..111, payload 112..127 then 0..13 */
	for (uint32_t i = 0; i < 16; i++)
		cr_assert_eq(p.data[112 + i], pattern(5, i));
	for (uint32_t i = 16; i < 30; i++)
		cr_assert_eq(p.data[i - 16], pattern(5, i));
	cr_assert_eq(p.data[14], 0xAA, "wrote past the payload");
	expect_frame(&p, 5, 30);
	pair_free(&p);
}

Test(ring, space_accounting)
{
	struct pair p;
	struct frame_hdr h;

	pair_init(&p, 256, 0);
	cr_assert_eq(ring_space(&p.prod), 256);
	put_frame(&p, 1, 0);   /* 16 */
	cr_assert_eq(ring_space(&p.prod), 240);
	put_frame(&p, 2, 17);  /* 48 */
	cr_assert_eq(ring_space(&p.prod), 192);
	put_frame(&p, 3, 100); /* 128 */
	cr_assert_eq(ring_space(&p.prod), 64);
	put_frame(&p, 4, 48);  /* 64: full */
	cr_assert_eq(ring_space(&p.prod), 0);
	cr_assert_eq(ring_frame_room(0), 0);
	/* the consumer frees space frame by frame; the producer sees it only
	 * after reloading head */
	expect_frame(&p, 1, 0);
	cr_assert_eq(ring_space(&p.prod), 16);
	cr_assert_eq(p.prod.peer, 16);
	expect_frame(&p, 2, 17);
	expect_frame(&p, 3, 100);
	cr_assert_eq(ring_space(&p.prod), 192);
	/* a frame of exactly the room available fills the ring again */
	put_frame(&p, 5, ring_frame_room(192));
	cr_assert_eq(ring_space(&p.prod), 0);
	expect_frame(&p, 4, 48);
	expect_frame(&p, 5, 176);
	cr_assert_eq(ring_space(&p.prod), 256);
	cr_assert_eq(ring_peek(&p.cons, &h), 0);
	pair_free(&p);
}

Test(ring, frame_room)
{
	static const struct {
		uint32_t space, room;
	} cases[] = {
		{ .space = 0, .room = 0 },     { .space = 1, .room = 0 },
		{ .space = 16, .room = 0 },    { .space = 17, .room = 0 },
		{ .space = 31, .room = 0 },    { .space = 32, .room = 16 },
		{ .space = 33, .room = 16 },   { .space = 47, .room = 16 },
		{ .space = 48, .room = 32 },   { .space = 256, .room = 240 },
		{ .space = 0xFFFFFFFFu, .room = 0xFFFFFFE0u },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(ring_frame_room(cases[i].space), cases[i].room, "space %u",
			     cases[i].space);
	/* the largest frame that fits: its span fits, one more byte does not */
	for (uint32_t s = 0; s < 4096; s++) {
		uint32_t room = ring_frame_room(s);

		cr_assert_eq(room % FRAME_ALIGN, 0, "space %u", s);
		if (room == 0) {
			cr_assert_lt(s, FRAME_HDR + FRAME_ALIGN, "space %u", s);
			continue;
		}
		cr_assert_leq(FRAME_SPAN(room), s, "space %u", s);
		cr_assert_gt(FRAME_SPAN(room + 1), s, "space %u", s);
	}
}

/* Producer and consumer interleaved at random with frames of random size,
 * so that frames start at every offset and the positions cross 2^32. */
static void stream(uint32_t size, uint32_t start, uint32_t frames, uint64_t seed)
{
	struct pair p;
	uint32_t next_put = 0, next_get = 0;
	uint32_t lens[64]; /* lengths in flight, indexed by id % 64 */
	uint32_t in_flight = 0;

	pair_init(&p, size, start);
	while (next_get < frames) {
		int64_t space = ring_space(&p.prod);

		cr_assert_geq(space, 0);
		cr_assert_leq(space, size);
		cr_assert_eq(space, (int64_t)size - (uint32_t)(p.prod.pos - p.ctl.head));
		uint32_t room = ring_frame_room((uint32_t)space);
		int produce = next_put < frames && room > 0 && in_flight < 64 &&
			      (in_flight == 0 || rng_next(&seed) % 3 != 0);

		if (produce) {
			uint32_t len = rng_next(&seed) % (room + 1);

			lens[next_put % 64] = len;
			put_frame(&p, next_put++, len);
			in_flight++;
		} else {
			cr_assert_gt(in_flight, 0, "stuck: space %lld", (long long)space);
			expect_frame(&p, next_get, lens[next_get % 64]);
			next_get++;
			in_flight--;
		}
	}
	cr_assert_eq(ring_has_data(&p.cons), 0);
	cr_assert_eq(ring_space(&p.prod), size);
	cr_assert_eq(p.prod.pos, p.cons.pos);
	pair_free(&p);
}

Test(ring, random_stream)
{
	stream(64, 0, 5000, 1);
	stream(256, 0, 5000, 2);
	stream(4096, 0, 5000, 3);
}

Test(ring, position_wraps_u32)
{
	/* start just below 2^32: positions cross zero within a few frames */
	stream(256, 0xFFFFFF00u, 5000, 4);
	stream(64, 0xFFFFFFF0u, 5000, 5);
	stream(4096, 0xFFFFF000u, 5000, 6);
}

Test(ring, position_wraps_u32_exact)
{
	struct pair p;
	struct frame_hdr h;

	pair_init(&p, 256, 0xFFFFFF00u);
	put_frame(&p, 1, 200); /* span 224: tail 0xFFFFFFE0 */
	cr_assert_eq(p.ctl.tail, 0xFFFFFFE0u);
	cr_assert_eq(ring_space(&p.prod), 32);
	expect_frame(&p, 1, 200);
	cr_assert_eq(ring_space(&p.prod), 256);
	put_frame(&p, 2, 100); /* span 128: tail crosses zero to 0x60 */
	cr_assert_eq(p.ctl.tail, 0x60u);
	cr_assert_eq(ring_space(&p.prod), 128);
	put_frame(&p, 3, 100);
	cr_assert_eq(ring_space(&p.prod), 0);
	expect_frame(&p, 2, 100);
	expect_frame(&p, 3, 100);
	cr_assert_eq(p.ctl.head, 0xE0u);
	cr_assert_eq(ring_space(&p.prod), 256);
	cr_assert_eq(ring_peek(&p.cons, &h), 0);
	/* hostile heads across the wrap: behind the last one, or past tail */
	p.ctl.head = 0xFFFFFFF0u;
	cr_assert_eq(ring_space(&p.prod), -1);
	p.ctl.head = 0xF0u;
	cr_assert_eq(ring_space(&p.prod), -1);
	p.ctl.head = 0xE0u;
	cr_assert_eq(ring_space(&p.prod), 256);
	/* hostile tails across the wrap */
	p.ctl.tail = 0xD0u; /* behind the consumer */
	cr_assert_eq(ring_peek(&p.cons, &h), -1);
	p.ctl.tail = 0xE0u + 256 + 16;
	cr_assert_eq(ring_peek(&p.cons, &h), -1);
	pair_free(&p);
}

Test(ring, hostile_head)
{
	static const uint32_t starts[] = { 0, 0x1000, 0xFFFFFF80u };

	for (size_t s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		struct pair p;
		uint32_t st = starts[s];

		pair_init(&p, 256, st);
		put_frame(&p, 1, 16); /* 32 */
		put_frame(&p, 2, 16); /* 64 */
		put_frame(&p, 3, 16); /* 96 */
		expect_frame(&p, 1, 16);
		cr_assert_eq(ring_space(&p.prod), 256 - 64);
		cr_assert_eq(p.prod.peer, st + 32);

		static const struct {
			int32_t delta; /* head relative to the last valid one */
			int64_t want;
		} cases[] = {
			{ .delta = -16, .want = -1 },        /* backwards */
			{ .delta = -32, .want = -1 },        /* back to the start */
			{ .delta = -256, .want = -1 },
			{ .delta = INT32_MIN, .want = -1 },
			{ .delta = 80, .want = -1 },         /* past tail (st + 96) */
			{ .delta = 64 + 1, .want = -1 },
			{ .delta = 256, .want = -1 },
			{ .delta = INT32_MAX, .want = -1 },
			{ .delta = 0, .want = 256 - 64 },
			{ .delta = 32, .want = 256 - 32 },   /* forward, still valid */
			{ .delta = 64, .want = 256 },        /* exactly at tail */
		};
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			uint32_t peer = p.prod.peer;

			p.ctl.head = st + 32 + (uint32_t)cases[i].delta;
			cr_assert_eq(ring_space(&p.prod), cases[i].want, "start %#x delta %d", st,
				     cases[i].delta);
			if (cases[i].want < 0)
				cr_assert_eq(p.prod.peer, peer, "a rejected head was remembered");
			/* go back to the real head for the next case */
			p.ctl.head = st + 32;
			p.prod.peer = st + 32;
		}
		/* after a validated advance, going back to an older value is refused */
		p.ctl.head = st + 64;
		cr_assert_eq(ring_space(&p.prod), 256 - 32);
		p.ctl.head = st + 32;
		cr_assert_eq(ring_space(&p.prod), -1);
		pair_free(&p);
	}
}

Test(ring, hostile_tail)
{
	static const uint32_t starts[] = { 0, 0xFFFFFFC0u };

	for (size_t s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		struct pair p;
		struct frame_hdr h;
		uint32_t st = starts[s];

		pair_init(&p, 256, st);
		static const struct {
			uint32_t delta; /* tail relative to the consumer */
			int want;
		} cases[] = {
			{ .delta = 256 + 16, .want = -1 },  /* more than the ring holds */
			{ .delta = 0x80000000u, .want = -1 },
			{ .delta = 0xFFFFFFF0u, .want = -1 }, /* backwards */
			{ .delta = 8, .want = -1 },           /* misaligned */
			{ .delta = 1, .want = -1 },
			{ .delta = 255, .want = -1 },
			{ .delta = 0, .want = 0 },
		};
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			p.ctl.tail = st + cases[i].delta;
			cr_assert_eq(ring_peek(&p.cons, &h), cases[i].want, "start %#x tail +%#x",
				     st, cases[i].delta);
		}
		/* a tail beyond the ring with a header that claims all of it */
		{
			struct frame_hdr fake = { .len = 256 + 16, .id = 3 };

			memcpy(p.data + (st & 255), &fake, sizeof(fake));
			p.ctl.tail = st + 256 + 32;
			cr_assert_eq(ring_peek(&p.cons, &h), -1, "start %#x: tail past size", st);
			fake.len = 0;
			memcpy(p.data + (st & 255), &fake, sizeof(fake));
			cr_assert_eq(ring_peek(&p.cons, &h), -1, "start %#x: tail past size", st);
		}
		/* a full ring is fine: tail exactly size ahead */
		p.ctl.tail = st;
		put_frame(&p, 1, 240);
		cr_assert_eq(p.ctl.tail, st + 256);
		expect_frame(&p, 1, 240);
		pair_free(&p);
	}
}

/* The header is copied out before it is checked; its length must fit in
 * what the producer published, and huge lengths must not overflow. */
Test(ring, hostile_frame_len)
{
	static const uint32_t bad[] = {
		/* avail below is 64: one frame of span 64 */
		49, 64, 65, 1000, 0x80000000u, 0xFFFFFFF0u, 0xFFFFFFF1u,
		0xFFFFFFF8u, 0xFFFFFFFFu, 0xFFFFFFE1u,
	};
	static const uint32_t good[] = { 0, 1, 33, 47, 48 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct pair p;
		struct frame_hdr h;

		pair_init(&p, 256, 0xFFFFFFE0u);
		put_frame(&p, 1, 48);
		scribble_len(&p, bad[i]);
		cr_assert_eq(ring_peek(&p.cons, &h), -1, "len %#x accepted", bad[i]);
		pair_free(&p);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct pair p;
		struct frame_hdr h;

		pair_init(&p, 256, 0xFFFFFFE0u);
		put_frame(&p, 1, 48);
		scribble_len(&p, good[i]);
		cr_assert_eq(ring_peek(&p.cons, &h), 1, "len %#x refused", good[i]);
		cr_assert_eq(h.len, good[i]);
		pair_free(&p);
	}
}

/* With several frames published the next one may use all of them. */
Test(ring, frame_len_limited_by_published_data)
{
	struct pair p;
	struct frame_hdr h;

	pair_init(&p, 256, 0);
	put_frame(&p, 1, 0);  /* 16 */
	put_frame(&p, 2, 16); /* 32 */
	scribble_len(&p, 32); /* span 48 = all that is published */
	cr_assert_eq(ring_peek(&p.cons, &h), 1);
	scribble_len(&p, 33);
	cr_assert_eq(ring_peek(&p.cons, &h), -1);
	/* the header the consumer copied is what it checked */
	scribble_len(&p, 0);
	cr_assert_eq(ring_peek(&p.cons, &h), 1);
	cr_assert_eq(h.len, 0);
	pair_free(&p);
}
