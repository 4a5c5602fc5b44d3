#!/bin/sh
# The package's tests (node --test), one file at a time, against the
# PostgreSQL that tools/run-integ.sh started: `make test-node`.
#   client/node/test/run.sh [--jobs N] [FILE...]   (files: test/*.test.js)
cd "$(dirname "$0")/.." || exit 1
[ "${1:-}" = "--jobs" ] && shift 2
[ $# -gt 0 ] || set -- test/*.test.js
exec node --test --test-concurrency=1 "$@"
