# A fault-suite client (tests/faults.rs, tests/common/workloads.rs).
# A lock client: loops until `$OUT/stop` exists (or, as a bound, until `$END`, seconds since
# the epoch) taking the lock with `flock -w` for short critical sections.
while [ ! -e "$OUT/stop" ] && [ "$(date +%s)" -lt "$END" ]; do
    INV=$(date +%s%N) N=$((1 + RANDOM % 3)) flock -w 10 "$M/lock" bash -c "$CS" \
        >> "$OUT/client-$ID.log" 2>> "$OUT/client-$ID.err"
    echo "attempt $ID $? $(date +%s%N)" >> "$OUT/client-$ID.log"
done
