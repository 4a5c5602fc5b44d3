#!/bin/sh
# The drop-in libpq.so.5 (client/libpq) with real programs nobody here
# wrote: its export list against the system's libpq, then pgbench, psql and
# psycopg2, unmodified, through it (LD_LIBRARY_PATH) against a real broker
# on the PostgreSQL that tools/run-integ.sh started:
#   sh tools/run-integ.sh tests/libpq/run.sh [SECTION...]
# Sections: exports connect api pgbench psql psycopg2 (default: all). One line
# per check; exits 1 at the first failure, after showing what the program
# said. Readiness is the broker's --ready-fd line, never a sleep.
set -eu

ROOT=${PGB_ROOT:-$(cd "$(dirname "$0")/../.." && pwd -P)}
DROPIN=$ROOT/client/libpq
WAIT_S=30
PGBENCH_S=${PGB_LIBPQ_PGBENCH_S:-5}

ok() { printf 'ok    %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }
show() { [ -s "$1" ] && sed 's/^/      | /' "$1" >&2; return 0; }

[ -n "${PGB_TEST_DSN:-}" ] || fail "PGB_TEST_DSN is not set: run through tools/run-integ.sh"
[ -f "$DROPIN/libpq.so.5" ] || fail "$DROPIN/libpq.so.5 is missing: run make"

# The throwaway server's socket directory, port, user and database.
for kv in $PGB_TEST_DSN; do
	case $kv in
	host=*) PGHOST=${kv#host=} ;;
	port=*) PGPORT=${kv#port=} ;;
	user=*) PGUSER=${kv#user=} ;;
	dbname=*) PGDATABASE=${kv#dbname=} ;;
	esac
done
export PGHOST PGPORT PGUSER PGDATABASE

find_bindir() {
	d=$(pg_config --bindir 2>/dev/null) || d=
	if [ -n "$d" ] && [ -x "$d/pgbench" ] && [ -x "$d/psql" ]; then
		echo "$d"; return
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n | tail -n 1)
	[ -n "$d" ] && [ -x "$d/pgbench" ] && echo "$d"
}
BINDIR=$(find_bindir) || fail "pgbench and psql not found: run sh tools/deps.sh"

TMP=$(mktemp -d "${PGB_TEST_TMP:-/tmp}/libpq.XXXXXX")
BROKER_PID=
cleanup() {
	if [ -n "$BROKER_PID" ]; then
		kill -TERM "$BROKER_PID" 2>/dev/null || :
		wait "$BROKER_PID" 2>/dev/null || :
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_dropin CMD...: CMD with the drop-in in front of the system libpq,
# reaching the broker of $TMP/run (or $RUN_DIR).
# A sanitizer build (make SANITIZE=1) needs its runtimes loaded first in
# programs built without them; their leaks are not ours to report.
SAN_PRELOAD=$(ldd "$DROPIN/libpq.so.5" | awk '$1 ~ /^lib(asan|ubsan)\.so/ {printf "%s%s", sep, $3; sep=":"}')
run_dropin() {
	if [ -n "$SAN_PRELOAD" ]; then
		LD_PRELOAD=$SAN_PRELOAD ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 \
			LD_LIBRARY_PATH=$DROPIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
			PGBROKER_DIR=${RUN_DIR:-$TMP/run} "$@"
	else
		LD_LIBRARY_PATH=$DROPIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PGBROKER_DIR=${RUN_DIR:-$TMP/run} "$@"
	fi
}

start_broker() {
	mkdir -m 700 "$TMP/run"
	mkfifo "$TMP/ready"
	"$ROOT/broker/pgbroker" --dir "$TMP/run" --dsn "$PGB_TEST_DSN application_name=libpq-test" \
		--pool-size 10 --max-pool-size 10 --ready-fd 3 3>"$TMP/ready" >"$TMP/broker.log" 2>&1 &
	BROKER_PID=$!
	line=$(timeout "$WAIT_S" head -n 1 "$TMP/ready") || line=
	[ "$line" = "ready" ] || { show "$TMP/broker.log"; fail "broker not ready in ${WAIT_S}s"; }
	ok "broker ready in $TMP/run"
}

# --- the export list: every function the system's libpq exports, no more ---
section_exports() {
	sys=$(pkg-config --variable=libdir libpq 2>/dev/null)/libpq.so.5
	[ -f "$sys" ] || sys=$(ldconfig -p | sed -n 's/.*libpq\.so\.5 .*=> //p' | head -n 1)
	[ -f "$sys" ] || fail "the system's libpq.so.5 not found (libpq-dev: sh tools/deps.sh)"
	nm -D --defined-only "$sys" | awk '{print $3}' | sort >"$TMP/sys.exports"
	nm -D --defined-only "$DROPIN/libpq.so.5" | awk '{print $3}' | sort >"$TMP/our.exports"
	n=$(wc -l <"$TMP/sys.exports")
	[ "$n" -ge 180 ] || fail "only $n exports read from $sys"
	if ! diff "$TMP/sys.exports" "$TMP/our.exports" >"$TMP/exports.diff"; then
		show "$TMP/exports.diff"
		fail "exports differ from $sys (< missing here, > extra here)"
	fi
	ok "exports: the same $n symbols as $sys"
	grep -q '^pgb_' "$TMP/our.exports" && fail "libpgbroker's pgb_* leak out of libpq.so.5"
	soname=$(objdump -p "$DROPIN/libpq.so.5" | awk '$1 == "SONAME" {print $2}')
	[ "$soname" = "libpq.so.5" ] || fail "SONAME is '$soname', not libpq.so.5"
	ok "exports: SONAME libpq.so.5, no pgb_* symbol"
	run_dropin ldd "$BINDIR/pgbench" | grep -q "libpq.so.5 => $DROPIN/libpq.so.5" ||
		fail "LD_LIBRARY_PATH does not put the drop-in in front for pgbench"
	ok "exports: pgbench loads the drop-in with LD_LIBRARY_PATH"
}

# --- connecting: what the broker serves, and clear errors otherwise ---
section_connect() {
	run_dropin "$BINDIR/psql" -X -At -c 'select current_database()' >"$TMP/out" 2>&1 ||
		{ show "$TMP/out"; fail "psql through the drop-in cannot connect"; }
	[ "$(cat "$TMP/out")" = "$PGDATABASE" ] || { show "$TMP/out"; fail "wrong database"; }
	ok "connect: psql reaches the broker's database $PGDATABASE"
	if run_dropin "$BINDIR/psql" -X -At -d no_such_db -c 'select 1' >"$TMP/out" 2>&1; then
		fail "a database the broker does not serve was accepted"
	fi
	grep -q "serves database \"$PGDATABASE\", not \"no_such_db\"" "$TMP/out" ||
		{ show "$TMP/out"; fail "no clear error for the wrong database"; }
	ok "connect: another database fails with a clear error"
	if run_dropin "$BINDIR/psql" -X -At -U no_such_user -c 'select 1' >"$TMP/out" 2>&1; then
		fail "a user the broker does not serve was accepted"
	fi
	grep -q "serves user \"$PGUSER\", not \"no_such_user\"" "$TMP/out" ||
		{ show "$TMP/out"; fail "no clear error for the wrong user"; }
	ok "connect: another user fails with a clear error"
	if RUN_DIR=$TMP/nowhere run_dropin "$BINDIR/psql" -X -c 'select 1' >"$TMP/out" 2>&1; then
		fail "connected without a broker"
	fi
	grep -q "could not connect to the broker" "$TMP/out" ||
		{ show "$TMP/out"; fail "no clear error without a broker"; }
	ok "connect: no broker in PGBROKER_DIR fails with a clear error"
}

# pgbench_ok NAME ARGS...: run pgbench through the drop-in; it must finish
# with transactions processed and none failed.
pgbench_ok() {
	name=$1
	shift
	if ! run_dropin timeout 120 "$BINDIR/pgbench" "$@" >"$TMP/pgbench.out" 2>&1; then
		show "$TMP/pgbench.out"
		fail "pgbench $name: exit status not 0"
	fi
	done_n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$TMP/pgbench.out")
	if [ -z "$done_n" ] || [ "$done_n" -eq 0 ] || [ "$failed" != "0" ]; then
		show "$TMP/pgbench.out"
		fail "pgbench $name: processed '${done_n}', failed '${failed}'"
	fi
	ok "pgbench $name: $done_n transactions, 0 failed ($tps tps)"
}

section_pgbench() {
	"$BINDIR/pgbench" -i -s 1 -q >"$TMP/init.out" 2>&1 ||
		{ show "$TMP/init.out"; fail "pgbench -i (direct)"; }
	ok "pgbench -i directly"
	pgbench_ok "-S -c 50 -j 2" -S -c 50 -j 2 -T "$PGBENCH_S" -n
	pgbench_ok "-c 20 (TPC-B)" -c 20 -j 2 -T "$PGBENCH_S" -n
	pgbench_ok "-M prepared" -c 10 -j 2 -T "$PGBENCH_S" -n -M prepared
	pgbench_ok "-M extended" -c 10 -j 2 -T "$PGBENCH_S" -n -M extended
}

# psql -X -f script.sql: its output (stdout and stderr, \watch's time
# stamps masked) must be the same directly and through the drop-in.
psql_script() {
	out=$1
	shift
	rc=0
	"$@" "$BINDIR/psql" -X -f script.sql >"$out.raw" 2>&1 || rc=$?
	echo "exit status $rc" >>"$out.raw"
	sed 's/^[A-Z][a-z][a-z] [A-Z][a-z][a-z] .* (every 0\.1s)$/<time> (every 0.1s)/' \
		"$out.raw" >"$out"
	"$BINDIR/psql" -X -q -c 'DROP TABLE libpq_psql' -c 'DROP SEQUENCE libpq_watch' \
		>"$out.drop" 2>&1 || { show "$out.drop"; fail "psql: cleaning up after the script"; }
}

section_psql() {
	cd "$ROOT/tests/libpq"
	psql_script "$TMP/psql.direct" env
	grep -q '^exit status 3$' "$TMP/psql.direct" ||
		{ show "$TMP/psql.direct"; fail "psql directly: the script did not stop at its error"; }
	grep -q 'quotient' "$TMP/psql.direct" && grep -q 'division by zero' "$TMP/psql.direct" ||
		{ show "$TMP/psql.direct"; fail "psql directly: \\watch did not run to its error"; }
	psql_script "$TMP/psql.dropin" run_dropin
	if ! diff -u "$TMP/psql.direct" "$TMP/psql.dropin" >"$TMP/psql.diff"; then
		show "$TMP/psql.diff"
		fail "psql: the script's output through the drop-in differs from direct"
	fi
	ok "psql -X -f script.sql: the same $(wc -l <"$TMP/psql.direct") lines of output directly and through the drop-in"
	cd - >/dev/null
}

# tests/libpq/api (linked with -lpq): every line it prints must be the
# same directly and through the drop-in.
section_api() {
	api=$ROOT/tests/libpq/api
	[ -x "$api" ] || fail "$api is not built: run make test-libpq"
	"$api" >"$TMP/api.direct" 2>&1 || { show "$TMP/api.direct"; fail "api directly"; }
	run_dropin "$api" >"$TMP/api.dropin" 2>&1 || { show "$TMP/api.dropin"; fail "api through the drop-in"; }
	if ! diff -u "$TMP/api.direct" "$TMP/api.dropin" >"$TMP/api.diff"; then
		show "$TMP/api.diff"
		fail "api: libpq's answers through the drop-in differ from direct"
	fi
	ok "api: the same $(wc -l <"$TMP/api.direct") answers directly and through the drop-in (statements, types, errors, transaction status, parameters, async, pipeline, escapes)"
}

# psycopg2 from Debian, for Debian's own /usr/bin/python3 (BUILD-NOTES.md).
section_psycopg2() {
	py=/usr/bin/python3
	"$py" -c 'import psycopg2' 2>/dev/null ||
		fail "psycopg2 not importable by $py (python3-psycopg2: sh tools/deps.sh)"
	run_dropin "$py" -c 'import psycopg2._psycopg as m; print(m.__file__)' >"$TMP/py.out" 2>&1 ||
		{ show "$TMP/py.out"; fail "psycopg2 does not load with the drop-in"; }
	mod=$(cat "$TMP/py.out")
	run_dropin ldd "$mod" | grep -q "libpq.so.5 => $DROPIN/libpq.so.5" ||
		fail "psycopg2's $mod does not take the drop-in"
	if ! run_dropin timeout 120 "$py" "$ROOT/tests/libpq/psycopg2_test.py" >"$TMP/py.out" 2>&1; then
		show "$TMP/py.out"
		fail "psycopg2 through the drop-in"
	fi
	cat "$TMP/py.out"
}

# tools/run-integ.sh passes --jobs 1 (for Criterion): not ours.
[ "${1:-}" = "--jobs" ] && shift 2
[ $# -gt 0 ] || set -- exports connect api pgbench psql psycopg2
for s in "$@"; do
	case $s in
	exports|connect|api|pgbench|psql|psycopg2) ;;
	*) fail "unknown section $s (exports connect api pgbench psql psycopg2)" ;;
	esac
done
start_broker
for s in "$@"; do
	"section_$s"
done
ok "libpq drop-in: all sections passed ($*)"
