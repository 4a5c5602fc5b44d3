/* Unit tests for common/breaker.c, driven by an injected clock (the time is
 * an argument). pgb_breaker's policy (paced from the opening): closed ->
 * open -> half-open -> closed or open again, the open period doubling after
 * each failed probe up to its cap. The broker's (paced from the first
 * failure): attempts started together fail as one observation, one attempt
 * at a time on a 100 ms doubling schedule, and "misconfigured" for a server
 * that refuses us. */
#include <criterion/criterion.h>

#include <stdint.h>

#include "breaker.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

enum step_kind { ALLOW, SUCCESS, FAILURE, REFUSED };

/* One step of a scenario: at time `at`, do `kind`; for ALLOW, expect `want`
 * from breaker_allow (for FAILURE and REFUSED, whether it opened the breaker
 * or made it misconfigured); then the breaker must be in `state`. A failure
 * carries the ticket of the attempt number `attempt` (1 = the first ALLOW
 * that said yes; 0 = the current round, as for one attempt at a time). */
struct step {
	int64_t at;
	enum step_kind kind;
	int want;
	enum breaker_state state;
	int attempt;
};

static void run(struct breaker *br, const struct step *s, size_t n, const char *name)
{
	uint64_t tickets[64];
	int ntickets = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t t = br->round;
		int got = 0;

		if (s[i].attempt) {
			cr_assert_leq(s[i].attempt, ntickets, "%s, step %zu: no attempt %d", name, i,
				      s[i].attempt);
			t = tickets[s[i].attempt - 1];
		}
		switch (s[i].kind) {
		case ALLOW:
			got = breaker_allow(br, s[i].at, &t);
			if (got && ntickets < (int)NELEM(tickets))
				tickets[ntickets++] = t;
			break;
		case SUCCESS:
			breaker_success(br, s[i].at);
			break;
		case FAILURE:
			got = breaker_failure(br, t, BREAKER_OUTAGE, s[i].at);
			break;
		case REFUSED:
			got = breaker_failure(br, t, BREAKER_REFUSED, s[i].at);
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

	breaker_init(&br, 3, 1000, 8000, BREAKER_PACE_FROM_OPEN);
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

	breaker_init(&br, 2, 1000, 8000, BREAKER_PACE_FROM_OPEN);
	run(&br, steps, NELEM(steps), "probe");
	cr_assert_eq(br.changed_ms, 6005);
	cr_assert_eq(br.times_opened, 2);
}

Test(breaker, failed_probes_double_the_open_period_up_to_the_cap)
{
	struct breaker br;
	int64_t t = 0;
	static const int64_t periods[] = { 1000, 2000, 4000, 8000, 8000, 8000 };

	breaker_init(&br, 1, 1000, 8000, BREAKER_PACE_FROM_OPEN);
	cr_assert(breaker_allow(&br, t, NULL));
	cr_assert_eq(breaker_failure(&br, br.round, BREAKER_OUTAGE, t), 1);
	for (size_t i = 0; i < NELEM(periods); i++) {
		cr_assert_eq(br.state, BREAKER_OPEN);
		cr_assert_eq(breaker_retry_at(&br), t + periods[i], "open period %zu: %lld, want %lld",
			     i, (long long)(breaker_retry_at(&br) - t), (long long)periods[i]);
		cr_assert_not(breaker_allow(&br, t + periods[i] - 1, NULL));
		t += periods[i];
		cr_assert(breaker_allow(&br, t, NULL), "probe %zu refused", i);
		cr_assert_eq(br.state, BREAKER_HALF_OPEN);
		cr_assert_eq(breaker_failure(&br, br.round, BREAKER_OUTAGE, t), 0,
			     "a failed probe reopens, it does not open anew");
		cr_assert_eq(br.state, BREAKER_OPEN);
	}
	/* a successful probe closes it and forgets the doubling */
	cr_assert_eq(br.times_opened, 1);
	t += 8000;
	cr_assert(breaker_allow(&br, t, NULL));
	breaker_success(&br, t);
	cr_assert_eq(br.state, BREAKER_CLOSED);
	cr_assert_eq(breaker_failure(&br, br.round, BREAKER_OUTAGE, t), 1);
	cr_assert_eq(breaker_retry_at(&br), t + 1000);
	cr_assert_eq(br.times_opened, 2);
}

Test(breaker, late_failure_while_open_does_not_extend_it)
{
	struct breaker br;

	uint64_t t1, t2;

	breaker_init(&br, 1, 1000, 8000, BREAKER_PACE_FROM_OPEN);
	cr_assert(breaker_allow(&br, 0, &t1));
	cr_assert(breaker_allow(&br, 0, &t2));
	cr_assert_eq(breaker_failure(&br, t1, BREAKER_OUTAGE, 0), 1);
	/* an attempt that started before it opened fails late */
	cr_assert_eq(breaker_failure(&br, t2, BREAKER_OUTAGE, 500), 0);
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

		breaker_init(&br, cases[i].threshold, cases[i].reset_ms, cases[i].max_reset_ms,
			     BREAKER_PACE_FROM_OPEN);
		cr_expect_eq(br.threshold, cases[i].want_threshold, "case %zu", i);
		cr_expect_eq(br.first_ms, cases[i].want_reset, "case %zu", i);
		cr_expect_eq(br.max_ms, cases[i].want_max, "case %zu", i);
		cr_expect_eq(br.state, BREAKER_CLOSED, "case %zu", i);
		/* it opens for a positive time, never for zero */
		breaker_failure(&br, br.round, BREAKER_OUTAGE, 10);
		while (br.state == BREAKER_CLOSED)
			breaker_failure(&br, br.round, BREAKER_OUTAGE, 10);
		cr_expect_gt(breaker_retry_at(&br), 10, "case %zu: open for no time", i);
	}
}

Test(breaker, state_names)
{
	cr_assert_str_eq(breaker_state_name(BREAKER_CLOSED), "closed");
	cr_assert_str_eq(breaker_state_name(BREAKER_OPEN), "open");
	cr_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
	cr_assert_str_eq(breaker_state_name(BREAKER_MISCONFIGURED), "misconfigured");
	cr_assert_str_eq(breaker_state_name((enum breaker_state)42), "?");
}

/* ---- the broker's policy: paced from the first failure ---- */

Test(breaker, connects_started_together_fail_as_one_observation)
{
	struct breaker br;
	/* five connects start at once (a pool refilling after a restart); all
	 * five fail within a few ms: one failed observation, not five */
	static const struct step steps[] = {
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 3, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 1 },
		{ .at = 4, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 2 },
		{ .at = 5, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 3 },
		{ .at = 8, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 4 },
		{ .at = 9, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 5 },
		/* while it fails, one attempt at a time, 100 ms after the failure */
		{ .at = 102, .kind = ALLOW, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 103, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 104, .kind = ALLOW, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 110, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 6 },
		/* 200 ms after the second failure: the third attempt opens it */
		{ .at = 309, .kind = ALLOW, .want = 0, .state = BREAKER_CLOSED },
		{ .at = 310, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 311, .kind = FAILURE, .want = 1, .state = BREAKER_OPEN, .attempt = 7 },
	};

	breaker_init(&br, 3, 100, 30000, BREAKER_PACE_FROM_FIRST);
	run(&br, steps, NELEM(steps), "together");
	cr_assert_eq(br.failures, 3);
	cr_assert_eq(br.times_opened, 1);
	/* the fourth attempt, the probe, comes 400 ms after the third failure */
	cr_assert_eq(breaker_retry_at(&br), 711);
}

Test(breaker, the_schedule_doubles_from_100_ms_to_the_reset_timeout)
{
	struct breaker br;
	/* breaker_threshold 5, breaker_reset_timeout_ms 30000: the waits after
	 * each failed observation, open or not */
	static const int64_t waits[] = { 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600,
					 30000, 30000, 30000 };
	int64_t t = 1000;
	uint64_t ticket;

	breaker_init(&br, 5, 100, 30000, BREAKER_PACE_FROM_FIRST);
	cr_assert_eq(breaker_retry_at(&br), 0, "nothing failed yet");
	for (size_t i = 0; i < NELEM(waits); i++) {
		cr_assert(breaker_allow(&br, t, &ticket), "attempt %zu refused at its time", i + 1);
		if (i > 0)	/* before the first failure, any number may go */
			cr_assert_not(breaker_allow(&br, t, NULL), "a second attempt while one is out");
		cr_assert_eq(breaker_failure(&br, ticket, BREAKER_OUTAGE, t), i == 4,
			     "failure %zu", i + 1);
		cr_assert_eq(br.state, i < 4 ? BREAKER_CLOSED : BREAKER_OPEN, "after failure %zu",
			     i + 1);
		cr_assert_eq(breaker_wait_ms(&br, (int)i + 1), waits[i]);
		cr_assert_eq(breaker_retry_at(&br), t + waits[i], "wait after failure %zu: %lld",
			     i + 1, (long long)(breaker_retry_at(&br) - t));
		cr_assert_eq(breaker_failing_fast(&br, t + waits[i] - 1), i >= 4);
		cr_assert_not(breaker_allow(&br, t + waits[i] - 1, NULL), "early, after %zu", i + 1);
		t += waits[i];
		cr_assert_not(breaker_failing_fast(&br, t), "the probe's time has come");
	}
	cr_assert_eq(br.times_opened, 1, "reopening after a failed probe is not a new opening");
	/* PostgreSQL is back: the probe works, all starts again from zero */
	cr_assert(breaker_allow(&br, t, &ticket));
	cr_assert_eq(br.state, BREAKER_HALF_OPEN);
	breaker_success(&br, t);
	cr_assert_eq(br.state, BREAKER_CLOSED);
	cr_assert_eq(breaker_retry_at(&br), 0);
	for (int i = 0; i < 5; i++)
		cr_assert(breaker_allow(&br, t, NULL), "closed: every attempt may go");
}

Test(breaker, a_small_reset_timeout_caps_the_first_wait)
{
	struct breaker br;

	breaker_init(&br, 2, 100, 30, BREAKER_PACE_FROM_FIRST);
	cr_assert_eq(breaker_wait_ms(&br, 1), 100, "the cap is never below the first wait");
	breaker_init(&br, 2, 100, 300, BREAKER_PACE_FROM_FIRST);
	cr_assert_eq(breaker_wait_ms(&br, 1), 100);
	cr_assert_eq(breaker_wait_ms(&br, 2), 200);
	cr_assert_eq(breaker_wait_ms(&br, 3), 300);
	cr_assert_eq(breaker_wait_ms(&br, 1000000), 300);
}

Test(breaker, a_success_from_any_attempt_closes_it)
{
	struct breaker br;
	/* a connect that was slow to start succeeds while the breaker is open */
	static const struct step steps[] = {
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 5, .kind = FAILURE, .want = 1, .state = BREAKER_OPEN, .attempt = 1 },
		{ .at = 50, .kind = ALLOW, .want = 0, .state = BREAKER_OPEN },
		{ .at = 60, .kind = SUCCESS, .state = BREAKER_CLOSED },
		{ .at = 61, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 61, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		/* a failure of an attempt started before the success changes nothing */
		{ .at = 70, .kind = FAILURE, .want = 0, .state = BREAKER_CLOSED, .attempt = 2 },
	};

	breaker_init(&br, 1, 100, 1000, BREAKER_PACE_FROM_FIRST);
	run(&br, steps, NELEM(steps), "success");
	cr_assert_eq(br.failures, 0);
}

Test(breaker, a_refusal_is_misconfigured_at_once_and_probed_on_the_schedule)
{
	struct breaker br;
	static const struct step steps[] = {
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		{ .at = 0, .kind = ALLOW, .want = 1, .state = BREAKER_CLOSED },
		/* one answer (28P01, 3D000, ...) is enough: no threshold */
		{ .at = 2, .kind = REFUSED, .want = 1, .state = BREAKER_MISCONFIGURED, .attempt = 1 },
		{ .at = 3, .kind = REFUSED, .want = 0, .state = BREAKER_MISCONFIGURED, .attempt = 2 },
		{ .at = 101, .kind = ALLOW, .want = 0, .state = BREAKER_MISCONFIGURED },
		{ .at = 102, .kind = ALLOW, .want = 1, .state = BREAKER_MISCONFIGURED },
		{ .at = 103, .kind = ALLOW, .want = 0, .state = BREAKER_MISCONFIGURED },
		{ .at = 104, .kind = REFUSED, .want = 0, .state = BREAKER_MISCONFIGURED, .attempt = 3 },
		{ .at = 303, .kind = ALLOW, .want = 0, .state = BREAKER_MISCONFIGURED },
		{ .at = 304, .kind = ALLOW, .want = 1, .state = BREAKER_MISCONFIGURED },
		/* the server then went away: a failed probe, so open */
		{ .at = 305, .kind = FAILURE, .want = 1, .state = BREAKER_OPEN, .attempt = 4 },
		{ .at = 705, .kind = ALLOW, .want = 1, .state = BREAKER_HALF_OPEN },
		/* back, and still refusing us */
		{ .at = 706, .kind = REFUSED, .want = 1, .state = BREAKER_MISCONFIGURED, .attempt = 5 },
		{ .at = 2306, .kind = ALLOW, .want = 1, .state = BREAKER_MISCONFIGURED },
		/* fixed (pg_hba.conf, CREATE DATABASE): the probe gets in */
		{ .at = 2310, .kind = SUCCESS, .state = BREAKER_CLOSED },
	};

	breaker_init(&br, 5, 100, 30000, BREAKER_PACE_FROM_FIRST);
	run(&br, steps, NELEM(steps), "misconfigured");
	cr_assert_eq(br.times_opened, 1);
}

Test(breaker, misconfigured_fails_fast_until_its_probe_and_a_reload_probes_at_once)
{
	struct breaker br;
	uint64_t t;

	breaker_init(&br, 5, 100, 30000, BREAKER_PACE_FROM_FIRST);
	cr_assert_not(breaker_failing_fast(&br, 0));
	cr_assert(breaker_allow(&br, 0, &t));
	cr_assert_eq(breaker_failure(&br, t, BREAKER_REFUSED, 0), 1);
	cr_assert(breaker_failing_fast(&br, 99));
	cr_assert_not(breaker_failing_fast(&br, 100));
	breaker_retry_now(&br, 50);
	cr_assert_not(breaker_failing_fast(&br, 50));
	cr_assert(breaker_allow(&br, 50, &t));
	/* limits changed by a reload keep the state and the count */
	breaker_set_limits(&br, 2, 100, 1000);
	cr_assert_eq(br.state, BREAKER_MISCONFIGURED);
	cr_assert_eq(br.failures, 1);
	cr_assert_eq(br.threshold, 2);
	cr_assert_eq(breaker_failure(&br, t, BREAKER_REFUSED, 60), 0);
	cr_assert_eq(breaker_retry_at(&br), 260);
}
