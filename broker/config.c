/* Broker configuration: the table of keys, their defaults, and reading
 * one value (config_set). Reading the sources is config_load.c, showing
 * the settings config_show.c. */
#include "config.h"
#include "config_keys.h"
#include "errbuf.h"
#include "rundir.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>


#define INT_KEY(f, e, k, d, lo, hi, h) \
	{ .name = #f, .env = e, .kind = k, .off = CFG_OFF(f), .def = d, \
	  .min = lo, .max = hi, .help = h }

/* 0 or lo..hi: a small value would break, 0 turns the feature off */
#define INT_KEY_OR_0(f, e, k, d, lo, hi, h) \
	{ .name = #f, .env = e, .kind = k, .off = CFG_OFF(f), .def = d, \
	  .min = lo, .max = hi, .zero_ok = 1, .help = h }

/* hi: longest value in bytes, below the buffer size */
#define STR_KEY(f, e, a, d, hi, h) \
	{ .name = #f, .env = e, .kind = KIND_STR, .off = CFG_OFF(f), \
	  .size = sizeof(((struct pgb_config *)0)->f), .def_str = d, .arg = a, \
	  .max = hi, .help = h }

/* one of a fixed list of words */
#define CHOICE_KEY(f, e, d, list, h) \
	{ .name = #f, .env = e, .kind = KIND_STR, .off = CFG_OFF(f), \
	  .size = sizeof(((struct pgb_config *)0)->f), .def_str = d, .arg = d, \
	  .max = sizeof(((struct pgb_config *)0)->f) - 1, .choices = list, .help = h }

static const char *const loop_names[] = { "auto", "io_uring", "epoll", NULL };

_Static_assert(DIR_MAX < sizeof(((struct pgb_config *)0)->dir), "dir buffer");

#define IDS_KEY(f, e, h) \
	{ .name = #f, .env = e, .kind = KIND_IDS, .off = CFG_OFF(f), \
	  .off_n = CFG_OFF(n_##f), .min = 0, .max = UINT_MAX - 1, .help = h }

const struct key_def cfg_keys[] = {
	INT_KEY(pool_size, "POSTGRES_POOL_SIZE", KIND_COUNT, 25, 1, 10000,
		"backends the pool grows to on demand"),
	INT_KEY(min_pool_size, "POSTGRES_MIN_POOL_SIZE", KIND_COUNT, 5, 0, 10000,
		"backends kept open and warm (0 = none)"),
	INT_KEY(max_pool_size, "POSTGRES_MAX_POOL_SIZE", KIND_COUNT, 50, 1, 10000,
		"hard cap; reached only after agents waited reserve_timeout_ms"),
	INT_KEY(reserve_timeout_ms, "PGBROKER_RESERVE_TIMEOUT_MS", KIND_MS, 5000, 1, MS_MAX,
		"wait before the pool grows past pool_size toward max_pool_size"),
	INT_KEY(connection_timeout_ms, "POSTGRES_CONNECTION_TIMEOUT", KIND_MS, 30000, 1, MS_MAX,
		"limit for opening one backend connection"),
	INT_KEY(idle_timeout_ms, "POSTGRES_IDLE_TIMEOUT", KIND_MS, 300000, 0, MS_MAX,
		"close backends idle this long, down to min_pool_size (0 = never)"),
	INT_KEY(acquire_timeout_ms, "POSTGRES_ACQUIRE_TIMEOUT", KIND_MS, 30000, 1, MS_MAX,
		"longest a statement waits for a backend before it fails"),
	INT_KEY(statement_timeout_ms, "POSTGRES_STATEMENT_TIMEOUT", KIND_MS, 60000, 0, MS_MAX,
		"statement_timeout set on every backend (0 = none)"),
	INT_KEY(retry_attempts, "POSTGRES_RETRY_ATTEMPTS", KIND_COUNT, 5, 0, 100,
		"retries of a safely retryable statement (0 = none)"),
	INT_KEY(retry_delay_ms, "POSTGRES_RETRY_DELAY", KIND_MS, 100, 1, MS_MAX,
		"first retry delay; doubles per attempt, with jitter"),
	INT_KEY(retry_max_delay_ms, "POSTGRES_RETRY_MAX_DELAY", KIND_MS, 30000, 1, MS_MAX,
		"upper bound of the retry delay"),
	INT_KEY(keepalive_initial_delay_ms, "POSTGRES_KEEPALIVE_INITIAL_DELAY", KIND_MS,
		10000, 1000, 32767000,
		"TCP keepalive idle time before the first probe (whole seconds count)"),
	INT_KEY(breaker_threshold, "POSTGRES_BREAKER_THRESHOLD", KIND_COUNT, 5, 1, 1000,
		"consecutive failed connects that open the circuit breaker (connects "
		"started together count once)"),
	INT_KEY(breaker_reset_timeout_ms, "POSTGRES_BREAKER_RESET_TIMEOUT", KIND_MS,
		30000, 1, MS_MAX,
		"longest wait between connects while they fail (100 ms doubling up to "
		"this); an open breaker probes at that pace"),
	INT_KEY(validation_interval_ms, "PGBROKER_VALIDATION_INTERVAL_MS", KIND_MS,
		30000, 0, MS_MAX,
		"ping backends idle longer than this, before they are used again (0 = never)"),
	INT_KEY(reset_query_always, "PGBROKER_RESET_QUERY_ALWAYS", KIND_BOOL, 0, 0, 1,
		"DISCARD ALL whenever a backend returns to the pool, not only after session state"),
	/* Shorter than a connect, a backend would be closed before it served
	 * anything, and the pool would only reconnect. */
	INT_KEY_OR_0(max_connection_lifetime_ms, "PGBROKER_MAX_CONNECTION_LIFETIME_MS", KIND_MS,
		3600000, 1000, MS_MAX,
		"close a backend this old once it is idle (0 = never)"),
	INT_KEY(channel_size_kb, "PGBROKER_CHANNEL_SIZE_KB", KIND_KB_POW2, 256, 16, 65536,
		"size of each agent ring"),
	INT_KEY(max_request_kb, "PGBROKER_MAX_REQUEST_KB", KIND_KB, 65536, 64, 1048576,
		"largest statement plus parameters accepted, and the most one agent may have queued"),
	INT_KEY(max_memory_mb, "PGBROKER_MAX_MEMORY_MB", KIND_COUNT, 1024, 8, 1048576,
		"memory the broker holds for all agents (requests, results not yet read); "
		"an agent holding half of it gets PB008 for new work, a row over a quarter "
		"of it PB004; reloadable"),
	INT_KEY(max_agents, "PGBROKER_MAX_AGENTS", KIND_COUNT, 4096, 1, 65536,
		"agents registered at once"),
	INT_KEY(max_inflight_per_agent, "PGBROKER_MAX_INFLIGHT_PER_AGENT", KIND_COUNT,
		256, 1, 65536,
		"statements one agent may have outstanding"),
	INT_KEY_OR_0(max_backends_per_agent, "PGBROKER_MAX_BACKENDS_PER_AGENT", KIND_COUNT,
		0, 1, 10000,
		"backends one agent may hold at once: its independent statements plus its "
		"serial statement or transaction (0 = half of max_pool_size, at least 1); "
		"its other statements wait their turn"),
	INT_KEY_OR_0(max_agents_per_uid, "PGBROKER_MAX_AGENTS_PER_UID", KIND_COUNT, 0, 1, 65536,
		"agents one uid may have registered or registering at once (0 = max_agents)"),
	INT_KEY(hello_timeout_ms, "PGBROKER_HELLO_TIMEOUT_MS", KIND_MS, 5000, 10, 600000,
		"close a connection that has not registered this long after it connected"),
	INT_KEY(max_waiting, "PGBROKER_MAX_WAITING", KIND_COUNT, 100000, 1, 10000000,
		"statements waiting for a backend, all agents together"),
	INT_KEY(send_timeout_ms, "PGBROKER_SEND_TIMEOUT_MS", KIND_MS, 30000, 1, MS_MAX,
		"disconnect an agent that leaves its responses unread this long"),
	INT_KEY(idle_in_transaction_timeout_ms, "PGBROKER_IDLE_IN_TRANSACTION_TIMEOUT_MS", KIND_MS,
		60000, 0, MS_MAX,
		"idle_in_transaction_session_timeout on every backend: bounds a transaction whose agent stalls (0 = none)"),
	INT_KEY(health_interval_ms, "PGBROKER_HEALTH_INTERVAL_MS", KIND_MS, 1000, 10, 3600000,
		"how often pool health is checked and published"),
	INT_KEY(health_util_warn_pct, "PGBROKER_HEALTH_UTIL_WARN_PCT", KIND_COUNT, 75, 1, 100,
		"pool utilization above this is degraded"),
	INT_KEY(health_util_crit_pct, "PGBROKER_HEALTH_UTIL_CRIT_PCT", KIND_COUNT, 90, 1, 100,
		"pool utilization above this is unhealthy"),
	INT_KEY(health_waiting_warn, "PGBROKER_HEALTH_WAITING_WARN", KIND_COUNT, 5, 0, 10000000,
		"waiting statements above this are degraded"),
	INT_KEY(health_waiting_crit, "PGBROKER_HEALTH_WAITING_CRIT", KIND_COUNT, 10, 0, 10000000,
		"waiting statements above this are unhealthy"),
	INT_KEY(health_success_warn_pct, "PGBROKER_HEALTH_SUCCESS_WARN_PCT", KIND_COUNT, 99, 0, 100,
		"success rate below this is degraded"),
	INT_KEY(health_success_crit_pct, "PGBROKER_HEALTH_SUCCESS_CRIT_PCT", KIND_COUNT, 95, 0, 100,
		"success rate below this is unhealthy"),
	INT_KEY(health_acquire_warn_ms, "PGBROKER_HEALTH_ACQUIRE_WARN_MS", KIND_MS, 100, 0, MS_MAX,
		"average acquire wait above this is degraded"),
	INT_KEY(health_acquire_crit_ms, "PGBROKER_HEALTH_ACQUIRE_CRIT_MS", KIND_MS, 500, 0, MS_MAX,
		"average acquire wait above this is unhealthy"),
	INT_KEY(shutdown_timeout_ms, "PGBROKER_SHUTDOWN_TIMEOUT_MS", KIND_MS, 30000, 0, MS_MAX,
		"SIGTERM: how long statements and transactions in flight may finish"),
	INT_KEY(log_level, "PGBROKER_LOG_LEVEL", KIND_LEVEL, 2, 0, 3,
		"0 error, 1 warn, 2 info, 3 debug"),
	INT_KEY(syslog, "PGBROKER_SYSLOG", KIND_BOOL, 0, 0, 1,
		"log to syslog (daemon facility) instead of stderr"),
	CHOICE_KEY(loop, "PGBROKER_LOOP", "auto", loop_names,
		"event loop: io_uring, or epoll where io_uring is blocked, off or before Linux 6.7"),
	/* The default shown; the one used is rundir_default_for (config_defaults). */
	STR_KEY(dir, "PGBROKER_DIR", "DIR", "/run/pgbroker", DIR_MAX,
		"run directory: registration socket, lock, stats segment"),
	STR_KEY(dsn, "PGBROKER_DSN", "CONNINFO", "",
		sizeof(((struct pgb_config *)0)->dsn) - 1,
		"libpq conninfo of the database (empty = libpq's PG* variables)"),
	IDS_KEY(allow_uids, "PGBROKER_ALLOW_UIDS",
		"uids allowed to register besides the broker's own"),
	IDS_KEY(allow_gids, "PGBROKER_ALLOW_GIDS",
		"gids whose members may register"),
};

const size_t cfg_nkeys = sizeof(cfg_keys) / sizeof(cfg_keys[0]);

const char *const cfg_level_names[4] = { "error", "warn", "info", "debug" };
const char *const cfg_bool_names[4][2] = {
	{ "off", "on" }, { "false", "true" }, { "no", "yes" }, { "0", "1" },
};

/* Copy at most QUOTE_MAX bytes of s[0..len) for an error message, escaping
 * what is not printable and marking a cut with "...". */
void cfg_quote(char *out, size_t outlen, const char *s, size_t len)
{
	size_t o = 0, i;

	for (i = 0; i < len && i < QUOTE_MAX && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (isprint(c)) {
			out[o++] = (char)c;
		} else {
			snprintf(out + o, outlen - o, "\\x%02x", c);
			o += 4;
		}
	}
	if (i < len && o + 4 <= outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* Key names compare with '-' and '_' as the same character. */
int cfg_key_eq(const char *name, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char c = s[i] == '-' ? '_' : s[i];

		if (name[i] == '\0' || name[i] != c)
			return 0;
	}
	return name[len] == '\0';
}

const struct key_def *cfg_key_find(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < cfg_nkeys; i++)
		if (cfg_key_eq(cfg_keys[i].name, s, len))
			return &cfg_keys[i];
	return NULL;
}

static int *int_ptr(struct pgb_config *cfg, const struct key_def *k)
{
	return (int *)((char *)cfg + k->off);
}

int cfg_int_get(const struct pgb_config *cfg, const struct key_def *k)
{
	return *(const int *)((const char *)cfg + k->off);
}

static char *str_ptr(struct pgb_config *cfg, const struct key_def *k)
{
	return (char *)cfg + k->off;
}

const char *cfg_str_get(const struct pgb_config *cfg, const struct key_def *k)
{
	return (const char *)cfg + k->off;
}

static unsigned int *ids_ptr(struct pgb_config *cfg, const struct key_def *k, int **n)
{
	*n = (int *)((char *)cfg + k->off_n);
	return (unsigned int *)((char *)cfg + k->off);
}

const unsigned int *cfg_ids_get(const struct pgb_config *cfg,
				   const struct key_def *k, int *n)
{
	*n = *(const int *)((const char *)cfg + k->off_n);
	return (const unsigned int *)((const char *)cfg + k->off);
}

/* Decimal digits only: no sign, no blanks, no hex. -1 on junk or overflow. */
int cfg_parse_num(const char *s, size_t len, long long *out)
{
	long long v = 0;
	size_t i;

	if (len == 0)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		int d = s[i] - '0';

		if (d < 0 || d > 9)
			return -EINVAL;
		if (v > (LLONG_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int cfg_is_pow2(long long v)
{
	return v > 0 && (v & (v - 1)) == 0;
}

/* "allowed: ..." text of one key, for errors and the usage text. */
void cfg_describe_allowed(const struct key_def *k, char *buf, size_t len)
{
	if (k->zero_ok) {
		size_t n = (size_t)snprintf(buf, len, "0, or ");

		if (n >= len)
			return;
		buf += n;
		len -= n;
	}
	switch (k->kind) {
	case KIND_COUNT:
		snprintf(buf, len, "integer %lld..%lld", k->min, k->max);
		break;
	case KIND_MS:
		snprintf(buf, len, "integer %lld..%lld, milliseconds", k->min, k->max);
		break;
	case KIND_KB:
		snprintf(buf, len, "integer %lld..%lld, KiB", k->min, k->max);
		break;
	case KIND_KB_POW2:
		snprintf(buf, len, "power of two %lld..%lld, KiB", k->min, k->max);
		break;
	case KIND_LEVEL:
		snprintf(buf, len, "%lld..%lld or error, warn, info, debug",
			 k->min, k->max);
		break;
	case KIND_BOOL:
		snprintf(buf, len, "on, off, true, false, yes, no, 1, 0");
		break;
	case KIND_STR:
		if (k->choices) {
			size_t n = 0;

			for (int i = 0; k->choices[i] && n < len; i++)
				n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "",
						      k->choices[i]);
		} else if (k->def_str[0])
			snprintf(buf, len, "non-empty string of at most %lld bytes",
				 k->max);
		else
			snprintf(buf, len, "string of at most %lld bytes", k->max);
		break;
	case KIND_IDS:
		snprintf(buf, len, "comma separated ids 0..%lld, at most %d",
			 k->max, CONFIG_MAX_IDS);
		break;
	}
}

int cfg_is_choice(const struct key_def *k, const char *value)
{
	for (int i = 0; k->choices[i]; i++)
		if (strcmp(value, k->choices[i]) == 0)
			return 1;
	return 0;
}

/* Reports "invalid value ..." for k into msg (without the key name); -1. */
int cfg_bad_value(const struct key_def *k, const char *value, char *msg,
		     size_t msglen)
{
	char q[QUOTE_MAX * 4 + 8], allowed[128];

	cfg_quote(q, sizeof(q), value, strlen(value));
	cfg_describe_allowed(k, allowed, sizeof(allowed));
	errbuf_set(msg, msglen, "invalid value \"%s\" (allowed: %s)", q, allowed);
	return -EINVAL;
}

int cfg_parse_int_value(const struct key_def *k, const char *value, long long *out)
{
	long long v;
	size_t i;

	if (k->kind == KIND_BOOL) {
		for (i = 0; i < sizeof(cfg_bool_names) / sizeof(cfg_bool_names[0]); i++)
			for (int b = 0; b < 2; b++)
				if (strcasecmp(value, cfg_bool_names[i][b]) == 0) {
					*out = b;
					return 0;
				}
		return -EINVAL;
	}
	if (cfg_parse_num(value, strlen(value), &v) == 0) {
		if ((v < k->min || v > k->max) && !(v == 0 && k->zero_ok))
			return -EINVAL;
		if (k->kind == KIND_KB_POW2 && !cfg_is_pow2(v))
			return -EINVAL;
		*out = v;
		return 0;
	}
	if (k->kind != KIND_LEVEL)
		return -EINVAL;
	for (i = 0; i < sizeof(cfg_level_names) / sizeof(cfg_level_names[0]); i++) {
		if (strcasecmp(value, cfg_level_names[i]) == 0) {
			*out = (long long)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* "1000, 1001": entries are strict numbers, blanks around commas allowed,
 * the empty string is the empty list. */
static int parse_ids(const struct key_def *k, const char *value,
		     unsigned int *ids, int *n)
{
	const char *p = value;
	int count = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0') {
		*n = 0;
		return 0;
	}
	for (;;) {
		const char *end = p;
		size_t len;
		long long v;

		while (*end && *end != ',' && *end != ' ' && *end != '\t')
			end++;
		len = (size_t)(end - p);
		if (count == CONFIG_MAX_IDS || cfg_parse_num(p, len, &v) < 0 ||
		    v > k->max)
			return -EINVAL;
		ids[count++] = (unsigned int)v;
		while (*end == ' ' || *end == '\t')
			end++;
		if (*end == '\0')
			break;
		if (*end != ',')
			return -EINVAL;
		p = end + 1;
		while (*p == ' ' || *p == '\t')
			p++;
	}
	*n = count;
	return 0;
}

/* Set k from value; on error msg says why, without naming the key. */
int cfg_key_apply(struct pgb_config *cfg, const struct key_def *k,
		     const char *value, char *msg, size_t msglen)
{
	unsigned int ids[CONFIG_MAX_IDS];
	long long v;
	size_t len;
	int n, *np;

	if (!value) {
		errbuf_set(msg, msglen, "missing value");
		return -EINVAL;
	}
	switch (k->kind) {
	case KIND_STR:
		len = strlen(value);
		if (len > (size_t)k->max || (len == 0 && k->def_str[0]) ||
		    (k->choices && !cfg_is_choice(k, value)))
			return cfg_bad_value(k, value, msg, msglen);
		memcpy(str_ptr(cfg, k), value, len + 1);
		return 0;
	case KIND_IDS:
		if (parse_ids(k, value, ids, &n) < 0)
			return cfg_bad_value(k, value, msg, msglen);
		memcpy(ids_ptr(cfg, k, &np), ids, (size_t)n * sizeof(ids[0]));
		*np = n;
		return 0;
	default:
		if (cfg_parse_int_value(k, value, &v) < 0)
			return cfg_bad_value(k, value, msg, msglen);
		*int_ptr(cfg, k) = (int)v;
		return 0;
	}
}

void config_defaults(struct pgb_config *cfg)
{
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < cfg_nkeys; i++) {
		const struct key_def *k = &cfg_keys[i];

		if (k->kind == KIND_STR)
			snprintf(str_ptr(cfg, k), k->size, "%s", k->def_str);
		else if (k->kind != KIND_IDS)
			*int_ptr(cfg, k) = (int)k->def;
	}
	/* Per user, and the same in libpgbroker and poolstat (PGBROKER_DIR is
	 * the environment layer's). Too long a $XDG_RUNTIME_DIR: /tmp's. */
	rundir_default_for(geteuid(), getenv("XDG_RUNTIME_DIR"), cfg->dir, DIR_MAX + 1);
	cfg->ready_fd = -1;
}

int cfg_unknown_key(const char *key, size_t len, char *msg, size_t msglen)
{
	char q[QUOTE_MAX * 4 + 8];

	cfg_quote(q, sizeof(q), key, len);
	errbuf_set(msg, msglen, "unknown key \"%s\"", q);
	return -EINVAL;
}

int config_set(struct pgb_config *cfg, const char *key, const char *value,
	       char *err, size_t errlen)
{
	const struct key_def *k = cfg_key_find(key, strlen(key));
	char msg[MSG_MAX];

	if (!k)
		return cfg_unknown_key(key, strlen(key), err, errlen);
	if (cfg_key_apply(cfg, k, value, msg, sizeof(msg)) < 0) {
		errbuf_set(err, errlen, "%s: %s", k->name, msg);
		return -EINVAL;
	}
	return 0;
}

