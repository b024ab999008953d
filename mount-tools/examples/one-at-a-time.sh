#!/usr/bin/env bash
# Run a job on one host at a time (DESIGN.md, job 2).
#
#   one-at-a-time.sh MOUNT JOB [WAIT] -- CMD...
#
# Runs CMD while holding the cluster-wide lock MOUNT/jobs/JOB. Without WAIT (or WAIT=0) it gives
# up at once when another host runs the job (`flock -n`); with WAIT it waits up to WAIT seconds
# (`flock -w`). Exits with CMD's status, or 1 when the lock was not had.
#
# The lock is plain flock(1): the same line works on a local file, here it works across every
# host that mounts the cluster.
set -euo pipefail

usage="usage: one-at-a-time.sh MOUNT JOB [WAIT] -- CMD..."
mount=${1:?$usage}
job=${2:?$usage}
shift 2
wait=0
if [ "${1:-}" != "--" ]; then
    wait=${1:?$usage}
    shift
fi
[ "${1:-}" = "--" ] || { echo "$usage" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }

mkdir -p "$mount/jobs"
if [ "$wait" = 0 ]; then
    how=(-n)
else
    how=(-w "$wait")
fi
# -E 200: tell "someone else holds it" (exit 200) from the job's own failure.
set +e
flock "${how[@]}" -E 200 "$mount/jobs/$job" "$@"
status=$?
set -e
if [ "$status" = 200 ]; then
    echo "one-at-a-time: $job is running on another host; not started" >&2
    exit 1
fi
exit "$status"
