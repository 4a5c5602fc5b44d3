/* piddir.c: the run directory and its pid file. */
#ifndef PGB_BROKER_PIDDIR_H
#define PGB_BROKER_PIDDIR_H

struct broker;

/* piddir_take: 0, or -errno after logging why and what to do: -EPERM when
 * the directory or a file in it is not safe to use, -EWOULDBLOCK when
 * another broker runs on it. */
int piddir_take(struct broker *b);
void piddir_release(struct broker *b);

#endif
