/* Circuit breaker; see breaker.h. */
#include "breaker.h"

void breaker_init(struct breaker *br, int threshold, int64_t reset_ms, int64_t max_reset_ms)
{
	if (reset_ms < 1)
		reset_ms = 1;
	*br = (struct breaker){
		.threshold = threshold > 0 ? threshold : 1,
		.reset_ms = reset_ms,
		.max_reset_ms = max_reset_ms > reset_ms ? max_reset_ms : reset_ms,
	};
}

static void set_state(struct breaker *br, enum breaker_state s, int64_t now_ms)
{
	if (br->state != s)
		br->changed_ms = now_ms;
	br->state = s;
}

static void trip(struct breaker *br, int64_t now_ms)
{
	int64_t period = br->reset_ms;

	for (int i = 0; i < br->reopens && period < br->max_reset_ms; i++)
		period *= 2;
	if (period > br->max_reset_ms)
		period = br->max_reset_ms;
	br->open_until_ms = now_ms + period;
	br->probing = 0;
	br->times_opened++;
	set_state(br, BREAKER_OPEN, now_ms);
}

int breaker_allow(struct breaker *br, int64_t now_ms)
{
	switch (br->state) {
	case BREAKER_CLOSED:
		return 1;
	case BREAKER_OPEN:
		if (now_ms < br->open_until_ms)
			return 0;
		set_state(br, BREAKER_HALF_OPEN, now_ms);
		br->probing = 1;
		return 1;
	case BREAKER_HALF_OPEN:
		if (br->probing)
			return 0;
		br->probing = 1;
		return 1;
	}
	return 0;
}

void breaker_success(struct breaker *br, int64_t now_ms)
{
	br->failures = 0;
	br->reopens = 0;
	br->probing = 0;
	set_state(br, BREAKER_CLOSED, now_ms);
}

int breaker_failure(struct breaker *br, int64_t now_ms)
{
	br->failures++;
	if (br->state == BREAKER_HALF_OPEN) {
		br->reopens++;
		trip(br, now_ms);
		return 1;
	}
	if (br->state == BREAKER_CLOSED && br->failures >= br->threshold) {
		trip(br, now_ms);
		return 1;
	}
	return 0;
}

int64_t breaker_retry_at(const struct breaker *br)
{
	return br->state == BREAKER_OPEN ? br->open_until_ms : 0;
}

const char *breaker_state_name(enum breaker_state s)
{
	switch (s) {
	case BREAKER_CLOSED: return "closed";
	case BREAKER_OPEN: return "open";
	case BREAKER_HALF_OPEN: return "half-open";
	}
	return "?";
}
