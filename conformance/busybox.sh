#!/usr/bin/env bash
# conformance/busybox.sh (`make test-images`): the busybox the test images and critest stand-ins are built
# from, like the upstream busybox images: a static busybox with upstream's default applet set (Debian's
# busybox-static lacks pgrep, pkill, ipcs, printenv and more that critest runs), built from Debian's
# source package with `make defconfig` + CONFIG_STATIC=y.
#
# Prints the path of the binary on stdout and nothing else there. It is built once per machine and
# recipe: the cache is $CRUST_TEST_IMAGES_CACHE (default /var/cache/crust-test-images), the binary
# busybox-<Debian version>-<first 12 hex digits of sha256 of this script>/busybox; editing this script
# makes a new one. The test harness finds it there by the same hash (or takes $CRUST_TEST_BUSYBOX).
#
# Building needs root, dpkg-dev and build-essential (`make deps`) and the Debian archive: when apt has no
# deb-src entry, one is added (/etc/apt/sources.list.d/crust-deb-src.sources, the URIs, suites and
# Signed-By of debian.sources with Types: deb-src) and the package lists are updated.
set -euo pipefail

CACHE=${CRUST_TEST_IMAGES_CACHE:-/var/cache/crust-test-images}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-12)
# Applets the conformance tests and the stand-ins (or critest, through them) run: the build must have them.
REQUIRED="sh ls cat echo sleep top id touch hostname netstat pidof ping brctl mount grep awk httpd
    pgrep pkill ipcs printenv kill ps wget nc env sed mkdir rm seq head tail wc"
SRC_LIST=/etc/apt/sources.list.d/crust-deb-src.sources

say() { echo "busybox.sh: $*" >&2; }
fail() { echo "busybox.sh: $*" >&2; exit 1; }

cached() {
    local f
    for f in "$CACHE"/busybox-*-"$HASH"/busybox; do
        if [ -x "$f" ]; then echo "$f"; return 0; fi
    done
    return 1
}

cached && exit 0

[ "$(id -u)" = 0 ] || fail "no busybox built for this recipe in $CACHE; building one needs root"
for tool in dpkg-source gcc make; do
    command -v "$tool" >/dev/null || fail "$tool is missing: install dpkg-dev and build-essential (make deps)"
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.busybox.lock"
flock 9
cached && exit 0 # built by another caller while this one waited

# ---- Debian's source package -------------------------------------------------------------------------
has_deb_src() {
    grep -Eqs '^[[:space:]]*Types:.*deb-src' /etc/apt/sources.list.d/*.sources ||
        grep -Eqs '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list
}
if ! has_deb_src; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$SRC_LIST.tmp"
    else
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
        cat >"$SRC_LIST.tmp" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    mv "$SRC_LIST.tmp" "$SRC_LIST"
    say "added $SRC_LIST (deb-src) for apt-get source"
fi
if [ -z "$(apt-cache showsrc busybox 2>/dev/null)" ]; then
    say "apt-get update (source package lists)"
    apt-get update -qq >&2 || fail "apt-get update failed"
fi

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
LOG=$WORK/build.log
# Each step's output goes to build.log (kept in the cache); its end is shown when a step fails.
try() { "$@" >>"$LOG" 2>&1 </dev/null; }
step() { try "$@" || { tail -n 40 "$LOG" >&2; fail "failed: $* (output above, the end of the build log)"; }; }
say "apt-get source busybox (in $WORK)"
# (Downloads as root: the sandbox user _apt cannot write to this root-only directory.)
if ! try apt-get source -o APT::Sandbox::User=root busybox; then
    say "apt-get source failed: apt-get update, then once more"
    apt-get update -qq >&2 || fail "apt-get update failed"
    step apt-get source -o APT::Sandbox::User=root busybox
fi
DSC=$(ls ./busybox_*.dsc)
VERSION=$(sed -n 's/^Version: //p' "$DSC")
VERSION=${VERSION#*:} # without the epoch
SRC=$(find . -maxdepth 1 -mindepth 1 -type d -name 'busybox-*' | head -n 1)
[ -n "$SRC" ] || fail "apt-get source left no busybox-* directory"

# ---- the build ---------------------------------------------------------------------------------------
cd "$SRC"
say "building busybox $VERSION: make defconfig, CONFIG_STATIC=y, make -j$(nproc)"
start=$(date +%s)
step make defconfig
# Static with glibc works: defconfig has USE_BB_PWD_GRP (busybox reads /etc/passwd and /etc/group itself,
# no NSS), and glibc >= 2.34 has the files and dns name services built in (getaddrinfo in a static binary).
sed -i -e 's/^# CONFIG_STATIC is not set$/CONFIG_STATIC=y/' .config
grep -qx 'CONFIG_STATIC=y' .config || fail "could not set CONFIG_STATIC=y"
step make oldconfig
step make -j"$(nproc)" busybox
say "built in $(($(date +%s) - start)) s"
./busybox --list >applets.txt || fail "the built busybox does not run"
missing=""
for a in $REQUIRED; do grep -qx "$a" applets.txt || missing="$missing $a"; done
[ -z "$missing" ] || fail "the built busybox lacks:$missing"
if readelf -l busybox | grep -q INTERP; then fail "busybox is dynamically linked"; fi

# ---- into the cache ----------------------------------------------------------------------------------
DEST=$CACHE/busybox-$VERSION-$HASH
STAGE=$WORK/out
mkdir -p "$STAGE"
install -m 0755 busybox "$STAGE/busybox"
cp .config "$STAGE/config"
cp applets.txt "$STAGE/applets.txt"
cp "$LOG" "$STAGE/build.log"
echo "busybox $VERSION (Debian source package), make defconfig + CONFIG_STATIC=y, recipe $SELF ($HASH)" \
    >"$STAGE/README"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
say "cached $DEST/busybox"
echo "$DEST/busybox"
