/* Requests: reassembling them from the request ring's frames,
 * decoding, and each agent's queue of statements run one after another. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "broker.h"
#include "classify.h"
#include "copy.h"
#include "memory.h"
#include "pool.h"
#include "request.h"
#include "response.h"
#include "rows.h"
#include "waitq.h"

static void request_queue(struct broker *b, struct agent *a, struct request *r);
static void batch_new(struct broker *b, struct agent *a, struct request *r, uint64_t n);
static void request_activate(struct agent *a, struct request *r);

/* The transitions a request may make (docs/architecture.md). Placing a
 * request always starts from RQ_NONE; a list is only ever left to
 * RQ_NONE, but for a pipelined statement becoming its pipeline's head and
 * a running one going to the retry backoff. */
static const unsigned char req_moves[][RQ_RUNNING + 1] = {
	[RQ_NONE] = { [RQ_QUEUED] = 1, [RQ_HELD] = 1, [RQ_WAITING] = 1, [RQ_DELAYED] = 1,
		      [RQ_PIPED] = 1, [RQ_RUNNING] = 1 },
	[RQ_QUEUED] = { [RQ_NONE] = 1 },
	[RQ_HELD] = { [RQ_NONE] = 1 },
	[RQ_WAITING] = { [RQ_NONE] = 1 },
	[RQ_DELAYED] = { [RQ_NONE] = 1 },
	[RQ_PIPED] = { [RQ_NONE] = 1, [RQ_RUNNING] = 1 },
	[RQ_RUNNING] = { [RQ_NONE] = 1, [RQ_DELAYED] = 1 },
};

void req_set_state(struct broker *b, struct request *r, enum req_state to, struct backend *be)
{
	assert(req_moves[r->state][to]);
	switch (r->state) {
	case RQ_QUEUED: r->agent->nqueued--; list_del(&r->link); break;
	case RQ_HELD: list_del(&r->link); break;
	case RQ_WAITING: b->nwaiting--; list_del(&r->link); break;
	case RQ_DELAYED: list_del(&r->link); break;
	case RQ_PIPED: list_del(&r->link); break;
	default: break;
	}
	r->state = to;
	switch (to) {
	case RQ_QUEUED: r->agent->nqueued++; list_add_tail(&r->agent->queue, &r->link); break;
	case RQ_HELD: list_add_tail(&r->agent->held, &r->link); break;
	case RQ_WAITING:
		b->nwaiting++;
		b->ctl_waited++;
		list_add_tail(&b->waitq, &r->link);
		break;
	case RQ_DELAYED: list_add_tail(&b->delayed, &r->link); break;
	case RQ_PIPED: list_add_tail(&be->pipeq, &r->link); break;
	default: break;
	}
}

void request_free(struct request *r)
{
	if (!r)
		return;
	if (r->budget)
		mem_budget_release(r->budget, r->nbytes);
	if (r->brows)
		PQclear(r->brows);
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
	free(r->begin);
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
	if (b->stopping == STOP_DRAIN && a->begin)
		return 0;	/* its BEGIN was answered: the transaction is open */
	if (b->stopping == STOP_FAST || !be)
		return 1;
	st = PQtransactionStatus(be->pg);
	/* busy (ACTIVE): in a transaction if its statement started in one */
	return !(st == PQTRANS_INTRANS || st == PQTRANS_INERROR ||
		 (st == PQTRANS_ACTIVE && be->in_txn));
}

/* The statement counters, counted here only: one statement answered,
 * failed or not; 57014 is a statement timeout; ran_since (0: it did not
 * run) puts its time into the histogram. */
static void count_statement(struct broker *b, int failed, const char *state, int64_t ran_since)
{
	b->st.c.statements++;
	if (failed)
		b->st.c.failed++;
	if (state && strcmp(state, "57014") == 0)
		b->st.c.statement_timeouts++;
	if (ran_since)
		stats_hist_add(&b->st.stmt, (uint64_t)(b->now_ns - ran_since) / 1000);
}

/* A statement refused before it became a request. */
static void enqueue_error(struct broker *b, struct agent *a, uint32_t id,
			  const char *sqlstate, const char *msg)
{
	count_statement(b, 1, NULL, 0);
	a->statements++;
	agent_respond_error(b, a, id, sqlstate, "%s", msg);
}

/* New work while the agent holds its share of max_memory_mb, or the broker
 * all of it, is refused (never sent), except pgb_reset. 1 when r was
 * answered (and freed). */
static int refuse_memory(struct broker *b, struct agent *a, struct request *r)
{
	char msg[256];
	uint32_t id = r->id;

	if ((r->flags & REQ_RESET) || !mem_refuse(b, a))
		return 0;
	if (b->mem.used >= mem_budget(b))
		snprintf(msg, sizeof(msg),
			 "the broker's memory budget is in use (max_memory_mb=%d): results not "
			 "yet read by agents; try again", b->cfg.max_memory_mb);
	else
		snprintf(msg, sizeof(msg),
			 "this agent holds %llu MB in the broker, its share of max_memory_mb=%d "
			 "(half): read its results first",
			 (unsigned long long)(a->mem + a->nbytes) >> 20, b->cfg.max_memory_mb);
	request_free(r);
	b->st.c.memory_refused++;
	enqueue_error(b, a, id, "PB008", msg);
	return 1;
}

static void request_new(struct broker *b, struct agent *a, uint8_t *blob, uint64_t n,
			uint32_t id)
{
	struct request *r;
	const char *why;

	r = calloc(1, sizeof(*r));
	if (!r) {
		free(blob);
		mem_uncharge(b, NULL, n);
		enqueue_error(b, a, id, "PB006", "broker out of memory");
		return;
	}
	r->blob = blob;
	r->nbytes = n;
	r->budget = &b->mem;	/* counted since its first frame (request_read) */
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
	if (refuse_memory(b, a, r))
		return;
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
		struct request *r = list_entry(a->held.next, struct request, link);

		req_set_state(b, r, RQ_NONE, NULL);
		indep_submit(b, a, r);
	}
}

static void request_queue(struct broker *b, struct agent *a, struct request *r)
{
	a->nbytes += r->nbytes;
	if ((r->flags & (REQ_INDEPENDENT | REQ_RESET)) == REQ_INDEPENDENT && !a->pinned &&
	    !a->lost && !a->begin) {
		/* Beside the agent's other statements, on any backend, unless it
		 * holds its share of the pool: then it waits its turn here, not
		 * in the broker's queue ahead of other agents. */
		request_activate(a, r);
		if (agent_at_limit(b, a) || !list_empty(&a->held)) {
			req_set_state(b, r, RQ_HELD, NULL);
			return;
		}
		indep_submit(b, a, r);
		return;
	}
	req_set_state(b, r, RQ_QUEUED, NULL);
	agent_kick_later(b, a);
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
	if (refuse_memory(b, a, r))
		return;
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

/* r is a BEGIN the broker may answer itself and send later, with the
 * transaction's first statement (begin_start in exec.c): a plain
 * transaction start (SQL_BEGIN) in no transaction, whose modes the server
 * accepts for certain (SERIALIZABLE and READ WRITE only where the last
 * backend connected said it is no hot standby). The tag PostgreSQL would
 * answer it with, or NULL. */
static const char *begin_deferrable(const struct broker *b, const struct agent *a,
				    const struct request *r)
{
	unsigned fl;

	if (r->nsub || r->v.nparams || a->begin || a->txn_open ||
	    (a->pinned && PQtransactionStatus(a->pinned->pg) != PQTRANS_IDLE))
		return NULL;
	fl = sql_classify(r->v.sql);
	if (!(fl & SQL_BEGIN) || ((fl & SQL_BEGIN_PRIMARY) && !b->primary))
		return NULL;
	return (fl & SQL_START) ? "START TRANSACTION" : "BEGIN";	/* PostgreSQL's tags */
}

/* The agent's BEGIN is answered but not sent, and r ends the transaction
 * at once: a plain COMMIT or ROLLBACK. PostgreSQL would answer it with its
 * tag and do nothing else: so does the broker. The tag, or NULL. */
static const char *txn_ends_empty(const struct agent *a, const struct request *r)
{
	if (!a->begin || r->nsub || r->v.nparams)
		return NULL;
	if (sql_is_commit(r->v.sql))
		return "COMMIT";
	if (sql_is_rollback(r->v.sql))
		return "ROLLBACK";
	return NULL;
}

/* The requests the broker answers itself, in their turn: pgb_reset's, and
 * every statement while the agent's transaction or session is lost (a
 * plain ROLLBACK acknowledges a lost transaction); a BEGIN it defers, and
 * the COMMIT or ROLLBACK of such a transaction with nothing in it. 1 when
 * r was answered (and freed). */
static int answer_here(struct broker *b, struct agent *a, struct request *r)
{
	const char *tag;

	if (r->flags & REQ_RESET) {
		a->lost = LOST_NONE;
		pool_agent_reset(b, a);
		count_statement(b, 0, NULL, 0);
		a->statements++;
		agent_respond_tag(b, a, r->id, "RESET");
	} else if (a->lost == LOST_TXN && !r->nsub && sql_is_rollback(r->v.sql)) {
		a->lost = LOST_NONE;
		count_statement(b, 0, NULL, 0);
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
	} else if ((tag = begin_deferrable(b, a, r))) {
		/* The agent's view: inside a transaction from now on. */
		a->begin = r->v.sql ? strdup(r->v.sql) : NULL;
		if (!a->begin)
			return 0;	/* out of memory: sent as it is */
		a->txn_open = 1;
		b->st.c.begins_deferred++;
		count_statement(b, 0, NULL, 0);
		a->statements++;
		agent_respond_tag(b, a, r->id, tag);
	} else if ((tag = txn_ends_empty(a, r))) {
		free(a->begin);
		a->begin = NULL;
		a->txn_open = 0;
		b->st.c.txns_local++;
		count_statement(b, 0, NULL, 0);
		a->statements++;
		agent_respond_tag(b, a, r->id, tag);
	} else {
		return 0;
	}
	a->nbytes -= r->nbytes;
	request_free(r);
	return 1;
}

/* r leaves the agent's queue (or skips it): it counts as one of the
 * agent's statements, out until request_done. */
static void request_activate(struct agent *a, struct request *r)
{
	list_add_tail(&a->active, &r->alink);
	a->nactive++;
	a->statements++;
}

/* Run the agent's next statement when it has none running: an agent's
 * statements run one after another, as on one connection. Called once
 * per loop pass for the agents on the kick list (agent_run_kicks), never
 * from inside the pool: a statement refused at once (shutdown, breaker
 * open) finishes inside pool_submit and only puts the agent back on the
 * list, and this loop takes the next. */
static void agent_kick(struct broker *b, struct agent *a)
{
	indep_release(b, a);
	/* A serial statement waits while the agent's independent ones hold its
	 * share of the pool (request_done kicks again). */
	while (!a->running && !a->doom && !list_empty(&a->queue) &&
	       a->nindep < backends_per_agent(b)) {
		struct request *r = list_entry(a->queue.next, struct request, link);

		req_set_state(b, r, RQ_NONE, NULL);
		if (answer_here(b, a, r))
			continue;
		a->running = r;
		request_activate(a, r);
		/* The deferred BEGIN goes first, with r (exec.c). */
		r->begin = a->begin;
		a->begin = NULL;
		pool_submit(b, r);
	}
}

void agent_kick_later(struct broker *b, struct agent *a)
{
	if (list_empty(&a->kick_link))
		list_add_tail(&b->kicks, &a->kick_link);
}

void agent_run_kicks(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->kicks))) {
		agent_kick(b, list_entry(pos, struct agent, kick_link));
	}
}

void request_done(struct broker *b, struct request *r)
{
	struct agent *a = r->agent;

	assert(r->state == RQ_NONE);
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
		agent_kick_later(b, a);
		agent_unthrottle(b, a);
	}
}

void request_finish(struct broker *b, struct request *r, const struct req_end *e)
{
	struct agent *a = r->agent;

	if (a || e->ran_since)
		count_statement(b, e->failed, e->state, e->ran_since);
	if (!a)
		;
	else if (e->sqlstate)
		agent_respond_error(b, a, r->id, e->sqlstate, "%s", e->msg);
	else if (r->nsub)
		agent_respond_batch(b, a, r);
	else if (e->res && e->rows)
		rows_respond(b, e->rows, a, r, e->res);
	else if (e->res)
		agent_respond(b, a, r->id, e->res);
	else
		agent_respond_error(b, a, r->id, "XX000", "no result from PostgreSQL");
	if (e->res && !(a && !e->sqlstate && !r->nsub))
		PQclear(e->res);
	request_done(b, r);
}

void request_fail(struct broker *b, struct request *r, const char *sqlstate, const char *fmt, ...)
{
	struct req_end e = { .sqlstate = sqlstate, .failed = 1 };
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.msg = msg;
	request_finish(b, r, &e);
}

/* Copy frames out of the request ring into whole requests. */
void request_read(struct broker *b, struct agent *a, int *budget)
{
	static const enum agent_doom broken[] = {
		[-CHAN_RX_CORRUPT] = DOOM_REQ_CORRUPT,
		[-CHAN_RX_TYPE] = DOOM_REQ_TYPE,
		[-CHAN_RX_NESTED] = DOOM_REQ_NESTED,
		[-CHAN_RX_LENGTH] = DOOM_REQ_LENGTH,
		[-CHAN_RX_NOMEM] = DOOM_REQ_LENGTH,
		[-CHAN_RX_SEQUENCE] = DOOM_REQ_SEQUENCE,
		[-CHAN_RX_LONG] = DOOM_REQ_LONG,
		[-CHAN_RX_SHORT] = DOOM_REQ_SHORT,
	};
	uint64_t max = (uint64_t)b->cfg.max_request_kb * 1024;
	int consumed = 0;

	while (*budget > 0 && !a->doom) {
		enum chan_rx_rc rc;
		struct frame_hdr h;

		if (agent_backlogged(b, a)) {
			/* Backpressure: leave the rest in the ring until this
			 * agent's backlog drains (agent_unthrottle resumes). */
			a->throttled = 1;
			break;
		}
		int peeked = ring_peek(&a->req, &h);

		/* Only the frame just seen: one published since may be COPY's. */
		if (peeked == 0)
			break;
		if (peeked > 0 && (h.type == FRAME_COPY_DATA || h.type == FRAME_COPY_END)) {
			enum agent_doom why;
			int taken = copy_in_frame(b, a, &h, &why);

			if (taken < 0) {
				b->st.c.protocol_errors++;
				agent_fail(b, a, why);
				return;
			}
			if (!taken) {
				a->throttled = 1;	/* copy_flushed reads on */
				break;
			}
			(*budget)--;
			consumed = 1;
			continue;
		}
		rc = chan_rx_frame(&a->rx, &a->req, CHAN_TYPE(FRAME_REQ), sizeof(struct req_head), max);
		if (rc == CHAN_RX_EMPTY)
			break;
		/* A request's bytes count from its first frame: the whole
		 * length is allocated then. */
		if (a->rx.buf && !a->rx_mem) {
			a->rx_mem = a->rx.total;
			mem_charge(b, NULL, a->rx_mem);
		}
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
			a->rx_mem = 0;	/* the request's now: request_free */
			request_new(b, a, chan_rx_take(&a->rx), a->rx.total, a->rx.id);
		}
	}
	if (consumed && chan_space_wanted(&a->chan->req))
		agent_wake(b, a);
}
