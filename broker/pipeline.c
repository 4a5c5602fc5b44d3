/* Shared pipelines: autocommit statements of several agents on one
 * backend, each with its own Sync, flushed once per loop pass. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "backend.h"
#include "broker.h"
#include "cork.h"
#include "exec.h"
#include "log.h"
#include "memory.h"
#include "pipeline.h"
#include "policy.h"
#include "request.h"
#include "response.h"
#include "rows.h"
#include "waitq.h"

#define PIPE_MAX 32            /* statements in one backend's pipeline */
#define PREPARE_AFTER 3        /* sightings of a text before it is prepared */

/* Leave pipeline mode after the last Sync. libpq 15 may still count
 * itself busy right after handing out the Sync result until PQgetResult
 * has returned its NULL: collect that, then leave. 0 ok, -EIO broken. */
int pipe_exit(PGconn *pg)
{
	for (int tries = 0; tries < 4; tries++) {
		PGresult *x;

		if (PQexitPipelineMode(pg))
			return 0;
		if (PQisBusy(pg))
			return -EIO;
		x = PQgetResult(pg);
		if (x)
			PQclear(x);
	}
	return -EIO;
}

/* Send one autocommit statement into the backend's pipeline, with its
 * own Sync, so an error ends only that statement's implicit transaction. */
static int pipe_send(struct broker *b, struct backend *be, struct request *r)
{
	int nparams = (int)r->v.nparams, ok;
	uint32_t id = 0;

	r->be = be;
	if (!r->attempts)
		stats_hist_add(&b->st.acquire,
			       r->enq_ns ? (uint64_t)(b->now_ns - r->enq_ns) / 1000 : 0);
	r->prep_id = 0;
	r->prep_sent = r->prep_failed = 0;
	if (cork_hold(be->fd) < 0)	/* until pool_flush */
		return -ENOMEM;
	if (!r->no_prep && b->heat) {
		uint64_t h = r->text_hash ? r->text_hash : stmt_hash(r->v.sql, nparams);

		id = stmt_cache_find(&be->stmts, h, r->v.sql, nparams);
		if (!id && stmt_heat_see(b->heat, h) >= PREPARE_AFTER &&
		    (id = stmt_cache_add(&be->stmts, h, r->v.sql, nparams)))
			r->prep_sent = 1;
	}
	if (id) {
		char name[STMT_NAME_MAX];

		stmt_name(name, sizeof(name), b->stmt_token, id);
		r->prep_id = id;
		ok = (!r->prep_sent || PQsendPrepare(be->pg, name, r->v.sql, nparams, NULL)) &&
		     PQsendQueryPrepared(be->pg, name, nparams, r->params, NULL, NULL, 0);
	} else {
		ok = PQsendQueryParams(be->pg, r->v.sql, nparams, NULL, r->params, NULL, NULL, 0);
	}
#ifdef LIBPQ_HAS_SEND_PIPELINE_SYNC
	ok = ok && PQsendPipelineSync(be->pg);
#else
	ok = ok && PQpipelineSync(be->pg);	/* before libpq 17 this also flushes */
#endif
	if (!ok)
		return -EIO;
	if (r->nbytes > BE_BUF_BLOAT)
		be->bloated = 1;	/* libpq's output buffer holds it */
	rows_single(be);	/* takes only when it is the statement read now */
	/* Sent once per loop pass (pool_flush): one write for all the
	 * statements that joined this pipeline meanwhile. */
	if (!be->flush_due) {
		be->flush_due = 1;
		list_add_tail(&b->flushq, &be->flink);
	}
	be->npipe++;
	return 0;
}

void pool_flush(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->flushq))) {
		struct backend *be = list_entry(pos, struct backend, flink);

		be->flush_due = 0;
		be_flush_arm(b, be);
	}
}

/* Start a pipeline on a free backend with r at its head. */
void pipe_start(struct broker *b, struct backend *be, struct request *r)
{
	be->in_txn = 0;
	be->req = r;
	be->head_ns = b->now_ns;
	if (!PQenterPipelineMode(be->pg)) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be_set_state(b, be, BE_PIPELINE);
	if (pipe_send(b, be, r) < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

/* The pipeline to join: the shortest one whose head has not run longer
 * than PIPE_HEAD_FRESH_NS (a quick text that turned slow, a lock wait:
 * nothing more queues behind it). */
struct backend *pipe_pick(struct broker *b)
{
	struct backend *best = NULL;
	struct list *pos;

	for (pos = b->pipes.next; pos != &b->pipes; pos = pos->next) {
		struct backend *be = list_entry(pos, struct backend, plink);

		if (be->state != BE_PIPELINE || be->npipe >= PIPE_MAX ||
		    b->now_ns - be->head_ns > PIPE_HEAD_FRESH_NS)
			continue;
		if (!best || be->npipe < best->npipe)
			best = be;
	}
	return best;
}

void pipe_join(struct broker *b, struct backend *be, struct request *r)
{
	/* A pipeline whose head just finished (pipe_done answering it) has
	 * no head: the joiner becomes it. */
	if (!be->req) {
		be->req = r;
		be->head_ns = b->now_ns;
		req_set_state(b, r, RQ_RUNNING, NULL);
	} else {
		req_set_state(b, r, RQ_PIPED, be);
	}
	if (pipe_send(b, be, r) < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}

/* Statements that queued while no pipeline took them join the pipeline
 * that just made room, oldest first: pipelines that keep running free no
 * backend, and the queue must not wait for one while newer statements
 * join (pool_submit does not let them overtake). */
static void pipe_refill(struct broker *b, struct backend *be)
{
	while (be->state == BE_PIPELINE && be->npipe < PIPE_MAX &&
	       (!be->req || b->now_ns - be->head_ns <= PIPE_HEAD_FRESH_NS) &&
	       !list_empty(&b->waitq)) {
		struct request *r = list_entry(b->waitq.next, struct request, link);

		if (!r->pipe_ok || (r->flags & REQ_SPREAD))
			break;
		req_set_state(b, r, RQ_NONE, NULL);
		pipe_join(b, be, r);
	}
}

/* The head of a pipeline finished (its Sync arrived): answer it and move on. */
static void pipe_done(struct broker *b, struct backend *be)
{
	struct request *r = be->req;
	PGresult *res = be->res;
	struct agent *a = r->agent;
	int ok = result_ok(res);
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	int retry = 0;

	be->res = NULL;
	be->npipe--;
	be->served++;
	exec_time(b, r, b->now_ns - be->head_ns);
	r->be = NULL;
	req_set_state(b, r, RQ_NONE, NULL);
	if (r->prep_id && (r->prep_failed || policy_prepared_lost(r->prep_sent, state))) {
		/* The server has no such prepared statement, or one that no
		 * longer fits the text: stop using it (a lost one stays on the
		 * server until DISCARD ALL or the connection ends). */
		stmt_cache_forget(&be->stmts, r->prep_id);
		stmt_heat_cool(b->heat, stmt_hash(r->v.sql, (int)r->v.nparams));
		/* It failed before running (in autocommit nothing is left of
		 * it): run the text itself once more, unless the failed Prepare
		 * was the text's own error. */
		if (a && (!r->prep_failed || (state && strcmp(state, "42P05") == 0))) {
			log_debug("backend %u: prepared statement %u unusable (%s): running the text",
				  be->slot, r->prep_id, state ? state : "");
			r->no_prep = 1;
			b->st.c.retried++;
			retry = 2;
		}
	} else if (a && r->prep_id && !r->prep_sent && !ok && policy_fixed_at_prepare(state)) {
		/* Parameter types and plans were fixed by the Prepare, maybe
		 * before a table changed (a column's type): the text itself may
		 * work. Run it once (nothing ran: autocommit); when it works,
		 * the prepared statement is stale (stale_forget). */
		r->no_prep = 1;
		r->stale_id = r->prep_id;
		r->stale_slot = be->slot;
		b->st.c.retried++;
		retry = 2;
	}
	if (!retry && ok)
		exec_stale_forget(b, r);
	if (!retry && a && !ok && policy_rolled_back(state) && !rows_streamed(be) &&
	    waitq_retry(b, r, state))
		retry = 1;
	if (a)
		be->last_used_ns = b->now_ns;
	if (!retry) {
		struct req_end e = { .res = res, .failed = !ok, .state = state,
				     .ran_since = r->start_ns, .rows = be };

		request_finish(b, r, &e);
	} else if (res) {
		PQclear(res);
	}
	rows_reset(b, be, a);
	be->req = NULL;
	if (!list_empty(&be->pipeq)) {
		be->req = list_entry(be->pipeq.next, struct request, link);
		be->head_ns = b->now_ns;
		req_set_state(b, be->req, RQ_RUNNING, NULL);
	}
	if (retry == 2)
		pool_submit(b, r);
	pipe_refill(b, be);
	if (be->req || be->state != BE_PIPELINE)
		return;
	/* Drained: leave pipeline mode and free the backend (its state
	 * changes: it leaves the list of pipelines). */
	if (pipe_exit(be->pg) < 0) {
		be_close(b, be, CLOSE_BROKEN);
		return;
	}
	if (PQtransactionStatus(be->pg) != PQTRANS_IDLE)
		be_reset(b, be, BE_ROLLBACK);
	else
		waitq_release(b, be);
}

/* Results of a shared pipeline: per statement its result(s), a NULL, and
 * its Sync. */
void pipe_drain(struct broker *b, struct backend *be)
{
	int nulls = 0;

	while (be->req && !be->paused && !PQisBusy(be->pg)) {
		PGresult *x = PQgetResult(be->pg);

		if (!x) {
			/* the end of one statement's results; two in a row
			 * means nothing more is queued yet */
			if (++nulls > 1)
				break;
			/* the next one's rows come one at a time too */
			rows_single(be);
			continue;
		}
		nulls = 0;
		switch (PQresultStatus(x)) {
		case PGRES_PIPELINE_SYNC:
			PQclear(x);
			pipe_done(b, be);
			if (be->state != BE_PIPELINE)
				return;
			break;
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
		case PGRES_COPY_BOTH:
			PQclear(x);
			be_close(b, be, CLOSE_BROKEN);
			return;
		case PGRES_PIPELINE_ABORTED:
			/* only the Execute behind a failed Prepare is aborted */
			if (be->req->prep_sent)
				be->req->prep_failed = 1;
			exec_keep_result(be, x);
			break;
		case PGRES_SINGLE_TUPLE:
			rows_add(b, be, x);
			break;
		default:
			rows_keep(b, be, x);
			break;
		}
	}
	be_arm(b, be, POLLIN | (be->flushing ? POLLOUT : 0));
}
