/* Circuit breaker: closed -> open after `threshold` consecutive failures;
 * open -> half-open after the reset timeout, letting one probe through;
 * the probe's success closes it, its failure reopens it for the next,
 * longer, backoff. Time is passed in, so tests can drive it. Shared by the
 * broker (around its backend) and the client (pgb_breaker). */
#ifndef PGB_BREAKER_H
#define PGB_BREAKER_H

#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 };

struct breaker {
	int threshold;
	int64_t reset_ms;        /* first open period */
	int64_t max_reset_ms;    /* open periods double up to this */
	enum breaker_state state;
	int failures;            /* consecutive */
	int reopens;             /* failed probes since it last closed */
	int probing;             /* half-open: the probe is out */
	int64_t open_until_ms;
	int64_t changed_ms;
	uint64_t times_opened;
};

void breaker_init(struct breaker *br, int threshold, int64_t reset_ms, int64_t max_reset_ms);
/* May an attempt go ahead now? In half-open, only one (the probe) may. */
int breaker_allow(struct breaker *br, int64_t now_ms);
void breaker_success(struct breaker *br, int64_t now_ms);
/* Returns 1 when this failure opened the breaker. */
int breaker_failure(struct breaker *br, int64_t now_ms);
/* When an open breaker will let a probe through (0 when not open). */
int64_t breaker_retry_at(const struct breaker *br);
const char *breaker_state_name(enum breaker_state s);

#endif
