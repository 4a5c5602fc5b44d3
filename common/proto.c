/* Request and response blobs; see proto.h. */
#include "proto.h"

#include <string.h>

#define MAX_BLOB (1ull << 31)

uint64_t req_encoded_len(const char *sql, uint32_t nparams, const char *const *values)
{
	uint64_t n = sizeof(struct req_head) + strlen(sql) + 1 + 4ull * nparams;

	if (nparams > REQ_MAX_PARAMS)
		return 0;
	for (uint32_t i = 0; i < nparams; i++)
		if (values[i])
			n += strlen(values[i]) + 1;
	return n >= MAX_BLOB ? 0 : n;
}

void req_encode(uint8_t *buf, const char *sql, uint32_t nparams,
		const char *const *values, uint32_t flags)
{
	struct req_head h = {
		.sql_len = (uint32_t)strlen(sql) + 1,
		.nparams = nparams,
		.flags = flags,
	};
	uint8_t *p = buf;

	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	memcpy(p, sql, h.sql_len);
	p += h.sql_len;
	uint8_t *lens = p;
	p += 4ull * nparams;
	for (uint32_t i = 0; i < nparams; i++) {
		int32_t len = -1;

		if (values[i]) {
			len = (int32_t)strlen(values[i]);
			memcpy(p, values[i], (size_t)len + 1);
			p += len + 1;
		}
		memcpy(lens + 4ull * i, &len, 4);
	}
}

int req_decode(const uint8_t *buf, uint64_t n, struct req_view *v, const char **why)
{
	struct req_head h;
	uint64_t at;

	if (n < sizeof(h) || n >= MAX_BLOB) {
		*why = "request size out of range";
		return -1;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.sql_len == 0 || h.sql_len > n - sizeof(h)) {
		*why = "statement length out of range";
		return -1;
	}
	if (h.nparams > REQ_MAX_PARAMS) {
		*why = "too many parameters";
		return -1;
	}
	at = sizeof(h) + h.sql_len;
	if (buf[at - 1] != '\0' || memchr(buf + sizeof(h), '\0', h.sql_len) != buf + at - 1) {
		*why = "statement text is not a string";
		return -1;
	}
	if (4ull * h.nparams > n - at) {
		*why = "parameter lengths out of range";
		return -1;
	}
	v->sql = (const char *)buf + sizeof(h);
	v->nparams = h.nparams;
	v->flags = h.flags;
	v->lens = buf + at;
	at += 4ull * h.nparams;
	v->data = (const char *)buf + at;
	for (uint32_t i = 0; i < h.nparams; i++) {
		int32_t len;

		memcpy(&len, v->lens + 4ull * i, 4);
		if (len == -1)
			continue;
		if (len < 0 || (uint64_t)len + 1 > n - at || buf[at + (uint64_t)len] != '\0') {
			*why = "parameter value out of range";
			return -1;
		}
		at += (uint64_t)len + 1;
	}
	if (at != n) {
		*why = "trailing bytes after the parameters";
		return -1;
	}
	return 0;
}

void req_params(const struct req_view *v, const char **vals)
{
	const char *p = v->data;

	for (uint32_t i = 0; i < v->nparams; i++) {
		int32_t len;

		memcpy(&len, v->lens + 4ull * i, 4);
		if (len == -1) {
			vals[i] = NULL;
			continue;
		}
		vals[i] = p;
		p += len + 1;
	}
}

/* --- batches --- */

#define BATCH_PREFIX (sizeof(struct req_head) + 1 + 4)

uint64_t batch_encoded_len(const struct req_stmt *stmts, uint32_t n)
{
	uint64_t total = BATCH_PREFIX;

	if (n == 0 || n > REQ_MAX_BATCH)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t one;

		if (!stmts[i].sql)
			return 0;
		one = req_encoded_len(stmts[i].sql, stmts[i].nparams, stmts[i].values);
		if (one == 0 || one > UINT32_MAX)
			return 0;
		total += 4 + one;
	}
	return total >= MAX_BLOB ? 0 : total;
}

void batch_encode(uint8_t *buf, const struct req_stmt *stmts, uint32_t n, uint32_t flags)
{
	uint8_t *p = buf + BATCH_PREFIX;

	req_encode(buf, "", 0, NULL, flags | REQ_BATCH);
	memcpy(buf + sizeof(struct req_head) + 1, &n, 4);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t one = (uint32_t)req_encoded_len(stmts[i].sql, stmts[i].nparams,
							 stmts[i].values);

		memcpy(p, &one, 4);
		req_encode(p + 4, stmts[i].sql, stmts[i].nparams, stmts[i].values, 0);
		p += 4 + one;
	}
}

int batch_count(const uint8_t *buf, uint64_t n, uint32_t *count, const char **why)
{
	struct req_head h;

	if (n < BATCH_PREFIX) {
		*why = "batch too short";
		return -1;
	}
	memcpy(&h, buf, sizeof(h));
	if (!(h.flags & REQ_BATCH) || h.sql_len != 1 || h.nparams != 0 ||
	    buf[sizeof(h)] != '\0') {
		*why = "malformed batch header";
		return -1;
	}
	memcpy(count, buf + sizeof(h) + 1, 4);
	if (*count == 0 || *count > REQ_MAX_BATCH || (uint64_t)*count * 4 > n - BATCH_PREFIX) {
		*why = "batch statement count out of range";
		return -1;
	}
	return 0;
}

int batch_decode(const uint8_t *buf, uint64_t n, struct req_view *views, const char **why)
{
	uint64_t at = BATCH_PREFIX;
	uint32_t count;

	if (batch_count(buf, n, &count, why) < 0)
		return -1;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t one;

		if (n - at < 4) {
			*why = "batch truncated";
			return -1;
		}
		memcpy(&one, buf + at, 4);
		at += 4;
		if (one > n - at) {
			*why = "batch statement length out of range";
			return -1;
		}
		if (req_decode(buf + at, one, &views[i], why) < 0)
			return -1;
		if (views[i].flags & REQ_BATCH) {
			*why = "nested batch";
			return -1;
		}
		at += one;
	}
	if (at != n) {
		*why = "trailing bytes after the batch";
		return -1;
	}
	return 0;
}

/* --- responses --- */

/* Items: 0 the head, 1 err, 2 cmd, 3 error fields, then the columns, then
 * the values. */
#define ITEM_DIAG 3u
#define ITEM_NOTICES 4u
#define ITEM_COLS 5u
/* PostgreSQL's fields are far shorter; this bounds what 64 codes can add. */
#define RESP_DIAG_FIELD_MAX (1u << 24)

uint32_t resp_diag_pack(char *buf, uint32_t cap, const char *codes,
			const char *(*get)(void *ctx, int code), void *ctx)
{
	uint32_t need = 0;

	for (const char *c = codes; *c; c++) {
		const char *s = get(ctx, *c);
		size_t len;

		if (!s)
			continue;
		len = strlen(s);
		if (len > RESP_DIAG_FIELD_MAX)
			len = RESP_DIAG_FIELD_MAX; /* cut: the sum never wraps */
		if (buf && need + len + 2 <= cap) {
			buf[need] = *c;
			memcpy(buf + need + 1, s, len);
			buf[need + 1 + len] = '\0';
		}
		need += (uint32_t)len + 2;
	}
	return need;
}

/* len bytes of packed fields: each a code byte (not NUL), text, NUL. */
static int diag_check(const char *d, uint32_t len)
{
	const char *end = d + len;

	while (d < end) {
		const char *nul;

		if (*d == '\0' || !(nul = memchr(d + 1, '\0', (size_t)(end - d - 1))))
			return -1;
		d = nul + 1;
	}
	return 0;
}

/* len bytes of packed notices: fields as diag_check, a NUL after each
 * notice's last one. */
static int notices_check(const char *d, uint32_t len)
{
	const char *end = d + len;

	while (d < end) {
		const char *nul;

		if (*d == '\0') {
			d++;
			continue;
		}
		if (!(nul = memchr(d + 1, '\0', (size_t)(end - d - 1))))
			return -1;
		d = nul + 1;
	}
	return 0;
}

const char *resp_diag_find(const char *diag, uint32_t len, int code)
{
	const char *end = diag + len;

	while (diag && diag < end) {
		if (*diag == code)
			return diag + 1;
		diag += strlen(diag + 1) + 2;
	}
	return NULL;
}

/* One item as up to four pieces: its length word (or the whole head), a
 * column descriptor, its bytes, the NUL. pre and desc live here. */
struct item {
	const uint8_t *part[4];
	uint32_t size[4];
	uint32_t n;
	uint8_t pre[4];
	uint8_t desc[RESP_COL_DESC];
};

static void item_put(struct item *it, const void *p, uint32_t size)
{
	it->part[it->n] = p;
	it->size[it->n++] = size;
}

static void item_get(const struct resp_src *src, uint64_t item, struct item *it)
{
	uint64_t nf = src->head.nfields;
	const char *s;
	uint32_t len, desc = 0;

	it->n = 0;
	if (item == 0) {
		item_put(it, &src->head, sizeof(src->head));
		return;
	}
	if (item < ITEM_DIAG) {
		s = item == 1 ? src->err : src->cmd;
		s = s ? s : "";
		len = (uint32_t)strlen(s);
	} else if (item == ITEM_DIAG) {
		s = src->diag ? src->diag : "";
		len = src->diag ? src->diag_len : 0;
	} else if (item == ITEM_NOTICES) {
		s = src->notices ? src->notices : "";
		len = src->notices ? src->notices_len : 0;
	} else if (item - ITEM_COLS < nf) {
		uint32_t col = (uint32_t)(item - ITEM_COLS), oid = 0;
		int32_t mod = -1;

		s = src->fname(src->ctx, col);
		len = (uint32_t)strlen(s);
		if (src->ftype)
			src->ftype(src->ctx, col, &oid, &mod);
		memcpy(it->desc, &oid, 4);
		memcpy(it->desc + 4, &mod, 4);
		desc = RESP_COL_DESC;
	} else if (src->rows) {
		/* the rows, encoded already: one piece */
		item_put(it, src->rows, (uint32_t)src->rows_len);
		return;
	} else {
		item -= ITEM_COLS + nf;
		s = src->value(src->ctx, (uint32_t)(item / nf), (uint32_t)(item % nf), &len);
	}
	if (!s) {
		memcpy(it->pre, &(uint32_t){ RESP_NULL }, 4);
		item_put(it, it->pre, 4);
		return;
	}
	len += desc;
	memcpy(it->pre, &len, 4);
	item_put(it, it->pre, 4);
	if (desc)
		item_put(it, it->desc, desc);
	item_put(it, s, len - desc);
	item_put(it, "", 1);
}

static uint64_t item_count(const struct resp_src *src)
{
	if (src->rows)
		return ITEM_COLS + (uint64_t)src->head.nfields + (src->rows_len ? 1 : 0);
	return ITEM_COLS + (uint64_t)src->head.nfields * (1 + (uint64_t)src->head.ntuples);
}

uint64_t resp_measure(struct resp_src *src)
{
	uint64_t total = sizeof(struct resp_head);
	uint64_t items;
	struct item it;

	if (src->head.nfields == 0)
		src->head.ntuples = 0;
	if (src->rows && (src->rows_len >= MAX_BLOB || (src->head.nfields == 0 && src->rows_len)))
		return src->head.total = 0;
	items = item_count(src);
	for (uint64_t i = 1; i < items; i++) {
		item_get(src, i, &it);
		for (uint32_t k = 0; k < it.n; k++)
			total += it.size[k];
		if (total >= MAX_BLOB)
			return src->head.total = 0;
	}
	return src->head.total = total;
}

uint32_t resp_emit(struct resp_cursor *cur, const struct resp_src *src,
		   struct ring *r, uint32_t off, uint32_t max)
{
	uint64_t items = item_count(src);
	uint32_t put = 0;
	struct item it;

	while (put < max && cur->item < items) {
		uint32_t whole = 0;

		item_get(src, cur->item, &it);
		/* Skip what earlier calls already emitted of this item. */
		uint32_t skip = cur->off;
		for (uint32_t i = 0; i < it.n && put < max; i++) {
			if (skip >= it.size[i]) {
				skip -= it.size[i];
				continue;
			}
			uint32_t n = it.size[i] - skip;
			if (n > max - put)
				n = max - put;
			ring_write(r, off + put, it.part[i] + skip, n);
			put += n;
			cur->off += n;
			skip = 0;
		}
		for (uint32_t i = 0; i < it.n; i++)
			whole += it.size[i];
		if (cur->off == whole) {
			cur->item++;
			cur->off = 0;
		}
	}
	cur->done += put;
	return put;
}

static int status_known(uint32_t st)
{
	return st <= RESP_COPY_IN || st == RESP_FATAL_ERROR;
}

int resp_parse_head(const uint8_t *buf, uint64_t n, struct resp_head *h)
{
	if (n < sizeof(*h))
		return -1;
	memcpy(h, buf, sizeof(*h));
	if (h->total != n || (h->nfields == 0 && h->ntuples != 0) || !status_known(h->status))
		return -1;
	/* every item takes at least 4 bytes; the count fits in 64 bits, the
	 * count times 4 may not, so divide n instead */
	if (ITEM_COLS + (uint64_t)h->nfields * (1 + (uint64_t)h->ntuples) > n / 4)
		return -1;
	h->sqlstate[7] = '\0';
	return 0;
}

static int take_item(const uint8_t *buf, uint64_t n, uint64_t *at, const char **s,
		     uint32_t *len)
{
	if (n - *at < 4)
		return -1;
	memcpy(len, buf + *at, 4);
	*at += 4;
	if (*len == RESP_NULL) {
		*s = NULL;
		return 0;
	}
	if ((uint64_t)*len + 1 > n - *at || buf[*at + *len] != '\0')
		return -1;
	*s = (const char *)buf + *at;
	*at += (uint64_t)*len + 1;
	return 0;
}

int resp_parse(const uint8_t *buf, uint64_t n, struct resp_view *v,
	       const char **fnames, const char **vals, uint32_t *lens)
{
	uint64_t at = sizeof(struct resp_head);
	uint64_t cells;
	uint32_t len;

	if (resp_parse_head(buf, n, &v->head) < 0)
		return -1;
	if (take_item(buf, n, &at, &v->err, &len) < 0 || !v->err ||
	    take_item(buf, n, &at, &v->cmd, &len) < 0 || !v->cmd ||
	    take_item(buf, n, &at, &v->diag, &v->diag_len) < 0 || !v->diag ||
	    diag_check(v->diag, v->diag_len) < 0 ||
	    take_item(buf, n, &at, &v->notices, &v->notices_len) < 0 || !v->notices ||
	    notices_check(v->notices, v->notices_len) < 0)
		return -1;
	for (uint32_t i = 0; i < v->head.nfields; i++) {
		if (take_item(buf, n, &at, &fnames[i], &len) < 0 || !fnames[i] ||
		    len < RESP_COL_DESC)
			return -1;
		fnames[i] += RESP_COL_DESC;
	}
	cells = (uint64_t)v->head.ntuples * v->head.nfields;
	for (uint64_t i = 0; i < cells; i++) {
		if (take_item(buf, n, &at, &vals[i], &lens[i]) < 0)
			return -1;
		if (!vals[i])
			lens[i] = 0;
	}
	return at == n ? 0 : -1;
}

/* --- COPY --- */

int copy_chunk_next(const uint8_t *buf, uint64_t n, uint64_t *at, const uint8_t **row,
		    uint32_t *len)
{
	if (*at == n)
		return 0;
	if (*at > n || n - *at < 4)
		return -1;
	memcpy(len, buf + *at, 4);
	if (*len > COPY_ROW_MAX || *len > n - *at - 4)
		return -1;
	*row = buf + *at + 4;
	*at += 4 + (uint64_t)*len;
	return 1;
}

uint32_t copy_end_len(const char *errmsg)
{
	size_t len = errmsg ? strnlen(errmsg, COPY_END_MSG_MAX) : 0;

	return 2 + (uint32_t)len;
}

void copy_end_encode(uint8_t *buf, const char *errmsg)
{
	uint32_t len = copy_end_len(errmsg) - 2;

	buf[0] = errmsg ? COPY_END_FAIL : COPY_END_DONE;
	if (len)
		memcpy(buf + 1, errmsg, len);
	buf[1 + len] = '\0';
}

int copy_end_decode(const uint8_t *buf, uint32_t n, const char **errmsg)
{
	if (n < 2 || n > 2 + COPY_END_MSG_MAX || buf[n - 1] != '\0' ||
	    memchr(buf + 1, '\0', n - 1) != buf + n - 1)
		return -1;
	if (buf[0] == COPY_END_DONE && n == 2) {
		*errmsg = NULL;
		return 0;
	}
	if (buf[0] != COPY_END_FAIL)
		return -1;
	*errmsg = (const char *)buf + 1;
	return 0;
}

/* --- notifications --- */

uint64_t notify_encoded_len(const char *relname, const char *extra)
{
	size_t rl = strlen(relname), el = strlen(extra);

	if (rl > NOTIFY_NAME_MAX || el > NOTIFY_EXTRA_MAX)
		return 0;
	return sizeof(struct notify_head) + rl + 1 + el + 1;
}

void notify_encode(uint8_t *buf, int32_t be_pid, uint32_t flags, const char *relname,
		   const char *extra)
{
	struct notify_head h = {
		.be_pid = be_pid,
		.flags = flags,
		.relname_len = (uint32_t)strlen(relname),
		.extra_len = (uint32_t)strlen(extra),
	};

	memcpy(buf, &h, sizeof(h));
	buf += sizeof(h);
	memcpy(buf, relname, h.relname_len + 1);
	buf += h.relname_len + 1;
	memcpy(buf, extra, h.extra_len + 1);
}

int notify_decode(const uint8_t *buf, uint64_t n, struct notify_view *v)
{
	struct notify_head h;
	const uint8_t *rel, *extra;

	if (n < sizeof(h))
		return -1;
	memcpy(&h, buf, sizeof(h));
	if (h.relname_len > NOTIFY_NAME_MAX || h.extra_len > NOTIFY_EXTRA_MAX ||
	    n != sizeof(h) + (uint64_t)h.relname_len + 1 + h.extra_len + 1)
		return -1;
	rel = buf + sizeof(h);
	extra = rel + h.relname_len + 1;
	if (rel[h.relname_len] != '\0' || memchr(rel, '\0', h.relname_len) ||
	    extra[h.extra_len] != '\0' || memchr(extra, '\0', h.extra_len))
		return -1;
	v->be_pid = h.be_pid;
	v->flags = h.flags;
	v->relname = (const char *)rel;
	v->extra = (const char *)extra;
	return 0;
}
