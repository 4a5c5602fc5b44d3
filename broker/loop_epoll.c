/* The epoll loop backend, for where io_uring is blocked, switched off or
 * too old. It keeps io_uring's contract (loop.h): one-shot waits with
 * tags, a multishot accept, one completion each. One fd carries at most
 * one wait at a time (the broker never arms two on one fd). Agents ring an
 * eventfd here (CHAN_BELL_EVENTFD), and wake-ups are made at once. */
#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loop.h"

#define MAX_EVENTS 256
#define ACCEPT_BATCH 64   /* accepts per readiness: the rest next pass */

enum ep_kind { EP_POLL, EP_ACCEPT, EP_BELL };

/* The wait armed on one fd. seq changes with every arm and cancel: an
 * event epoll reports for an older one (it was cancelled, or the fd was
 * closed and its number reused) is dropped. */
struct ep_fd {
	uint64_t tag;
	uint32_t seq;
	uint8_t kind;
	uint8_t armed;
	uint8_t in_set;   /* registered with epoll, as far as we know */
};

/* A completion known before epoll_wait (an arm that failed). */
struct ep_done {
	uint64_t tag;
	int res;
};

struct epoll_loop {
	struct loop l;
	int epfd;
	struct ep_fd *fds;
	size_t nfds;
	struct ep_done *done;
	size_t ndone, done_cap;
};

static struct epoll_loop *ep_of(struct loop *l)
{
	return (struct epoll_loop *)l;
}

/* The slot for fd, growing the table; NULL when out of memory. */
static struct ep_fd *slot_for(struct epoll_loop *el, int fd)
{
	if (fd < 0)
		return NULL;
	if ((size_t)fd >= el->nfds) {
		size_t n = el->nfds ? el->nfds : 256;
		struct ep_fd *t;

		while (n <= (size_t)fd)
			n *= 2;
		t = realloc(el->fds, n * sizeof(*t));
		if (!t)
			return NULL;
		memset(t + el->nfds, 0, (n - el->nfds) * sizeof(*t));
		el->fds = t;
		el->nfds = n;
	}
	return &el->fds[fd];
}

/* Report res for tag at the next wait (the arm itself failed). */
static void complete_later(struct epoll_loop *el, uint64_t tag, int res)
{
	if (el->ndone == el->done_cap) {
		size_t n = el->done_cap ? el->done_cap * 2 : 16;
		struct ep_done *d = realloc(el->done, n * sizeof(*d));

		if (!d)
			abort();	/* a lost completion would hang its owner */
		el->done = d;
		el->done_cap = n;
	}
	el->done[el->ndone++] = (struct ep_done){ tag, res };
}

/* Register fd for events (epoll bits equal poll bits), MOD or ADD as the
 * kernel has it: a closed fd left the set on its own. */
static int ep_ctl(struct epoll_loop *el, int fd, struct ep_fd *e, uint32_t events)
{
	struct epoll_event ev = {
		.events = events,
		.data.u64 = (uint64_t)e->seq << 32 | (uint32_t)fd,
	};
	int op = e->in_set ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	if (epoll_ctl(el->epfd, op, fd, &ev) < 0) {
		if (errno != ENOENT && errno != EEXIST)
			return -errno;
		op = op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
		if (epoll_ctl(el->epfd, op, fd, &ev) < 0)
			return -errno;
	}
	e->in_set = 1;
	return 0;
}

static void arm(struct loop *l, int fd, uint32_t events, enum ep_kind kind, uint64_t tag)
{
	struct epoll_loop *el = ep_of(l);
	struct ep_fd *e = slot_for(el, fd);
	int rc;

	if (!e) {
		complete_later(el, tag, fd < 0 ? -EBADF : -ENOMEM);
		return;
	}
	e->tag = tag;
	e->seq++;
	e->kind = (uint8_t)kind;
	e->armed = 1;
	rc = ep_ctl(el, fd, e, events);
	if (rc < 0) {
		e->armed = 0;
		complete_later(el, tag, rc);
	}
}

static void ep_poll(struct loop *l, int fd, unsigned events, uint64_t tag)
{
	arm(l, fd, events | EPOLLONESHOT, EP_POLL, tag);
}

/* A poll's cancel costs no syscall: its one-shot registration stays
 * disabled, or fires once more and is dropped by its old seq. Accepts and
 * bells leave the set: an accept is level-triggered, and a bell eventfd is
 * shared with its agent, so closing ours would not take it out of the set. */
static void ep_cancel(struct loop *l, int fd, uint64_t tag)
{
	struct epoll_loop *el = ep_of(l);
	struct ep_fd *e;

	if (fd < 0 || (size_t)fd >= el->nfds)
		return;
	e = &el->fds[fd];
	if (e->tag != tag)
		return;
	if (e->armed) {
		e->armed = 0;
		e->seq++;
	}
	if (e->kind != EP_POLL && e->in_set) {
		if (epoll_ctl(el->epfd, EPOLL_CTL_DEL, fd, NULL) == 0)
			e->in_set = 0;
		e->seq++;	/* a bell's events carry the seq of its registration */
	}
}

static void ep_accept(struct loop *l, int fd, uint64_t tag)
{
	arm(l, fd, EPOLLIN, EP_ACCEPT, tag);
}

/* A bell stays registered, edge-triggered, from its first wait to its
 * cancel: every write of the agent is an event, and no syscall re-arms it
 * or clears the eventfd (its counter only grows; 2^64 rings are far off).
 * An event that comes while no wait is armed is dropped: agent_arm reads
 * the ring after it arms, so nothing is lost. One that was already on its
 * way when the wait was armed only costs a look at an empty ring. */
static void ep_bell_wait(struct loop *l, uint32_t *word, uint32_t val, int bell_fd,
			 uint64_t tag)
{
	struct epoll_loop *el = ep_of(l);
	struct ep_fd *e = slot_for(el, bell_fd);
	int rc;

	(void)word;
	(void)val;
	if (!e) {
		complete_later(el, tag, bell_fd < 0 ? -EBADF : -ENOMEM);
		return;
	}
	e->tag = tag;
	e->armed = 1;
	if (e->in_set && e->kind == EP_BELL)
		return;
	e->seq++;
	e->kind = EP_BELL;
	rc = ep_ctl(el, bell_fd, e, EPOLLIN | EPOLLET);
	if (rc < 0) {
		e->armed = 0;
		complete_later(el, tag, rc);
	}
}

static void ep_futex_wake(struct loop *l, uint32_t *word)
{
	(void)l;
	syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void ep_eventfd_signal(struct loop *l, int fd)
{
	static const uint64_t one = 1;

	(void)l;
	(void)!write(fd, &one, sizeof(one));
}

/* Accept what is queued; the completions keep `more` while the listening
 * socket stays armed, as io_uring's multishot accept does. */
static void on_accept(struct epoll_loop *el, int fd, loop_cb *cb, void *arg)
{
	struct ep_fd *e = &el->fds[fd];
	uint64_t tag = e->tag;
	uint32_t seq = e->seq;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int s = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (s < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (s < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (s < 0) {
			int err = errno;

			e->armed = 0;
			e->seq++;
			if (epoll_ctl(el->epfd, EPOLL_CTL_DEL, fd, NULL) == 0)
				e->in_set = 0;
			cb(arg, tag, -err, 0);
			return;
		}
		cb(arg, tag, s, 1);
		e = &el->fds[fd];	/* the table may have grown */
		if (!e->armed || e->seq != seq)
			return;	/* cancelled from the callback */
	}
}

static int ep_wait(struct loop *l, int64_t timeout_ns, loop_cb *cb, void *arg)
{
	struct epoll_loop *el = ep_of(l);
	struct epoll_event evs[MAX_EVENTS];
	int timeout_ms, n;

	/* Rounded up: a timer due in 0.3 ms must not turn into a busy loop. */
	timeout_ms = el->ndone ? 0 : (int)((timeout_ns + 999999) / 1000000);
	n = epoll_wait(el->epfd, evs, MAX_EVENTS, timeout_ms);
	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		int fd = (int)(uint32_t)evs[i].data.u64;
		uint32_t seq = (uint32_t)(evs[i].data.u64 >> 32);
		struct ep_fd *e;

		if ((size_t)fd >= el->nfds)
			continue;
		e = &el->fds[fd];
		if (!e->armed || e->seq != seq)
			continue;
		if (e->kind == EP_ACCEPT) {
			on_accept(el, fd, cb, arg);
			continue;
		}
		e->armed = 0;	/* one-shot: it fired */
		cb(arg, e->tag, (int)(evs[i].events & ~(uint32_t)EPOLLONESHOT), 0);
	}
	/* Completions queued by arms, including arms made by these callbacks. */
	for (size_t i = 0; i < el->ndone; i++) {
		struct ep_done d = el->done[i];

		cb(arg, d.tag, d.res, 0);
	}
	el->ndone = 0;
	return 0;
}

static void ep_flush(struct loop *l)
{
	(void)l;
}

static void ep_close(struct loop *l)
{
	struct epoll_loop *el = ep_of(l);

	close(el->epfd);
	free(el->fds);
	free(el->done);
	free(el);
}

static const struct loop_ops epoll_ops = {
	.poll = ep_poll,
	.cancel = ep_cancel,
	.accept = ep_accept,
	.bell_wait = ep_bell_wait,
	.futex_wake = ep_futex_wake,
	.eventfd_signal = ep_eventfd_signal,
	.wait = ep_wait,
	.flush = ep_flush,
	.close = ep_close,
};

int loop_epoll_open(struct loop **out, char *why, size_t len)
{
	struct epoll_loop *el = calloc(1, sizeof(*el));

	if (!el) {
		snprintf(why, len, "epoll: out of memory");
		return -ENOMEM;
	}
	el->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (el->epfd < 0) {
		int err = errno;

		snprintf(why, len, "epoll_create1 failed: %s", strerror(err));
		free(el);
		return -err;
	}
	el->l.ops = &epoll_ops;
	el->l.name = "epoll";
	el->l.bell = CHAN_BELL_EVENTFD;
	*out = &el->l;
	snprintf(why, len, "epoll");
	return 0;
}
