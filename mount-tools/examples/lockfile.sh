#!/usr/bin/env bash
# A lockfile without stale locks (DESIGN.md, job 5).
#
#   lockfile.sh MOUNT JOB -- CMD...
#
# The classic idiom, `set -o noclobber; echo $$ > lockfile`, succeeds on exactly one host of the
# cluster (it is O_CREAT|O_EXCL). In an ephemeral directory, with the lockfile kept open, it also
# never goes stale: the file vanishes when its owner dies, so no one has to clean up after a
# crash. Exits with CMD's status, or 1 if another process holds the lockfile.
set -euo pipefail

usage="usage: lockfile.sh MOUNT JOB -- CMD..."
mount=${1:?$usage}
job=${2:?$usage}
[ "${3:-}" = "--" ] || { echo "$usage" >&2; exit 2; }
shift 3
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }

dir="$mount/eph"
# Every run makes sure the directory is ephemeral before it creates in it: a run that found
# the directory made by another may otherwise create its file before the other marked it.
mkdir -p "$dir"
if [ "$(getfattr --only-values -n user.lockfs.ephemeral "$dir" 2>/dev/null)" != 1 ]; then
    setfattr -n user.lockfs.ephemeral -v 1 "$dir"
fi
set -o noclobber
if ! exec 8>"$dir/$job"; then
    echo "lockfile: $job is held by $(cat "$dir/$job" 2>/dev/null || echo '?')" >&2
    exit 1
fi
echo "$(hostname) $$" >&8
set +o noclobber
# CMD runs as a child, which inherits fd 8: the lockfile lives until CMD and this shell are gone.
"$@"
