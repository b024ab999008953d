#!/usr/bin/env bash
# A service registry with ephemeral files (DESIGN.md, job 3: the HBase region-server pattern).
#
#   registry.sh member MOUNT NAME ADDRESS [CMD...]
#       Registers NAME (with ADDRESS as contents) in MOUNT/svc/rs and runs CMD (default: sleep
#       forever). The entry is an ephemeral file held open by that process: it disappears when
#       the process dies, or when its host dies or is cut off (after the mount's session TTL).
#
#   registry.sh master MOUNT
#       Lists the members, then prints "+ NAME ADDRESS" for each arrival and "- NAME" for each
#       departure, as they happen (without polling: `lockfs watch` reports each change as it
#       commits). `lockfs` is on PATH (or in $LOCKFS).
set -euo pipefail

role=${1:?usage: registry.sh member|master MOUNT ...}
mount=${2:?usage: registry.sh member|master MOUNT ...}
dir="$mount/svc/rs"
# Files in an ephemeral directory live as long as some process holds them open. Every run
# makes sure the directory is ephemeral before it creates in it: a run that found the
# directory made by another may otherwise create its file before the other marked it.
mkdir -p "$dir"
if [ "$(getfattr --only-values -n user.lockfs.ephemeral "$dir" 2>/dev/null)" != 1 ]; then
    setfattr -n user.lockfs.ephemeral -v 1 "$dir"
fi

case "$role" in
member)
    name=${3:?usage: registry.sh member MOUNT NAME ADDRESS [CMD...]}
    address=${4:?usage: registry.sh member MOUNT NAME ADDRESS [CMD...]}
    shift 4
    set -o noclobber      # O_EXCL: two members with one name cannot both register
    exec 8>"$dir/$name" || { echo "registry: $name is already registered" >&2; exit 1; }
    echo "$address" >&8   # through the descriptor that keeps the entry alive
    echo "registered $name"
    if [ $# -gt 0 ]; then exec "$@"; else exec sleep infinity; fi
    ;;
master)
    # One line from `lockfs watch` for the directory as it is now, then one per change in it
    # (an entry created, written or deleted), pushed by the cluster as it commits: the
    # directory is read again only when something changed.
    declare -A known=()
    "${LOCKFS:-lockfs}" watch --initial "$dir" | while read -r _; do
        declare -A seen=()
        for path in "$dir"/*; do
            [ -e "$path" ] || continue
            name=${path##*/}
            seen[$name]=1
            if [ -z "${known[$name]:-}" ]; then
                # A member creates its entry, then writes its address: an empty entry is not
                # complete yet, and the write's event brings the next pass.
                address=$(cat "$path" 2>/dev/null) || continue
                [ -n "$address" ] || continue
                echo "+ $name $address"
                known[$name]=1
            fi
        done
        for name in "${!known[@]}"; do
            if [ -z "${seen[$name]:-}" ]; then
                echo "- $name"
                unset "known[$name]"
            fi
        done
        unset seen
    done
    ;;
*)
    echo "usage: registry.sh member|master MOUNT ..." >&2
    exit 2
    ;;
esac
