# A fault-suite client (tests/faults.rs, tests/common/workloads.rs).
# One critical section, run by `flock` while it holds the lock: read the fencing token, make
# `$N` writes stamped with it to the fenced store (outside the cluster), log each (before, `i`,
# and after, `w`: a section killed in the middle may have made a write it could not log) and
# the section with the time `flock` was invoked (`$INV`). With `$MARKER`, it says it holds the
# lock by creating that file.
t0=$(date +%s%N)
g=$(getfattr --only-values -n user.lockfs.lock_generation "$M/lock") || exit 3
if [ -n "${MARKER:-}" ]; then touch "$MARKER"; fi
for k in $(seq "$N"); do
    echo "i $ID $g $(date +%s%N) $HOST"
    if "$STORE" write "$OUT/store" "$g" "$ID-$k" 2>/dev/null; then r=ok; else r=refused; fi
    echo "w $ID $g $r $(date +%s%N) $HOST"
    sleep 0.2
done
echo "cs $ID $g $INV $t0 $(date +%s%N) $HOST"
