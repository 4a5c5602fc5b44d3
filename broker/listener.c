/* Notifications without pinning: the broker's listening connection, the
 * channels its agents listen on, and delivery to each agent's bounded
 * queue. See listener.h and docs/notifications.md.
 *
 * A channel (struct lchan) is wanted while an agent listens on it (nsubs);
 * `on` says the connection listens on it (confirmed by the server), `sent`
 * which command for it is in flight. A wanted channel that is not on (or
 * an unwanted one that is) waits on the dirty list for the next command:
 * one simple query of LISTEN/UNLISTEN statements at a time. A LISTEN is
 * answered once its channel is on, so a notification committed after the
 * agent's LISTEN returned always reaches it. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "broker.h"
#include "classify.h"
#include "listener.h"
#include "log.h"
#include "request.h"
#include "response.h"

#define LSN_BUCKETS 1024u      /* channel hash table; chains grow past it */
#define LSN_CMD_MAX 64u        /* channels per command */

enum lsn_state {
	LS_DOWN = 0,   /* no connection; connects at retry_ns once a channel is wanted */
	LS_CONNECTING, /* PQconnectPoll under way, until deadline_ns */
	LS_READY,      /* connected, no command in flight */
	LS_BUSY,       /* a LISTEN/UNLISTEN command in flight (inflight[]) */
};

enum { CMD_NONE = 0, CMD_LISTEN, CMD_UNLISTEN };

struct lchan {
	struct lchan *hnext;
	uint32_t hash;
	struct list subs;        /* struct lsub.clink */
	uint32_t nsubs;
	struct list dirty_link;  /* on l->dirty: wants a command */
	int on;                  /* the connection listens on it */
	int sent;                /* CMD_* in flight for it */
	int lost;                /* was on when the connection was lost: say so when on again */
	char name[NOTIFY_NAME_MAX + 1];
};

/* One agent listening on one channel. */
struct lsub {
	struct list clink;       /* lchan->subs */
	struct list alink;       /* lsn_agent->subs */
	struct agent *a;
	struct lchan *ch;
	struct list waiters;     /* struct lwait: LISTENs answered once ch is on */
	int missed;              /* a drop was reported; cleared by the next delivery */
};

struct lwait {
	struct list link;
	struct request *r;
};

/* Per agent, from its first LISTEN (agent->lsn). */
struct lsn_agent {
	struct list subs;
	uint32_t nsubs;
	uint32_t sent;           /* notifications queued to it, counting up */
	uint32_t taken;          /* notify_taken as last believed */
};

struct listener {
	enum lsn_state state;
	PGconn *pg;
	int fd;
	int pg_pid;
	uint32_t poll_seq;
	int poll_events;
	int flushing;
	int64_t deadline_ns;     /* LS_CONNECTING: give up then */
	int64_t retry_ns;        /* LS_DOWN: connect again then */
	int failures;            /* connects failed in a row */
	uint64_t rng;
	struct lchan *buckets[LSN_BUCKETS];
	uint32_t nchans, nwanted;
	struct list dirty;
	struct lchan *inflight[LSN_CMD_MAX];
	uint32_t ninflight;
	char cmd_error[256];     /* the command in flight failed: the first error */
	char name[64];           /* its application_name */
};

static void lsn_kick(struct broker *b);

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static struct lchan *chan_find(struct listener *l, const char *name)
{
	uint32_t h = name_hash(name);

	for (struct lchan *ch = l->buckets[h % LSN_BUCKETS]; ch; ch = ch->hnext)
		if (ch->hash == h && strcmp(ch->name, name) == 0)
			return ch;
	return NULL;
}

static struct lchan *chan_get(struct listener *l, const char *name)
{
	struct lchan *ch = chan_find(l, name);
	uint32_t h;

	if (ch)
		return ch;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	h = name_hash(name);
	ch->hash = h;
	snprintf(ch->name, sizeof(ch->name), "%s", name);
	list_init(&ch->subs);
	list_init(&ch->dirty_link);
	ch->hnext = l->buckets[h % LSN_BUCKETS];
	l->buckets[h % LSN_BUCKETS] = ch;
	l->nchans++;
	return ch;
}

/* The one place a channel's want may have changed: onto the dirty list
 * when the connection's state differs and no command for it is out, and
 * freed when nothing holds it any more. 1 when it was freed. */
static int chan_settle(struct listener *l, struct lchan *ch)
{
	int want = ch->nsubs > 0;

	if (ch->sent)
		return 0;
	if (want != ch->on) {
		if (list_empty(&ch->dirty_link))
			list_add_tail(&l->dirty, &ch->dirty_link);
		return 0;
	}
	list_del(&ch->dirty_link);
	if (!want && !ch->on) {
		struct lchan **pp = &l->buckets[ch->hash % LSN_BUCKETS];

		while (*pp != ch)
			pp = &(*pp)->hnext;
		*pp = ch->hnext;
		l->nchans--;
		free(ch);
		return 1;
	}
	return 0;
}

/* --- answering the agents' statements --- */

static void answer_tag(struct broker *b, struct request *r, const char *tag)
{
	if (r->agent) {
		b->st.c.statements++;
		agent_respond_tag(b, r->agent, r->id, tag);
	}
	request_done(b, r);
}

/* The LISTENs waiting on s: answered with success, or failed with why. */
static void waiters_answer(struct broker *b, struct lsub *s, const char *state, const char *why)
{
	struct list *pos;

	while ((pos = list_pop(&s->waiters))) {
		struct lwait *w = list_entry(pos, struct lwait, link);
		struct request *r = w->r;

		free(w);
		if (state)
			request_fail(b, r, state, "%s", why);
		else
			answer_tag(b, r, "LISTEN");
	}
}

/* s ends; 1 when its channel was freed with it. */
static int sub_del(struct broker *b, struct lsub *s)
{
	struct listener *l = b->lsn;
	struct lchan *ch = s->ch;
	struct lsn_agent *an = s->a->lsn;

	/* LISTENs still waiting: the agent unlistened or left first. */
	waiters_answer(b, s, NULL, NULL);
	list_del(&s->clink);
	list_del(&s->alink);
	ch->nsubs--;
	an->nsubs--;
	if (!ch->nsubs)
		l->nwanted--;
	free(s);
	return chan_settle(l, ch);
}

static struct lsub *sub_find(struct agent *a, const char *name)
{
	struct list *pos, *tmp;

	if (!a->lsn)
		return NULL;
	list_for_each_safe(pos, tmp, &a->lsn->subs) {
		struct lsub *s = list_entry(pos, struct lsub, alink);

		if (strcmp(s->ch->name, name) == 0)
			return s;
	}
	return NULL;
}

static struct lsub *sub_new(struct broker *b, struct agent *a, struct lchan *ch)
{
	struct lsub *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->a = a;
	s->ch = ch;
	list_init(&s->waiters);
	list_add_tail(&ch->subs, &s->clink);
	list_add_tail(&a->lsn->subs, &s->alink);
	if (!ch->nsubs++)
		b->lsn->nwanted++;
	a->lsn->nsubs++;
	return s;
}

static int do_listen(struct broker *b, struct request *r, const char *name)
{
	struct listener *l = b->lsn;
	struct agent *a = r->agent;
	struct lsub *s = sub_find(a, name);
	struct lchan *ch;
	struct lwait *w;

	if (!s && a->lsn->nsubs >= LSN_AGENT_MAX) {
		request_fail(b, r, "PB008", "too many channels: an agent may listen on %u at once",
			     LSN_AGENT_MAX);
		return 1;
	}
	if (!s) {
		ch = chan_get(l, name);
		s = ch ? sub_new(b, a, ch) : NULL;
		if (!s) {
			if (ch)
				chan_settle(l, ch);
			request_fail(b, r, "PB006", "broker out of memory");
			return 1;
		}
		chan_settle(l, ch);
	}
	ch = s->ch;
	/* Listening now, and no UNLISTEN for it on the way: listening already. */
	if (ch->on && ch->sent != CMD_UNLISTEN && list_empty(&s->waiters)) {
		answer_tag(b, r, "LISTEN");
		return 1;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		if (list_empty(&s->waiters))
			sub_del(b, s);
		request_fail(b, r, "PB006", "broker out of memory");
		return 1;
	}
	w->r = r;
	list_add_tail(&s->waiters, &w->link);
	lsn_kick(b);
	return 1;
}

static void unlisten_all(struct broker *b, struct agent *a)
{
	struct list *pos;

	if (!a->lsn)
		return;
	while ((pos = a->lsn->subs.next) != &a->lsn->subs)
		sub_del(b, list_entry(pos, struct lsub, alink));
}

int listener_take(struct broker *b, struct request *r)
{
	char name[NOTIFY_NAME_MAX + 1];
	enum sql_listen_kind kind;
	struct agent *a = r->agent;
	struct lsub *s;

	if (r->nsub || !a)
		return 0;
	kind = sql_listen(r->v.sql, name, sizeof(name));
	if (kind == SQL_LISTEN_NONE)
		return 0;
	if (!a->lsn) {
		a->lsn = calloc(1, sizeof(*a->lsn));
		if (!a->lsn) {
			request_fail(b, r, "PB006", "broker out of memory");
			return 1;
		}
		list_init(&a->lsn->subs);
		a->lsn->taken = __atomic_load_n(&a->chan->notify_taken, __ATOMIC_RELAXED);
		a->lsn->sent = a->lsn->taken;
	}
	switch (kind) {
	case SQL_LISTEN_ON:
		return do_listen(b, r, name);
	case SQL_UNLISTEN:
		if ((s = sub_find(a, name)))
			sub_del(b, s);
		break;
	default:
		unlisten_all(b, a);
		break;
	}
	answer_tag(b, r, "UNLISTEN");
	lsn_kick(b);
	return 1;
}

void listener_agent_gone(struct broker *b, struct agent *a)
{
	if (!a->lsn)
		return;
	unlisten_all(b, a);
	free(a->lsn);
	a->lsn = NULL;
	lsn_kick(b);
}

/* --- delivery --- */

static void queue_one(struct broker *b, struct agent *a, int32_t pid, uint32_t flags,
		      const char *relname, const char *extra)
{
	uint64_t n = notify_encoded_len(relname, extra);
	uint8_t *blob;

	/* The broker's own notices pass the bound, once per channel and
	 * event; still not without end for an agent that never reads. */
	if ((flags & NOTIFY_MISSED) && a->nnotify >= 2 * LSN_QUEUE_MAX)
		return;
	blob = n ? malloc(n) : NULL;
	if (!blob) {
		b->st.c.notify_dropped++;
		return;
	}
	notify_encode(blob, pid, flags, relname, extra);
	a->lsn->sent++;
	agent_notify(b, a, blob, (uint32_t)n);
}

/* Notifications delivered to a and not yet taken: sent minus what the
 * agent says it took, believed only within what was sent. */
static uint32_t outstanding(struct agent *a)
{
	struct lsn_agent *an = a->lsn;
	uint32_t taken = __atomic_load_n(&a->chan->notify_taken, __ATOMIC_RELAXED);

	if (taken - an->taken <= an->sent - an->taken)
		an->taken = taken;
	return an->sent - an->taken;
}

static void deliver(struct broker *b, struct lsub *s, const PGnotify *n)
{
	struct agent *a = s->a;

	if (a->doom || !list_empty(&s->waiters))
		return;
	if (outstanding(a) >= LSN_QUEUE_MAX || a->nnotify >= LSN_QUEUE_MAX) {
		b->st.c.notify_dropped++;
		if (!s->missed) {
			/* The last in its queue (beyond the bound, one per
			 * channel): from here on some are missing. */
			s->missed = 1;
			queue_one(b, a, 0, NOTIFY_MISSED, s->ch->name,
				  "pgbroker: queue full, notifications dropped after this one");
		}
		return;
	}
	s->missed = 0;
	b->st.c.notify_delivered++;
	queue_one(b, a, n->be_pid, 0, n->relname, n->extra ? n->extra : "");
}

/* Tell every agent listening on ch that it may have missed some. */
static void tell_missed(struct broker *b, struct lchan *ch, const char *why)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &ch->subs) {
		struct lsub *s = list_entry(pos, struct lsub, clink);

		if (!s->a->doom && list_empty(&s->waiters))
			queue_one(b, s->a, 0, NOTIFY_MISSED, ch->name, why);
	}
}

static void take_notifies(struct broker *b)
{
	struct listener *l = b->lsn;
	PGnotify *n;

	while (l->pg && (n = PQnotifies(l->pg))) {
		struct lchan *ch = chan_find(l, n->relname);
		struct list *pos, *tmp;

		if (ch)
			list_for_each_safe(pos, tmp, &ch->subs)
				deliver(b, list_entry(pos, struct lsub, clink), n);
		PQfreemem(n);
	}
}

/* --- the connection --- */

static void lsn_arm(struct broker *b, int events)
{
	struct listener *l = b->lsn;

	if (l->poll_events == events)
		return;
	if (l->poll_events)
		loop_cancel(b->loop, l->fd, tag_make(TAG_LISTENER, 0, l->poll_seq));
	l->poll_seq++;
	l->poll_events = events;
	if (events)
		loop_poll(b->loop, l->fd, (unsigned)events, tag_make(TAG_LISTENER, 0, l->poll_seq));
}

/* The one place the connection's state changes. */
static void lsn_set_state(struct listener *l, enum lsn_state to)
{
	l->state = to;
}

static void lsn_disconnect(struct broker *b)
{
	struct listener *l = b->lsn;

	lsn_arm(b, 0);
	if (l->pg)
		PQfinish(l->pg);
	l->pg = NULL;
	l->fd = -1;
	l->pg_pid = 0;
	l->flushing = 0;
	lsn_set_state(l, LS_DOWN);
}

/* Every channel, for the rare events that touch them all. */
#define for_each_chan(l, ch, i, nx)                                         \
	for (i = 0; i < LSN_BUCKETS; i++)                                   \
		for (ch = (l)->buckets[i]; ch && ((nx = ch->hnext), 1); ch = nx)

/* Every LISTEN waiting on ch fails: its agent does not listen there. */
static void fail_waiters(struct broker *b, struct lchan *ch, const char *state, const char *why)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &ch->subs) {
		struct lsub *s = list_entry(pos, struct lsub, clink);

		if (list_empty(&s->waiters))
			continue;
		waiters_answer(b, s, state, why);
		if (sub_del(b, s))
			return;	/* ch is gone with its last listener */
	}
}

/* The connection could not be made: LISTENs waiting fail (their agents do
 * not listen), and the next try waits its backoff. */
static void lsn_connect_failed(struct broker *b, const char *why)
{
	struct listener *l = b->lsn;
	struct backoff bo = { .base_ms = b->cfg.retry_delay_ms, .cap_ms = b->cfg.retry_max_delay_ms,
			      .jitter_pct = 100, .rng = l->rng };
	struct lchan *ch, *nx;
	char msg[512];
	uint32_t i;

	snprintf(msg, sizeof(msg), "could not open the listening connection: %s", why);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("notifications: %s", msg);
	lsn_disconnect(b);
	l->failures++;
	l->retry_ns = b->now_ns + backoff_delay_ms(&bo, l->failures) * MS;
	l->rng = bo.rng;
	for_each_chan(l, ch, i, nx)
		fail_waiters(b, ch, "PB010", msg);
}

/* The connection broke: every channel it listened on may have missed
 * notifications. Its listeners hear it now, and again once it listens
 * again; reconnecting starts at once. */
static void lsn_lost(struct broker *b, const char *why)
{
	struct listener *l = b->lsn;
	struct lchan *ch, *nx;
	uint32_t i;

	log_warn("notifications: listening connection (pid %d) lost: %s; listening again",
		 l->pg_pid, why);
	b->st.c.notify_lost++;
	take_notifies(b);	/* what arrived before the break still counts */
	lsn_disconnect(b);
	l->ninflight = 0;
	l->retry_ns = b->now_ns;
	for_each_chan(l, ch, i, nx) {
		if (ch->on) {
			ch->lost = 1;
			tell_missed(b, ch, "pgbroker: listening connection lost; notifications "
				    "may be missed until it listens again");
		}
		ch->on = 0;
		ch->sent = 0;
		chan_settle(l, ch);
	}
	lsn_kick(b);
}

static void lsn_connect(struct broker *b)
{
	static const char *const keys[] = {
		"dbname", "application_name", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", NULL,
	};
	struct listener *l = b->lsn;
	char idle[32];
	const char *vals[7];

	snprintf(idle, sizeof(idle), "%d", (b->cfg.keepalive_initial_delay_ms + 999) / 1000);
	vals[0] = b->cfg.dsn;
	vals[1] = l->name;
	vals[2] = "1";
	vals[3] = idle;
	vals[4] = "10";
	vals[5] = "3";
	vals[6] = NULL;
	l->pg = PQconnectStartParams(keys, vals, 1);
	if (!l->pg || PQstatus(l->pg) == CONNECTION_BAD) {
		lsn_connect_failed(b, l->pg ? PQerrorMessage(l->pg) : "out of memory");
		return;
	}
	l->fd = PQsocket(l->pg);
	l->deadline_ns = b->now_ns + (int64_t)b->cfg.connection_timeout_ms * MS;
	lsn_set_state(l, LS_CONNECTING);
	lsn_arm(b, POLLOUT);
}

static void lsn_connect_poll(struct broker *b)
{
	struct listener *l = b->lsn;

	switch (PQconnectPoll(l->pg)) {
	case PGRES_POLLING_READING:
		l->fd = PQsocket(l->pg);
		lsn_arm(b, POLLIN);
		return;
	case PGRES_POLLING_WRITING:
		l->fd = PQsocket(l->pg);
		lsn_arm(b, POLLOUT);
		return;
	case PGRES_POLLING_OK:
		break;
	default:
		lsn_connect_failed(b, PQerrorMessage(l->pg));
		return;
	}
	if (PQsetnonblocking(l->pg, 1) < 0) {
		lsn_connect_failed(b, PQerrorMessage(l->pg));
		return;
	}
	l->pg_pid = PQbackendPID(l->pg);
	l->failures = 0;
	log_info("notifications: listening connection open (pid %d)", l->pg_pid);
	lsn_set_state(l, LS_READY);
	lsn_arm(b, POLLIN);
	lsn_kick(b);
}

/* Send one command for the dirty channels (up to LSN_CMD_MAX). */
static void lsn_send(struct broker *b)
{
	struct listener *l = b->lsn;
	size_t cap = 64, len = 0;
	char *sql = malloc(cap);
	int rc;

	if (!sql)
		return;
	sql[0] = '\0';
	l->ninflight = 0;
	l->cmd_error[0] = '\0';
	while (!list_empty(&l->dirty) && l->ninflight < LSN_CMD_MAX) {
		struct lchan *ch = list_entry(l->dirty.next, struct lchan, dirty_link);
		char *id = PQescapeIdentifier(l->pg, ch->name, strlen(ch->name));
		const char *verb = ch->on ? "UNLISTEN " : "LISTEN ";
		size_t need;

		if (!id)
			break;
		need = len + strlen(verb) + strlen(id) + 2;
		if (need + 1 > cap) {
			char *bigger = realloc(sql, 2 * need);

			if (!bigger) {
				PQfreemem(id);
				break;
			}
			sql = bigger;
			cap = 2 * need;
		}
		len += (size_t)sprintf(sql + len, "%s%s;", verb, id);
		PQfreemem(id);
		list_del(&ch->dirty_link);
		ch->sent = ch->on ? CMD_UNLISTEN : CMD_LISTEN;
		l->inflight[l->ninflight++] = ch;
	}
	if (!l->ninflight) {
		free(sql);
		return;
	}
	rc = PQsendQuery(l->pg, sql);
	free(sql);
	if (!rc) {
		lsn_lost(b, PQerrorMessage(l->pg));
		return;
	}
	lsn_set_state(l, LS_BUSY);
	rc = PQflush(l->pg);
	if (rc < 0) {
		lsn_lost(b, PQerrorMessage(l->pg));
		return;
	}
	l->flushing = rc == 1;
	lsn_arm(b, POLLIN | (l->flushing ? POLLOUT : 0));
}

/* The command in flight is done: its channels are on or off now (or, when
 * it failed, as before: it ran as one transaction). */
static void lsn_command_done(struct broker *b)
{
	struct listener *l = b->lsn;
	int ok = !l->cmd_error[0];

	lsn_set_state(l, LS_READY);
	for (uint32_t i = 0; i < l->ninflight; i++) {
		struct lchan *ch = l->inflight[i];
		struct list *pos, *tmp;
		int listen = ch->sent == CMD_LISTEN;

		ch->sent = CMD_NONE;
		if (ok)
			ch->on = listen;
		if (!ok && listen) {
			chan_settle(l, ch);	/* ch stays while it has listeners */
			fail_waiters(b, ch, "PB010", l->cmd_error);
			continue;
		}
		if (ch->on)
			list_for_each_safe(pos, tmp, &ch->subs)
				waiters_answer(b, list_entry(pos, struct lsub, clink), NULL, NULL);
		if (ch->on && ch->lost) {
			ch->lost = 0;
			tell_missed(b, ch, "pgbroker: listening again after the listening connection "
				    "was lost; notifications may have been missed");
		}
		chan_settle(l, ch);
	}
	if (!ok) {
		/* not at once again: a failing command would loop */
		log_warn("notifications: LISTEN/UNLISTEN failed: %s", l->cmd_error);
		l->retry_ns = b->now_ns + (int64_t)b->cfg.retry_delay_ms * MS;
	}
	l->ninflight = 0;
	lsn_kick(b);
}

void listener_on_poll(struct broker *b, uint64_t tag, int res)
{
	struct listener *l = b->lsn;

	if (!l || TAG_GEN(tag) != l->poll_seq || !l->pg)
		return;
	l->poll_events = 0;	/* one-shot: it fired */
	if (l->state == LS_CONNECTING) {
		lsn_connect_poll(b);
		return;
	}
	if (res < 0 && res != -ECANCELED) {
		lsn_lost(b, strerror(-res));
		return;
	}
	if (l->flushing && (res & POLLOUT)) {
		int rc = PQflush(l->pg);

		if (rc < 0) {
			lsn_lost(b, PQerrorMessage(l->pg));
			return;
		}
		l->flushing = rc == 1;
	}
	if ((res & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(l->pg)) {
		lsn_lost(b, PQerrorMessage(l->pg));
		return;
	}
	while (l->state == LS_BUSY && !PQisBusy(l->pg)) {
		PGresult *x = PQgetResult(l->pg);

		if (!x) {
			take_notifies(b);
			lsn_command_done(b);
			break;
		}
		if (PQresultStatus(x) == PGRES_FATAL_ERROR && !l->cmd_error[0]) {
			snprintf(l->cmd_error, sizeof(l->cmd_error), "%s", PQresultErrorMessage(x));
			l->cmd_error[strcspn(l->cmd_error, "\n")] = '\0';
		}
		PQclear(x);
	}
	if (!l->pg)
		return;
	if (l->state == LS_READY) {
		/* Nothing is expected but notifications: a result now is the
		 * server closing (a FATAL before it hangs up). */
		while (!PQisBusy(l->pg)) {
			PGresult *x = PQgetResult(l->pg);

			if (!x)
				break;
			PQclear(x);
		}
	}
	take_notifies(b);
	if (PQstatus(l->pg) == CONNECTION_BAD) {
		lsn_lost(b, PQerrorMessage(l->pg));
		return;
	}
	lsn_arm(b, POLLIN | (l->flushing ? POLLOUT : 0));
}

/* Connect when a channel is wanted and the backoff allows; send the next
 * command when the connection is free. */
static void lsn_kick(struct broker *b)
{
	struct listener *l = b->lsn;

	if (l->state == LS_DOWN && l->nwanted && !b->stopping && b->now_ns >= l->retry_ns)
		lsn_connect(b);
	else if (l->state == LS_READY && !list_empty(&l->dirty) && b->now_ns >= l->retry_ns)
		lsn_send(b);
}

void listener_timers(struct broker *b, int64_t *next_ns)
{
	struct listener *l = b->lsn;

	if (!l)
		return;
	if (b->stopping && l->nwanted) {
		struct lchan *ch, *nx;
		uint32_t i;

		for_each_chan(l, ch, i, nx)
			fail_waiters(b, ch, "PB005", "broker is shutting down");
		return;
	}
	if (l->state == LS_CONNECTING) {
		if (b->now_ns >= l->deadline_ns)
			lsn_connect_failed(b, "timeout expired (connection_timeout_ms)");
		else if (l->deadline_ns < *next_ns)
			*next_ns = l->deadline_ns;
	}
	if ((l->state == LS_DOWN && l->nwanted) || (l->state == LS_READY && !list_empty(&l->dirty))) {
		if (b->now_ns >= l->retry_ns)
			lsn_kick(b);
		else if (l->retry_ns < *next_ns)
			*next_ns = l->retry_ns;
	}
}

int listener_init(struct broker *b)
{
	struct listener *l = calloc(1, sizeof(*l));
	PQconninfoOption *info;
	const char *app = NULL;

	if (!l)
		return -ENOMEM;
	list_init(&l->dirty);
	l->fd = -1;
	l->rng = (uint64_t)b->now_ns | 1;
	/* Named after the broker's own application_name: "NAME:listener". */
	info = PQconninfoParse(b->cfg.dsn, NULL);
	for (PQconninfoOption *o = info; o && o->keyword; o++)
		if (strcmp(o->keyword, "application_name") == 0 && o->val && *o->val)
			app = o->val;
	snprintf(l->name, sizeof(l->name), "%.50s:listener", app ? app : "pgbroker");
	PQconninfoFree(info);
	b->lsn = l;
	return 0;
}

void listener_free(struct broker *b)
{
	struct listener *l = b->lsn;
	struct lchan *ch, *nx;
	uint32_t i;

	if (!l)
		return;
	lsn_disconnect(b);
	for_each_chan(l, ch, i, nx) {
		struct list *pos;

		while ((pos = list_pop(&ch->subs))) {
			struct lsub *s = list_entry(pos, struct lsub, clink);
			struct list *wp;

			while ((wp = list_pop(&s->waiters))) {
				struct lwait *w = list_entry(wp, struct lwait, link);

				request_free(w->r);
				free(w);
			}
			list_del(&s->alink);
			free(s);
		}
		free(ch);
	}
	free(l);
	b->lsn = NULL;
}

int listener_pid(const struct broker *b)
{
	return b->lsn ? b->lsn->pg_pid : 0;
}

uint32_t listener_channels(const struct broker *b)
{
	return b->lsn ? b->lsn->nwanted : 0;
}
