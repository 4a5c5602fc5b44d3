/* The health monitor: every health_interval_ms the broker loop takes a
 * sample (utilization, waiting, statements/s, success rate, p99 acquire over
 * the interval), appends it to the history, classifies the pool
 * (health_classify in common/stats.c holds the thresholds) and publishes
 * status, reasons and the per-backend and per-agent rows. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "brstats.h"
#include "health.h"
#include "log.h"
#include "clock.h"


struct health_mon {
	struct health_limits lim;
	int64_t next_ns;          /* next sample due (monotonic) */
	int64_t last_ns;          /* previous sample (monotonic) */
	uint64_t statements, failed;  /* counters at the previous sample */
	struct stats_hist acquire;    /* acquire histogram at the previous sample */
	struct stats_health h;        /* what the segment shows */
};

int health_init(struct broker *b)
{
	struct health_mon *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	b->health = m;
	health_limits_default(&m->lim);
	health_configure(b);
	m->last_ns = b->now_ns;
	m->next_ns = b->now_ns + (int64_t)b->cfg.health_interval_ms * MS;
	return 0;
}

/* Thresholds from the configuration: at start and after a reload. */
void health_configure(struct broker *b)
{
	struct health_mon *m = b->health;
	int64_t next = b->now_ns + (int64_t)b->cfg.health_interval_ms * MS;

	m->lim.util_warn_pct = b->cfg.health_util_warn_pct;
	m->lim.util_crit_pct = b->cfg.health_util_crit_pct;
	m->lim.waiting_warn = (uint32_t)b->cfg.health_waiting_warn;
	m->lim.waiting_crit = (uint32_t)b->cfg.health_waiting_crit;
	m->lim.success_warn_pct = b->cfg.health_success_warn_pct;
	m->lim.success_crit_pct = b->cfg.health_success_crit_pct;
	m->lim.acquire_warn_ms = b->cfg.health_acquire_warn_ms;
	m->lim.acquire_crit_ms = b->cfg.health_acquire_crit_ms;
	if (m->next_ns > next)	/* a shorter interval counts at once */
		m->next_ns = next;
}

void health_free(struct broker *b)
{
	free(b->health);
	b->health = NULL;
}

static void take_sample(struct broker *b, struct health_mon *m)
{
	const struct stats_pool *p = &b->st.pool;
	struct stats_sample s = { 0 };
	struct stats_hist acq;
	uint32_t before = m->h.status;
	int64_t dt = b->now_ns - m->last_ns;

	if (dt <= 0)
		dt = 1;
	stats_fill(b);
	s.t_ms = b->st.updated_ms;
	s.interval_ms = (uint32_t)((dt + MS / 2) / MS);
	s.busy = p->active + p->pinned;
	s.max = p->max;
	s.waiting = p->waiting;
	s.utilization = p->utilization;
	s.statements = b->st.c.statements - m->statements;
	s.failed = b->st.c.failed - m->failed;
	s.stmts_per_s = (double)s.statements * 1e9 / (double)dt;
	s.success_pct = s.statements ? 100.0 * (double)(s.statements - s.failed) /
				       (double)s.statements : 100.0;
	stats_hist_delta(&b->st.acquire, &m->acquire, &acq);
	s.acquires = acq.count;
	s.acquire_sum_us = acq.sum_us;
	s.acquire_p99_us = stats_hist_pct(&acq, 0.99);

	m->statements = b->st.c.statements;
	m->failed = b->st.c.failed;
	m->acquire = b->st.acquire;
	m->last_ns = b->now_ns;

	health_push(&m->h, &s);
	health_classify(&b->st, &m->h, &m->lim);
	if (m->h.status != before) {
		const struct stats_reason *r = health_main_reason(&m->h);
		const char *why = r ? r->text : "all thresholds met";

		if (m->h.status > before)
			log_warn("health: %s -> %s: %s", health_status_name(before),
				 health_status_name(m->h.status), why);
		else
			log_info("health: %s -> %s: %s", health_status_name(before),
				 health_status_name(m->h.status), why);
	}
	stats_publish_sample(b, &m->h);
}

void health_timers(struct broker *b, int64_t *next_ns)
{
	struct health_mon *m = b->health;

	if (!m)
		return;
	if (b->now_ns >= m->next_ns) {
		take_sample(b, m);
		m->next_ns += (int64_t)b->cfg.health_interval_ms * MS;
		/* After a stall, the next sample is an interval from now. */
		if (m->next_ns <= b->now_ns)
			m->next_ns = b->now_ns + (int64_t)b->cfg.health_interval_ms * MS;
	}
	if (m->next_ns < *next_ns)
		*next_ns = m->next_ns;
	/* The heartbeat: every pass publishes it (stats_publish), so an idle
	 * loop must not sleep longer than STATS_BEAT_MS. */
	if (b->now_ns + STATS_BEAT_MS * MS < *next_ns)
		*next_ns = b->now_ns + STATS_BEAT_MS * MS;
}
