/* A caller-supplied error buffer, filled printf-style: the message of the
 * config parser and of poolbench's option parser; and chomp for messages. */
#ifndef PGB_ERRBUF_H
#define PGB_ERRBUF_H

#include <stddef.h>
#include <string.h>

/* Format into err[0..errlen), truncating; nothing when err is NULL or
 * errlen is 0. */
__attribute__((format(printf, 3, 4)))
void errbuf_set(char *err, size_t errlen, const char *fmt, ...);

/* Drop a message's trailing newlines, carriage returns and blanks (libpq
 * ends its messages with one). */
static inline void chomp(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		s[--n] = '\0';
}

#endif
