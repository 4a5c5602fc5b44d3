/* The broker's event loop: one interface, two backends. io_uring
 * (loop_uring.c) is the fast path; epoll (loop_epoll.c) runs where io_uring
 * is blocked, switched off or too old. Every wait is one-shot, io_uring
 * style: it is armed with a tag and reports one completion (tag, res) from
 * loop_wait, or none once cancelled. */
#ifndef PGB_LOOP_H
#define PGB_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "chan.h"

/* A completion: res is the poll's revents, an accepted fd, or -errno.
 * more: a multishot accept stays armed. */
typedef void loop_cb(void *arg, uint64_t tag, int res, int more);

struct loop;

struct loop_ops {
	/* One-shot poll of fd for POLLIN/POLLOUT/POLLRDHUP; res = revents. */
	void (*poll)(struct loop *l, int fd, unsigned events, uint64_t tag);
	/* Drop the wait armed on fd with tag, if it has not completed yet:
	 * no completion follows. fd must still be open. */
	void (*cancel)(struct loop *l, int fd, uint64_t tag);
	/* Multishot accept on a listening socket (non-blocking, close-on-exec
	 * sockets); a completion without `more` ends it. */
	void (*accept)(struct loop *l, int fd, uint64_t tag);
	/* An agent's doorbell: complete once the agent rang (a futex wait on
	 * word while it holds val, or the bell eventfd bell_fd readable,
	 * according to the loop's bell kind). */
	void (*bell_wait)(struct loop *l, uint32_t *word, uint32_t val, int bell_fd,
			  uint64_t tag);
	/* Wake an agent sleeping on a shared futex word; signal an eventfd. */
	void (*futex_wake)(struct loop *l, uint32_t *word);
	void (*eventfd_signal)(struct loop *l, int fd);
	/* Send what is queued, wait at most timeout_ns for one completion,
	 * then report every completion there is. 0, or -errno on a fatal
	 * error (EINTR and timeouts are not). */
	int (*wait)(struct loop *l, int64_t timeout_ns, loop_cb *cb, void *arg);
	/* Send what is queued without waiting (the last pass's wake-ups). */
	void (*flush)(struct loop *l);
	void (*close)(struct loop *l);
};

struct loop {
	const struct loop_ops *ops;
	const char *name;          /* "io_uring" or "epoll" */
	enum chan_bell bell;       /* what the agents ring (chan.h) */
};

/* How the backend is chosen (the `loop` setting). */
enum loop_want { LOOP_AUTO = 0, LOOP_IO_URING, LOOP_EPOLL };

/* "auto", "io_uring", "epoll" -> enum loop_want; -EINVAL for anything else. */
int loop_parse(const char *s);

/* Open the backend `want` asks for; auto takes io_uring when it works and
 * has every opcode the broker needs, else epoll. why gets the choice and
 * its reason (for the start-up log), or on failure the cause and the fix.
 * Returns 0, or -errno when no backend can run. */
int loop_open(enum loop_want want, struct loop **out, char *why, size_t len);

/* The two backends. -errno, with the cause in why. */
int loop_uring_open(struct loop **out, char *why, size_t len);
int loop_epoll_open(struct loop **out, char *why, size_t len);

static inline void loop_poll(struct loop *l, int fd, unsigned events, uint64_t tag)
{
	l->ops->poll(l, fd, events, tag);
}

static inline void loop_cancel(struct loop *l, int fd, uint64_t tag)
{
	l->ops->cancel(l, fd, tag);
}

static inline void loop_accept(struct loop *l, int fd, uint64_t tag)
{
	l->ops->accept(l, fd, tag);
}

static inline void loop_bell_wait(struct loop *l, uint32_t *word, uint32_t val, int bell_fd,
				  uint64_t tag)
{
	l->ops->bell_wait(l, word, val, bell_fd, tag);
}

static inline void loop_futex_wake(struct loop *l, uint32_t *word)
{
	l->ops->futex_wake(l, word);
}

static inline void loop_eventfd_signal(struct loop *l, int fd)
{
	l->ops->eventfd_signal(l, fd);
}

static inline int loop_wait(struct loop *l, int64_t timeout_ns, loop_cb *cb, void *arg)
{
	return l->ops->wait(l, timeout_ns, cb, arg);
}

static inline void loop_flush(struct loop *l)
{
	l->ops->flush(l);
}

static inline void loop_close(struct loop *l)
{
	if (l)
		l->ops->close(l);
}

#endif
