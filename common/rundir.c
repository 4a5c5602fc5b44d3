/* The run directory's default and the ownership checks made on it, by the
 * broker before it writes anything there and by agents and readers before
 * they send or believe anything. */
#include "rundir.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fits(int len, size_t n)
{
	return len >= 0 && (size_t)len < n ? 0 : -ENAMETOOLONG;
}

int rundir_default_for(uid_t uid, const char *xdg, char *buf, size_t n)
{
	struct stat st;

	if (uid == 0)
		return fits(snprintf(buf, n, "/run/pgbroker"), n);
	/* pam_systemd makes it 0700 and the user's; anything else (an
	 * inherited variable of another user, a typo) is not ours to use. */
	if (xdg && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode) &&
	    st.st_uid == uid && !(st.st_mode & (S_IWGRP | S_IWOTH)) &&
	    fits(snprintf(buf, n, "%s/pgbroker", xdg), n) == 0)
		return 0;
	return fits(snprintf(buf, n, "/tmp/pgbroker-%u", (unsigned)uid), n);
}

const char *rundir_resolve(const char *dir, char *buf, size_t n)
{
	if (dir && *dir)
		return dir;
	dir = getenv(RUNDIR_ENV);
	if (dir && *dir)
		return dir;
	if (rundir_default_for(geteuid(), getenv("XDG_RUNTIME_DIR"), buf, n) < 0)
		snprintf(buf, n, "/tmp/pgbroker-%u", (unsigned)geteuid());
	return buf;
}

int rundir_check_stat(const struct stat *st, uid_t owner, const char *dir, char *err,
		      size_t errlen)
{
	if (!S_ISDIR(st->st_mode)) {
		snprintf(err, errlen, "run directory %s is not a directory: remove it, or give "
			 "another with --dir", dir);
		return -EPERM;
	}
	if (st->st_uid != owner) {
		snprintf(err, errlen, "run directory %s is owned by uid %u, not by uid %u that "
			 "pgbroker runs as: someone else may have created it first; remove it "
			 "(rm -r %s) or give another with --dir", dir, (unsigned)st->st_uid,
			 (unsigned)owner, dir);
		return -EPERM;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "run directory %s has mode %04o: writable by %s, who could "
			 "replace the broker's socket or files; make it writable by its owner "
			 "alone (chmod go-w %s)", dir, (unsigned)(st->st_mode & 07777),
			 st->st_mode & S_IWOTH ? "everybody" : "its group", dir);
		return -EPERM;
	}
	return 0;
}

int rundir_required_uid(const char *require, uid_t *uid, char *err, size_t errlen)
{
	struct passwd pw, *res = NULL;
	char buf[4096], *end;
	unsigned long v;

	if (!require || !*require)
		require = getenv(RUNDIR_REQUIRE_ENV);
	if (!require || !*require)
		return 0;
	errno = 0;
	v = strtoul(require, &end, 10);
	if (*require >= '0' && *require <= '9' && !*end && !errno && v < (uid_t)-1) {
		*uid = (uid_t)v;
		return 1;
	}
	if (getpwnam_r(require, &pw, buf, sizeof(buf), &res) == 0 && res) {
		*uid = res->pw_uid;
		return 1;
	}
	snprintf(err, errlen, "%s: no such user or uid: \"%.64s\"", RUNDIR_REQUIRE_ENV, require);
	return -EINVAL;
}

int rundir_check_peer(uid_t peer, const char *require, const char *dir, const char *what,
		      char *err, size_t errlen)
{
	uid_t me = geteuid(), want = 0;
	struct stat st;
	char why[512];
	int rc = rundir_required_uid(require, &want, err, errlen);

	if (rc < 0)
		return -EPERM;
	if (rc > 0 ? peer != want : peer != me && peer != 0) {
		if (rc > 0)
			snprintf(err, errlen, "%s runs as uid %u, but uid %u is required (%s); "
				 "it is not the broker you asked for", what, (unsigned)peer,
				 (unsigned)want, RUNDIR_REQUIRE_ENV);
		else
			snprintf(err, errlen, "%s runs as uid %u, neither this process's uid %u "
				 "nor root: not trusted; set %s=%u if that is the broker's user",
				 what, (unsigned)peer, (unsigned)me, RUNDIR_REQUIRE_ENV,
				 (unsigned)peer);
		return -EPERM;
	}
	if (stat(dir, &st) < 0) {
		snprintf(err, errlen, "%s: cannot check run directory %s: %s", what, dir,
			 strerror(errno));
		return -EPERM;
	}
	if (rundir_check_stat(&st, peer, dir, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s (uid %u) is not trusted: %s", what, (unsigned)peer, why);
		return -EPERM;
	}
	return 0;
}
