/* The broker's cork on backend sockets (broker/cork.c): bytes written while
 * corked reach the peer only at cork_flush, whole and in order, also when
 * the socket fills up; closing a socket forgets its bytes; other sockets
 * are untouched. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../broker/cork.h"

static int sv[2];

static void setup(void)
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static void teardown(void)
{
	close(sv[0]);
	close(sv[1]);
}

/* What the peer has now, without waiting. */
static size_t drain(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap && (n = recv(fd, buf + got, cap - got, 0)) > 0)
		got += (size_t)n;
	return got;
}

#ifndef LIBPQ_HAS_SEND_PIPELINE_SYNC

Test(cork, held_until_flush, .init = setup, .fini = teardown)
{
	char buf[64];

	cr_assert_eq(cork_hold(sv[0]), 0);
	cr_expect_eq(send(sv[0], "Bind", 4, MSG_NOSIGNAL), 4);
	cr_expect_eq(send(sv[0], "Sync", 4, MSG_NOSIGNAL), 4);
	cr_expect_eq(drain(sv[1], buf, sizeof(buf)), 0, "corked bytes went out early");
	cr_expect_eq(cork_flush(sv[0]), 0);
	cr_assert_eq(drain(sv[1], buf, sizeof(buf)), 8);
	cr_expect_eq(memcmp(buf, "BindSync", 8), 0);

	/* no longer held: a send goes straight out */
	cr_expect_eq(send(sv[0], "X", 1, MSG_NOSIGNAL), 1);
	cr_expect_eq(drain(sv[1], buf, sizeof(buf)), 1);
	/* nothing held: flushing is a no-op */
	cr_expect_eq(cork_flush(sv[0]), 0);
}

Test(cork, full_socket_keeps_order, .init = setup, .fini = teardown)
{
	enum { TOTAL = 4 << 20 };
	static char out[TOTAL], in[TOTAL + 16];
	size_t got = 0;
	int rc, rounds = 0;

	for (size_t i = 0; i < TOTAL; i++)
		out[i] = (char)(i * 7 + i / 4096);
	cr_assert_eq(cork_hold(sv[0]), 0);
	/* more than the socket takes, in pieces */
	for (size_t off = 0; off < TOTAL; off += 65536)
		cr_assert_eq(send(sv[0], out + off, 65536, MSG_NOSIGNAL), 65536);
	rc = cork_flush(sv[0]);
	cr_assert_eq(rc, 1, "a full socket must leave bytes behind");

	/* while bytes wait, later ones wait behind them */
	errno = 0;
	cr_expect_eq(send(sv[0], "late", 4, MSG_NOSIGNAL), -1);
	cr_expect_eq(errno, EAGAIN);

	while (rc == 1) {
		cr_assert_lt(++rounds, 100000, "cork_flush made no progress");
		got += drain(sv[1], in + got, sizeof(in) - got);
		rc = cork_flush(sv[0]);
	}
	cr_assert_eq(rc, 0);
	cr_expect_eq(send(sv[0], "late", 4, MSG_NOSIGNAL), 4);
	got += drain(sv[1], in + got, sizeof(in) - got);
	cr_assert_eq(got, (size_t)TOTAL + 4);
	cr_expect_eq(memcmp(in, out, TOTAL), 0, "bytes out of order");
	cr_expect_eq(memcmp(in + TOTAL, "late", 4), 0);
}

Test(cork, closing_forgets, .init = setup, .fini = teardown)
{
	int fd = sv[0], again[2];
	char buf[8];

	/* bytes held for a socket that is closed are not sent anywhere else */
	cr_assert_eq(cork_hold(fd), 0);
	cr_expect_eq(send(fd, "old", 3, MSG_NOSIGNAL), 3);
	cr_assert_eq(close(fd), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, again), 0);
	cr_assert_eq(again[0], fd, "the lowest free number is taken again");
	cr_expect_eq(send(again[0], "new", 3, MSG_NOSIGNAL), 3);
	cr_assert_eq(drain(again[1], buf, sizeof(buf)), 3);
	cr_expect_eq(memcmp(buf, "new", 3), 0);
	cr_expect_eq(cork_flush(again[0]), 0);
	cr_expect_eq(drain(again[1], buf, sizeof(buf)), 0);
	sv[0] = again[0];
	close(again[1]);
}

Test(cork, errors_and_other_sockets, .init = setup, .fini = teardown)
{
	int other[2];
	char buf[8];

	/* a socket never corked is the plain system call */
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, other), 0);
	cr_expect_eq(send(other[0], "ok", 2, MSG_NOSIGNAL), 2);
	cr_expect_eq(drain(other[1], buf, sizeof(buf)), 2);
	cr_expect_eq(cork_flush(other[0]), 0);
	close(other[0]);
	close(other[1]);

	/* a peer gone: the flush reports the error */
	cr_assert_eq(cork_hold(sv[0]), 0);
	cr_expect_eq(send(sv[0], "Sync", 4, MSG_NOSIGNAL), 4);
	close(sv[1]);
	sv[1] = open("/dev/null", O_RDONLY);
	errno = 0;
	cr_expect_eq(cork_flush(sv[0]), -EPIPE);
	cr_expect_eq(errno, EPIPE);

	/* descriptors out of range are never corked */
	cr_expect_eq(cork_hold(-1), 0);
	cr_expect_eq(cork_flush(-1), 0);
}

#else

Test(cork, not_used_with_libpq_17)
{
	cr_expect_eq(cork_hold(0), 0);
	cr_expect_eq(cork_flush(0), 0);
}

#endif
