/* Small io_uring helpers: get an SQE (flushing when the SQ is full), poll,
 * cancel and the futex opcodes that liburing 2.3 has no helpers for. */
#include <linux/futex.h>
#include <string.h>

#include "broker.h"

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51
#define IORING_OP_FUTEX_WAKE 52
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

struct io_uring_sqe *uring_sqe(struct broker *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

	while (!sqe) {
		io_uring_submit(&b->ring);
		sqe = io_uring_get_sqe(&b->ring);
	}
	return sqe;
}

void uring_poll(struct broker *b, int fd, unsigned events, uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(b);

	io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, tag);
}

/* For operations whose success needs no handling: no completion unless
 * they fail, so a wake-up does not cost a loop pass of its own. */
static void no_cqe(struct io_uring_sqe *sqe)
{
	io_uring_sqe_set_data64(sqe, tag_make(TAG_IGNORE, 0, 0));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void uring_cancel(struct broker *b, uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(b);

	io_uring_prep_cancel64(sqe, tag, 0);
	no_cqe(sqe);
}

/* Shared futex (not FUTEX2_PRIVATE): the word lives in an agent's memfd. */
void uring_futex_wait(struct broker *b, uint32_t *word, uint32_t val, uint64_t tag)
{
	struct io_uring_sqe *sqe = uring_sqe(b);

	io_uring_prep_rw(IORING_OP_FUTEX_WAIT, sqe, FUTEX2_SIZE_U32, word, 0, val);
	sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
	io_uring_sqe_set_data64(sqe, tag);
}

void uring_futex_wake(struct broker *b, uint32_t *word)
{
	struct io_uring_sqe *sqe = uring_sqe(b);

	io_uring_prep_rw(IORING_OP_FUTEX_WAKE, sqe, FUTEX2_SIZE_U32, word, 0, 1);
	sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
	no_cqe(sqe);
}

/* Make an agent's eventfd readable (pgb_socket); rides in the next submit. */
void uring_eventfd_signal(struct broker *b, int fd)
{
	static const uint64_t one = 1;
	struct io_uring_sqe *sqe = uring_sqe(b);

	io_uring_prep_write(sqe, fd, &one, sizeof(one), 0);
	no_cqe(sqe);
}
