/* poolstat: show a broker's pool from its stats segment, never talking to
 * the broker. A live top-like view, one plain snapshot (--once), JSON
 * (--json) or the Prometheus text format (--prometheus). The exit status
 * follows health: 0 healthy, 1 degraded, 2 unhealthy, 3 no broker, 4 starting. */
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "json.h"
#include "rundir.h"
#include "stats.h"
#include "version.h"

#define EXIT_NO_BROKER 3
#define MAX_LINES 128
#define LINE_MAX_BYTES 512

enum mode { MODE_LIVE, MODE_ONCE, MODE_JSON, MODE_PROM };

struct view {
	const char *dir;
	struct stats_snap s;
	int64_t now_ms;
	uint32_t status;          /* with the reader's own findings */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: poolstat [--once | --json | --prometheus] [DIR]\n"
		"       poolstat --help | --version\n"
		"  Show the pool of the pgbroker whose run directory is DIR\n"
		"  (default: $PGBROKER_DIR, else /run/pgbroker for root, $XDG_RUNTIME_DIR/pgbroker\n"
		"  or /tmp/pgbroker-UID for others), read from its stats segment.\n"
		"  (none)         live view, refreshed every second; q quits\n"
		"  --once         one plain-text snapshot\n"
		"  --json         one JSON document\n"
		"  --prometheus   Prometheus text exposition format\n"
		"  -h, --help     show this text\n"
		"  -V, --version  print the version\n"
		"exit status: 0 healthy, 1 degraded, 2 unhealthy, 3 no broker (or its heartbeat is\n"
		"  over 2 s old, or an unreadable or untrusted segment), 4 starting (no sample yet)\n");
}

/* Map, read and unmap: a broker that restarted has a new file. Returns 0,
 * or EXIT_NO_BROKER with err set. */
static int load(struct view *v, char *err, size_t errlen)
{
	struct stats_map m;
	int rc;

	rc = stats_map_open(v->dir, &m, err, errlen);
	if (rc < 0)
		return EXIT_NO_BROKER;
	if (!v->s.backends || v->s.cap_backends < m.seg->max_backends) {
		free(v->s.backends);
		v->s.cap_backends = m.seg->max_backends;
		v->s.backends = calloc(v->s.cap_backends ? v->s.cap_backends : 1,
				       sizeof(*v->s.backends));
	}
	if (!v->s.agents || v->s.cap_agents < m.seg->max_agents) {
		free(v->s.agents);
		v->s.cap_agents = m.seg->max_agents;
		v->s.agents = calloc(v->s.cap_agents ? v->s.cap_agents : 1, sizeof(*v->s.agents));
	}
	if (!v->s.backends || !v->s.agents) {
		stats_map_close(&m);
		snprintf(err, errlen, "out of memory");
		return EXIT_NO_BROKER;
	}
	rc = stats_read(m.seg, &v->s);
	stats_map_close(&m);
	if (rc == -ESRCH) {
		snprintf(err, errlen, "no broker at %s: stale stats segment left by pid %d "
			 "(it died while writing it)", v->dir, (int)v->s.d.broker_pid);
		return EXIT_NO_BROKER;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s/%s: the broker kept changing it; no consistent snapshot",
			 v->dir, STATS_FILE);
		return EXIT_NO_BROKER;
	}
	v->now_ms = wall_ms();
	rc = stats_verdict(&v->s, v->dir, v->now_ms, err, errlen);
	if (rc < 0)
		return EXIT_NO_BROKER;
	v->status = (uint32_t)rc;
	return 0;
}

/* ---- numbers and times ---- */

static double ms(uint64_t us)
{
	return (double)us / 1000.0;
}

static double success_ratio(const struct stats_data *d)
{
	return d->c.statements ? (double)(d->c.statements - d->c.failed) / (double)d->c.statements : 1.0;
}

static const char *iso_time(int64_t t_ms, char *buf, size_t n)
{
	struct tm tm;
	time_t t = (time_t)(t_ms / 1000);
	char base[32];

	if (t_ms <= 0) {
		snprintf(buf, n, "-");
		return buf;
	}
	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, n, "%s.%03dZ", base, (int)(t_ms % 1000));
	return buf;
}

static const char *clock_time(int64_t t_ms, char *buf, size_t n)
{
	struct tm tm;
	time_t t = (time_t)(t_ms / 1000);

	if (t_ms <= 0) {
		snprintf(buf, n, "-");
		return buf;
	}
	localtime_r(&t, &tm);
	strftime(buf, n, "%H:%M:%S", &tm);
	return buf;
}

static const char *age(int64_t ms_, char *buf, size_t n)
{
	long long s = ms_ > 0 ? ms_ / 1000 : 0;

	if (s < 60)
		snprintf(buf, n, "%llds", s);
	else if (s < 3600)
		snprintf(buf, n, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, n, "%lldh%02lldm", s / 3600, s / 60 % 60);
	else
		snprintf(buf, n, "%lldd%02lldh", s / 86400, s / 3600 % 24);
	return buf;
}

/* Statements per second in the newest sample. */
static double rate_now(const struct stats_health *h)
{
	const struct stats_sample *s = health_sample_at(h, 0);

	return s ? s->stmts_per_s : 0;
}

static const char *trend_name(int32_t t)
{
	return t > 0 ? "rising" : t < 0 ? "falling" : "flat";
}

/* ---- the text screen, shared by the live view and --once ---- */

#define DIR_SHOWN 24	/* columns of the run directory in the live header */

struct screen {
	char line[MAX_LINES][LINE_MAX_BYTES];
	int n;
	int utf8;
};

static void __attribute__((format(printf, 2, 3))) put(struct screen *sc, const char *fmt, ...)
{
	va_list ap;

	if (sc->n >= MAX_LINES)
		return;
	va_start(ap, fmt);
	vsnprintf(sc->line[sc->n++], LINE_MAX_BYTES, fmt, ap);
	va_end(ap);
}

/* A sparkline of the newest `width` samples (oldest left), each scaled to
 * top; blank where there is no sample yet. */
static void spark(const struct stats_health *h, int what, int width, double top, int utf8,
		  char *out, size_t n)
{
	static const char *const blocks[] = { "\u2581", "\u2582", "\u2583", "\u2584",
					      "\u2585", "\u2586", "\u2587", "\u2588" };
	static const char ascii[] = "_.-:=+*#";
	size_t len = 0;
	int have = (int)(h->nsamples < (uint32_t)width ? h->nsamples : (uint32_t)width);

	for (int i = 0; i < width - have && len + 2 < n; i++)
		out[len++] = ' ';
	for (int i = have - 1; i >= 0; i--) {
		const struct stats_sample *s = health_sample_at(h, (uint32_t)i);
		double val;
		int lvl;

		if (!s)
			continue;
		val = what == 0 ? s->utilization : s->stmts_per_s;
		lvl = top > 0 ? (int)(val / top * 8.0) : 0;
		lvl = lvl < 0 ? 0 : lvl > 7 ? 7 : lvl;
		if (utf8) {
			size_t bl = strlen(blocks[lvl]);

			if (len + bl + 1 >= n)
				break;
			memcpy(out + len, blocks[lvl], bl);
			len += bl;
		} else if (len + 2 < n) {
			out[len++] = ascii[lvl];
		}
	}
	out[len] = '\0';
}

static int cmp_backend(const void *pa, const void *pb)
{
	const struct stats_backend *a = pa, *b = pb;
	int ra = a->state == STATS_BE_BUSY || a->state == STATS_BE_PINNED;
	int rb = b->state == STATS_BE_BUSY || b->state == STATS_BE_PINNED;

	if (ra != rb)
		return rb - ra;
	if (a->served != b->served)
		return a->served < b->served ? 1 : -1;
	return (int)a->slot - (int)b->slot;
}

static int cmp_agent(const void *pa, const void *pb)
{
	const struct stats_agent *a = pa, *b = pb;
	int ra = a->state != STATS_AG_IDLE, rb = b->state != STATS_AG_IDLE;

	if (ra != rb)
		return rb - ra;
	if (a->statements != b->statements)
		return a->statements < b->statements ? 1 : -1;
	return (int)a->slot - (int)b->slot;
}

static const char *agent_state_short(uint32_t s)
{
	return s == STATS_AG_IN_TXN ? "in-txn" : stats_agent_state_name(s);
}

/* rows: how many backend/agent rows to show (-1: all). */
static void render(struct view *v, struct screen *sc, int live, int rows, int reasons_max)
{
	const struct stats_data *d = &v->s.d;
	const struct stats_health *h = &v->s.h;
	const struct stats_pool *p = &d->pool;
	char t1[64], t2[64], sp[LINE_MAX_BYTES];
	double top = 1;
	int nr;

	/* Live, a long directory is shown by its end, so that the line
	 * (and "q quits") fits 80 columns. */
	size_t dlen = strlen(v->dir);
	const char *dir = live && dlen > DIR_SHOWN ? v->dir + dlen - (DIR_SHOWN - 3) : v->dir;

	put(sc, "pgbroker %s%s  pid %d  up %s  %s%s", dir != v->dir ? "..." : "", dir,
	    (int)d->broker_pid,
	    age(d->updated_ms - d->started_ms, t1, sizeof(t1)),
	    clock_time(d->updated_ms, t2, sizeof(t2)), live ? "   (q quits)" : "");
	if (h->sample_ms)
		put(sc, "health: %s for %s  utilization trend %s (%+.1f points/min)",
		    health_status_name(v->status),
		    age(v->now_ms - h->status_since_ms, t1, sizeof(t1)), trend_name(h->trend),
		    h->trend_per_min);
	else
		put(sc, "health: %s (no sample yet)", health_status_name(v->status));
	nr = (int)(h->nreasons < STATS_REASONS ? h->nreasons : STATS_REASONS);
	for (int i = 0; i < nr && (reasons_max < 0 || i < reasons_max); i++) {
		put(sc, "  %s %s", h->reasons[i].level == HEALTH_UNHEALTHY ? "!!" : "! ",
		    h->reasons[i].text);
		put(sc, "     -> %s", h->reasons[i].advice);
	}
	if (reasons_max >= 0 && nr > reasons_max)
		put(sc, "  (+%d more reasons: poolstat --once)", nr - reasons_max);
	put(sc, "pool: total %u idle %u active %u pinned %u connecting %u waiting %u other %u",
	    p->total, p->idle, p->active, p->pinned, p->connecting, p->waiting, p->other);
	put(sc, "utilization %.1f%% (%u busy of max %u; min %u, size %u)  agents %u",
	    p->utilization, p->active + p->pinned, p->max, p->min, p->size, p->agents);
	if (d->breaker_changed_ms)
		snprintf(t1, sizeof(t1), "changed %s ago",
			 age(v->now_ms - d->breaker_changed_ms, t2, sizeof(t2)));
	else
		snprintf(t1, sizeof(t1), "never changed");
	put(sc, "breaker: %s  failures %u  opened %llu times  %s",
	    stats_breaker_name(d->breaker_state), d->breaker_failures,
	    (unsigned long long)d->breaker_opened, t1);
	if (d->connect_error[0])
		put(sc, "  last connect failed%s%.*s: %.*s", d->connect_code[0] ? ", SQLSTATE " : "",
		    (int)sizeof(d->connect_code), d->connect_code, (int)sizeof(d->connect_error),
		    d->connect_error);
	if (d->breaker_retry_ms > v->now_ms)
		put(sc, "  next connect in %lld ms", (long long)(d->breaker_retry_ms - v->now_ms));
	put(sc, "queries: %llu total  %llu failed (%.2f%% ok)  %llu retried  %.1f/s now",
	    (unsigned long long)d->c.statements, (unsigned long long)d->c.failed,
	    100.0 * success_ratio(d), (unsigned long long)d->c.retried, rate_now(h));
	put(sc, "latency ms: p50 %.1f p95 %.1f p99 %.1f max %.1f  acquire ms: avg %.1f p99 %.1f",
	    ms(stats_hist_pct(&d->stmt, 0.50)), ms(stats_hist_pct(&d->stmt, 0.95)),
	    ms(stats_hist_pct(&d->stmt, 0.99)), ms(d->stmt.max_us),
	    stats_hist_avg(&d->acquire) / 1000.0, ms(stats_hist_pct(&d->acquire, 0.99)));
	put(sc, "memory: %llu of %llu MB (max_memory_mb) held for agents, peak %llu MB; "
	    "%llu refused (PB008), %llu rows too large (PB004), %llu results streamed",
	    (unsigned long long)d->mem.used >> 20, (unsigned long long)d->mem.budget >> 20,
	    (unsigned long long)d->mem.peak >> 20, (unsigned long long)d->c.memory_refused,
	    (unsigned long long)d->c.rows_too_large, (unsigned long long)d->c.streamed);
	if (!live) {
		put(sc, "timeouts: acquire %llu statement %llu  connects %llu (failed %llu)  "
		    "closed: idle %llu broken %llu validation %llu lifetime %llu memory %llu",
		    (unsigned long long)d->c.acquire_timeouts,
		    (unsigned long long)d->c.statement_timeouts, (unsigned long long)d->c.connects,
		    (unsigned long long)d->c.connect_failures, (unsigned long long)d->c.closed_idle,
		    (unsigned long long)d->c.closed_broken,
		    (unsigned long long)d->c.closed_validation,
		    (unsigned long long)d->c.closed_lifetime,
		    (unsigned long long)d->c.closed_memory);
	}
	spark(h, 0, 60, 100.0, sc->utf8, sp, sizeof(sp));
	put(sc, "util %%  |%s| %.0f%%", sp, p->utilization);
	for (uint32_t i = 0; i < h->nsamples; i++) {
		const struct stats_sample *s = health_sample_at(h, i);

		if (s && s->stmts_per_s > top)
			top = s->stmts_per_s;
	}
	spark(h, 1, 60, top, sc->utf8, sp, sizeof(sp));
	put(sc, "stmt/s  |%s| %.0f", sp, rate_now(h));

	qsort(v->s.backends, v->s.nbackends, sizeof(*v->s.backends), cmp_backend);
	qsort(v->s.agents, v->s.nagents, sizeof(*v->s.agents), cmp_agent);
	put(sc, "%3s %-8s %7s %8s %7s | %7s %-8s %8s %5s %6s", "BE", "STATE", "PID", "SERVED",
	    "AGENT", "AGENT", "STATE", "STMTS", "ERR", "AGE");
	for (int i = 0; rows < 0 || i < rows; i++) {
		char left[64] = "", right[64] = "";

		if ((uint32_t)i >= v->s.nbackends && (uint32_t)i >= v->s.nagents)
			break;
		if ((uint32_t)i < v->s.nbackends) {
			const struct stats_backend *be = &v->s.backends[i];
			char ag[16] = "-";

			if (be->agent_slot >= 0)
				snprintf(ag, sizeof(ag), "%d", (int)be->agent_pid);
			snprintf(left, sizeof(left), "%3u %-8.8s %7d %8llu %7s", be->slot,
				 stats_backend_state_name(be->state), (int)be->pg_pid,
				 (unsigned long long)be->served, ag);
		}
		if ((uint32_t)i < v->s.nagents) {
			const struct stats_agent *a = &v->s.agents[i];

			snprintf(right, sizeof(right), "%7d %-8s %8llu %5llu %6s", (int)a->pid,
				 agent_state_short(a->state), (unsigned long long)a->statements,
				 (unsigned long long)a->errors,
				 age(v->now_ms - a->since_ms, t1, sizeof(t1)));
		}
		put(sc, "%-37s | %s", left, right);
	}
	if (rows >= 0 && ((uint32_t)rows < v->s.nbackends || (uint32_t)rows < v->s.nagents)) {
		snprintf(sp, sizeof(sp), "(%u backends in all)", v->s.nbackends);
		put(sc, "%-37s | (%u agents in all)", sp, v->s.nagents);
	}
}

/* ---- --json ---- */

static void json_time(FILE *f, int64_t t_ms)
{
	char buf[48];

	if (t_ms <= 0)
		fputs("null", f);
	else
		json_str(f, iso_time(t_ms, buf, sizeof(buf)));
}

static void json_hist(FILE *f, const struct stats_hist *h)
{
	fprintf(f, "{\"count\":%llu,\"avg\":%.3f,\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,"
		"\"max\":%.3f}", (unsigned long long)h->count, stats_hist_avg(h) / 1000.0,
		ms(stats_hist_pct(h, 0.50)), ms(stats_hist_pct(h, 0.95)),
		ms(stats_hist_pct(h, 0.99)), ms(h->max_us));
}

static void print_json(struct view *v, FILE *f)
{
	const struct stats_data *d = &v->s.d;
	const struct stats_health *h = &v->s.h;
	const struct stats_pool *p = &d->pool;
	uint32_t nr = h->nreasons < STATS_REASONS ? h->nreasons : STATS_REASONS;
	uint32_t nsamples = h->nsamples < STATS_HISTORY ? h->nsamples : STATS_HISTORY;

	fputs("{\"timestamp\":", f);
	json_time(f, d->updated_ms);
	fprintf(f, ",\"timestamp_ms\":%lld,\"dir\":", (long long)d->updated_ms);
	json_str(f, v->dir);
	fprintf(f, ",\"broker\":{\"pid\":%d,\"started\":", (int)d->broker_pid);
	json_time(f, d->started_ms);
	fprintf(f, ",\"uptime_s\":%lld,\"state\":\"%s\",\"reloads\":%llu,"
		"\"reload_failures\":%llu},", (long long)((d->updated_ms - d->started_ms) / 1000),
		d->stopping == 0 ? "serving" : d->stopping == 1 ? "draining" : "stopping",
		(unsigned long long)d->c.reloads, (unsigned long long)d->c.reload_failures);
	fprintf(f, "\"pool\":{\"total\":%u,\"idle\":%u,\"active\":%u,\"pinned\":%u,"
		"\"connecting\":%u,\"other\":%u,\"waiting\":%u,\"min\":%u,\"size\":%u,\"max\":%u,"
		"\"utilization_percent\":%.2f,\"grows\":%llu,\"shrinks\":%llu},", p->total, p->idle,
		p->active, p->pinned, p->connecting, p->other, p->waiting, p->min, p->size, p->max,
		p->utilization, (unsigned long long)d->c.pool_grows,
		(unsigned long long)d->c.pool_shrinks);
	fprintf(f, "\"clients\":{\"connected\":%u,\"registered\":%llu,\"gone\":%llu,"
		"\"refused\":%llu,\"protocol_errors\":%llu},", p->agents,
		(unsigned long long)d->c.agents_registered, (unsigned long long)d->c.agents_gone,
		(unsigned long long)d->c.agents_refused, (unsigned long long)d->c.protocol_errors);
	fprintf(f, "\"queries\":{\"total\":%llu,\"failed\":%llu,\"succeeded\":%llu,"
		"\"success_rate\":%.6f,\"retried\":%llu,\"acquire_timeouts\":%llu,"
		"\"statement_timeouts\":%llu,\"session_pins\":%llu,\"begins_deferred\":%llu,"
		"\"txns_local\":%llu,\"per_second\":%.3f},",
		(unsigned long long)d->c.statements, (unsigned long long)d->c.failed,
		(unsigned long long)(d->c.statements - d->c.failed), success_ratio(d),
		(unsigned long long)d->c.retried, (unsigned long long)d->c.acquire_timeouts,
		(unsigned long long)d->c.statement_timeouts, (unsigned long long)d->c.session_pins,
		(unsigned long long)d->c.begins_deferred, (unsigned long long)d->c.txns_local,
		rate_now(h));
	fprintf(f, "\"notifications\":{\"delivered\":%llu,\"dropped\":%llu,"
		"\"listener_lost\":%llu},", (unsigned long long)d->c.notify_delivered,
		(unsigned long long)d->c.notify_dropped, (unsigned long long)d->c.notify_lost);
	fputs("\"latency_ms\":", f);
	json_hist(f, &d->stmt);
	fputs(",\"acquire_ms\":", f);
	json_hist(f, &d->acquire);
	fprintf(f, ",\"connections\":{\"connects\":%llu,\"connect_failures\":%llu,"
		"\"closed\":{\"idle\":%llu,\"broken\":%llu,\"validation\":%llu,\"lifetime\":%llu,"
		"\"memory\":%llu}},",
		(unsigned long long)d->c.connects, (unsigned long long)d->c.connect_failures,
		(unsigned long long)d->c.closed_idle, (unsigned long long)d->c.closed_broken,
		(unsigned long long)d->c.closed_validation, (unsigned long long)d->c.closed_lifetime,
		(unsigned long long)d->c.closed_memory);
	fprintf(f, "\"memory\":{\"used_bytes\":%llu,\"peak_bytes\":%llu,\"budget_bytes\":%llu,"
		"\"refused\":%llu,\"rows_too_large\":%llu,\"streamed\":%llu},",
		(unsigned long long)d->mem.used, (unsigned long long)d->mem.peak,
		(unsigned long long)d->mem.budget, (unsigned long long)d->c.memory_refused,
		(unsigned long long)d->c.rows_too_large, (unsigned long long)d->c.streamed);
	fputs("\"breaker\":{\"state\":", f);
	json_str(f, stats_breaker_name(d->breaker_state));
	fprintf(f, ",\"consecutive_failures\":%u,\"times_opened\":%llu,\"last_change\":",
		d->breaker_failures, (unsigned long long)d->breaker_opened);
	json_time(f, d->breaker_changed_ms);
	fputs(",\"next_connect\":", f);
	json_time(f, d->breaker_retry_ms);
	fputs(",\"last_connect_error\":", f);
	if (d->connect_error[0]) {
		char code[sizeof(d->connect_code) + 1], msg[sizeof(d->connect_error) + 1];

		snprintf(code, sizeof(code), "%.*s", (int)sizeof(d->connect_code), d->connect_code);
		snprintf(msg, sizeof(msg), "%.*s", (int)sizeof(d->connect_error), d->connect_error);
		fputs("{\"sqlstate\":", f);
		json_str(f, code);
		fputs(",\"message\":", f);
		json_str(f, msg);
		fputs("}", f);
	} else {
		fputs("null", f);
	}
	fputs("},\"server\":", f);
	if (d->server_max_connections)
		fprintf(f, "{\"max_connections\":%u,\"superuser_reserved_connections\":%u,"
			"\"other_connections\":%u}", d->server_max_connections,
			d->server_reserved_connections, d->server_other_connections);
	else
		fputs("null", f);
	fputs(",\"health\":{\"status\":", f);
	json_str(f, health_status_name(v->status));
	fputs(",\"since\":", f);
	json_time(f, h->status_since_ms);
	fputs(",\"sampled\":", f);
	json_time(f, h->sample_ms);
	fputs(",\"reasons\":[", f);
	for (uint32_t i = 0; i < nr; i++) {
		fputs(i ? "," : "", f);
		json_str(f, h->reasons[i].text);
	}
	fputs("],\"recommendations\":[", f);
	for (uint32_t i = 0; i < nr; i++) {
		fputs(i ? "," : "", f);
		json_str(f, h->reasons[i].advice);
	}
	fputs("],\"trend\":", f);
	json_str(f, trend_name(h->trend));
	fprintf(f, ",\"trend_points_per_min\":%.3f,\"window_s\":%.1f,\"success_rate\":%.6f,"
		"\"acquire_avg_ms\":%.3f,\"statements_per_s\":%.3f,\"history\":[",
		h->trend_per_min, h->window_ms / 1000.0, h->success_pct / 100.0, h->acquire_avg_ms,
		h->stmts_per_s);
	for (uint32_t i = nsamples; i-- > 0;) {
		const struct stats_sample *s = health_sample_at(h, i);

		if (!s)
			continue;
		fputs(i + 1 == nsamples ? "" : ",", f);
		fputs("{\"t\":", f);
		json_time(f, s->t_ms);
		fprintf(f, ",\"utilization_percent\":%.2f,\"waiting\":%u,\"statements_per_s\":%.3f,"
			"\"success_rate\":%.6f,\"acquire_p99_ms\":%.3f}", s->utilization, s->waiting,
			s->stmts_per_s, s->success_pct / 100.0, ms(s->acquire_p99_us));
	}
	fputs("]},\"backends\":[", f);
	for (uint32_t i = 0; i < v->s.nbackends; i++) {
		const struct stats_backend *be = &v->s.backends[i];

		fprintf(f, "%s{\"slot\":%u,\"state\":", i ? "," : "", be->slot);
		json_str(f, stats_backend_state_name(be->state));
		fprintf(f, ",\"pid\":%d,\"served\":%llu,\"agent_pid\":", (int)be->pg_pid,
			(unsigned long long)be->served);
		if (be->agent_slot >= 0)
			fprintf(f, "%d", (int)be->agent_pid);
		else
			fputs("null", f);
		fputs(",\"since\":", f);
		json_time(f, be->since_ms);
		fputc('}', f);
	}
	fputs("],\"agents\":[", f);
	for (uint32_t i = 0; i < v->s.nagents; i++) {
		const struct stats_agent *a = &v->s.agents[i];

		fprintf(f, "%s{\"pid\":%d,\"state\":", i ? "," : "", (int)a->pid);
		json_str(f, stats_agent_state_name(a->state));
		fprintf(f, ",\"statements\":%llu,\"errors\":%llu,\"since\":",
			(unsigned long long)a->statements, (unsigned long long)a->errors);
		json_time(f, a->since_ms);
		fputc('}', f);
	}
	fputs("]}\n", f);
}

/* ---- --prometheus ---- */

/* One metric with its HELP and TYPE lines: one sample; with label, one sample
 * per entry of by up to the first without a key; with hist, a histogram in
 * seconds (prom_hist). */
struct prom_metric {
	const char *name, *type, *help;
	double v;
	const char *label;
	struct { const char *key; unsigned long long v; } by[5];
	const struct stats_hist *hist;
};

/* Rows of a table of metrics; n is a string literal, the name without
 * "pgbroker_". */
#define PROM(n, t, h) .name = "pgbroker_" n, .type = (t), .help = (h)
#define GAUGE(n, h, x) { PROM(n, "gauge", h), .v = (double)(x) }
#define COUNTER(n, h, x) { PROM(n, "counter", h), .v = (double)(x) }
#define PROM_UP(x) GAUGE("up", "1 when a live broker published this segment", x)

/* The broker's log histogram as a Prometheus histogram: cumulative counts
 * at every power of two of microseconds from 1 us to 2^36 us (bucket edges
 * of the log histogram, so the counts are exact, and the same for every
 * broker, so that they add up across brokers), then +Inf, _sum, _count. A
 * bucket counts the values below its edge (microsecond resolution). */
static void prom_hist(FILE *f, const char *name, const struct stats_hist *h)
{
	unsigned long long cum = 0;
	unsigned i = 0;

	for (unsigned k = 0; k <= 36; k++) {
		uint64_t edge = (uint64_t)1 << k;

		for (; i < STATS_BUCKETS && stats_bucket_high(i) <= edge; i++)
			cum += h->bucket[i];
		fprintf(f, "%s_bucket{le=\"%.9g\"} %llu\n", name, (double)edge / 1e6, cum);
	}
	fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
		(unsigned long long)h->count, name, (double)h->sum_us / 1e6, name,
		(unsigned long long)h->count);
}

static void prom_print(FILE *f, const struct prom_metric *m)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
	if (m->hist) {
		prom_hist(f, m->name, m->hist);
	} else if (m->label) {
		for (unsigned i = 0; i < sizeof(m->by) / sizeof(m->by[0]) && m->by[i].key; i++)
			fprintf(f, "%s{%s=\"%s\"} %llu\n", m->name, m->label, m->by[i].key,
				m->by[i].v);
	} else {
		fprintf(f, "%s %.15g\n", m->name, m->v);
	}
}

static void print_prometheus(struct view *v, FILE *f)
{
	const struct stats_data *d = &v->s.d;
	const struct stats_counters *c = &d->c;
	const struct stats_pool *p = &d->pool;
	const struct prom_metric m[] = {
		PROM_UP(1),
		GAUGE("start_time_seconds", "when the broker started (Unix time)",
		      d->started_ms / 1000.0),
		GAUGE("stats_updated_time_seconds",
		      "when the broker last published its stats (Unix time)", d->updated_ms / 1000.0),
		{ PROM("pool_connections", "gauge", "backend connections by state"), .label = "state",
		  .by = { { "idle", p->idle }, { "active", p->active }, { "pinned", p->pinned },
			  { "connecting", p->connecting }, { "other", p->other } } },
		GAUGE("pool_total", "backend connections open or opening", p->total),
		GAUGE("pool_waiting", "statements waiting for a backend", p->waiting),
		{ PROM("pool_limit", "gauge", "configured pool sizes"), .label = "limit",
		  .by = { { "min", p->min }, { "size", p->size }, { "max", p->max } } },
		GAUGE("pool_utilization_percent",
		      "busy backends (active + pinned) in percent of max_pool_size", p->utilization),
		GAUGE("clients_connected", "agents connected", p->agents),
		COUNTER("clients_registered_total", "agents registered", c->agents_registered),
		COUNTER("clients_refused_total", "agents refused", c->agents_refused),
		COUNTER("queries_total", "statements answered", c->statements),
		COUNTER("queries_failed_total", "statements answered with an error", c->failed),
		COUNTER("queries_retried_total", "statement retries", c->retried),
		{ PROM("timeouts_total", "counter", "timeouts by kind"), .label = "kind",
		  .by = { { "acquire", c->acquire_timeouts },
			  { "statement", c->statement_timeouts } } },
		COUNTER("connects_total", "backend connections opened", c->connects),
		COUNTER("connect_failures_total", "failed connection attempts", c->connect_failures),
		{ PROM("backends_closed_total", "counter", "backend connections closed by reason"),
		  .label = "reason",
		  .by = { { "idle", c->closed_idle }, { "broken", c->closed_broken },
			  { "validation", c->closed_validation },
			  { "lifetime", c->closed_lifetime }, { "memory", c->closed_memory } } },
		GAUGE("memory_used_bytes", "held for agents: requests, results not yet read, rows "
		      "being read", d->mem.used),
		GAUGE("memory_budget_bytes", "max_memory_mb", d->mem.budget),
		GAUGE("memory_peak_bytes", "most held for agents since start", d->mem.peak),
		COUNTER("memory_refused_total", "statements refused (PB008): agent over its share "
			"or the broker over its budget", c->memory_refused),
		COUNTER("rows_too_large_total", "statements failed (PB004): a row over a quarter of "
			"max_memory_mb, or the budget in use", c->rows_too_large),
		COUNTER("results_streamed_total", "results sent in rows messages", c->streamed),
		{ PROM("statement_duration_seconds", "histogram",
		       "statement round trip in the broker, arrival to result"), .hist = &d->stmt },
		{ PROM("acquire_wait_seconds", "histogram", "wait for a free backend"),
		  .hist = &d->acquire },
		GAUGE("breaker_state", "circuit breaker: 0 closed, 1 open, 2 half-open, 3 misconfigured",
		      d->breaker_state),
		GAUGE("breaker_consecutive_failures", "consecutive connection failures",
		      d->breaker_failures),
		COUNTER("breaker_opened_total", "times the breaker opened", d->breaker_opened),
		GAUGE("health_status", "0 healthy, 1 degraded, 2 unhealthy, 4 starting (no sample yet)",
		      v->status),
		GAUGE("health_success_ratio", "statements that succeeded over the health window",
		      v->s.h.success_pct / 100.0),
		GAUGE("health_acquire_avg_seconds",
		      "average wait for a backend over the health window",
		      v->s.h.acquire_avg_ms / 1000.0),
	};

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		prom_print(f, &m[i]);
}

/* ---- the live view ---- */

static volatile sig_atomic_t got_stop, got_winch, got_tstp;
static struct termios saved_tio;
static int tio_saved;

static void on_stop(int sig)
{
	(void)sig;
	got_stop = 1;
}

static void on_winch(int sig)
{
	(void)sig;
	got_winch = 1;
}

static void on_tstp(int sig)
{
	(void)sig;
	got_tstp = 1;
}

/* Keys one at a time, unechoed; the alternate screen, cursor hidden,
 * cleared once: afterwards every frame overwrites in place. */
static void term_enter(void)
{
	static const char enter[] = "\033[?1049h\033[?25l\033[H\033[2J";
	struct termios tio;

	if (isatty(0) && tcgetattr(0, &saved_tio) == 0) {
		tio = saved_tio;
		tio.c_lflag &= (tcflag_t)~(ICANON | ECHO);
		tio.c_cc[VMIN] = 0;
		tio.c_cc[VTIME] = 0;
		tcsetattr(0, TCSANOW, &tio);
		tio_saved = 1;
	}
	(void)!write(1, enter, sizeof(enter) - 1);
}

static void term_restore(void)
{
	static const char leave[] = "\033[?25h\033[?1049l";

	if (tio_saved)
		tcsetattr(0, TCSANOW, &saved_tio);
	tio_saved = 0;
	(void)!write(1, leave, sizeof(leave) - 1);
}

/* Ctrl-Z: give the terminal back as it was, stop, and take it again when
 * continued (the shell restores its own modes meanwhile, not ours). */
static void term_suspend(void)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL }, tstp = { .sa_handler = on_tstp };

	got_tstp = 0;
	term_restore();
	sigaction(SIGTSTP, &dfl, NULL);
	raise(SIGTSTP);		/* returns once continued */
	sigaction(SIGTSTP, &tstp, NULL);
	term_enter();
}

/* Append s to buf cut at `cols` display columns (UTF-8 aware). */
static size_t cut(char *buf, size_t at, size_t cap, const char *s, int cols)
{
	int col = 0;

	for (; *s && at + 8 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c & 0xC0) != 0x80) {
			if (col >= cols)
				break;
			col++;
		}
		buf[at++] = (char)c;
	}
	return at;
}

static int live(struct view *v, int utf8)
{
	struct sigaction sa = { 0 };
	static struct screen sc;
	static char out[MAX_LINES * (LINE_MAX_BYTES + 8) + 64];

	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_winch;
	sigaction(SIGWINCH, &sa, NULL);
	sa.sa_handler = on_tstp;
	sigaction(SIGTSTP, &sa, NULL);
	term_enter();
	atexit(term_restore);
	while (!got_stop) {
		struct winsize ws = { 0 };
		int rows = 24, cols = 80, n, table;
		char err[600];
		size_t len = 0;
		struct pollfd pf = { .fd = 0, .events = POLLIN };
		int64_t wait;

		if (ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
			rows = ws.ws_row;
			cols = ws.ws_col;
		}
		if (got_tstp)
			term_suspend();
		memset(&sc, 0, sizeof(sc));
		sc.utf8 = utf8;
		if (load(v, err, sizeof(err)) != 0) {
			put(&sc, "poolstat: %s", err);
			put(&sc, "retrying every second (q quits)");
		} else {
			/* The table takes every line the rest leaves. Its size
			 * comes from a frame without rows: the fixed part, the
			 * reasons shown and the "(N in all)" line. When all rows
			 * fit, that last line holds a row instead. */
			int reasons = rows >= 24 ? 2 : 1;
			uint32_t all;

			render(v, &sc, 1, 0, reasons);
			all = v->s.nbackends > v->s.nagents ? v->s.nbackends : v->s.nagents;
			table = rows - sc.n;
			if (table >= 0 && all <= (uint32_t)table + 1)
				table = (int)all;
			memset(&sc, 0, sizeof(sc));
			sc.utf8 = utf8;
			render(v, &sc, 1, table > 0 ? table : 0, reasons);
		}
		n = sc.n < rows ? sc.n : rows;
		/* After a resize, from a clean screen. In the frame, not through
		 * stdio: a buffered clear would go out at exit, onto the
		 * shell's screen. */
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s\033[H",
					got_winch ? "\033[2J" : "");
		got_winch = 0;
		for (int i = 0; i < n; i++) {
			len = cut(out, len, sizeof(out), sc.line[i], cols - 1);
			len += (size_t)snprintf(out + len, sizeof(out) - len, "\033[K%s",
						i + 1 < n ? "\r\n" : "");
		}
		len += (size_t)snprintf(out + len, sizeof(out) - len, "\033[J");
		(void)!write(1, out, len);

		wait = 1000 - wall_ms() % 1000;
		if (poll(&pf, isatty(0) ? 1 : 0, (int)wait) > 0) {
			char key[16];
			ssize_t k = read(0, key, sizeof(key));

			for (ssize_t i = 0; i < k; i++)
				if (key[i] == 'q' || key[i] == 'Q')
					got_stop = 1;
			if (k == 0)
				got_stop = 1;   /* stdin closed */
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct view v;
	enum mode mode = MODE_LIVE;
	char err[600], dflt[256];
	int rc, utf8;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--once") == 0)
			mode = MODE_ONCE;
		else if (strcmp(argv[i], "--json") == 0)
			mode = MODE_JSON;
		else if (strcmp(argv[i], "--prometheus") == 0)
			mode = MODE_PROM;
		else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("poolstat (pgbroker) %s\n", PGB_VERSION);
			return 0;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "poolstat: unknown option %s\n", argv[i]);
			usage(stderr);
			return EXIT_NO_BROKER;
		} else {
			v.dir = argv[i];
		}
	}
	v.dir = rundir_resolve(v.dir, dflt, sizeof(dflt));
	setlocale(LC_CTYPE, "");
	utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
	if (mode == MODE_LIVE && !isatty(1))
		mode = MODE_ONCE;
	if (mode == MODE_LIVE) {
		if (load(&v, err, sizeof(err)) != 0) {
			fprintf(stderr, "poolstat: %s\n", err);
			return EXIT_NO_BROKER;
		}
		return live(&v, utf8);
	}
	rc = load(&v, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "poolstat: %s\n", err);
		if (mode == MODE_PROM)
			prom_print(stdout, &(struct prom_metric)PROM_UP(0));
		return rc;
	}
	if (mode == MODE_JSON) {
		print_json(&v, stdout);
	} else if (mode == MODE_PROM) {
		print_prometheus(&v, stdout);
	} else {
		static struct screen sc;

		sc.utf8 = utf8;
		render(&v, &sc, 0, 10, -1);
		for (int i = 0; i < sc.n; i++)
			puts(sc.line[i]);
	}
	if (fflush(stdout) != 0)
		return EXIT_NO_BROKER;
	return (int)v.status;
}
