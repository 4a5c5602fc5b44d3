/* PostgreSQL's notices (NOTICE, WARNING, INFO, ...) kept with the result
 * they came before, so that the agent gets them with its answer: a notice
 * receiver packs them, a libpq event hands them to the next result. */
#ifndef PGB_BNOTICE_H
#define PGB_BNOTICE_H

#include <stdint.h>
#include <libpq-fe.h>

/* Start keeping pg's notices. 0, or -ENOMEM (then they are only logged). */
int bnotice_attach(PGconn *pg);
/* The notices that came before res, packed as the response's notices
 * item wants them (proto.h); NULL and 0 when none. Valid until PQclear. */
const char *bnotice_of(const PGresult *res, uint32_t *len);

#endif
