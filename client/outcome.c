/* libpgbroker: struct pgb_outcome, how the helpers (pgb_retry, pgb_breaker,
 * pgb_transaction) say why they failed, and pgb_fail. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "errbuf.h"
#include "internal.h"
#include "sqlstate.h"

void pgbi_outcome_set(struct pgb_outcome *o, const char *state, const char *fmt, ...)
{
	va_list ap;

	snprintf(o->sqlstate, sizeof(o->sqlstate), "%s", state);
	va_start(ap, fmt);
	vsnprintf(o->message, sizeof(o->message), fmt, ap);
	va_end(ap);
}

int pgbi_bad_argument(struct pgb_outcome *out, const char *fmt, ...)
{
	va_list ap;

	if (out) {
		*out = (struct pgb_outcome){ .attempts = 0 };
		snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", PGB_SQLSTATE_BAD_REQUEST);
		va_start(ap, fmt);
		vsnprintf(out->message, sizeof(out->message), fmt, ap);
		va_end(ap);
	}
	return PGB_BAD_ARGUMENT;
}

/* After an operation failed: terminate what it wrote, and say something
 * when it said nothing. */
void pgbi_outcome_tidy(struct pgb_outcome *why, int rc, const char *what)
{
	const struct sqlstate_info *si;

	why->sqlstate[sizeof(why->sqlstate) - 1] = '\0';
	why->message[sizeof(why->message) - 1] = '\0';
	chomp(why->message);
	if (why->message[0])
		return;
	if (why->sqlstate[0]) {
		si = sqlstate_lookup(why->sqlstate);
		snprintf(why->message, sizeof(why->message), "%s failed with SQLSTATE %s (%s)",
			 what, why->sqlstate, si ? si->name : "unknown code");
	} else {
		snprintf(why->message, sizeof(why->message), "%s failed (returned %d, no SQLSTATE)",
			 what, rc);
	}
}

PGB_API int pgb_fail(pgb_result *r, struct pgb_outcome *why)
{
	if (why && !r) {
		pgbi_outcome_set(why, "", "no result (out of memory)");
	} else if (why && !pgb_result_ok(r)) {
		pgbi_outcome_set(why, pgb_sqlstate(r), "%s", pgb_result_error(r));
		chomp(why->message);
	}
	pgb_clear(r);
	return -1;
}

void pgbi_sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	if (ms <= 0)
		return;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}
