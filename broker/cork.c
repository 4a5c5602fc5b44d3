/* Corking libpq's output to a backend until the end of a loop pass.
 *
 * Before libpq 17, PQpipelineSync flushes: every statement put into a
 * shared pipeline went out in its own send(), woke its PostgreSQL backend
 * and, on a 2-core machine, often let that backend preempt the broker, so
 * statements reached it one by one instead of in batches. libpq 17 has
 * PQsendPipelineSync, which queues the Sync without flushing; there
 * nothing is corked (see pipe_send).
 *
 * Before 17 the broker defines send() itself, and libpq's calls resolve to
 * it (an executable's symbols come before a library's). While a backend's
 * socket is corked, send() takes the bytes into the socket's cork buffer
 * and reports them sent; cork_flush, at the end of the pass, writes them in
 * one system call. Bytes the socket does not take stay here, in order:
 * later sends wait behind them (EAGAIN, which libpq in non-blocking mode
 * takes as a full socket) until cork_flush has written them all, when the
 * socket is writable again. libpq never sees a would-block the socket did
 * not cause (it would read input each time, into a buffer that grows and
 * never shrinks). Every other send() is the plain system call.
 *
 * The table is indexed by descriptor and never moves. The broker also
 * defines close(): a socket's cork goes when the socket goes, whoever
 * closes it (libpq drops a broken connection itself, before the broker
 * learns of it), so a descriptor number taken again, by a new backend or
 * by the cancel thread's socket, never finds bytes of the old one. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "cork.h"

#ifndef LIBPQ_HAS_SEND_PIPELINE_SYNC

#define CORK_FDS 65536		/* sockets beyond this are never corked */
#define CORK_KEEP 65536		/* a larger empty buffer is given back */

struct cork {
	int held;		/* taking bytes until cork_flush */
	char *buf;
	size_t off, len, cap;	/* unwritten bytes: buf[off, len) */
};

static struct cork *corks[CORK_FDS];

static struct cork *cork_of(int fd)
{
	/* atomic: the cancel thread's send() and close() look here too */
	return fd >= 0 && fd < CORK_FDS ? __atomic_load_n(&corks[fd], __ATOMIC_RELAXED) : NULL;
}

int cork_hold(int fd)
{
	struct cork *c;

	if (fd < 0 || fd >= CORK_FDS)
		return 0;	/* not corked: libpq flushes itself */
	if (!(c = cork_of(fd))) {
		if (!(c = calloc(1, sizeof(*c))))
			return -ENOMEM;
		__atomic_store_n(&corks[fd], c, __ATOMIC_RELAXED);
	}
	c->held = 1;
	return 0;
}

static int cork_write(int fd, struct cork *c)
{
	while (c->off < c->len) {
		ssize_t n = sendto(fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL, NULL, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -errno;
		}
		c->off += (size_t)n;
	}
	c->off = c->len = 0;
	if (c->cap > CORK_KEEP) {
		free(c->buf);
		c->buf = NULL;
		c->cap = 0;
	}
	return 0;
}

int cork_flush(int fd)
{
	struct cork *c = cork_of(fd);

	if (!c)
		return 0;
	c->held = 0;
	return cork_write(fd, c);
}

int close(int fd)
{
	struct cork *c = cork_of(fd);

	if (c) {
		__atomic_store_n(&corks[fd], NULL, __ATOMIC_RELAXED);
		free(c->buf);
		free(c);
	}
	return (int)syscall(SYS_close, fd);
}

static ssize_t cork_take(struct cork *c, const void *p, size_t n)
{
	if (c->len + n > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		char *nb;

		while (cap < c->len + n)
			cap *= 2;
		if (!(nb = realloc(c->buf, cap))) {
			errno = ENOMEM;
			return -1;
		}
		c->buf = nb;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	return (ssize_t)n;
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	struct cork *c = cork_of(fd);

	if (c) {
		int rc;

		if (c->held)
			return cork_take(c, buf, len);
		if ((rc = cork_write(fd, c)) != 0) {
			errno = rc > 0 ? EAGAIN : -rc;
			return -1;	/* send()'s contract, for libpq */
		}
	}
	return sendto(fd, buf, len, flags, NULL, 0);
}

#else

int cork_hold(int fd)
{
	(void)fd;
	return 0;
}

int cork_flush(int fd)
{
	(void)fd;
	return 0;
}

#endif
