#!/bin/sh
# A throwaway PostgreSQL cluster in a directory the caller made.
#
#   sh tools/pgtmp.sh start DIR    initdb into DIR/data (trust auth, user postgres),
#                                  start it on a unix socket in DIR (no TCP), and
#                                  print one line on stdout: the conninfo
#                                  "host=DIR port=5432 user=postgres dbname=postgres"
#   sh tools/pgtmp.sh stop DIR     stop it and remove DIR
#   sh tools/pgtmp.sh status DIR   exit 0 when running, 3 when not
#   sh tools/pgtmp.sh pause DIR    stop it, keeping DIR (start brings it back)
#   sh tools/pgtmp.sh restart DIR  pg_ctl restart -m fast: the shortest outage
#
# Server log: DIR/log. Binaries: $PG_BINDIR, else `pg_config --bindir`, else the
# newest /usr/lib/postgresql/*/bin, else PATH. PostgreSQL refuses to run as
# root: as root, DIR is chowned to user postgres and the server runs as postgres.
set -u

PORT=5432
MARKER=.pgtmp

die() { echo "pgtmp.sh: $*" >&2; exit 1; }
usage() { echo "usage: sh tools/pgtmp.sh start|stop|pause|restart|status DIR" >&2; exit 2; }

find_bindir() {
	if [ -n "${PG_BINDIR:-}" ]; then
		[ -x "$PG_BINDIR/initdb" ] || die "PG_BINDIR=$PG_BINDIR has no initdb"
		echo "$PG_BINDIR"; return
	fi
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir 2>/dev/null) || d=
		if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
			echo "$d"; return
		fi
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n | tail -n 1)
	if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
		echo "$d"; return
	fi
	d=$(command -v initdb 2>/dev/null) || d=
	if [ -n "$d" ] && command -v pg_ctl >/dev/null 2>&1; then
		dirname "$d"; return
	fi
	die "PostgreSQL server binaries (initdb, pg_ctl) not found; run: sh tools/deps.sh"
}

# Quote one word for sh -c.
shquote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# Run a command as the cluster owner (postgres when we are root).
as_pg() {
	if [ "$IS_ROOT" -eq 0 ]; then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		(cd / && exec runuser -u postgres -- "$@")
	else
		cmd=
		for a in "$@"; do cmd="$cmd $(shquote "$a")"; done
		su -s /bin/sh postgres -c "cd / && exec $cmd"
	fi
}

# Running postmaster's pid from DIR/data/postmaster.pid, if it is alive.
pm_pid() {
	f="$DIR/data/postmaster.pid"
	[ -f "$f" ] || return 1
	p=$(head -n 1 "$f" 2>/dev/null) || return 1
	case $p in ''|*[!0-9]*) return 1 ;; esac
	kill -0 "$p" 2>/dev/null || return 1
	echo "$p"
}

[ $# -eq 2 ] || usage
CMD=$1
DIR=$2
[ -n "$DIR" ] || usage
case $DIR in
*[\ \	\'\"\\,]*) die "DIR must not contain spaces, quotes, backslashes or commas: $DIR" ;;
esac

cmd_start() {
	mkdir -p "$DIR" || die "cannot create $DIR"
	DIR=$(cd "$DIR" && pwd -P) || die "cannot enter $DIR"
	# A unix socket path is limited to 107 bytes.
	sock="$DIR/.s.PGSQL.$PORT"
	[ ${#sock} -le 100 ] || die "DIR path too long for a unix socket: $DIR"
	if pm_pid >/dev/null; then
		die "a server is already running in $DIR"
	fi
	if [ -e "$DIR/data" ] && [ ! -f "$DIR/data/PG_VERSION" ]; then
		die "$DIR/data exists but is not a cluster"
	fi
	BINDIR=$(find_bindir) || exit 1

	: >"$DIR/$MARKER" || die "cannot write to $DIR"
	chmod 755 "$DIR"
	if [ "$IS_ROOT" -eq 1 ]; then
		id postgres >/dev/null 2>&1 || die "running as root but there is no user postgres"
		# Not DIR/runs: the tests' run directories (tools/run-integ.sh) keep
		# their owner, which libpgbroker and poolstat check.
		find "$DIR" -path "$DIR/runs" -prune -o -exec chown postgres {} + ||
			die "cannot chown $DIR to postgres"
		as_pg test -w "$DIR" -a -x "$DIR" 2>/dev/null ||
			die "user postgres cannot reach $DIR (a parent directory is not traversable; use e.g. mktemp -d under /tmp)"
	fi

	if [ ! -f "$DIR/data/PG_VERSION" ]; then
		if ! as_pg "$BINDIR/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 \
			--locale=C --no-sync >"$DIR/initdb.log" 2>&1; then
			cat "$DIR/initdb.log" >&2
			die "initdb failed"
		fi
		cat >>"$DIR/data/postgresql.conf" <<EOF

# --- pgtmp.sh (throwaway test cluster) ---
listen_addresses = ''
unix_socket_directories = '$DIR'
port = $PORT
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
EOF
	fi

	if ! as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 start >"$DIR/pg_ctl.log" 2>&1; then
		cat "$DIR/pg_ctl.log" >&2
		[ -f "$DIR/log" ] && tail -n 30 "$DIR/log" >&2
		# pg_ctl may have timed out with a server still coming up.
		as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1
		die "PostgreSQL did not start (log: $DIR/log)"
	fi
	echo "host=$DIR port=$PORT user=postgres dbname=postgres"
}

cmd_stop() {
	[ -d "$DIR" ] || return 0
	DIR=$(cd "$DIR" && pwd -P) || die "cannot enter $DIR"
	if pid=$(pm_pid); then
		BINDIR=$(find_bindir) || exit 1
		if ! as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
			as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1
		fi
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null
			i=0
			while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
				sleep 0.1; i=$((i + 1))
			done
		fi
		if kill -0 "$pid" 2>/dev/null; then
			die "PostgreSQL (pid $pid) in $DIR did not stop; not removing $DIR"
		fi
	fi
	# Remove only what start made.
	if [ -e "$DIR/$MARKER" ]; then
		rm -rf "$DIR" || die "cannot remove $DIR"
	elif [ -z "$(ls -A "$DIR" 2>/dev/null)" ]; then
		rmdir "$DIR" 2>/dev/null
	else
		die "$DIR was not made by pgtmp.sh start; not removing it"
	fi
	return 0
}

# Stop the server but keep its directory: `start DIR` brings it back (tests
# of a PostgreSQL outage use this).
cmd_pause() {
	DIR=$(cd "$DIR" && pwd -P) || die "cannot enter $DIR"
	BINDIR=$(find_bindir) || exit 1
	as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
		die "PostgreSQL in $DIR did not stop"
}

# Restart the server as `pg_ctl restart -m fast` does: the shortest outage
# (tests of the breaker use this).
cmd_restart() {
	DIR=$(cd "$DIR" && pwd -P) || die "cannot enter $DIR"
	BINDIR=$(find_bindir) || exit 1
	as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -l "$DIR/log" -m fast -w -t 60 restart \
		>"$DIR/pg_ctl.log" 2>&1 || { cat "$DIR/pg_ctl.log" >&2; die "PostgreSQL in $DIR did not restart"; }
}

cmd_status() {
	[ -d "$DIR" ] || { echo "not running (no $DIR)"; exit 3; }
	DIR=$(cd "$DIR" && pwd -P) || die "cannot enter $DIR"
	if pid=$(pm_pid); then
		echo "running (pid $pid): host=$DIR port=$PORT user=postgres dbname=postgres"
		exit 0
	fi
	echo "not running"
	exit 3
}

case $CMD in
start) cmd_start ;;
stop) cmd_stop ;;
pause) cmd_pause ;;
restart) cmd_restart ;;
status) cmd_status ;;
*) usage ;;
esac
