/* Unit tests for common/config.c: defaults, file, environment, flags,
 * hostile values, cross-key validation, printing. */
#include <errno.h>
#include <criterion/criterion.h>

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/config.h"
#include "rundir.h"

/* The default run directory of this process (tests/unit/test_rundir.c
 * checks what that is). */
static const char *default_dir(void)
{
	static char buf[256];

	rundir_default_for(geteuid(), getenv("XDG_RUNTIME_DIR"), buf, sizeof(buf));
	return buf;
}

#define ERRLEN 512

struct int_field {
	const char *key;
	size_t off;
	int want;
};

#define F(k) #k, offsetof(struct pgb_config, k)

static int field(const struct pgb_config *cfg, size_t off)
{
	return *(const int *)((const char *)cfg + off);
}

/* Every test runs in its own process (Criterion forks), so the temporary
 * directory is per test; it is removed by cleanup_dir. */
static char tmpdir[64];

static void make_dir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgb_test_config.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void cleanup_dir(void)
{
	char cmd[128];

	if (!tmpdir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_expect_eq(system(cmd), 0);
}

/* Writes len bytes of data to tmpdir/name and returns the path (static). */
static const char *write_file_n(const char *name, const char *data, size_t len)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
	return path;
}

static const char *write_file(const char *name, const char *data)
{
	return write_file_n(name, data, strlen(data));
}

/* Unset every variable the module reads, so the host environment cannot
 * leak into a test. */
static void clear_env(void)
{
	static const char *const vars[] = {
		"POSTGRES_POOL_SIZE", "POSTGRES_MIN_POOL_SIZE",
		"POSTGRES_MAX_POOL_SIZE", "POSTGRES_CONNECTION_TIMEOUT",
		"POSTGRES_IDLE_TIMEOUT", "POSTGRES_ACQUIRE_TIMEOUT",
		"POSTGRES_STATEMENT_TIMEOUT", "POSTGRES_RETRY_ATTEMPTS",
		"POSTGRES_RETRY_DELAY", "POSTGRES_RETRY_MAX_DELAY",
		"POSTGRES_KEEPALIVE_INITIAL_DELAY", "POSTGRES_BREAKER_THRESHOLD",
		"POSTGRES_BREAKER_RESET_TIMEOUT", "PGBROKER_RESERVE_TIMEOUT_MS",
		"PGBROKER_VALIDATION_INTERVAL_MS",
		"PGBROKER_MAX_CONNECTION_LIFETIME_MS", "PGBROKER_CHANNEL_SIZE_KB",
		"PGBROKER_MAX_REQUEST_KB", "PGBROKER_MAX_AGENTS",
		"PGBROKER_MAX_INFLIGHT_PER_AGENT", "PGBROKER_MAX_WAITING",
		"PGBROKER_SEND_TIMEOUT_MS", "PGBROKER_HEALTH_INTERVAL_MS",
		"PGBROKER_LOG_LEVEL", "PGBROKER_DIR", "PGBROKER_DSN",
		"PGBROKER_ALLOW_UIDS", "PGBROKER_ALLOW_GIDS",
	};
	size_t i;

	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

static void setup(void)
{
	clear_env();
	make_dir();
}

static void teardown(void)
{
	cleanup_dir();
}

/* config_load with a NULL-terminated argument list after "pgbroker". */
static int load_args(struct pgb_config *cfg, char *err, const char *const *args)
{
	char *argv[32];
	int argc = 0;

	argv[argc++] = (char *)"pgbroker";
	while (*args)
		argv[argc++] = (char *)*args++;
	argv[argc] = NULL;
	return config_load(cfg, argc, argv, err, ERRLEN);
}

static char *print_to_string(const struct pgb_config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cr_assert_not_null(f);
	config_print(cfg, f);
	cr_assert_eq(fclose(f), 0);
	return buf;
}

TestSuite(config, .init = setup, .fini = teardown);

/* ---- defaults ---------------------------------------------------------- */

static const struct int_field default_table[] = {
	{ F(pool_size), 25 },
	{ F(min_pool_size), 5 },
	{ F(max_pool_size), 50 },
	{ F(connection_timeout_ms), 30000 },
	{ F(idle_timeout_ms), 300000 },
	{ F(acquire_timeout_ms), 30000 },
	{ F(statement_timeout_ms), 60000 },
	{ F(retry_attempts), 5 },
	{ F(retry_delay_ms), 100 },
	{ F(retry_max_delay_ms), 30000 },
	{ F(keepalive_initial_delay_ms), 10000 },
	{ F(breaker_threshold), 5 },
	{ F(breaker_reset_timeout_ms), 30000 },
	{ F(reserve_timeout_ms), 5000 },
	{ F(validation_interval_ms), 30000 },
	{ F(max_connection_lifetime_ms), 3600000 },
	{ F(channel_size_kb), 256 },
	{ F(max_request_kb), 65536 },
	{ F(max_agents), 4096 },
	{ F(max_inflight_per_agent), 256 },
	{ F(max_waiting), 100000 },
	{ F(send_timeout_ms), 30000 },
	{ F(health_interval_ms), 1000 },
	{ F(shutdown_timeout_ms), 30000 },
	{ F(log_level), 2 },
	{ F(syslog), 0 },
	{ F(want_version), 0 },
	{ F(ready_fd), -1 },
	{ F(want_help), 0 },
	{ F(want_check), 0 },
	{ F(n_allow_uids), 0 },
	{ F(n_allow_gids), 0 },
};

Test(config, defaults_match_design)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	size_t i;

	memset(&cfg, 0x5a, sizeof(cfg));
	config_defaults(&cfg);
	for (i = 0; i < sizeof(default_table) / sizeof(default_table[0]); i++)
		cr_expect_eq(field(&cfg, default_table[i].off), default_table[i].want,
			     "%s = %d, want %d", default_table[i].key,
			     field(&cfg, default_table[i].off), default_table[i].want);
	cr_expect_str_eq(cfg.dir, default_dir());
	cr_expect_str_eq(cfg.dsn, "");
	cr_expect_str_eq(cfg.config_file, "");
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), 0, "%s", err);
}

Test(config, load_without_anything_gives_defaults)
{
	struct pgb_config cfg, def;
	char err[ERRLEN] = "";
	const char *args[] = { NULL };

	cr_assert_eq(load_args(&cfg, err, args), 0, "%s", err);
	config_defaults(&def);
	cr_expect_eq(memcmp(&cfg, &def, sizeof(cfg)), 0);
}

/* ---- config_set: good values ------------------------------------------- */

static const struct {
	const char *key, *value;
	size_t off;
	int want;
} good_values[] = {
	{ "pool_size", "1", offsetof(struct pgb_config, pool_size), 1 },
	{ "pool_size", "10000", offsetof(struct pgb_config, pool_size), 10000 },
	{ "pool-size", "42", offsetof(struct pgb_config, pool_size), 42 },
	{ "pool_size", "0007", offsetof(struct pgb_config, pool_size), 7 },
	{ "min_pool_size", "0", offsetof(struct pgb_config, min_pool_size), 0 },
	{ "idle_timeout_ms", "0", offsetof(struct pgb_config, idle_timeout_ms), 0 },
	{ "statement-timeout-ms", "0",
	  offsetof(struct pgb_config, statement_timeout_ms), 0 },
	{ "retry_attempts", "0", offsetof(struct pgb_config, retry_attempts), 0 },
	{ "retry_attempts", "100", offsetof(struct pgb_config, retry_attempts), 100 },
	{ "breaker_threshold", "1000",
	  offsetof(struct pgb_config, breaker_threshold), 1000 },
	{ "channel_size_kb", "16", offsetof(struct pgb_config, channel_size_kb), 16 },
	{ "channel_size_kb", "65536",
	  offsetof(struct pgb_config, channel_size_kb), 65536 },
	{ "max_request_kb", "64", offsetof(struct pgb_config, max_request_kb), 64 },
	{ "max_request_kb", "1048576",
	  offsetof(struct pgb_config, max_request_kb), 1048576 },
	{ "max_agents", "65536", offsetof(struct pgb_config, max_agents), 65536 },
	{ "max_waiting", "10000000", offsetof(struct pgb_config, max_waiting), 10000000 },
	{ "log_level", "0", offsetof(struct pgb_config, log_level), 0 },
	{ "log_level", "error", offsetof(struct pgb_config, log_level), 0 },
	{ "log_level", "warn", offsetof(struct pgb_config, log_level), 1 },
	{ "log_level", "INFO", offsetof(struct pgb_config, log_level), 2 },
	{ "log_level", "debug", offsetof(struct pgb_config, log_level), 3 },
	{ "max_connection_lifetime_ms", "0",
	  offsetof(struct pgb_config, max_connection_lifetime_ms), 0 },
	{ "max_connection_lifetime_ms", "1000",
	  offsetof(struct pgb_config, max_connection_lifetime_ms), 1000 },
	{ "validation_interval_ms", "0",
	  offsetof(struct pgb_config, validation_interval_ms), 0 },
};

Test(config, set_good_values)
{
	size_t i;

	for (i = 0; i < sizeof(good_values) / sizeof(good_values[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "";

		config_defaults(&cfg);
		cr_expect_eq(config_set(&cfg, good_values[i].key, good_values[i].value,
					err, sizeof(err)), 0,
			     "%s=%s: %s", good_values[i].key, good_values[i].value, err);
		cr_expect_eq(field(&cfg, good_values[i].off), good_values[i].want,
			     "%s=%s", good_values[i].key, good_values[i].value);
	}
}

Test(config, set_strings)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	config_defaults(&cfg);
	cr_assert_eq(config_set(&cfg, "dir", "/run/pgb", err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(cfg.dir, "/run/pgb");
	cr_assert_eq(config_set(&cfg, "dsn", "host=db dbname=x", err, sizeof(err)), 0);
	cr_expect_str_eq(cfg.dsn, "host=db dbname=x");
	cr_assert_eq(config_set(&cfg, "dsn", "", err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(cfg.dsn, "");
}

/* loop: one of three words, nothing else (not even another case). */
Test(config, loop_is_one_of_its_words)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	config_defaults(&cfg);
	cr_expect_str_eq(cfg.loop, "auto");
	for (const char *const *w = (const char *const[]){ "io_uring", "epoll", "auto", NULL }; *w;
	     w++) {
		cr_assert_eq(config_set(&cfg, "loop", *w, err, sizeof(err)), 0, "%s", err);
		cr_expect_str_eq(cfg.loop, *w);
	}
	for (const char *const *w = (const char *const[]){ "EPOLL", "uring", "", "epoll ", NULL };
	     *w; w++) {
		cr_assert_eq(config_set(&cfg, "loop", *w, err, sizeof(err)), -EINVAL, "%s accepted", *w);
		cr_expect(strstr(err, "allowed: auto, io_uring, epoll"), "%s", err);
	}
	cr_expect_str_eq(cfg.loop, "auto");
	cr_assert_eq(config_validate(&cfg, err, sizeof(err)), 0, "%s", err);
	snprintf(cfg.loop, sizeof(cfg.loop), "select");
	cr_assert_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "loop"), "%s", err);
}

/* ---- config_set: hostile values ---------------------------------------- */

static char huge[20000];

static const struct {
	const char *key, *value;
} bad_values[] = {
	/* shorter than a connect: every new backend would be closed before
	 * it served anything */
	{ "max_connection_lifetime_ms", "999" },
	{ "max_connection_lifetime_ms", "1" },
	{ "pool_size", "99999999999999999999" },
	{ "pool_size", "9223372036854775808" },
	{ "pool_size", "18446744073709551621" },	/* 2^64 + 5 wraps to 5 */
	{ "pool_size", "9223372036854775817" },	/* 2^63 + 9 */
	{ "pool_size", "2147483648" },
	{ "pool_size", "-1" },
	{ "pool_size", "+5" },
	{ "pool_size", "" },
	{ "pool_size", " " },
	{ "pool_size", " 5" },
	{ "pool_size", "5 " },
	{ "pool_size", "12abc" },
	{ "pool_size", "10x" },
	{ "pool_size", "0x10" },
	{ "pool_size", "1e3" },
	{ "pool_size", "1.5" },
	{ "pool_size", "abc" },
	{ "pool_size", "0" },
	{ "pool_size", "10001" },
	{ "pool_size", "5\n" },
	{ "min_pool_size", "-0" },
	{ "max_pool_size", "0" },
	{ "connection_timeout_ms", "0" },
	{ "acquire_timeout_ms", "0" },
	{ "retry_attempts", "101" },
	{ "breaker_threshold", "0" },
	{ "breaker_threshold", "1001" },
	{ "keepalive_initial_delay_ms", "999" },
	{ "channel_size_kb", "48" },
	{ "channel_size_kb", "8" },
	{ "channel_size_kb", "131072" },
	{ "channel_size_kb", "255" },
	{ "max_request_kb", "63" },
	{ "max_request_kb", "1048577" },
	{ "max_agents", "0" },
	{ "max_agents", "65537" },
	{ "max_inflight_per_agent", "0" },
	{ "max_waiting", "10000001" },
	{ "health_interval_ms", "0" },
	{ "log_level", "4" },
	{ "log_level", "verbose" },
	{ "log_level", "" },
	{ "log_level", "info " },
	{ "dir", "" },
	{ "allow_uids", "1,,2" },
	{ "allow_uids", "1," },
	{ "allow_uids", ",1" },
	{ "allow_uids", "abc" },
	{ "allow_uids", "-1" },
	{ "allow_uids", "1 2" },
	{ "allow_uids", "4294967295" },
	{ "allow_uids", "99999999999999999999" },
	{ "allow_uids", "4294967296" },
	{ "allow_uids", "18446744073709551617" },
	{ "allow_gids", "0x10" },
	{ "allow_uids", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17" },
};

Test(config, set_bad_values_refused_with_key_value_and_allowed)
{
	size_t i;

	for (i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		struct pgb_config cfg, before;
		char err[ERRLEN] = "";
		const char *key = bad_values[i].key;

		config_defaults(&cfg);
		before = cfg;
		cr_expect_eq(config_set(&cfg, key, bad_values[i].value, err,
					sizeof(err)), -EINVAL,
			     "%s=\"%s\" accepted", key, bad_values[i].value);
		cr_expect_eq(memcmp(&cfg, &before, sizeof(cfg)), 0,
			     "%s=\"%s\" changed the config", key, bad_values[i].value);
		cr_expect_eq(strncmp(err, key, strlen(key)), 0, "%s", err);
		cr_expect_not_null(strstr(err, "invalid value \""), "%s", err);
		cr_expect_not_null(strstr(err, "(allowed: "), "%s", err);
	}
}

Test(config, zero_or_a_range)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	config_defaults(&cfg);
	cr_expect_eq(config_set(&cfg, "max_connection_lifetime_ms", "500", err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "max_connection_lifetime_ms: invalid value \"500\" (allowed: 0, "
			 "or integer 1000..604800000, milliseconds)");
	cfg.max_connection_lifetime_ms = 500;
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "max_connection_lifetime_ms (500) out of range"), "%s", err);
	cfg.max_connection_lifetime_ms = 0;
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), 0, "%s", err);
}

Test(config, error_message_format)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	config_defaults(&cfg);
	cr_assert_eq(config_set(&cfg, "pool_size", "abc", err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "pool_size: invalid value \"abc\" (allowed: integer 1..10000)");
	cr_assert_eq(config_set(&cfg, "channel_size_kb", "48", err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "channel_size_kb: invalid value \"48\" "
			 "(allowed: power of two 16..65536, KiB)");
	cr_assert_eq(config_set(&cfg, "poolsize", "5", err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "unknown key \"poolsize\"");
	cr_assert_eq(config_set(&cfg, "pool_size", NULL, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "pool_size: missing value");
	/* Control characters are escaped, not echoed. */
	cr_assert_eq(config_set(&cfg, "pool_size", "1\x1b[2J\"", err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "pool_size: invalid value \"1\\x1b[2J\\\"\" "
			 "(allowed: integer 1..10000)");
}

Test(config, huge_values_are_cut_in_messages)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	char small[8];

	memset(huge, '7', sizeof(huge) - 1);
	config_defaults(&cfg);
	cr_assert_eq(config_set(&cfg, "pool_size", huge, err, sizeof(err)), -EINVAL);
	cr_expect_lt(strlen(err), 200);
	cr_expect_not_null(strstr(err, "...\" (allowed"), "%s", err);

	memset(huge, 'x', sizeof(huge) - 1);
	cr_assert_eq(config_set(&cfg, "dsn", huge, err, sizeof(err)), -EINVAL);
	cr_assert_eq(config_set(&cfg, "dir", huge, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(cfg.dir, default_dir());
	cr_assert_eq(config_set(&cfg, huge, "1", err, sizeof(err)), -EINVAL);
	cr_expect_eq(strncmp(err, "unknown key \"xxx", 16), 0, "%s", err);

	/* A tiny error buffer is truncated, never overrun. */
	memset(small, '#', sizeof(small));
	cr_assert_eq(config_set(&cfg, "pool_size", "abc", small, 4), -EINVAL);
	cr_expect_str_eq(small, "poo");
	cr_expect_eq(small[4], '#');
	cr_assert_eq(config_set(&cfg, "pool_size", "abc", NULL, 0), -EINVAL);
}

Test(config, dsn_at_its_limit)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	char dsn[sizeof(cfg.dsn) + 1];

	config_defaults(&cfg);
	memset(dsn, 'a', sizeof(dsn));
	dsn[sizeof(cfg.dsn) - 1] = '\0';	/* 4095 bytes: fits */
	cr_expect_eq(config_set(&cfg, "dsn", dsn, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(strlen(cfg.dsn), sizeof(cfg.dsn) - 1);
	dsn[sizeof(cfg.dsn) - 1] = 'a';
	dsn[sizeof(cfg.dsn)] = '\0';		/* 4096 bytes: does not */
	cr_expect_eq(config_set(&cfg, "dsn", dsn, err, sizeof(err)), -EINVAL);
}

/* ---- id lists ---------------------------------------------------------- */

Test(config, uid_and_gid_lists)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	int i;

	config_defaults(&cfg);
	cr_assert_eq(config_set(&cfg, "allow_uids", "1000, 1001 ,0", err,
				sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.n_allow_uids, 3);
	cr_expect_eq(cfg.allow_uids[0], 1000);
	cr_expect_eq(cfg.allow_uids[1], 1001);
	cr_expect_eq(cfg.allow_uids[2], 0);
	cr_assert_eq(config_set(&cfg, "allow-gids", "4294967294", err, sizeof(err)), 0);
	cr_expect_eq(cfg.n_allow_gids, 1);
	cr_expect_eq(cfg.allow_gids[0], 4294967294u);

	/* A later source replaces the list; "" empties it. */
	cr_assert_eq(config_set(&cfg, "allow_uids", "7", err, sizeof(err)), 0);
	cr_expect_eq(cfg.n_allow_uids, 1);
	cr_expect_eq(cfg.allow_uids[0], 7);
	cr_assert_eq(config_set(&cfg, "allow_uids", "", err, sizeof(err)), 0);
	cr_expect_eq(cfg.n_allow_uids, 0);

	cr_assert_eq(config_set(&cfg, "allow_uids",
				"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", err,
				sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.n_allow_uids, CONFIG_MAX_IDS);
	for (i = 0; i < CONFIG_MAX_IDS; i++)
		cr_expect_eq(cfg.allow_uids[i], (uid_t)(i + 1));
}

/* ---- config file ------------------------------------------------------- */

Test(config, file_parsing)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *path = write_file("a.conf",
		"# pgbroker test configuration\n"
		"\n"
		"   \t\n"
		"pool_size = 10\n"
		"  min_pool_size=2   \n"
		"\tmax-pool-size\t=\t20\r\n"
		"   # indented comment = 99\n"
		"log_level = debug\n"
		"dsn = host=db port=5433 password='a # b'\n"
		"dir = /run/pgb test\n"
		"allow_uids = 1000, 1001\n"
		"retry_attempts = 1\n"
		"retry_attempts = 3\n"
		"channel_size_kb = 1024");		/* no final newline */

	config_defaults(&cfg);
	cr_assert_eq(config_load_file(&cfg, path, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.pool_size, 10);
	cr_expect_eq(cfg.min_pool_size, 2);
	cr_expect_eq(cfg.max_pool_size, 20);
	cr_expect_eq(cfg.log_level, 3);
	cr_expect_str_eq(cfg.dsn, "host=db port=5433 password='a # b'");
	cr_expect_str_eq(cfg.dir, "/run/pgb test");
	cr_expect_eq(cfg.n_allow_uids, 2);
	cr_expect_eq(cfg.allow_uids[1], 1001);
	cr_expect_eq(cfg.retry_attempts, 3);
	cr_expect_eq(cfg.channel_size_kb, 1024);
	cr_expect_eq(cfg.idle_timeout_ms, 300000);	/* untouched */
}

Test(config, file_empty_and_bom)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *path;

	config_defaults(&cfg);
	path = write_file("empty.conf", "");
	cr_expect_eq(config_load_file(&cfg, path, err, sizeof(err)), 0, "%s", err);
	path = write_file("bom.conf", "\xef\xbb\xbfpool_size = 9\n");
	cr_expect_eq(config_load_file(&cfg, path, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.pool_size, 9);
}

static const struct {
	const char *content;
	const char *want;	/* expected after "PATH:" */
} bad_files[] = {
	{ "pool_size = 10\n# ok\npoolsize = 5\n", "3: unknown key \"poolsize\"" },
	{ "pool_size = abc\n",
	  "1: pool_size: invalid value \"abc\" (allowed: integer 1..10000)" },
	{ "\n\npool_size\n", "3: expected \"key = value\", got \"pool_size\"" },
	{ "pool_size =\n", "1: pool_size: invalid value \"\"" },
	{ "pool_size = \t \n", "1: pool_size: invalid value \"\"" },
	{ "= 5\n", "1: expected \"key = value\", got \"= 5\"" },
	{ "!!!@@@ $$$\n", "1: expected \"key = value\"" },
	{ "[section]\n", "1: expected \"key = value\"" },
	{ "pool_size = 10 # comment\n", "1: pool_size: invalid value \"10 # comment\"" },
	{ "pool_size = 99999999999999999999\n", "1: pool_size: invalid value" },
	{ "pool_size = -1\n", "1: pool_size: invalid value \"-1\"" },
	{ "pool_size = 0x10\n", "1: pool_size: invalid value \"0x10\"" },
	{ "pool size = 5\n", "1: unknown key \"pool size\"" },
	{ "log_level = 1\nchannel_size_kb = 100\n", "2: channel_size_kb: invalid value" },
	{ "allow_uids = 1;2\n", "1: allow_uids: invalid value \"1;2\"" },
};

Test(config, file_bad_lines_name_file_and_line)
{
	size_t i;

	for (i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "", want[ERRLEN];
		const char *path = write_file("bad.conf", bad_files[i].content);

		snprintf(want, sizeof(want), "%s:%s", path, bad_files[i].want);
		config_defaults(&cfg);
		cr_expect_eq(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL,
			     "accepted: %s", bad_files[i].content);
		cr_expect_eq(strncmp(err, want, strlen(want)), 0,
			     "got \"%s\", want prefix \"%s\"", err, want);
	}
}

Test(config, file_with_nul_byte)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", want[ERRLEN];
	static const char data[] = "pool_size = 10\npool_size = 1\0 2\n";
	const char *path = write_file_n("nul.conf", data, sizeof(data) - 1);

	snprintf(want, sizeof(want), "%s:2: NUL byte in line", path);
	config_defaults(&cfg);
	cr_expect_eq(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, want);
}

Test(config, file_with_huge_line)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", want[ERRLEN];
	static char data[100000];
	const char *path;

	memcpy(data, "dsn = ", 6);
	memset(data + 6, 'x', sizeof(data) - 8);
	data[sizeof(data) - 2] = '\n';
	path = write_file("huge.conf", data);
	snprintf(want, sizeof(want), "%s:1: line too long", path);
	config_defaults(&cfg);
	cr_expect_eq(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
	cr_expect_eq(strncmp(err, want, strlen(want)), 0, "%s", err);
	cr_expect_str_eq(cfg.dsn, "");
}

Test(config, file_missing_or_directory)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", path[256];

	config_defaults(&cfg);
	snprintf(path, sizeof(path), "%s/nope.conf", tmpdir);
	cr_expect_eq(config_load_file(&cfg, path, err, sizeof(err)), -ENOENT);
	cr_expect_eq(strncmp(err, path, strlen(path)), 0, "%s", err);
	cr_expect_not_null(strstr(err, "No such file"), "%s", err);

	cr_expect_eq(config_load_file(&cfg, tmpdir, err, sizeof(err)), -EISDIR);
	cr_expect_eq(strncmp(err, tmpdir, strlen(tmpdir)), 0, "%s", err);
}

/* ---- environment ------------------------------------------------------- */

Test(config, env_sets_values)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	setenv("POSTGRES_POOL_SIZE", "30", 1);
	setenv("POSTGRES_IDLE_TIMEOUT", "0", 1);
	setenv("POSTGRES_BREAKER_RESET_TIMEOUT", "1234", 1);
	setenv("PGBROKER_LOG_LEVEL", "warn", 1);
	setenv("PGBROKER_CHANNEL_SIZE_KB", "4096", 1);
	setenv("PGBROKER_DIR", "/run/x", 1);
	setenv("PGBROKER_DSN", "dbname=t", 1);
	setenv("PGBROKER_ALLOW_GIDS", "5,6", 1);
	config_defaults(&cfg);
	cr_assert_eq(config_load_env(&cfg, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.pool_size, 30);
	cr_expect_eq(cfg.idle_timeout_ms, 0);
	cr_expect_eq(cfg.breaker_reset_timeout_ms, 1234);
	cr_expect_eq(cfg.log_level, 1);
	cr_expect_eq(cfg.channel_size_kb, 4096);
	cr_expect_str_eq(cfg.dir, "/run/x");
	cr_expect_str_eq(cfg.dsn, "dbname=t");
	cr_expect_eq(cfg.n_allow_gids, 2);
	cr_expect_eq(cfg.allow_gids[1], 6);
	cr_expect_eq(cfg.min_pool_size, 5);	/* unset: untouched */
}

Test(config, env_errors_name_the_variable)
{
	static const struct {
		const char *var, *value, *want;
	} cases[] = {
		{ "POSTGRES_POOL_SIZE", "abc",
		  "POSTGRES_POOL_SIZE (pool_size): invalid value \"abc\" "
		  "(allowed: integer 1..10000)" },
		{ "POSTGRES_RETRY_ATTEMPTS", "",
		  "POSTGRES_RETRY_ATTEMPTS (retry_attempts): invalid value \"\" "
		  "(allowed: integer 0..100)" },
		{ "PGBROKER_MAX_AGENTS", "-5",
		  "PGBROKER_MAX_AGENTS (max_agents): invalid value \"-5\" "
		  "(allowed: integer 1..65536)" },
		{ "PGBROKER_DIR", "",
		  "PGBROKER_DIR (dir): invalid value \"\" "
		  "(allowed: non-empty string of at most 93 bytes)" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "";

		clear_env();
		setenv(cases[i].var, cases[i].value, 1);
		config_defaults(&cfg);
		cr_expect_eq(config_load_env(&cfg, err, sizeof(err)), -EINVAL);
		cr_expect_str_eq(err, cases[i].want);
	}
}

/* ---- precedence through config_load ------------------------------------ */

Test(config, env_overrides_file_and_flags_override_env)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *path = write_file("p.conf",
		"pool_size = 10\n"
		"retry_attempts = 7\n"
		"idle_timeout_ms = 1000\n"
		"dir = /from/file\n");
	const char *args[] = { "--config", path, "--idle-timeout-ms", "2000",
			       "--dir=/from/flag", NULL };

	setenv("POSTGRES_POOL_SIZE", "20", 1);
	setenv("POSTGRES_IDLE_TIMEOUT", "1500", 1);
	setenv("PGBROKER_DIR", "/from/env", 1);
	cr_assert_eq(load_args(&cfg, err, args), 0, "%s", err);
	cr_expect_str_eq(cfg.config_file, path);
	cr_expect_eq(cfg.retry_attempts, 7);		/* file only */
	cr_expect_eq(cfg.pool_size, 20);		/* env over file */
	cr_expect_eq(cfg.idle_timeout_ms, 2000);	/* flag over env */
	cr_expect_str_eq(cfg.dir, "/from/flag");
}

Test(config, config_flag_anywhere_loads_before_other_flags)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", arg[300];
	const char *path = write_file("q.conf", "pool_size = 10\nmax_pool_size = 12\n");
	const char *args[] = { "--pool-size", "11", arg, NULL };

	snprintf(arg, sizeof(arg), "--config=%s", path);
	cr_assert_eq(load_args(&cfg, err, args), 0, "%s", err);
	cr_expect_eq(cfg.pool_size, 11);
	cr_expect_eq(cfg.max_pool_size, 12);
}

Test(config, flag_forms)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *args[] = {
		"--pool_size", "30", "--min-pool-size=3", "--max_pool_size=40",
		"--log-level", "debug", "--dsn", "host=h password=p",
		"--allow-uids=1,2", "--check-config", "--ready-fd", "7",
		"--dsn=host=h2", NULL,
	};

	cr_assert_eq(load_args(&cfg, err, args), 0, "%s", err);
	cr_expect_eq(cfg.pool_size, 30);
	cr_expect_eq(cfg.min_pool_size, 3);
	cr_expect_eq(cfg.max_pool_size, 40);
	cr_expect_eq(cfg.log_level, 3);
	cr_expect_str_eq(cfg.dsn, "host=h2");		/* last one wins */
	cr_expect_eq(cfg.n_allow_uids, 2);
	cr_expect_eq(cfg.want_check, 1);
	cr_expect_eq(cfg.want_help, 0);
	cr_expect_eq(cfg.ready_fd, 7);
}

Test(config, booleans_and_version)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *bare[] = { "--syslog", "--pool-size", "30", NULL };
	const char *off[] = { "--syslog=off", NULL };
	/* as --help shows it: --syslog [on|off] */
	const char *off2[] = { "--syslog", "off", "--pool-size", "31", NULL };
	const char *on2[] = { "--pool-size", "32", "--syslog", "yes", NULL };
	const char *version[] = { "--pool-size", "junk", "--version", NULL };
	const char *v2[] = { "-V", NULL };
	static const char *const yes[] = { "on", "true", "YES", "1" };
	static const char *const no[] = { "off", "False", "no", "0" };

	cr_assert_eq(load_args(&cfg, err, bare), 0, "%s", err);
	cr_expect_eq(cfg.syslog, 1);
	cr_expect_eq(cfg.pool_size, 30);
	cr_assert_eq(load_args(&cfg, err, off), 0, "%s", err);
	cr_expect_eq(cfg.syslog, 0);
	cr_assert_eq(load_args(&cfg, err, off2), 0, "%s", err);
	cr_expect_eq(cfg.syslog, 0);
	cr_expect_eq(cfg.pool_size, 31);
	cr_assert_eq(load_args(&cfg, err, on2), 0, "%s", err);
	cr_expect_eq(cfg.syslog, 1);
	cr_expect_eq(cfg.pool_size, 32);
	for (size_t i = 0; i < 4; i++) {
		cr_assert_eq(config_set(&cfg, "syslog", yes[i], err, sizeof(err)), 0, "%s", err);
		cr_expect_eq(cfg.syslog, 1, "%s", yes[i]);
		cr_assert_eq(config_set(&cfg, "syslog", no[i], err, sizeof(err)), 0, "%s", err);
		cr_expect_eq(cfg.syslog, 0, "%s", no[i]);
	}
	cr_expect_eq(config_set(&cfg, "syslog", "maybe", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "syslog: invalid value \"maybe\" (allowed: on, off"), "%s", err);
	/* --version, like --help, wins over errors in other flags */
	cr_assert_eq(load_args(&cfg, err, version), 0, "%s", err);
	cr_expect_eq(cfg.want_version, 1);
	cr_assert_eq(load_args(&cfg, err, v2), 0, "%s", err);
	cr_expect_eq(cfg.want_version, 1);
}

Test(config, diff_names_each_changed_key_and_hides_the_dsn)
{
	struct pgb_config a, b;
	char buf[512];

	config_defaults(&a);
	config_defaults(&b);
	config_diff(&a, &b, buf, sizeof(buf));
	cr_expect_str_eq(buf, "");
	b.pool_size = 7;
	b.log_level = 3;
	b.syslog = 1;
	snprintf(b.dsn, sizeof(b.dsn), "host=x password=secret");
	config_diff(&a, &b, buf, sizeof(buf));
	cr_expect_str_eq(buf, "pool_size 25 -> 7, log_level info -> debug, syslog off -> on, "
			 "dsn changed");
	config_diff(&a, &b, buf, 10);
	cr_expect_eq(strlen(buf), 9);
}

Test(config, flag_value_may_look_like_a_flag)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *args[] = { "--dsn", "--help", NULL };

	cr_assert_eq(load_args(&cfg, err, args), 0, "%s", err);
	cr_expect_str_eq(cfg.dsn, "--help");
	cr_expect_eq(cfg.want_help, 0);
}

Test(config, help_wins_over_errors)
{
	static const char *const cases[][4] = {
		{ "--help", NULL },
		{ "-h", NULL },
		{ "--pool-size", "abc", "--help", NULL },
		{ "--bogus", "-h", NULL },
		{ "--help", "--config", "/nonexistent/file", NULL },
		{ "--min-pool-size", "60", "--help", NULL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "";

		cr_expect_eq(load_args(&cfg, err, (const char *const *)cases[i]), 0,
			     "case %zu: %s", i, err);
		cr_expect_eq(cfg.want_help, 1, "case %zu", i);
	}
}

static const struct {
	const char *args[6];
	const char *want;	/* exact message, or prefix if it ends in '*' */
} bad_args[] = {
	{ { "--poolsize", "5" }, "unknown option \"--poolsize\" (see --help)" },
	{ { "--poolsize=5" }, "unknown option \"--poolsize\" (see --help)" },
	{ { "-p", "5" }, "unexpected argument \"-p\" (see --help)" },
	{ { "extra" }, "unexpected argument \"extra\" (see --help)" },
	{ { "--" }, "unexpected argument \"--\" (see --help)" },
	{ { "--pool-size" }, "--pool-size: missing value" },
	{ { "--config" }, "--config: missing value" },
	{ { "--config=" }, "--config: invalid file name*" },
	{ { "--ready-fd" }, "--ready-fd: missing value" },
	{ { "--ready-fd", "-1" },
	  "--ready-fd: invalid value \"-1\" (allowed: integer 0..2147483647)" },
	{ { "--ready-fd", "3x" }, "--ready-fd: invalid value \"3x\"*" },
	{ { "--check-config=yes" }, "--check-config takes no value" },
	{ { "--help=1" }, "--help takes no value" },
	{ { "--pool-size", "abc" },
	  "--pool-size (pool_size): invalid value \"abc\" (allowed: integer 1..10000)" },
	{ { "--pool_size=" },
	  "--pool_size (pool_size): invalid value \"\" (allowed: integer 1..10000)" },
	{ { "--channel-size-kb", "100" }, "--channel-size-kb (channel_size_kb): *" },
	{ { "--dir", "" }, "--dir (dir): invalid value \"\"*" },
	/* the first bad argument is the one reported */
	{ { "--bogus", "--pool-size", "abc" }, "unknown option \"--bogus\"*" },
	{ { "--pool-size", "abc", "--bogus" }, "unknown option \"--bogus\"*" },
};

Test(config, bad_flags)
{
	size_t i;

	for (i = 0; i < sizeof(bad_args) / sizeof(bad_args[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "";
		const char *want = bad_args[i].want;
		size_t wlen = strlen(want);

		cr_expect_eq(load_args(&cfg, err, bad_args[i].args), -EINVAL,
			     "case %zu accepted", i);
		if (want[wlen - 1] == '*')
			cr_expect_eq(strncmp(err, want, wlen - 1), 0,
				     "case %zu: got \"%s\", want \"%s\"", i, err, want);
		else
			cr_expect_str_eq(err, want, "case %zu", i);
	}
}

Test(config, load_reports_file_and_env_errors)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", want[ERRLEN];
	const char *path = write_file("bad.conf", "pool_size = 5\nbogus = 1\n");
	const char *args[] = { "--config", path, NULL };
	const char *args2[] = { NULL };

	snprintf(want, sizeof(want), "%s:2: unknown key \"bogus\"", path);
	cr_expect_eq(load_args(&cfg, err, args), -EINVAL);
	cr_expect_str_eq(err, want);

	setenv("POSTGRES_MAX_POOL_SIZE", "x", 1);
	cr_expect_eq(load_args(&cfg, err, args2), -EINVAL);
	cr_expect_eq(strncmp(err, "POSTGRES_MAX_POOL_SIZE (max_pool_size): ", 40), 0,
		     "%s", err);
}

Test(config, load_validates)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";
	const char *args[] = { "--min-pool-size", "60", NULL };
	const char *args2[] = { "--pool-size", "60", "--max-pool-size", "60",
				"--min-pool-size", "60", NULL };

	cr_expect_eq(load_args(&cfg, err, args), -EINVAL);
	cr_expect_str_eq(err, "min_pool_size (60) must not exceed max_pool_size (50)");
	cr_expect_eq(load_args(&cfg, err, args2), 0, "%s", err);
}

/* ---- config_validate --------------------------------------------------- */

Test(config, validate_cross_key_rules)
{
	static const struct {
		int min, size, max, delay, max_delay;
		const char *want;
	} cases[] = {
		{ 5, 25, 50, 100, 30000, NULL },
		{ 0, 1, 1, 1, 1, NULL },
		{ 50, 50, 50, 30000, 30000, NULL },
		{ 60, 25, 50, 100, 30000,
		  "min_pool_size (60) must not exceed max_pool_size (50)" },
		{ 30, 25, 50, 100, 30000,
		  "min_pool_size (30) must not exceed pool_size (25)" },
		{ 5, 60, 50, 100, 30000,
		  "pool_size (60) must not exceed max_pool_size (50)" },
		{ 5, 25, 50, 30001, 30000,
		  "retry_delay_ms (30001) must not exceed retry_max_delay_ms (30000)" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "";

		config_defaults(&cfg);
		cfg.min_pool_size = cases[i].min;
		cfg.pool_size = cases[i].size;
		cfg.max_pool_size = cases[i].max;
		cfg.retry_delay_ms = cases[i].delay;
		cfg.retry_max_delay_ms = cases[i].max_delay;
		if (!cases[i].want) {
			cr_expect_eq(config_validate(&cfg, err, sizeof(err)), 0,
				     "case %zu: %s", i, err);
		} else {
			cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL,
				     "case %zu", i);
			cr_expect_str_eq(err, cases[i].want);
		}
	}
}

/* The per-agent limits: their defaults, their ranges, and a share of the
 * pool that the pool cannot have. */
Test(config, per_agent_limits)
{
	static const struct {
		const char *key, *value, *want;   /* want NULL: accepted */
	} cases[] = {
		{ "max_backends_per_agent", "0", NULL },
		{ "max_backends_per_agent", "3", NULL },
		{ "max_backends_per_agent", "-1", "max_backends_per_agent" },
		{ "max_agents_per_uid", "0", NULL },
		{ "max_agents_per_uid", "64", NULL },
		{ "max_agents_per_uid", "65537", "max_agents_per_uid" },
		{ "hello_timeout_ms", "200", NULL },
		{ "hello_timeout_ms", "0", "hello_timeout_ms" },
		{ "hello-timeout-ms", "600001", "hello_timeout_ms" },
	};
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	config_defaults(&cfg);
	cr_assert_eq(cfg.max_backends_per_agent, 0, "default: half of max_pool_size");
	cr_assert_eq(cfg.max_agents_per_uid, 0);
	cr_assert_eq(cfg.hello_timeout_ms, 5000);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = config_set(&cfg, cases[i].key, cases[i].value, err, sizeof(err));

		if (!cases[i].want) {
			cr_expect_eq(rc, 0, "%s=%s: %s", cases[i].key, cases[i].value, err);
		} else {
			cr_expect_eq(rc, -EINVAL, "%s=%s accepted", cases[i].key, cases[i].value);
			cr_expect(strstr(err, cases[i].want), "%s", err);
		}
	}
	config_defaults(&cfg);
	cfg.max_pool_size = 4;
	cfg.pool_size = 4;
	cfg.min_pool_size = 1;
	cfg.max_backends_per_agent = 5;
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "max_backends_per_agent (5) must not exceed max_pool_size (4)");
}

/* Valid one by one, but max_pool_size cannot be reached when a statement
 * gives up (acquire_timeout_ms) before the pool may grow past pool_size
 * (reserve_timeout_ms): said, not refused. */
Test(config, advise_on_an_unreachable_max_pool_size)
{
	static const struct {
		int size, max, reserve, acquire;
		int want;
	} cases[] = {
		{ 25, 50, 5000, 30000, 0 },
		{ 25, 50, 5000, 5001, 0 },
		{ 25, 50, 5000, 5000, 1 },
		{ 25, 50, 5000, 2000, 1 },
		{ 50, 50, 5000, 2000, 0 },	/* no reserve to reach */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgb_config cfg;
		char msg[ERRLEN] = "";

		config_defaults(&cfg);
		cfg.pool_size = cases[i].size;
		cfg.max_pool_size = cases[i].max;
		cfg.reserve_timeout_ms = cases[i].reserve;
		cfg.acquire_timeout_ms = cases[i].acquire;
		cr_assert_eq(config_validate(&cfg, msg, sizeof(msg)), 0, "case %zu: %s", i, msg);
		cr_expect_eq(config_advise(&cfg, msg, sizeof(msg)), cases[i].want, "case %zu: %s",
			     i, msg);
		if (cases[i].want)
			cr_expect(strstr(msg, "max_pool_size (50) is never reached") &&
				  strstr(msg, "reserve_timeout_ms") && strstr(msg, "acquire_timeout_ms"),
				  "case %zu: %s", i, msg);
		else
			cr_expect_str_eq(msg, "", "case %zu", i);
	}
}

Test(config, validate_ranges_of_struct_set_directly)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "";

	config_defaults(&cfg);
	cfg.channel_size_kb = 48;
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect_eq(strncmp(err, "channel_size_kb (48) out of range", 33), 0, "%s", err);

	config_defaults(&cfg);
	cfg.max_agents = -1;
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect_eq(strncmp(err, "max_agents (-1)", 15), 0, "%s", err);

	config_defaults(&cfg);
	cfg.n_allow_uids = CONFIG_MAX_IDS + 1;
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
}

Test(config, validate_dir)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", dir[200];

	/* sun_path is 108 bytes: dir + "/pgbroker.sock" + NUL must fit. */
	config_defaults(&cfg);
	memset(dir, 'd', sizeof(dir));
	dir[0] = '/';
	dir[93] = '\0';
	cr_assert_eq(config_set(&cfg, "dir", dir, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), 0, "%s", err);

	/* One byte more is refused where it is set ... */
	dir[93] = 'd';
	dir[94] = '\0';
	cr_expect_eq(config_set(&cfg, "dir", dir, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "at most 93 bytes"), "%s", err);

	/* ... and by config_validate when the struct was filled directly. */
	memcpy(cfg.dir, dir, 95);
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "too long"), "%s", err);
	cr_expect_not_null(strstr(err, "at most 93 bytes"), "%s", err);

	cfg.dir[0] = '\0';
	cr_expect_eq(config_validate(&cfg, err, sizeof(err)), -EINVAL);
	cr_expect_str_eq(err, "dir must not be empty");
}

/* ---- printing ---------------------------------------------------------- */

static const char *const all_keys[] = {
	"pool_size", "min_pool_size", "max_pool_size", "reserve_timeout_ms",
	"connection_timeout_ms", "idle_timeout_ms", "acquire_timeout_ms",
	"statement_timeout_ms", "retry_attempts", "retry_delay_ms",
	"retry_max_delay_ms", "keepalive_initial_delay_ms", "breaker_threshold",
	"breaker_reset_timeout_ms", "validation_interval_ms",
	"max_connection_lifetime_ms", "channel_size_kb", "max_request_kb",
	"max_agents", "max_inflight_per_agent", "max_waiting", "send_timeout_ms",
	"health_interval_ms", "log_level", "dir", "dsn", "allow_uids",
	"allow_gids",
};

Test(config, print_every_key)
{
	struct pgb_config cfg;
	char err[ERRLEN] = "", want[128];
	char *out;
	size_t i;

	config_defaults(&cfg);
	cr_assert_eq(config_set(&cfg, "allow_uids", "1000,1001", err, sizeof(err)), 0);
	out = print_to_string(&cfg);
	for (i = 0; i < sizeof(all_keys) / sizeof(all_keys[0]); i++) {
		snprintf(want, sizeof(want), "\n%s = ", all_keys[i]);
		cr_expect(strstr(out, want) || strncmp(out, want + 1, strlen(want + 1)) == 0,
			  "missing %s in:\n%s", all_keys[i], out);
	}
	cr_expect_not_null(strstr(out, "pool_size = 25\n"));
	cr_expect_not_null(strstr(out, "log_level = info\n"));
	{
		char dline[300];

		snprintf(dline, sizeof(dline), "dir = %s\n", default_dir());
		cr_expect_not_null(strstr(out, dline), "%s", out);
	}
	cr_expect_not_null(strstr(out, "dsn = \n"));
	cr_expect_not_null(strstr(out, "allow_uids = 1000,1001\n"));
	cr_expect_not_null(strstr(out, "allow_gids = \n"));
	free(out);
}

Test(config, print_masks_password)
{
	static const struct {
		const char *dsn, *want;
	} cases[] = {
		{ "host=db password=secret dbname=x", "host=db password=*** dbname=x" },
		{ "password=secret", "password=***" },
		{ "host=db password = 'se cr\\'et' user=u", "host=db password=*** user=u" },
		{ "password='unterminated", "password=***" },
		{ "passwordx=1 host=h", "passwordx=1 host=h" },
		{ "host = db", "host = db" },
		{ "postgresql://u:secret@db:5432/x", "postgresql://u:***@db:5432/x" },
		{ "postgres://u@db/x?password=secret&sslmode=require",
		  "postgres://u@db/x?password=***&sslmode=require" },
		{ "postgresql://u:p@q@db/x?sslmode=disable&password=s",
		  "postgresql://u:***@db/x?sslmode=disable&password=***" },
		{ "postgresql://db/x", "postgresql://db/x" },
		{ "=x junk", "=x junk" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pgb_config cfg;
		char err[ERRLEN] = "", want[256];
		char *out;

		config_defaults(&cfg);
		cr_assert_eq(config_set(&cfg, "dsn", cases[i].dsn, err, sizeof(err)), 0);
		out = print_to_string(&cfg);
		snprintf(want, sizeof(want), "\ndsn = %s\n", cases[i].want);
		cr_expect_not_null(strstr(out, want), "dsn %s: want %s, got:\n%s",
				   cases[i].dsn, cases[i].want, out);
		cr_expect_null(strstr(out, "secret"), "%s", out);
		free(out);
	}
}

/* What config_print writes reads back as the same configuration. */
Test(config, print_round_trips_through_a_file)
{
	struct pgb_config a, b;
	char err[ERRLEN] = "";
	const char *args[] = {
		"--pool-size", "7", "--min-pool-size", "0", "--max-pool-size", "9",
		"--idle-timeout-ms", "0", "--log-level", "warn",
		"--channel-size-kb", "64", "--dir", "/run/rt", "--dsn", "host=h dbname=d",
		"--allow-uids", "1,2,3", "--allow-gids", "44", NULL,
	};
	char *out1, *out2;
	const char *path;

	cr_assert_eq(load_args(&a, err, args), 0, "%s", err);
	out1 = print_to_string(&a);
	path = write_file("rt.conf", out1);
	config_defaults(&b);
	cr_assert_eq(config_load_file(&b, path, err, sizeof(err)), 0, "%s", err);
	out2 = print_to_string(&b);
	cr_expect_str_eq(out1, out2);
	cr_expect_eq(b.n_allow_uids, 3);
	cr_expect_eq(b.log_level, 1);
	free(out1);
	free(out2);
}

Test(config, usage_lists_every_key)
{
	static const char *const envs[] = {
		"POSTGRES_POOL_SIZE", "POSTGRES_BREAKER_RESET_TIMEOUT",
		"PGBROKER_CHANNEL_SIZE_KB", "PGBROKER_DIR", "PGBROKER_DSN",
		"PGBROKER_ALLOW_UIDS", "PGBROKER_LOG_LEVEL",
	};
	char *buf = NULL, flag[64];
	size_t len = 0, i, j;
	FILE *f = open_memstream(&buf, &len);

	cr_assert_not_null(f);
	config_usage(f, "pgbroker");
	cr_assert_eq(fclose(f), 0);
	cr_expect_eq(strncmp(buf, "Usage: pgbroker ", 16), 0);
	for (i = 0; i < sizeof(all_keys) / sizeof(all_keys[0]); i++) {
		snprintf(flag, sizeof(flag), "--%s ", all_keys[i]);
		for (j = 0; flag[j]; j++)
			if (flag[j] == '_')
				flag[j] = '-';
		cr_expect_not_null(strstr(buf, flag), "missing %s", flag);
	}
	for (i = 0; i < sizeof(envs) / sizeof(envs[0]); i++)
		cr_expect_not_null(strstr(buf, envs[i]), "missing %s", envs[i]);
	cr_expect_not_null(strstr(buf, "--pool-size N "));
	cr_expect_not_null(strstr(buf, "POSTGRES_POOL_SIZE=25\n"));
	cr_expect_not_null(strstr(buf, "--config FILE"));
	cr_expect_not_null(strstr(buf, "--ready-fd N"));
	cr_expect_not_null(strstr(buf, "--check-config"));
	free(buf);
}
