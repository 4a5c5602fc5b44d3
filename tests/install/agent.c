/* An agent built from an installed pgbroker alone (pkg-config libpgbroker):
 * connect to the broker in DIR, run one statement, check the answer.
 * tools/check-install.sh links it against the shared and the static library. */
#include <stdio.h>
#include <string.h>

#include <pgbroker.h>

int main(int argc, char **argv)
{
	const char *const args[] = { "21" };
	const char *got;
	pgb_conn *c;
	pgb_result *r;
	int ok;

	if (argc != 2) {
		fprintf(stderr, "usage: agent DIR\n");
		return 2;
	}
	c = pgb_connect(argv[1]);
	if (pgb_status(c) != PGB_CONNECTION_OK) {
		fprintf(stderr, "agent: cannot connect to the broker in %s: %s\n", argv[1],
			pgb_error_message(c));
		pgb_finish(c);
		return 1;
	}
	r = pgb_exec_params(c, "select $1::int * 2 as answer", 1, args);
	got = pgb_getvalue(r, 0, 0);
	ok = pgb_result_ok(r) && pgb_ntuples(r) == 1 && got && strcmp(got, "42") == 0;
	if (ok)
		printf("%s = %s\n", pgb_fname(r, 0), got);
	else if (!pgb_result_ok(r))
		fprintf(stderr, "agent: %s: %s\n", pgb_sqlstate(r), pgb_result_error(r));
	else
		fprintf(stderr, "agent: expected one row with 42, got %d rows, first \"%s\"\n",
			pgb_ntuples(r), got ? got : "(none)");
	pgb_clear(r);
	pgb_finish(c);
	return ok ? 0 : 1;
}
