/* libpq's reads, counted and bounded per call (see pqread.h). */
#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pqread.h"

/* Per thread: a cancel thread's reads (PQcancel) are never limited. */
static __thread int lim_fd = -1;
static __thread uint64_t lim_left, lim_got;

void pqread_begin(int fd, uint64_t max)
{
	lim_fd = fd;
	lim_left = max;
	lim_got = 0;
}

uint64_t pqread_end(void)
{
	lim_fd = -1;
	return lim_got;
}

/* libc's recv, but for the fd being limited: at most what is left. */
ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	ssize_t n;

	if (fd == lim_fd) {
		if (lim_left == 0) {
			errno = EAGAIN;
			return -1;
		}
		if (len > lim_left)
			len = lim_left;
	}
	n = syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
	if (n > 0 && fd == lim_fd) {
		lim_left -= (uint64_t)n;
		lim_got += (uint64_t)n;
	}
	return n;
}
