/* Agents: registration on the unix socket, their channels, reading requests
 * out of the request ring and streaming responses into the response ring.
 * Everything an agent can write is read once, checked, and a channel that
 * breaks a rule costs that agent its connection and nobody else anything. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker.h"
#include "classify.h"
#include "clock.h"
#include "errform.h"
#include "futex.h"

#define SERVICE_BUDGET 64     /* frames read per agent per pass */

static void response_free(struct response *rs)
{
	if (rs->res)
		PQclear(rs->res);
	free(rs->diag);
	free(rs);
}

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

struct agent *agent_by_tag(struct broker *b, uint64_t tag)
{
	uint32_t slot = TAG_SLOT(tag);
	struct agent *a;

	if (slot >= (uint32_t)b->cfg.max_agents)
		return NULL;
	a = b->agents[slot];
	if (!a || a->gen != TAG_GEN(tag) || a->state == AG_GONE)
		return NULL;
	return a;
}

/* The run directory is ours already (piddir_take). */
int agent_listen(struct broker *b)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	snprintf(b->sock_path, sizeof(b->sock_path), "%s/pgbroker.sock", b->cfg.dir);
	if (strlen(b->sock_path) >= sizeof(sa.sun_path)) {
		log_error("socket path too long: %s: choose a shorter dir", b->sock_path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, b->sock_path, strlen(b->sock_path) + 1);
	unlink(b->sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(b->sock_path, 0666) < 0 || listen(fd, 1024) < 0) {
		rc = -errno;
		log_error("cannot listen on %s: %s", b->sock_path, strerror(-rc));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	b->listen_fd = fd;
	agent_accept_arm(b);
	return 0;
}

void agent_accept_arm(struct broker *b)
{
	loop_accept(b->loop, b->listen_fd, tag_make(TAG_ACCEPT, 0, 0));
}

static int gid_allowed(const struct broker *b, gid_t gid)
{
	for (int i = 0; i < b->cfg.n_allow_gids; i++)
		if (b->cfg.allow_gids[i] == gid)
			return 1;
	return 0;
}

/* The broker's own uid, an allowed uid, or a member of an allowed group:
 * primary (SO_PEERCRED) or supplementary (SO_PEERGROUPS). */
static int peer_allowed(const struct broker *b, int fd, const struct ucred *cr)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (cr->uid == geteuid())
		return 1;
	for (int i = 0; i < b->cfg.n_allow_uids; i++)
		if (b->cfg.allow_uids[i] == cr->uid)
			return 1;
	if (!b->cfg.n_allow_gids)
		return 0;
	if (gid_allowed(b, cr->gid))
		return 1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return 0;	/* ERANGE: more groups than we look at */
	for (size_t i = 0; i < len / sizeof(groups[0]); i++)
		if (gid_allowed(b, groups[i]))
			return 1;
	return 0;
}

static void send_reply(int fd, const struct reg_reply *rep, const int *fds, int nfds)
{
	char cbuf[CMSG_SPACE(3 * sizeof(int))] = { 0 };
	struct iovec iov = { (void *)rep, sizeof(*rep) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds > 0) {
		struct cmsghdr *cm;

		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	/* A fresh socket's buffer is empty: this never blocks. */
	if (sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(*rep))
		log_debug("registration reply not sent: %s", strerror(errno));
}

static void agent_free(struct broker *b, struct agent *a);

/* A warning that a flood would repeat (refusals, silent connections): a
 * few lines per window, then one count ("... N more suppressed"). */
static void __attribute__((format(printf, 3, 4)))
warn_limited(struct broker *b, struct ratelimit *rl, const char *fmt, ...)
{
	uint64_t told = 0;
	char line[512];
	va_list ap;

	if (log_level < LV_WARN || !ratelimit_take(rl, b->now_ns / 1000000, &told))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (told)
		log_warn("%s (and %llu more like it suppressed)", line, (unsigned long long)told);
	else
		log_warn("%s", line);
}

/* At the end of a window: the count of what it suppressed. */
static void warn_flush(struct broker *b, struct ratelimit *rl, const char *what,
		       int64_t *next_ns)
{
	int64_t next_ms = INT64_MAX;
	uint64_t n = ratelimit_flush(rl, b->now_ns / 1000000, &next_ms);

	if (n)
		log_warn("... %llu more %s suppressed", (unsigned long long)n, what);
	if (next_ms != INT64_MAX && next_ms * 1000000 < *next_ns)
		*next_ns = next_ms * 1000000;
}

/* max_agents is reached: the connection that has waited longest without
 * registering makes room, so connections that never say hello cannot lock
 * out an agent that does (it says hello at once). 0 when one went. */
static int drop_oldest_silent(struct broker *b)
{
	struct list *pos;

	for (pos = b->hello.next; pos != &b->hello; pos = pos->next) {
		struct agent *old = list_entry(pos, struct agent, hello_link);

		if (old->doom)
			continue;	/* already on its way out */
		warn_limited(b, &b->rl_silent, "closed the connection of pid %d uid %d: not "
			     "registered after %lld ms, and max_agents=%d is reached", (int)old->pid,
			     (int)old->uid,
			     (long long)(b->now_ns - (old->hello_deadline_ns -
						      (int64_t)b->cfg.hello_timeout_ms * 1000000)) /
				     1000000,
			     b->cfg.max_agents);
		agent_free(b, old);
		return 0;
	}
	return -1;
}

static void refuse(int fd, int status, const char *why)
{
	struct reg_reply rep = { .magic = REG_MAGIC, .version = CHAN_VERSION, .status = status };

	snprintf(rep.message, sizeof(rep.message), "%s", why);
	send_reply(fd, &rep, NULL, 0);
	close(fd);
}

void agent_accept(struct broker *b, int fd)
{
	struct ucred cr = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t len = sizeof(cr);
	struct agent *a;

	if (b->stopping) {
		refuse(fd, -ESHUTDOWN, "broker is shutting down");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || !peer_allowed(b, fd, &cr)) {
		char why[sizeof(((struct reg_reply *)0)->message)];

		snprintf(why, sizeof(why), "uid %d gid %d not allowed by this broker (allow_uids, allow_gids)",
			 (int)cr.uid, (int)cr.gid);
		warn_limited(b, &b->rl_refused, "refused agent pid %d: %s", (int)cr.pid, why);
		b->st.c.agents_refused++;
		refuse(fd, -EACCES, why);
		return;
	}
	if (b->cfg.max_agents_per_uid &&
	    uidcount_get(&b->per_uid, cr.uid) >= (uint32_t)b->cfg.max_agents_per_uid) {
		warn_limited(b, &b->rl_refused, "refused agent pid %d uid %d: max_agents_per_uid=%d "
			     "reached", (int)cr.pid, (int)cr.uid, b->cfg.max_agents_per_uid);
		b->st.c.agents_refused++;
		refuse(fd, -EUSERS, "too many agents of this uid (max_agents_per_uid reached)");
		return;
	}
	if (b->nfree == 0)
		(void)drop_oldest_silent(b);
	if (b->nfree == 0 || !(a = calloc(1, sizeof(*a)))) {
		warn_limited(b, &b->rl_refused, "refused agent pid %d: max_agents=%d reached",
			     (int)cr.pid, b->cfg.max_agents);
		b->st.c.agents_refused++;
		refuse(fd, -EUSERS, "too many agents (max_agents reached)");
		return;
	}
	if (uidcount_add(&b->per_uid, cr.uid) < 0) {	/* not with <= max_agents uids */
		free(a);
		b->st.c.agents_refused++;
		refuse(fd, -EUSERS, "too many agents (max_agents reached)");
		return;
	}
	a->slot = b->free_slots[--b->nfree];
	a->gen = ++b->agent_gen;
	a->state = AG_HELLO;
	a->sock = fd;
	a->pid = cr.pid;
	a->uid = cr.uid;
	a->since_ms = wall_ms();
	a->hello_deadline_ns = b->now_ns + (int64_t)b->cfg.hello_timeout_ms * 1000000;
	list_init(&a->queue);
	list_init(&a->held);
	list_init(&a->active);
	a->efd = -1;
	a->bell_fd = -1;
	list_init(&a->responses);
	list_init(&a->wake_link);
	list_init(&a->ready_link);
	list_init(&a->blocked_link);
	list_init(&a->doom_link);
	list_add_tail(&b->hello, &a->hello_link);
	b->agents[a->slot] = a;
	b->nagents++;
	loop_poll(b->loop, fd, POLLIN, tag_make(TAG_HELLO, a->slot, a->gen));
}

/* The channel: a sealed memfd, so the agent can neither shrink it under
 * the broker (SIGBUS) nor grow it. */
static int chan_create(struct broker *b, struct agent *a)
{
	uint32_t ring = (uint32_t)b->cfg.channel_size_kb * 1024;
	uint64_t size = chan_size_for(ring);
	int fd = memfd_create("pgbroker-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *map;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail;
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail;
	a->chan = map;
	a->chan_size = size;
	a->chan->magic = CHAN_MAGIC;
	a->chan->version = CHAN_VERSION;
	a->chan->ring_size = ring;
	a->chan->bell_kind = b->loop->bell;
	ring_init(&a->req, &a->chan->req, chan_req_data(a->chan, ring), ring);
	ring_init(&a->resp, &a->chan->resp, chan_resp_data(a->chan, ring), ring);
	return fd;
fail:
	{
		int e = errno;
		close(fd);
		return -e;
	}
}

/* Reading stops while an agent has this much outstanding: statements,
 * responses, or request bytes held (a queue of max_inflight_per_agent
 * statements of max_request_kb each would be gigabytes). */
static int agent_backlogged(const struct broker *b, const struct agent *a)
{
	return a->nqueued + a->nactive >= (uint32_t)b->cfg.max_inflight_per_agent ||
	       a->nresponses >= (uint32_t)b->cfg.max_inflight_per_agent ||
	       a->nbytes >= (uint64_t)b->cfg.max_request_kb * 1024;
}

/* Arm the futex wait on the agent's bell unless there is work right now.
 * Returns 1 when there is (the caller services the agent again). */
static __attribute__((warn_unused_result)) int agent_arm(struct broker *b, struct agent *a)
{
	uint32_t v;

	if (a->bell_armed || a->doom)
		return 0;
	__atomic_store_n(&a->chan->broker_armed, 1, __ATOMIC_SEQ_CST);
	v = __atomic_load_n(&a->chan->broker_bell, __ATOMIC_SEQ_CST);
	if (ring_has_data(&a->req) && !agent_backlogged(b, a))
		return 1;
	/* A response waits for room: the agent may have made some while
	 * broker_armed was clear, and then its notify rang no bell. */
	if (a->blocked_since_ns && ring_space(&a->resp) > a->blocked_space)
		return 1;
	loop_bell_wait(b->loop, &a->chan->broker_bell, v, a->bell_fd,
		       tag_make(TAG_BELL, a->slot, a->gen));
	a->bell_armed = 1;
	return 0;
}

void agent_on_hello(struct broker *b, struct agent *a, int res)
{
	struct reg_hello h;
	struct reg_reply rep = { .magic = REG_MAGIC, .version = CHAN_VERSION };
	ssize_t n;
	int fd;

	if (res < 0) {
		agent_fail(b, a, "registration poll failed");
		return;
	}
	n = recv(a->sock, &h, sizeof(h), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		loop_poll(b->loop, a->sock, POLLIN, tag_make(TAG_HELLO, a->slot, a->gen));
		return;
	}
	if (n != (ssize_t)sizeof(h) || h.magic != REG_MAGIC) {
		agent_fail(b, a, "bad registration message");
		return;
	}
	if (h.version != CHAN_VERSION) {
		refuse(dup(a->sock), -EPROTO, "client library version does not match the broker");
		agent_fail(b, a, "client version mismatch");
		return;
	}
	if (b->loop->bell == CHAN_BELL_EVENTFD && !(h.flags & REG_F_BELL_EVENTFD)) {
		refuse(dup(a->sock), -EPROTO, "client library too old for a broker on epoll: "
		       "relink the agent with this libpgbroker");
		agent_fail(b, a, "client cannot ring an eventfd bell (epoll loop)");
		return;
	}
	fd = chan_create(b, a);
	if (fd < 0) {
		log_error("cannot create channel: %s", strerror(-fd));
		refuse(dup(a->sock), fd, "broker could not create a channel");
		agent_fail(b, a, "channel creation failed");
		return;
	}
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->efd >= 0 && b->loop->bell == CHAN_BELL_EVENTFD)
		a->bell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->efd < 0 || (b->loop->bell == CHAN_BELL_EVENTFD && a->bell_fd < 0)) {
		close(fd);
		refuse(dup(a->sock), -errno, "broker could not create an eventfd");
		agent_fail(b, a, "eventfd creation failed");
		return;
	}
	rep.ring_size = a->chan->ring_size;
	rep.chan_size = a->chan_size;
	rep.agent_id = a->slot;
	rep.nfds = a->bell_fd >= 0 ? 3 : 2;
	send_reply(a->sock, &rep, (int[]){ fd, a->efd, a->bell_fd }, (int)rep.nfds);
	close(fd);
	list_del(&a->hello_link);
	a->state = AG_READY;
	b->st.c.agents_registered++;
	log_debug("agent %u registered: pid %d uid %d", a->slot, (int)a->pid, (int)a->uid);
	loop_poll(b->loop, a->sock, POLLIN | POLLRDHUP, tag_make(TAG_HUP, a->slot, a->gen));
	/* The agent may have written before the bell was armed. */
	agent_service(b, a, 1);
}

void agent_wake(struct broker *b, struct agent *a)
{
	if (!a->want_wake) {
		a->want_wake = 1;
		list_add_tail(&b->wake, &a->wake_link);
	}
}

/* Once per loop pass: wake the agents we produced for that sleep. The
 * FUTEX_WAKEs ride in the loop's next submit (io_uring) or are made at
 * once (epoll). */
void agent_run_wakes(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->wake))) {
		struct agent *a = list_entry(pos, struct agent, wake_link);

		a->want_wake = 0;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&a->chan->agent_sleeping, __ATOMIC_RELAXED)) {
			__atomic_add_fetch(&a->chan->agent_bell, 1, __ATOMIC_SEQ_CST);
			loop_futex_wake(b->loop, &a->chan->agent_bell);
		}
		if (__atomic_load_n(&a->chan->fd_armed, __ATOMIC_RELAXED) &&
		    __atomic_exchange_n(&a->chan->fd_armed, 0, __ATOMIC_SEQ_CST))
			loop_eventfd_signal(b->loop, a->efd);
	}
}

static void agent_kick(struct broker *b, struct agent *a);

/* A throttled agent's backlog drained: read its ring again this pass,
 * without waiting for a bell it has no reason to ring. */
static void agent_unthrottle(struct broker *b, struct agent *a)
{
	if (!a->throttled || agent_backlogged(b, a) || a->doom)
		return;
	a->throttled = 0;
	if (list_empty(&a->ready_link))
		list_add_tail(&b->ready, &a->ready_link);
}
static void request_queue(struct broker *b, struct agent *a, struct request *r);

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
static void batch_new(struct broker *b, struct agent *a, struct request *r, uint64_t n);

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

void agent_lose(struct agent *a, enum agent_lost what)
{
	if (what <= a->lost)
		return;
	log_info("agent %u (pid %d): its %s died with its backend; its statements fail until %s",
		 a->slot, (int)a->pid, what == LOST_TXN ? "transaction" : "session",
		 what == LOST_TXN ? "it rolls back" : "it resets its session");
	a->lost = what;
}

static void respond_tag(struct broker *b, struct agent *a, uint32_t id, const char *tag);

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
		respond_tag(b, a, r->id, "RESET");
	} else if (a->lost == LOST_TXN && !r->nsub && sql_is_rollback(r->v.sql)) {
		a->lost = LOST_NONE;
		b->st.c.statements++;
		a->statements++;
		respond_tag(b, a, r->id, "ROLLBACK");
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
static void read_requests(struct broker *b, struct agent *a, int *budget)
{
	uint64_t max = (uint64_t)b->cfg.max_request_kb * 1024;
	int consumed = 0;

	while (*budget > 0 && !a->doom) {
		struct frame_hdr h;
		int rc;

		if (agent_backlogged(b, a)) {
			/* Backpressure: leave the rest in the ring until this
			 * agent's backlog drains (agent_unthrottle resumes). */
			a->throttled = 1;
			break;
		}
		rc = ring_peek(&a->req, &h);
		if (rc == 0)
			break;
		(*budget)--;
		if (rc < 0 || h.type != FRAME_REQ) {
			agent_fail(b, a, rc < 0 ? "request ring corrupt" : "unknown frame type");
			return;
		}
		if (h.flags & FRAME_FIRST) {
			if (a->in_blob || a->in_discard) {
				agent_fail(b, a, "new request inside an unfinished one");
				return;
			}
			a->in_id = h.id;
			a->in_total = h.aux;
			a->in_got = 0;
			if (a->in_total > max)
				a->in_discard = 1;
			else if (a->in_total < sizeof(struct req_head) ||
				 !(a->in_blob = malloc(a->in_total))) {
				agent_fail(b, a, "request length out of range");
				return;
			}
		} else if ((!a->in_blob && !a->in_discard) || h.id != a->in_id) {
			agent_fail(b, a, "request frame out of sequence");
			return;
		}
		if (h.len > a->in_total - a->in_got) {
			agent_fail(b, a, "request frame longer than its request");
			return;
		}
		if (a->in_blob)
			ring_read(&a->req, 0, a->in_blob + a->in_got, h.len);
		a->in_got += h.len;
		ring_consume(&a->req, &h);
		consumed = 1;
		if (!(h.flags & FRAME_LAST))
			continue;
		if (a->in_got != a->in_total) {
			agent_fail(b, a, "request shorter than announced");
			return;
		}
		if (a->in_discard) {
			char msg[160];

			snprintf(msg, sizeof(msg),
				 "statement of %llu bytes exceeds max_request_kb=%d",
				 (unsigned long long)a->in_total, b->cfg.max_request_kb);
			enqueue_error(b, a, a->in_id, "PB004", msg);
		} else {
			request_new(b, a, a->in_blob, a->in_total, a->in_id);
		}
		a->in_blob = NULL;
		a->in_discard = 0;
	}
	/* The agent stores need_space, then (fenced) loads our head; we stored
	 * head, so fence before loading need_space, or each may miss the
	 * other's store and the agent sleeps out a whole wait slice. */
	if (consumed) {
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&a->chan->req.need_space, __ATOMIC_RELAXED))
			agent_wake(b, a);
	}
}

/* from_bell: called for the bell's completion (the wait is used up);
 * otherwise a wait may still be armed and stays so. */
void agent_service(struct broker *b, struct agent *a, int from_bell)
{
	int budget = SERVICE_BUDGET;

	if (from_bell) {
		a->bell_armed = 0;
		__atomic_store_n(&a->chan->broker_armed, 0, __ATOMIC_RELAXED);
	}
	for (;;) {
		read_requests(b, a, &budget);
		agent_flush(b, a);
		if (a->doom)
			return;
		if (budget <= 0) {
			if (list_empty(&a->ready_link))
				list_add_tail(&b->ready, &a->ready_link);
			return;
		}
		if (!agent_arm(b, a))
			return;
	}
}

void agent_run_ready(struct broker *b)
{
	struct list batch;
	struct list *pos;

	/* Take this pass's list: agents that still have work re-add themselves. */
	list_init(&batch);
	if (list_empty(&b->ready))
		return;
	batch = b->ready;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	list_init(&b->ready);
	while ((pos = list_pop(&batch))) {
		struct agent *a = list_entry(pos, struct agent, ready_link);

		if (!a->doom)
			agent_service(b, a, 0);
	}
}

static const char *pg_value(void *ctx, uint32_t row, uint32_t col, uint32_t *len)
{
	PGresult *res = ctx;

	if (PQgetisnull(res, (int)row, (int)col))
		return NULL;
	*len = (uint32_t)PQgetlength(res, (int)row, (int)col);
	return PQgetvalue(res, (int)row, (int)col);
}

static const char *pg_fname(void *ctx, uint32_t col)
{
	return PQfname(ctx, (int)col);
}

static void pg_ftype(void *ctx, uint32_t col, uint32_t *oid, int32_t *typmod)
{
	*oid = PQftype(ctx, (int)col);
	*typmod = PQfmod(ctx, (int)col);
}

static const char *pg_diag(void *ctx, int code)
{
	return PQresultErrorField(ctx, code);
}

/* The error fields a failed result carries, packed for the response (the
 * success path never comes here). 0, or -ENOMEM. */
static int pack_diag(struct response *rs, PGresult *res)
{
	static const char codes[] = "SVCMDHPpqWstcdnFLR";
	uint32_t need = resp_diag_pack(NULL, 0, codes, pg_diag, res);

	if (need == 0)
		return 0;
	rs->diag = malloc(need);
	if (!rs->diag)
		return -ENOMEM;
	resp_diag_pack(rs->diag, need, codes, pg_diag, res);
	rs->src.diag = rs->diag;
	rs->src.diag_len = need;
	return 0;
}

/* PostgreSQL's status as the response states it. */
static uint32_t resp_status_of(const PGresult *res)
{
	switch (res ? PQresultStatus(res) : PGRES_FATAL_ERROR) {
	case PGRES_EMPTY_QUERY:
		return RESP_EMPTY_QUERY;
	case PGRES_COMMAND_OK:
		return RESP_COMMAND_OK;
	case PGRES_TUPLES_OK:
	case PGRES_SINGLE_TUPLE:
		return RESP_TUPLES_OK;
	case PGRES_COPY_OUT:
		return RESP_COPY_OUT;
	case PGRES_COPY_IN:
	case PGRES_COPY_BOTH:
		return RESP_COPY_IN;
	default:
		return RESP_FATAL_ERROR;
	}
}

static void respond(struct broker *b, struct agent *a, struct response *rs)
{
	if (a->resp_more)
		rs->src.head.flags |= RESP_MORE;
	/* a lost transaction still waits for the agent's ROLLBACK */
	if (a->txn_open || a->lost == LOST_TXN)
		rs->src.head.flags |= RESP_IN_TXN;
	list_add_tail(&a->responses, &rs->link);
	a->nresponses++;
	agent_flush(b, a);
}

/* The broker's own success: a command tag, no rows. */
static void respond_tag(struct broker *b, struct agent *a, uint32_t id, const char *tag)
{
	struct response *rs = calloc(1, sizeof(*rs));

	if (!rs) {
		agent_fail(b, a, "out of memory for a response");
		return;
	}
	snprintf(rs->msg, sizeof(rs->msg), "%s", tag);
	rs->id = id;
	rs->src.head.ok = 1;
	rs->src.err = "";
	rs->src.cmd = rs->msg;
	resp_measure(&rs->src);
	respond(b, a, rs);
}

void agent_respond_error(struct broker *b, struct agent *a, uint32_t id,
			 const char *sqlstate, const char *fmt, ...)
{
	struct response *rs = calloc(1, sizeof(*rs));
	va_list ap;

	if (!rs) {
		agent_fail(b, a, "out of memory for a response");
		return;
	}
	va_start(ap, fmt);
	errform_v(rs->msg, sizeof(rs->msg), fmt, ap);
	va_end(ap);
	rs->id = id;
	snprintf(rs->src.head.sqlstate, sizeof(rs->src.head.sqlstate), "%s", sqlstate);
	rs->src.head.status = RESP_FATAL_ERROR;
	rs->src.err = rs->msg;
	rs->src.cmd = "";
	resp_measure(&rs->src);
	a->errors++;
	respond(b, a, rs);
}

void agent_respond(struct broker *b, struct agent *a, uint32_t id, PGresult *res)
{
	struct response *rs;
	int ok = result_ok(res);

	rs = calloc(1, sizeof(*rs));
	if (!rs) {
		PQclear(res);
		agent_fail(b, a, "out of memory for a response");
		return;
	}
	rs->id = id;
	rs->res = res;
	rs->src.head.ok = ok;
	rs->src.head.status = ok ? resp_status_of(res) : RESP_FATAL_ERROR;
	if (!ok) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		snprintf(rs->src.head.sqlstate, sizeof(rs->src.head.sqlstate), "%s",
			 state ? state : "XX000");
		a->errors++;
		if (pack_diag(rs, res) < 0) {
			response_free(rs);
			agent_fail(b, a, "out of memory for a response");
			return;
		}
	}
	rs->src.head.ntuples = (uint32_t)PQntuples(res);
	rs->src.head.nfields = (uint32_t)PQnfields(res);
	rs->src.head.cmd_tuples = strtoull(PQcmdTuples(res), NULL, 10);
	rs->src.err = PQresultErrorMessage(res);
	rs->src.cmd = PQcmdStatus(res);
	rs->src.ctx = res;
	rs->src.fname = pg_fname;
	rs->src.ftype = pg_ftype;
	rs->src.value = pg_value;
	if (resp_measure(&rs->src) == 0) {
		response_free(rs);
		agent_respond_error(b, a, id, "PB004", "result too large to deliver (over 2 GiB)");
		return;
	}
	respond(b, a, rs);
}

/* Stream queued responses into the response ring as far as it has room. */
void agent_flush(struct broker *b, struct agent *a)
{
	uint32_t max_frame = a->resp.size / 2;

	while (!list_empty(&a->responses) && !a->doom) {
		struct response *rs = list_entry(a->responses.next, struct response, link);
		uint64_t left = rs->src.head.total - rs->cur.done;
		int64_t space = ring_space(&a->resp);
		uint32_t room, n;

		if (space < 0) {
			agent_fail(b, a, "response ring corrupt");
			return;
		}
		room = ring_frame_room((uint32_t)space);
		if (room > max_frame)
			room = max_frame;
		if (room < left && room < a->resp.size / 8) {
			__atomic_store_n(&a->chan->resp.need_space, 1, __ATOMIC_SEQ_CST);
			if (!a->blocked_since_ns) {
				a->blocked_since_ns = b->now_ns;
				list_add_tail(&b->blocked, &a->blocked_link);
			}
			/* The agent may have drained the ring meanwhile. */
			if (ring_space(&a->resp) > space)
				continue;
			a->blocked_space = space;
			return;
		}
		n = left < room ? (uint32_t)left : room;
		struct frame_hdr h = {
			.type = FRAME_RESP, .id = rs->id, .aux = (uint32_t)rs->src.head.total,
			.flags = rs->cur.done == 0 ? FRAME_FIRST : 0,
		};
		h.len = n;
		if (rs->cur.done + n == rs->src.head.total)
			h.flags |= FRAME_LAST;
		ring_write_hdr(&a->resp, &h);
		resp_emit(&rs->cur, &rs->src, &a->resp, FRAME_HDR, n);
		ring_publish(&a->resp, n);
		agent_wake(b, a);
		/* The agent made room, so it reads: send_timeout_ms bounds a
		 * stall, not a long result streamed to a slow reader. */
		if (a->blocked_since_ns)
			a->blocked_since_ns = b->now_ns;
		if (rs->cur.done == rs->src.head.total) {
			list_del(&rs->link);
			a->nresponses--;
			response_free(rs);
			agent_unthrottle(b, a);
		}
	}
	if (a->blocked_since_ns) {
		a->blocked_since_ns = 0;
		list_del(&a->blocked_link);
		__atomic_store_n(&a->chan->resp.need_space, 0, __ATOMIC_RELAXED);
	}
}

void agent_fail(struct broker *b, struct agent *a, const char *why)
{
	if (a->doom)
		return;
	a->doom = why;
	list_add_tail(&b->doomed, &a->doom_link);
}

/* A hang-up after pgb_finish is a goodbye; without one the agent died. */
static void log_hangup(const struct agent *a)
{
	const char *txn = a->pinned && PQtransactionStatus(a->pinned->pg) != PQTRANS_IDLE ?
		"; its open transaction is rolled back" : "";
	uint32_t inflight = a->nqueued + a->nactive;

	if (a->state != AG_READY || !a->chan)
		log_debug("agent %u (pid %d) left before registering", a->slot, (int)a->pid);
	else if (!__atomic_load_n(&a->chan->agent_bye, __ATOMIC_ACQUIRE))
		log_info("agent %u (pid %d) died (no pgb_finish): %u statement%s in flight%s",
			 a->slot, (int)a->pid, inflight, inflight == 1 ? "" : "s", txn);
	else if (inflight || *txn)
		log_info("agent %u (pid %d) disconnected with %u statement%s in flight%s",
			 a->slot, (int)a->pid, inflight, inflight == 1 ? "" : "s", txn);
	else
		log_debug("agent %u (pid %d) disconnected", a->slot, (int)a->pid);
}

static void agent_free(struct broker *b, struct agent *a)
{
	struct list *pos;

	list_del(&a->hello_link);
	uidcount_del(&b->per_uid, a->uid);
	a->state = AG_GONE;
	/* Held back, never given to the pool: nobody else will free them. */
	while ((pos = list_pop(&a->held))) {
		struct request *r = list_entry(pos, struct request, link);

		list_del(&r->alink);
		a->nactive--;
		request_free(r);
	}
	pool_agent_gone(b, a);
	while ((pos = list_pop(&a->queue)))
		request_free(list_entry(pos, struct request, link));
	while ((pos = list_pop(&a->responses)))
		response_free(list_entry(pos, struct response, link));
	list_del(&a->wake_link);
	list_del(&a->ready_link);
	list_del(&a->blocked_link);
	free(a->in_blob);
	/* An armed bell, or (epoll) the bell eventfd the agent also holds. */
	if (a->bell_armed || a->bell_fd >= 0)
		loop_cancel(b->loop, a->bell_fd, tag_make(TAG_BELL, a->slot, a->gen));
	loop_cancel(b->loop, a->sock, tag_make(TAG_HUP, a->slot, a->gen));
	loop_cancel(b->loop, a->sock, tag_make(TAG_HELLO, a->slot, a->gen));
	if (a->chan)
		munmap(a->chan, a->chan_size);
	if (a->efd >= 0)
		close(a->efd);
	if (a->bell_fd >= 0)
		close(a->bell_fd);
	close(a->sock);
	b->agents[a->slot] = NULL;
	b->free_slots[b->nfree++] = a->slot;
	b->nagents--;
	b->st.c.agents_gone++;
	free(a);
}

/* Disconnects happen here, at the end of a pass, so no handler ever finds
 * an agent freed under it. */
void agent_run_doomed(struct broker *b)
{
	struct list *pos;

	while ((pos = list_pop(&b->doomed))) {
		struct agent *a = list_entry(pos, struct agent, doom_link);

		if (strcmp(a->doom, "hang-up") == 0)
			log_hangup(a);
		else if (a->state == AG_HELLO)
			warn_limited(b, &b->rl_silent, "agent %u (pid %d uid %d) disconnected: %s",
				     a->slot, (int)a->pid, (int)a->uid, a->doom);
		else
			log_warn("agent %u (pid %d) disconnected: %s", a->slot, (int)a->pid, a->doom);
		if (strcmp(a->doom, "hang-up") != 0 && a->state == AG_READY)
			b->st.c.protocol_errors++;
		agent_free(b, a);
	}
}

void agent_timers(struct broker *b, int64_t *next_ns)
{
	struct list *pos, *tmp;
	int64_t send_timeout = (int64_t)b->cfg.send_timeout_ms * 1000000;

	warn_flush(b, &b->rl_refused, "refused agents", next_ns);
	warn_flush(b, &b->rl_silent, "connections closed before registering", next_ns);
	/* Out of descriptors, accepting paused: try again now? */
	if (b->accept_retry_ns && b->now_ns >= b->accept_retry_ns) {
		b->accept_retry_ns = 0;
		if (!b->stopping)
			agent_accept_arm(b);
	} else if (b->accept_retry_ns && b->accept_retry_ns < *next_ns) {
		*next_ns = b->accept_retry_ns;
	}
	while (!list_empty(&b->hello)) {
		struct agent *a = list_entry(b->hello.next, struct agent, hello_link);

		if (a->hello_deadline_ns > b->now_ns) {
			if (a->hello_deadline_ns < *next_ns)
				*next_ns = a->hello_deadline_ns;
			break;
		}
		list_del(&a->hello_link);
		agent_fail(b, a, "not registered within hello_timeout_ms");
	}
	list_for_each_safe(pos, tmp, &b->blocked) {
		struct agent *a = list_entry(pos, struct agent, blocked_link);
		int64_t due = a->blocked_since_ns + send_timeout;

		if (due <= b->now_ns)
			agent_fail(b, a, "stopped reading its responses (send_timeout_ms)");
		else if (due < *next_ns)
			*next_ns = due;
	}
}

/* Every response handed to its agent's ring (SIGTERM waits for that). */
int agent_all_sent(const struct broker *b)
{
	return list_empty(&b->blocked);
}

void agent_close_all(struct broker *b)
{
	for (int i = 0; i < b->cfg.max_agents; i++) {
		struct agent *a = b->agents[i];

		if (!a)
			continue;
		if (a->chan) {
			uint64_t one = 1;

			__atomic_store_n(&a->chan->broker_state, BROKER_CLOSING, __ATOMIC_SEQ_CST);
			__atomic_add_fetch(&a->chan->agent_bell, 1, __ATOMIC_SEQ_CST);
			futex_wake(&a->chan->agent_bell);
			/* an agent polling pgb_socket() must wake up too */
			if (a->efd >= 0)
				(void)!write(a->efd, &one, sizeof(one));
		}
		agent_fail(b, a, "hang-up");
	}
	agent_run_doomed(b);
}
