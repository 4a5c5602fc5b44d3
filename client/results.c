/* libpgbroker: pgb_result, built from a response blob or made here for
 * an error of our own, and its accessors. */
#include "clock.h"
#include "pgbroker.h"
#include "internal.h"
#include "conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errform.h"
#include "proto.h"

/* An error without PostgreSQL's fields (the broker's own, or one made
 * here): keep its text without "ERROR:  " and the newline, the primary
 * message pgb_result_error_field answers. Out of memory it answers NULL. */
static void keep_primary(pgb_result *r)
{
	const char *text;
	int len;

	if (r->v.head.ok || r->v.diag_len || !r->v.err)
		return;
	text = errform_text(r->v.err, &len);
	r->primary = strndup(text, (size_t)len);
}

pgb_result *pgbi_local_error(const char *sqlstate, const char *fmt, ...)
{
	pgb_result *r = calloc(1, sizeof(*r));
	va_list ap;

	if (!r)
		return NULL;
	r->magic = RESULT_LIVE;
	va_start(ap, fmt);
	errform_v(r->local_err, sizeof(r->local_err), fmt, ap);
	va_end(ap);
	snprintf(r->v.head.sqlstate, sizeof(r->v.head.sqlstate), "%s", sqlstate);
	r->v.err = r->local_err;
	r->v.cmd = "";
	keep_primary(r);
	return r;
}

pgb_result *pgbi_build_result(uint8_t *blob, uint64_t n)
{
	pgb_result *r = calloc(1, sizeof(*r));
	struct resp_head h;
	uint64_t cells;

	if (!r)
		return NULL;
	r->magic = RESULT_LIVE;
	if (resp_parse_head(blob, n, &h) < 0)
		goto bad;
	cells = (uint64_t)h.ntuples * h.nfields;
	r->fnames = malloc(sizeof(char *) * (h.nfields + 1));
	r->vals = malloc(sizeof(char *) * (cells + 1));
	r->lens = malloc(sizeof(uint32_t) * (cells + 1));
	if (!r->fnames || !r->vals || !r->lens)
		goto bad;
	if (resp_parse(blob, n, &r->v, r->fnames, r->vals, r->lens) < 0)
		goto bad;
	r->blob = blob;
	keep_primary(r);
	return r;
bad:
	free(r->fnames);
	free(r->vals);
	free(r->lens);
	free(blob);
	memset(r, 0, sizeof(*r));
	r->magic = RESULT_LIVE;
	snprintf(r->local_err, sizeof(r->local_err), ERRFORM_PREFIX "malformed response from broker\n");
	snprintf(r->v.head.sqlstate, sizeof(r->v.head.sqlstate), "%s", PGB_SQLSTATE_BAD_REQUEST);
	r->v.err = r->local_err;
	r->v.cmd = "";
	keep_primary(r);
	return r;
}

PGB_API int pgb_result_ok(const pgb_result *r)
{
	return r && r->v.head.ok;
}

PGB_API const char *pgb_result_error(const pgb_result *r)
{
	return r ? r->v.err : "no result";
}

PGB_API const char *pgb_sqlstate(const pgb_result *r)
{
	return r ? r->v.head.sqlstate : PGB_SQLSTATE_NOT_CONNECTED;
}

PGB_API int pgb_ntuples(const pgb_result *r)
{
	return r ? (int)r->v.head.ntuples : 0;
}

PGB_API int pgb_nfields(const pgb_result *r)
{
	return r ? (int)r->v.head.nfields : 0;
}

PGB_API const char *pgb_fname(const pgb_result *r, int col)
{
	if (!r || col < 0 || (uint32_t)col >= r->v.head.nfields)
		return NULL;
	return r->fnames[col];
}

static int cell(const pgb_result *r, int row, int col, uint64_t *i)
{
	if (!r || row < 0 || col < 0 || (uint32_t)row >= r->v.head.ntuples ||
	    (uint32_t)col >= r->v.head.nfields)
		return -1;
	*i = (uint64_t)row * r->v.head.nfields + (uint32_t)col;
	return 0;
}

PGB_API const char *pgb_getvalue(const pgb_result *r, int row, int col)
{
	uint64_t i;

	if (cell(r, row, col, &i) < 0)
		return NULL;
	return r->vals[i] ? r->vals[i] : "";
}

PGB_API int pgb_getisnull(const pgb_result *r, int row, int col)
{
	uint64_t i;

	if (cell(r, row, col, &i) < 0)
		return 1;
	return r->vals[i] == NULL;
}

PGB_API int pgb_getlength(const pgb_result *r, int row, int col)
{
	uint64_t i;

	if (cell(r, row, col, &i) < 0)
		return 0;
	return (int)r->lens[i];
}

PGB_API long long pgb_cmd_tuples(const pgb_result *r)
{
	return r ? (long long)r->v.head.cmd_tuples : 0;
}

PGB_API const char *pgb_cmd_status(const pgb_result *r)
{
	return r ? r->v.cmd : "";
}

PGB_API pgb_exec_status pgb_result_status(const pgb_result *r)
{
	/* Local errors and copies of errors leave status 0: ok decides. */
	if (!r || !r->v.head.ok)
		return PGB_FATAL_ERROR;
	if (r->v.head.flags & RESP_ROWS)
		return PGB_TUPLES_CHUNK;
	return (pgb_exec_status)r->v.head.status;
}

PGB_API unsigned int pgb_ftype(const pgb_result *r, int col)
{
	uint32_t oid;
	int32_t mod;

	if (!r || col < 0 || (uint32_t)col >= r->v.head.nfields)
		return 0;
	resp_col_desc(r->fnames[col], &oid, &mod);
	return oid;
}

PGB_API int pgb_fmod(const pgb_result *r, int col)
{
	uint32_t oid;
	int32_t mod;

	if (!r || col < 0 || (uint32_t)col >= r->v.head.nfields)
		return -1;
	resp_col_desc(r->fnames[col], &oid, &mod);
	return mod;
}

PGB_API const char *pgb_result_error_field(const pgb_result *r, int field)
{
	const char *s;

	if (!r || r->v.head.ok)
		return NULL;
	s = resp_diag_find(r->v.diag, r->v.diag_len, field);
	if (s || r->v.diag_len)
		return s;
	/* No fields: the broker's own error, or one made here. */
	switch (field) {
	case PGB_DIAG_SEVERITY:
	case PGB_DIAG_SEVERITY_NONLOCALIZED:
		return "ERROR";
	case PGB_DIAG_SQLSTATE:
		return r->v.head.sqlstate;
	case PGB_DIAG_MESSAGE_PRIMARY:
		return r->primary;
	default:
		return NULL;
	}
}

PGB_API void pgb_clear(pgb_result *r)
{
	if (!r)
		return;
#ifndef NDEBUG
	/* A result cleared twice: say so instead of corrupting the heap. */
	if (r->magic != RESULT_LIVE) {
		fprintf(stderr, "libpgbroker: pgb_clear(%p): %s\n", (void *)r,
			r->magic == RESULT_DEAD ? "result already cleared" : "not a result");
		abort();
	}
#endif
	*(volatile uint32_t *)&r->magic = RESULT_DEAD;  /* must survive the free below */
	free(r->blob);
	free(r->primary);
	free(r->fnames);
	free(r->vals);
	free(r->lens);
	for (uint32_t i = 0; i < r->nblobs; i++)
		free(r->blobs[i]);
	free(r->blobs);
	free(r);
}
