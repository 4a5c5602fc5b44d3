/* Broker configuration: defaults < config file < environment < flags.
 * One table names every key; every value is validated where it is set. */
#ifndef PGB_CONFIG_H
#define PGB_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#define CONFIG_MAX_IDS 16

struct pgb_config {
	char dir[256];          /* run directory: socket, lock, stats segment */
	char dsn[4096];         /* libpq conninfo; "" = libpq's PG* variables */
	char config_file[256];  /* --config FILE, "" when none */
	char loop[16];          /* event loop: "auto", "io_uring" or "epoll" */

	int pool_size;
	int min_pool_size;
	int max_pool_size;
	int reserve_timeout_ms;
	int connection_timeout_ms;
	int idle_timeout_ms;
	int acquire_timeout_ms;
	int statement_timeout_ms;
	int retry_attempts;
	int retry_delay_ms;
	int retry_max_delay_ms;
	int keepalive_initial_delay_ms;
	int breaker_threshold;
	int breaker_reset_timeout_ms;
	int validation_interval_ms;
	int max_connection_lifetime_ms;
	int reset_query_always;     /* DISCARD ALL after every use, not only after session state */
	int channel_size_kb;        /* bytes per ring, in KiB (power of two) */
	int max_request_kb;         /* largest statement + params accepted */
	int max_memory_mb;          /* what the broker holds for agents (memory.c) */
	int max_agents;
	int max_inflight_per_agent;
	int max_backends_per_agent; /* backends one agent holds at once; 0: half of max_pool_size */
	int max_agents_per_uid;     /* registrations (and hellos) per uid; 0: no cap but max_agents */
	int hello_timeout_ms;       /* a connection that has not registered by then is closed */
	int max_waiting;            /* statements waiting for a backend, all agents */
	int send_timeout_ms;        /* agent that stops reading its responses */
	int idle_in_transaction_timeout_ms; /* set on every backend */
	int health_interval_ms;
	/* health thresholds (the replaced pool's, by default) */
	int health_util_warn_pct, health_util_crit_pct;
	int health_waiting_warn, health_waiting_crit;
	int health_success_warn_pct, health_success_crit_pct;
	int health_acquire_warn_ms, health_acquire_crit_ms;
	int shutdown_timeout_ms;    /* SIGTERM: wait this long for work in flight */
	int log_level;              /* 0 error, 1 warn, 2 info, 3 debug */
	int syslog;                 /* log to syslog instead of stderr */

	int n_allow_uids;           /* besides the broker's own uid */
	uid_t allow_uids[CONFIG_MAX_IDS];
	int n_allow_gids;
	gid_t allow_gids[CONFIG_MAX_IDS];

	/* set by config_load from flags that are commands, not settings */
	int want_help;
	int want_check;
	int want_version;
	int ready_fd;               /* --ready-fd N: write "ready\n" there once serving; -1 none */
};

/* Fill in the built-in defaults. */
void config_defaults(struct pgb_config *cfg);

/* Set one key ("pool_size"; '-' is accepted for '_') from its text form.
 * Returns 0, or -EINVAL with err naming the key, the value and what is
 * allowed. Every config_* call that takes err returns 0 or a negative errno
 * and says why in err. */
int config_set(struct pgb_config *cfg, const char *key, const char *value,
	       char *err, size_t errlen);

/* Read "key = value" lines ('#' comments, blank lines). -EINVAL with err
 * naming file:line on the first bad line; -errno for a file that cannot be
 * opened or read. */
int config_load_file(struct pgb_config *cfg, const char *path, char *err,
		     size_t errlen);

/* Apply the POSTGRES_* and PGBROKER_* environment variables. */
int config_load_env(struct pgb_config *cfg, char *err, size_t errlen);

/* Cross-key checks (min <= size <= max, ...). */
int config_validate(const struct pgb_config *cfg, char *err, size_t errlen);

/* Settings valid one by one that do not work together as meant (a
 * max_pool_size the pool never grows to): 1 with the reason in buf, for a
 * warning, else 0 and "". */
int config_advise(const struct pgb_config *cfg, char *buf, size_t len);

/* The whole precedence chain for the daemon: defaults, --config FILE,
 * environment, then the flags in argv (--key value, --key=value, --dir,
 * --dsn, --help, --check-config, --ready-fd). Returns 0, or -errno with err. */
int config_load(struct pgb_config *cfg, int argc, char **argv, char *err,
		size_t errlen);

/* Print the effective configuration, one "key = value" per line. */
void config_print(const struct pgb_config *cfg, FILE *out);

/* "key old -> new, ..." for every key that differs (the dsn only as
 * "changed": it may hold a password); "" when none. */
void config_diff(const struct pgb_config *from, const struct pgb_config *to,
		 char *buf, size_t len);

/* Print the usage text with every key, its env name and default. */
void config_usage(FILE *out, const char *argv0);

#endif
