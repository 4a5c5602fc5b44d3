#!/bin/sh
# Check `make install` end to end; `make test` runs it after the integration
# tests, `make check-install` alone. It installs into a fresh DESTDIR, checks
# every file, its mode, the .so links and SONAME, that the library exports
# only pgb_*, the man pages, the example config, the systemd unit and the
# --version/--help texts; builds an agent with nothing but `pkg-config
# libpgbroker`, shared and static, and runs both against the installed
# pgbroker on a throwaway PostgreSQL; stops it with SIGTERM; uninstalls and
# checks that only empty directories are left. One line per check; exits 1
# at the first failure. PostgreSQL, the broker and the temporary directories
# are removed on every exit path.
#
# Environment (the Makefile sets all three):
#   PGB_MAKE          the make command, split into words (default: make).
#                     make passes its own $(MAKE), whose runs inherit its
#                     flags; a different flag set is refused before anything
#                     is rebuilt with it.
#   CC                compiler for the agents (default: cc)
#   PGB_AGENT_CFLAGS  extra compile and link flags for the agents: the
#                     -fsanitize=... of a sanitizer build
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
MAKE_CMD=${PGB_MAKE:-make}
CC=${CC:-cc}
AGENT_CFLAGS=${PGB_AGENT_CFLAGS:-}
PREFIX=/opt/pgbroker-check      # not the default: every path must follow PREFIX
WAIT_S=60                       # bound of every wait

ok() { printf 'ok    %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }
# show FILE: print a log after a failure.
show() { [ -s "$1" ] && sed 's/^/      | /' "$1" >&2; return 0; }

TMP=
PGDIR=
BROKER_PID=
CLEANED=0
cleanup() {
	[ "$CLEANED" -eq 1 ] && return
	CLEANED=1
	if [ -n "$BROKER_PID" ]; then
		kill -TERM "$BROKER_PID" 2>/dev/null || :
		wait_for 10 has_exited "$BROKER_PID" || kill -KILL "$BROKER_PID" 2>/dev/null || :
		wait "$BROKER_PID" 2>/dev/null || :
	fi
	if [ -n "$PGDIR" ]; then
		sh "$ROOT/tools/pgtmp.sh" stop "$PGDIR" ||
			echo "check-install.sh: could not stop PostgreSQL in $PGDIR" >&2
	fi
	if [ -n "$TMP" ]; then
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# has_exited PID: our child PID is gone or a zombie waiting to be reaped
# (kill -0 would still succeed on the zombie).
has_exited() {
	st=$(sed -n 's/^[0-9]* (.*) \(.\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 0
	[ -z "$st" ] || [ "$st" = Z ]
}

# wait_for SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds;
# status 1 when SECONDS pass first.
wait_for() {
	n=$(($1 * 10))
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.1
	done
}

# has_word TEXT WORD: WORD (an option such as -h or --once) stands alone in
# TEXT, not as part of a longer option.
has_word() {
	printf '%s\n' "$1" | grep -Eq -e "(^|[^-[:alnum:]_])$2([^-[:alnum:]_]|\$)"
}

# roff WORD: WORD as written in a man page source (every - as \-).
roff() { printf '%s' "$1" | sed 's/-/\\-/g'; }

# oneline TEXT: TEXT with each run of white space made one blank;
# nwords TEXT: how many words TEXT has.
oneline() { printf '%s\n' "$1" | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//'; }
nwords() { printf '%s\n' "$1" | wc -w; }

for tool in readelf nm pkg-config timeout stat find; do
	command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (binutils, pkg-config, coreutils)"
done

mkvar() { sed -n "s/^$1[[:space:]]*:=[[:space:]]*//p" "$ROOT/Makefile"; }
VERSION="$(mkvar VERSION_MAJOR).$(mkvar VERSION_MINOR).$(mkvar VERSION_PATCH)"
SONAME="libpgbroker.so.$(mkvar VERSION_MAJOR)"
SOFILE="$SONAME.$(mkvar VERSION_MINOR)"
case $VERSION in
[0-9]*.[0-9]*.[0-9]*) ;;
*) fail "cannot read VERSION_MAJOR/MINOR/PATCH from $ROOT/Makefile" ;;
esac
VNODE=$(sed -n 's/^\([A-Za-z0-9_]*\)[[:space:]]*{.*/\1/p' "$ROOT/client/libpgbroker.map" | head -n 1)

TMP=$(mktemp -d /tmp/pgb-install.XXXXXX) || fail "mktemp"
D=$TMP/destdir
P=$D$PREFIX
RUN=$TMP/run

# The broker's own settings must not leak in from this environment, and a
# service manager's notify socket is not ours to talk to.
for v in $(env | sed -n 's/^\(PGBROKER_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(POSTGRES_[A-Za-z0-9_]*\)=.*/\1/p'); do
	unset "$v"
done
unset NOTIFY_SOCKET

# --- install -------------------------------------------------------------

# Objects are rebuilt when make's flags change (.build-flags). Ask make, with
# a copy of the stamp, whether PGB_MAKE has the flags of the last build, and
# refuse before the install would rebuild the tree with others.
if [ -f "$ROOT/.build-flags" ]; then
	cp "$ROOT/.build-flags" "$TMP/flags"
	$MAKE_CMD -s -n -C "$ROOT" FLAGS_STAMP="$TMP/flags" all >/dev/null 2>&1 || :
	cmp -s "$ROOT/.build-flags" "$TMP/flags" ||
		fail "'$MAKE_CMD' would rebuild the tree with other flags than its last build; run this as make does (make check-install, with the same SANITIZE=...)"
	ok "$MAKE_CMD has the flags of the last build"
fi

$MAKE_CMD --no-print-directory -C "$ROOT" install DESTDIR="$D" PREFIX="$PREFIX" \
	>"$TMP/install.log" 2>&1 || { show "$TMP/install.log"; fail "make install"; }
ok "make install DESTDIR=$D PREFIX=$PREFIX"

# Every file with its mode; nothing else may be there.
FILES="755 bin/pgbroker
755 bin/poolstat
755 bin/poolbench
644 lib/libpgbroker.a
755 lib/$SOFILE
755 lib/pgbroker/libpq.so.5
644 include/pgbroker.h
644 lib/pkgconfig/libpgbroker.pc
644 share/man/man8/pgbroker.8
644 share/man/man1/poolstat.1
644 share/man/man1/poolbench.1
644 share/man/man3/libpgbroker.3
644 share/doc/pgbroker/pgbroker.conf.example
644 lib/systemd/system/pgbroker.service
644 lib/sysusers.d/pgbroker.conf"
printf '%s\n' "$FILES" | while read -r mode f; do
	[ -f "$P/$f" ] && [ ! -L "$P/$f" ] || fail "not installed: $PREFIX/$f"
	m=$(stat -c %a "$P/$f")
	[ "$m" = "$mode" ] || fail "$PREFIX/$f has mode $m, not $mode"
done || exit 1
{
	printf '%s\n' "$FILES" | sed "s|^[0-7]* |$PREFIX/|"
	printf '%s\n' "$PREFIX/lib/$SONAME" "$PREFIX/lib/libpgbroker.so"
} | sort >"$TMP/expected"
(cd "$D" && find . ! -type d | sed 's|^\.||' | sort) >"$TMP/installed"
diff "$TMP/expected" "$TMP/installed" >"$TMP/diff" ||
	{ show "$TMP/diff"; fail "make install put down other files than expected"; }
ok "$(wc -l <"$TMP/expected") files with their modes, nothing else"

l1=$(readlink "$P/lib/libpgbroker.so") || l1=
l2=$(readlink "$P/lib/$SONAME") || l2=
[ "$l1" = "$SONAME" ] || fail "lib/libpgbroker.so -> '$l1', not $SONAME"
[ "$l2" = "$SOFILE" ] || fail "lib/$SONAME -> '$l2', not $SOFILE"
so=$(readelf -d "$P/lib/$SOFILE" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$so" = "$SONAME" ] || fail "SONAME of $SOFILE is '$so', not $SONAME"
ok "libpgbroker.so -> $SONAME -> $SOFILE, SONAME $SONAME"

# The drop-in libpq in its own directory, never the system's libpq.
so=$(readelf -d "$P/lib/pgbroker/libpq.so.5" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$so" = "libpq.so.5" ] || fail "SONAME of lib/pgbroker/libpq.so.5 is '$so', not libpq.so.5"
[ ! -e "$P/lib/libpq.so.5" ] || fail "make install put a libpq.so.5 in lib/ itself"
nm -D --defined-only "$P/lib/pgbroker/libpq.so.5" | awk '$NF ~ /^pgb_/' >"$TMP/nm"
[ ! -s "$TMP/nm" ] || fail "lib/pgbroker/libpq.so.5 exports pgb_ symbols: $(oneline "$(cat "$TMP/nm")")"
ok "lib/pgbroker/libpq.so.5: SONAME libpq.so.5, beside (not over) the system's libpq"

# --- the library's interface ---------------------------------------------

nm -D --defined-only "$P/lib/$SOFILE" >"$TMP/nm" || fail "nm -D $SOFILE"
bad=$(awk -v node="$VNODE" '{ n = $NF; v = n; sub(/@.*/, "", n); sub(/^[^@]*@+/, "", v)
	if (n == node) next
	if (n !~ /^pgb_/ || v != node) print $NF }' "$TMP/nm")
[ -z "$bad" ] || fail "$SOFILE exports more than pgb_*@@$VNODE: $(oneline "$bad")"
awk '{ n = $NF; sub(/@.*/, "", n); if (n ~ /^pgb_/) print n }' "$TMP/nm" | sort -u >"$TMP/exported"
grep -o 'pgb_[a-z0-9_]*(' "$P/include/pgbroker.h" | tr -d '(' | sort -u >"$TMP/declared"
diff "$TMP/declared" "$TMP/exported" >"$TMP/diff" ||
	{ show "$TMP/diff"; fail "the exports of $SOFILE differ from the functions pgbroker.h declares (< declared, > exported)"; }
ok "$SOFILE exports only pgb_* ($(wc -l <"$TMP/exported") functions, version $VNODE), every one pgbroker.h declares"
# The archive too: its internals are local, so they cannot clash with an
# agent's own symbols.
nm -g --defined-only "$P/lib/libpgbroker.a" | awk 'NF == 3 { print $3 }' | sort -u >"$TMP/a_defined"
bad=$(grep -v '^pgb_' "$TMP/a_defined" || :)
[ -z "$bad" ] || fail "libpgbroker.a defines more than pgb_*: $(oneline "$bad")"
diff "$TMP/declared" "$TMP/a_defined" >"$TMP/diff" ||
	{ show "$TMP/diff"; fail "libpgbroker.a defines other pgb_ functions than pgbroker.h declares"; }
ok "libpgbroker.a defines only pgb_* ($(wc -l <"$TMP/a_defined") functions)"

pc_file=$P/lib/pkgconfig/libpgbroker.pc
for want in "prefix=$PREFIX" "libdir=$PREFIX/lib" "includedir=$PREFIX/include" "Version: $VERSION"; do
	grep -qx -- "$want" "$pc_file" || fail "libpgbroker.pc lacks the line '$want'"
done
# The client never talks to PostgreSQL itself: no libpq in Libs.private.
# (The static agent below shows that Libs.private is enough.)
pq=$(nm -u "$P/lib/libpgbroker.a" | awk 'NF == 2 && $2 ~ /^PQ/ { print $2 }' | sort -u)
[ -z "$pq" ] || fail "libpgbroker.a needs libpq: $(oneline "$pq")"
ok "libpgbroker.pc: prefix $PREFIX, Version $VERSION, Libs.private $(sed -n 's/^Libs.private: *//p' "$pc_file")"

# --- documentation, configuration, unit ----------------------------------

MAN="$P/share/man/man8/pgbroker.8 $P/share/man/man1/poolstat.1 $P/share/man/man1/poolbench.1 $P/share/man/man3/libpgbroker.3"
for m in $MAN; do
	if grep -q '@[A-Z_]*@' "$m"; then
		fail "$m: template variables left: $(grep -o '@[A-Z_]*@' "$m" | sort -u | tr '\n' ' ')"
	fi
	grep -q "^\.TH .*\"pgbroker $VERSION\"" "$m" || fail "$m: .TH does not name pgbroker $VERSION"
done
if command -v groff >/dev/null 2>&1; then
	for m in $MAN; do
		groff -man -ww -z "$m" >"$TMP/groff" 2>&1 || { show "$TMP/groff"; fail "groff -man $m"; }
		[ ! -s "$TMP/groff" ] || { show "$TMP/groff"; fail "groff -man -ww warns on $m"; }
	done
	ok "man pages render without warnings (groff -man -ww)"
else
	skip "man pages not rendered: groff is not installed (apt-get install groff-base)"
fi

# dir: root's default, the example's, whoever runs this.
"$P/bin/pgbroker" --dir /run/pgbroker --check-config >"$TMP/defaults" 2>"$TMP/err" ||
	{ show "$TMP/err"; fail "pgbroker --check-config with the defaults"; }
sed -n 's/^\([a-z_]*\) =.*/\1/p' "$TMP/defaults" >"$TMP/keys"
[ "$(wc -l <"$TMP/keys")" -ge 30 ] || fail "pgbroker --check-config printed only $(wc -l <"$TMP/keys") settings"
for k in shutdown_timeout_ms syslog; do
	grep -qx "$k" "$TMP/keys" || fail "pgbroker has no setting $k"
done

example=$P/share/doc/pgbroker/pgbroker.conf.example
sed -n 's/^#\([a-z_]*\) =.*/\1/p' "$example" | sort >"$TMP/example-keys"
sort "$TMP/keys" | diff - "$TMP/example-keys" >"$TMP/diff" ||
	{ show "$TMP/diff"; fail "pgbroker.conf.example does not list each setting once (< missing, > extra)"; }
# Uncommented, the example must give exactly the defaults.
sed 's/^#\([a-z_]* =\)/\1/' "$example" >"$TMP/example.conf"
"$P/bin/pgbroker" --config "$TMP/example.conf" --check-config >"$TMP/example-out" 2>"$TMP/err" ||
	{ show "$TMP/err"; fail "pgbroker refuses the uncommented pgbroker.conf.example"; }
grep -v '^# config file:' "$TMP/example-out" | diff "$TMP/defaults" - >"$TMP/diff" ||
	{ show "$TMP/diff"; fail "pgbroker.conf.example: a value is not the default (< default, > example)"; }
ok "pgbroker.conf.example: all $(wc -l <"$TMP/keys") settings with their defaults, accepted by --check-config"

unit=$P/lib/systemd/system/pgbroker.service
# Type=notify only for a broker that calls sd_notify, else systemd would wait
# for a readiness message that never comes.
if nm -D --undefined-only "$P/bin/pgbroker" | grep -q ' sd_notify'; then type=notify; else type=simple; fi
shutdown_ms=$(sed -n 's/^shutdown_timeout_ms = //p' "$TMP/defaults")
max_agents=$("$P/bin/pgbroker" --help | sed -n '/^ *--max-agents /{n;s/.*\.\.\([0-9]*\)\].*/\1/p;}')
[ -n "$max_agents" ] || fail "pgbroker --help: no upper bound for --max-agents"
for want in "Type=$type" \
	"ExecStart=$PREFIX/bin/pgbroker --config /etc/pgbroker/pgbroker.conf --dir /run/pgbroker" \
	"ExecReload=/bin/kill -HUP \$MAINPID" "KillSignal=SIGTERM" "RuntimeDirectory=pgbroker" \
	"NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes"; do
	grep -qxF -- "$want" "$unit" || fail "pgbroker.service lacks the line '$want'"
done
grep -Eqx 'User=[a-z_][a-z0-9_-]*|DynamicUser=yes' "$unit" || fail "pgbroker.service runs as root"
# The broker refuses a run directory that group or others may write to.
rmode=$(sed -n 's/^RuntimeDirectoryMode=\([0-7]*\)$/\1/p' "$unit")
[ -n "$rmode" ] && [ $((0$rmode & 022)) -eq 0 ] ||
	fail "pgbroker.service: RuntimeDirectoryMode='$rmode' lets group or others write the run directory, which pgbroker refuses"
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$unit")
if [ -z "$stop_s" ] || [ "$((stop_s * 1000))" -le "$shutdown_ms" ]; then
	fail "pgbroker.service: TimeoutStopSec='$stop_s' must exceed shutdown_timeout_ms ($shutdown_ms ms)"
fi
nofile=$(sed -n 's/^LimitNOFILE=\([0-9]*\)$/\1/p' "$unit")
if [ -z "$nofile" ] || [ "$nofile" -lt "$((2 * max_agents))" ]; then
	fail "pgbroker.service: LimitNOFILE='$nofile' is below 2 x max_agents (up to $max_agents)"
fi
ok "pgbroker.service: Type=$type, ExecStart in $PREFIX/bin, TimeoutStopSec=$stop_s, LimitNOFILE=$nofile, RuntimeDirectoryMode=$rmode, sandboxed"
if command -v systemd-analyze >/dev/null 2>&1; then
	# verify wants ExecStart to exist: point it into DESTDIR.
	sed "s|^ExecStart=$PREFIX/|ExecStart=$P/|" "$unit" >"$TMP/pgbroker.service"
	systemd-analyze verify --man=no "$TMP/pgbroker.service" >"$TMP/verify" 2>&1 || :
	[ ! -s "$TMP/verify" ] || { show "$TMP/verify"; fail "systemd-analyze verify pgbroker.service"; }
	ok "systemd-analyze verify pgbroker.service"
else
	skip "systemd-analyze is not installed: pgbroker.service not verified"
fi

# --- --version and --help ------------------------------------------------

for prog in pgbroker poolstat poolbench; do
	case $prog in
	pgbroker) want="pgbroker $VERSION" ;;
	*) want="$prog (pgbroker) $VERSION" ;;
	esac
	# PGBROKER_DIR: should --version ever start a broker, not on /tmp/pgbroker.
	got=$(PGBROKER_DIR="$TMP/version" timeout 10 "$P/bin/$prog" --version 2>"$TMP/err") || got=
	[ "$got" = "$want" ] || { show "$TMP/err"; fail "$prog --version printed '$got', not '$want'"; }
done
ok "--version: pgbroker $VERSION, poolstat (pgbroker) $VERSION, poolbench (pgbroker) $VERSION"

# The flags each program accepts, from its own parser: pgbroker's settings
# and commands, poolstat's strcmp list, poolbench's getopt table.
help=$("$P/bin/pgbroker" --help) || fail "pgbroker --help"
flags="--config --check-config --ready-fd -h --help -V --version $(sed 's/_/-/g; s/^/--/' "$TMP/keys")"
for f in $flags; do
	has_word "$help" "$f" || fail "pgbroker --help does not list $f"
done
n_broker=$(nwords "$flags")
envs=$(printf '%s\n' "$help" | sed -n 's/^  --.* \([A-Z][A-Z0-9_]*\)=.*/\1/p')
[ "$(nwords "$envs")" -eq "$(wc -l <"$TMP/keys")" ] ||
	fail "pgbroker --help names $(nwords "$envs") environment variables for $(wc -l <"$TMP/keys") settings"
while read -r k; do
	grep -q "^\.B $k\$" "$P/share/man/man8/pgbroker.8" || fail "pgbroker(8) does not describe $k"
	grep -qF -- "$(roff "--$(printf '%s' "$k" | tr _ -)")" "$P/share/man/man8/pgbroker.8" ||
		fail "pgbroker(8) does not name the flag of $k"
done <"$TMP/keys"
for e in $envs; do
	grep -qw -- "$e" "$P/share/man/man8/pgbroker.8" || fail "pgbroker(8) does not name $e"
done

poolstat_flags=$(grep -o 'strcmp(argv\[i\], "-[-a-zA-Z]*")' "$ROOT/tools/poolstat.c" | sed 's/.*"\(.*\)")/\1/')
bench_flags="$(sed -n 's/^[[:space:]]*{ "\([a-z-]*\)", [a-z_]*_argument,.*/--\1/p' "$ROOT/tools/bench.c")
$(sed -n 's/.*getopt_long(argc, argv, "\([^"]*\)".*/\1/p' "$ROOT/tools/bench.c" | tr -d ':' | sed 's/./-& /g')"
# A parser rewritten beyond these patterns must not pass unnoticed.
[ "$(nwords "$poolstat_flags")" -ge 6 ] || fail "found only '$(oneline "$poolstat_flags")' in tools/poolstat.c"
[ "$(nwords "$bench_flags")" -ge 14 ] || fail "found only '$(oneline "$bench_flags")' in tools/bench.c"
for prog in poolstat poolbench; do
	if [ "$prog" = poolstat ]; then flags=$poolstat_flags; else flags=$bench_flags; fi
	help=$("$P/bin/$prog" --help) || fail "$prog --help"
	for f in $flags; do
		has_word "$help" "$f" || fail "$prog --help does not list $f"
		grep -qF -- "$(roff "$f")" "$P/share/man/man1/$prog.1" || fail "$prog(1) does not list $f"
	done
done
while read -r s; do
	grep -qw -- "$s" "$P/share/man/man3/libpgbroker.3" || fail "libpgbroker(3) does not describe $s"
done <"$TMP/exported"
ok "--help and man pages list every flag: pgbroker $n_broker, poolstat $(nwords "$poolstat_flags"), poolbench $(nwords "$bench_flags"); libpgbroker(3) every function"

# --- agents built with pkg-config only -----------------------------------

if [ -z "$AGENT_CFLAGS" ] && readelf -d "$P/bin/pgbroker" | grep -q 'NEEDED.*lib\(a\|ub\)san'; then
	fail "the tree is a sanitizer build: set PGB_AGENT_CFLAGS=-fsanitize=... (make check-install SANITIZE=... does)"
fi
# pkg-config sees only the DESTDIR; set here, not exported, so that make's own
# pkg-config calls (libpq's flags) never see it.
pc() { PKG_CONFIG_PATH="$P/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D" pkg-config "$@"; }
pc --exists libpgbroker || fail "pkg-config does not find libpgbroker in $P/lib/pkgconfig"
[ "$(pc --modversion libpgbroker)" = "$VERSION" ] || fail "pkg-config --modversion libpgbroker is not $VERSION"
cflags=$(pc --cflags libpgbroker) || fail "pkg-config --cflags libpgbroker"
libs=$(pc --libs libpgbroker) || fail "pkg-config --libs libpgbroker"
# -lpgbroker would find the .so first: name the archive.
static_libs=$(pc --static --libs libpgbroker | sed 's/-lpgbroker\( \|$\)/-l:libpgbroker.a\1/')
# $CC, the flags and pkg-config's output are word lists: unquoted on purpose.
# shellcheck disable=SC2086
$CC $AGENT_CFLAGS -std=c99 -pedantic -Wall -Wextra -Werror -o "$TMP/agent-shared" \
	"$ROOT/tests/install/agent.c" $cflags $libs >"$TMP/cc.log" 2>&1 ||
	{ show "$TMP/cc.log"; fail "cc agent.c \$(pkg-config --cflags --libs libpgbroker)"; }
readelf -d "$TMP/agent-shared" | grep -q "NEEDED.*\[$SONAME\]" ||
	fail "the shared agent does not need $SONAME"
ok "shared agent built: $(oneline "$CC $AGENT_CFLAGS agent.c $cflags $libs")"
# shellcheck disable=SC2086
$CC $AGENT_CFLAGS -std=c99 -pedantic -Wall -Wextra -Werror -o "$TMP/agent-static" \
	"$ROOT/tests/install/agent.c" $cflags $static_libs >"$TMP/cc.log" 2>&1 ||
	{ show "$TMP/cc.log"; fail "cc agent.c \$(pkg-config --static --libs libpgbroker)"; }
if readelf -d "$TMP/agent-static" | grep -q 'NEEDED.*libpgbroker'; then
	fail "the static agent still needs libpgbroker.so"
fi
ok "static agent built: $(oneline "$CC $AGENT_CFLAGS agent.c $cflags $static_libs")"

# --- the installed broker on a throwaway PostgreSQL ----------------------

PGDIR=$(mktemp -d /tmp/pgb-pg.XXXXXX) || fail "mktemp"
chmod 755 "$PGDIR"
DSN=$(sh "$ROOT/tools/pgtmp.sh" start "$PGDIR") || fail "could not start PostgreSQL (tools/pgtmp.sh)"
ok "PostgreSQL: $DSN"

# The shipped example as the config file; --ready-fd writes into a plain
# file, so that a broker that dies at start is seen at once.
: >"$TMP/ready"
"$P/bin/pgbroker" --config "$example" --dir "$RUN" --dsn "$DSN" \
	--min-pool-size 1 --pool-size 2 --max-pool-size 2 --ready-fd 3 \
	3>"$TMP/ready" >"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
ready_or_gone() { grep -qx ready "$TMP/ready" || has_exited "$BROKER_PID"; }
wait_for "$WAIT_S" ready_or_gone || { show "$TMP/broker.log"; fail "pgbroker not ready within ${WAIT_S}s"; }
grep -qx ready "$TMP/ready" || { show "$TMP/broker.log"; fail "the installed pgbroker exited at start"; }
ok "installed pgbroker (pid $BROKER_PID) ready on $RUN"
rmode=$(stat -c %a "$RUN")
[ "$rmode" = 700 ] || fail "pgbroker made its run directory $RUN mode $rmode, not 700"
pmode=$(stat -c %a "$RUN/pgbroker.pid")
[ "$pmode" = 600 ] || fail "pgbroker's pid file has mode $pmode, not 600"
ok "run directory $RUN made mode 700, pid file 600"

LD_LIBRARY_PATH="$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
	timeout "$WAIT_S" "$TMP/agent-shared" "$RUN" >"$TMP/agent.out" 2>&1 ||
	{ show "$TMP/agent.out"; show "$TMP/broker.log"; fail "the shared agent"; }
ok "shared agent: $(cat "$TMP/agent.out")"
timeout "$WAIT_S" "$TMP/agent-static" "$RUN" >"$TMP/agent.out" 2>&1 ||
	{ show "$TMP/agent.out"; show "$TMP/broker.log"; fail "the static agent"; }
ok "static agent: $(cat "$TMP/agent.out")"

# Installed for real (no DESTDIR) into a prefix the dynamic linker does not
# search: the .pc file's rpath lets a pkg-config agent find the library
# without LD_LIBRARY_PATH. Into a system prefix, install runs ldconfig
# (checked on make's plan: this check changes nothing outside $TMP).
XP=$TMP/prefix
$MAKE_CMD --no-print-directory -C "$ROOT" install PREFIX="$XP" >"$TMP/install2.log" 2>&1 ||
	{ show "$TMP/install2.log"; fail "make install PREFIX=$XP"; }
xlibs=$(PKG_CONFIG_PATH="$XP/lib/pkgconfig" pkg-config --libs libpgbroker) ||
	fail "pkg-config --libs libpgbroker in $XP"
# shellcheck disable=SC2086
$CC $AGENT_CFLAGS -std=c99 -o "$TMP/agent-prefix" "$ROOT/tests/install/agent.c" \
	-I"$XP/include" $xlibs >"$TMP/cc.log" 2>&1 ||
	{ show "$TMP/cc.log"; fail "cc agent.c against PREFIX=$XP"; }
env -u LD_LIBRARY_PATH timeout "$WAIT_S" "$TMP/agent-prefix" "$RUN" >"$TMP/agent.out" 2>&1 ||
	{ show "$TMP/agent.out"; fail "an agent built against PREFIX=$XP does not run without LD_LIBRARY_PATH"; }
ok "PREFIX=$XP: the agent finds $SONAME by the .pc's rpath: $(cat "$TMP/agent.out")"
$MAKE_CMD --no-print-directory -C "$ROOT" uninstall PREFIX="$XP" >/dev/null 2>&1 ||
	fail "make uninstall PREFIX=$XP"
$MAKE_CMD --no-print-directory -s -n -C "$ROOT" install PREFIX=/usr/local 2>/dev/null |
	grep -q 'ldconfig' || fail "make install PREFIX=/usr/local would not run ldconfig"
if $MAKE_CMD --no-print-directory -s -n -C "$ROOT" install PREFIX=/usr/local DESTDIR="$TMP/d2" 2>/dev/null |
	grep -q 'ldconfig'; then
	fail "make install DESTDIR=... would run ldconfig"
fi
ok "make install PREFIX=/usr/local runs ldconfig; with a DESTDIR it does not"

rc=0
timeout 10 "$P/bin/poolstat" --once "$RUN" >"$TMP/poolstat.out" 2>&1 || rc=$?
# 0..2 health, 4 starting (no health sample yet), 3 no broker.
if [ "$rc" -eq 3 ] || [ "$rc" -gt 4 ] || ! grep -q "^pgbroker $RUN " "$TMP/poolstat.out"; then
	show "$TMP/poolstat.out"
	fail "installed poolstat --once $RUN (exit $rc)"
fi
ok "installed poolstat --once reads the broker (exit $rc)"

kill -TERM "$BROKER_PID"
wait_for "$WAIT_S" has_exited "$BROKER_PID" ||
	{ show "$TMP/broker.log"; fail "pgbroker still runs ${WAIT_S}s after SIGTERM"; }
rc=0
wait "$BROKER_PID" || rc=$?
BROKER_PID=
[ "$rc" -eq 0 ] || { show "$TMP/broker.log"; fail "pgbroker exited with status $rc after SIGTERM"; }
# It made the run directory, so it removes it; an empty one would do too.
if [ -d "$RUN" ]; then
	left=$(ls -A "$RUN")
	[ -z "$left" ] || fail "pgbroker left in its run directory: $(oneline "$left")"
fi
ok "SIGTERM: pgbroker exited 0 and left nothing in $RUN"

sh "$ROOT/tools/pgtmp.sh" stop "$PGDIR" || fail "could not stop PostgreSQL"
PGDIR=

# --- uninstall -----------------------------------------------------------

$MAKE_CMD --no-print-directory -C "$ROOT" uninstall DESTDIR="$D" PREFIX="$PREFIX" \
	>"$TMP/uninstall.log" 2>&1 || { show "$TMP/uninstall.log"; fail "make uninstall"; }
left=$(cd "$D" && find . ! -type d)
[ -z "$left" ] || fail "make uninstall left: $(oneline "$left")"
ok "make uninstall removed everything; only empty directories are left"
