"""psycopg2 (Debian's python3-psycopg2, linked against libpq.so.5) through
whichever libpq.so.5 the dynamic linker finds: tests/libpq/run.sh runs it
with the drop-in in front. The connection comes from PGHOST, PGUSER, ...
One line per check; exit status 1 at the first failure."""
import select
import sys
import threading

import psycopg2
import psycopg2.extensions as ext


def ok(what):
    print("ok    psycopg2: " + what, flush=True)


def check(cond, what):
    if not cond:
        print("FAIL  psycopg2: " + what, file=sys.stderr, flush=True)
        sys.exit(1)


def wait(conn, timeout_s=30):
    """Drive an async connection with select() on its fileno; returns how
    many times it had to wait for the socket."""
    waits = 0
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return waits
        if state == ext.POLL_READ:
            r, _, _ = select.select([conn.fileno()], [], [], timeout_s)
            check(r, "select() on fileno() timed out after %d s" % timeout_s)
            waits += 1
        elif state == ext.POLL_WRITE:
            _, w, _ = select.select([], [conn.fileno()], [], timeout_s)
            check(w, "select() for writing timed out")
        else:
            check(False, "poll() returned %r" % state)


def main():
    conn = psycopg2.connect("")
    check(conn.server_version >= 90600, "server_version %r" % conn.server_version)
    check(conn.get_parameter_status("server_version"), "no server_version parameter")
    check(conn.encoding == "UTF8", "client encoding %r" % conn.encoding)
    ok("connect: server %d, encoding %s" % (conn.server_version, conn.encoding))

    cur = conn.cursor()
    cur.execute("CREATE TABLE libpq_py (id int PRIMARY KEY, name text, data bytea, "
                "amount numeric(8,2), day date)")
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_INTRANS,
          "not in a transaction after the first statement")
    conn.commit()
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "not idle after commit")
    cur.execute("INSERT INTO libpq_py VALUES (%s, %s, %s, %s, %s)",
                (1, "o'brien \\ \"x\"", psycopg2.Binary(b"\x00\x01\xff'"), "12.50", "2024-02-29"))
    check(cur.rowcount == 1, "rowcount %r after INSERT" % cur.rowcount)
    conn.commit()
    cur.execute("SELECT id, name, data, amount, day FROM libpq_py WHERE id = %s", (1,))
    row = cur.fetchone()
    check(row[0] == 1 and row[1] == "o'brien \\ \"x\"", "row %r" % (row,))
    check(bytes(row[2]) == b"\x00\x01\xff'", "bytea %r" % (row[2],))
    check(str(row[3]) == "12.50" and str(row[4]) == "2024-02-29", "types %r" % (row,))
    check([d.name for d in cur.description] == ["id", "name", "data", "amount", "day"],
          "description %r" % (cur.description,))
    ok("parameters and fetch: quotes, backslashes, bytea, numeric, date")

    cur.execute("SELECT g, g * 2 FROM generate_series(1, 100) g")
    rows = cur.fetchmany(10)
    rows += cur.fetchall()
    check(len(rows) == 100 and rows[99] == (100, 200), "fetchmany+fetchall %d rows" % len(rows))
    ok("fetchmany, fetchall: 100 rows")

    cur.execute("INSERT INTO libpq_py (id, name) VALUES (2, 'rolled back')")
    conn.rollback()
    cur.execute("SELECT count(*) FROM libpq_py")
    check(cur.fetchone()[0] == 1, "rollback did not undo the insert")
    conn.commit()
    ok("commit and rollback")

    try:
        cur.execute("INSERT INTO libpq_py (id, name) VALUES (1, 'duplicate')")
        check(False, "a duplicate key was accepted")
    except psycopg2.IntegrityError as e:
        check(e.pgcode == "23505", "pgcode %r" % e.pgcode)
        check(e.diag.constraint_name == "libpq_py_pkey", "constraint %r" % e.diag.constraint_name)
        check(isinstance(e, psycopg2.errors.UniqueViolation), "class %r" % type(e))
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_INERROR,
          "transaction status %r after the error" % conn.get_transaction_status())
    try:
        cur.execute("SELECT 1")
        check(False, "a statement ran in a failed transaction")
    except psycopg2.errors.InFailedSqlTransaction as e:
        check(e.pgcode == "25P02", "pgcode %r" % e.pgcode)
    conn.rollback()
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "not idle after rollback")
    ok("IntegrityError 23505 (UniqueViolation), then 25P02, then rollback")

    named = conn.cursor("libpq_named")
    named.itersize = 7
    named.execute("SELECT g FROM generate_series(1, 25) g")
    total = sum(r[0] for r in named)
    check(total == 325, "named cursor sum %d" % total)
    named.close()
    conn.commit()
    ok("named (server-side) cursor: 25 rows fetched 7 at a time")

    conn.autocommit = True
    cur.execute("SELECT %s::text", ("autocommit",))
    check(cur.fetchone()[0] == "autocommit", "autocommit select")
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "autocommit not idle")
    ok("autocommit")

    cur.execute("DO $$ BEGIN RAISE NOTICE 'from psycopg2 %', 7; END $$")
    check(any("NOTICE:  from psycopg2 7" in n for n in conn.notices), "notices %r" % conn.notices)
    ok("notices: %r" % conn.notices[-1].strip())

    # cancel(): from another thread, again and again until the statement
    # ends (a cancel that comes before the statement runs cancels nothing)
    victim = psycopg2.connect("")
    victim.autocommit = True
    done = threading.Event()

    def canceller():
        for _ in range(300):
            if done.wait(0.1):
                return
            victim.cancel()

    t = threading.Thread(target=canceller)
    t.start()
    try:
        victim.cursor().execute("SELECT pg_sleep(60)")
        check(False, "pg_sleep(60) was not cancelled")
    except psycopg2.errors.QueryCanceled as e:
        check(e.pgcode == "57014", "cancel pgcode %r" % e.pgcode)
    finally:
        done.set()
        t.join()
    vcur = victim.cursor()
    vcur.execute("SELECT 1")
    check(vcur.fetchone()[0] == 1, "the session after its cancel")
    victim.close()
    ok("cancel(): the running statement fails with 57014, the session goes on")

    aconn = psycopg2.connect("", async_=1)
    wait(aconn)
    acur = aconn.cursor()
    acur.execute("SELECT pg_sleep(0.2), %s", (42,))
    waits = wait(aconn)
    check(acur.fetchone()[1] == 42, "async result")
    check(waits >= 1, "the async statement never had to wait on select()")
    try:
        acur.execute("SELECT 1/0")
        wait(aconn)
        check(False, "async division by zero succeeded")
    except psycopg2.errors.DivisionByZero as e:
        check(e.pgcode == "22012", "async pgcode %r" % e.pgcode)
    aconn.close()
    ok("async mode: select() on fileno() %d time(s), results and errors" % waits)

    cur.execute("DROP TABLE libpq_py")
    conn.close()
    ok("all passed")


if __name__ == "__main__":
    main()
