/* poolbench's pure parts: options, per-run results and their latency
 * summary, the broker÷direct / broker÷pgbouncer ratio table, and the
 * Markdown, JSON and SVG writers. No processes, no database: unit-tested. */
#ifndef PGB_BENCH_H
#define PGB_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "stats.h"

/* Run order within one (workload, agents) step of --compare.
 * BENCH_BROKER_EPOLL: the broker forced onto its epoll loop (--loop epoll). */
enum bench_mode { BENCH_DIRECT = 0, BENCH_PGBOUNCER, BENCH_BROKER, BENCH_BROKER_EPOLL,
		  BENCH_NMODES };

/* Modes whose agents talk to a pgbroker. */
static inline int bench_mode_is_broker(int mode)
{
	return mode == BENCH_BROKER || mode == BENCH_BROKER_EPOLL;
}

enum bench_workload {
	BENCH_SELECT1 = 0,    /* SELECT 1 */
	BENCH_PGBENCH_SELECT, /* pgbench -S: one point read of pgbench_accounts */
	BENCH_TPCB,           /* pgbench's TPC-B-like transaction */
	BENCH_MIXED,          /* 80 % reads, 15 % updates, 5 % 3-statement transactions */
	BENCH_NWORKLOADS
};

#define BENCH_MAX_LIST   16      /* entries of --agents-list and --workload lists */
#define BENCH_MAX_AGENTS 10000
#define BENCH_MAX_RUNS   (BENCH_MAX_LIST * BENCH_NWORKLOADS * (BENCH_NMODES + BENCH_MAX_LIST))

struct bench_opts {
	unsigned modes;         /* bit (1u << enum bench_mode) per mode to run */
	int compare;            /* --compare: direct, pgbouncer and broker */
	int workloads[BENCH_NWORKLOADS];
	int nworkloads;
	int agents[BENCH_MAX_LIST];
	int nagents;
	double duration_s;      /* measured window per run */
	double warmup_s;        /* run but not measured, before the window */
	int pool_size;          /* 0: bench_default_pool_size() at run time */
	int bouncer_pools[BENCH_MAX_LIST]; /* --bouncer-pools: pgbouncer runs once per */
	int nbouncer_pools;     /* size; ratios use the best of them (0: pool_size) */
	const char *dsn;        /* NULL: start a throwaway PostgreSQL */
	const char *json;       /* --json FILE */
	const char *plot;       /* --plot FILE.svg */
	const char *broker;     /* --broker PATH of pgbroker; NULL: found beside poolbench */
	int help;               /* --help, -h */
	int version;            /* --version, -V */
};

/* Defaults, then argv. 0, or -1 with a message in err (exit status 2).
 * Resets getopt, so it may be called more than once. */
int bench_parse_args(int argc, char **argv, struct bench_opts *o, char *err, size_t errlen);
/* "1,10,50" into out[] (at most max values, each in lo..hi): the count, or -1. */
int bench_parse_list(const char *s, int *out, int max, int lo, int hi);
/* 4 backends per CPU, within 4..64: 8 on the 2-core machines of PERF-NOTES. */
int bench_default_pool_size(long ncpu);
const char *bench_usage(void);

const char *bench_mode_name(int mode);          /* "direct", "pgbouncer", "broker" */
const char *bench_workload_name(int workload);  /* "select1", ... */
const char *bench_workload_unit(int workload);  /* "q/s", "tx/s", "ops/s" */
int bench_workload_from_name(const char *name); /* -1 when unknown */
int bench_mode_from_name(const char *name);     /* -1 when unknown */

/* One finished run: one mode, one workload, one agent count. */
struct bench_result {
	int mode, workload, agents;
	int pool_size;          /* 0 in direct mode */
	double seconds;         /* measured window */
	uint64_t ops;           /* successful operations completed in the window */
	uint64_t errors;        /* every failed operation, warm-up included, plus agents lost */
	uint64_t connect_errors;
	double rate;            /* ops / seconds */
	double avg_us;
	uint64_t p50_us, p95_us, p99_us, max_us;
	/* CPU seconds in the window; < 0 when not measurable. pooler: the broker
	 * or pgbouncer process; postgresql: postmaster and all its children. */
	double cpu_pooler_s, cpu_pg_s, cpu_agents_s;
	int backends;           /* most client backends seen during the window */
	int failed;             /* the run could not be done (see note) */
	char note[160];         /* why it failed, or the first error seen */
};

/* dst += src, bucket by bucket (combining the agents' histograms). */
void bench_hist_merge(struct stats_hist *dst, const struct stats_hist *src);
/* Fill r's avg/p50/p95/p99/max from h (stats_hist_pct: a percentile is the
 * upper edge of its bucket, at most 25 % above the true value). */
void bench_result_latency(struct bench_result *r, const struct stats_hist *h);

/* a / b, or -1 when either is not a positive number. */
double bench_ratio(double a, double b);

/* One row of the ratio table: broker against direct and pgbouncer at the
 * same workload and agent count. A ratio is -1 when a side is missing. */
struct bench_ratio_row {
	int workload, agents;
	double vs_direct_rate, vs_direct_p50, vs_direct_p99;
	double vs_bouncer_rate, vs_bouncer_p50, vs_bouncer_p99;
};
/* Rows for each (workload, agents) that has a broker result, in the order
 * of the results; each broker run against the direct and pgbouncer runs
 * of its own step (the latest before it). Returns the number of rows
 * written (at most max). */
int bench_ratios(const struct bench_result *r, int n, struct bench_ratio_row *out, int max);

/* A broker-epoll run against the io_uring broker and pgbouncer of its
 * step: rate and latency ratios, -1 when a side is missing. */
struct bench_epoll_row {
	int workload, agents;
	double vs_uring_rate, vs_uring_p50, vs_uring_p99;
	double vs_bouncer_rate;
};
int bench_epoll_ratios(const struct bench_result *r, int n, struct bench_epoll_row *out,
		       int max);

/* Where and when the runs were made. */
struct bench_machine {
	long ncpu;
	long long mem_mib;
	char cpu[128];
	char kernel[128];
	char postgresql[128];   /* server_version of the server used */
	char pgbouncer[64];     /* "" when not installed */
	char date[40];          /* UTC, ISO 8601 */
	char loadavg[48];       /* at the start, 1, 5 and 15 min (other load skews results) */
};

/* Human report, Markdown: machine, settings, results table, ratio table, notes. */
void bench_write_report(FILE *f, const struct bench_machine *m, const struct bench_opts *o,
			int pool_size, const struct bench_result *r, int n,
			const char *const *notes, int nnotes);
void bench_write_json(FILE *f, const struct bench_machine *m, const struct bench_opts *o,
		      int pool_size, const struct bench_result *r, int n,
		      const char *const *notes, int nnotes);
/* Throughput and p99 against agent count, one line per mode, one row of two
 * panels per workload. */
void bench_write_svg(FILE *f, const struct bench_result *r, int n);

/* Milliseconds from microseconds, with 2-3 significant digits ("0.064", "46.1"). */
void bench_fmt_ms(char *buf, size_t n, uint64_t us);

/* A /proc/PID/stat line: parent pid, its own CPU (utime + stime) and that
 * of its children it has waited for (cutime + cstime), in clock ticks.
 * 0, or -1 when the line is not one. */
int bench_parse_proc_stat(const char *line, int *ppid, uint64_t *ticks, uint64_t *child_ticks);

#endif
