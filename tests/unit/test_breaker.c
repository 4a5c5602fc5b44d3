/* Unit tests for common/breaker.c, driven by an injected clock (the time is
 * an argument): closed -> open -> half-open -> closed or open again, with
 * the open period doubling after each failed probe up to its cap. */
#include <criterion/criterion.h>

#include <stdint.h>

#include "breaker.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

enum step_kind { ALLOW, SUCCESS, FAILURE };

/* One step of a scenario: at time `at`, do `kind`; for ALLOW, expect `want`
 * from breaker_allow (for FAILURE, whether it opened the breaker); then the
 * breaker must be in `state`. */
struct step {
	int64_t at;
	enum step_kind kind;
	int want;
	enum breaker_state state;
};

static void run(struct breaker *br, const struct step *s, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		int got = 0;

		switch (s[i].kind) {
		case ALLOW:
			got = breaker_allow(br, s[i].at);
			break;
		case SUCCESS:
			breaker_success(br, s[i].at);
			break;
		case FAILURE:
			got = breaker_failure(br, s[i].at);
			break;
		}
		if (s[i].kind != SUCCESS)
			cr_assert_eq(got, s[i].want, "%s, step %zu (t=%lld): got %d, want %d", name, i,
				     (long long)s[i].at, got, s[i].want);
		cr_assert_eq(br->state, s[i].state, "%s, step %zu (t=%lld): state %s, want %s", name,
			     i, (long long)s[i].at, breaker_state_name(br->state),
			     breaker_state_name(s[i].state));
	}
}

Test(breaker, opens_after_threshold_consecutive_failures)
{
	struct breaker br;
	static const struct step steps[] = {
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 1, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 2, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 3, .kind = SUCCESS, .state = BREAKER_CLOSED },  /* resets the count */
		{ .at = 4, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 5, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 6, .kind = FAILURE, .want = 1, .state = BREAKER_OPEN },  /* third in a row */
		{ .at = 7, .kind = ALLOW, .want = 0, .state = BREAKER_OPEN },
		{ .at = 1005, .kind = ALLOW, .want = 0, .state = BREAKER_OPEN },
	};

	breaker_init(&br, 3, 1000, 8000);
	run(&br, steps, NELEM(steps), "threshold");
	cr_assert_eq(breaker_retry_at(&br), 1006);
	cr_assert_eq(br.times_opened, 1);
}

Test(breaker, half_open_lets_exactly_one_probe_through_and_success_closes)
{
	struct breaker br;
	static const struct step steps[] = {
		{ .at = 100, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 100, .kind = FAILURE, .want = 1, .state = BREAKER_OPEN },
		{ .at = 1099, .kind = ALLOW, .want = 0, .state = BREAKER_OPEN },
		{ .at = 1100, .kind = ALLOW, .want = 1, .state = BREAKER_HALF_OPEN }, /* the probe */
		{ .at = 1101, .kind = ALLOW, .want = 0, .state = BREAKER_HALF_OPEN }, /* no second */
		{ .at = 5000, .kind = ALLOW, .want = 0, .state = BREAKER_HALF_OPEN },
		{ .at = 5001, .kind = SUCCESS, .state = BREAKER_CLOSED },
		{ .at = 5002, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 5003, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		/* the count started again from zero */
		{ .at = 5004, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 5005, .kind = FAILURE, .want = 1, .state = BREAKER_OPEN },
		{ .at = 6004, .kind = ALLOW, .want = 0, .state = BREAKER_OPEN },
		{ .at = 6005, .kind = ALLOW, .want = 1, .state = BREAKER_HALF_OPEN }, /* not doubled */
	};

	breaker_init(&br, 2, 1000, 8000);
	run(&br, steps, NELEM(steps), "probe");
	cr_assert_eq(br.changed_ms, 6005);
	cr_assert_eq(br.times_opened, 2);
}

Test(breaker, failed_probes_double_the_open_period_up_to_the_cap)
{
	struct breaker br;
	int64_t t = 0;
	static const int64_t periods[] = { 1000, 2000, 4000, 8000, 8000, 8000 };

	breaker_init(&br, 1, 1000, 8000);
	cr_assert(breaker_allow(&br, t));
	cr_assert_eq(breaker_failure(&br, t), 1);
	for (size_t i = 0; i < NELEM(periods); i++) {
		cr_assert_eq(br.state, BREAKER_OPEN);
		cr_assert_eq(breaker_retry_at(&br), t + periods[i], "open period %zu: %lld, want %lld",
			     i, (long long)(breaker_retry_at(&br) - t), (long long)periods[i]);
		cr_assert_not(breaker_allow(&br, t + periods[i] - 1));
		t += periods[i];
		cr_assert(breaker_allow(&br, t), "probe %zu refused", i);
		cr_assert_eq(br.state, BREAKER_HALF_OPEN);
		cr_assert_eq(breaker_failure(&br, t), 1, "a failed probe reopens");
	}
	/* a successful probe closes it and forgets the doubling */
	t += 8000;
	cr_assert(breaker_allow(&br, t));
	breaker_success(&br, t);
	cr_assert_eq(br.state, BREAKER_CLOSED);
	cr_assert_eq(breaker_failure(&br, t), 1);
	cr_assert_eq(breaker_retry_at(&br), t + 1000);
}

Test(breaker, late_failure_while_open_does_not_extend_it)
{
	struct breaker br;

	breaker_init(&br, 1, 1000, 8000);
	cr_assert_eq(breaker_failure(&br, 0), 1);
	/* an attempt that started before it opened fails late */
	cr_assert_eq(breaker_failure(&br, 500), 0);
	cr_assert_eq(breaker_retry_at(&br), 1000);
	cr_assert_eq(br.times_opened, 1);
}

Test(breaker, init_clamps_nonsense)
{
	static const struct {
		int threshold;
		int64_t reset_ms, max_reset_ms;
		int want_threshold;
		int64_t want_reset, want_max;
	} cases[] = {
		{ .threshold = 5, .reset_ms = 30000, .max_reset_ms = 240000,
		  .want_threshold = 5, .want_reset = 30000, .want_max = 240000 },
		{ .threshold = 0, .reset_ms = 0, .max_reset_ms = 0,
		  .want_threshold = 1, .want_reset = 1, .want_max = 1 },
		{ .threshold = -3, .reset_ms = -10, .max_reset_ms = -10,
		  .want_threshold = 1, .want_reset = 1, .want_max = 1 },
		{ .threshold = 2, .reset_ms = 500, .max_reset_ms = 100,
		  .want_threshold = 2, .want_reset = 500, .want_max = 500 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct breaker br;

		breaker_init(&br, cases[i].threshold, cases[i].reset_ms, cases[i].max_reset_ms);
		cr_expect_eq(br.threshold, cases[i].want_threshold, "case %zu", i);
		cr_expect_eq(br.reset_ms, cases[i].want_reset, "case %zu", i);
		cr_expect_eq(br.max_reset_ms, cases[i].want_max, "case %zu", i);
		cr_expect_eq(br.state, BREAKER_CLOSED, "case %zu", i);
		/* it opens for a positive time, never for zero */
		breaker_failure(&br, 10);
		while (br.state == BREAKER_CLOSED)
			breaker_failure(&br, 10);
		cr_expect_gt(breaker_retry_at(&br), 10, "case %zu: open for no time", i);
	}
}

Test(breaker, state_names)
{
	cr_assert_str_eq(breaker_state_name(BREAKER_CLOSED), "closed");
	cr_assert_str_eq(breaker_state_name(BREAKER_OPEN), "open");
	cr_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
	cr_assert_str_eq(breaker_state_name((enum breaker_state)42), "?");
}
