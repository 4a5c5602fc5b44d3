/* Broker configuration: one table of keys drives defaults, parsing of the
 * config file, the environment and the flags, printing and the usage text. */
#include "config.h"
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

#define MS_MAX		604800000LL	/* one week */
#define LINE_MAX_LEN	8192		/* longest config file line */
#define QUOTE_MAX	64		/* value characters echoed in errors */
#define MSG_MAX		512
#define SOCK_NAME	"/pgbroker.sock"

/* The id lists are stored through one code path for both kinds. */
_Static_assert(__builtin_types_compatible_p(uid_t, unsigned int) &&
	       __builtin_types_compatible_p(gid_t, unsigned int),
	       "uid_t and gid_t are expected to be unsigned int");

enum key_kind {
	KIND_COUNT,	/* plain integer */
	KIND_MS,	/* integer milliseconds */
	KIND_KB,	/* integer KiB */
	KIND_KB_POW2,	/* integer KiB, a power of two */
	KIND_LEVEL,	/* log level: 0..3 or its name */
	KIND_BOOL,	/* on/off; a flag without a value means on */
	KIND_STR,	/* string in a fixed buffer */
	KIND_IDS,	/* comma separated uid/gid list */
};

struct key_def {
	const char *name;
	const char *env;
	enum key_kind kind;
	size_t off;		/* the value (int, char[] or id array) */
	size_t size;		/* KIND_STR: buffer size */
	size_t off_n;		/* KIND_IDS: its count */
	long long def;
	const char *def_str;	/* KIND_STR */
	long long min, max;
	int zero_ok;		/* 0 (none, never) is allowed besides min..max */
	const char *arg;	/* KIND_STR: what the value is, for the usage text */
	const char *const *choices; /* KIND_STR: the values allowed, NULL-terminated */
	const char *help;
};

#define CFG_OFF(f)	offsetof(struct pgb_config, f)

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

/* dir + SOCK_NAME + NUL must fit in sun_path. */
#define DIR_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - sizeof(SOCK_NAME))

_Static_assert(DIR_MAX < sizeof(((struct pgb_config *)0)->dir), "dir buffer");

#define IDS_KEY(f, e, h) \
	{ .name = #f, .env = e, .kind = KIND_IDS, .off = CFG_OFF(f), \
	  .off_n = CFG_OFF(n_##f), .min = 0, .max = UINT_MAX - 1, .help = h }

static const struct key_def keys[] = {
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

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const bool_names[][2] = {
	{ "off", "on" }, { "false", "true" }, { "no", "yes" }, { "0", "1" },
};

/* Copy at most QUOTE_MAX bytes of s[0..len) for an error message, escaping
 * what is not printable and marking a cut with "...". */
static void quote(char *out, size_t outlen, const char *s, size_t len)
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
static int key_eq(const char *name, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char c = s[i] == '-' ? '_' : s[i];

		if (name[i] == '\0' || name[i] != c)
			return 0;
	}
	return name[len] == '\0';
}

static const struct key_def *key_find(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++)
		if (key_eq(keys[i].name, s, len))
			return &keys[i];
	return NULL;
}

static int *int_ptr(struct pgb_config *cfg, const struct key_def *k)
{
	return (int *)((char *)cfg + k->off);
}

static int int_get(const struct pgb_config *cfg, const struct key_def *k)
{
	return *(const int *)((const char *)cfg + k->off);
}

static char *str_ptr(struct pgb_config *cfg, const struct key_def *k)
{
	return (char *)cfg + k->off;
}

static const char *str_get(const struct pgb_config *cfg, const struct key_def *k)
{
	return (const char *)cfg + k->off;
}

static unsigned int *ids_ptr(struct pgb_config *cfg, const struct key_def *k, int **n)
{
	*n = (int *)((char *)cfg + k->off_n);
	return (unsigned int *)((char *)cfg + k->off);
}

static const unsigned int *ids_get(const struct pgb_config *cfg,
				   const struct key_def *k, int *n)
{
	*n = *(const int *)((const char *)cfg + k->off_n);
	return (const unsigned int *)((const char *)cfg + k->off);
}

/* Decimal digits only: no sign, no blanks, no hex. -1 on junk or overflow. */
static int parse_num(const char *s, size_t len, long long *out)
{
	long long v = 0;
	size_t i;

	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		int d = s[i] - '0';

		if (d < 0 || d > 9)
			return -1;
		if (v > (LLONG_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int is_pow2(long long v)
{
	return v > 0 && (v & (v - 1)) == 0;
}

/* "allowed: ..." text of one key, for errors and the usage text. */
static void describe_allowed(const struct key_def *k, char *buf, size_t len)
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

static int is_choice(const struct key_def *k, const char *value)
{
	for (int i = 0; k->choices[i]; i++)
		if (strcmp(value, k->choices[i]) == 0)
			return 1;
	return 0;
}

/* Reports "invalid value ..." for k into msg (without the key name). */
static int bad_value(const struct key_def *k, const char *value, char *msg,
		     size_t msglen)
{
	char q[QUOTE_MAX * 4 + 8], allowed[128];

	quote(q, sizeof(q), value, strlen(value));
	describe_allowed(k, allowed, sizeof(allowed));
	errbuf_set(msg, msglen, "invalid value \"%s\" (allowed: %s)", q, allowed);
	return -1;
}

static int parse_int_value(const struct key_def *k, const char *value, long long *out)
{
	long long v;
	size_t i;

	if (k->kind == KIND_BOOL) {
		for (i = 0; i < sizeof(bool_names) / sizeof(bool_names[0]); i++)
			for (int b = 0; b < 2; b++)
				if (strcasecmp(value, bool_names[i][b]) == 0) {
					*out = b;
					return 0;
				}
		return -1;
	}
	if (parse_num(value, strlen(value), &v) == 0) {
		if ((v < k->min || v > k->max) && !(v == 0 && k->zero_ok))
			return -1;
		if (k->kind == KIND_KB_POW2 && !is_pow2(v))
			return -1;
		*out = v;
		return 0;
	}
	if (k->kind != KIND_LEVEL)
		return -1;
	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(value, level_names[i]) == 0) {
			*out = (long long)i;
			return 0;
		}
	}
	return -1;
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
		if (count == CONFIG_MAX_IDS || parse_num(p, len, &v) < 0 ||
		    v > k->max)
			return -1;
		ids[count++] = (unsigned int)v;
		while (*end == ' ' || *end == '\t')
			end++;
		if (*end == '\0')
			break;
		if (*end != ',')
			return -1;
		p = end + 1;
		while (*p == ' ' || *p == '\t')
			p++;
	}
	*n = count;
	return 0;
}

/* Set k from value; on error msg says why, without naming the key. */
static int key_apply(struct pgb_config *cfg, const struct key_def *k,
		     const char *value, char *msg, size_t msglen)
{
	unsigned int ids[CONFIG_MAX_IDS];
	long long v;
	size_t len;
	int n, *np;

	if (!value) {
		errbuf_set(msg, msglen, "missing value");
		return -1;
	}
	switch (k->kind) {
	case KIND_STR:
		len = strlen(value);
		if (len > (size_t)k->max || (len == 0 && k->def_str[0]) ||
		    (k->choices && !is_choice(k, value)))
			return bad_value(k, value, msg, msglen);
		memcpy(str_ptr(cfg, k), value, len + 1);
		return 0;
	case KIND_IDS:
		if (parse_ids(k, value, ids, &n) < 0)
			return bad_value(k, value, msg, msglen);
		memcpy(ids_ptr(cfg, k, &np), ids, (size_t)n * sizeof(ids[0]));
		*np = n;
		return 0;
	default:
		if (parse_int_value(k, value, &v) < 0)
			return bad_value(k, value, msg, msglen);
		*int_ptr(cfg, k) = (int)v;
		return 0;
	}
}

void config_defaults(struct pgb_config *cfg)
{
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < N_KEYS; i++) {
		const struct key_def *k = &keys[i];

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

static int unknown_key(const char *key, size_t len, char *msg, size_t msglen)
{
	char q[QUOTE_MAX * 4 + 8];

	quote(q, sizeof(q), key, len);
	errbuf_set(msg, msglen, "unknown key \"%s\"", q);
	return -1;
}

int config_set(struct pgb_config *cfg, const char *key, const char *value,
	       char *err, size_t errlen)
{
	const struct key_def *k = key_find(key, strlen(key));
	char msg[MSG_MAX];

	if (!k)
		return unknown_key(key, strlen(key), err, errlen);
	if (key_apply(cfg, k, value, msg, sizeof(msg)) < 0) {
		errbuf_set(err, errlen, "%s: %s", k->name, msg);
		return -1;
	}
	return 0;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	       c == '\f';
}

/* Trim s[0..*len) in place; returns the new start. */
static char *trim(char *s, size_t *len)
{
	while (*len && is_blank(*s)) {
		s++;
		(*len)--;
	}
	while (*len && is_blank(s[*len - 1]))
		(*len)--;
	s[*len] = '\0';
	return s;
}

/* One "key = value" line; msg gets the reason when it is bad. */
static int file_line(struct pgb_config *cfg, char *line, size_t len,
		     char *msg, size_t msglen)
{
	const struct key_def *k;
	char *key, *value, *eq, kmsg[MSG_MAX];
	size_t klen, vlen;

	if (strlen(line) != len) {
		errbuf_set(msg, msglen, "NUL byte in line");
		return -1;
	}
	if (len > LINE_MAX_LEN) {
		errbuf_set(msg, msglen, "line too long (allowed: at most %d bytes)",
			LINE_MAX_LEN);
		return -1;
	}
	line = trim(line, &len);
	if (len == 0 || line[0] == '#')
		return 0;
	eq = strchr(line, '=');
	if (!eq || eq == line) {
		char q[QUOTE_MAX * 4 + 8];

		quote(q, sizeof(q), line, len);
		errbuf_set(msg, msglen, "expected \"key = value\", got \"%s\"", q);
		return -1;
	}
	klen = (size_t)(eq - line);
	key = trim(line, &klen);
	vlen = len - (size_t)(eq + 1 - line);
	value = trim(eq + 1, &vlen);
	k = key_find(key, klen);
	if (!k)
		return unknown_key(key, klen, msg, msglen);
	if (key_apply(cfg, k, value, kmsg, sizeof(kmsg)) < 0) {
		errbuf_set(msg, msglen, "%s: %s", k->name, kmsg);
		return -1;
	}
	return 0;
}

int config_load_file(struct pgb_config *cfg, const char *path, char *err,
		     size_t errlen)
{
	char *line = NULL, msg[MSG_MAX];
	size_t cap = 0;
	ssize_t n;
	int lineno = 0, rc = 0;
	FILE *f;

	f = fopen(path, "r");
	if (!f) {
		errbuf_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		char *s = line;
		size_t len = (size_t)n;

		lineno++;
		/* A UTF-8 byte order mark some editors write. */
		if (lineno == 1 && len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
			s += 3;
			len -= 3;
		}
		if (file_line(cfg, s, len, msg, sizeof(msg)) < 0) {
			errbuf_set(err, errlen, "%s:%d: %s", path, lineno, msg);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		errbuf_set(err, errlen, "%s: read error: %s", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	return rc;
}

int config_load_env(struct pgb_config *cfg, char *err, size_t errlen)
{
	char msg[MSG_MAX];
	size_t i;

	for (i = 0; i < N_KEYS; i++) {
		const struct key_def *k = &keys[i];
		const char *v = getenv(k->env);

		if (v && key_apply(cfg, k, v, msg, sizeof(msg)) < 0) {
			errbuf_set(err, errlen, "%s (%s): %s", k->env, k->name, msg);
			return -1;
		}
	}
	return 0;
}

static int check_range(const struct pgb_config *cfg, const struct key_def *k,
		       char *err, size_t errlen)
{
	char allowed[128];
	int v, n;

	if (k->kind == KIND_STR) {
		const char *s = str_get(cfg, k);

		if (!memchr(s, '\0', k->size)) {
			errbuf_set(err, errlen, "%s is not terminated", k->name);
			return -1;
		}
		if (k->choices && !is_choice(k, s)) {
			char msg[256];

			bad_value(k, s, msg, sizeof(msg));
			errbuf_set(err, errlen, "%s: %s", k->name, msg);
			return -1;
		}
		return 0;
	}
	if (k->kind == KIND_IDS) {
		ids_get(cfg, k, &n);
		if (n >= 0 && n <= CONFIG_MAX_IDS)
			return 0;
		errbuf_set(err, errlen, "%s: %d ids (allowed: at most %d)", k->name,
			n, CONFIG_MAX_IDS);
		return -1;
	}
	v = int_get(cfg, k);
	if (((v >= k->min && v <= k->max) || (v == 0 && k->zero_ok)) &&
	    (k->kind != KIND_KB_POW2 || is_pow2(v)))
		return 0;
	describe_allowed(k, allowed, sizeof(allowed));
	errbuf_set(err, errlen, "%s (%d) out of range (allowed: %s)", k->name, v,
		allowed);
	return -1;
}

static int check_le(const char *a, int va, const char *b, int vb, char *err,
		    size_t errlen)
{
	if (va <= vb)
		return 0;
	errbuf_set(err, errlen, "%s (%d) must not exceed %s (%d)", a, va, b, vb);
	return -1;
}

static int check_dir(const char *dir, char *err, size_t errlen)
{
	size_t max = DIR_MAX;
	size_t len = strnlen(dir, sizeof(((struct pgb_config *)0)->dir));
	char q[QUOTE_MAX * 4 + 8];

	if (len == 0) {
		errbuf_set(err, errlen, "dir must not be empty");
		return -1;
	}
	if (len <= max)
		return 0;
	quote(q, sizeof(q), dir, len);
	errbuf_set(err, errlen,
		"dir \"%s\" is too long for a unix socket path (allowed: at most %zu bytes)",
		q, max);
	return -1;
}

int config_validate(const struct pgb_config *cfg, char *err, size_t errlen)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++)
		if (check_range(cfg, &keys[i], err, errlen) < 0)
			return -1;
	if (check_le("min_pool_size", cfg->min_pool_size, "max_pool_size",
		     cfg->max_pool_size, err, errlen) < 0 ||
	    check_le("min_pool_size", cfg->min_pool_size, "pool_size",
		     cfg->pool_size, err, errlen) < 0 ||
	    check_le("pool_size", cfg->pool_size, "max_pool_size",
		     cfg->max_pool_size, err, errlen) < 0 ||
	    check_le("retry_delay_ms", cfg->retry_delay_ms, "retry_max_delay_ms",
		     cfg->retry_max_delay_ms, err, errlen) < 0 ||
	    check_le("max_backends_per_agent", cfg->max_backends_per_agent, "max_pool_size",
		     cfg->max_pool_size, err, errlen) < 0)
		return -1;
	return check_dir(cfg->dir, err, errlen);
}

int config_advise(const struct pgb_config *cfg, char *buf, size_t len)
{
	errbuf_set(buf, len, "%s", "");
	/* pool_timers fails a waiter once it waited acquire_timeout_ms;
	 * pool_grow passes pool_size only for one that waited
	 * reserve_timeout_ms. */
	if (cfg->max_pool_size > cfg->pool_size &&
	    cfg->reserve_timeout_ms >= cfg->acquire_timeout_ms) {
		errbuf_set(buf, len,
			"max_pool_size (%d) is never reached: statements give up after "
			"acquire_timeout_ms (%d) before the pool may grow past pool_size (%d) "
			"after reserve_timeout_ms (%d)", cfg->max_pool_size,
			cfg->acquire_timeout_ms, cfg->pool_size, cfg->reserve_timeout_ms);
		return 1;
	}
	return 0;
}

/* Flags that are commands rather than keys. */
enum opt_kind { OPT_KEY, OPT_HELP, OPT_VERSION, OPT_CHECK, OPT_READY_FD, OPT_CONFIG };

struct opt {
	enum opt_kind kind;
	const struct key_def *key;	/* OPT_KEY */
	const char *name;		/* as typed, with dashes */
	size_t namelen;
	const char *value;		/* NULL for a command */
};

enum { PASS_SCAN, PASS_APPLY };

static int opt_classify(struct opt *o)
{
	const char *n = o->name + 2;
	size_t len = o->namelen - 2;

	if (strcmp(o->name, "-h") == 0 || key_eq("help", n, len))
		o->kind = OPT_HELP;
	else if (strcmp(o->name, "-V") == 0 || key_eq("version", n, len))
		o->kind = OPT_VERSION;
	else if (key_eq("check_config", n, len))
		o->kind = OPT_CHECK;
	else if (key_eq("ready_fd", n, len))
		o->kind = OPT_READY_FD;
	else if (key_eq("config", n, len))
		o->kind = OPT_CONFIG;
	else if ((o->key = key_find(n, len)))
		o->kind = OPT_KEY;
	else
		return -1;
	return 0;
}

static int opt_takes_value(const struct opt *o)
{
	return o->kind != OPT_HELP && o->kind != OPT_VERSION && o->kind != OPT_CHECK;
}

/* Parse argv[*i] (and maybe its value) into o; advances *i. */
static int opt_next(int argc, char **argv, int *i, struct opt *o, char *err,
		    size_t errlen)
{
	const char *a = argv[*i], *eq;
	char q[QUOTE_MAX * 4 + 8];

	memset(o, 0, sizeof(*o));
	o->name = a;
	if (strcmp(a, "-h") != 0 && strcmp(a, "-V") != 0 &&
	    (strncmp(a, "--", 2) != 0 || a[2] == '\0')) {
		quote(q, sizeof(q), a, strlen(a));
		errbuf_set(err, errlen, "unexpected argument \"%s\" (see --help)", q);
		return -1;
	}
	eq = strchr(a, '=');
	o->namelen = eq ? (size_t)(eq - a) : strlen(a);
	if (opt_classify(o) < 0) {
		quote(q, sizeof(q), a, o->namelen);
		errbuf_set(err, errlen, "unknown option \"%s\" (see --help)", q);
		return -1;
	}
	if (!opt_takes_value(o)) {
		if (!eq)
			return 0;
		errbuf_set(err, errlen, "%.*s takes no value", (int)o->namelen, a);
		return -1;
	}
	if (eq) {
		o->value = eq + 1;
	} else if (o->kind == OPT_KEY && o->key->kind == KIND_BOOL) {
		long long b;

		/* --syslog, --syslog off (there are no positional arguments) */
		o->value = "on";
		if (*i + 1 < argc && parse_int_value(o->key, argv[*i + 1], &b) == 0)
			o->value = argv[++*i];
	} else if (*i + 1 < argc) {
		o->value = argv[++*i];
	} else {
		errbuf_set(err, errlen, "%.*s: missing value", (int)o->namelen, a);
		return -1;
	}
	return 0;
}

static int set_ready_fd(struct pgb_config *cfg, const struct opt *o, char *err,
			size_t errlen)
{
	char q[QUOTE_MAX * 4 + 8];
	long long v;

	if (parse_num(o->value, strlen(o->value), &v) == 0 && v <= INT_MAX) {
		cfg->ready_fd = (int)v;
		return 0;
	}
	quote(q, sizeof(q), o->value, strlen(o->value));
	errbuf_set(err, errlen, "%.*s: invalid value \"%s\" (allowed: integer 0..%d)",
		(int)o->namelen, o->name, q, INT_MAX);
	return -1;
}

static int set_config_file(struct pgb_config *cfg, const struct opt *o,
			   char *err, size_t errlen)
{
	size_t len = strlen(o->value);

	if (len > 0 && len < sizeof(cfg->config_file)) {
		memcpy(cfg->config_file, o->value, len + 1);
		return 0;
	}
	errbuf_set(err, errlen,
		"%.*s: invalid file name (allowed: 1..%zu bytes)",
		(int)o->namelen, o->name, sizeof(cfg->config_file) - 1);
	return -1;
}

static int opt_apply(struct pgb_config *cfg, const struct opt *o, char *err,
		     size_t errlen)
{
	char msg[MSG_MAX];

	switch (o->kind) {
	case OPT_CHECK:
		cfg->want_check = 1;
		return 0;
	case OPT_READY_FD:
		return set_ready_fd(cfg, o, err, errlen);
	case OPT_KEY:
		if (key_apply(cfg, o->key, o->value, msg, sizeof(msg)) == 0)
			return 0;
		errbuf_set(err, errlen, "%.*s (%s): %s", (int)o->namelen, o->name,
			o->key->name, msg);
		return -1;
	default:	/* --help and --config act in the scan pass */
		return 0;
	}
}

/* PASS_SCAN looks for --help (which wins over any error) and --config, and
 * reports the first malformed argument; PASS_APPLY sets everything else. */
static int args_walk(struct pgb_config *cfg, int argc, char **argv, int pass,
		     char *err, size_t errlen)
{
	struct opt o;
	int i, rc = 0;

	for (i = 1; i < argc; i++) {
		int r = opt_next(argc, argv, &i, &o, rc ? NULL : err, errlen);

		if (r == 0 && pass == PASS_SCAN) {
			if (o.kind == OPT_HELP)
				cfg->want_help = 1;
			else if (o.kind == OPT_VERSION)
				cfg->want_version = 1;
			else if (o.kind == OPT_CONFIG)
				r = set_config_file(cfg, &o, rc ? NULL : err, errlen);
		} else if (r == 0) {
			r = opt_apply(cfg, &o, err, errlen);
		}
		if (r < 0) {
			if (pass == PASS_APPLY)
				return -1;
			rc = -1;
		}
	}
	return rc;
}

int config_load(struct pgb_config *cfg, int argc, char **argv, char *err,
		size_t errlen)
{
	int rc;

	config_defaults(cfg);
	rc = args_walk(cfg, argc, argv, PASS_SCAN, err, errlen);
	if (cfg->want_help || cfg->want_version)
		return 0;
	if (rc < 0)
		return -1;
	if (cfg->config_file[0] &&
	    config_load_file(cfg, cfg->config_file, err, errlen) < 0)
		return -1;
	if (config_load_env(cfg, err, errlen) < 0)
		return -1;
	if (args_walk(cfg, argc, argv, PASS_APPLY, err, errlen) < 0)
		return -1;
	return config_validate(cfg, err, errlen);
}

/* Length of a conninfo value starting at s: quoted ('...' with \ escapes)
 * or up to the next blank. */
static size_t conninfo_value_len(const char *s)
{
	size_t i = 0;

	if (s[0] != '\'') {
		while (s[i] && !isspace((unsigned char)s[i]))
			i++;
		return i;
	}
	for (i = 1; s[i] && s[i] != '\''; i++)
		if (s[i] == '\\' && s[i + 1])
			i++;
	return s[i] ? i + 1 : i;
}

/* "key = value ..." form: write s with every password value as ***. */
static void mask_keyword_dsn(const char *s, FILE *out)
{
	while (*s) {
		const char *key = s, *p;
		size_t klen, vlen;

		if (isspace((unsigned char)*s)) {
			fputc(*s++, out);
			continue;
		}
		while (*s && *s != '=' && !isspace((unsigned char)*s))
			s++;
		klen = (size_t)(s - key);
		p = s;
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {		/* malformed: copy the word */
			fwrite(key, 1, klen, out);
			continue;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		vlen = conninfo_value_len(p);
		if (klen == 8 && memcmp(key, "password", 8) == 0)
			fputs("password=***", out);
		else
			fwrite(key, 1, (size_t)(p + vlen - key), out);
		s = p + vlen;
	}
}

/* "postgresql://user:secret@host/db?password=secret": mask both places. */
static void mask_uri_dsn(const char *s, FILE *out)
{
	const char *auth = strstr(s, "://") + 3;
	const char *end = auth + strcspn(auth, "/?#");
	const char *at = NULL, *p, *colon;

	for (p = auth; p < end; p++)
		if (*p == '@')
			at = p;
	colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon) {
		fwrite(s, 1, (size_t)(colon + 1 - s), out);
		fputs("***", out);
		s = at;
	}
	p = strchr(s, '?');
	if (!p) {
		fputs(s, out);
		return;
	}
	fwrite(s, 1, (size_t)(p - s), out);
	s = p;
	while (*s) {
		size_t len = strcspn(s + 1, "&") + 1;	/* "?x=y" or "&x=y" */

		if (strncmp(s + 1, "password=", 9) == 0)
			fprintf(out, "%cpassword=***", s[0]);
		else
			fwrite(s, 1, len, out);
		s += len;
	}
}

static void print_dsn(const char *dsn, FILE *out)
{
	if (strncmp(dsn, "postgresql://", 13) == 0 ||
	    strncmp(dsn, "postgres://", 11) == 0)
		mask_uri_dsn(dsn, out);
	else
		mask_keyword_dsn(dsn, out);
}

static void print_value(const struct pgb_config *cfg, const struct key_def *k,
			FILE *out)
{
	const unsigned int *ids;
	int v, n, j;

	switch (k->kind) {
	case KIND_STR:
		if (k->off == CFG_OFF(dsn))
			print_dsn(str_get(cfg, k), out);
		else
			fputs(str_get(cfg, k), out);
		break;
	case KIND_IDS:
		ids = ids_get(cfg, k, &n);
		for (j = 0; j < n && j < CONFIG_MAX_IDS; j++)
			fprintf(out, "%s%u", j ? "," : "", ids[j]);
		break;
	case KIND_LEVEL:
		v = int_get(cfg, k);
		if (v >= 0 && v <= 3)
			fputs(level_names[v], out);
		else
			fprintf(out, "%d", v);
		break;
	case KIND_BOOL:
		fputs(bool_names[0][int_get(cfg, k) != 0], out);
		break;
	default:
		fprintf(out, "%d", int_get(cfg, k));
		break;
	}
}

void config_print(const struct pgb_config *cfg, FILE *out)
{
	size_t i;

	if (cfg->config_file[0])
		fprintf(out, "# config file: %s\n", cfg->config_file);
	for (i = 0; i < N_KEYS; i++) {
		fprintf(out, "%s = ", keys[i].name);
		print_value(cfg, &keys[i], out);
		fputc('\n', out);
	}
}

static int value_eq(const struct pgb_config *a, const struct pgb_config *b,
		    const struct key_def *k)
{
	const unsigned int *ia, *ib;
	int na, nb;

	switch (k->kind) {
	case KIND_STR:
		return strcmp(str_get(a, k), str_get(b, k)) == 0;
	case KIND_IDS:
		ia = ids_get(a, k, &na);
		ib = ids_get(b, k, &nb);
		return na == nb && memcmp(ia, ib, (size_t)na * sizeof(*ia)) == 0;
	default:
		return int_get(a, k) == int_get(b, k);
	}
}

void config_diff(const struct pgb_config *from, const struct pgb_config *to,
		 char *buf, size_t len)
{
	char *text = NULL;
	size_t size = 0, i;
	FILE *out = open_memstream(&text, &size);
	int n = 0;

	if (!len)
		return;
	buf[0] = '\0';
	if (!out)
		return;
	for (i = 0; i < N_KEYS; i++) {
		const struct key_def *k = &keys[i];

		if (value_eq(from, to, k))
			continue;
		fprintf(out, "%s%s ", n++ ? ", " : "", k->name);
		if (k->off == CFG_OFF(dsn)) {	/* may hold a password */
			fputs("changed", out);
			continue;
		}
		print_value(from, k, out);
		fputs(" -> ", out);
		print_value(to, k, out);
	}
	fclose(out);
	if (text)
		snprintf(buf, len, "%s", text);
	free(text);
}

static const char *usage_arg(const struct key_def *k)
{
	switch (k->kind) {
	case KIND_COUNT:
		return "N";
	case KIND_MS:
		return "MS";
	case KIND_KB:
	case KIND_KB_POW2:
		return "KB";
	case KIND_LEVEL:
		return "LEVEL";
	case KIND_BOOL:
		return "[on|off]";
	case KIND_IDS:
		return "ID,...";
	default:
		return k->arg;
	}
}

static void usage_key(const struct key_def *k, FILE *out)
{
	char flag[80], allowed[128], dflt_dir[256];
	size_t j;

	rundir_default_for(geteuid(), getenv("XDG_RUNTIME_DIR"), dflt_dir, DIR_MAX + 1);
	for (j = 0; k->name[j] && j < sizeof(flag) - 1; j++)
		flag[j] = k->name[j] == '_' ? '-' : k->name[j];
	flag[j] = '\0';
	snprintf(flag + j, sizeof(flag) - j, " %s", usage_arg(k));
	describe_allowed(k, allowed, sizeof(allowed));
	fprintf(out, "  --%-31s %s=", flag, k->env);
	if (k->off == CFG_OFF(dir))
		fprintf(out, "\"%s\"", dflt_dir);
	else if (k->kind == KIND_STR)
		fprintf(out, "\"%s\"", k->def_str);
	else if (k->kind == KIND_IDS)
		fputs("\"\"", out);
	else if (k->kind == KIND_LEVEL)
		fputs(level_names[k->def], out);
	else if (k->kind == KIND_BOOL)
		fputs(bool_names[0][k->def != 0], out);
	else
		fprintf(out, "%lld", k->def);
	fprintf(out, "\n        %s [%s]\n", k->help, allowed);
}

void config_usage(FILE *out, const char *argv0)
{
	size_t i;

	fprintf(out,
		"Usage: %s [--config FILE] [--KEY VALUE | --KEY=VALUE]...\n"
		"\n"
		"Precedence, lowest first: defaults, config file (\"key = value\"\n"
		"lines, '#' comments), environment, flags. In keys and flags '-'\n"
		"and '_' are the same.\n"
		"\n"
		"  --config FILE                     read settings from FILE\n"
		"  --check-config                    validate, print the configuration, exit\n"
		"  --ready-fd N                      write \"ready\\n\" to fd N once serving\n"
		"  -h, --help                        show this text\n"
		"  -V, --version                     print the version and exit\n"
		"\n"
		"Signals: SIGHUP reloads the config file and environment; SIGTERM\n"
		"drains (shutdown_timeout_ms) and exits; SIGINT cancels and exits.\n"
		"\n"
		"Settings (flag, environment variable=default):\n",
		argv0);
	for (i = 0; i < N_KEYS; i++)
		usage_key(&keys[i], out);
}
