/* make demo as a newcomer sees it: tools/demo.sh with a few agents for a
 * short run; its final poolstat snapshot must agree with itself and with
 * the demo's summary (the demo is over: no agent, no busy backend). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char out[65536];

Test(demo, final_snapshot_shows_the_pool_after_the_run, .timeout = 180)
{
	char sh[512], *snap, *save, *l;
	const char *argv[] = { "/bin/sh", h_bin("tools/demo.sh", sh, sizeof(sh)), NULL };
	int rows = 0;

	setenv("PGB_DEMO_AGENTS", "6", 1);
	setenv("PGB_DEMO_SECONDS", "2", 1);
	cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "demo.sh failed:\n%s", out);
	snap = strstr(out, "\npgbroker ");
	cr_assert_not_null(snap, "no poolstat snapshot:\n%s", out);
	cr_assert_not_null(strstr(snap, " agents 0\n"), "agents left in the pool line:\n%s", snap);
	cr_assert_not_null(strstr(snap, "/s now"), "the rate does not say when it is:\n%s", snap);
	for (l = strtok_r(snap, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		unsigned slot;
		char state[16];
		int pid;

		if (sscanf(l, "%u %15s %d", &slot, state, &pid) != 3)
			continue;
		rows++;
		cr_expect_str_neq(state, "active", "a busy backend after the run: %s", l);
		cr_expect_null(strstr(l, "running"), "an agent after the run: %s", l);
		cr_expect_null(strstr(l, "in-txn"), "an agent after the run: %s", l);
	}
	cr_expect_gt(rows, 0, "no backend rows in the snapshot");
	cr_expect_null(strstr(out, "agents in all"), "agent rows after the run:\n%s", out);
}
