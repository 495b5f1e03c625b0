#!/usr/bin/env bash
# conformance/node/node-test.sh (`make node-test`): proves crust on a real node, a Debian 12 VM booted under
# qemu (TCG: software emulation) with systemd as PID 1, the unified cgroup v2 hierarchy and AppArmor.
#
#   1. builds on the host (never in the slow guest): the release binaries (`make build`), the node test
#      binary (tests/node_systemd.rs) and crust-test-images; the test images' busybox
#      (conformance/busybox.sh, cached); the last release point's binaries (conformance/upgrade-from.sh,
#      cached); three packages: this build's (deploy/deb.sh), the same as a higher version, and the last
#      release point's binaries in this build's package as a lower version;
#   2. builds or reuses the node image (conformance/node/image.sh, cached under /var/cache/crust-node-test);
#   3. boots it from a fresh overlay (the cached image is never written) with no network device, sharing
#      over 9p the repository (read-only), the binaries and packages (and critest and crictl when on
#      PATH), the busybox, and a results dir;
#   4. inside, conformance/node/run-inside.sh installs crust from its package (apt-get, offline), runs the
#      node tests and critest against the service; the serial console streams here and to
#      $RESULTS/console.log; then it reboots the node with pods running (conformance/node/steps/reboot.sh):
#      qemu ends (-no-reboot) and is started again on the same overlay, where the runner checks what the
#      reboot left, and then runs the package's upgrade, remove and purge scenarios (steps/package.sh);
#   5. prints the guest's summary line `node-test: N passed, M failed`, the boot and total times.
#
# Exit status: 0 when the summary shows no failure; 1 on a failure, a missing summary or the timeout
# ($NODE_TEST_TIMEOUT seconds of VM run from the first boot, default 2700, the host builds before it not
# counted: qemu is killed by its PID); 2 when it cannot run here.
# `node-test.sh --check` only says whether this machine can run it (exit 0) or why not (exit 2), and
# `node-test.sh --deps` installs qemu and debootstrap (bookworm-backports) when missing.
# Environment: NODE_TEST_TIMEOUT, NODE_TEST_MEM (MiB, 2048), NODE_TEST_CPUS (2),
# CRUST_NODE_CACHE (image cache), CRUST_NODE_CRITEST=0 (do not run critest), NODE_TEST_VERBOSE=1
# (boot messages on the console), NODE_TEST_FILTER (only the node tests whose names hold it; the reboot
# is then left out unless NODE_TEST_REBOOT=1), NODE_TEST_REBOOT=0 (no reboot), NODE_TEST_PACKAGES=0 (not
# the package's upgrade, remove and purge scenarios),
# CRUST_NODE_CRITEST_ARGS (arguments for critest.sh inside), CRUST_NODE_CRITEST_DIR (the directory the
# critest and crictl shared in come from instead of PATH, e.g. /var/cache/crust-critest/v1.36.0),
# NODE_KERNEL (which of the image's kernels boots: `backports`, the default, bookworm-backports' 6.12,
# where pods with user namespaces work and Debian's CRIU does not; `6.1`, bookworm's stock kernel, where
# user namespaces are refused and checkpoint/restore works).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
TIMEOUT=${NODE_TEST_TIMEOUT:-2700}
MEM=${NODE_TEST_MEM:-2048}
CPUS=${NODE_TEST_CPUS:-2}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BACKPORTS_LIST=/etc/apt/sources.list.d/crust-backports.sources
T0=$(date +%s)

say() { echo "node-test.sh: $*"; }
cannot() { say "cannot run the node test here: $*"; exit 2; }

# Whether this machine can boot the node: why not on stdout, status 1 when it cannot.
why_not() {
    [ "$(id -u)" = 0 ] || { echo "it needs root (debootstrap, the image cache)"; return 1; }
    [ "$(uname -m)" = x86_64 ] || { echo "the node image is amd64 and the host is $(uname -m)"; return 1; }
    command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 is not installed (node-test.sh --deps)"; return 1; }
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (node-test.sh --deps)"; return 1; }
    command -v qemu-img >/dev/null || { echo "qemu-img is not installed (node-test.sh --deps)"; return 1; }
    qemu-system-x86_64 -device help 2>/dev/null | grep -q virtio-9p || { echo "this qemu has no virtio-9p (virtfs)"; return 1; }
    local free
    free=$(df -Pm "${CRUST_NODE_CACHE:-/var/cache}" 2>/dev/null | awk 'NR == 2 { print $4 }')
    [ "${free:-0}" -ge 4096 ] || { echo "less than 4 GiB free for the image build"; return 1; }
    awk '/MemAvailable/ { exit !($2 >= ('"$MEM"' + 512) * 1024) }' /proc/meminfo ||
        { echo "less than $((MEM + 512)) MiB of memory available for the VM"; return 1; }
    return 0
}

# Installs qemu-system-x86, qemu-utils and debootstrap from bookworm-backports (the host's qemu-utils may
# already come from there), adding the backports suite to apt's sources when it is missing.
deps() {
    if command -v qemu-system-x86_64 >/dev/null && command -v debootstrap >/dev/null && command -v qemu-img >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || cannot "installing qemu needs root"
    . /etc/os-release
    [ "${VERSION_CODENAME:-}" = bookworm ] || cannot "installing qemu is done for Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}"
    if ! grep -Rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        local uri=http://deb.debian.org/debian
        cat >"$BACKPORTS_LIST" <<EOF
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        say "added $BACKPORTS_LIST (bookworm-backports)"
    fi
    say "installing qemu-system-x86, qemu-utils and debootstrap from bookworm-backports"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports --no-install-recommends \
        qemu-system-x86 qemu-utils debootstrap >/dev/null
}

case ${1:-} in
    --check)
        if reason=$(why_not); then say "this machine can run the node test"; exit 0; fi
        say "this machine cannot run the node test: $reason"
        exit 2
        ;;
    --deps) deps; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--check | --deps]" >&2; exit 2 ;;
esac
reason=$(why_not) || cannot "$reason"

# ---- host builds ---------------------------------------------------------------------------------------
# The last release point's binaries (built once into a cache outside the repository).
OLD_BIN=$(conformance/upgrade-from.sh) || { say "conformance/upgrade-from.sh failed: no package of the last release point"; OLD_BIN=""; }
say "building the release binaries, the node tests and crust-test-images on the host"
make --no-print-directory build
nice cargo build -q --release -p crust-conformance --bin crust-test-images
NODE_TESTS=$(nice cargo test --release --no-run -p crust-conformance --test node_systemd --message-format=json-render-diagnostics |
    grep '"name":"node_systemd"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$NODE_TESTS" ] && [ -x "$NODE_TESTS" ] || { say "the node test binary was not built"; exit 1; }
BUSYBOX=$(conformance/busybox.sh) || { say "conformance/busybox.sh could not build the test images' busybox"; exit 1; }
IMAGE=$(conformance/node/image.sh) || { say "the node image could not be built"; exit 1; }

# ---- the packages (conformance/node/steps/package.sh) ------------------------------------------------------
# current: `make deb`'s package of this build (version V); upgrade: the same build as version V+upgrade1
# (only the version differs); old: the current package's files with the last release point's binaries
# and crust.toml, versioned as deb.sh versions that commit (lower than V).
DEBS=$TARGET/node-debs
rm -rf "$DEBS"
# cargo-deb makes them (as `make deb` does, installed when missing: a fresh machine has none).
command -v cargo-deb >/dev/null || nice cargo install --locked -q cargo-deb
CURRENT_DEB=$(deploy/deb.sh --fast --output "$DEBS/current" | tail -n 1)
V=$(dpkg-deb --field "$CURRENT_DEB" Version)
DEB_VERSION="${V%-*}+upgrade1-${V##*-}" deploy/deb.sh --fast --output "$DEBS/upgrade" >/dev/null
# repack DEB BINDIR OUTDIR: DEB with BINDIR's binaries and crust.toml, as the version of BINDIR's commit.
repack() {
    local w commit when v
    w=$(mktemp -d)
    dpkg-deb -R "$1" "$w/pkg"
    for b in crustd crust-monitor crustctl crust-pause; do install -m 0755 "$2/$b" "$w/pkg/usr/bin/$b"; done
    install -m 0600 "$2/crust.toml" "$w/pkg/etc/crust/crust.toml"
    commit=$(cat "$2/commit")
    when=$(git log -1 --format=%ct "$commit")
    v="$(git show "$commit:Cargo.toml" | sed -n 's/^version = "\(.*\)"$/\1/p' | head -n 1)+git$(date -u -d "@$when" +%Y%m%d%H%M%S).$commit-1"
    dpkg --compare-versions "$v" lt "$V" || { say "the last release point's version $v is not lower than $V"; return 1; }
    sed -i "s/^Version: .*/Version: $v/" "$w/pkg/DEBIAN/control"
    if [ -e "$w/pkg/DEBIAN/md5sums" ]; then
        (cd "$w/pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$w/pkg/DEBIAN/md5sums"
    fi
    mkdir -p "$3"
    dpkg-deb -Zgzip -b "$w/pkg" "$3/crust_${v}_amd64.deb" >/dev/null
    rm -rf "$w"
}
[ -z "$OLD_BIN" ] || repack "$CURRENT_DEB" "$OLD_BIN" "$DEBS/old" || say "no package of the last release point"
for d in "$DEBS"/*/crust_*.deb; do say "package for the node: ${d#"$REPO"/}"; done

# ---- the run's directories -------------------------------------------------------------------------------
RESULTS=$REPO/conformance/results/node-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RESULTS"
RUN=$(mktemp -d /tmp/crust-node-test.XXXXXX)
QEMU_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null
        sleep 2
        kill -KILL "$QEMU_PID" 2>/dev/null || true
    fi
    rm -rf "$RUN"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$RUN/bin" "$RUN/testimages"
for b in crustd crust-monitor crustctl crust-pause crust-test-images; do
    cp "$TARGET/release/$b" "$RUN/bin/$b"
done
cp "$NODE_TESTS" "$RUN/bin/node_systemd"
cp "$BUSYBOX" "$RUN/testimages/busybox"
cp -r "$DEBS" "$RUN/bin/debs"
# crictl always (the demonstration pod, the package scenarios); critest unless CRUST_NODE_CRITEST=0; from
# CRUST_NODE_CRITEST_DIR when set, else from PATH.
TOOLS=crictl
[ "${CRUST_NODE_CRITEST:-1}" = 0 ] || TOOLS="critest crictl"
for t in $TOOLS; do
    if [ -n "${CRUST_NODE_CRITEST_DIR:-}" ]; then
        p="$CRUST_NODE_CRITEST_DIR/$t"
        [ -x "$p" ] || { say "CRUST_NODE_CRITEST_DIR has no $t ($p)"; exit 2; }
    elif ! p=$(command -v $t); then
        continue
    fi
    cp "$p" "$RUN/bin/$t"
    say "sharing $p into the node"
done
case ${NODE_KERNEL:-backports} in
    backports) KERNEL=$IMAGE/vmlinuz INITRD=$IMAGE/initrd.img ;;
    6.1) KERNEL=$IMAGE/vmlinuz-6.1 INITRD=$IMAGE/initrd.img-6.1 ;;
    *) say "NODE_KERNEL must be backports or 6.1, not ${NODE_KERNEL}"; exit 2 ;;
esac
qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE/disk.qcow2" "$RUN/overlay.qcow2"
# What the runner inside reads of this run's settings (it sources the file).
{
    printf 'NODE_TEST_FILTER=%q\n' "${NODE_TEST_FILTER:-}"
    printf 'CRUST_NODE_CRITEST_ARGS=%q\n' "${CRUST_NODE_CRITEST_ARGS:-}"
    printf 'NODE_TEST_REBOOT=%q\n' "${NODE_TEST_REBOOT:-}"
    printf 'NODE_TEST_PACKAGES=%q\n' "${NODE_TEST_PACKAGES:-}"
} >"$RESULTS/settings"

# ---- boot ------------------------------------------------------------------------------------------------
# NODE_TEST_VERBOSE=1: the kernel's and systemd's boot messages on the console too.
QUIET="quiet loglevel=3 systemd.show_status=false"
[ "${NODE_TEST_VERBOSE:-0}" = 0 ] || QUIET=""
share() { echo "-virtfs local,path=$1,mount_tag=$2,security_model=none${3:+,readonly=on}"; }
# shellcheck disable=SC2046 # share prints words on purpose
set -- qemu-system-x86_64 -accel tcg,thread=multi -cpu max,-svm,-vmx -m "$MEM" -smp "$CPUS" \
    -nographic -nic none -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "root=/dev/vda rw console=ttyS0 apparmor=1 security=apparmor $QUIET" \
    -drive "file=$RUN/overlay.qcow2,if=virtio,format=qcow2" \
    $(share "$REPO" repo ro) $(share "$RUN/bin" bin ro) $(share "$RUN/testimages" testimages ro) \
    $(share "$RESULTS" results)
say "booting the node (image $IMAGE, kernel ${KERNEL##*/}, TCG, ${CPUS} CPUs, ${MEM} MiB, no network device); console in $RESULTS/console.log"
BOOT0=$(date +%s)
BOOTED=""
# -no-reboot: a guest that reboots (or panics into a reset) ends qemu, as a poweroff does. A reboot the
# runner asked for (conformance/node/steps/reboot.sh leaves $RESULTS/reboot/requested) boots the same
# overlay disk again, once: the node's second boot, as after a power cycle.
BOOTS=0
while :; do
    BOOTS=$((BOOTS + 1))
    "$@" </dev/null > >(sed -u 's/\r$//' | tee -a "$RESULTS/console.log") 2>&1 &
    QEMU_PID=$!
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        if [ -z "$BOOTED" ] && grep -aq 'node: runner started' "$RESULTS/console.log" 2>/dev/null; then
            BOOTED=$(($(date +%s) - BOOT0))
        fi
        if [ $(($(date +%s) - BOOT0)) -ge "$TIMEOUT" ]; then
            say "timed out after $TIMEOUT s: stopping qemu (PID $QEMU_PID)"
            kill -TERM "$QEMU_PID" 2>/dev/null
            sleep 2
            kill -KILL "$QEMU_PID" 2>/dev/null || true
            break
        fi
        sleep 1
    done
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=""
    if [ "$BOOTS" = 1 ] && [ -e "$RESULTS/reboot/requested" ] && [ $(($(date +%s) - BOOT0)) -lt "$TIMEOUT" ]; then
        mv "$RESULTS/reboot/requested" "$RESULTS/reboot/rebooted"
        say "the node rebooted (as its runner asked): booting it again from the same disk"
        continue
    fi
    break
done
sleep 0.5 # the console's last lines through tee
VM_TIME=$(($(date +%s) - BOOT0))
TOTAL=$(($(date +%s) - T0))
SUMMARY=$(grep -aoE 'node-test: [0-9]+ passed, [0-9]+ failed' "$RESULTS/console.log" | tail -n 1 || true)
echo
say "boot to the runner: ${BOOTED:-?} s; VM run: $VM_TIME s; total (builds and image included): $TOTAL s"
say "results: $RESULTS (console.log, node-tests.log, critest/, crust.journal)"
# The start latencies measured inside (tests/node_systemd_parts/bench.rs: runc, crun and containerd).
grep -aoE 'node-bench: .*' "$RESULTS/console.log" | sed 's/\r$//' | tee "$RESULTS/node-bench.txt" || true
if [ -z "$SUMMARY" ]; then
    echo "node-test: no summary line from the node (see $RESULTS/console.log)"
    exit 1
fi
echo "$SUMMARY"
case $SUMMARY in
    *", 0 failed"*) exit 0 ;;
    *) exit 1 ;;
esac
