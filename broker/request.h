/* request.c: requests: reassembled from the request ring's frames, decoded,
 * and each agent's queue of statements run one after another. */
#ifndef PGB_BROKER_REQUEST_H
#define PGB_BROKER_REQUEST_H

#include "broker.h"

/* The one place a request changes state: it leaves its list (and that
 * list's count) and joins the new one. be: the backend whose pipeq
 * RQ_PIPED joins; otherwise NULL. Debug builds assert the transition. */
void req_set_state(struct broker *b, struct request *r, enum req_state to, struct backend *be);
/* Read up to *budget frames of a's request ring into requests. */
void request_read(struct broker *b, struct agent *a, int *budget);
/* How a request ends (request_finish). */
struct req_end {
	PGresult *res;          /* its result (taken), or NULL */
	const char *sqlstate;   /* set: answer with the broker's own error msg instead */
	const char *msg;
	int failed;             /* counts as a failed statement */
	const char *state;      /* its SQLSTATE, if any (57014: a statement timeout) */
	int64_t ran_since;      /* it ran, since then (0: it did not) */
	struct backend *rows;   /* set: the rows gathered there (rows.c) go with res */
};

/* The one way a request ends, but for a retry: count it as a statement
 * (a request whose agent is gone only if it ran), answer it (the
 * broker's error if sqlstate is set; else a batch's results; else res;
 * else XX000 "no result"), then request_done. */
void request_finish(struct broker *b, struct request *r, const struct req_end *e);
/* request_finish with the broker's own error: a failed statement. */
void request_fail(struct broker *b, struct request *r, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* r leaves without being counted (dropped, or counted already): free it;
 * its agent runs its next statement at the end of this pass. */
void request_done(struct broker *b, struct request *r);
/* Run a's next queued statement at the end of this pass. */
void agent_kick_later(struct broker *b, struct agent *a);
/* Once per loop pass: run the next statement of each agent kicked. */
void agent_run_kicks(struct broker *b);
void request_free(struct request *r);

#endif
