#!/bin/sh
# Check that the code blocks of README.md and docs/*.md work as written;
# `make test` runs it, `make check-docs` alone. Every fenced block carries a
# tag, and the tag says what is checked:
#
#   ```text    output, layouts, schemas: not checked
#   ```c       compiled with -Wall -Wextra -Werror against the tree's
#              pgbroker.h; a block with main() is also linked with
#              client/libpgbroker.a. A block whose first line is
#              "/* PATH: ..." with PATH a file of the tree must be that file.
#   ```sh      parsed (sh -n); each command line of pgbroker, poolstat or
#              poolbench may only use flags that program's --help lists.
#   ```js      JavaScript for the Node package: parsed (node --check) as the
#              body of an async function, so that it may await at its top.
#   ```sh run  as ```sh, and then all the "sh run" blocks of one file run,
#              in order, as one script (sh -eu) from the top of the tree,
#              within 120 s. A "# prints: TEXT" comment is checked: TEXT
#              must be a line of the script's output. This is the README's
#              walk-through by hand.
#
# Needs the tree built (make all). One line per check; exits 1 at the first
# failure. Environment (the Makefile sets both): CC, and PGB_AGENT_CFLAGS
# (a sanitizer build's -fsanitize=..., added to every compile; the
# walk-through's own `cc` gets it through a wrapper first in PATH).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
CC=${CC:-cc}
AGENT_CFLAGS=${PGB_AGENT_CFLAGS:-}
RUN_S=120

ok() { printf 'ok    %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }
show() { [ -s "$1" ] && head -n 60 "$1" | sed 's/^/      | /' >&2; return 0; }

cd "$ROOT"
for b in broker/pgbroker tools/poolstat tools/poolbench client/libpgbroker.a; do
	[ -e "$b" ] || fail "$b is not built; run: make"
done

TMP=
CLEANED=0
# The walk-through makes its directories under $TMP/walk (TMPDIR): a broker
# or a PostgreSQL it left after a failure is stopped here.
cleanup() {
	[ "$CLEANED" -eq 1 ] && return
	CLEANED=1
	[ -n "$TMP" ] || return 0
	for p in "$TMP"/walk/*/run/pgbroker.pid; do
		[ -f "$p" ] || continue
		pid=$(cat "$p" 2>/dev/null) || pid=
		case $pid in '' | *[!0-9]*) continue ;; esac
		kill -INT "$pid" 2>/dev/null || :
	done
	for d in "$TMP"/walk/*/pg; do
		[ -d "$d" ] || continue
		sh "$ROOT/tools/pgtmp.sh" stop "$d" >/dev/null 2>&1 ||
			echo "check-docs.sh: could not stop PostgreSQL in $d" >&2
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

TMP=$(mktemp -d /tmp/pgb-docs.XXXXXX) || fail "mktemp"
# As root the walk-through's PostgreSQL runs as postgres, below this directory.
chmod 755 "$TMP"
mkdir -m 755 "$TMP/walk" "$TMP/blocks" "$TMP/bin"

FILES="README.md $(ls docs/*.md 2>/dev/null | sort | tr '\n' ' ')"

# Split every file into $TMP/blocks/NNN.TAG (TAG: text, c, sh, sh-run) with
# $TMP/blocks/NNN.where = "FILE:LINE"; an untagged or unknown fence, or an
# unclosed one, is an error.
for f in $FILES; do
	awk -v f="$f" -v dir="$TMP/blocks" -v start="$(ls "$TMP/blocks" | grep -c '\.where$' || :)" '
	BEGIN { n = start }
	/^```/ {
		if (!inblk) {
			tag = substr($0, 4); sub(/[ \t]+$/, "", tag)
			if (tag == "sh run") tag = "sh-run"
			if (tag != "text" && tag != "c" && tag != "sh" && tag != "sh-run" && tag != "js") {
				printf "%s:%d: code block tagged \"%s\": use text, c, js, sh or sh run\n", f, NR, tag > "/dev/stderr"
				bad = 1; exit 1
			}
			n++; inblk = 1; line = NR
			out = sprintf("%s/%03d.%s", dir, n, tag)
			printf "" > out
			printf "%s:%d\n", f, NR + 1 > sprintf("%s/%03d.where", dir, n)
			next
		}
		if ($0 == "```") { inblk = 0; close(out); next }
	}
	inblk { print > out }
	END {
		if (bad) exit 1
		if (inblk) { printf "%s:%d: code block never closed\n", f, line > "/dev/stderr"; exit 1 }
	}' "$f" || fail "$f: bad code block fence"
done
nblocks=$(ls "$TMP/blocks" | grep -c '\.where$' || :)
ok "$nblocks code blocks in $(printf '%s\n' $FILES | wc -l) files, each tagged text, c, js, sh or sh run"

# help PROGRAM: the --help text of the tree's program of that name.
help_of() {
	case $1 in
	pgbroker | */pgbroker) broker/pgbroker --help ;;
	poolstat | */poolstat) tools/poolstat --help ;;
	poolbench | */poolbench) tools/poolbench --help ;;
	esac
}

# --- C --------------------------------------------------------------------

nc=0
for blk in "$TMP"/blocks/*.c; do
	[ -e "$blk" ] || continue
	where=$(cat "${blk%.c}.where")
	first=$(head -n 1 "$blk")
	path=$(printf '%s\n' "$first" | sed -n 's|^/\* \([A-Za-z0-9_./-]*\): .*|\1|p')
	if [ -n "$path" ] && [ -f "$path" ]; then
		cmp -s "$blk" "$path" || { diff "$path" "$blk" >"$TMP/diff" || :; show "$TMP/diff"; \
			fail "$where: the block is not $path as it is (< file, > block)"; }
	fi
	# shellcheck disable=SC2086
	if grep -q '^int main(' "$blk"; then
		$CC $AGENT_CFLAGS -std=gnu11 -Wall -Wextra -Werror -Iclient -x c -o "$TMP/prog" "$blk" \
			-x none client/libpgbroker.a -lpthread >"$TMP/cc.log" 2>&1 ||
			{ show "$TMP/cc.log"; fail "$where: the C program does not build"; }
	else
		$CC $AGENT_CFLAGS -std=gnu11 -Wall -Wextra -Werror -Iclient -x c -c -o "$TMP/obj.o" "$blk" \
			>"$TMP/cc.log" 2>&1 ||
			{ show "$TMP/cc.log"; fail "$where: the C block does not compile"; }
	fi
	nc=$((nc + 1))
done
ok "$nc C blocks compile with -Wall -Wextra -Werror (programs link with libpgbroker.a)"

# --- JavaScript -----------------------------------------------------------

nj=0
for blk in "$TMP"/blocks/*.js; do
	[ -e "$blk" ] || continue
	where=$(cat "${blk%.js}.where")
	command -v node >/dev/null 2>&1 || fail "$where: a js block, and no node to check it (sh tools/deps.sh)"
	{ echo '(async () => {'; cat "$blk"; echo '})();'; } >"$TMP/block.cjs"
	node --check "$TMP/block.cjs" 2>"$TMP/js.log" || { show "$TMP/js.log"; fail "$where: node --check refuses the block"; }
	nj=$((nj + 1))
done
ok "$nj JavaScript blocks parse (node --check)"

# --- shell ----------------------------------------------------------------

ns=0
nflags=0
nfiles=0
for blk in "$TMP"/blocks/*.sh "$TMP"/blocks/*.sh-run; do
	[ -e "$blk" ] || continue
	where=$(cat "${blk%.*}.where")
	sh -n "$blk" 2>"$TMP/sh.log" || { show "$TMP/sh.log"; fail "$where: sh -n refuses the block"; }
	# Each command line (continuations joined) that runs one of our programs:
	# every --flag on it must be one that program's --help lists.
	sed -e ':a' -e '/\\$/{N;s/\\\n//;ba' -e '}' "$blk" | sed 's/#.*//' >"$TMP/lines"
	while read -r prog rest; do
		case $prog in
		pgbroker | broker/pgbroker | poolstat | tools/poolstat | poolbench | tools/poolbench) ;;
		*) continue ;;
		esac
		h=$(help_of "$prog")
		for w in $rest; do
			case $w in
			--*) flag=${w%%=*} ;;
			*) continue ;;
			esac
			printf '%s\n' "$h" | grep -Eq -e "(^|[^-[:alnum:]_])$flag([^-[:alnum:]_]|\$)" ||
				fail "$where: $prog --help does not list $flag"
			nflags=$((nflags + 1))
		done
	done <"$TMP/lines"
	# A file of an installed pgbroker (/usr/local/..., make install's default
	# PREFIX) must be one that make install puts there: one of the files
	# tools/check-install.sh checks after a real install.
	for w in $(grep -o '/usr/local/[A-Za-z0-9_./-]*' "$blk" || :); do
		rel=${w#/usr/local/}
		case $rel in */) continue ;; esac
		grep -Eq "^[0-7]+ $rel\$|^$rel\$|\"[0-7]+ $rel\$" tools/check-install.sh ||
			fail "$where: make install does not install $w"
		nfiles=$((nfiles + 1))
	done
	ns=$((ns + 1))
done
ok "$ns shell blocks parse; the $nflags flags they give pgbroker, poolstat and poolbench exist, and the $nfiles installed files they name"

# --- poolstat's outputs are all documented --------------------------------

doc=docs/poolstat.md
metrics=$(sed -n 's/.*\(GAUGE\|COUNTER\|PROM\)("\([a-z_0-9]*\)".*/\2/p' tools/poolstat.c | sort -u)
keys=$(grep -o '\\"[a-z_0-9]*\\":' tools/poolstat.c | tr -d '\\":' | sort -u)
# Patterns rewritten beyond these must not pass unnoticed.
[ "$(printf '%s\n' $metrics | wc -l)" -ge 20 ] || fail "found only $(printf '%s ' $metrics)metrics in tools/poolstat.c"
[ "$(printf '%s\n' $keys | wc -l)" -ge 60 ] || fail "found only $(printf '%s\n' $keys | wc -l) JSON keys in tools/poolstat.c"
for m in $metrics; do
	grep -Eq -- "pgbroker_$m([^a-z_0-9]|\$)" "$doc" || fail "$doc does not document the metric pgbroker_$m"
done
for k in $keys; do
	grep -qw -- "$k" "$doc" || fail "$doc: the --json schema lacks the key $k"
done
ok "$doc names all $(printf '%s\n' $metrics | wc -l) Prometheus metrics and $(printf '%s\n' $keys | wc -l) JSON keys of poolstat"

# --- the walk-throughs ("sh run") -------------------------------------------

if [ -n "$AGENT_CFLAGS" ]; then
	# A sanitizer build's archive needs the same -fsanitize at link time.
	real_cc=$(command -v "$CC") || fail "$CC not found"
	printf '#!/bin/sh\nexec %s %s "$@"\n' "$real_cc" "$AGENT_CFLAGS" >"$TMP/bin/cc"
	chmod 755 "$TMP/bin/cc"
fi
for f in $FILES; do
	: >"$TMP/script"
	for w in "$TMP"/blocks/*.where; do
		run="${w%.where}.sh-run"
		[ -e "$run" ] || continue
		case $(cat "$w") in "$f":*) cat "$run" >>"$TMP/script" ;; esac
	done
	[ -s "$TMP/script" ] || continue
	rc=0
	env TMPDIR="$TMP/walk" PATH="$TMP/bin:$PATH" timeout -k 10 "$RUN_S" sh -eu "$TMP/script" \
		>"$TMP/out" 2>&1 </dev/null || rc=$?
	[ "$rc" -eq 0 ] || { show "$TMP/out"; fail "$f: its \"sh run\" blocks failed (exit $rc)"; }
	sed -n 's/.*# prints: //p' "$TMP/script" >"$TMP/wants"
	while read -r want; do
		grep -qxF -- "$want" "$TMP/out" || { show "$TMP/out"; fail "$f: the walk-through did not print \"$want\""; }
	done <"$TMP/wants"
	left=$(ls -A "$TMP/walk")
	[ -z "$left" ] || fail "$f: the walk-through left $(printf '%s' "$left" | tr '\n' ' ') behind"
	ok "$f: its $(grep -c . "$TMP/script") walk-through lines ran, printing what they say"
done
