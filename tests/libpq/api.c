/* libpq calls one by one, printing what libpq answers: tests/libpq/run.sh
 * runs it against PostgreSQL directly (the system's libpq) and through the
 * drop-in, and the two outputs must be the same. Built against the
 * system's libpq-fe.h and linked with -lpq, as any libpq program. The
 * connection comes from PGHOST, PGUSER, ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <libpq-fe.h>

static const char *const tx_names[] = { "IDLE", "ACTIVE", "INTRANS", "INERROR", "UNKNOWN" };

static void show(const char *what, PGresult *res)
{
	printf("%s: %s", what, PQresStatus(PQresultStatus(res)));
	if (PQresultStatus(res) == PGRES_FATAL_ERROR)
		printf(" %s %s", PQresultErrorField(res, PG_DIAG_SQLSTATE),
		       PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	printf(" [%s|%s]", PQcmdStatus(res), PQcmdTuples(res));
	for (int i = 0; i < PQntuples(res); i++)
		for (int j = 0; j < PQnfields(res); j++)
			printf(" %s(%u,%d)=%s%s", PQfname(res, j), PQftype(res, j), PQfmod(res, j),
			       PQgetisnull(res, i, j) ? "NULL" : PQgetvalue(res, i, j),
			       j + 1 < PQnfields(res) ? "" : ";");
	printf("\n");
	PQclear(res);
}

static void tx(PGconn *c, const char *when)
{
	printf("transaction status %s: %s\n", when, tx_names[PQtransactionStatus(c)]);
}

static void exec(PGconn *c, const char *sql)
{
	show(sql, PQexec(c, sql));
}

int main(void)
{
	PGconn *c = PQconnectdb("");
	const char *vals[2] = { "41", "it's" };
	PGresult *res;
	char *s;

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "connect: %s", PQerrorMessage(c));
		return 1;
	}
	printf("server_version_num >= 90600: %d\n", PQserverVersion(c) >= 90600);
	printf("params: %s %s %s %s\n", PQparameterStatus(c, "client_encoding"),
	       PQparameterStatus(c, "standard_conforming_strings"),
	       PQparameterStatus(c, "integer_datetimes"), PQparameterStatus(c, "DateStyle"));
	printf("server_version matches: %d\n",
	       PQparameterStatus(c, "server_version") &&
		       atoi(PQparameterStatus(c, "server_version")) == PQserverVersion(c) / 10000);
	tx(c, "after connect");

	exec(c, "CREATE TABLE libpq_api (id int PRIMARY KEY, v varchar(20), n numeric(8,3))");
	exec(c, "INSERT INTO libpq_api VALUES (1, 'one', 1.5), (2, NULL, NULL)");
	exec(c, "UPDATE libpq_api SET n = 2 WHERE id = 2");
	exec(c, "SELECT id, v, n FROM libpq_api ORDER BY id");
	exec(c, "");
	exec(c, "SELECT 1/0");
	exec(c, "SET DateStyle = 'German'");
	printf("DateStyle after SET: %s\n", PQparameterStatus(c, "DateStyle"));
	exec(c, "RESET DateStyle");
	printf("DateStyle after RESET: %s\n", PQparameterStatus(c, "DateStyle"));

	show("exec params", PQexecParams(c, "SELECT $1::int + 1 AS next, $2::text AS t", 2, NULL,
					 vals, NULL, NULL, 0));
	show("prepare", PQprepare(c, "p1", "SELECT $1::int * 2 AS twice", 1, NULL));
	show("exec prepared", PQexecPrepared(c, "p1", 1, vals, NULL, NULL, 0));
	show("exec prepared unknown", PQexecPrepared(c, "nope", 0, NULL, NULL, NULL, 0));

	exec(c, "BEGIN");
	tx(c, "after BEGIN");
	exec(c, "INSERT INTO libpq_api VALUES (3, 'three', 3)");
	tx(c, "after INSERT");
	exec(c, "INSERT INTO libpq_api VALUES (3, 'again', 3)");
	tx(c, "after the failed INSERT");
	exec(c, "SELECT 1");
	exec(c, "ROLLBACK");
	tx(c, "after ROLLBACK");
	exec(c, "BEGIN");
	exec(c, "SAVEPOINT s");
	exec(c, "SELECT 1/0");
	tx(c, "after the error in a savepoint");
	exec(c, "ROLLBACK TO SAVEPOINT s");
	tx(c, "after ROLLBACK TO SAVEPOINT");
	exec(c, "COMMIT");
	tx(c, "after COMMIT");

	/* asynchronous: one result, then NULL */
	printf("send: %d\n", PQsendQuery(c, "SELECT pg_sleep(0.05), 7 AS seven"));
	tx(c, "while sent");
	printf("second send refused: %d\n", PQsendQuery(c, "SELECT 2"));
	while (PQisBusy(c)) {
		struct pollfd p = { .fd = PQsocket(c), .events = POLLIN };

		if (poll(&p, 1, 10000) != 1) {
			printf("poll timed out\n");
			return 1;
		}
		if (!PQconsumeInput(c)) {
			printf("consume failed: %s", PQerrorMessage(c));
			return 1;
		}
	}
	show("async result", PQgetResult(c));
	printf("then NULL: %d\n", PQgetResult(c) == NULL);

	/* pipeline mode */
	printf("enter pipeline: %d\n", PQenterPipelineMode(c));
	printf("pipeline status: %d\n", PQpipelineStatus(c));
	PQsendQueryParams(c, "SELECT $1::int AS a", 1, NULL, vals, NULL, NULL, 0);
	PQsendQueryParams(c, "SELECT $1::text AS b", 1, NULL, vals + 1, NULL, NULL, 0);
	PQpipelineSync(c);
	for (int i = 0; i < 2; i++) {
		show("pipeline result", PQgetResult(c));
		printf("then NULL: %d\n", PQgetResult(c) == NULL);
	}
	res = PQgetResult(c);
	printf("sync: %s\n", PQresStatus(PQresultStatus(res)));
	PQclear(res);
	printf("exit pipeline: %d\n", PQexitPipelineMode(c));

	/* escapes */
	s = PQescapeLiteral(c, "it's a \\ test", 14);
	printf("literal: %s\n", s);
	PQfreemem(s);
	s = PQescapeIdentifier(c, "Odd \"Name\"", 10);
	printf("identifier: %s\n", s);
	PQfreemem(s);
	{
		char buf[64];
		int err = 0;
		size_t n = PQescapeStringConn(c, buf, "a'b\\c", 5, &err);
		size_t blen, ulen;
		unsigned char *b = PQescapeByteaConn(c, (const unsigned char *)"\x01\xff'", 3, &blen);
		unsigned char *u = PQunescapeBytea((const unsigned char *)"\\x01ff27", &ulen);

		printf("string: %s (%zu, error %d)\n", buf, n, err);
		printf("bytea: %s (%zu); unescaped %zu bytes %02x%02x%02x\n", b, blen, ulen, u[0],
		       u[1], u[2]);
		PQfreemem(b);
		PQfreemem(u);
	}
	exec(c, "DROP TABLE libpq_api");
	tx(c, "at the end");
	PQfinish(c);
	return 0;
}
