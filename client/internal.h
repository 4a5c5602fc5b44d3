/* libpgbroker's own calls between its files; not exported (see
 * libpgbroker.map), not part of the API. */
#ifndef PGB_CLIENT_INTERNAL_H
#define PGB_CLIENT_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "pgbroker.h"

#define PGB_API __attribute__((visibility("default")))

/* The helpers' defaults: the pool pgbroker replaces (DESIGN.md). */
enum {
	DEF_ATTEMPTS = 5,
	DEF_BASE_MS = 100,
	DEF_MAX_MS = 30000,
	DEF_JITTER_PCT = 5,
	DEF_BREAKER_THRESHOLD = 5,
	DEF_BREAKER_RESET_MS = 30000,
	BREAKER_MAX_RESET_FACTOR = 8, /* the open period doubles up to 8 x reset_ms */
};

/* outcome.c: fill an outcome; a bad argument (PGB_BAD_ARGUMENT, PB006);
 * after a failed operation, a message for one that gave none. */
void pgbi_outcome_set(struct pgb_outcome *o, const char *state, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int pgbi_bad_argument(struct pgb_outcome *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void pgbi_outcome_tidy(struct pgb_outcome *why, int rc, const char *what);
/* Sleep ms milliseconds, through signals. */
void pgbi_sleep_ms(int64_t ms);

/* client.c: 1 when the broker's last answer on c said its session was inside a
 * transaction (a BEGIN without its COMMIT or ROLLBACK yet). */
int pgbi_in_transaction(const pgb_conn *c);
/* What a cancel request for c needs, copied so that it can be sent from
 * another thread or a signal handler while c is in use (PQgetCancel). */
struct pgbi_cancel {
	char sock[108];          /* the broker's socket path */
	uid_t uid;               /* the broker's uid, checked again */
	uint32_t slot;
	uint64_t key;
};
/* 0, or -1 when c cannot be cancelled (not connected, no key). */
int pgbi_cancel_info(const pgb_conn *c, struct pgbi_cancel *out);
/* Ask the broker to cancel the statement that agent runs: 0 when the
 * request was taken (also when nothing was running), -1 with err filled.
 * Async-signal-safe: no allocation, no stdio, errno kept. */
int pgbi_cancel_send(const struct pgbi_cancel *k, char *err, size_t errlen);

/* The notices PostgreSQL sent before r (proto.h's packing: each notice its
 * error fields, then a NUL); *len 0 when none. Valid until pgb_clear. */
const char *pgbi_result_notices(const pgb_result *r, uint32_t *len);

#endif
