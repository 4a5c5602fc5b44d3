/* pqread.c: libpq's reads from its sockets, counted and bounded. The broker
 * defines recv(), which libpq calls for every read (plain or through its
 * TLS BIO); the executable's definition comes before libc's. Between
 * pqread_begin and pqread_end, on the calling thread, reads from that one
 * fd let at most max bytes through, then say EAGAIN: libpq's buffer then
 * grows by at most max, however much the server sends. */
#ifndef PGB_BROKER_PQREAD_H
#define PGB_BROKER_PQREAD_H

#include <stdint.h>

void pqread_begin(int fd, uint64_t max);
/* The bytes read since pqread_begin; the limit is off again. */
uint64_t pqread_end(void);

#endif
