# A fault-suite client (tests/faults.rs, tests/common/workloads.rs).
# A semaphore client: loops like [`LOCK_CLIENT`] on `$M/sem`, logging when each turn began,
# ticked (its work, every 0.1 s) and ended, all inside the lock, so the true holding contains
# the logged one; a turn killed on lock loss ends at its last tick.
while [ ! -e "$OUT/stop" ] && [ "$(date +%s)" -lt "$END" ]; do
    flock -w 10 "$M/sem" bash -c 'echo "sem $ID $(date +%s%N) begin"
        for i in $(seq $((RANDOM % 4))); do sleep 0.1; echo "sem $ID $(date +%s%N) tick"; done
        echo "sem $ID $(date +%s%N) end"' \
        >> "$OUT/sem-$ID.log" 2>> "$OUT/sem-$ID.err"
done
