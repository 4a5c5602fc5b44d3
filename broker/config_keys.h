/* The broker's configuration keys, inside the config module: the table
 * (config.c) that config_load.c and config_show.c walk, and the value
 * parsing they share. Not for other modules: they use config.h. */
#ifndef PGB_BROKER_CONFIG_KEYS_H
#define PGB_BROKER_CONFIG_KEYS_H

#include <stddef.h>
#include <sys/un.h>

#include "config.h"

#define MS_MAX		604800000LL	/* one week */
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

/* dir + SOCK_NAME + NUL must fit in sun_path. */
#define DIR_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - sizeof(SOCK_NAME))

extern const struct key_def cfg_keys[];
extern const size_t cfg_nkeys;
extern const char *const cfg_level_names[4];
extern const char *const cfg_bool_names[4][2];

/* Copy at most QUOTE_MAX bytes of s[0..len) for an error message, escaping
 * what is not printable and marking a cut with "...". */
void cfg_quote(char *out, size_t outlen, const char *s, size_t len);
/* Key names compare with '-' and '_' as the same character. */
int cfg_key_eq(const char *name, const char *s, size_t len);
const struct key_def *cfg_key_find(const char *s, size_t len);
int cfg_int_get(const struct pgb_config *cfg, const struct key_def *k);
const char *cfg_str_get(const struct pgb_config *cfg, const struct key_def *k);
const unsigned int *cfg_ids_get(const struct pgb_config *cfg, const struct key_def *k, int *n);
/* Decimal digits only: no sign, no blanks, no hex. -EINVAL on junk or overflow. */
int cfg_parse_num(const char *s, size_t len, long long *out);
int cfg_is_pow2(long long v);
/* Reports "invalid value ..." for k into msg (without the key name); -EINVAL. */
int cfg_bad_value(const struct key_def *k, const char *value, char *msg, size_t msglen);
/* An integer key's value: digits, with the unit words its kind allows. */
int cfg_parse_int_value(const struct key_def *k, const char *value, long long *out);
/* "allowed: ..." text of one key, for errors and the usage text. */
void cfg_describe_allowed(const struct key_def *k, char *buf, size_t len);
/* value is one of k's choices. */
int cfg_is_choice(const struct key_def *k, const char *value);
/* Set k from value; on error msg says why, without naming the key. */
int cfg_key_apply(struct pgb_config *cfg, const struct key_def *k, const char *value,
		  char *msg, size_t msglen);
/* "unknown key ..." into msg; -EINVAL. */
int cfg_unknown_key(const char *key, size_t len, char *msg, size_t msglen);

#endif
