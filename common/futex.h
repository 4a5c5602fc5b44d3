/* Shared (not private) futex calls on words in memory mapped by two processes. */
#ifndef PGB_FUTEX_H
#define PGB_FUTEX_H

#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Wait while *word == val, at most timeout_ns. 0 woken/changed, -ETIMEDOUT, -EINTR. */
static inline int futex_wait(uint32_t *word, uint32_t val, long timeout_ns)
{
	struct timespec ts = { timeout_ns / 1000000000L, timeout_ns % 1000000000L };

	if (syscall(SYS_futex, word, FUTEX_WAIT, val, &ts, NULL, 0) < 0) {
		if (errno == EAGAIN)
			return 0;
		return -errno;
	}
	return 0;
}

static inline void futex_wake(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

#endif
