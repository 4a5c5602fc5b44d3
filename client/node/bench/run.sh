#!/bin/sh
# make bench-node: nodebench.js on the PostgreSQL tools/run-integ.sh starts.
cd "$(dirname "$0")/.." || exit 1
[ "${1:-}" = "--jobs" ] && shift 2
exec node bench/nodebench.js "$@"
