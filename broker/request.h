/* request.c: requests: reassembled from the request ring's frames, decoded,
 * and each agent's queue of statements run one after another. */
#ifndef PGB_BROKER_REQUEST_H
#define PGB_BROKER_REQUEST_H

struct broker;
struct agent;
struct request;

/* Read up to *budget frames of a's request ring into requests. */
void request_read(struct broker *b, struct agent *a, int *budget);
/* r is finished (answered or dropped): free it, run its agent's next. */
void agent_request_done(struct broker *b, struct request *r);
void request_free(struct request *r);

#endif
