/* poolstat: read a broker's stats segment without talking to the broker. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stats.h"

int main(int argc, char **argv)
{
	const char *dir = getenv("PGBROKER_DIR");
	char path[512];
	struct stats_data d;
	struct stat st;
	const struct stats_seg *seg;
	int fd;

	for (int i = 1; i < argc; i++)
		if (argv[i][0] != '-')
			dir = argv[i];
	if (!dir || !*dir)
		dir = "/tmp/pgbroker";
	snprintf(path, sizeof(path), "%s/%s", dir, STATS_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "poolstat: no broker at %s: %s\n", dir, strerror(errno));
		return 3;
	}
	if ((size_t)st.st_size < sizeof(struct stats_seg)) {
		fprintf(stderr, "poolstat: %s is not a pgbroker stats segment\n", path);
		return 3;
	}
	seg = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (seg == MAP_FAILED || seg->magic != STATS_MAGIC || seg->version != STATS_VERSION) {
		fprintf(stderr, "poolstat: %s is not a pgbroker stats segment of version %u\n",
			path, STATS_VERSION);
		return 3;
	}
	if (stats_read(seg, &d) < 0) {
		fprintf(stderr, "poolstat: segment kept changing\n");
		return 3;
	}
	printf("pool: total %u idle %u active %u pinned %u connecting %u waiting %u "
	       "(min %u size %u max %u) agents %u\n",
	       d.pool.total, d.pool.idle, d.pool.active, d.pool.pinned, d.pool.connecting,
	       d.pool.waiting, d.pool.min, d.pool.size, d.pool.max, d.pool.agents);
	printf("statements %llu failed %llu acquire_timeouts %llu connects %llu "
	       "connect_failures %llu\n",
	       (unsigned long long)d.c.statements, (unsigned long long)d.c.failed,
	       (unsigned long long)d.c.acquire_timeouts, (unsigned long long)d.c.connects,
	       (unsigned long long)d.c.connect_failures);
	return 0;
}
