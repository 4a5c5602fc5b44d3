/* libpgbroker: a connection's life. Registering with the broker and
 * mapping the channel it hands out, fork safety (a child never uses its
 * parent's channel), registering anew (pgb_reset), and closing. */
#include "clock.h"
#include "pgbroker.h"
#include "internal.h"
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
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
#include "proto.h"
#include "rundir.h"

#define CONNECT_TIMEOUT_S 5

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
int pgbi_inherited(const pgb_conn *c)
{
	return c->fork_gen != __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
}

void pgbi_set_error(pgb_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
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
		pgbi_set_error(c, "cannot tell who the broker at %s is: %s", sock, strerror(errno));
		return -1;
	}
	snprintf(what, sizeof(what), "broker at %s", sock);
	if (rundir_check_peer(cr.uid, require, dir, what, why, sizeof(why)) < 0) {
		pgbi_set_error(c, "%s", why);
		return -1;
	}
	c->broker_uid = cr.uid;
	return 0;
}

/* Connect c->sock to the socket sa names and check who listens there:
 * 0, or -1 with the reason in errmsg. */
static int conn_dial(pgb_conn *c, const struct sockaddr_un *sa)
{
	struct timeval tv = { CONNECT_TIMEOUT_S, 0 };

	c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->sock < 0) {
		pgbi_set_error(c, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(c->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(c->sock, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		pgbi_set_error(c, "could not connect to broker at %s: %s", sa->sun_path,
			       strerror(errno));
		return -1;
	}
	return check_peer(c, c->dir, sa->sun_path, c->require);
}

/* Say hello and read the broker's answer with the channel's memfd (*fd),
 * the eventfd and the bell: 0, or -1 with the reason in errmsg. */
static int conn_hello(pgb_conn *c, const char *path, struct reg_reply *rep, int *fd)
{
	struct reg_hello hello = { .magic = REG_MAGIC, .version = CHAN_VERSION,
				   .flags = REG_F_BELL_EVENTFD | REG_F_SOCK_WAKE };
	ssize_t sent;
	int err, send_err = 0;

	/* A broker that refuses us (not allowed, full, shutting down) answers
	 * and closes at once: our hello may then meet a closed socket while
	 * the refusal still waits to be read. */
	sent = send(c->sock, &hello, sizeof(hello), MSG_NOSIGNAL);
	if (sent != (ssize_t)sizeof(hello))
		send_err = sent < 0 ? errno : EPIPE;
	err = recv_reply(c->sock, rep, fd, &c->efd, &c->bfd);
	if (err < 0 && send_err) {
		pgbi_set_error(c, "could not register with broker: %s", strerror(send_err));
		return -1;
	}
	if (err < 0) {
		pgbi_set_error(c, "no valid answer from broker at %s: %s", path,
			       err == -EPROTO ? "protocol error" : strerror(-err));
		return -1;
	}
	if (rep->status != 0) {
		rep->message[sizeof(rep->message) - 1] = '\0';
		pgbi_set_error(c, "broker refused the connection: %s", rep->message);
		return -1;
	}
	return 0;
}

/* Map the channel the broker sent (fd, closed here) and check its layout
 * and bell: 0, or -1 with the reason in errmsg. */
static int conn_map(pgb_conn *c, const struct reg_reply *rep, int fd)
{
	struct stat st;
	void *map;

	/* A memfd shorter than announced would be SIGBUS at the first touch
	 * past its end. */
	if (fd < 0 || c->efd < 0 || rep->ring_size < 4096 || (rep->ring_size & (rep->ring_size - 1)) ||
	    rep->chan_size != chan_size_for(rep->ring_size) || fstat(fd, &st) < 0 ||
	    (uint64_t)st.st_size < rep->chan_size) {
		if (fd >= 0)
			close(fd);
		pgbi_set_error(c, "broker sent a malformed channel");
		return -1;
	}
	map = mmap(NULL, rep->chan_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		pgbi_set_error(c, "could not map channel: %s", strerror(errno));
		return -1;
	}
	c->chan = map;
	c->chan_size = rep->chan_size;
	c->ring_size = rep->ring_size;
	c->slot = rep->agent_id;
	c->cancel_key = __atomic_load_n(&c->chan->cancel_key, __ATOMIC_RELAXED);
	if (c->chan->magic != CHAN_MAGIC || c->chan->version != CHAN_VERSION ||
	    c->chan->ring_size != rep->ring_size) {
		pgbi_set_error(c, "channel has an unknown layout (version %u)", c->chan->version);
		return -1;
	}
	/* The bell the broker listens to: its futex word, or (epoll) the
	 * eventfd that came with the channel. */
	switch (__atomic_load_n(&c->chan->bell_kind, __ATOMIC_ACQUIRE)) {
	case CHAN_BELL_FUTEX:
		if (c->bfd >= 0)
			close(c->bfd);
		c->bfd = -1;
		return 0;
	case CHAN_BELL_EVENTFD:
		if (c->bfd >= 0)
			return 0;
		/* fall through */
	default:
		pgbi_set_error(c, "broker sent a malformed channel (doorbell)");
		return -1;
	}
}

/* Register with the broker of c->dir (checked against c->require) and map
 * the channel it gives us: on success c is PGB_CONNECTION_OK, else it is
 * left closed with the reason in errmsg. c has no descriptors or mapping
 * open on entry. */
static void conn_open(pgb_conn *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct reg_reply rep;
	int fd = -1;

	c->status = PGB_CONNECTION_BAD;
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", c->dir) >=
	    sizeof(sa.sun_path)) {
		pgbi_set_error(c, "run directory path too long: %s", c->dir);
		return;
	}
	if (conn_dial(c, &sa) < 0 || conn_hello(c, sa.sun_path, &rep, &fd) < 0) {
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	if (conn_map(c, &rep, fd) < 0)
		goto fail;
	/* pgb_socket: the registration socket (REG_F_SOCK_WAKE): readable on
	 * a wake-up byte or the broker's hang-up, and writable. */
	c->pfd = fcntl(c->sock, F_DUPFD_CLOEXEC, 0);
	if (c->pfd < 0) {
		pgbi_set_error(c, "could not set up the connection's pollable fd: %s", strerror(errno));
		goto fail;
	}
	ring_init(&c->req, &c->chan->req, chan_req_data(c->chan, c->ring_size), c->ring_size);
	ring_init(&c->resp, &c->chan->resp, chan_resp_data(c->chan, c->ring_size), c->ring_size);
	/* From here on blocking waits are ours (futex slices), not the socket's. */
	c->status = PGB_CONNECTION_OK;
	c->errmsg[0] = '\0';
	return;
fail:
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
		pgbi_set_error(c, "run directory path too long: %s", dir);
		return c;
	}
	if ((size_t)snprintf(c->require, sizeof(c->require), "%s", require_uid ? require_uid : "") >=
	    sizeof(c->require)) {
		pgbi_set_error(c, "required uid too long: %.64s...", require_uid);
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

PGB_API void pgb_finish(pgb_conn *c)
{
	if (!c)
		return;
	/* In a forked child only drop our references; the parent's channel
	 * and socket stay untouched (unmapping is private to this process). */
	if (c->chan && !pgbi_inherited(c))
		chan_say_bye(c->chan);
	conns_del(c);
	conn_close(c);
	pgbi_part_drop(c);
	pgbi_stash_drop(c);
	pgbi_notices_drop(c);
	free(c->flights);
	free(c);
}

/* pgb_reset when the broker is gone (or c came through fork()): register
 * anew with the broker of the same run directory. Statements in flight on
 * the old channel get no answer any more; results already received stay.
 * pgb_socket keeps its number when it can (but is a new file: register it
 * again where it was registered). */
int pgbi_reconnect(pgb_conn *c)
{
	int keep = c->pfd;

	if (pgbi_inherited(c))
		pgbi_stash_drop(c);	/* the parent's */
	else if (c->chan)
		__atomic_store_n(&c->chan->agent_bye, 1, __ATOMIC_RELEASE);
	c->pfd = -1;
	conn_close(c);
	pgbi_part_drop(c);
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

int pgbi_cancel_info(const pgb_conn *c, struct pgbi_cancel *out)
{
	if (!c || c->status != PGB_CONNECTION_OK || !c->cancel_key)
		return -1;
	memset(out, 0, sizeof(*out));
	if ((size_t)snprintf(out->sock, sizeof(out->sock), "%s/pgbroker.sock", c->dir) >=
	    sizeof(out->sock))
		return -1;
	out->uid = c->broker_uid;
	out->slot = c->slot;
	out->key = c->cancel_key;
	return 0;
}

/* Copy s into err (n bytes) without stdio: a signal handler may call us. */
static void copy_err(char *err, size_t n, const char *s)
{
	size_t i = 0;

	if (!err || n == 0)
		return;
	for (; s[i] && i + 1 < n; i++)
		err[i] = s[i];
	err[i] = '\0';
}

int pgbi_cancel_send(const struct pgbi_cancel *k, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct reg_hello hello = { .magic = REG_MAGIC, .version = CHAN_VERSION,
				   .flags = REG_F_CANCEL, .cancel_slot = k->slot,
				   .cancel_key = k->key };
	struct reg_reply rep;
	struct ucred cr = { .uid = (uid_t)-1 };
	socklen_t len = sizeof(cr);
	int fd, rc = -1, saved = errno;

	memcpy(sa.sun_path, k->sock, sizeof(sa.sun_path) - 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		copy_err(err, errlen, "cancel: could not make a socket\n");
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		copy_err(err, errlen, "cancel: could not reach the broker\n");
		goto out;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.uid != k->uid) {
		copy_err(err, errlen, "cancel: the broker's socket is not the broker's any more\n");
		goto out;
	}
	if (send(fd, &hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello) ||
	    recv(fd, &rep, sizeof(rep), MSG_WAITALL) != (ssize_t)sizeof(rep) ||
	    rep.magic != REG_MAGIC) {
		copy_err(err, errlen, "cancel: no answer from the broker\n");
		goto out;
	}
	if (rep.status != 0) {
		rep.message[sizeof(rep.message) - 1] = '\0';
		copy_err(err, errlen, rep.message);
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	errno = saved;
	return rc;
}
