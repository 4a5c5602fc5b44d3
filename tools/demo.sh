#!/bin/sh
# make demo: a throwaway PostgreSQL, a broker on it, then tools/pgb_demo
# (60 agents for 10 s; it prints its own summary) and a poolstat snapshot.
# Nothing is left running or on disk afterwards, on any exit path; the exit
# status is pgb_demo's. PGB_DEMO_AGENTS / PGB_DEMO_SECONDS override 60 / 10;
# PGB_BROKER_WRAPPER runs the broker under a command, e.g. tools/no_uring
# (io_uring blocked as in a Docker container: the broker runs on epoll).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
cd "$ROOT" || exit 1
BROKER=broker/pgbroker
DEMO=tools/pgb_demo
AGENTS=${PGB_DEMO_AGENTS:-60}
SECONDS_RUN=${PGB_DEMO_SECONDS:-10}
for b in "$BROKER" "$DEMO"; do
	[ -x "$b" ] || { echo "demo.sh: $b not built; run: make" >&2; exit 1; }
done

PGDIR=
WORK=
BPID=
DPID=
CLEANED=0

# Stop a pid with TERM, wait up to $2 seconds, then KILL; reap it.
stop_pid() {
	kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null; return 0; }
	kill -TERM "$1" 2>/dev/null
	i=0
	while kill -0 "$1" 2>/dev/null && [ "$i" -lt $(($2 * 10)) ]; do
		sleep 0.1; i=$((i + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		echo "demo.sh: pid $1 ignored SIGTERM for $2 s; killing it" >&2
		kill -KILL "$1" 2>/dev/null
	fi
	wait "$1" 2>/dev/null
	return 0
}

cleanup() {
	[ "$CLEANED" -eq 1 ] && return
	CLEANED=1
	[ -n "$DPID" ] && stop_pid "$DPID" 10
	[ -n "$BPID" ] && stop_pid "$BPID" 15
	if [ -n "$PGDIR" ]; then
		sh "$ROOT/tools/pgtmp.sh" stop "$PGDIR" || echo "demo.sh: could not stop PostgreSQL in $PGDIR" >&2
		[ -d "$PGDIR" ] && rm -rf "$PGDIR"
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

broker_log_tail() {
	if [ -s "$WORK/broker.log" ]; then
		echo "demo.sh: last lines of the broker log:" >&2
		tail -n 40 "$WORK/broker.log" >&2
	fi
}

PGDIR=$(mktemp -d /tmp/pgb-pg.XXXXXX) || exit 1
chmod 755 "$PGDIR"
WORK=$(mktemp -d /tmp/pgb-demo.XXXXXX) || exit 1
RUNDIR=$WORK/run
mkdir -m 700 "$RUNDIR" || exit 1
FIFO=$WORK/ready
mkfifo "$FIFO" || exit 1

echo "demo: starting a throwaway PostgreSQL in $PGDIR"
DSN=$(sh "$ROOT/tools/pgtmp.sh" start "$PGDIR") || { echo "demo.sh: could not start PostgreSQL" >&2; exit 1; }

echo "demo: starting pgbroker in $RUNDIR"
# shellcheck disable=SC2086 # the wrapper is a command line: split on purpose
${PGB_BROKER_WRAPPER:-} "$BROKER" --dir "$RUNDIR" --dsn "$DSN" --ready-fd 3 3>"$FIFO" \
	>"$WORK/broker.log" 2>&1 &
BPID=$!
# EOF (broker died) or the timeout both leave $ready empty.
ready=$(timeout 30 head -n 1 "$FIFO" 2>/dev/null) || ready=
if [ "$ready" != "ready" ]; then
	if kill -0 "$BPID" 2>/dev/null; then
		echo "demo.sh: the broker did not report ready within 30 s" >&2
	else
		echo "demo.sh: the broker exited before it was ready" >&2
	fi
	broker_log_tail
	exit 1
fi
loop=$(sed -n 's/.*INFO: \(.*using .*\)/\1/p; s/.*WARN: \(.*using .*\)/\1/p' "$WORK/broker.log" | head -n 1)
[ -n "$loop" ] && echo "demo: event loop: $loop"

# In the background so that INT/TERM reach our trap at once; timeout signals
# the demo's whole process group (its agents too).
echo "demo: $AGENTS agents for $SECONDS_RUN s"
timeout -k 10 $((SECONDS_RUN + 300)) "$DEMO" --dir "$RUNDIR" --agents "$AGENTS" --seconds "$SECONDS_RUN" &
DPID=$!
wait "$DPID"
rc=$?
DPID=
[ "$rc" -eq 124 ] && echo "demo.sh: pgb_demo timed out" >&2

if ! kill -0 "$BPID" 2>/dev/null; then
	echo "demo.sh: the broker died during the demo" >&2
	broker_log_tail
	[ "$rc" -eq 0 ] && rc=1
else
	# The rows and the rate of a snapshot are those of the broker's last
	# health sample (every second): wait for one taken after the agents
	# left, so that the snapshot shows the pool as the run left it.
	i=0
	while [ "$i" -lt 50 ] && ! timeout 10 tools/poolstat --json "$RUNDIR" 2>/dev/null |
		grep -q '"agents":\[\]'; do
		sleep 0.1; i=$((i + 1))
	done
	timeout 10 tools/poolstat --once "$RUNDIR" || true
	stop_pid "$BPID" 15
	BPID=
	[ "$rc" -ne 0 ] && broker_log_tail
fi
exit "$rc"
