/* Unit tests for common/ratelimit.c, with the time as an argument. */
#include <criterion/criterion.h>

#include <stdint.h>

#include "ratelimit.h"

Test(ratelimit, a_flood_becomes_a_burst_and_one_count)
{
	struct ratelimit rl;
	uint64_t told = 99;
	int out = 0;
	int64_t next = INT64_MAX;

	ratelimit_init(&rl, 5, 10000);
	/* 1019 refusals in 20 ms */
	for (int i = 0; i < 1019; i++) {
		told = 99;
		if (ratelimit_take(&rl, 1000 + i / 50, &told)) {
			out++;
			cr_assert_eq(told, 0, "line %d: nothing was suppressed yet", i);
		}
	}
	cr_assert_eq(out, 5);
	/* within the window: nothing to flush yet, but the timer is told when */
	cr_assert_eq(ratelimit_flush(&rl, 5000, &next), 0);
	cr_assert_eq(next, 11000);
	/* after it: the count, once */
	cr_assert_eq(ratelimit_flush(&rl, 11000, NULL), 1014);
	cr_assert_eq(ratelimit_flush(&rl, 11001, NULL), 0);
	next = INT64_MAX;
	cr_assert_eq(ratelimit_flush(&rl, 11001, &next), 0);
	cr_assert_eq(next, INT64_MAX, "nothing left: no wake-up");
}

Test(ratelimit, the_next_line_through_tells_the_count)
{
	struct ratelimit rl;
	uint64_t told;

	ratelimit_init(&rl, 2, 1000);
	cr_assert(ratelimit_take(&rl, 0, &told));
	cr_assert(ratelimit_take(&rl, 1, &told));
	for (int i = 0; i < 7; i++)
		cr_assert_not(ratelimit_take(&rl, 2 + i, &told));
	cr_assert(ratelimit_take(&rl, 1000, &told), "a new window lets lines through");
	cr_assert_eq(told, 7);
	cr_assert(ratelimit_take(&rl, 1001, &told));
	cr_assert_eq(told, 0, "told once only");
	cr_assert_eq(ratelimit_flush(&rl, 5000, NULL), 0);
}

Test(ratelimit, init_clamps_nonsense)
{
	struct ratelimit rl;

	ratelimit_init(&rl, 0, 0);
	cr_assert(ratelimit_take(&rl, 0, NULL));
	cr_assert_not(ratelimit_take(&rl, 0, NULL));
	cr_assert(ratelimit_take(&rl, 1, NULL));
	/* the very first time may be any value, even negative */
	ratelimit_init(&rl, 1, 100);
	cr_assert(ratelimit_take(&rl, -5, NULL));
	cr_assert_not(ratelimit_take(&rl, 50, NULL));
}
