#!/usr/bin/env bash
# Sets up a Linux host to run lockfs: runtime packages, the binary, the mount(8) helper and the
# systemd units. Run as root from a clone, after `cargo build --release` (or give the binary:
# LOCKFS_BIN=/path/to/lockfs mount-tools/setup-host.sh). Safe to run again.
#
#   /usr/local/bin/lockfs                   the binary
#   /sbin/mount.lockfs                      so `mount -t lockfs` and /etc/fstab work
#   /etc/systemd/system/lockfs-server@.service, lockfs-mount@.service, mnt-lockfs.mount (example)
#   /usr/local/share/doc/lockfs/            README and examples
#
# It enables nothing: see README.md, "Operations", for the next steps.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

packages=(fuse3 attr util-linux)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
fi

bin=${LOCKFS_BIN:-}
if [ -z "$bin" ]; then
    for candidate in "${CARGO_TARGET_DIR:-$repo/target}/release/lockfs" \
                     "${CARGO_TARGET_DIR:-$repo/target}/debug/lockfs"; do
        if [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || {
    echo "setup-host: no lockfs binary; run cargo build --release first or set LOCKFS_BIN" >&2
    exit 1
}
install -m 0755 "$bin" /usr/local/bin/lockfs
install -m 0755 "$here/mount.lockfs" /sbin/mount.lockfs
install -d /etc/lockfs /usr/local/share/doc/lockfs/examples
if [ -d /etc/systemd/system ]; then
    install -m 0644 "$here"/systemd/* /etc/systemd/system/
    command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true
fi
install -m 0644 "$repo/README.md" /usr/local/share/doc/lockfs/
install -m 0755 "$here"/examples/*.sh /usr/local/share/doc/lockfs/examples/
# FUSE: allow_other for non-root mounts needs user_allow_other.
if [ -f /etc/fuse.conf ] && ! grep -q '^user_allow_other' /etc/fuse.conf; then
    echo user_allow_other >> /etc/fuse.conf
fi
echo "lockfs installed: $(/usr/local/bin/lockfs --version 2>/dev/null || echo /usr/local/bin/lockfs)"
