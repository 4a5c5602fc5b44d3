/* libpgbroker: notifications received (FRAME_NOTIFY messages, kept by
 * chanio.c as they arrive between results) and pgb_notifies, which hands
 * them out in order without blocking (docs/notifications.md). */
#include "pgbroker.h"
#include "internal.h"
#include "conn.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pgbi_notice_keep(pgb_conn *c, const uint8_t *blob, uint64_t len)
{
	struct notify_view v;
	struct notice *n;
	size_t rl, el;

	if (notify_decode(blob, len, &v) < 0)
		return -1;
	rl = strlen(v.relname) + 1;
	el = strlen(v.extra) + 1;
	n = malloc(sizeof(*n) + rl + el);
	if (!n)
		return 0;	/* out of memory: lost, as a dropped one is */
	memcpy(n->text, v.relname, rl);
	memcpy(n->text + rl, v.extra, el);
	n->n.relname = n->text;
	n->n.extra = n->text + rl;
	n->n.be_pid = (v.flags & NOTIFY_MISSED) ? 0 : v.be_pid;
	n->next = NULL;
	if (c->notices_tail)
		c->notices_tail->next = n;
	else
		c->notices = n;
	c->notices_tail = n;
	return 0;
}

void pgbi_notices_drop(pgb_conn *c)
{
	while (c->notices) {
		struct notice *n = c->notices;

		c->notices = n->next;
		free(n);
	}
	c->notices_tail = NULL;
}

static pgb_notify *notice_take(pgb_conn *c)
{
	struct notice *n = c->notices;

	if (!n)
		return NULL;
	c->notices = n->next;
	if (!c->notices)
		c->notices_tail = NULL;
	/* The broker sends more only while its queue bound allows. */
	if (c->chan && !pgbi_inherited(c))
		__atomic_add_fetch(&c->chan->notify_taken, 1, __ATOMIC_RELAXED);
	return &n->n;
}

PGB_API pgb_notify *pgb_notifies(pgb_conn *c)
{
	pgb_notify *n;
	uint64_t v;

	if (!c)
		return NULL;
	if (pgbi_inherited(c)) {
		pgbi_notices_drop(c);	/* the parent's */
		return NULL;
	}
	if ((n = notice_take(c)) || c->status != PGB_CONNECTION_OK)
		return n;
	/* As pgb_try_result: clear the eventfd, look, arm, look again; one
	 * published after the arming signals the eventfd. */
	(void)!read(c->efd, &v, sizeof(v));
	if (pgbi_drain_responses(c) == 0 && (n = notice_take(c)))
		return n;
	if (c->status != PGB_CONNECTION_OK)
		return notice_take(c);
	chan_fd_arm(c->chan);
	if (ring_has_data(&c->resp))
		pgbi_drain_responses(c);
	return notice_take(c);
}
