/* Faults the core must survive: agents killed mid-transaction and
 * mid-statement, a broker killed under waiting agents, bad configuration,
 * a second broker, oversize statements, a hostile channel, fork(). */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chan.h"
#include "futex.h"
#include "harness.h"
#include "proto.h"

static struct h_broker br;

/* Child: take a row lock inside a transaction, tell the parent, wait. */
static int hold_lock(void *arg)
{
	int fd = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);

	pgb_clear(pgb_exec(c, "begin"));
	pgb_result *r = pgb_exec(c, "update t_kill set v = v + 1 where k = 1");
	if (!pgb_result_ok(r))
		return 1;
	(void)!write(fd, "x", 1);
	pause();
	return 0;
}

static int no_idle_in_txn(void *arg)
{
	return h_backends(arg, &br, "state like 'idle in transaction%'") == 0;
}

Test(faults, agent_killed_in_transaction_releases_its_locks, .timeout = 60)
{
	int p[2];
	char x;
	pid_t child;
	pgb_conn *c;
	PGconn *pg = h_pg();

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	pgb_clear(h_ok(c, "drop table if exists t_kill; create table t_kill (k int primary key, v int);"
			  "insert into t_kill values (1, 0)"));
	cr_assert_eq(pipe(p), 0);
	child = h_fork(hold_lock, &p[1]);
	cr_assert_eq(read(p[0], &x, 1), 1, "child never took the lock");
	cr_assert_eq(h_backends(pg, &br, "state = 'idle in transaction'"), 1);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	/* the lock is free again: a bounded lock wait succeeds */
	pgb_clear(h_ok(c, "begin"));
	pgb_clear(h_ok(c, "set local lock_timeout = '5s'"));
	pgb_result *r = h_ok(c, "update t_kill set v = v + 10 where k = 1");
	cr_assert_eq(pgb_cmd_tuples(r), 1);
	pgb_clear(r);
	pgb_clear(h_ok(c, "commit"));
	/* the dead agent's update was rolled back, not committed */
	cr_assert_eq(h_num(c, "select v from t_kill where k = 1"), 10);
	cr_assert(h_until(no_idle_in_txn, pg, 2000), "an idle-in-transaction backend remains");
	pgb_clear(h_ok(c, "drop table t_kill"));
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int sleeper(void *arg)
{
	int fd = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);

	(void)!write(fd, "x", 1);
	pgb_clear(pgb_exec(c, "select pg_sleep(60) /* killed-agent */"));
	return 0;
}

static int sleep_gone(void *arg)
{
	return h_pg_num(arg, "select count(*) from pg_stat_activity where query like "
			     "'%killed-agent%' and state = 'active' and pid <> pg_backend_pid()") == 0;
}

static int sleep_running(void *arg)
{
	return !sleep_gone(arg);
}

Test(faults, agent_killed_mid_statement_frees_the_backend, .timeout = 60)
{
	int p[2];
	char x;
	pid_t child;
	PGconn *pg = h_pg();
	pgb_conn *c;

	h_broker_start(&br, NULL);
	cr_assert_eq(pipe(p), 0);
	child = h_fork(sleeper, &p[1]);
	cr_assert_eq(read(p[0], &x, 1), 1);
	cr_assert(h_until(sleep_running, pg, 5000), "statement never started");
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	cr_assert(h_until(sleep_gone, pg, 3000), "the dead agent's statement still runs");
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 11"), 11);
	pgb_finish(c);
	PQfinish(pg);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int waiter(void *arg)
{
	int fd = *(int *)arg;
	pgb_conn *c = pgb_connect(br.dir);
	long long t0;
	pgb_result *r;
	int rc;

	if (pgb_status(c) != PGB_CONNECTION_OK)
		return 10;
	(void)!write(fd, "x", 1);
	t0 = h_now_ms();
	r = pgb_exec(c, "select pg_sleep(20)");
	rc = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_BROKER_GONE) == 0 ? 0 : 1;
	/* the client promises an answer within a second of the broker's
	 * death; allow for a loaded machine, but far below the 20 s sleep */
	if (h_now_ms() - t0 > 3000)
		rc = 2;
	pgb_clear(r);
	r = pgb_exec(c, "select 1");
	if (pgb_result_ok(r) || pgb_status(c) != PGB_CONNECTION_BAD)
		rc = 3;
	pgb_clear(r);
	pgb_finish(c);
	return rc;
}

Test(faults, broker_killed_waiting_agents_get_an_error, .timeout = 60)
{
	pid_t kids[5];
	int p[2];
	char x;
	PGconn *pg = h_pg();

	h_broker_start(&br, NULL);
	cr_assert_eq(pipe(p), 0);
	for (int i = 0; i < 5; i++)
		kids[i] = h_fork(waiter, &p[1]);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(read(p[0], &x, 1), 1);
	h_broker_kill(&br);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(h_wait(kids[i], 15000), 0, "agent %d did not see broker gone", i);
	PQfinish(pg);
	/* a new broker on the same directory (stale socket, lock and stats
	 * files left by SIGKILL) starts cleanly and serves reconnecting agents */
	h_broker_start(&br, NULL);
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 2"), 2);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(faults, second_broker_on_a_directory_is_refused, .timeout = 60)
{
	char out[4096], bin[512];
	int st;

	h_broker_start(&br, NULL);
	const char *argv[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--dir", br.dir,
			       "--dsn", h_dsn(), NULL };
	st = h_run(argv, out, sizeof(out));
	cr_assert_neq(st, 0);
	cr_assert(strstr(out, "already running") != NULL, "%s", out);
	/* the first broker still serves */
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 5"), 5);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static const struct {
	const char *flag, *value, *expect;
} bad_config[] = {
	{ .flag = "--pool-size", .value = "abc", .expect = "pool_size" },
	{ .flag = "--max-pool-size", .value = "-3", .expect = "max_pool_size" },
	{ .flag = "--min-pool-size", .value = "60", .expect = "min_pool_size" },
	{ .flag = "--acquire-timeout-ms", .value = "99999999999999999999", .expect = "acquire_timeout_ms" },
	{ .flag = "--channel-size-kb", .value = "100", .expect = "channel_size_kb" },
	{ .flag = "--no-such-key", .value = "1", .expect = "no-such-key" },
	{ .flag = "--dsn", .value = "host='unterminated", .expect = "dsn" },
};

Test(faults, bad_configuration_exits_2_naming_the_key)
{
	char out[4096], bin[512];

	for (size_t i = 0; i < sizeof(bad_config) / sizeof(bad_config[0]); i++) {
		const char *argv[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--dir",
				       "/tmp/pgb-never", bad_config[i].flag, bad_config[i].value,
				       "--check-config", NULL };
		int st = h_run(argv, out, sizeof(out));

		cr_assert_eq(st, 2, "%s %s: exit %d: %s", bad_config[i].flag, bad_config[i].value,
			     st, out);
		cr_assert(strstr(out, bad_config[i].expect) != NULL, "%s: %s", bad_config[i].flag, out);
	}
	setenv("POSTGRES_POOL_SIZE", "0", 1);
	const char *argv[] = { h_bin("broker/pgbroker", bin, sizeof(bin)), "--check-config", NULL };
	cr_assert_eq(h_run(argv, out, sizeof(out)), 2);
	cr_assert(strstr(out, "POSTGRES_POOL_SIZE") != NULL, "%s", out);
	setenv("POSTGRES_POOL_SIZE", "7", 1);
	cr_assert_eq(h_run(argv, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "pool_size = 7") != NULL, "%s", out);
	unsetenv("POSTGRES_POOL_SIZE");
	const char *help[] = { argv[0], "--help", NULL };
	cr_assert_eq(h_run(help, out, sizeof(out)), 0);
	cr_assert(strstr(out, "POSTGRES_ACQUIRE_TIMEOUT") != NULL);
}

Test(faults, oversize_statement_is_refused_and_connection_survives, .timeout = 60)
{
	const char *args[] = { "--max-request-kb", "64", NULL };
	pgb_conn *c;
	char *sql = malloc(200000);
	pgb_result *r;

	h_broker_start(&br, args);
	c = h_connect(&br);
	strcpy(sql, "select '");
	memset(sql + 8, 'z', 150000);
	strcpy(sql + 8 + 150000, "'");
	r = pgb_exec(c, sql);
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_TOO_LARGE, "%s", pgb_result_error(r));
	cr_assert(strstr(pgb_result_error(r), "max_request_kb") != NULL);
	pgb_clear(r);
	cr_assert_eq(h_num(c, "select 6"), 6);
	pgb_finish(c);
	free(sql);
	cr_assert_eq(h_broker_stop(&br), 0);
}

/* The raw client's bell eventfd when the broker runs on epoll, else -1. */
static int raw_bell_fd = -1;

/* A raw client: registers like libpgbroker, then scribbles on its channel. */
static struct chan_shm *raw_register(int *sock, uint64_t *size)
{
	return h_raw_register(&br, sock, size, &raw_bell_fd);
}

static void ring_bell(struct chan_shm *ch)
{
	cr_assert_eq(h_raw_ring(ch, raw_bell_fd), 0);
}

static int hung_up(int sock)
{
	char b;
	struct timeval tv = { 5, 0 };

	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return recv(sock, &b, 1, 0) == 0;
}

enum garbage { G_TAIL_RANGE, G_TAIL_MISALIGNED, G_LEN_PAST_END, G_TYPE, G_SEQUENCE,
	       G_TORN_REQUEST, G_HEAD_BACKWARDS, G_COUNT };

static void scribble(struct chan_shm *ch, enum garbage g)
{
	uint8_t *data = chan_req_data(ch, ch->ring_size);
	struct frame_hdr h = { .type = FRAME_REQ, .flags = FRAME_FIRST | FRAME_LAST, .id = 1 };

	switch (g) {
	case G_TAIL_RANGE:
		ch->req.tail = ch->ring_size * 3;
		break;
	case G_TAIL_MISALIGNED:
		ch->req.tail = 5;
		break;
	case G_LEN_PAST_END:
		h.len = 1u << 30;
		h.aux = 1u << 30;
		memcpy(data, &h, sizeof(h));
		ch->req.tail = 64;
		break;
	case G_TYPE:
		h.type = 77;
		memcpy(data, &h, sizeof(h));
		ch->req.tail = 16;
		break;
	case G_SEQUENCE:
		h.flags = 0; /* a middle frame with no first */
		memcpy(data, &h, sizeof(h));
		ch->req.tail = 16;
		break;
	case G_TORN_REQUEST:
		/* a whole frame whose request blob is nonsense */
		h.len = 16;
		h.aux = 16;
		memcpy(data, &h, sizeof(h));
		memset(data + 16, 0xff, 16);
		ch->req.tail = 32;
		break;
	case G_HEAD_BACKWARDS:
		ch->resp.head = 12345;
		h.len = 0;
		h.aux = 0;
		/* a valid-looking empty request makes the broker answer */
		memcpy(data, &h, sizeof(h));
		ch->req.tail = 16;
		break;
	default:
		break;
	}
	ring_bell(ch);
}

Test(faults, hostile_channel_disconnects_only_that_agent, .timeout = 120)
{
	pgb_conn *good;

	h_broker_start(&br, NULL);
	good = h_connect(&br);
	for (int g = 0; g < G_COUNT; g++) {
		int sock;
		uint64_t size;
		struct chan_shm *ch = raw_register(&sock, &size);

		scribble(ch, (enum garbage)g);
		if (g == G_TORN_REQUEST) {
			/* a malformed request is answered, not fatal */
			struct ring resp;
			struct frame_hdr h;
			int got = 0;

			ring_init(&resp, &ch->resp, chan_resp_data(ch, ch->ring_size), ch->ring_size);
			for (int i = 0; i < 500 && !got; i++) {
				got = ring_peek(&resp, &h);
				if (!got)
					usleep(10000);
			}
			cr_assert_eq(got, 1, "no answer to a malformed request");
			uint8_t *blob = malloc(h.len);
			struct resp_head rh;
			ring_read(&resp, 0, blob, h.len);
			cr_assert_eq(resp_parse_head(blob, h.len, &rh), 0);
			cr_assert_str_eq(rh.sqlstate, PGB_SQLSTATE_BAD_REQUEST);
			free(blob);
		} else {
			cr_assert(hung_up(sock), "garbage kind %d did not disconnect the agent", g);
		}
		munmap(ch, size);
		close(sock);
		cr_assert_eq(h_num(good, "select 8"), 8, "a bystander was hurt by garbage %d", g);
	}
	pgb_finish(good);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(faults, forked_child_cannot_use_its_parents_connection, .timeout = 60)
{
	pgb_conn *c;
	pid_t pid;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 1"), 1);
	pid = fork();
	if (pid == 0) {
		pgb_result *r = pgb_exec(c, "select 1");
		int rc = strcmp(pgb_sqlstate(r), PGB_SQLSTATE_NOT_CONNECTED) == 0 &&
			 strstr(pgb_result_error(r), "fork") ? 0 : 1;

		pgb_clear(r);
		pgb_finish(c);  /* must not disturb the parent */
		_exit(rc);
	}
	cr_assert_eq(h_wait(pid, 10000), 0, "the child was not refused");
	for (int i = 0; i < 10; i++)
		cr_assert_eq(h_num(c, "select 2"), 2);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int no_broker_backends(void *arg)
{
	return h_backends(arg, &br, NULL) == 0;
}

Test(faults, sigterm_shuts_down_cleanly, .timeout = 60)
{
	char path[256];
	struct stat st;
	PGconn *pg = h_pg();
	pgb_conn *c;

	h_broker_start(&br, NULL);
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 1"), 1);
	cr_assert_eq(h_broker_stop(&br), 0);
	snprintf(path, sizeof(path), "%s/pgbroker.sock", br.dir);
	cr_assert_neq(stat(path, &st), 0, "socket left behind");
	snprintf(path, sizeof(path), "%s/pgbroker.stats", br.dir);
	cr_assert_neq(stat(path, &st), 0, "stats segment left behind");
	cr_assert(h_until(no_broker_backends, pg, 3000), "backends left open");
	pgb_result *r = pgb_exec(c, "select 1");
	cr_assert_not(pgb_result_ok(r));
	cr_assert(strncmp(pgb_sqlstate(r), "PB", 2) == 0, "%s", pgb_sqlstate(r));
	pgb_clear(r);
	pgb_finish(c);
	PQfinish(pg);
}

Test(faults, unreachable_postgresql_is_a_clear_error, .timeout = 60)
{
	const char *argv_extra[] = { "--acquire-timeout-ms", "700", "--retry-delay-ms", "50",
				     "--breaker-threshold", "3", NULL };
	struct h_broker b2 = { 0 };
	char dsn[] = "host=/nonexistent port=1 user=postgres";
	pgb_conn *c;
	pgb_result *r;

	setenv("PGB_TEST_DSN_SAVED", h_dsn(), 1);
	setenv("PGB_TEST_DSN", dsn, 1);
	h_broker_start(&b2, argv_extra);
	setenv("PGB_TEST_DSN", getenv("PGB_TEST_DSN_SAVED"), 1);
	c = pgb_connect(b2.dir);
	r = pgb_exec(c, "select 1");
	cr_assert_not(pgb_result_ok(r));
	/* min_pool_size failed connects open the breaker: fail fast, with libpq's reason */
	cr_assert_str_eq(pgb_sqlstate(r), PGB_SQLSTATE_BREAKER_OPEN, "%s", pgb_result_error(r));
	cr_assert(strstr(pgb_result_error(r), "/nonexistent") != NULL, "%s", pgb_result_error(r));
	pgb_clear(r);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&b2), 0);
}

Test(faults, agent_that_stops_reading_is_disconnected, .timeout = 60)
{
	const char *args[] = { "--send-timeout-ms", "500", NULL };
	const char *sql = "select repeat('x', 1000) from generate_series(1, 5000)";
	uint8_t blob[256];
	uint64_t size, n = req_encoded_len(sql, 0, NULL);
	struct ring req;
	int sock;

	h_broker_start(&br, args);
	pgb_conn *good = h_connect(&br);
	struct chan_shm *ch = raw_register(&sock, &size);

	cr_assert_lt(n, sizeof(blob));
	req_encode(blob, sql, 0, NULL, 0);
	ring_init(&req, &ch->req, chan_req_data(ch, ch->ring_size), ch->ring_size);
	struct frame_hdr h = { .len = (uint32_t)n, .type = FRAME_REQ, .flags = FRAME_FIRST | FRAME_LAST,
			       .id = 1, .aux = (uint32_t)n };
	ring_put(&req, &h, blob);
	ring_bell(ch);
	/* a 5 MB result fills the 256 KiB ring; nobody reads it */
	cr_assert(hung_up(sock), "the stalled agent was not disconnected");
	cr_assert_eq(h_num(good, "select 12"), 12, "the stall hurt a bystander");
	munmap(ch, size);
	close(sock);
	pgb_finish(good);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int reason_shows(void *arg)
{
	struct pgb_health h;

	if (pgb_pool_health(br.dir, &h) < 0)
		return 0;
	return strstr(h.reasons, (const char *)arg) != NULL;
}

Test(faults, a_pool_that_cannot_fit_the_server_is_reported, .timeout = 60)
{
	/* the test server allows 300 connections; 400 cannot fit */
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "400",
			       NULL };
	char log[8192] = "";
	FILE *f;

	h_broker_start(&br, args);
	cr_assert(h_until(reason_shows, "does not fit the server", 10000),
		  "health never said max_pool_size cannot fit");
	f = fopen(br.log, "r");
	cr_assert_not_null(f);
	(void)!fread(log, 1, sizeof(log) - 1, f);
	fclose(f);
	cr_assert(strstr(log, "max_pool_size=400 cannot fit") != NULL, "%s", log);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(faults, request_flood_stays_bounded_and_hurts_nobody, .timeout = 90)
{
	const char *args[] = { "--max-inflight-per-agent", "16", "--send-timeout-ms", "2000", NULL };
	uint8_t blob[64];
	/* answers of 2 kB: a few hundred unread ones fill the response ring */
	const char *sql = "select repeat('f', 2000)";
	uint64_t size, n = req_encoded_len(sql, 0, NULL);
	struct ring req;
	int sock, sent = 0;
	pgb_conn *good;

	h_broker_start(&br, args);
	good = h_connect(&br);
	struct chan_shm *ch = raw_register(&sock, &size);
	req_encode(blob, sql, 0, NULL, 0);
	ring_init(&req, &ch->req, chan_req_data(ch, ch->ring_size), ch->ring_size);
	/* fill the request ring again and again, never reading an answer */
	for (int round = 0; round < 50; round++) {
		int64_t space = ring_space(&req);

		while (space >= (int64_t)FRAME_SPAN(n)) {
			struct frame_hdr h = { .len = (uint32_t)n, .type = FRAME_REQ,
					       .flags = FRAME_FIRST | FRAME_LAST,
					       .id = (uint32_t)++sent, .aux = (uint32_t)n };
			ring_put(&req, &h, blob);
			space -= FRAME_SPAN(n);
		}
		ring_bell(ch);
		cr_assert_eq(h_num(good, "select 13"), 13, "the flood hurt a bystander");
	}
	cr_assert_gt(sent, 1000);
	/* the flooder, which never reads, is cut off; the broker lives on */
	cr_assert(hung_up(sock), "the flooding agent was never disconnected");
	cr_assert_eq(h_num(good, "select 14"), 14);
	munmap(ch, size);
	close(sock);
	pgb_finish(good);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(faults, more_sends_than_the_inflight_cap_all_complete, .timeout = 60)
{
	const char *args[] = { "--max-inflight-per-agent", "8", NULL };
	pgb_conn *c;
	int got = 0;

	h_broker_start(&br, args);
	c = h_connect(&br);
	/* the broker throttles reading at 8 and must resume on its own */
	for (int i = 0; i < 100; i++)
		cr_assert_gt(pgb_send(c, "select 1", 0, NULL, i % 2 ? PGB_INDEPENDENT : 0), 0);
	while (pgb_in_flight(c) > 0) {
		pgb_result *r = pgb_get_result(c, NULL);

		cr_assert(pgb_result_ok(r), "%s", pgb_result_error(r));
		pgb_clear(r);
		got++;
	}
	cr_assert_eq(got, 100);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}

Test(faults, slow_but_steady_reader_is_not_disconnected, .timeout = 60)
{
	const char *args[] = { "--send-timeout-ms", "500", NULL };
	/* about 5 MB: twenty and more ring-fulls, read one frame per 100 ms */
	const char *sql = "select repeat('x', 1000) from generate_series(1, 5000)";
	uint8_t blob[256];
	uint64_t size, n = req_encoded_len(sql, 0, NULL), got = 0, total = 0;
	struct ring req, resp;
	long long t0, deadline;
	int sock, last = 0, rows_msg = 0;
	char x;

	h_broker_start(&br, args);
	struct chan_shm *ch = raw_register(&sock, &size);

	req_encode(blob, sql, 0, NULL, 0);
	ring_init(&req, &ch->req, chan_req_data(ch, ch->ring_size), ch->ring_size);
	ring_init(&resp, &ch->resp, chan_resp_data(ch, ch->ring_size), ch->ring_size);
	struct frame_hdr h = { .len = (uint32_t)n, .type = FRAME_REQ, .flags = FRAME_FIRST | FRAME_LAST,
			       .id = 1, .aux = (uint32_t)n };
	ring_put(&req, &h, blob);
	ring_bell(ch);
	t0 = h_now_ms();
	deadline = t0 + 30000;
	while (!last && h_now_ms() < deadline) {
		int rc = ring_peek(&resp, &h);

		cr_assert_geq(rc, 0, "response ring corrupt");
		if (rc == 0) {
			usleep(5000);
			continue;
		}
		/* a large result comes as rows messages (RESP_ROWS), then its
		 * final response: the last frame of that one ends it */
		if (h.flags & FRAME_FIRST) {
			struct resp_head head;

			ring_read(&resp, 0, &head, sizeof(head));
			total += h.aux;
			rows_msg = (head.flags & RESP_ROWS) != 0;
		}
		got += h.len;
		last = (h.flags & FRAME_LAST) && !rows_msg;
		ring_consume(&resp, &h);
		ring_bell(ch);
		usleep(100000);
	}
	cr_assert(last, "the response stopped after %llu of %llu bytes",
		  (unsigned long long)got, (unsigned long long)total);
	cr_assert_eq(got, total);
	cr_assert_gt(h_now_ms() - t0, 1000, "the reader was not slow: the test proves nothing");
	/* still connected */
	cr_assert_eq(recv(sock, &x, 1, MSG_DONTWAIT), -1);
	cr_assert_eq(errno, EAGAIN);
	munmap(ch, size);
	close(sock);
	cr_assert_eq(h_broker_stop(&br), 0);
}

static int broker_caught_up(void *arg)
{
	struct ring *req = arg;

	return __atomic_load_n(&req->ctl->head, __ATOMIC_ACQUIRE) == req->pos;
}

Test(faults, long_queue_behind_a_statement_survives_fast_shutdown, .timeout = 90)
{
	const char *args[] = { "--max-inflight-per-agent", "65536", "--channel-size-kb", "4096",
			       NULL };
	const char *sleep_sql = "select pg_sleep(30) /* killed-agent */", *sql = "select 1";
	uint8_t blob[64];
	uint64_t size, n;
	struct ring req;
	PGconn *pg = h_pg();
	int sock;

	h_broker_start(&br, args);
	struct chan_shm *ch = raw_register(&sock, &size);
	ring_init(&req, &ch->req, chan_req_data(ch, ch->ring_size), ch->ring_size);
	/* one long statement, then 60000 queued behind it on the same agent */
	for (uint32_t id = 1; id <= 60001; id++) {
		const char *s = id == 1 ? sleep_sql : sql;

		n = req_encoded_len(s, 0, NULL);
		req_encode(blob, s, 0, NULL, 0);
		struct frame_hdr h = { .len = (uint32_t)n, .type = FRAME_REQ,
				       .flags = FRAME_FIRST | FRAME_LAST, .id = id, .aux = (uint32_t)n };
		cr_assert_geq(ring_space(&req), (int64_t)FRAME_SPAN(n));
		ring_put(&req, &h, blob);
	}
	ring_bell(ch);
	cr_assert(h_until(broker_caught_up, &req, 20000), "the broker did not read the requests");
	cr_assert(h_until(sleep_running, pg, 5000), "statement never started");
	/* SIGINT cancels the sleep; each queued statement is refused in turn */
	kill(br.pid, SIGINT);
	int st = h_wait(br.pid, 30000);
	cr_assert_eq(st, 0, "the broker did not exit cleanly: %d", st);
	br.pid = 0;
	munmap(ch, size);
	close(sock);
	PQfinish(pg);
}

/* Stream one request like libpgbroker does; 0 when the broker stopped
 * taking bytes for `stall_ms`. */
static int raw_send(struct chan_shm *ch, struct ring *req, const uint8_t *blob, uint64_t total,
		    uint32_t id, int stall_ms)
{
	uint64_t off = 0;
	long long last = h_now_ms();

	while (off < total) {
		int64_t space = ring_space(req);
		uint32_t room = space > 0 ? ring_frame_room((uint32_t)space) : 0, n;

		if (room > req->size / 2)
			room = req->size / 2;
		if (room == 0) {
			if (h_now_ms() - last > stall_ms)
				return 0;
			ring_bell(ch);
			usleep(1000);
			continue;
		}
		n = total - off < room ? (uint32_t)(total - off) : room;
		struct frame_hdr h = {
			.len = n, .type = FRAME_REQ, .id = id, .aux = (uint32_t)total,
			.flags = (off == 0 ? FRAME_FIRST : 0) | (off + n == total ? FRAME_LAST : 0),
		};
		ring_write_hdr(req, &h);
		ring_write(req, FRAME_HDR, blob + off, n);
		ring_publish(req, n);
		off += n;
		last = h_now_ms();
		ring_bell(ch);
	}
	return 1;
}

Test(faults, queued_requests_do_not_pile_up_in_the_broker, .timeout = 90)
{
	const char *args[] = { "--max-request-kb", "2048", NULL };
	const char *sleep_sql = "select pg_sleep(20) /* killed-agent */";
	size_t big = 1 << 20;
	char *sql = malloc(big + 64);
	uint8_t *blob = malloc(big + 256);
	uint64_t size, n;
	long long before, after;
	struct ring req;
	PGconn *pg = h_pg();
	int sock, sent = 0;

	h_broker_start(&br, args);
	struct chan_shm *ch = raw_register(&sock, &size);
	ring_init(&req, &ch->req, chan_req_data(ch, ch->ring_size), ch->ring_size);
	n = req_encoded_len(sleep_sql, 0, NULL);
	req_encode(blob, sleep_sql, 0, NULL, 0);
	cr_assert(raw_send(ch, &req, blob, n, 1, 5000));
	cr_assert(h_until(sleep_running, pg, 5000), "statement never started");
	before = h_rss_kb(br.pid);
	/* a hundred 1 MiB statements queued behind the sleeping one */
	strcpy(sql, "select 1 /* ");
	memset(sql + 12, 'q', big);
	strcpy(sql + 12 + big, " */");
	n = req_encoded_len(sql, 0, NULL);
	req_encode(blob, sql, 0, NULL, 0);
	for (uint32_t id = 2; id < 102 && raw_send(ch, &req, blob, n, id, 1500); id++)
		sent++;
	after = h_rss_kb(br.pid);
	cr_assert_gt(before, 0);
	cr_assert_lt(after - before, 32 * 1024,
		     "the broker grew by %lld KiB holding %d queued statements of one agent",
		     after - before, sent);
	pgb_conn *good = h_connect(&br);
	cr_assert_eq(h_num(good, "select 15"), 15, "a bystander was hurt");
	pgb_finish(good);
	munmap(ch, size);
	close(sock);
	PQfinish(pg);
	free(sql);
	free(blob);
	h_broker_kill(&br);
}

static long long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

static int log_says(void *arg)
{
	char log[16384] = "";
	FILE *f = fopen(br.log, "r");

	if (!f)
		return 0;
	(void)!fread(log, 1, sizeof(log) - 1, f);
	fclose(f);
	return strstr(log, (const char *)arg) != NULL;
}

Test(faults, out_of_descriptors_does_not_spin, .timeout = 60)
{
	const char *args[] = { "--min-pool-size", "1", "--pool-size", "2", "--max-pool-size", "2",
			       NULL };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int socks[40];
	long long t0;

	/* a broker short of descriptors (it warns about its limit at start) */
	setenv("PGB_BROKER_WRAPPER", "prlimit --nofile=32:32", 1);
	h_broker_start(&br, args);
	unsetenv("PGB_BROKER_WRAPPER");
	pgb_conn *c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 1"), 1);
	/* connections that never say hello use up the broker's descriptors */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/pgbroker.sock", br.dir);
	for (int i = 0; i < 40; i++) {
		socks[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		cr_assert_eq(connect(socks[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
	}
	cr_assert(h_until(log_says, "not accepting agents", 10000),
		  "the broker never ran out of descriptors: the test proves nothing");
	t0 = cpu_ticks(br.pid);
	usleep(1000000);
	cr_assert_lt(cpu_ticks(br.pid) - t0, sysconf(_SC_CLK_TCK) / 5,
		     "the broker spins while it cannot accept");
	/* the one connected agent is still served */
	cr_assert_eq(h_num(c, "select 2"), 2);
	for (int i = 0; i < 40; i++)
		close(socks[i]);
	pgb_finish(c);
	/* descriptors free again: new agents get in */
	c = h_connect(&br);
	cr_assert_eq(h_num(c, "select 3"), 3);
	pgb_finish(c);
	cr_assert_eq(h_broker_stop(&br), 0);
}
