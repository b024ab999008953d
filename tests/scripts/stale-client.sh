# A fault-suite client (tests/faults.rs, tests/common/workloads.rs).
# The holder that host B's cut-off strands: it takes the lock once and keeps writing to the
# store for longer than its session can outlive the cut-off. Its late writes must be refused
# by the store once a newer holder wrote.
INV=$(date +%s%N) flock -w 60 "$M/lock" bash -c "$CS" >> "$OUT/client-$ID.log" 2>> "$OUT/client-$ID.err"
echo "attempt $ID $? $(date +%s%N)" >> "$OUT/client-$ID.log"
