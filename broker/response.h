/* response.c: responses: results queued per agent and streamed as frames
 * into its response ring as far as there is room. */
#ifndef PGB_BROKER_RESPONSE_H
#define PGB_BROKER_RESPONSE_H

#include <stdint.h>
#include <libpq-fe.h>

struct broker;
struct agent;
struct request;
struct response;

/* Queue res (now the response's) as the answer to statement id. */
void agent_respond(struct broker *b, struct agent *a, uint32_t id, PGresult *res);
/* Queue the broker's own success, a command tag and no rows. */
void agent_respond_tag(struct broker *b, struct agent *a, uint32_t id, const char *tag);
/* Queue the broker's own error as the answer to statement id. */
void agent_respond_error(struct broker *b, struct agent *a, uint32_t id,
			 const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Queue a finished batch's answers: every result, or, when one failed,
 * its error and for every other statement a PB011 naming it. */
void agent_respond_batch(struct broker *b, struct agent *a, struct request *r);
/* Queue len bytes of COPY TO STDOUT rows (chunk, now the response's) for
 * statement id; counted in a->copy_queued until written. */
void agent_respond_chunk(struct broker *b, struct agent *a, uint32_t id, uint8_t *chunk,
			 uint32_t len);
/* Stream queued responses into the ring as far as it has room. */
void agent_flush(struct broker *b, struct agent *a);
void response_free(struct response *rs);

#endif
