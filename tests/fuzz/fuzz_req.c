/* libFuzzer target for everything the broker decodes from an agent's
 * channel: request blobs (req_decode, req_params), batch blobs (batch_count,
 * batch_decode), and the request ring itself (ring_peek, ring_read,
 * ring_consume) with control words taken from the input. Also the response
 * parser the client runs on the broker's output (resp_parse_head,
 * resp_parse) and its emitter again on what parsed (resp_emit with
 * rows already encoded, as rows messages go), and the producer side's view of a hostile consumer head
 * (ring_space). And the channel's framing (common/chan.c) both sides
 * share: the reassembler (chan_rx_frame) on a hostile ring, and the frame
 * writer (chan_frame_next) round-tripping a message through it.
 *
 * And the COPY messages (copy_chunk_next on the client's side,
 * copy_end_decode on the broker's).
 *
 * Input: byte 0 selects the decoder (mod 6), the rest is its input:
 *   0  a request blob
 *   1  a batch blob
 *   2  a ring: u8 size selector (64 << (b % 7) bytes), u32 our head, u32 the
 *      consumer head seen by a producer, u8 k (1 + k % 8 tail values), k u32
 *      producer tails used in turn on successive peeks, then the ring bytes
 *   3  a response blob
 *   4  the channel: as 2, but frames are reassembled by chan_rx_frame
 *      (min a request head, max 16 << (high nibble of the size byte)), then
 *      the ring bytes go as one message through chan_frame_next and back
 *   5  a COPY message: a chunk of COPY TO STDOUT rows (read row by row)
 *      and the same bytes as a COPY end
 *
 * Built with -DFUZZ_SEED_MAIN instead of -fsanitize=fuzzer it is a program
 * that writes a seed corpus of valid encodings into the directory argv[1].
 * `make fuzz` builds and runs both. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "proto.h"
#include "ring.h"

#define CHECK(c)                                                              \
	do {                                                                  \
		if (!(c)) {                                                   \
			fprintf(stderr, "fuzz_req: check failed at line %d: %s\n", \
				__LINE__, #c);                                \
			abort();                                              \
		}                                                             \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fresh heap copy, so ASan sees exactly n bytes and nothing past them. */
static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);

	CHECK(b);
	if (n)
		memcpy(b, p, n);
	return b;
}

/* Everything the broker does with a decoded request: fetch the parameters
 * and read each value as a C string. A decoded request re-encodes to the
 * same bytes unless a value has an embedded NUL (then its text stops at the
 * NUL, which is what PostgreSQL's text parameters see anyway). */
static void use_view(const struct req_view *v, const uint8_t *blob, uint64_t n, int check_roundtrip)
{
	const char **vals;
	int plain = 1;

	CHECK(v->sql >= (const char *)blob && v->sql < (const char *)blob + n);
	CHECK(strlen(v->sql) < n);
	vals = malloc(sizeof(*vals) * (v->nparams ? v->nparams : 1));
	CHECK(vals);
	req_params(v, vals);
	for (uint32_t i = 0; i < v->nparams; i++) {
		int32_t len;

		memcpy(&len, v->lens + 4ull * i, 4);
		if (!vals[i]) {
			CHECK(len == -1);
			continue;
		}
		CHECK(len >= 0);
		CHECK((const uint8_t *)vals[i] >= blob && (const uint8_t *)vals[i] + len < blob + n);
		CHECK(vals[i][len] == '\0');
		if (strlen(vals[i]) != (size_t)len)
			plain = 0;
	}
	if (check_roundtrip && plain) {
		uint64_t m = req_encoded_len(v->sql, v->nparams, vals);
		struct req_head h;

		CHECK(m == n);
		uint8_t *again = malloc(m);
		CHECK(again);
		req_encode(again, v->sql, v->nparams, vals, v->flags);
		memcpy(&h, blob, sizeof(h));
		memcpy(again + offsetof(struct req_head, reserved), &h.reserved, sizeof(h.reserved));
		CHECK(memcmp(again, blob, m) == 0);
		free(again);
	}
	free(vals);
}

static void fuzz_request(const uint8_t *in, size_t n)
{
	uint8_t *blob = dup_exact(in, n);
	struct req_view v;
	const char *why = NULL;

	if (req_decode(blob, n, &v, &why) == 0)
		use_view(&v, blob, n, 1);
	else
		CHECK(why && *why);
	free(blob);
}

static void fuzz_batch(const uint8_t *in, size_t n)
{
	uint8_t *blob = dup_exact(in, n);
	const char *why = NULL;
	uint32_t count;

	if (batch_count(blob, n, &count, &why) == 0) {
		struct req_view *views;

		CHECK(count >= 1 && count <= REQ_MAX_BATCH);
		views = malloc(sizeof(*views) * count);
		CHECK(views);
		if (batch_decode(blob, n, views, &why) == 0) {
			for (uint32_t i = 0; i < count; i++) {
				CHECK(!(views[i].flags & REQ_BATCH));
				use_view(&views[i], blob, n, 0);
			}
		} else {
			CHECK(why && *why);
		}
		free(views);
	} else {
		CHECK(why && *why);
	}
	free(blob);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* Modes 2 and 4 read a ring from the input: size, our position, the
 * consumer head, up to 8 producer tails, then the ring's bytes (calloc'd,
 * the caller frees). Returns NULL when the input is too short. */
struct ring_input {
	uint32_t size, pos, head, tails[8];
	unsigned k;
	uint8_t sel;           /* the size byte, whole */
	const uint8_t *rest;   /* the bytes after the tails, n of them */
	size_t n;
};

static uint8_t *ring_input(const uint8_t *in, size_t n, struct ring_input *ri)
{
	uint8_t *ring;

	if (n < 10)
		return NULL;
	ri->sel = in[0];
	ri->size = 64u << (in[0] % 7);
	/* our own position is trusted: always on a frame boundary */
	ri->pos = get32(in + 1) & ~(FRAME_ALIGN - 1);
	ri->head = get32(in + 5);
	ri->k = 1 + in[9] % 8;
	in += 10;
	n -= 10;
	for (unsigned i = 0; i < ri->k; i++) {
		if (n >= 4) {
			ri->tails[i] = get32(in);
			in += 4;
			n -= 4;
		} else {
			ri->tails[i] = ri->pos;
		}
	}
	ring = calloc(1, ri->size);
	CHECK(ring);
	memcpy(ring, in, n < ri->size ? n : ri->size);
	ri->rest = in;
	ri->n = n;
	return ring;
}

static void fuzz_ring(const uint8_t *in, size_t n)
{
	struct ring_input ri;
	struct ring_ctl ctl;
	struct ring r;
	uint8_t *ring = ring_input(in, n, &ri);
	uint32_t size = ri.size, pos = ri.pos, head = ri.head, *tails = ri.tails;
	unsigned k = ri.k;

	if (!ring)
		return;
	memset(&ctl, 0, sizeof(ctl));

	/* Consumer: the broker reading an agent's request ring. */
	ring_init(&r, &ctl, ring, size);
	r.pos = r.peer = pos;
	for (unsigned step = 0; step < 64; step++) {
		struct frame_hdr h;
		uint32_t before = r.pos;
		int got;

		ctl.tail = tails[step % k];
		got = ring_peek(&r, &h);
		CHECK(got >= -1 && got <= 1);
		if (got <= 0)
			continue;
		/* a frame ring_peek accepted lies wholly inside what was published */
		CHECK(h.len <= size - FRAME_HDR);
		CHECK(FRAME_SPAN(h.len) <= (uint32_t)(ctl.tail - r.pos));
		uint8_t *payload = malloc(h.len ? h.len : 1);
		CHECK(payload);
		/* read it in two pieces, as the broker does across calls */
		uint32_t half = h.len / 2;
		ring_read(&r, 0, payload, half);
		ring_read(&r, half, payload + half, h.len - half);
		if (h.type == FRAME_REQ && (h.flags & (FRAME_FIRST | FRAME_LAST)) ==
					       (FRAME_FIRST | FRAME_LAST) && h.aux == h.len) {
			struct req_view v;
			const char *why;

			if (req_decode(payload, h.len, &v, &why) == 0)
				use_view(&v, payload, h.len, 0);
		}
		free(payload);
		ring_consume(&r, &h);
		CHECK(r.pos - before == FRAME_SPAN(h.len));
		CHECK(ctl.head == r.pos);
	}

	/* Producer: the broker writing an agent's response ring, whose head the
	 * agent controls. */
	ring_init(&r, &ctl, ring, size);
	r.pos = pos;
	r.peer = pos - (tails[0] & (size - 1));
	ctl.head = head;
	int64_t space = ring_space(&r);
	CHECK(space >= -1 && space <= (int64_t)size);
	if (space >= 0) {
		uint32_t room = ring_frame_room((uint32_t)space);
		struct frame_hdr h = { .len = room, .type = FRAME_RESP,
				       .flags = FRAME_FIRST | FRAME_LAST, .id = 1, .aux = room };
		uint8_t *payload = calloc(1, room ? room : 1);

		CHECK(payload);
		CHECK(room == 0 || FRAME_SPAN(room) <= (uint32_t)space);
		if (room) {
			ring_put(&r, &h, payload);
			/* and a consumer in step with us reads it back */
			struct ring c;
			struct frame_hdr g;
			ring_init(&c, &ctl, ring, size);
			c.pos = c.peer = pos;
			CHECK(ring_peek(&c, &g) == 1 && g.len == room);
		}
		free(payload);
	}
	free(ring);
}

/* The channel's reassembler on a ring whose tail and bytes are the
 * input's, then its frame writer and reassembler in step. */
static void fuzz_chan(const uint8_t *in, size_t n)
{
	struct ring_input ri;
	struct ring_ctl ctl;
	struct ring r, w;
	struct chan_rx rx = { 0 };
	uint8_t *ring = ring_input(in, n, &ri);
	uint32_t size = ri.size, pos = ri.pos;
	uint64_t max = 16ull << (ri.sel >> 4);

	if (!ring)
		return;
	in = ri.rest;
	n = ri.n;
	memset(&ctl, 0, sizeof(ctl));
	ring_init(&r, &ctl, ring, size);
	r.pos = r.peer = pos;
	for (unsigned step = 0; step < 64; step++) {
		enum chan_rx_rc rc;

		ctl.tail = ri.tails[step % ri.k];
		rc = chan_rx_frame(&rx, &r, CHAN_TYPE(FRAME_REQ), sizeof(struct req_head), max);
		CHECK(rc >= CHAN_RX_SHORT && rc <= CHAN_RX_DROPPED);
		CHECK(rx.got <= rx.total || rc < 0);
		if (rc == CHAN_RX_DONE) {
			uint8_t *msg = chan_rx_take(&rx);
			struct req_view v;
			const char *why;

			CHECK(msg && rx.got == rx.total);
			CHECK(rx.total >= sizeof(struct req_head) && rx.total <= max);
			if (req_decode(msg, rx.total, &v, &why) == 0)
				use_view(&v, msg, rx.total, 0);
			free(msg);
		} else if (rc == CHAN_RX_DROPPED) {
			CHECK(rx.total > max && !rx.buf);
		} else if (rc < 0) {
			CHECK(!rx.buf);
			break;
		}
	}
	chan_rx_reset(&rx);

	/* Writer and reader in step: the input's bytes, as one message of up
	 * to four rings, arrive whole and unchanged. */
	uint64_t total = n < 4ull * size ? n : 4ull * size, off = 0;
	uint8_t *got = NULL;

	if (total == 0) {	/* no message is empty: a request has its head */
		free(ring);
		return;
	}

	memset(&ctl, 0, sizeof(ctl));
	ring_init(&w, &ctl, ring, size);
	ring_init(&r, &ctl, ring, size);
	w.pos = w.peer = r.pos = r.peer = ctl.head = ctl.tail = pos;
	do {
		struct frame_hdr h = { .type = FRAME_RESP, .id = 9 };
		int64_t space, len = chan_frame_next(&w, &h, total, off, &space);
		enum chan_rx_rc rc;

		CHECK(len > 0 && space == (int64_t)size);
		CHECK(FRAME_SPAN((uint32_t)len) <= size && len <= size / 2);
		ring_write(&w, FRAME_HDR, in + off, (uint32_t)len);
		chan_frame_publish(&w, &h);
		off += (uint64_t)len;
		rc = chan_rx_frame(&rx, &r, CHAN_TYPE(FRAME_RESP), 0, UINT64_MAX);
		CHECK(rc == (off == total ? CHAN_RX_DONE : CHAN_RX_PART));
	} while (off < total);
	got = chan_rx_take(&rx);
	CHECK(got && rx.total == total && rx.id == 9);
	CHECK(total == 0 || memcmp(got, in, total) == 0);
	free(got);
	free(ring);
}

/* Columns of a parsed response, as a resp_src wants them. */
static const char *view_fname(void *ctx, uint32_t col)
{
	return ((const char **)ctx)[col];
}

static void view_ftype(void *ctx, uint32_t col, uint32_t *oid, int32_t *typmod)
{
	resp_col_desc(((const char **)ctx)[col], oid, typmod);
}

/* A parsed response emitted again with its rows as one encoded piece (how
 * the broker sends rows it gathered, RESP_ROWS messages among them): the
 * same bytes, whenever its texts have no NUL inside (which strlen would cut). */
static void reemit(const uint8_t *blob, size_t n, const struct resp_view *v,
		   const char **fnames, const char **vals, const uint32_t *lens, uint64_t cells)
{
	struct resp_src src = { .head = v->head, .err = v->err, .cmd = v->cmd, .diag = v->diag,
				.diag_len = v->diag_len, .notices = v->notices,
				.notices_len = v->notices_len, .ctx = fnames, .fname = view_fname,
				.ftype = view_ftype };
	uint64_t rows_len = 0, total;
	struct ring_ctl ctl = { 0 };
	uint32_t size = 64;
	struct ring r;
	uint8_t *out;

	for (uint64_t i = 0; i < cells; i++)
		rows_len += 4 + (vals[i] ? (uint64_t)lens[i] + 1 : 0);
	CHECK(rows_len <= n);
	src.rows = blob + n - rows_len;
	src.rows_len = rows_len;
	total = resp_measure(&src);
	if (total != n || n > (1u << 20))
		return;
	while (size < n)
		size *= 2;
	out = calloc(1, size);
	CHECK(out);
	ring_init(&r, &ctl, out, size);
	{
		struct resp_cursor cur = { 0 };
		uint32_t got = 0;

		/* in pieces, as a ring with little room takes it */
		while (got < n)
			got += resp_emit(&cur, &src, &r, got, 7);
		CHECK(got == n && cur.done == n);
	}
	CHECK(memcmp(out + sizeof(struct resp_head), blob + sizeof(struct resp_head),
		     n - sizeof(struct resp_head)) == 0);
	free(out);
}

static void fuzz_response(const uint8_t *in, size_t n)
{
	uint8_t *blob = dup_exact(in, n);
	struct resp_head h;

	if (resp_parse_head(blob, n, &h) == 0) {
		uint64_t cells = (uint64_t)h.ntuples * h.nfields;
		const char **fnames = malloc(sizeof(*fnames) * (h.nfields ? h.nfields : 1));
		const char **vals = malloc(sizeof(*vals) * (cells ? cells : 1));
		uint32_t *lens = malloc(sizeof(*lens) * (cells ? cells : 1));
		struct resp_view v;

		CHECK(fnames && vals && lens);
		if (resp_parse(blob, n, &v, fnames, vals, lens) == 0) {
			CHECK(strlen(v.err) < n && strlen(v.cmd) < n);
			/* what the client's accessors read */
			for (int code = 1; code < 128; code++) {
				const char *f = resp_diag_find(v.diag, v.diag_len, code);
				CHECK(!f || (f > v.diag && f + strlen(f) < v.diag + v.diag_len));
			}
			/* the face walks the notices notice by notice, field by field */
			for (const char *p = v.notices, *end = p + v.notices_len; p < end;)
				p += *p ? strlen(p) + 1 : 1;
			CHECK(v.notices[v.notices_len] == '\0');
			for (uint32_t i = 0; i < h.nfields; i++) {
				uint32_t oid;
				int32_t mod;
				resp_col_desc(fnames[i], &oid, &mod);
				CHECK((const uint8_t *)fnames[i] - RESP_COL_DESC >= blob);
			}
			for (uint64_t i = 0; i < cells; i++)
				if (vals[i])
					CHECK(vals[i][lens[i]] == '\0');
			reemit(blob, n, &v, fnames, vals, lens, cells);
		}
		free(fnames);
		free(vals);
		free(lens);
	}
	free(blob);
}

/* A chunk of rows as the client reads it, and an end as the broker does;
 * a chunk that parses re-encodes to the same bytes. */
static void fuzz_copy(const uint8_t *in, size_t n)
{
	uint8_t *blob = dup_exact(in, n);
	uint64_t at = 0, sum = 0;
	const uint8_t *row;
	const char *msg = NULL;
	uint32_t len;
	int rc;

	while ((rc = copy_chunk_next(blob, n, &at, &row, &len)) > 0) {
		CHECK(row >= blob + 4 && row + len <= blob + n && len <= COPY_ROW_MAX);
		CHECK(at == (uint64_t)(row - blob) + len);
		sum += 4 + (uint64_t)len;
	}
	CHECK(rc == -1 || sum == n);
	if (n <= UINT32_MAX && copy_end_decode(blob, (uint32_t)n, &msg) == 0) {
		uint8_t again[2 + COPY_END_MSG_MAX];

		CHECK(!msg || ((const uint8_t *)msg == blob + 1 && strlen(msg) == n - 2));
		CHECK(copy_end_len(msg) == n);
		copy_end_encode(again, msg);
		CHECK(memcmp(again, blob, n) == 0);
	}
	free(blob);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 6) {
	case 5: fuzz_copy(data + 1, size - 1); break;
	case 0: fuzz_request(data + 1, size - 1); break;
	case 1: fuzz_batch(data + 1, size - 1); break;
	case 2: fuzz_ring(data + 1, size - 1); break;
	case 3: fuzz_response(data + 1, size - 1); break;
	default: fuzz_chan(data + 1, size - 1); break;
	}
	return 0;
}

#ifdef FUZZ_SEED_MAIN
/* --- seed corpus: valid encodings of each kind --- */

static const char *seed_dir;
static int seed_no;

static void put_seed(uint8_t sel, const uint8_t *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/seed-%d-%03d", seed_dir, sel, seed_no++);
	f = fopen(path, "wb");
	if (!f) {
		perror(path);
		exit(1);
	}
	fputc(sel, f);
	if (n)
		fwrite(p, 1, n, f);
	fclose(f);
	/* every seed must pass the target itself */
	uint8_t *all = malloc(n + 1);
	all[0] = sel;
	memcpy(all + 1, p, n);
	LLVMFuzzerTestOneInput(all, n + 1);
	free(all);
}

static const char *const v1[] = { "42" };
static const char *const v3[] = { "a", NULL, "" };
static const char *const v2[] = { "x'y", "long value with spaces" };

static const struct req_stmt stmts[] = {
	{ .sql = "select 1", .nparams = 0, .values = NULL },
	{ .sql = "select $1::int * 2", .nparams = 1, .values = v1 },
	{ .sql = "insert into t values ($1, $2, $3)", .nparams = 3, .values = v3 },
	{ .sql = "update t set v = $1 where k = $2", .nparams = 2, .values = v2 },
	{ .sql = "", .nparams = 0, .values = NULL },
};
#define NSTMTS (sizeof(stmts) / sizeof(stmts[0]))

static const char *seed_fname(void *ctx, uint32_t col)
{
	(void)ctx;
	return col == 0 ? "k" : "v";
}

static void seed_ftype(void *ctx, uint32_t col, uint32_t *oid, int32_t *typmod)
{
	(void)ctx;
	*oid = col == 0 ? 23 : 25;
	*typmod = -1;
}

/* two notices, each its fields and an empty one */
static const char seed_notices[] = "SNOTICE\0VNOTICE\0C00000\0Mtable does not exist, skipping\0\0"
				   "SWARNING\0C01000\0Msecond\0Hhint\0\0";
static const char seed_diag[] = "SERROR\0VERROR\0C42P01\0Mrelation does not exist\0P15\0"
				"ttbl\0sschema";

static const char *seed_value(void *ctx, uint32_t row, uint32_t col, uint32_t *len)
{
	static const char *const cells[] = { "1", "one", "2", NULL };
	const char *s = cells[row * 2 + col];

	(void)ctx;
	*len = s ? (uint32_t)strlen(s) : 0;
	return s;
}

static size_t ring_seed(uint8_t *out, uint32_t log2sz, uint32_t pos, const uint8_t *blob, uint32_t n)
{
	uint32_t size = 64u << log2sz;
	uint8_t *data = calloc(1, size);
	struct ring_ctl ctl = { 0 };
	struct ring r;
	uint32_t tail;
	size_t at = 0;

	ring_init(&r, &ctl, data, size);
	r.pos = pos;
	struct frame_hdr h = { .len = n, .type = FRAME_REQ, .flags = FRAME_FIRST | FRAME_LAST,
			       .id = 7, .aux = n };
	ring_put(&r, &h, blob);
	tail = r.pos;
	out[at++] = (uint8_t)log2sz;
	memcpy(out + at, &pos, 4); at += 4;
	memcpy(out + at, &pos, 4); at += 4;   /* head for the producer test */
	out[at++] = 0;                        /* one tail value */
	memcpy(out + at, &tail, 4); at += 4;
	memcpy(out + at, data, size); at += size;
	free(data);
	return at;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	seed_dir = argv[1];
	for (size_t i = 0; i < NSTMTS; i++) {
		uint64_t n = req_encoded_len(stmts[i].sql, stmts[i].nparams, stmts[i].values);
		uint8_t *b = malloc(n);

		req_encode(b, stmts[i].sql, stmts[i].nparams, stmts[i].values, (uint32_t)i & 3);
		put_seed(0, b, n);
		/* the same request inside a ring, once wrapping round the end */
		uint8_t *rs = malloc(16 + 4096 + 64);
		put_seed(2, rs, ring_seed(rs, 2, 0, b, (uint32_t)n));
		put_seed(2, rs, ring_seed(rs, 2, 256 - 32, b, (uint32_t)n));
		put_seed(2, rs, ring_seed(rs, 1, 0xfffffff0u, b, (uint32_t)n));
		/* and for the channel's reassembler, with room for it (max 16 KiB) */
		size_t m = ring_seed(rs, 2, 256 - 32, b, (uint32_t)n);
		rs[0] |= 0xa0;
		put_seed(4, rs, m);
		free(rs);
		free(b);
	}
	for (uint32_t k = 1; k <= NSTMTS; k++) {
		uint64_t n = batch_encoded_len(stmts, k);
		uint8_t *b = malloc(n);

		batch_encode(b, stmts, k, REQ_INDEPENDENT);
		put_seed(1, b, n);
		free(b);
	}
	/* responses: an error, a command tag, a small table with a NULL */
	{
		struct ring_ctl ctl = { 0 };
		struct ring r;
		uint8_t *data = calloc(1, 4096);
		static const uint8_t rows[] = { 1, 0, 0, 0, '7', 0, 0xff, 0xff, 0xff, 0xff,
						2, 0, 0, 0, '4', '2', 0, 0xff, 0xff, 0xff, 0xff };
		struct resp_src src[4] = {
			{ .head = { .ok = 0, .sqlstate = "42P01", .status = RESP_FATAL_ERROR },
			  .err = "relation does not exist", .cmd = "", .diag = seed_diag,
			  .diag_len = sizeof(seed_diag) },
			{ .head = { .ok = 1, .cmd_tuples = 3, .status = RESP_COMMAND_OK }, .err = "",
			  .cmd = "INSERT 0 3", .notices = seed_notices,
			  .notices_len = sizeof(seed_notices) - 1 },
			{ .head = { .ok = 1, .ntuples = 2, .nfields = 2, .status = RESP_TUPLES_OK },
			  .err = "", .cmd = "SELECT 2", .fname = seed_fname, .ftype = seed_ftype,
			  .value = seed_value },
			/* a rows message: two rows gathered by the broker */
			{ .head = { .ok = 1, .ntuples = 2, .nfields = 2, .status = RESP_TUPLES_OK,
				    .flags = RESP_ROWS },
			  .err = "", .cmd = "", .fname = seed_fname, .ftype = seed_ftype,
			  .rows = rows, .rows_len = sizeof(rows) },
		};

		for (int i = 0; i < 4; i++) {
			struct resp_cursor cur = { 0 };
			uint64_t total = resp_measure(&src[i]);

			ring_init(&r, &ctl, data, 4096);
			uint32_t got = resp_emit(&cur, &src[i], &r, 0, (uint32_t)total);
			put_seed(3, data, got);
		}
		free(data);
	}
	/* COPY: a chunk of three rows (one empty), an end, a failed end */
	{
		uint8_t chunk[64], end[64];
		size_t at = 0;
		static const char *const rows[] = { "1\tone\n", "", "\\N\t\xe2\x9c\x93\n" };

		for (int i = 0; i < 3; i++) {
			uint32_t len = (uint32_t)strlen(rows[i]);

			memcpy(chunk + at, &len, 4);
			memcpy(chunk + at + 4, rows[i], len);
			at += 4 + len;
		}
		put_seed(5, chunk, at);
		copy_end_encode(end, NULL);
		put_seed(5, end, copy_end_len(NULL));
		copy_end_encode(end, "changed my mind");
		put_seed(5, end, copy_end_len("changed my mind"));
	}
	fprintf(stderr, "fuzz seeds: %d written to %s\n", seed_no, seed_dir);
	return 0;
}
#endif
