#!/bin/sh
# Run an integration-test binary against a throwaway PostgreSQL.
#   sh tools/run-integ.sh BIN [criterion args...]
# Starts PostgreSQL (tools/pgtmp.sh) in a fresh temporary directory, exports
#   PGB_TEST_DSN    conninfo of that server
#   PGB_TEST_PGDIR  its directory (socket, DIR/log is the server log)
#   PGB_ROOT        absolute path of the repository
#   PGB_TEST_TMP    a directory for the tests' run directories (removed after)
# runs BIN (with --jobs 1 unless a --jobs/-j is given) under `timeout 900`,
# always stops PostgreSQL and removes the directory, and exits with BIN's status.
set -u

[ $# -ge 1 ] || { echo "usage: sh tools/run-integ.sh BIN [args...]" >&2; exit 2; }
BIN=$1
shift
case $BIN in */*) ;; *) BIN=./$BIN ;; esac
[ -x "$BIN" ] || { echo "run-integ.sh: $BIN is not an executable file" >&2; exit 2; }

PGB_ROOT=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
# Brokers started by the tests must not talk to a service manager above us.
unset NOTIFY_SOCKET
PGTMP="$PGB_ROOT/tools/pgtmp.sh"
TIMEOUT=${PGB_TEST_TIMEOUT:-900}

PGDIR=
TPID=
CLEANED=0
cleanup() {
	[ "$CLEANED" -eq 1 ] && return
	CLEANED=1
	if [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then
		kill -TERM "$TPID" 2>/dev/null
		wait "$TPID" 2>/dev/null
	fi
	if [ -n "$PGDIR" ]; then
		sh "$PGTMP" stop "$PGDIR" || echo "run-integ.sh: could not stop PostgreSQL in $PGDIR" >&2
		[ -d "$PGDIR" ] && rm -rf "$PGDIR"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

PGDIR=$(mktemp -d /tmp/pgb-pg.XXXXXX) || { echo "run-integ.sh: mktemp failed" >&2; exit 1; }
chmod 755 "$PGDIR"
PGB_TEST_DSN=$(sh "$PGTMP" start "$PGDIR") || { echo "run-integ.sh: could not start PostgreSQL" >&2; exit 1; }
PGB_TEST_PGDIR=$PGDIR
PGB_TEST_TMP=$PGDIR/runs
mkdir -p "$PGB_TEST_TMP" || exit 1
export PGB_TEST_DSN PGB_TEST_PGDIR PGB_ROOT PGB_TEST_TMP

has_jobs=0
for a in "$@"; do
	case $a in
	--jobs|--jobs=*|-j|-j[0-9]*) has_jobs=1 ;;
	esac
done

# In the background so that INT/TERM reach our trap at once (a foreground
# child would delay it); timeout signals BIN's whole process group.
if [ "$has_jobs" -eq 1 ]; then
	timeout -k 30 "$TIMEOUT" "$BIN" "$@" &
else
	timeout -k 30 "$TIMEOUT" "$BIN" --jobs 1 "$@" &
fi
TPID=$!
wait "$TPID"
rc=$?
TPID=
if [ "$rc" -eq 124 ]; then
	echo "run-integ.sh: $BIN timed out after ${TIMEOUT}s" >&2
fi
exit "$rc"
