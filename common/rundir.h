/* The run directory: its default, the same for the broker, libpgbroker and
 * poolstat, and the ownership checks that both sides make on it before they
 * trust anything in it (see docs/security.md). */
#ifndef PGB_RUNDIR_H
#define PGB_RUNDIR_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define RUNDIR_ENV "PGBROKER_DIR"
#define RUNDIR_REQUIRE_ENV "PGBROKER_REQUIRE_UID"

/* The default run directory of a process of uid: /run/pgbroker for root;
 * xdg/pgbroker when xdg ($XDG_RUNTIME_DIR) is an absolute directory owned
 * by uid and writable by nobody else; else /tmp/pgbroker-<uid>. Nobody but
 * uid (or root) can create any of them first. 0, or -ENAMETOOLONG. */
int rundir_default_for(uid_t uid, const char *xdg, char *buf, size_t n);
/* dir when non-empty, else $PGBROKER_DIR when non-empty, else this process's
 * default (rundir_default_for(geteuid(), $XDG_RUNTIME_DIR)); in buf when
 * computed. */
const char *rundir_resolve(const char *dir, char *buf, size_t n);

/* A directory the broker of uid owner may use: owned by owner, a directory,
 * not writable by group or others. 0, or -EPERM with err saying why and how
 * to fix it. */
int rundir_check_stat(const struct stat *st, uid_t owner, const char *dir, char *err,
		      size_t errlen);

/* The broker uid an agent or reader requires: require (a uid or a user
 * name; NULL or "": $PGBROKER_REQUIRE_UID). 1 with *uid set when one is
 * required, 0 when none is (then the own uid or root is accepted), -EINVAL
 * with err set when it names nobody. */
int rundir_required_uid(const char *require, uid_t *uid, char *err, size_t errlen);

/* May a broker running as peer (its socket's SO_PEERCRED, or the owner of
 * its stats segment) be trusted, with its run directory dir? It must be
 * the required uid, or without one this process's uid or root; dir must
 * be owned by peer and writable by nobody else. 0, or -EPERM with err
 * naming both uids (what is what says "broker at ...", "stats segment ...").
 * require as for rundir_required_uid. */
int rundir_check_peer(uid_t peer, const char *require, const char *dir, const char *what,
		      char *err, size_t errlen);

#endif
