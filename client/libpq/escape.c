/* The escape functions, as libpq defines them, for a server with
 * standard_conforming_strings as the connection reports it. Multibyte
 * characters are kept whole (PQmblen); an incomplete one is an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face.h"

static int conn_scs(const PGconn *conn)
{
	const char *v = conn ? conn->param[PS_STANDARD_CONFORMING_STRINGS] : NULL;

	return !v || strcmp(v, "on") == 0;
}

static int conn_encoding(const PGconn *conn)
{
	return conn && conn->status == CONNECTION_OK ? conn->client_encoding : 6;
}

/* Copy from into to doubling quotes (and backslashes unless scs); 0 on
 * success, -1 on an incomplete multibyte character (to gets what fit). */
static size_t escape_internal(char *to, const char *from, size_t length, int *error,
			      int encoding, int scs)
{
	const char *source = from;
	char *target = to;
	size_t remaining = length;

	if (error)
		*error = 0;
	while (remaining > 0 && *source != '\0') {
		char c = *source;
		int len;

		if (!(c & 0x80)) {
			if (c == '\'' || (c == '\\' && !scs))
				*target++ = c;
			*target++ = c;
			source++;
			remaining--;
			continue;
		}
		len = PQmblen(source, encoding);
		int i;

		for (i = 0; i < len; i++) {
			if (remaining == 0 || *source == '\0')
				break;
			*target++ = *source++;
			remaining--;
		}
		if (i < len) {
			/* incomplete character: pad as libpq does, and stop */
			if (error)
				*error = 1;
			for (; i < len; i++) {
				if ((size_t)(target - to) / 2 >= length)
					break;
				*target++ = ' ';
			}
			break;
		}
	}
	*target = '\0';
	return (size_t)(target - to);
}

FACE_API size_t PQescapeStringConn(PGconn *conn, char *to, const char *from, size_t length,
				   int *error)
{
	if (!conn) {
		if (error)
			*error = 1;
		*to = '\0';
		return 0;
	}
	return escape_internal(to, from, length, error, conn_encoding(conn), conn_scs(conn));
}

FACE_API size_t PQescapeString(char *to, const char *from, size_t length)
{
	return escape_internal(to, from, length, NULL, 6, 1);
}

/* 'literal' or "identifier"; a literal with backslashes becomes E'...'
 * with them doubled, as libpq does. */
static char *escape_quoted(PGconn *conn, const char *str, size_t len, int as_ident)
{
	char quote = as_ident ? '"' : '\'';
	size_t nquotes = 0, nbs = 0, n;
	char *out, *p;
	int enc = conn_encoding(conn);

	if (!conn)
		return NULL;
	for (size_t i = 0; i < len && str[i]; i++) {
		if (str[i] == quote)
			nquotes++;
		else if (str[i] == '\\')
			nbs++;
		else if (str[i] & 0x80) {
			int l = PQmblen(str + i, enc);

			if (i + (size_t)l > len || memchr(str + i, '\0', (size_t)l)) {
				face_set_error(conn, "incomplete multibyte character");
				return NULL;
			}
			i += (size_t)l - 1;
		}
	}
	n = len + nquotes + (as_ident ? 0 : nbs) + 4;
	out = p = malloc(n);
	if (!out) {
		face_set_error(conn, "out of memory");
		return NULL;
	}
	if (!as_ident && nbs) {
		*p++ = ' ';
		*p++ = 'E';
	}
	*p++ = quote;
	for (size_t i = 0; i < len && str[i]; i++) {
		if (str[i] == quote || (!as_ident && str[i] == '\\'))
			*p++ = str[i];
		*p++ = str[i];
	}
	*p++ = quote;
	*p = '\0';
	return out;
}

FACE_API char *PQescapeLiteral(PGconn *conn, const char *str, size_t len)
{
	return escape_quoted(conn, str, len, 0);
}

FACE_API char *PQescapeIdentifier(PGconn *conn, const char *str, size_t len)
{
	return escape_quoted(conn, str, len, 1);
}

/* bytea in hex (servers since 9.0), "\x..." doubled backslash without scs. */
static unsigned char *escape_bytea(const unsigned char *from, size_t from_length,
				   size_t *to_length, int scs)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = (scs ? 2 : 3) + 2 * from_length + 1;
	unsigned char *out = malloc(n), *p = out;

	if (!out)
		return NULL;
	if (!scs)
		*p++ = '\\';
	*p++ = '\\';
	*p++ = 'x';
	for (size_t i = 0; i < from_length; i++) {
		*p++ = (unsigned char)hex[from[i] >> 4];
		*p++ = (unsigned char)hex[from[i] & 0xf];
	}
	*p = '\0';
	*to_length = n;
	return out;
}

FACE_API unsigned char *PQescapeByteaConn(PGconn *conn, const unsigned char *from,
					  size_t from_length, size_t *to_length)
{
	if (!conn)
		return NULL;
	return escape_bytea(from, from_length, to_length, conn_scs(conn));
}

FACE_API unsigned char *PQescapeBytea(const unsigned char *from, size_t from_length,
				      size_t *to_length)
{
	return escape_bytea(from, from_length, to_length, 1);
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Hex ("\x...") or escape format, as libpq. */
FACE_API unsigned char *PQunescapeBytea(const unsigned char *strtext, size_t *retbuflen)
{
	size_t len, j = 0;
	unsigned char *buf;

	if (!strtext)
		return NULL;
	len = strlen((const char *)strtext);
	buf = malloc(len + 1);
	if (!buf)
		return NULL;
	if (strtext[0] == '\\' && strtext[1] == 'x') {
		const unsigned char *s = strtext + 2;

		while (*s) {
			int hi, lo;

			if (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') {
				s++;
				continue;
			}
			hi = hexval(s[0]);
			lo = s[1] ? hexval(s[1]) : -1;
			if (hi < 0 || lo < 0) {
				free(buf);
				return NULL;
			}
			buf[j++] = (unsigned char)(hi << 4 | lo);
			s += 2;
		}
	} else {
		for (size_t i = 0; i < len; i++) {
			if (strtext[i] != '\\') {
				buf[j++] = strtext[i];
			} else if (strtext[i + 1] == '\\') {
				buf[j++] = '\\';
				i++;
			} else if (strtext[i + 1] >= '0' && strtext[i + 1] <= '3' &&
				   strtext[i + 2] >= '0' && strtext[i + 2] <= '7' &&
				   strtext[i + 3] >= '0' && strtext[i + 3] <= '7') {
				buf[j++] = (unsigned char)((strtext[i + 1] - '0') << 6 |
							   (strtext[i + 2] - '0') << 3 |
							   (strtext[i + 3] - '0'));
				i += 3;
			}
			/* a lone backslash is dropped, as libpq */
		}
	}
	buf[j] = '\0';
	*retbuflen = j;
	return buf;
}
