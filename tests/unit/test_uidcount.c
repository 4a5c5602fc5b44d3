/* Unit tests for common/uidcount.c: agents per uid for the per-uid cap. */
#include <criterion/criterion.h>
#include <errno.h>

#include "uidcount.h"

Test(uidcount, counts_up_and_down_per_uid)
{
	struct uidcount u;

	cr_assert_eq(uidcount_init(&u, 4), 0);
	cr_assert_eq(uidcount_get(&u, 1000), 0);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(uidcount_add(&u, 1000), 0);
	cr_assert_eq(uidcount_add(&u, 0), 0);
	cr_assert_eq(uidcount_get(&u, 1000), 5);
	cr_assert_eq(uidcount_get(&u, 0), 1);
	cr_assert_eq(uidcount_get(&u, 1001), 0);
	uidcount_del(&u, 1000);
	uidcount_del(&u, 0);
	uidcount_del(&u, 0);	/* one too many: left alone */
	uidcount_del(&u, 4242);
	cr_assert_eq(uidcount_get(&u, 1000), 4);
	cr_assert_eq(uidcount_get(&u, 0), 0);
	uidcount_free(&u);
}

/* Many uids come and go (a uid with no agent left gives its entry back):
 * the table never fills while at most `uids` are present at once. */
Test(uidcount, uids_coming_and_going_never_fill_it)
{
	struct uidcount u;

	cr_assert_eq(uidcount_init(&u, 8), 0);
	for (uid_t base = 0; base < 100000; base += 8) {
		for (uid_t i = 0; i < 8; i++) {
			cr_assert_eq(uidcount_add(&u, base + i), 0, "uid %u", base + i);
			cr_assert_eq(uidcount_add(&u, base + i), 0);
		}
		for (uid_t i = 0; i < 8; i++)
			cr_assert_eq(uidcount_get(&u, base + i), 2);
		for (uid_t i = 0; i < 8; i++) {
			uidcount_del(&u, base + i);
			uidcount_del(&u, base + i);
		}
		cr_assert_eq(uidcount_get(&u, base), 0);
	}
	uidcount_free(&u);
	cr_assert_eq(uidcount_get(&u, 1), 0, "a freed table answers 0");
	cr_assert_eq(uidcount_add(&u, 1), -ENOSPC);
}

Test(uidcount, colliding_uids_keep_their_own_counts)
{
	struct uidcount u;

	cr_assert_eq(uidcount_init(&u, 2), 0);	/* 16 entries: uids 16 apart collide often */
	for (uid_t i = 0; i < 8; i++)
		for (uid_t k = 0; k <= i; k++)
			cr_assert_eq(uidcount_add(&u, i * 16), 0);
	for (uid_t i = 0; i < 8; i++)
		cr_assert_eq(uidcount_get(&u, i * 16), i + 1, "uid %u", i * 16);
	/* the middle of a probe chain leaves: the ones after it are still found */
	for (uid_t k = 0; k < 4; k++)
		uidcount_del(&u, 3 * 16);
	for (uid_t i = 0; i < 8; i++)
		cr_assert_eq(uidcount_get(&u, i * 16), i == 3 ? 0 : i + 1, "uid %u", i * 16);
	uidcount_free(&u);
}
