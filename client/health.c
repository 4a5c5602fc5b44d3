/* pgb_pool_health: the pool's health from the broker's stats segment,
 * read the same way poolstat reads it, without talking to the broker. */
#include "clock.h"
#include "pgbroker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rundir.h"
#include "stats.h"

#define PGB_API __attribute__((visibility("default")))

_Static_assert((int)PGB_HEALTHY == (int)HEALTH_HEALTHY &&
	       (int)PGB_DEGRADED == (int)HEALTH_DEGRADED &&
	       (int)PGB_UNHEALTHY == (int)HEALTH_UNHEALTHY &&
	       (int)PGB_STARTING == (int)HEALTH_STARTING,
	       "pgb_health.status and poolstat's exit status are the same numbers");

/* Append one line to buf (cut when full). */
static void add_line(char *buf, size_t n, const char *line)
{
	size_t len = strlen(buf);

	if (len + 1 < n)
		snprintf(buf + len, n - len, "%s%s", len ? "\n" : "", line);
}

PGB_API int pgb_pool_health(const char *dir, struct pgb_health *h)
{
	struct stats_map m;
	struct stats_snap *s;
	char dflt[256];
	int rc;

	if (!h)
		return -1;
	memset(h, 0, sizeof(*h));
	h->status = PGB_NO_BROKER;
	snprintf(h->status_name, sizeof(h->status_name), "no broker");
	dir = rundir_resolve(dir, dflt, sizeof(dflt));
	/* The snapshot is some 10 KB: not on the caller's stack. */
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(h->error, sizeof(h->error), "out of memory");
		return -1;
	}
	rc = stats_map_open(dir, &m, h->error, sizeof(h->error));
	if (rc < 0)
		goto out;
	rc = stats_read(m.seg, s);
	stats_map_close(&m);
	if (rc == -ESRCH) {
		snprintf(h->error, sizeof(h->error), "no broker at %s: stale stats segment left "
			 "by pid %d (it died while writing it)", dir, (int)s->d.broker_pid);
		goto out;
	}
	if (rc < 0) {
		snprintf(h->error, sizeof(h->error), "%s/%s: the broker kept changing it; "
			 "no consistent snapshot", dir, STATS_FILE);
		goto out;
	}
	rc = stats_verdict(s, dir, wall_ms(), h->error, sizeof(h->error));
	if (rc < 0)
		goto out;
	h->status = rc;
	h->healthy = rc == PGB_HEALTHY;
	snprintf(h->status_name, sizeof(h->status_name), "%s", health_status_name((uint32_t)rc));
	h->total = (int)s->d.pool.total;
	h->idle = (int)s->d.pool.idle;
	h->active = (int)s->d.pool.active;
	h->waiting = (int)s->d.pool.waiting;
	h->utilization_percent = s->d.pool.utilization;
	h->timestamp_ms = s->d.updated_ms;
	for (uint32_t i = 0; i < s->h.nreasons; i++) {
		add_line(h->reasons, sizeof(h->reasons), s->h.reasons[i].text);
		add_line(h->recommendations, sizeof(h->recommendations), s->h.reasons[i].advice);
	}
	rc = 0;
out:
	free(s);
	return rc < 0 ? -1 : 0;
}
