/* libpgbroker: pgb_retry, with the broker's backoff (common/backoff.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "clock.h"
#include "internal.h"
#include "sqlstate.h"

PGB_API struct pgb_retry_policy pgb_retry_policy_default(void)
{
	return (struct pgb_retry_policy){
		.attempts = DEF_ATTEMPTS,
		.base_ms = DEF_BASE_MS,
		.max_ms = DEF_MAX_MS,
		.jitter_pct = DEF_JITTER_PCT,
	};
}

/* An operation that gave no SQLSTATE did not say it is hopeless. */
static int default_transient(const char *sqlstate)
{
	return !sqlstate[0] || sqlstate_is_transient(sqlstate);
}

PGB_API int pgb_retry(pgb_op op, void *arg, const struct pgb_retry_policy *policy,
		      struct pgb_outcome *out)
{
	struct pgb_retry_policy p = policy ? *policy : pgb_retry_policy_default();
	int (*transient)(const char *) = p.is_transient ? p.is_transient : default_transient;
	struct pgb_outcome why;
	struct backoff bo;
	int64_t start;
	int ok = 0;

	if (!op)
		return pgbi_bad_argument(out, "pgb_retry: op is NULL");
	if (p.attempts < 1 || p.base_ms < 0 || p.max_ms < 0 || p.jitter_pct < 0 ||
	    p.jitter_pct > 100 || p.deadline_ms < 0)
		return pgbi_bad_argument(out, "pgb_retry: invalid policy: attempts %d (allowed >= 1), "
					 "base_ms %d, max_ms %d, deadline_ms %d (allowed >= 0), "
					 "jitter_pct %d (allowed 0..100)",
				    p.attempts, p.base_ms, p.max_ms, p.deadline_ms, p.jitter_pct);
	bo = (struct backoff){ .base_ms = p.base_ms, .cap_ms = p.max_ms, .jitter_pct = p.jitter_pct };
	start = clock_ms();
	for (int n = 1;; n++) {
		int64_t delay;
		int rc;

		why = (struct pgb_outcome){ .attempts = n };
		rc = op(arg, &why);
		if (rc == 0) {
			why = (struct pgb_outcome){ .attempts = n };
			ok = 1;
			break;
		}
		why.attempts = n;
		pgbi_outcome_tidy(&why, rc, "operation");
		if (n >= p.attempts || !transient(why.sqlstate))
			break;
		delay = backoff_delay_ms(&bo, n);
		if (p.deadline_ms && clock_ms() + delay - start > p.deadline_ms)
			break;
		pgbi_sleep_ms(delay);
	}
	if (out)
		*out = why;
	return ok ? PGB_OK : PGB_FAILED;
}
