/* While a backend's socket is corked, libpq's writes to it wait in the
 * broker until cork_flush: one write per loop pass (cork.c). The broker's
 * close() forgets what a socket held. */
#ifndef PGB_CORK_H
#define PGB_CORK_H

/* Take libpq's writes to fd from now on; 0, or -ENOMEM. */
int cork_hold(int fd);
/* Write what was taken: 0 when all is out, 1 when the socket is full
 * (wait for POLLOUT and call again), -errno on an error. */
int cork_flush(int fd);

#endif
