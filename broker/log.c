/* Logging to stderr with a timestamp and level; formatting is skipped for
 * levels that are off (see the log_* macros). */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "broker.h"

int log_level = LOG_INFO;

void log_msg(int level, const char *fmt, ...)
{
	static const char *names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	char ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ pgbroker %s: ", ts, now.tv_nsec / 1000000, names[level & 3]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
