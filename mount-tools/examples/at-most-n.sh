#!/usr/bin/env bash
# Run a command on at most N hosts at once, cluster-wide: a semaphore ("at most 3 backups at a
# time across the fleet").
#
#   at-most-n.sh MOUNT NAME N [WAIT] -- CMD...
#
# MOUNT/semaphores/NAME admits N exclusive flock holders at once (its user.lockfs.max_holders);
# the others wait their turn, first come first served. Without WAIT the wait is as long as it
# takes; with WAIT it is at most WAIT seconds (0: not at all), after which the script gives up
# and exits 1. Otherwise it exits with CMD's status. Each holder's lock goes when CMD ends, or
# when its host dies (after the mount's session TTL and the lock-delay).
#
# The lock itself is plain flock(1): only the setting makes it a semaphore.
set -euo pipefail

usage="usage: at-most-n.sh MOUNT NAME N [WAIT] -- CMD..."
mount=${1:?$usage}
name=${2:?$usage}
n=${3:?$usage}
shift 3
wait=""
if [ "${1:-}" != "--" ]; then
    wait=${1:?$usage}
    shift
fi
[ "${1:-}" = "--" ] || { echo "$usage" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }

file="$mount/semaphores/$name"
mkdir -p "$mount/semaphores"
: >> "$file"
# Every runner names N; setting the value it already has changes nothing. A smaller N than the
# holders there now is refused (EBUSY) until enough of them are done.
if [ "$(getfattr --only-values -n user.lockfs.max_holders "$file")" != "$n" ]; then
    setfattr -n user.lockfs.max_holders -v "$n" "$file"
fi
case "$wait" in
"") how=() ;;
0) how=(-n) ;;
*) how=(-w "$wait") ;;
esac
# -E 200: tell "all N slots are taken" (exit 200) from the command's own failure.
set +e
flock "${how[@]}" -E 200 "$file" "$@"
status=$?
set -e
if [ "$status" = 200 ]; then
    echo "at-most-n: $n already run $name; not started" >&2
    exit 1
fi
exit "$status"
