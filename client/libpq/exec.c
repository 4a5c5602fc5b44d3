/* Statements: libpq's PQsend* and PQgetResult over pgb_send and
 * pgb_try_result/pgb_get_result; PQexec* as send-then-collect, as libpq
 * does it; statements prepared with PQprepare kept here and run by their
 * text; pipeline mode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face.h"

/* --- results waiting for PQgetResult --- */

static int pend_push(PGconn *conn, PGresult *res)
{
	struct face_pending *p = malloc(sizeof(*p));

	if (!p) {
		PQclear(res);
		return -1;
	}
	*p = (struct face_pending){ .res = res };
	if (conn->pend_tail)
		conn->pend_tail->next = p;
	else
		conn->pend = p;
	conn->pend_tail = p;
	return 0;
}

/* An answer for the command in flight: queue it, then its end (NULL). */
static void answer(PGconn *conn, PGresult *res)
{
	if (!res)
		res = face_result_error(conn, "PB008", "out of memory for a result");
	if (res && conn->inflight_kind == PGRES_COMMAND_OK && res->status == PGRES_TUPLES_OK)
		res->status = PGRES_COMMAND_OK;
	if (res) {
		face_after_result(conn, res);
		pend_push(conn, res);
	}
	pend_push(conn, NULL);
	conn->async = ASYNC_READY;
	conn->inflight = 0;
}

/* A pipeline command by id, -1 when none. */
static struct face_pipe_cmd *pipe_find(PGconn *conn, long long id)
{
	for (struct face_pipe_cmd *p = conn->pipe_head; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

/* Take the answers that have arrived (block: wait for one if none has). */
static void pump(PGconn *conn, int block)
{
	for (;;) {
		long long id = 0;
		pgb_result *r;
		struct face_pipe_cmd *cmd;

		if (conn->pipeline == PQ_PIPELINE_OFF && conn->async != ASYNC_BUSY)
			return;
		if (conn->pipeline != PQ_PIPELINE_OFF && pgb_in_flight(conn->c) == 0)
			return;
		r = block ? pgb_get_result(conn->c, &id) : pgb_try_result(conn->c, &id);
		if (!r)
			return;
		block = 0;
		if (conn->pipeline == PQ_PIPELINE_OFF) {
			if (id == conn->inflight || id == 0)
				answer(conn, face_result_wrap(conn, r));
			else
				pgb_clear(r);	/* not ours: a statement of before a reset */
			continue;
		}
		cmd = pipe_find(conn, id);
		if (!cmd) {
			pgb_clear(r);
			continue;
		}
		cmd->res = face_result_wrap(conn, r);
		if (!cmd->res)
			cmd->res = face_result_error(conn, "PB008", "out of memory for a result");
		cmd->id = 0;
		if (cmd->res && cmd->kind == PGRES_COMMAND_OK && cmd->res->status == PGRES_TUPLES_OK)
			cmd->res->status = PGRES_COMMAND_OK;
		face_after_result(conn, cmd->res);
	}
}

static int check_conn(PGconn *conn)
{
	if (!conn)
		return 0;
	if (conn->status != CONNECTION_OK) {
		face_set_error(conn, "no connection to the server");
		return 0;
	}
	if (conn->pipeline == PQ_PIPELINE_OFF && conn->async != ASYNC_IDLE) {
		face_set_error(conn, "another command is already in progress");
		return 0;
	}
	return 1;
}

/* Send sql (or answer locally with res): kind PGRES_COMMAND_OK turns a
 * TUPLES_OK answer into COMMAND_OK. 1 sent, 0 failed (PQerrorMessage). */
static int send_cmd(PGconn *conn, const char *sql, int nparams, const char *const *values,
		    ExecStatusType kind, PGresult *local)
{
	long long id = 0;

	if (!local) {
		id = pgb_send(conn->c, sql, nparams, values, 0);
		if (id < 0) {
			face_set_error(conn, "%s", pgb_error_message(conn->c));
			if (pgb_status(conn->c) != PGB_CONNECTION_OK)
				conn->status = CONNECTION_BAD;
			return 0;
		}
	}
	if (conn->pipeline != PQ_PIPELINE_OFF) {
		struct face_pipe_cmd *cmd = calloc(1, sizeof(*cmd));

		if (!cmd) {
			PQclear(local);
			face_set_error(conn, "out of memory");
			return 0;
		}
		cmd->id = id;
		cmd->kind = kind;
		cmd->res = local;
		if (conn->pipe_tail)
			conn->pipe_tail->next = cmd;
		else
			conn->pipe_head = cmd;
		conn->pipe_tail = cmd;
		return 1;
	}
	conn->inflight_kind = kind;
	if (local) {
		answer(conn, local);
		return 1;
	}
	conn->inflight = id;
	conn->async = ASYNC_BUSY;
	return 1;
}

/* Parameters as text: binary ones (formats 1) cannot go through yet. */
static int check_params(PGconn *conn, int nParams, const int *paramFormats, int resultFormat)
{
	if (nParams < 0 || nParams > 65535) {
		face_set_error(conn, "number of parameters must be between 0 and 65535");
		return 0;
	}
	for (int i = 0; paramFormats && i < nParams; i++)
		if (paramFormats[i] != 0) {
			face_set_error(conn, "pgbroker: binary parameters are not supported "
				       "(parameter $%d); send it as text", i + 1);
			return 0;
		}
	if (resultFormat != 0) {
		face_set_error(conn, "pgbroker: binary results are not supported; "
			       "ask for text results (resultFormat 0)");
		return 0;
	}
	return 1;
}

FACE_API int PQsendQuery(PGconn *conn, const char *query)
{
	if (!check_conn(conn))
		return 0;
	if (!query) {
		face_set_error(conn, "command string is a null pointer");
		return 0;
	}
	if (conn->pipeline != PQ_PIPELINE_OFF) {
		face_set_error(conn, "PQsendQuery not allowed in pipeline mode");
		return 0;
	}
	return send_cmd(conn, query, 0, NULL, PGRES_TUPLES_OK, NULL);
}

FACE_API int PQsendQueryParams(PGconn *conn, const char *command, int nParams,
			       const Oid *paramTypes, const char *const *paramValues,
			       const int *paramLengths, const int *paramFormats, int resultFormat)
{
	(void)paramTypes;
	(void)paramLengths;
	if (!check_conn(conn))
		return 0;
	if (!command) {
		face_set_error(conn, "command string is a null pointer");
		return 0;
	}
	if (!check_params(conn, nParams, paramFormats, resultFormat))
		return 0;
	return send_cmd(conn, command, nParams, paramValues, PGRES_TUPLES_OK, NULL);
}

static struct face_prep *prep_find(PGconn *conn, const char *name)
{
	for (struct face_prep *p = conn->preps; p; p = p->next)
		if (strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

/* Keep the statement here; the answer is PQprepare's COMMAND_OK, or
 * PostgreSQL's 42P05 for a name in use (the unnamed one is replaced). */
static PGresult *prep_add(PGconn *conn, const char *name, const char *query, int nParams,
			  const Oid *paramTypes)
{
	struct face_prep *p;

	if (!name)
		name = "";
	p = prep_find(conn, name);
	if (p && *name)
		return face_result_error(conn, "42P05", "prepared statement \"%s\" already exists",
					 name);
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p || !(p->name = strdup(name))) {
			free(p);
			return NULL;
		}
		p->next = conn->preps;
		conn->preps = p;
	}
	free(p->sql);
	free(p->types);
	p->types = NULL;
	p->sql = strdup(query);
	p->nparams = nParams;
	if (nParams > 0 && paramTypes) {
		p->types = malloc(sizeof(Oid) * (size_t)nParams);
		if (p->types)
			memcpy(p->types, paramTypes, sizeof(Oid) * (size_t)nParams);
	}
	if (!p->sql)
		return NULL;
	return face_result_new(conn, PGRES_COMMAND_OK);
}

FACE_API int PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
			   const Oid *paramTypes)
{
	PGresult *res;

	if (!check_conn(conn))
		return 0;
	if (!query) {
		face_set_error(conn, "command string is a null pointer");
		return 0;
	}
	if (!check_params(conn, nParams, NULL, 0))
		return 0;
	res = prep_add(conn, stmtName, query, nParams, paramTypes);
	if (!res) {
		face_set_error(conn, "out of memory");
		return 0;
	}
	return send_cmd(conn, NULL, 0, NULL, PGRES_COMMAND_OK, res);
}

FACE_API int PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams,
				 const char *const *paramValues, const int *paramLengths,
				 const int *paramFormats, int resultFormat)
{
	struct face_prep *p;

	(void)paramLengths;
	if (!check_conn(conn))
		return 0;
	if (!stmtName) {
		face_set_error(conn, "statement name is a null pointer");
		return 0;
	}
	if (!check_params(conn, nParams, paramFormats, resultFormat))
		return 0;
	p = prep_find(conn, stmtName);
	if (!p)
		return send_cmd(conn, NULL, 0, NULL, PGRES_TUPLES_OK,
				face_result_error(conn, "26000",
						  "prepared statement \"%s\" does not exist",
						  stmtName));
	return send_cmd(conn, p->sql, nParams, paramValues, PGRES_TUPLES_OK, NULL);
}

/* A statement's description needs the server's Describe, which the
 * broker does not relay: a clear error. A statement unknown here is
 * PostgreSQL's 26000. */
static PGresult *describe(PGconn *conn, const char *name, int portal)
{
	if (!portal && !prep_find(conn, name ? name : ""))
		return face_result_error(conn, "26000", "prepared statement \"%s\" does not exist",
					 name ? name : "");
	return face_result_error(conn, "PB009",
				 "pgbroker: describing a %s is not supported through the broker",
				 portal ? "portal" : "prepared statement");
}

FACE_API int PQsendDescribePrepared(PGconn *conn, const char *stmt)
{
	if (!check_conn(conn))
		return 0;
	return send_cmd(conn, NULL, 0, NULL, PGRES_COMMAND_OK, describe(conn, stmt, 0));
}

FACE_API int PQsendDescribePortal(PGconn *conn, const char *portal)
{
	if (!check_conn(conn))
		return 0;
	return send_cmd(conn, NULL, 0, NULL, PGRES_COMMAND_OK, describe(conn, portal, 1));
}

FACE_API int PQconsumeInput(PGconn *conn)
{
	if (!conn || conn->status != CONNECTION_OK) {
		if (conn)
			face_set_error(conn, "no connection to the server");
		return 0;
	}
	pump(conn, 0);
	return conn->status == CONNECTION_OK;
}

FACE_API int PQisBusy(PGconn *conn)
{
	if (!conn)
		return 0;
	if (conn->pipeline != PQ_PIPELINE_OFF) {
		pump(conn, 0);
		return conn->pipe_head && !conn->pipe_head->sync && !conn->pipe_head->res &&
		       conn->pipe_head->id != 0;
	}
	if (conn->async == ASYNC_BUSY)
		pump(conn, 0);
	return conn->async == ASYNC_BUSY;
}

static PGresult *sync_result(PGconn *conn)
{
	return face_result_new(conn, PGRES_PIPELINE_SYNC);
}

/* Pipeline mode: the head command's result, then NULL; a sync's result
 * alone. */
static PGresult *pipe_get(PGconn *conn)
{
	struct face_pipe_cmd *cmd = conn->pipe_head;
	PGresult *res;

	if (!cmd)
		return NULL;
	if (cmd->sync) {
		conn->pipe_head = cmd->next;
		if (!conn->pipe_head)
			conn->pipe_tail = NULL;
		free(cmd);
		conn->pipe_aborted = 0;
		conn->pipeline = PQ_PIPELINE_ON;
		return sync_result(conn);
	}
	if (cmd->kind == (ExecStatusType)-1) {
		/* its result was handed out: now its end */
		conn->pipe_head = cmd->next;
		if (!conn->pipe_head)
			conn->pipe_tail = NULL;
		free(cmd);
		return NULL;
	}
	while (!cmd->res && conn->status == CONNECTION_OK && cmd->id)
		pump(conn, 1);
	res = cmd->res;
	cmd->res = NULL;
	cmd->kind = (ExecStatusType)-1;
	if (!res)
		res = face_result_error(conn, "08006", "%s", PQerrorMessage(conn));
	if (res && res->status == PGRES_FATAL_ERROR)
		conn->pipeline = PQ_PIPELINE_ABORTED;
	return res;
}

FACE_API PGresult *PQgetResult(PGconn *conn)
{
	struct face_pending *p;
	PGresult *res;

	if (!conn)
		return NULL;
	if (conn->pipeline != PQ_PIPELINE_OFF)
		return pipe_get(conn);
	if (conn->async == ASYNC_IDLE)
		return NULL;
	while (conn->async == ASYNC_BUSY) {
		pump(conn, 1);
		if (conn->async == ASYNC_BUSY && pgb_in_flight(conn->c) == 0)
			answer(conn, face_result_error(conn, "08006", "%s",
						       pgb_error_message(conn->c)));
	}
	p = conn->pend;
	if (!p) {
		conn->async = ASYNC_IDLE;
		return NULL;
	}
	conn->pend = p->next;
	if (!conn->pend) {
		conn->pend_tail = NULL;
		conn->async = ASYNC_IDLE;
	}
	res = p->res;
	free(p);
	if (!res)
		conn->async = conn->pend ? ASYNC_READY : ASYNC_IDLE;
	return res;
}

/* libpq's PQexecStart: results left from before are dropped. */
static int exec_start(PGconn *conn)
{
	PGresult *res;

	if (!conn)
		return 0;
	if (conn->pipeline != PQ_PIPELINE_OFF) {
		face_set_error(conn, "synchronous command execution functions are not allowed "
			       "in pipeline mode");
		return 0;
	}
	while ((res = PQgetResult(conn)))
		PQclear(res);
	return 1;
}

/* libpq's PQexecFinish: the last result. */
static PGresult *exec_finish(PGconn *conn)
{
	PGresult *res, *last = NULL;

	while ((res = PQgetResult(conn))) {
		PQclear(last);
		last = res;
	}
	return last;
}

FACE_API PGresult *PQexec(PGconn *conn, const char *query)
{
	if (!exec_start(conn) || !PQsendQuery(conn, query))
		return NULL;
	return exec_finish(conn);
}

FACE_API PGresult *PQexecParams(PGconn *conn, const char *command, int nParams,
				const Oid *paramTypes, const char *const *paramValues,
				const int *paramLengths, const int *paramFormats, int resultFormat)
{
	if (!exec_start(conn) ||
	    !PQsendQueryParams(conn, command, nParams, paramTypes, paramValues, paramLengths,
			       paramFormats, resultFormat))
		return NULL;
	return exec_finish(conn);
}

FACE_API PGresult *PQprepare(PGconn *conn, const char *stmtName, const char *query,
			     int nParams, const Oid *paramTypes)
{
	if (!exec_start(conn) || !PQsendPrepare(conn, stmtName, query, nParams, paramTypes))
		return NULL;
	return exec_finish(conn);
}

FACE_API PGresult *PQexecPrepared(PGconn *conn, const char *stmtName, int nParams,
				  const char *const *paramValues, const int *paramLengths,
				  const int *paramFormats, int resultFormat)
{
	if (!exec_start(conn) ||
	    !PQsendQueryPrepared(conn, stmtName, nParams, paramValues, paramLengths,
				 paramFormats, resultFormat))
		return NULL;
	return exec_finish(conn);
}

FACE_API PGresult *PQdescribePrepared(PGconn *conn, const char *stmt)
{
	if (!exec_start(conn) || !PQsendDescribePrepared(conn, stmt))
		return NULL;
	return exec_finish(conn);
}

FACE_API PGresult *PQdescribePortal(PGconn *conn, const char *portal)
{
	if (!exec_start(conn) || !PQsendDescribePortal(conn, portal))
		return NULL;
	return exec_finish(conn);
}

/* Each row comes with the whole result: single-row mode is refused, as
 * libpq refuses it when it is too late. */
FACE_API int PQsetSingleRowMode(PGconn *conn)
{
	(void)conn;
	return 0;
}

/* Requests go into the channel's ring at once: nothing waits for a flush. */
FACE_API int PQsetnonblocking(PGconn *conn, int arg)
{
	if (!conn || conn->status == CONNECTION_BAD)
		return -1;
	conn->nonblocking = arg != 0;
	return 0;
}

FACE_API int PQisnonblocking(const PGconn *conn)
{
	return conn ? conn->nonblocking : 0;
}

FACE_API int PQflush(PGconn *conn)
{
	return conn && conn->status == CONNECTION_OK ? 0 : -1;
}

FACE_API int PQsendFlushRequest(PGconn *conn)
{
	if (!conn || conn->status != CONNECTION_OK)
		return 0;
	if (conn->pipeline == PQ_PIPELINE_OFF) {
		face_set_error(conn, "cannot send flush request when not in pipeline mode");
		return 0;
	}
	return 1;
}

/* --- pipeline mode: commands go out at once and are answered in order --- */

FACE_API PGpipelineStatus PQpipelineStatus(const PGconn *conn)
{
	return conn ? conn->pipeline : PQ_PIPELINE_OFF;
}

FACE_API int PQenterPipelineMode(PGconn *conn)
{
	if (!conn)
		return 0;
	if (conn->pipeline != PQ_PIPELINE_OFF)
		return 1;
	if (conn->async != ASYNC_IDLE || conn->status != CONNECTION_OK) {
		face_set_error(conn, "cannot enter pipeline mode, connection not idle");
		return 0;
	}
	conn->pipeline = PQ_PIPELINE_ON;
	return 1;
}

FACE_API int PQexitPipelineMode(PGconn *conn)
{
	if (!conn)
		return 0;
	if (conn->pipeline == PQ_PIPELINE_OFF)
		return 1;
	if (conn->pipe_head) {
		face_set_error(conn, "cannot exit pipeline mode with uncollected results");
		return 0;
	}
	conn->pipeline = PQ_PIPELINE_OFF;
	return 1;
}

FACE_API int PQpipelineSync(PGconn *conn)
{
	struct face_pipe_cmd *cmd;

	if (!conn || conn->status != CONNECTION_OK)
		return 0;
	if (conn->pipeline == PQ_PIPELINE_OFF) {
		face_set_error(conn, "cannot send pipeline when not in pipeline mode");
		return 0;
	}
	cmd = calloc(1, sizeof(*cmd));
	if (!cmd) {
		face_set_error(conn, "out of memory");
		return 0;
	}
	cmd->sync = 1;
	if (conn->pipe_tail)
		conn->pipe_tail->next = cmd;
	else
		conn->pipe_head = cmd;
	conn->pipe_tail = cmd;
	return 1;
}
