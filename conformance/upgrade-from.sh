#!/usr/bin/env bash
# conformance/upgrade-from.sh: crust as it was at an older commit (the last release point), built once into
# a cache outside the repository, for the in-place upgrade tests: conformance/tests/upgrade.rs starts
# containers with these binaries and hands them to this tree's crustd, and `make node-test` packages
# them as the older .deb that the node upgrades from while a container runs.
#
#   upgrade-from.sh [--check] [COMMIT]
#
# COMMIT defaults to the last release point, 020e570 (2026-12-02 02:04 UTC): the last commit on main
# before this round's work, the crust that nodes ran before on-disk formats were numbered (6f7e67c) and
# before the .deb existed. Its sources come from `git archive` (no worktree is registered), its release
# binaries are built in a target dir of their own (never this tree's: a build of other sources with other
# profile settings there rebuilds dependencies under the same file names, and this tree's next build then
# links against mismatched crates), deleted afterwards; they are copied to
# /var/cache/crust-upgrade-from/<commit>/ with the commit's deploy/crust.toml (the older crustd refuses
# the newer keys) and the static pause of this tree (src/pause is unchanged since that commit).
# Prints that directory last. --check prints it only when it is complete (status 1 otherwise), building
# nothing. CRUST_UPGRADE_FROM_CACHE overrides /var/cache/crust-upgrade-from.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CRUST_UPGRADE_FROM_CACHE:-/var/cache/crust-upgrade-from}
DEFAULT=020e570
CHECK=""
if [ "${1:-}" = --check ]; then CHECK=1; shift; fi
commit=$(git -C "$REPO" rev-parse --verify --short=7 "${1:-$DEFAULT}^{commit}")
OUT=$CACHE/$commit
BINARIES=(crustd crust-monitor crustctl)

if [ -f "$OUT/complete" ]; then
    echo "$OUT"
    exit 0
fi
[ -z "$CHECK" ] || { echo "upgrade-from.sh: $OUT is not built (conformance/upgrade-from.sh $commit)" >&2; exit 1; }

PAUSE=${CARGO_TARGET_DIR:-$REPO/target}/static/x86_64-unknown-linux-gnu/tiny/crust-pause
[ -x "$PAUSE" ] || make -C "$REPO" --no-print-directory pause >&2
mkdir -p "$CACHE"
TARGET=$CACHE/target
SRC=$(mktemp -d /tmp/crust-upgrade-from.XXXXXX)
trap 'rm -rf "$SRC" "$TARGET"' EXIT
git -C "$REPO" archive "$commit" | tar -x -C "$SRC"
echo "upgrade-from.sh: building crust at $commit (release) in $SRC, target dir $TARGET" >&2
(cd "$SRC" && CARGO_INCREMENTAL=0 CRUST_COMMIT=$commit CARGO_TARGET_DIR=$TARGET nice cargo build -q --release --bins -p crust) >&2
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
for b in "${BINARIES[@]}"; do
    cp "$TARGET/release/$b" "$OUT.tmp/$b"
done
cp "$PAUSE" "$OUT.tmp/crust-pause"
cp "$SRC/deploy/crust.toml" "$OUT.tmp/crust.toml"
echo "$commit" >"$OUT.tmp/commit"
"$OUT.tmp/crustd" --version >&2
touch "$OUT.tmp/complete"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
