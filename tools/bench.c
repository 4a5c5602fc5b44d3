/* poolbench's pure parts; see bench.h. */
#include "bench.h"
#include "errbuf.h"
#include "json.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[BENCH_NMODES] = { "direct", "pgbouncer", "broker",
							"broker-epoll" };
static const char *const workload_names[BENCH_NWORKLOADS] = {
	"select1", "pgbench-select", "tpcb", "mixed",
};
static const char *const workload_units[BENCH_NWORKLOADS] = { "q/s", "q/s", "tx/s", "ops/s" };
/* Plot colours (Okabe-Ito): direct grey, pgbouncer orange, broker blue. */
static const char *const mode_colors[BENCH_NMODES] = { "#777777", "#e69f00", "#0072b2",
							 "#56b4e9" };

const char *bench_mode_name(int mode)
{
	return mode >= 0 && mode < BENCH_NMODES ? mode_names[mode] : "?";
}

const char *bench_workload_name(int workload)
{
	return workload >= 0 && workload < BENCH_NWORKLOADS ? workload_names[workload] : "?";
}

const char *bench_workload_unit(int workload)
{
	return workload >= 0 && workload < BENCH_NWORKLOADS ? workload_units[workload] : "ops/s";
}

int bench_workload_from_name(const char *name)
{
	for (int i = 0; i < BENCH_NWORKLOADS; i++)
		if (!strcmp(name, workload_names[i]))
			return i;
	return -1;
}

int bench_mode_from_name(const char *name)
{
	for (int i = 0; i < BENCH_NMODES; i++)
		if (!strcmp(name, mode_names[i]))
			return i;
	return -1;
}

int bench_default_pool_size(long ncpu)
{
	long n = 4 * (ncpu > 0 ? ncpu : 1);

	return (int)(n < 4 ? 4 : n > 64 ? 64 : n);
}

const char *bench_usage(void)
{
	return "usage: poolbench [--mode broker|broker-epoll|direct|pgbouncer] [--agents N]\n"
	       "                 [--duration S] [--epoll]\n"
	       "                 [--workload select1|pgbench-select|tpcb|mixed] [--pool-size N]\n"
	       "                 [--bouncer-pools 8,16,32]\n"
	       "                 [--compare] [--agents-list 1,10,50,200] [--warmup S]\n"
	       "                 [--json FILE] [--plot FILE.svg] [--dsn CONNINFO] [--broker PATH]\n"
	       "       poolbench --help | --version\n"
	       "\n"
	       "  --mode M         who carries the agents' statements (default broker); a\n"
	       "                   comma list runs several\n"
	       "  --compare        run direct, pgbouncer and broker back to back (pgbouncer\n"
	       "                   is skipped with a note when it is not installed)\n"
	       "  --epoll          also run broker-epoll: the broker on its epoll loop\n"
	       "                   (--loop epoll), right after the io_uring broker\n"
	       "  --agents N       agent processes (default 10); --agents-list 1,10,50 runs each\n"
	       "  --workload W     default select1; a comma list runs each\n"
	       "  --duration S     measured seconds per run (default 10), after --warmup S\n"
	       "                   seconds that run but are not measured (default 1)\n"
	       "  --pool-size N    backends of the broker (min = max = N) and of pgbouncer\n"
	       "                   (default: 4 per CPU, within 4..64)\n"
	       "  --bouncer-pools L run pgbouncer once per pool size of the list (e.g.\n"
	       "                   8,16,32); the ratios compare with its best run\n"
	       "  --json FILE      write the results as JSON\n"
	       "  --plot FILE.svg  draw throughput and p99 against the agent count\n"
	       "  --dsn CONNINFO   use this PostgreSQL instead of starting a throwaway one\n"
	       "  --broker PATH    the pgbroker binary (default: ../broker/pgbroker beside\n"
	       "                   poolbench, else pgbroker beside it, else $PATH)\n"
	       "  -h, --help       show this text\n"
	       "  -V, --version    print the version\n"
	       "\n"
	       "Exit status: 0 when every run finished without errors, 1 otherwise, 2 on bad\n"
	       "arguments.\n";
}

int bench_parse_list(const char *s, int *out, int max, int lo, int hi)
{
	int n = 0;

	if (!s || !*s)
		return -1;
	for (;;) {
		char *end;
		long v;

		if (*s < '0' || *s > '9')
			return -1;   /* also rejects "", signs and spaces */
		errno = 0;
		v = strtol(s, &end, 10);
		if (errno || v < lo || v > hi || n >= max)
			return -1;
		out[n++] = (int)v;
		if (!*end)
			return n;
		if (*end != ',')
			return -1;
		s = end + 1;
	}
}

/* A number of seconds in lo..hi ("1", "0.5"). */
static int parse_seconds(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	if (!s || !*s || *s == ' ')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

/* A comma list of names into a bit set; -1 on an unknown name. */
static int parse_names(const char *s, int (*from_name)(const char *), unsigned *bits)
{
	char buf[256], *save = NULL, *tok;

	if (!s || !*s || strlen(s) >= sizeof(buf) || s[0] == ',' || s[strlen(s) - 1] == ',' ||
	    strstr(s, ",,"))
		return -1;   /* strtok_r would skip the empty names */
	strcpy(buf, s);
	*bits = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int v = from_name(tok);

		if (v < 0)
			return -1;
		*bits |= 1u << v;
	}
	return *bits ? 0 : -1;
}

enum {
	OPT_MODE = 1000, OPT_AGENTS, OPT_DURATION, OPT_WORKLOAD, OPT_POOL, OPT_COMPARE,
	OPT_JSON, OPT_PLOT, OPT_LIST, OPT_DSN, OPT_WARMUP, OPT_BROKER, OPT_HELP, OPT_VERSION,
	OPT_EPOLL, OPT_BOUNCER_POOLS,
};

int bench_parse_args(int argc, char **argv, struct bench_opts *o, char *err, size_t errlen)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "agents", required_argument, NULL, OPT_AGENTS },
		{ "agents-list", required_argument, NULL, OPT_LIST },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "warmup", required_argument, NULL, OPT_WARMUP },
		{ "workload", required_argument, NULL, OPT_WORKLOAD },
		{ "pool-size", required_argument, NULL, OPT_POOL },
		{ "bouncer-pools", required_argument, NULL, OPT_BOUNCER_POOLS },
		{ "compare", no_argument, NULL, OPT_COMPARE },
		{ "epoll", no_argument, NULL, OPT_EPOLL },
		{ "json", required_argument, NULL, OPT_JSON },
		{ "plot", required_argument, NULL, OPT_PLOT },
		{ "dsn", required_argument, NULL, OPT_DSN },
		{ "broker", required_argument, NULL, OPT_BROKER },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	unsigned wbits = 0;
	int opt, mode_given = 0, epoll = 0;
	long v;
	char *end;

	memset(o, 0, sizeof(*o));
	o->modes = 1u << BENCH_BROKER;
	o->workloads[0] = BENCH_SELECT1;
	o->nworkloads = 1;
	o->agents[0] = 10;
	o->nagents = 1;
	o->duration_s = 10;
	o->warmup_s = 1;
	if (err && errlen)
		err[0] = '\0';

	optind = 0;   /* GNU: start over, also for a second call in one process */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_MODE:
			if (parse_names(optarg, bench_mode_from_name, &o->modes) < 0) {
				errbuf_set(err, errlen, "--mode: invalid value \"%s\" (allowed: broker, "
					"broker-epoll, direct, pgbouncer, or a comma list of them)", optarg);
				return -1;
			}
			mode_given = 1;
			break;
		case OPT_AGENTS:
		case OPT_LIST:
			o->nagents = bench_parse_list(optarg, o->agents, BENCH_MAX_LIST, 1,
						      BENCH_MAX_AGENTS);
			if (o->nagents < 0) {
				errbuf_set(err, errlen, "%s: invalid value \"%s\" (allowed: integer 1..%d, "
					"or a comma list of at most %d)",
					opt == OPT_AGENTS ? "--agents" : "--agents-list", optarg,
					BENCH_MAX_AGENTS, BENCH_MAX_LIST);
				return -1;
			}
			break;
		case OPT_DURATION:
			if (parse_seconds(optarg, 0.1, 86400, &o->duration_s) < 0) {
				errbuf_set(err, errlen, "--duration: invalid value \"%s\" (allowed: "
					"seconds 0.1..86400)", optarg);
				return -1;
			}
			break;
		case OPT_WARMUP:
			if (parse_seconds(optarg, 0, 3600, &o->warmup_s) < 0) {
				errbuf_set(err, errlen, "--warmup: invalid value \"%s\" (allowed: "
					"seconds 0..3600)", optarg);
				return -1;
			}
			break;
		case OPT_WORKLOAD:
			if (parse_names(optarg, bench_workload_from_name, &wbits) < 0) {
				errbuf_set(err, errlen, "--workload: invalid value \"%s\" (allowed: select1, "
					"pgbench-select, tpcb, mixed, or a comma list of them)", optarg);
				return -1;
			}
			o->nworkloads = 0;
			for (int w = 0; w < BENCH_NWORKLOADS; w++)
				if (wbits & (1u << w))
					o->workloads[o->nworkloads++] = w;
			break;
		case OPT_POOL:
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || !*optarg || *end || v < 1 || v > 10000) {
				errbuf_set(err, errlen, "--pool-size: invalid value \"%s\" (allowed: "
					"integer 1..10000)", optarg);
				return -1;
			}
			o->pool_size = (int)v;
			break;
		case OPT_BOUNCER_POOLS:
			o->nbouncer_pools = bench_parse_list(optarg, o->bouncer_pools, BENCH_MAX_LIST,
							     1, 10000);
			if (o->nbouncer_pools < 0) {
				errbuf_set(err, errlen, "--bouncer-pools: invalid value \"%s\" (allowed: "
					"comma list of integers 1..10000, e.g. 8,16,32)", optarg);
				return -1;
			}
			break;
		case OPT_COMPARE:
			o->compare = 1;
			break;
		case OPT_EPOLL:
			epoll = 1;
			break;
		case OPT_JSON:
			o->json = optarg;
			break;
		case OPT_PLOT:
			o->plot = optarg;
			break;
		case OPT_DSN:
			o->dsn = optarg;
			break;
		case OPT_BROKER:
			o->broker = optarg;
			break;
		case 'h':
		case OPT_HELP:
			o->help = 1;
			return 0;
		case 'V':
		case OPT_VERSION:
			o->version = 1;
			return 0;
		case ':':
			errbuf_set(err, errlen, "%s needs a value", argv[optind - 1]);
			return -1;
		default:
			errbuf_set(err, errlen, "unknown argument: %s", argv[optind - 1]);
			return -1;
		}
	}
	if (optind < argc) {
		errbuf_set(err, errlen, "unexpected argument: %s", argv[optind]);
		return -1;
	}
	if (o->compare && mode_given) {
		errbuf_set(err, errlen, "--compare runs every mode: leave out --mode");
		return -1;
	}
	if (o->compare)
		o->modes = 1u << BENCH_DIRECT | 1u << BENCH_PGBOUNCER | 1u << BENCH_BROKER;
	if (epoll)
		o->modes |= 1u << BENCH_BROKER_EPOLL;
	return 0;
}

void bench_hist_merge(struct stats_hist *dst, const struct stats_hist *src)
{
	dst->count += src->count;
	dst->sum_us += src->sum_us;
	if (src->max_us > dst->max_us)
		dst->max_us = src->max_us;
	for (unsigned i = 0; i < STATS_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
}

void bench_result_latency(struct bench_result *r, const struct stats_hist *h)
{
	r->avg_us = stats_hist_avg(h);
	r->p50_us = stats_hist_pct(h, 0.50);
	r->p95_us = stats_hist_pct(h, 0.95);
	r->p99_us = stats_hist_pct(h, 0.99);
	r->max_us = h->max_us;
}

double bench_ratio(double a, double b)
{
	if (!(a > 0) || !(b > 0))
		return -1;
	return a / b;
}

/* The usable result of mode m at (workload, agents), or NULL. */
static const struct bench_result *find_run(const struct bench_result *r, int n, int mode,
					   int workload, int agents)
{
	for (int i = 0; i < n; i++)
		if (r[i].mode == mode && r[i].workload == workload && r[i].agents == agents &&
		    !r[i].failed)
			return &r[i];
	return NULL;
}

/* The run of mode m that goes with r[i]: the latest one before it in the
 * same step (same workload and agent count; an agent count given twice
 * makes two steps), the best by rate when the step ran the mode several
 * times in a row (a pool sweep), or NULL when there is none or all failed. */
static const struct bench_result *step_run(const struct bench_result *r, int i, int mode)
{
	const struct bench_result *best = NULL;
	bool seen = false;

	/* Runs of one mode next to each other in one step are one sweep
	 * (--bouncer-pools): the best of them stands for the mode. */
	for (int j = i - 1; j >= 0; j--) {
		if (r[j].workload != r[i].workload || r[j].agents != r[i].agents)
			break;
		if (r[j].mode != mode) {
			if (seen)
				break;
			continue;
		}
		seen = true;
		if (!r[j].failed && (!best || r[j].rate > best->rate))
			best = &r[j];
	}
	return best;
}

int bench_ratios(const struct bench_result *r, int n, struct bench_ratio_row *out, int max)
{
	int rows = 0;

	for (int i = 0; i < n && rows < max; i++) {
		const struct bench_result *b = &r[i], *d, *p;
		struct bench_ratio_row *row;

		if (b->mode != BENCH_BROKER || b->failed)
			continue;
		d = step_run(r, i, BENCH_DIRECT);
		p = step_run(r, i, BENCH_PGBOUNCER);
		if (!d && !p)
			continue;
		row = &out[rows++];
		row->workload = b->workload;
		row->agents = b->agents;
		row->vs_direct_rate = d ? bench_ratio(b->rate, d->rate) : -1;
		row->vs_direct_p50 = d ? bench_ratio((double)b->p50_us, (double)d->p50_us) : -1;
		row->vs_direct_p99 = d ? bench_ratio((double)b->p99_us, (double)d->p99_us) : -1;
		row->vs_bouncer_rate = p ? bench_ratio(b->rate, p->rate) : -1;
		row->vs_bouncer_p50 = p ? bench_ratio((double)b->p50_us, (double)p->p50_us) : -1;
		row->vs_bouncer_p99 = p ? bench_ratio((double)b->p99_us, (double)p->p99_us) : -1;
	}
	return rows;
}

int bench_epoll_ratios(const struct bench_result *r, int n, struct bench_epoll_row *out,
		       int max)
{
	int rows = 0;

	for (int i = 0; i < n && rows < max; i++) {
		const struct bench_result *e = &r[i], *u, *p;
		struct bench_epoll_row *row;

		if (e->mode != BENCH_BROKER_EPOLL || e->failed)
			continue;
		u = step_run(r, i, BENCH_BROKER);
		p = step_run(r, i, BENCH_PGBOUNCER);
		if (!u && !p)
			continue;
		row = &out[rows++];
		row->workload = e->workload;
		row->agents = e->agents;
		row->vs_uring_rate = u ? bench_ratio(e->rate, u->rate) : -1;
		row->vs_uring_p50 = u ? bench_ratio((double)e->p50_us, (double)u->p50_us) : -1;
		row->vs_uring_p99 = u ? bench_ratio((double)e->p99_us, (double)u->p99_us) : -1;
		row->vs_bouncer_rate = p ? bench_ratio(e->rate, p->rate) : -1;
	}
	return rows;
}

void bench_fmt_ms(char *buf, size_t n, uint64_t us)
{
	double ms = (double)us / 1000.0;

	if (ms < 1)
		snprintf(buf, n, "%.3f", ms);
	else if (ms < 10)
		snprintf(buf, n, "%.2f", ms);
	else if (ms < 100)
		snprintf(buf, n, "%.1f", ms);
	else
		snprintf(buf, n, "%.0f", ms);
}

static void fmt_ratio(char *buf, size_t n, double v)
{
	if (v < 0)
		snprintf(buf, n, "—");
	else
		snprintf(buf, n, "%.2f×", v);
}

static void fmt_cpu(char *buf, size_t n, double s)
{
	if (s < 0)
		snprintf(buf, n, "—");
	else
		snprintf(buf, n, "%.2f", s);
}

/* Total CPU microseconds per operation, -1 when a part is unknown. */
static double cpu_per_op_us(const struct bench_result *r)
{
	double cpu = r->cpu_pg_s + r->cpu_agents_s;

	if (r->mode != BENCH_DIRECT)
		cpu += r->cpu_pooler_s;
	if (!r->ops || r->cpu_pg_s < 0 || r->cpu_agents_s < 0 ||
	    (r->mode != BENCH_DIRECT && r->cpu_pooler_s < 0))
		return -1;
	return cpu * 1e6 / (double)r->ops;
}

/* The epoll loop's cost: broker-epoll ÷ broker (io_uring), ÷ pgbouncer. */
static void write_epoll_ratios(FILE *f, const struct bench_result *r, int n)
{
	struct bench_epoll_row rows[BENCH_MAX_RUNS];
	int nrows = bench_epoll_ratios(r, n, rows, BENCH_MAX_RUNS);

	if (nrows == 0)
		return;
	fprintf(f, "\n## broker-epoll ÷ broker (io_uring), broker-epoll ÷ pgbouncer\n\n");
	fprintf(f, "| workload | agents | ÷ io_uring: rate | p50 | p99 | ÷ pgbouncer: rate |\n");
	fprintf(f, "|---|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nrows; i++) {
		char a[4][24];

		fmt_ratio(a[0], sizeof(a[0]), rows[i].vs_uring_rate);
		fmt_ratio(a[1], sizeof(a[1]), rows[i].vs_uring_p50);
		fmt_ratio(a[2], sizeof(a[2]), rows[i].vs_uring_p99);
		fmt_ratio(a[3], sizeof(a[3]), rows[i].vs_bouncer_rate);
		fprintf(f, "| %s | %d | %s | %s | %s | %s |\n", bench_workload_name(rows[i].workload),
			rows[i].agents, a[0], a[1], a[2], a[3]);
	}
}

/* The mode, and its pool when it is not the report's (a pool sweep). */
static const char *run_name(const struct bench_result *x, int pool_size, char *buf,
			    size_t len)
{
	if (x->mode == BENCH_DIRECT || x->pool_size == pool_size)
		return bench_mode_name(x->mode);
	snprintf(buf, len, "%s (pool %d)", bench_mode_name(x->mode), x->pool_size);
	return buf;
}

void bench_write_report(FILE *f, const struct bench_machine *m, const struct bench_opts *o,
			int pool_size, const struct bench_result *r, int n,
			const char *const *notes, int nnotes)
{
	struct bench_ratio_row rows[BENCH_MAX_RUNS];
	int nrows = bench_ratios(r, n, rows, BENCH_MAX_RUNS);

	fprintf(f, "## Machine\n\n");
	fprintf(f, "- CPU: %ld × %s\n", m->ncpu, m->cpu[0] ? m->cpu : "unknown");
	fprintf(f, "- memory: %.1f GiB\n", (double)m->mem_mib / 1024.0);
	fprintf(f, "- kernel: %s\n", m->kernel);
	fprintf(f, "- PostgreSQL: %s\n", m->postgresql);
	fprintf(f, "- PgBouncer: %s\n", m->pgbouncer[0] ? m->pgbouncer : "not installed");
	fprintf(f, "- date: %s\n", m->date);
	if (m->loadavg[0])
		fprintf(f, "- load average at the start (1, 5, 15 min): %s\n", m->loadavg);
	fputc('\n', f);

	fprintf(f, "## Settings\n\n");
	fprintf(f, "%.3g s measured per run after %.3g s of warm-up; pool size %d (broker: "
		"min = max = %d; pgbouncer: transaction mode, %d server connections); "
		"direct: one libpq connection per agent. Latency is per operation, "
		"from a log histogram (an estimate is at most 25 %% above the true value).\n\n",
		o->duration_s, o->warmup_s, pool_size, pool_size, pool_size);

	fprintf(f, "## Results\n\n");
	fprintf(f, "| workload | agents | mode | rate | p50 ms | p95 ms | p99 ms | max ms "
		"| errors | backends | CPU s pooler | CPU s PostgreSQL | CPU s agents "
		"| CPU µs/op |\n");
	fprintf(f, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < n; i++) {
		const struct bench_result *x = &r[i];
		char p50[16], p95[16], p99[16], mx[16], c1[16], c2[16], c3[16], cop[24];
		char mname[48];
		double per = cpu_per_op_us(x);

		if (x->failed) {
			fprintf(f, "| %s | %d | %s | failed: %s |  |  |  |  | %" PRIu64
				" |  |  |  |  |  |\n", bench_workload_name(x->workload), x->agents,
				run_name(x, pool_size, mname, sizeof(mname)), x->note, x->errors);
			continue;
		}
		bench_fmt_ms(p50, sizeof(p50), x->p50_us);
		bench_fmt_ms(p95, sizeof(p95), x->p95_us);
		bench_fmt_ms(p99, sizeof(p99), x->p99_us);
		bench_fmt_ms(mx, sizeof(mx), x->max_us);
		fmt_cpu(c1, sizeof(c1), x->mode == BENCH_DIRECT ? -1 : x->cpu_pooler_s);
		fmt_cpu(c2, sizeof(c2), x->cpu_pg_s);
		fmt_cpu(c3, sizeof(c3), x->cpu_agents_s);
		if (per < 0)
			snprintf(cop, sizeof(cop), "—");
		else
			snprintf(cop, sizeof(cop), "%.0f", per);
		fprintf(f, "| %s | %d | %s | %.0f %s | %s | %s | %s | %s | %" PRIu64
			" | %d | %s | %s | %s | %s |\n", bench_workload_name(x->workload),
			x->agents, run_name(x, pool_size, mname, sizeof(mname)), x->rate,
			bench_workload_unit(x->workload), p50, p95, p99, mx, x->errors,
			x->backends, c1, c2, c3, cop);
	}

	if (nrows > 0) {
		fprintf(f, "\n## broker ÷ direct, broker ÷ pgbouncer\n\n");
		fprintf(f, "Rate: above 1 is better for the broker; latency: below 1 is better.\n\n");
		fprintf(f, "| workload | agents | ÷ direct: rate | p50 | p99 "
			"| ÷ pgbouncer: rate | p50 | p99 |\n");
		fprintf(f, "|---|---:|---:|---:|---:|---:|---:|---:|\n");
		for (int i = 0; i < nrows; i++) {
			char a[6][24];

			fmt_ratio(a[0], sizeof(a[0]), rows[i].vs_direct_rate);
			fmt_ratio(a[1], sizeof(a[1]), rows[i].vs_direct_p50);
			fmt_ratio(a[2], sizeof(a[2]), rows[i].vs_direct_p99);
			fmt_ratio(a[3], sizeof(a[3]), rows[i].vs_bouncer_rate);
			fmt_ratio(a[4], sizeof(a[4]), rows[i].vs_bouncer_p50);
			fmt_ratio(a[5], sizeof(a[5]), rows[i].vs_bouncer_p99);
			fprintf(f, "| %s | %d | %s | %s | %s | %s | %s | %s |\n",
				bench_workload_name(rows[i].workload), rows[i].agents,
				a[0], a[1], a[2], a[3], a[4], a[5]);
		}
	}
	write_epoll_ratios(f, r, n);
	if (nnotes > 0) {
		fprintf(f, "\n");
		for (int i = 0; i < nnotes; i++)
			fprintf(f, "Note: %s\n", notes[i]);
	}
}

/* A number, or null when negative (unknown). */
static void json_num(FILE *f, double v)
{
	if (v < 0 || v != v)
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

void bench_write_json(FILE *f, const struct bench_machine *m, const struct bench_opts *o,
		      int pool_size, const struct bench_result *r, int n,
		      const char *const *notes, int nnotes)
{
	struct bench_ratio_row rows[BENCH_MAX_RUNS];
	int nrows = bench_ratios(r, n, rows, BENCH_MAX_RUNS);

	fprintf(f, "{\n  \"tool\": \"poolbench\",\n  \"format\": 1,\n  \"machine\": {\n");
	fprintf(f, "    \"nproc\": %ld,\n    \"mem_mib\": %lld,\n    \"cpu\": ", m->ncpu,
		m->mem_mib);
	json_str(f, m->cpu);
	fprintf(f, ",\n    \"kernel\": ");
	json_str(f, m->kernel);
	fprintf(f, ",\n    \"postgresql\": ");
	json_str(f, m->postgresql);
	fprintf(f, ",\n    \"pgbouncer\": ");
	if (m->pgbouncer[0])
		json_str(f, m->pgbouncer);
	else
		fputs("null", f);
	fprintf(f, ",\n    \"date\": ");
	json_str(f, m->date);
	fprintf(f, ",\n    \"loadavg\": ");
	json_str(f, m->loadavg);
	fprintf(f, "\n  },\n  \"settings\": {\n    \"duration_s\": %.6g,\n    \"warmup_s\": "
		"%.6g,\n    \"pool_size\": %d\n  },\n  \"runs\": [", o->duration_s, o->warmup_s,
		pool_size);
	for (int i = 0; i < n; i++) {
		const struct bench_result *x = &r[i];

		fprintf(f, "%s\n    {\"mode\": \"%s\", \"workload\": \"%s\", \"agents\": %d, "
			"\"pool_size\": %d, \"failed\": %s,\n     \"seconds\": %.6g, \"ops\": %"
			PRIu64 ", \"unit\": \"%s\", \"rate\": %.6g, \"errors\": %" PRIu64
			", \"connect_errors\": %" PRIu64 ",\n     \"avg_us\": %.6g, \"p50_us\": %"
			PRIu64 ", \"p95_us\": %" PRIu64 ", \"p99_us\": %" PRIu64 ", \"max_us\": %"
			PRIu64 ", \"backends\": %d,\n     \"cpu_pooler_s\": ",
			i ? "," : "", bench_mode_name(x->mode), bench_workload_name(x->workload),
			x->agents, x->pool_size, x->failed ? "true" : "false", x->seconds, x->ops,
			bench_workload_unit(x->workload), x->rate, x->errors, x->connect_errors,
			x->avg_us, x->p50_us, x->p95_us, x->p99_us, x->max_us, x->backends);
		json_num(f, x->mode == BENCH_DIRECT ? -1 : x->cpu_pooler_s);
		fprintf(f, ", \"cpu_postgresql_s\": ");
		json_num(f, x->cpu_pg_s);
		fprintf(f, ", \"cpu_agents_s\": ");
		json_num(f, x->cpu_agents_s);
		fprintf(f, ",\n     \"note\": ");
		json_str(f, x->note);
		fputc('}', f);
	}
	fprintf(f, "\n  ],\n  \"ratios\": [");
	for (int i = 0; i < nrows; i++) {
		const struct bench_ratio_row *w = &rows[i];

		fprintf(f, "%s\n    {\"workload\": \"%s\", \"agents\": %d,\n     "
			"\"broker_vs_direct\": {\"rate\": ", i ? "," : "",
			bench_workload_name(w->workload), w->agents);
		json_num(f, w->vs_direct_rate);
		fputs(", \"p50\": ", f);
		json_num(f, w->vs_direct_p50);
		fputs(", \"p99\": ", f);
		json_num(f, w->vs_direct_p99);
		fputs("},\n     \"broker_vs_pgbouncer\": {\"rate\": ", f);
		json_num(f, w->vs_bouncer_rate);
		fputs(", \"p50\": ", f);
		json_num(f, w->vs_bouncer_p50);
		fputs(", \"p99\": ", f);
		json_num(f, w->vs_bouncer_p99);
		fputs("}}", f);
	}
	fprintf(f, "\n  ],\n  \"notes\": [");
	for (int i = 0; i < nnotes; i++) {
		fputs(i ? ", " : "", f);
		json_str(f, notes[i]);
	}
	fprintf(f, "]\n}\n");
}

/* --- SVG --- */

#define SVG_PANEL_W 460
#define SVG_PANEL_H 300
#define SVG_ML 70    /* margins inside a panel: left, right, top, bottom */
#define SVG_MR 20
#define SVG_MT 34
#define SVG_MB 46
#define SVG_TOP 40   /* legend band */

/* 1, 2 or 5 times a power of ten, at least x. */
static double nice_step(double x)
{
	double p = pow(10, floor(log10(x))), m = x / p;

	return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static void svg_num(char *buf, size_t n, double v)
{
	if (v >= 1e6)
		snprintf(buf, n, "%gM", v / 1e6);
	else if (v >= 1e3)
		snprintf(buf, n, "%gk", v / 1e3);
	else
		snprintf(buf, n, "%g", v);
}

/* The distinct agent counts of a workload's runs, ascending. */
static int agent_axis(const struct bench_result *r, int n, int workload, int *xs)
{
	int nx = 0;

	for (int i = 0; i < n; i++) {
		int a = r[i].agents, j;

		if (r[i].workload != workload || r[i].failed)
			continue;
		for (j = 0; j < nx && xs[j] != a; j++)
			;
		if (j < nx || nx >= BENCH_MAX_LIST)
			continue;
		for (j = nx++; j > 0 && xs[j - 1] > a; j--)
			xs[j] = xs[j - 1];
		xs[j] = a;
	}
	return nx;
}

/* One panel at (x0, y0): metric 0 throughput (linear), 1 p99 in ms (log). */
static void svg_panel(FILE *f, const struct bench_result *r, int n, int workload, int metric,
		      int x0, int y0)
{
	int xs[BENCH_MAX_LIST], nx = agent_axis(r, n, workload, xs);
	double lo = 0, hi = 0, pw = SVG_PANEL_W - SVG_ML - SVG_MR, ph = SVG_PANEL_H - SVG_MT - SVG_MB;
	double left = x0 + SVG_ML, bottom = y0 + SVG_PANEL_H - SVG_MB, minv = 0;
	char lab[32];

	for (int i = 0; i < n; i++) {
		double v = metric ? (double)r[i].p99_us / 1000.0 : r[i].rate;

		if (r[i].workload != workload || r[i].failed || !(v > 0))
			continue;
		if (v > hi)
			hi = v;
		if (minv == 0 || v < minv)
			minv = v;
	}
	fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"t\">%s: %s%s</text>\n", x0 + SVG_ML, y0 + 20,
		bench_workload_name(workload),
		metric ? "p99 latency, ms (log scale)" : "throughput, ",
		metric ? "" : bench_workload_unit(workload));
	if (!nx || hi <= 0) {
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">no data</text>\n", left + pw / 2,
			bottom - ph / 2);
		return;
	}
	if (metric) {
		lo = pow(10, floor(log10(minv)));
		hi = pow(10, ceil(log10(hi)));
		if (hi <= lo)
			hi = lo * 10;
		for (double g = lo; g <= hi * 1.0001; g *= 10) {
			double y = bottom - (log10(g) - log10(lo)) / (log10(hi) - log10(lo)) * ph;

			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"g\"/>\n"
				"<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">%g</text>\n",
				left, y, left + pw, y, left - 6, y + 4, g);
		}
	} else {
		double step = nice_step(hi / 4);

		hi = ceil(hi / step) * step;
		for (double g = 0; g <= hi * 1.0001; g += step) {
			double y = bottom - g / hi * ph;

			svg_num(lab, sizeof(lab), g);
			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"g\"/>\n"
				"<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">%s</text>\n",
				left, y, left + pw, y, left - 6, y + 4, lab);
		}
	}
	/* Agent counts are evenly spaced categories: 1, 10, 50, 200 read better so. */
	for (int j = 0; j < nx; j++) {
		double x = left + (nx == 1 ? pw / 2 : pw * (0.05 + 0.9 * j / (nx - 1)));

		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%d</text>\n", x, bottom + 16,
			xs[j]);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">agents</text>\n", left + pw / 2,
		bottom + 36);
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"f\"/>\n",
		left, bottom - ph, pw, ph);

	for (int m = 0; m < BENCH_NMODES; m++) {
		double px[nx], py[nx];
		int np = 0;

		/* Place each mode's points once; draw the line, then the dots. */
		for (int j = 0; j < nx; j++) {
			const struct bench_result *x = find_run(r, n, m, workload, xs[j]);
			double v;

			if (!x)
				continue;
			v = metric ? (double)x->p99_us / 1000.0 : x->rate;
			if (!(v > 0))
				continue;
			px[np] = left + (nx == 1 ? pw / 2 : pw * (0.05 + 0.9 * j / (nx - 1)));
			py[np] = metric ? bottom - (log10(v) - log10(lo)) / (log10(hi) - log10(lo)) * ph
					: bottom - v / hi * ph;
			np++;
		}
		if (np) {
			fprintf(f, "<polyline class=\"l\" stroke=\"%s\" points=\"", mode_colors[m]);
			for (int i = 0; i < np; i++)
				fprintf(f, "%s%.1f,%.1f", i ? " " : "", px[i], py[i]);
			fputs("\"/>\n", f);
		}
		for (int i = 0; i < np; i++)
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", px[i],
				py[i], mode_colors[m]);
	}
}

void bench_write_svg(FILE *f, const struct bench_result *r, int n)
{
	int ws[BENCH_NWORKLOADS], nw = 0, w, h;

	for (int i = 0; i < n; i++) {
		int j;

		for (j = 0; j < nw && ws[j] != r[i].workload; j++)
			;
		if (j == nw && r[i].workload >= 0 && r[i].workload < BENCH_NWORKLOADS)
			ws[nw++] = r[i].workload;
	}
	w = 2 * SVG_PANEL_W;
	h = SVG_TOP + (nw ? nw : 1) * SVG_PANEL_H;
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		"viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", w, h, w, h);
	fprintf(f, "<style>.t{font-size:14px;font-weight:bold}.g{stroke:#ddd}"
		".f{fill:none;stroke:#999}.yl{text-anchor:end}.xl{text-anchor:middle}"
		".l{fill:none;stroke-width:2}</style>\n");
	fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", w, h);
	fprintf(f, "<text x=\"%d\" y=\"24\" class=\"t\">poolbench</text>\n", SVG_ML);
	for (int m = 0; m < BENCH_NMODES; m++) {
		int x = 220 + m * 140;

		fprintf(f, "<line x1=\"%d\" y1=\"20\" x2=\"%d\" y2=\"20\" class=\"l\" stroke=\"%s\"/>"
			"<text x=\"%d\" y=\"24\">%s</text>\n", x, x + 24, mode_colors[m], x + 30,
			mode_names[m]);
	}
	for (int i = 0; i < nw; i++) {
		svg_panel(f, r, n, ws[i], 0, 0, SVG_TOP + i * SVG_PANEL_H);
		svg_panel(f, r, n, ws[i], 1, SVG_PANEL_W, SVG_TOP + i * SVG_PANEL_H);
	}
	fprintf(f, "</svg>\n");
}

int bench_parse_proc_stat(const char *line, int *ppid, uint64_t *ticks, uint64_t *child_ticks)
{
	/* "pid (comm) state ppid ...": comm may hold spaces and parentheses,
	 * so fields are counted from the last ')'. ppid is field 4; utime,
	 * stime, cutime, cstime are fields 14 to 17 (v[10] to v[13]). */
	const char *p = strrchr(line, ')');
	long long v[14];
	char state;

	if (!p)
		return -1;
	if (sscanf(p + 1, " %c %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld",
		   &state, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
		   &v[10], &v[11], &v[12], &v[13]) != 15)
		return -1;
	if (v[0] < 0 || v[10] < 0 || v[11] < 0 || v[12] < 0 || v[13] < 0)
		return -1;
	*ppid = (int)v[0];
	*ticks = (uint64_t)(v[10] + v[11]);
	*child_ticks = (uint64_t)(v[12] + v[13]);
	return 0;
}
