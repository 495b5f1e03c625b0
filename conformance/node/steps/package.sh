# conformance/node/steps/package.sh (sourced by run-inside.sh): crust's Debian package on the node.
#
# node-test.sh shares three packages in under $BIN/debs: current/ (`make deb` of this tree, version V),
# upgrade/ (the same build as version V+upgrade1: what differs is the version alone) and old/ (this
# tree's package holding the last release point's binaries and crust.toml, conformance/upgrade-from.sh,
# a lower version). They are installed as an operator does, `apt-get install ./crust_*.deb`, offline:
# every dependency is already in the node image.
#
#   package_install KIND   installs $BIN/debs/KIND/crust_*.deb (the runner's install of crust);
#   package_scenarios      with crust V installed and serving: a container keeps its PID through the
#                          upgrade to V+upgrade1 and is then exec'd, stopped and removed with crictl;
#                          apt-get remove stops the service and leaves a container and the state; apt-get
#                          purge refuses while it runs and, once crust is reinstalled and the container
#                          gone, removes the configuration and the state; then from a clean node the last
#                          release point's package starts a container that keeps its PID through the
#                          upgrade to V and is managed by the new crustd; crust is purged at the end.
# Each step is one counted `check` line of the node summary, naming the PIDs.

PKG_DEBS=/var/tmp/crust-debs
PKG_DROPIN=/etc/crust/crust.d/50-node-test.toml
PKG_IMAGE=127.0.0.1:5000/crust-test/busybox:1
PKG_C="$BIN/crictl --runtime-endpoint unix://$SOCK --image-endpoint unix://$SOCK --timeout 60s"

# The version of the package in $BIN/debs/KIND.
pkg_version() { dpkg-deb --field "$BIN"/debs/"$1"/crust_*.deb Version; }

# apt-get, offline and without recommends (criu is not in the image); its output in $RESULTS/apt.log,
# the package's and dpkg's own messages on the console.
pkg_apt() {
    local rc
    echo "--- apt-get $*" >>"$RESULTS/apt.log"
    DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "$@" \
        >>"$RESULTS/apt.log" 2>&1
    rc=$?
    sed -n '/^--- apt-get /h; /^--- apt-get /!H; ${x;p}' "$RESULTS/apt.log" |
        grep -E '^(crust:|Unpacking|Setting up|Removing|Purging|E:|dpkg:)' | sed 's/^/    /'
    return $rc
}

package_install() {
    local kind=$1
    mkdir -p "$PKG_DEBS/$kind"
    cp "$BIN"/debs/"$kind"/crust_*.deb "$PKG_DEBS/$kind/" || return 1
    # The node test's drop-in (registry mirrors, crun) survives a purge in this copy.
    [ -e "$PKG_DEBS/dropin.toml" ] || cp "$PKG_DROPIN" "$PKG_DEBS/dropin.toml" 2>/dev/null
    [ -e "$PKG_DROPIN" ] || install -D -m 0644 "$PKG_DEBS/dropin.toml" "$PKG_DROPIN"
    (cd "$PKG_DEBS/$kind" && pkg_apt install ./crust_*.deb) &&
        [ "$(dpkg-query -W -f '${Status} ${Version}' crust)" = "install ok installed $(pkg_version "$kind")" ] &&
        systemctl is-active --quiet crust && test -S "$SOCK"
}

pkg_main_pid() { systemctl show -p MainPID --value crust; }

# Start time of a live process (field 22 of /proc/PID/stat; fails once it is gone or a zombie): the same
# PID and start time are the same process.
pkg_start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # shellcheck disable=SC2086 # split the fields after the command name
    set -- ${stat##*) }
    case $1 in Z | X) return 1 ;; esac
    echo "${20}"
}

# The container's PID as crust reports it (crictl inspect: info.pid).
pkg_pid() { $PKG_C inspect "$1" 2>/dev/null | grep -m1 -oE '"pid": [0-9]+' | grep -oE '[0-9]+$'; }

# pkg_container NAME: a pod NAME with a sleeping container; sets PKG_POD, PKG_CTR, PKG_PID, PKG_START.
pkg_container() {
    local name=$1 d uid parent
    d=$(mktemp -d)
    uid=0e0de000-0000-4000-8000-0000pkg$(printf '%05d' $RANDOM)
    parent="kubepods-besteffort-pod${uid//-/_}.slice"
    [ "$PKG_DRIVER" = systemd ] || parent="kubepods/besteffort/pod$uid"
    cat >"$d/pod.json" <<EOF
{"metadata": {"name": "$name", "namespace": "default", "uid": "$uid"}, "log_directory": "$d/logs",
 "linux": {"cgroup_parent": "$parent"}}
EOF
    cat >"$d/ctr.json" <<EOF
{"metadata": {"name": "sleeper"}, "image": {"image": "$PKG_IMAGE"},
 "command": ["sleep", "3600"], "log_path": "sleeper.log"}
EOF
    PKG_POD="" PKG_CTR="" PKG_PID="" PKG_START=""
    $PKG_C pull "$PKG_IMAGE" >/dev/null &&
        PKG_POD=$($PKG_C runp "$d/pod.json") &&
        PKG_CTR=$($PKG_C create "$PKG_POD" "$d/ctr.json" "$d/pod.json") &&
        $PKG_C start "$PKG_CTR" >/dev/null &&
        PKG_PID=$(pkg_pid "$PKG_CTR") && [ -n "$PKG_PID" ] &&
        PKG_START=$(pkg_start_time "$PKG_PID")
    local rc=$?
    rm -rf "$d"
    say "pod $name ${PKG_POD:0:13}: container ${PKG_CTR:0:13} runs as PID ${PKG_PID:-?} (crust $(dpkg-query -W -f '${Version}' crust), crustd PID $(pkg_main_pid))"
    return $rc
}

# pkg_same CTR PID START: the process is the one from before, and crust reports it running with that PID.
pkg_same() {
    local now state
    now=$(pkg_pid "$1")
    state=$($PKG_C inspect -o go-template --template '{{.status.state}}' "$1" 2>/dev/null)
    say "container ${1:0:13}: PID before $2, after ${now:-?} (start time $3, now $(pkg_start_time "$2" || echo gone)); state $state"
    [ "$(pkg_start_time "$2")" = "$3" ] && [ "$now" = "$2" ] && [ "$state" = CONTAINER_RUNNING ]
}

# pkg_manage POD CTR PID: crictl exec in it, stop it (its PID ends), remove it and its pod.
pkg_manage() {
    local out
    # stdout only: crictl warns on stderr that it has no /etc/crictl.yaml.
    out=$($PKG_C exec "$2" echo managed 2>>"$RESULTS/crictl.stderr") && [ "$out" = managed ] &&
        $PKG_C stop -t 2 "$2" >/dev/null && { sleep 1; ! pkg_start_time "$3" >/dev/null; } &&
        $PKG_C rm "$2" >/dev/null && $PKG_C stopp "$1" >/dev/null && $PKG_C rmp "$1" >/dev/null &&
        ! $PKG_C ps -a -q | grep -q "$2"
}

# pkg_upgraded KIND OLD_MAIN: dpkg has KIND's version and crustd is a new process.
pkg_upgraded() {
    local main
    main=$(pkg_main_pid)
    say "crust $(dpkg-query -W -f '${Version}' crust); crustd PID $2 before, $main after; $(/usr/bin/crustd --version | head -n 1)"
    [ "$(dpkg-query -W -f '${Version}' crust)" = "$(pkg_version "$1")" ] && [ "$main" != 0 ] && [ "$main" != "$2" ]
}

pkg_removed() {
    say "after apt-get remove: crust.service $(systemctl is-active crust); container PID $1 $(pkg_start_time "$1" >/dev/null && echo runs || echo is gone); $(ls /var/lib/crust 2>/dev/null | tr '\n' ' ')in /var/lib/crust"
    ! systemctl is-active --quiet crust && [ "$(pkg_start_time "$1")" = "$2" ] && [ ! -e /usr/bin/crustd ] &&
        [ -d /var/lib/crust/containers ] && [ -e /etc/crust/crust.toml ]
}

pkg_purge_refused() {
    ! pkg_apt purge crust &&
        grep -q 'crust: refusing to purge: .* still running' "$RESULTS/apt.log" &&
        [ "$(pkg_start_time "$1")" = "$2" ] && [ -d /var/lib/crust/containers ] && [ -d /etc/crust/crust.d ]
    # (dpkg deletes the conffile /etc/crust/crust.toml before the postrm that refuses runs: not checked.)
}

pkg_reinstall() { package_install upgrade && pkg_same "$@"; }

pkg_purged() {
    pkg_apt purge crust && [ -z "$(dpkg-query -W -f '${Status}' crust 2>/dev/null | grep -v not-installed)" ] &&
        [ ! -e /etc/crust ] && [ ! -e /var/lib/crust ] && [ ! -e /run/crust ]
}

package_scenarios() {
    local v1 v2 vold main pid start pod ctr
    [ -x "$BIN/crictl" ] || { fail "package: crictl is shared in"; return; }
    v1=$(pkg_version current)
    # The cgroup driver, asked of this build's crustd (the kubelet's pod cgroup parent follows it).
    PKG_DRIVER=cgroupfs
    $PKG_C runtime-config 2>/dev/null | grep -qi systemd && PKG_DRIVER=systemd
    v2=$(pkg_version upgrade)
    say "package scenarios: crust $v1 installed; upgrade to $v2; the last release point's package: $(pkg_version old 2>/dev/null || echo absent)"

    # An upgrade to a higher version while a container runs.
    check "package: a container runs under crust $v1" pkg_container upgrade
    pod=$PKG_POD ctr=$PKG_CTR pid=$PKG_PID start=$PKG_START main=$(pkg_main_pid)
    check "package: apt-get install ./crust_${v2}_amd64.deb while container PID $pid runs" package_install upgrade
    check "package: dpkg has crust $v2 and crustd restarted (PID $main before)" pkg_upgraded upgrade "$main"
    check "package: after the upgrade the same container PID $pid runs, running to crictl" pkg_same "$ctr" "$pid" "$start"
    check "package: crictl exec, stop and rm of container PID $pid after the upgrade" pkg_manage "$pod" "$ctr" "$pid"

    # Remove keeps containers and state; purge refuses while they run.
    check "package: a container runs under crust $v2" pkg_container remove
    pod=$PKG_POD ctr=$PKG_CTR pid=$PKG_PID start=$PKG_START
    check "package: apt-get remove crust" pkg_apt remove crust
    check "package: after apt-get remove: service stopped, container PID $pid runs, state and configuration kept" pkg_removed "$pid" "$start"
    check "package: apt-get purge crust refused while container PID $pid runs" pkg_purge_refused "$pid" "$start"
    check "package: reinstalled ($v2), crust adopts container PID $pid" pkg_reinstall "$ctr" "$pid" "$start"
    check "package: crictl exec, stop and rm of container PID $pid after the reinstall" pkg_manage "$pod" "$ctr" "$pid"
    # Whatever else still runs (the node tests' pods, if any were left) goes too before the purge.
    $PKG_C rmp -a -f >/dev/null 2>&1
    check "package: apt-get purge crust with no container: /etc/crust, /var/lib/crust, /run/crust removed" pkg_purged

    # In place from the last release point: its crustd starts a container, this build's adopts it.
    if ! ls "$BIN"/debs/old/crust_*.deb >/dev/null 2>&1; then
        fail "package: the last release point's package is shared in (conformance/upgrade-from.sh)"
        return
    fi
    vold=$(pkg_version old)
    check "package: apt-get install ./crust_${vold}_amd64.deb (the last release point)" package_install old
    say "$(/usr/bin/crustd --version | head -n 1)"
    check "package: a container runs under crust $vold" pkg_container from-release
    pod=$PKG_POD ctr=$PKG_CTR pid=$PKG_PID start=$PKG_START main=$(pkg_main_pid)
    check "package: apt-get install ./crust_${v1}_amd64.deb over $vold while container PID $pid runs" package_install current
    check "package: dpkg has crust $v1 and crustd restarted (PID $main before)" pkg_upgraded current "$main"
    check "package: after the upgrade from the last release the same container PID $pid runs, running to crictl" \
        pkg_same "$ctr" "$pid" "$start"
    check "package: crictl exec, stop and rm of container PID $pid after the upgrade from the last release" \
        pkg_manage "$pod" "$ctr" "$pid"
    $PKG_C rmp -a -f >/dev/null 2>&1
    check "package: apt-get purge crust at the end" pkg_purged
}
