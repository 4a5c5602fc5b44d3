/* Large objects through the server's SQL functions (lo_open, loread, ...)
 * instead of the fast-path interface. Descriptors live as long as the
 * transaction, as in libpq: open them inside BEGIN ... COMMIT. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "face.h"

#define LO_BUFSIZE 8192

/* Run sql with n text parameters; its one value as an integer in *out.
 * 0, or -1 (PQerrorMessage says why). */
static int lo_call(PGconn *conn, const char *sql, int n, const char *const *vals, int64_t *out)
{
	PGresult *res;
	int rc = -1;

	if (!conn)
		return -1;
	res = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
		if (out)
			*out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		rc = 0;
	}
	PQclear(res);
	return rc;
}

static int lo_int(PGconn *conn, const char *sql, int n, const char *const *vals)
{
	int64_t v;

	return lo_call(conn, sql, n, vals, &v) < 0 ? -1 : (int)v;
}

#define NUM(buf, v) (snprintf((buf), sizeof(buf), "%lld", (long long)(v)), (buf))

FACE_API int lo_open(PGconn *conn, Oid lobjId, int mode)
{
	char a[24], b[24];
	const char *v[] = { NUM(a, lobjId), NUM(b, mode) };

	return lo_int(conn, "SELECT pg_catalog.lo_open($1, $2)", 2, v);
}

FACE_API int lo_close(PGconn *conn, int fd)
{
	char a[24];
	const char *v[] = { NUM(a, fd) };

	return lo_int(conn, "SELECT pg_catalog.lo_close($1)", 1, v);
}

FACE_API int lo_read(PGconn *conn, int fd, char *buf, size_t len)
{
	char a[24], b[24];
	const char *v[] = { NUM(a, fd), NUM(b, len) };
	PGresult *res;
	int n = -1;

	if (!conn || len > INT32_MAX)
		return -1;
	res = PQexecParams(conn, "SELECT pg_catalog.loread($1, $2)", 2, NULL, v, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
		size_t got;
		unsigned char *bytes = PQunescapeBytea((unsigned char *)PQgetvalue(res, 0, 0), &got);

		if (bytes && got <= len) {
			memcpy(buf, bytes, got);
			n = (int)got;
		}
		free(bytes);
	}
	PQclear(res);
	return n;
}

FACE_API int lo_write(PGconn *conn, int fd, const char *buf, size_t len)
{
	char a[24];
	size_t hl;
	unsigned char *hex;
	int n;

	if (!conn || len > INT32_MAX)
		return -1;
	hex = PQescapeBytea((const unsigned char *)buf, len, &hl);
	if (!hex)
		return -1;
	{
		const char *v[] = { NUM(a, fd), (char *)hex };

		n = lo_int(conn, "SELECT pg_catalog.lowrite($1, $2::bytea)", 2, v);
	}
	free(hex);
	return n;
}

FACE_API int lo_lseek(PGconn *conn, int fd, int offset, int whence)
{
	char a[24], b[24], c[24];
	const char *v[] = { NUM(a, fd), NUM(b, offset), NUM(c, whence) };

	return lo_int(conn, "SELECT pg_catalog.lo_lseek($1, $2, $3)", 3, v);
}

FACE_API pg_int64 lo_lseek64(PGconn *conn, int fd, pg_int64 offset, int whence)
{
	char a[24], b[24], c[24];
	const char *v[] = { NUM(a, fd), NUM(b, offset), NUM(c, whence) };
	int64_t r;

	return lo_call(conn, "SELECT pg_catalog.lo_lseek64($1, $2, $3)", 3, v, &r) < 0 ? -1 : r;
}

FACE_API Oid lo_creat(PGconn *conn, int mode)
{
	char a[24];
	const char *v[] = { NUM(a, mode) };
	int64_t r;

	return lo_call(conn, "SELECT pg_catalog.lo_creat($1)", 1, v, &r) < 0 ? InvalidOid : (Oid)r;
}

FACE_API Oid lo_create(PGconn *conn, Oid lobjId)
{
	char a[24];
	const char *v[] = { NUM(a, lobjId) };
	int64_t r;

	return lo_call(conn, "SELECT pg_catalog.lo_create($1)", 1, v, &r) < 0 ? InvalidOid : (Oid)r;
}

FACE_API int lo_tell(PGconn *conn, int fd)
{
	char a[24];
	const char *v[] = { NUM(a, fd) };

	return lo_int(conn, "SELECT pg_catalog.lo_tell($1)", 1, v);
}

FACE_API pg_int64 lo_tell64(PGconn *conn, int fd)
{
	char a[24];
	const char *v[] = { NUM(a, fd) };
	int64_t r;

	return lo_call(conn, "SELECT pg_catalog.lo_tell64($1)", 1, v, &r) < 0 ? -1 : r;
}

FACE_API int lo_truncate(PGconn *conn, int fd, size_t len)
{
	char a[24], b[24];
	const char *v[] = { NUM(a, fd), NUM(b, len) };

	return lo_int(conn, "SELECT pg_catalog.lo_truncate($1, $2)", 2, v);
}

FACE_API int lo_truncate64(PGconn *conn, int fd, pg_int64 len)
{
	char a[24], b[24];
	const char *v[] = { NUM(a, fd), NUM(b, len) };

	return lo_int(conn, "SELECT pg_catalog.lo_truncate64($1, $2)", 2, v);
}

FACE_API int lo_unlink(PGconn *conn, Oid lobjId)
{
	char a[24];
	const char *v[] = { NUM(a, lobjId) };

	return lo_int(conn, "SELECT pg_catalog.lo_unlink($1)", 1, v);
}

FACE_API Oid lo_import_with_oid(PGconn *conn, const char *filename, Oid lobjId)
{
	char buf[LO_BUFSIZE];
	int fd, lfd;
	ssize_t n;
	Oid oid;

	if (!conn)
		return InvalidOid;
	fd = open(filename, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		face_set_error(conn, "could not open file \"%s\": %m", filename);
		return InvalidOid;
	}
	oid = lobjId == InvalidOid ? lo_creat(conn, 0x20000 | 0x40000) : lo_create(conn, lobjId);
	lfd = oid == InvalidOid ? -1 : lo_open(conn, oid, 0x20000);
	if (lfd < 0) {
		close(fd);
		return InvalidOid;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (lo_write(conn, lfd, buf, (size_t)n) != n) {
			close(fd);
			return InvalidOid;
		}
	close(fd);
	if (n < 0) {
		face_set_error(conn, "could not read from file \"%s\": %m", filename);
		return InvalidOid;
	}
	return lo_close(conn, lfd) < 0 ? InvalidOid : oid;
}

FACE_API Oid lo_import(PGconn *conn, const char *filename)
{
	return lo_import_with_oid(conn, filename, InvalidOid);
}

FACE_API int lo_export(PGconn *conn, Oid lobjId, const char *filename)
{
	char buf[LO_BUFSIZE];
	int fd, lfd, n, rc = 1;

	lfd = lo_open(conn, lobjId, 0x40000);
	if (lfd < 0)
		return -1;
	fd = open(filename, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		face_set_error(conn, "could not open file \"%s\": %m", filename);
		lo_close(conn, lfd);
		return -1;
	}
	while ((n = lo_read(conn, lfd, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)n) != n) {
			face_set_error(conn, "could not write to file \"%s\": %m", filename);
			rc = -1;
			break;
		}
	if (n < 0)
		rc = -1;
	if (close(fd) != 0 && rc == 1) {
		face_set_error(conn, "could not write to file \"%s\": %m", filename);
		rc = -1;
	}
	if (lo_close(conn, lfd) < 0)
		rc = -1;
	return rc;
}
