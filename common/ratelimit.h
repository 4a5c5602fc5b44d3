/* Rate limit for repeated log lines: at most `burst` lines of one kind per
 * `window_ms`; the rest are counted, and the count is told with the next
 * line that gets through, or by ratelimit_flush once the window is over
 * ("... 1019 more suppressed"). Time is passed in, so tests can drive it. */
#ifndef PGB_RATELIMIT_H
#define PGB_RATELIMIT_H

#include <stdint.h>

struct ratelimit {
	int64_t window_ms;
	int burst;
	int64_t start_ms;        /* the current window's start */
	int n;                   /* lines let through in it */
	uint64_t suppressed;     /* not yet told */
};

void ratelimit_init(struct ratelimit *rl, int burst, int64_t window_ms);
/* May a line go out now? 1: yes, and *told (may be NULL) gets the lines
 * suppressed before it, to mention with it (then they count as told);
 * 0: no, it is counted. */
int ratelimit_take(struct ratelimit *rl, int64_t now_ms, uint64_t *told);
/* Suppressed lines not yet told whose window is over: their count, now
 * told; 0 otherwise. *next_ms (may be NULL) is lowered to when a flush
 * would have something to say. */
uint64_t ratelimit_flush(struct ratelimit *rl, int64_t now_ms, int64_t *next_ms);

#endif
