/* What an agent sees must be what one connection of its own would show:
 * statements that commit part of their work, prepared statements under
 * table changes, and neighbours in one pipeline. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct h_broker br;

TestSuite(semantics, .timeout = 90);

/* A 40001 after a COMMIT inside the text: what was committed must not be
 * run again, so the broker must not retry it. */
Test(semantics, a_text_that_committed_part_of_its_work_is_not_retried)
{
	pgb_conn *c;
	pgb_result *r;

	h_broker_start(&br, (const char *[]){ "--retry-delay-ms", "10", NULL });
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists sem_log; create table sem_log (k int)"));
	pgb_clear(h_ok(c, "create or replace function sem_fail() returns int language plpgsql as $$"
			  "begin raise exception 'conflict' using errcode = '40001'; end $$"));
	pgb_clear(h_ok(c, "create or replace procedure sem_p() language plpgsql as $$"
			  "begin insert into sem_log values (1); commit; perform sem_fail(); end $$"));
	r = pgb_exec(c, "call sem_p()");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 1"), 1,
		     "CALL of a procedure that committed was run again");

	r = pgb_exec(c, "do $$ begin insert into sem_log values (2); commit; "
			"perform sem_fail(); end $$");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	pgb_finish(c);
	c = h_connect(&br);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 2"), 1,
		     "a DO block that committed was run again");

	r = pgb_exec(c, "insert into sem_log values (3); commit; select sem_fail()");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 3"), 1,
		     "a text with a COMMIT in it was run again");

	r = pgb_exec(c, "begin; insert into sem_log values (4); commit; "
			"begin; select sem_fail(); commit");
	cr_expect_str_eq(pgb_sqlstate(r), "40001");
	pgb_clear(r);
	pgb_clear(pgb_exec(c, "rollback"));
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 4"), 1,
		     "a text with two transactions was run again");

	/* a batch with a COMMIT in it is no longer one transaction */
	struct pgb_stmt batch[] = {
		{ .sql = "insert into sem_log values (5)" },
		{ .sql = "commit" },
		{ .sql = "select sem_fail()" },
	};
	pgb_result *res[3];

	cr_expect_eq(pgb_batch(c, batch, 3, res), -1);
	cr_expect_str_eq(pgb_sqlstate(res[2]), "40001");
	for (int i = 0; i < 3; i++)
		pgb_clear(res[i]);
	cr_expect_eq(h_num(c, "select count(*) from sem_log where k = 5"), 1,
		     "a batch with a COMMIT in it was run again");
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}
