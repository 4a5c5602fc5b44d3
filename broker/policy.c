/* The pure retry and prepared-statement decisions: what an SQLSTATE or a
 * statement's text says about running it again; and the pool controller's
 * decision from one interval's counts. No broker state, no I/O. */
#include <string.h>

#include "policy.h"
#include "classify.h"
#include "sqlstate.h"

/* The shared SQLSTATE table says which roll back what they interrupted. */
int policy_rolled_back(const char *state)
{
	return state && sqlstate_txn_retryable(state);
}

/* 26000: the prepared statement is gone (DEALLOCATE behind our back);
 * 0A000: "cached plan must not change result type" (a table changed). */
int policy_prepared_lost(int prep_sent, const char *state)
{
	return !prep_sent && state &&
	       (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0);
}

/* Class 42: no operator or function for the parameter types inferred at
 * Prepare; class 22: a parameter read as such a type. */
int policy_fixed_at_prepare(const char *state)
{
	return state && (strncmp(state, "42", 2) == 0 || strncmp(state, "22", 2) == 0);
}

/* Asked only when a retry is in question, not for every statement. */
int policy_all_or_nothing(const struct req_view *v, const struct req_view *subs, uint32_t nsub)
{
	if (!sql_all_or_nothing(v->sql))
		return 0;
	for (uint32_t i = 1; i < nsub; i++)
		if (!sql_all_or_nothing(subs[i].sql))
			return 0;
	return 1;
}

int policy_ends_transaction(const struct req_view *v, const struct req_view *subs,
			    uint32_t nsub)
{
	if (sql_may_commit(v->sql))
		return 1;
	for (uint32_t i = 1; i < nsub; i++)
		if (sql_may_commit(subs[i].sql))
			return 1;
	return 0;
}

static uint32_t clamp(uint32_t v, uint32_t lo, uint32_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

uint32_t policy_pool_size(struct pool_ctl *c, const struct pool_sample *s)
{
	uint32_t t = clamp(s->target, s->min, s->max), used, keep, step;

	if (!c->hold_base)
		c->hold_base = POOL_HOLD_MIN;
	if (s->waited) {
		c->calm = 0;
		/* More backends help only when the full pool is held by pins,
		 * or by fewer running statements than the cores can take. */
		if (t < s->max && s->busy_peak + s->pinned_peak >= t &&
		    (s->pinned_peak > 0 || s->busy_peak < 2 * s->cores)) {
			step = t / 4 > s->waited ? t / 4 : s->waited;
			step = step ? step : 1;
			if (c->last < 0 && c->hold_base < POOL_HOLD_MAX)
				c->hold_base *= 2;	/* this grow undoes a shrink */
			c->hold = c->hold_base;
			c->last = 1;
			return clamp(t + step, s->min, s->max);
		}
		return t;
	}
	if (c->hold)
		c->hold--;
	if (++c->calm < POOL_CALM_TICKS || c->hold)
		return t;
	/* Calm: one step down, keeping what was in use plus a quarter. */
	used = s->busy_peak + s->pinned_peak;
	keep = used + used / 4 + 1;
	if (keep >= t || t <= s->min)
		return t;
	c->calm = 0;
	c->last = -1;
	return clamp(t - 1, s->min, s->max);
}
