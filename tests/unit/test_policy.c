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
