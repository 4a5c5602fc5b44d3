/* Limits per agent against a real broker: connections that never say hello
 * do not lock out an agent that does, a silent connection is closed after
 * hello_timeout_ms, max_agents_per_uid caps one uid, and a flood of refused
 * connections is logged in a few lines and one count. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

/* Warnings of one kind: a few per 10 s window (a test may straddle two). */
#define WARN_LINES_MAX 20

static struct h_broker br;

/* A plain connection to the registration socket that says nothing. */
static int silent_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", br.dir);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	return fd;
}

/* Lines of the broker log that contain needle. */
static int log_count(const char *needle)
{
	char line[4096];
	FILE *f = fopen(br.log, "r");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

/* The number in the log's "... N more <what> suppressed" lines, summed;
 * plus the "(and N more like it suppressed)" told with later lines. */
static long long log_suppressed(const char *what)
{
	char line[4096], pat[128];
	FILE *f = fopen(br.log, "r");
	long long sum = 0;

	if (!f)
		return 0;
	snprintf(pat, sizeof(pat), " more %s suppressed", what);
	while (fgets(line, sizeof(line), f)) {
		const char *p;
		unsigned long long n;

		if (strstr(line, pat) && (p = strstr(line, "... ")) && sscanf(p, "... %llu", &n) == 1)
			sum += (long long)n;
		if ((p = strstr(line, "(and ")) && sscanf(p, "(and %llu more like it", &n) == 1)
			sum += (long long)n;
	}
	fclose(f);
	return sum;
}

struct flush_wait {
	const char *what;
	long long want;
};

static int suppressed_told(void *arg)
{
	struct flush_wait *w = arg;

	return log_suppressed(w->what) >= w->want;
}

static void raise_nofile(rlim_t want)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < want) {
		rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
}

Test(limits, silent_connections_do_not_lock_out_an_agent, .timeout = 120)
{
	/* a long hello timeout: only making room can let the agent in */
	const char *args[] = { "--max-agents", "64", "--hello-timeout-ms", "600000", NULL };
	enum { SILENT = 2000 };
	static int fds[SILENT];
	pgb_conn *c;

	raise_nofile(SILENT + 256);
	h_broker_start(&br, args);
	for (int i = 0; i < SILENT; i++)
		fds[i] = silent_connect();
	/* all of them held open, saying nothing: a real agent still gets in */
	c = pgb_connect(br.dir);
	cr_assert_eq(pgb_status(c), PGB_CONNECTION_OK, "locked out: %s", pgb_error_message(c));
	cr_assert_eq(h_num(c, "select 42"), 42);
	/* and the broker said so in a few lines, not 2000 */
	cr_assert_leq(log_count("not registered after"), WARN_LINES_MAX,
		      "one warning per silent connection closed");
	pgb_finish(c);
	for (int i = 0; i < SILENT; i++)
		close(fds[i]);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int hung_up(void *arg)
{
	char x;

	return read(*(int *)arg, &x, 1) == 0;
}

Test(limits, a_silent_connection_is_closed_after_hello_timeout_ms, .timeout = 60)
{
	const char *args[] = { "--hello-timeout-ms", "200", NULL };
	int fd;

	h_broker_start(&br, args);
	fd = silent_connect();
	cr_assert(h_until(hung_up, &fd, 10000), "the broker kept a silent connection");
	close(fd);
	cr_assert_eq(log_count("not registered within hello_timeout_ms"), 1);
	/* agents that do register are not affected */
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 7"), 7);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(limits, max_agents_per_uid_caps_one_uid_and_a_refusal_flood_is_a_few_lines,
     .timeout = 90)
{
	const char *args[] = { "--max-agents-per-uid", "2", NULL };
	enum { FLOOD = 1000 };
	struct flush_wait w = { .what = "refused agents", .want = FLOOD - WARN_LINES_MAX };
	pgb_conn *a, *b, *c;
	int logged;

	h_broker_start(&br, args);
	a = h_connect(&br);
	b = h_connect(&br);
	c = pgb_connect(br.dir);
	cr_assert_neq(pgb_status(c), PGB_CONNECTION_OK, "a third agent of the uid registered");
	cr_assert(strstr(pgb_error_message(c), "max_agents_per_uid"), "%s", pgb_error_message(c));
	pgb_finish(c);
	/* a flood of refusals: each connection is answered and closed */
	for (int i = 0; i < FLOOD; i++) {
		int fd = silent_connect();
		char buf[512];

		(void)!read(fd, buf, sizeof(buf));	/* the refusal, then EOF */
		close(fd);
	}
	/* the flood is told in a few lines plus a count of the rest */
	logged = log_count("refused agent");
	cr_assert_leq(logged, WARN_LINES_MAX, "%d refusal lines", logged);
	w.want = FLOOD + 1 - logged;
	cr_assert(h_until(suppressed_told, &w, 30000), "suppressed %lld, want %lld",
		  log_suppressed(w.what), w.want);
	cr_assert_eq(log_suppressed(w.what), FLOOD + 1 - logged);
	/* the uid's agents still work, and one leaving makes room */
	cr_assert_eq(h_num(a, "select 1"), 1);
	pgb_finish(b);
	c = NULL;
	for (long long until = h_now_ms() + 10000; h_now_ms() < until;) {
		c = pgb_connect(br.dir);
		if (pgb_status(c) == PGB_CONNECTION_OK)
			break;
		pgb_finish(c);
		c = NULL;
		usleep(10000);
	}
	cr_assert_not_null(c, "no room after an agent left");
	cr_assert_eq(h_num(c, "select 2"), 2);
	pgb_finish(c);
	pgb_finish(a);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* ---- max_backends_per_agent: one agent flooding independent statements ---- */

static int flood(void *arg)
{
	int n = *(int *)arg, bad = 0;
	pgb_conn *c = pgb_connect(br.dir);

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	for (int i = 0; i < n; i++)
		if (pgb_send(c, "select pg_sleep(0.2) /* flood */", 0, NULL, PGB_INDEPENDENT) < 0)
			return 11;
	for (int i = 0; i < n; i++) {
		long long id;
		pgb_result *r = pgb_get_result(c, &id);

		if (!r)
			return 12;
		if (!pgb_result_ok(r) && !bad++)
			fprintf(stderr, "flood: %s %s\n", pgb_sqlstate(r), pgb_result_error(r));
		pgb_clear(r);
	}
	pgb_finish(c);
	return bad ? 13 : 0;
}

static int flooding(void *arg)
{
	return h_backends(arg, &br, "query like '%/* flood */%' and state = 'active'") >= 1;
}

Test(limits, an_agent_flooding_independent_statements_leaves_backends_to_others, .timeout = 120)
{
	/* max_pool_size 4: the default share is 2 backends per agent */
	const char *args[] = { "--min-pool-size", "4", "--pool-size", "4", "--max-pool-size", "4",
			       "--acquire-timeout-ms", "2000", "--retry-attempts", "0", NULL };
	PGconn *pg = h_pg();
	int n = 40, most = 0;
	long long worst = 0;
	pid_t kid;
	pgb_conn *c;

	h_broker_start(&br, args);
	c = h_connect(&br);
	kid = h_fork(flood, &n);
	cr_assert(h_until(flooding, pg, 10000), "the flood never started");
	/* 40 statements of 0.2 s on two backends: about 4 s of flood, during
	 * which a bystander is served every time and the flooder never holds
	 * more than its share */
	for (int i = 0; i < 20; i++) {
		long long t0 = h_now_ms(), busy;
		pgb_result *r = pgb_exec(c, "select 1");

		cr_assert(pgb_result_ok(r), "bystander, statement %d: %s %s", i, pgb_sqlstate(r),
			  pgb_result_error(r));
		pgb_clear(r);
		if (h_now_ms() - t0 > worst)
			worst = h_now_ms() - t0;
		busy = h_backends(pg, &br, "query like '%/* flood */%' and state = 'active'");
		if (busy > most)
			most = (int)busy;
		usleep(50000);	/* sample the flood over its length */
	}
	fprintf(stderr, "limits: during the flood the bystander waited at most %lld ms; the "
		"flooder ran on at most %d backends at once\n", worst, most);
	cr_assert_leq(most, 2, "the flooder held %d of 4 backends", most);
	cr_assert_eq(h_wait(kid, 60000), 0, "the flooder's statements did not all succeed");
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}
