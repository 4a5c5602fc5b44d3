/* The pure retry and prepared-statement decisions: what an SQLSTATE or a
 * statement's text says about running it again. No state, no I/O. */
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
