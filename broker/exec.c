/* Running statements on a backend: sending one (or a batch), reading
 * its results, and finishing it: retry, answer, pin or release. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "broker.h"
#include "classify.h"
#include "copy.h"
#include "exec.h"
#include "log.h"
#include "memory.h"
#include "pipeline.h"
#include "policy.h"
#include "pqread.h"
#include "request.h"
#include "response.h"
#include "rows.h"
#include "waitq.h"

static void be_start_batch(struct broker *b, struct backend *be, struct request *r);
static void begin_start(struct broker *b, struct backend *be, struct request *r);
static int exec_send(struct broker *b, struct backend *be, struct request *r);

/* r ran for ns: kept per text for the pipelinable ones, which share a
 * pipeline only while their recent runs were quick (pool_submit). */
void exec_time(struct broker *b, const struct request *r, int64_t ns)
{
	if (r->text_hash && b->heat)
		stmt_time_add(b->heat, r->text_hash, ns > 0 ? (uint64_t)ns / 1000 : 0);
}

void exec_start(struct broker *b, struct backend *be, struct request *r)
{
	be->in_txn = PQtransactionStatus(be->pg) != PQTRANS_IDLE || r->begin;
	be->req = r;
	be->head_ns = b->now_ns;
	r->be = be;
	req_set_state(b, r, RQ_RUNNING, NULL);
	if (r->session && r->agent && !r->agent->session_pinned &&
	    (!r->agent->pinned || r->agent->pinned == be)) {
		log_debug("agent %u changes session state: keeping backend %u for its session",
			  r->agent->slot, be->slot);
		r->agent->session_pinned = 1;
		b->st.c.session_pins++;
	}
	if (r->session > be->discard)
		be->discard = r->session;
	if (b->cfg.reset_query_always && !be->discard)
		be->discard = DISCARD_ALL;

	/* A pipeline costs a little more per statement (extended protocol)
	 * and pays only when others can join it: start one when busy. */
	if (r->pipe_ok && be->state != BE_PINNED && b->nbusy + 1 >= b->busy_target) {
		pipe_start(b, be, r);	/* pipe_send counts its wait */
		return;
	}
	if (!r->attempts)
		stats_hist_add(&b->st.acquire,
			       r->enq_ns ? (uint64_t)(b->now_ns - r->enq_ns) / 1000 : 0);
	be_set_state(b, be, BE_BUSY);
	if (r->begin) {
		begin_start(b, be, r);
		return;
	}
	exec_send(b, be, r);
}

/* Send r (a statement or batch) on be, BE_BUSY. 0, or -1 when be closed
 * (r retried elsewhere or failed). */
static int exec_send(struct broker *b, struct backend *be, struct request *r)
{
	int ok;

	if (r->nbytes > BE_BUF_BLOAT)
		be->bloated = 1;	/* libpq's output buffer holds it */
	if (r->nsub) {
		be_start_batch(b, be, r);
		return be->state == BE_FREE ? -1 : 0;
	}
	if (r->v.nparams == 0)
		ok = PQsendQuery(be->pg, r->v.sql);
	else
		ok = PQsendQueryParams(be->pg, r->v.sql, (int)r->v.nparams, NULL, r->params,
				       NULL, NULL, 0);
	if (!ok) {
		/* Nothing went out: safe to run it elsewhere. */
		log_debug("backend %u: send failed: %s", be->slot, PQerrorMessage(be->pg));
		/* Not in the agent's transaction or session: those are gone
		 * with the connection, and r with them (fail_request). */
		if (!be->in_txn && be->owner != r->agent) {
			be->req = NULL;
			r->be = NULL;
			req_set_state(b, r, RQ_NONE, NULL);
			b->st.c.retried++;
			be_close(b, be, CLOSE_BROKEN);
			if (r->agent)
				pool_submit(b, r);
			else
				request_done(b, r);
			return -1;
		}
		be_close(b, be, CLOSE_BROKEN);	/* fails r: its transaction or session is gone */
		return -1;
	}
	rows_single(be);
	return be_flush_arm(b, be) < 0 ? -1 : 0;
}

/* r is the first statement after a BEGIN the broker answered itself
 * (r->begin): the BEGIN goes first. A statement that may run with the
 * extended protocol (one statement, not COPY, as PQexecParams runs it)
 * goes with it in one pipeline, one Sync: one round trip, and an error in
 * either leaves the transaction as on a direct connection (the statement
 * failed: aborted, 25P02 next). A text of several statements, a COPY or a
 * batch needs its own protocol: the BEGIN goes alone and r follows it
 * (begin_result). Either way be->in_txn is set: the connection breaking
 * now loses the agent's transaction. */
static void begin_start(struct broker *b, struct backend *be, struct request *r)
{
	be->begin_step = 1;
	be->begin_pipe = !r->nsub && (r->v.nparams || (sql_classify(r->v.sql) & SQL_SINGLE));
	if (!be->begin_pipe) {
		if (!PQsendQuery(be->pg, r->begin))
			goto broken;
		be_flush_arm(b, be);
		return;
	}
	if (!PQenterPipelineMode(be->pg) ||
	    !PQsendQueryParams(be->pg, r->begin, 0, NULL, NULL, NULL, NULL, 0) ||
	    !PQsendQueryParams(be->pg, r->v.sql, (int)r->v.nparams, NULL, r->params, NULL, NULL,
			       0) ||
	    !PQpipelineSync(be->pg))
		goto broken;
	be_flush_arm(b, be);
	return;
broken:
	log_debug("backend %u: deferred BEGIN send failed: %s", be->slot, PQerrorMessage(be->pg));
	be->begin_step = 0;
	be_close(b, be, CLOSE_BROKEN);
}

/* One result (x) or end of results (NULL) while be->begin_step is set:
 * step 1 the BEGIN's (an error kept in be->res: r's answer), step 2 the
 * pipelined statement's (skipped by the server after a failed BEGIN), step
 * 3 the Sync. 1 when r is complete, 0 for more, -1 when be closed. */
static int begin_result(struct broker *b, struct backend *be, PGresult *x)
{
	struct request *r = be->req;

	if (x && (PQresultStatus(x) == PGRES_COPY_IN || PQresultStatus(x) == PGRES_COPY_OUT ||
		  PQresultStatus(x) == PGRES_COPY_BOTH)) {
		PQclear(x);	/* no COPY in a pipeline: begin_start sends none */
		be->begin_step = 0;
		be_close(b, be, CLOSE_BROKEN);
		return -1;
	}
	switch (be->begin_step) {
	case 1:
		if (x) {
			if (PQresultStatus(x) == PGRES_FATAL_ERROR && !be->res)
				be->res = x;
			else
				PQclear(x);
			return 0;
		}
		if (be->begin_pipe) {
			be->begin_step = 2;
			rows_single(be);	/* the statement's turn: its rows one at a time */
			return 0;
		}
		be->begin_step = 0;
		/* failed, or its agent is gone: r is not sent */
		if (be->res || !r->agent)
			return 1;
		return exec_send(b, be, r) < 0 ? -1 : 0;
	case 2:
		if (x && PQresultStatus(x) == PGRES_SINGLE_TUPLE)
			rows_add(b, be, x);
		else if (x)
			rows_keep(b, be, x);	/* a failed BEGIN's error wins */
		else
			be->begin_step = 3;
		return 0;
	default:
		if (!x)
			return 0;
		if (PQresultStatus(x) != PGRES_PIPELINE_SYNC) {
			PQclear(x);
			return 0;
		}
		PQclear(x);
		be->begin_step = 0;
		if (pipe_exit(be->pg) < 0) {
			be_close(b, be, CLOSE_BROKEN);
			return -1;
		}
		return 1;
	}
}

/* A batch goes out as one pipeline: every statement, one Sync. Until
 * the Sync the statements form one implicit transaction, so an error
 * rolls all of them back. */
static void be_start_batch(struct broker *b, struct backend *be, struct request *r)
{
	int rc;

	r->bdone = 0;
	for (uint32_t i = 0; i < r->nsub; i++) {
		if (r->bres[i])
			PQclear(r->bres[i]);
		r->bres[i] = NULL;
	}
	if (!PQenterPipelineMode(be->pg))
		goto broken;
	for (uint32_t i = 0; i < r->nsub; i++)
		if (!PQsendQueryParams(be->pg, r->subs[i].sql, (int)r->subs[i].nparams, NULL,
				       r->sparams[i], NULL, NULL, 0))
			goto broken;
	if (!PQpipelineSync(be->pg))
		goto broken;
	rc = be_flush(be);
	if (rc < 0)
		goto broken;
	be->flushing = rc == 1;
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
	return;
broken:
	log_debug("backend %u: batch send failed: %s", be->slot, PQerrorMessage(be->pg));
	be_close(b, be, CLOSE_BROKEN);
}

/* Results of a pipelined batch: one per statement, each followed by a
 * NULL, then the Sync. Returns 1 when the batch is complete. */
/* Append the rows of from to to; 0, or -1 out of memory. */
static int rows_append(PGresult *to, const PGresult *from)
{
	int nf = PQnfields(from), at = PQntuples(to);

	for (int i = 0; i < PQntuples(from); i++, at++)
		for (int j = 0; j < nf; j++)
			if (!PQsetvalue(to, at, j, PQgetisnull(from, i, j) ? NULL :
					PQgetvalue(from, i, j),
					PQgetisnull(from, i, j) ? -1 : PQgetlength(from, i, j)))
				return -1;
	return 0;
}

static int batch_result(struct backend *be, struct request *r, PGresult *x)
{
	/* The first statement of a batch may still get its rows one at a time:
	 * libpq keeps single-row mode from the statement before it (one that
	 * failed) until the pipeline moves on. Put them back together. */
	if (x && PQresultStatus(x) == PGRES_SINGLE_TUPLE) {
		if (!r->brows)
			r->brows = PQcopyResult(x, PG_COPYRES_ATTRS);
		if (r->brows && rows_append(r->brows, x) < 0) {
			PQclear(r->brows);
			r->brows = NULL;
		}
		PQclear(x);
		return 0;
	}
	if (x && r->brows) {
		if (PQresultStatus(x) == PGRES_TUPLES_OK && rows_append(x, r->brows) < 0) {
			PQclear(x);
			x = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
		}
		PQclear(r->brows);
		r->brows = NULL;
	}
	if (!x) {
		if (r->bdone < r->nsub && r->bres[r->bdone])
			r->bdone++;
		return 0;
	}
	if (PQresultStatus(x) == PGRES_PIPELINE_SYNC) {
		PQclear(x);
		return 1;
	}
	if (r->bdone < r->nsub && !r->bres[r->bdone])
		r->bres[r->bdone] = x;
	else
		PQclear(x);
	(void)be;
	return 0;
}

/* The statement succeeded (a NULL result did not). */
int result_ok(const PGresult *x)
{
	ExecStatusType st = x ? PQresultStatus(x) : PGRES_FATAL_ERROR;

	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

/* PQexec's rule: the last result, but an error wins. */
void exec_keep_result(struct backend *be, PGresult *x)
{
	if (!be->res || PQresultStatus(x) == PGRES_FATAL_ERROR ||
	    PQresultStatus(be->res) != PGRES_FATAL_ERROR) {
		if (be->res)
			PQclear(be->res);
		be->res = x;
	} else {
		PQclear(x);
	}
}

/* r, run as text after its prepared statement failed, worked: that
 * statement is stale. Ids are never reused on a slot, so a backend
 * reconnected meanwhile has no such entry. */
void exec_stale_forget(struct broker *b, struct request *r)
{
	if (!r->stale_id)
		return;
	stmt_cache_forget(&b->backends[r->stale_slot].stmts, r->stale_id);
	stmt_heat_cool(b->heat, stmt_hash(r->v.sql, (int)r->v.nparams));
	r->stale_id = 0;
}

static void statement_done(struct broker *b, struct backend *be)
{
	struct request *r = be->req;
	PGresult *res = be->res;
	PGTransactionStatusType ts = PQtransactionStatus(be->pg);
	struct agent *a = r ? r->agent : NULL;

	if (PQstatus(be->pg) == CONNECTION_BAD) {
		/* The connection died under the statement (a FATAL such as
		 * 57P01 may have come first): its fate is unknown unless it ran
		 * inside a transaction, which is certainly gone. */
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be->res = NULL;
	be->req = NULL;
	if (r) {
		int ok = result_ok(res);
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

		r->be = NULL;
		req_set_state(b, r, RQ_NONE, NULL);
		be->served++;
		exec_time(b, r, b->now_ns - be->head_ns);
		if (r->nsub) {
			ok = 1;
			state = NULL;
			for (uint32_t i = 0; i < r->nsub && ok; i++)
				if (!result_ok(r->bres[i])) {
					ok = 0;
					if (r->bres[i])
						state = PQresultErrorField(r->bres[i],
									   PG_DIAG_SQLSTATE);
				}
		}
		/* Ran in the agent's session (not beside it): the answer tells
		 * whether that is inside a transaction now. */
		if (a && (!a->pinned || a->pinned == be))
			a->txn_open = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
		/* Not a text that may have committed part of its work first
		 * (CALL, DO, a COMMIT between statements): that part would run
		 * twice. */
		int retried = a && !ok && !be->in_txn && ts == PQTRANS_IDLE &&
			      policy_rolled_back(state) && !be->unsupported && !r->copied &&
			      !rows_streamed(be) &&
			      policy_all_or_nothing(&r->v, r->subs, r->nsub) &&
			      waitq_retry(b, r, state);

		if (!retried) {
			struct req_end e = { .res = res, .failed = !ok || be->unsupported,
					     .state = state, .ran_since = r->start_ns, .rows = be };

			if (ok)
				exec_stale_forget(b, r);
			if (be->unsupported && !r->nsub) {
				e.sqlstate = "PB009";
				e.msg = "only one COPY per statement string is relayed by "
					"pgbroker: the second was aborted";
			}
			request_finish(b, r, &e);
			res = NULL;
		}
		rows_reset(b, be, a);
	}
	if (res)
		PQclear(res);
	be->unsupported = 0;

	if (PQstatus(be->pg) == CONNECTION_BAD || ts == PQTRANS_UNKNOWN ||
	    ts == PQTRANS_ACTIVE) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	if (a && !a->doom && (!a->pinned || a->pinned == be) &&
	    (ts != PQTRANS_IDLE || (a->session_pinned && be->discard))) {
		/* Inside a transaction, or holding session state: this backend
		 * is the agent's until that ends. */
		be->owner = a;
		a->pinned = be;
		be->last_used_ns = b->now_ns;
		be->validated_ns = b->now_ns;
		be_set_state(b, be, BE_PINNED);
		be_arm(b, be, POLLIN);
	} else {
		if (a && a->pinned == be)
			a->pinned = NULL;
		if (a)
			be->last_used_ns = b->now_ns;
		if (ts != PQTRANS_IDLE)
			be_reset(b, be, BE_ROLLBACK);
		else
			waitq_release(b, be);
	}
}

/* Read whatever the server sent; complete the statement when it is done. */
static void drain(struct broker *b, struct backend *be)
{
	/* Paused: libpq's buffer waits too (rows_before_read). */
	while (!be->paused) {
		PGresult *x;

		/* In COPY IN libpq answers every PQgetResult with another
		 * PGRES_COPY_IN: the agent's data and its end drive it
		 * (copy_in_frame). */
		if (be->copy_in)
			break;
		if (be->copy_out) {
			enum copy_pump rc = copy_out_pump(b, be);

			if (rc == COPY_WAIT_AGENT)
				return;	/* no poll: copy_sent reads on */
			if (rc == COPY_WAIT_INPUT)
				break;
		}
		if (PQisBusy(be->pg))
			break;
		x = PQgetResult(be->pg);
		if (be->req && be->begin_step && be->state == BE_BUSY) {
			int rc = begin_result(b, be, x);

			if (rc < 0)
				return;
			if (rc > 0) {
				statement_done(b, be);
				return;
			}
			continue;	/* (after a BEGIN alone, r's results follow) */
		}
		if (be->req && be->req->nsub && be->state == BE_BUSY) {
			if (x && (PQresultStatus(x) == PGRES_COPY_IN ||
				  PQresultStatus(x) == PGRES_COPY_OUT ||
				  PQresultStatus(x) == PGRES_COPY_BOTH)) {
				PQclear(x);
				be_close(b, be, CLOSE_BROKEN);
				return;
			}
			if (batch_result(be, be->req, x)) {
				if (pipe_exit(be->pg) < 0) {
					be_close(b, be, CLOSE_BROKEN);
					return;
				}
				statement_done(b, be);
				return;
			}
			continue;
		}
		if (!x) {
			if (be_resetting(be)) {
				if (PQtransactionStatus(be->pg) == PQTRANS_IDLE &&
				    PQstatus(be->pg) == CONNECTION_OK && !be->dirty)
					waitq_release(b, be);
				else
					be_close(b, be, CLOSE_VALIDATION);
			} else {
				statement_done(b, be);
			}
			return;
		}
		switch (PQresultStatus(x)) {
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
			if (be->state != BE_BUSY) {
				/* not from the broker's own statements */
				PQclear(x);
				be_close(b, be, CLOSE_BROKEN);
				return;
			}
			if (copy_begin(b, be, x))
				return;
			if (be->state != BE_BUSY)
				return;	/* closed */
			break;
		case PGRES_COPY_BOTH:
			PQclear(x);
			be->unsupported = 1;
			be_close(b, be, CLOSE_BROKEN);
			return;
		case PGRES_SINGLE_TUPLE:
			if (!be_resetting(be)) {
				rows_add(b, be, x);
				break;
			}
			/* fall through */
		default:
			if (!be_resetting(be)) {
				rows_keep(b, be, x);
				break;
			}
			/* The broker's own statement must succeed, or the
			 * backend is not trusted again. */
			if (PQresultStatus(x) == PGRES_FATAL_ERROR)
				be->dirty = 1;
			if (be->state == BE_PROBE)
				be_capacity_result(b, x);
			PQclear(x);
			break;
		}
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

void exec_drain(struct broker *b, struct backend *be)
{
	drain(b, be);
}

void exec_resume(struct broker *b, struct backend *be)
{
	if (be->state == BE_PIPELINE)
		pipe_drain(b, be);
	else if (be->state == BE_BUSY)
		drain(b, be);
}

void pool_on_poll(struct broker *b, struct backend *be, int res)
{
	uint64_t quota = 0;
	int ok;

	be->poll_events = 0;   /* one-shot: it fired */
	if (be->state == BE_CONNECTING) {
		be_on_connect_poll(b, be);
		return;
	}
	if (res < 0 && res != -ECANCELED) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	if (be->flushing && (res & POLLOUT)) {
		int rc = be_flush(be);

		if (rc < 0) {
			be_close(b, be, CLOSE_BROKEN);
			return;
		}
		be->flushing = rc == 1;
		if (!be->flushing)
			copy_flushed(b, be);
	}
	/* A statement's rows wait while its agent's ring or the budget is
	 * full; what libpq reads for it is bounded and counted. */
	if ((res & (POLLIN | POLLERR | POLLHUP)) &&
	    (be->state == BE_BUSY || be->state == BE_PIPELINE) && be->req && !be->copy_out &&
	    !be->copy_in) {	/* a COPY's data has its own pause (copy.c) */
		quota = rows_read_quota(b, be);
		if (!quota) {
			if (be->state == BE_BUSY || be->state == BE_PIPELINE)
				be_arm(b, be, be->flushing ? POLLOUT : 0);
			return;
		}
		pqread_begin(be->fd, quota);
	}
	ok = !(res & (POLLIN | POLLERR | POLLHUP)) || PQconsumeInput(be->pg);
	if (quota)
		rows_read_done(b, be, pqread_end());
	if (!ok) {
		log_info("backend %u (pid %d) lost: %s", be->slot, be->pg_pid,
			 PQerrorMessage(be->pg));
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	/* A LISTEN inside a multi-statement text keeps an agent's backend,
	 * but its notifications reach nobody (a lone LISTEN goes to the
	 * listening connection, listener.c): libpq would hold every one
	 * until the connection closes. */
	for (PGnotify *n; (n = PQnotifies(be->pg));)
		PQfreemem(n);
	switch (be->state) {
	case BE_PARKED:
		/* Waiting for a cancel thread: input now means trouble. */
		if (PQstatus(be->pg) == CONNECTION_BAD)
			be_close(b, be, CLOSE_BROKEN);
		else
			be_arm(b, be, POLLIN);
		break;
	case BE_ROLLBACK:
	case BE_DISCARD:
	case BE_VALIDATE:
	case BE_PROBE:
	case BE_BUSY:
		drain(b, be);
		break;
	case BE_PIPELINE:
		pipe_drain(b, be);
		break;
	case BE_IDLE:
	case BE_PINNED:
		/* Nothing is expected: a server that speaks now is closing. */
		if (PQstatus(be->pg) == CONNECTION_BAD) {
			be_close(b, be, CLOSE_BROKEN);
			return;
		}
		while (!PQisBusy(be->pg)) {
			PGresult *x = PQgetResult(be->pg);

			if (!x)
				break;
			PQclear(x);
		}
		if (PQstatus(be->pg) == CONNECTION_BAD) {
			be_close(b, be, CLOSE_BROKEN);
			return;
		}
		be_arm(b, be, POLLIN);
		break;
	default:
		break;
	}
}
