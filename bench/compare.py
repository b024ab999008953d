#!/usr/bin/python3
"""lockfs side by side with etcd and ZooKeeper: the same workloads, one system after the other.

Each system runs as three members on loopback with its data on the same disk, and each workload
goes through the client a user of that system would use:

- etcd 3.4 (Debian `etcd-server`) through its v3 gRPC API (python3-etcd3), locks with the recipe
  of etcd's own `concurrency.Mutex` (a key per waiter under a prefix, leased to a session that
  is kept alive, each waiter watching the key created just before its own);
- ZooKeeper 3.8 (Debian `zookeeper`) through kazoo and its `Lock` recipe;
- lockfs through two mounts (`echo >`, `cat` and flock(2), as a shell or program does), and for
  writes also through the CLI protocol (`lockfs bench write`).

Workloads: sequential write (of keys that exist), sequential creation of new keys (new files
through a mount), linearizable read, uncontended lock acquire+release, contended lock
hand-offs per second (4 and 32 contenders, each its own client process), time from a lock
holder's crash to the next holder (kill -9 of the holding process, and of its whole
host/session), leader kill -9 to the next acknowledged write, and writes per second with 64
concurrent writers.

Results are appended as JSON lines to OUT/results.jsonl; `--report` draws them (matplotlib) into
OUT/*.svg and rewrites the generated part of BENCHMARKS.md. `--short` runs every workload for a
moment (CI: it proves every system starts and every workload runs; the numbers mean nothing).

Run as root (lockfs mounts need FUSE); installs what is missing with apt, and fails loudly
when a system cannot be started. Never run two at once: the ports are fixed.

    bench/compare.py --lockfs target/release/lockfs            # full run, ~15 minutes
    bench/compare.py --lockfs target/release/lockfs --report   # and redraw BENCHMARKS.md
"""

import argparse
import fcntl
import json
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APT_PACKAGES = ["etcd-server", "etcd-client", "zookeeper", "python3-etcd3", "python3-kazoo",
                "python3-matplotlib", "fuse3"]
SYSTEMS = ["etcd", "zookeeper", "lockfs"]


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Setup


def ensure_packages():
    """Installs the peers and Python clients with apt when any is missing."""
    missing = []
    for pkg in APT_PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                           text=True)
        if "install ok installed" not in r.stdout:
            missing.append(pkg)
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q"] + missing):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def wait_for(what, check, seconds):
    """Calls `check` until it returns a true value; fails loudly after `seconds`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v is not None and v is not False:
                return v
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.1)
    raise BenchError(f"{what}: not ready after {seconds} s (last error: {last!r})")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pct(samples, p):
    """The value below which p percent of the samples fall (nearest rank)."""
    if not samples:
        return None
    s = sorted(samples)
    rank = max(1, min(len(s), int(-(-p * len(s) // 100))))
    return s[rank - 1]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


class Proc:
    """A member process with its log file; stopped with SIGKILL."""

    def __init__(self, argv, log, env=None):
        self.argv, self.log, self.env = argv, log, env
        self.p = None

    def start(self):
        out = open(self.log, "ab")
        self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=self.env,
                                  start_new_session=True)
        out.close()

    def kill(self):
        if self.p and self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def alive(self):
        return self.p is not None and self.p.poll() is None


# ---------------------------------------------------------------------------------------------
# The three systems: start three members, find and kill the leader, and make clients.


def start(system):
    """Starts `system`'s members (and mounts); a start that fails stops what it started."""
    try:
        system.start()
    except BaseException:
        system.stop()
        raise


class Members:
    """Three member processes (`procs`); a system says when member i serves (`serving`)."""

    def stop(self):
        for p in self.procs:
            p.kill()

    def kill(self, i):
        self.procs[i].kill()

    def restart(self, i):
        self.procs[i].start()
        wait_for(f"{self.name} member {i}", lambda: self.serving(i), 60)


class Etcd(Members):
    name = "etcd"

    def __init__(self, base, opts):
        self.dir = os.path.join(base, "etcd")
        self.client_ports = [opts.port_base + i for i in range(3)]
        self.peer_ports = [opts.port_base + 10 + i for i in range(3)]
        cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        self.procs = []
        for i in range(3):
            argv = ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(self.dir, f"e{i}"),
                    "--listen-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
                    "--advertise-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
                    "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                    "--initial-cluster", cluster, "--initial-cluster-token", "bench",
                    "--initial-cluster-state", "new"]
            self.procs.append(Proc(argv, os.path.join(self.dir, f"e{i}.log")))
        self.spec = {"kind": "etcd", "ports": self.client_ports}

    def version(self):
        r = subprocess.run(["etcd", "--version"], capture_output=True, text=True)
        return r.stdout.splitlines()[0] if r.stdout else "etcd"

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        for p in self.procs:
            p.start()
        wait_for("etcd leader", lambda: self.leader() is not None, 60)

    def leader(self):
        """Index of the current leader, as the members that answer agree on."""
        import etcd3
        for i, port in enumerate(self.client_ports):
            if not self.procs[i].alive():
                continue
            try:
                c = etcd3.client(host="127.0.0.1", port=port, timeout=1)
                st = c.status()
                c.put("/bench/leader-probe", "x")
                names = {m.id: m.name for m in c.members}
                c.close()
                if st.leader is not None:
                    return int(names[st.leader.id][1:])
            except Exception:  # noqa: BLE001 - this member cannot say; ask the next
                continue
        return None

    def serving(self, i):
        return port_open(self.client_ports[i])

    def writer_member(self, leader):
        """The member a lone client talks to during failover: not the leader."""
        return (leader + 1) % 3


class ZooKeeper(Members):
    name = "zookeeper"

    def __init__(self, base, opts):
        self.dir = os.path.join(base, "zookeeper")
        self.client_ports = [opts.port_base + 20 + i for i in range(3)]
        quorum = [(opts.port_base + 30 + i, opts.port_base + 40 + i) for i in range(3)]
        self.procs, self.files = [], []
        for i in range(3):
            d = os.path.join(self.dir, f"z{i}")
            cfg = os.path.join(self.dir, f"z{i}.cfg")
            lines = [
                "tickTime=2000", "initLimit=10", "syncLimit=5", f"dataDir={d}",
                f"clientPort={self.client_ports[i]}", "clientPortAddress=127.0.0.1",
                "4lw.commands.whitelist=srvr,ruok", "admin.enableServer=false",
                # ZooKeeper's lowest session timeout is 2 ticks; allow what the bench asks.
                f"minSessionTimeout={min(4000, opts.ttl * 1000)}",
            ] + [f"server.{j + 1}=127.0.0.1:{a}:{b}" for j, (a, b) in enumerate(quorum)]
            self.files.append((d, cfg, lines, i))
            argv = ["java", "-Xmx512m", "-Dzookeeper.root.logger=INFO,CONSOLE",
                    "-Dzookeeper.log.dir=" + self.dir,
                    "-cp", "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg]
            self.procs.append(Proc(argv, os.path.join(self.dir, f"z{i}.log")))
        self.spec = {"kind": "zookeeper", "ports": self.client_ports, "ttl": opts.ttl}

    def version(self):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "zookeeper"],
                           capture_output=True, text=True)
        return f"ZooKeeper {r.stdout.strip()}"

    def start(self):
        for d, cfg, lines, i in self.files:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "myid"), "w") as f:
                f.write(f"{i + 1}\n")
            with open(cfg, "w") as f:
                f.write("\n".join(lines) + "\n")
        for p in self.procs:
            p.start()
        wait_for("zookeeper leader", lambda: self.leader() is not None, 90)
        # Serving once a quorum stands: a write goes through.
        c = ZkClient(self.spec, 0)
        c.close()

    def four(self, port, word):
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(word)
            out = b""
            while True:
                b = s.recv(4096)
                if not b:
                    return out.decode()
                out += b

    def leader(self):
        for i, port in enumerate(self.client_ports):
            if not self.procs[i].alive():
                continue
            try:
                if "Mode: leader" in self.four(port, b"srvr"):
                    return i
            except OSError:
                continue
        return None

    def serving(self, i):
        return "Mode: " in self.four(self.client_ports[i], b"srvr")

    def writer_member(self, leader):
        return None  # kazoo is given every member and moves between them itself


class Lockfs(Members):
    name = "lockfs"

    def __init__(self, base, opts):
        self.exe = os.path.abspath(opts.lockfs)
        self.dir = os.path.join(base, "lockfs")
        self.ports = [opts.port_base + 50 + i for i in range(3)]
        self.servers = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(self.ports))
        self.procs = []
        for i in range(3):
            argv = [self.exe, "serve", "--id", str(i + 1), "--peers", peers, "--insecure",
                    "--data", os.path.join(self.dir, f"n{i + 1}")]
            if opts.lock_delay_ms is not None:
                argv += ["--lock-delay-ms", str(opts.lock_delay_ms)]
            self.procs.append(Proc(argv, os.path.join(self.dir, f"n{i + 1}.log"),
                                   env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))))
        self.mountpoints = [os.path.join(self.dir, "host-a"), os.path.join(self.dir, "host-b")]
        self.mounts = [None, None]
        self.ttl = opts.ttl
        self.spec = {"kind": "lockfs", "mounts": self.mountpoints}

    def version(self):
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
        return f"lockfs {r.stdout.strip()} ({os.path.basename(os.path.dirname(self.exe))})"

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        for p in self.procs:
            p.start()
        wait_for("lockfs leader", lambda: self.leader() is not None, 60)
        for i in range(2):
            self.mount(i)

    def mount(self, i):
        mp = self.mountpoints[i]
        os.makedirs(mp, exist_ok=True)
        argv = [self.exe, "mount", mp, "--foreground", "--servers", self.servers,
                "-o", f"insecure,allow_other,ttl={self.ttl}"]
        self.mounts[i] = Proc(argv, os.path.join(self.dir, f"mount-{i}.log"),
                              env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")))
        self.mounts[i].start()
        wait_for(f"mount {mp}", lambda: os.path.ismount(mp), 30)

    def unmount(self, i):
        if self.mounts[i]:
            self.mounts[i].kill()
        subprocess.run(["umount", "-l", self.mountpoints[i]], capture_output=True)

    def stop(self):
        for i in range(2):
            self.unmount(i)
        super().stop()

    def status(self):
        """`lockfs cluster status --json`, parsed; None if the cluster does not answer in time."""
        try:
            r = subprocess.run([self.exe, "cluster", "status", "--json", "--insecure",
                                "--servers", self.servers, "--timeout", "2"],
                               capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(r.stdout) if r.returncode == 0 else None

    def leader(self):
        leader = (self.status() or {}).get("leader")
        return None if not leader else int(leader) - 1

    def serving(self, i):
        return port_open(self.ports[i])

    def writer_member(self, leader):
        return None  # a mount knows every member


# ---------------------------------------------------------------------------------------------
# Clients: put, linearizable get and a lock, as a user of each system writes them.


class EtcdMutex:
    """etcd's `concurrency.Mutex`: a key per waiter under the lock's prefix, leased to the
    client's session; the waiter whose key was created first holds the lock, and every other
    waits for the deletion of the key created just before its own."""

    def __init__(self, client, lease, prefix):
        self.c, self.lease, self.prefix = client, lease, prefix
        self.key = f"{prefix}/{lease.id:x}"

    def acquire(self):
        c = self.c
        c.transaction(compare=[c.transactions.create(self.key) == 0],
                      success=[c.transactions.put(self.key, "", lease=self.lease)],
                      failure=[])
        _, meta = c.get(self.key)
        mine = meta.create_revision
        while True:
            before, rev = None, None
            for _, m in c.get_prefix(self.prefix):
                rev = m.response_header.revision
                if m.create_revision < mine and (before is None or
                                                 m.create_revision > before.create_revision):
                    before = m
            if before is None:
                return
            # Wait for that key to go (from the revision read, so a deletion is never missed).
            events, cancel = c.watch(before.key, start_revision=rev + 1)
            try:
                for ev in events:
                    if type(ev).__name__ == "DeleteEvent":
                        break
            finally:
                cancel()

    def release(self):
        self.c.delete(self.key)


class EtcdClient:
    def __init__(self, spec, member):
        import etcd3
        port = spec["ports"][member % 3]
        # A request to a follower whose proposal dies with the old leader waits out etcd's own
        # request timeout (7 s); clients set a shorter deadline and retry.
        self.c = etcd3.client(host="127.0.0.1", port=port, timeout=spec.get("timeout", 10))
        self.lease = None
        self.stop = threading.Event()

    def put(self, key, value):
        self.c.put("/bench/" + key, value)

    def create(self, key, value):
        self.c.put("/bench/" + key, value)  # a new key is put like any other

    def get(self, key):
        return self.c.get("/bench/" + key)[0]  # linearizable unless serializable=True

    def session(self, ttl):
        """A lease kept alive every ttl/3, as etcd's concurrency.Session does."""
        self.lease = self.c.lease(ttl)

        def keep():
            while not self.stop.wait(ttl / 3):
                try:
                    self.lease.refresh()
                except Exception:  # noqa: BLE001 - a refresh fails during an election
                    pass

        threading.Thread(target=keep, daemon=True).start()

    def lock(self, name):
        return EtcdMutex(self.c, self.lease, "/locks/" + name)

    def close(self):
        self.stop.set()
        self.c.close()


class ZkClient:
    def __init__(self, spec, member):
        from kazoo.client import KazooClient
        hosts = ",".join(f"127.0.0.1:{p}" for p in spec["ports"])
        self.zk = KazooClient(hosts=hosts, timeout=spec.get("ttl", 10))
        self.zk.start(timeout=30)
        self.zk.ensure_path("/bench")

    def put(self, key, value):
        from kazoo.exceptions import NoNodeError
        path = "/bench/" + key
        try:
            self.zk.set(path, value.encode())
        except NoNodeError:
            self.zk.create(path, value.encode(), makepath=True)

    def create(self, key, value):
        self.zk.create("/bench/" + key, value.encode())

    def get(self, key):
        path = "/bench/" + key
        self.zk.sync(path)  # ZooKeeper's reads are linearizable only after a sync
        return self.zk.get(path)[0]

    def session(self, ttl):
        pass  # the session is the connection's, with the timeout given at start

    def lock(self, name):
        return self.zk.Lock("/locks/" + name)

    def close(self):
        self.zk.stop()
        self.zk.close()


class FlockLock:
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class MountClient:
    """A program on a host with the cluster mounted: `echo > file`, `cat file`, flock(2)."""

    def __init__(self, spec, member):
        self.root = spec["mounts"][member % 2]
        os.makedirs(os.path.join(self.root, "bench"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "locks"), exist_ok=True)

    def put(self, key, value):
        fd = os.open(os.path.join(self.root, "bench", key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def create(self, key, value):
        self.put(key, value)  # `echo > file` of a name that does not exist yet

    def get(self, key):
        with open(os.path.join(self.root, "bench", key), "rb") as f:
            return f.read()

    def session(self, ttl):
        pass  # the mount's session

    def lock(self, name):
        return FlockLock(os.path.join(self.root, "locks", name))

    def close(self):
        pass


def make_client(spec, member=0):
    kind = spec["kind"]
    if kind == "etcd":
        return EtcdClient(spec, member)
    if kind == "zookeeper":
        return ZkClient(spec, member)
    return MountClient(spec, member)


# ---------------------------------------------------------------------------------------------
# Workloads


def latencies(op, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        op(i)
        out.append(time.perf_counter() - t)
    return out


def summary(samples):
    return {"n": len(samples), "p50_ms": ms(pct(samples, 50)), "p90_ms": ms(pct(samples, 90)),
            "p99_ms": ms(pct(samples, 99)), "max_ms": ms(max(samples))}


def wl_write(spec, opts):
    """Replaces the contents of existing keys (every key is written once before the timing:
    the first write of a key is a creation, measured by `wl_create`)."""
    c = make_client(spec)
    try:
        for i in range(64):
            c.put(f"w{i}", "warm")
        return summary(latencies(lambda i: c.put(f"w{i % 64}", "x" * 64), opts.count))
    finally:
        c.close()


def wl_create(spec, opts):
    """Creates new keys, one after another: a new file through a mount."""
    c = make_client(spec)
    try:
        c.put("c-warm", "warm")
        return summary(latencies(lambda i: c.create(f"c{i}", "x" * 64), max(opts.count // 4, 10)))
    finally:
        c.close()


def wl_read(spec, opts):
    c = make_client(spec)
    try:
        c.put("r", "x" * 64)
        return summary(latencies(lambda i: c.get("r"), opts.count))
    finally:
        c.close()


def wl_lock(spec, opts):
    c = make_client(spec)
    try:
        c.session(opts.ttl)
        lk = c.lock("uncontended")

        def cycle(_):
            lk.acquire()
            lk.release()

        cycle(0)
        return summary(latencies(cycle, max(10, opts.count // 2)))
    finally:
        c.close()


def quiet_threads():
    """A client's background threads complaining as it closes, and kazoo's notes about
    reconnecting, are not the bench's business."""
    threading.excepthook = lambda args: None
    logging.getLogger("kazoo").setLevel(logging.ERROR)


def contender(spec, member, ttl, ready, go, deadline_box, result):
    """A contending client process: takes the lock and gives it back until the deadline."""
    quiet_threads()
    try:
        c = make_client(spec, member)
        c.session(ttl)
        lk = c.lock("contended")
        ready.put(member)
        go.wait()
        deadline = deadline_box.value
        n = 0
        while time.monotonic() < deadline:
            lk.acquire()
            n += 1
            lk.release()
        c.close()
        result.put(("ok", n))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails loudly
        result.put(("error", repr(e)))


def wl_contended(spec, opts, contenders):
    ctx = multiprocessing.get_context("spawn")
    ready, result, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=contender,
                         args=(spec, i, opts.ttl, ready, go, deadline, result))
             for i in range(contenders)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        start = time.monotonic()
        deadline.value = start + opts.seconds
        go.set()
        counts = []
        for _ in procs:
            status, v = result.get(timeout=opts.seconds + 120)
            if status != "ok":
                raise BenchError(f"a contender failed: {v}")
            counts.append(v)
        elapsed = time.monotonic() - start
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return {"contenders": contenders, "handoffs_per_s": round(sum(counts) / elapsed, 1),
            "per_contender": counts, "seconds": round(elapsed, 2)}


def holder(spec, member, ttl, ready):
    """Takes the crash lock, says so, and holds it (keeping its session alive) until killed."""
    quiet_threads()
    c = make_client(spec, member)
    c.session(ttl)
    lk = c.lock("crash")
    lk.acquire()
    ready.put(("held", os.getpid()))
    while True:
        time.sleep(1)


def waiter(spec, member, ttl, ready, result):
    quiet_threads()
    c = make_client(spec, member)
    c.session(ttl)
    lk = c.lock("crash")
    ready.put(("waiting", os.getpid()))
    lk.acquire()
    result.put(time.monotonic())
    lk.release()
    c.close()


def wl_holder_crash(system, opts, whole_host):
    """Time from kill -9 of the lock holder (the process, or its whole host) to the next
    holder. For etcd and ZooKeeper the client process is the session, so both are the same
    event; for lockfs the process dies on a host whose mount lives on (its flock goes at
    once), or the mount dies with it (the lock goes when the session expires, plus the
    lock-delay)."""
    spec = system.spec
    ctx = multiprocessing.get_context("spawn")
    ready, result = ctx.Queue(), ctx.Queue()
    # The holder on "host B" (member 1), the waiter on "host A" (member 0).
    h = ctx.Process(target=holder, args=(spec, 1, opts.ttl, ready))
    h.start()
    w = None
    try:
        what, _ = ready.get(timeout=60)
        assert what == "held"
        w = ctx.Process(target=waiter, args=(spec, 0, opts.ttl, ready, result))
        w.start()
        what, _ = ready.get(timeout=60)
        assert what == "waiting"
        time.sleep(1.0)  # the waiter is queued
        if whole_host and system.name == "lockfs":
            system.mounts[1].kill()
        t0 = time.monotonic()
        os.kill(h.pid, signal.SIGKILL)
        got = result.get(timeout=opts.ttl * 3 + 60)
        return {"host": whole_host, "ms": ms(got - t0), "session_ttl_s": opts.ttl}
    finally:
        for p in (h, w):
            if p is not None:
                p.kill() if p.is_alive() else None
                p.join(timeout=10)
        if whole_host and system.name == "lockfs":
            system.unmount(1)
            system.mount(1)


def wl_failover(system, opts):
    """Leader kill -9 to the next acknowledged write, through one client that keeps writing."""
    rounds = []
    for r in range(opts.rounds):
        leader = wait_for("a leader", system.leader, 60)
        member = system.writer_member(leader)
        c = make_client(dict(system.spec, timeout=1), member if member is not None else 0)
        try:
            c.put("failover", "before")
            system.kill(leader)
            t0 = time.monotonic()
            deadline = t0 + 90
            while True:
                try:
                    c.put("failover", f"round {r}")
                    break
                except Exception as e:  # noqa: BLE001 - no leader yet; the next try will tell
                    if time.monotonic() > deadline:
                        raise BenchError(f"{system.name}: no write for 90 s after the kill: {e}")
                    time.sleep(0.005)
            took = time.monotonic() - t0
            rounds.append(took)
            print(f"  round {r + 1}: member {leader} killed, next write after {took * 1000:.0f} ms",
                  flush=True)
        finally:
            c.close()
        system.restart(leader)
        time.sleep(opts.settle)
    return {"rounds": len(rounds), "times_ms": [ms(t) for t in rounds],
            "p50_ms": ms(pct(rounds, 50)), "max_ms": ms(max(rounds))}


def wl_writes_concurrent(spec, opts, writers):
    c = make_client(spec)
    try:
        c.put("cw", "warm")
        deadline = time.monotonic() + opts.seconds
        counts = [0] * writers
        errors = []

        def writer(k):
            try:
                while time.monotonic() < deadline:
                    c.put(f"cw{k}", "x" * 64)
                    counts[k] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        start = time.monotonic()
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise BenchError(f"a writer failed: {errors[0]}")
        return {"writers": writers, "writes_per_s": round(sum(counts) / (time.monotonic() - start), 1)}
    finally:
        c.close()


def lockfs_cli_write(system, opts, concurrency):
    out = os.path.join(system.dir, "cli-write.jsonl")
    count = opts.count if concurrency == 1 else opts.count * 4
    r = subprocess.run([system.exe, "bench", "write", "--count", str(count), "--concurrency",
                        str(concurrency), "--insecure", "--servers", system.servers,
                        "--out", out], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise BenchError(f"lockfs bench write failed: {r.stderr}")
    with open(out) as f:
        return json.loads(f.read().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Driver


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem, 1),
            "kernel": platform.release(), "os": platform.platform()}


def run_system(system, opts, record):
    print(f"== {system.name}: starting 3 members", flush=True)
    t = time.monotonic()
    start(system)
    record("start", {"seconds": round(time.monotonic() - t, 2)})
    try:
        spec = system.spec
        steps = [
            ("write", lambda: wl_write(spec, opts)),
            ("create", lambda: wl_create(spec, opts)),
            ("read", lambda: wl_read(spec, opts)),
            ("lock", lambda: wl_lock(spec, opts)),
            ("contended_4", lambda: wl_contended(spec, opts, 4)),
            ("contended_32", lambda: wl_contended(spec, opts, 32)),
            ("writes_64", lambda: wl_writes_concurrent(spec, opts, 64)),
            ("holder_crash_process", lambda: wl_holder_crash(system, opts, False)),
            ("holder_crash_host", lambda: wl_holder_crash(system, opts, True)),
            ("failover", lambda: wl_failover(system, opts)),
        ]
        if system.name == "lockfs":
            steps[1:1] = [("write_cli", lambda: lockfs_cli_write(system, opts, 1))]
            steps.insert(8, ("writes_64_cli", lambda: lockfs_cli_write(system, opts, 64)))
        for name, step in steps:
            if opts.only and name not in opts.only:
                continue
            t = time.monotonic()
            v = step()
            print(f"  {name}: {json.dumps(v)}  ({time.monotonic() - t:.1f} s)", flush=True)
            record(name, v)
    finally:
        system.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lockfs", default=os.path.join(REPO, "target", "release", "lockfs"),
                    help="the lockfs binary (a release build for numbers worth publishing)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--only", default="", help="comma-separated workloads to run (default all)")
    ap.add_argument("--short", action="store_true", help="a moment per workload (CI)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--data", default=None, help="data directory (default: a fresh one)")
    ap.add_argument("--port-base", type=int, default=24100)
    ap.add_argument("--report", action="store_true",
                    help="after running, draw OUT/*.svg and rewrite BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="only redraw, from OUT")
    ap.add_argument("--rounds", dest="rounds_arg", type=int, help="failover rounds (default 5, short 1)")
    opts = ap.parse_args()
    quiet_threads()
    opts.only = [w for w in opts.only.split(",") if w]
    # Stopped from outside, still stop every member and unmount (the `finally`s below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if opts.report_only:
        import report
        report.write(opts.out, os.path.join(REPO, "BENCHMARKS.md"))
        return 0
    if os.geteuid() != 0:
        raise BenchError("run as root: lockfs mounts need FUSE and allow_other")
    if opts.short:
        opts.count, opts.seconds, opts.rounds, opts.ttl, opts.settle = 50, 1.0, 1, 4, 1.0
        opts.lock_delay_ms = 1000
    else:
        opts.count, opts.seconds, opts.rounds, opts.ttl, opts.settle = 2000, 10.0, 5, 10, 3.0
        opts.lock_delay_ms = None  # the default
    if opts.rounds_arg:
        opts.rounds = opts.rounds_arg
    if not os.access(opts.lockfs, os.X_OK):
        raise BenchError(f"{opts.lockfs}: no lockfs binary there (cargo build --release)")
    ensure_packages()
    os.makedirs(opts.out, exist_ok=True)
    results = os.path.join(opts.out, "results.jsonl" if not opts.short else "short.jsonl")
    base = opts.data or tempfile.mkdtemp(prefix="lockfs-compare-", dir="/var/tmp")
    run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    env = machine()
    classes = {"etcd": Etcd, "zookeeper": ZooKeeper, "lockfs": Lockfs}
    failed = []
    try:
        for name in opts.systems.split(","):
            system = classes[name](base, opts)

            def record(workload, value, system=system):
                line = {"run": run_id, "short": opts.short, "system": system.name,
                        "version": system.version(), "workload": workload, **value}
                if workload == "start":
                    line["machine"] = env
                with open(results, "a") as f:
                    f.write(json.dumps(line) + "\n")

            try:
                run_system(system, opts, record)
            except Exception as e:  # noqa: BLE001 - go on with the next system, fail at the end
                print(f"!! {name} failed: {e!r}", flush=True)
                failed.append(name)
    finally:
        if not opts.data:
            shutil.rmtree(base, ignore_errors=True)
    print(f"results appended to {results}")
    if opts.report:
        import report
        report.write(opts.out, os.path.join(REPO, "BENCHMARKS.md"))
    if failed:
        raise BenchError(f"failed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"compare: {e}", file=sys.stderr)
        sys.exit(1)
