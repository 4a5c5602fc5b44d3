/* The stats segment, the health monitor and poolstat under real load: the
 * counters match what agents did, utilization and waiting follow the load,
 * readers never see a torn snapshot, thresholds map to status and exit
 * codes, and every output format (text, JSON, Prometheus, the live view in
 * a terminal) is what it claims to be. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

static struct h_broker br;

/* ---- running poolstat ---------------------------------------------------- */

static char out[512 * 1024];

/* poolstat MODE [DIR]; its exit status, its output in `out`. */
static int poolstat(const char *mode, const char *dir)
{
	char bin[512];
	const char *argv[4] = { h_bin("tools/poolstat", bin, sizeof(bin)), mode, dir, NULL };

	return h_run(argv, out, sizeof(out));
}

/* ---- a small JSON reader: the whole document must parse; every scalar is
 * kept under its path ("pool.total", "health.reasons[0]", "agents[2].pid"),
 * every array's length under "path[]". ---------------------------------- */

struct jkv {
	char path[256];
	char val[256];
	int is_str;
};

struct jdoc {
	struct jkv kv[4096];
	int n;
	const char *p;
	const char *err;
};

static void j_ws(struct jdoc *d)
{
	while (*d->p == ' ' || *d->p == '\n' || *d->p == '\t' || *d->p == '\r')
		d->p++;
}

static void j_put(struct jdoc *d, const char *path, const char *val, size_t len, int is_str)
{
	struct jkv *kv;

	if (d->n >= (int)(sizeof(d->kv) / sizeof(d->kv[0])))
		return;
	kv = &d->kv[d->n++];
	snprintf(kv->path, sizeof(kv->path), "%s", path);
	if (len >= sizeof(kv->val))
		len = sizeof(kv->val) - 1;
	memcpy(kv->val, val, len);
	kv->val[len] = '\0';
	kv->is_str = is_str;
}

/* A string; its text (escapes resolved, \u as '?') into buf. */
static int j_string(struct jdoc *d, char *buf, size_t n)
{
	size_t len = 0;

	if (*d->p != '"')
		return d->err = "string expected", -1;
	d->p++;
	while (*d->p && *d->p != '"') {
		char c = *d->p++;

		if ((unsigned char)c < 0x20)
			return d->err = "control character in a string", -1;
		if (c == '\\') {
			c = *d->p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++)
					if (!isxdigit((unsigned char)*d->p++))
						return d->err = "bad \\u escape", -1;
				c = '?';
			} else if (c == 'n') {
				c = '\n';
			} else if (c == 't') {
				c = '\t';
			} else if (!strchr("\"\\/bfr", c)) {
				return d->err = "bad escape", -1;
			}
		}
		if (len + 1 < n)
			buf[len++] = c;
	}
	if (*d->p != '"')
		return d->err = "unterminated string", -1;
	d->p++;
	buf[len] = '\0';
	return 0;
}

static int j_value(struct jdoc *d, const char *path, int depth)
{
	char sub[256], key[96], s[256];

	if (depth > 16)
		return d->err = "too deep", -1;
	j_ws(d);
	if (*d->p == '{') {
		d->p++;
		j_ws(d);
		if (*d->p == '}')
			return d->p++, 0;
		for (;;) {
			j_ws(d);
			if (j_string(d, key, sizeof(key)) < 0)
				return -1;
			j_ws(d);
			if (*d->p++ != ':')
				return d->err = "':' expected", -1;
			snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", key);
			if (j_value(d, sub, depth + 1) < 0)
				return -1;
			j_ws(d);
			if (*d->p == ',') {
				d->p++;
				continue;
			}
			if (*d->p++ != '}')
				return d->err = "'}' expected", -1;
			return 0;
		}
	}
	if (*d->p == '[') {
		int i = 0;
		char len[16];

		d->p++;
		j_ws(d);
		if (*d->p != ']') {
			for (;; i++) {
				snprintf(sub, sizeof(sub), "%s[%d]", path, i);
				if (j_value(d, sub, depth + 1) < 0)
					return -1;
				j_ws(d);
				if (*d->p == ',') {
					d->p++;
					continue;
				}
				break;
			}
			i++;
		}
		if (*d->p++ != ']')
			return d->err = "']' expected", -1;
		snprintf(sub, sizeof(sub), "%s[]", path);
		snprintf(len, sizeof(len), "%d", i);
		j_put(d, sub, len, strlen(len), 0);
		return 0;
	}
	if (*d->p == '"') {
		if (j_string(d, s, sizeof(s)) < 0)
			return -1;
		j_put(d, path, s, strlen(s), 1);
		return 0;
	}
	if (strncmp(d->p, "true", 4) == 0 || strncmp(d->p, "null", 4) == 0) {
		j_put(d, path, d->p, 4, 0);
		d->p += 4;
		return 0;
	}
	if (strncmp(d->p, "false", 5) == 0) {
		j_put(d, path, d->p, 5, 0);
		d->p += 5;
		return 0;
	}
	{
		char *end;
		const char *start = d->p;

		if (!(*d->p == '-' || isdigit((unsigned char)*d->p)))
			return d->err = "value expected", -1;
		strtod(d->p, &end);
		if (end == d->p)
			return d->err = "bad number", -1;
		d->p = end;
		j_put(d, path, start, (size_t)(end - start), 0);
		return 0;
	}
}

static struct jdoc *j_parse(const char *text)
{
	static struct jdoc d;

	memset(&d, 0, sizeof(d));
	d.p = text;
	if (j_value(&d, "", 0) < 0)
		cr_assert_fail("JSON does not parse (%s) at: %.60s", d.err, d.p);
	j_ws(&d);
	cr_assert_eq(*d.p, '\0', "trailing text after the JSON document: %.60s", d.p);
	return &d;
}

static const struct jkv *j_find(const struct jdoc *d, const char *path)
{
	for (int i = 0; i < d->n; i++)
		if (strcmp(d->kv[i].path, path) == 0)
			return &d->kv[i];
	return NULL;
}

static double jnum(const struct jdoc *d, const char *path)
{
	const struct jkv *kv = j_find(d, path);

	cr_assert_not_null(kv, "JSON has no %s", path);
	cr_assert_not(kv->is_str, "%s is a string, not a number", path);
	return strtod(kv->val, NULL);
}

static const char *jstr(const struct jdoc *d, const char *path)
{
	const struct jkv *kv = j_find(d, path);

	cr_assert_not_null(kv, "JSON has no %s", path);
	cr_assert(kv->is_str, "%s is not a string", path);
	return kv->val;
}

/* poolstat --json, parsed; its exit status in *rc. */
static struct jdoc *json_now(int *rc)
{
	int st = poolstat("--json", br.dir);

	if (rc)
		*rc = st;
	cr_assert(st < 3 || st == 4, "poolstat --json failed (%d): %s", st, out);
	return j_parse(out);
}

/* ---- agents ---------------------------------------------------------------- */

struct work {
	int ok, bad;          /* statements that succeed, that fail */
	int hold_fd;          /* >= 0: stay connected until a byte comes from this pipe */
	int ready_fd;         /* >= 0: write a byte here when done */
	const char *sql;      /* the succeeding statement (default: select 1) */
};

static int agent_work(void *arg)
{
	const struct work *w = arg;
	pgb_conn *c;
	char x = 0;

	/* Not an orphan of a failed test: go when the test process goes. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; i < w->ok + w->bad; i++) {
		/* interleave the failures */
		int fail = i % 2 == 1 && i / 2 < w->bad;
		pgb_result *r = pgb_exec(c, fail ? "select 1/0" : w->sql ? w->sql : "select 1");

		if (pgb_result_ok(r) == fail) {
			fprintf(stderr, "statement %d: %s %s\n", i, pgb_sqlstate(r), pgb_result_error(r));
			return 1;
		}
		if (fail && strcmp(pgb_sqlstate(r), "22012") != 0)
			return 2;
		pgb_clear(r);
	}
	if (w->ready_fd >= 0)
		(void)!write(w->ready_fd, "x", 1);
	if (w->hold_fd >= 0) {
		struct pollfd pf = { .fd = w->hold_fd, .events = POLLIN };

		/* bounded: a test that failed before releasing us must not hang */
		if (poll(&pf, 1, 30000) == 1)
			(void)!read(w->hold_fd, &x, 1);
	}
	pgb_finish(c);
	return 0;
}

static void wait_all(pid_t *pids, int n, int timeout_ms)
{
	for (int i = 0; i < n; i++)
		cr_assert_eq(h_wait(pids[i], timeout_ms), 0, "agent %d failed", i);
}

/* ---- the counters match what the agents did ----------------------------- */

struct want_counts {
	double total, failed;
};

static int counters_are(void *arg)
{
	const struct want_counts *w = arg;
	struct jdoc *d = json_now(NULL);

	return jnum(d, "queries.total") == w->total && jnum(d, "queries.failed") == w->failed;
}

struct rows_want {
	pid_t *pids;
	int n;
	double statements, errors;
};

/* Every pid has its agent row, with its own counts. */
static int agent_rows_are(void *arg)
{
	const struct rows_want *w = arg;
	struct jdoc *d = json_now(NULL);
	int found = 0, n = (int)jnum(d, "agents[]");

	for (int i = 0; i < n; i++) {
		char p[64];
		double pid;

		snprintf(p, sizeof(p), "agents[%d].pid", i);
		pid = jnum(d, p);
		for (int k = 0; k < w->n; k++) {
			if (pid != w->pids[k])
				continue;
			snprintf(p, sizeof(p), "agents[%d].statements", i);
			if (jnum(d, p) != w->statements)
				return 0;
			snprintf(p, sizeof(p), "agents[%d].errors", i);
			if (jnum(d, p) != w->errors)
				return 0;
			snprintf(p, sizeof(p), "agents[%d].state", i);
			cr_assert_str_eq(jstr(d, p), "idle");
			found++;
		}
	}
	return found == w->n;
}

Test(stats, json_counters_match_what_agents_did, .timeout = 90)
{
	const char *args[] = { "--health-interval-ms", "100", NULL };
	enum { N = 6, OK = 25, BAD = 4 };
	struct work w = { .ok = OK, .bad = BAD };
	struct want_counts want = { .total = N * (OK + BAD), .failed = N * BAD };
	struct rows_want rows = { .n = N, .statements = OK + BAD, .errors = BAD };
	pid_t pids[N];
	int hold[2], ready[2];
	char x;
	struct jdoc *d;

	h_broker_start(&br, args);
	d = json_now(NULL);
	cr_assert_eq(jnum(d, "queries.total"), 0);
	cr_assert_eq(pipe(hold), 0);
	cr_assert_eq(pipe(ready), 0);
	w.hold_fd = hold[0];
	w.ready_fd = ready[1];
	for (int i = 0; i < N; i++)
		pids[i] = h_fork(agent_work, &w);
	for (int i = 0; i < N; i++)
		cr_assert_eq(read(ready[0], &x, 1), 1);
	/* The counters are published at once, the rows at the next sample. */
	cr_assert(h_until(counters_are, &want, 5000), "counters never matched: %s", out);
	rows.pids = pids;
	cr_assert(h_until(agent_rows_are, &rows, 5000), "agent rows never matched: %s", out);
	d = json_now(NULL);
	cr_assert_eq(jnum(d, "queries.total"), N * (OK + BAD));
	cr_assert_eq(jnum(d, "queries.failed"), N * BAD);
	cr_assert_eq(jnum(d, "queries.succeeded"), N * OK);
	cr_assert_float_eq(jnum(d, "queries.success_rate"), (double)OK / (OK + BAD), 1e-5);
	cr_assert_eq(jnum(d, "clients.connected"), N);
	cr_assert_eq(jnum(d, "latency_ms.count"), N * (OK + BAD));
	cr_assert_gt(jnum(d, "latency_ms.p50"), 0);
	cr_assert_geq(jnum(d, "latency_ms.p99"), jnum(d, "latency_ms.p50"));
	cr_assert_geq(jnum(d, "latency_ms.max"), jnum(d, "latency_ms.p99"));
	cr_assert_geq(jnum(d, "acquire_ms.p99"), 0);
	cr_assert_eq(jnum(d, "queries.acquire_timeouts"), 0);
	/* every key the issue names is there */
	static const char *const keys[] = {
		"pool.total", "pool.idle", "pool.active", "pool.waiting", "pool.utilization_percent",
		"health.status", "health.recommendations[]", "breaker.state", "queries.total",
		"queries.failed", "queries.success_rate", "latency_ms.p50", "latency_ms.p95",
		"latency_ms.p99", "acquire_ms.avg", "acquire_ms.p99", "clients.connected",
		"timestamp",
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cr_assert_not_null(j_find(d, keys[i]), "JSON lacks %s", keys[i]);
	cr_assert_str_eq(jstr(d, "breaker.state"), "closed");
	/* one byte each releases them (they all hold the write end too) */
	for (int i = 0; i < N; i++)
		cr_assert_eq(write(hold[1], "x", 1), 1);
	wait_all(pids, N, 30000);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- utilization and waiting follow the load ---------------------------- */

struct peak {
	double util, waiting;
	int unhealthy, busy_rows;
};

static int see_peak(void *arg)
{
	struct peak *p = arg;
	struct jdoc *d = json_now(NULL);
	int n;

	if (jnum(d, "pool.utilization_percent") > p->util)
		p->util = jnum(d, "pool.utilization_percent");
	if (jnum(d, "pool.waiting") > p->waiting)
		p->waiting = jnum(d, "pool.waiting");
	p->unhealthy |= strcmp(jstr(d, "health.status"), "unhealthy") == 0;
	n = (int)jnum(d, "backends[]");
	for (int i = 0; i < n; i++) {
		char path[64];

		snprintf(path, sizeof(path), "backends[%d].state", i);
		if (strcmp(jstr(d, path), "active") == 0) {
			snprintf(path, sizeof(path), "backends[%d].agent_pid", i);
			cr_assert_gt(jnum(d, path), 0, "an active backend without its agent");
			p->busy_rows++;
		}
	}
	return p->util >= 100 && p->waiting >= 3 && p->unhealthy && p->busy_rows > 0;
}

static int pool_quiet(void *arg)
{
	struct jdoc *d = json_now(NULL);

	(void)arg;
	return jnum(d, "pool.waiting") == 0 && jnum(d, "pool.utilization_percent") == 0 &&
	       jnum(d, "pool.active") == 0;
}

Test(stats, utilization_and_waiting_rise_with_more_agents_than_backends, .timeout = 90)
{
	const char *args[] = { "--min-pool-size", "2", "--pool-size", "2", "--max-pool-size", "2",
			       "--health-interval-ms", "100", NULL };
	struct work w = { .ok = 6, .sql = "select pg_sleep(0.3)", .hold_fd = -1, .ready_fd = -1 };
	struct peak p = { 0 };
	pid_t pids[7];
	struct jdoc *d;

	h_broker_start(&br, args);
	d = json_now(NULL);
	cr_assert_eq(jnum(d, "pool.utilization_percent"), 0);
	cr_assert_eq(jnum(d, "pool.waiting"), 0);
	for (int i = 0; i < 7; i++)
		pids[i] = h_fork(agent_work, &w);
	cr_assert(h_until(see_peak, &p, 10000),
		  "utilization %.0f, waiting %.0f, unhealthy %d, active rows %d", p.util,
		  p.waiting, p.unhealthy, p.busy_rows);
	wait_all(pids, 7, 60000);
	cr_assert(h_until(pool_quiet, NULL, 5000), "the pool did not go quiet: %s", out);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- a reader hammering the segment never sees a torn snapshot --------- */

static int churner(void *arg)
{
	long long end = h_now_ms() + *(int *)arg;
	int n = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);

	while (h_now_ms() < end) {
		pgb_conn *c = pgb_connect(br.dir);

		if (pgb_status(c) != PGB_CONNECTION_OK)
			return 10;
		pgb_clear(pgb_exec(c, "select 1"));
		pgb_clear(pgb_exec(c, "select 1/0"));
		pgb_clear(pgb_exec(c, "begin"));
		pgb_clear(pgb_exec(c, "select pg_sleep(0.001)"));
		if (n++ % 2)
			pgb_clear(pgb_exec(c, "commit"));
		pgb_finish(c);   /* every other one leaves its transaction open */
	}
	return 0;
}

static uint64_t bucket_sum(const struct stats_hist *h)
{
	uint64_t s = 0;

	for (unsigned i = 0; i < STATS_BUCKETS; i++)
		s += h->bucket[i];
	return s;
}

Test(stats, reader_hammering_the_segment_never_sees_a_torn_snapshot, .timeout = 90)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "3", "--max-pool-size", "4",
			       "--health-interval-ms", "10", "--idle-timeout-ms", "50",
			       "--reserve-timeout-ms", "5", NULL };
	int ms = 3000;
	pid_t pids[8];
	struct stats_map m;
	static struct stats_snap s, prev;
	static struct stats_backend be[4];
	static struct stats_agent ag[4096];
	char err[600];
	long reads = 0, passes = 0, samples = 0;

	h_broker_start(&br, args);
	cr_assert_eq(stats_map_open(br.dir, &m, err, sizeof(err)), 0, "%s", err);
	for (int i = 0; i < 8; i++)
		pids[i] = h_fork(churner, &ms);
	s.backends = be;
	s.cap_backends = 4;
	s.agents = ag;
	s.cap_agents = 4096;
	for (long long end = h_now_ms() + ms; h_now_ms() < end; reads++) {
		const struct stats_pool *p = &s.d.pool;

		cr_assert_eq(stats_read(m.seg, &s), 0, "no consistent snapshot");
		cr_assert_eq(s.d.pass, s.d.pass_end, "torn: pass %llu, pass_end %llu",
			     (unsigned long long)s.d.pass, (unsigned long long)s.d.pass_end);
		cr_assert_eq(p->total, p->idle + p->active + p->pinned + p->connecting + p->other,
			     "total %u != idle %u + active %u + pinned %u + connecting %u + other %u",
			     p->total, p->idle, p->active, p->pinned, p->connecting, p->other);
		cr_assert_leq(p->total, p->max);
		cr_assert_float_eq(p->utilization, 100.0 * (p->active + p->pinned) / p->max, 1e-9);
		cr_assert_leq(s.d.c.failed, s.d.c.statements);
		cr_assert_eq(bucket_sum(&s.d.stmt), s.d.stmt.count);
		cr_assert_eq(bucket_sum(&s.d.acquire), s.d.acquire.count);
		cr_assert_leq(s.nbackends, 4);
		for (uint32_t i = 0; i < s.nbackends; i++)
			cr_assert(be[i].state >= STATS_BE_CONNECTING && be[i].state <= STATS_BE_RESET,
				  "backend row %u state %u", i, be[i].state);
		for (uint32_t i = 0; i < s.nagents; i++)
			cr_assert_leq(ag[i].state, STATS_AG_IN_TXN);
		if (reads) {
			cr_assert_geq(s.d.pass, prev.d.pass);
			cr_assert_geq(s.d.c.statements, prev.d.c.statements);
			cr_assert_geq(s.d.c.failed, prev.d.c.failed);
			cr_assert_geq(s.d.c.connects, prev.d.c.connects);
			cr_assert_geq(s.h.sample_ms, prev.h.sample_ms);
			passes += s.d.pass != prev.d.pass;
			samples += s.h.sample_ms != prev.h.sample_ms;
		}
		prev.d = s.d;
		prev.h.sample_ms = s.h.sample_ms;
	}
	wait_all(pids, 8, 30000);
	stats_map_close(&m);
	cr_assert_gt(reads, 1000, "only %ld reads", reads);
	cr_assert_gt(passes, 10, "the broker published only %ld times", passes);
	cr_assert_gt(samples, 3, "only %ld health samples", samples);
	cr_assert_gt(prev.d.c.closed_idle + prev.d.c.connects, 1, "no churn of backends");
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- thresholds -> status -> exit codes; pgb_pool_health -------------- */

struct want_exit {
	const char *mode;
	int code;
};

static int exit_is(void *arg)
{
	const struct want_exit *w = arg;

	return poolstat(w->mode, br.dir) == w->code;
}

static int all_connected(void *arg)
{
	struct jdoc *d = json_now(NULL);

	(void)arg;
	return jnum(d, "pool.idle") == 5 && jnum(d, "pool.total") == 5;
}

Test(stats, thresholds_map_to_status_and_exit_codes, .timeout = 120)
{
	const char *args[] = { "--min-pool-size", "5", "--pool-size", "5", "--max-pool-size", "5",
			       "--health-interval-ms", "100", NULL };
	struct work slow = { .ok = 1, .sql = "select pg_sleep(2)", .hold_fd = -1, .ready_fd = -1 };
	struct want_exit w = { .mode = "--once", .code = 0 };
	struct pgb_health h;
	struct stat st;
	char path[256];
	pid_t pids[8];
	struct jdoc *d;
	int rc;

	h_broker_start(&br, args);
	snprintf(path, sizeof(path), "%s/%s", br.dir, STATS_FILE);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0640, "segment mode %o", st.st_mode & 07777);

	/* idle: healthy, 0 */
	cr_assert(h_until(all_connected, NULL, 10000), "min_pool_size never connected: %s", out);
	cr_assert(h_until(exit_is, &w, 5000), "idle pool not healthy: %s", out);
	cr_assert(strstr(out, "health: healthy"), "%s", out);
	cr_assert(strstr(out, "pool: total 5 "), "%s", out);
	cr_assert_eq(pgb_pool_health(br.dir, &h), 0, "%s", h.error);
	cr_assert_eq(h.status, PGB_HEALTHY);
	cr_assert_eq(h.healthy, 1);
	cr_assert_str_eq(h.status_name, "healthy");
	cr_assert_eq(h.total, 5);
	cr_assert_eq(h.idle, 5);
	cr_assert_eq(h.active, 0);
	cr_assert_eq(h.waiting, 0);
	cr_assert_str_eq(h.recommendations, "");
	cr_assert_lt(llabs(h.timestamp_ms - (long long)time(NULL) * 1000), 5000);

	/* 4 of 5 busy: 80 % > 75 %, degraded, 1 */
	for (int i = 0; i < 4; i++)
		pids[i] = h_fork(agent_work, &slow);
	w.code = 1;
	cr_assert(h_until(exit_is, &w, 5000), "4 of 5 busy is not degraded: %s", out);
	cr_assert(strstr(out, "utilization 80% above 75%"), "%s", out);
	cr_assert_eq(pgb_pool_health(br.dir, &h), 0, "%s", h.error);
	cr_assert_eq(h.status, PGB_DEGRADED);
	cr_assert_eq(h.healthy, 0);
	cr_assert_float_eq(h.utilization_percent, 80.0, 1e-9);
	cr_assert(strstr(h.reasons, "utilization"), "%s", h.reasons);
	cr_assert(strstr(h.recommendations, "max_pool_size"), "%s", h.recommendations);
	d = json_now(&rc);
	cr_assert_eq(rc, 1);
	cr_assert_str_eq(jstr(d, "health.status"), "degraded");
	cr_assert_geq(jnum(d, "health.recommendations[]"), 1);
	cr_assert_eq(poolstat("--prometheus", br.dir), 1);
	wait_all(pids, 4, 30000);

	/* 8 agents on 5 backends: 100 % busy and 3 waiting: unhealthy, 2 */
	for (int i = 0; i < 8; i++)
		pids[i] = h_fork(agent_work, &slow);
	w.code = 2;
	cr_assert(h_until(exit_is, &w, 5000), "8 agents on 5 backends is not unhealthy: %s", out);
	cr_assert(strstr(out, "health: unhealthy"), "%s", out);
	cr_assert_eq(pgb_pool_health(br.dir, &h), 0, "%s", h.error);
	cr_assert_eq(h.status, PGB_UNHEALTHY);
	cr_assert_str_eq(h.status_name, "unhealthy");
	cr_assert_gt(h.waiting, 0);
	d = json_now(&rc);
	cr_assert_eq(rc, 2);
	cr_assert_str_eq(jstr(d, "health.status"), "unhealthy");
	cr_assert(strstr(jstr(d, "health.recommendations[0]"), "max_pool_size"));
	wait_all(pids, 8, 30000);
	cr_assert_eq(h_broker_stop(&br), 0);

	/* the broker is gone: 3, and pgb_pool_health says why */
	cr_assert_eq(poolstat("--once", br.dir), 3);
	cr_assert_eq(pgb_pool_health(br.dir, &h), -1);
	cr_assert_eq(h.status, PGB_NO_BROKER);
	cr_assert(strstr(h.error, "no broker at"), "%s", h.error);
}

/* ---- poolstat without a broker ------------------------------------------ */

struct no_broker_case {
	const char *name;
	const char *content;     /* NULL: no file at all */
	size_t len;
	const char *says;
};

Test(stats, poolstat_on_a_missing_dir_or_a_foreign_file_exits_3, .timeout = 60)
{
	struct stats_seg old = { .magic = STATS_MAGIC, .version = 1, .size = sizeof(old) };
	const struct no_broker_case cases[] = {
		{ .name = "missing", .says = "no broker at" },
		{ .name = "text", .content = "hello, I am not a segment at all\n", .len = 33,
		  .says = "not a pgbroker stats segment" },
		{ .name = "empty", .content = "", .len = 0, .says = "not a pgbroker stats segment" },
		{ .name = "old layout", .content = (const char *)&old, .len = sizeof(old),
		  .says = "layout version 1" },
	};
	static const char *const modes[] = { "--once", "--json", "--prometheus" };
	char dir[] = "/tmp/pgb-stats-test.XXXXXX", path[256];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, STATS_FILE);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unlink(path);
		if (cases[i].content) {
			int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

			cr_assert_geq(fd, 0);
			cr_assert_eq(write(fd, cases[i].content, cases[i].len), (ssize_t)cases[i].len);
			close(fd);
		}
		for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
			int st = poolstat(modes[k], dir);

			cr_assert_eq(st, 3, "%s %s: exit %d: %s", cases[i].name, modes[k], st, out);
			cr_assert(strstr(out, cases[i].says), "%s %s: %s", cases[i].name, modes[k], out);
			cr_assert(strstr(out, "poolstat: "), "%s: no message", cases[i].name);
		}
		cr_assert(strstr(out, "pgbroker_up 0"), "--prometheus without a broker: %s", out);
	}
	cr_assert_eq(poolstat("--once", "/nonexistent/pgbroker/dir"), 3);
	cr_assert(strstr(out, "no broker at /nonexistent/pgbroker/dir"), "%s", out);
	unlink(path);
	rmdir(dir);
}

/* A FIFO where the segment should be: refused at once, not waited on for
 * a writer that never comes. */
Test(stats, poolstat_on_a_fifo_exits_3_at_once, .timeout = 30)
{
	char dir[] = "/tmp/pgb-stats-test.XXXXXX", path[256];
	struct pgb_health ph;
	int st;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, STATS_FILE);
	cr_assert_eq(mkfifo(path, 0644), 0);
	st = poolstat("--once", dir);
	cr_assert_eq(st, 3, "exit %d: %s", st, out);
	cr_assert(strstr(out, "not a pgbroker stats segment"), "%s", out);
	cr_assert_eq(pgb_pool_health(dir, &ph), -1);
	cr_assert(strstr(ph.error, "not a pgbroker stats segment"), "%s", ph.error);
	unlink(path);
	rmdir(dir);
}

static int says_no_broker(void *arg)
{
	(void)arg;
	return poolstat("--once", br.dir) == 3 && strstr(out, "stale");
}

Test(stats, a_killed_brokers_segment_reads_as_no_broker, .timeout = 60)
{
	h_broker_start(&br, NULL);
	cr_assert_neq(poolstat("--once", br.dir), 3, "%s", out);
	h_broker_kill(&br);
	/* the file stays; once it is older than STATS_STALE_MS its pid is checked */
	cr_assert(h_until(says_no_broker, NULL, STATS_STALE_MS + 5000), "%s", out);
	cr_assert(strstr(out, "no broker at"), "%s", out);
}

/* ---- Prometheus text format --------------------------------------------- */

static int prom_sampled(void *arg)
{
	(void)arg;
	return poolstat("--prometheus", br.dir) != 4;
}

static int prom_name(const char **p, char *name, size_t n)
{
	size_t len = 0;

	if (!(isalpha((unsigned char)**p) || **p == '_' || **p == ':'))
		return -1;
	while (isalnum((unsigned char)**p) || **p == '_' || **p == ':') {
		if (len + 1 < n)
			name[len++] = **p;
		(*p)++;
	}
	name[len] = '\0';
	return 0;
}

struct family {
	char name[96];
	char type[16];
	int help;
};

Test(stats, prometheus_output_parses, .timeout = 60)
{
	struct work w = { .ok = 7, .bad = 2, .hold_fd = -1, .ready_fd = -1 };
	static struct family fam[128];
	int nfam = 0, samples = 0, lineno = 0;
	double queries = -1, failed = -1;
	char *line, *save;
	pid_t pid;

	h_broker_start(&br, NULL);
	pid = h_fork(agent_work, &w);
	wait_all(&pid, 1, 30000);
	cr_assert(h_until(prom_sampled, NULL, 10000), "%s", out);	/* not 4, starting */
	cr_assert_eq(poolstat("--prometheus", br.dir), 0, "%s", out);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *p = line;
		char name[96], type[16];
		struct family *f = NULL;

		lineno++;
		if (strncmp(p, "# HELP ", 7) == 0 || strncmp(p, "# TYPE ", 7) == 0) {
			int is_type = p[2] == 'T';

			p += 7;
			cr_assert_eq(prom_name(&p, name, sizeof(name)), 0, "line %d: %s", lineno, line);
			cr_assert_eq(*p, ' ', "line %d: %s", lineno, line);
			p++;
			for (int i = 0; i < nfam; i++)
				if (strcmp(fam[i].name, name) == 0)
					f = &fam[i];
			if (!f) {
				cr_assert_lt(nfam, 128);
				f = &fam[nfam++];
				snprintf(f->name, sizeof(f->name), "%s", name);
			}
			if (is_type) {
				cr_assert_str_empty(f->type, "line %d: second TYPE for %s", lineno, name);
				cr_assert_eq(sscanf(p, "%15s", type), 1);
				cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
					  strcmp(type, "summary") == 0 || strcmp(type, "histogram") == 0 ||
					  strcmp(type, "untyped") == 0, "line %d: type %s", lineno, type);
				cr_assert(f->help, "line %d: TYPE before HELP for %s", lineno, name);
				snprintf(f->type, sizeof(f->type), "%s", type);
				if (strcmp(type, "counter") == 0)
					cr_assert(strlen(name) > 6 &&
						  strcmp(name + strlen(name) - 6, "_total") == 0,
						  "counter %s does not end in _total", name);
			} else {
				cr_assert_not(f->help, "line %d: second HELP for %s", lineno, name);
				cr_assert_gt(strlen(p), 0, "line %d: empty HELP", lineno);
				f->help = 1;
			}
			cr_assert_eq(strncmp(name, "pgbroker_", 9), 0, "line %d: %s", lineno, name);
			continue;
		}
		cr_assert_neq(*p, '#', "line %d: unknown comment: %s", lineno, line);
		/* a sample: name{label="value",...} value */
		cr_assert_eq(prom_name(&p, name, sizeof(name)), 0, "line %d: %s", lineno, line);
		if (*p == '{') {
			p++;
			while (*p != '}') {
				char lname[64];

				cr_assert_eq(prom_name(&p, lname, sizeof(lname)), 0, "line %d: %s",
					     lineno, line);
				cr_assert_eq(*p++, '=', "line %d: %s", lineno, line);
				cr_assert_eq(*p++, '"', "line %d: %s", lineno, line);
				while (*p && *p != '"') {
					if (*p == '\\')
						p++;
					p++;
				}
				cr_assert_eq(*p++, '"', "line %d: %s", lineno, line);
				if (*p == ',')
					p++;
				else
					cr_assert_eq(*p, '}', "line %d: %s", lineno, line);
			}
			p++;
		}
		cr_assert_eq(*p++, ' ', "line %d: %s", lineno, line);
		{
			char *end;
			double v = strtod(p, &end);

			cr_assert(end != p && *end == '\0', "line %d: bad value: %s", lineno, line);
			cr_assert(isfinite(v), "line %d: %s", lineno, line);
			if (strcmp(name, "pgbroker_queries_total") == 0)
				queries = v;
			if (strcmp(name, "pgbroker_queries_failed_total") == 0)
				failed = v;
		}
		/* its family was declared before it */
		for (int i = 0; i < nfam && !f; i++) {
			size_t fl = strlen(fam[i].name);

			if (strcmp(fam[i].name, name) == 0 ||
			    ((strcmp(fam[i].type, "summary") == 0 ||
			      strcmp(fam[i].type, "histogram") == 0) && strncmp(fam[i].name, name, fl) == 0 &&
			     (strcmp(name + fl, "_sum") == 0 || strcmp(name + fl, "_count") == 0 ||
			      (strcmp(fam[i].type, "histogram") == 0 && strcmp(name + fl, "_bucket") == 0))))
				f = &fam[i];
		}
		cr_assert_not_null(f, "line %d: %s without HELP and TYPE", lineno, name);
		cr_assert_str_not_empty(f->type, "line %d: %s without TYPE", lineno, name);
		samples++;
	}
	cr_assert_gt(samples, 30, "only %d samples", samples);
	cr_assert_eq(queries, 9);
	cr_assert_eq(failed, 2);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- the live view in a terminal ---------------------------------------- */

static char tmux_sock[64];

static int tmux(const char *a, const char *b, const char *c, const char *d, const char *e)
{
	const char *argv[] = { "/usr/bin/env", "tmux", "-L", tmux_sock, a, b, c, d, e, NULL };

	return h_run(argv, out, sizeof(out));
}

static int screen_shows_pool(void *arg)
{
	(void)arg;
	return tmux("capture-pane", "-p", "-t", "pgbtest", NULL) == 0 &&
	       strstr(out, "pool: total ") && strstr(out, "(q quits)") &&
	       strstr(out, "BE STATE");
}

static int session_gone(void *arg)
{
	(void)arg;
	return tmux("has-session", "-t", "pgbtest", NULL, NULL) != 0;
}

/* The raw pane output (path in arg) holds at least two frames. */
static int two_frames(void *arg)
{
	char buf[65536];
	int fd = open(arg, O_RDONLY), frames = 0;
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	for (char *f = buf; (f = strstr(f, "\033[H")); f++)
		frames++;
	return frames >= 2;
}

Test(stats, live_view_in_tmux_shows_the_pool_line_and_q_quits, .timeout = 60)
{
	char cmd[1200], bin[512], raw[300], pipe_cmd[400], *frame;
	int frames = 0, clears = 0, fd;
	const char *version[] = { "/usr/bin/env", "tmux", "-V", NULL };
	size_t n;

	if (h_run(version, out, sizeof(out)) != 0)
		cr_skip_test("tmux is not installed");
	h_broker_start(&br, (const char *const[]){ "--health-interval-ms", "200", NULL });
	/* A private tmux server: nothing of anyone else's is touched. */
	snprintf(tmux_sock, sizeof(tmux_sock), "pgbtest%d", (int)getpid());
	snprintf(raw, sizeof(raw), "%s/pane.raw", br.dir);
	snprintf(pipe_cmd, sizeof(pipe_cmd), "cat > %s", raw);
	/* The short sleep lets pipe-pane attach before the first frame. */
	snprintf(cmd, sizeof(cmd), "sleep 0.5; exec %s %s",
		 h_bin("tools/poolstat", bin, sizeof(bin)), br.dir);
	{
		const char *argv[] = { "/usr/bin/env", "tmux", "-L", tmux_sock, "new-session", "-d",
				       "-s", "pgbtest", "-x", "80", "-y", "24", cmd, ";",
				       "pipe-pane", "-o", "-t", "pgbtest", pipe_cmd, NULL };

		cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "tmux: %s", out);
	}
	cr_assert(h_until(screen_shows_pool, NULL, 10000), "the live view never showed:\n%s", out);
	/* it keeps refreshing: wait for a second frame */
	cr_assert(h_until(two_frames, raw, 10000), "the live view drew only one frame");
	cr_assert_eq(tmux("capture-pane", "-p", "-t", "pgbtest", NULL), 0);
	cr_assert(strstr(out, "pool: total "), "%s", out);
	{
		/* every line fits 80 columns */
		char *save, *l;
		int lines = 0;

		for (l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
			lines++;
		cr_assert_leq(lines, 24);
	}
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "q", NULL), 0);
	cr_assert(h_until(session_gone, NULL, 5000), "q did not quit the live view");
	tmux("kill-server", NULL, NULL, NULL, NULL);

	/* No flicker: one clear at start, then frames that go home and overwrite. */
	fd = open(raw, O_RDONLY);
	cr_assert_geq(fd, 0, "no raw pane output");
	n = (size_t)read(fd, out, sizeof(out) - 1);
	close(fd);
	out[n] = '\0';
	for (frame = out; (frame = strstr(frame, "\033[H")); frame++)
		frames++;
	for (frame = out; (frame = strstr(frame, "\033[2J")); frame++)
		clears++;
	cr_assert_geq(frames, 2, "only %d frames", frames);
	cr_assert_eq(clears, 1, "the screen was cleared %d times", clears);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The pane's tmux format `fmt` (e.g. #{alternate_on}) reads `want`. */
struct pane_is {
	const char *fmt, *want;
};

static int pane_is(void *arg)
{
	const struct pane_is *w = arg;

	if (tmux("display-message", "-p", "-t", "pgbtest", w->fmt) != 0)
		return 0;
	out[strcspn(out, "\n")] = '\0';
	return strcmp(out, w->want) == 0;
}

/* The test's private tmux server goes, whatever the test's end. */
static void tmux_gone(void)
{
	if (*tmux_sock)
		tmux("kill-server", NULL, NULL, NULL, NULL);
}

/* A broker, and an interactive bash in a private 80x24 tmux session
 * "pgbtest"; skips the test without tmux or bash. */
static void bash_in_tmux(void)
{
	const char *version[] = { "/usr/bin/env", "tmux", "-V", NULL };
	const char *has_bash[] = { "/usr/bin/env", "bash", "-c", "true", NULL };
	const char *argv[] = { "/usr/bin/env", "tmux", "-L", tmux_sock, "new-session", "-d",
			       "-s", "pgbtest", "-x", "80", "-y", "24",
			       "bash --norc --noprofile -i", NULL };

	if (h_run(version, out, sizeof(out)) != 0 || h_run(has_bash, out, sizeof(out)) != 0)
		cr_skip_test("tmux or bash is not installed");
	h_broker_start(&br, (const char *const[]){ "--health-interval-ms", "200", NULL });
	snprintf(tmux_sock, sizeof(tmux_sock), "pgbtest%d", (int)getpid());
	cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "tmux: %s", out);
}

/* Ctrl-Z in a shell with job control: the live view gives the terminal
 * back as it found it (main screen, cursor shown), and after fg takes it
 * again: q quits at once, without Enter. */
Test(stats, live_view_suspends_and_resumes_with_its_terminal, .timeout = 60,
     .fini = tmux_gone)
{
	struct pane_is main_screen = { "#{alternate_on}#{cursor_flag}", "01" };
	struct pane_is alt_screen = { "#{alternate_on}", "1" };
	struct pane_is back_in_bash = { "#{pane_current_command}", "bash" };
	char cmd[1200], bin[512];

	bash_in_tmux();
	snprintf(cmd, sizeof(cmd), "%s %s", h_bin("tools/poolstat", bin, sizeof(bin)), br.dir);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", cmd, "Enter"), 0);
	cr_assert(h_until(screen_shows_pool, NULL, 10000), "the live view never showed:\n%s", out);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "C-z", NULL), 0);
	cr_assert(h_until(pane_is, &main_screen, 5000),
		  "suspended, it kept the alternate screen or the hidden cursor: %s", out);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "fg", "Enter"), 0);
	cr_assert(h_until(pane_is, &alt_screen, 5000), "fg did not bring the live view back");
	cr_assert(h_until(screen_shows_pool, NULL, 5000), "no frame after fg:\n%s", out);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "q", NULL), 0);
	cr_assert(h_until(pane_is, &back_in_bash, 5000), "q did not quit after fg: %s", out);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int screen_shows_marker(void *arg)
{
	return tmux("capture-pane", "-p", "-t", "pgbtest", NULL) == 0 && strstr(out, arg);
}

/* A resize redraws the live view from a clean screen, and leaves the
 * shell's screen as it was once q quits. */
Test(stats, live_view_resized_then_quit_keeps_the_shell_screen, .timeout = 60,
     .fini = tmux_gone)
{
	struct pane_is back_in_bash = { "#{pane_current_command}", "bash" };
	char cmd[1200], bin[512];

	bash_in_tmux();
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "echo SHELL-SAID-THIS", "Enter"), 0);
	cr_assert(h_until(screen_shows_marker, "\nSHELL-SAID-THIS", 5000), "%s", out);
	snprintf(cmd, sizeof(cmd), "%s %s", h_bin("tools/poolstat", bin, sizeof(bin)), br.dir);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", cmd, "Enter"), 0);
	cr_assert(h_until(screen_shows_pool, NULL, 10000), "the live view never showed:\n%s", out);
	cr_assert_eq(tmux("resize-window", "-t", "pgbtest", "-x", "100"), 0);
	cr_assert(h_until(screen_shows_pool, NULL, 5000), "no frame after the resize:\n%s", out);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "q", NULL), 0);
	cr_assert(h_until(pane_is, &back_in_bash, 5000), "q did not quit: %s", out);
	cr_assert(h_until(screen_shows_marker, "\nSHELL-SAID-THIS", 5000),
		  "the shell's screen was wiped:\n%s", out);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The pane as the live view drew it: how many lines hold text, and how
 * many of them are backend/agent rows ("  3 idle  4711 ..."). */
struct pane_fill {
	int want_lines;
	int lines, rows;
};

static int pane_filled(void *arg)
{
	struct pane_fill *f = arg;
	char *save, *l;

	if (tmux("capture-pane", "-p", "-t", "pgbtest", NULL) != 0)
		return 0;
	f->lines = f->rows = 0;
	for (l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		unsigned slot;
		char state[16];
		int pid;

		if (l[strspn(l, " ")] == '\0')
			continue;
		f->lines++;
		if (sscanf(l, "%u %15s %d", &slot, state, &pid) == 3)
			f->rows++;
	}
	return f->lines == f->want_lines && f->rows > 0;
}

/* With more backends and agents than the screen holds, the live view
 * fills the terminal: the table takes every line the fixed part leaves,
 * at 80x24 and at 60x15 alike. */
Test(stats, live_view_fills_the_terminal_with_rows, .timeout = 60, .fini = tmux_gone)
{
	const char *version[] = { "/usr/bin/env", "tmux", "-V", NULL };
	struct pane_fill big = { .want_lines = 24 }, small = { .want_lines = 15 };
	char cmd[1200], bin[512];
	pgb_conn *agents[30];

	if (h_run(version, out, sizeof(out)) != 0)
		cr_skip_test("tmux is not installed");
	h_broker_start(&br, (const char *const[]){ "--health-interval-ms", "200",
						   "--min-pool-size", "20", NULL });
	for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++)
		agents[i] = h_connect(&br);
	snprintf(tmux_sock, sizeof(tmux_sock), "pgbtest%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "exec %s %s", h_bin("tools/poolstat", bin, sizeof(bin)), br.dir);
	{
		const char *argv[] = { "/usr/bin/env", "tmux", "-L", tmux_sock, "new-session", "-d",
				       "-s", "pgbtest", "-x", "80", "-y", "24", cmd, NULL };

		cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "tmux: %s", out);
	}
	cr_assert(h_until(pane_filled, &big, 10000),
		  "80x24: %d of 24 lines drawn, %d rows:\n%s", big.lines, big.rows, out);
	{
		const char *argv[] = { "/usr/bin/env", "tmux", "-L", tmux_sock, "resize-window",
				       "-t", "pgbtest", "-x", "60", "-y", "15", NULL };

		cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "tmux resize-window: %s", out);
	}
	cr_assert(h_until(pane_filled, &small, 10000),
		  "60x15: %d of 15 lines drawn, %d rows:\n%s", small.lines, small.rows, out);
	cr_assert_eq(tmux("send-keys", "-t", "pgbtest", "q", NULL), 0);
	cr_assert(h_until(session_gone, NULL, 5000), "q did not quit the live view");
	for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++)
		pgb_finish(agents[i]);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- PostgreSQL stops: unhealthy, breaker open (needs the breaker's
 * counters in the segment: enable once breaker_failures/breaker_opened are
 * filled in by the broker). ------------------------------------------------ */

/* After the test, pass or fail: PostgreSQL runs again for the next one. */
static void pg_running(void)
{
	char bin[512], buf[2048];
	const char *dir = getenv("PGB_TEST_PGDIR");
	const char *status[] = { "/bin/sh", h_bin("tools/pgtmp.sh", bin, sizeof(bin)), "status",
				 dir, NULL };
	const char *start[] = { "/bin/sh", bin, "start", dir, NULL };

	if (dir && h_run(status, buf, sizeof(buf)) != 0)
		h_run(start, buf, sizeof(buf));
}

static int breaker_open_and_unhealthy(void *arg)
{
	pgb_conn *c = arg;
	struct jdoc *d;
	int rc;

	pgb_clear(pgb_exec(c, "select 1"));
	d = json_now(&rc);
	/* The reasons come from the next health sample after the breaker
	 * opened: wait for that sample, not only for the state. */
	return rc == 2 && strcmp(jstr(d, "breaker.state"), "open") == 0 &&
	       strcmp(jstr(d, "health.status"), "unhealthy") == 0 &&
	       strstr(jstr(d, "health.reasons[0]"), "circuit breaker") != NULL;
}

static int healthy_again(void *arg)
{
	pgb_conn *c = arg;

	pgb_clear(pgb_exec(c, "select 1"));
	return poolstat("--once", br.dir) == 0;
}

Test(stats, stopped_postgresql_is_unhealthy_with_the_breaker_open, .timeout = 120,
     .fini = pg_running)
{
	const char *args[] = { "--min-pool-size", "2", "--breaker-threshold", "2",
			       "--breaker-reset-timeout-ms", "500", "--retry-delay-ms", "20",
			       "--retry-max-delay-ms", "200", "--acquire-timeout-ms", "1000",
			       "--health-interval-ms", "100", NULL };
	struct jdoc *d;
	pgb_conn *c;

	h_broker_start(&br, args);
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 1"), 1);
	h_pgtmp("pause");
	cr_assert(h_until(breaker_open_and_unhealthy, c, 20000), "%s", out);
	d = json_now(NULL);
	cr_assert_geq(jnum(d, "breaker.times_opened"), 1);
	cr_assert_geq(jnum(d, "breaker.consecutive_failures"), 2);
	cr_assert_str_neq(jstr(d, "breaker.last_change"), "");
	cr_assert(strstr(jstr(d, "health.reasons[0]"), "circuit breaker"), "%s", out);
	cr_assert(strstr(jstr(d, "health.recommendations[0]"), "PostgreSQL"), "%s", out);
	h_pgtmp("start");
	cr_assert(h_until(healthy_again, c, 30000), "not healthy after PostgreSQL came back: %s",
		  out);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A batch is one statement in the counters, and one failure when it fails. */
Test(stats, failed_batch_counts_once, .timeout = 60)
{
	struct want_counts want = { .total = 1, .failed = 1 };
	struct pgb_stmt bad[] = { { .sql = "select 1" }, { .sql = "select 1/0" } };
	pgb_result *res[2];
	pgb_conn *c;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	cr_assert_eq(pgb_batch(c, bad, 2, res), -1);
	cr_assert_str_eq(pgb_sqlstate(res[1]), "22012");
	for (int i = 0; i < 2; i++)
		pgb_clear(res[i]);
	cr_assert(h_until(counters_are, &want, 3000), "counters never matched: %s", out);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* Every statement waits for a backend once: also the one that starts a
 * pipeline (many agents on few cores), and the ones that join it. */
Test(stats, each_statement_counts_one_acquire, .timeout = 90)
{
	enum { N = 8, OK = 60 };
	struct work w = { .ok = OK, .hold_fd = -1, .ready_fd = -1 };
	struct want_counts want = { .total = N * OK, .failed = 0 };
	pid_t pids[N];
	struct jdoc *d;

	h_broker_start(&br, NULL);
	for (int i = 0; i < N; i++)
		pids[i] = h_fork(agent_work, &w);
	wait_all(pids, N, 60000);
	cr_assert(h_until(counters_are, &want, 5000), "counters never matched: %s", out);
	d = json_now(NULL);
	cr_assert_eq(jnum(d, "acquire_ms.count"), N * OK, "%g acquires for %d statements",
		     jnum(d, "acquire_ms.count"), N * OK);
	cr_assert_eq(jnum(d, "latency_ms.count"), N * OK);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* A segment of this layout with one backend and one agent row, written
 * by hand to DIR/pgbroker.stats as if by a broker of pid `pid`. */
static void write_seg(const char *dir, pid_t pid, uint32_t seq, uint32_t hseq)
{
	uint64_t be_off = (sizeof(struct stats_seg) + 7) & ~7ull;
	size_t len = be_off + sizeof(struct stats_backend) + sizeof(struct stats_agent);
	struct stats_seg *seg = calloc(1, len);
	char path[512];
	int fd;

	cr_assert_not_null(seg);
	*seg = (struct stats_seg){
		.magic = STATS_MAGIC, .version = STATS_VERSION, .size = len,
		.data_size = sizeof(struct stats_data), .health_size = sizeof(struct stats_health),
		.backend_size = sizeof(struct stats_backend), .agent_size = sizeof(struct stats_agent),
		.max_backends = 1, .max_agents = 1,
		.backends_off = be_off, .agents_off = be_off + sizeof(struct stats_backend),
		.seq = seq, .hseq = hseq,
	};
	seg->d.broker_pid = pid;
	seg->d.started_ms = seg->d.updated_ms = (int64_t)time(NULL) * 1000;
	seg->heartbeat_ms = seg->h.sample_ms = seg->d.updated_ms;
	seg->pid_ns = stats_pid_ns();
	seg->d.pool.max = 10;
	snprintf(path, sizeof(path), "%s/%s", dir, STATS_FILE);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, seg, len), (ssize_t)len);
	close(fd);
	free(seg);
}

static void remove_seg(const char *dir)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, STATS_FILE);
	unlink(path);
	rmdir(dir);
}

/* A broker killed in the middle of publishing leaves a seqlock odd for
 * good: readers call that a stale segment at once, not a busy one. */
Test(stats, a_segment_left_mid_write_reads_as_no_broker, .timeout = 60)
{
	static const char *const modes[] = { "--once", "--json", "--prometheus" };
	char dir[] = "/tmp/pgb-stats-test.XXXXXX";
	struct pgb_health ph;
	pid_t dead = fork();

	cr_assert_geq(dead, 0);
	if (dead == 0)
		_exit(0);
	cr_assert_eq(waitpid(dead, NULL, 0), dead);
	cr_assert_not_null(mkdtemp(dir));
	write_seg(dir, dead, 2, 5);   /* killed while writing the health block */
	for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
		int st = poolstat(modes[k], dir);

		cr_assert_eq(st, 3, "%s: exit %d: %s", modes[k], st, out);
		cr_assert(strstr(out, "stale stats segment left by pid"), "%s: %s", modes[k], out);
	}
	cr_assert(strstr(out, "pgbroker_up 0"), "%s", out);
	cr_assert_eq(pgb_pool_health(dir, &ph), -1);
	cr_assert_eq(ph.status, PGB_NO_BROKER);
	cr_assert(strstr(ph.error, "stale"), "%s", ph.error);
	remove_seg(dir);
}

/* Is s well-formed UTF-8 (no overlong forms, surrogates or bytes past
 * U+10FFFF)? 0, or the offset of the first bad byte plus one. */
static size_t bad_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *start = p;

	while (*p) {
		unsigned c = *p, n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 :
				     (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
		uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1F : n == 2 ? c & 0x0F : c & 0x07;

		if (n == 9)
			return (size_t)(p - start) + 1;
		for (unsigned i = 1; i <= n; i++) {
			if ((p[i] & 0xC0) != 0x80)
				return (size_t)(p - start) + 1;
			cp = cp << 6 | (p[i] & 0x3F);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
			return (size_t)(p - start) + 1;
		p += n + 1;
	}
	return 0;
}

/* JSON is UTF-8: a run directory named in Latin-1 (a byte that is not
 * UTF-8) must not make the document invalid. */
Test(stats, json_of_a_directory_that_is_not_utf8_is_valid_json, .timeout = 60)
{
	char dir[] = "/tmp/pgb-stats-caf\xe9-\xc3(-XXXXXX";
	char dir2[] = "/tmp/pgb-stats-caf\xc3\xa9-XXXXXX";
	struct jdoc *d;
	size_t bad;
	int st;

	cr_assert_not_null(mkdtemp(dir));
	write_seg(dir, getpid(), 2, 2);   /* "published" by us: alive and fresh */
	st = poolstat("--json", dir);
	cr_assert_eq(st, 0, "exit %d: %s", st, out);
	bad = bad_utf8(out);
	cr_assert_eq(bad, 0, "byte %zu of the JSON is not UTF-8: %s", bad - 1, out);
	d = j_parse(out);
	cr_assert_null(d->err, "%s: %s", d->err, out);
	cr_assert_not_null(strstr(jstr(d, "dir"), "/tmp/pgb-stats-caf"));
	remove_seg(dir);
	/* well-formed UTF-8 passes through as it is */
	cr_assert_not_null(mkdtemp(dir2));
	write_seg(dir2, getpid(), 2, 2);
	cr_assert_eq(poolstat("--json", dir2), 0, "%s", out);
	cr_assert_not_null(strstr(out, "caf\xc3\xa9-"), "%s", out);
	remove_seg(dir2);
}
