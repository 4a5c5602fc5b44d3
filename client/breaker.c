/* libpgbroker: pgb_breaker, a circuit breaker around the caller's own
 * operations, with the broker's own breaker (common/breaker.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "breaker.h"
#include "clock.h"
#include "internal.h"
#include "sqlstate.h"

#define BREAKER_MAGIC 0x70676262u /* "pgbb" */

_Static_assert(PGB_BREAKER_CLOSED == (int)BREAKER_CLOSED && PGB_BREAKER_OPEN == (int)BREAKER_OPEN &&
		       PGB_BREAKER_HALF_OPEN == (int)BREAKER_HALF_OPEN,
	       "pgbroker.h PGB_BREAKER_* must match common/breaker.h");
_Static_assert(sizeof(struct breaker) <= sizeof(((struct pgb_breaker *)0)->opaque),
	       "struct pgb_breaker is too small for struct breaker");

static int64_t breaker_now(const struct pgb_breaker *br)
{
	return br->clock_ms ? (int64_t)br->clock_ms(br->clock_arg) : clock_ms();
}

/* The state lives in opaque[]; copied in and out, so no aliasing games. */
static void breaker_load(const struct pgb_breaker *br, struct breaker *b)
{
	memcpy(b, br->opaque, sizeof(*b));
}

static void breaker_store(struct pgb_breaker *br, const struct breaker *b)
{
	memcpy(br->opaque, b, sizeof(*b));
}

PGB_API int pgb_breaker_init(struct pgb_breaker *br, int threshold, int reset_ms)
{
	struct breaker b;
	int rc = PGB_OK;

	if (!br)
		return PGB_BAD_ARGUMENT;
	if (threshold < 0 || reset_ms < 0)
		rc = PGB_BAD_ARGUMENT;
	if (threshold <= 0)
		threshold = DEF_BREAKER_THRESHOLD;
	if (reset_ms <= 0)
		reset_ms = DEF_BREAKER_RESET_MS;
	memset(br, 0, sizeof(*br));
	breaker_init(&b, threshold, reset_ms, (int64_t)BREAKER_MAX_RESET_FACTOR * reset_ms,
		     BREAKER_PACE_FROM_OPEN);
	breaker_store(br, &b);
	br->magic = BREAKER_MAGIC;
	return rc;
}

/* A failure that is an answer from PostgreSQL (a permanent SQLSTATE outside
 * classes 08 and PB) shows the service is there: not an outage. A code of
 * a class the table does not know (RAISE ... ERRCODE 'U0001') is permanent. */
static int is_answer(const char *sqlstate)
{
	const struct sqlstate_info *si = sqlstate[0] ? sqlstate_lookup(sqlstate) : NULL;

	if (!si)
		return sqlstate_valid(sqlstate);
	return !si->transient && strncmp(si->code, "08", 2) != 0 &&
	       strncmp(si->code, "PB", 2) != 0;
}

PGB_API int pgb_breaker_call(struct pgb_breaker *br, pgb_op op, void *arg,
			     struct pgb_outcome *out)
{
	struct pgb_outcome why = { .attempts = 1 };
	struct breaker b;
	uint64_t ticket;
	int64_t now;
	int rc;

	if (!br || br->magic != BREAKER_MAGIC)
		return pgbi_bad_argument(out, "pgb_breaker_call: the breaker is NULL or not "
					 "initialised (pgb_breaker_init)");
	if (!op)
		return pgbi_bad_argument(out, "pgb_breaker_call: op is NULL");
	breaker_load(br, &b);
	now = breaker_now(br);
	if (!breaker_allow(&b, now, &ticket)) {
		if (out) {
			*out = (struct pgb_outcome){ .attempts = 0 };
			if (b.state == BREAKER_OPEN)
				pgbi_outcome_set(out, PGB_SQLSTATE_BREAKER_OPEN,
					    "circuit breaker open after %d consecutive failures: "
					    "failing fast; next probe in %lld ms", b.failures,
					    (long long)(breaker_retry_at(&b) - now));
			else
				pgbi_outcome_set(out, PGB_SQLSTATE_BREAKER_OPEN,
					    "circuit breaker half-open: failing fast while its "
					    "probe runs");
		}
		return PGB_REJECTED;
	}
	/* Stored before op runs: a call from inside op sees the probe out. */
	breaker_store(br, &b);
	rc = op(arg, &why);
	breaker_load(br, &b);
	now = breaker_now(br);
	why.attempts = 1;
	if (rc == 0) {
		breaker_success(&b, now);
		breaker_store(br, &b);
		if (out)
			*out = (struct pgb_outcome){ .attempts = 1 };
		return PGB_OK;
	}
	pgbi_outcome_tidy(&why, rc, "operation");
	if (is_answer(why.sqlstate))
		breaker_success(&b, now);
	else
		breaker_failure(&b, ticket, BREAKER_OUTAGE, now);
	breaker_store(br, &b);
	if (out)
		*out = why;
	return PGB_FAILED;
}

PGB_API int pgb_breaker_state(const struct pgb_breaker *br)
{
	struct breaker b;

	if (!br || br->magic != BREAKER_MAGIC)
		return -1;
	breaker_load(br, &b);
	if (b.state == BREAKER_OPEN && breaker_now(br) >= breaker_retry_at(&b))
		return PGB_BREAKER_HALF_OPEN;
	return (int)b.state;
}
