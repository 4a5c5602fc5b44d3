/* Exponential backoff with jitter; see backoff.h. */
#include "backoff.h"

#include <time.h>
#include <unistd.h>

static uint64_t next_random(uint64_t *s)
{
	if (*s == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		*s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^ 0x9e3779b97f4a7c15ull;
	}
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int64_t backoff_delay_ms(struct backoff *bo, int attempt)
{
	int64_t d = bo->base_ms;
	uint64_t r;

	if (attempt < 1)
		attempt = 1;
	for (int i = 1; i < attempt && d > 0 && d < bo->cap_ms; i++)
		d *= 2;
	if (d > bo->cap_ms)
		d = bo->cap_ms;
	if (d <= 0 || bo->jitter_pct <= 0)
		return d < 0 ? 0 : d;
	r = next_random(&bo->rng);
	if (bo->jitter_pct >= 100)
		return (int64_t)(r % (uint64_t)(d + 1));
	int64_t span = d * bo->jitter_pct / 100;
	int64_t j = (int64_t)(r % (uint64_t)(2 * span + 1)) - span;
	d += j;
	if (d > bo->cap_ms)
		d = bo->cap_ms;
	return d < 0 ? 0 : d;
}
