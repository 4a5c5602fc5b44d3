/* Integration test harness: a real broker process on the throwaway
 * PostgreSQL that tools/run-integ.sh started (PGB_TEST_DSN), real agent
 * processes, and direct libpq connections to check what really happened. */
#ifndef PGB_HARNESS_H
#define PGB_HARNESS_H

#include <libpq-fe.h>
#include <stdint.h>
#include <sys/types.h>

#include "pgbroker.h"

struct h_broker {
	pid_t pid;
	char dir[64];
	char log[96];
	char dsn[1024];   /* the DSN it was given, with its own application_name */
};

/* The test database's conninfo; fails the test when it is not set. */
const char *h_dsn(void);
/* A fresh directory "$PGB_TEST_TMP/NAME.XXXXXX" (or under /tmp) into buf. */
void h_mkdtemp(char *buf, size_t n, const char *name);
/* Path of a built binary below the repository root ("broker/pgbroker"). */
const char *h_bin(const char *rel, char *buf, size_t n);
/* Start a broker with extra flags (NULL-terminated list); waits for its
 * --ready-fd line (bounded). Fails the test when it does not come up.
 * A new run directory is made unless br->dir is already set. */
void h_broker_start(struct h_broker *br, const char *const *extra);
/* SIGTERM, bounded wait, SIGKILL. Returns the exit status (or -1). */
int h_broker_stop(struct h_broker *br);
/* SIGKILL and reap. */
void h_broker_kill(struct h_broker *br);
/* Under AddressSanitizer: brokers started after this keep no freed memory
 * in ASan's quarantine (it would count as grown in VmRSS). Else nothing. */
void h_asan_no_quarantine(void);
/* Resident memory of a process in kB (VmRSS), -1 when it is gone. */
long long h_rss_kb(pid_t pid);
/* Backends of this broker, counted directly in pg_stat_activity. */
long long h_backends(PGconn *pg, const struct h_broker *br, const char *where);
/* tools/pgtmp.sh CMD on the test's PostgreSQL (PGB_TEST_PGDIR): "pause"
 * (a fast stop) or "start"; fails the test when it fails. */
void h_pgtmp(const char *cmd);
/* The stats segment of the broker at dir, read directly: 0, or -1 when it
 * cannot be mapped or read consistently. */
struct stats_data;
int h_stats(const char *dir, struct stats_data *d);
/* Run the broker binary with args and capture exit status and output. */
int h_run(const char *const *argv, char *out, size_t n);

/* Connect to a broker; fails the test on error. */
pgb_conn *h_connect(const struct h_broker *br);
/* Run SQL through the broker and require success; returns the result. */
pgb_result *h_ok(pgb_conn *c, const char *sql);
/* Run SQL that must succeed and return its first value as a number. */
long long h_num(pgb_conn *c, const char *sql);

/* A direct connection to the test database (for checks). */
PGconn *h_pg(void);
/* First value of a direct query, as a number (-1 on error). */
long long h_pg_num(PGconn *pg, const char *sql);

/* Fork a child that runs fn(arg) and exits with its return value. */
pid_t h_fork(int (*fn)(void *), void *arg);
/* Wait for a child at most timeout_ms; returns its exit code, or -1 after
 * killing it when it overran, or 128+sig when it died of a signal. */
int h_wait(pid_t pid, int timeout_ms);

/* Poll a condition every few ms until it holds or timeout_ms passes. */
int h_until(int (*cond)(void *), void *arg, int timeout_ms);
long long h_now_ms(void);

/* A second local user for a test, made with useradd (skips the test when
 * not root) and removed with userdel: call h_user_del in the test's fini. */
struct h_user {
	char name[32];
	uid_t uid;
	gid_t gid;
};
void h_user_add(struct h_user *u);
void h_user_del(struct h_user *u);
/* In a forked child: become u (no supplementary groups), or _exit(120). */
void h_become(const struct h_user *u);

/* A raw agent: registers as libpgbroker does and maps its channel (the
 * caller writes to it by hand). *bell_fd: the bell eventfd when the broker
 * runs on epoll, else -1. */
struct chan_shm;
struct chan_shm *h_raw_register(const struct h_broker *br, int *sock, uint64_t *size,
				int *bell_fd);
/* Ring the raw agent's bell whether or not the broker listens: 0 or -errno. */
int h_raw_ring(struct chan_shm *ch, int bell_fd);

#endif
