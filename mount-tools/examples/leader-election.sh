#!/usr/bin/env bash
# Leader election with a file (DESIGN.md, job 1).
#
#   leader-election.sh candidate MOUNT ADDRESS [CMD...]
#       Blocks until this process is the leader, cluster-wide; then writes ADDRESS into the
#       leader file, where everyone can read it, and runs CMD (default: sleep forever) as the
#       leader. Leadership lasts exactly as long as that process: the lock is held through an
#       open file descriptor, so it goes when the process dies, or when the whole host does
#       (after the mount's session TTL).
#
#   leader-election.sh follow MOUNT
#       Prints the current leader and its fencing token, and a new line at every change
#       (without polling: `lockfs watch` reports each change as it commits).
#
# MOUNT is a lockfs mount (for `lockfs dev`: /mnt/lockfs); `lockfs` is on PATH (or in $LOCKFS).
# The leader file demands (`user.lockfs.on_loss=term`) that a leader whose host is cut off from
# the cluster be stopped (TERM, then KILL) as soon as its session's lease runs out, by whichever
# mount it runs on: it is gone before the lock-delay lets another host take over, so two
# leaders never run at once. (A mount's `-o on_lock_loss=signal` does the same for every lock.)
set -euo pipefail

role=${1:?usage: leader-election.sh candidate|follow MOUNT ...}
mount=${2:?usage: leader-election.sh candidate|follow MOUNT ...}
dir="$mount/svc/db"
file="$dir/leader"
mkdir -p "$dir"

case "$role" in
candidate)
    address=${3:?usage: leader-election.sh candidate MOUNT ADDRESS [CMD...]}
    shift 3
    exec 9>>"$file"       # open (create if missing); fd 9 carries the lock from here on
    # Only the file's owner may set it; another user's candidate relies on the owner's.
    setfattr -n user.lockfs.on_loss -v term "$file" 2>/dev/null ||
        [ "$(getfattr --only-values -n user.lockfs.on_loss "$file" 2>/dev/null)" = term ] ||
        echo "warning: $file: cannot set user.lockfs.on_loss" >&2
    flock 9               # blocks until no other process on any host holds it
    echo "$address" > "$file"    # replaces the contents atomically: readers see all or nothing
    echo "leader: $address (generation $(getfattr --only-values -n user.lockfs.lock_generation "$file"))"
    if [ $# -gt 0 ]; then exec "$@"; else exec sleep infinity; fi
    ;;
follow)
    # One line from `lockfs watch` for the file as it is now, then one per change to it (new
    # contents, a lock taken or released), pushed by the cluster as it commits: nothing is
    # read while nothing changes, and a change is printed within milliseconds.
    last=""
    "${LOCKFS:-lockfs}" watch --initial "$file" | while read -r _; do
        # The holders attribute is empty when nobody holds the lock: the file then still
        # names the old leader, which must not be trusted.
        if [ -n "$(getfattr --only-values -n user.lockfs.holders "$file" 2>/dev/null)" ]; then
            now="leader: $(cat "$file") (generation $(getfattr --only-values -n user.lockfs.lock_generation "$file"))"
        else
            now="no leader"
        fi
        if [ "$now" != "$last" ]; then
            echo "$now"
            last=$now
        fi
    done
    ;;
*)
    echo "usage: leader-election.sh candidate|follow MOUNT ..." >&2
    exit 2
    ;;
esac
