/* Requests: reassembling them from the request ring's frames,
 * decoding, and each agent's queue of statements run one after another. */
#include <stdio.h>
#include <stdlib.h>

#include "agent.h"
#include "broker.h"
#include "classify.h"
#include "pool.h"
#include "request.h"
#include "response.h"
#include "waitq.h"

static void request_queue(struct broker *b, struct agent *a, struct request *r);
static void batch_new(struct broker *b, struct agent *a, struct request *r, uint64_t n);
static void agent_kick(struct broker *b, struct agent *a);

void request_free(struct request *r)
{
	if (!r)
		return;
	for (uint32_t i = 0; r->bres && i < r->nsub; i++)
		if (r->bres[i])
			PQclear(r->bres[i]);
	if (r->sparams)
		free(r->sparams[0]);
	free(r->sparams);
	free(r->subs);
	free(r->bres);
	free(r->blob);
	free(r->params);
	free(r);
}

/* Shutting down: a statement that arrives now is refused, unless it belongs
 * to a transaction already open, which may still finish (SIGTERM drains). */
static int refuse_new(const struct broker *b, const struct agent *a)
{
	const struct backend *be = a->pinned;
	PGTransactionStatusType st;

	if (!b->stopping)
		return 0;
	if (b->stopping == STOP_FAST || !be)
		return 1;
	st = PQtransactionStatus(be->pg);
	/* busy (ACTIVE): in a transaction if its statement started in one */
	return !(st == PQTRANS_INTRANS || st == PQTRANS_INERROR ||
		 (st == PQTRANS_ACTIVE && be->in_txn));
}

static void enqueue_error(struct broker *b, struct agent *a, uint32_t id,
			  const char *sqlstate, const char *msg)
{
	b->st.c.statements++;
	b->st.c.failed++;
	a->statements++;
	agent_respond_error(b, a, id, sqlstate, "%s", msg);
}

static void request_new(struct broker *b, struct agent *a, uint8_t *blob, uint64_t n,
			uint32_t id)
{
	struct request *r;
	const char *why;

	r = calloc(1, sizeof(*r));
	if (!r) {
		free(blob);
		enqueue_error(b, a, id, "PB006", "broker out of memory");
		return;
	}
	r->blob = blob;
	r->nbytes = n;
	r->id = id;
	r->agent = a;
	r->start_ns = b->now_ns;
	list_init(&r->link);
	list_init(&r->alink);
	if (n >= sizeof(struct req_head) &&
	    (((const struct req_head *)(const void *)blob)->flags & REQ_BATCH)) {
		batch_new(b, a, r, n);
		return;
	}
	if (req_decode(blob, n, &r->v, &why) < 0) {
		char msg[128];

		snprintf(msg, sizeof(msg), "malformed request: %s", why);
		request_free(r);
		b->st.c.protocol_errors++;
		enqueue_error(b, a, id, "PB006", msg);
		return;
	}
	r->flags = r->v.flags;
	if (r->v.nparams) {
		r->params = malloc(sizeof(char *) * r->v.nparams);
		if (!r->params) {
			request_free(r);
			enqueue_error(b, a, id, "PB006", "broker out of memory");
			return;
		}
		req_params(&r->v, r->params);
	}
	if (refuse_new(b, a)) {
		request_free(r);
		enqueue_error(b, a, id, "PB005", "broker is shutting down");
		return;
	}
	request_queue(b, a, r);
}

/* Backends one agent may hold at once: its independent statements, plus
 * its serial statement (running or waiting to) or its transaction's
 * backend as one. */
static uint32_t backends_per_agent(const struct broker *b)
{
	if (b->cfg.max_backends_per_agent)
		return (uint32_t)b->cfg.max_backends_per_agent;
	return b->cfg.max_pool_size > 2 ? (uint32_t)b->cfg.max_pool_size / 2 : 1;
}

static int agent_at_limit(const struct broker *b, const struct agent *a)
{
	return a->nindep + (a->running || a->pinned || a->nqueued ? 1 : 0) >= backends_per_agent(b);
}

/* An independent statement goes to the pool, counted. */
static void indep_submit(struct broker *b, struct agent *a, struct request *r)
{
	r->counted = 1;
	a->nindep++;
	pool_submit(b, r);
}

/* One of the agent's backends is free again: its statements held back go
 * on, oldest first, as far as the limit lets them. */
static void indep_release(struct broker *b, struct agent *a)
{
	while (!list_empty(&a->held) && !agent_at_limit(b, a) && !a->doom) {
		struct request *r = list_entry(list_pop(&a->held), struct request, link);

		r->held = 0;
		indep_submit(b, a, r);
	}
}

static void request_queue(struct broker *b, struct agent *a, struct request *r)
{
	a->nbytes += r->nbytes;
	if ((r->flags & (REQ_INDEPENDENT | REQ_RESET)) == REQ_INDEPENDENT && !a->pinned &&
	    !a->lost) {
		/* Beside the agent's other statements, on any backend, unless it
		 * holds its share of the pool: then it waits its turn here, not
		 * in the broker's queue ahead of other agents. */
		list_add_tail(&a->active, &r->alink);
		a->nactive++;
		a->statements++;
		if (agent_at_limit(b, a) || !list_empty(&a->held)) {
			r->held = 1;
			list_add_tail(&a->held, &r->link);
			return;
		}
		indep_submit(b, a, r);
		return;
	}
	list_add_tail(&a->queue, &r->link);
	a->nqueued++;
	agent_kick(b, a);
}

/* A batch: every statement decoded up front, all or nothing. */
static void batch_new(struct broker *b, struct agent *a, struct request *r, uint64_t n)
{
	const char *why;
	uint32_t count, total = 0;
	const char **flat;

	if (batch_count(r->blob, n, &count, &why) < 0)
		goto bad;
	r->subs = calloc(count, sizeof(*r->subs));
	r->sparams = calloc(count, sizeof(*r->sparams));
	r->bres = calloc(count, sizeof(*r->bres));
	if (!r->subs || !r->sparams || !r->bres) {
		why = "broker out of memory";
		goto bad;
	}
	r->nsub = count;
	if (batch_decode(r->blob, n, r->subs, &why) < 0)
		goto bad;
	for (uint32_t i = 0; i < count; i++)
		total += r->subs[i].nparams;
	flat = malloc(sizeof(char *) * (total + 1));
	if (!flat) {
		why = "broker out of memory";
		goto bad;
	}
	for (uint32_t i = 0; i < count; i++) {
		r->sparams[i] = flat;
		req_params(&r->subs[i], flat);
		flat += r->subs[i].nparams;
	}
	/* The batch is one transaction: a COMMIT or ROLLBACK inside would
	 * apply part of it, a BEGIN would leave a transaction open. */
	for (uint32_t i = 0; i < count; i++)
		if (r->subs[i].sql && sql_txn_control(r->subs[i].sql)) {
			char msg[200];
			uint32_t id = r->id;

			snprintf(msg, sizeof(msg),
				 "pgb_batch: statement %u begins or ends a transaction; a batch is "
				 "one transaction of its own (see pgb_transaction)", i);
			request_free(r);
			enqueue_error(b, a, id, "PB006", msg);
			return;
		}
	r->flags = ((const struct req_head *)(const void *)r->blob)->flags & ~REQ_INDEPENDENT;
	r->v = r->subs[0];
	if (refuse_new(b, a)) {
		uint32_t id = r->id;

		request_free(r);
		enqueue_error(b, a, id, "PB005", "broker is shutting down");
		return;
	}
	request_queue(b, a, r);
	return;
bad:
	{
		char msg[128];
		uint32_t id = r->id;

		snprintf(msg, sizeof(msg), "malformed batch: %s", why);
		request_free(r);
		b->st.c.protocol_errors++;
		enqueue_error(b, a, id, "PB006", msg);
	}
}

/* The requests the broker answers itself, in their turn: pgb_reset's, and
 * every statement while the agent's transaction or session is lost (a
 * plain ROLLBACK acknowledges a lost transaction). 1 when r was answered
 * (and freed). */
static int answer_here(struct broker *b, struct agent *a, struct request *r)
{
	if (r->flags & REQ_RESET) {
		a->lost = LOST_NONE;
		pool_agent_reset(b, a);
		b->st.c.statements++;
		a->statements++;
		agent_respond_tag(b, a, r->id, "RESET");
	} else if (a->lost == LOST_TXN && !r->nsub && sql_is_rollback(r->v.sql)) {
		a->lost = LOST_NONE;
		b->st.c.statements++;
		a->statements++;
		agent_respond_tag(b, a, r->id, "ROLLBACK");
	} else if (a->lost == LOST_TXN) {
		enqueue_error(b, a, r->id, "08006",
			      "the transaction was lost and rolled back: the connection to "
			      "PostgreSQL broke inside it; every statement fails until ROLLBACK");
	} else if (a->lost == LOST_SESSION) {
		enqueue_error(b, a, r->id, "08006",
			      "the session was lost: the connection to PostgreSQL broke while it "
			      "held session state (SET, PREPARE, temporary tables, locks) and any "
			      "open transaction; every statement fails until pgb_reset()");
	} else {
		return 0;
	}
	a->nbytes -= r->nbytes;
	request_free(r);
	return 1;
}

/* Run the agent's next statement when it has none running: an agent's
 * statements run one after another, as on one connection. A statement
 * refused at once (shutdown, breaker open) finishes inside pool_submit and
 * kicks again: that call returns and this loop takes the next, so a long
 * queue is drained iteratively, not one stack frame per statement. */
static void agent_kick(struct broker *b, struct agent *a)
{
	if (a->kicking)
		return;
	a->kicking = 1;
	/* A serial statement waits while the agent's independent ones hold its
	 * share of the pool (agent_request_done kicks again). */
	while (!a->running && !a->doom && !list_empty(&a->queue) &&
	       a->nindep < backends_per_agent(b)) {
		struct request *r = list_entry(list_pop(&a->queue), struct request, link);

		a->nqueued--;
		if (answer_here(b, a, r))
			continue;
		a->running = r;
		list_add_tail(&a->active, &r->alink);
		a->nactive++;
		a->statements++;
		pool_submit(b, r);
	}
	a->kicking = 0;
}

void agent_request_done(struct broker *b, struct request *r)
{
	struct agent *a = r->agent;

	if (a) {
		list_del(&r->alink);
		a->nactive--;
		a->nbytes -= r->nbytes;
		if (a->running == r)
			a->running = NULL;
		if (r->counted)
			a->nindep--;
	}
	request_free(r);
	if (a) {
		indep_release(b, a);
		agent_kick(b, a);
		agent_unthrottle(b, a);
	}
}

/* Copy frames out of the request ring into whole requests. */
void request_read(struct broker *b, struct agent *a, int *budget)
{
	static const char *const broken[] = {
		[-CHAN_RX_CORRUPT] = "request ring corrupt",
		[-CHAN_RX_TYPE] = "unknown frame type",
		[-CHAN_RX_NESTED] = "new request inside an unfinished one",
		[-CHAN_RX_LENGTH] = "request length out of range",
		[-CHAN_RX_NOMEM] = "request length out of range",
		[-CHAN_RX_SEQUENCE] = "request frame out of sequence",
		[-CHAN_RX_LONG] = "request frame longer than its request",
		[-CHAN_RX_SHORT] = "request shorter than announced",
	};
	uint64_t max = (uint64_t)b->cfg.max_request_kb * 1024;
	int consumed = 0;

	while (*budget > 0 && !a->doom) {
		enum chan_rx_rc rc;

		if (agent_backlogged(b, a)) {
			/* Backpressure: leave the rest in the ring until this
			 * agent's backlog drains (agent_unthrottle resumes). */
			a->throttled = 1;
			break;
		}
		rc = chan_rx_frame(&a->rx, &a->req, FRAME_REQ, sizeof(struct req_head), max);
		if (rc == CHAN_RX_EMPTY)
			break;
		(*budget)--;
		if (rc < 0) {
			agent_fail(b, a, broken[-rc]);
			return;
		}
		consumed = 1;
		if (rc == CHAN_RX_DROPPED) {
			char msg[160];

			snprintf(msg, sizeof(msg),
				 "statement of %llu bytes exceeds max_request_kb=%d",
				 (unsigned long long)a->rx.total, b->cfg.max_request_kb);
			enqueue_error(b, a, a->rx.id, "PB004", msg);
		} else if (rc == CHAN_RX_DONE) {
			request_new(b, a, chan_rx_take(&a->rx), a->rx.total, a->rx.id);
		}
	}
	if (consumed && chan_space_wanted(&a->chan->req))
		agent_wake(b, a);
}
