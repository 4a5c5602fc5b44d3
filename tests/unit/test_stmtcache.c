/* The prepared-statement cache and the heat table. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "broker/stmtcache.h"

Test(stmtcache, find_add_forget_clear)
{
	struct stmt_cache c = { 0 };
	const char *q = "select abalance from pgbench_accounts where aid = $1";
	uint64_t h = stmt_hash(q, 1);
	uint32_t id;
	char name[STMT_NAME_MAX];

	cr_expect_eq(stmt_cache_find(&c, h, q, 1), 0);
	id = stmt_cache_add(&c, h, q, 1);
	cr_assert_neq(id, 0);
	cr_expect_eq(stmt_cache_find(&c, h, q, 1), id);
	/* same text, other parameter count: another statement */
	cr_expect_eq(stmt_cache_find(&c, stmt_hash(q, 2), q, 2), 0);
	cr_expect_neq(stmt_hash(q, 1), stmt_hash(q, 2));
	stmt_name(name, sizeof(name), 0xdeadbeef, id);
	cr_expect_str_eq(name, "_pgbroker_deadbeef_1");
	stmt_name(name, sizeof(name), UINT32_MAX, UINT32_MAX);
	cr_expect_str_eq(name, "_pgbroker_ffffffff_4294967295");

	stmt_cache_forget(&c, id);
	cr_expect_eq(stmt_cache_find(&c, h, q, 1), 0);
	cr_expect_eq(c.live, 0);
	/* ids are never reused on one connection */
	cr_expect_gt(stmt_cache_add(&c, h, q, 1), id);
	stmt_cache_clear(&c);
	cr_expect_eq(stmt_cache_find(&c, h, q, 1), 0);
	cr_expect_null(c.slots);
}

Test(stmtcache, colliding_hashes_compare_text)
{
	struct stmt_cache c = { 0 };
	uint32_t a = stmt_cache_add(&c, 42, "select 1", 0);
	uint32_t b = stmt_cache_add(&c, 42, "select 2", 0);

	cr_assert(a && b && a != b);
	cr_expect_eq(stmt_cache_find(&c, 42, "select 1", 0), a);
	cr_expect_eq(stmt_cache_find(&c, 42, "select 2", 0), b);
	cr_expect_eq(stmt_cache_find(&c, 42, "select 3", 0), 0);
	/* a tombstone in the probe chain does not hide what follows */
	stmt_cache_forget(&c, a);
	cr_expect_eq(stmt_cache_find(&c, 42, "select 2", 0), b);
	stmt_cache_clear(&c);
}

Test(stmtcache, bounded_and_long_texts_refused)
{
	struct stmt_cache c = { 0 };
	static char big[STMT_TEXT_MAX + 2];
	char q[64];
	uint32_t first = 0;

	for (int i = 0; i < STMT_CACHE_MAX; i++) {
		uint32_t id;

		snprintf(q, sizeof(q), "select %d", i);
		id = stmt_cache_add(&c, stmt_hash(q, 0), q, 0);
		cr_assert_neq(id, 0, "entry %d", i);
		if (!first)
			first = id;
	}
	cr_expect_eq(stmt_cache_add(&c, stmt_hash("select x", 0), "select x", 0), 0, "full");
	/* forgetting one makes room; churn never exhausts the slots */
	for (int round = 0; round < 3 * STMT_CACHE_SLOTS; round++) {
		uint32_t id;

		stmt_cache_forget(&c, first);
		snprintf(q, sizeof(q), "select 'churn %d'", round);
		id = stmt_cache_add(&c, stmt_hash(q, 0), q, 0);
		cr_assert_neq(id, 0, "round %d", round);
		cr_assert_eq(stmt_cache_find(&c, stmt_hash(q, 0), q, 0), id);
		first = id;
	}
	cr_expect_eq(c.live, STMT_CACHE_MAX);
	stmt_cache_clear(&c);
	memset(big, 'x', sizeof(big) - 1);
	cr_expect_eq(stmt_cache_add(&c, stmt_hash(big, 0), big, 0), 0);
	stmt_cache_clear(&c);
}

Test(stmtcache, heat_counts_repeats_and_cools)
{
	static struct stmt_heat t;
	uint64_t a = stmt_hash("select 1", 0), b = stmt_hash("select 2", 0);

	cr_expect_eq(stmt_heat_see(&t, a), 1);
	cr_expect_eq(stmt_heat_see(&t, a), 2);
	cr_expect_eq(stmt_heat_see(&t, b), 1);
	cr_expect_eq(stmt_heat_see(&t, a), 3);
	stmt_heat_cool(&t, a);
	cr_expect_eq(stmt_heat_see(&t, a), 1);
}

Test(stmtcache, times_say_which_texts_are_quick)
{
	static struct stmt_heat t;
	uint64_t a = stmt_hash("select 1", 0), s = stmt_hash("select pg_sleep(3)", 0);
	int runs = 0;

	/* never timed: not quick */
	cr_expect_not(stmt_time_quick(&t, a, 4000, 20000));
	stmt_time_add(&t, a, 100);
	cr_expect(stmt_time_quick(&t, a, 4000, 20000));
	/* one slow run keeps a text out for a while, not for ever */
	stmt_time_add(&t, s, 3000000);
	cr_expect_not(stmt_time_quick(&t, s, 4000, 20000));
	while (!stmt_time_quick(&t, s, 4000, 20000) && runs < 1000) {
		stmt_time_add(&t, s, 100);
		runs++;
	}
	cr_expect(runs > 10 && runs < 100, "back after %d quick runs", runs);
	/* the other text was not touched */
	cr_expect(stmt_time_quick(&t, a, 4000, 20000));
	/* an average over the limit with no outlier is slow too */
	for (int i = 0; i < 50; i++)
		stmt_time_add(&t, a, 5000);
	cr_expect_not(stmt_time_quick(&t, a, 4000, 20000));
	/* huge values do not wrap */
	stmt_time_add(&t, a, UINT64_MAX);
	cr_expect_not(stmt_time_quick(&t, a, 4000, 20000));
}
