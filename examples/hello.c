/* examples/hello.c: connect to the broker, run one statement, print the answer. */
#include <stdio.h>
#include "pgbroker.h"

int main(void)
{
	pgb_conn *c = pgb_connect(NULL);   /* $PGBROKER_DIR, else the default run directory */
	if (pgb_status(c) != PGB_CONNECTION_OK) {
		fprintf(stderr, "cannot connect: %s\n", pgb_error_message(c));
		pgb_finish(c);
		return 1;
	}
	const char *args[] = { "21" };
	pgb_result *r = pgb_exec_params(c, "select $1::int * 2 as answer", 1, args);
	int ok = pgb_result_ok(r);
	if (ok)
		printf("%s = %s\n", pgb_fname(r, 0), pgb_getvalue(r, 0, 0));
	else
		fprintf(stderr, "%s: %s", pgb_sqlstate(r), pgb_result_error(r));
	pgb_clear(r);
	pgb_finish(c);
	return ok ? 0 : 1;
}
