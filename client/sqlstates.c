/* libpgbroker: SQLSTATE classification (pgb_sqlstate_*), from the table the
 * broker uses itself (common/sqlstate.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "sqlstate.h"

_Static_assert(PGB_RAN_NO == (int)RAN_NO && PGB_RAN_ROLLED_BACK == (int)RAN_ROLLED_BACK &&
		       PGB_RAN_UNKNOWN == (int)RAN_UNKNOWN && PGB_RAN_YES == (int)RAN_YES,
	       "pgbroker.h PGB_RAN_* must match common/sqlstate.h");

PGB_API int pgb_sqlstate_is_transient(const char *sqlstate)
{
	return sqlstate_is_transient(sqlstate);
}

PGB_API int pgb_sqlstate_ran(const char *sqlstate)
{
	return (int)sqlstate_ran(sqlstate);
}

PGB_API int pgb_sqlstate_retry_safe(const char *sqlstate)
{
	return sqlstate_retry_safe(sqlstate);
}
