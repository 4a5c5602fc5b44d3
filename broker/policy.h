/* policy.c: the pure retry and prepared-statement decisions. Each answers
 * from an SQLSTATE or a statement's text alone: no broker state, no I/O,
 * so each is unit-tested on its own (tests/unit/test_policy.c). */
#ifndef PGB_BROKER_POLICY_H
#define PGB_BROKER_POLICY_H

#include <stdint.h>

#include "proto.h"

/* 40001 and 40P01 roll back what they interrupted: outside an explicit
 * transaction the statement may run again. NULL state: 0. */
int policy_rolled_back(const char *state);

/* An Execute of a statement prepared earlier (prep_sent 0: its Prepare
 * went out with an earlier statement) failed because of the prepared
 * statement itself: 26000 (gone) or 0A000 (cached plan changed). */
int policy_prepared_lost(int prep_sent, const char *state);

/* What a prepared statement may fail with where its text, analysed
 * afresh, would not: classes 42 and 22. */
int policy_fixed_at_prepare(const char *state);

/* An error undid all of the statement v and the batch statements
 * subs[1..nsub) (sql_all_or_nothing for each). nsub 0: v alone. */
int policy_all_or_nothing(const struct req_view *v, const struct req_view *subs, uint32_t nsub);

/* COMMIT and its kin in v or subs[1..nsub): when the connection breaks
 * under one, the transaction may or may not have committed. */
int policy_ends_transaction(const struct req_view *v, const struct req_view *subs,
			    uint32_t nsub);

#endif
