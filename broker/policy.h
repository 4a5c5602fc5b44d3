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

/* The pool's size controller. Once per interval the broker reports what
 * the pool did (struct pool_sample) and policy_pool_size answers how many
 * backends it may open now: between min_pool_size and max_pool_size. A
 * backend pinned idle in a transaction waits on its agent and costs the
 * server no CPU, so the backends worth having are enough busy ones to keep
 * the cores busy plus those pinned. The pool grows at once while
 * statements wait and the pool is full of pins (or of fewer busy backends
 * than twice the cores); it shrinks one step at a time after
 * POOL_CALM_TICKS intervals without a wait, never below what was in use
 * plus headroom, and never within hold intervals after a grow. Each grow
 * that undoes a shrink doubles hold (up to POOL_HOLD_MAX), so a load that
 * sits at the edge settles instead of oscillating. */
struct pool_sample {
	uint32_t target;        /* the size allowed until now */
	uint32_t min, max;      /* min_pool_size, max_pool_size */
	uint32_t cores;         /* busy backends that keep the cores busy */
	uint32_t busy_peak;     /* most backends running statements at once */
	uint32_t pinned_peak;   /* most backends pinned idle at once */
	uint32_t waited;        /* statements that had to wait for a backend */
};

struct pool_ctl {               /* the controller's memory; zero to start */
	uint32_t calm;          /* intervals in a row without a wait */
	uint32_t hold;          /* intervals left before a shrink may come */
	uint32_t hold_base;     /* hold after a grow (doubles on a reversal) */
	int last;               /* last move: 1 grew, -1 shrank, 0 none yet */
};

#define POOL_CALM_TICKS 5
#define POOL_HOLD_MIN   10
#define POOL_HOLD_MAX   640

/* The size for the next interval (== s->target: no change). */
uint32_t policy_pool_size(struct pool_ctl *c, const struct pool_sample *s);

#endif
