/* Choosing the event loop backend: io_uring when it works and has what the
 * broker needs, else epoll; or the one the `loop` setting names. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "loop.h"

int loop_parse(const char *s)
{
	if (strcmp(s, "auto") == 0)
		return LOOP_AUTO;
	if (strcmp(s, "io_uring") == 0)
		return LOOP_IO_URING;
	if (strcmp(s, "epoll") == 0)
		return LOOP_EPOLL;
	return -EINVAL;
}

int loop_open(enum loop_want want, struct loop **out, char *why, size_t len)
{
	char uring_why[256], epoll_why[256];
	int rc;

	*out = NULL;
	if (want == LOOP_EPOLL) {
		rc = loop_epoll_open(out, epoll_why, sizeof(epoll_why));
		if (rc == 0)
			snprintf(why, len, "loop = epoll: using epoll");
		else
			snprintf(why, len, "%s, and loop = epoll allows no other backend",
				 epoll_why);
		return rc;
	}
	rc = loop_uring_open(out, uring_why, sizeof(uring_why));
	if (rc == 0) {
		snprintf(why, len, "using io_uring");
		return 0;
	}
	if (want == LOOP_IO_URING) {
		snprintf(why, len, "%s, and loop = io_uring allows no other backend: allow "
			 "io_uring (see docs/requirements.md) or set loop = auto", uring_why);
		return rc;
	}
	rc = loop_epoll_open(out, epoll_why, sizeof(epoll_why));
	if (rc == 0)
		snprintf(why, len, "%s: using epoll", uring_why);
	else
		snprintf(why, len, "%s; %s", uring_why, epoll_why);
	return rc;
}
