#!/bin/sh
# make soak: SOAK_SECONDS (default 600) of mixed load through a broker on a
# throwaway PostgreSQL, with agents SIGKILLed at random and 15 % of agents
# dropping mid-result; every row is validated, the broker's RSS and backend
# count are watched (tools/soak.c). Exit status 0 only when nothing was wrong.
#   SOAK_SECONDS=60 SOAK_AGENTS=40 sh tools/soak.sh
# SOAK_LOG=FILE keeps the broker's log there (it goes with the run directory
# otherwise); SOAK_LOG_LEVEL sets its level (warn).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
SECONDS_=${SOAK_SECONDS:-600}
AGENTS=${SOAK_AGENTS:-40}
MAXBE=${SOAK_MAX_POOL:-10}
LEVEL=${SOAK_LOG_LEVEL:-warn}
for b in broker/pgbroker tools/soak; do
	[ -x "$ROOT/$b" ] || { echo "soak.sh: $b is not built (make all tools/soak)" >&2; exit 2; }
done

PGDIR=
BDIR=
BPID=
cleanup() {
	if [ -n "$BPID" ] && kill -0 "$BPID" 2>/dev/null; then
		kill -TERM "$BPID" 2>/dev/null
		i=0
		while kill -0 "$BPID" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$BPID" 2>/dev/null
	fi
	[ -n "$PGDIR" ] && sh "$ROOT/tools/pgtmp.sh" stop "$PGDIR"
	[ -n "$BDIR" ] && rm -rf "$BDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PGDIR=$(mktemp -d /tmp/pgb-soak-pg.XXXXXX) || exit 1
chmod 755 "$PGDIR"
DSN=$(sh "$ROOT/tools/pgtmp.sh" start "$PGDIR") || { echo "soak.sh: PostgreSQL did not start" >&2; exit 1; }
BDIR=$(mktemp -d /tmp/pgb-soak.XXXXXX) || exit 1
LOG=${SOAK_LOG:-$BDIR/broker.log}
APP=$(basename "$BDIR")

# The broker signals readiness on fd 3.
exec 4>"$BDIR/ready"
"$ROOT/broker/pgbroker" --dir "$BDIR" --dsn "$DSN application_name=$APP" \
	--min-pool-size 2 --pool-size 8 --max-pool-size "$MAXBE" --reserve-timeout-ms 200 \
	--acquire-timeout-ms 10000 --send-timeout-ms 2000 --log-level "$LEVEL" \
	--ready-fd 4 >"$LOG" 2>&1 &
BPID=$!
exec 4>&-
i=0
until grep -q ready "$BDIR/ready" 2>/dev/null; do
	kill -0 "$BPID" 2>/dev/null || { cat "$LOG" >&2; echo "soak.sh: broker exited" >&2; exit 1; }
	[ $i -lt 300 ] || { echo "soak.sh: broker not ready after 30 s" >&2; exit 1; }
	sleep 0.1; i=$((i + 1))
done

echo "soak.sh: ${SECONDS_}s, $AGENTS agents, max_pool_size $MAXBE, broker pid $BPID" >&2
"$ROOT/tools/soak" --dir "$BDIR" --broker-pid "$BPID" --dsn "$DSN" --app "$APP" \
	--seconds "$SECONDS_" --agents "$AGENTS" --max-backends "$MAXBE"
rc=$?
if ! kill -0 "$BPID" 2>/dev/null; then
	echo "soak.sh: FAIL the broker died; its log:" >&2
	tail -n 30 "$LOG" >&2
	rc=1
elif [ $rc -ne 0 ]; then
	tail -n 30 "$LOG" >&2
fi
exit $rc
