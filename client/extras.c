/* libpgbroker helpers: SQLSTATE classification, pgb_retry, pgb_breaker and
 * pgb_transaction. Built on the public API (and, to refuse a nested
 * pgb_transaction, client/internal.h), with the broker's own policies
 * (common/sqlstate.c, common/backoff.c, common/breaker.c). */
#include "pgbroker.h"
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "breaker.h"
#include "clock.h"
#include "sqlstate.h"

#define PGB_API __attribute__((visibility("default")))
#define BREAKER_MAGIC 0x70676262u /* "pgbb" */

/* The pool's defaults (the pool pgbroker replaces; DESIGN.md). */
enum {
	DEF_ATTEMPTS = 5,
	DEF_BASE_MS = 100,
	DEF_MAX_MS = 30000,
	DEF_JITTER_PCT = 5,
	DEF_BREAKER_THRESHOLD = 5,
	DEF_BREAKER_RESET_MS = 30000,
	BREAKER_MAX_RESET_FACTOR = 8, /* the open period doubles up to 8 x reset_ms */
};

_Static_assert(PGB_RAN_NO == (int)RAN_NO && PGB_RAN_ROLLED_BACK == (int)RAN_ROLLED_BACK &&
		       PGB_RAN_UNKNOWN == (int)RAN_UNKNOWN && PGB_RAN_YES == (int)RAN_YES,
	       "pgbroker.h PGB_RAN_* must match common/sqlstate.h");
_Static_assert(PGB_BREAKER_CLOSED == (int)BREAKER_CLOSED && PGB_BREAKER_OPEN == (int)BREAKER_OPEN &&
		       PGB_BREAKER_HALF_OPEN == (int)BREAKER_HALF_OPEN,
	       "pgbroker.h PGB_BREAKER_* must match common/breaker.h");
_Static_assert(sizeof(struct breaker) <= sizeof(((struct pgb_breaker *)0)->opaque),
	       "struct pgb_breaker is too small for struct breaker");

/* --- classification --- */

PGB_API int pgb_sqlstate_is_transient(const char *sqlstate)
{
	return sqlstate_is_transient(sqlstate);
}

PGB_API int pgb_sqlstate_ran(const char *sqlstate)
{
	return (int)sqlstate_ran(sqlstate);
}

PGB_API int pgb_sqlstate_retry_safe(const char *sqlstate)
{
	return sqlstate_retry_safe(sqlstate);
}

/* --- outcomes --- */

static void outcome_set(struct pgb_outcome *o, const char *state, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void outcome_set(struct pgb_outcome *o, const char *state, const char *fmt, ...)
{
	va_list ap;

	snprintf(o->sqlstate, sizeof(o->sqlstate), "%s", state);
	va_start(ap, fmt);
	vsnprintf(o->message, sizeof(o->message), fmt, ap);
	va_end(ap);
}

/* Drop the trailing newline PostgreSQL's messages carry. */
static void chomp(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
}

static int bad_argument(struct pgb_outcome *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int bad_argument(struct pgb_outcome *out, const char *fmt, ...)
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
static void outcome_tidy(struct pgb_outcome *why, int rc, const char *what)
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
		outcome_set(why, "", "no result (out of memory)");
	} else if (why && !pgb_result_ok(r)) {
		outcome_set(why, pgb_sqlstate(r), "%s", pgb_result_error(r));
		chomp(why->message);
	}
	pgb_clear(r);
	return -1;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	if (ms <= 0)
		return;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* --- pgb_retry --- */

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
		return bad_argument(out, "pgb_retry: op is NULL");
	if (p.attempts < 1 || p.base_ms < 0 || p.max_ms < 0 || p.jitter_pct < 0 ||
	    p.jitter_pct > 100 || p.deadline_ms < 0)
		return bad_argument(out, "pgb_retry: invalid policy: attempts %d (allowed >= 1), "
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
		outcome_tidy(&why, rc, "operation");
		if (n >= p.attempts || !transient(why.sqlstate))
			break;
		delay = backoff_delay_ms(&bo, n);
		if (p.deadline_ms && clock_ms() + delay - start > p.deadline_ms)
			break;
		sleep_ms(delay);
	}
	if (out)
		*out = why;
	return ok ? PGB_OK : PGB_FAILED;
}

/* --- pgb_breaker --- */

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
		return bad_argument(out, "pgb_breaker_call: the breaker is NULL or not "
					 "initialised (pgb_breaker_init)");
	if (!op)
		return bad_argument(out, "pgb_breaker_call: op is NULL");
	breaker_load(br, &b);
	now = breaker_now(br);
	if (!breaker_allow(&b, now, &ticket)) {
		if (out) {
			*out = (struct pgb_outcome){ .attempts = 0 };
			if (b.state == BREAKER_OPEN)
				outcome_set(out, PGB_SQLSTATE_BREAKER_OPEN,
					    "circuit breaker open after %d consecutive failures: "
					    "failing fast; next probe in %lld ms", b.failures,
					    (long long)(breaker_retry_at(&b) - now));
			else
				outcome_set(out, PGB_SQLSTATE_BREAKER_OPEN,
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
	outcome_tidy(&why, rc, "operation");
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

/* --- pgb_transaction --- */

static const char *const isolation_sql[] = {
	[PGB_ISOLATION_DEFAULT] = "",
	[PGB_READ_COMMITTED] = " ISOLATION LEVEL READ COMMITTED",
	[PGB_REPEATABLE_READ] = " ISOLATION LEVEL REPEATABLE READ",
	[PGB_SERIALIZABLE] = " ISOLATION LEVEL SERIALIZABLE",
};

/* A failed BEGIN or COMMIT: its SQLSTATE, and its message naming the step. */
static void step_failed(struct pgb_outcome *why, pgb_result *r, const char *step)
{
	outcome_set(why, r ? pgb_sqlstate(r) : "", "%s: %s", step,
		    r ? pgb_result_error(r) : "no result (out of memory)");
	chomp(why->message);
	pgb_clear(r);
}

/* End the transaction after a failure; -1 (and a note in why) when even
 * that failed, so that nothing more is sent into a transaction in an
 * unknown state. ROLLBACK outside a transaction is harmless (a warning). */
static int rollback(pgb_conn *c, struct pgb_outcome *why)
{
	pgb_result *r = pgb_exec(c, "ROLLBACK");
	int ok = pgb_result_ok(r);

	if (!ok) {
		size_t n = strlen(why->message);
		char err[160];

		snprintf(err, sizeof(err), "%s", r ? pgb_result_error(r) : "out of memory");
		chomp(err);
		snprintf(why->message + n, sizeof(why->message) - n, "; ROLLBACK failed too: %s", err);
	}
	pgb_clear(r);
	return ok ? 0 : -1;
}

PGB_API int pgb_transaction(pgb_conn *c, pgb_txn_fn fn, void *arg, const struct pgb_txn_opts *opts,
			    struct pgb_outcome *out)
{
	struct pgb_txn_opts o = opts ? *opts : (struct pgb_txn_opts){ 0 };
	struct pgb_outcome why = { 0 };
	struct backoff bo;
	char begin[80];
	int attempts, committed = 0;

	if (!c)
		return bad_argument(out, "pgb_transaction: the connection is NULL");
	if (!fn)
		return bad_argument(out, "pgb_transaction: fn is NULL");
	/* Its BEGIN would only warn there, and its COMMIT would commit the
	 * caller's transaction. */
	if (pgbi_in_transaction(c))
		return bad_argument(out, "pgb_transaction: called inside an open transaction; "
					 "COMMIT or ROLLBACK it first");
	if (o.isolation < PGB_ISOLATION_DEFAULT || o.isolation > PGB_SERIALIZABLE ||
	    o.attempts < 0 || o.base_ms < 0 || o.max_ms < 0)
		return bad_argument(out, "pgb_transaction: invalid options: isolation %d (allowed "
					 "PGB_ISOLATION_DEFAULT..PGB_SERIALIZABLE), attempts %d, "
					 "base_ms %d, max_ms %d (allowed >= 0, 0 = default)",
				    o.isolation, o.attempts, o.base_ms, o.max_ms);
	attempts = o.attempts ? o.attempts : DEF_ATTEMPTS;
	bo = (struct backoff){
		.base_ms = o.base_ms ? o.base_ms : DEF_BASE_MS,
		.cap_ms = o.max_ms ? o.max_ms : DEF_MAX_MS,
		.jitter_pct = DEF_JITTER_PCT,
	};
	snprintf(begin, sizeof(begin), "BEGIN%s%s", isolation_sql[o.isolation],
		 o.read_only ? " READ ONLY" : "");

	for (int n = 1;; n++) {
		pgb_result *r;
		int rc;

		why = (struct pgb_outcome){ .attempts = n };
		r = pgb_exec(c, begin);
		if (!pgb_result_ok(r)) {
			step_failed(&why, r, "BEGIN");
			break;
		}
		pgb_clear(r);

		rc = fn(c, arg, &why);
		why.attempts = n;
		if (rc != 0) {
			outcome_tidy(&why, rc, "the transaction body");
			if (rollback(c, &why) < 0)
				break;
		} else {
			const char *tag;

			r = pgb_exec(c, "COMMIT");
			tag = pgb_cmd_status(r);
			if (pgb_result_ok(r) && tag && strcmp(tag, "COMMIT") == 0) {
				pgb_clear(r);
				committed = 1;
				break;
			}
			if (pgb_result_ok(r)) {
				/* COMMIT of an aborted transaction answers ROLLBACK. */
				pgb_clear(r);
				outcome_set(&why, "25P02", "COMMIT rolled back: a statement of the "
					    "transaction failed, but the body returned 0");
				break;
			}
			step_failed(&why, r, "COMMIT");
			/* A failed COMMIT ended the transaction, unless it never got
			 * to PostgreSQL: make sure none is left open. */
			if (pgb_status(c) == PGB_CONNECTION_OK && rollback(c, &why) < 0)
				break;
		}
		if (n >= attempts || !sqlstate_txn_retryable(why.sqlstate))
			break;
		sleep_ms(backoff_delay_ms(&bo, n));
	}
	if (committed)
		why = (struct pgb_outcome){ .attempts = why.attempts };
	if (out)
		*out = why;
	return committed ? PGB_OK : PGB_FAILED;
}
