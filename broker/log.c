/* Logging: one line per event, to stderr with a timestamp and level, or to
 * syslog (daemon facility). Formatting is skipped for levels that are off
 * (see the log_* macros). Query text and parameters never appear at info:
 * they may hold secrets. */
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"

int log_level = LV_INFO;
static int to_syslog;

void log_open(int level, int use_syslog)
{
	log_level = level;
	if (use_syslog && !to_syslog)
		openlog("pgbroker", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (!use_syslog && to_syslog)
		closelog();
	to_syslog = use_syslog;
}

void log_msg(int level, const char *fmt, ...)
{
	static const char *const names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	if (to_syslog) {
		vsyslog(prio[level & 3], fmt, ap);
		va_end(ap);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	flockfile(stderr);
	fprintf(stderr, "%s.%03ldZ pgbroker[%d] %s: ", ts, now.tv_nsec / 1000000,
		(int)getpid(), names[level & 3]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
}
