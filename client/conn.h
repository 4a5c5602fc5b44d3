/* libpgbroker's connection and result, shared by the files that make up
 * the connection: connect.c (registering, fork safety, closing), chanio.c
 * (the channel: frames, bells, waiting), client.c (statements, the stash
 * of answers), results.c (pgb_result), notify.c (notifications received).
 * Not exported, not part of the API. */
#ifndef PGB_CLIENT_CONN_H
#define PGB_CLIENT_CONN_H

#include <stdint.h>
#include <sys/un.h>

#include "chan.h"
#include "pgbroker.h"
#include "proto.h"
#include "ring.h"

#define SPIN_MAX_NS 40000     /* the adaptive spin's budget at most (chanio.c) */
#define SPIN_MIN_NS 2000

/* A finished result nobody has asked for yet (async, or behind a batch). */
struct stash {
	struct stash *next;
	uint32_t id;
	pgb_result *r;
};

/* A notification received and not yet taken: the pgb_notify first (its
 * address is the block pgb_freemem frees), then its strings. */
struct notice {
	pgb_notify n;
	struct notice *next;
	char text[];
};

/* A request in flight: its id and when it left, for the per-agent stats. */
struct flight {
	uint32_t id;
	int chunked;             /* PGB_CHUNKED: rows messages are results */
	int64_t t0;
};

/* The rows messages of a result being reassembled (not PGB_CHUNKED): they
 * join its final response (chanio.c). */
struct rowparts {
	struct rowparts *next;
	uint32_t id;
	pgb_result **part;
	uint32_t n, cap;
	uint64_t rows;
};

struct pgb_conn {
	struct pgb_conn *next, *prev; /* the list of open connections: see on_fork */
	int status;
	int in_txn;              /* the last answer said: inside a transaction */
	int sock;
	int efd;                 /* readable when a result is ready and fd_armed was set */
	int bfd;                 /* the broker's bell eventfd (CHAN_BELL_EVENTFD), else -1 */
	int pfd;                 /* pgb_socket: a duplicate of sock (REG_F_SOCK_WAKE), so that
				    it also becomes readable when the broker dies */
	unsigned fork_gen;       /* fork generation at connect: see on_fork */
	struct chan_shm *chan;
	uint64_t chan_size;
	uint32_t ring_size;
	struct ring req;
	struct ring resp;
	uint32_t next_id;
	struct stash *stash, *stash_tail;
	struct notice *notices, *notices_tail;  /* received, for pgb_notifies; bounded
						   by the broker's queue per agent */
	/* A response whose frames are still arriving: kept between calls, so
	 * that pgb_try_result never waits for the rest. */
	struct chan_rx part;
	struct rowparts *rowparts;
	struct flight *flights;  /* requests whose final response is outstanding */
	uint32_t nflights, capflights;
	struct pgb_conn_stats stats;
	int64_t spin_ns;         /* adaptive spin budget before sleeping */
	int spin_skips;
	uint64_t rtt_sum_ns;
	/* A COPY of ours (copy.c): the statement copy_id is in COPY IN or COPY
	 * OUT until its data ends; copy_ended once its final result arrived
	 * (stashed for pgb_get_result). */
	int copy;                /* PGBI_COPY_NONE, _IN, _OUT */
	uint32_t copy_id;
	int copy_ended;
	int copy_wait;           /* pgbi_recv_next returns when a chunk of rows came */
	uint8_t *cbuf;           /* COPY IN data not sent yet (COPY_CHUNK bytes) */
	uint32_t clen;
	struct chan_rx crx;      /* a chunk of COPY OUT rows arriving */
	uint8_t *chunk;          /* rows received, not taken yet */
	uint64_t chunk_len, chunk_at;
	char errmsg[512];
	/* for pgb_reset: where the broker is, and whom it must run as */
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char require[256];       /* "": $PGBROKER_REQUIRE_UID, else ours or root */
	/* for a cancel request (REG_F_CANCEL) */
	uid_t broker_uid;        /* the broker's, checked at connect */
	uint32_t slot;           /* ours at the broker */
	uint64_t cancel_key;
};

#define RESULT_LIVE 0x6c697665u
#define RESULT_DEAD 0x64656164u

struct pgb_result {
	uint8_t *blob;           /* the response as received; NULL for local errors */
	char pad[32];            /* keeps magic clear of the allocator's free-list words */
	uint32_t magic;          /* RESULT_LIVE; RESULT_DEAD once cleared (debug check) */
	struct resp_view v;
	const char **fnames;
	const char **vals;
	uint32_t *lens;
	char local_err[256];
	char *primary;           /* an error without fields: its text alone (malloc) */
	uint8_t **blobs;         /* rows messages whose rows vals points into too */
	uint32_t nblobs;
};

/* connect.c */
/* 1 in a child of the process that opened c. */
int pgbi_inherited(const pgb_conn *c);
void pgbi_set_error(pgb_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Register anew with the broker of the same run directory (pgb_reset when
 * the broker is gone, or after fork): 0, or -1 with the reason in errmsg. */
int pgbi_reconnect(pgb_conn *c);

/* results.c */
/* An error made here (no fields): NULL only out of memory. */
pgb_result *pgbi_local_error(const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The result of a response blob (taken); a malformed one becomes a PB006
 * error. NULL only out of memory. */
pgb_result *pgbi_build_result(uint8_t *blob, uint64_t n);

/* chanio.c */
/* Forget a response whose frames were still arriving, a COPY's state, and
 * the rows messages kept for results not yet whole. */
void pgbi_part_drop(pgb_conn *c);
/* Ring the broker's bell if it sleeps. */
void pgbi_notify_broker(pgb_conn *c);
/* Wait until the request ring has need bytes free (or a response came):
 * 0, or -1 when the broker is gone (the connection is then bad). */
int pgbi_wait_space(pgb_conn *c, uint32_t need);
/* Wait until something arrives in the response ring: 0 or -1 as above. */
int pgbi_wait_response(pgb_conn *c);
/* 1 when the broker has closed its end of the registration socket. */
int pgbi_broker_gone(pgb_conn *c);
/* The connection is bad for why: an error result that says so. */
pgb_result *pgbi_broken(pgb_conn *c, const char *why);
/* The broker went away: the connection is bad. 1 when it said goodbye. */
int pgbi_mark_gone(pgb_conn *c);
/* pgbi_mark_gone, and the error for a statement it leaves unanswered. */
pgb_result *pgbi_gone_error(pgb_conn *c);
/* Stream one request into the request ring: 0, -EPIPE (broker gone) or
 * -EPROTO (corrupt ring). */
int pgbi_send_blob(pgb_conn *c, const uint8_t *blob, uint64_t total, uint32_t id);
/* The next whole response (its id in *id), waiting for it if block. */
pgb_result *pgbi_recv_next(pgb_conn *c, int block, uint32_t *id);

/* copy.c */
enum { PGBI_COPY_NONE = 0, PGBI_COPY_IN, PGBI_COPY_OUT };
/* Forget c's COPY: buffers, rows, state. */
void pgbi_copy_drop(pgb_conn *c);
/* Take one COPY data frame from the response ring: 1 when a chunk of rows
 * is complete (kept when it is our COPY OUT's, else dropped), 0 when more
 * frames are to come, -1 when the broker broke the rules. */
int pgbi_copy_rx(pgb_conn *c);
/* A response r for id arrived: a COPY starts or ends. */
void pgbi_copy_track(pgb_conn *c, uint32_t id, const pgb_result *r);
/* notify.c */
/* Keep a notification blob's content for pgb_notifies: 0, -1 corrupt. */
int pgbi_notice_keep(pgb_conn *c, const uint8_t *blob, uint64_t len);
/* Free the notifications not taken. */
void pgbi_notices_drop(pgb_conn *c);

/* client.c */
/* Free the stash of answers nobody has asked for yet. */
void pgbi_stash_drop(pgb_conn *c);
/* Statement id in flight: 1 when sent with PGB_CHUNKED, 0 when not, -1
 * when it is not in flight. */
int pgbi_flight_chunked(const pgb_conn *c, uint32_t id);
/* Stash every response that has arrived, without waiting: 0, -EPIPE or
 * -EPROTO when the connection broke. */
int pgbi_drain_responses(pgb_conn *c);

#endif
