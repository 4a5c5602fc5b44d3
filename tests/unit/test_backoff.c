/* Unit tests for common/backoff.c: the schedule (base, doubling, cap), the
 * jitter bounds, and degenerate inputs. */
#include <criterion/criterion.h>

#include <stdint.h>

#include "backoff.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

Test(backoff, schedule_without_jitter_doubles_from_base_up_to_cap)
{
	static const struct {
		int64_t base_ms, cap_ms;
		int attempt;
		int64_t want;
	} cases[] = {
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 1, .want = 100 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 2, .want = 200 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 3, .want = 400 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 5, .want = 1600 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 9, .want = 25600 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 10, .want = 30000 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 1000, .want = 30000 },
		{ .base_ms = 100, .cap_ms = 30000, .attempt = 0, .want = 100 },   /* < 1: the first */
		{ .base_ms = 100, .cap_ms = 30000, .attempt = -7, .want = 100 },
		{ .base_ms = 500, .cap_ms = 300, .attempt = 1, .want = 300 },     /* cap below base */
		{ .base_ms = 0, .cap_ms = 30000, .attempt = 5, .want = 0 },
		{ .base_ms = 0, .cap_ms = 30000, .attempt = INT32_MAX, .want = 0 }, /* no long loop */
		{ .base_ms = -5, .cap_ms = 30000, .attempt = INT32_MAX, .want = 0 },
		{ .base_ms = 1, .cap_ms = INT64_MAX / 4, .attempt = INT32_MAX, .want = INT64_MAX / 4 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct backoff bo = { .base_ms = cases[i].base_ms, .cap_ms = cases[i].cap_ms };

		cr_expect_eq(backoff_delay_ms(&bo, cases[i].attempt), cases[i].want,
			     "case %zu: base %lld cap %lld attempt %d: got %lld, want %lld", i,
			     (long long)cases[i].base_ms, (long long)cases[i].cap_ms, cases[i].attempt,
			     (long long)backoff_delay_ms(&bo, cases[i].attempt),
			     (long long)cases[i].want);
	}
}

Test(backoff, pool_defaults_stay_within_five_percent_and_the_cap)
{
	struct backoff bo = { .base_ms = 100, .cap_ms = 30000, .jitter_pct = 5, .rng = 12345 };

	for (int attempt = 1; attempt <= 12; attempt++) {
		int64_t nominal = 100LL << (attempt - 1);
		int64_t lo, hi, seen_lo = INT64_MAX, seen_hi = 0;

		if (nominal > 30000)
			nominal = 30000;
		lo = nominal - nominal * 5 / 100;
		hi = nominal + nominal * 5 / 100;
		if (hi > 30000)
			hi = 30000;
		for (int k = 0; k < 2000; k++) {
			int64_t d = backoff_delay_ms(&bo, attempt);

			cr_assert(d >= lo && d <= hi, "attempt %d: %lld outside [%lld, %lld]", attempt,
				  (long long)d, (long long)lo, (long long)hi);
			seen_lo = d < seen_lo ? d : seen_lo;
			seen_hi = d > seen_hi ? d : seen_hi;
		}
		/* the jitter really spreads: both halves of the band are hit */
		cr_expect_lt(seen_lo, nominal, "attempt %d: never below nominal", attempt);
		if (hi > nominal)
			cr_expect_gt(seen_hi, nominal, "attempt %d: never above nominal", attempt);
	}
}

Test(backoff, full_jitter_is_uniform_in_zero_to_delay)
{
	struct backoff bo = { .base_ms = 100, .cap_ms = 1000, .jitter_pct = 100, .rng = 99 };
	int buckets[4] = { 0 };

	for (int k = 0; k < 8000; k++) {
		int64_t d = backoff_delay_ms(&bo, 3);   /* nominal 400 */

		cr_assert(d >= 0 && d <= 400, "%lld outside [0, 400]", (long long)d);
		buckets[d * 4 / 401]++;
	}
	for (int i = 0; i < 4; i++)
		cr_expect(buckets[i] > 1600 && buckets[i] < 2400, "bucket %d has %d of 8000", i,
			  buckets[i]);
	for (int k = 0; k < 1000; k++)
		cr_assert_leq(backoff_delay_ms(&bo, 50), 1000, "full jitter above the cap");
}

Test(backoff, same_seed_same_schedule_and_zero_seed_is_seeded)
{
	struct backoff a = { .base_ms = 100, .cap_ms = 30000, .jitter_pct = 50, .rng = 7 };
	struct backoff b = a;
	struct backoff z = { .base_ms = 100, .cap_ms = 30000, .jitter_pct = 50 };

	for (int i = 1; i <= 20; i++)
		cr_assert_eq(backoff_delay_ms(&a, i), backoff_delay_ms(&b, i));
	backoff_delay_ms(&z, 1);
	cr_assert_neq(z.rng, 0, "a zero seed must be replaced");
}

Test(backoff, jitter_never_goes_negative_or_past_the_cap)
{
	static const struct {
		int64_t base_ms, cap_ms;
		int jitter_pct;
	} cases[] = {
		{ .base_ms = 1, .cap_ms = 1, .jitter_pct = 99 },
		{ .base_ms = 3, .cap_ms = 10, .jitter_pct = 99 },
		{ .base_ms = 1000, .cap_ms = 1000, .jitter_pct = 50 },
		{ .base_ms = 10, .cap_ms = 100, .jitter_pct = 150 },
		{ .base_ms = 10, .cap_ms = 100, .jitter_pct = -20 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct backoff bo = { .base_ms = cases[i].base_ms, .cap_ms = cases[i].cap_ms,
				      .jitter_pct = cases[i].jitter_pct, .rng = 3 + i };

		for (int attempt = 1; attempt < 40; attempt++) {
			int64_t d = backoff_delay_ms(&bo, attempt);

			cr_assert(d >= 0 && d <= cases[i].cap_ms, "case %zu attempt %d: %lld", i,
				  attempt, (long long)d);
		}
	}
}
