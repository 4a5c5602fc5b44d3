#!/bin/sh
# make bench: tools/poolbench --compare (direct, pgbouncer, broker back to
# back) for 1, 10, 50 and 200 agents on select1 and pgbench-select, on one
# throwaway PostgreSQL; 24 runs of 1 + 6 s, about 4 minutes. Writes
# bench/results.md (machine, tables, ratios) and bench/results.svg; the raw
# JSON and the report go to bench/out/. An interrupted or timed-out run
# leaves the previous bench/results.* alone.
#   PGB_BENCH_SECONDS  measured seconds per run (default 6)
#   PGB_BENCH_AGENTS   agent counts (default 1,10,50,200)
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
cd "$ROOT" || exit 1
BIN=tools/poolbench
[ -x "$BIN" ] || { echo "bench.sh: $BIN not built; run: make" >&2; exit 1; }
SECS=${PGB_BENCH_SECONDS:-6}
AGENTS=${PGB_BENCH_AGENTS:-1,10,50,200}
OUT=bench/out
mkdir -p "$OUT" || exit 1

PID=
cleanup() {
	if [ -n "$PID" ]; then
		kill -TERM "$PID" 2>/dev/null   # poolbench stops what it started
		wait "$PID" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

set -- --compare --workload select1,pgbench-select --agents-list "$AGENTS" \
	--duration "$SECS" --warmup 1
echo "bench: $BIN $*"
start=$(date +%s)
# In the background so that INT/TERM reach our trap at once.
timeout -k 30 900 "$BIN" "$@" --json "$OUT/results.json" --plot "$OUT/results.svg" \
	>"$OUT/report.md" &
PID=$!
wait "$PID"
rc=$?
PID=
took=$(($(date +%s) - start))

# 0: all runs clean; 1: finished, but with errors or failed runs (shown in
# the tables). Anything else: interrupted, timed out or unusable.
if [ "$rc" -gt 1 ] || [ ! -s "$OUT/report.md" ]; then
	echo "bench.sh: poolbench failed (exit status $rc); bench/results.* not updated" >&2
	exit 1
fi
{
	echo "# pgbroker benchmark"
	echo
	echo "Made by \`make bench\` in ${took} s: \`$BIN $*\`."
	echo "One throwaway PostgreSQL for all runs; each run starts its own broker or PgBouncer"
	echo "and its own agent processes, which start together once all are connected."
	echo "Ratios come from runs made back to back; on a 2-core machine figures move by"
	echo "tens of percent between runs, so compare figures within one table."
	echo
	echo "![throughput and p99 latency against agent count](results.svg)"
	echo
	cat "$OUT/report.md"
} >bench/results.md.tmp && mv bench/results.md.tmp bench/results.md &&
	cp "$OUT/results.svg" bench/results.svg || exit 1
cat "$OUT/report.md"
echo "bench: wrote bench/results.md and bench/results.svg (${took} s)"
[ "$rc" -eq 0 ] || echo "bench.sh: some runs had errors or failed: see the tables" >&2
exit "$rc"
