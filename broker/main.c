/* pgbroker: one event loop (io_uring or epoll, loop.h) waits on the
 * registration socket, agent doorbells and hang-ups, libpq sockets, signals
 * and the next timer. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "broker.h"
#include "agent.h"
#include "backend.h"
#include "brstats.h"
#include "classify.h"
#include "copy.h"
#include "exec.h"
#include "health.h"
#include "listen.h"
#include "memory.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "pipeline.h"
#include "piddir.h"
#include "pool.h"
#include "request.h"
#include "waitq.h"
#include "clock.h"
#include "version.h"

#define FAST_GRACE_NS (3 * 1000000000LL) /* cancelled statements report back */
#define MAX_WAIT_NS (1000000000LL)
#define MIN_SLOTS 64   /* backend slots at least */
#define ACCEPT_PAUSE_NS (100 * 1000000LL) /* out of descriptors: accept again after */

static void arm_signal(struct broker *b)
{
	loop_poll(b->loop, b->signal_fd, POLLIN, tag_make(TAG_SIGNAL, 0, 0));
}

/* SIGTERM drains: statements already accepted and open transactions may
 * finish within shutdown_timeout_ms, new ones are refused (PB005). SIGINT,
 * or a drain that ran out of time, is the fast way: waiting statements are
 * refused, running ones cancelled, open transactions rolled back. */
static void begin_shutdown(struct broker *b, int how, const char *why)
{
	if (b->stopping >= how)
		return;
	if (!b->stopping)
		notify_stopping();
	b->stopping = how;
	if (how == STOP_DRAIN) {
		log_info("%s: shutting down; statements in flight and open transactions "
			 "have %d ms to finish", why, b->cfg.shutdown_timeout_ms);
		b->stop_deadline_ns = b->now_ns + (int64_t)b->cfg.shutdown_timeout_ms * 1000000;
		return;
	}
	log_info("%s: shutting down now: cancelling %u running statement%s, rolling back "
		 "open transactions", why, b->nbusy, b->nbusy == 1 ? "" : "s");
	b->stop_deadline_ns = b->now_ns + FAST_GRACE_NS;
	pool_shutdown(b);
	pool_cancel_all(b);
}

/* SIGHUP: the config file and environment again (flags still win). What
 * cannot change while agents are connected is reported and kept. */
static void reload(struct broker *b)
{
	static struct pgb_config nc;
	struct pgb_config old = b->cfg;
	char err[512], changes[2048];

	notify_reloading();
	if (config_load(&nc, b->argc, b->argv, err, sizeof(err)) < 0) {
		log_warn("reload failed, the configuration stays as it was: %s", err);
		b->st.c.reload_failures++;
		notify_ready("reload failed");
		return;
	}
	if (strcmp(nc.dir, old.dir) != 0) {
		log_warn("reload: dir cannot change while running: keeping %s", old.dir);
		memcpy(nc.dir, old.dir, sizeof(nc.dir));
	}
	if (strcmp(nc.dsn, old.dsn) != 0) {
		log_warn("reload: dsn cannot change while running: keeping the current one");
		memcpy(nc.dsn, old.dsn, sizeof(nc.dsn));
	}
	if (strcmp(nc.loop, old.loop) != 0) {
		log_warn("reload: loop cannot change while running: keeping %s (running on %s)",
			 old.loop, b->loop->name);
		memcpy(nc.loop, old.loop, sizeof(nc.loop));
	}
	if (nc.max_agents != old.max_agents) {
		log_warn("reload: max_agents cannot change while running: keeping %d",
			 old.max_agents);
		nc.max_agents = old.max_agents;
	}
	if ((uint32_t)nc.max_pool_size > b->nslots) {
		log_warn("reload failed, the configuration stays as it was: max_pool_size %d is "
			 "above %u, the most this broker can grow to without a restart",
			 nc.max_pool_size, b->nslots);
		b->st.c.reload_failures++;
		notify_ready("reload failed");
		return;
	}
	nc.ready_fd = old.ready_fd;
	if (config_validate(&nc, err, sizeof(err)) < 0) {
		log_warn("reload failed, the configuration stays as it was: %s", err);
		b->st.c.reload_failures++;
		notify_ready("reload failed");
		return;
	}
	config_diff(&old, &nc, changes, sizeof(changes));
	b->cfg = nc;
	log_open(b->cfg.log_level, b->cfg.syslog);
	health_configure(b);
	pool_reconfigure(b, &old);
	b->st.c.reloads++;
	log_info("reloaded %s: %s", b->cfg.config_file[0] ? b->cfg.config_file : "(no file)",
		 *changes ? changes : "nothing changed");
	if (config_advise(&b->cfg, err, sizeof(err)))
		log_warn("%s", err);
	notify_ready("reloaded");
}

static void on_signal(struct broker *b)
{
	struct signalfd_siginfo si;

	while (read(b->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM)
			begin_shutdown(b, STOP_DRAIN, "SIGTERM");
		else if (si.ssi_signo == SIGINT)
			begin_shutdown(b, STOP_FAST, "SIGINT");
		else if (si.ssi_signo == SIGHUP && !b->stopping)
			reload(b);
		else if (si.ssi_signo == SIGHUP)
			log_info("SIGHUP while shutting down: configuration not reloaded");
	}
	arm_signal(b);
}

/* One completion from the loop: res is revents, an accepted fd or -errno. */
static void on_event(void *arg, uint64_t tag, int res, int more)
{
	struct broker *b = arg;
	struct agent *a;
	struct backend *be;

	if (b->now_stale) {	/* the first completion after a wait */
		b->now_ns = clock_ns();
		b->now_stale = 0;
	}

	switch (TAG_KIND(tag)) {
	case TAG_ACCEPT:
		if (res >= 0) {
			b->accept_failing = 0;
			agent_accept(b, res);
		} else if (res != -ECANCELED && !b->accept_failing) {
			log_warn("accept: %s", strerror(-res));
		}
		if (more || b->stopping)
			break;
		/* Out of descriptors the connection stays queued and the next
		 * accept fails at once: wait for some to be freed, not spin. */
		if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS ||
		    res == -ENOMEM) {
			if (!b->accept_failing)
				log_warn("not accepting agents for now: retrying every %lld ms",
					 ACCEPT_PAUSE_NS / 1000000);
			b->accept_failing = 1;
			b->accept_retry_ns = b->now_ns + ACCEPT_PAUSE_NS;
			break;
		}
		agent_accept_arm(b);
		break;
	case TAG_SIGNAL:
		on_signal(b);
		break;
	case TAG_HELLO:
		if ((a = agent_by_tag(b, tag)) && a->state == AG_HELLO)
			agent_on_hello(b, a, res);
		break;
	case TAG_HUP:
		if ((a = agent_by_tag(b, tag)))
			agent_fail(b, a, DOOM_HANGUP);
		break;
	case TAG_BELL:
		if ((a = agent_by_tag(b, tag)) && !a->doom)
			agent_service(b, a, 1);
		break;
	case TAG_CANCEL:
		pool_on_cancel(b);
		break;
	case TAG_LISTENER:
		listener_on_poll(b, tag, res);
		break;
	case TAG_BACKEND:
		if ((be = pool_by_tag(b, tag)))
			pool_on_poll(b, be, res);
		break;
	default:
		break;
	}
}

/* Each agent costs the broker two descriptors (socket, eventfd), three on
 * epoll (its bell): lift the soft limit to the hard one and say so when
 * max_agents cannot fit. */
static void raise_fd_limit(const struct broker *b)
{
	struct rlimit rl;
	rlim_t per_agent = b->loop->bell == CHAN_BELL_EVENTFD ? 3 : 2;
	rlim_t need = per_agent * (rlim_t)b->cfg.max_agents + (rlim_t)b->cfg.max_pool_size + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need)
		log_warn("open file limit %llu is below the %llu that max_agents=%d needs; "
			 "raise it (ulimit -n) or lower max_agents", (unsigned long long)rl.rlim_cur,
			 (unsigned long long)need, b->cfg.max_agents);
}

static int setup_loop(struct broker *b)
{
	char why[512];
	int rc = loop_open((enum loop_want)loop_parse(b->cfg.loop), &b->loop, why, sizeof(why));

	if (rc < 0) {
		log_error("no usable event loop: %s", why);
		return rc;
	}
	if (b->loop->bell == CHAN_BELL_EVENTFD && strcmp(b->cfg.loop, "epoll") != 0)
		log_warn("%s", why);	/* the slower path, and why */
	else
		log_info("%s", why);
	return 0;
}

static void handled_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
}

/* Blocked from the start of main: a SIGHUP (a reload right after a
 * Type=simple start) or SIGTERM before the signalfd exists waits for it
 * instead of killing the broker. */
static void block_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	handled_signals(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

static int setup_signals(struct broker *b)
{
	sigset_t set;

	handled_signals(&set);
	b->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (b->signal_fd < 0)
		return -errno;
	arm_signal(b);
	return 0;
}

static int run(struct broker *b)
{
	for (;;) {
		int64_t next;

		b->now_ns = clock_ns();
		b->pass++;
		next = b->now_ns + MAX_WAIT_NS;
		agent_run_ready(b);
		copy_run(b);
		pool_timers(b, &next);
		agent_timers(b, &next);
		health_timers(b, &next);
		listener_timers(b, &next);
		agent_run_kicks(b);
		agent_run_doomed(b);
		copy_run(b);	/* agents gone mid-COPY end theirs */
		mem_run_resumes(b);
		pool_flush(b);
		agent_run_wakes(b);
		stats_publish(b);
		if (b->stopping && b->now_ns >= b->stop_deadline_ns) {
			if (b->stopping == STOP_FAST)
				return 0;
			begin_shutdown(b, STOP_FAST, "shutdown_timeout_ms expired");
		}
		if (b->stopping == STOP_DRAIN && pool_quiet(b) && agent_all_sent(b) &&
		    list_empty(&b->kicks))
			return 0;
		if (b->stopping == STOP_FAST && b->nbusy == 0)
			return 0;
		if (!list_empty(&b->ready) || !list_empty(&b->kicks) || !list_empty(&b->copyq) ||
		    !list_empty(&b->mem.resume))
			next = b->now_ns;
		if (b->stopping && b->stop_deadline_ns < next)
			next = b->stop_deadline_ns;
		next -= b->now_ns;
		if (next < 0)
			next = 0;
		b->now_stale = 1;
		int rc = loop_wait(b->loop, next, on_event, b);
		if (rc < 0) {
			log_error("%s wait: %s", b->loop->name, strerror(-rc));
			return rc;
		}
	}
}

/* A start failure's exit status: 2 when starting again cannot help until
 * someone changes something (the unit's RestartPreventExitStatus=2), 1
 * when it may (out of memory or descriptors, another broker stopping). */
static int start_failure(int err)
{
	switch (-err) {
	case ENOMEM: case EMFILE: case ENFILE: case ENOSPC: case EAGAIN: /* == EWOULDBLOCK */
	case EINTR: case EIO:
		return 1;
	default:
		return 2;
	}
}

/* A start that failed after taking the directory leaves nothing behind
 * (and nothing the next start would take for a crash). */
static void remove_own_files(struct broker *b)
{
	if (b->lock_fd >= 0 && b->listen_fd >= 0)
		unlink(b->sock_path);
	piddir_release(b);
}

/* The flags that are commands (--help, --version, --check-config) and a
 * bad configuration or DSN end here: the exit status, or -1 to serve. */
static int run_commands(struct broker *b, int argc, char **argv)
{
	char err[512];

	if (config_load(&b->cfg, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "pgbroker: %s\n", err);
		return 2;
	}
	if (b->cfg.want_help) {
		config_usage(stdout, argv[0]);
		return 0;
	}
	if (b->cfg.want_version) {
		printf("pgbroker %s\n", PGB_VERSION);
		return 0;
	}
	if (*b->cfg.dsn) {
		char *perr = NULL;
		PQconninfoOption *o = PQconninfoParse(b->cfg.dsn, &perr);

		if (!o) {
			fprintf(stderr, "pgbroker: dsn: invalid connection string: %s",
				perr ? perr : "out of memory\n");
			PQfreemem(perr);
			return 2;
		}
		PQconninfoFree(o);
	}
	if (b->cfg.want_check) {
		if (config_advise(&b->cfg, err, sizeof(err)))
			fprintf(stderr, "pgbroker: warning: %s\n", err);
		config_print(&b->cfg, stdout);
		return 0;
	}
	return -1;
}

/* The broker's lists and its agent slots: 0, or -ENOMEM. */
static int broker_init(struct broker *b, int argc, char **argv)
{
	b->argc = argc;
	b->argv = argv;
	b->listen_fd = b->lock_fd = b->signal_fd = b->dir_fd = -1;
	list_init(&b->hello);
	list_init(&b->wake);
	list_init(&b->kicks);
	list_init(&b->ready);
	list_init(&b->snoozed);
	list_init(&b->blocked);
	list_init(&b->doomed);
	b->agents = calloc((size_t)b->cfg.max_agents, sizeof(*b->agents));
	b->free_slots = calloc((size_t)b->cfg.max_agents, sizeof(*b->free_slots));
	if (!b->agents || !b->free_slots ||
	    uidcount_init(&b->per_uid, (uint32_t)b->cfg.max_agents) < 0)
		return -ENOMEM;
	for (int i = b->cfg.max_agents - 1; i >= 0; i--)
		b->free_slots[b->nfree++] = (uint32_t)i;
	ratelimit_init(&b->rl_refused, WARN_BURST, WARN_WINDOW_MS);
	ratelimit_init(&b->rl_silent, WARN_BURST, WARN_WINDOW_MS);
	/* Room for max_pool_size to grow by reload without moving a backend. */
	b->nslots = (uint32_t)b->cfg.max_pool_size * 2;
	if (b->nslots < MIN_SLOTS)
		b->nslots = MIN_SLOTS;
	return 0;
}

/* The loop, the signals, the run directory, the socket, the stats
 * segment and the pool, in that order: 0, or the exit status (what was
 * taken is given back). */
static int start(struct broker *b)
{
	int rc;

	b->now_ns = clock_ns();
	if (setup_loop(b) < 0)
		return 2;	/* no usable event loop: a restart would not help */
	raise_fd_limit(b);
	if (setup_signals(b) < 0)
		return 1;
	rc = piddir_take(b);
	if (rc < 0)
		return start_failure(rc);	/* the run directory refused us */
	rc = agent_listen(b);
	if (rc < 0) {
		remove_own_files(b);
		return start_failure(rc);
	}
	rc = stats_open(b);
	if (rc < 0) {
		log_error("cannot create stats segment in %s: %s", b->cfg.dir, strerror(-rc));
		remove_own_files(b);
		return start_failure(rc);
	}
	rc = pool_init(b);
	if (rc == 0)
		rc = listener_init(b);
	if (rc < 0) {
		log_error("cannot set up the pool: %s", strerror(-rc));
		stats_close(b);
		remove_own_files(b);
		return 1;
	}
	return 0;
}

/* Serving: say so in the log, on --ready-fd and to systemd. */
static void announce_ready(struct broker *b)
{
	log_info("pgbroker %s listening on %s (pool %d..%d..%d)", PGB_VERSION, b->sock_path,
		 b->cfg.min_pool_size, b->cfg.pool_size, b->cfg.max_pool_size);
	if (b->cfg.ready_fd >= 0) {
		if (write(b->cfg.ready_fd, "ready\n", 6) != 6)
			log_warn("cannot write to --ready-fd %d", b->cfg.ready_fd);
		/* Not a standard stream: fd 2 is the log, and a closed one would
		 * be reused by a socket that log lines then go into. */
		if (b->cfg.ready_fd > STDERR_FILENO)
			close(b->cfg.ready_fd);
	}
	notify_ready("serving");
}

/* After the last pass: nobody new finds this broker, then everything
 * goes, in reverse order of start. */
static void stop(struct broker *b)
{
	loop_flush(b->loop);	/* the last pass's wake-ups */
	unlink(b->sock_path);
	agent_close_all(b);
	listener_free(b);
	pool_close_all(b);
	stats_close(b);
	loop_close(b->loop);
	piddir_release(b);
	free(b->agents);
	free(b->free_slots);
	uidcount_free(&b->per_uid);
	sql_class_exit();
	log_info("stopped");
}

int main(int argc, char **argv)
{
	static struct broker broker;
	struct broker *b = &broker;
	char err[512];
	int rc;

	block_signals();
	rc = run_commands(b, argc, argv);
	if (rc >= 0)
		return rc;
	log_open(b->cfg.log_level, b->cfg.syslog);
	if (config_advise(&b->cfg, err, sizeof(err)))
		log_warn("%s", err);
	if (broker_init(b, argc, argv) < 0) {
		log_error("out of memory");
		return 1;
	}
	rc = start(b);
	if (rc)
		return rc;
	announce_ready(b);
	rc = run(b);
	stop(b);
	return rc < 0 ? 1 : 0;
}
