/* Registration: the run directory's lock and socket, the peer check,
 * and the hello that gives an agent its channel. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "backend.h"
#include "broker.h"
#include "clock.h"
#include "listen.h"
#include "log.h"


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

/* max_agents is reached: the connection that has waited longest without
 * registering makes room, so connections that never say hello cannot lock
 * out an agent that does (it says hello at once). 0 when one went,
 * -ENOENT when none was waiting. */
static int drop_oldest_silent(struct broker *b)
{
	struct list *pos;

	for (pos = b->hello.next; pos != &b->hello; pos = pos->next) {
		struct agent *old = list_entry(pos, struct agent, hello_link);

		if (old->doom)
			continue;	/* already on its way out */
		agent_warn_limited(b, &b->rl_silent, "closed the connection of pid %d uid %d: not "
				   "registered after %lld ms, and max_agents=%d is reached",
				   (int)old->pid, (int)old->uid,
				   (long long)(b->now_ns - (old->hello_deadline_ns -
							    (int64_t)b->cfg.hello_timeout_ms * 1000000)) /
					   1000000,
				   b->cfg.max_agents);
		agent_free(b, old);
		return 0;
	}
	return -ENOENT;
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
		agent_warn_limited(b, &b->rl_refused, "refused agent pid %d: %s", (int)cr.pid, why);
		b->st.c.agents_refused++;
		refuse(fd, -EACCES, why);
		return;
	}
	if (b->cfg.max_agents_per_uid &&
	    uidcount_get(&b->per_uid, cr.uid) >= (uint32_t)b->cfg.max_agents_per_uid) {
		agent_warn_limited(b, &b->rl_refused, "refused agent pid %d uid %d: "
				   "max_agents_per_uid=%d reached", (int)cr.pid, (int)cr.uid,
				   b->cfg.max_agents_per_uid);
		b->st.c.agents_refused++;
		refuse(fd, -EUSERS, "too many agents of this uid (max_agents_per_uid reached)");
		return;
	}
	if (b->nfree == 0)
		(void)drop_oldest_silent(b);
	if (b->nfree == 0 || !(a = calloc(1, sizeof(*a)))) {
		agent_warn_limited(b, &b->rl_refused, "refused agent pid %d: max_agents=%d reached",
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
	list_init(&a->paused);
	list_init(&a->wake_link);
	list_init(&a->kick_link);
	list_init(&a->ready_link);
	list_init(&a->snooze_link);
	list_init(&a->blocked_link);
	list_init(&a->doom_link);
	agent_set_state(b, a, AG_HELLO);
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
	a->chan->cancel_key = a->cancel_key;
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

/* A cancel request (REG_F_CANCEL) on connection a: cancel the statement
 * the named agent runs alone on a backend (a shared pipeline's statements
 * are short and not only its own: left alone), then end a. Status 0 also
 * when nothing runs; -ESRCH when no agent has that slot and key. */
static void cancel_request(struct broker *b, struct agent *a, const struct reg_hello *h)
{
	struct reg_reply rep = { .magic = REG_MAGIC, .version = CHAN_VERSION };
	struct agent *t = h->cancel_slot < (uint32_t)b->cfg.max_agents ? b->agents[h->cancel_slot]
								      : NULL;
	struct request *r;
	struct backend *be;

	if (!t || t->state != AG_READY || t->cancel_key != h->cancel_key || !h->cancel_key) {
		rep.status = -ESRCH;
		snprintf(rep.message, sizeof(rep.message), "no such session to cancel");
	} else if ((r = t->running) && (be = r->be) && be->req == r && be->state == BE_BUSY &&
		   !__atomic_load_n(&be->cancel_pending, __ATOMIC_ACQUIRE)) {
		log_info("agent %u: cancel request: cancelling on backend %u (pid %d)", t->slot,
			 be->slot, be->pg_pid);
		if (be_cancel(b, be) < 0) {
			rep.status = -EAGAIN;
			snprintf(rep.message, sizeof(rep.message), "could not send the cancel");
		}
	}
	send_reply(a->sock, &rep, NULL, 0);
	agent_fail(b, a, DOOM_CANCEL_DONE);
}

void agent_on_hello(struct broker *b, struct agent *a, int res)
{
	struct reg_hello h;
	struct reg_reply rep = { .magic = REG_MAGIC, .version = CHAN_VERSION };
	ssize_t n;
	int fd;

	if (res < 0) {
		agent_fail(b, a, DOOM_HELLO_POLL);
		return;
	}
	n = recv(a->sock, &h, sizeof(h), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		loop_poll(b->loop, a->sock, POLLIN, tag_make(TAG_HELLO, a->slot, a->gen));
		return;
	}
	if (n < (ssize_t)REG_HELLO_MIN || h.magic != REG_MAGIC) {
		agent_fail(b, a, DOOM_HELLO_BAD);
		return;
	}
	if (h.version != CHAN_VERSION) {
		refuse(dup(a->sock), -EPROTO, "client library version does not match the broker");
		agent_fail(b, a, DOOM_HELLO_VERSION);
		return;
	}
	if (n != (ssize_t)sizeof(h)) {
		agent_fail(b, a, DOOM_HELLO_BAD);
		return;
	}
	if (h.flags & REG_F_CANCEL) {
		cancel_request(b, a, &h);
		return;
	}
	if (b->loop->bell == CHAN_BELL_EVENTFD && !(h.flags & REG_F_BELL_EVENTFD)) {
		refuse(dup(a->sock), -EPROTO, "client library too old for a broker on epoll: "
		       "relink the agent with this libpgbroker");
		agent_fail(b, a, DOOM_HELLO_BELL);
		return;
	}
	a->sock_wake = (h.flags & REG_F_SOCK_WAKE) != 0;
	if (getrandom(&a->cancel_key, sizeof(a->cancel_key), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(a->cancel_key))
		a->cancel_key = 0;	/* no cancel for this one */
	fd = chan_create(b, a);
	if (fd < 0) {
		log_error("cannot create channel: %s", strerror(-fd));
		refuse(dup(a->sock), fd, "broker could not create a channel");
		agent_fail(b, a, DOOM_HELLO_CHANNEL);
		return;
	}
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->efd >= 0 && b->loop->bell == CHAN_BELL_EVENTFD)
		a->bell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->efd < 0 || (b->loop->bell == CHAN_BELL_EVENTFD && a->bell_fd < 0)) {
		close(fd);
		refuse(dup(a->sock), -errno, "broker could not create an eventfd");
		agent_fail(b, a, DOOM_HELLO_EVENTFD);
		return;
	}
	rep.ring_size = a->chan->ring_size;
	rep.chan_size = a->chan_size;
	rep.agent_id = a->slot;
	rep.nfds = a->bell_fd >= 0 ? 3 : 2;
	send_reply(a->sock, &rep, (int[]){ fd, a->efd, a->bell_fd }, (int)rep.nfds);
	close(fd);
	agent_set_state(b, a, AG_READY);
	log_debug("agent %u registered: pid %d uid %d", a->slot, (int)a->pid, (int)a->uid);
	loop_poll(b->loop, a->sock, POLLIN | POLLRDHUP, tag_make(TAG_HUP, a->slot, a->gen));
	/* The agent may have written before the bell was armed. */
	agent_service(b, a, 1);
}
