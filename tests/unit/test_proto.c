/* Unit tests for common/proto.c: request blobs (encode, decode, hostile
 * input) and response blobs (measure, streamed emit through a ring, parse,
 * hostile input). */
#include <criterion/criterion.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "ring.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Copy into a heap block of exactly n bytes so that ASan catches a read
 * one byte past the end. */
static uint8_t *dup_exact(const void *src, size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	cr_assert_not_null(p);
	if (n)
		memcpy(p, src, n);
	return p;
}

static int inside(const void *p, const uint8_t *buf, uint64_t n)
{
	const uint8_t *q = p;

	return q >= buf && q < buf + n;
}

/* ---------------------------------------------------------------- requests */

static uint8_t *encode(const char *sql, uint32_t np, const char *const *vals, uint32_t flags,
		       uint64_t *n)
{
	*n = req_encoded_len(sql, np, vals);
	cr_assert_neq(*n, 0);
	uint8_t *buf = malloc(*n);
	cr_assert_not_null(buf);
	req_encode(buf, sql, np, vals, flags);
	return buf;
}

static void expect_round_trip(const char *sql, uint32_t np, const char *const *vals,
			      uint32_t flags)
{
	uint64_t n;
	uint8_t *buf = encode(sql, np, vals, flags, &n);
	struct req_view v;
	const char *why = NULL;
	uint64_t want = 16 + strlen(sql) + 1 + 4ull * np;

	for (uint32_t i = 0; i < np; i++)
		if (vals[i])
			want += strlen(vals[i]) + 1;
	cr_assert_eq(n, want, "encoded length %llu, want %llu", (unsigned long long)n,
		     (unsigned long long)want);
	cr_assert_eq(req_decode(buf, n, &v, &why), 0, "decode failed: %s", why ? why : "?");
	cr_assert_str_eq(v.sql, sql);
	cr_assert_eq(v.nparams, np);
	cr_assert_eq(v.flags, flags);
	const char **got = calloc(np + 1, sizeof(*got));
	cr_assert_not_null(got);
	req_params(&v, got);
	for (uint32_t i = 0; i < np; i++) {
		if (!vals[i]) {
			cr_assert_null(got[i], "param %u should be NULL", i);
			continue;
		}
		cr_assert_not_null(got[i], "param %u is NULL", i);
		cr_assert_str_eq(got[i], vals[i], "param %u", i);
		cr_assert(inside(got[i], buf, n));
	}
	free(got);
	free(buf);
}

Test(proto, req_round_trip_table)
{
	static const char *const none[1] = { NULL };
	static const char *const one[] = { "42" };
	static const char *const mixed[] = { "a", NULL, "", "hello world", NULL, "" };
	static const char *const all_null[] = { NULL, NULL, NULL };
	static const char *const empties[] = { "", "", "" };
	static const struct {
		const char *sql;
		uint32_t np;
		const char *const *vals;
		uint32_t flags;
	} cases[] = {
		{ .sql = "SELECT 1", .np = 0, .vals = none },
		{ .sql = "", .np = 0, .vals = none },
		{ .sql = "SELECT $1", .np = 1, .vals = one, .flags = REQ_IDEMPOTENT },
		{ .sql = "INSERT", .np = 6, .vals = mixed, .flags = REQ_INDEPENDENT },
		{ .sql = "x", .np = 3, .vals = all_null,
		  .flags = REQ_IDEMPOTENT | REQ_INDEPENDENT },
		{ .sql = "y", .np = 3, .vals = empties, .flags = 0xFFFFFFFFu },
	};

	for (size_t i = 0; i < NELEM(cases); i++)
		expect_round_trip(cases[i].sql, cases[i].np, cases[i].vals, cases[i].flags);
	/* values may be NULL when there are no parameters */
	cr_assert_eq(req_encoded_len("SELECT 1", 0, NULL), 16 + 9);
}

Test(proto, req_binaryish_bytes)
{
	char sql[256], val[256];
	const char *vals[2];

	for (int i = 1; i < 256; i++) {
		sql[i - 1] = (char)i;
		val[i - 1] = (char)(256 - i);
	}
	sql[255] = val[255] = '\0';
	vals[0] = val;
	vals[1] = "\xff\xfe\x80\x01";
	expect_round_trip(sql, 2, vals, 0);
}

Test(proto, req_many_params)
{
	enum { N = 3000 };
	const char **vals = calloc(N, sizeof(*vals));
	char (*store)[16] = calloc(N, sizeof(*store));

	cr_assert(vals && store);
	for (uint32_t i = 0; i < N; i++) {
		if (i % 7 == 3)
			continue; /* NULL */
		if (i % 11 == 5) {
			vals[i] = "";
			continue;
		}
		snprintf(store[i], sizeof(store[i]), "v%u", i * 2654435761u);
		vals[i] = store[i];
	}
	expect_round_trip("SELECT many", N, vals, REQ_IDEMPOTENT);
	free(vals);
	free(store);
}

Test(proto, req_param_limit)
{
	const char **vals = calloc(REQ_MAX_PARAMS + 2, sizeof(*vals));

	cr_assert_not_null(vals);
	cr_assert_eq(req_encoded_len("q", REQ_MAX_PARAMS + 1, vals), 0);
	cr_assert_eq(req_encoded_len("q", 0xFFFFFFFFu, vals), 0);
	/* exactly the limit still encodes and decodes */
	cr_assert_eq(req_encoded_len("q", REQ_MAX_PARAMS, vals), 16 + 2 + 4ull * REQ_MAX_PARAMS);
	vals[REQ_MAX_PARAMS - 1] = "last";
	expect_round_trip("q", REQ_MAX_PARAMS, vals, 0);
	free(vals);
}

/* Hand-built request blobs for the decoder. */
struct blob {
	uint8_t b[512];
	size_t n;
};

static void put(struct blob *bl, const void *p, size_t n)
{
	cr_assert_leq(bl->n + n, sizeof(bl->b));
	memcpy(bl->b + bl->n, p, n);
	bl->n += n;
}

static void put_u32(struct blob *bl, uint32_t v)
{
	put(bl, &v, 4);
}

static void put_head(struct blob *bl, uint32_t sql_len, uint32_t np)
{
	struct req_head h = { .sql_len = sql_len, .nparams = np };

	put(bl, &h, sizeof(h));
}

/* A blob with the given sql bytes (sql_len = n) and params written raw. */
static void build(struct blob *bl, const char *sql, size_t sql_n, uint32_t np)
{
	bl->n = 0;
	put_head(bl, (uint32_t)sql_n, np);
	put(bl, sql, sql_n);
}

static const char *WHY_SIZE = "request size out of range";
static const char *WHY_SQL_LEN = "statement length out of range";
static const char *WHY_SQL_STR = "statement text is not a string";
static const char *WHY_NPARAMS = "too many parameters";
static const char *WHY_LENS = "parameter lengths out of range";
static const char *WHY_VALUE = "parameter value out of range";
static const char *WHY_TRAILING = "trailing bytes after the parameters";

static void expect_reject(const struct blob *bl, const char *want, const char *name)
{
	uint8_t *buf = dup_exact(bl->b, bl->n);
	struct req_view v;
	const char *why = NULL;

	cr_assert_eq(req_decode(buf, bl->n, &v, &why), -1, "%s: accepted", name);
	cr_assert_not_null(why, "%s: no reason", name);
	cr_assert_str_eq(why, want, "%s: reason \"%s\"", name, why);
	free(buf);
}

static void expect_accept(const struct blob *bl, const char *name)
{
	uint8_t *buf = dup_exact(bl->b, bl->n);
	struct req_view v;
	const char *why = NULL;

	cr_assert_eq(req_decode(buf, bl->n, &v, &why), 0, "%s: refused: %s", name,
		     why ? why : "?");
	free(buf);
}

Test(proto, req_decode_rejects)
{
	struct blob bl;

	/* too short */
	bl.n = 0;
	expect_reject(&bl, WHY_SIZE, "empty");
	build(&bl, "", 0, 0);
	bl.n = 15;
	expect_reject(&bl, WHY_SIZE, "15 bytes");
	/* a size at the blob limit is refused before anything is read */
	{
		uint8_t tiny[16] = { 0 };
		struct req_view v;
		const char *why = NULL;

		cr_assert_eq(req_decode(tiny, 1ull << 31, &v, &why), -1);
		cr_assert_str_eq(why, WHY_SIZE);
	}

	build(&bl, "", 0, 0);
	expect_reject(&bl, WHY_SQL_LEN, "sql_len 0");
	build(&bl, "SELECT 1", 9, 0);
	((struct req_head *)bl.b)->sql_len = 10;
	expect_reject(&bl, WHY_SQL_LEN, "sql_len past end by one");
	((struct req_head *)bl.b)->sql_len = 0xFFFFFFFFu;
	expect_reject(&bl, WHY_SQL_LEN, "sql_len huge");
	((struct req_head *)bl.b)->sql_len = 0xFFFFFFF0u; /* 16 + len wraps in u32 */
	expect_reject(&bl, WHY_SQL_LEN, "sql_len wrapping");

	build(&bl, "SELECT", 6, 0);
	expect_reject(&bl, WHY_SQL_STR, "sql without NUL");
	build(&bl, "SELECT", 6, 0);
	put(&bl, "\0\0\0\0", 4); /* a NUL exists, but beyond sql_len */
	expect_reject(&bl, WHY_SQL_STR, "sql NUL beyond sql_len");
	build(&bl, "SEL\0CT", 7, 0);
	expect_reject(&bl, WHY_SQL_STR, "embedded NUL");
	build(&bl, "\0", 1, 0);
	expect_accept(&bl, "empty sql");

	build(&bl, "q", 2, REQ_MAX_PARAMS + 1);
	expect_reject(&bl, WHY_NPARAMS, "nparams max+1");
	build(&bl, "q", 2, 0xFFFFFFFFu);
	expect_reject(&bl, WHY_NPARAMS, "nparams huge");

	build(&bl, "q", 2, 2);
	put_u32(&bl, 0xFFFFFFFFu);
	expect_reject(&bl, WHY_LENS, "lens area past end");
	build(&bl, "q", 2, 1);
	put(&bl, "\xff\xff\xff", 3);
	expect_reject(&bl, WHY_LENS, "lens area cut");
	build(&bl, "q", 2, 2);
	put_u32(&bl, 0xFFFFFFFFu);
	put_u32(&bl, 0xFFFFFFFFu);
	expect_accept(&bl, "two NULLs");

	static const int32_t negs[] = { -2, -3, -100, INT32_MIN, INT32_MIN + 1 };
	for (size_t i = 0; i < NELEM(negs); i++) {
		build(&bl, "q", 2, 1);
		put_u32(&bl, (uint32_t)negs[i]);
		put(&bl, "abc", 4);
		expect_reject(&bl, WHY_VALUE, "negative length");
	}

	build(&bl, "q", 2, 1);
	put_u32(&bl, 3);
	put(&bl, "abcd", 4); /* byte 3 must be the NUL */
	expect_reject(&bl, WHY_VALUE, "value without NUL");
	build(&bl, "q", 2, 1);
	put_u32(&bl, 3);
	put(&bl, "abc", 3); /* NUL missing at the very end */
	expect_reject(&bl, WHY_VALUE, "value cut before NUL");
	build(&bl, "q", 2, 1);
	put_u32(&bl, 10);
	put(&bl, "abc", 4);
	expect_reject(&bl, WHY_VALUE, "value length past end");
	build(&bl, "q", 2, 1);
	put_u32(&bl, INT32_MAX);
	put(&bl, "abc", 4);
	expect_reject(&bl, WHY_VALUE, "value length INT32_MAX");
	build(&bl, "q", 2, 2);
	put_u32(&bl, 3);
	put_u32(&bl, 3);
	put(&bl, "abc\0de", 6); /* second value cut */
	expect_reject(&bl, WHY_VALUE, "second value past end");

	build(&bl, "q", 2, 1);
	put_u32(&bl, 3);
	put(&bl, "abc", 4);
	expect_accept(&bl, "one value");
	put(&bl, "", 1);
	expect_reject(&bl, WHY_TRAILING, "one trailing byte");
	build(&bl, "q", 2, 1);
	put_u32(&bl, 0xFFFFFFFFu);
	put(&bl, "x", 2);
	expect_reject(&bl, WHY_TRAILING, "bytes after a NULL");
	build(&bl, "q", 2, 0);
	put(&bl, "\0\0\0\0", 4);
	expect_reject(&bl, WHY_TRAILING, "bytes after no params");
}

/* Check that a view the decoder accepted stays inside the buffer. */
static void check_view(const uint8_t *buf, uint64_t n, const struct req_view *v)
{
	cr_assert(inside(v->sql, buf, n), "sql outside");
	cr_assert(inside(v->sql + strlen(v->sql), buf, n), "sql runs outside");
	cr_assert_leq(v->nparams, REQ_MAX_PARAMS);
	cr_assert_leq((const uint8_t *)v->lens + 4ull * v->nparams, buf + n, "lens outside");

	const char **vals = calloc(v->nparams + 1, sizeof(*vals));
	cr_assert_not_null(vals);
	req_params(v, vals);
	for (uint32_t i = 0; i < v->nparams; i++) {
		int32_t len;

		memcpy(&len, v->lens + 4ull * i, 4);
		if (!vals[i]) {
			cr_assert_eq(len, -1);
			continue;
		}
		cr_assert_geq(len, 0);
		cr_assert(inside(vals[i], buf, n), "param %u outside", i);
		cr_assert(inside(vals[i] + len, buf, n), "param %u end outside", i);
		cr_assert_eq(vals[i][len], '\0', "param %u not terminated at its length", i);
		cr_assert(inside(vals[i] + strlen(vals[i]), buf, n), "param %u runs outside", i);
	}
	free(vals);
}

/* Mutate a copy: flip bytes, overwrite a word with a nasty value, or cut. */
static uint64_t mutate(uint8_t *b, uint64_t n, uint64_t *seed)
{
	static const uint32_t nasty[] = { 0, 1, 2, 3, 4, 0x7FFFFFFFu, 0x80000000u,
					  0xFFFFFFFEu, 0xFFFFFFFFu, 0xFFFF, 0x10000 };
	uint32_t what = rng_next(seed) % 4;

	if (n == 0)
		return 0;
	switch (what) {
	case 0: {
		uint32_t k = 1 + rng_next(seed) % 4;
		for (uint32_t i = 0; i < k; i++)
			b[rng_next(seed) % n] ^= (uint8_t)(1u << (rng_next(seed) % 8));
		break;
	}
	case 1:
		b[rng_next(seed) % n] = (uint8_t)rng_next(seed);
		break;
	case 2:
		if (n >= 4) {
			uint32_t v = nasty[rng_next(seed) % NELEM(nasty)];
			uint64_t at = rng_next(seed) % (n - 3);

			if (rng_next(seed) % 2)
				at &= ~3ull; /* hit field boundaries often */
			memcpy(b + at, &v, 4);
		}
		break;
	default:
		n = rng_next(seed) % n;
		break;
	}
	return n;
}

Test(proto, req_decode_random_corruption)
{
	static const char *const v1[] = { "abc", NULL, "", "0123456789abcdef" };
	static const char *const v2[] = { NULL };
	static const char *const v3[] = { "x", "yy", "zzz", "", NULL, "w" };
	static const struct {
		const char *sql;
		uint32_t np;
		const char *const *vals;
	} bases[] = {
		{ .sql = "SELECT $1, $2, $3, $4", .np = 4, .vals = v1 },
		{ .sql = "SELECT 1", .np = 0, .vals = v2 },
		{ .sql = "", .np = 1, .vals = v2 },
		{ .sql = "UPDATE t SET a = $1", .np = 6, .vals = v3 },
	};
	uint64_t seed = 0x5eed1234abcdull;
	unsigned accepted = 0, rejected = 0;

	for (size_t b = 0; b < NELEM(bases); b++) {
		uint64_t n;
		uint8_t *orig = encode(bases[b].sql, bases[b].np, bases[b].vals, 0, &n);

		for (int it = 0; it < 3000; it++) {
			uint8_t *tmp = dup_exact(orig, n);
			uint64_t m = mutate(tmp, n, &seed);
			if (rng_next(&seed) % 3 == 0)
				m = mutate(tmp, m, &seed);
			uint8_t *buf = dup_exact(tmp, m); /* exact size for ASan */
			struct req_view v;
			const char *why = NULL;

			free(tmp);
			if (req_decode(buf, m, &v, &why) == 0) {
				check_view(buf, m, &v);
				accepted++;
			} else {
				cr_assert_not_null(why);
				rejected++;
			}
			free(buf);
		}
		free(orig);
	}
	/* the mutations must exercise both outcomes */
	cr_assert_gt(accepted, 100, "accepted %u", accepted);
	cr_assert_gt(rejected, 1000, "rejected %u", rejected);
}

/* --------------------------------------------------------------- responses */

/* An in-memory result: nfields names, ntuples rows of cells; a cell is NULL
 * for SQL NULL; lens (optional) gives explicit lengths for cells with NULs. */
struct table {
	uint32_t nfields, ntuples;
	const char *const *names;
	const char *const *cells;
	const uint32_t *lens;
	unsigned value_calls;
	const char *diag;       /* packed error fields, or NULL */
	uint32_t diag_len;
	const char *notices;    /* packed notices, or NULL */
	uint32_t notices_len;
};

/* Column c's type: a distinct OID and typmod per column, with the high bits
 * set so that byte order and sign are exercised. */
static uint32_t tab_oid(uint32_t col)
{
	return 0x80000017u + col * 0x01010101u;
}

static int32_t tab_mod(uint32_t col)
{
	return col == 0 ? -1 : (int32_t)(col * 65536 + 4);
}

static void tab_ftype(void *ctx, uint32_t col, uint32_t *oid, int32_t *typmod)
{
	const struct table *t = ctx;

	cr_assert_lt(col, t->nfields, "ftype(%u) out of range", col);
	*oid = tab_oid(col);
	*typmod = tab_mod(col);
}

static const char *tab_fname(void *ctx, uint32_t col)
{
	const struct table *t = ctx;

	cr_assert_lt(col, t->nfields, "fname(%u) out of range", col);
	return t->names[col];
}

static const char *tab_value(void *ctx, uint32_t row, uint32_t col, uint32_t *len)
{
	struct table *t = ctx;

	cr_assert_lt(row, t->ntuples, "value row %u out of range", row);
	cr_assert_lt(col, t->nfields, "value col %u out of range", col);
	t->value_calls++;
	const char *s = t->cells[row * t->nfields + col];
	if (s)
		*len = t->lens ? t->lens[row * t->nfields + col] : (uint32_t)strlen(s);
	return s;
}

static uint32_t cell_len(const struct table *t, uint32_t i)
{
	return t->lens ? t->lens[i] : (uint32_t)strlen(t->cells[i]);
}

static struct resp_src make_src(struct table *t, const char *err, const char *cmd)
{
	struct resp_src s = {
		.head = { .ok = err ? 0 : 1, .ntuples = t->ntuples, .nfields = t->nfields,
			  .cmd_tuples = t->ntuples, .flags = 0x1234 },
		.err = err,
		.cmd = cmd,
		.ctx = t,
		.fname = tab_fname,
		.ftype = tab_ftype,
		.value = tab_value,
		.diag = t->diag,
		.diag_len = t->diag_len,
		.notices = t->notices,
		.notices_len = t->notices_len,
	};

	s.head.status = err ? RESP_FATAL_ERROR : t->nfields ? RESP_TUPLES_OK : RESP_COMMAND_OK;
	return s;
}

/* Independent computation of the blob size. */
static uint64_t expected_total(const struct table *t, const char *err, const char *cmd)
{
	uint64_t n = sizeof(struct resp_head);

	n += 4 + strlen(err ? err : "") + 1;
	n += 4 + strlen(cmd ? cmd : "") + 1;
	n += 4 + t->diag_len + 1;
	n += 4 + t->notices_len + 1;
	for (uint32_t c = 0; c < t->nfields; c++)
		n += 4 + 8 + strlen(t->names[c]) + 1;
	for (uint32_t i = 0; i < t->nfields * t->ntuples; i++)
		n += t->cells[i] ? 4 + cell_len(t, i) + 1 : 4;
	return n;
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t s = 64;

	while (s < n)
		s <<= 1;
	return s;
}

/* Stream the response through a ring as the broker does: frames of at most
 * `chunk` payload bytes, each filled by resp_emit, the consumer draining
 * them into a flat buffer. Returns the blob (total bytes). */
static uint8_t *emit_through_ring(const struct resp_src *src, uint32_t chunk, uint32_t ring_size,
				  uint32_t start, uint32_t id)
{
	uint64_t total = src->head.total;
	uint8_t *flat = malloc(total);
	uint8_t *data = malloc(ring_size);
	struct ring_ctl ctl = { 0 };
	struct ring prod, cons;
	struct resp_cursor cur = { 0 };
	uint64_t got = 0;
	unsigned frames = 0;

	cr_assert(flat && data);
	ring_init(&prod, &ctl, data, ring_size);
	ring_init(&cons, &ctl, data, ring_size);
	prod.pos = prod.peer = cons.pos = cons.peer = ctl.tail = ctl.head = start;
	while (got < total) {
		int64_t space = ring_space(&prod);

		cr_assert_geq(space, 0);
		uint32_t room = ring_frame_room((uint32_t)space);
		if (room > 0 && cur.done < total) {
			uint32_t max = room < chunk ? room : chunk;
			uint64_t before = cur.done;
			uint32_t put = resp_emit(&cur, src, &prod, FRAME_HDR, max);
			uint64_t left = total - before;

			cr_assert_eq(put, left < max ? left : max, "emit wrote %u of %u", put, max);
			cr_assert_eq(cur.done, before + put);
			struct frame_hdr h = {
				.len = put,
				.type = FRAME_RESP,
				.flags = (uint16_t)((before == 0 ? FRAME_FIRST : 0) |
						    (cur.done == total ? FRAME_LAST : 0)),
				.id = id,
				.aux = before == 0 ? (uint32_t)total : 0,
			};
			ring_write_hdr(&prod, &h);
			ring_publish(&prod, put);
			frames++;
			/* sometimes let two frames pile up before draining */
			if (frames % 3 != 0)
				continue;
		}
		struct frame_hdr h;
		int rc;

		while ((rc = ring_peek(&cons, &h)) == 1) {
			cr_assert_eq(h.id, id);
			cr_assert_eq(h.type, FRAME_RESP);
			cr_assert_eq(!!(h.flags & FRAME_FIRST), got == 0);
			if (h.flags & FRAME_FIRST)
				cr_assert_eq(h.aux, total);
			cr_assert_leq(got + h.len, total);
			ring_read(&cons, 0, flat + got, h.len);
			got += h.len;
			cr_assert_eq(!!(h.flags & FRAME_LAST), got == total);
			ring_consume(&cons, &h);
		}
		cr_assert_eq(rc, 0);
	}
	cr_assert_eq(cur.done, total);
	/* once complete, emit writes nothing more */
	cr_assert_eq(resp_emit(&cur, src, &prod, FRAME_HDR, 100), 0);
	cr_assert_eq(cur.done, total);
	if (chunk == 1)
		cr_assert_eq(frames, total);
	free(data);
	return flat;
}

/* The whole blob in one resp_emit call into a ring large enough. */
static uint8_t *emit_whole(const struct resp_src *src)
{
	uint64_t total = src->head.total;
	uint32_t size = pow2_at_least(total);
	uint8_t *data = malloc(size);
	uint8_t *flat = malloc(total);
	struct ring_ctl ctl = { 0 };
	struct ring r;
	struct resp_cursor cur = { 0 };

	cr_assert(data && flat);
	ring_init(&r, &ctl, data, size);
	cr_assert_eq(resp_emit(&cur, src, &r, 0, (uint32_t)total + 50), total);
	cr_assert_eq(cur.done, total);
	memcpy(flat, data, total);
	free(data);
	return flat;
}

static void expect_parsed(const uint8_t *blob, uint64_t n, const struct resp_src *src,
			  const struct table *t)
{
	struct resp_head h;
	struct resp_view v;

	cr_assert_eq(resp_parse_head(blob, n, &h), 0);
	cr_assert_eq(h.nfields, t->nfields);
	cr_assert_eq(h.ntuples, t->nfields ? t->ntuples : 0);
	uint64_t cells = (uint64_t)h.ntuples * h.nfields;
	const char **fnames = calloc(h.nfields + 1, sizeof(*fnames));
	const char **vals = calloc(cells + 1, sizeof(*vals));
	uint32_t *lens = calloc(cells + 1, sizeof(*lens));

	cr_assert(fnames && vals && lens);
	cr_assert_eq(resp_parse(blob, n, &v, fnames, vals, lens), 0);
	cr_assert_eq(v.head.total, n);
	cr_assert_eq(v.head.ok, src->head.ok);
	cr_assert_eq(v.head.cmd_tuples, src->head.cmd_tuples);
	cr_assert_eq(v.head.flags, src->head.flags);
	cr_assert_eq(v.head.status, src->head.status);
	cr_assert_eq(v.diag_len, t->diag_len);
	cr_assert_eq(memcmp(v.diag, t->diag ? t->diag : "", t->diag_len + !t->diag), 0);
	cr_assert_eq(v.head.ntuples, h.ntuples);
	cr_assert_eq(v.head.nfields, h.nfields);
	cr_assert_str_eq(v.head.sqlstate, src->head.sqlstate);
	cr_assert_str_eq(v.err, src->err ? src->err : "");
	cr_assert_str_eq(v.cmd, src->cmd ? src->cmd : "");
	for (uint32_t c = 0; c < h.nfields; c++) {
		uint32_t oid;
		int32_t mod;

		cr_assert_str_eq(fnames[c], t->names[c], "field %u", c);
		resp_col_desc(fnames[c], &oid, &mod);
		cr_assert_eq(oid, tab_oid(c), "field %u oid %#x", c, oid);
		cr_assert_eq(mod, tab_mod(c), "field %u typmod %d", c, mod);
	}
	for (uint64_t i = 0; i < cells; i++) {
		if (!t->cells[i]) {
			cr_assert_null(vals[i], "cell %llu should be NULL", (unsigned long long)i);
			cr_assert_eq(lens[i], 0);
			continue;
		}
		uint32_t len = cell_len(t, (uint32_t)i);

		cr_assert_not_null(vals[i], "cell %llu is NULL", (unsigned long long)i);
		cr_assert_eq(lens[i], len, "cell %llu: len %u want %u", (unsigned long long)i,
			     lens[i], len);
		cr_assert_eq(memcmp(vals[i], t->cells[i], len), 0, "cell %llu", (unsigned long long)i);
		cr_assert_eq(vals[i][len], '\0');
		cr_assert(inside(vals[i], blob, n));
	}
	free(fnames);
	free(vals);
	free(lens);
}

static char long_text[700];

static void init_long_text(void)
{
	for (size_t i = 0; i < sizeof(long_text) - 1; i++)
		long_text[i] = (char)('a' + i % 26);
	long_text[sizeof(long_text) - 1] = '\0';
}

static const char *const sample_names[] = { "id", "name", "", "note" };
static const char *const sample_cells[] = {
	"1", "alice", "",   NULL,
	"2", NULL,    "x",  "a\0b",
	"3", "",      NULL, "ünïcode",
	"4", "bob",   "y",  NULL, /* [15]: long_text at runtime */
	NULL, NULL,   NULL, NULL,
};
static const uint32_t sample_lens[] = {
	1, 5, 0, 0,
	1, 0, 1, 3,
	1, 0, 0, 9,
	1, 3, 1, 699,
	0, 0, 0, 0,
};

static void sample_table(struct table *t, const char **cells)
{
	init_long_text();
	memcpy(cells, sample_cells, sizeof(sample_cells));
	cells[15] = long_text;
	*t = (struct table){
		.nfields = 4,
		.ntuples = 5,
		.names = sample_names,
		.cells = cells,
		.lens = sample_lens,
	};
}

Test(proto, resp_round_trip_chunks)
{
	static const uint32_t chunks[] = { 1, 7, 16, 100, 240, 1000 };
	const char *cells[NELEM(sample_cells)];
	struct table t;

	sample_table(&t, cells);
	struct resp_src src = make_src(&t, NULL, "SELECT 5");
	uint64_t total = resp_measure(&src);

	cr_assert_eq(total, expected_total(&t, NULL, "SELECT 5"));
	cr_assert_eq(src.head.total, total);
	uint8_t *whole = emit_whole(&src);
	expect_parsed(whole, total, &src, &t);
	for (size_t c = 0; c < NELEM(chunks); c++) {
		static const uint32_t starts[] = { 0, 48, 0xFFFFFF00u };

		for (size_t s = 0; s < NELEM(starts); s++) {
			uint32_t size = chunks[c] >= 240 ? pow2_at_least(chunks[c] + 32) : 256;
			uint8_t *blob = emit_through_ring(&src, chunks[c], size, starts[s], 7);

			cr_assert_eq(memcmp(blob, whole, total), 0, "chunk %u start %#x differs",
				     chunks[c], starts[s]);
			expect_parsed(blob, total, &src, &t);
			free(blob);
		}
	}
	/* whole blob as a single frame */
	uint8_t *blob = emit_through_ring(&src, (uint32_t)total, pow2_at_least(total + 32), 0, 8);
	cr_assert_eq(memcmp(blob, whole, total), 0);
	free(blob);
	free(whole);
}

Test(proto, resp_emit_zero_and_tiny_steps)
{
	const char *cells[NELEM(sample_cells)];
	struct table t;
	uint8_t data[4096], flat[4096];
	struct ring_ctl ctl = { 0 };
	struct ring r;
	struct resp_cursor cur = { 0 };
	uint64_t seed = 99;

	sample_table(&t, cells);
	struct resp_src src = make_src(&t, "", NULL);
	uint64_t total = resp_measure(&src);
	cr_assert_lt(total, sizeof(data));
	uint8_t *whole = emit_whole(&src);

	ring_init(&r, &ctl, data, sizeof(data));
	cr_assert_eq(resp_emit(&cur, &src, &r, 0, 0), 0);
	cr_assert_eq(cur.done, 0);
	cr_assert_eq(cur.item, 0);
	/* random step sizes into consecutive offsets of one big ring */
	while (cur.done < total) {
		uint32_t step = rng_next(&seed) % 13;
		uint64_t before = cur.done;
		uint32_t put = resp_emit(&cur, &src, &r, (uint32_t)before, step);

		cr_assert_eq(put, total - before < step ? total - before : step);
	}
	memcpy(flat, data, total);
	cr_assert_eq(memcmp(flat, whole, total), 0);
	expect_parsed(flat, total, &src, &t);
	free(whole);
}

Test(proto, resp_error_only)
{
	static const char diag[] = "SERROR\0C42601\0Msyntax error at or near \"SELEC\"\0P8";
	struct table t = { .nfields = 0, .ntuples = 5, /* rows without fields */
			   .diag = diag, .diag_len = sizeof(diag) };
	struct resp_src src = make_src(&t, "syntax error at or near \"SELEC\"", NULL);

	memcpy(src.head.sqlstate, "42601", 6);
	src.head.cmd_tuples = 0;
	uint64_t total = resp_measure(&src);
	cr_assert_eq(src.head.ntuples, 0, "measure must drop rows without fields");
	t.ntuples = 0;
	cr_assert_eq(total, expected_total(&t, src.err, NULL));
	cr_assert_eq(t.value_calls, 0);

	uint8_t *blob = emit_through_ring(&src, 7, 64, 0xFFFFFFC0u, 1);
	struct resp_view v;
	const char *fn[1];
	const char *vals[1];
	uint32_t lens[1];

	cr_assert_eq(resp_parse(blob, total, &v, fn, vals, lens), 0);
	cr_assert_eq(v.head.ok, 0);
	cr_assert_eq(v.head.nfields, 0);
	cr_assert_eq(v.head.ntuples, 0);
	cr_assert_eq(v.head.cmd_tuples, 0);
	cr_assert_str_eq(v.head.sqlstate, "42601");
	cr_assert_str_eq(v.err, "syntax error at or near \"SELEC\"");
	cr_assert_str_eq(v.cmd, "");
	cr_assert_eq(v.head.status, RESP_FATAL_ERROR);
	cr_assert_eq(v.diag_len, sizeof(diag));
	cr_assert_str_eq(resp_diag_find(v.diag, v.diag_len, 'S'), "ERROR");
	cr_assert_str_eq(resp_diag_find(v.diag, v.diag_len, 'C'), "42601");
	cr_assert_str_eq(resp_diag_find(v.diag, v.diag_len, 'M'), src.err);
	cr_assert_str_eq(resp_diag_find(v.diag, v.diag_len, 'P'), "8");
	cr_assert_null(resp_diag_find(v.diag, v.diag_len, 'D'));
	cr_assert_null(resp_diag_find(v.diag, v.diag_len, 0));
	free(blob);
}

Test(proto, resp_command_without_rows)
{
	static const char *const names[] = { "a", "b" };
	struct table t = { .nfields = 2, .ntuples = 0, .names = names };
	struct resp_src src = make_src(&t, NULL, "INSERT 0 3");

	src.head.cmd_tuples = 3;
	uint64_t total = resp_measure(&src);
	cr_assert_eq(total, expected_total(&t, NULL, "INSERT 0 3"));
	uint8_t *blob = emit_through_ring(&src, 100, 256, 0, 2);
	expect_parsed(blob, total, &src, &t);
	free(blob);
}

static const char *huge_value(void *ctx, uint32_t row, uint32_t col, uint32_t *len)
{
	(void)ctx;
	(void)row;
	(void)col;
	*len = 0x40000000u; /* never read by measure */
	return "";
}

Test(proto, resp_measure_too_large)
{
	static const char *const names[] = { "a" };
	struct table t = { .nfields = 1, .ntuples = 2, .names = names };
	struct resp_src src = make_src(&t, NULL, "SELECT 2");

	src.value = huge_value;
	src.head.total = 12345;
	cr_assert_eq(resp_measure(&src), 0);
	cr_assert_eq(src.head.total, 0);
	t.ntuples = src.head.ntuples = 1; /* 1 GiB: still encodable */
	cr_assert_gt(resp_measure(&src), 0x40000000u);
}

/* A valid blob to corrupt: the sample table. */
static uint8_t *sample_blob(uint64_t *n, const char **cells, struct table *t)
{
	sample_table(t, cells);
	struct resp_src src = make_src(t, NULL, "SELECT 5");

	memcpy(src.head.sqlstate, "00000", 6);
	*n = resp_measure(&src);
	return emit_whole(&src);
}

/* Parse buf[0..n) from an exact-size copy with arrays sized as the client
 * sizes them. Returns resp_parse's result, or -1 from resp_parse_head. When
 * it succeeds every pointer must lie inside the copy. */
static int parse_checked(const uint8_t *src, uint64_t n)
{
	uint8_t *buf = dup_exact(src, n);
	struct resp_head h;
	struct resp_view v;
	int rc = -1;

	if (resp_parse_head(buf, n, &h) == 0) {
		/* the head check bounds the arrays by the blob size */
		uint64_t cells = (uint64_t)h.ntuples * h.nfields;
		cr_assert_leq(h.nfields, n / 4);
		cr_assert_leq(cells, n / 4);
		cr_assert_leq(strlen(h.sqlstate), 7);
		const char **fnames = calloc(h.nfields + 1, sizeof(*fnames));
		const char **vals = calloc(cells + 1, sizeof(*vals));
		uint32_t *lens = calloc(cells + 1, sizeof(*lens));

		cr_assert(fnames && vals && lens);
		rc = resp_parse(buf, n, &v, fnames, vals, lens);
		if (rc == 0) {
			cr_assert(inside(v.err, buf, n) && inside(v.err + strlen(v.err), buf, n));
			cr_assert(inside(v.cmd, buf, n) && inside(v.cmd + strlen(v.cmd), buf, n));
			for (uint32_t c = 0; c < v.head.nfields; c++)
				cr_assert(inside(fnames[c] + strlen(fnames[c]), buf, n) &&
					  inside(fnames[c], buf, n));
			for (uint64_t i = 0; i < cells; i++) {
				if (!vals[i]) {
					cr_assert_eq(lens[i], 0);
					continue;
				}
				cr_assert(inside(vals[i], buf, n));
				cr_assert(inside(vals[i] + lens[i], buf, n));
				cr_assert_eq(vals[i][lens[i]], '\0');
			}
		}
		free(fnames);
		free(vals);
		free(lens);
	}
	free(buf);
	return rc;
}

static void set_total(uint8_t *b, uint64_t total)
{
	memcpy(b + offsetof(struct resp_head, total), &total, 8);
}

static void set_u32(uint8_t *b, size_t at, uint32_t v)
{
	memcpy(b + at, &v, 4);
}

/* Offset of item k (0 = err) in a blob. */
static size_t item_at(const uint8_t *b, unsigned k)
{
	size_t at = sizeof(struct resp_head);

	for (unsigned i = 0; i < k; i++) {
		uint32_t len;

		memcpy(&len, b + at, 4);
		at += 4 + (len == RESP_NULL ? 0 : len + 1ull);
	}
	return at;
}

Test(proto, resp_parse_rejects)
{
	const char *cells[NELEM(sample_cells)];
	struct table t;
	uint64_t n;
	uint8_t *good = sample_blob(&n, cells, &t);
	uint8_t *b = malloc(n + 64);
	const size_t off_ntuples = offsetof(struct resp_head, ntuples);
	const size_t off_nfields = offsetof(struct resp_head, nfields);

	cr_assert_not_null(b);
	cr_assert_eq(parse_checked(good, n), 0);

#define RESET() memcpy(b, good, n)
	/* total does not match the size */
	RESET();
	set_total(b, n + 1);
	cr_assert_eq(parse_checked(b, n), -1, "total n+1");
	set_total(b, n - 1);
	cr_assert_eq(parse_checked(b, n), -1, "total n-1");
	set_total(b, 0);
	cr_assert_eq(parse_checked(b, n), -1, "total 0");
	/* shorter than a head */
	for (uint64_t m = 0; m < sizeof(struct resp_head); m++) {
		RESET();
		set_total(b, m);
		cr_assert_eq(parse_checked(b, m), -1, "%llu bytes", (unsigned long long)m);
	}
	/* truncated anywhere, with total patched to match */
	for (uint64_t m = sizeof(struct resp_head); m < n; m++) {
		RESET();
		set_total(b, m);
		cr_assert_eq(parse_checked(b, m), -1, "truncated to %llu", (unsigned long long)m);
	}
	/* trailing bytes */
	RESET();
	memset(b + n, 0, 8);
	set_total(b, n + 8);
	cr_assert_eq(parse_checked(b, n + 8), -1, "trailing bytes");

	/* every item: length past the end, length one too long, missing NUL */
	unsigned nitems = 4 + t.nfields * (1 + t.ntuples);
	for (unsigned k = 0; k < nitems; k++) {
		size_t at = item_at(good, k);
		uint32_t len;

		memcpy(&len, good + at, 4);
		RESET();
		set_u32(b, at, (uint32_t)(n - at));
		cr_assert_eq(parse_checked(b, n), -1, "item %u: length to the end", k);
		RESET();
		set_u32(b, at, 0xFFFFFFFEu);
		cr_assert_eq(parse_checked(b, n), -1, "item %u: length huge", k);
		if (len == RESP_NULL)
			continue;
		RESET();
		b[at + 4 + len] = 'x';
		cr_assert_eq(parse_checked(b, n), -1, "item %u: no NUL", k);
		RESET();
		set_u32(b, at, len + 1);
		cr_assert_eq(parse_checked(b, n), -1, "item %u: length +1", k);
		/* the same blob with this item made NULL, everything else intact:
		 * fine for a value, refused for err, cmd, error fields and columns */
		uint64_t m = n - len - 1;
		memcpy(b, good, at);
		set_u32(b, at, RESP_NULL);
		memcpy(b + at + 4, good + at + 4 + len + 1, n - (at + 4 + len + 1));
		set_total(b, m);
		cr_assert_eq(parse_checked(b, m), k < 4 + t.nfields ? -1 : 0, "item %u: NULL", k);
	}
	/* a column item shorter than its descriptor: each length 0..7, the
	 * item's bytes kept and its NUL moved to match */
	for (uint32_t short_len = 0; short_len < RESP_COL_DESC; short_len++) {
		size_t at = item_at(good, 4);
		uint32_t len;

		memcpy(&len, good + at, 4);
		RESET();
		set_u32(b, at, short_len);
		b[at + 4 + short_len] = '\0';
		memmove(b + at + 4 + short_len + 1, good + at + 4 + len + 1,
			n - (at + 4 + len + 1));
		uint64_t m = n - (len - short_len);
		set_total(b, m);
		cr_assert_eq(parse_checked(b, m), -1, "column item of %u bytes", short_len);
	}
	/* statuses: the known ones pass, the others are refused */
	for (uint32_t st = 0; st < 12; st++) {
		RESET();
		set_u32(b, offsetof(struct resp_head, status), st);
		cr_assert_eq(parse_checked(b, n), st <= 4 || st == 7 ? 0 : -1, "status %u", st);
	}
	RESET();
	set_u32(b, offsetof(struct resp_head, status), 0xFFFFFFFFu);
	cr_assert_eq(parse_checked(b, n), -1, "status -1");

	/* counts that do not match the items */
	RESET();
	set_u32(b, off_ntuples, t.ntuples + 1);
	cr_assert_eq(parse_checked(b, n), -1, "one row more");
	RESET();
	set_u32(b, off_nfields, 0);
	cr_assert_eq(parse_checked(b, n), -1, "nfields 0 with ntuples > 0");
	RESET();
	set_u32(b, off_nfields, 0);
	set_u32(b, off_ntuples, 1);
	struct resp_head h;
	cr_assert_eq(resp_parse_head(b, n, &h), -1, "nfields 0 ntuples 1 head");
#undef RESET
	free(b);
	free(good);
}

/* Counts whose item count times 4 overflows must be refused by the head
 * check: the caller sizes its arrays from them. */
Test(proto, resp_parse_head_huge_counts)
{
	static const struct {
		uint32_t nfields, ntuples;
	} cases[] = {
		{ .nfields = 0x80000000u, .ntuples = 0x7FFFFFFFu }, /* 4 * items wraps to 12 */
		{ .nfields = 0x40000000u, .ntuples = 0xFFFFFFFFu }, /* wraps to 12 */
		{ .nfields = 0xFFFFFFFFu, .ntuples = 0xFFFFFFFFu },
		{ .nfields = 0x10000u, .ntuples = 0xFFFFu },
		{ .nfields = 1, .ntuples = 0xFFFFFFFFu },
		{ .nfields = 0xFFFFFFFFu, .ntuples = 0 },
		{ .nfields = 0xFFFFFFFFu, .ntuples = 1 },
	};
	uint8_t blob[sizeof(struct resp_head) + 64] = { 0 };

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct resp_head in = {
			.total = sizeof(blob),
			.nfields = cases[i].nfields,
			.ntuples = cases[i].ntuples,
		}, h;

		memcpy(blob, &in, sizeof(in));
		/* items after the head: empty err and cmd, empty names */
		for (size_t at = sizeof(in); at + 5 <= sizeof(blob); at += 5)
			memset(blob + at, 0, 5);
		uint8_t *buf = dup_exact(blob, sizeof(blob));
		cr_assert_eq(resp_parse_head(buf, sizeof(blob), &h), -1,
			     "nfields %#x ntuples %#x accepted", cases[i].nfields, cases[i].ntuples);
		free(buf);
		cr_assert_eq(parse_checked(blob, sizeof(blob)), -1);
	}
}

Test(proto, resp_parse_head_terminates_sqlstate)
{
	/* head, then empty err, cmd, error fields and notices: "u32 0, NUL"
	 * four times */
	struct resp_head in = { .total = sizeof(struct resp_head) + 20 }, h;
	uint8_t blob[sizeof(struct resp_head) + 20] = { 0 };

	memcpy(in.sqlstate, "ABCDEFGH", 8);
	memcpy(blob, &in, sizeof(in));
	cr_assert_eq(resp_parse_head(blob, sizeof(blob), &h), 0);
	cr_assert_str_eq(h.sqlstate, "ABCDEFG");
	cr_assert_eq(parse_checked(blob, sizeof(blob)), 0);
}

Test(proto, resp_parse_random_corruption)
{
	const char *cells[NELEM(sample_cells)];
	struct table t;
	uint64_t n;
	uint8_t *good = sample_blob(&n, cells, &t);
	uint64_t seed = 0xC0FFEE;
	unsigned ok = 0, bad = 0;

	for (int it = 0; it < 5000; it++) {
		uint8_t *tmp = dup_exact(good, n);
		uint64_t m = mutate(tmp, n, &seed);

		if (rng_next(&seed) % 2)
			m = mutate(tmp, m, &seed);
		/* usually keep total consistent so the parser gets past it */
		if (m >= 8 && rng_next(&seed) % 4 != 0)
			set_total(tmp, m);
		if (parse_checked(tmp, m) == 0)
			ok++;
		else
			bad++;
		free(tmp);
	}
	free(good);
	cr_assert_gt(ok, 50, "ok %u", ok);
	cr_assert_gt(bad, 1000, "bad %u", bad);
}

/* Error fields: packed from a getter, found again, and malformed ones refused. */
static const char *diag_get(void *ctx, int code)
{
	const char *const *f = ctx;

	return f[code & 0x7f];
}

Test(proto, resp_diag_pack_find_and_reject)
{
	const char *f[128] = { 0 };
	char buf[256];

	f['S'] = "ERROR";
	f['C'] = "23505";
	f['D'] = "Key (id)=(1) already exists.";
	f['n'] = "t_pkey";
	f['t'] = "";
	uint32_t need = resp_diag_pack(NULL, 0, "SCMDtn", diag_get, f);
	cr_assert_eq(need, 2 + 5 + 2 + 5 + 2 + strlen(f['D']) + 2 + 6 + 2 + 0);
	cr_assert_eq(resp_diag_pack(buf, need - 1, "SCMDtn", diag_get, f), need);
	memset(buf, 'x', sizeof(buf));
	cr_assert_eq(resp_diag_pack(buf, sizeof(buf), "SCMDtn", diag_get, f), need);
	cr_assert_eq(buf[need], 'x', "wrote past what it said it needs");
	for (const char *c = "SCDnt"; *c; c++)
		cr_assert_str_eq(resp_diag_find(buf, need, *c), f[(int)*c], "code %c", *c);
	cr_assert_null(resp_diag_find(buf, need, 'M'));
	cr_assert_null(resp_diag_find(buf, need, 'H'));
	cr_assert_null(resp_diag_find(NULL, 0, 'S'));

	/* round trip through a response, then corruptions of the fields */
	struct table t = { .diag = buf, .diag_len = need };
	struct resp_src src = make_src(&t, "duplicate key", NULL);
	uint64_t total = resp_measure(&src);
	cr_assert_eq(total, expected_total(&t, "duplicate key", NULL));
	uint8_t *blob = emit_whole(&src);
	struct resp_view v;

	cr_assert_eq(resp_parse(blob, total, &v, NULL, NULL, NULL), 0);
	cr_assert_str_eq(resp_diag_find(v.diag, v.diag_len, 'n'), "t_pkey");
	size_t at = item_at(blob, 2) + 4;
	/* a code byte that is NUL */
	blob[at] = '\0';
	cr_assert_eq(parse_checked(blob, total), -1, "NUL code");
	blob[at] = 'S';
	/* the last field's NUL gone: its text runs into the item's end */
	blob[at + need - 1] = 'x';
	cr_assert_eq(parse_checked(blob, total), -1, "unterminated field");
	blob[at + need - 1] = '\0';
	cr_assert_eq(parse_checked(blob, total), 0);
	free(blob);
}

Test(proto, resp_notices_round_trip_and_reject)
{
	/* two notices, each its fields then an empty one */
	static const char notices[] = "SNOTICE\0C00000\0Mfirst\0\0SWARNING\0Msecond\0Hhint\0\0";
	struct table t = { .notices = notices, .notices_len = sizeof(notices) - 1 };
	struct resp_src src = make_src(&t, NULL, "DO");
	uint64_t total = resp_measure(&src);
	struct resp_view v;

	cr_assert_eq(total, expected_total(&t, NULL, "DO"));
	uint8_t *blob = emit_whole(&src);

	cr_assert_eq(resp_parse(blob, total, &v, NULL, NULL, NULL), 0);
	cr_assert_eq(v.notices_len, sizeof(notices) - 1);
	cr_assert_eq(memcmp(v.notices, notices, sizeof(notices) - 1), 0);
	cr_assert_str_eq(resp_diag_find(v.notices, v.notices_len, 'M'), "first");
	/* the last field's NUL gone: it runs into the item's end */
	size_t at = item_at(blob, 3) + 4;
	uint8_t *bad = dup_exact(blob, total);

	bad[at + sizeof(notices) - 2] = 'x';
	bad[at + sizeof(notices) - 3] = 'x';
	cr_assert_eq(parse_checked(bad, total), -1);
	free(bad);
	free(blob);
}

Test(proto, notify_round_trip_and_rejects)
{
	char big[NOTIFY_EXTRA_MAX + 2];
	struct notify_view v;
	uint8_t *buf;
	uint64_t n = notify_encoded_len("jobs", "payload");

	cr_assert_eq(n, sizeof(struct notify_head) + 5 + 8);
	buf = malloc(n);
	cr_assert(buf);
	notify_encode(buf, 4242, NOTIFY_MISSED, "jobs", "payload");
	cr_assert_eq(notify_decode(buf, n, &v), 0);
	cr_expect_eq(v.be_pid, 4242);
	cr_expect_eq(v.flags, NOTIFY_MISSED);
	cr_expect_str_eq(v.relname, "jobs");
	cr_expect_str_eq(v.extra, "payload");
	/* a length off by one either way, a missing or an inner NUL */
	cr_expect_eq(notify_decode(buf, n - 1, &v), -1);
	cr_expect_eq(notify_decode(buf, sizeof(struct notify_head) - 1, &v), -1);
	buf[sizeof(struct notify_head) + 4] = 'x';
	cr_expect_eq(notify_decode(buf, n, &v), -1);
	buf[sizeof(struct notify_head) + 4] = '\0';
	buf[sizeof(struct notify_head) + 1] = '\0';
	cr_expect_eq(notify_decode(buf, n, &v), -1);
	free(buf);
	/* too long to encode */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_expect_eq(notify_encoded_len("jobs", big), 0);
	cr_expect_eq(notify_encoded_len(big + sizeof(big) - 1 - 64, ""), 0);
}
