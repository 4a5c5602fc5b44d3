/* Exponential backoff with jitter, shared by the broker's retries and
 * reconnects and the client's pgb_retry. */
#ifndef PGB_BACKOFF_H
#define PGB_BACKOFF_H

#include <stdint.h>

struct backoff {
	int64_t base_ms;      /* first delay */
	int64_t cap_ms;       /* no delay exceeds this */
	int jitter_pct;       /* 0: none; 100: full jitter (uniform in [0, d]);
				 else uniform in d * [1 - p%, 1 + p%] */
	uint64_t rng;         /* xorshift state; 0 picks a seed */
};

/* Delay before retry number `attempt` (1 = the first retry). */
int64_t backoff_delay_ms(struct backoff *bo, int attempt);

#endif
