#!/bin/sh
# pgbench itself as the benchmark (make bench): the same pgbench, unmodified,
# direct to PostgreSQL, through PgBouncer (transaction mode) and through
# pgbroker by the drop-in libpq.so.5 (client/libpq), pooler and broker with
# the same pool; -S and the default TPC-B-like script at 1, 50 and 200
# clients, side by side in one run (variants interleaved per row). Run by
# tools/run-integ.sh (its throwaway PostgreSQL):
#   sh tools/run-integ.sh tools/pgbench-bench.sh
# Writes bench/pgbench.md (tps, mean latency, failed, ratios).
#   PGB_PGBENCH_SECONDS  seconds per run (default 10)
#   PGB_PGBENCH_CLIENTS  client counts (default "1 50 200")
#   PGB_PGBENCH_POOL     backends of broker and PgBouncer (default 20)
#   PGB_PGBENCH_SCRIPTS  "select tpcb" (default), or one of them
set -eu

ROOT=${PGB_ROOT:-$(cd "$(dirname "$0")/.." && pwd -P)}
SECS=${PGB_PGBENCH_SECONDS:-10}
CLIENTS=${PGB_PGBENCH_CLIENTS:-1 50 200}
POOL=${PGB_PGBENCH_POOL:-20}
OUT=$ROOT/bench/pgbench.md
BOUNCER_PORT=6543

[ "${1:-}" = "--jobs" ] && shift 2
[ -n "${PGB_TEST_DSN:-}" ] || { echo "pgbench-bench.sh: run through tools/run-integ.sh" >&2; exit 2; }
for kv in $PGB_TEST_DSN; do
	case $kv in
	host=*) PGHOST=${kv#host=} ;;
	port=*) PGPORT=${kv#port=} ;;
	user=*) PGUSER=${kv#user=} ;;
	dbname=*) PGDATABASE=${kv#dbname=} ;;
	esac
done
export PGHOST PGPORT PGUSER PGDATABASE
BINDIR=$(pg_config --bindir 2>/dev/null || :)
[ -x "$BINDIR/pgbench" ] || BINDIR=$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k5,5n | tail -n 1)
BOUNCER=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null || :)

TMP=$(mktemp -d "${PGB_TEST_TMP:-/tmp}/pgbench-bench.XXXXXX")
chmod 755 "$TMP"
BROKER_PID=
BOUNCER_PID=
cleanup() {
	for p in $BROKER_PID $BOUNCER_PID; do
		kill -TERM "$p" 2>/dev/null || :
		wait "$p" 2>/dev/null || :
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -m 700 "$TMP/run"
mkfifo "$TMP/ready"
"$ROOT/broker/pgbroker" --dir "$TMP/run" --dsn "$PGB_TEST_DSN" --pool-size "$POOL" \
	--min-pool-size "$POOL" --max-pool-size "$POOL" --ready-fd 3 3>"$TMP/ready" \
	>"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
[ "$(timeout 30 head -n 1 "$TMP/ready")" = "ready" ] ||
	{ cat "$TMP/broker.log" >&2; echo "pgbench-bench.sh: broker not ready" >&2; exit 1; }

if [ -n "$BOUNCER" ]; then
	mkdir "$TMP/bouncer"
	cat >"$TMP/bouncer/pgbouncer.ini" <<EOF
[databases]
$PGDATABASE = host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER
[pgbouncer]
listen_port = $BOUNCER_PORT
listen_addr =
unix_socket_dir = $TMP/bouncer
auth_type = trust
auth_file = $TMP/bouncer/users.txt
pool_mode = transaction
default_pool_size = $POOL
min_pool_size = $POOL
reserve_pool_size = 0
max_db_connections = $POOL
max_client_conn = 400
log_connections = 0
log_disconnections = 0
EOF
	echo "\"$PGUSER\" \"\"" >"$TMP/bouncer/users.txt"
	# PgBouncer refuses to run as root: as user postgres then.
	as=
	[ "$(id -u)" -eq 0 ] && { chown -R postgres "$TMP/bouncer"; as="runuser -u postgres --"; }
	$as "$BOUNCER" "$TMP/bouncer/pgbouncer.ini" >"$TMP/bouncer/log" 2>&1 &
	BOUNCER_PID=$!
	i=0
	until "$BINDIR/psql" -X -q -h "$TMP/bouncer" -p "$BOUNCER_PORT" -c 'select 1' >/dev/null 2>&1; do
		i=$((i + 1))
		[ "$i" -lt 300 ] && kill -0 "$BOUNCER_PID" 2>/dev/null ||
			{ cat "$TMP/bouncer/log" >&2; echo "pgbench-bench.sh: pgbouncer did not start" >&2; exit 1; }
		timeout 0.1 tail -f /dev/null || :
	done
fi

"$BINDIR/pgbench" -i -s 10 -q >"$TMP/init.log" 2>&1 || { cat "$TMP/init.log" >&2; exit 1; }

# run VARIANT SCRIPT CLIENTS: one pgbench run; prints "tps latency failed".
run() {
	variant=$1 script=$2 n=$3
	set -- -c "$n" -j 2 -T "$SECS" -n
	[ "$script" = "select" ] && set -- -S "$@"
	case $variant in
	direct) "$BINDIR/pgbench" "$@" ;;
	pgbouncer) "$BINDIR/pgbench" -h "$TMP/bouncer" -p "$BOUNCER_PORT" "$@" ;;
	pgbroker) LD_LIBRARY_PATH=$ROOT/client/libpq PGBROKER_DIR=$TMP/run "$BINDIR/pgbench" "$@" ;;
	esac >"$TMP/out" 2>&1 || :
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$TMP/out")
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$TMP/out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/out")
	[ -n "$tps" ] || { sed 's/^/    | /' "$TMP/out" | tail -n 5 >&2; tps=0 lat=- failed=-; }
	echo "${tps%.*} ${lat:--} ${failed:--}"
}

variants="direct pgbroker"
[ -n "$BOUNCER" ] && variants="direct pgbouncer pgbroker"
{
	echo "# pgbench through pgbroker's drop-in libpq"
	echo
	echo "Made by \`make bench\` (tools/pgbench-bench.sh) on $(date -u +%Y-%m-%d), $(nproc) cores,"
	echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the start; pgbench -i -s 10; ${SECS} s"
	echo "per run; pool of $POOL backends for PgBouncer (transaction mode) and pgbroker;"
	echo "the same pgbench binary each time, through the drop-in with"
	echo "\`LD_LIBRARY_PATH=client/libpq\`. Variants of one row run back to back;"
	echo "figures on a shared machine move between runs: compare within a row."
	echo
	echo "| script | clients | direct tps | pgbouncer tps | pgbroker tps | direct ms | pgbouncer ms | pgbroker ms | failed (d/b/p) | pgbroker / direct | pgbroker / pgbouncer |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
} >"$TMP/table"
for script in ${PGB_PGBENCH_SCRIPTS:-select tpcb}; do
	for n in $CLIENTS; do
		d="0 - -" b="0 - -" p="0 - -"
		for v in $variants; do
			echo "pgbench-bench: $script, $n clients, $v" >&2
			r=$(run "$v" "$script" "$n")
			case $v in direct) d=$r ;; pgbouncer) b=$r ;; pgbroker) p=$r ;; esac
		done
		set -- $d $b $p
		ratio() { [ "$2" -gt 0 ] 2>/dev/null && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo -; }
		echo "| $script | $n | $1 | $4 | $7 | $2 | $5 | $8 | $3/$6/$9 | $(ratio "$7" "$1") | $(ratio "$7" "$4") |" >>"$TMP/table"
	done
done
mkdir -p "$ROOT/bench"
cp "$TMP/table" "$OUT"
cat "$OUT"
