/* Holding libpq's pipelined output until the end of a loop pass.
 *
 * Before libpq 17, PQpipelineSync flushes: every statement put into a
 * shared pipeline went out in its own send(), woke its PostgreSQL backend
 * and, on a 2-core machine, often let that backend preempt the broker, so
 * statements reached it one by one instead of in batches. libpq 17 has
 * PQsendPipelineSync, which queues the Sync without flushing; there this
 * file is not built into the broker's behaviour (see pipe_send).
 *
 * Before 17 the broker defines send() itself, and libpq's calls resolve to
 * it (an executable's symbols come before a library's). For a socket that
 * is held it fails with EAGAIN, which libpq in non-blocking mode takes as a
 * full socket buffer: the bytes stay in libpq's output buffer, and the
 * PQflush in pool_flush sends them all once the hold is released. libpq may
 * read input while a send "would block" (pqSendSome): pool_flush drains
 * what it read. Every other send() is the plain system call (send is
 * sendto without an address). Measured with poolbench, select1, pool 8:
 * 50 agents 40-43k -> 46-47k q/s, 200 agents 31-33k -> 40-41k q/s with
 * p99 41 -> 20 ms. */
#include <errno.h>
#include <limits.h>
#include <sys/socket.h>

#include "broker.h"

#ifndef LIBPQ_HAS_SEND_PIPELINE_SYNC

#define HOLD_FDS (1 << 20)	/* beyond this, sockets are never held */

static unsigned long held[HOLD_FDS / (sizeof(unsigned long) * CHAR_BIT)];

#define HOLD_BITS (sizeof(unsigned long) * CHAR_BIT)

void send_hold(int fd, int on)
{
	unsigned long bit;

	if (fd < 0 || fd >= HOLD_FDS)
		return;
	bit = 1UL << (fd % HOLD_BITS);
	if (on)
		held[fd / HOLD_BITS] |= bit;
	else
		held[fd / HOLD_BITS] &= ~bit;
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	if (fd >= 0 && fd < HOLD_FDS && (held[fd / HOLD_BITS] >> (fd % HOLD_BITS) & 1)) {
		errno = EAGAIN;
		return -1;
	}
	return sendto(fd, buf, len, flags, NULL, 0);
}

#else

void send_hold(int fd, int on)
{
	(void)fd;
	(void)on;
}

#endif
