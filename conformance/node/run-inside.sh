#!/bin/bash
# conformance/node/run-inside.sh: the test node's side of `make node-test`, started at boot by the image's
# crust-node-test.service (conformance/node/image.sh) from the repository share, writing to the console.
#
# Shares (9p tags, mounted here): repo (this repository, read-only, already on /mnt/repo), bin (the host's
# release crustd, crust-monitor, crustctl, crust-pause, the node test binary `node_systemd`,
# crust-test-images, and critest and crictl when the host has them), testimages (the directory of the static
# busybox the test images are made of) and results (writable: logs for the host).
#
# Steps: a registry on 127.0.0.1:5000 (temporary storage) that crust mirrors every registry to (a drop-in
# in /etc/crust/crust.d); crust's package from the bin share installed with `apt-get install ./crust_*.deb`
# (`make install NOBUILD=1` of the host's binaries where no package is shared in); `systemctl enable --now crust`;
# the node tests (tests/node_systemd.rs) against the installed service; critest against its socket when
# shared in (conformance/critest.sh, CRUST_CRITEST_SOCKET); a demonstration pod (crictl) while
# `systemctl status crust` and the cgroup tree are printed; a reboot with pods running and, on the next
# boot, the checks of what it left (steps/reboot.sh); the package's upgrade, remove and purge scenarios
# (steps/package.sh); then one line `node-test: N passed, M failed` (both boots) and `systemctl poweroff`.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
REPO=/mnt/repo
BIN=/mnt/bin
RESULTS=/mnt/results
TESTIMAGES=/mnt/testimages
REGISTRY=http://127.0.0.1:5000
SOCK=/run/crust/crust.sock
PASSED=0
FAILED=0
FAILURES=()

say() { echo "node: $*"; }
pass() { PASSED=$((PASSED + 1)); say "ok: $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); say "FAILED: $1"; }
# check NAME COMMAND...: one counted step.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
finish() {
    say "journal of crust: $RESULTS/crust.journal"
    journalctl -u crust --no-pager -o short-precise >"$RESULTS/crust.journal" 2>&1
    if [ ${#FAILURES[@]} -gt 0 ]; then
        say "failed:"
        printf '  - %s\n' "${FAILURES[@]}"
    fi
    echo "node-test: $PASSED passed, $FAILED failed"
    sync
    systemctl poweroff
    exit 0
}

say "runner started at $(cut -d' ' -f1 /proc/uptime) s of uptime (multi-user.target reached)"
mkdir -p /mnt/bin /mnt/results /mnt/testimages
for share in bin:/mnt/bin:ro results:/mnt/results:rw testimages:/mnt/testimages:ro; do
    IFS=: read -r tag dir mode <<<"$share"
    if ! mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$mode" "$tag" "$dir"; then
        fail "mount the 9p share $tag"
        finish
    fi
done

# The host's settings for this run (node-test.sh writes them): NODE_TEST_FILTER, CRUST_NODE_CRITEST_ARGS.
NODE_TEST_FILTER=""
# shellcheck disable=SC1091
[ -r "$RESULTS/settings" ] && . "$RESULTS/settings"

# What the node looks like after a failure: processes, the cgroup tree, crust's units and journal.
diagnose() {
    say "diagnostics after a failure ($RESULTS/diagnostics.txt)"
    {
        echo "--- ps"; ps -eo pid,ppid,stat,wchan:32,cmd --forest
        echo "--- systemd-cgls"; systemd-cgls --no-pager
        echo "--- crust units"; systemctl list-units --all --no-pager 'crust*'
        echo "--- journal of crust"; journalctl -u crust --no-pager -o short-precise | tail -n 200
        for p in $(pgrep -x runc) $(pgrep -f 'runc init'); do
            echo "--- /proc/$p: $(tr '\0' ' ' </proc/$p/cmdline)"; cat /proc/$p/stack 2>/dev/null
            grep -E 'State|NSpid' /proc/$p/status; cat /proc/$p/cgroup
        done
        echo "--- dmesg"; dmesg | tail -n 60
    } >"$RESULTS/diagnostics.txt" 2>&1
}

# The reboot scenario (steps/reboot.sh): on the boot after the runner's reboot, only its checks.
# shellcheck disable=SC1091
. "$REPO/conformance/node/steps/reboot.sh"
if reboot_done; then reboot_after; finish; fi

# ---- the node --------------------------------------------------------------------------------------
say "kernel $(uname -r); PID 1 $(cat /proc/1/comm); $(systemctl --version | head -n 1)"
say "cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
say "AppArmor enabled: $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)"
check "the unified cgroup v2 hierarchy" test -e /sys/fs/cgroup/cgroup.controllers
check "AppArmor enabled" grep -qx Y /sys/module/apparmor/parameters/enabled
aa-status 2>&1 | head -n 3
sysctl -qw net.ipv4.ip_forward=1

# ---- install and start crust -----------------------------------------------------------------------
REGDIR=$(mktemp -d /var/tmp/registry.XXXXXX)
cat >"$REGDIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGDIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
  secret: crust-node-test
EOF
docker-registry serve "$REGDIR/config.yml" >"$RESULTS/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 1 100); do
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break
    sleep 0.2
done
say "registry at $REGISTRY (PID $REG_PID)"
# The test images every step pulls (crust-test/busybox:1 and critest's stand-ins), pushed here so that
# a run filtered to some node tests has them too.
if [ -x "$BIN/crust-test-images" ]; then
    if CRUST_TEST_BUSYBOX="$TESTIMAGES/busybox" "$BIN/crust-test-images" --registry "$REGISTRY" \
        --pause "$BIN/crust-pause" >"$RESULTS/test-images.log" 2>&1; then
        pass "crust-test-images pushed the test images"
    else
        fail "crust-test-images pushed the test images (see $RESULTS/test-images.log)"
    fi
fi

mkdir -p /etc/crust/crust.d
{
    echo "# make node-test: every registry is the local one, as in the host's tests"
    for h in registry.k8s.io k8s.gcr.io gcr.io docker.io quay.io public.ecr.aws 127.0.0.1:5000 '*'; do
        echo "[registry.mirrors.\"$h\"]"
        echo "endpoint = [\"$REGISTRY\"]"
        echo "fallback_to_upstream = false"
    done
    # crun as a second handler (RuntimeClass "crun"), as an operator adds it.
    echo "[runtime.handlers.crun]"
    echo "runtime_path = \"crun\""
} >/etc/crust/crust.d/50-node-test.toml
# The package as an operator installs it (steps/package.sh); `make install` where none is shared in.
. "$REPO/conformance/node/steps/package.sh"
if ls "$BIN"/debs/current/crust_*.deb >/dev/null 2>&1; then
    check "apt-get install ./crust_$(pkg_version current)_amd64.deb (offline)" package_install current
else
    check "make install NOBUILD=1" make --no-print-directory -C "$REPO" install NOBUILD=1 INSTALL_FROM="$BIN"
fi
check "systemd-analyze verify crust.service" systemd-analyze verify "$(systemctl show -p FragmentPath --value crust)"
start=$(date +%s%N)
check "systemctl enable --now crust" systemctl enable --now crust
say "systemctl enable --now crust returned (Type=notify: READY) after $((($(date +%s%N) - start) / 1000000)) ms"
check "crust serves $SOCK" test -S "$SOCK"

# ---- the node tests --------------------------------------------------------------------------------
export CRUST_TEST_BUSYBOX=$TESTIMAGES/busybox CRUST_TEST_REGISTRY=$REGISTRY CRUST_NODE_SOCKET=$SOCK
if [ -x "$BIN/node_systemd" ]; then
    # --nocapture: a failure's message shows on the console when it happens, not after every test.
    say "running the node tests (tests/node_systemd.rs)"
    # A runtime call that hangs (runc older than 30 s) is looked at while it hangs, once.
    (
        while sleep 5; do
            for p in $(pgrep -x runc); do
                if [ "$(ps -o etimes= -p "$p" | tr -d ' ')" -gt 30 ] 2>/dev/null; then
                    say "runc $p has run for over 30 s"
                    diagnose
                    exit 0
                fi
            done
        done
    ) &
    WATCH_PID=$!
    (cd /tmp && CRUST_NODE_TEST=1 RUST_BACKTRACE=1 "$BIN/node_systemd" --include-ignored --test-threads=1 --nocapture \
        --skip reboot_phase_ ${NODE_TEST_FILTER:+"$NODE_TEST_FILTER"} 2>&1 | tee "$RESULTS/node-tests.log")
    # libtest's own count (with --nocapture a test's output may split its `test … ok` line).
    read -r ok bad < <(sed -n -E 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' \
        "$RESULTS/node-tests.log" | tail -n 1)
    ok=${ok:-0}
    bad=${bad:-0}
    PASSED=$((PASSED + ok))
    FAILED=$((FAILED + bad))
    while IFS= read -r t; do FAILURES+=("node test $t"); done < <(sed -n '/^failures:$/,/^test result:/s/^    \([a-z_0-9]*\)$/\1/p' "$RESULTS/node-tests.log")
    if ! grep -q '^test result:' "$RESULTS/node-tests.log"; then fail "the node test binary finished"; fi
    kill "$WATCH_PID" 2>/dev/null
    [ "$bad" = 0 ] || [ -e "$RESULTS/diagnostics.txt" ] || diagnose
else
    fail "the node test binary is shared in"
fi

# ---- critest against the installed crust -----------------------------------------------------------
if [ -x "$BIN/critest" ]; then
    say "running critest against unix://$SOCK"
    PATH=$BIN:$PATH CRUST_CRITEST_SOCKET=$SOCK CRUST_TEST_IMAGES_BIN=$BIN/crust-test-images \
        CRUST_TEST_PAUSE=$BIN/crust-pause CRUST_CONFORMANCE_RESULTS=$RESULTS/critest \
        bash "$REPO/conformance/critest.sh" ${CRUST_NODE_CRITEST_ARGS:-}
    line=$(grep '^conformance: ' "$RESULTS/critest/summary.txt" 2>/dev/null | tail -n 1)
    if [ -n "$line" ]; then
        read -r c_ok c_bad < <(echo "$line" | sed -E 's/^conformance: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/')
        PASSED=$((PASSED + c_ok))
        FAILED=$((FAILED + c_bad))
        [ "$c_bad" = 0 ] || FAILURES+=("critest: $c_bad specs (see $RESULTS/critest/summary.txt)")
    else
        fail "critest produced a summary"
    fi
else
    say "critest is not on the host's PATH: not run"
fi

# ---- what the node looks like with a pod running ---------------------------------------------------
if [ -x "$BIN/crictl" ]; then
    C="$BIN/crictl --runtime-endpoint unix://$SOCK --image-endpoint unix://$SOCK --timeout 60s"
    D=$(mktemp -d)
    uid=0e0de000-0000-4000-8000-00000000demo
    # The cgroup parent in the form kubelet uses with the driver crust reports.
    parent="kubepods-burstable-pod${uid//-/_}.slice"
    $C runtime-config 2>/dev/null | grep -qi systemd || parent="kubepods/burstable/pod$uid"
    say "crictl runtime-config: $($C runtime-config 2>&1 | tr -s ' \n' ' ')"
    $C pull 127.0.0.1:5000/crust-test/busybox:1 >/dev/null
    cat >"$D/pod.json" <<EOF
{"metadata": {"name": "demo", "namespace": "default", "uid": "$uid"}, "log_directory": "$D/logs",
 "linux": {"cgroup_parent": "$parent"}}
EOF
    cat >"$D/ctr.json" <<EOF
{"metadata": {"name": "sleeper"}, "image": {"image": "127.0.0.1:5000/crust-test/busybox:1"},
 "command": ["sleep", "3600"], "log_path": "sleeper.log"}
EOF
    if pod=$($C runp "$D/pod.json") && ctr=$($C create "$pod" "$D/ctr.json" "$D/pod.json") && $C start "$ctr" >/dev/null; then
        say "a demonstration pod $pod with container $ctr (cgroup parent $parent):"
        systemctl status crust --no-pager --lines=5 2>&1 | cat
        echo "--- systemd-cgls /kubepods.slice"
        systemd-cgls --no-pager /kubepods.slice 2>&1 | head -n 30
        echo "--- crust-*.scope units"
        systemctl list-units --no-pager --no-legend 'crust-*.scope' 2>&1 | cat
        $C rmp -f "$pod" >/dev/null
    else
        say "the demonstration pod could not be made"
        systemctl status crust --no-pager --lines=5 2>&1 | cat
    fi
    rm -rf "$D"
else
    systemctl status crust --no-pager --lines=5 2>&1 | cat
fi
check "crust is still active" systemctl is-active --quiet crust

# ---- the package: upgrades while a container runs, remove, purge (steps/package.sh) -------------------
# Before the reboot, which needs crust installed: the scenarios end with a purge, so it is put back.
if [ "${NODE_TEST_PACKAGES:-}" = 0 ]; then
    say "NODE_TEST_PACKAGES=0: the package scenarios are left out"
elif ls "$BIN"/debs/current/crust_*.deb >/dev/null 2>&1; then
    package_scenarios
    reboot_wanted && check "crust $(pkg_version current) installed again for the reboot" package_install current
fi
reboot_wanted && reboot_now

kill "$REG_PID" 2>/dev/null
wait "$REG_PID" 2>/dev/null
rm -rf "$REGDIR"
finish
