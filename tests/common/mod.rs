//! Test harness: real `lockfs serve` processes on loopback ports, real RocksDB directories, and
//! the real `lockfs` CLI. Everything a test starts is killed when its `Cluster` is dropped, also
//! when the test fails; every wait is bounded.
//!
//! TLS is on everywhere, with the test CA of `tls`: every node runs with the peer certificate
//! of its id, the CLI with the test administrator's certificate (`LOCKFS_TLS_DIR`), a mount
//! with a host certificate.

#![allow(dead_code)]

pub mod checkers;
pub mod hosts;
pub mod linearizable;
pub mod nemesis;
pub mod proxy;
#[path = "../../src/testdir.rs"]
pub mod testdir;
pub mod tls;
pub mod workloads;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lockfs");
/// The bound on one CLI run.
pub const CLI_LIMIT: Duration = Duration::from_secs(60);

/// A free loopback port (bound once, then released for the node to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Runs `f` to completion on a fresh single-threaded runtime (for the client library in tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// xorshift64*: a small deterministic generator, so a failing run replays from its printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index into a collection of `n` items.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// The first of `n` consecutive free loopback ports, for programs that take a base port
/// (`lockfs dev --base-port`). Searched below the kernel's ephemeral range (32768 and up), where
/// the ports `free_port` hands out and outgoing connections live, so they cannot collide.
pub fn free_port_run(n: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let seed = std::process::id() as u64 ^ nanos;
    for attempt in 0..1000u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 37) % 12_000) as u16;
        let held: Vec<_> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports below 32000");
}

pub struct Node {
    pub id: u64,
    /// Where peers and clients reach it (its proxy's address when it has one).
    pub addr: String,
    /// Where it listens, when that is not `addr` (behind a proxy).
    pub listen: Option<String>,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct Cluster {
    pub dir: testdir::TempDir,
    pub nodes: Vec<Node>,
    pub peers: String,
    pub extra: Vec<String>,
    /// With `start_with_config`: settings every node reads from its `--config` file.
    pub config: Option<String>,
    /// With `start_proxied`: the proxy in front of each node, by node id.
    pub proxies: Vec<(u64, proxy::Proxy)>,
    /// With `start_with_metrics`: where each node serves its metrics (HOST:PORT), by id.
    pub metrics: BTreeMap<u64, String>,
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags and waits until they have a leader.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::launch(n, extra, false, &BTreeMap::new(), None, false)
    }

    /// `start_proxied`, every node serving metrics (`--metrics-listen`, see `metrics`).
    pub fn start_with_metrics(n: u64, extra: &[&str]) -> Cluster {
        Cluster::launch(n, extra, true, &BTreeMap::new(), None, true)
    }

    /// Like `start`, with `toml` (settings such as a `[quotas]` table) in every node's
    /// `--config` file, which also names the node's credentials.
    pub fn start_with_config(n: u64, toml: &str) -> Cluster {
        Cluster::launch(n, &[], false, &BTreeMap::new(), Some(toml), false)
    }

    /// Like `start`, with a fault-injecting proxy in front of every node: the nodes advertise
    /// the proxies' addresses, so every peer and client connection goes through one, and
    /// `partition`, `isolate_client` and `heal` cut and restore links.
    pub fn start_proxied(n: u64, extra: &[&str]) -> Cluster {
        Cluster::launch(n, extra, true, &BTreeMap::new(), None, false)
    }

    /// `start_proxied`, with the data directories of some nodes elsewhere (on a small disk).
    pub fn start_proxied_with_data(
        n: u64,
        extra: &[&str],
        data: &BTreeMap<u64, PathBuf>,
    ) -> Cluster {
        Cluster::launch(n, extra, true, data, None, false)
    }

    fn launch(
        n: u64,
        extra: &[&str],
        proxied: bool,
        data: &BTreeMap<u64, PathBuf>,
        config: Option<&str>,
        metrics: bool,
    ) -> Cluster {
        let dir = testdir::tempdir().expect("tempdir");
        let mut proxies = Vec::new();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let port = format!("127.0.0.1:{}", free_port());
            let (addr, listen) = if proxied {
                let proxy = proxy::Proxy::start(port.clone());
                let addr = proxy.addr.clone();
                proxies.push((id, proxy));
                (addr, Some(port))
            } else {
                (port, None)
            };
            nodes.push(Node {
                id,
                addr,
                listen,
                data: data
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| dir.path().join(format!("node{id}"))),
                log: dir.path().join(format!("node{id}.log")),
                child: None,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            nodes,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            config: config.map(String::from),
            proxies,
            metrics: if metrics {
                (1..=n)
                    .map(|id| (id, format!("127.0.0.1:{}", free_port())))
                    .collect()
            } else {
                BTreeMap::new()
            },
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c.wait_leader(Duration::from_secs(30));
        c
    }

    /// Cuts every link between the nodes in `side` and the others, both ways.
    pub fn partition(&self, side: &[u64]) {
        for (id, proxy) in &self.proxies {
            for other in self.nodes.iter().map(|n| n.id) {
                if side.contains(id) != side.contains(&other) {
                    proxy.block(proxy::Party::Peer(other));
                }
            }
        }
    }

    /// Cuts the clients whose name contains `name` off from every node: a client is named
    /// `lockfs[PID]` after the process that dials (`proxy.rs`).
    pub fn isolate_client(&self, name: &str) {
        for (_, proxy) in &self.proxies {
            proxy.block(proxy::Party::Client(name.to_string()));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for (_, proxy) in &self.proxies {
            proxy.heal();
        }
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node")
            .addr
            .clone()
    }

    /// Every node's address, comma-separated, as LOCKFS_SERVERS wants it.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn spawn(&mut self, id: u64) {
        let node = self.nodes.iter().find(|n| n.id == id).expect("node");
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            node.listen.clone().unwrap_or_else(|| node.addr.clone()),
            "--peers".into(),
            self.peers.clone(),
            "--data".into(),
            node.data.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        if let Some(addr) = self.metrics.get(&id) {
            args.extend(["--metrics-listen".into(), addr.clone()]);
        }
        if let Some(toml) = &self.config {
            // Top-level keys before the tables of `toml`.
            let file = self.dir.path().join(format!("node{id}.toml"));
            let credentials = format!("tls_dir = {:?}\n", tls::peer_dir(id).display().to_string());
            std::fs::write(&file, credentials + toml).expect("config file");
            args.extend(["--config".into(), file.display().to_string()]);
        }
        self.spawn_with(id, &args);
    }

    /// Starts node `id` as `lockfs serve ARGS --tls-dir DIR`, with node `id`'s peer
    /// certificate in DIR, logging to its log file. Nothing is added when ARGS name the
    /// credentials themselves: with `--tls-dir`, with a `--config` file (which then gives
    /// `tls_dir`), or with `--insecure`.
    pub fn spawn_with(&mut self, id: u64, args: &[String]) {
        let named = args.iter().any(|a| {
            a == "--tls-dir" || a.starts_with("--tls-dir=") || a == "--config" || a == "--insecure"
        });
        let credentials = (!named).then(|| tls::peer_dir(id));
        let node = self.node(id);
        assert!(node.child.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args(args);
        if let Some(dir) = credentials {
            cmd.arg("--tls-dir").arg(dir);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning lockfs serve");
        node.child = Some(child);
    }

    /// Adds node `id` with a new address and an empty data directory and starts it with
    /// `--join` to the other nodes (and `extra` flags). An earlier node of that id, which must
    /// be stopped, is forgotten: this is its replacement.
    pub fn join(&mut self, id: u64, extra: &[&str]) -> String {
        if let Some(old) = self.nodes.iter_mut().find(|n| n.id == id) {
            assert!(!old.is_running(), "node {id} still running");
        }
        let join = self.servers();
        self.nodes.retain(|n| n.id != id);
        let generation = std::fs::read_dir(self.dir.path()).map_or(0, |d| d.count());
        let node = Node {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            listen: None,
            data: self.dir.path().join(format!("node{id}.{generation}")),
            log: self.dir.path().join(format!("node{id}.{generation}.log")),
            child: None,
        };
        let addr = node.addr.clone();
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--join".into(),
            join,
            "--data".into(),
            node.data.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        self.nodes.push(node);
        self.spawn_with(id, &args);
        addr
    }

    /// Adds node `id` at `addr` (not started) with data directory `node<id>`; returns it.
    pub fn register(&mut self, id: u64, addr: &str) -> PathBuf {
        assert!(self.nodes.iter().all(|n| n.id != id), "node {id} exists");
        let data = self.dir.path().join(format!("node{id}"));
        self.nodes.push(Node {
            id,
            addr: addr.to_string(),
            listen: None,
            data: data.clone(),
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
        });
        data
    }

    /// Waits (bounded) for the process of node `id` to exit; returns its exit code.
    pub fn wait_exit(&mut self, id: u64, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let node = self.node(id);
        let child = node.child.as_mut().expect("node started");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                node.child = None;
                return status.code();
            }
            assert!(Instant::now() < deadline, "node {id} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.node(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, id: u64) -> bool {
        let Some(mut c) = self.node(id).child.take() else {
            return false;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// The leader as the cluster reports it, waiting up to `timeout` for one.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.cli(&self.servers(), &["cluster", "status", "--json"], None);
            if out.status.success() {
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("status json");
                if let Some(id) = v["leader"].as_u64() {
                    return id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {timeout:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the CLI against `servers` (in plain TCP when this cluster runs `--insecure`).
    pub fn cli(&self, servers: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        if self.extra.iter().any(|a| a == "--insecure") {
            let mut args = args.to_vec();
            args.push("--insecure");
            return cli(servers, &args, stdin);
        }
        cli(servers, args, stdin)
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            s.push_str(&format!("--- node {} ({}) ---\n", n.id, n.log.display()));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    pub fn log_of(&self, id: u64) -> String {
        let n = self.nodes.iter().find(|n| n.id == id).expect("node");
        std::fs::read_to_string(&n.log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Runs the `lockfs` CLI with LOCKFS_SERVERS=`servers` and the test administrator's
/// credentials, bounded to `CLI_LIMIT`.
pub fn cli(servers: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    cli_as(&tls::admin_dir(), servers, args, stdin)
}

/// As `cli`, with the credentials in `tls_dir` (LOCKFS_TLS_DIR).
pub fn cli_as(tls_dir: &Path, servers: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("LOCKFS_SERVERS", servers)
        .env(tls::ENV, tls_dir)
        .env("RUST_LOG", "warn");
    output_within(cmd, stdin, CLI_LIMIT)
}

/// Runs `cmd` with `stdin` as its input (or none) and its output captured; kills it (SIGKILL)
/// if it runs longer than `limit`. A command that exits without reading all of `stdin` is
/// judged by its status and output like any other.
pub fn output_within(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    // Started before the input is written: a command that never reads it is killed too.
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
            // SAFETY: kill(2) on our child, which has not been reaped: we are still waiting.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    if let Some(data) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        let _ = pipe.write_all(data);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    drop(done);
    let _ = watchdog.join();
    out
}

/// Runs the CLI and asserts success; returns stdout.
pub fn ok(servers: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = cli(servers, args, stdin);
    assert!(
        out.status.success(),
        "lockfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the CLI and asserts failure with one line on stderr containing `needle`.
pub fn fails_with(servers: &str, args: &[&str], stdin: Option<&[u8]>, needle: &str) {
    let out = cli(servers, args, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lockfs {args:?} should fail");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err}"
    );
    assert!(
        err.contains(needle),
        "lockfs {args:?}: {err:?} lacks {needle:?}"
    );
}

pub fn data_dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().expect("metadata");
            total += if m.is_dir() {
                data_dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// The host certificate's name of mounts that stand for no host in particular.
pub const TEST_HOST: &str = "host-test";

/// A real `lockfs mount --foreground` process: one "host". Dropping it stops the process with
/// SIGTERM (a clean unmount that ends its session) and, if anything is left, kills it and
/// detaches the mount, so a failing test leaves no mount behind.
pub struct Mount {
    pub path: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Mounts the cluster at `path` (created if missing) with `-o options`, as host
    /// `TEST_HOST`; waits (bounded) until the kernel lists the mount.
    pub fn start(servers: &str, path: &Path, options: &str, log: &Path) -> Mount {
        Mount::start_logging(servers, path, options, log, "info")
    }

    /// As `start`, logging at `rust_log` (a RUST_LOG filter).
    pub fn start_logging(
        servers: &str,
        path: &Path,
        options: &str,
        log: &Path,
        rust_log: &str,
    ) -> Mount {
        Mount::start_as(TEST_HOST, servers, path, options, log, rust_log)
    }

    /// As `start_logging`, as host `host`: with a host certificate issued to that name.
    pub fn start_as(
        host: &str,
        servers: &str,
        path: &Path,
        options: &str,
        log: &Path,
        rust_log: &str,
    ) -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "FUSE is unavailable: /dev/fuse is missing (the mount tests need it and root)"
        );
        std::fs::create_dir_all(path).expect("mountpoint");
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("mount log");
        let child = Command::new(BIN)
            .arg("mount")
            .arg("--foreground")
            .arg("--servers")
            .arg(servers)
            .arg("--tls-dir")
            .arg(tls::host_dir(host))
            .arg("-o")
            .arg(options)
            .arg(path)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("log"))
            .stderr(logfile)
            .spawn()
            .expect("spawning lockfs mount");
        let mut m = Mount {
            path: path.to_path_buf(),
            log: log.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(path) {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "lockfs mount exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not mounted within 30 s:\n{}",
                path.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM and wait (bounded); returns whether the mount process exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut clean = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                clean = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !clean {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.detach();
        clean
    }

    /// Detaches whatever is left of the mount (lazily, as `umount -l` does).
    fn detach(&self) {
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.path)
                .stderr(Stdio::null())
                .status();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the kernel lists a lockfs mount at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.to_string_lossy();
    mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.next() == Some("lockfs") && fields.next() == Some(&*path)
    })
}
