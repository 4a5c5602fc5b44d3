/* The one form of an error message in a result, from PostgreSQL, the broker
 * or the library alike: "ERROR:  text\n", as libpq's PQresultErrorMessage. */
#ifndef PGB_ERRFORM_H
#define PGB_ERRFORM_H

#include <stdarg.h>
#include <stddef.h>

#define ERRFORM_PREFIX "ERROR:  "

/* Format fmt into dst (n bytes, at least 16) as "ERROR:  text\n": the
 * text's own trailing newlines are dropped, then exactly one is added; a
 * text too long is cut, the newline kept. */
void errform_v(char *dst, size_t n, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* The text of a message in that form, for quoting it inside another: past
 * the "ERROR:  " prefix (if any), *len bytes long without the trailing
 * newlines. */
const char *errform_text(const char *msg, int *len);

#endif
