#!/usr/bin/python3
"""Elections nobody needed: a 3-node lockfs cluster with two mounted hosts is left idle while
busy loops keep every core loaded, and the elections it holds are counted.

Nothing fails during the run, so every election is a false one: a follower that did not hear
its leader within its election timeout, because the leader (or the follower) did not get the
CPU in time. Fast failover must not be paid for with these. The cluster runs with its default
timeouts. Each second the run asks the cluster for its term and leader (`lockfs cluster
status`); the term grows by one with each election a node starts, won or not. A status that
cannot be had in time is counted, not taken as an election.

Results are appended as JSON lines to OUT/elections.jsonl (`--short`, a few seconds for CI:
OUT/elections-short.jsonl). Run as root (the mounts need FUSE).

    bench/elections.py --lockfs target/release/lockfs                # 10 minutes
    bench/elections.py --lockfs target/release/lockfs --minutes 0.2  # a short look
"""

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (the cluster and mount handling is shared)


def burn():
    """Keeps one core busy until killed."""
    x = 0
    while True:
        x = (x * 31 + 7) % 1000003


def status(system):
    """(term, leader id) as the cluster reports them; None if it does not in time."""
    s = system.status()
    return None if s is None else (int(s["term"]), s.get("leader"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lockfs", default=os.path.join(compare.REPO, "target", "release", "lockfs"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--burners", type=int, default=2 * (os.cpu_count() or 1),
                    help="busy loops at the members' priority (default: two per core)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--port-base", type=int, default=24400)
    ap.add_argument("--short", action="store_true", help="a few seconds (CI)")
    opts = ap.parse_args()
    if opts.short:
        opts.minutes = 0.1
    if os.geteuid() != 0:
        raise compare.BenchError("run as root: the mounts need FUSE and allow_other")
    if not os.access(opts.lockfs, os.X_OK):
        raise compare.BenchError(f"{opts.lockfs}: no lockfs binary there (cargo build --release)")
    opts.lock_delay_ms, opts.ttl = None, 10
    base = tempfile.mkdtemp(prefix="lockfs-elections-", dir="/var/tmp")
    system = compare.Lockfs(base, opts)
    burners = []
    try:
        compare.start(system)
        first = None
        for _ in range(60):
            first = status(system)
            if first and first[1]:
                break
            time.sleep(1)
        if not (first and first[1]):
            raise compare.BenchError("the cluster has no leader after 60 s")
        burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(opts.burners)]
        for b in burners:
            b.start()
        print(f"idle under {opts.burners} busy loops for {opts.minutes} min; term {first[0]}, "
              f"leader {first[1]}", flush=True)
        term, leader = first
        leader_changes = unanswered = samples = 0
        deadline = time.monotonic() + opts.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(1)
            now = status(system)
            samples += 1
            if now is None:
                unanswered += 1
                continue
            if now[0] != term or (now[1] and now[1] != leader):
                print(f"  {time.strftime('%H:%M:%S')}: term {term} -> {now[0]}, "
                      f"leader {leader} -> {now[1]}", flush=True)
            if now[1] and now[1] != leader:
                leader_changes += 1
                leader = now[1]
            term = max(term, now[0])
        load = os.getloadavg()[0]
    finally:
        for b in burners:
            b.kill()
            b.join()
        system.stop()
        shutil.rmtree(base, ignore_errors=True)
    line = {"run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "short": opts.short,
            "minutes": opts.minutes,
            "burners": opts.burners, "cores": os.cpu_count(), "load_1m": round(load, 1),
            "elections": term - first[0], "leader_changes": leader_changes,
            "status_samples": samples, "status_unanswered": unanswered,
            "version": system.version()}
    os.makedirs(opts.out, exist_ok=True)
    name = "elections-short.jsonl" if opts.short else "elections.jsonl"
    with open(os.path.join(opts.out, name), "a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except compare.BenchError as e:
        print(f"elections: {e}", file=sys.stderr)
        sys.exit(1)
