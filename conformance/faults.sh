#!/usr/bin/env bash
# conformance/faults.sh (`make faults`): runs the fault-injection suite (tests/faults) against real parts and
# counts its scenario lines (`fault <name>: held [(measured)]|FAILED ...`) into `faults: N passed, M failed`.
# Arguments go to the test binary (a name filter, e.g. `disk::`). FAULTS_BIG_LAYER_MB (default 200) sizes
# the layer of the registry's resume measurement.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
LOG=$(mktemp /tmp/crust-faults.XXXXXX)
trap 'rm -f "$LOG" "$LOG.lines"' EXIT
cargo test -q -p crust-conformance --test faults -- --nocapture --test-threads="${FAULTS_THREADS:-2}" "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
# With -q, libtest's progress marks (`.`, `i`, `F`) may open the line a scenario prints on.
grep -oE 'fault [^ ]+: (held( \(.*\))?$|FAILED.*)' "$LOG" >"$LOG.lines" || true
held=$(grep -cE ': held( |$)' "$LOG.lines")
failed=$(grep -c ': FAILED' "$LOG.lines")
echo
cat "$LOG.lines"
echo "faults: $held passed, $failed failed"
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
    echo "faults.sh: the suite failed outside any scenario (exit $rc): see above" >&2
fi
exit "$rc"
