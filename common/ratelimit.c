/* Rate limit for repeated log lines; see ratelimit.h. */
#include "ratelimit.h"

void ratelimit_init(struct ratelimit *rl, int burst, int64_t window_ms)
{
	*rl = (struct ratelimit){
		.window_ms = window_ms > 0 ? window_ms : 1,
		.burst = burst > 0 ? burst : 1,
		.start_ms = INT64_MIN,
	};
}

static void roll(struct ratelimit *rl, int64_t now_ms)
{
	if (rl->start_ms == INT64_MIN || now_ms - rl->start_ms >= rl->window_ms) {
		rl->start_ms = now_ms;
		rl->n = 0;
	}
}

int ratelimit_take(struct ratelimit *rl, int64_t now_ms, uint64_t *told)
{
	roll(rl, now_ms);
	if (rl->n >= rl->burst) {
		rl->suppressed++;
		return 0;
	}
	rl->n++;
	if (told)
		*told = rl->suppressed;
	rl->suppressed = 0;
	return 1;
}

uint64_t ratelimit_flush(struct ratelimit *rl, int64_t now_ms, int64_t *next_ms)
{
	uint64_t n = rl->suppressed;
	int64_t end = rl->start_ms + rl->window_ms;

	if (!n)
		return 0;
	if (now_ms < end) {
		if (next_ms && end < *next_ms)
			*next_ms = end;
		return 0;
	}
	rl->suppressed = 0;
	return n;
}
