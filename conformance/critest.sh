#!/usr/bin/env bash
# conformance/critest.sh (`make conformance`): runs cri-tools' critest (from PATH) against a crustd of its
# own, with every image critest pulls served by stand-ins from a local registry, and nothing leaving the
# machine:
#   - a registry at $CRUST_TEST_REGISTRY (default http://127.0.0.1:5000); one is started (temporary
#     storage) only if nothing answers there, and stopped after;
#   - crust-test-images builds the stand-ins (a static busybox built by conformance/busybox.sh, crust's own
#     small programs) and pushes them under the upstream paths;
#   - crustd runs on a temporary root, state and socket, with a CNI network of its own (bridge + host-local
#     + portmap, ipMasq off), registry mirrors for registry.k8s.io, k8s.gcr.io, gcr.io, docker.io, quay.io,
#     public.ecr.aws (and any other host) pointing at the local registry with the upstream fallback off, and
#     HTTP(S)_PROXY aimed at a closed loopback port;
#   - critest writes its JUnit report and log to the results dir ($CRUST_CONFORMANCE_RESULTS, default
#     conformance/results/<UTC date>); the summary line is `critest: N passed, M failed, K skipped`.
# Then crustd is stopped and everything it left is swept (runc containers, processes, mounts, cgroups, the
# bridge, NAT rules of the subnet).
#
# Exit status: 0 when critest is not on PATH (nothing to do) or when it ran and no spec failed but those
# listed in EXPECTED_FAILURES; 1 when any other spec failed (or critest failed without a report); 2 when
# the run could not be set up. The last line, `conformance: N passed, M failed, K skipped`, counts the
# expected failures as skipped, so that M is what needs fixing.
# Extra arguments (and $CRITEST_ARGS) go to critest, e.g. `--ginkgo.focus=Image` or `--parallel=2`.
# CRUST_CONFORMANCE_NO_BUILD=1 uses the binaries already built (target/release, else target/debug).
# CRUST_CRITEST_SOCKET=/run/crust/crust.sock runs critest against a crustd already serving that socket
# (an installed service, e.g. on the test node of `make node-test`, whose configuration mirrors the
# registries to $CRUST_TEST_REGISTRY): nothing is built, no crustd is started, stopped or swept, and its
# own CNI network serves the pods; CRUST_TEST_IMAGES_BIN and CRUST_TEST_PAUSE name crust-test-images and
# the pause binary then.
# CRUST_CONFORMANCE_NRI=1 connects NRI's reference plugins (logger, device-injector, ulimit-adjuster,
# built by hand from containerd's vendor tree and cached in $CRUST_NRI_PLUGINS, default
# /var/cache/crust-nri-plugins) to crustd's NRI socket before critest runs, and fails when they are absent
# or do not stay connected; the summary line then says so.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

if ! command -v critest >/dev/null 2>&1; then
    echo "critest is not on PATH: skipping the CRI validation run (install cri-tools' critest to run it)."
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "critest.sh: crustd runs containers: run as root" >&2
    exit 2
fi

# Specs that cannot pass offline, as regular expressions over the spec name; keep this list short and
# say why for each. Any other failure fails the run.
EXPECTED_FAILURES=(
    # Pulls gcr.io/k8s-staging-cri-tools/test-image-digest by the digest of the upstream manifest: no
    # image built here can have that digest, and nothing may be fetched from outside the machine.
    'public image with digest should be pulled and removed'
)

REGISTRY=${CRUST_TEST_REGISTRY:-http://127.0.0.1:5000}
REGISTRY=${REGISTRY%/}
RESULTS=${CRUST_CONFORMANCE_RESULTS:-$REPO/conformance/results/$(date -u +%Y-%m-%dT%H%M%SZ)}
LOG_LEVEL=${CRUST_LOG_LEVEL:-info}
# A port nothing listens on: any request that would go through a proxy fails at once.
CLOSED_PROXY=http://127.0.0.1:9

say() { echo "critest.sh: $*"; }
fail() { echo "critest.sh: $*" >&2; exit 2; }
# How many NRI plugins crustd says are connected (`crustctl status`).
nri_connected() { "$BIN/crustctl" --config "$CONFIG" status 2>/dev/null | sed -n 's/^NRI plugins connected: //p'; }

case $REGISTRY in
    http://*) REG_HOST=${REGISTRY#http://} ;;
    *) fail "CRUST_TEST_REGISTRY must be a plain http:// URL of a local registry, got $REGISTRY" ;;
esac
REG_ADDR=${REG_HOST%:*}
REG_PORT=${REG_HOST##*:}
[ "$REG_PORT" != "$REG_HOST" ] || REG_PORT=80

EXTERNAL_SOCK=${CRUST_CRITEST_SOCKET:-}

# ---- binaries ----------------------------------------------------------------------------------------
if [ -n "$EXTERNAL_SOCK" ]; then
    [ -S "$EXTERNAL_SOCK" ] || fail "CRUST_CRITEST_SOCKET=$EXTERNAL_SOCK: no socket there"
elif [ "${CRUST_CONFORMANCE_NO_BUILD:-0}" != 1 ]; then
    say "building crust (make build) and crust-test-images"
    make --no-print-directory build
    cargo build -q -p crust-conformance --bin crust-test-images
fi
BIN=""
IMAGES=${CRUST_TEST_IMAGES_BIN:-}
PAUSE=${CRUST_TEST_PAUSE:-$REPO/target/static/x86_64-unknown-linux-gnu/tiny/crust-pause}
if [ -z "$EXTERNAL_SOCK" ]; then
    for d in target/release target/debug; do
        if [ -x "$d/crustd" ] && [ -x "$d/crust-monitor" ]; then BIN=$REPO/$d; break; fi
    done
    [ -n "$BIN" ] || fail "crustd is not built: run \`make build\`"
fi
if [ -z "$IMAGES" ]; then
    for d in target/debug target/release; do
        if [ -x "$d/crust-test-images" ]; then IMAGES=$REPO/$d/crust-test-images; break; fi
    done
fi
[ -n "$IMAGES" ] || fail "crust-test-images is not built: cargo build -p crust-conformance --bin crust-test-images"
[ -x "$PAUSE" ] || PAUSE=""
# The busybox of the stand-ins: built once per machine (cached), or $CRUST_TEST_BUSYBOX.
if [ -z "${CRUST_TEST_BUSYBOX:-}" ]; then
    CRUST_TEST_BUSYBOX=$(conformance/busybox.sh) || fail "conformance/busybox.sh could not build busybox"
fi
export CRUST_TEST_BUSYBOX
say "busybox of the stand-ins: $CRUST_TEST_BUSYBOX"

# ---- state of the run, and its clean-up --------------------------------------------------------------
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(mktemp -d /tmp/crust-critest.XXXXXX)
STATE=$(mktemp -d /run/crc.XXXXXX) # short: the socket path must stay under 108 bytes
SOCK=$STATE/crust.sock
CGROUP_PARENT=crust-critest-$$
CRUSTD_PID=""
NRI_PIDS=()
REG_PID=""
BRIDGE=""
SUBNET_PREFIX=""
FORWARD_WAS=""

sweep_processes() {
    # SIGKILLs processes whose command line, root or cwd is under the run's dirs (monitors, pause and
    # container processes of this crustd), by PID.
    local p cmd root cwd killed=0
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] || [ "$p" = "${REG_PID:-x}" ]; then continue; fi
        cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
        root=$(readlink "/proc/$p/root" 2>/dev/null) || root=""
        cwd=$(readlink "/proc/$p/cwd" 2>/dev/null) || cwd=""
        case "$cmd $root/ $cwd/" in
            *"$STATE"/* | *"$WORK"/*)
                kill -KILL "$p" 2>/dev/null && { say "swept process $p ($cmd)"; killed=1; } ;;
        esac
    done
    if [ $killed = 1 ]; then sleep 0.5; fi
}

sweep_mounts() {
    local m
    awk '{ print $5 }' /proc/self/mountinfo | sed 's/\\040/ /g' | awk -v s="$STATE" -v w="$WORK" \
        'index($0, s "/") == 1 || $0 == s || index($0, w "/") == 1 { print length($0) "\t" $0 }' |
        sort -rn | cut -f2- | while IFS= read -r m; do
            umount -l "$m" 2>/dev/null && say "swept mount $m"
        done
}

sweep_cgroups() {
    local top d
    for top in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
        [ -d "$top" ] || continue
        for _ in 1 2 3 4 5; do
            find "$top" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$top" ] || break
            sleep 0.2
        done
        if [ -d "$top" ]; then say "could not remove cgroup $top"; else say "swept cgroup $top"; fi
    done
}

cleanup() {
    local rc=$? i id
    trap - EXIT HUP INT TERM
    trap '' PIPE
    set +e
    for p in "${NRI_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ -n "$CRUSTD_PID" ] && kill -0 "$CRUSTD_PID" 2>/dev/null; then
        kill -TERM "$CRUSTD_PID"
        for i in $(seq 1 200); do kill -0 "$CRUSTD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$CRUSTD_PID" 2>/dev/null
        wait "$CRUSTD_PID" 2>/dev/null
    fi
    # What crustd left behind (it should remove everything critest made; critest removes its own pods).
    local runc_root=$STATE/runtime/runc
    if [ -d "$runc_root" ]; then
        for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
            runc --root "$runc_root" delete --force "$id" >/dev/null 2>&1 && say "swept runc container $id"
        done
    fi
    sweep_processes
    sweep_mounts
    sweep_cgroups
    if [ -n "$BRIDGE" ] && [ -e "/sys/class/net/$BRIDGE" ]; then
        ip link del "$BRIDGE" && say "removed bridge $BRIDGE"
    fi
    if [ -n "$SUBNET_PREFIX" ]; then
        # portmap's DNAT rules of pods that were not torn down.
        iptables -w -t nat -S 2>/dev/null | grep -F -- "$SUBNET_PREFIX" | grep '^-A ' | sed 's/^-A /-D /' |
            while IFS= read -r rule; do
                eval "iptables -w -t nat $rule" && say "removed NAT rule: $rule"
            done
    fi
    if [ -n "$REG_PID" ]; then
        kill -TERM "$REG_PID" 2>/dev/null
        wait "$REG_PID" 2>/dev/null
    fi
    if [ "$FORWARD_WAS" = 0 ]; then sysctl -qw net.ipv4.ip_forward=0; fi
    rm -rf "$WORK"
    rmdir "$STATE" 2>/dev/null || rm -rf --one-file-system "$STATE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE # e.g. `make conformance | head`: still clean up

# ---- the registry ------------------------------------------------------------------------------------
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$REG_ADDR/$REG_PORT" 2>/dev/null; }
if answers; then
    say "using the registry at $REGISTRY"
else
    case $REG_ADDR in
        127.0.0.1 | localhost) ;;
        *) fail "no registry answers at $REGISTRY (one is started only on 127.0.0.1)" ;;
    esac
    command -v docker-registry >/dev/null || fail "docker-registry is not installed (make deps)"
    mkdir -p "$WORK/registry"
    cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
  secret: crust-critest
EOF
    env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy \
        docker-registry serve "$WORK/registry/config.yml" >"$RESULTS/registry.log" 2>&1 &
    REG_PID=$!
    for _ in $(seq 1 150); do
        answers && break
        kill -0 "$REG_PID" 2>/dev/null || fail "docker-registry exited: see $RESULTS/registry.log"
        sleep 0.1
    done
    answers || fail "docker-registry did not answer at $REGISTRY"
    say "started a registry at $REGISTRY (PID $REG_PID, temporary storage)"
fi

# ---- the stand-in images -----------------------------------------------------------------------------
"$IMAGES" --registry "$REGISTRY" ${PAUSE:+--pause "$PAUSE"} >"$RESULTS/images.txt" ||
    fail "pushing the stand-in images failed: see $RESULTS/images.txt"
say "pushed the stand-in images (list in $RESULTS/images.txt)"

if [ -n "$EXTERNAL_SOCK" ]; then
    SOCK=$EXTERNAL_SOCK
    say "using the crustd that serves $SOCK (its configuration, its CNI network); running critest"
else
# ---- crustd's network and configuration --------------------------------------------------------------
N=""
for i in $(seq 1 250); do
    if [ ! -e "/sys/class/net/crcbr$i" ] && ! ip -4 route show | grep -qF "10.235.$i."; then N=$i; break; fi
done
[ -n "$N" ] || fail "no free subnet in 10.235.1-250.0/24"
BRIDGE=crcbr$N
SUBNET_PREFIX=10.235.$N.
FORWARD_WAS=$(cat /proc/sys/net/ipv4/ip_forward)
sysctl -qw net.ipv4.ip_forward=1 # pods on the bridge reach the host and each other

mkdir -p "$WORK/cni" "$WORK/root"
cat >"$WORK/cni/10-crust-critest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "crust-critest-$N",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$WORK/ipam",
        "ranges": [[{ "subnet": "10.235.$N.0/24", "gateway": "10.235.$N.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF

CONFIG=$WORK/crust.toml
{
    echo "root = \"$WORK/root\""
    echo "state = \"$STATE\""
    echo "log_level = \"$LOG_LEVEL\""
    echo
    echo "[api]"
    echo "socket = \"$SOCK\""
    echo
    echo "[runtime]"
    echo "cgroup_parent = \"$CGROUP_PARENT\""
    if [ -n "$PAUSE" ]; then echo "pause_path = \"$PAUSE\""; fi
    echo
    echo "[nri]"
    echo "socket_path = \"$STATE/nri.sock\""
    echo "plugin_path = \"$WORK/nri-plugins\""
    echo "plugin_config_path = \"$WORK/nri-conf\""
    echo
    echo "[cni]"
    echo "conf_dir = \"$WORK/cni\""
    for h in registry.k8s.io k8s.gcr.io gcr.io docker.io quay.io public.ecr.aws '*'; do
        echo
        echo "[registry.mirrors.\"$h\"]"
        echo "endpoint = [\"$REGISTRY\"]"
        echo "fallback_to_upstream = false"
    done
} >"$CONFIG"
cp "$CONFIG" "$RESULTS/crust.toml"
"$BIN/crustd" --config "$CONFIG" config >/dev/null || fail "crustd rejects the generated config $CONFIG"

# ---- crustd ------------------------------------------------------------------------------------------
HTTP_PROXY=$CLOSED_PROXY HTTPS_PROXY=$CLOSED_PROXY http_proxy=$CLOSED_PROXY https_proxy=$CLOSED_PROXY \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost NO_COLOR=1 \
    "$BIN/crustd" --config "$CONFIG" >"$RESULTS/crustd.log" 2>&1 </dev/null &
CRUSTD_PID=$!
for _ in $(seq 1 300); do
    [ -S "$SOCK" ] && break
    kill -0 "$CRUSTD_PID" 2>/dev/null || fail "crustd exited during start-up: see $RESULTS/crustd.log"
    sleep 0.1
done
[ -S "$SOCK" ] || fail "crustd did not create $SOCK within 30 s: see $RESULTS/crustd.log"
say "crustd (PID $CRUSTD_PID, $BIN) serves $SOCK; running critest"
if [ "${CRUST_CONFORMANCE_NRI:-0}" = 1 ]; then
    NRI_DIR=${CRUST_NRI_PLUGINS:-/var/cache/crust-nri-plugins}
    for p in logger device-injector ulimit-adjuster; do
        [ -x "$NRI_DIR/$p" ] || fail "CRUST_CONFORMANCE_NRI=1: no NRI plugin $NRI_DIR/$p (build NRI's reference plugins by hand)"
    done
    # crustd serves the NRI socket just after the CRI one.
    for _ in $(seq 1 100); do [ -S "$STATE/nri.sock" ] && break; sleep 0.1; done
    "$NRI_DIR/logger" -idx 10 -socket-path "$STATE/nri.sock" -log-file "$RESULTS/nri-logger.log" \
        >"$RESULTS/nri-logger.out" 2>&1 </dev/null &
    NRI_PIDS+=($!)
    "$NRI_DIR/device-injector" -idx 20 -socket-path "$STATE/nri.sock" >"$RESULTS/nri-device-injector.log" 2>&1 </dev/null &
    NRI_PIDS+=($!)
    "$NRI_DIR/ulimit-adjuster" -idx 30 -socket "$STATE/nri.sock" >"$RESULTS/nri-ulimit-adjuster.log" 2>&1 </dev/null &
    NRI_PIDS+=($!)
    connected=0
    for _ in $(seq 1 100); do
        connected=$(nri_connected)
        [ "${connected:-0}" = 3 ] && break
        sleep 0.1
    done
    [ "${connected:-0}" = 3 ] || fail "CRUST_CONFORMANCE_NRI=1: ${connected:-0} of 3 NRI plugins connected (see $RESULTS/nri-*.log)"
    say "NRI plugins connected: logger, device-injector, ulimit-adjuster (PIDs ${NRI_PIDS[*]})"
fi
fi

# ---- critest -----------------------------------------------------------------------------------------
JUNIT=$RESULTS/junit.xml
set +e
# critest itself talks to pods and to crustd's streaming server directly: no proxy for it.
# shellcheck disable=SC2086 # CRITEST_ARGS is a list of arguments
env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy -u ALL_PROXY -u all_proxy \
    critest --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
    --report-dir "$RESULTS" --ginkgo.junit-report="$JUNIT" --ginkgo.no-color \
    ${CRITEST_ARGS:-} "$@" 2>&1 | tee "$RESULTS/critest.log"
CRITEST_RC=${PIPESTATUS[0]}
set -e

# ---- the summary -------------------------------------------------------------------------------------
if [ ! -s "$JUNIT" ]; then
    echo "critest: no JUnit report at $JUNIT (critest exit status $CRITEST_RC); see $RESULTS/critest.log"
    exit 1
fi
# One <testcase ...> per line (ginkgo's report); its status attribute, or its <failure>/<skipped>
# children, say how it went. Suite nodes ([BeforeSuite] …) count only when they fail.
set +e
expected=$(printf '%s\n' "${EXPECTED_FAILURES[@]}")
awk -v expected="$expected" '
    function unescape(s) {
        gsub(/&quot;/, "\"", s); gsub(/&#34;/, "\"", s); gsub(/&apos;/, "\047", s); gsub(/&#39;/, "\047", s)
        gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&amp;/, "\\&", s); return s
    }
    function finish() {
        if (name == "") return
        if (status == "") status = child
        if (status == "") status = "passed"
        suite = (name ~ /^\[(Synchronized)?(Before|After)Suite\]/ || name ~ /^\[Report(Before|After)Suite\]/)
        if (status == "passed") { if (!suite) passed++ }
        else if (status == "skipped" || status == "pending") { if (!suite) skipped++ }
        else {
            failed++; failures[failed] = name " (" status ")"
            known = 0
            for (i = 1; i <= nexp; i++) if (name ~ expect_re[i]) known = 1
            if (known) { expected_failed++; failures[failed] = failures[failed] " [expected: see EXPECTED_FAILURES]" }
        }
        name = ""; status = ""; child = ""
    }
    BEGIN { nexp = split(expected, expect_re, "\n") }
    /<testcase[ >]/ {
        finish()
        name = $0; sub(/.*<testcase[^>]* name="/, "", name); sub(/".*/, "", name); name = unescape(name)
        status = ""
        if (match($0, /<testcase[^>]* status="[a-z]+"/)) { s = substr($0, RSTART, RLENGTH); sub(/.*status="/, "", s); sub(/"$/, "", s); status = s }
        child = ""
        if ($0 ~ /\/>[ \t]*$/) finish()
        next
    }
    /<failure[ >]/ || /<error[ >]/ { child = "failed" }
    /<skipped[ >\/]/ { if (child == "") child = "skipped" }
    /<\/testcase>/ { finish() }
    END {
        finish()
        printf "critest: %d passed, %d failed, %d skipped\n", passed, failed, skipped
        if (failed > 0) {
            print "failed specs:"
            for (i = 1; i <= failed; i++) print "  - " failures[i]
        }
        unexpected = failed - expected_failed
        printf "conformance: %d passed, %d failed, %d skipped\n", passed, unexpected, skipped + expected_failed
        exit (unexpected > 0)
    }
' "$JUNIT" | tee "$RESULTS/summary.txt"
SUMMARY_RC=${PIPESTATUS[0]}
set -e
if [ ${#NRI_PIDS[@]} -gt 0 ]; then
    connected=$(nri_connected)
    seen=$(grep -oE 'msg="[A-Za-z]+(PodSandbox|Container):' "$RESULTS/nri-logger.log" 2>/dev/null | sort -u | wc -l)
    echo "nri: ${connected:-0} of 3 plugins connected after critest; the logger saw $seen kinds of event" |
        tee -a "$RESULTS/summary.txt"
    [ "${connected:-0}" = 3 ] || { echo "critest.sh: NRI plugins were disconnected during critest"; SUMMARY_RC=2; }
fi
echo "results: $RESULTS (junit.xml, critest.log, images.txt$([ -n "$EXTERNAL_SOCK" ] || echo ', crustd.log, crust.toml'))"
if [ "$SUMMARY_RC" = 1 ]; then
    echo "critest.sh: exit status 1 because specs failed that are not expected to"
    exit 1
fi
[ "$SUMMARY_RC" = 0 ] || exit 1
if [ "$CRITEST_RC" != 0 ] && ! grep -q '^failed specs:' "$RESULTS/summary.txt"; then
    echo "critest.sh: exit status 1: critest exited with $CRITEST_RC although its report shows no failure"
    exit 1
fi
exit 0
