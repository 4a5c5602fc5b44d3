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
/* The same with the n rows encoded in rows (len bytes, now the response's;
 * NULL: none) standing for res's own. Too large to deliver: PB004 instead. */
void agent_respond_rows(struct broker *b, struct agent *a, uint32_t id, PGresult *res,
			uint8_t *rows, uint64_t len, uint32_t n);
/* Queue a rows message (RESP_ROWS) for id: the n rows encoded in rows, or
 * with rows NULL res's own rows; res gives the columns. Both are now the
 * response's. -1 when it is too large to deliver (both freed). */
int agent_send_rows(struct broker *b, struct agent *a, uint32_t id, PGresult *res,
		    uint8_t *rows, uint64_t len, uint32_t n);
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
/* Queue a notification (blob, len bytes, encoded by notify_encode; now
 * the response's) for a: a FRAME_NOTIFY message of id 0 in its turn. */
void agent_notify(struct broker *b, struct agent *a, uint8_t *blob, uint32_t len);
/* Stream queued responses into the ring as far as it has room. */
void agent_flush(struct broker *b, struct agent *a);
/* Free rs, queued to a: its bytes leave the memory budget. */
void response_free(struct broker *b, struct agent *a, struct response *rs);

#endif
