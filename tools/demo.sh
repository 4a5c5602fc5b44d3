#!/bin/sh
# make demo: a throwaway PostgreSQL, a broker on it, 60 agents for 10 s,
# a summary, and nothing left running afterwards on any exit path.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
AGENTS=${PGB_DEMO_AGENTS:-60}
SECONDS_RUN=${PGB_DEMO_SECONDS:-10}
PGDIR=
RUNDIR=
BROKER=
STATUS=1

cleanup() {
	if [ -n "$BROKER" ] && kill -0 "$BROKER" 2>/dev/null; then
		kill -TERM "$BROKER" 2>/dev/null
		i=0
		while kill -0 "$BROKER" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		kill -KILL "$BROKER" 2>/dev/null
		wait "$BROKER" 2>/dev/null
	fi
	[ -n "$PGDIR" ] && sh "$ROOT/tools/pgtmp.sh" stop "$PGDIR"
	[ -n "$RUNDIR" ] && rm -rf "$RUNDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PGDIR=$(mktemp -d /tmp/pgb-demo-pg.XXXXXX) || exit 1
chmod 755 "$PGDIR"
echo "demo: starting a throwaway PostgreSQL in $PGDIR"
DSN=$(sh "$ROOT/tools/pgtmp.sh" start "$PGDIR") || { echo "demo: PostgreSQL did not start" >&2; exit 1; }

RUNDIR=$(mktemp -d /tmp/pgb-demo-run.XXXXXX) || exit 1
mkfifo "$RUNDIR/ready"
echo "demo: starting pgbroker in $RUNDIR (log: $RUNDIR/broker.log)"
"$ROOT/broker/pgbroker" --dir "$RUNDIR" --dsn "$DSN" --ready-fd 3 \
	3>"$RUNDIR/ready" >"$RUNDIR/broker.log" 2>&1 &
BROKER=$!
# Bounded wait for the broker's ready line.
if ! line=$(timeout 30 head -n 1 "$RUNDIR/ready") || [ "$line" != ready ]; then
	echo "demo: the broker did not start; its log:" >&2
	cat "$RUNDIR/broker.log" >&2
	exit 1
fi

echo "demo: $AGENTS agents for $SECONDS_RUN s"
"$ROOT/tools/pgb_demo" --dir "$RUNDIR" --agents "$AGENTS" --seconds "$SECONDS_RUN"
STATUS=$?
"$ROOT/tools/poolstat" --once "$RUNDIR" || true
exit $STATUS
