/* JSON output shared by the tools (poolstat --json, poolbench --json). */
#ifndef PGB_JSON_H
#define PGB_JSON_H

#include <stdio.h>

/* s as a JSON string literal. JSON is UTF-8: a byte that is not part of a
 * well-formed UTF-8 character (a name in Latin-1, a message cut to fit)
 * becomes U+FFFD. */
void json_str(FILE *f, const char *s);

#endif
