#!/usr/bin/env bash
# Installs the Debian packages lockfs needs to build, test and run:
#   fuse3               fusermount3, for `lockfs mount`
#   clang libclang-dev  bindgen, when librocksdb-sys builds RocksDB from source
#   pkg-config          build scripts looking for system libraries
#   attr                getfattr/setfattr, for the lock xattrs in tests and examples
#   util-linux          flock(1)
#   python3             tests that take fcntl locks from Python
#   inotify-tools       inotifywait, for the test of inotify on a mount
#   liblockfile-bin     dotlockfile, the NFS-safe lockfile idiom (link(2)) tested on mounts
#   python3-filelock    py-filelock, a Python locking library tested on mounts (system
#                       /usr/bin/python3)
#   prometheus          promtool, which checks mount-tools/prometheus/ (installed without
#                       its recommends; the server itself is not needed)
#   etcd-server etcd-client zookeeper python3-etcd3 python3-kazoo python3-matplotlib
#                       the peers and their Python clients, for bench/compare.py (its short
#                       mode runs in the tests)
# Run as root (or it uses sudo). Safe to run again.
set -euo pipefail
packages=(fuse3 clang libclang-dev pkg-config attr util-linux python3 inotify-tools ca-certificates
    liblockfile-bin python3-filelock etcd-server etcd-client zookeeper python3-etcd3 python3-kazoo
    python3-matplotlib)
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
lean=()
dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed" || lean+=(prometheus)
if [ "${#missing[@]}" -gt 0 ] || [ "${#lean[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    if [ "${#missing[@]}" -gt 0 ]; then
        "${sudo[@]}" apt-get install -y "${missing[@]}"
    fi
    if [ "${#lean[@]}" -gt 0 ]; then
        "${sudo[@]}" apt-get install -y --no-install-recommends "${lean[@]}"
    fi
fi
if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi
