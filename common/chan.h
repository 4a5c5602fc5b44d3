/* The per-agent channel: one sealed memfd holding a request ring (agent ->
 * broker), a response ring (broker -> agent) and the wake-up words. Only the
 * broker and that one agent map it. The broker never trusts anything the
 * agent can write here; the header fields it needs are kept broker-side. */
#ifndef PGB_CHAN_H
#define PGB_CHAN_H

#include <stdint.h>
#include "ring.h"

#define CHAN_MAGIC   0x43424750u /* "PGBC" */
#define CHAN_VERSION 2u /* 2: results carry status, column types, error fields */
#define CHAN_HDR_SIZE 4096u

/* Registration handshake over the unix socket. */
#define REG_MAGIC 0x52424750u /* "PGBR" */
/* hello.flags: the agent can ring an eventfd bell (CHAN_BELL_EVENTFD). A
 * broker on epoll refuses agents without it; io_uring ignores it. */
#define REG_F_BELL_EVENTFD 0x1u
struct reg_hello {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;        /* REG_F_* */
	uint32_t reserved;
};
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

	/* The broker waits on broker_bell while broker_armed is set; an agent
	 * that made progress bumps the bell and wakes it only then: with
	 * FUTEX_WAKE (bell_kind CHAN_BELL_FUTEX, io_uring FUTEX_WAIT), or by
	 * writing 1 to the bell eventfd (CHAN_BELL_EVENTFD, the epoll loop). Symmetrically the agent sleeps on agent_bell with
	 * agent_sleeping set. The flags are hints: a wrong value costs a wake-up
	 * or a timeout slice, never correctness. */
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

#endif
