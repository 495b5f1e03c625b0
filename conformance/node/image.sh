#!/usr/bin/env bash
# conformance/node/image.sh: builds (once) the Debian 12 test node `make node-test` boots, and prints the
# directory holding it: disk.qcow2 (compressed, never written to: each run boots an overlay of it),
# vmlinuz and initrd.img (bookworm-backports' kernel, 6.12: idmapped mounts under overlayfs, so pods with
# user namespaces work), and vmlinuz-6.1 and initrd.img-6.1 (bookworm's stock kernel, where they are
# refused and Debian's CRIU works; node-test.sh boots it with NODE_KERNEL=6.1).
#
# The image is cached outside the repository under $CRUST_NODE_CACHE (default
# /var/cache/crust-node-test)/<first 16 hex digits of this script's sha256>/, so changing the recipe
# (this file) builds a new one; older ones are removed once the new one is complete.
#
# Recipe: debootstrap --variant=minbase of bookworm from deb.debian.org with systemd (PID 1, unified
# cgroup v2 hierarchy), the stock kernel (6.1) and linux-image-amd64 from bookworm-backports (6.12),
# AppArmor, dbus, runc, crun, the CNI plugins, iptables, docker-registry, make, criu
# (checkpoint/restore) and containerd (Debian's 1.6, not enabled: the node bench starts one of its own
# beside crust, as `make bench` does on the host); hostname crust-node; no network configuration (the VM has no NIC, only
# loopback); the serial getty masked (it hangs up ttyS0, the console the run reports on); and a oneshot
# crust-node-test.service, after multi-user.target, that mounts the repository share (9p tag `repo`) and
# runs conformance/node/run-inside.sh from it, so that the runner can change without a new image.
# The rootfs becomes an ext4 image with `mkfs.ext4 -d` (no loop mount), then a compressed qcow2; the
# rootfs directory and the raw image are deleted. About 5-8 minutes and 400 MB.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CRUST_NODE_CACHE:-/var/cache/crust-node-test}
MIRROR=${CRUST_NODE_MIRROR:-http://deb.debian.org/debian}
HASH=$(sha256sum "$HERE/image.sh" | cut -c1-16)
OUT=$CACHE/$HASH
PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-amd64,iproute2,iptables,runc,crun,ca-certificates
PACKAGES=$PACKAGES,containernetworking-plugins,docker-registry,apparmor,apparmor-utils,dbus,make,procps,sudo,criu,containerd

say() { echo "image.sh: $*" >&2; }

if [ -s "$OUT/disk.qcow2" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/vmlinuz-6.1" ]; then
    say "using the cached node image $OUT"
    echo "$OUT"
    exit 0
fi
[ "$(id -u)" = 0 ] || { say "building the node image needs root (debootstrap)"; exit 2; }
for t in debootstrap mkfs.ext4 qemu-img; do
    command -v "$t" >/dev/null || { say "$t is missing (make node-test-deps)"; exit 2; }
done

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf --one-file-system "$WORK"' EXIT
ROOTFS=$WORK/rootfs
start=$(date +%s)
say "building the node image in $OUT (debootstrap from $MIRROR; a few minutes)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    say "debootstrap failed"
    exit 1
}

# The backports kernel beside the stock one (the chroot uses the host's resolver for this one install).
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$MIRROR" \
    /usr/share/keyrings/debian-archive-keyring.gpg >"$ROOTFS/etc/apt/sources.list.d/backports.sources"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
{
    chroot "$ROOTFS" apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y -q --no-install-recommends \
            -t bookworm-backports linux-image-amd64
} >"$WORK/backports.log" 2>&1 || {
    tail -n 30 "$WORK/backports.log" >&2
    say "installing the bookworm-backports kernel failed"
    exit 1
}

echo crust-node >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 crust-node\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOTFS/etc/hosts"
printf '/dev/vda / ext4 rw,relatime,errors=remount-ro 0 0\n' >"$ROOTFS/etc/fstab"
: >"$ROOTFS/etc/resolv.conf"
# The boot hook: mounts the repository share and runs the runner from it (which writes to /dev/console).
cat >"$ROOTFS/usr/local/sbin/crust-node-test" <<'HOOK'
#!/bin/sh
exec >/dev/console 2>&1
mkdir -p /mnt/repo
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro repo /mnt/repo; then
    echo "node-test: 0 passed, 1 failed (the repository share did not mount)"
    systemctl poweroff
    exit 1
fi
exec /mnt/repo/conformance/node/run-inside.sh
HOOK
chmod 0755 "$ROOTFS/usr/local/sbin/crust-node-test"
cat >"$ROOTFS/etc/systemd/system/crust-node-test.service" <<'UNIT'
[Unit]
Description=crust node test (conformance/node/run-inside.sh from the 9p share)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/crust-node-test
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
chroot "$ROOTFS" systemctl enable crust-node-test.service >/dev/null 2>&1
# Quiet and quick: no getty on the serial console, nothing periodic, the packaged registry and containerd
# off (the runner starts its own registry on 127.0.0.1 with temporary storage, the bench its containerd).
chroot "$ROOTFS" systemctl mask serial-getty@ttyS0.service getty@tty1.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    systemd-networkd-wait-online.service >/dev/null 2>&1
chroot "$ROOTFS" systemctl disable docker-registry.service containerd.service >/dev/null 2>&1 || true
chroot "$ROOTFS" passwd -d root >/dev/null
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log

cp "$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -n 1)" "$WORK/vmlinuz"
cp "$(ls "$ROOTFS"/boot/initrd.img-* | sort -V | tail -n 1)" "$WORK/initrd.img"
cp "$(ls "$ROOTFS"/boot/vmlinuz-6.1.* | sort -V | tail -n 1)" "$WORK/vmlinuz-6.1"
cp "$(ls "$ROOTFS"/boot/initrd.img-6.1.* | sort -V | tail -n 1)" "$WORK/initrd.img-6.1"
mkfs.ext4 -q -L crust-node -d "$ROOTFS" "$WORK/disk.img" 3G >&2
rm -rf --one-file-system "$ROOTFS"
qemu-img convert -c -O qcow2 "$WORK/disk.img" "$WORK/disk.qcow2"
rm -f "$WORK/disk.img" "$WORK/debootstrap.log" "$WORK/backports.log"
chmod 0444 "$WORK/disk.qcow2"
# Complete: move into place, then drop images of older recipes.
rm -rf "$OUT"
mv "$WORK" "$OUT"
chmod 0755 "$OUT"
trap - EXIT
for old in "$CACHE"/*/; do
    old=${old%/}
    [ "$old" = "$OUT" ] || case ${old##*/} in build.*) ;; *) rm -rf --one-file-system "$old" ;; esac
done
say "built $OUT in $(($(date +%s) - start)) s ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
