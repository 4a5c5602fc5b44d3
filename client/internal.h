/* libpgbroker's own calls between its files; not exported (see
 * libpgbroker.map), not part of the API. */
#ifndef PGB_CLIENT_INTERNAL_H
#define PGB_CLIENT_INTERNAL_H

#include "pgbroker.h"

/* 1 when the broker's last answer on c said its session was inside a
 * transaction (a BEGIN without its COMMIT or ROLLBACK yet). */
int pgbi_in_transaction(const pgb_conn *c);

#endif
