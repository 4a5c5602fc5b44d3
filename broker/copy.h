/* copy.c: COPY streamed through the rings, both ways. COPY FROM STDIN: the
 * agent's data frames go to libpq (PQputCopyData) only while the backend's
 * output is drained; COPY TO STDOUT: the server's rows go to the agent in
 * chunks, and the backend is not read on while the agent's queue is full.
 * The broker never holds more than a few chunks of a COPY. */
#ifndef PGB_BROKER_COPY_H
#define PGB_BROKER_COPY_H

#include <libpq-fe.h>

#include "broker.h"

/* COPY TO STDOUT bytes queued for one agent before its backend is paused. */
#define COPY_QUEUE_MAX (4u * COPY_CHUNK)

/* The statement on be reached PGRES_COPY_IN or PGRES_COPY_OUT (x, which
 * this takes). Its agent gets x as a response that is not the last, and
 * the COPY runs. A COPY nobody can take (a second one in the same string,
 * or its agent gone) is ended here: COPY IN with an error, COPY OUT read
 * and dropped. 1 when drain must stop (COPY IN: the agent's data drives
 * it), 0 when drain goes on. */
int copy_begin(struct broker *b, struct backend *be, PGresult *x);

enum copy_pump { COPY_ENDED, COPY_WAIT_INPUT, COPY_WAIT_AGENT };
/* COPY TO STDOUT on be: move the rows libpq has to the agent. COPY_ENDED
 * when the data is over (drain takes the results), COPY_WAIT_INPUT when
 * libpq needs more input (poll), COPY_WAIT_AGENT when the agent's queue is
 * full (no poll: copy_sent resumes it). */
enum copy_pump copy_out_pump(struct broker *b, struct backend *be);

/* request_read met a COPY frame h at the head of a's request ring: 1 taken
 * (forwarded, or dropped when its COPY is over), 0 left there (the backend
 * is busy sending: a is stalled until copy_flushed), -1 a protocol error
 * (*why). */
int copy_in_frame(struct broker *b, struct agent *a, const struct frame_hdr *h,
		  enum agent_doom *why);
/* be's output is drained: a stalled agent's data goes on. */
void copy_flushed(struct broker *b, struct backend *be);
/* agent_flush wrote a chunk of n bytes into a's ring. */
void copy_sent(struct broker *b, struct agent *a, uint32_t n);
/* The agent of be's COPY is gone: COPY IN is ended with an error, COPY OUT
 * read on (and dropped). 1 when that is all (no cancel needed). */
int copy_orphan(struct broker *b, struct backend *be);
/* be closes: its COPY state goes, and a stalled agent is let go. */
void copy_forget(struct broker *b, struct backend *be);
/* Once per loop pass: the COPYs that go on (read results or rows). */
void copy_run(struct broker *b);

#endif
