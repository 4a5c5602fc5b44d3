/* Circuit breaker; see breaker.h. */
#include "breaker.h"

void breaker_init(struct breaker *br, int threshold, int64_t first_ms, int64_t max_ms,
		  enum breaker_pace pace)
{
	*br = (struct breaker){ .paced = pace == BREAKER_PACE_FROM_FIRST };
	breaker_set_limits(br, threshold, first_ms, max_ms);
}

void breaker_set_limits(struct breaker *br, int threshold, int64_t first_ms, int64_t max_ms)
{
	if (first_ms < 1)
		first_ms = 1;
	br->threshold = threshold > 0 ? threshold : 1;
	br->first_ms = first_ms;
	br->max_ms = max_ms > first_ms ? max_ms : first_ms;
	br->first_at = br->paced ? 1 : br->threshold;
}

int64_t breaker_wait_ms(const struct breaker *br, int n)
{
	int64_t wait = br->first_ms;

	for (int i = br->first_at; i < n && wait < br->max_ms; i++)
		wait *= 2;
	return wait < br->max_ms ? wait : br->max_ms;
}

static void set_state(struct breaker *br, enum breaker_state s, int64_t now_ms)
{
	if (br->state != s)
		br->changed_ms = now_ms;
	br->state = s;
}

int breaker_allow(struct breaker *br, int64_t now_ms, uint64_t *ticket)
{
	switch (br->state) {
	case BREAKER_CLOSED:
		if (br->paced && br->failures) {
			if (br->probing || now_ms < br->retry_at_ms)
				return 0;
			br->probing = 1;
		}
		break;
	case BREAKER_OPEN:
		if (now_ms < br->retry_at_ms)
			return 0;
		set_state(br, BREAKER_HALF_OPEN, now_ms);
		br->probing = 1;
		break;
	case BREAKER_HALF_OPEN:
		if (br->probing)
			return 0;
		br->probing = 1;
		break;
	case BREAKER_MISCONFIGURED:
		if (br->probing || now_ms < br->retry_at_ms)
			return 0;
		br->probing = 1;
		break;
	default:
		return 0;
	}
	if (ticket)
		*ticket = br->round;
	return 1;
}

void breaker_success(struct breaker *br, int64_t now_ms)
{
	br->round++;
	br->failures = 0;
	br->probing = 0;
	br->retry_at_ms = 0;
	set_state(br, BREAKER_CLOSED, now_ms);
}

int breaker_failure(struct breaker *br, uint64_t ticket, enum breaker_cause cause,
		    int64_t now_ms)
{
	enum breaker_state was = br->state;
	enum breaker_state to = was;
	int opened;

	if (ticket != br->round)
		return 0;	/* that observation was made already */
	br->round++;
	br->probing = 0;
	if (br->failures < 1 << 30)
		br->failures++;
	br->retry_at_ms = now_ms + breaker_wait_ms(br, br->failures);
	if (cause == BREAKER_REFUSED)
		to = BREAKER_MISCONFIGURED;
	else if (was != BREAKER_CLOSED || br->failures >= br->threshold)
		to = BREAKER_OPEN;	/* a failed probe reopens */
	opened = to == BREAKER_OPEN && was != BREAKER_OPEN && was != BREAKER_HALF_OPEN;
	if (opened)
		br->times_opened++;
	set_state(br, to, now_ms);
	return opened || (to == BREAKER_MISCONFIGURED && was != BREAKER_MISCONFIGURED);
}

int64_t breaker_retry_at(const struct breaker *br)
{
	return br->failures ? br->retry_at_ms : 0;
}

int breaker_failing_fast(const struct breaker *br, int64_t now_ms)
{
	return (br->state == BREAKER_OPEN || br->state == BREAKER_MISCONFIGURED) &&
	       now_ms < br->retry_at_ms;
}

void breaker_retry_now(struct breaker *br, int64_t now_ms)
{
	if (br->failures && br->retry_at_ms > now_ms)
		br->retry_at_ms = now_ms;
}

const char *breaker_state_name(enum breaker_state s)
{
	switch (s) {
	case BREAKER_CLOSED: return "closed";
	case BREAKER_OPEN: return "open";
	case BREAKER_HALF_OPEN: return "half-open";
	case BREAKER_MISCONFIGURED: return "misconfigured";
	}
	return "?";
}
