#!/usr/bin/env bash
# deploy/install.sh (`make install`, `make uninstall`): puts crust on a node, or takes it off.
#
#   install.sh install   --from DIR [--destdir ROOT] [--bindir /usr/local/bin]
#   install.sh uninstall            [--destdir ROOT] [--bindir /usr/local/bin]
#
# install: crustd, crust-monitor, crust-pause and crustctl from DIR into BINDIR; the systemd unit into
# /etc/systemd/system/crust.service; /etc/crust/crust.toml (the default configuration) only when there is
# none, so an operator's file is never replaced; the default CNI conflist into /etc/cni/net.d only when no
# network is configured there. With no --destdir and systemd running, `systemctl daemon-reload` follows
# (enabling and starting the service is the operator's: `systemctl enable --now crust`).
# uninstall: the binaries and the unit go; the configuration, the CNI network and crust's state
# (/var/lib/crust) stay, and the script says so. Containers keep running either way: they live in their
# monitors, not in crustd.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BINARIES=(crustd crust-monitor crust-pause crustctl)

usage() {
    echo "usage: $0 install --from DIR [--destdir ROOT] [--bindir DIR] | uninstall [--destdir ROOT] [--bindir DIR]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
ACTION=$1
shift
FROM=""
DESTDIR=""
BINDIR=/usr/local/bin
while [ $# -gt 0 ]; do
    case $1 in
        --from) FROM=$2; shift 2 ;;
        --destdir) DESTDIR=${2%/}; shift 2 ;;
        --bindir) BINDIR=$2; shift 2 ;;
        *) usage ;;
    esac
done

UNIT=$DESTDIR/etc/systemd/system/crust.service
CONF=$DESTDIR/etc/crust/crust.toml
CNI_DIR=$DESTDIR/etc/cni/net.d

reload_systemd() {
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
}

case $ACTION in
    install)
        [ -n "$FROM" ] || usage
        for b in "${BINARIES[@]}"; do
            [ -x "$FROM/$b" ] || { echo "install.sh: $FROM/$b is missing: build first (make build)" >&2; exit 1; }
        done
        install -d -m 0755 "$DESTDIR$BINDIR"
        for b in "${BINARIES[@]}"; do
            # To a temporary name, then renamed: a running crustd keeps its old binary intact.
            install -m 0755 "$FROM/$b" "$DESTDIR$BINDIR/.$b.new"
            mv -f "$DESTDIR$BINDIR/.$b.new" "$DESTDIR$BINDIR/$b"
            echo "installed $BINDIR/$b"
        done
        install -D -m 0644 "$HERE/crust.service" "$UNIT"
        # The unit names the package's /usr/bin/crustd; this install's is in BINDIR.
        sed -i "s|^ExecStart=/usr/bin/crustd|ExecStart=$BINDIR/crustd|" "$UNIT"
        echo "installed /etc/systemd/system/crust.service"
        if [ -e "$CONF" ]; then
            echo "kept /etc/crust/crust.toml (the default is in $HERE/crust.toml)"
        else
            # 0600: an operator adds registry credentials to this file.
            install -D -m 0600 "$HERE/crust.toml" "$CONF"
            echo "installed /etc/crust/crust.toml"
        fi
        install -d -m 0755 "$DESTDIR/etc/crust/crust.d"
        if [ -d "$CNI_DIR" ] && find "$CNI_DIR" -maxdepth 1 \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) | grep -q .; then
            echo "kept the CNI network in /etc/cni/net.d"
        else
            install -D -m 0644 "$HERE/10-crust.conflist" "$CNI_DIR/10-crust.conflist"
            echo "installed /etc/cni/net.d/10-crust.conflist"
        fi
        reload_systemd
        ;;
    uninstall)
        for b in "${BINARIES[@]}"; do
            rm -f "$DESTDIR$BINDIR/$b"
        done
        rm -f "$UNIT"
        reload_systemd
        echo "removed the binaries and the unit; kept /etc/crust, /etc/cni/net.d and /var/lib/crust"
        ;;
    *) usage ;;
esac
