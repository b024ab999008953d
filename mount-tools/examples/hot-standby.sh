#!/usr/bin/env bash
# Hot standby with a fencing token (DESIGN.md, job 4: the arbitration-disk pattern).
#
#   hot-standby.sh node MOUNT NAME STORE
#       Blocks until this node is active (the standby waits in flock), then writes
#       "NAME <n>" records to the shared STORE, each stamped with the lock generation it
#       holds, once every 0.2 s, forever.
#
#   hot-standby.sh write STORE TOKEN RECORD
#       The store's side: appends RECORD to STORE/records unless a write with a newer token
#       was accepted before; refuses it (exit 1) otherwise. A node that lost the lock without
#       noticing (paused, cut off) still holds an old token, so its late writes are refused.
#
# STORE stands for a disk or a database that both nodes reach; here it is a directory.
# Fencing keeps a cut-off active node's late writes out of the store; mounting with
# `-o on_lock_loss=signal`, or `setfattr -n user.lockfs.on_loss -v term` on the lock file, also
# stops that node (TERM, then KILL) once its session's lease runs out, before the standby can
# take over.
set -euo pipefail

role=${1:?usage: hot-standby.sh node|write ...}

# Accept a write only if TOKEN is at least the newest token seen, under a local lock so that
# the check and the write are one step.
fenced_write() {
    local store=$1 token=$2 record=$3
    mkdir -p "$store"
    (
        flock 7
        newest=$(cat "$store/token" 2>/dev/null || echo 0)
        if [ "$token" -lt "$newest" ]; then
            echo "refused: token $token is older than $newest: $record" >&2
            exit 1
        fi
        echo "$token" > "$store/token"
        echo "$token $record" >> "$store/records"
    ) 7>>"$store/.lock"
}

case "$role" in
node)
    mount=${2:?usage: hot-standby.sh node MOUNT NAME STORE}
    name=${3:?usage: hot-standby.sh node MOUNT NAME STORE}
    store=${4:?usage: hot-standby.sh node MOUNT NAME STORE}
    mkdir -p "$mount/svc"
    exec 9>>"$mount/svc/active"
    echo "$name: standby"
    flock 9
    # The generation is bumped at every exclusive grant: the fencing token of this term.
    token=$(getfattr --only-values -n user.lockfs.lock_generation "$mount/svc/active")
    echo "$name" > "$mount/svc/active"
    echo "$name: active with token $token"
    n=0
    while true; do
        n=$((n + 1))
        fenced_write "$store" "$token" "$name $n" || exit 1
        sleep 0.2
    done
    ;;
write)
    fenced_write "${2:?usage: hot-standby.sh write STORE TOKEN RECORD}" \
        "${3:?usage: hot-standby.sh write STORE TOKEN RECORD}" \
        "${4:?usage: hot-standby.sh write STORE TOKEN RECORD}"
    ;;
*)
    echo "usage: hot-standby.sh node|write ..." >&2
    exit 2
    ;;
esac
