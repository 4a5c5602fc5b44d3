/* Broker configuration, read from its sources in order: the config file,
 * the environment, the flags (config_load); then the checks across keys. */
#include "config.h"
#include "config_keys.h"
#include "errbuf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LINE_MAX_LEN	8192		/* longest config file line */

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
		return -EINVAL;
	}
	if (len > LINE_MAX_LEN) {
		errbuf_set(msg, msglen, "line too long (allowed: at most %d bytes)",
			LINE_MAX_LEN);
		return -EINVAL;
	}
	line = trim(line, &len);
	if (len == 0 || line[0] == '#')
		return 0;
	eq = strchr(line, '=');
	if (!eq || eq == line) {
		char q[QUOTE_MAX * 4 + 8];

		cfg_quote(q, sizeof(q), line, len);
		errbuf_set(msg, msglen, "expected \"key = value\", got \"%s\"", q);
		return -EINVAL;
	}
	klen = (size_t)(eq - line);
	key = trim(line, &klen);
	vlen = len - (size_t)(eq + 1 - line);
	value = trim(eq + 1, &vlen);
	k = cfg_key_find(key, klen);
	if (!k)
		return cfg_unknown_key(key, klen, msg, msglen);
	if (cfg_key_apply(cfg, k, value, kmsg, sizeof(kmsg)) < 0) {
		errbuf_set(msg, msglen, "%s: %s", k->name, kmsg);
		return -EINVAL;
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
		rc = -errno;
		errbuf_set(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
		return rc;
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
			rc = -EINVAL;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		rc = errno ? -errno : -EIO;
		errbuf_set(err, errlen, "%s: read error: %s", path, strerror(-rc));
	}
	free(line);
	fclose(f);
	return rc;
}

int config_load_env(struct pgb_config *cfg, char *err, size_t errlen)
{
	char msg[MSG_MAX];
	size_t i;

	for (i = 0; i < cfg_nkeys; i++) {
		const struct key_def *k = &cfg_keys[i];
		const char *v = getenv(k->env);

		if (v && cfg_key_apply(cfg, k, v, msg, sizeof(msg)) < 0) {
			errbuf_set(err, errlen, "%s (%s): %s", k->env, k->name, msg);
			return -EINVAL;
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
		const char *s = cfg_str_get(cfg, k);

		if (!memchr(s, '\0', k->size)) {
			errbuf_set(err, errlen, "%s is not terminated", k->name);
			return -EINVAL;
		}
		if (k->choices && !cfg_is_choice(k, s)) {
			char msg[256];

			cfg_bad_value(k, s, msg, sizeof(msg));
			errbuf_set(err, errlen, "%s: %s", k->name, msg);
			return -EINVAL;
		}
		return 0;
	}
	if (k->kind == KIND_IDS) {
		cfg_ids_get(cfg, k, &n);
		if (n >= 0 && n <= CONFIG_MAX_IDS)
			return 0;
		errbuf_set(err, errlen, "%s: %d ids (allowed: at most %d)", k->name,
			n, CONFIG_MAX_IDS);
		return -EINVAL;
	}
	v = cfg_int_get(cfg, k);
	if (((v >= k->min && v <= k->max) || (v == 0 && k->zero_ok)) &&
	    (k->kind != KIND_KB_POW2 || cfg_is_pow2(v)))
		return 0;
	cfg_describe_allowed(k, allowed, sizeof(allowed));
	errbuf_set(err, errlen, "%s (%d) out of range (allowed: %s)", k->name, v,
		allowed);
	return -EINVAL;
}

static int check_le(const char *a, int va, const char *b, int vb, char *err,
		    size_t errlen)
{
	if (va <= vb)
		return 0;
	errbuf_set(err, errlen, "%s (%d) must not exceed %s (%d)", a, va, b, vb);
	return -EINVAL;
}

static int check_dir(const char *dir, char *err, size_t errlen)
{
	size_t max = DIR_MAX;
	size_t len = strnlen(dir, sizeof(((struct pgb_config *)0)->dir));
	char q[QUOTE_MAX * 4 + 8];

	if (len == 0) {
		errbuf_set(err, errlen, "dir must not be empty");
		return -EINVAL;
	}
	if (len <= max)
		return 0;
	cfg_quote(q, sizeof(q), dir, len);
	errbuf_set(err, errlen,
		"dir \"%s\" is too long for a unix socket path (allowed: at most %zu bytes)",
		q, max);
	return -EINVAL;
}

int config_validate(const struct pgb_config *cfg, char *err, size_t errlen)
{
	size_t i;

	for (i = 0; i < cfg_nkeys; i++)
		if (check_range(cfg, &cfg_keys[i], err, errlen) < 0)
			return -EINVAL;
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
		return -EINVAL;
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

	if (strcmp(o->name, "-h") == 0 || cfg_key_eq("help", n, len))
		o->kind = OPT_HELP;
	else if (strcmp(o->name, "-V") == 0 || cfg_key_eq("version", n, len))
		o->kind = OPT_VERSION;
	else if (cfg_key_eq("check_config", n, len))
		o->kind = OPT_CHECK;
	else if (cfg_key_eq("ready_fd", n, len))
		o->kind = OPT_READY_FD;
	else if (cfg_key_eq("config", n, len))
		o->kind = OPT_CONFIG;
	else if ((o->key = cfg_key_find(n, len)))
		o->kind = OPT_KEY;
	else
		return -EINVAL;
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
		cfg_quote(q, sizeof(q), a, strlen(a));
		errbuf_set(err, errlen, "unexpected argument \"%s\" (see --help)", q);
		return -EINVAL;
	}
	eq = strchr(a, '=');
	o->namelen = eq ? (size_t)(eq - a) : strlen(a);
	if (opt_classify(o) < 0) {
		cfg_quote(q, sizeof(q), a, o->namelen);
		errbuf_set(err, errlen, "unknown option \"%s\" (see --help)", q);
		return -EINVAL;
	}
	if (!opt_takes_value(o)) {
		if (!eq)
			return 0;
		errbuf_set(err, errlen, "%.*s takes no value", (int)o->namelen, a);
		return -EINVAL;
	}
	if (eq) {
		o->value = eq + 1;
	} else if (o->kind == OPT_KEY && o->key->kind == KIND_BOOL) {
		long long b;

		/* --syslog, --syslog off (there are no positional arguments) */
		o->value = "on";
		if (*i + 1 < argc && cfg_parse_int_value(o->key, argv[*i + 1], &b) == 0)
			o->value = argv[++*i];
	} else if (*i + 1 < argc) {
		o->value = argv[++*i];
	} else {
		errbuf_set(err, errlen, "%.*s: missing value", (int)o->namelen, a);
		return -EINVAL;
	}
	return 0;
}

static int set_ready_fd(struct pgb_config *cfg, const struct opt *o, char *err,
			size_t errlen)
{
	char q[QUOTE_MAX * 4 + 8];
	long long v;

	if (cfg_parse_num(o->value, strlen(o->value), &v) == 0 && v <= INT_MAX) {
		cfg->ready_fd = (int)v;
		return 0;
	}
	cfg_quote(q, sizeof(q), o->value, strlen(o->value));
	errbuf_set(err, errlen, "%.*s: invalid value \"%s\" (allowed: integer 0..%d)",
		(int)o->namelen, o->name, q, INT_MAX);
	return -EINVAL;
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
	return -EINVAL;
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
		if (cfg_key_apply(cfg, o->key, o->value, msg, sizeof(msg)) == 0)
			return 0;
		errbuf_set(err, errlen, "%.*s (%s): %s", (int)o->namelen, o->name,
			o->key->name, msg);
		return -EINVAL;
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
				return -EINVAL;
			rc = -EINVAL;
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
		return -EINVAL;
	if (cfg->config_file[0] &&
	    config_load_file(cfg, cfg->config_file, err, errlen) < 0)
		return -EINVAL;
	if (config_load_env(cfg, err, errlen) < 0)
		return -EINVAL;
	if (args_walk(cfg, argc, argv, PASS_APPLY, err, errlen) < 0)
		return -EINVAL;
	return config_validate(cfg, err, errlen);
}

