/* PGconn: connection options (keyword=value, URIs, libpq's environment
 * variables), connecting to the broker, the checks that the database and
 * user asked for are the ones it serves, and the state a libpq program
 * reads back: status, server parameters, transaction status. */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "face.h"
#include "internal.h"

const char *const face_param_names[PS_COUNT] = {
	[PS_SERVER_VERSION] = "server_version",
	[PS_SERVER_ENCODING] = "server_encoding",
	[PS_CLIENT_ENCODING] = "client_encoding",
	[PS_APPLICATION_NAME] = "application_name",
	[PS_DEFAULT_TRANSACTION_READ_ONLY] = "default_transaction_read_only",
	[PS_IN_HOT_STANDBY] = "in_hot_standby",
	[PS_IS_SUPERUSER] = "is_superuser",
	[PS_SESSION_AUTHORIZATION] = "session_authorization",
	[PS_DATESTYLE] = "DateStyle",
	[PS_INTERVALSTYLE] = "IntervalStyle",
	[PS_TIMEZONE] = "TimeZone",
	[PS_INTEGER_DATETIMES] = "integer_datetimes",
	[PS_STANDARD_CONFORMING_STRINGS] = "standard_conforming_strings",
};

/* The keywords libpq 15 knows, with their environment variable, as
 * PQconndefaults lists them. Those the broker cannot honour are accepted
 * and ignored (docs/libpq.md). */
static const struct kw {
	const char *key, *env, *label, *dispchar;
	int size;
} keywords[] = {
	{ "service", "PGSERVICE", "Database-Service", "", 20 },
	{ "user", "PGUSER", "Database-User", "", 20 },
	{ "password", "PGPASSWORD", "Database-Password", "*", 20 },
	{ "passfile", "PGPASSFILE", "Database-Password-File", "", 64 },
	{ "channel_binding", "PGCHANNELBINDING", "Channel-Binding", "", 8 },
	{ "connect_timeout", "PGCONNECT_TIMEOUT", "Connect-timeout", "", 10 },
	{ "dbname", "PGDATABASE", "Database-Name", "", 20 },
	{ "host", "PGHOST", "Database-Host", "", 40 },
	{ "hostaddr", "PGHOSTADDR", "Database-Host-IP-Address", "", 45 },
	{ "port", "PGPORT", "Database-Port", "", 6 },
	{ "client_encoding", "PGCLIENTENCODING", "Client-Encoding", "", 10 },
	{ "options", "PGOPTIONS", "Backend-Options", "", 40 },
	{ "application_name", "PGAPPNAME", "Application-Name", "", 64 },
	{ "fallback_application_name", NULL, "Fallback-Application-Name", "", 64 },
	{ "keepalives", NULL, "TCP-Keepalives", "", 1 },
	{ "keepalives_idle", NULL, "TCP-Keepalives-Idle", "", 10 },
	{ "keepalives_interval", NULL, "TCP-Keepalives-Interval", "", 10 },
	{ "keepalives_count", NULL, "TCP-Keepalives-Count", "", 10 },
	{ "tcp_user_timeout", NULL, "TCP-User-Timeout", "", 10 },
	{ "sslmode", "PGSSLMODE", "SSL-Mode", "", 12 },
	{ "sslcompression", "PGSSLCOMPRESSION", "SSL-Compression", "", 1 },
	{ "sslcert", "PGSSLCERT", "SSL-Client-Cert", "", 64 },
	{ "sslkey", "PGSSLKEY", "SSL-Client-Key", "", 64 },
	{ "sslpassword", NULL, "SSL-Client-Key-Password", "*", 20 },
	{ "sslrootcert", "PGSSLROOTCERT", "SSL-Root-Certificate", "", 64 },
	{ "sslcrl", "PGSSLCRL", "SSL-Revocation-List", "", 64 },
	{ "sslcrldir", "PGSSLCRLDIR", "SSL-Revocation-List-Dir", "", 64 },
	{ "sslsni", "PGSSLSNI", "SSL-SNI", "", 1 },
	{ "requirepeer", "PGREQUIREPEER", "Require-Peer", "", 10 },
	{ "ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION", "SSL-Minimum-Protocol-Version", "", 8 },
	{ "ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION", "SSL-Maximum-Protocol-Version", "", 8 },
	{ "gssencmode", "PGGSSENCMODE", "GSSENC-Mode", "", 8 },
	{ "krbsrvname", "PGKRBSRVNAME", "Kerberos-service-name", "", 20 },
	{ "gsslib", "PGGSSLIB", "GSS-library", "", 7 },
	{ "replication", NULL, "Replication", "D", 5 },
	{ "target_session_attrs", "PGTARGETSESSIONATTRS", "Target-Session-Attrs", "", 15 },
};
#define NKEYWORDS (sizeof(keywords) / sizeof(keywords[0]))

static int kw_index(const char *key)
{
	for (size_t i = 0; i < NKEYWORDS; i++)
		if (strcmp(keywords[i].key, key) == 0)
			return (int)i;
	return -1;
}

void face_set_error(PGconn *conn, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	n = strlen(buf);
	if (n == 0 || buf[n - 1] != '\n') {
		buf[n] = '\n';
		buf[n + 1] = '\0';
	}
	free(conn->errmsg);
	conn->errmsg = strdup(buf);
}

void face_opts_free(struct face_opt *opts, int n)
{
	for (int i = 0; i < n; i++) {
		free(opts[i].key);
		free(opts[i].val);
	}
	free(opts);
}

/* Set key to val (replacing an earlier value); -1 out of memory. */
static int opt_set(struct face_opt **opts, int *n, const char *key, const char *val)
{
	struct face_opt *o;

	for (int i = 0; i < *n; i++)
		if (strcmp((*opts)[i].key, key) == 0) {
			char *v = strdup(val);

			if (!v)
				return -1;
			free((*opts)[i].val);
			(*opts)[i].val = v;
			return 0;
		}
	o = realloc(*opts, sizeof(*o) * (size_t)(*n + 1));
	if (!o)
		return -1;
	*opts = o;
	o[*n].key = strdup(key);
	o[*n].val = strdup(val);
	if (!o[*n].key || !o[*n].val) {
		free(o[*n].key);
		free(o[*n].val);
		return -1;
	}
	(*n)++;
	return 0;
}

static const char *opt_get(const PGconn *conn, const char *key)
{
	for (int i = 0; i < conn->nopts; i++)
		if (strcmp(conn->opts[i].key, key) == 0)
			return conn->opts[i].val;
	return NULL;
}

static char *err_dup(const char *fmt, const char *arg)
{
	char buf[512];

	snprintf(buf, sizeof(buf), fmt, arg);
	return strdup(buf);
}

/* Decode %XX in place. */
static void uri_decode(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
			char hex[3] = { s[1], s[2], 0 };

			*d++ = (char)strtol(hex, NULL, 16);
			s += 2;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

/* postgresql://[user[:password]@][host][:port][/dbname][?key=value&...] */
static int parse_uri(const char *s, struct face_opt **opts, int *n, char **err)
{
	size_t pre = strncmp(s, "postgresql://", 13) == 0 ? 13 : 11;
	char *copy = strdup(s + pre), *p, *q, *rest;
	int rc = -1;

	if (!copy)
		return -1;
	p = copy;
	q = strchr(p, '?');
	if (q)
		*q++ = '\0';
	rest = strchr(p, '/');
	if (rest)
		*rest++ = '\0';
	if ((q = strrchr(p, '@'))) {
		char *pw;

		*q = '\0';
		if ((pw = strchr(p, ':'))) {
			*pw++ = '\0';
			uri_decode(pw);
			if (opt_set(opts, n, "password", pw) < 0)
				goto out;
		}
		uri_decode(p);
		if (*p && opt_set(opts, n, "user", p) < 0)
			goto out;
		p = q + 1;
	}
	if (*p) {
		char *port = NULL;

		if (*p == '[') {
			char *e = strchr(p, ']');

			if (e) {
				*e = '\0';
				port = strchr(e + 1, ':');
				p++;
			}
		} else if ((port = strrchr(p, ':'))) {
			*port = '\0';
		}
		if (port && *port == ':')
			port++;
		uri_decode(p);
		if (*p && opt_set(opts, n, "host", p) < 0)
			goto out;
		if (port && *port && opt_set(opts, n, "port", port) < 0)
			goto out;
	}
	if (rest && *rest) {
		uri_decode(rest);
		if (opt_set(opts, n, "dbname", rest) < 0)
			goto out;
	}
	if ((q = strchr(s + pre, '?'))) {
		char *params = strdup(q + 1), *tok, *save = NULL;

		if (!params)
			goto out;
		for (tok = strtok_r(params, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
			char *eq = strchr(tok, '=');

			if (!eq) {
				*err = err_dup("missing key/value separator \"=\" in URI query parameter: \"%s\"\n", tok);
				free(params);
				goto out;
			}
			*eq++ = '\0';
			uri_decode(tok);
			uri_decode(eq);
			if (kw_index(tok) < 0) {
				*err = err_dup("invalid URI query parameter: \"%s\"\n", tok);
				free(params);
				goto out;
			}
			if (opt_set(opts, n, tok, eq) < 0) {
				free(params);
				goto out;
			}
		}
		free(params);
	}
	rc = 0;
out:
	free(copy);
	return rc;
}

int face_parse_conninfo(const char *s, struct face_opt **opts, int *n, char **err)
{
	const char *p = s;

	*err = NULL;
	if (strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0)
		return parse_uri(s, opts, n, err) < 0 && !*err ? (*err = strdup("out of memory\n"), -1)
			: (*err ? -1 : 0);
	while (*p) {
		char key[64], *val;
		size_t kl = 0, vl = 0, cap;

		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		while (*p && *p != '=' && !isspace((unsigned char)*p) && kl < sizeof(key) - 1)
			key[kl++] = *p++;
		key[kl] = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {
			*err = err_dup("missing \"=\" after \"%s\" in connection info string\n", key);
			return -1;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		cap = strlen(p) + 1;
		val = malloc(cap);
		if (!val) {
			*err = strdup("out of memory\n");
			return -1;
		}
		if (*p == '\'') {
			p++;
			for (;;) {
				if (!*p) {
					free(val);
					*err = strdup("unterminated quoted string in connection info string\n");
					return -1;
				}
				if (*p == '\\' && p[1]) {
					val[vl++] = p[1];
					p += 2;
				} else if (*p == '\'') {
					p++;
					break;
				} else {
					val[vl++] = *p++;
				}
			}
		} else {
			while (*p && !isspace((unsigned char)*p)) {
				if (*p == '\\' && p[1])
					p++;
				val[vl++] = *p++;
			}
		}
		val[vl] = '\0';
		if (kw_index(key) < 0) {
			*err = err_dup("invalid connection option \"%s\"\n", key);
			free(val);
			return -1;
		}
		if (opt_set(opts, n, key, val) < 0) {
			free(val);
			*err = strdup("out of memory\n");
			return -1;
		}
		free(val);
	}
	return 0;
}

static int is_conninfo(const char *s)
{
	return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 ||
	       strchr(s, '=') != NULL;
}

static PGconn *conn_new(void)
{
	PGconn *conn = calloc(1, sizeof(*conn));

	if (!conn)
		return NULL;
	conn->status = CONNECTION_BAD;
	conn->xact = PQTRANS_UNKNOWN;
	conn->verbosity = PQERRORS_DEFAULT;
	conn->show_context = PQSHOW_CONTEXT_ERRORS;
	conn->client_encoding = 0;
	conn->pipeline = PQ_PIPELINE_OFF;
	return conn;
}

/* The default notice processor prints to stderr, as libpq's. */
static void default_notice_processor(void *arg, const char *message)
{
	(void)arg;
	fprintf(stderr, "%s", message);
}

static void default_notice_receiver(void *arg, const PGresult *res)
{
	PGconn *conn = arg;

	if (conn->notice_proc)
		conn->notice_proc(conn->notice_proc_arg, PQresultErrorMessage(res));
}

/* Read the server's parameters, the database and the user, in one statement. */
static int read_params(PGconn *conn, char *db, size_t dbn, char *user, size_t usern)
{
	static const char sql[] =
		"SELECT current_database(), session_user, "
		"current_setting('server_version_num', true), "
		"current_setting('server_version', true), current_setting('server_encoding', true), "
		"current_setting('client_encoding', true), current_setting('application_name', true), "
		"current_setting('default_transaction_read_only', true), "
		"current_setting('in_hot_standby', true), current_setting('is_superuser', true), "
		"current_setting('session_authorization', true), current_setting('DateStyle', true), "
		"current_setting('IntervalStyle', true), current_setting('TimeZone', true), "
		"current_setting('integer_datetimes', true), "
		"current_setting('standard_conforming_strings', true)";
	pgb_result *r = pgb_exec(conn->c, sql);

	if (!pgb_result_ok(r) || pgb_ntuples(r) != 1 || pgb_nfields(r) != 3 + PS_COUNT) {
		face_set_error(conn, "pgbroker: could not read the server's parameters: %s",
			       r ? pgb_result_error(r) : "out of memory");
		pgb_clear(r);
		return -1;
	}
	if (db)
		snprintf(db, dbn, "%s", pgb_getvalue(r, 0, 0));
	if (user)
		snprintf(user, usern, "%s", pgb_getvalue(r, 0, 1));
	conn->server_version = atoi(pgb_getvalue(r, 0, 2));
	for (int i = 0; i < PS_COUNT; i++) {
		free(conn->param[i]);
		conn->param[i] = pgb_getisnull(r, 0, 3 + i) ? NULL : strdup(pgb_getvalue(r, 0, 3 + i));
	}
	conn->client_encoding = conn->param[PS_CLIENT_ENCODING]
					? face_encoding_id(conn->param[PS_CLIENT_ENCODING]) : 0;
	if (conn->client_encoding < 0)
		conn->client_encoding = 0;
	conn->params_stale = 0;
	pgb_clear(r);
	return 0;
}

void face_refresh_params(PGconn *conn)
{
	if (conn->params_stale && conn->status == CONNECTION_OK && conn->async == ASYNC_IDLE &&
	    conn->pipeline == PQ_PIPELINE_OFF && pgb_in_flight(conn->c) == 0) {
		char *keep = conn->errmsg ? strdup(conn->errmsg) : NULL;

		read_params(conn, NULL, 0, NULL, 0);
		free(conn->errmsg);
		conn->errmsg = keep;
	}
}

void face_after_result(PGconn *conn, const PGresult *res)
{
	int in = pgbi_in_transaction(conn->c);
	const char *state;

	if (pgb_status(conn->c) != PGB_CONNECTION_OK) {
		conn->status = CONNECTION_BAD;
		conn->xact = PQTRANS_UNKNOWN;
	} else if (!in) {
		conn->xact = PQTRANS_IDLE;
	} else if (res && res->status == PGRES_FATAL_ERROR) {
		/* PostgreSQL aborts the transaction; the broker's own refusals
		 * (class PB) never reached it. */
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (!state || strncmp(state, "PB", 2) != 0 || conn->xact == PQTRANS_INERROR)
			conn->xact = PQTRANS_INERROR;
		else
			conn->xact = PQTRANS_INTRANS;
	} else {
		conn->xact = PQTRANS_INTRANS;
	}
	if (res && res->status == PGRES_FATAL_ERROR)
		face_set_error(conn, "%s", PQresultErrorMessage(res));
	if (res && res->status == PGRES_COMMAND_OK &&
	    (strcmp(res->cmd, "SET") == 0 || strcmp(res->cmd, "RESET") == 0 ||
	     strcmp(res->cmd, "DISCARD ALL") == 0 || strcmp(res->cmd, "COMMIT") == 0 ||
	     strcmp(res->cmd, "ROLLBACK") == 0))
		conn->params_stale = 1;
}

/* The options of a connection: given ones, then environment defaults. */
static int apply_env(PGconn *conn)
{
	for (size_t i = 0; i < NKEYWORDS; i++) {
		const char *v;

		if (!keywords[i].env || opt_get(conn, keywords[i].key))
			continue;
		v = getenv(keywords[i].env);
		if (v && *v && opt_set(&conn->opts, &conn->nopts, keywords[i].key, v) < 0)
			return -1;
	}
	return 0;
}

/* Connect to the broker and check that it serves the database and user
 * asked for. Sets conn->status. */
static void connect_broker(PGconn *conn)
{
	const char *want_db = opt_get(conn, "dbname"), *want_user = opt_get(conn, "user");
	const char *enc = opt_get(conn, "client_encoding"), *o = opt_get(conn, "options");
	char db[256], user[256];

	conn->status = CONNECTION_BAD;
	conn->notice_rcv = default_notice_receiver;
	conn->notice_rcv_arg = conn;
	conn->notice_proc = default_notice_processor;
	if (o && *o) {
		face_set_error(conn, "pgbroker: the connection option \"options\" (\"%s\") cannot "
			       "be honoured: backends are shared; use SET inside a transaction", o);
		return;
	}
	conn->c = pgb_connect(NULL);
	if (!conn->c) {
		face_set_error(conn, "out of memory");
		return;
	}
	if (pgb_status(conn->c) != PGB_CONNECTION_OK) {
		face_set_error(conn, "pgbroker: could not connect to the broker: %s",
			       pgb_error_message(conn->c));
		return;
	}
	if (read_params(conn, db, sizeof(db), user, sizeof(user)) < 0)
		return;
	if (want_user && *want_user && strcmp(want_user, user) != 0) {
		face_set_error(conn, "pgbroker: the broker serves user \"%s\", not \"%s\" "
			       "(connect as \"%s\", or start a broker for \"%s\")",
			       user, want_user, user, want_user);
		return;
	}
	if (want_db && *want_db && strcmp(want_db, db) != 0) {
		face_set_error(conn, "pgbroker: the broker serves database \"%s\", not \"%s\" "
			       "(connect to \"%s\", or start a broker for \"%s\")",
			       db, want_db, db, want_db);
		return;
	}
	if (opt_set(&conn->opts, &conn->nopts, "dbname", db) < 0 ||
	    opt_set(&conn->opts, &conn->nopts, "user", user) < 0) {
		face_set_error(conn, "out of memory");
		return;
	}
	conn->status = CONNECTION_OK;
	conn->xact = PQTRANS_IDLE;
	free(conn->errmsg);
	conn->errmsg = NULL;
	/* An explicit client encoding other than the session's: SET it
	 * ("auto" keeps the server's). */
	if (enc && *enc && strcmp(enc, "auto") != 0 && conn->param[PS_CLIENT_ENCODING] &&
	    face_encoding_id(enc) != face_encoding_id(conn->param[PS_CLIENT_ENCODING])) {
		if (PQsetClientEncoding(conn, enc) != 0)
			conn->status = CONNECTION_BAD;
	}
}

static PGconn *connect_opts(PGconn *conn)
{
	if (!conn)
		return NULL;
	if (apply_env(conn) < 0) {
		face_set_error(conn, "out of memory");
		return conn;
	}
	connect_broker(conn);
	return conn;
}

/* Options from keywords/values; dbname expanded when it is a conninfo
 * and expand_dbname is set (only its first occurrence, as libpq). */
static int opts_from_params(PGconn *conn, const char *const *keys, const char *const *vals,
			    int expand)
{
	for (int i = 0; keys && keys[i]; i++) {
		char *err = NULL;

		if (!vals[i] || !vals[i][0])
			continue;
		if (expand && strcmp(keys[i], "dbname") == 0 && is_conninfo(vals[i])) {
			expand = 0;
			if (face_parse_conninfo(vals[i], &conn->opts, &conn->nopts, &err) < 0) {
				face_set_error(conn, "%s", err ? err : "out of memory");
				free(err);
				return -1;
			}
			continue;
		}
		if (kw_index(keys[i]) < 0) {
			face_set_error(conn, "invalid connection option \"%s\"", keys[i]);
			return -1;
		}
		if (opt_set(&conn->opts, &conn->nopts, keys[i], vals[i]) < 0) {
			face_set_error(conn, "out of memory");
			return -1;
		}
	}
	return 0;
}

FACE_API PGconn *PQconnectStartParams(const char *const *keywords_, const char *const *values,
				      int expand_dbname)
{
	PGconn *conn = conn_new();

	if (!conn)
		return NULL;
	if (opts_from_params(conn, keywords_, values, expand_dbname) < 0)
		return conn;
	return connect_opts(conn);
}

FACE_API PGconn *PQconnectdbParams(const char *const *keywords_, const char *const *values,
				   int expand_dbname)
{
	return PQconnectStartParams(keywords_, values, expand_dbname);
}

FACE_API PGconn *PQconnectStart(const char *conninfo)
{
	PGconn *conn = conn_new();
	char *err = NULL;

	if (!conn)
		return NULL;
	if (conninfo && face_parse_conninfo(conninfo, &conn->opts, &conn->nopts, &err) < 0) {
		face_set_error(conn, "%s", err ? err : "out of memory");
		free(err);
		return conn;
	}
	return connect_opts(conn);
}

FACE_API PGconn *PQconnectdb(const char *conninfo)
{
	return PQconnectStart(conninfo);
}

FACE_API PGconn *PQsetdbLogin(const char *pghost, const char *pgport, const char *pgoptions,
			      const char *pgtty, const char *dbName, const char *login,
			      const char *pwd)
{
	const char *keys[] = { "host", "port", "options", "dbname", "user", "password", NULL };
	const char *vals[] = { pghost, pgport, pgoptions, dbName, login, pwd, NULL };

	(void)pgtty;
	return PQconnectdbParams(keys, vals, 1);
}

/* The connection is made (or has failed) by PQconnectStart already: the
 * broker is on this host and answers at once. */
FACE_API PostgresPollingStatusType PQconnectPoll(PGconn *conn)
{
	if (!conn || conn->status == CONNECTION_BAD)
		return PGRES_POLLING_FAILED;
	return PGRES_POLLING_OK;
}

static void conn_clear(PGconn *conn)
{
	while (conn->pend) {
		struct face_pending *p = conn->pend;

		conn->pend = p->next;
		PQclear(p->res);
		free(p);
	}
	conn->pend_tail = NULL;
	while (conn->pipe_head) {
		struct face_pipe_cmd *p = conn->pipe_head;

		conn->pipe_head = p->next;
		PQclear(p->res);
		free(p);
	}
	conn->pipe_tail = NULL;
	while (conn->preps) {
		struct face_prep *p = conn->preps;

		conn->preps = p->next;
		free(p->name);
		free(p->sql);
		free(p->types);
		free(p);
	}
	conn->async = ASYNC_IDLE;
	conn->pipeline = PQ_PIPELINE_OFF;
	conn->pipe_aborted = 0;
}

FACE_API void PQfinish(PGconn *conn)
{
	if (!conn)
		return;
	conn_clear(conn);
	pgb_finish(conn->c);
	face_opts_free(conn->opts, conn->nopts);
	for (int i = 0; i < PS_COUNT; i++)
		free(conn->param[i]);
	free(conn->errmsg);
	free(conn);
}

/* A clean session of its own again: the broker rolls back and discards
 * its session state (or connects again when it went away). */
FACE_API void PQreset(PGconn *conn)
{
	if (!conn)
		return;
	conn_clear(conn);
	if (!conn->c) {
		connect_broker(conn);
		return;
	}
	if (pgb_reset(conn->c) < 0) {
		face_set_error(conn, "pgbroker: reset failed: %s", pgb_error_message(conn->c));
		conn->status = CONNECTION_BAD;
		conn->xact = PQTRANS_UNKNOWN;
		return;
	}
	conn->status = CONNECTION_OK;
	conn->xact = PQTRANS_IDLE;
	if (read_params(conn, NULL, 0, NULL, 0) < 0)
		conn->status = CONNECTION_BAD;
}

FACE_API int PQresetStart(PGconn *conn)
{
	PQreset(conn);
	return conn && conn->status == CONNECTION_OK;
}

FACE_API PostgresPollingStatusType PQresetPoll(PGconn *conn)
{
	return PQconnectPoll(conn);
}

FACE_API PGPing PQping(const char *conninfo)
{
	PGconn *conn = PQconnectdb(conninfo);
	PGPing p = conn && conn->status == CONNECTION_OK ? PQPING_OK : PQPING_NO_RESPONSE;

	PQfinish(conn);
	return p;
}

FACE_API PGPing PQpingParams(const char *const *keywords_, const char *const *values,
			     int expand_dbname)
{
	PGconn *conn = PQconnectdbParams(keywords_, values, expand_dbname);
	PGPing p = conn && conn->status == CONNECTION_OK ? PQPING_OK : PQPING_NO_RESPONSE;

	PQfinish(conn);
	return p;
}

/* --- PQconninfoOption arrays --- */

static PQconninfoOption *options_array(void)
{
	PQconninfoOption *o = calloc(NKEYWORDS + 1, sizeof(*o));

	if (!o)
		return NULL;
	for (size_t i = 0; i < NKEYWORDS; i++) {
		o[i].keyword = (char *)keywords[i].key;
		o[i].envvar = (char *)keywords[i].env;
		o[i].label = (char *)keywords[i].label;
		o[i].dispchar = (char *)keywords[i].dispchar;
		o[i].dispsize = keywords[i].size;
	}
	return o;
}

static int options_fill(PQconninfoOption *o, const struct face_opt *opts, int n)
{
	for (int i = 0; i < n; i++) {
		int k = kw_index(opts[i].key);

		if (k < 0)
			continue;
		free(o[k].val);
		o[k].val = strdup(opts[i].val);
		if (!o[k].val)
			return -1;
	}
	return 0;
}

FACE_API void PQconninfoFree(PQconninfoOption *connOptions)
{
	if (!connOptions)
		return;
	for (PQconninfoOption *o = connOptions; o->keyword; o++)
		free(o->val);
	free(connOptions);
}

FACE_API PQconninfoOption *PQconninfoParse(const char *conninfo, char **errmsg)
{
	struct face_opt *opts = NULL;
	PQconninfoOption *o;
	char *err = NULL;
	int n = 0;

	if (errmsg)
		*errmsg = NULL;
	if (face_parse_conninfo(conninfo ? conninfo : "", &opts, &n, &err) < 0) {
		face_opts_free(opts, n);
		if (errmsg)
			*errmsg = err;
		else
			free(err);
		return NULL;
	}
	o = options_array();
	if (o && options_fill(o, opts, n) < 0) {
		PQconninfoFree(o);
		o = NULL;
	}
	face_opts_free(opts, n);
	return o;
}

FACE_API PQconninfoOption *PQconndefaults(void)
{
	PQconninfoOption *o = options_array();

	if (!o)
		return NULL;
	for (PQconninfoOption *p = o; p->keyword; p++) {
		const char *v = p->envvar ? getenv(p->envvar) : NULL;

		if (v && *v && !(p->val = strdup(v))) {
			PQconninfoFree(o);
			return NULL;
		}
	}
	return o;
}

FACE_API PQconninfoOption *PQconninfo(PGconn *conn)
{
	PQconninfoOption *o;

	if (!conn)
		return NULL;
	o = options_array();
	if (o && options_fill(o, conn->opts, conn->nopts) < 0) {
		PQconninfoFree(o);
		return NULL;
	}
	return o;
}

/* --- What a program reads back --- */

FACE_API ConnStatusType PQstatus(const PGconn *conn)
{
	return conn ? conn->status : CONNECTION_BAD;
}

FACE_API PGTransactionStatusType PQtransactionStatus(const PGconn *conn)
{
	if (!conn || conn->status != CONNECTION_OK)
		return PQTRANS_UNKNOWN;
	if (conn->async == ASYNC_BUSY || conn->pipe_head)
		return PQTRANS_ACTIVE;
	return conn->xact;
}

FACE_API const char *PQparameterStatus(const PGconn *conn, const char *paramName)
{
	if (!conn || !paramName)
		return NULL;
	face_refresh_params((PGconn *)conn);
	for (int i = 0; i < PS_COUNT; i++)
		if (strcmp(face_param_names[i], paramName) == 0)
			return conn->param[i];
	return NULL;
}

FACE_API int PQserverVersion(const PGconn *conn)
{
	return conn && conn->status == CONNECTION_OK ? conn->server_version : 0;
}

FACE_API int PQprotocolVersion(const PGconn *conn)
{
	return conn && conn->status == CONNECTION_OK ? 3 : 0;
}

FACE_API char *PQerrorMessage(const PGconn *conn)
{
	if (!conn)
		return "connection pointer is NULL\n";
	return conn->errmsg ? conn->errmsg : "";
}

FACE_API int PQsocket(const PGconn *conn)
{
	return conn && conn->c ? pgb_socket(conn->c) : -1;
}

/* No backend is this session's own: there is no one process id. */
FACE_API int PQbackendPID(const PGconn *conn)
{
	(void)conn;
	return 0;
}

static char *opt_or(const PGconn *conn, const char *key, const char *dflt)
{
	const char *v;

	if (!conn)
		return NULL;
	v = opt_get(conn, key);
	return (char *)(v ? v : dflt);
}

FACE_API char *PQdb(const PGconn *conn)
{
	return opt_or(conn, "dbname", "");
}

FACE_API char *PQuser(const PGconn *conn)
{
	return opt_or(conn, "user", "");
}

/* No password is ever used: the broker holds its own. */
FACE_API char *PQpass(const PGconn *conn)
{
	return conn ? "" : NULL;
}

FACE_API char *PQhost(const PGconn *conn)
{
	return opt_or(conn, "host", "/var/run/postgresql");
}

FACE_API char *PQhostaddr(const PGconn *conn)
{
	return opt_or(conn, "hostaddr", "");
}

FACE_API char *PQport(const PGconn *conn)
{
	return opt_or(conn, "port", "5432");
}

FACE_API char *PQtty(const PGconn *conn)
{
	return conn ? "" : NULL;
}

FACE_API char *PQoptions(const PGconn *conn)
{
	return opt_or(conn, "options", "");
}

FACE_API int PQconnectionNeedsPassword(const PGconn *conn)
{
	(void)conn;
	return 0;
}

FACE_API int PQconnectionUsedPassword(const PGconn *conn)
{
	(void)conn;
	return 0;
}

FACE_API int PQclientEncoding(const PGconn *conn)
{
	if (!conn || conn->status != CONNECTION_OK)
		return -1;
	return conn->client_encoding;
}

FACE_API int PQsetClientEncoding(PGconn *conn, const char *encoding)
{
	char sql[128];
	PGresult *res;
	int ok;

	if (!conn || conn->status != CONNECTION_OK || !encoding)
		return -1;
	if (strcmp(encoding, "auto") == 0)
		return 0;
	if (face_encoding_id(encoding) < 0) {
		face_set_error(conn, "invalid client encoding \"%s\"", encoding);
		return -1;
	}
	snprintf(sql, sizeof(sql), "SET client_encoding TO '%s'", encoding);
	res = PQexec(conn, sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (ok) {
		conn->params_stale = 1;
		face_refresh_params(conn);
	}
	return ok ? 0 : -1;
}

FACE_API PGVerbosity PQsetErrorVerbosity(PGconn *conn, PGVerbosity verbosity)
{
	PGVerbosity old;

	if (!conn)
		return PQERRORS_DEFAULT;
	old = conn->verbosity;
	conn->verbosity = verbosity;
	return old;
}

FACE_API PGContextVisibility PQsetErrorContextVisibility(PGconn *conn,
							 PGContextVisibility show_context)
{
	PGContextVisibility old;

	if (!conn)
		return PQSHOW_CONTEXT_ERRORS;
	old = conn->show_context;
	conn->show_context = show_context;
	return old;
}

FACE_API PQnoticeReceiver PQsetNoticeReceiver(PGconn *conn, PQnoticeReceiver proc, void *arg)
{
	PQnoticeReceiver old;

	if (!conn)
		return NULL;
	old = conn->notice_rcv;
	if (proc) {
		conn->notice_rcv = proc;
		conn->notice_rcv_arg = arg;
	}
	return old;
}

FACE_API PQnoticeProcessor PQsetNoticeProcessor(PGconn *conn, PQnoticeProcessor proc, void *arg)
{
	PQnoticeProcessor old;

	if (!conn)
		return NULL;
	old = conn->notice_proc;
	if (proc) {
		conn->notice_proc = proc;
		conn->notice_proc_arg = arg;
	}
	return old;
}

FACE_API int PQisthreadsafe(void)
{
	return 1;
}

FACE_API int PQlibVersion(void)
{
	return 150000;
}

/* Reads back a keyword's value for libpq's own diagnostics; unused by
 * programs, kept for PQconninfo's sake. */
FACE_API pgthreadlock_t PQregisterThreadLock(pgthreadlock_t newhandler)
{
	static pgthreadlock_t handler;
	pgthreadlock_t prev = handler;

	handler = newhandler;
	return prev;
}
