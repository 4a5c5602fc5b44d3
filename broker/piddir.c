/* Taking the run directory, as PostgreSQL takes its data directory: create
 * it with a restrictive mode or refuse one that someone else owns or may
 * write to, then lock the pid file in it. Every file in it is opened
 * relative to the directory's descriptor and never through a symbolic link. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"
#include "piddir.h"
#include "clock.h"
#include "rundir.h"

#define PID_FILE "pgbroker.pid"
#define FOREIGN_LOCK_WAIT_MS 1000 /* a broker that locks writes its pid right after */

/* The pid a pid file names, or 0 when it is not one number on one line:
 * its content is never shown as it is. */
static pid_t parse_pid(const char *s)
{
	char *end;
	long v;

	if (*s < '1' || *s > '9')
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || v <= 0 || v > 0x3fffffff || (*end && strcmp(end, "\n") != 0))
		return 0;
	return (pid_t)v;
}

static pid_t read_pid(int fd, int *empty)
{
	char buf[32];
	ssize_t got = pread(fd, buf, sizeof(buf) - 1, 0);

	buf[got > 0 ? got : 0] = '\0';
	*empty = got <= 0;
	return parse_pid(buf);
}

static int pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The pid file, ours: a regular file owned by our uid, mode 0600 (set
 * before we try to lock it, see take_lock). -EPERM when it is anything else. */
static int open_pid_file(struct broker *b, int *fd_out)
{
	struct stat st;
	int fd = openat(b->dir_fd, PID_FILE, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
			O_CLOEXEC, 0600);

	if (fd < 0) {
		int rc = -errno;

		if (rc == -ELOOP)
			log_error("%s is a symbolic link: pgbroker never writes through one; remove "
				  "it (rm %s)", b->lock_path, b->lock_path);
		else
			log_error("cannot open %s: %s: give the broker's user write access to %s, "
				  "or choose another dir", b->lock_path, strerror(-rc), b->cfg.dir);
		return rc == -ELOOP ? -EPERM : rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		log_error("%s is not a regular file owned by uid %u: remove it (rm %s)",
			  b->lock_path, (unsigned)geteuid(), b->lock_path);
		close(fd);
		return -EPERM;
	}
	if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) < 0) {
		log_error("cannot make %s mode 0600: %s", b->lock_path, strerror(errno));
		close(fd);
		return -EPERM;
	}
	*fd_out = fd;
	return 0;
}

/* The pid file's lock, not the socket file, says who owns the directory:
 * a second broker must never unlink a live broker's socket, and a lock dies
 * with its process. The file locked must still be the one at the path (a
 * broker that exits unlinks it, maybe after we opened it).
 *
 * A lock held while the pid in the file is gone is not a broker's (a broker
 * writes its pid right after it locks): an older release left the file
 * readable by everybody, and another user who opened it could keep every
 * later broker out. Such a file is replaced. *old gets the pid the file
 * named (0 none), *junk whether it held something else. */
static int take_lock(struct broker *b, pid_t *old, int *junk)
{
	for (int tries = 0; tries < 5; tries++) {
		struct stat fs, ps;
		int fd = -1, rc, empty, locked;
		int64_t give_up = clock_ns() + FOREIGN_LOCK_WAIT_MS * 1000000LL;

		rc = open_pid_file(b, &fd);
		if (rc < 0)
			return rc;
		*old = read_pid(fd, &empty);
		*junk = !*old && !empty;
		while (!(locked = flock(fd, LOCK_EX | LOCK_NB) == 0)) {
			*old = read_pid(fd, &empty);
			if (pid_alive(*old)) {
				log_error("another pgbroker (pid %d) is already running on %s: stop "
					  "it, or give this one another dir", (int)*old, b->cfg.dir);
				close(fd);
				return -EWOULDBLOCK;
			}
			if (clock_ns() >= give_up)
				break;
			usleep(20000);
		}
		if (!locked) {
			log_warn("%s is locked by a process that is not a pgbroker (the pid in it "
				 "is not running): replacing the file", b->lock_path);
			unlinkat(b->dir_fd, PID_FILE, 0);
			close(fd);
			continue;
		}
		if (fstat(fd, &fs) == 0 && fstatat(b->dir_fd, PID_FILE, &ps, AT_SYMLINK_NOFOLLOW) == 0 &&
		    fs.st_dev == ps.st_dev && fs.st_ino == ps.st_ino) {
			b->lock_fd = fd;
			return 0;
		}
		close(fd);
	}
	log_error("cannot take %s: it keeps being replaced", b->lock_path);
	return -EAGAIN;
}

/* Open the directory (making it when missing) and check it. */
static int open_dir(struct broker *b)
{
	const char *dir = b->cfg.dir;
	/* Others may only search it (reach the socket by name) when the
	 * configuration lets other uids or gids register. */
	mode_t mode = b->cfg.n_allow_uids || b->cfg.n_allow_gids ? 0711 : 0700;
	struct stat st;
	char err[1024];
	int fd, rc;

	if (mkdir(dir, mode) == 0)
		b->made_dir = 1;
	else if (errno != EEXIST) {
		rc = -errno;
		log_error("cannot create run directory %s: %s: create it for the broker's user, "
			  "or choose another dir", dir, strerror(-rc));
		return rc;
	}
	/* A symbolic link named as the directory must be one that only we
	 * (or root) could have made. */
	if (lstat(dir, &st) < 0) {
		rc = -errno;
		log_error("cannot check run directory %s: %s", dir, strerror(-rc));
		return rc;
	}
	if (S_ISLNK(st.st_mode) && st.st_uid != geteuid() && st.st_uid != 0) {
		log_error("run directory %s is a symbolic link owned by uid %u, not by uid %u "
			  "that pgbroker runs as: someone else may have created it first; remove "
			  "it or give another directory with --dir", dir, (unsigned)st.st_uid,
			  (unsigned)geteuid());
		return -EPERM;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		log_error("cannot open run directory %s: %s", dir, strerror(-rc));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	/* The umask may have taken more than we asked for. */
	if (b->made_dir && fchmod(fd, mode) == 0)
		st.st_mode = (st.st_mode & ~(mode_t)07777) | mode;
	if (rundir_check_stat(&st, geteuid(), dir, err, sizeof(err)) < 0) {
		log_error("%s", err);
		close(fd);
		return -EPERM;
	}
	b->dir_fd = fd;
	return 0;
}

int piddir_take(struct broker *b)
{
	char pid[32];
	pid_t old = 0;
	int junk = 0, rc;

	snprintf(b->lock_path, sizeof(b->lock_path), "%s/%s", b->cfg.dir, PID_FILE);
	rc = open_dir(b);
	if (rc == 0)
		rc = take_lock(b, &old, &junk);
	if (rc < 0) {
		piddir_release(b);
		return rc;
	}
	if (old)
		log_warn("pgbroker (pid %d) did not shut down cleanly: replacing the files it "
			 "left in %s", (int)old, b->cfg.dir);
	else if (junk)
		log_warn("%s held something else than a pid (not shown): replacing the files "
			 "left in %s", b->lock_path, b->cfg.dir);
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(b->lock_fd, 0) < 0 || pwrite(b->lock_fd, pid, strlen(pid), 0) < 0)
		log_warn("cannot write pid to %s: %s", b->lock_path, strerror(errno));
	return 0;
}

void piddir_release(struct broker *b)
{
	if (b->lock_fd >= 0) {
		unlinkat(b->dir_fd, PID_FILE, 0);
		close(b->lock_fd);
		b->lock_fd = -1;
	}
	if (b->dir_fd >= 0)
		close(b->dir_fd);
	b->dir_fd = -1;
	if (b->made_dir)
		rmdir(b->cfg.dir);
	b->made_dir = 0;
}
