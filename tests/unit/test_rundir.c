/* Unit tests for common/rundir.c: the default run directory (one function
 * for broker, library and poolstat) and the ownership checks. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rundir.h"

TestSuite(rundir);

static char tmp[128];

static void mk_tmp(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/pgb-rundir.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
}

Test(rundir, root_defaults_to_run_pgbroker)
{
	char buf[256];

	cr_assert_eq(rundir_default_for(0, "/run/user/0", buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, "/run/pgbroker");
}

Test(rundir, a_user_gets_xdg_runtime_dir_only_when_it_is_theirs)
{
	char buf[256], want[256];
	uid_t me = geteuid();

	mk_tmp();	/* 0700, ours */
	if (me == 0) {
		/* As root: pretend to be a user whose directory this is. */
		cr_assert_eq(chown(tmp, 4321, 4321), 0);
		me = 4321;
	}
	cr_assert_eq(rundir_default_for(me, tmp, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s/pgbroker", tmp);
	cr_expect_str_eq(buf, want);

	/* Someone else's, or writable by others, or relative, or unset: /tmp/pgbroker-UID. */
	snprintf(want, sizeof(want), "/tmp/pgbroker-%u", (unsigned)me + 1);
	cr_assert_eq(rundir_default_for(me + 1, tmp, buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, want);
	cr_assert_eq(chmod(tmp, 0777), 0);
	snprintf(want, sizeof(want), "/tmp/pgbroker-%u", (unsigned)me);
	cr_assert_eq(rundir_default_for(me, tmp, buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, want);
	cr_assert_eq(rundir_default_for(me, "run/user", buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, want);
	cr_assert_eq(rundir_default_for(me, NULL, buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, want);
	rmdir(tmp);
}

Test(rundir, resolve_prefers_the_argument_then_the_environment)
{
	char buf[256], want[256];

	setenv("PGBROKER_DIR", "/from/env", 1);
	cr_expect_str_eq(rundir_resolve("/given", buf, sizeof(buf)), "/given");
	cr_expect_str_eq(rundir_resolve(NULL, buf, sizeof(buf)), "/from/env");
	setenv("PGBROKER_DIR", "", 1);
	rundir_default_for(geteuid(), getenv("XDG_RUNTIME_DIR"), want, sizeof(want));
	cr_expect_str_eq(rundir_resolve("", buf, sizeof(buf)), want);
	unsetenv("PGBROKER_DIR");
	cr_expect_str_eq(rundir_resolve(NULL, buf, sizeof(buf)), want);
	/* Never the old, squattable /tmp/pgbroker. */
	cr_expect_str_neq(want, "/tmp/pgbroker");
}

Test(rundir, a_directory_someone_else_owns_or_may_write_is_refused)
{
	struct stat st = { .st_mode = S_IFDIR | 0700, .st_uid = 10 };
	char err[512];

	cr_expect_eq(rundir_check_stat(&st, 10, "/d", err, sizeof(err)), 0);
	cr_expect_eq(rundir_check_stat(&st, 11, "/d", err, sizeof(err)), -EPERM);
	cr_expect(strstr(err, "owned by uid 10, not by uid 11"), "%s", err);
	st.st_mode = S_IFDIR | 0777;
	cr_expect_eq(rundir_check_stat(&st, 10, "/d", err, sizeof(err)), -EPERM);
	cr_expect(strstr(err, "chmod go-w /d"), "%s", err);
	st.st_mode = S_IFDIR | 0770;
	cr_expect_eq(rundir_check_stat(&st, 10, "/d", err, sizeof(err)), -EPERM);
	cr_expect(strstr(err, "writable by its group"), "%s", err);
	st.st_mode = S_IFDIR | 0711;
	cr_expect_eq(rundir_check_stat(&st, 10, "/d", err, sizeof(err)), 0);
	st.st_mode = S_IFDIR | 0750;
	cr_expect_eq(rundir_check_stat(&st, 10, "/d", err, sizeof(err)), 0);
	st.st_mode = S_IFREG | 0700;
	cr_expect_eq(rundir_check_stat(&st, 10, "/d", err, sizeof(err)), -EPERM);
}

Test(rundir, the_required_uid_is_a_number_or_a_user_name)
{
	uid_t uid = 99;
	char err[256];

	unsetenv("PGBROKER_REQUIRE_UID");
	cr_expect_eq(rundir_required_uid(NULL, &uid, err, sizeof(err)), 0);
	cr_expect_eq(rundir_required_uid("1234", &uid, err, sizeof(err)), 1);
	cr_expect_eq(uid, 1234);
	cr_expect_eq(rundir_required_uid("root", &uid, err, sizeof(err)), 1);
	cr_expect_eq(uid, 0);
	setenv("PGBROKER_REQUIRE_UID", "77", 1);
	cr_expect_eq(rundir_required_uid(NULL, &uid, err, sizeof(err)), 1);
	cr_expect_eq(uid, 77);
	cr_expect_eq(rundir_required_uid("no-such-user-pgb", &uid, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "no-such-user-pgb"), "%s", err);
	unsetenv("PGBROKER_REQUIRE_UID");
}

Test(rundir, a_peer_of_another_uid_is_named_with_ours)
{
	char err[512], want[128];
	uid_t me = geteuid(), other = me == 0 ? 4321 : me + 1;

	unsetenv("PGBROKER_REQUIRE_UID");
	mk_tmp();
	cr_expect_eq(rundir_check_peer(me, NULL, tmp, "broker", err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(rundir_check_peer(other, NULL, tmp, "broker", err, sizeof(err)), -EPERM);
	snprintf(want, sizeof(want), "runs as uid %u, neither this process's uid %u",
		 (unsigned)other, (unsigned)me);
	cr_expect(strstr(err, want), "%s", err);
	/* Required: the peer passes, but its directory must be its own. */
	snprintf(want, sizeof(want), "%u", (unsigned)other);
	cr_expect_eq(rundir_check_peer(other, want, tmp, "broker", err, sizeof(err)), -EPERM);
	cr_expect(strstr(err, "owned by uid"), "%s", err);
	if (me == 0) {
		cr_assert_eq(chown(tmp, other, other), 0);
		cr_expect_eq(rundir_check_peer(other, want, tmp, "broker", err, sizeof(err)), 0,
			     "%s", err);
	}
	rmdir(tmp);
}
