#!/bin/sh
# Install the Debian packages pgbroker needs to build and test, if missing.
#   sh tools/deps.sh           build + test dependencies
#   sh tools/deps.sh --bench   also pgbouncer and postgresql-contrib (pgbench)
#   sh tools/deps.sh --fuzz    also clang and its libFuzzer runtime (make fuzz)
# Quiet when everything is already installed. As root it installs directly;
# otherwise through passwordless sudo, or it prints the command to run and
# exits 1.
set -u

# libpg-query-dev: PostgreSQL's parser for the broker's statement classifier;
# libprotobuf-c-dev: the headers of its parse-tree messages (the runtime is
# inside libpg_query).
PKGS="gcc make pkg-config liburing-dev libcriterion-dev libpq-dev postgresql tmux \
libpg-query-dev libprotobuf-c-dev python3-psycopg2"
# The npm package (client/node) builds a C++ addon. Debian's Node.js only
# where no node is installed: a node already here (e.g. a nodesource build,
# headers in /usr/include/node) is used as it is.
command -v g++ >/dev/null 2>&1 || PKGS="$PKGS g++"
if ! command -v node >/dev/null 2>&1; then
	PKGS="$PKGS nodejs npm libnode-dev"
elif ! command -v npm >/dev/null 2>&1; then
	PKGS="$PKGS npm"
fi

for arg in "$@"; do
	case $arg in
	--bench) PKGS="$PKGS pgbouncer postgresql-contrib" ;;
	--fuzz) PKGS="$PKGS clang libclang-rt-dev" ;;
	-h|--help)
		echo "usage: sh tools/deps.sh [--bench] [--fuzz]"
		exit 0 ;;
	*)
		echo "deps.sh: unknown argument: $arg (usage: sh tools/deps.sh [--bench] [--fuzz])" >&2
		exit 2 ;;
	esac
done

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "deps.sh: dpkg-query not found (not Debian/Ubuntu?); install these yourself: $PKGS" >&2
	exit 1
fi

missing=
for p in $PKGS; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || st=
	[ "$st" = "install ok installed" ] || missing="$missing $p"
done
missing=${missing# }
[ -z "$missing" ] && exit 0

INSTALL="apt-get install -y --no-install-recommends $missing"

if [ "$(id -u)" -eq 0 ]; then
	SUDO=
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
	SUDO="sudo"
else
	echo "deps.sh: missing packages: $missing" >&2
	echo "deps.sh: run as root (or with sudo):" >&2
	echo "  sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive $INSTALL"
	exit 1
fi

echo "deps.sh: installing: $missing" >&2

# Package lists are empty on a fresh image: update first. Otherwise try the
# install as is and update only if it fails (stale lists).
lists_empty=1
for f in /var/lib/apt/lists/*_Packages*; do
	[ -e "$f" ] && { lists_empty=0; break; }
done

apt_update() {
	$SUDO apt-get update -q >&2
}
apt_install() {
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends $missing >&2
}

if [ "$lists_empty" -eq 1 ]; then
	apt_update || { echo "deps.sh: apt-get update failed" >&2; exit 1; }
	apt_install || { echo "deps.sh: apt-get install failed: $missing" >&2; exit 1; }
elif ! apt_install; then
	echo "deps.sh: install failed; updating package lists and retrying" >&2
	apt_update || { echo "deps.sh: apt-get update failed" >&2; exit 1; }
	apt_install || { echo "deps.sh: apt-get install failed: $missing" >&2; exit 1; }
fi

# Verify.
still=
for p in $missing; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || st=
	[ "$st" = "install ok installed" ] || still="$still $p"
done
if [ -n "$still" ]; then
	echo "deps.sh: still not installed:$still" >&2
	exit 1
fi
exit 0
