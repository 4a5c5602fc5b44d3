/* Publishing the stats segment: the broker counts into its own copy
 * (b->st, plain increments, no locks) and copies it into the mapped file
 * once per loop pass, under the seqlock. The health sample (health.c)
 * additionally publishes the health block and the per-backend and per-agent
 * rows, which are filled here by walking the slots once per sample, never
 * per event. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "brstats.h"
#include "health.h"
#include "log.h"
#include "clock.h"

#define STATS_TMP STATS_FILE ".tmp"
#define ALIGN8(x) (((x) + 7) & ~(uint64_t)7)

int stats_open(struct broker *b)
{
	uint64_t be_off = ALIGN8(sizeof(struct stats_seg));
	uint64_t ag_off = ALIGN8(be_off + (uint64_t)b->nslots * sizeof(struct stats_backend));
	uint64_t size = ag_off + (uint64_t)b->cfg.max_agents * sizeof(struct stats_agent);
	struct stats_seg *seg;
	int fd, rc;

	/* Build it under a temporary name, then rename: readers never see a
	 * half-initialised segment. A new file (O_EXCL), never through a
	 * symbolic link; one left by a crash is removed first. */
	snprintf(b->stats_path, sizeof(b->stats_path), "%s/%s", b->cfg.dir, STATS_FILE);
	fd = openat(b->dir_fd, STATS_TMP, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0640);
	if (fd < 0 && errno == EEXIST && unlinkat(b->dir_fd, STATS_TMP, 0) == 0)
		fd = openat(b->dir_fd, STATS_TMP,
			    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	/* Readable by the broker's group whatever the umask; nobody else. */
	if (fchmod(fd, 0640) < 0 || ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
		close(fd);
		unlinkat(b->dir_fd, STATS_TMP, 0);
		return rc;
	}
	seg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	rc = -errno;
	close(fd);
	if (seg == MAP_FAILED) {
		unlinkat(b->dir_fd, STATS_TMP, 0);
		return rc;
	}
	seg->magic = STATS_MAGIC;
	seg->version = STATS_VERSION;
	seg->size = size;
	seg->data_size = sizeof(struct stats_data);
	seg->health_size = sizeof(struct stats_health);
	seg->backend_size = sizeof(struct stats_backend);
	seg->agent_size = sizeof(struct stats_agent);
	seg->max_backends = b->nslots;
	seg->max_agents = (uint32_t)b->cfg.max_agents;
	seg->backends_off = be_off;
	seg->agents_off = ag_off;
	seg->pid_ns = stats_pid_ns();
	b->seg = seg;
	b->st.started_ms = wall_ms();
	b->st.broker_pid = getpid();
	rc = health_init(b);
	if (rc < 0)
		goto fail;
	stats_publish(b);
	if (renameat(b->dir_fd, STATS_TMP, b->dir_fd, STATS_FILE) < 0) {
		rc = -errno;
		goto fail;
	}
	return 0;
fail:
	b->seg = NULL;
	munmap(seg, size);
	unlinkat(b->dir_fd, STATS_TMP, 0);
	return rc;
}

/* The pool's gauges come from the broker's own counts, at publish time. */
void stats_fill(struct broker *b)
{
	struct stats_pool *p = &b->st.pool;
	uint32_t known;

	p->total = b->ntotal;
	p->connecting = b->nconnecting;
	p->active = b->nbusy;
	p->pinned = b->npinned;
	p->idle = b->nidle;
	known = p->connecting + p->active + p->pinned + p->idle;
	p->other = p->total > known ? p->total - known : 0;
	p->waiting = b->nwaiting;
	p->min = (uint32_t)b->cfg.min_pool_size;
	p->size = b->pool_target;
	p->max = (uint32_t)b->cfg.max_pool_size;
	p->agents = b->nagents;
	p->utilization = p->max ? 100.0 * (double)(p->active + p->pinned) / (double)p->max : 0;
	b->st.connect_fails = b->connect_fails;
	b->st.stopping = (uint32_t)b->stopping;
	b->st.mem.used = b->mem.used;
	b->st.mem.peak = b->mem.peak;
	b->st.mem.budget = (uint64_t)b->cfg.max_memory_mb << 20;
	b->st.updated_ms = wall_ms();
}

void stats_publish(struct broker *b)
{
	if (!b->seg)
		return;
	stats_fill(b);
	b->st.pass_end = ++b->st.pass;
	stats_write_begin(&b->seg->seq);
	memcpy(&b->seg->d, &b->st, sizeof(b->st));
	stats_write_end(&b->seg->seq);
	/* Every pass, and health_timers makes a pass at least every STATS_BEAT_MS. */
	__atomic_store_n(&b->seg->heartbeat_ms, b->st.updated_ms, __ATOMIC_RELEASE);
}

static uint32_t backend_state(enum be_state s)
{
	switch (s) {
	case BE_CONNECTING: return STATS_BE_CONNECTING;
	case BE_IDLE: return STATS_BE_IDLE;
	case BE_BUSY:
	case BE_PIPELINE: return STATS_BE_BUSY;
	case BE_PINNED: return STATS_BE_PINNED;
	case BE_ROLLBACK:
	case BE_DISCARD:
	case BE_VALIDATE:
	case BE_PROBE:
	case BE_PARKED: return STATS_BE_RESET;
	default: return 0;
	}
}

/* Backends in use, by slot. nslots slots, once per sample. */
static uint32_t fill_backends(struct broker *b, struct stats_backend *row, int64_t wall)
{
	uint32_t n = 0;

	if (!b->backends)
		return 0;
	for (uint32_t i = 0; i < b->nslots; i++) {
		struct backend *be = &b->backends[i];
		struct agent *a = be->owner;

		if (be->state == BE_FREE)
			continue;
		if ((be->state == BE_BUSY || be->state == BE_PIPELINE) && be->req && be->req->agent)
			a = be->req->agent;
		row[n] = (struct stats_backend){
			.slot = be->slot,
			.state = backend_state(be->state),
			.pg_pid = be->state == BE_CONNECTING ? 0 : be->pg_pid,
			.agent_slot = a ? (int32_t)a->slot : -1,
			.agent_pid = a ? (int32_t)a->pid : 0,
			.since_ms = wall - (b->now_ns - be->created_ns) / 1000000,
			.served = be->served,
		};
		n++;
	}
	return n;
}

/* Registered agents, by slot. max_agents slots, once per sample: a state
 * change of an agent costs nothing on the hot path. */
static uint32_t fill_agents(struct broker *b, struct stats_agent *row)
{
	uint32_t n = 0;

	for (int i = 0; i < b->cfg.max_agents && n < b->nagents; i++) {
		struct agent *a = b->agents[i];
		struct request *r;
		uint32_t state = STATS_AG_IDLE;

		if (!a || a->state != AG_READY)
			continue;
		r = a->running;
		if (r && (r->state == RQ_WAITING || r->state == RQ_DELAYED))
			state = STATS_AG_WAITING;
		else if (r)
			state = STATS_AG_RUNNING;
		else if (a->pinned || a->begin)
			state = STATS_AG_IN_TXN;
		row[n++] = (struct stats_agent){
			.slot = a->slot,
			.state = state,
			.pid = (int32_t)a->pid,
			.since_ms = a->since_ms,
			.statements = a->statements,
			.errors = a->errors,
		};
	}
	return n;
}

/* The health block and the rows; stats_publish follows in the same pass. */
void stats_publish_sample(struct broker *b, struct stats_health *h)
{
	struct stats_seg *seg = b->seg;
	char *base = (char *)seg;

	if (!seg)
		return;
	stats_write_begin(&seg->hseq);
	h->nbackends = fill_backends(b, (struct stats_backend *)(base + seg->backends_off),
				     b->st.updated_ms);
	h->nagents = fill_agents(b, (struct stats_agent *)(base + seg->agents_off));
	memcpy(&seg->h, h, sizeof(*h));
	stats_write_end(&seg->hseq);
}

void stats_close(struct broker *b)
{
	health_free(b);
	if (!b->seg)
		return;
	munmap(b->seg, b->seg->size);
	b->seg = NULL;
	unlink(b->stats_path);
}
