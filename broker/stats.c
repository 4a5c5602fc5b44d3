/* Publishing the stats segment: the broker counts into its own copy and
 * copies it into the mapped file once per loop pass, under the seqlock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"

int stats_open(struct broker *b)
{
	char tmp[320];
	size_t size = sizeof(struct stats_seg);
	int fd;
	void *map;

	/* Build it under a temporary name, then rename: readers never see a
	 * half-initialised segment. */
	snprintf(b->stats_path, sizeof(b->stats_path), "%s/%s", b->cfg.dir, STATS_FILE);
	snprintf(tmp, sizeof(tmp), "%s.tmp", b->stats_path);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return -errno;
	b->seg = map;
	b->seg->magic = STATS_MAGIC;
	b->seg->version = STATS_VERSION;
	b->seg->size = size;
	b->st.started_ms = wall_ms();
	b->st.broker_pid = getpid();
	b->st_dirty = 1;
	stats_publish(b);
	if (rename(tmp, b->stats_path) < 0)
		return -errno;
	return 0;
}

void stats_publish(struct broker *b)
{
	struct stats_pool *p = &b->st.pool;

	if (!b->seg)
		return;
	p->total = b->ntotal;
	p->connecting = b->nconnecting;
	p->active = b->nbusy;
	p->pinned = b->npinned;
	p->idle = b->nidle;
	p->waiting = b->nwaiting;
	p->min = (uint32_t)b->cfg.min_pool_size;
	p->size = (uint32_t)b->cfg.pool_size;
	p->max = (uint32_t)b->cfg.max_pool_size;
	p->agents = b->nagents;
	b->st.updated_ms = wall_ms();

	__atomic_store_n(&b->seg->seq, b->seg->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(&b->seg->d, &b->st, sizeof(b->st));
	__atomic_store_n(&b->seg->seq, b->seg->seq + 1, __ATOMIC_RELEASE);
	b->st_dirty = 0;
}

void stats_close(struct broker *b)
{
	if (!b->seg)
		return;
	munmap(b->seg, b->seg->size);
	b->seg = NULL;
	unlink(b->stats_path);
}
