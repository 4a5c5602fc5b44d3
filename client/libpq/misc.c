/* The rest of libpq's exports: what has no meaning through a broker
 * answers as libpq does when it does not apply (no SSL, no GSS, no backend
 * of one's own); what the broker does not relay yet (COPY, notifications,
 * the fast-path interface, cancel) fails with a clear message; large
 * objects run as SQL; libpq's PQExpBuffer and pqsignal helpers. */
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face.h"
#include "internal.h"

/* --- SSL and GSS: the channel is a local shared memory ring --- */

FACE_API int PQsslInUse(PGconn *conn)
{
	(void)conn;
	return 0;
}

FACE_API void *PQsslStruct(PGconn *conn, const char *struct_name)
{
	(void)conn;
	(void)struct_name;
	return NULL;
}

FACE_API const char *PQsslAttribute(PGconn *conn, const char *attribute_name)
{
	(void)conn;
	(void)attribute_name;
	return NULL;
}

FACE_API const char *const *PQsslAttributeNames(PGconn *conn)
{
	static const char *const none[] = { NULL };

	(void)conn;
	return none;
}

FACE_API void *PQgetssl(PGconn *conn)
{
	(void)conn;
	return NULL;
}

FACE_API void PQinitSSL(int do_init)
{
	(void)do_init;
}

FACE_API void PQinitOpenSSL(int do_ssl, int do_crypto)
{
	(void)do_ssl;
	(void)do_crypto;
}

static PQsslKeyPassHook_OpenSSL_type ssl_key_hook;

FACE_API PQsslKeyPassHook_OpenSSL_type PQgetSSLKeyPassHook_OpenSSL(void)
{
	return ssl_key_hook;
}

FACE_API void PQsetSSLKeyPassHook_OpenSSL(PQsslKeyPassHook_OpenSSL_type hook)
{
	ssl_key_hook = hook;
}

FACE_API int PQdefaultSSLKeyPassHook_OpenSSL(char *buf, int size, PGconn *conn)
{
	(void)conn;
	if (size > 0)
		buf[0] = '\0';
	return 0;
}

FACE_API void *PQgetgssctx(PGconn *conn)
{
	(void)conn;
	return NULL;
}

FACE_API int PQgssEncInUse(PGconn *conn)
{
	(void)conn;
	return 0;
}

/* --- cancel --- */

struct pg_cancel {
	struct pgbi_cancel k;
};

FACE_API PGcancel *PQgetCancel(PGconn *conn)
{
	PGcancel *cancel;

	if (!conn || conn->status != CONNECTION_OK)
		return NULL;
	cancel = calloc(1, sizeof(*cancel));
	if (cancel && pgbi_cancel_info(conn->c, &cancel->k) < 0) {
		free(cancel);
		return NULL;
	}
	return cancel;
}

FACE_API void PQfreeCancel(PGcancel *cancel)
{
	free(cancel);
}

/* Async-signal-safe, as libpq's: the broker cancels the statement the
 * session runs alone on a backend; the statement then fails with 57014. */
FACE_API int PQcancel(PGcancel *cancel, char *errbuf, int errbufsize)
{
	static const char none[] = "PQcancel() -- no cancel object supplied";

	if (!cancel) {
		if (errbuf && errbufsize > 0) {
			size_t n = sizeof(none) < (size_t)errbufsize ? sizeof(none) : (size_t)errbufsize;

			memcpy(errbuf, none, n);
			errbuf[n - 1] = '\0';
		}
		return 0;
	}
	return pgbi_cancel_send(&cancel->k, errbuf, errbufsize > 0 ? (size_t)errbufsize : 0) == 0;
}

FACE_API int PQrequestCancel(PGconn *conn)
{
	struct pgbi_cancel k;
	char err[256];

	if (!conn)
		return 0;
	if (pgbi_cancel_info(conn->c, &k) < 0) {
		face_set_error(conn, "PQrequestCancel() -- connection is not open");
		return 0;
	}
	if (pgbi_cancel_send(&k, err, sizeof(err)) < 0) {
		face_set_error(conn, "%s", err);
		return 0;
	}
	return 1;
}

/* --- COPY and notifications: not relayed by the broker yet --- */

static int copy_unsupported(PGconn *conn)
{
	if (conn)
		face_set_error(conn, "pgbroker: COPY is not supported through the broker yet");
	return -1;
}

FACE_API int PQputCopyData(PGconn *conn, const char *buffer, int nbytes)
{
	(void)buffer;
	(void)nbytes;
	return copy_unsupported(conn);
}

FACE_API int PQputCopyEnd(PGconn *conn, const char *errormsg)
{
	(void)errormsg;
	return copy_unsupported(conn);
}

FACE_API int PQgetCopyData(PGconn *conn, char **buffer, int async)
{
	(void)async;
	*buffer = NULL;
	copy_unsupported(conn);
	return -2;
}

FACE_API int PQgetline(PGconn *conn, char *buffer, int length)
{
	if (buffer && length > 0)
		buffer[0] = '\0';
	return copy_unsupported(conn) == -1 ? EOF : 0;
}

FACE_API int PQgetlineAsync(PGconn *conn, char *buffer, int bufsize)
{
	(void)buffer;
	(void)bufsize;
	return copy_unsupported(conn);
}

FACE_API int PQputline(PGconn *conn, const char *string)
{
	(void)string;
	copy_unsupported(conn);
	return EOF;
}

FACE_API int PQputnbytes(PGconn *conn, const char *buffer, int nbytes)
{
	(void)buffer;
	(void)nbytes;
	copy_unsupported(conn);
	return EOF;
}

FACE_API int PQendcopy(PGconn *conn)
{
	copy_unsupported(conn);
	return 1;
}

/* LISTEN is refused by the broker; nothing ever arrives. */
FACE_API PGnotify *PQnotifies(PGconn *conn)
{
	(void)conn;
	return NULL;
}

/* libpq-fe.h makes it a macro for PQfreemem; the symbol stays exported. */
#undef PQfreeNotify
void PQfreeNotify(PGnotify *notify);
FACE_API void PQfreeNotify(PGnotify *notify)
{
	free(notify);
}

FACE_API PGresult *PQfn(PGconn *conn, int fnid, int *result_buf, int *result_len,
			int result_is_int, const PQArgBlock *args, int nargs)
{
	(void)fnid;
	(void)result_buf;
	(void)result_len;
	(void)result_is_int;
	(void)args;
	(void)nargs;
	if (!conn)
		return NULL;
	face_set_error(conn, "pgbroker: the fast-path interface (PQfn) is not supported; "
		       "call the function with SELECT");
	return NULL;
}

/* --- passwords never leave the program: the broker holds its own --- */

FACE_API char *PQencryptPassword(const char *passwd, const char *user)
{
	(void)passwd;
	(void)user;
	return NULL;
}

FACE_API char *PQencryptPasswordConn(PGconn *conn, const char *passwd, const char *user,
				     const char *algorithm)
{
	(void)passwd;
	(void)user;
	(void)algorithm;
	if (conn)
		face_set_error(conn, "pgbroker: password encryption is not available through "
			       "the broker; use ALTER ROLE directly on the server");
	return NULL;
}

/* --- events and tracing: none --- */

FACE_API int PQregisterEventProc(PGconn *conn, PGEventProc proc, const char *name,
				 void *passThrough)
{
	(void)proc;
	(void)name;
	(void)passThrough;
	if (conn)
		face_set_error(conn, "pgbroker: result events are not supported");
	return 0;
}

FACE_API int PQsetInstanceData(PGconn *conn, PGEventProc proc, void *data)
{
	(void)conn;
	(void)proc;
	(void)data;
	return 0;
}

FACE_API void *PQinstanceData(const PGconn *conn, PGEventProc proc)
{
	(void)conn;
	(void)proc;
	return NULL;
}

FACE_API void PQtrace(PGconn *conn, FILE *debug_port)
{
	(void)conn;
	(void)debug_port;
}

FACE_API void PQuntrace(PGconn *conn)
{
	(void)conn;
}

FACE_API void PQsetTraceFlags(PGconn *conn, int flags)
{
	(void)conn;
	(void)flags;
}

/* --- the old printing functions --- */

FACE_API void PQprint(FILE *fout, const PGresult *res, const PQprintOpt *po)
{
	const char *sep = po && po->fieldSep ? po->fieldSep : "|";
	int nf = PQnfields(res), nt = PQntuples(res);

	if (po && po->header) {
		for (int j = 0; j < nf; j++)
			fprintf(fout, "%s%s", j ? sep : "", PQfname(res, j));
		fprintf(fout, "\n");
	}
	for (int i = 0; i < nt; i++) {
		for (int j = 0; j < nf; j++)
			fprintf(fout, "%s%s", j ? sep : "", PQgetvalue(res, i, j));
		fprintf(fout, "\n");
	}
	if (po && po->header)
		fprintf(fout, "(%d row%s)\n\n", nt, nt == 1 ? "" : "s");
}

FACE_API void PQdisplayTuples(const PGresult *res, FILE *fp, int fillAlign, const char *fieldSep,
			      int printHeader, int quiet)
{
	PQprintOpt po = { .header = (pqbool)printHeader, .align = (pqbool)fillAlign,
			  .fieldSep = (char *)(fieldSep ? fieldSep : "|") };

	(void)quiet;
	PQprint(fp ? fp : stdout, res, &po);
}

FACE_API void PQprintTuples(const PGresult *res, FILE *fout, int PrintAttNames, int TerseOutput,
			    int colWidth)
{
	PQprintOpt po = { .header = (pqbool)PrintAttNames, .fieldSep = (char *)" " };

	(void)TerseOutput;
	(void)colWidth;
	PQprint(fout, res, &po);
}

/* --- PQExpBuffer (libpq's internal pqexpbuffer.h, exported) --- */

typedef struct PQExpBufferData {
	char *data;
	size_t len;
	size_t maxlen;
} PQExpBufferData;
typedef PQExpBufferData *PQExpBuffer;

#define INITIAL_EXPBUFFER_SIZE 256
static const char oom_buffer[1] = "";

PQExpBuffer createPQExpBuffer(void);
void initPQExpBuffer(PQExpBuffer str);
void destroyPQExpBuffer(PQExpBuffer str);
void termPQExpBuffer(PQExpBuffer str);
void resetPQExpBuffer(PQExpBuffer str);
int enlargePQExpBuffer(PQExpBuffer str, size_t needed);
void printfPQExpBuffer(PQExpBuffer str, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void appendPQExpBuffer(PQExpBuffer str, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void appendPQExpBufferStr(PQExpBuffer str, const char *data);
void appendPQExpBufferChar(PQExpBuffer str, char ch);
void appendBinaryPQExpBuffer(PQExpBuffer str, const char *data, size_t datalen);

static void mark_broken(PQExpBuffer str)
{
	if (str->data != oom_buffer)
		free(str->data);
	str->data = (char *)oom_buffer;
	str->len = 0;
	str->maxlen = 0;
}

FACE_API void initPQExpBuffer(PQExpBuffer str)
{
	str->data = malloc(INITIAL_EXPBUFFER_SIZE);
	if (!str->data) {
		str->data = (char *)oom_buffer;
		str->maxlen = 0;
		str->len = 0;
		return;
	}
	str->maxlen = INITIAL_EXPBUFFER_SIZE;
	str->len = 0;
	str->data[0] = '\0';
}

FACE_API PQExpBuffer createPQExpBuffer(void)
{
	PQExpBuffer str = malloc(sizeof(*str));

	if (str)
		initPQExpBuffer(str);
	return str;
}

FACE_API void termPQExpBuffer(PQExpBuffer str)
{
	if (str->data != oom_buffer)
		free(str->data);
	str->data = (char *)oom_buffer;
	str->len = 0;
	str->maxlen = 0;
}

FACE_API void destroyPQExpBuffer(PQExpBuffer str)
{
	if (str) {
		termPQExpBuffer(str);
		free(str);
	}
}

FACE_API void resetPQExpBuffer(PQExpBuffer str)
{
	if (!str)
		return;
	if (str->data != oom_buffer) {
		str->len = 0;
		str->data[0] = '\0';
	} else {
		initPQExpBuffer(str);
	}
}

FACE_API int enlargePQExpBuffer(PQExpBuffer str, size_t needed)
{
	size_t newlen;
	char *d;

	if (str->maxlen == 0)
		return 0;
	if (needed >= ((size_t)INT32_MAX - str->len)) {
		mark_broken(str);
		return 0;
	}
	needed += str->len + 1;
	if (needed <= str->maxlen)
		return 1;
	newlen = str->maxlen > 0 ? 2 * str->maxlen : 64;
	while (needed > newlen)
		newlen = 2 * newlen;
	if (newlen > (size_t)INT32_MAX)
		newlen = (size_t)INT32_MAX;
	d = realloc(str->data, newlen);
	if (!d) {
		mark_broken(str);
		return 0;
	}
	str->data = d;
	str->maxlen = newlen;
	return 1;
}

static void append_va(PQExpBuffer str, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static void append_va(PQExpBuffer str, const char *fmt, va_list ap)
{
	for (;;) {
		size_t avail;
		va_list cp;
		int n;

		if (str->maxlen == 0)
			return;
		avail = str->maxlen - str->len;
		va_copy(cp, ap);
		n = vsnprintf(str->data + str->len, avail, fmt, cp);
		va_end(cp);
		if (n < 0) {
			mark_broken(str);
			return;
		}
		if ((size_t)n < avail) {
			str->len += (size_t)n;
			return;
		}
		if (!enlargePQExpBuffer(str, (size_t)n))
			return;
	}
}

FACE_API void printfPQExpBuffer(PQExpBuffer str, const char *fmt, ...)
{
	va_list ap;

	resetPQExpBuffer(str);
	va_start(ap, fmt);
	append_va(str, fmt, ap);
	va_end(ap);
}

FACE_API void appendPQExpBuffer(PQExpBuffer str, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	append_va(str, fmt, ap);
	va_end(ap);
}

FACE_API void appendBinaryPQExpBuffer(PQExpBuffer str, const char *data, size_t datalen)
{
	if (!enlargePQExpBuffer(str, datalen))
		return;
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
	str->data[str->len] = '\0';
}

FACE_API void appendPQExpBufferStr(PQExpBuffer str, const char *data)
{
	appendBinaryPQExpBuffer(str, data, strlen(data));
}

FACE_API void appendPQExpBufferChar(PQExpBuffer str, char ch)
{
	appendBinaryPQExpBuffer(str, &ch, 1);
}

/* --- pqsignal: sigaction with SA_RESTART, as libpq's --- */

typedef void (*pqsigfunc)(int signo);
pqsigfunc pqsignal(int signo, pqsigfunc func);

FACE_API pqsigfunc pqsignal(int signo, pqsigfunc func)
{
	struct sigaction act = { 0 }, oact;

	act.sa_handler = func;
	sigemptyset(&act.sa_mask);
	act.sa_flags = SA_RESTART;
	if (sigaction(signo, &act, &oact) < 0)
		return SIG_ERR;
	return oact.sa_handler;
}
