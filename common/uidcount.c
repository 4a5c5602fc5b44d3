/* Agents per uid; see uidcount.h. */
#include "uidcount.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t hash(uid_t uid)
{
	return (uint32_t)uid * 2654435761u;
}

int uidcount_init(struct uidcount *u, uint32_t uids)
{
	uint32_t cap = 16;

	while (cap < uids * 2 && cap < (1u << 30))
		cap *= 2;
	*u = (struct uidcount){ .cap = cap, .e = calloc(cap, sizeof(struct uidcount_entry)) };
	return u->e ? 0 : -ENOMEM;
}

void uidcount_free(struct uidcount *u)
{
	free(u->e);
	u->e = NULL;
	u->cap = u->used = 0;
}

static struct uidcount_entry *find(const struct uidcount *u, uid_t uid)
{
	for (uint32_t i = 0, at = hash(uid) & (u->cap - 1); i < u->cap;
	     i++, at = (at + 1) & (u->cap - 1)) {
		struct uidcount_entry *x = &u->e[at];

		if (!x->used)
			return NULL;
		if (x->n && x->uid == uid)
			return x;
	}
	return NULL;
}

uint32_t uidcount_get(const struct uidcount *u, uid_t uid)
{
	const struct uidcount_entry *x = u->e ? find(u, uid) : NULL;

	return x ? x->n : 0;
}

/* Entries with no agents left still lengthen the probes: once half the
 * table has been taken, put the live ones in afresh. */
static void rebuild(struct uidcount *u)
{
	struct uidcount_entry *old = u->e;

	u->e = calloc(u->cap, sizeof(*u->e));
	if (!u->e) {
		u->e = old;	/* keep going on the old table */
		return;
	}
	u->used = 0;
	for (uint32_t i = 0; i < u->cap; i++) {
		if (!old[i].n)
			continue;
		for (uint32_t at = hash(old[i].uid) & (u->cap - 1);;
		     at = (at + 1) & (u->cap - 1)) {
			if (!u->e[at].used) {
				u->e[at] = old[i];
				u->used++;
				break;
			}
		}
	}
	free(old);
}

int uidcount_add(struct uidcount *u, uid_t uid)
{
	struct uidcount_entry *x, *spot = NULL;

	if (!u->e)
		return -ENOSPC;
	if ((x = find(u, uid))) {
		x->n++;
		return 0;
	}
	if (u->used * 2 >= u->cap)
		rebuild(u);
	for (uint32_t i = 0, at = hash(uid) & (u->cap - 1); i < u->cap;
	     i++, at = (at + 1) & (u->cap - 1)) {
		x = &u->e[at];
		if (!x->n) {
			spot = x;
			break;
		}
	}
	if (!spot)
		return -ENOSPC;
	if (!spot->used)
		u->used++;
	*spot = (struct uidcount_entry){ .uid = uid, .n = 1, .used = 1 };
	return 0;
}

void uidcount_del(struct uidcount *u, uid_t uid)
{
	struct uidcount_entry *x = u->e ? find(u, uid) : NULL;

	if (x)
		x->n--;
}
