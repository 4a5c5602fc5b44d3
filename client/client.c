/* libpgbroker: the agent side of a channel. Statements go out as framed
 * requests; answers come back in the order the broker finishes them and are
 * matched by request id. Blocking waits are futex sleeps in bounded slices;
 * a slice that ends without an answer checks that the broker is still
 * there. The eventfd behind pgb_socket is signalled only when armed. */
#include "clock.h"
#include "pgbroker.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "chan.h"
#include "errform.h"
#include "futex.h"
#include "proto.h"
#include "rundir.h"

#define PGB_API __attribute__((visibility("default")))
#define WAIT_SLICE_NS (250 * 1000000L)
#define SPIN_MAX_NS 40000
#define SPIN_MIN_NS 2000
#define CONNECT_TIMEOUT_S 5

/* A finished result nobody has asked for yet (async, or behind a batch). */
struct stash {
	struct stash *next;
	uint32_t id;
	pgb_result *r;
};

/* A request in flight: its id and when it left, for the per-agent stats. */
struct flight {
	uint32_t id;
	int64_t t0;
};

struct pgb_conn {
	struct pgb_conn *next, *prev; /* the list of open connections: see on_fork */
	int status;
	int in_txn;              /* the last answer said: inside a transaction */
	int sock;
	int efd;                 /* readable when a result is ready and fd_armed was set */
	int bfd;                 /* the broker's bell eventfd (CHAN_BELL_EVENTFD), else -1 */
	int pfd;                 /* pgb_socket: an epoll set of efd and sock, so that
				    it also becomes readable when the broker dies */
	unsigned fork_gen;       /* fork generation at connect: see on_fork */
	struct chan_shm *chan;
	uint64_t chan_size;
	uint32_t ring_size;
	struct ring req;
	struct ring resp;
	uint32_t next_id;
	struct stash *stash, *stash_tail;
	/* A response whose frames are still arriving: kept between calls, so
	 * that pgb_try_result never waits for the rest. */
	struct chan_rx part;
	struct flight *flights;  /* requests whose final response is outstanding */
	uint32_t nflights, capflights;
	struct pgb_conn_stats stats;
	int64_t spin_ns;         /* adaptive spin budget before sleeping */
	int spin_skips;
	uint64_t rtt_sum_ns;
	char errmsg[512];
	/* for pgb_reset: where the broker is, and whom it must run as */
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char require[256];       /* "": $PGBROKER_REQUIRE_UID, else ours or root */
};

#define RESULT_LIVE 0x6c697665u
#define RESULT_DEAD 0x64656164u

struct pgb_result {
	uint8_t *blob;           /* the response as received; NULL for local errors */
	char pad[32];            /* keeps magic clear of the allocator's free-list words */
	uint32_t magic;          /* RESULT_LIVE; RESULT_DEAD once cleared (debug check) */
	struct resp_view v;
	const char **fnames;
	const char **vals;
	uint32_t *lens;
	char local_err[256];
	char *primary;           /* an error without fields: its text alone (malloc) */
};

/* A child of fork() shares its parent's channel; it must never use it.
 * Nor may it keep the parent's registration socket open: its hang-up is
 * how the broker learns that the parent died, so a child that outlived
 * its parent would keep the parent's transaction open. The child closes
 * its copies of every connection's descriptors and mapping at once. */
static unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static pgb_conn *conns;

static void conn_close(pgb_conn *c);

static void fork_prepare(void)
{
	pthread_mutex_lock(&conns_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&conns_lock);
}

static void on_fork(void)
{
	static const char why[] = "connection was opened by the parent process before fork(); "
				  "connect again in the child";

	__atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
	for (pgb_conn *c = conns; c; c = c->next) {
		conn_close(c);  /* our copies only: the parent's stay open */
		c->status = PGB_CONNECTION_BAD;
		memcpy(c->errmsg, why, sizeof(why));
	}
	pthread_mutex_unlock(&conns_lock);
}

static void install_fork_hook(void)
{
	pthread_atfork(fork_prepare, fork_parent, on_fork);
}

static void conns_add(pgb_conn *c)
{
	pthread_mutex_lock(&conns_lock);
	c->prev = NULL;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	pthread_mutex_unlock(&conns_lock);
}

static void conns_del(pgb_conn *c)
{
	pthread_mutex_lock(&conns_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&conns_lock);
}

/* 1 in a child of the process that opened c. */
static int inherited(const pgb_conn *c)
{
	return c->fork_gen != __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
}

static void set_error(pgb_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(pgb_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
}

/* An error without PostgreSQL's fields (the broker's own, or one made
 * here): keep its text without "ERROR:  " and the newline, the primary
 * message pgb_result_error_field answers. Out of memory it answers NULL. */
static void keep_primary(pgb_result *r)
{
	const char *text;
	int len;

	if (r->v.head.ok || r->v.diag_len || !r->v.err)
		return;
	text = errform_text(r->v.err, &len);
	r->primary = strndup(text, (size_t)len);
}

static pgb_result *local_error(const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static pgb_result *local_error(const char *sqlstate, const char *fmt, ...)
{
	pgb_result *r = calloc(1, sizeof(*r));
	va_list ap;

	if (!r)
		return NULL;
	r->magic = RESULT_LIVE;
	va_start(ap, fmt);
	errform_v(r->local_err, sizeof(r->local_err), fmt, ap);
	va_end(ap);
	snprintf(r->v.head.sqlstate, sizeof(r->v.head.sqlstate), "%s", sqlstate);
	r->v.err = r->local_err;
	r->v.cmd = "";
	keep_primary(r);
	return r;
}

static void conn_close(pgb_conn *c)
{
	if (c->chan)
		munmap(c->chan, c->chan_size);
	c->chan = NULL;
	if (c->pfd >= 0)
		close(c->pfd);
	c->pfd = -1;
	if (c->efd >= 0)
		close(c->efd);
	c->efd = -1;
	if (c->bfd >= 0)
		close(c->bfd);
	c->bfd = -1;
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
}

/* The reply and its fds: the channel memfd, the eventfd, the bell eventfd
 * (only from a broker on epoll); -1 for each that did not come. */
static int recv_reply(int sock, struct reg_reply *rep, int *fd, int *efd, int *bfd)
{
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = { rep, sizeof(*rep) };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	ssize_t n;

	*fd = *efd = *bfd = -1;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int fds[3] = { -1, -1, -1 };
			size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			memcpy(fds, CMSG_DATA(cm), (nfd > 3 ? 3 : nfd) * sizeof(int));
			*fd = fds[0];
			*efd = fds[1];
			*bfd = fds[2];
		}
	if ((size_t)n != sizeof(*rep) || rep->magic != REG_MAGIC)
		return -EPROTO;
	return 0;
}

/* Who listens on the socket, before a byte goes to it: a broker of the
 * required uid (or ours, or root) in a run directory of its own. */
static int check_peer(pgb_conn *c, const char *dir, const char *sock, const char *require)
{
	struct ucred cr = { .uid = (uid_t)-1 };
	socklen_t len = sizeof(cr);
	char what[160], why[sizeof(c->errmsg)];

	if (getsockopt(c->sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		set_error(c, "cannot tell who the broker at %s is: %s", sock, strerror(errno));
		return -1;
	}
	snprintf(what, sizeof(what), "broker at %s", sock);
	if (rundir_check_peer(cr.uid, require, dir, what, why, sizeof(why)) < 0) {
		set_error(c, "%s", why);
		return -1;
	}
	return 0;
}

/* Register with the broker of c->dir (checked against c->require) and map
 * the channel it gives us: on success c is PGB_CONNECTION_OK, else it is
 * left closed with the reason in errmsg. c has no descriptors or mapping
 * open on entry. */
static void conn_open(pgb_conn *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct reg_hello hello = { .magic = REG_MAGIC, .version = CHAN_VERSION,
				   .flags = REG_F_BELL_EVENTFD };
	struct timeval tv = { CONNECT_TIMEOUT_S, 0 };
	struct reg_reply rep;
	struct stat st;
	void *map;
	ssize_t sent;
	int fd = -1, err, send_err = 0;

	c->status = PGB_CONNECTION_BAD;
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", c->dir) >=
	    sizeof(sa.sun_path)) {
		set_error(c, "run directory path too long: %s", c->dir);
		return;
	}
	c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->sock < 0) {
		set_error(c, "socket: %s", strerror(errno));
		return;
	}
	setsockopt(c->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		set_error(c, "could not connect to broker at %s: %s", sa.sun_path, strerror(errno));
		goto fail;
	}
	if (check_peer(c, c->dir, sa.sun_path, c->require) < 0)
		goto fail;
	/* A broker that refuses us (not allowed, full, shutting down) answers
	 * and closes at once: our hello may then meet a closed socket while
	 * the refusal still waits to be read. */
	sent = send(c->sock, &hello, sizeof(hello), MSG_NOSIGNAL);
	if (sent != (ssize_t)sizeof(hello))
		send_err = sent < 0 ? errno : EPIPE;
	err = recv_reply(c->sock, &rep, &fd, &c->efd, &c->bfd);
	if (err < 0 && send_err) {
		set_error(c, "could not register with broker: %s", strerror(send_err));
		goto fail;
	}
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
	/* A memfd shorter than announced would be SIGBUS at the first touch
	 * past its end. */
	if (fd < 0 || c->efd < 0 || rep.ring_size < 4096 || (rep.ring_size & (rep.ring_size - 1)) ||
	    rep.chan_size != chan_size_for(rep.ring_size) || fstat(fd, &st) < 0 ||
	    (uint64_t)st.st_size < rep.chan_size) {
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
	/* The bell the broker listens to: its futex word, or (epoll) the
	 * eventfd that came with the channel. */
	switch (__atomic_load_n(&c->chan->bell_kind, __ATOMIC_ACQUIRE)) {
	case CHAN_BELL_FUTEX:
		if (c->bfd >= 0)
			close(c->bfd);
		c->bfd = -1;
		break;
	case CHAN_BELL_EVENTFD:
		if (c->bfd >= 0)
			break;
		/* fall through */
	default:
		set_error(c, "broker sent a malformed channel (doorbell)");
		goto fail;
	}
	c->pfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->pfd < 0 ||
	    epoll_ctl(c->pfd, EPOLL_CTL_ADD, c->efd, &(struct epoll_event){ .events = EPOLLIN }) < 0 ||
	    epoll_ctl(c->pfd, EPOLL_CTL_ADD, c->sock,
		      &(struct epoll_event){ .events = EPOLLIN | EPOLLRDHUP }) < 0) {
		set_error(c, "could not set up the connection's pollable fd: %s", strerror(errno));
		goto fail;
	}
	ring_init(&c->req, &c->chan->req, chan_req_data(c->chan, c->ring_size), c->ring_size);
	ring_init(&c->resp, &c->chan->resp, chan_resp_data(c->chan, c->ring_size), c->ring_size);
	/* From here on blocking waits are ours (futex slices), not the socket's. */
	c->status = PGB_CONNECTION_OK;
	c->errmsg[0] = '\0';
	return;
fail:
	if (fd >= 0)
		close(fd);
	conn_close(c);
}

PGB_API pgb_conn *pgb_connect(const char *dir)
{
	return pgb_connect_peer(dir, NULL);
}

PGB_API pgb_conn *pgb_connect_peer(const char *dir, const char *require_uid)
{
	pgb_conn *c;
	char dflt[256];

	pthread_once(&fork_once, install_fork_hook);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->status = PGB_CONNECTION_BAD;
	c->sock = -1;
	c->efd = -1;
	c->bfd = -1;
	c->pfd = -1;
	c->spin_ns = SPIN_MAX_NS / 4;
	c->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	conns_add(c);
	dir = rundir_resolve(dir, dflt, sizeof(dflt));
	if ((size_t)snprintf(c->dir, sizeof(c->dir), "%s", dir) >= sizeof(c->dir)) {
		set_error(c, "run directory path too long: %s", dir);
		return c;
	}
	if ((size_t)snprintf(c->require, sizeof(c->require), "%s", require_uid ? require_uid : "") >=
	    sizeof(c->require)) {
		set_error(c, "required uid too long: %.64s...", require_uid);
		return c;
	}
	conn_open(c);
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

static void part_drop(pgb_conn *c)
{
	chan_rx_reset(&c->part);
}

static void stash_drop(pgb_conn *c)
{
	while (c->stash) {
		struct stash *st = c->stash;

		c->stash = st->next;
		pgb_clear(st->r);
		free(st);
	}
	c->stash_tail = NULL;
}

PGB_API void pgb_finish(pgb_conn *c)
{
	if (!c)
		return;
	/* In a forked child only drop our references; the parent's channel
	 * and socket stay untouched (unmapping is private to this process). */
	if (c->chan && !inherited(c))
		chan_say_bye(c->chan);
	conns_del(c);
	conn_close(c);
	part_drop(c);
	stash_drop(c);
	free(c->flights);
	free(c);
}

/* Wake the broker if it sleeps on our channel: the futex word its
 * io_uring loop waits on, or the eventfd its epoll loop polls. */
static void notify_broker(pgb_conn *c)
{
	if (!chan_bell_ring(&c->chan->broker_bell, &c->chan->broker_armed))
		return;
	if (c->bfd < 0) {
		futex_wake(&c->chan->broker_bell);
	} else {
		static const uint64_t one = 1;

		(void)!write(c->bfd, &one, sizeof(one));
	}
}

/* 1 when the broker has closed its end of the registration socket. */
static int broker_gone(pgb_conn *c)
{
	struct pollfd p = { .fd = c->sock, .events = POLLIN | POLLRDHUP };

	if (chan_closing(c->chan))
		return 1;
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLIN)))
		return 1;
	return 0;
}

enum wait_for { WAIT_RESPONSE, WAIT_SPACE };

/* Waiting for request space ends on a response too: the broker may be
 * waiting for us to make room in the response ring before it reads on. */
static int wait_done(pgb_conn *c, enum wait_for what, uint32_t need)
{
	if (what == WAIT_RESPONSE)
		return ring_has_data(&c->resp);
	return ring_space(&c->req) >= (int64_t)need || ring_has_data(&c->resp);
}

/* Spin briefly for an answer about to arrive before paying for a futex
 * sleep and wake-up; the budget adapts: it grows while spins succeed and
 * halves when they fail, so a loaded machine (answers take longer than a
 * spin) stops spinning and leaves the CPU to PostgreSQL and the broker. */
static int spin_for_response(pgb_conn *c)
{
	int64_t start, limit = c->spin_ns;

	if (limit < SPIN_MIN_NS) {
		/* Now and then try again, in case the load went down. */
		if (++c->spin_skips < 64)
			return 0;
		c->spin_skips = 0;
		limit = SPIN_MIN_NS;
	}
	start = clock_ns();
	do {
		for (int i = 0; i < 64; i++) {
			if (ring_has_data(&c->resp)) {
				c->spin_ns = c->spin_ns * 2 + SPIN_MIN_NS;
				if (c->spin_ns > SPIN_MAX_NS)
					c->spin_ns = SPIN_MAX_NS;
				return 1;
			}
			__builtin_ia32_pause();
		}
	} while (clock_ns() - start < limit);
	c->spin_ns /= 2;
	return 0;
}

/* Sleep until the broker published a response (or freed request space).
 * Returns 0, or -1 when the broker is gone (the connection is then bad). */
static int wait_broker(pgb_conn *c, enum wait_for what, uint32_t need)
{
	struct chan_shm *ch = c->chan;

	if (what == WAIT_RESPONSE && spin_for_response(c))
		return 0;
	for (;;) {
		uint32_t v;

		if (wait_done(c, what, need))
			return 0;
		if (what == WAIT_SPACE)
			chan_want_space(&ch->req);
		v = chan_bell_arm(&ch->agent_sleeping, &ch->agent_bell);
		if (wait_done(c, what, need)) {
			chan_bell_disarm(&ch->agent_sleeping);
			continue;
		}
		int rc = futex_wait(&ch->agent_bell, v, WAIT_SLICE_NS);
		chan_bell_disarm(&ch->agent_sleeping);
		/* Check on EINTR too: a process that takes a signal more often
		 * than once a slice would never see a slice time out. */
		if ((rc == -ETIMEDOUT || rc == -EINTR) && broker_gone(c)) {
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

/* The broker went away: the connection is bad. 1 when it said goodbye. */
static int mark_gone(pgb_conn *c)
{
	int closing = c->chan && chan_closing(c->chan);

	c->status = PGB_CONNECTION_BAD;
	set_error(c, closing ? "broker shut down" : "broker gone");
	return closing;
}

static pgb_result *gone_error(pgb_conn *c)
{
	if (mark_gone(c)) {
		/* Not PB005 (refused, never run): a statement already handed to
		 * the broker may have run before it closed. */
		return local_error(PGB_SQLSTATE_BROKER_GONE,
				   "broker shut down before answering; the statement may or "
				   "may not have run");
	}
	return local_error(PGB_SQLSTATE_BROKER_GONE, "broker gone: the pgbroker process exited");
}

static int drain_responses(pgb_conn *c);

/* Stream one request blob into the request ring, frame by frame. While
 * the ring is full, take in finished responses (like libpq reading while
 * it flushes): a broker whose response ring is full reads no requests. */
static int send_blob(pgb_conn *c, const uint8_t *blob, uint64_t total, uint32_t id)
{
	uint64_t off = 0;

	while (off < total) {
		struct frame_hdr h = { .type = FRAME_REQ, .id = id };
		int64_t n = chan_frame_next(&c->req, &h, total, off, NULL);

		if (n < 0)
			return -EPROTO;
		if (n == 0) {
			int rc;

			notify_broker(c);
			if ((rc = drain_responses(c)) < 0)
				return rc;
			if (wait_broker(c, WAIT_SPACE, c->ring_size / 4) < 0)
				return -EPIPE;
			continue;
		}
		ring_write(&c->req, FRAME_HDR, blob + off, (uint32_t)n);
		chan_frame_publish(&c->req, &h);
		off += (uint64_t)n;
		chan_space_ok(&c->chan->req);
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
	r->magic = RESULT_LIVE;
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
	keep_primary(r);
	return r;
bad:
	free(r->fnames);
	free(r->vals);
	free(r->lens);
	free(blob);
	memset(r, 0, sizeof(*r));
	r->magic = RESULT_LIVE;
	snprintf(r->local_err, sizeof(r->local_err), ERRFORM_PREFIX "malformed response from broker\n");
	snprintf(r->v.head.sqlstate, sizeof(r->v.head.sqlstate), "%s", PGB_SQLSTATE_BAD_REQUEST);
	r->v.err = r->local_err;
	r->v.cmd = "";
	keep_primary(r);
	return r;
}

/* Read the frames of the next response into one blob and build it. With
 * block == 0, returns NULL at once when nothing has arrived (or only part of
 * a response: the broker always finishes a response it has started, so we
 * then wait for the rest). */
static pgb_result *recv_next(pgb_conn *c, int block, uint32_t *id)
{
	*id = 0;
	for (;;) {
		enum chan_rx_rc rc = chan_rx_frame(&c->part, &c->resp, FRAME_RESP, 0, UINT64_MAX);
		pgb_result *r;

		switch (rc) {
		case CHAN_RX_EMPTY:
			if (!block)
				return NULL;
			if (wait_broker(c, WAIT_RESPONSE, 0) < 0) {
				part_drop(c);
				return gone_error(c);
			}
			continue;
		case CHAN_RX_PART:
		case CHAN_RX_DONE:
			break;
		case CHAN_RX_CORRUPT:
			return broken(c, "response ring is corrupt");
		case CHAN_RX_TYPE:
			return broken(c, "unexpected frame in the response ring");
		case CHAN_RX_NOMEM:
			return broken(c, "out of memory for a response");
		case CHAN_RX_SHORT:
			return broken(c, "response truncated");
		default:
			return broken(c, "response frames out of order");
		}
		if (chan_space_wanted(&c->chan->resp))
			notify_broker(c);
		if (rc != CHAN_RX_DONE)
			continue;
		*id = c->part.id;
		r = build_result(chan_rx_take(&c->part), c->part.total);
		if (r)
			c->in_txn = (r->v.head.flags & RESP_IN_TXN) != 0;
		return r;
	}
}


static int flight_add(pgb_conn *c, uint32_t id)
{
	if (c->nflights == c->capflights) {
		uint32_t cap = c->capflights ? 2 * c->capflights : 16;
		struct flight *f = realloc(c->flights, cap * sizeof(*f));

		if (!f)
			return -1;
		c->flights = f;
		c->capflights = cap;
	}
	c->flights[c->nflights++] = (struct flight){ .id = id, .t0 = clock_ns() };
	return 0;
}

/* The final response for id arrived: count it. */
/* Where id is among the flights, -1 when it is not in flight. */
static int flight_find(const pgb_conn *c, uint32_t id)
{
	for (uint32_t i = 0; i < c->nflights; i++)
		if (c->flights[i].id == id)
			return (int)i;
	return -1;
}

static void flight_drop(pgb_conn *c, int i)
{
	c->flights[i] = c->flights[--c->nflights];
}

static void flight_done(pgb_conn *c, uint32_t id, const pgb_result *r)
{
	int i = flight_find(c, id);
	uint64_t rtt;

	if (i < 0)
		return;
	rtt = (uint64_t)(clock_ns() - c->flights[i].t0);
	c->stats.total++;
	if (!pgb_result_ok(r))
		c->stats.failed++;
	c->rtt_sum_ns += rtt;
	if (rtt / 1000 > c->stats.max_rtt_us)
		c->stats.max_rtt_us = rtt / 1000;
	flight_drop(c, i);
}

static int is_final(const pgb_result *r)
{
	return !(r->v.head.flags & RESP_MORE);
}

static void stash_push(pgb_conn *c, uint32_t id, pgb_result *r)
{
	struct stash *st = malloc(sizeof(*st));

	if (!st) {
		pgb_clear(r);
		return;
	}
	*st = (struct stash){ .id = id, .r = r };
	if (c->stash_tail)
		c->stash_tail->next = st;
	else
		c->stash = st;
	c->stash_tail = st;
}

/* Stash every response that has arrived, without waiting for more. 0, or
 * -EPIPE (broker gone) / -EPROTO (corrupt ring) when the connection broke. */
static int drain_responses(pgb_conn *c)
{
	for (;;) {
		uint32_t got;
		pgb_result *r = recv_next(c, 0, &got);

		if (!r)
			return 0;
		if (c->status != PGB_CONNECTION_OK) {
			int gone = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_BROKER_GONE) == 0;

			pgb_clear(r);
			return gone ? -EPIPE : -EPROTO;
		}
		if (is_final(r))
			flight_done(c, got, r);
		stash_push(c, got, r);
	}
}

static pgb_result *stash_take(pgb_conn *c, int any, uint32_t id, uint32_t *got)
{
	struct stash **pp = &c->stash, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->next) {
		struct stash *st = *pp;
		pgb_result *r;

		if (!any && st->id != id)
			continue;
		*pp = st->next;
		if (c->stash_tail == st)
			c->stash_tail = prev;
		r = st->r;
		*got = st->id;
		free(st);
		return r;
	}
	return NULL;
}

/* The next response for id (any id when any is set), stashing others. A
 * broken connection answers every outstanding id with its error. */
static pgb_result *wait_result(pgb_conn *c, int any, uint32_t id, int block, uint32_t *got)
{
	if (inherited(c)) {
		/* the parent's results, not the child's */
		part_drop(c);
		stash_drop(c);
	}
	for (;;) {
		pgb_result *r = stash_take(c, any, id, got);

		if (r)
			return r;
		if (c->status != PGB_CONNECTION_OK) {
			int sent;

			*got = id;
			if (any && c->nflights)
				*got = c->flights[0].id;
			sent = flight_find(c, *got) >= 0;
			if (sent && !inherited(c))
				/* It reached the broker, which may have run it. */
				r = local_error(PGB_SQLSTATE_BROKER_GONE,
						"connection lost before the answer (%s); the "
						"statement may or may not have run", c->errmsg);
			else
				r = local_error(PGB_SQLSTATE_NOT_CONNECTED,
						"connection is not open: %s", c->errmsg);
			if (r && sent)
				flight_done(c, *got, r);
			return r;
		}
		if (!any && c->nflights == 0)
			return local_error(PGB_SQLSTATE_BAD_REQUEST, "no such statement in flight");
		r = recv_next(c, block, got);
		if (!r)
			return NULL;
		if (!r->blob && *got == 0)
			/* our own error: the connection broke while waiting */
			*got = any ? (c->nflights ? c->flights[0].id : 0) : id;
		if (is_final(r))
			flight_done(c, *got, r);
		if (any || *got == id)
			return r;
		stash_push(c, *got, r);
	}
}

static pgb_result *check_usable(pgb_conn *c)
{
	if (!c)
		return local_error(PGB_SQLSTATE_NOT_CONNECTED, "no connection");
	if (inherited(c))
		return local_error(PGB_SQLSTATE_NOT_CONNECTED,
				   "connection was opened by the parent process before fork(); "
				   "connect again in the child");
	if (c->status != PGB_CONNECTION_OK)
		return local_error(PGB_SQLSTATE_NOT_CONNECTED, "connection is not open: %s",
				   c->errmsg);
	return NULL;
}

/* Encode and send one request; returns its id, or 0 with *err set. */
static uint32_t send_request(pgb_conn *c, const char *sql, int nparams,
			     const char *const *values, uint32_t flags,
			     const struct req_stmt *batch, uint32_t nbatch, pgb_result **err)
{
	uint64_t total;
	uint8_t *blob;
	uint32_t id;
	int rc;

	if ((*err = check_usable(c)))
		return 0;
	if (!batch && !sql) {
		*err = local_error(PGB_SQLSTATE_BAD_REQUEST, "statement text is NULL");
		return 0;
	}
	if (nparams < 0 || (nparams > 0 && !values)) {
		*err = local_error(PGB_SQLSTATE_BAD_REQUEST, "bad parameter count %d", nparams);
		return 0;
	}
	if ((unsigned)nparams > REQ_MAX_PARAMS) {
		*err = local_error(PGB_SQLSTATE_BAD_REQUEST, "too many parameters: %d (at most %u)",
				   nparams, REQ_MAX_PARAMS);
		return 0;
	}
	total = batch ? batch_encoded_len(batch, nbatch)
		      : req_encoded_len(sql, (uint32_t)nparams, values);
	if (total == 0 || total > UINT32_MAX) {
		*err = local_error(batch ? PGB_SQLSTATE_BAD_REQUEST : PGB_SQLSTATE_TOO_LARGE,
				   batch ? "batch is empty, has a NULL statement or is too large"
					 : "statement too large to send");
		return 0;
	}
	blob = malloc(total);
	if (!blob || flight_add(c, 0) < 0) {
		free(blob);
		*err = local_error(PGB_SQLSTATE_TOO_LARGE, "out of memory encoding the statement");
		return 0;
	}
	if (batch)
		batch_encode(blob, batch, nbatch, flags);
	else
		req_encode(blob, sql, (uint32_t)nparams, values, flags);
	id = ++c->next_id;
	if (id == 0)
		id = ++c->next_id;
	c->flights[c->nflights - 1].id = id;
	rc = send_blob(c, blob, total, id);
	free(blob);
	if (rc < 0) {
		/* Not necessarily the last one: responses taken in meanwhile
		 * moved the flights around. */
		int i = flight_find(c, id);

		if (i >= 0)
			flight_drop(c, i);
		if (rc == -EPIPE)
			*err = gone_error(c);
		else if (c->status != PGB_CONNECTION_OK)
			*err = local_error(PGB_SQLSTATE_NOT_CONNECTED, "%s", c->errmsg);
		else
			*err = broken(c, "request ring is corrupt");
		return 0;
	}
	return id;
}

static pgb_result *exec_blob(pgb_conn *c, const char *sql, int nparams,
			     const char *const *values, uint32_t flags)
{
	pgb_result *err;
	uint32_t id = send_request(c, sql, nparams, values, flags, NULL, 0, &err), got;

	if (!id)
		return err;
	return wait_result(c, 0, id, 1, &got);
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

PGB_API long long pgb_send(pgb_conn *c, const char *sql, int nparams,
			   const char *const *values, int flags)
{
	pgb_result *err;
	uint32_t rf = 0, id;

	if (flags & ~(PGB_IDEMPOTENT | PGB_INDEPENDENT)) {
		if (c)
			set_error(c, "unknown statement flags 0x%x", flags);
		return -1;
	}
	if (flags & PGB_IDEMPOTENT)
		rf |= REQ_IDEMPOTENT;
	if (flags & PGB_INDEPENDENT)
		rf |= REQ_INDEPENDENT;
	id = send_request(c, sql, nparams, values, rf, NULL, 0, &err);
	if (!id) {
		if (c) {
			int len;
			const char *text = errform_text(pgb_result_error(err), &len);

			set_error(c, "%.*s", len, text);
		}
		pgb_clear(err);
		return -1;
	}
	return id;
}

/* pgb_reset when the broker is gone (or c came through fork()): register
 * anew with the broker of the same run directory. Statements in flight on
 * the old channel get no answer any more; results already received stay.
 * pgb_socket keeps its number when it can (but is a new file: register it
 * again where it was registered). */
static int reconnect(pgb_conn *c)
{
	int keep = c->pfd;

	if (inherited(c))
		stash_drop(c);	/* the parent's */
	else if (c->chan)
		__atomic_store_n(&c->chan->agent_bye, 1, __ATOMIC_RELEASE);
	c->pfd = -1;
	conn_close(c);
	part_drop(c);
	c->nflights = 0;
	c->in_txn = 0;
	c->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	conn_open(c);
	if (c->status == PGB_CONNECTION_OK && keep >= 0 && dup3(c->pfd, keep, O_CLOEXEC) == keep) {
		close(c->pfd);
		c->pfd = keep;
	} else if (keep >= 0) {
		close(keep);
	}
	return c->status == PGB_CONNECTION_OK ? 0 : -1;
}

PGB_API int pgb_reset(pgb_conn *c)
{
	pgb_result *r;
	uint32_t id, got;
	int ok;

	if (!c)
		return -1;
	if (c->status == PGB_CONNECTION_OK && !inherited(c)) {
		/* In its turn after what is in flight: the broker rolls back,
		 * discards and unpins, and forgets what was lost. */
		id = send_request(c, "", 0, NULL, REQ_RESET, NULL, 0, &r);
		if (id)
			r = wait_result(c, 0, id, 1, &got);
		ok = pgb_result_ok(r);
		if (!ok && c->status == PGB_CONNECTION_OK) {
			set_error(c, "pgb_reset: %s", r ? pgb_result_error(r) : "out of memory");
			pgb_clear(r);
			return -1;
		}
		pgb_clear(r);
		if (ok)
			return 0;
	}
	return reconnect(c);
}

static pgb_result *next_result(pgb_conn *c, long long *id, int block)
{
	uint32_t got = 0;
	pgb_result *r;

	if (id)
		*id = 0;
	if (!c || (c->nflights == 0 && !c->stash))
		return NULL;
	r = wait_result(c, 1, 0, block, &got);
	if (r && id)
		*id = got;
	return r;
}

PGB_API pgb_result *pgb_get_result(pgb_conn *c, long long *id)
{
	return next_result(c, id, 1);
}

PGB_API pgb_result *pgb_try_result(pgb_conn *c, long long *id)
{
	pgb_result *r;
	uint64_t n;
	int signalled, was_armed;

	if (!c || c->status != PGB_CONNECTION_OK)
		return next_result(c, id, 0);
	/* Clear the eventfd first, then look: a result published after the
	 * look finds fd_armed set and signals the fd again. */
	was_armed = chan_fd_armed(c->chan);
	signalled = read(c->efd, &n, sizeof(n)) == (ssize_t)sizeof(n);
	r = next_result(c, id, 0);
	if (r)
		return r;
	chan_fd_arm(c->chan);
	if (ring_has_data(&c->resp))
		return next_result(c, id, 0);
	/* Armed since the last call and still not signalled: perhaps woken
	 * by the socket's hang-up. Then what is in flight gets its answer now
	 * (PB003), not never. (Only then: the check costs a system call.) */
	if (was_armed && !signalled && broker_gone(c)) {
		mark_gone(c);
		return next_result(c, id, 0);
	}
	return NULL;
}

PGB_API int pgb_socket(const pgb_conn *c)
{
	return c && c->status == PGB_CONNECTION_OK ? c->pfd : -1;
}

PGB_API int pgb_in_flight(const pgb_conn *c)
{
	return c ? (int)c->nflights : 0;
}

int pgbi_in_transaction(const pgb_conn *c)
{
	return c && c->status == PGB_CONNECTION_OK && c->in_txn;
}

static void fill_errors(pgb_result **results, int from, int n, const pgb_result *why)
{
	int len;
	const char *text = errform_text(pgb_result_error(why), &len);

	for (int i = from; i < n; i++)
		results[i] = local_error(pgb_sqlstate(why), "not run: %.*s", len, text);
}

PGB_API int pgb_batch(pgb_conn *c, const struct pgb_stmt *stmts, int n, pgb_result **results)
{
	struct req_stmt *rs;
	pgb_result *err;
	uint32_t id, got;
	int i, ok = 1;

	if (!results || n <= 0 || !stmts || (unsigned)n > REQ_MAX_BATCH) {
		if (c)
			set_error(c, "pgb_batch: need 1..%u statements and a results array",
				  REQ_MAX_BATCH);
		return -1;
	}
	/* The batch is one transaction: the broker refuses one that would
	 * begin or end a transaction inside (PB006, nothing run), since only
	 * its parser can tell. */
	rs = calloc((size_t)n, sizeof(*rs));
	if (!rs) {
		fill_errors(results, 0, n, &(pgb_result){ .v = { .err = "out of memory",
								  .head.sqlstate = PGB_SQLSTATE_TOO_LARGE } });
		return -1;
	}
	for (i = 0; i < n; i++) {
		rs[i].sql = stmts[i].sql;
		rs[i].nparams = stmts[i].nparams > 0 ? (uint32_t)stmts[i].nparams : 0;
		rs[i].values = stmts[i].values;
		if (stmts[i].nparams < 0 || (stmts[i].nparams > 0 && !stmts[i].values))
			rs[i].sql = NULL;
	}
	id = send_request(c, NULL, 0, NULL, 0, rs, (uint32_t)n, &err);
	free(rs);
	if (!id) {
		results[0] = err;
		fill_errors(results, 1, n, err);
		return -1;
	}
	for (i = 0; i < n; i++) {
		results[i] = wait_result(c, 0, id, 1, &got);
		if (!pgb_result_ok(results[i]))
			ok = 0;
		if (!results[i] || is_final(results[i]))
			break;
	}
	/* The broker answered the whole batch with one error. */
	if (i < n - 1)
		fill_errors(results, i + 1, n, results[i]);
	return ok ? 0 : -1;
}

PGB_API int pgb_parallel(pgb_conn *c, const struct pgb_stmt *stmts, int n, pgb_result **results)
{
	long long *ids;
	int ok = 1;

	if (!results || n <= 0 || !stmts) {
		if (c)
			set_error(c, "pgb_parallel: need at least one statement and a results array");
		return -1;
	}
	ids = calloc((size_t)n, sizeof(*ids));
	if (!ids) {
		/* The caller clears every result: none may be left unset. */
		fill_errors(results, 0, n, &(pgb_result){ .v = { .err = "out of memory",
								  .head.sqlstate = PGB_SQLSTATE_TOO_LARGE } });
		return -1;
	}
	for (int i = 0; i < n; i++) {
		/* Each on a backend of its own: never queued behind a sibling. */
		ids[i] = send_request(c, stmts[i].sql, stmts[i].nparams, stmts[i].values,
				      REQ_INDEPENDENT | REQ_SPREAD, NULL, 0, &results[i]);
		if (ids[i] == 0)
			ids[i] = -1;
	}
	for (int i = 0; i < n; i++) {
		uint32_t got;

		if (ids[i] > 0)
			results[i] = wait_result(c, 0, (uint32_t)ids[i], 1, &got);
		if (!pgb_result_ok(results[i]))
			ok = 0;
	}
	free(ids);
	return ok ? 0 : -1;
}

PGB_API int pgb_conn_stats(const pgb_conn *c, struct pgb_conn_stats *st)
{
	if (!c || !st)
		return -1;
	*st = c->stats;
	st->success_rate = st->total ? (double)(st->total - st->failed) / (double)st->total : 1.0;
	st->mean_rtt_us = st->total ? (double)c->rtt_sum_ns / 1000.0 / (double)st->total : 0;
	return 0;
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

PGB_API pgb_exec_status pgb_result_status(const pgb_result *r)
{
	/* Local errors and copies of errors leave status 0: ok decides. */
	if (!r || !r->v.head.ok)
		return PGB_FATAL_ERROR;
	return (pgb_exec_status)r->v.head.status;
}

PGB_API unsigned int pgb_ftype(const pgb_result *r, int col)
{
	uint32_t oid;
	int32_t mod;

	if (!r || col < 0 || (uint32_t)col >= r->v.head.nfields)
		return 0;
	resp_col_desc(r->fnames[col], &oid, &mod);
	return oid;
}

PGB_API int pgb_fmod(const pgb_result *r, int col)
{
	uint32_t oid;
	int32_t mod;

	if (!r || col < 0 || (uint32_t)col >= r->v.head.nfields)
		return -1;
	resp_col_desc(r->fnames[col], &oid, &mod);
	return mod;
}

PGB_API const char *pgb_result_error_field(const pgb_result *r, int field)
{
	const char *s;

	if (!r || r->v.head.ok)
		return NULL;
	s = resp_diag_find(r->v.diag, r->v.diag_len, field);
	if (s || r->v.diag_len)
		return s;
	/* No fields: the broker's own error, or one made here. */
	switch (field) {
	case PGB_DIAG_SEVERITY:
	case PGB_DIAG_SEVERITY_NONLOCALIZED:
		return "ERROR";
	case PGB_DIAG_SQLSTATE:
		return r->v.head.sqlstate;
	case PGB_DIAG_MESSAGE_PRIMARY:
		return r->primary;
	default:
		return NULL;
	}
}

PGB_API void pgb_clear(pgb_result *r)
{
	if (!r)
		return;
#ifndef NDEBUG
	/* A result cleared twice: say so instead of corrupting the heap. */
	if (r->magic != RESULT_LIVE) {
		fprintf(stderr, "libpgbroker: pgb_clear(%p): %s\n", (void *)r,
			r->magic == RESULT_DEAD ? "result already cleared" : "not a result");
		abort();
	}
#endif
	*(volatile uint32_t *)&r->magic = RESULT_DEAD;  /* must survive the free below */
	free(r->blob);
	free(r->primary);
	free(r->fnames);
	free(r->vals);
	free(r->lens);
	free(r);
}
