/* The per-agent channel: one sealed memfd holding a request ring (agent ->
 * broker), a response ring (broker -> agent) and the wake-up words. Only the
 * broker and that one agent map it. The broker never trusts anything the
 * agent can write here; the header fields it needs are kept broker-side. */
#ifndef PGB_CHAN_H
#define PGB_CHAN_H

#include <stdint.h>
#include "ring.h"

#define CHAN_MAGIC   0x43424750u /* "PGBC" */
#define CHAN_VERSION 6u /* 2: results carry status, column types, error fields;
			  3: REG_F_SOCK_WAKE, notices in results, REG_F_CANCEL;
			  4: COPY data and end frames;
			  5: rows messages (RESP_ROWS) stream large results;
			  6: notifications (FRAME_NOTIFY, notify_taken) */
#define CHAN_HDR_SIZE 4096u

/* Registration handshake over the unix socket. */
#define REG_MAGIC 0x52424750u /* "PGBR" */
/* hello.flags: the agent can ring an eventfd bell (CHAN_BELL_EVENTFD). A
 * broker on epoll refuses agents without it; io_uring ignores it. */
#define REG_F_BELL_EVENTFD 0x1u
/* hello.flags: wake this agent's pgb_socket by one byte on the registration
 * socket instead of its eventfd, so that the descriptor a program polls is
 * writable too (libpq programs wait for write first) and reads end of file
 * when the broker goes away. */
#define REG_F_SOCK_WAKE 0x2u
/* hello.flags: not an agent but a cancel request (libpq's PQcancel): stop
 * the statement agent cancel_slot is running, if cancel_key is that agent's
 * (chan_shm.cancel_key). The reply's status says whether it was known;
 * the connection ends there. */
#define REG_F_CANCEL 0x4u
struct reg_hello {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;        /* REG_F_* */
	uint32_t cancel_slot;  /* REG_F_CANCEL: the agent's slot (reply.agent_id) */
	uint64_t cancel_key;   /* REG_F_CANCEL: its key */
};
/* An older agent's hello is shorter; magic and version come first in both. */
#define REG_HELLO_MIN 16u
struct reg_reply {
	uint32_t magic;
	uint32_t version;
	int32_t status;        /* 0 ok, else a negative errno-like code */
	uint32_t ring_size;
	uint64_t chan_size;
	uint32_t agent_id;     /* slot number, for display */
	uint32_t nfds;         /* fds passed: the channel memfd, the eventfd, and
				  with CHAN_BELL_EVENTFD the bell eventfd */
	char message[108];     /* why, when status != 0 */
};

enum broker_state { BROKER_RUNNING = 0, BROKER_CLOSING = 1 };

/* The doorbell the broker listens to (chan_shm.bell_kind): its io_uring
 * loop waits on the broker_bell futex word, its epoll loop on an eventfd
 * passed at registration. */
enum chan_bell { CHAN_BELL_FUTEX = 0, CHAN_BELL_EVENTFD = 1 };

struct chan_shm {
	uint32_t magic;
	uint32_t version;
	uint32_t ring_size;
	uint32_t broker_state;   /* enum broker_state, written by the broker */

	struct ring_ctl req;     /* agent produces, broker consumes */
	struct ring_ctl resp;    /* broker produces, agent consumes */

	/* The doorbells (chan_bell_* below): the broker waits on broker_bell
	 * while broker_armed is set, woken by FUTEX_WAKE (bell_kind
	 * CHAN_BELL_FUTEX, io_uring FUTEX_WAIT) or by a write of 1 to the bell
	 * eventfd (CHAN_BELL_EVENTFD, the epoll loop); the agent sleeps on
	 * agent_bell while agent_sleeping is set. */
	_Alignas(64) uint32_t broker_bell;
	uint32_t broker_armed;
	_Alignas(64) uint32_t agent_bell;
	uint32_t agent_sleeping;
	/* Set by an agent about to poll its eventfd (pgb_socket); the broker
	 * clears it and signals the eventfd once. */
	uint32_t fd_armed;
	/* Set by pgb_finish: a hang-up after it is a goodbye, without it a
	 * crash. Only a hint for the broker's log. */
	uint32_t agent_bye;
	/* enum chan_bell, written by the broker before registration ends. */
	uint32_t bell_kind;
	/* The key a cancel request for this agent must give (REG_F_CANCEL):
	 * random, written by the broker before registration ends; the broker
	 * checks requests against its own copy. */
	uint64_t cancel_key;
	/* Notifications the agent has taken (pgb_notifies), counting up and
	 * wrapping: the broker sends one only while fewer than its queue
	 * bound are delivered and not taken. Written by the agent: a hint
	 * the broker bounds by what it sent. */
	_Alignas(64) uint32_t notify_taken;
};

_Static_assert(sizeof(struct chan_shm) <= CHAN_HDR_SIZE, "channel header too big");

static inline uint64_t chan_size_for(uint32_t ring_size)
{
	return CHAN_HDR_SIZE + 2ull * ring_size;
}

static inline uint8_t *chan_req_data(struct chan_shm *c, uint32_t ring_size)
{
	(void)ring_size;
	return (uint8_t *)c + CHAN_HDR_SIZE;
}

static inline uint8_t *chan_resp_data(struct chan_shm *c, uint32_t ring_size)
{
	return (uint8_t *)c + CHAN_HDR_SIZE + ring_size;
}

/* --- Frames. A message of `total` bytes goes as frames of at most half the
 * ring: every frame carries the message id, the first FRAME_FIRST with the
 * total in aux, the last FRAME_LAST. Client (requests) and broker
 * (responses) write and reassemble them with these functions alone. --- */

/* The next frame of a message (total > 0) whose first `done` bytes are
 * out. The caller sets h->type and h->id; this fills len, flags and aux.
 * Returns the payload length (> 0), which the caller writes at FRAME_HDR
 * (ring_write) before chan_frame_publish; 0 when the ring has less room
 * than is useful (less than the rest and less than an eighth of the
 * ring): wait for space (chan_want_space); -1 when the consumer's head is
 * impossible (corrupt). *space (may be NULL) gets the free bytes seen. */
int64_t chan_frame_next(struct ring *r, struct frame_hdr *h, uint64_t total, uint64_t done,
			int64_t *space);
/* Publish the frame whose payload is written (release store of the tail). */
void chan_frame_publish(struct ring *r, const struct frame_hdr *h);

/* A message being reassembled from frames. Zeroed: none. */
struct chan_rx {
	uint8_t *buf;      /* the message so far; NULL when none or discarding */
	uint16_t type;     /* its frame type (every frame of it has the same) */
	uint64_t total;    /* announced by its first frame */
	uint64_t got;
	uint32_t id;
	int discard;       /* longer than max: frames are dropped until its last */
};

enum chan_rx_rc {
	CHAN_RX_EMPTY = 0,   /* nothing published */
	CHAN_RX_PART = 1,    /* a frame was taken; the message goes on */
	CHAN_RX_DONE = 2,    /* a whole message: chan_rx_take */
	CHAN_RX_DROPPED = 3, /* a whole message longer than max: dropped (id, total stay) */
	/* The peer broke the framing rules (the partial message is freed): */
	CHAN_RX_CORRUPT = -1,  /* tail or frame length out of range */
	CHAN_RX_TYPE = -2,     /* not a frame type expected, or another than its first's */
	CHAN_RX_NESTED = -3,   /* a first frame inside an unfinished message */
	CHAN_RX_LENGTH = -4,   /* total shorter than min */
	CHAN_RX_NOMEM = -5,    /* no memory for the message */
	CHAN_RX_SEQUENCE = -6, /* a later frame with no message, or another id */
	CHAN_RX_LONG = -7,     /* more bytes than the message announced */
	CHAN_RX_SHORT = -8,    /* its last frame came before all its bytes */
};

/* The types argument of chan_rx_frame: a set of frame types. */
#define CHAN_TYPE(t) (1u << (t))

/* Take at most one frame of a type in `types` (CHAN_TYPE(FRAME_REQ) | ...)
 * from the consumer ring r into rx; rx->type tells the message's type.
 * Messages shorter than min are refused, longer than max dropped. */
enum chan_rx_rc chan_rx_frame(struct chan_rx *rx, struct ring *r, uint32_t types, uint64_t min,
			      uint64_t max);
/* After CHAN_RX_DONE: the message (rx->total bytes, the caller's to free). */
uint8_t *chan_rx_take(struct chan_rx *rx);
/* Drop a partial message. */
void chan_rx_reset(struct chan_rx *rx);

/* --- The handshakes, each side in one function.
 *
 * Memory ordering, written once: every handshake here is the same Dekker
 * pair. One side stores (a published tail or head, then its "I wait" flag
 * or bell), the other stores its own word, and each then loads the other's
 * word. Each side puts a sequentially consistent fence (or a seq_cst
 * store and load pair) between its store and its load, so at least one
 * of the two sees the other's store: either the waiter sees the progress
 * and does not sleep, or the waker sees the waiter and wakes it. Without
 * the fences both loads may be satisfied before either store is visible,
 * and a waiter sleeps out a whole wait slice. The flags are hints: a wrong
 * value costs a wake-up or a timeout slice, never correctness. --- */

/* Doorbell, waker side: after publishing, 1 when the peer announced a sleep
 * on `bell` (the bell is bumped: the caller then futex-wakes it). */
static inline int chan_bell_ring(uint32_t *bell, uint32_t *sleeping)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!__atomic_load_n(sleeping, __ATOMIC_RELAXED))
		return 0;
	__atomic_add_fetch(bell, 1, __ATOMIC_SEQ_CST);
	return 1;
}

/* Doorbell, sleeper side: announce the sleep and read the bell's value.
 * The caller then checks for work once more, and waits on the value
 * returned only if there is none (a ring after the read changes it). */
static inline uint32_t chan_bell_arm(uint32_t *sleeping, uint32_t *bell)
{
	__atomic_store_n(sleeping, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(bell, __ATOMIC_SEQ_CST);
}

/* Awake again (woken, or work found after chan_bell_arm). */
static inline void chan_bell_disarm(uint32_t *sleeping)
{
	__atomic_store_n(sleeping, 0, __ATOMIC_RELAXED);
}

/* Producer, the ring too full: ask the consumer to wake us when it makes
 * room. The caller then looks at the space once more (ring_space). */
static inline void chan_want_space(struct ring_ctl *c)
{
	__atomic_store_n(&c->need_space, 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Producer: room again, no wake-up wanted. */
static inline void chan_space_ok(struct ring_ctl *c)
{
	__atomic_store_n(&c->need_space, 0, __ATOMIC_RELAXED);
}

/* Consumer, after consuming (its head stored): 1 when the producer waits
 * for room and should be woken. */
static inline int chan_space_wanted(struct ring_ctl *c)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return __atomic_load_n(&c->need_space, __ATOMIC_RELAXED) != 0;
}

/* Agent about to poll its eventfd (pgb_socket): the broker signals it once
 * for the next thing published. The agent then looks at its ring again. */
static inline void chan_fd_arm(struct chan_shm *c)
{
	__atomic_store_n(&c->fd_armed, 1, __ATOMIC_SEQ_CST);
}

/* Whether the agent armed its eventfd (a hint, no ordering). */
static inline int chan_fd_armed(struct chan_shm *c)
{
	return __atomic_load_n(&c->fd_armed, __ATOMIC_RELAXED) != 0;
}

/* Broker, after publishing (and chan_bell_ring's fence): 1 when the agent
 * armed its eventfd; the arming is used up and the caller signals it. */
static inline int chan_fd_take(struct chan_shm *c)
{
	return __atomic_load_n(&c->fd_armed, __ATOMIC_RELAXED) &&
	       __atomic_exchange_n(&c->fd_armed, 0, __ATOMIC_SEQ_CST);
}

/* The broker is closing: the agent's next look sees it, and its bell is
 * bumped whether it sleeps or not (the caller futex-wakes agent_bell). */
static inline void chan_set_closing(struct chan_shm *c)
{
	__atomic_store_n(&c->broker_state, BROKER_CLOSING, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&c->agent_bell, 1, __ATOMIC_SEQ_CST);
}

static inline int chan_closing(struct chan_shm *c)
{
	return __atomic_load_n(&c->broker_state, __ATOMIC_ACQUIRE) == BROKER_CLOSING;
}

/* pgb_finish said goodbye: a hang-up after it is no crash (a log hint). */
static inline void chan_say_bye(struct chan_shm *c)
{
	__atomic_store_n(&c->agent_bye, 1, __ATOMIC_RELEASE);
}

static inline int chan_said_bye(struct chan_shm *c)
{
	return __atomic_load_n(&c->agent_bye, __ATOMIC_ACQUIRE) != 0;
}

#endif
