/* Unit tests for broker/policy.c: the retry and prepared-statement
 * decisions, each from an SQLSTATE or a statement's text alone. */
#include <criterion/criterion.h>

#include "broker/policy.h"

static struct req_view view(const char *sql)
{
	return (struct req_view){ .sql = sql };
}

Test(policy, rolled_back_only_for_serialization_and_deadlock)
{
	cr_assert(policy_rolled_back("40001"));
	cr_assert(policy_rolled_back("40P01"));
	cr_assert_not(policy_rolled_back("23505"));
	cr_assert_not(policy_rolled_back("08006"));
	cr_assert_not(policy_rolled_back("57014"));
	cr_assert_not(policy_rolled_back(NULL));
}

Test(policy, prepared_lost_only_for_a_statement_prepared_earlier)
{
	cr_assert(policy_prepared_lost(0, "26000"));
	cr_assert(policy_prepared_lost(0, "0A000"));
	/* prepared with this very statement: its failure is the text's own */
	cr_assert_not(policy_prepared_lost(1, "26000"));
	cr_assert_not(policy_prepared_lost(0, "42P01"));
	cr_assert_not(policy_prepared_lost(0, NULL));
}

Test(policy, fixed_at_prepare_is_classes_42_and_22)
{
	cr_assert(policy_fixed_at_prepare("42883"));
	cr_assert(policy_fixed_at_prepare("22P02"));
	cr_assert_not(policy_fixed_at_prepare("23505"));
	cr_assert_not(policy_fixed_at_prepare("40001"));
	cr_assert_not(policy_fixed_at_prepare(NULL));
}

Test(policy, all_or_nothing_single_statement)
{
	struct req_view v = view("update t set x = 1");

	cr_assert(policy_all_or_nothing(&v, NULL, 0));
	v = view("call p()");
	cr_assert_not(policy_all_or_nothing(&v, NULL, 0));
	v = view("do $$ begin commit; end $$");
	cr_assert_not(policy_all_or_nothing(&v, NULL, 0));
	v = view("commit");
	cr_assert_not(policy_all_or_nothing(&v, NULL, 0));
}

Test(policy, all_or_nothing_asks_every_statement_of_a_batch)
{
	struct req_view subs[3] = { view("insert into t values (1)"), view("select 1"),
				    view("update t set x = 2") };

	cr_assert(policy_all_or_nothing(&subs[0], subs, 3));
	subs[2] = view("call p()");
	cr_assert_not(policy_all_or_nothing(&subs[0], subs, 3));
}

Test(policy, ends_transaction_finds_commit_anywhere)
{
	struct req_view v = view("commit");
	struct req_view subs[2] = { view("select 1"), view("end") };

	cr_assert(policy_ends_transaction(&v, NULL, 0));
	v = view("prepare transaction 'x'");
	cr_assert(policy_ends_transaction(&v, NULL, 0));
	v = view("select 1");
	cr_assert_not(policy_ends_transaction(&v, NULL, 0));
	cr_assert(policy_ends_transaction(&subs[0], subs, 2));
	subs[1] = view("insert into t values (1)");
	cr_assert_not(policy_ends_transaction(&subs[0], subs, 2));
}

/* A load that needs `demand` backends (three in four pinned idle in a
 * transaction, the rest running): what one interval of it shows a pool
 * of target backends. */
static struct pool_sample load(uint32_t target, uint32_t demand)
{
	uint32_t used = demand < target ? demand : target;

	return (struct pool_sample){
		.target = target, .min = 2, .max = 40, .cores = 2,
		.pinned_peak = used * 3 / 4, .busy_peak = used - used * 3 / 4,
		.waited = demand > target ? demand - target : 0,
	};
}

struct run {
	uint32_t target;
	uint32_t grows, shrinks, reversals;
	int last_move;
};

/* ticks intervals of a load of `demand`: the moves the controller makes. */
static void run(struct pool_ctl *c, struct run *r, uint32_t demand, int ticks)
{
	for (int i = 0; i < ticks; i++) {
		struct pool_sample s = load(r->target, demand);
		uint32_t t = policy_pool_size(c, &s);
		int move = t > r->target ? 1 : t < r->target ? -1 : 0;

		cr_assert(t >= s.min && t <= s.max, "target %u outside %u..%u", t, s.min, s.max);
		if (move > 0)
			r->grows++;
		if (move < 0)
			r->shrinks++;
		if (move && r->last_move && move != r->last_move)
			r->reversals++;
		if (move)
			r->last_move = move;
		r->target = t;
	}
}

Test(policy, pool_grows_while_statements_wait_on_pins)
{
	struct pool_ctl c = { 0 };
	struct run r = { .target = 4 };

	run(&c, &r, 20, 30);
	cr_expect_geq(r.target, 20, "grew only to %u for a load of 20", r.target);
	cr_expect_eq(r.shrinks, 0);
	/* never past the hard cap */
	run(&c, &r, 100, 30);
	cr_expect_eq(r.target, 40);
}

Test(policy, pool_does_not_grow_for_busy_backends_alone)
{
	struct pool_ctl c = { 0 };
	/* every backend running, none pinned, the cores full: waiting is
	 * better than more backends competing for them */
	struct pool_sample s = { .target = 8, .min = 2, .max = 40, .cores = 2,
				 .busy_peak = 8, .waited = 30 };

	cr_expect_eq(policy_pool_size(&c, &s), 8);
	/* fewer running than twice the cores, the rest pinned: grows */
	s.busy_peak = 2;
	s.pinned_peak = 6;
	cr_expect_gt(policy_pool_size(&c, &s), 8);
}

Test(policy, pool_shrinks_when_calm_and_stops_above_what_is_used)
{
	struct pool_ctl c = { 0 };
	struct run r = { .target = 30 };

	run(&c, &r, 8, 400);
	cr_expect_eq(r.grows, 0);
	cr_expect_gt(r.shrinks, 0);
	cr_expect(r.target >= 8 + 8 / 4 + 1 && r.target <= 8 + 8 / 4 + 2,
		  "settled at %u for a load of 8", r.target);
	/* an idle pool goes down to min_pool_size */
	run(&c, &r, 0, 400);
	cr_expect_eq(r.target, 2);
}

/* A step change of load up, then down: each step moves the pool one way
 * only, and it then stays put: no oscillation. */
Test(policy, pool_settles_after_a_step_change_of_load)
{
	struct pool_ctl c = { 0 };
	struct run r = { .target = 4 };
	uint32_t settled;

	run(&c, &r, 4, 100);
	cr_expect_eq(r.grows + r.shrinks, 0, "moved under a load it fits");
	run(&c, &r, 24, 200);
	cr_expect_gt(r.grows, 0);
	cr_expect_eq(r.shrinks, 0, "shrank while the high load lasted");
	settled = r.target;
	run(&c, &r, 24, 500);
	cr_expect_eq(r.target, settled, "moved again under the same load");
	cr_expect_eq(r.reversals, 0);

	r.grows = r.shrinks = 0;
	run(&c, &r, 6, 1000);
	cr_expect_eq(r.grows, 0, "grew after the load fell");
	cr_expect_gt(r.shrinks, 0);
	settled = r.target;
	run(&c, &r, 6, 1000);
	cr_expect_eq(r.target, settled);
	cr_expect_eq(r.reversals, 1, "only the one turn from growing to shrinking");
}

/* A load that flickers at the edge of the pool: the hold after each grow
 * that undid a shrink doubles, so the turns become rarer. */
Test(policy, pool_turns_less_and_less_at_the_edge)
{
	struct pool_ctl c = { 0 };
	struct run r = { .target = 10 };
	uint32_t early, late;

	for (int i = 0; i < 60; i++) {
		run(&c, &r, 10, 20);
		run(&c, &r, 16, 1);
	}
	early = r.reversals;
	r.reversals = 0;
	for (int i = 0; i < 60; i++) {
		run(&c, &r, 10, 20);
		run(&c, &r, 16, 1);
	}
	late = r.reversals;
	cr_expect_lt(late, early, "turns did not become rarer: %u then %u", early, late);
	cr_expect_leq(c.hold_base, POOL_HOLD_MAX);
}
