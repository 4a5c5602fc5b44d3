/* The stats segment: a file in the run directory, written only by the
 * broker (seqlock), mapped read-only by poolstat and pgb_pool_health(). */
#ifndef PGB_STATS_H
#define PGB_STATS_H

#include <stdint.h>

#define STATS_MAGIC   0x53424750u /* "PGBS" */
#define STATS_VERSION 1u
#define STATS_FILE    "pgbroker.stats"
#define STATS_BUCKETS 32          /* log2 buckets of microseconds */

struct stats_hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t max_us;
	uint64_t bucket[STATS_BUCKETS];  /* bucket i: [2^i, 2^(i+1)) us; 0 also holds 0 */
};

struct stats_pool {
	uint32_t total, idle, active, pinned, connecting, waiting;
	uint32_t min, size, max;
	uint32_t agents;
};

struct stats_counters {
	uint64_t statements, failed, retried;
	uint64_t acquire_timeouts, statement_timeouts;
	uint64_t connects, connect_failures;
	uint64_t closed_idle, closed_broken, closed_validation, closed_lifetime;
	uint64_t agents_registered, agents_gone, agents_refused, protocol_errors;
	uint64_t session_pins;
};

struct stats_data {
	int64_t started_ms;      /* wall clock */
	int64_t updated_ms;
	int32_t broker_pid;
	uint32_t breaker_state;  /* 0 closed, 1 open, 2 half-open */
	struct stats_pool pool;
	struct stats_counters c;
	struct stats_hist acquire;
	struct stats_hist stmt;
};

struct stats_seg {
	uint32_t magic;
	uint32_t version;
	uint64_t size;           /* bytes of the whole segment */
	uint32_t seq;            /* seqlock: odd while the broker writes */
	uint32_t pad;
	struct stats_data d;
};

static inline void stats_hist_add(struct stats_hist *h, uint64_t us)
{
	unsigned b = us ? 63 - (unsigned)__builtin_clzll(us) : 0;

	if (b >= STATS_BUCKETS)
		b = STATS_BUCKETS - 1;
	h->bucket[b]++;
	h->count++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
}

/* Percentile estimate (upper edge of the bucket, capped by max). */
static inline uint64_t stats_hist_pct(const struct stats_hist *h, double p)
{
	uint64_t want, seen = 0;

	if (!h->count)
		return 0;
	want = (uint64_t)(p * (double)h->count + 0.5);
	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < STATS_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= want) {
			uint64_t edge = 2ull << i;
			return edge < h->max_us ? edge : h->max_us;
		}
	}
	return h->max_us;
}

/* Reader: copy a consistent snapshot. 0 ok, -1 when the writer kept
 * changing it (retry later). */
static inline int stats_read(const struct stats_seg *s, struct stats_data *out)
{
	for (int tries = 0; tries < 1000; tries++) {
		uint32_t a = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);

		if (a & 1)
			continue;
		__builtin_memcpy(out, (const void *)&s->d, sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == a)
			return 0;
	}
	return -1;
}

#endif
