/* How many agents each uid has (registered or still saying hello), for the
 * per-uid cap: an open-addressing table, O(1) per registration and per
 * departure, never a scan over the agents. */
#ifndef PGB_UIDCOUNT_H
#define PGB_UIDCOUNT_H

#include <stdint.h>
#include <sys/types.h>

struct uidcount_entry {
	uid_t uid;
	uint32_t n;              /* 0: free for reuse (the uid is only a hint) */
	int used;                /* ever taken: probing goes on past it */
};

struct uidcount {
	struct uidcount_entry *e;
	uint32_t cap;            /* a power of two */
	uint32_t used;           /* entries ever taken since the last rebuild */
};

/* Room for `uids` distinct uids at once. 0, or -ENOMEM. */
int uidcount_init(struct uidcount *u, uint32_t uids);
void uidcount_free(struct uidcount *u);
/* Agents of uid now. */
uint32_t uidcount_get(const struct uidcount *u, uid_t uid);
/* One more agent of uid: 0, or -ENOSPC when the table has no room (never
 * with at most `uids` distinct uids holding agents). */
int uidcount_add(struct uidcount *u, uid_t uid);
/* One agent of uid fewer (a uid with none is left alone). */
void uidcount_del(struct uidcount *u, uid_t uid);

#endif
