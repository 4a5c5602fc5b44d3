/* Unit tests for common/stats.c: histogram buckets and percentiles, the
 * segment checks and the seqlock reader (against a writer thread), and the
 * health classification from synthetic pool states and samples. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stats.h"

TestSuite(stats);

/* ---- histograms -------------------------------------------------------- */

Test(stats, buckets_are_contiguous_and_hold_their_values)
{
	uint64_t prev_high = 0;

	for (unsigned i = 0; i < STATS_BUCKETS - 1; i++) {
		uint64_t high = stats_bucket_high(i);

		cr_assert_gt(high, prev_high, "bucket %u: high %llu", i, (unsigned long long)high);
		/* every value in [previous high, high) lands in bucket i */
		cr_assert_eq(stats_bucket(prev_high), i, "low edge of bucket %u", i);
		cr_assert_eq(stats_bucket(high - 1), i, "high edge of bucket %u", i);
		/* four buckets per power of two: width at most a quarter of the low edge */
		if (prev_high >= STATS_SUB)
			cr_assert_leq((high - prev_high) * 4, prev_high, "bucket %u too wide", i);
		prev_high = high;
	}
	cr_assert_eq(stats_bucket(UINT64_MAX), STATS_BUCKETS - 1);
	cr_assert_eq(stats_bucket(1ull << 40), STATS_BUCKETS - 1);
}

Test(stats, empty_histogram_is_zero)
{
	struct stats_hist h = { 0 };

	cr_assert_eq(stats_hist_pct(&h, 0.5), 0);
	cr_assert_eq(stats_hist_pct(&h, 0.99), 0);
	cr_assert_eq(stats_hist_avg(&h), 0);
}

Test(stats, single_value_percentiles_are_that_value)
{
	struct stats_hist h = { 0 };

	stats_hist_add(&h, 1234);
	cr_assert_eq(stats_hist_pct(&h, 0.5), 1234);
	cr_assert_eq(stats_hist_pct(&h, 0.99), 1234);
	cr_assert_eq(h.max_us, 1234);
	cr_assert_float_eq(stats_hist_avg(&h), 1234.0, 1e-9);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The estimate never under-reports and is at most 25 % (one sub-bucket)
 * above the exact percentile of the sorted values. */
static void check_against_exact(uint64_t *v, size_t n)
{
	static const double ps[] = { 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0 };
	struct stats_hist h = { 0 };
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++) {
		stats_hist_add(&h, v[i]);
		sum += v[i];
	}
	qsort(v, n, sizeof(*v), cmp_u64);
	cr_assert_eq(h.count, n);
	cr_assert_eq(h.sum_us, sum);
	cr_assert_eq(h.max_us, v[n - 1]);
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		size_t rank = (size_t)(ps[i] * (double)n);
		uint64_t exact, est = stats_hist_pct(&h, ps[i]);

		if ((double)rank < ps[i] * (double)n)
			rank++;
		if (rank == 0)
			rank = 1;
		exact = v[rank - 1];
		cr_assert_geq(est, exact, "p%g: estimate %llu below exact %llu", ps[i] * 100,
			      (unsigned long long)est, (unsigned long long)exact);
		cr_assert_leq(est, exact + exact / 4 + 1, "p%g: estimate %llu, exact %llu",
			      ps[i] * 100, (unsigned long long)est, (unsigned long long)exact);
	}
}

Test(stats, percentiles_of_a_uniform_range)
{
	uint64_t v[1000];

	for (int i = 0; i < 1000; i++)
		v[i] = (uint64_t)(i + 1) * 100;   /* 0.1 .. 100 ms */
	check_against_exact(v, 1000);
}

Test(stats, percentiles_of_random_long_tailed_values)
{
	static uint64_t v[20000];
	uint64_t x = 88172645463325252ull;

	for (int round = 0; round < 5; round++) {
		for (size_t i = 0; i < 20000; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			/* mostly small, some huge: 2^(0..27) scaled */
			v[i] = (x >> 40) % 1000 << ((x >> 8) % 28) >> 8;
		}
		check_against_exact(v, 20000);
	}
}

Test(stats, p99_sees_the_slow_tail)
{
	struct stats_hist h = { 0 };

	for (int i = 0; i < 980; i++)
		stats_hist_add(&h, 1000);        /* 1 ms */
	for (int i = 0; i < 20; i++)
		stats_hist_add(&h, 500000);      /* 500 ms */
	cr_assert_geq(stats_hist_pct(&h, 0.5), 1000);
	cr_assert_leq(stats_hist_pct(&h, 0.5), 1250);
	cr_assert_leq(stats_hist_pct(&h, 0.95), 1250);
	cr_assert_eq(stats_hist_pct(&h, 0.99), 500000);
	cr_assert_eq(stats_hist_pct(&h, 1.0), 500000);
}

Test(stats, huge_values_keep_their_max)
{
	struct stats_hist h = { 0 };

	stats_hist_add(&h, 0);
	stats_hist_add(&h, UINT64_MAX / 4);
	cr_assert_eq(h.bucket[0], 1);
	cr_assert_eq(h.bucket[STATS_BUCKETS - 1], 1);
	cr_assert_eq(stats_hist_pct(&h, 1.0), UINT64_MAX / 4);
	cr_assert_eq(stats_hist_pct(&h, 0.5), 1, "p50 of {0, huge}: the upper edge of bucket 0");
}

Test(stats, delta_between_two_histograms)
{
	struct stats_hist a = { 0 }, b, d;

	for (int i = 0; i < 10; i++)
		stats_hist_add(&a, 100);
	b = a;
	for (int i = 0; i < 5; i++)
		stats_hist_add(&b, 10000);
	stats_hist_delta(&b, &a, &d);
	cr_assert_eq(d.count, 5);
	cr_assert_eq(d.sum_us, 50000);
	cr_assert_eq(stats_hist_pct(&d, 0.5), 10000);
	cr_assert_eq(d.bucket[stats_bucket(100)], 0);
}

/* An interval's percentiles know nothing of an older, slower value: its
 * max is its own (within a bucket), not the one since start. */
Test(stats, delta_percentiles_ignore_an_older_maximum)
{
	struct stats_hist a = { 0 }, b, d;

	stats_hist_add(&a, 5000000);   /* a 5 s wait at start */
	b = a;
	for (int i = 0; i < 10; i++)
		stats_hist_add(&b, 1000);
	stats_hist_delta(&b, &a, &d);
	cr_assert_eq(d.count, 10);
	cr_assert_leq(stats_hist_pct(&d, 0.99), 1250, "p99 %llu",
		      (unsigned long long)stats_hist_pct(&d, 0.99));
	cr_assert_geq(stats_hist_pct(&d, 0.99), 1000);
	cr_assert_geq(d.max_us, 1000);
	cr_assert_leq(d.max_us, 1250);
	/* the newest values include the max: it stays exact */
	stats_hist_add(&b, 7000000);
	stats_hist_delta(&b, &a, &d);
	cr_assert_eq(d.max_us, 7000000);
	cr_assert_eq(stats_hist_pct(&d, 1.0), 7000000);
	/* nothing new: nothing to show */
	stats_hist_delta(&a, &a, &d);
	cr_assert_eq(d.max_us, 0);
	cr_assert_eq(stats_hist_pct(&d, 0.99), 0);
}

/* ---- the segment: checks and the seqlock reader ------------------------ */

struct fake_seg {
	struct stats_seg *seg;
	size_t len;
};

static struct fake_seg seg_new(uint32_t max_be, uint32_t max_ag)
{
	struct fake_seg f;
	uint64_t be_off = (sizeof(struct stats_seg) + 7) & ~7ull;
	uint64_t ag_off = (be_off + max_be * sizeof(struct stats_backend) + 7) & ~7ull;

	f.len = ag_off + max_ag * sizeof(struct stats_agent);
	f.seg = aligned_alloc(64, (f.len + 63) & ~(size_t)63);
	cr_assert_not_null(f.seg);
	memset(f.seg, 0, f.len);
	*f.seg = (struct stats_seg){
		.magic = STATS_MAGIC, .version = STATS_VERSION, .size = f.len,
		.data_size = sizeof(struct stats_data), .health_size = sizeof(struct stats_health),
		.backend_size = sizeof(struct stats_backend), .agent_size = sizeof(struct stats_agent),
		.max_backends = max_be, .max_agents = max_ag,
		.backends_off = be_off, .agents_off = ag_off,
	};
	return f;
}

static struct stats_backend *seg_backends(struct fake_seg *f)
{
	return (struct stats_backend *)(void *)((char *)f->seg + f->seg->backends_off);
}

static struct stats_agent *seg_agents(struct fake_seg *f)
{
	return (struct stats_agent *)(void *)((char *)f->seg + f->seg->agents_off);
}

struct check_case {
	const char *name;
	void (*spoil)(struct stats_seg *s, size_t *len);
	const char *says;
};

static void spoil_magic(struct stats_seg *s, size_t *len) { (void)len; s->magic = 0x464c457f; }
static void spoil_version(struct stats_seg *s, size_t *len) { (void)len; s->version = 1; }
static void spoil_newer(struct stats_seg *s, size_t *len) { (void)len; s->version = STATS_VERSION + 1; }
static void spoil_size(struct stats_seg *s, size_t *len) { (void)s; *len -= 8; }
static void spoil_rows(struct stats_seg *s, size_t *len) { (void)len; s->agent_size += 8; }
static void spoil_bounds(struct stats_seg *s, size_t *len) { (void)len; s->max_agents += 1; }
static void spoil_short(struct stats_seg *s, size_t *len) { (void)s; *len = 6; }
/* an offset near 2^64: off + rows wraps around to inside the file */
static void spoil_wrap(struct stats_seg *s, size_t *len)
{
	(void)len;
	s->backends_off = 0 - (uint64_t)UINT32_MAX * sizeof(struct stats_backend) + sizeof(*s) + 8;
	s->max_backends = UINT32_MAX;
}

Test(stats, foreign_or_other_version_segments_are_refused_clearly)
{
	static const struct check_case cases[] = {
		{ .name = "magic", .spoil = spoil_magic, .says = "not a pgbroker stats segment" },
		{ .name = "old version", .spoil = spoil_version, .says = "layout version 1" },
		{ .name = "new version", .spoil = spoil_newer, .says = "understands version" },
		{ .name = "size", .spoil = spoil_size, .says = "bytes" },
		{ .name = "row size", .spoil = spoil_rows, .says = "another layout" },
		{ .name = "bounds", .spoil = spoil_bounds, .says = "out of bounds" },
		{ .name = "short", .spoil = spoil_short, .says = "not a pgbroker stats segment" },
		{ .name = "wrap", .spoil = spoil_wrap, .says = "out of bounds" },
	};
	char err[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake_seg f = seg_new(4, 8);
		size_t len = f.len;

		cr_assert_eq(stats_check(f.seg, len, err, sizeof(err)), 0, "%s: %s", cases[i].name, err);
		cases[i].spoil(f.seg, &len);
		cr_assert_eq(stats_check(f.seg, len, err, sizeof(err)), -EPROTO, "%s accepted",
			     cases[i].name);
		cr_assert(strstr(err, cases[i].says), "%s: message \"%s\" lacks \"%s\"",
			  cases[i].name, err, cases[i].says);
		free(f.seg);
	}
}

Test(stats, map_open_missing_foreign_and_good)
{
	char dir[] = "/tmp/pgb-unit-stats.XXXXXX", path[256], err[600];
	struct stats_map m;
	struct fake_seg f = seg_new(2, 2);
	FILE *fp;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(stats_map_open(dir, &m, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "no broker at"), "%s", err);
	cr_assert_eq(stats_map_open("/nonexistent/dir", &m, err, sizeof(err)), -ENOENT);

	snprintf(path, sizeof(path), "%s/%s", dir, STATS_FILE);
	fp = fopen(path, "w");
	fputs("this is not a stats segment, just some text that is long enough\n", fp);
	fclose(fp);
	cr_assert_eq(stats_map_open(dir, &m, err, sizeof(err)), -EPROTO);
	cr_assert(strstr(err, "not a pgbroker stats segment"), "%s", err);
	cr_assert(strstr(err, path), "the message names the file: %s", err);

	fp = fopen(path, "w");
	cr_assert_eq(fwrite(f.seg, 1, f.len, fp), f.len);
	fclose(fp);
	cr_assert_eq(stats_map_open(dir, &m, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(m.len, f.len);
	stats_map_close(&m);
	unlink(path);
	rmdir(dir);
	free(f.seg);
}

Test(stats, reader_gives_up_on_a_writer_that_never_finishes)
{
	struct fake_seg f = seg_new(1, 1);
	struct stats_snap s = { 0 };

	f.seg->seq = 7;   /* odd: a write in progress forever */
	cr_assert_eq(stats_read(f.seg, &s), -EAGAIN);
	f.seg->seq = 8;
	cr_assert_eq(stats_read(f.seg, &s), 0);
	f.seg->hseq = 3;
	cr_assert_eq(stats_read(f.seg, &s), -EAGAIN);
	f.seg->hseq = 4;
	cr_assert_eq(stats_read(f.seg, &s), 0);
	free(f.seg);
}

/* A broker killed in the middle of a write leaves a seqlock odd for good:
 * that is a stale segment, not a busy one. */
Test(stats, reader_knows_a_writer_that_died_mid_write)
{
	struct fake_seg f = seg_new(1, 1);
	struct stats_snap s = { 0 };
	pid_t dead = fork();

	cr_assert_geq(dead, 0);
	if (dead == 0)
		_exit(0);
	cr_assert_eq(waitpid(dead, NULL, 0), dead);
	f.seg->d.broker_pid = dead;
	f.seg->seq = 7;
	cr_assert_eq(stats_read(f.seg, &s), -ESRCH);
	f.seg->seq = 8;
	f.seg->hseq = 3;
	cr_assert_eq(stats_read(f.seg, &s), -ESRCH);
	/* alive (it is us): only busy */
	f.seg->d.broker_pid = getpid();
	cr_assert_eq(stats_read(f.seg, &s), -EAGAIN);
	free(f.seg);
}

Test(stats, reader_copies_rows_up_to_its_capacity)
{
	struct fake_seg f = seg_new(4, 8);
	struct stats_backend be[2];
	struct stats_agent ag[8];
	struct stats_snap s = { .backends = be, .cap_backends = 2, .agents = ag, .cap_agents = 8 };

	for (uint32_t i = 0; i < 4; i++)
		seg_backends(&f)[i].slot = i + 100;
	for (uint32_t i = 0; i < 8; i++)
		seg_agents(&f)[i].pid = (int32_t)i + 200;
	f.seg->h.nbackends = 4;
	f.seg->h.nagents = 3;
	cr_assert_eq(stats_read(f.seg, &s), 0);
	cr_assert_eq(s.nbackends, 2);
	cr_assert_eq(be[1].slot, 101);
	cr_assert_eq(s.nagents, 3);
	cr_assert_eq(ag[2].pid, 202);
	/* a count beyond the segment's arrays is cut to them */
	f.seg->h.nagents = 1000;
	cr_assert_eq(stats_read(f.seg, &s), 0);
	cr_assert_eq(s.nagents, 8);
	free(f.seg);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

struct writer {
	struct fake_seg *f;
	volatile int stop;
	uint64_t passes;
};

/* Like the broker: every field of one publication carries the same number;
 * d each pass, the health block and the rows every eighth. A little time
 * between passes, as in the broker, whose every pass enters io_uring. */
static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	struct stats_seg *seg = w->f->seg;
	static struct stats_data d;
	static struct stats_health h;

	while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
		uint64_t n = ++w->passes;

		/* The broker publishes once per loop pass, with work between:
		 * a writer that never pauses would starve any reader (whose
		 * copy takes as long as the write), which is not what is tested
		 * here. A few microseconds of work stand for the pass. */
		for (volatile int k = 0; k < 2000; k++)
			;

		d.pass = d.pass_end = n;
		d.c.statements = n;
		d.pool.total = (uint32_t)n;
		d.pool.idle = (uint32_t)(n / 2);
		d.pool.active = (uint32_t)(n - n / 2);
		stats_write_begin(&seg->seq);
		memcpy(&seg->d, &d, sizeof(d));
		stats_write_end(&seg->seq);
		if (n % 8 == 0) {
			uint32_t rows = (uint32_t)(n / 8 % 5);

			h.sample_ms = (int64_t)n;
			h.nbackends = rows;
			h.nagents = rows;
			stats_write_begin(&seg->hseq);
			memcpy(&seg->h, &h, sizeof(h));
			for (uint32_t i = 0; i < rows; i++) {
				seg_backends(w->f)[i].served = n;
				seg_agents(w->f)[i].statements = n;
			}
			stats_write_end(&seg->hseq);
		}
		/* a few microseconds, as an io_uring_enter at the least */
		for (long t0 = now_us(); now_us() - t0 < 5;)
			;
	}
	return NULL;
}

Test(stats, seqlock_reader_never_sees_a_torn_snapshot, .timeout = 60)
{
	struct fake_seg f = seg_new(8, 8);
	struct writer w = { .f = &f };
	struct stats_backend be[8];
	struct stats_agent ag[8];
	struct stats_snap s = { .backends = be, .cap_backends = 8, .agents = ag, .cap_agents = 8 };
	pthread_t t;
	uint64_t last = 0, last_h = 0, changed = 0, changed_h = 0;

	cr_assert_eq(pthread_create(&t, NULL, writer_thread, &w), 0);
	/* At least 100000 reads, and on until the writer has really run (it
	 * shares the CPUs with us and with whatever else runs). */
	for (long i = 0, end = now_ms() + 20000;
	     (i < 100000 || changed < 2000 || changed_h < 100) && now_ms() < end; i++) {
		uint64_t hp;

		cr_assert_eq(stats_read(f.seg, &s), 0, "no snapshot after many tries");
		cr_assert_eq(s.d.pass, s.d.pass_end, "torn: pass %llu vs %llu",
			     (unsigned long long)s.d.pass, (unsigned long long)s.d.pass_end);
		cr_assert_eq(s.d.c.statements, s.d.pass);
		cr_assert_eq(s.d.pool.total, s.d.pool.idle + s.d.pool.active);
		hp = (uint64_t)s.h.sample_ms;
		cr_assert_eq(s.nbackends, hp / 8 % 5);
		cr_assert_eq(s.nagents, hp / 8 % 5);
		for (uint32_t r = 0; r < s.nbackends; r++) {
			cr_assert_eq(be[r].served, hp, "row %u from another publication", r);
			cr_assert_eq(ag[r].statements, hp);
		}
		cr_assert_geq(s.d.pass, last, "went backwards");
		cr_assert_geq(hp, last_h, "health went backwards");
		changed += s.d.pass != last;
		changed_h += hp != last_h;
		last = s.d.pass;
		last_h = hp;
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	cr_assert_geq(changed, 2000, "the writer hardly ran (%llu changes seen)",
		      (unsigned long long)changed);
	cr_assert_geq(changed_h, 100, "health hardly changed (%llu)", (unsigned long long)changed_h);
	free(f.seg);
}

/* ---- health classification -------------------------------------------- */

struct health_case {
	const char *name;
	struct stats_sample sample;   /* repeated `samples` times, 1 s apart */
	int samples;
	uint32_t max, size;           /* pool limits */
	uint32_t total, connecting, connect_fails;
	uint32_t breaker_state;
	const char *connect_code, *connect_error;  /* the last failed connect */
	uint32_t server_max, server_reserved, server_other;
	uint32_t want_status;
	uint32_t want_code;           /* a reason that must be there, 0: no reasons at all */
	uint32_t want_level;
	const char *text;             /* in that reason's text */
	const char *advice;           /* in its advice */
};

static struct stats_sample busy(uint32_t b, uint32_t max)
{
	return (struct stats_sample){ .busy = b, .max = max, .utilization = 100.0 * b / max,
				      .interval_ms = 1000, .success_pct = 100 };
}

static void run_case(const struct health_case *c, struct stats_health *h, struct stats_data *d)
{
	struct health_limits lim;

	health_limits_default(&lim);
	memset(h, 0, sizeof(*h));
	memset(d, 0, sizeof(*d));
	d->pool.max = c->max ? c->max : 20;
	d->pool.size = c->size ? c->size : d->pool.max;
	d->pool.total = c->total ? c->total : 5;
	d->pool.connecting = c->connecting;
	d->connect_fails = c->connect_fails;
	d->breaker_state = c->breaker_state;
	snprintf(d->connect_code, sizeof(d->connect_code), "%s",
		 c->connect_code ? c->connect_code : "");
	snprintf(d->connect_error, sizeof(d->connect_error), "%s",
		 c->connect_error ? c->connect_error : "");
	d->server_max_connections = c->server_max;
	d->server_reserved_connections = c->server_reserved;
	d->server_other_connections = c->server_other;
	for (int i = 0; i < (c->samples ? c->samples : 1); i++) {
		struct stats_sample s = c->sample;

		if (!s.interval_ms)
			s.interval_ms = 1000;
		if (!s.max)
			s.max = d->pool.max;
		if (!s.statements && s.success_pct == 0)
			s.success_pct = 100;
		s.t_ms = 1700000000000LL + i * 1000LL;
		health_push(h, &s);
	}
	health_classify(d, h, &lim);
}

static const struct stats_reason *find_reason(const struct stats_health *h, uint32_t code)
{
	for (uint32_t i = 0; i < h->nreasons; i++)
		if (h->reasons[i].code == code)
			return &h->reasons[i];
	return NULL;
}

Test(stats, thresholds_map_to_status)
{
	static const struct health_case cases[] = {
		{ .name = "idle pool", .sample = { .utilization = 0 },
		  .want_status = HEALTH_HEALTHY },
		{ .name = "utilization at the warning line", .sample = { .utilization = 75, .busy = 15 },
		  .want_status = HEALTH_HEALTHY },
		{ .name = "utilization over 75", .sample = { .utilization = 80, .busy = 16 },
		  .want_status = HEALTH_DEGRADED, .want_code = HEALTH_R_UTILIZATION,
		  .want_level = HEALTH_DEGRADED, .text = "utilization 80% above 75%",
		  .advice = "raise max_pool_size (now 20)" },
		{ .name = "utilization over 90", .sample = { .utilization = 95, .busy = 19 },
		  .want_status = HEALTH_UNHEALTHY, .want_code = HEALTH_R_UTILIZATION,
		  .want_level = HEALTH_UNHEALTHY, .text = "above 90%" },
		{ .name = "5 waiting", .sample = { .waiting = 5 }, .want_status = HEALTH_HEALTHY },
		{ .name = "6 waiting", .sample = { .waiting = 6 }, .want_status = HEALTH_DEGRADED,
		  .want_code = HEALTH_R_WAITING, .want_level = HEALTH_DEGRADED,
		  .text = "6 agents waiting for a backend (above 5)" },
		{ .name = "11 waiting for 30 s", .sample = { .waiting = 11 }, .samples = 30,
		  .want_status = HEALTH_UNHEALTHY, .want_code = HEALTH_R_WAITING,
		  .want_level = HEALTH_UNHEALTHY, .text = "above 10) for 30 s",
		  .advice = "or shorten transactions" },
		{ .name = "98 % success", .sample = { .statements = 100, .failed = 2 }, .samples = 10,
		  .want_status = HEALTH_DEGRADED, .want_code = HEALTH_R_SUCCESS,
		  .want_level = HEALTH_DEGRADED, .text = "success rate 98.0% below 99%" },
		{ .name = "90 % success", .sample = { .statements = 100, .failed = 10 }, .samples = 10,
		  .want_status = HEALTH_UNHEALTHY, .want_code = HEALTH_R_SUCCESS,
		  .want_level = HEALTH_UNHEALTHY, .text = "(100 of 1000 statements failed)" },
		{ .name = "few statements are not judged", .sample = { .statements = 1, .failed = 1 },
		  .samples = 10, .want_status = HEALTH_HEALTHY },
		{ .name = "99.5 % success", .sample = { .statements = 1000, .failed = 5 },
		  .want_status = HEALTH_HEALTHY },
		{ .name = "acquire 200 ms", .sample = { .acquires = 10, .acquire_sum_us = 2000000 },
		  .want_status = HEALTH_DEGRADED, .want_code = HEALTH_R_ACQUIRE,
		  .want_level = HEALTH_DEGRADED, .text = "average wait for a backend 200 ms above 100 ms" },
		{ .name = "acquire 600 ms", .sample = { .acquires = 10, .acquire_sum_us = 6000000 },
		  .want_status = HEALTH_UNHEALTHY, .want_code = HEALTH_R_ACQUIRE,
		  .want_level = HEALTH_UNHEALTHY },
		{ .name = "acquire 50 ms", .sample = { .acquires = 10, .acquire_sum_us = 500000 },
		  .want_status = HEALTH_HEALTHY },
		{ .name = "breaker open", .breaker_state = 1, .want_status = HEALTH_UNHEALTHY,
		  .want_code = HEALTH_R_BREAKER, .want_level = HEALTH_UNHEALTHY,
		  .text = "circuit breaker open", .advice = "PostgreSQL is unreachable" },
		{ .name = "breaker half-open", .breaker_state = 2, .want_status = HEALTH_UNHEALTHY,
		  .want_code = HEALTH_R_BREAKER, .text = "half-open" },
		{ .name = "breaker open says why", .breaker_state = 1,
		  .connect_error = "No such file or directory", .want_status = HEALTH_UNHEALTHY,
		  .want_code = HEALTH_R_BREAKER, .text = "No such file or directory" },
		{ .name = "misconfigured: the server's answer, never unreachable", .breaker_state = 3,
		  .connect_code = "3D000", .connect_error = "FATAL:  database \"nope\" does not exist",
		  .want_status = HEALTH_UNHEALTHY, .want_code = HEALTH_R_MISCONFIGURED,
		  .want_level = HEALTH_UNHEALTHY,
		  .text = "SQLSTATE 3D000: FATAL:  database \"nope\" does not exist",
		  .advice = "PB010" },
		{ .name = "no backend reachable", .total = 1, .connecting = 1, .connect_fails = 3,
		  .want_status = HEALTH_UNHEALTHY, .want_code = HEALTH_R_UNREACHABLE,
		  .text = "the last 3 connection attempts failed" },
		{ .name = "a failed connect beside working backends", .total = 4, .connect_fails = 1,
		  .want_status = HEALTH_HEALTHY },
		{ .name = "max_pool_size does not fit the server", .max = 50, .server_max = 100,
		  .server_reserved = 3, .server_other = 60, .want_status = HEALTH_DEGRADED,
		  .want_code = HEALTH_R_CAPACITY, .text = "room for 37",
		  .advice = "lower max_pool_size to 37" },
		{ .name = "server has room", .max = 20, .server_max = 100, .server_reserved = 3,
		  .server_other = 10, .want_status = HEALTH_HEALTHY },
		{ .name = "server-bound: thumb rule instead of more connections", .max = 50,
		  .server_max = 60, .server_reserved = 3, .server_other = 10,
		  .sample = { .utilization = 96, .busy = 48 }, .want_status = HEALTH_UNHEALTHY,
		  .want_code = HEALTH_R_UTILIZATION, .advice = "twice the server's CPU cores" },
	};
	static struct stats_health h;
	struct stats_data d;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct health_case *c = &cases[i];
		const struct stats_reason *r;

		run_case(c, &h, &d);
		cr_assert_eq(h.status, c->want_status, "%s: status %s, want %s (%u reasons, first: %s)",
			     c->name, health_status_name(h.status), health_status_name(c->want_status),
			     h.nreasons, h.nreasons ? h.reasons[0].text : "-");
		if (!c->want_code) {
			cr_assert_eq(h.nreasons, 0, "%s: unexpected reason %s", c->name,
				     h.nreasons ? h.reasons[0].text : "");
			continue;
		}
		r = find_reason(&h, c->want_code);
		cr_assert_not_null(r, "%s: reason %u missing", c->name, c->want_code);
		if (c->want_level)
			cr_assert_eq(r->level, c->want_level, "%s: level %u", c->name, r->level);
		if (c->text)
			cr_assert(strstr(r->text, c->text), "%s: \"%s\" lacks \"%s\"", c->name,
				  r->text, c->text);
		if (c->advice)
			cr_assert(strstr(r->advice, c->advice), "%s: \"%s\" lacks \"%s\"", c->name,
				  r->advice, c->advice);
		cr_assert_gt(strlen(r->advice), 10, "%s: no recommendation", c->name);
		for (uint32_t k = 0; c->breaker_state == 3 && k < h.nreasons; k++)
			cr_assert(!strstr(h.reasons[k].text, "unreachable") &&
				  !strstr(h.reasons[k].advice, "unreachable"),
				  "%s: a refusal called unreachable: %s / %s", c->name,
				  h.reasons[k].text, h.reasons[k].advice);
	}
}

Test(stats, worst_reason_wins)
{
	static struct stats_health h;
	struct stats_data d;
	const struct health_case c = {
		.name = "degraded utilization, unhealthy waiting",
		.sample = { .utilization = 80, .busy = 16, .waiting = 20 },
	};

	run_case(&c, &h, &d);
	cr_assert_eq(h.status, HEALTH_UNHEALTHY);
	cr_assert_eq(h.nreasons, 2);
	cr_assert_not_null(find_reason(&h, HEALTH_R_UTILIZATION));
	cr_assert_not_null(find_reason(&h, HEALTH_R_WAITING));
	/* the log line of the change names the reason that set the status */
	cr_assert_not_null(health_main_reason(&h));
	cr_expect_eq(health_main_reason(&h)->code, HEALTH_R_WAITING);
	h.status = HEALTH_HEALTHY;
	cr_expect_null(health_main_reason(&h));
}

Test(stats, rates_are_judged_over_the_window_only)
{
	static struct stats_health h;
	struct stats_data d = { .pool = { .max = 10, .total = 2 } };
	struct health_limits lim;
	struct stats_sample bad = busy(0, 10), good = busy(0, 10);

	health_limits_default(&lim);
	bad.statements = 100;
	bad.failed = 50;
	good.statements = 100;
	for (int i = 0; i < 10; i++) {
		bad.t_ms = i * 1000;
		health_push(&h, &bad);
	}
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.status, HEALTH_UNHEALTHY);
	cr_assert_float_eq(h.success_pct, 50.0, 1e-9);
	/* 30 good seconds push the bad ones out of the 30 s window */
	for (int i = 10; i < 40; i++) {
		good.t_ms = i * 1000;
		health_push(&h, &good);
	}
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.status, HEALTH_HEALTHY, "%s", h.nreasons ? h.reasons[0].text : "");
	cr_assert_eq(h.window_ms, 30000);
	cr_assert_float_eq(h.success_pct, 100.0, 1e-9);
	cr_assert_float_eq(h.stmts_per_s, 100.0, 1e-9);
}

Test(stats, trend_follows_the_utilization_slope)
{
	static struct stats_health h;
	struct stats_data d = { .pool = { .max = 100, .total = 5 } };
	struct health_limits lim;

	health_limits_default(&lim);
	for (int i = 0; i < 60; i++) {
		struct stats_sample s = busy((uint32_t)i, 100);

		s.t_ms = i * 1000;
		health_push(&h, &s);
	}
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.trend, 1);
	cr_assert_float_eq(h.trend_per_min, 60.0, 0.01);

	memset(&h, 0, sizeof(h));
	for (int i = 0; i < 60; i++) {
		struct stats_sample s = busy((uint32_t)(60 - i), 100);

		s.t_ms = i * 1000;
		health_push(&h, &s);
	}
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.trend, -1);

	memset(&h, 0, sizeof(h));
	for (int i = 0; i < 60; i++) {
		struct stats_sample s = busy(40 + (uint32_t)(i % 2) * 2, 100);   /* noise */

		s.t_ms = i * 1000;
		health_push(&h, &s);
	}
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.trend, 0, "slope %f", h.trend_per_min);
}

Test(stats, history_ring_keeps_the_newest_hundred)
{
	static struct stats_health h;

	for (int i = 0; i < 250; i++) {
		struct stats_sample s = { .t_ms = i, .waiting = (uint32_t)i };

		health_push(&h, &s);
	}
	cr_assert_eq(h.nsamples, STATS_HISTORY);
	cr_assert_eq(health_sample_at(&h, 0)->waiting, 249);
	cr_assert_eq(health_sample_at(&h, 99)->waiting, 150);
	cr_assert_null(health_sample_at(&h, 100));
	cr_assert_eq(h.sample_ms, 249);
}

Test(stats, status_since_moves_only_on_a_change)
{
	static struct stats_health h;
	struct stats_data d = { .pool = { .max = 10, .total = 2 } };
	struct health_limits lim;
	struct stats_sample s = busy(1, 10);

	health_limits_default(&lim);
	s.t_ms = 1000;
	health_push(&h, &s);
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.status_since_ms, 1000);
	s.t_ms = 2000;
	health_push(&h, &s);
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.status_since_ms, 1000, "unchanged status keeps its start");
	s = busy(9, 10);
	s.t_ms = 3000;
	health_push(&h, &s);
	health_classify(&d, &h, &lim);
	cr_assert_eq(h.status, HEALTH_DEGRADED);
	cr_assert_eq(h.status_since_ms, 3000);
}

Test(stats, verdict_on_a_stale_segment)
{
	static struct stats_snap s;
	char err[256];

	s.d.updated_ms = s.heartbeat_ms = 1000000;
	s.h.sample_ms = 999000;
	s.d.broker_pid = getpid();
	s.pid_ns = stats_pid_ns();
	cr_assert_eq(stats_verdict(&s, "/x", 1000000 + 1000, err, sizeof(err)), HEALTH_HEALTHY);
	/* alive (it is us) but its heartbeat is over 2 s old: gone */
	cr_assert_eq(stats_verdict(&s, "/x", 1000000 + STATS_STALE_MS + 1, err, sizeof(err)),
		     -ESRCH);
	cr_assert(strstr(err, "no broker at /x") && strstr(err, "heartbeat is 2.0 s old"), "%s",
		  err);
	/* a fresh heartbeat, but its process is gone: no broker */
	s.d.broker_pid = 0x3ffffff0;   /* beyond pid_max */
	cr_assert_eq(stats_verdict(&s, "/x", 1000000 + 500, err, sizeof(err)), -ESRCH);
	cr_assert(strstr(err, "not running"), "%s", err);
	/* ... unless it runs in another pid namespace, where that pid says nothing */
	s.pid_ns = stats_pid_ns() + 1;
	cr_assert_eq(stats_verdict(&s, "/x", 1000000 + 500, err, sizeof(err)), HEALTH_HEALTHY,
		     "%s", err);
}

Test(stats, verdict_no_sample_yet_and_an_open_breaker_are_not_healthy)
{
	static struct stats_snap s;
	char err[256];

	s.d.updated_ms = s.heartbeat_ms = 1000000;
	s.d.broker_pid = getpid();
	cr_assert_eq(stats_verdict(&s, "/x", 1000000, err, sizeof(err)), HEALTH_STARTING);
	cr_assert_str_eq(health_status_name(HEALTH_STARTING), "starting");
	cr_assert_not_null(find_reason(&s.h, HEALTH_R_STARTING));
	/* The breaker opened after the last sample: unhealthy at once. */
	for (uint32_t state = 1; state <= 2; state++) {
		memset(&s.h, 0, sizeof(s.h));
		s.h.sample_ms = 999000;
		s.d.breaker_state = state;
		cr_assert_eq(stats_verdict(&s, "/x", 1000000, err, sizeof(err)), HEALTH_UNHEALTHY);
		cr_assert_not_null(find_reason(&s.h, HEALTH_R_BREAKER));
		/* and before the first sample too */
		memset(&s.h, 0, sizeof(s.h));
		cr_assert_eq(stats_verdict(&s, "/x", 1000000, err, sizeof(err)), HEALTH_UNHEALTHY);
	}
}

/* ---- texts read from shared memory --------------------------------------- */

Test(stats, texts_from_shared_memory_lose_their_control_characters)
{
	static const struct { const char *in, *want; } cases[] = {
		{ .in = "plain text", .want = "plain text" },
		{ .in = "\033]0;title\007rest", .want = "?]0;title?rest" },
		{ .in = "\033]52;c;cHduZWQ=\033\\", .want = "?]52;c;cHduZWQ=?\\" },
		{ .in = "tab\tnew\nline\rdel\x7f", .want = "tab?new?line?del?" },
		{ .in = "\xc2\x9b" "31m C1 CSI", .want = "??31m C1 CSI" },
		{ .in = "\x9b" "31m raw C1", .want = "?31m raw C1" },
		{ .in = "caf\xc3\xa9 \xe2\x86\x92 ok", .want = "caf\xc3\xa9 \xe2\x86\x92 ok" },
		{ .in = "cut \xe2\x86", .want = "cut ??" },
		{ .in = "overlong \xc0\xaf", .want = "overlong ??" },
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "%s", cases[i].in);
		stats_clean_text(buf, sizeof(buf));
		cr_expect_str_eq(buf, cases[i].want, "case %zu", i);
	}
	/* Not terminated within n: cut there. */
	memset(buf, 'x', sizeof(buf));
	stats_clean_text(buf, 8);
	cr_expect_str_eq(buf, "xxxxxxx");
}
