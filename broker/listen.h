/* listen.c: registration: the run directory's lock and socket, the peer
 * check, and the hello that gives an agent its channel. */
#ifndef PGB_BROKER_LISTEN_H
#define PGB_BROKER_LISTEN_H

struct broker;
struct agent;

/* Listen on the run directory's socket (piddir_take took the directory);
 * -errno (logged) if not. */
int agent_listen(struct broker *b);
/* (Re)arm the multishot accept. */
void agent_accept_arm(struct broker *b);
/* A new connection: check the peer, give it an agent slot (AG_HELLO). */
void agent_accept(struct broker *b, int fd);
/* Its hello arrived (res: the poll's result): create and pass the channel. */
void agent_on_hello(struct broker *b, struct agent *a, int res);

#endif
