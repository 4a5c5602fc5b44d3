/* libpgbroker: the agent side of a channel. One blocking statement at a time
 * per connection; the wait is a futex sleep in bounded slices, and each slice
 * that ends without an answer checks that the broker is still there. */
#include "pgbroker.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "chan.h"
#include "futex.h"
#include "proto.h"

#define PGB_API __attribute__((visibility("default")))
#define WAIT_SLICE_NS (250 * 1000000L)
#define CONNECT_TIMEOUT_S 5

struct pgb_conn {
	int status;
	int sock;
	unsigned fork_gen;       /* fork generation at connect: see on_fork */
	struct chan_shm *chan;
	uint64_t chan_size;
	uint32_t ring_size;
	struct ring req;
	struct ring resp;
	uint32_t next_id;
	char errmsg[256];
};

struct pgb_result {
	uint8_t *blob;           /* the response as received; NULL for local errors */
	struct resp_view v;
	const char **fnames;
	const char **vals;
	uint32_t *lens;
	char local_err[256];
};

/* A child of fork() shares its parent's channel; it must never use it. */
static unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void on_fork(void)
{
	__atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
}

static void install_fork_hook(void)
{
	pthread_atfork(NULL, NULL, on_fork);
}

static void set_error(pgb_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(pgb_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
}

static pgb_result *local_error(const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static pgb_result *local_error(const char *sqlstate, const char *fmt, ...)
{
	pgb_result *r = calloc(1, sizeof(*r));
	va_list ap;

	if (!r)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(r->local_err, sizeof(r->local_err), fmt, ap);
	va_end(ap);
	snprintf(r->v.head.sqlstate, sizeof(r->v.head.sqlstate), "%s", sqlstate);
	r->v.err = r->local_err;
	r->v.cmd = "";
	return r;
}

static void conn_close(pgb_conn *c)
{
	if (c->chan)
		munmap(c->chan, c->chan_size);
	c->chan = NULL;
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
}

static int recv_reply(int sock, struct reg_reply *rep, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { rep, sizeof(*rep) };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(cm), sizeof(int));
	if ((size_t)n != sizeof(*rep) || rep->magic != REG_MAGIC)
		return -EPROTO;
	return 0;
}

PGB_API pgb_conn *pgb_connect(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct reg_hello hello = { .magic = REG_MAGIC, .version = CHAN_VERSION };
	struct timeval tv = { CONNECT_TIMEOUT_S, 0 };
	struct reg_reply rep;
	pgb_conn *c;
	void *map;
	int fd = -1, err;

	pthread_once(&fork_once, install_fork_hook);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->status = PGB_CONNECTION_BAD;
	c->sock = -1;
	c->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	if (!dir || !*dir)
		dir = getenv("PGBROKER_DIR");
	if (!dir || !*dir)
		dir = "/tmp/pgbroker";
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", dir) >=
	    sizeof(sa.sun_path)) {
		set_error(c, "run directory path too long: %s", dir);
		return c;
	}
	c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->sock < 0) {
		set_error(c, "socket: %s", strerror(errno));
		return c;
	}
	setsockopt(c->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		set_error(c, "could not connect to broker at %s: %s", sa.sun_path, strerror(errno));
		goto fail;
	}
	if (send(c->sock, &hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello)) {
		set_error(c, "could not register with broker: %s", strerror(errno));
		goto fail;
	}
	err = recv_reply(c->sock, &rep, &fd);
	if (err < 0) {
		set_error(c, "no valid answer from broker at %s: %s", sa.sun_path,
			  err == -EPROTO ? "protocol error" : strerror(-err));
		goto fail;
	}
	if (rep.status != 0) {
		rep.message[sizeof(rep.message) - 1] = '\0';
		set_error(c, "broker refused the connection: %s", rep.message);
		goto fail;
	}
	if (fd < 0 || rep.ring_size < 4096 || (rep.ring_size & (rep.ring_size - 1)) ||
	    rep.chan_size != chan_size_for(rep.ring_size)) {
		set_error(c, "broker sent a malformed channel");
		goto fail;
	}
	map = mmap(NULL, rep.chan_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	fd = -1;
	if (map == MAP_FAILED) {
		set_error(c, "could not map channel: %s", strerror(errno));
		goto fail;
	}
	c->chan = map;
	c->chan_size = rep.chan_size;
	c->ring_size = rep.ring_size;
	if (c->chan->magic != CHAN_MAGIC || c->chan->version != CHAN_VERSION ||
	    c->chan->ring_size != rep.ring_size) {
		set_error(c, "channel has an unknown layout (version %u)", c->chan->version);
		goto fail;
	}
	ring_init(&c->req, &c->chan->req, chan_req_data(c->chan, c->ring_size), c->ring_size);
	ring_init(&c->resp, &c->chan->resp, chan_resp_data(c->chan, c->ring_size), c->ring_size);
	/* From here on blocking waits are ours (futex slices), not the socket's. */
	c->status = PGB_CONNECTION_OK;
	return c;
fail:
	if (fd >= 0)
		close(fd);
	conn_close(c);
	return c;
}

PGB_API int pgb_status(const pgb_conn *c)
{
	return c ? c->status : PGB_CONNECTION_BAD;
}

PGB_API const char *pgb_error_message(const pgb_conn *c)
{
	return c ? c->errmsg : "no connection";
}

PGB_API void pgb_finish(pgb_conn *c)
{
	if (!c)
		return;
	/* In a forked child only drop our references; the parent's channel
	 * and socket stay untouched (unmapping is private to this process). */
	conn_close(c);
	free(c);
}

/* Wake the broker if it sleeps on our channel. */
static void notify_broker(pgb_conn *c)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&c->chan->broker_armed, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&c->chan->broker_bell, 1, __ATOMIC_SEQ_CST);
		futex_wake(&c->chan->broker_bell);
	}
}

/* 1 when the broker has closed its end of the registration socket. */
static int broker_gone(pgb_conn *c)
{
	struct pollfd p = { .fd = c->sock, .events = POLLIN | POLLRDHUP };

	if (__atomic_load_n(&c->chan->broker_state, __ATOMIC_ACQUIRE) == BROKER_CLOSING)
		return 1;
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLIN)))
		return 1;
	return 0;
}

enum wait_for { WAIT_RESPONSE, WAIT_SPACE };

/* Sleep until the broker published a response (or freed request space).
 * Returns 0, or -1 when the broker is gone (the connection is then bad). */
static int wait_broker(pgb_conn *c, enum wait_for what, uint32_t need)
{
	struct chan_shm *ch = c->chan;

	for (;;) {
		uint32_t v;

		if (what == WAIT_RESPONSE ? ring_has_data(&c->resp)
					  : ring_space(&c->req) >= (int64_t)need)
			return 0;
		if (what == WAIT_SPACE)
			__atomic_store_n(&ch->req.need_space, 1, __ATOMIC_RELAXED);
		__atomic_store_n(&ch->agent_sleeping, 1, __ATOMIC_SEQ_CST);
		v = __atomic_load_n(&ch->agent_bell, __ATOMIC_SEQ_CST);
		if (what == WAIT_RESPONSE ? ring_has_data(&c->resp)
					  : ring_space(&c->req) >= (int64_t)need) {
			__atomic_store_n(&ch->agent_sleeping, 0, __ATOMIC_RELAXED);
			continue;
		}
		int rc = futex_wait(&ch->agent_bell, v, WAIT_SLICE_NS);
		__atomic_store_n(&ch->agent_sleeping, 0, __ATOMIC_RELAXED);
		if (rc == -ETIMEDOUT && broker_gone(c)) {
			c->status = PGB_CONNECTION_BAD;
			set_error(c, "broker gone");
			return -1;
		}
	}
}

static pgb_result *broken(pgb_conn *c, const char *why)
{
	c->status = PGB_CONNECTION_BAD;
	set_error(c, "%s", why);
	return local_error(PGB_SQLSTATE_NOT_CONNECTED, "%s", why);
}

static pgb_result *gone_error(pgb_conn *c)
{
	int closing = c->chan &&
		__atomic_load_n(&c->chan->broker_state, __ATOMIC_ACQUIRE) == BROKER_CLOSING;

	c->status = PGB_CONNECTION_BAD;
	if (closing) {
		set_error(c, "broker is shutting down");
		return local_error(PGB_SQLSTATE_SHUTTING_DOWN, "broker is shutting down");
	}
	set_error(c, "broker gone");
	return local_error(PGB_SQLSTATE_BROKER_GONE, "broker gone: the pgbroker process exited");
}

/* Stream one request blob into the request ring, frame by frame. */
static int send_blob(pgb_conn *c, const uint8_t *blob, uint64_t total, uint32_t id)
{
	uint64_t off = 0;
	uint32_t max_frame = c->ring_size / 2;

	while (off < total) {
		int64_t space = ring_space(&c->req);
		uint64_t left = total - off;
		uint32_t room, n;

		if (space < 0)
			return -EPROTO;
		room = ring_frame_room((uint32_t)space);
		if (room > max_frame)
			room = max_frame;
		/* Wait for a useful amount of room rather than dribbling. */
		if (room < left && room < c->ring_size / 8) {
			notify_broker(c);
			if (wait_broker(c, WAIT_SPACE, c->ring_size / 4) < 0)
				return -EPIPE;
			continue;
		}
		n = left < room ? (uint32_t)left : room;
		struct frame_hdr h = {
			.len = n, .type = FRAME_REQ, .id = id, .aux = (uint32_t)total,
			.flags = (off == 0 ? FRAME_FIRST : 0) | (off + n == total ? FRAME_LAST : 0),
		};
		ring_write_hdr(&c->req, &h);
		ring_write(&c->req, FRAME_HDR, blob + off, n);
		ring_publish(&c->req, n);
		off += n;
		__atomic_store_n(&c->chan->req.need_space, 0, __ATOMIC_RELAXED);
		notify_broker(c);
	}
	return 0;
}

static pgb_result *build_result(uint8_t *blob, uint64_t n)
{
	pgb_result *r = calloc(1, sizeof(*r));
	struct resp_head h;
	uint64_t cells;

	if (!r)
		return NULL;
	if (resp_parse_head(blob, n, &h) < 0)
		goto bad;
	cells = (uint64_t)h.ntuples * h.nfields;
	r->fnames = malloc(sizeof(char *) * (h.nfields + 1));
	r->vals = malloc(sizeof(char *) * (cells + 1));
	r->lens = malloc(sizeof(uint32_t) * (cells + 1));
	if (!r->fnames || !r->vals || !r->lens)
		goto bad;
	if (resp_parse(blob, n, &r->v, r->fnames, r->vals, r->lens) < 0)
		goto bad;
	r->blob = blob;
	return r;
bad:
	free(r->fnames);
	free(r->vals);
	free(r->lens);
	free(blob);
	memset(r, 0, sizeof(*r));
	snprintf(r->local_err, sizeof(r->local_err), "malformed response from broker");
	snprintf(r->v.head.sqlstate, sizeof(r->v.head.sqlstate), "%s", PGB_SQLSTATE_BAD_REQUEST);
	r->v.err = r->local_err;
	r->v.cmd = "";
	return r;
}

/* Read the frames of response `id` into one blob. */
static pgb_result *recv_response(pgb_conn *c, uint32_t id)
{
	uint8_t *blob = NULL;
	uint64_t total = 0, got = 0;

	for (;;) {
		struct frame_hdr h;
		int rc = ring_peek(&c->resp, &h);

		if (rc < 0) {
			free(blob);
			return broken(c, "response ring is corrupt");
		}
		if (rc == 0) {
			if (wait_broker(c, WAIT_RESPONSE, 0) < 0) {
				free(blob);
				return gone_error(c);
			}
			continue;
		}
		if (h.type != FRAME_RESP || h.id != id) {
			ring_consume(&c->resp, &h);  /* not ours: a stale answer */
			continue;
		}
		if (h.flags & FRAME_FIRST) {
			free(blob);
			total = h.aux;
			got = 0;
			blob = malloc(total ? total : 1);
			if (!blob)
				return broken(c, "out of memory for a response");
		}
		if (!blob || h.len > total - got) {
			free(blob);
			return broken(c, "response frames out of order");
		}
		ring_read(&c->resp, 0, blob + got, h.len);
		got += h.len;
		ring_consume(&c->resp, &h);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&c->chan->resp.need_space, __ATOMIC_RELAXED))
			notify_broker(c);
		if (h.flags & FRAME_LAST) {
			if (got != total) {
				free(blob);
				return broken(c, "response truncated");
			}
			return build_result(blob, total);
		}
	}
}

static pgb_result *exec_blob(pgb_conn *c, const char *sql, int nparams,
			     const char *const *values, uint32_t flags)
{
	uint64_t total;
	uint8_t *blob;
	uint32_t id;
	int rc;

	if (!c)
		return local_error(PGB_SQLSTATE_NOT_CONNECTED, "no connection");
	if (c->fork_gen != __atomic_load_n(&fork_gen, __ATOMIC_RELAXED))
		return local_error(PGB_SQLSTATE_NOT_CONNECTED,
				   "connection was opened by the parent process before fork(); "
				   "connect again in the child");
	if (c->status != PGB_CONNECTION_OK)
		return local_error(PGB_SQLSTATE_NOT_CONNECTED, "connection is not open: %s",
				   c->errmsg);
	if (!sql)
		return local_error(PGB_SQLSTATE_BAD_REQUEST, "statement text is NULL");
	if (nparams < 0 || (nparams > 0 && !values))
		return local_error(PGB_SQLSTATE_BAD_REQUEST, "bad parameter count %d", nparams);
	total = req_encoded_len(sql, (uint32_t)nparams, values);
	if (total == 0 || total > UINT32_MAX)
		return local_error(PGB_SQLSTATE_TOO_LARGE, "statement too large to send");
	blob = malloc(total);
	if (!blob)
		return local_error(PGB_SQLSTATE_TOO_LARGE, "out of memory encoding the statement");
	req_encode(blob, sql, (uint32_t)nparams, values, flags);
	id = ++c->next_id;
	rc = send_blob(c, blob, total, id);
	free(blob);
	if (rc == -EPIPE)
		return gone_error(c);
	if (rc < 0)
		return broken(c, "request ring is corrupt");
	return recv_response(c, id);
}

PGB_API pgb_result *pgb_exec(pgb_conn *c, const char *sql)
{
	return exec_blob(c, sql, 0, NULL, 0);
}

PGB_API pgb_result *pgb_exec_params(pgb_conn *c, const char *sql, int nparams,
				    const char *const *values)
{
	return exec_blob(c, sql, nparams, values, 0);
}

PGB_API pgb_result *pgb_exec_flags(pgb_conn *c, const char *sql, int nparams,
				   const char *const *values, int flags)
{
	if (flags & ~PGB_IDEMPOTENT)
		return local_error(PGB_SQLSTATE_BAD_REQUEST, "unknown statement flags 0x%x", flags);
	return exec_blob(c, sql, nparams, values,
			 (flags & PGB_IDEMPOTENT) ? REQ_IDEMPOTENT : 0);
}

PGB_API int pgb_result_ok(const pgb_result *r)
{
	return r && r->v.head.ok;
}

PGB_API const char *pgb_result_error(const pgb_result *r)
{
	return r ? r->v.err : "no result";
}

PGB_API const char *pgb_sqlstate(const pgb_result *r)
{
	return r ? r->v.head.sqlstate : PGB_SQLSTATE_NOT_CONNECTED;
}

PGB_API int pgb_ntuples(const pgb_result *r)
{
	return r ? (int)r->v.head.ntuples : 0;
}

PGB_API int pgb_nfields(const pgb_result *r)
{
	return r ? (int)r->v.head.nfields : 0;
}

PGB_API const char *pgb_fname(const pgb_result *r, int col)
{
	if (!r || col < 0 || (uint32_t)col >= r->v.head.nfields)
		return NULL;
	return r->fnames[col];
}

static int cell(const pgb_result *r, int row, int col, uint64_t *i)
{
	if (!r || row < 0 || col < 0 || (uint32_t)row >= r->v.head.ntuples ||
	    (uint32_t)col >= r->v.head.nfields)
		return -1;
	*i = (uint64_t)row * r->v.head.nfields + (uint32_t)col;
	return 0;
}

PGB_API const char *pgb_getvalue(const pgb_result *r, int row, int col)
{
	uint64_t i;

	if (cell(r, row, col, &i) < 0)
		return NULL;
	return r->vals[i] ? r->vals[i] : "";
}

PGB_API int pgb_getisnull(const pgb_result *r, int row, int col)
{
	uint64_t i;

	if (cell(r, row, col, &i) < 0)
		return 1;
	return r->vals[i] == NULL;
}

PGB_API int pgb_getlength(const pgb_result *r, int row, int col)
{
	uint64_t i;

	if (cell(r, row, col, &i) < 0)
		return 0;
	return (int)r->lens[i];
}

PGB_API long long pgb_cmd_tuples(const pgb_result *r)
{
	return r ? (long long)r->v.head.cmd_tuples : 0;
}

PGB_API const char *pgb_cmd_status(const pgb_result *r)
{
	return r ? r->v.cmd : "";
}

PGB_API void pgb_clear(pgb_result *r)
{
	if (!r)
		return;
	free(r->blob);
	free(r->fnames);
	free(r->vals);
	free(r->lens);
	free(r);
}
