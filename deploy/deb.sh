#!/usr/bin/env bash
# deploy/deb.sh (`make deb`): crust_<version>_amd64.deb from binaries built before (`make build`), by
# cargo-deb from the metadata in Cargo.toml ([package.metadata.deb]). Prints the package's path last.
#
#   deb.sh [--profile release|dev] [--output DIR] [--fast]
#
# --profile dev packages the debug build (the package test, conformance/tests/package.rs); --fast
# compresses less (cargo-deb's --fast).
#
# The version is Cargo.toml's with the git commit as `+git<commit time, UTC>.<commit>`, so that a later
# commit's package is a newer version to dpkg, and Debian revision 1: 0.1.0+git20261206051955.248a4d8-1.
# CRUST_COMMIT (as in build.rs) names the commit without git; DEB_VERSION overrides the whole version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE=release
OUTPUT=target/debian
FAST=()
while [ $# -gt 0 ]; do
    case $1 in
        --profile) PROFILE=$2; shift 2 ;;
        --output) OUTPUT=$2; shift 2 ;;
        --fast) FAST=(--fast); shift ;;
        *) echo "usage: $0 [--profile release|dev] [--output DIR] [--fast]" >&2; exit 2 ;;
    esac
done

base=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
commit=${CRUST_COMMIT:-$(git rev-parse --short=7 HEAD 2>/dev/null || true)}
when=$(git log -1 --format=%ct 2>/dev/null || true)
if [ -n "$commit" ] && [ -n "$when" ] && [ -z "${CRUST_COMMIT:-}" ]; then
    upstream="$base+git$(date -u -d "@$when" +%Y%m%d%H%M%S).$commit"
elif [ -n "$commit" ]; then
    upstream="$base+$commit"
else
    upstream=$base
fi
version=${DEB_VERSION:-$upstream-1}

# The changelog dpkg and lintian want (Cargo.toml names this path): one entry, this build.
mkdir -p target/crust-deb
cat > target/crust-deb/changelog <<CHANGELOG
crust ($version) unstable; urgency=medium

  * Built from commit ${commit:-unknown}.

 -- crust developers <crust@example.invalid>  $(date -u -R -d "@${when:-$(date +%s)}")
CHANGELOG

mkdir -p "$OUTPUT"
cargo deb --no-build --profile "$PROFILE" --deb-version "$version" --output "$OUTPUT" -p crust "${FAST[@]}" >&2
deb="$OUTPUT/crust_${version}_amd64.deb"
[ -f "$deb" ] || { echo "deb.sh: cargo-deb made no $deb" >&2; exit 1; }
echo "$deb"
