/* One form for every error message in a result; see errform.h. */
#include "errform.h"

#include <stdio.h>
#include <string.h>

void errform_v(char *dst, size_t n, const char *fmt, va_list ap)
{
	const size_t plen = sizeof(ERRFORM_PREFIX) - 1;
	size_t len;

	memcpy(dst, ERRFORM_PREFIX, plen);
	/* n - plen - 1: room left for the newline after the text */
	vsnprintf(dst + plen, n - plen - 1, fmt, ap);
	len = strlen(dst);
	while (len > plen && dst[len - 1] == '\n')
		len--;
	dst[len++] = '\n';
	dst[len] = '\0';
}

const char *errform_text(const char *msg, int *len)
{
	size_t n;

	if (strncmp(msg, ERRFORM_PREFIX, sizeof(ERRFORM_PREFIX) - 1) == 0)
		msg += sizeof(ERRFORM_PREFIX) - 1;
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		n--;
	*len = (int)n;
	return msg;
}
