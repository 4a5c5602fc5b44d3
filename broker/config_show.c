/* Broker configuration shown: the effective settings (passwords masked),
 * what a reload changed, and the usage text. */
#include "config.h"
#include "config_keys.h"
#include "errbuf.h"
#include "rundir.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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
			print_dsn(cfg_str_get(cfg, k), out);
		else
			fputs(cfg_str_get(cfg, k), out);
		break;
	case KIND_IDS:
		ids = cfg_ids_get(cfg, k, &n);
		for (j = 0; j < n && j < CONFIG_MAX_IDS; j++)
			fprintf(out, "%s%u", j ? "," : "", ids[j]);
		break;
	case KIND_LEVEL:
		v = cfg_int_get(cfg, k);
		if (v >= 0 && v <= 3)
			fputs(cfg_level_names[v], out);
		else
			fprintf(out, "%d", v);
		break;
	case KIND_BOOL:
		fputs(cfg_bool_names[0][cfg_int_get(cfg, k) != 0], out);
		break;
	default:
		fprintf(out, "%d", cfg_int_get(cfg, k));
		break;
	}
}

void config_print(const struct pgb_config *cfg, FILE *out)
{
	size_t i;

	if (cfg->config_file[0])
		fprintf(out, "# config file: %s\n", cfg->config_file);
	for (i = 0; i < cfg_nkeys; i++) {
		fprintf(out, "%s = ", cfg_keys[i].name);
		print_value(cfg, &cfg_keys[i], out);
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
		return strcmp(cfg_str_get(a, k), cfg_str_get(b, k)) == 0;
	case KIND_IDS:
		ia = cfg_ids_get(a, k, &na);
		ib = cfg_ids_get(b, k, &nb);
		return na == nb && memcmp(ia, ib, (size_t)na * sizeof(*ia)) == 0;
	default:
		return cfg_int_get(a, k) == cfg_int_get(b, k);
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
	for (i = 0; i < cfg_nkeys; i++) {
		const struct key_def *k = &cfg_keys[i];

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
	cfg_describe_allowed(k, allowed, sizeof(allowed));
	fprintf(out, "  --%-31s %s=", flag, k->env);
	if (k->off == CFG_OFF(dir))
		fprintf(out, "\"%s\"", dflt_dir);
	else if (k->kind == KIND_STR)
		fprintf(out, "\"%s\"", k->def_str);
	else if (k->kind == KIND_IDS)
		fputs("\"\"", out);
	else if (k->kind == KIND_LEVEL)
		fputs(cfg_level_names[k->def], out);
	else if (k->kind == KIND_BOOL)
		fputs(cfg_bool_names[0][k->def != 0], out);
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
	for (i = 0; i < cfg_nkeys; i++)
		usage_key(&cfg_keys[i], out);
}
