/* Circuit breaker over observations of a service. An attempt takes a ticket
 * (the observation round it starts in); attempts started in the same round
 * fail as one observation, so that a pool's parallel connects failing
 * together count once. After a failed observation the next attempt is
 * paced by a schedule that doubles from first_ms up to max_ms; after
 * `threshold` consecutive failed observations the breaker is open (callers
 * fail fast) until the schedule lets one probe through (half-open); the
 * probe's success closes it, its failure reopens it for the next, longer,
 * wait. A failure that is the service's own answer about us (a refused
 * login, a missing database) makes it "misconfigured" at once: callers fail
 * fast with that answer while probes go on, on the same schedule. Time is
 * passed in, so tests can drive it. Shared by the broker (around its
 * backend connects) and the client (pgb_breaker). */
#ifndef PGB_BREAKER_H
#define PGB_BREAKER_H

#include <stdint.h>

enum breaker_state {
	BREAKER_CLOSED = 0,
	BREAKER_OPEN = 1,
	BREAKER_HALF_OPEN = 2,
	BREAKER_MISCONFIGURED = 3,
};

/* Where the schedule starts. */
enum breaker_pace {
	/* The broker: after the n-th consecutive failed observation the next
	 * attempt waits min(first_ms * 2^(n-1), max_ms), open or not; while
	 * not open, one attempt at a time. */
	BREAKER_PACE_FROM_FIRST = 0,
	/* pgb_breaker: attempts are not paced while closed; the first open
	 * period is first_ms, each failed probe doubles it up to max_ms. */
	BREAKER_PACE_FROM_OPEN = 1,
};

/* Why an attempt failed. */
enum breaker_cause {
	BREAKER_OUTAGE = 0,     /* no answer: refused, reset, timed out, starting up */
	BREAKER_REFUSED = 1,    /* the service answered that it will not have us */
};

struct breaker {
	int threshold;
	int first_at;            /* the failed observation whose wait is first_ms */
	int64_t first_ms;
	int64_t max_ms;
	enum breaker_state state;
	int failures;            /* consecutive failed observations */
	int probing;             /* a paced attempt (or the probe) is out */
	int paced;               /* attempts after a failure wait for retry_at_ms */
	uint64_t round;          /* observations so far: the ticket of a new attempt */
	int64_t retry_at_ms;     /* failures > 0: no paced attempt before this */
	int64_t changed_ms;
	uint64_t times_opened;
};

void breaker_init(struct breaker *br, int threshold, int64_t first_ms, int64_t max_ms,
		  enum breaker_pace pace);
/* New limits, keeping the state; the wait already running is kept too. */
void breaker_set_limits(struct breaker *br, int threshold, int64_t first_ms, int64_t max_ms);
/* May an attempt start now? On yes, *ticket (may be NULL) is the round to
 * hand back to breaker_failure. Closed without failures: always. After a
 * failure (paced), open or misconfigured: one attempt once retry_at_ms has
 * come; half-open (its probe out): none. */
int breaker_allow(struct breaker *br, int64_t now_ms, uint64_t *ticket);
/* An attempt worked: closed, and the count and the schedule start again. */
void breaker_success(struct breaker *br, int64_t now_ms);
/* An attempt with `ticket` failed. A ticket of an earlier round belongs to
 * an observation already made and changes nothing (returns 0). Else the
 * failure is counted, the next attempt is scheduled, and 1 is returned when
 * this failure opened the breaker or made it misconfigured. */
int breaker_failure(struct breaker *br, uint64_t ticket, enum breaker_cause cause,
		    int64_t now_ms);
/* When the next paced attempt (the probe, when open) may start; 0 when
 * nothing failed. */
int64_t breaker_retry_at(const struct breaker *br);
/* The wait after the n-th consecutive failed observation. */
int64_t breaker_wait_ms(const struct breaker *br, int n);
/* Do callers fail fast now? Open before its wait ran out, or misconfigured. */
int breaker_failing_fast(const struct breaker *br, int64_t now_ms);
/* Something may have been fixed (a reload): the next attempt may go now. */
void breaker_retry_now(struct breaker *br, int64_t now_ms);
const char *breaker_state_name(enum breaker_state s);

#endif
