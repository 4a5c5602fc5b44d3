/* A caller-supplied error buffer, filled printf-style: the message of the
 * config parser and of poolbench's option parser. */
#ifndef PGB_ERRBUF_H
#define PGB_ERRBUF_H

#include <stddef.h>

/* Format into err[0..errlen), truncating; nothing when err is NULL or
 * errlen is 0. */
__attribute__((format(printf, 3, 4)))
void errbuf_set(char *err, size_t errlen, const char *fmt, ...);

#endif
