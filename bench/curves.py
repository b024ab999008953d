#!/usr/bin/python3
"""What lockfs costs as it grows: write and flock latency, memory, CPU and recovery times as
the number of live sessions grows, and as the tree grows.

- Sessions: idle sessions are held open by `lockfs bench sessions` (many per connection, one
  host name per connection, each kept alive as a host's would be), level after level. At each
  level: `echo >` and flock(2) cycles through a mount, writes through the CLI protocol, each
  node's resident memory, and the leader's CPU while nothing but keep-alives happen.
- Tree: files are written with `lockfs bench write --files N` up to each level. At each
  level: the same latencies and memory (per node of the tree), the time a follower killed
  with kill -9 takes to restart and catch up, and the time a new (fourth) member takes to
  join and catch up (it receives a snapshot of the whole tree), after which it is removed.

A level that fails is recorded with its error and ends that curve: that is where lockfs
breaks on this machine. Results are appended as JSON lines to OUT/curves.jsonl; `--short`
runs small levels (CI). Run as root.

    bench/curves.py --lockfs target/release/lockfs            # ~10 minutes
"""

import argparse
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (the cluster and mount handling is shared)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mount_latencies(root, count):
    """`echo >` of an existing file and flock(2) cycles through the mount at `root`."""
    path = os.path.join(root, "curve-file")
    writes, locks = [], []
    for i in range(count):
        t = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"x" * 64)
        os.close(fd)
        writes.append(time.perf_counter() - t)
    fd = os.open(os.path.join(root, "curve-lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for i in range(count):
            t = time.perf_counter()
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
            locks.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return {"mount_write": compare.summary(writes), "mount_flock": compare.summary(locks)}


def cli_write(system, count, files=256, concurrency=1):
    out = os.path.join(system.dir, "curve-write.jsonl")
    r = subprocess.run([system.exe, "bench", "write", "--count", str(count), "--concurrency",
                        str(concurrency), "--files", str(files), "--insecure", "--servers",
                        system.servers, "--out", out, "--timeout", "120"],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise compare.BenchError(f"lockfs bench write failed: {r.stderr.strip()}")
    with open(out) as f:
        return json.loads(f.read().splitlines()[-1])


def status(system):
    r = subprocess.run([system.exe, "cluster", "status", "--json", "--insecure", "--servers",
                        system.servers, "--timeout", "5"], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise compare.BenchError(f"cluster status: {r.stderr.strip()}")
    return json.loads(r.stdout)


def measure(system, opts):
    v = mount_latencies(system.mountpoints[0], opts.samples)
    w = cli_write(system, opts.samples)
    v["cli_write"] = {k: w[k] for k in ("p50_ms", "p99_ms")}
    v["rss_mib"] = [rss_mib(p.p.pid) for p in system.procs]
    leader = compare.wait_for("a leader", system.leader, 30)
    pid = system.procs[leader].p.pid
    before = cpu_seconds(pid)
    time.sleep(opts.idle)
    v["leader_idle_cpu_pct"] = round(100 * (cpu_seconds(pid) - before) / opts.idle, 1)
    return v


def sessions_curve(opts, base, record):
    system = compare.Lockfs(os.path.join(base, "sessions"), opts)
    compare.start(system)
    holder, level = None, 0
    try:
        record("sessions", 0, measure(system, opts))
        log = open(os.path.join(system.dir, "sessions-holder.log"), "w")
        holder = subprocess.Popen([system.exe, "bench", "sessions", "--levels",
                                   ",".join(str(n) for n in opts.session_levels), "--insecure",
                                   "--servers", system.servers, "--timeout", "60"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                  text=True)
        log.close()
        for level in opts.session_levels:
            # A level that cannot be reached in time is where it breaks.
            ready, _, _ = select.select([holder.stdout], [], [], opts.level_limit)
            if not ready:
                raise compare.BenchError(f"{level} sessions not open after "
                                         f"{opts.level_limit} s")
            line = holder.stdout.readline().split()
            if not line or line[0] != "ready":
                raise compare.BenchError(f"{level} sessions: the holder stopped "
                                         f"(exit {holder.poll()})")
            v = {"open_s": float(line[2])}
            time.sleep(opts.settle)  # keep-alives in their steady state
            v.update(measure(system, opts))
            v["members_status"] = [m["applied"] for m in status(system)["members"]]
            record("sessions", level, v)
            holder.stdin.write("\n")
            holder.stdin.flush()
    except Exception as e:  # noqa: BLE001 - where it breaks is a result
        record("sessions", level, {"error": repr(e)})
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        system.stop()


def caught_up(system, node_id, commit):
    s = status(system)
    for m in s["members"]:
        if m["id"] == node_id:
            return bool(m["reachable"]) and (m["applied"] or 0) >= commit and m["lag"] == 0
    return False


def restart_time(system):
    """kill -9 a follower, start it again: seconds until it has applied what was committed."""
    leader = compare.wait_for("a leader", system.leader, 30)
    follower = (leader + 1) % 3
    commit = status(system)["commit"]
    system.kill(follower)
    t = time.monotonic()
    system.procs[follower].start()
    compare.wait_for("the follower to catch up",
                     lambda: caught_up(system, follower + 1, commit), 600)
    return round(time.monotonic() - t, 3)


def join_time(system, data):
    """A fourth member joins with an empty directory: seconds until it has caught up (it
    receives a snapshot of the tree); then it is removed again."""
    port = system.ports[-1] + 1
    commit = status(system)["commit"]
    argv = [system.exe, "serve", "--id", "4", "--listen", f"127.0.0.1:{port}", "--join",
            system.servers, "--insecure", "--data", data]
    p = compare.Proc(argv, data + ".log")
    t = time.monotonic()
    p.start()
    try:
        compare.wait_for("the new member to catch up", lambda: caught_up(system, 4, commit), 900)
        took = round(time.monotonic() - t, 3)
    finally:
        subprocess.run([system.exe, "cluster", "remove", "4", "--insecure", "--servers",
                        system.servers], capture_output=True, timeout=60)
        p.kill()
        shutil.rmtree(data, ignore_errors=True)
    return took


def tree_curve(opts, base, record):
    system = compare.Lockfs(os.path.join(base, "tree"), opts)
    compare.start(system)
    try:
        record("tree", 0, measure(system, opts))
        for level in opts.tree_levels:
            try:
                t = time.monotonic()
                w = cli_write(system, level, files=level, concurrency=64)
                v = {"fill_s": round(time.monotonic() - t, 2), "fill_writes_per_s": w["ops_per_s"]}
                v.update(measure(system, opts))
                v["restart_s"] = restart_time(system)
                v["join_s"] = join_time(system, os.path.join(base, f"join-{level}"))
                record("tree", level, v)
            except Exception as e:  # noqa: BLE001 - where it breaks is a result
                record("tree", level, {"error": repr(e)})
                break
    finally:
        system.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lockfs", default=os.path.join(compare.REPO, "target", "release", "lockfs"))
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--port-base", type=int, default=24300)
    ap.add_argument("--curves", default="sessions,tree")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise compare.BenchError("run as root: the mounts need FUSE")
    if opts.short:
        opts.session_levels, opts.tree_levels = [10, 100], [100, 1000]
        opts.samples, opts.idle, opts.settle = 30, 1.0, 1.0
    else:
        # A cluster holds at most 100,000 sessions by default (`[quotas] sessions`), the two
        # mounts' included: the last level leaves them room.
        opts.session_levels = [10, 100, 1000, 10000, 30000, 99000]
        opts.tree_levels = [1000, 10000, 100000]
        opts.samples, opts.idle, opts.settle = 300, 5.0, 5.0
    opts.ttl, opts.lock_delay_ms, opts.level_limit = 10, None, 180
    os.makedirs(opts.out, exist_ok=True)
    results = os.path.join(opts.out, "curves-short.jsonl" if opts.short else "curves.jsonl")
    run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = compare.machine()

    def record(curve, level, value):
        line = {"run": run_id, "short": opts.short, "curve": curve, "level": level, **value,
                "machine": machine}
        print(f"{curve} {level}: {json.dumps(value)}", flush=True)
        with open(results, "a") as f:
            f.write(json.dumps(line) + "\n")

    base = tempfile.mkdtemp(prefix="lockfs-curves-", dir="/var/tmp")
    try:
        if "sessions" in opts.curves:
            sessions_curve(opts, base, record)
        if "tree" in opts.curves:
            tree_curve(opts, base, record)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except compare.BenchError as e:
        print(f"curves: {e}", file=sys.stderr)
        sys.exit(1)
