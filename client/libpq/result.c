/* PGresult: a broker's answer wrapped without copying its values, or a
 * result made here (errors, PQmakeEmptyPGresult, PQcopyResult,
 * PQsetvalue); every accessor of libpq-fe.h. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face.h"
#include "errform.h"
#include "internal.h"

#define NAMEDATALEN_NAME_CHARS 63

/* PQresultAlloc memory: blocks freed with the result. */
struct face_block {
	struct face_block *next;
	max_align_t data[];
};

FACE_API char *const pgresStatus[] = {
	"PGRES_EMPTY_QUERY", "PGRES_COMMAND_OK", "PGRES_TUPLES_OK", "PGRES_COPY_OUT",
	"PGRES_COPY_IN", "PGRES_BAD_RESPONSE", "PGRES_NONFATAL_ERROR", "PGRES_FATAL_ERROR",
	"PGRES_COPY_BOTH", "PGRES_SINGLE_TUPLE", "PGRES_PIPELINE_SYNC", "PGRES_PIPELINE_ABORTED",
};

FACE_API void *PQresultAlloc(PGresult *res, size_t nBytes)
{
	struct face_block *b;

	if (!res)
		return NULL;
	b = malloc(sizeof(*b) + (nBytes ? nBytes : 1));
	if (!b)
		return NULL;
	b->next = res->blocks;
	res->blocks = b;
	res->memsize += nBytes;
	return b->data;
}

char *face_result_strdup(PGresult *res, const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = PQresultAlloc(res, n);

	if (d)
		memcpy(d, s, n);
	return d;
}

PGresult *face_result_new(PGconn *conn, ExecStatusType st)
{
	PGresult *res = calloc(1, sizeof(*res));

	if (!res)
		return NULL;
	res->status = st;
	res->errmsg = NULL;
	res->client_encoding = conn ? conn->client_encoding : 6 /* UTF8 */;
	if (conn) {
		res->notice_proc = conn->notice_proc;
		res->notice_proc_arg = conn->notice_proc_arg;
	}
	res->memsize = sizeof(*res);
	return res;
}

/* Our own error fields, packed "Ctext\0...\0". */
static void set_fields(PGresult *res, const char *state, const char *msg, int len)
{
	size_t n = 2 + strlen("ERROR") + 1 + 2 + strlen("ERROR") + 1 + 2 + 5 + 1 + (size_t)len + 2 + 1;
	char *f = malloc(n), *p = f;

	if (!f)
		return;
	p += sprintf(p, "S%s", "ERROR") + 1;
	p += sprintf(p, "V%s", "ERROR") + 1;
	p += sprintf(p, "C%.5s", state) + 1;
	p += sprintf(p, "M%.*s", len, msg) + 1;
	*p = '\0';
	res->fields = f;
}

PGresult *face_result_error(PGconn *conn, const char *state, const char *fmt, ...)
{
	PGresult *res = face_result_new(conn, PGRES_FATAL_ERROR);
	char buf[1024];
	const char *text;
	va_list ap;
	int len;

	if (!res)
		return NULL;
	va_start(ap, fmt);
	errform_v(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	res->errmsg = strdup(buf);
	text = errform_text(buf, &len);
	set_fields(res, state, text, len);
	return res;
}

static ExecStatusType status_of(const pgb_result *r)
{
	switch (pgb_result_status(r)) {
	case PGB_EMPTY_QUERY:
		return PGRES_EMPTY_QUERY;
	case PGB_COMMAND_OK:
		return PGRES_COMMAND_OK;
	case PGB_TUPLES_OK:
		return PGRES_TUPLES_OK;
	case PGB_COPY_OUT:
		return PGRES_COPY_OUT;
	case PGB_COPY_IN:
		return PGRES_COPY_IN;
	default:
		return PGRES_FATAL_ERROR;
	}
}

/* The notices that came with r, one PGRES_NONFATAL_ERROR result each, to
 * the connection's notice receiver (libpq's default prints them). */
static void deliver_notices(PGconn *conn, const pgb_result *r)
{
	uint32_t len;
	const char *p = pgbi_result_notices(r, &len), *end = p + len;

	while (p && p < end) {
		const char *q = p;
		PGresult *res;

		while (q < end && *q)
			q += strlen(q) + 1;
		if (q >= end)
			break;
		res = face_result_new(conn, PGRES_NONFATAL_ERROR);
		if (!res)
			return;
		res->fields = malloc((size_t)(q - p) + 1);
		if (res->fields) {
			memcpy(res->fields, p, (size_t)(q - p) + 1);
			res->errmsg = PQresultVerboseErrorMessage(res, conn->verbosity,
								  conn->show_context);
			if (conn->notice_rcv && res->errmsg)
				conn->notice_rcv(conn->notice_rcv_arg, res);
		}
		PQclear(res);
		p = q + 1;
	}
}

PGresult *face_result_wrap(PGconn *conn, pgb_result *r)
{
	PGresult *res;
	size_t cells;

	if (!r)
		return NULL;
	if (conn)
		deliver_notices(conn, r);
	res = face_result_new(conn, status_of(r));
	if (!res) {
		pgb_clear(r);
		return NULL;
	}
	res->src = r;
	res->ntups = pgb_ntuples(r);
	res->nfields = pgb_nfields(r);
	snprintf(res->cmd, sizeof(res->cmd), "%s", pgb_cmd_status(r));
	if (res->status == PGRES_FATAL_ERROR)
		res->errmsg = strdup(pgb_result_error(r));
	cells = (size_t)res->ntups * (size_t)res->nfields;
	if (res->nfields) {
		res->att = calloc((size_t)res->nfields, sizeof(*res->att));
		if (!res->att)
			goto nomem;
		for (int j = 0; j < res->nfields; j++) {
			res->att[j].name = (char *)pgb_fname(r, j);
			res->att[j].typid = pgb_ftype(r, j);
			res->att[j].atttypmod = pgb_fmod(r, j);
			res->att[j].typlen = 0;
			res->att[j].format = 0;
		}
	}
	if (cells) {
		res->vals = malloc(cells * sizeof(*res->vals));
		res->lens = malloc(cells * sizeof(*res->lens));
		if (!res->vals || !res->lens)
			goto nomem;
		for (int i = 0; i < res->ntups; i++)
			for (int j = 0; j < res->nfields; j++) {
				size_t k = (size_t)i * (size_t)res->nfields + (size_t)j;

				res->vals[k] = pgb_getisnull(r, i, j) ? NULL
								      : (char *)pgb_getvalue(r, i, j);
				res->lens[k] = pgb_getlength(r, i, j);
			}
		res->capvals = res->ntups;
	}
	return res;
nomem:
	PQclear(res);
	return NULL;
}

FACE_API void PQclear(PGresult *res)
{
	if (!res)
		return;
	pgb_clear(res->src);
	while (res->blocks) {
		struct face_block *b = res->blocks;

		res->blocks = b->next;
		free(b);
	}
	free(res->att);
	free(res->vals);
	free(res->lens);
	free(res->errmsg);
	free(res->fields);
	free(res->paramtypes);
	free(res);
}

FACE_API ExecStatusType PQresultStatus(const PGresult *res)
{
	return res ? res->status : PGRES_FATAL_ERROR;
}

FACE_API char *PQresStatus(ExecStatusType status)
{
	if ((unsigned)status >= sizeof(pgresStatus) / sizeof(pgresStatus[0]))
		return "invalid ExecStatusType code";
	return pgresStatus[status];
}

FACE_API char *PQresultErrorMessage(const PGresult *res)
{
	return res && res->errmsg ? res->errmsg : "";
}

FACE_API char *PQresultErrorField(const PGresult *res, int fieldcode)
{
	if (!res)
		return NULL;
	if (res->src)
		return (char *)pgb_result_error_field(res->src, fieldcode);
	for (const char *p = res->fields; p && *p; p += strlen(p) + 1)
		if (*p == fieldcode)
			return (char *)p + 1;
	return NULL;
}

/* libpq's message for a verbosity: "SEVERITY:  [SQLSTATE: ]primary\n"
 * then DETAIL, HINT, (verbose) QUERY/CONTEXT/LOCATION lines. */
FACE_API char *PQresultVerboseErrorMessage(const PGresult *res, PGVerbosity verbosity,
					   PGContextVisibility show_context)
{
	const char *sev, *state, *prim, *f;
	size_t cap = 1024;
	char *out, *p;
	int n;

	if (!res || (res->status != PGRES_FATAL_ERROR && res->status != PGRES_NONFATAL_ERROR))
		return strdup("PGresult is not an error result\n");
	sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	prim = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	for (const char *c = "DHWqFLR"; *c; c++)
		if ((f = PQresultErrorField(res, *c)))
			cap += strlen(f) + 32;
	if (prim)
		cap += strlen(prim);
	out = p = malloc(cap);
	if (!out)
		return NULL;
	if (!prim) {
		snprintf(out, cap, "%s", PQresultErrorMessage(res));
		return out;
	}
	n = snprintf(p, cap, "%s:  ", sev ? sev : "ERROR");
	p += n;
	if (verbosity == PQERRORS_VERBOSE && state)
		p += sprintf(p, "%s: ", state);
	if (verbosity == PQERRORS_SQLSTATE && state) {
		p += sprintf(p, "%s\n", state);
		return out;
	}
	p += sprintf(p, "%s\n", prim);
	if (verbosity != PQERRORS_TERSE) {
		if ((f = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL)))
			p += sprintf(p, "DETAIL:  %s\n", f);
		if ((f = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT)))
			p += sprintf(p, "HINT:  %s\n", f);
		if ((f = PQresultErrorField(res, PG_DIAG_INTERNAL_QUERY)))
			p += sprintf(p, "QUERY:  %s\n", f);
		if (show_context == PQSHOW_CONTEXT_ALWAYS ||
		    (show_context == PQSHOW_CONTEXT_ERRORS && sev && strcmp(sev, "ERROR") == 0) ||
		    (show_context == PQSHOW_CONTEXT_ERRORS && !sev))
			if ((f = PQresultErrorField(res, PG_DIAG_CONTEXT)))
				p += sprintf(p, "CONTEXT:  %s\n", f);
	}
	if (verbosity == PQERRORS_VERBOSE) {
		const char *file = PQresultErrorField(res, PG_DIAG_SOURCE_FILE);
		const char *line = PQresultErrorField(res, PG_DIAG_SOURCE_LINE);
		const char *fn = PQresultErrorField(res, PG_DIAG_SOURCE_FUNCTION);

		if (file || fn) {
			p += sprintf(p, "LOCATION:  ");
			if (fn)
				p += sprintf(p, "%s, ", fn);
			if (file)
				p += sprintf(p, "%s:%s", file, line ? line : "");
			p += sprintf(p, "\n");
		}
	}
	return out;
}

FACE_API int PQntuples(const PGresult *res)
{
	return res ? res->ntups : 0;
}

FACE_API int PQnfields(const PGresult *res)
{
	return res ? res->nfields : 0;
}

FACE_API int PQbinaryTuples(const PGresult *res)
{
	(void)res;
	return 0;
}

static int col_ok(const PGresult *res, int col)
{
	return res && col >= 0 && col < res->nfields;
}

static int cell_ok(const PGresult *res, int row, int col)
{
	return col_ok(res, col) && row >= 0 && row < res->ntups;
}

FACE_API char *PQfname(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].name : NULL;
}

/* libpq's rules: unquoted names fold to lower case, "quoted" ones keep
 * their case, "" inside quotes is one quote. */
FACE_API int PQfnumber(const PGresult *res, const char *field_name)
{
	char *name;
	int in_quotes = 0, j = 0;

	if (!res || !field_name || !field_name[0] || !res->nfields)
		return -1;
	name = malloc(strlen(field_name) + 1);
	if (!name)
		return -1;
	for (const char *p = field_name; *p; p++) {
		char ch = *p;

		if (in_quotes) {
			if (ch == '"') {
				if (p[1] == '"') {
					name[j++] = '"';
					p++;
				} else {
					in_quotes = 0;
				}
			} else {
				name[j++] = ch;
			}
		} else if (ch == '"') {
			in_quotes = 1;
		} else {
			name[j++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 'a' - 'A') : ch;
		}
	}
	name[j] = '\0';
	for (int i = 0; i < res->nfields; i++)
		if (strcmp(name, res->att[i].name) == 0) {
			free(name);
			return i;
		}
	free(name);
	return -1;
}

FACE_API Oid PQftable(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].tableid : InvalidOid;
}

FACE_API int PQftablecol(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].columnid : 0;
}

FACE_API int PQfformat(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].format : 0;
}

FACE_API Oid PQftype(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].typid : InvalidOid;
}

FACE_API int PQfsize(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].typlen : 0;
}

FACE_API int PQfmod(const PGresult *res, int field_num)
{
	return col_ok(res, field_num) ? res->att[field_num].atttypmod : 0;
}

FACE_API char *PQcmdStatus(PGresult *res)
{
	return res ? res->cmd : NULL;
}

/* The OID of an INSERT of one row ("INSERT oid 1"), else InvalidOid. */
FACE_API Oid PQoidValue(const PGresult *res)
{
	unsigned long v;
	char *end;

	if (!res || strncmp(res->cmd, "INSERT ", 7) != 0)
		return InvalidOid;
	v = strtoul(res->cmd + 7, &end, 10);
	return *end == ' ' ? (Oid)v : InvalidOid;
}

FACE_API char *PQoidStatus(const PGresult *res)
{
	static __thread char buf[24];

	if (!res || strncmp(res->cmd, "INSERT ", 7) != 0)
		return "";
	snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(res->cmd + 7, " "), res->cmd + 7);
	return buf;
}

/* The row count of the tags that have one, as libpq: "" for the others. */
FACE_API char *PQcmdTuples(PGresult *res)
{
	static const char *const tags[] = { "SELECT ", "DELETE ", "UPDATE ", "MERGE ",
					     "MOVE ", "FETCH ", "COPY " };
	char *p;

	if (!res)
		return "";
	if (strncmp(res->cmd, "INSERT ", 7) == 0) {
		p = strchr(res->cmd + 7, ' ');
		return p ? p + 1 : "";
	}
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (strncmp(res->cmd, tags[i], strlen(tags[i])) == 0)
			return res->cmd + strlen(tags[i]);
	return "";
}

FACE_API char *PQgetvalue(const PGresult *res, int tup_num, int field_num)
{
	char *v;

	if (!cell_ok(res, tup_num, field_num))
		return NULL;
	v = res->vals[(size_t)tup_num * (size_t)res->nfields + (size_t)field_num];
	return v ? v : "";
}

FACE_API int PQgetlength(const PGresult *res, int tup_num, int field_num)
{
	if (!cell_ok(res, tup_num, field_num))
		return 0;
	return res->lens[(size_t)tup_num * (size_t)res->nfields + (size_t)field_num];
}

FACE_API int PQgetisnull(const PGresult *res, int tup_num, int field_num)
{
	if (!cell_ok(res, tup_num, field_num))
		return 1;
	return res->vals[(size_t)tup_num * (size_t)res->nfields + (size_t)field_num] == NULL;
}

FACE_API int PQnparams(const PGresult *res)
{
	return res ? res->nparams : 0;
}

FACE_API Oid PQparamtype(const PGresult *res, int param_num)
{
	if (!res || param_num < 0 || param_num >= res->nparams || !res->paramtypes)
		return InvalidOid;
	return res->paramtypes[param_num];
}

FACE_API size_t PQresultMemorySize(const PGresult *res)
{
	return res ? res->memsize : 0;
}

FACE_API PGresult *PQmakeEmptyPGresult(PGconn *conn, ExecStatusType status)
{
	PGresult *res = face_result_new(conn, status);

	if (res && conn && (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR ||
			    status == PGRES_BAD_RESPONSE))
		res->errmsg = strdup(conn->errmsg ? conn->errmsg : "");
	return res;
}

FACE_API int PQsetResultAttrs(PGresult *res, int numAttributes, PGresAttDesc *attDescs)
{
	if (!res || res->nfields > 0 || numAttributes < 0 || (numAttributes > 0 && !attDescs))
		return 0;
	if (numAttributes == 0)
		return 1;
	res->att = calloc((size_t)numAttributes, sizeof(*res->att));
	if (!res->att)
		return 0;
	for (int i = 0; i < numAttributes; i++) {
		res->att[i] = attDescs[i];
		res->att[i].name = face_result_strdup(res, attDescs[i].name ? attDescs[i].name : "");
		if (!res->att[i].name)
			return 0;
	}
	res->nfields = numAttributes;
	return 1;
}

/* Make the value arrays private (a wrapped result's point into its blob;
 * the pointers stay valid, only the arrays are new) and at least rows long. */
static int grow_rows(PGresult *res, int rows)
{
	size_t cells;
	char **v;
	int *l;
	int cap = res->capvals;

	if (rows <= cap)
		return 0;
	while (cap < rows)
		cap = cap ? 2 * cap : 16;
	cells = (size_t)cap * (size_t)res->nfields;
	v = realloc(res->vals, cells * sizeof(*v));
	if (!v)
		return -1;
	res->vals = v;
	l = realloc(res->lens, cells * sizeof(*l));
	if (!l)
		return -1;
	res->lens = l;
	res->capvals = cap;
	return 0;
}

FACE_API int PQsetvalue(PGresult *res, int tup_num, int field_num, char *value, int len)
{
	size_t k;
	char *copy = NULL;

	if (!res || field_num < 0 || field_num >= res->nfields || tup_num < 0 ||
	    tup_num > res->ntups)
		return 0;
	if (grow_rows(res, tup_num + 1) < 0)
		return 0;
	if (tup_num == res->ntups) {
		for (int j = 0; j < res->nfields; j++) {
			res->vals[(size_t)tup_num * (size_t)res->nfields + (size_t)j] = NULL;
			res->lens[(size_t)tup_num * (size_t)res->nfields + (size_t)j] = 0;
		}
		res->ntups++;
	}
	k = (size_t)tup_num * (size_t)res->nfields + (size_t)field_num;
	if (len >= 0 && value) {
		copy = PQresultAlloc(res, (size_t)len + 1);
		if (!copy)
			return 0;
		memcpy(copy, value, (size_t)len);
		copy[len] = '\0';
	}
	res->vals[k] = copy;
	res->lens[k] = copy ? len : 0;
	return 1;
}

FACE_API PGresult *PQcopyResult(const PGresult *src, int flags)
{
	PGresult *dst;

	if (!src)
		return NULL;
	dst = face_result_new(NULL, PGRES_TUPLES_OK);
	if (!dst)
		return NULL;
	dst->client_encoding = src->client_encoding;
	snprintf(dst->cmd, sizeof(dst->cmd), "%s", src->cmd);
	if ((flags & PG_COPYRES_ATTRS) && !PQsetResultAttrs(dst, src->nfields, src->att))
		goto fail;
	if (flags & PG_COPYRES_TUPLES) {
		for (int i = 0; i < src->ntups; i++)
			for (int j = 0; j < src->nfields; j++) {
				size_t k = (size_t)i * (size_t)src->nfields + (size_t)j;

				if (!PQsetvalue(dst, i, j, src->vals[k],
						src->vals[k] ? src->lens[k] : -1))
					goto fail;
			}
	}
	if (flags & PG_COPYRES_NOTICEHOOKS) {
		dst->notice_proc = src->notice_proc;
		dst->notice_proc_arg = src->notice_proc_arg;
	}
	return dst;
fail:
	PQclear(dst);
	return NULL;
}

/* Result events (PQregisterEventProc) are not kept: no event ever fires. */
FACE_API int PQfireResultCreateEvents(PGconn *conn, PGresult *res)
{
	(void)conn;
	return res != NULL;
}

FACE_API int PQresultSetInstanceData(PGresult *result, PGEventProc proc, void *data)
{
	(void)result;
	(void)proc;
	(void)data;
	return 0;
}

FACE_API void *PQresultInstanceData(const PGresult *result, PGEventProc proc)
{
	(void)result;
	(void)proc;
	return NULL;
}

FACE_API void PQfreemem(void *ptr)
{
	free(ptr);
}
