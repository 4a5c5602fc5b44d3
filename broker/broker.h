/* pgbroker daemon: the objects every broker module works on. Only the
 * shared structs live here; each module declares its functions in its own
 * header (docs/architecture.md). */
#ifndef PGB_BROKER_H
#define PGB_BROKER_H

#include <libpq-fe.h>
#include <stdint.h>
#include <sys/types.h>

#include "breaker.h"
#include "chan.h"
#include "config.h"
#include "list.h"
#include "loop.h"
#include "policy.h"
#include "proto.h"
#include "ratelimit.h"
#include "stats.h"
#include "stmtcache.h"
#include "uidcount.h"

/* A loop completion's tag: kind | slot | generation (see tag_make). */
enum tag_kind {
	TAG_NONE = 0,
	TAG_ACCEPT,
	TAG_SIGNAL,
	TAG_HELLO,      /* new agent socket readable: its hello */
	TAG_HUP,        /* agent socket hang-up */
	TAG_BELL,       /* agent channel futex wait */
	TAG_BACKEND,    /* libpq socket poll */
	TAG_CANCEL,     /* a cancel thread finished */
	TAG_LISTENER,   /* the listening connection's socket (listener.c) */
};

static inline uint64_t tag_make(enum tag_kind k, uint32_t slot, uint32_t gen)
{
	return (uint64_t)k << 56 | (uint64_t)(slot & 0xffffff) << 32 | gen;
}
#define TAG_KIND(t) ((enum tag_kind)((t) >> 56))
#define TAG_SLOT(t) ((uint32_t)((t) >> 32) & 0xffffff)
#define TAG_GEN(t)  ((uint32_t)(t))

#define MS 1000000LL   /* nanoseconds in a millisecond */

struct agent;
struct backend;

enum { DISCARD_ALL = 1, DISCARD_CLOSE = 2 };	/* request->session, backend->discard */

/* Where a request is. req_set_state (request.c) is the only place that
 * changes it, and with it the list r->link is on and that list's count. */
enum req_state {
	RQ_NONE = 0,   /* on no list: new, being placed, or finished */
	RQ_QUEUED,     /* agent->queue, behind its running statement (a->nqueued) */
	RQ_HELD,       /* agent->held: independent, over max_backends_per_agent */
	RQ_WAITING,    /* broker->waitq, for a backend (b->nwaiting; since enq_ns) */
	RQ_DELAYED,    /* broker->delayed, a retry's backoff (until due_ns) */
	RQ_PIPED,      /* a backend's pipeq, pipelined behind its head (r->be) */
	RQ_RUNNING,    /* be->req: running there (r->be), or a pipeline's head */
};

/* One statement from an agent, from its arrival to its last response byte. */
struct request {
	enum req_state state;     /* only req_set_state assigns it */
	struct list link;         /* the list of its state */
	struct agent *agent;      /* NULL once the agent is gone */
	uint32_t id;
	uint32_t flags;
	uint8_t *blob;            /* the request as received */
	uint64_t nbytes;          /* its length, counted in agent->nbytes */
	struct req_view v;
	const char **params;
	int64_t enq_ns;           /* when it started waiting for a backend */
	int64_t start_ns;         /* when it arrived */
	struct backend *be;       /* running there */
	int attempts;             /* retries so far */
	int64_t due_ns;           /* RQ_DELAYED: when to run again */
	int session;              /* the text may change session state: DISCARD_ALL,
				     or DISCARD_CLOSE when DISCARD ALL cannot undo it */
	int pipe_ok;              /* may share a backend's pipeline: pipelinable
				     (sql_classify) and quick lately (pipeline.h) */
	uint64_t text_hash;       /* pipelinable: stmt_hash of its text, whose run
				     times are kept (exec_time); 0: none kept */
	uint32_t prep_id;         /* ran as this backend's prepared statement */
	int prep_sent;            /* ...whose Prepare went out with it */
	int prep_failed;          /* ...and failed: the server has no such statement */
	int no_prep;              /* run it unprepared (the prepared one went stale) */
	uint32_t stale_id;        /* run as text after prepared statement stale_id of */
	uint32_t stale_slot;      /* ...backend stale_slot failed: stale if the text works */
	struct list alink;        /* agent->active while it left the agent queue */
	int counted;              /* independent, one of its agent's nindep */
	/* REQ_BATCH: the statements, their parameters, their results */
	char *begin;              /* a BEGIN the broker answered itself: it goes to
				     the backend first (exec.c, begin_start) */
	uint32_t nsub;
	struct req_view *subs;
	const char ***sparams;
	PGresult **bres;
	uint32_t bdone;           /* results collected so far */
	int copied;               /* a COPY of it started: never run again */
	PGresult *brows;          /* rows of statement bdone that came one at a time */
	struct mem_budget *budget; /* blob's nbytes are counted there until request_free */
};

/* A result on its way to an agent. */
struct response {
	struct list link;         /* agent->responses */
	uint32_t id;
	PGresult *res;            /* NULL for the broker's own errors */
	struct resp_src src;
	struct resp_cursor cur;
	char msg[256];            /* broker's own error text */
	char *diag;               /* packed error fields of a failed res, or NULL */
	uint8_t *chunk;           /* COPY TO STDOUT rows (FRAME_COPY_DATA), src.head.total
				     bytes; then res is NULL and src unused */
	uint8_t *rows;            /* encoded rows (src.rows), or NULL */
	uint64_t charged;         /* bytes counted in the memory budget (memory.c) */
	uint8_t *nblob;           /* set: a notification (FRAME_NOTIFY), these bytes */
};

/* An agent's life; agent_set_state (agent.c) is the only place that
 * changes it, with the hello list and the registration count. */
enum agent_state {
	AG_NEW = 0,    /* calloc'd, not yet accepted */
	AG_HELLO,      /* accepted, on broker->hello until its hello or deadline */
	AG_READY,      /* registered: has its channel */
	AG_GONE,       /* being freed (agent_free) */
};

/* Why an agent is disconnected (agent_fail); agent_doom_names has the text
 * the log shows. Every reason but DOOM_HANGUP and DOOM_CANCEL_DONE is the
 * agent's fault. */
enum agent_doom {
	DOOM_NONE = 0,
	DOOM_HANGUP,          /* its socket hung up (or the broker closes) */
	DOOM_HELLO_POLL,
	DOOM_HELLO_BAD,
	DOOM_HELLO_VERSION,
	DOOM_HELLO_BELL,
	DOOM_HELLO_CHANNEL,
	DOOM_HELLO_EVENTFD,
	DOOM_HELLO_TIMEOUT,
	DOOM_REQ_CORRUPT,
	DOOM_REQ_TYPE,
	DOOM_REQ_NESTED,
	DOOM_REQ_LENGTH,
	DOOM_REQ_SEQUENCE,
	DOOM_REQ_LONG,
	DOOM_REQ_SHORT,
	DOOM_RESP_CORRUPT,
	DOOM_RESP_NOMEM,
	DOOM_SEND_TIMEOUT,
	DOOM_CANCEL_DONE,     /* a cancel request (REG_F_CANCEL), answered */
	DOOM_COPY_FRAME,
	DOOM_COPY_NESTED,
	DOOM_COPY_NOMEM,
};

/* What an agent lost with a backend that died while pinned to it. Until
 * the agent acknowledges it (ROLLBACK for LOST_TXN, pgb_reset for both)
 * the broker answers each of its statements with 08006, so that nothing
 * after the loss runs in autocommit or without the session's state. */
enum agent_lost { LOST_NONE = 0, LOST_TXN, LOST_SESSION };

struct agent {
	uint32_t slot, gen;
	enum agent_state state;
	int sock;
	int sock_wake;            /* REG_F_SOCK_WAKE: wake pgb_socket through sock */
	uint64_t cancel_key;      /* what a cancel request must give (REG_F_CANCEL) */
	pid_t pid;
	uid_t uid;
	int64_t since_ms;
	int64_t hello_deadline_ns;
	struct list hello_link;   /* broker hello list while AG_HELLO */

	struct chan_shm *chan;
	uint64_t chan_size;
	struct ring req, resp;    /* broker's own positions; never re-read from shm */
	int bell_armed;           /* a TAG_BELL wait is in the ring */
	int want_wake;            /* on the wake list */
	struct list wake_link;
	struct list ready_link;   /* on broker->ready: has more to read */
	uint64_t svc_pass;        /* the loop pass svc_budget is for */
	int svc_budget;           /* frames it may still read in that pass */
	uint32_t idle_bells;      /* bells in a row that brought no work */
	uint64_t resp_frames;     /* response frames published: progress */
	int64_t snooze_ns;        /* on broker->snoozed: its bell is not heard until then */
	struct list snooze_link;

	struct chan_rx rx;        /* request being assembled from frames */

	struct list queue;        /* requests not yet running, in order */
	uint32_t nqueued;
	struct request *running;  /* the serial statement this agent has in flight */
	uint32_t nindep;          /* independent statements given to the pool */
	struct list held;         /* RQ_HELD: independent ones held back, the agent
				     holds max_backends_per_agent backends already */
	struct list kick_link;    /* on broker->kicks: run its next statement this pass */
	struct list active;       /* every request out of the queue: running,
				     waiting for a backend, or retrying */
	uint32_t nactive;
	uint64_t nbytes;          /* request bytes held in queue and active */
	int efd;                  /* eventfd for pgb_socket, signalled when fd_armed */
	int bell_fd;              /* eventfd the agent rings (CHAN_BELL_EVENTFD), else -1 */
	struct backend *pinned;   /* backend holding this agent's transaction */
	enum agent_lost lost;     /* its transaction or session died with its backend */
	int txn_open;             /* its session is inside a transaction: RESP_IN_TXN */
	int session_pinned;       /* changed session state: keeps its backend */
	char *begin;              /* its BEGIN, answered but not yet sent: it goes with
				     the transaction's first statement (request.c) */
	struct list responses;    /* results to stream, in order */
	int64_t blocked_since_ns; /* response waiting for ring space since (its last progress) */
	struct list blocked_link; /* broker blocked list while that is set */
	int64_t blocked_space;    /* response ring space the last flush found too small */
	uint32_t nresponses;
	int resp_more;            /* responses being queued are not the last for their id */
	int throttled;            /* reading stopped: agent_backlogged() */
	int copy_stalled;         /* its COPY data waits for its backend's output to drain */
	uint64_t copy_queued;     /* COPY TO STDOUT bytes queued in responses */
	enum agent_doom doom;     /* set: disconnect at the end of this pass */
	struct list doom_link;

	struct lsn_agent *lsn;    /* listener.c: its channels, from its first LISTEN */
	uint32_t nnotify;         /* notifications queued in responses */

	uint64_t statements, errors;
	/* memory.c: bytes held for this agent besides its requests (nbytes):
	 * responses not yet wholly in its ring (resp_mem of them) and the rows
	 * and input of its statements being read */
	uint64_t mem, resp_mem;
	uint64_t rx_mem;          /* the request being reassembled, counted */
	struct list paused;       /* backends paused until its ring drains */
};

enum { STOP_NONE = 0, STOP_DRAIN, STOP_FAST };

/* The rows of the statement a backend is reading (rows.c): libpq in
 * single-row mode, each row encoded here at once, sent ahead in rows
 * messages (RESP_ROWS) whenever a chunk's worth has gathered. */
struct rows {
	uint8_t *buf;             /* encoded rows not yet sent */
	uint64_t len, cap;        /* cap is counted in the budget */
	uint32_t n;               /* rows in buf */
	uint32_t nfields;
	int set_done;             /* the row set ended (its PGRES_TUPLES_OK came) */
	int streamed;             /* rows messages went out for this statement */
	int too_large;            /* one could not be sent (over 2 GiB): PB004 */
	uint64_t in_est;          /* input libpq read but not yet handed out, counted */
};

enum be_pause { PAUSE_NONE = 0, PAUSE_AGENT, PAUSE_BUDGET, PAUSE_RESUME };

/* A backend's state; be_set_state (backend.c) is the only place that
 * changes it, with the idle, connecting and pipeline lists and the counts.
 * BE_ROLLBACK to BE_PROBE run the broker's own statement (be_reset). */
enum be_state {
	BE_FREE = 0,
	BE_CONNECTING,  /* on broker->connecting (nconnecting) */
	BE_IDLE,        /* on broker->idle, most recently used first (nidle) */
	BE_BUSY,        /* running an agent's statement or batch (nbusy) */
	BE_PIPELINE,    /* running a shared pipeline, on broker->pipes (nbusy) */
	BE_PINNED,      /* idle inside an agent's transaction or session (npinned) */
	BE_ROLLBACK,    /* rolling back what nobody owns any more */
	BE_DISCARD,     /* DISCARD ALL after an agent changed session state */
	BE_VALIDATE,    /* pinging an idle backend (validation_interval_ms) */
	BE_PROBE,       /* asking the server's capacity after a connect */
	BE_PARKED,      /* clean, waiting for its cancel thread before reuse */
};

struct backend {
	uint32_t slot, gen;
	enum be_state state;
	PGconn *pg;
	int fd;
	uint32_t poll_seq;        /* generation of the armed poll */
	int poll_events;          /* events of the armed poll, 0 when none */
	int flushing;             /* output not yet flushed: wants POLLOUT */
	struct list link;         /* idle list or connecting list */
	struct request *req;
	struct agent *owner;      /* pinned to this agent */
	PGresult *res;            /* result kept while draining */
	int64_t created_ns, last_used_ns, deadline_ns;
	int pg_pid;
	int64_t validated_ns;     /* last proof of life: a statement or a ping */
	int64_t retire_ns;        /* max_connection_lifetime_ms, jittered */
	int cancel_pending;       /* a cancel thread is out (atomic) */
	int discard;              /* before anyone else uses it: DISCARD_ALL runs
				     DISCARD ALL, DISCARD_CLOSE closes it */
	int dirty;                /* the broker's own statement failed: close it */
	uint64_t breaker_ticket;  /* connecting: the breaker round it started in */
	/* BE_PIPELINE: autocommit statements from several agents, each with
	 * its own Sync: req is the head, pipeq holds the ones behind it. */
	struct list pipeq;
	uint32_t npipe;           /* requests in flight, head included */
	int64_t head_ns;          /* when the head started */
	struct list plink;        /* broker->pipes while BE_PIPELINE */
	uint32_t cfg_gen;         /* b->cfg_gen when it connected */
	struct stmt_cache stmts;  /* prepared on this connection */
	int flush_due;            /* on broker->flushq: output waits for pool_flush */
	struct list flink;
	int in_txn;               /* the running statement started inside a transaction */
	int unsupported;          /* a COPY not relayed: answer PB009 */
	int begin_step;           /* running a deferred BEGIN before req (exec.c):
				     1 its results, 2 the statement's, 3 the Sync */
	int begin_pipe;           /* ...in one pipeline with req, else alone first */
	int copy_in;              /* in COPY FROM STDIN: the agent's data goes here */
	int copy_out;             /* in COPY TO STDOUT: rows go to the agent (or away) */
	int copy_paused;          /* ...not read on: the agent's queue is full */
	int copy_due;             /* on broker->copyq: read on at the end of the pass */
	struct list copy_link;
	uint8_t *chunk;           /* COPY TO STDOUT rows being gathered, chunk_len bytes */
	uint32_t chunk_len;
	uint64_t served;
	struct rows rows;         /* rows of the running statement */
	enum be_pause paused;     /* not reading its socket: PAUSE_AGENT (on the
				     agent's paused list), PAUSE_BUDGET (on
				     mem.waiting), PAUSE_RESUME (on mem.resume) */
	struct list pause_link;
	int bloated;              /* libpq's buffers grew past BE_BUF_BLOAT: close,
				     not reuse, after this statement */
	const char *too_large;    /* be_close_too_large: the head's PB004 text */
};

/* The memory budget (memory.c): what the broker holds for agents. */
struct mem_budget {
	uint64_t used;            /* requests, responses not yet in a ring, rows
				     and input being read */
	uint64_t peak;
	struct list waiting;      /* backends paused until used is under the budget */
	struct list resume;       /* backends to read again at the end of this pass */
};

struct broker {
	struct pgb_config cfg;
	struct loop *loop;        /* loop.h: io_uring or epoll */
	int listen_fd, lock_fd, signal_fd;
	int dir_fd;               /* the run directory, checked (piddir.c) */
	int64_t accept_retry_ns;  /* out of descriptors: accept again at this time */
	int accept_failing;       /* said so once in the log */
	char sock_path[300], lock_path[300], stats_path[300];
	int made_dir;             /* the run directory is ours to remove */
	int argc;                 /* for reloads: the flags still win */
	char **argv;
	int stopping;             /* STOP_DRAIN or STOP_FAST once a signal came */
	int64_t stop_deadline_ns;
	uint32_t cfg_gen;         /* bumped when backend settings change */

	struct agent **agents;    /* by slot */
	uint32_t *free_slots;
	uint32_t nfree;
	uint32_t nagents;
	uint32_t agent_gen;
	struct list hello;        /* agents that have not said hello yet, oldest first */
	struct uidcount per_uid;  /* agents per uid, registered or saying hello */
	struct ratelimit rl_refused;  /* warnings about refused agents */
	struct ratelimit rl_silent;   /* about connections closed before their hello */
	struct list wake;         /* agents to wake at the end of this pass */
	struct list kicks;        /* agents whose next statement may run now */
	struct list ready;        /* agents with unread requests (budget ran out) */
	struct list snoozed;      /* agents ringing for nothing, by snooze_ns */
	uint64_t pass;            /* loop passes so far */
	struct list blocked;      /* agents whose response ring is full */
	struct list doomed;       /* agents to disconnect at the end of this pass */

	struct backend *backends; /* nslots slots */
	uint32_t nslots;          /* max_pool_size may grow up to this by reload */
	struct list idle;         /* most recently used first */
	struct list connecting;
	uint32_t ntotal, nconnecting, nidle, nbusy, npinned;
	struct list waitq;        /* requests waiting for a backend, FIFO */
	uint32_t nwaiting;
	struct list delayed;      /* requests waiting out a retry backoff */
	struct list pipes;        /* backends running a shared pipeline */
	struct list flushq;       /* backends with pipelined output to send this pass */
	struct list copyq;        /* backends whose COPY goes on this pass (copy_run) */
	uint8_t *copy_buf;        /* one COPY FROM STDIN frame on its way to libpq */
	uint32_t copy_buf_size;
	uint32_t busy_target;     /* busy backends worth having: one per core */
	uint32_t pool_target;     /* backends the controller allows now (pool_ctl_tick):
				     from pool_size, within min/max_pool_size */
	struct pool_ctl ctl;      /* its memory (policy.h) */
	int64_t ctl_next_ns;      /* its next interval */
	uint32_t ctl_busy_peak, ctl_pinned_peak, ctl_waited;  /* this interval's counts */
	struct stmt_heat *heat;   /* statement texts seen lately */
	uint32_t stmt_token;      /* random, in the names of prepared statements */
	struct breaker breaker;   /* around connecting to PostgreSQL */
	int cancel_efd;           /* cancel threads report here */
	uint64_t rng;
	uint32_t connect_fails;   /* consecutive failed connects (not observations) */
	char last_connect_error[256];  /* libpq's first line, without the SQLSTATE */
	char last_connect_code[6];     /* the server's SQLSTATE for it, "" none */
	int primary;              /* the last backend connected said in_hot_standby=off */

	struct mem_budget mem;
	struct listener *lsn;     /* listener.c: notifications */

	struct stats_seg *seg;
	struct stats_data st;     /* broker's working copy, published per pass */
	struct health_mon *health; /* health.c: sampling state */
	int64_t now_ns;
	int now_stale;            /* a loop wait ran since now_ns was read */
};

#endif
