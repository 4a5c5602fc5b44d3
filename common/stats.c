/* The stats segment's pure side: percentiles, the checked read-only mapping,
 * the seqlock reader, and health classification (the thresholds live here,
 * in health_limits_default, and nowhere else). */
#include "stats.h"
#include "rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t stats_bucket_high(unsigned i)
{
	unsigned e;

	if (i < STATS_SUB)
		return i + 1;
	if (i >= STATS_BUCKETS - 1)
		return UINT64_MAX;
	e = i / 4 + 1;
	return (uint64_t)(4 + i % 4 + 1) << (e - 2);
}

uint64_t stats_hist_pct(const struct stats_hist *h, double p)
{
	uint64_t want, seen = 0;

	if (!h->count)
		return 0;
	if (p <= 0)
		p = 0;
	want = (uint64_t)(p * (double)h->count);
	if ((double)want < p * (double)h->count)
		want++;   /* ceil, without libm */
	if (want == 0)
		want = 1;
	if (want >= h->count)
		return h->max_us;
	for (unsigned i = 0; i < STATS_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= want) {
			uint64_t edge = stats_bucket_high(i);

			return edge < h->max_us ? edge : h->max_us;
		}
	}
	return h->max_us;
}

double stats_hist_avg(const struct stats_hist *h)
{
	return h->count ? (double)h->sum_us / (double)h->count : 0;
}

void stats_hist_delta(const struct stats_hist *now, const struct stats_hist *before,
		      struct stats_hist *out)
{
	out->count = now->count - before->count;
	out->sum_us = now->sum_us - before->sum_us;
	out->max_us = 0;
	for (unsigned i = 0; i < STATS_BUCKETS; i++) {
		out->bucket[i] = now->bucket[i] - before->bucket[i];
		/* now's max may be older than before: the interval's own is
		 * at most the top of its highest bucket */
		if (out->bucket[i])
			out->max_us = stats_bucket_high(i) - 1;
	}
	if (out->max_us > now->max_us)
		out->max_us = now->max_us;
}

int stats_check(const void *p, size_t len, char *err, size_t errlen)
{
	const struct stats_seg *s = p;
	uint64_t end;

	if (len < offsetof(struct stats_seg, seq) || s->magic != STATS_MAGIC) {
		snprintf(err, errlen, "not a pgbroker stats segment");
		return -EPROTO;
	}
	if (s->version != STATS_VERSION) {
		snprintf(err, errlen, "stats segment of layout version %u; this reader understands "
			 "version %u only (use the poolstat and libpgbroker of the running broker's "
			 "release)", s->version, STATS_VERSION);
		return -EPROTO;
	}
	if (s->size != len || len < sizeof(*s)) {
		snprintf(err, errlen, "stats segment says it has %llu bytes but has %zu",
			 (unsigned long long)s->size, len);
		return -EPROTO;
	}
	if (s->data_size != sizeof(struct stats_data) ||
	    s->health_size != sizeof(struct stats_health) ||
	    s->backend_size != sizeof(struct stats_backend) ||
	    s->agent_size != sizeof(struct stats_agent)) {
		snprintf(err, errlen, "stats segment of version %u but with another layout "
			 "(built from different sources?)", s->version);
		return -EPROTO;
	}
	/* Offsets within the file first: then no sum below can wrap around. */
	end = s->backends_off + (uint64_t)s->max_backends * sizeof(struct stats_backend);
	if (s->backends_off > len || s->agents_off > len ||
	    s->backends_off < sizeof(*s) || s->backends_off % 8 || end > len ||
	    s->agents_off < end || s->agents_off % 8 ||
	    s->agents_off + (uint64_t)s->max_agents * sizeof(struct stats_agent) > len) {
		snprintf(err, errlen, "stats segment with its arrays out of bounds");
		return -EPROTO;
	}
	return 0;
}

int stats_map_open(const char *dir, struct stats_map *m, char *err, size_t errlen)
{
	struct stat st;
	void *map;
	int fd, rc;

	memset(m, 0, sizeof(*m));
	snprintf(m->path, sizeof(m->path), "%s/%s", dir, STATS_FILE);
	/* O_NONBLOCK: a FIFO there must not wait for a writer (fstat refuses it).
	 * Never through a symbolic link: the segment is the broker's own file. */
	fd = open(m->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ELOOP)
			snprintf(err, errlen, "%s is a symbolic link, not a broker's stats segment",
				 m->path);
		else if (rc == -ENOENT || rc == -ENOTDIR)
			snprintf(err, errlen, "no broker at %s (%s: %s)", dir, m->path, strerror(-rc));
		else
			snprintf(err, errlen, "cannot read %s: %s%s", m->path, strerror(-rc),
				 rc == -EACCES ? " (it is readable by the broker's user and group)" : "");
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		snprintf(err, errlen, "cannot read %s: %s", m->path, strerror(-rc));
		return rc;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size < offsetof(struct stats_seg, seq)) {
		close(fd);
		snprintf(err, errlen, "%s is not a pgbroker stats segment", m->path);
		return -EPROTO;
	}
	/* Written by a broker we trust, as pgb_connect checks the socket. */
	{
		char what[600];

		snprintf(what, sizeof(what), "the stats segment %s (its owner)", m->path);
		if (rundir_check_peer(st.st_uid, NULL, dir, what, err, errlen) < 0) {
			close(fd);
			return -EPERM;
		}
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	rc = -errno;
	close(fd);
	if (map == MAP_FAILED) {
		snprintf(err, errlen, "cannot map %s: %s", m->path, strerror(-rc));
		return rc;
	}
	rc = stats_check(map, (size_t)st.st_size, err, errlen);
	if (rc < 0) {
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: %s", m->path, why);
		munmap(map, (size_t)st.st_size);
		return rc;
	}
	m->seg = map;
	m->len = (size_t)st.st_size;
	return 0;
}

void stats_map_close(struct stats_map *m)
{
	if (m->seg)
		munmap((void *)m->seg, m->len);
	m->seg = NULL;
}

/* Rows that fit both the caller's buffer and the mapping, whatever the
 * (possibly torn) count says. */
static uint32_t rows_fit(uint32_t n, uint32_t cap, uint32_t max, uint64_t off, size_t row,
			 size_t len)
{
	if (n > cap)
		n = cap;
	if (n > max)
		n = max;
	if (off > len)
		return 0;
	if ((uint64_t)n * row > len - off)
		n = (uint32_t)((len - off) / row);
	return n;
}

#define READ_TRIES 100000

/* Wait until seq is even; its value, or 1 (odd) when it never was. */
static uint32_t seq_enter(const uint32_t *seq)
{
	for (int tries = 0; tries < READ_TRIES; tries++) {
		uint32_t a = __atomic_load_n(seq, __ATOMIC_ACQUIRE);

		if (!(a & 1))
			return a;
		if (!(tries & 15))
			sched_yield();
	}
	return 1;
}

/* Did the copies made since seq_enter returned a see no writer? */
static int seq_valid(const uint32_t *seq, uint32_t a)
{
	/* The copies must complete before seq is read again. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return __atomic_load_n(seq, __ATOMIC_RELAXED) == a;
}

/* A seqlock that stayed odd: -ESRCH when its writer is gone (killed in the
 * middle of a write, it never becomes even again), else -EAGAIN. The pid
 * is the same in every publication, so it reads whole even mid-write. */
static int seq_stuck(const struct stats_seg *s, struct stats_snap *out)
{
	int32_t pid = __atomic_load_n(&s->d.broker_pid, __ATOMIC_RELAXED);

	if (pid > 0 && kill(pid, 0) < 0 && errno == ESRCH) {
		out->d.broker_pid = pid;
		return -ESRCH;
	}
	return -EAGAIN;
}

/* Length of the UTF-8 sequence at p (at most n bytes) when it is valid
 * and not a C1 control (U+0080..U+009F), else 0. */
static size_t utf8_ok(const unsigned char *p, size_t n)
{
	size_t len = p[0] >= 0xC2 && p[0] <= 0xDF ? 2 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3 :
		     p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;

	if (!len || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	if ((p[0] == 0xC2 && p[1] < 0xA0) || (p[0] == 0xE0 && p[1] < 0xA0) ||
	    (p[0] == 0xED && p[1] > 0x9F) || (p[0] == 0xF0 && p[1] < 0x90) ||
	    (p[0] == 0xF4 && p[1] > 0x8F))
		return 0;
	return len;
}

void stats_clean_text(char *s, size_t n)
{
	unsigned char *p = (unsigned char *)s;
	size_t r = 0, w = 0, len;

	if (!n)
		return;
	p[n - 1] = '\0';
	while (p[r]) {
		if (p[r] >= 0x20 && p[r] < 0x7F) {
			p[w++] = p[r++];
		} else if (p[r] >= 0x80 && (len = utf8_ok(p + r, n - 1 - r))) {
			memmove(p + w, p + r, len);
			w += len;
			r += len;
		} else {
			p[w++] = '?';
			r++;
		}
	}
	p[w] = '\0';
}

int stats_read(const struct stats_seg *s, struct stats_snap *out)
{
	const char *base = (const char *)s;
	int tries;

	/* Plain copies below: they may be torn, the second load of seq tells. */
	for (tries = 0; tries < READ_TRIES; tries++) {
		uint32_t a = seq_enter(&s->seq);

		if (a & 1)
			return seq_stuck(s, out);
		memcpy(&out->d, (const void *)&s->d, sizeof(out->d));
		if (seq_valid(&s->seq, a))
			break;
		if (!(tries & 15))
			sched_yield();
	}
	if (tries == READ_TRIES)
		return -EAGAIN;
	out->heartbeat_ms = __atomic_load_n(&s->heartbeat_ms, __ATOMIC_ACQUIRE);
	out->pid_ns = s->pid_ns;
	stats_clean_text(out->d.connect_code, sizeof(out->d.connect_code));
	stats_clean_text(out->d.connect_error, sizeof(out->d.connect_error));
	for (tries = 0; tries < READ_TRIES; tries++) {
		uint32_t a = seq_enter(&s->hseq), nb, na;

		if (a & 1)
			return seq_stuck(s, out);
		memcpy(&out->h, (const void *)&s->h, sizeof(out->h));
		nb = rows_fit(out->h.nbackends, out->backends ? out->cap_backends : 0,
			      s->max_backends, s->backends_off, sizeof(struct stats_backend), s->size);
		na = rows_fit(out->h.nagents, out->agents ? out->cap_agents : 0, s->max_agents,
			      s->agents_off, sizeof(struct stats_agent), s->size);
		if (nb)
			memcpy(out->backends, base + s->backends_off, nb * sizeof(struct stats_backend));
		if (na)
			memcpy(out->agents, base + s->agents_off, na * sizeof(struct stats_agent));
		if (seq_valid(&s->hseq, a)) {
			out->nbackends = nb;
			out->nagents = na;
			if (out->h.nreasons > STATS_REASONS)
				out->h.nreasons = STATS_REASONS;
			for (unsigned i = 0; i < STATS_REASONS; i++) {
				stats_clean_text(out->h.reasons[i].text, STATS_TEXT);
				stats_clean_text(out->h.reasons[i].advice, STATS_TEXT);
			}
			return 0;
		}
		if (!(tries & 15))
			sched_yield();
	}
	return -EAGAIN;
}

static const char misconfigured_advice[] =
	"fix the DSN, the role, its password, the database or pg_hba.conf, then reload; "
	"statements fail fast with PB010 and this message meanwhile";
static const char breaker_advice[] =
	"PostgreSQL is unreachable: check that it runs and accepts connections (the broker "
	"log has libpq's reason); statements fail fast with PB002 meanwhile";

/* The breaker's misconfigured state as a health reason, with what the
 * server said: by the broker's sample and by a reader between samples. */
static void misconfigured_reason(const struct stats_data *d, struct stats_health *h)
{
	char text[STATS_TEXT];

	snprintf(text, sizeof(text), "misconfigured: PostgreSQL refuses the broker's "
		 "connections%s%s: %.112s", *d->connect_code ? ", SQLSTATE " : "",
		 d->connect_code, d->connect_error);
	health_add_reason(h, HEALTH_R_MISCONFIGURED, HEALTH_UNHEALTHY, text,
			  misconfigured_advice);
}

uint64_t stats_pid_ns(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int stats_alive(const struct stats_snap *s, int64_t now_ms, char *why, size_t n)
{
	int64_t age = now_ms - s->heartbeat_ms;
	int32_t pid = s->d.broker_pid;

	if (age > STATS_STALE_MS) {
		snprintf(why, n, "its heartbeat is %lld.%llu s old", (long long)(age / 1000),
			 (unsigned long long)(age % 1000 / 100));
		return -ESRCH;
	}
	if (pid > 0 && s->pid_ns && s->pid_ns == stats_pid_ns() && kill(pid, 0) < 0 &&
	    errno == ESRCH) {
		snprintf(why, n, "it is not running");
		return -ESRCH;
	}
	return 0;
}

int stats_verdict(struct stats_snap *s, const char *dir, int64_t now_ms, char *err,
		  size_t errlen)
{
	char why[64], text[STATS_TEXT];

	if (stats_alive(s, now_ms, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "no broker at %s: stale stats segment left by pid %d (%s)",
			 dir, (int)s->d.broker_pid, why);
		return -ESRCH;
	}
	if (s->h.status > HEALTH_UNHEALTHY)
		s->h.status = HEALTH_UNHEALTHY;
	if (s->d.breaker_state == 3 && s->h.status != HEALTH_UNHEALTHY) {
		misconfigured_reason(&s->d, &s->h);
	} else if ((s->d.breaker_state == 1 || s->d.breaker_state == 2) &&
		   s->h.status != HEALTH_UNHEALTHY) {
		snprintf(text, sizeof(text), "circuit breaker %s after %u consecutive connection "
			 "failures", stats_breaker_name(s->d.breaker_state), s->d.breaker_failures);
		health_add_reason(&s->h, HEALTH_R_BREAKER, HEALTH_UNHEALTHY, text,
				  breaker_advice);
	} else if (!s->h.sample_ms && s->h.status == HEALTH_HEALTHY) {
		health_add_reason(&s->h, HEALTH_R_STARTING, HEALTH_DEGRADED,
				  "no health sample yet: the broker has just started",
				  "ask again after health_interval_ms (default 1 s)");
		s->h.status = HEALTH_STARTING;
	}
	return (int)s->h.status;
}

void health_limits_default(struct health_limits *lim)
{
	/* The replaced pool's thresholds. */
	*lim = (struct health_limits){
		.util_warn_pct = 75,
		.util_crit_pct = 90,
		.waiting_warn = 5,
		.waiting_crit = 10,
		.success_warn_pct = 99,
		.success_crit_pct = 95,
		.acquire_warn_ms = 100,
		.acquire_crit_ms = 500,
		/* It checked every 30 s: rates and averages cover that much. */
		.window_ms = 30000,
		/* A single failed statement out of three is no outage. */
		.min_statements = 20,
		.trend_flat_pct = 5,
	};
}

const char *health_status_name(uint32_t status)
{
	switch (status) {
	case HEALTH_HEALTHY: return "healthy";
	case HEALTH_DEGRADED: return "degraded";
	case HEALTH_UNHEALTHY: return "unhealthy";
	case HEALTH_STARTING: return "starting";
	default: return "unknown";
	}
}

const char *stats_breaker_name(uint32_t state)
{
	switch (state) {
	case 0: return "closed";
	case 1: return "open";
	case 2: return "half-open";
	case 3: return "misconfigured";
	default: return "unknown";
	}
}

const char *stats_backend_state_name(uint32_t state)
{
	switch (state) {
	case STATS_BE_CONNECTING: return "connecting";
	case STATS_BE_IDLE: return "idle";
	case STATS_BE_BUSY: return "active";
	case STATS_BE_PINNED: return "pinned";
	case STATS_BE_RESET: return "cleaning";
	default: return "free";
	}
}

const char *stats_agent_state_name(uint32_t state)
{
	switch (state) {
	case STATS_AG_IDLE: return "idle";
	case STATS_AG_WAITING: return "waiting";
	case STATS_AG_RUNNING: return "running";
	case STATS_AG_IN_TXN: return "in-transaction";
	default: return "unknown";
	}
}

void health_push(struct stats_health *h, const struct stats_sample *s)
{
	if (h->next >= STATS_HISTORY)
		h->next = 0;
	h->hist[h->next] = *s;
	h->next = (h->next + 1) % STATS_HISTORY;
	if (h->nsamples < STATS_HISTORY)
		h->nsamples++;
	h->sample_ms = s->t_ms;
	h->interval_ms = s->interval_ms;
}

const struct stats_sample *health_sample_at(const struct stats_health *h, uint32_t back)
{
	uint32_t n = h->nsamples < STATS_HISTORY ? h->nsamples : STATS_HISTORY;

	if (back >= n || h->next >= STATS_HISTORY)
		return NULL;
	return &h->hist[(h->next + STATS_HISTORY - 1 - back) % STATS_HISTORY];
}

void health_add_reason(struct stats_health *h, uint32_t code, uint32_t level,
		       const char *text, const char *advice)
{
	struct stats_reason *r;

	if (h->nreasons >= STATS_REASONS)
		return;
	r = &h->reasons[h->nreasons++];
	r->code = code;
	r->level = level;
	snprintf(r->text, sizeof(r->text), "%s", text);
	snprintf(r->advice, sizeof(r->advice), "%s", advice);
	if (level > h->status)
		h->status = level;
}

const struct stats_reason *health_main_reason(const struct stats_health *h)
{
	for (uint32_t i = 0; i < h->nreasons && i < STATS_REASONS; i++)
		if (h->reasons[i].level == h->status)
			return &h->reasons[i];
	return NULL;
}

enum { RUN_UTIL, RUN_WAITING };

/* How long the newest samples in a row have been over thr. */
static uint64_t run_ms(const struct stats_health *h, int what, double thr)
{
	const struct stats_sample *s;
	uint64_t ms = 0;

	for (uint32_t i = 0; (s = health_sample_at(h, i)); i++) {
		double v = what == RUN_UTIL ? s->utilization : (double)s->waiting;

		if (!(v > thr))
			break;
		ms += s->interval_ms;
	}
	return ms;
}

static const char *dur(uint64_t ms, char *buf, size_t n)
{
	if (ms < 10000)
		snprintf(buf, n, "%.1f s", (double)ms / 1000.0);
	else if (ms < 120000)
		snprintf(buf, n, "%llu s", (unsigned long long)((ms + 500) / 1000));
	else if (ms < 2 * 3600000)
		snprintf(buf, n, "%llu min", (unsigned long long)((ms + 30000) / 60000));
	else
		snprintf(buf, n, "%llu h", (unsigned long long)((ms + 1800000) / 3600000));
	return buf;
}

static const char rule_of_thumb[] =
	"the server is the limit: shorten transactions; more than about twice "
	"the server's CPU cores of busy connections does not help";

/* Least-squares slope of utilization over the history, points per minute. */
static double util_slope(const struct stats_health *h, double *span_min)
{
	const struct stats_sample *s, *oldest = NULL;
	double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, den;

	for (uint32_t i = 0; (s = health_sample_at(h, i)); i++)
		oldest = s;
	*span_min = 0;
	if (!oldest)
		return 0;
	for (uint32_t i = 0; (s = health_sample_at(h, i)); i++) {
		double x = (double)(s->t_ms - oldest->t_ms) / 60000.0;

		n++;
		sx += x;
		sy += s->utilization;
		sxx += x * x;
		sxy += x * s->utilization;
		if (x > *span_min)
			*span_min = x;
	}
	den = n * sxx - sx * sx;
	if (n < 3 || den <= 0)
		return 0;
	return (n * sxy - sx * sy) / den;
}

/* What the window of samples adds up to (health_classify). */
struct health_window {
	uint64_t st, failed, acq, span;
	int64_t room;             /* the server's room for the pool; -1 not known */
	int limited;              /* max_pool_size does not fit that room */
};

/* Rates and averages over the window, newest samples first. */
static void window_sum(const struct stats_data *d, struct stats_health *h,
		       const struct health_limits *lim, struct health_window *w)
{
	const struct stats_sample *s;
	uint64_t acq_us = 0;

	*w = (struct health_window){ .room = -1 };
	for (uint32_t i = 0; (s = health_sample_at(h, i)) && w->span < lim->window_ms; i++) {
		w->st += s->statements;
		w->failed += s->failed;
		w->acq += s->acquires;
		acq_us += s->acquire_sum_us;
		w->span += s->interval_ms;
	}
	h->window_ms = (uint32_t)w->span;
	h->success_pct = w->st ? 100.0 * (double)(w->st - w->failed) / (double)w->st : 100.0;
	h->acquire_avg_ms = w->acq ? (double)acq_us / (double)w->acq / 1000.0 : 0;
	h->stmts_per_s = w->span ? (double)w->st * 1000.0 / (double)w->span : 0;
	if (d->server_max_connections) {
		w->room = (int64_t)d->server_max_connections - d->server_reserved_connections -
			  d->server_other_connections;
		w->limited = w->room < (int64_t)d->pool.max;
	}
}

/* No way to PostgreSQL: the breaker, or no backend connected at all. */
static void connect_reasons(const struct stats_data *d, struct stats_health *h)
{
	char text[STATS_TEXT];

	if (d->breaker_state == 3) {
		misconfigured_reason(d, h);
	} else if (d->breaker_state == 1 || d->breaker_state == 2) {
		snprintf(text, sizeof(text), "circuit breaker %s after %u failed connection attempts "
			 "(opened %llu times): %.84s", stats_breaker_name(d->breaker_state),
			 d->breaker_failures, (unsigned long long)d->breaker_opened,
			 d->connect_error);
		health_add_reason(h, HEALTH_R_BREAKER, HEALTH_UNHEALTHY, text,
				  breaker_advice);
	} else if (d->pool.total == d->pool.connecting && d->connect_fails > 0) {
		snprintf(text, sizeof(text), "no backend connected: the last %u connection "
			 "attempts failed: %.120s", d->connect_fails, d->connect_error);
		health_add_reason(h, HEALTH_R_UNREACHABLE, HEALTH_UNHEALTHY, text,
				  "check that PostgreSQL runs and that the DSN, the user and "
				  "pg_hba.conf let the broker in (the broker log has libpq's reason)");
	}
}

/* The newest sample: too many backends busy, too many agents waiting. */
static void load_reasons(struct stats_health *h, const struct health_limits *lim,
			 const struct stats_sample *now, int limited)
{
	char text[STATS_TEXT], advice[STATS_TEXT], t1[32];
	uint32_t level = now->utilization > lim->util_crit_pct ? HEALTH_UNHEALTHY :
			 now->utilization > lim->util_warn_pct ? HEALTH_DEGRADED : 0;

	if (level) {
		snprintf(text, sizeof(text), "utilization %.0f%% above %.0f%% (%u of "
			 "max_pool_size %u busy) for %s", now->utilization,
			 level == HEALTH_UNHEALTHY ? lim->util_crit_pct : lim->util_warn_pct,
			 now->busy, now->max,
			 dur(run_ms(h, RUN_UTIL, lim->util_warn_pct), t1, sizeof(t1)));
		if (limited)
			snprintf(advice, sizeof(advice), "%s", rule_of_thumb);
		else
			snprintf(advice, sizeof(advice), "raise max_pool_size (now %u) or "
				 "shorten transactions: agents queue once every backend "
				 "is busy", now->max);
		health_add_reason(h, HEALTH_R_UTILIZATION, level, text, advice);
	}
	level = now->waiting > lim->waiting_crit ? HEALTH_UNHEALTHY :
		now->waiting > lim->waiting_warn ? HEALTH_DEGRADED : 0;
	if (level) {
		snprintf(text, sizeof(text), "%u agents waiting for a backend (above %u) "
			 "for %s", now->waiting,
			 level == HEALTH_UNHEALTHY ? lim->waiting_crit : lim->waiting_warn,
			 dur(run_ms(h, RUN_WAITING, lim->waiting_warn), t1, sizeof(t1)));
		if (limited)
			snprintf(advice, sizeof(advice), "%s", rule_of_thumb);
		else
			snprintf(advice, sizeof(advice), "raise max_pool_size (now %u) or "
				 "shorten transactions", now->max);
		health_add_reason(h, HEALTH_R_WAITING, level, text, advice);
	}
}

/* Over the window: the success rate, the average wait for a backend, and
 * whether max_pool_size fits the server at all. */
static void window_reasons(const struct stats_data *d, struct stats_health *h,
			   const struct health_limits *lim, const struct health_window *w)
{
	char text[STATS_TEXT], advice[STATS_TEXT], t1[32];
	long long room = w->room > 0 ? (long long)w->room : 0;

	if (w->st >= lim->min_statements && h->success_pct < lim->success_warn_pct) {
		uint32_t level = h->success_pct < lim->success_crit_pct ? HEALTH_UNHEALTHY :
				 HEALTH_DEGRADED;

		snprintf(text, sizeof(text), "success rate %.1f%% below %.0f%% over the last %s "
			 "(%llu of %llu statements failed)", h->success_pct,
			 level == HEALTH_UNHEALTHY ? lim->success_crit_pct : lim->success_warn_pct,
			 dur(w->span, t1, sizeof(t1)), (unsigned long long)w->failed,
			 (unsigned long long)w->st);
		health_add_reason(h, HEALTH_R_SUCCESS, level, text,
				  "look at the failing statements' SQLSTATEs: PB001 means too few "
				  "backends, 57014 statement_timeout_ms, 08xxx lost connections");
	}
	if (w->acq && h->acquire_avg_ms > lim->acquire_warn_ms) {
		uint32_t level = h->acquire_avg_ms > lim->acquire_crit_ms ? HEALTH_UNHEALTHY :
				 HEALTH_DEGRADED;

		snprintf(text, sizeof(text), "average wait for a backend %.0f ms above %.0f ms "
			 "over the last %s", h->acquire_avg_ms,
			 level == HEALTH_UNHEALTHY ? lim->acquire_crit_ms : lim->acquire_warn_ms,
			 dur(w->span, t1, sizeof(t1)));
		if (w->limited)
			snprintf(advice, sizeof(advice), "%s", rule_of_thumb);
		else
			snprintf(advice, sizeof(advice), "raise pool_size (now %u) and max_pool_size "
				 "(now %u), or shorten transactions", d->pool.size, d->pool.max);
		health_add_reason(h, HEALTH_R_ACQUIRE, level, text, advice);
	}
	if (w->limited) {
		snprintf(text, sizeof(text), "max_pool_size %u does not fit the server: "
			 "max_connections %u, %u reserved, %u held by others: room for %lld",
			 d->pool.max, d->server_max_connections, d->server_reserved_connections,
			 d->server_other_connections, room);
		snprintf(advice, sizeof(advice), "lower max_pool_size to %lld or raise "
			 "max_connections; about twice the server's CPU cores of busy "
			 "connections is the useful pool size", room);
		health_add_reason(h, HEALTH_R_CAPACITY, HEALTH_DEGRADED, text, advice);
	}
}

void health_classify(const struct stats_data *d, struct stats_health *h,
		     const struct health_limits *lim)
{
	const struct stats_sample *now = health_sample_at(h, 0);
	uint32_t before = h->status;
	struct health_window w;
	double span_min;

	h->status = HEALTH_HEALTHY;
	h->nreasons = 0;
	memset(h->reasons, 0, sizeof(h->reasons));
	window_sum(d, h, lim, &w);
	connect_reasons(d, h);
	if (now)
		load_reasons(h, lim, now, w.limited);
	window_reasons(d, h, lim, &w);

	h->trend_per_min = util_slope(h, &span_min);
	if (__builtin_fabs(h->trend_per_min * span_min) < lim->trend_flat_pct)
		h->trend = 0;
	else
		h->trend = h->trend_per_min > 0 ? 1 : -1;

	if (h->status != before || !h->status_since_ms)
		h->status_since_ms = now ? now->t_ms : d->updated_ms;
}
