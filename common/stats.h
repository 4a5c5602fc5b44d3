/* The stats segment: a file in the run directory, written only by the
 * broker (seqlock), mapped read-only by poolstat and pgb_pool_health().
 * Also the pure pieces around it that broker, client, poolstat and tests
 * share: histogram percentiles, the snapshot reader, health classification. */
#ifndef PGB_STATS_H
#define PGB_STATS_H

#include <stddef.h>
#include <stdint.h>

#define STATS_MAGIC   0x53424750u /* "PGBS" */
#define STATS_VERSION 8u          /* bump on any change of the structs below */
#define STATS_FILE    "pgbroker.stats"

/* Latency histograms: log-scaled buckets of microseconds, four per power of
 * two (an estimate is at most 25 % above the true value); values 0..3 have
 * a bucket each; the last bucket (from 2^36 us, 19 h) holds everything above. */
#define STATS_SUB     4
#define STATS_BUCKETS 144

#define STATS_HISTORY 100  /* health samples kept for trends */
#define STATS_REASONS 8    /* health reasons at most */
#define STATS_TEXT    192  /* one reason or recommendation, NUL-terminated */

/* The broker refreshes the segment's heartbeat at least every STATS_BEAT_MS;
 * a heartbeat older than STATS_STALE_MS is a broker gone (dead, stopped or
 * stuck): readers say "no broker". */
#define STATS_BEAT_MS 500
#define STATS_STALE_MS 2000

struct stats_hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t max_us;
	uint64_t bucket[STATS_BUCKETS];
};

struct stats_pool {
	uint32_t total;          /* = idle + active + pinned + connecting + other */
	uint32_t idle;
	uint32_t active;         /* running an agent's statement */
	uint32_t pinned;         /* held by an agent's transaction or session */
	uint32_t connecting;
	uint32_t other;          /* the broker's own work: rollback, validation, cancel */
	uint32_t waiting;        /* statements (one per agent) waiting for a backend */
	uint32_t min, size, max; /* min_pool_size, the size the controller allows now
				    (from pool_size), max_pool_size */
	uint32_t agents;         /* agents connected */
	uint32_t pad;
	double utilization;      /* percent: (active + pinned) / max */
};

struct stats_counters {
	uint64_t statements, failed, retried;
	uint64_t acquire_timeouts, statement_timeouts;
	uint64_t connects, connect_failures;
	uint64_t closed_idle, closed_broken, closed_validation, closed_lifetime;
	uint64_t agents_registered, agents_gone, agents_refused, protocol_errors;
	uint64_t session_pins;
	uint64_t reloads, reload_failures;   /* SIGHUP */
	uint64_t begins_deferred;  /* BEGINs answered by the broker and sent later with
				      the transaction's first statement */
	uint64_t txns_local;       /* ...of which the transaction ended (COMMIT or
				      ROLLBACK) before any statement: no backend used */
	uint64_t pool_grows, pool_shrinks;  /* the pool controller's decisions */
	/* max_memory_mb (broker/memory.c): new work refused (PB008), results
	 * streamed in rows messages, statements failed for a row too large
	 * (PB004), backends closed to give their buffers back */
	uint64_t memory_refused, streamed, rows_too_large, closed_memory;
	/* notifications: delivered to agents, dropped (an agent's queue
	 * full), listening connections lost */
	uint64_t notify_delivered, notify_dropped, notify_lost;
};

/* What the broker holds for agents, against max_memory_mb. */
struct stats_memory {
	uint64_t used;           /* bytes now */
	uint64_t peak;           /* most since start */
	uint64_t budget;         /* max_memory_mb in bytes */
};

/* Published once per loop pass: the broker counts into its own copy
 * (struct broker.st) with plain increments and copies it here. */
struct stats_data {
	uint64_t pass;           /* publication number; == pass_end in a whole copy */
	int64_t started_ms;      /* wall clock (Unix ms), like every *_ms below */
	int64_t updated_ms;
	int32_t broker_pid;
	uint32_t breaker_state;  /* 0 closed, 1 open, 2 half-open, 3 misconfigured */
	uint32_t breaker_failures;   /* consecutive failed connect observations */
	uint32_t connect_fails;      /* consecutive failed connects; 0: the last one worked */
	uint64_t breaker_opened;     /* times opened since start */
	int64_t breaker_changed_ms;  /* last state change, 0 never */
	int64_t breaker_retry_ms;    /* after a failure: the next connect's time, else 0 */
	char connect_code[8];        /* the last failed connect: the server's SQLSTATE or "" */
	char connect_error[STATS_TEXT];  /* and what the server or libpq said; "" after a success */
	/* The server's room for connections, 0 while not known. */
	uint32_t server_max_connections;
	uint32_t server_reserved_connections;  /* superuser_reserved_connections */
	uint32_t server_other_connections;     /* held by other clients */
	uint32_t stopping;           /* 0 serving, 1 draining (SIGTERM), 2 stopping */
	int64_t server_checked_ms;
	struct stats_pool pool;
	struct stats_counters c;
	struct stats_hist acquire;   /* wait for a backend */
	struct stats_hist stmt;      /* statement round trip, arrival to result */
	struct stats_memory mem;
	uint64_t pass_end;
};

/* Per backend, by slot; filled at each health sample (see broker/stats.c). */
enum stats_backend_state {
	STATS_BE_CONNECTING = 1, STATS_BE_IDLE, STATS_BE_BUSY, STATS_BE_PINNED, STATS_BE_RESET,
};

struct stats_backend {
	uint32_t slot;
	uint32_t state;          /* enum stats_backend_state */
	int32_t pg_pid;
	int32_t agent_slot;      /* the agent it serves or is pinned to, -1 none */
	int32_t agent_pid;
	uint32_t pad;
	int64_t since_ms;        /* connection opened */
	uint64_t served;         /* statements */
};

enum stats_agent_state { STATS_AG_IDLE = 0, STATS_AG_WAITING, STATS_AG_RUNNING, STATS_AG_IN_TXN };

/* Per connected agent; filled at each health sample (see broker/stats.c). */
struct stats_agent {
	uint32_t slot;
	uint32_t state;          /* enum stats_agent_state */
	int32_t pid;
	uint32_t pad;
	int64_t since_ms;        /* registered */
	uint64_t statements, errors;
};

/* HEALTH_STARTING (no health sample yet) is only a reader's verdict; 3 is
 * PGB_NO_BROKER in pgbroker.h. */
enum health_status {
	HEALTH_HEALTHY = 0, HEALTH_DEGRADED = 1, HEALTH_UNHEALTHY = 2, HEALTH_STARTING = 4,
};

enum health_reason_code {
	HEALTH_R_UTILIZATION = 1,
	HEALTH_R_WAITING,
	HEALTH_R_SUCCESS,
	HEALTH_R_ACQUIRE,
	HEALTH_R_BREAKER,
	HEALTH_R_UNREACHABLE,
	HEALTH_R_CAPACITY,
	HEALTH_R_STALE,          /* unused since layout 5: a stale heartbeat is no broker */
	HEALTH_R_MISCONFIGURED,  /* PostgreSQL refuses the broker's login or database */
	HEALTH_R_STARTING,       /* only readers add it: no health sample yet */
};

struct stats_reason {
	uint32_t code;           /* enum health_reason_code */
	uint32_t level;          /* HEALTH_DEGRADED or HEALTH_UNHEALTHY */
	char text[STATS_TEXT];   /* what is wrong */
	char advice[STATS_TEXT]; /* what to do about it */
};

/* One health sample; the counts cover the interval since the previous one. */
struct stats_sample {
	int64_t t_ms;
	uint32_t interval_ms;
	uint32_t waiting;
	uint32_t busy, max;
	double utilization;      /* percent */
	double stmts_per_s;
	double success_pct;      /* 100 when there were no statements */
	uint64_t statements, failed;
	uint64_t acquires, acquire_sum_us, acquire_p99_us;
};

/* Written at each health sample (every health_interval_ms). */
struct stats_health {
	uint32_t status;         /* enum health_status */
	int32_t trend;           /* utilization over the history: -1 falling, 0 flat, 1 rising */
	double trend_per_min;    /* its slope, percentage points per minute */
	int64_t sample_ms;       /* newest sample; 0 before the first */
	int64_t status_since_ms;
	uint32_t interval_ms;
	uint32_t window_ms;      /* success rate and acquire time are judged over this */
	double success_pct;      /* over the window */
	double acquire_avg_ms;   /* over the window */
	double stmts_per_s;      /* over the window */
	uint32_t nreasons;
	uint32_t nsamples;       /* valid entries in hist */
	uint32_t next;           /* where the next sample goes; the newest is next - 1 */
	uint32_t nbackends;      /* rows valid in the backend array */
	uint32_t nagents;        /* rows valid in the agent array */
	uint32_t pad;
	struct stats_reason reasons[STATS_REASONS];
	struct stats_sample hist[STATS_HISTORY];
};

struct stats_seg {
	/* Fixed from creation on (the file is renamed into place complete). */
	uint32_t magic;
	uint32_t version;
	uint64_t size;           /* bytes of the whole segment */
	uint32_t data_size;      /* sizeof(struct stats_data) */
	uint32_t health_size;    /* sizeof(struct stats_health) */
	uint32_t backend_size;   /* sizeof(struct stats_backend) */
	uint32_t agent_size;     /* sizeof(struct stats_agent) */
	uint32_t max_backends;   /* rows at backends_off: max_pool_size */
	uint32_t max_agents;     /* rows at agents_off: max_agents */
	uint64_t backends_off;
	uint64_t agents_off;
	uint64_t pid_ns;         /* the broker's pid namespace (inode of /proc/self/ns/pid), 0 unknown */
	/* Outside both seqlocks: the broker stores it (wall clock, ms) at least
	 * every STATS_BEAT_MS, readers load it alone. */
	int64_t heartbeat_ms;
	/* Two seqlocks, odd while the broker writes what they guard: seq the
	 * small stats_data (once per loop pass), hseq the large rest (once per
	 * health sample), so that a reader of either rarely has to retry. */
	uint32_t seq;            /* guards d */
	uint32_t hseq;           /* guards h and the rows */
	struct stats_data d;
	struct stats_health h;
	/* then struct stats_backend[max_backends], struct stats_agent[max_agents] */
};

static inline unsigned stats_bucket(uint64_t us)
{
	unsigned e, i;

	if (us < STATS_SUB)
		return (unsigned)us;
	e = 63 - (unsigned)__builtin_clzll(us);
	i = 4 * (e - 1) + (unsigned)((us >> (e - 2)) & 3);
	return i < STATS_BUCKETS ? i : STATS_BUCKETS - 1;
}

/* The hot path: plain increments, no call. */
static inline void stats_hist_add(struct stats_hist *h, uint64_t us)
{
	h->bucket[stats_bucket(us)]++;
	h->count++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
}

/* Upper edge (exclusive) of bucket i, in us. */
uint64_t stats_bucket_high(unsigned i);
/* Percentile p (0..1) in us: the upper edge of the bucket holding the
 * ceil(p * count)-th value, never above max. 0 when empty. */
uint64_t stats_hist_pct(const struct stats_hist *h, double p);
/* Mean in us, 0 when empty. */
double stats_hist_avg(const struct stats_hist *h);
/* out = now - before, bucket by bucket; max is the interval's own, at most
 * a bucket's width above the true one (now's max when that is lower). */
void stats_hist_delta(const struct stats_hist *now, const struct stats_hist *before,
		      struct stats_hist *out);

/* Writer side of a seqlock (seg->seq or seg->hseq); a single writer, the
 * broker's loop. */
static inline void stats_write_begin(uint32_t *seq)
{
	__atomic_store_n(seq, *seq + 1, __ATOMIC_RELAXED);
	/* Orders the odd seq before every data store that follows. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void stats_write_end(uint32_t *seq)
{
	/* Release: a reader that sees the even seq sees all the data. */
	__atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);
}

/* A reader's copy. Rows are copied only into what the caller provides. */
struct stats_snap {
	struct stats_data d;
	struct stats_health h;
	struct stats_backend *backends;   /* cap_backends rows, or NULL */
	struct stats_agent *agents;       /* cap_agents rows, or NULL */
	uint32_t cap_backends, cap_agents;
	uint32_t nbackends, nagents;      /* rows copied */
	int64_t heartbeat_ms;             /* the segment's heartbeat when read */
	uint64_t pid_ns;                  /* the broker's pid namespace, 0 unknown */
};

/* A mapped, checked segment. */
struct stats_map {
	const struct stats_seg *seg;
	size_t len;
	char path[512];
};

/* Map DIR/pgbroker.stats read-only and check that it is a segment of this
 * layout, written by a broker this process trusts (the file and DIR owned
 * by $PGBROKER_REQUIRE_UID, else by our uid or root: rundir_check_peer).
 * 0, or -ENOENT (no broker), -EPERM (not trusted), another -errno when
 * unreadable, -EPROTO when it is not a pgbroker segment or of another layout
 * version; err says which in plain words. */
int stats_map_open(const char *dir, struct stats_map *m, char *err, size_t errlen);
void stats_map_close(struct stats_map *m);
/* Check a segment image of len bytes (what stats_map_open does after mmap). */
int stats_check(const void *seg, size_t len, char *err, size_t errlen);
/* Copy a snapshot: d consistent in itself, h and the rows consistent in
 * themselves (h is the last health sample, d may be newer). 0, -EAGAIN
 * when the writer kept changing it (try again later), or -ESRCH when the
 * writer died in the middle of a write (a stale segment; out->d.broker_pid
 * names it). */
int stats_read(const struct stats_seg *s, struct stats_snap *out);
/* Make a NUL-terminated text of at most n bytes (from shared memory) safe
 * to print: each C0 or C1 control character, DEL and each byte that is not
 * part of valid UTF-8 becomes '?'. stats_read does it to every reason and
 * to the connect error. */
void stats_clean_text(char *s, size_t n);
/* The pid namespace of this process (inode of /proc/self/ns/pid), 0 unknown. */
uint64_t stats_pid_ns(void);
/* Is the writer of this snapshot alive? 0, or -ESRCH when its heartbeat is
 * older than STATS_STALE_MS, or when its pid is not running and it is in
 * our pid namespace (another namespace's pid says nothing here); why says
 * which. */
int stats_alive(const struct stats_snap *s, int64_t now_ms, char *why, size_t n);

/* A reader's verdict on a snapshot it just read: -ESRCH with err set when
 * the broker that wrote it is gone (stats_alive); else the broker's health
 * status, made unhealthy when the breaker is open, half-open or
 * misconfigured now (the sample may be older), else HEALTH_STARTING while
 * there is no sample yet. */
int stats_verdict(struct stats_snap *s, const char *dir, int64_t now_ms, char *err,
		  size_t errlen);

/* Health thresholds (the replaced pool's), see health_limits_default. */
struct health_limits {
	double util_warn_pct, util_crit_pct;        /* above: degraded, unhealthy */
	uint32_t waiting_warn, waiting_crit;        /* above */
	double success_warn_pct, success_crit_pct;  /* below */
	double acquire_warn_ms, acquire_crit_ms;    /* average wait above */
	uint32_t window_ms;         /* success rate and acquire average are over this */
	uint32_t min_statements;    /* fewer in the window: success rate not judged */
	double trend_flat_pct;      /* fitted change over the history below this: flat */
};

void health_limits_default(struct health_limits *lim);
const char *health_status_name(uint32_t status);
const char *stats_breaker_name(uint32_t state);
const char *stats_backend_state_name(uint32_t state);
const char *stats_agent_state_name(uint32_t state);

/* Append a sample to the history ring (the oldest falls out). */
void health_push(struct stats_health *h, const struct stats_sample *s);
/* The newest sample, or the i-th before it; NULL when there is none. */
const struct stats_sample *health_sample_at(const struct stats_health *h, uint32_t back);
/* Pure: decide status, reasons, recommendations, window figures and trend
 * from the pool state in d and the samples in h. Writes only h's results. */
void health_classify(const struct stats_data *d, struct stats_health *h,
		     const struct health_limits *lim);
/* Add a reason (ignored when full); raises h->status to its level. */
void health_add_reason(struct stats_health *h, uint32_t code, uint32_t level,
		       const char *text, const char *advice);
/* The first reason at the status's own level: the one that set it. */
const struct stats_reason *health_main_reason(const struct stats_health *h);

#endif
