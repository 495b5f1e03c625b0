#!/bin/bash
# conformance/node/steps/reboot.sh: the reboot scenario of `make node-test`, sourced by run-inside.sh.
#
# First boot, at the end of the run (reboot_now): the node test reboot_phase_1_pods_before_the_reboot
# leaves pods and containers running (on the CNI bridge, one container exited, one never started) and
# writes what they are to $RESULTS/reboot/pods.json; the runner saves its counts so far, leaves
# $RESULTS/reboot/requested and runs `systemctl reboot`. The guest's reboot ends qemu (-no-reboot), and
# node-test.sh boots the same overlay disk again (renaming the marker to $RESULTS/reboot/rebooted).
# Second boot (reboot_after): the counts come back, the runner waits for crust (started by its enabled
# unit, not by the runner) and the node test reboot_phase_2_after_the_reboot checks the old pods and
# containers and removes them, then the runner finishes with one summary of both boots.

REBOOT_DIR=$RESULTS/reboot

# Whether this boot is the one after the runner's reboot.
reboot_done() { [ -e "$REBOOT_DIR/rebooted" ] && [ -r "$REBOOT_DIR/counts" ]; }

# Whether this run reboots: yes unless NODE_TEST_REBOOT=0; with NODE_TEST_FILTER only if NODE_TEST_REBOOT=1.
reboot_wanted() {
    case ${NODE_TEST_REBOOT:-} in
        0) return 1 ;;
        1) return 0 ;;
    esac
    [ -z "${NODE_TEST_FILTER:-}" ]
}

# reboot_phase TEST: one node test of the scenario, by its exact name; counted as one check.
reboot_phase() {
    local log=$REBOOT_DIR/${1##*::}.log
    (cd /tmp && CRUST_NODE_TEST=1 CRUST_NODE_REBOOT_DIR=$REBOOT_DIR RUST_BACKTRACE=1 \
        "$BIN/node_systemd" --include-ignored --test-threads=1 --nocapture --exact "$1" 2>&1 | tee "$log")
    grep -q '^test result: ok\. 1 passed' "$log"
}

# First boot: make the pods, save the counts, reboot. Returns only when the reboot could not be asked for.
reboot_now() {
    mkdir -p "$REBOOT_DIR"
    say "reboot: pods and containers for the reboot"
    if ! reboot_phase reboot::reboot_phase_1_pods_before_the_reboot; then
        fail "reboot: the pods before the reboot (reboot_phase_1_pods_before_the_reboot)"
        return 1
    fi
    pass "reboot: pods and containers running before the reboot"
    {
        printf 'PASSED=%q\nFAILED=%q\n' "$PASSED" "$FAILED"
        printf 'FAILURES=('
        [ ${#FAILURES[@]} -eq 0 ] || printf '%q ' "${FAILURES[@]}"
        printf ')\n'
    } >"$REBOOT_DIR/counts"
    journalctl -u crust --no-pager -o short-precise >"$RESULTS/crust.journal.boot1" 2>&1
    : >"$REBOOT_DIR/requested"
    sync
    say "reboot: systemctl reboot with $(ls /run/crust/containers 2>/dev/null | wc -l) containers and $(ip netns list 2>/dev/null | wc -l) netns"
    systemctl reboot
    exit 0
}

# Second boot: the counts of the first, then the checks of what the reboot left.
reboot_after() {
    # shellcheck disable=SC1091
    . "$REBOOT_DIR/counts"
    rm -f "$REBOOT_DIR/counts"
    say "reboot: second boot; crust $(systemctl is-active crust) (started by its enabled unit)"
    local i
    for i in $(seq 1 120); do
        systemctl is-active --quiet crust && [ -S "$SOCK" ] && break
        sleep 1
    done
    check "reboot: crust is active after the boot, started by systemd" systemctl is-active --quiet crust
    if reboot_phase reboot::reboot_phase_2_after_the_reboot; then
        pass "reboot: old pods NOTREADY, old containers EXITED, their netns, leases, cgroups gone, records removed, new pods run"
    else
        fail "reboot: after the reboot (reboot_phase_2_after_the_reboot; $REBOOT_DIR)"
        diagnose
    fi
}
