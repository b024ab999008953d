#!/usr/bin/env bash
# What serving metrics costs: `lockfs bench write` against a local 3-node cluster (insecure,
# loopback, data under a temporary directory), once without --metrics-listen and once with it
# while every node is scraped every second. Prints both results; with OUT=FILE, appends them
# as JSON lines.
#   LOCKFS=path/to/lockfs COUNT=2000 bench/metrics-cost.sh
set -euo pipefail
lockfs=${LOCKFS:-lockfs}
count=${COUNT:-2000}
base=${BASE_PORT:-7701}
dir=$(mktemp -d /tmp/lockfs-metrics-cost.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

peers="1=127.0.0.1:$base,2=127.0.0.1:$((base + 1)),3=127.0.0.1:$((base + 2))"
servers="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"

run() { # run NAME [metrics]
    local name=$1 metrics=${2:-}
    pids=()
    for id in 1 2 3; do
        local extra=()
        if [ -n "$metrics" ]; then extra=(--metrics-listen "127.0.0.1:$((base + 10 + id))"); fi
        "$lockfs" serve --id "$id" --peers "$peers" --data "$dir/$name-$id" --insecure \
            "${extra[@]}" > "$dir/$name-$id.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 100); do
        "$lockfs" cluster status --servers "$servers" --insecure > /dev/null 2>&1 && break
        sleep 0.2
    done
    local scraper=""
    if [ -n "$metrics" ]; then
        (while :; do
            for id in 1 2 3; do curl -s "127.0.0.1:$((base + 10 + id))/metrics" > /dev/null || true; done
            sleep 1
        done) &
        scraper=$!
    fi
    echo "== $name"
    "$lockfs" bench write --servers "$servers" --insecure --count "$count" ${OUT:+--out "$OUT"}
    if [ -n "$scraper" ]; then kill "$scraper"; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

run plain
run metrics with
