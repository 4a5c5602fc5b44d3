/* libpgbroker: pgb_transaction, with the broker's backoff; refuses to nest
 * (pgbi_in_transaction). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "errbuf.h"
#include "internal.h"
#include "sqlstate.h"

static const char *const isolation_sql[] = {
	[PGB_ISOLATION_DEFAULT] = "",
	[PGB_READ_COMMITTED] = " ISOLATION LEVEL READ COMMITTED",
	[PGB_REPEATABLE_READ] = " ISOLATION LEVEL REPEATABLE READ",
	[PGB_SERIALIZABLE] = " ISOLATION LEVEL SERIALIZABLE",
};

/* A failed BEGIN or COMMIT: its SQLSTATE, and its message naming the step. */
static void step_failed(struct pgb_outcome *why, pgb_result *r, const char *step)
{
	pgbi_outcome_set(why, r ? pgb_sqlstate(r) : "", "%s: %s", step,
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
		return pgbi_bad_argument(out, "pgb_transaction: the connection is NULL");
	if (!fn)
		return pgbi_bad_argument(out, "pgb_transaction: fn is NULL");
	/* Its BEGIN would only warn there, and its COMMIT would commit the
	 * caller's transaction. */
	if (pgbi_in_transaction(c))
		return pgbi_bad_argument(out, "pgb_transaction: called inside an open transaction; "
					 "COMMIT or ROLLBACK it first");
	if (o.isolation < PGB_ISOLATION_DEFAULT || o.isolation > PGB_SERIALIZABLE ||
	    o.attempts < 0 || o.base_ms < 0 || o.max_ms < 0)
		return pgbi_bad_argument(out, "pgb_transaction: invalid options: isolation %d (allowed "
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
			pgbi_outcome_tidy(&why, rc, "the transaction body");
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
				pgbi_outcome_set(&why, "25P02", "COMMIT rolled back: a statement of the "
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
		pgbi_sleep_ms(backoff_delay_ms(&bo, n));
	}
	if (committed)
		why = (struct pgb_outcome){ .attempts = why.attempts };
	if (out)
		*out = why;
	return committed ? PGB_OK : PGB_FAILED;
}
