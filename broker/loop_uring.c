/* The io_uring loop backend: polls, multishot accept and the futex opcodes
 * (FUTEX_WAIT needs Linux 6.7) ride in one ring; wake-ups produce no
 * completion unless they fail. */
#include <errno.h>
#include <liburing.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>

#include "log.h"
#include "loop.h"

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51
#define IORING_OP_FUTEX_WAKE 52
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

/* user_data of wake-ups and cancels: their completions (failures only)
 * are dropped here. Broker tags never have all bits set. */
#define TAG_SKIP UINT64_MAX

struct uring_loop {
	struct loop l;
	struct io_uring ring;
};

static struct io_uring *ring_of(struct loop *l)
{
	return &((struct uring_loop *)l)->ring;
}

/* Submit what is queued; a failure is logged (once a second at most):
 * the entries stay queued for the next submit, with the wait's. */
static void uring_submit(struct io_uring *ring)
{
	static time_t said;
	int rc = io_uring_submit(ring);

	if (rc < 0 && rc != -EINTR && time(NULL) != said) {
		said = time(NULL);
		log_error("io_uring submit failed: %s", strerror(-rc));
	}
}

/* An SQE, flushing the submission queue when it is full. */
static struct io_uring_sqe *uring_sqe(struct loop *l)
{
	struct io_uring *ring = ring_of(l);
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	while (!sqe) {
		uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
	}
	return sqe;
}

static void uring_poll(struct loop *l, int fd, unsigned events, uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(l);

	io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, tag);
}

/* For operations whose success needs no handling: no completion unless
 * they fail, so a wake-up does not cost a loop pass of its own. */
static void no_cqe(struct io_uring_sqe *sqe)
{
	io_uring_sqe_set_data64(sqe, TAG_SKIP);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void uring_cancel(struct loop *l, int fd, uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(l);

	(void)fd;
	io_uring_prep_cancel64(sqe, tag, 0);
	no_cqe(sqe);
}

static void uring_accept(struct loop *l, int fd, uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(l);

	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, tag);
}

/* Shared futex (not FUTEX2_PRIVATE): the word lives in an agent's memfd. */
static void uring_bell_wait(struct loop *l, uint32_t *word, uint32_t val, int bell_fd,
			    uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(l);

	(void)bell_fd;
	io_uring_prep_rw(IORING_OP_FUTEX_WAIT, sqe, FUTEX2_SIZE_U32, word, 0, val);
	sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
	io_uring_sqe_set_data64(sqe, tag);
}

static void uring_futex_wake(struct loop *l, uint32_t *word)
{
	struct io_uring_sqe *sqe = uring_sqe(l);

	io_uring_prep_rw(IORING_OP_FUTEX_WAKE, sqe, FUTEX2_SIZE_U32, word, 0, 1);
	sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
	no_cqe(sqe);
}

/* Make an agent's eventfd readable (pgb_socket); rides in the next submit. */
static void uring_eventfd_signal(struct loop *l, int fd)
{
	static const uint64_t one = 1;
	struct io_uring_sqe *sqe = uring_sqe(l);

	io_uring_prep_write(sqe, fd, &one, sizeof(one), 0);
	no_cqe(sqe);
}

static int uring_wait(struct loop *l, int64_t timeout_ns, loop_cb *cb, void *arg)
{
	struct io_uring *ring = ring_of(l);
	struct __kernel_timespec ts = {
		.tv_sec = timeout_ns / 1000000000LL,
		.tv_nsec = timeout_ns % 1000000000LL,
	};
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int rc = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);

	if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY)
		return rc;
	io_uring_for_each_cqe(ring, head, cqe) {
		uint64_t tag = io_uring_cqe_get_data64(cqe);

		if (tag != TAG_SKIP)
			cb(arg, tag, cqe->res, !!(cqe->flags & IORING_CQE_F_MORE));
		n++;
	}
	io_uring_cq_advance(ring, n);
	return 0;
}

static void uring_flush(struct loop *l)
{
	uring_submit(ring_of(l));
}

static void uring_close(struct loop *l)
{
	io_uring_queue_exit(ring_of(l));
	free(l);
}

static const struct loop_ops uring_ops = {
	.poll = uring_poll,
	.cancel = uring_cancel,
	.accept = uring_accept,
	.bell_wait = uring_bell_wait,
	.futex_wake = uring_futex_wake,
	.eventfd_signal = uring_eventfd_signal,
	.wait = uring_wait,
	.flush = uring_flush,
	.close = uring_close,
};

static const char *kernel_release(void)
{
	static struct utsname u;

	return uname(&u) == 0 ? u.release : "unknown";
}

int loop_uring_open(struct loop **out, char *why, size_t len)
{
	struct uring_loop *ul = calloc(1, sizeof(*ul));
	struct io_uring_params p = { 0 };
	struct io_uring_probe *probe;
	unsigned entries = 1024;
	int rc, ok;

	if (!ul) {
		snprintf(why, len, "io_uring: out of memory");
		return -ENOMEM;
	}
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
	p.cq_entries = 16384;
	rc = io_uring_queue_init_params(entries, &ul->ring, &p);
	if (rc < 0) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = 16384;
		rc = io_uring_queue_init_params(entries, &ul->ring, &p);
	}
	if (rc < 0) {
		if (rc == -EPERM || rc == -EACCES)
			snprintf(why, len, "io_uring blocked (seccomp or io_uring_disabled)");
		else if (rc == -ENOSYS)
			snprintf(why, len, "io_uring not in this kernel (Linux %s)",
				 kernel_release());
		else if (rc == -ENOMEM)
			snprintf(why, len, "io_uring setup failed: %s (locked memory limit, "
				 "ulimit -l, on kernels before 5.12)", strerror(-rc));
		else
			snprintf(why, len, "io_uring setup failed: %s", strerror(-rc));
		free(ul);
		return rc;
	}
	probe = io_uring_get_probe_ring(&ul->ring);
	ok = probe && io_uring_opcode_supported(probe, IORING_OP_FUTEX_WAIT);
	io_uring_free_probe(probe);
	if (!ok) {
		snprintf(why, len, "io_uring lacks FUTEX_WAIT (Linux 6.7 or later; this is %s)",
			 kernel_release());
		io_uring_queue_exit(&ul->ring);
		free(ul);
		return -ENOSYS;
	}
	ul->l.ops = &uring_ops;
	ul->l.name = "io_uring";
	ul->l.bell = CHAN_BELL_FUTEX;
	*out = &ul->l;
	snprintf(why, len, "io_uring");
	return 0;
}
