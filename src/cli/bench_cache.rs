//! `lockfs bench cache`: what the mounts' cache and the cluster's events buy, measured on a
//! local 3-node cluster with mounts of its own (it needs FUSE and root, as a mount does).
//!
//! Run once with the cache on and once with `-o cache=off`, it prints and records:
//! - `cat` of an unchanged small file through a mount (open, read to the end, close, as
//!   `cat` makes them), p50/p99, and the Raft entries committed per `cat`;
//! - `cat` on host A of a file that host B replaced just before (checked: A sees B's value);
//! - `stat` p50;
//! - a replace (`echo >`) through a mount, with 0, 1 and `--others` other mounts of the cluster
//!   (with the cache on, each of them must drop the file before the write returns).
//!
//! And with the cache on only:
//! - event latency: from the start of a replace on host B to the line of `lockfs watch` on
//!   host A, and to the exit of `lockfs wait --for changed`;
//! - what ten `lockfs watch --initial` followers cost the cluster while nothing changes
//!   (reads and writes per second, keep-alives aside).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::bench::{ms, percentile, record};
use super::dev::{LocalCluster, MountChild};
use super::CliError;
use crate::client::{ops, Client};
use crate::proto::StatusReply;

#[derive(Args)]
pub struct CacheArgs {
    /// Reads (and stats) per measurement.
    #[arg(long, default_value_t = 2000)]
    reads: usize,
    /// Writes per measurement.
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// Other mounts at most: writes are timed with 0, 1 and this many others mounted.
    #[arg(long, default_value_t = 10)]
    others: usize,
    /// Port of node 1 of the benchmark's own cluster (nodes use the next two as well).
    #[arg(long, default_value_t = 7301)]
    base_port: u16,
    /// Append the results as JSON lines to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn other(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("{what}: {e}"))
}

/// p50 and p99 of `times`, in milliseconds.
fn p50_p99(times: &[Duration]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (ms(percentile(&sorted, 50.0)), ms(percentile(&sorted, 99.0)))
}

fn timed<T>(f: impl FnOnce() -> Result<T, CliError>) -> Result<(Duration, T), CliError> {
    let start = Instant::now();
    let value = f()?;
    Ok((start.elapsed(), value))
}

/// The local cluster and its mounts, torn down (mounts first) when dropped.
struct Bench {
    mounts: Vec<MountChild>,
    cluster: LocalCluster,
    data: PathBuf,
    client: Client,
    servers: String,
    mode: &'static str,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.mounts.clear();
    }
}

impl Bench {
    fn start(a: &CacheArgs, mode: &'static str) -> Result<Bench, CliError> {
        let data =
            std::env::temp_dir().join(format!("lockfs-bench-cache-{}-{mode}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let cluster = LocalCluster::start(3, data.clone(), a.base_port)?;
        let client = cluster.client_opts(30).client()?;
        let servers = cluster.servers().join(",");
        super::block_on(async {
            client
                .call(ops::stat("/"))
                .await
                .map_err(CliError::client("the cluster did not come up"))
        })?;
        Ok(Bench {
            mounts: Vec::new(),
            cluster,
            data,
            client,
            servers,
            mode,
        })
    }

    fn mountpoint(&self, i: usize) -> PathBuf {
        self.data.join(format!("m{i}"))
    }

    /// Mounts the next mount; returns its index.
    fn mount(&mut self) -> Result<usize, CliError> {
        let i = self.mounts.len();
        let path = self.mountpoint(i);
        std::fs::create_dir_all(&path).map_err(|e| other("mountpoint", e))?;
        let options = format!("cache={}", self.mode);
        let m = MountChild::start(
            &self.cluster.exe,
            &path,
            &self.servers,
            &self.cluster.tls.join("host"),
            &self.data,
            &options,
            &format!("mount-{i}.log"),
        )?;
        self.mounts.push(m);
        Ok(i)
    }

    fn status(&self) -> Result<StatusReply, CliError> {
        super::block_on(async {
            self.client
                .status()
                .await
                .map_err(CliError::client("cluster status"))
        })
    }

    /// Client reads and writes all members handled so far (keep-alives aside).
    fn requests(&self) -> Result<u64, CliError> {
        let mut total = 0;
        for addr in self.cluster.servers() {
            let opts = self.cluster.client_opts(10);
            let client = opts.pinned(addr, Duration::from_secs(10))?;
            let s = super::block_on(async {
                client
                    .status()
                    .await
                    .map_err(CliError::client("cluster status"))
            })?;
            total += s.client_reads + s.client_writes;
        }
        Ok(total)
    }

    /// Times `n` replaces of `path` (through a mount).
    fn writes(&self, path: &Path, n: usize) -> Result<Vec<Duration>, CliError> {
        (0..n)
            .map(|i| {
                timed(|| {
                    std::fs::write(path, format!("value {i}\n")).map_err(|e| other("write", e))
                })
                .map(|(d, ())| d)
            })
            .collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| other(&path.display().to_string(), e))
}

pub fn run(a: CacheArgs) -> Result<(), CliError> {
    if a.reads == 0 || a.writes == 0 {
        return Err(CliError::Usage("--reads and --writes must be > 0".into()));
    }
    for mode in ["on", "off"] {
        let mut bench = Bench::start(&a, mode)?;
        let result = measure(&a, &mut bench);
        let data = bench.data.clone();
        drop(bench);
        let _ = std::fs::remove_dir_all(&data);
        result?;
    }
    Ok(())
}

fn measure(a: &CacheArgs, b: &mut Bench) -> Result<(), CliError> {
    let mode = b.mode;
    let i0 = b.mount()?;
    let m0 = b.mountpoint(i0);
    let dir = m0.join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| other("mkdir", e))?;
    let file = dir.join("f");
    std::fs::write(&file, b"hello\n").map_err(|e| other("write", e))?;
    read(&file)?;

    // Writes with no other mount.
    let w0 = b.writes(&dir.join("w"), a.writes)?;

    // Reads of an unchanged file, and the entries they commit.
    let commit0 = b.status()?.commit;
    let mut cats = Vec::with_capacity(a.reads);
    for _ in 0..a.reads {
        cats.push(timed(|| read(&file))?.0);
    }
    let commit1 = b.status()?.commit;
    let entries_per_cat = (commit1 - commit0) as f64 / a.reads as f64;
    let mut stats = Vec::with_capacity(a.reads);
    for _ in 0..a.reads {
        stats.push(timed(|| std::fs::metadata(&file).map_err(|e| other("stat", e)))?.0);
    }

    // A second host: writes with one other mount, reads of what it just replaced.
    let i1 = b.mount()?;
    let m1 = b.mountpoint(i1);
    let w1 = b.writes(&dir.join("w"), a.writes)?;
    let mut changed = Vec::with_capacity(a.writes);
    for i in 0..a.writes {
        let value = format!("from B {i}\n");
        std::fs::write(m1.join("bench/f"), &value).map_err(|e| other("write", e))?;
        let (d, got) = timed(|| read(&file))?;
        if got != value.as_bytes() {
            return Err(CliError::Other(format!(
                "host A read {:?} after host B wrote {value:?}",
                String::from_utf8_lossy(&got)
            )));
        }
        changed.push(d);
    }

    let (cat50, cat99) = p50_p99(&cats);
    let (chg50, chg99) = p50_p99(&changed);
    let (stat50, _) = p50_p99(&stats);
    println!(
        "cache {mode}: cat unchanged p50 {cat50} ms p99 {cat99} ms ({entries_per_cat:.3} \
         entries per cat); cat after another host's replace p50 {chg50} ms p99 {chg99} ms; \
         stat p50 {stat50} ms"
    );
    let events = if mode == "on" {
        Some(events(a, b, &m0, &m1)?)
    } else {
        None
    };

    // Writes with `others` other mounts.
    while b.mounts.len() < a.others + 1 {
        b.mount()?;
    }
    let wn = b.writes(&dir.join("w"), a.writes)?;
    let (w0_50, w0_99) = p50_p99(&w0);
    let (w1_50, w1_99) = p50_p99(&w1);
    let (wn_50, wn_99) = p50_p99(&wn);
    println!(
        "cache {mode}: echo > p50/p99 with 0 other mounts {w0_50}/{w0_99} ms, with 1 {w1_50}/{w1_99} \
         ms, with {} {wn_50}/{wn_99} ms",
        a.others
    );
    record(
        &a.out,
        json!({
            "bench": "cache", "cache": mode, "reads": a.reads, "writes": a.writes,
            "cat_unchanged_ms": {"p50": cat50, "p99": cat99},
            "entries_per_cat": entries_per_cat,
            "cat_after_remote_replace_ms": {"p50": chg50, "p99": chg99},
            "stat_p50_ms": stat50,
            "write_ms": {
                "0_others": {"p50": w0_50, "p99": w0_99},
                "1_other": {"p50": w1_50, "p99": w1_99},
                format!("{}_others", a.others): {"p50": wn_50, "p99": wn_99},
            },
            "events": events,
        }),
    )
}

/// A `lockfs watch` child whose lines arrive, timed, on a channel; killed when dropped.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch(exe: &Path, args: &[&str]) -> Result<Watch, CliError> {
    let mut child = Command::new(exe)
        .arg("watch")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| other("lockfs watch", e))?;
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let ready_tx = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((Instant::now(), line));
        }
    });
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("watching") {
                let _ = ready_tx.send((Instant::now(), "(ready)".into()));
            }
        }
    });
    let w = Watch { child, lines };
    // Lines before it registered (`--initial`'s) are not timed.
    loop {
        match w.lines.recv_timeout(Duration::from_secs(30)) {
            Ok((_, l)) if l == "(ready)" => return Ok(w),
            Ok(_) => {}
            Err(e) => return Err(CliError::Other(format!("lockfs watch did not start: {e}"))),
        }
    }
}

/// Event latency and the cost of followers; the cache is on.
fn events(a: &CacheArgs, b: &Bench, m0: &Path, m1: &Path) -> Result<serde_json::Value, CliError> {
    let exe = b.cluster.exe.clone();
    let watched = m0.join("bench/ev");
    std::fs::write(&watched, b"0\n").map_err(|e| other("write", e))?;
    let w = watch(&exe, &["--json", &watched.to_string_lossy()])?;
    let (mut to_line, mut to_return) = (Vec::new(), Vec::new());
    let rounds = a.writes.min(100);
    for i in 0..rounds {
        let start = Instant::now();
        std::fs::write(m1.join("bench/ev"), format!("{i}\n")).map_err(|e| other("write", e))?;
        to_return.push(start.elapsed());
        loop {
            let (at, line) = w
                .lines
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| CliError::Other("no event line within 30 s".into()))?;
            if line.contains("\"modified\"") {
                to_line.push(at.duration_since(start));
                break;
            }
        }
    }
    drop(w);
    let mut to_exit = Vec::new();
    for i in 0..rounds.min(20) {
        let mut child = Command::new(&exe)
            .args(["wait", &watched.to_string_lossy(), "--for", "changed"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| other("lockfs wait", e))?;
        // Registered well before the change (it prints nothing to say so).
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        std::fs::write(m1.join("bench/ev"), format!("wait {i}\n"))
            .map_err(|e| other("write", e))?;
        let status = child.wait().map_err(|e| other("lockfs wait", e))?;
        if !status.success() {
            return Err(CliError::Other(format!("lockfs wait exited {status}")));
        }
        to_exit.push(start.elapsed());
    }
    // Ten followers, as leader-election.sh follow runs them, across the mounts.
    let leader = m0.join("bench/leader");
    std::fs::write(&leader, b"host:5432\n").map_err(|e| other("write", e))?;
    let mut followers = Vec::new();
    for i in 0..10 {
        let m = if i % 2 == 0 { m0 } else { m1 };
        let path = m.join("bench/leader");
        followers.push(watch(&exe, &["--initial", &path.to_string_lossy()])?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = b.requests()?;
    let quiet = Duration::from_secs(5);
    std::thread::sleep(quiet);
    let per_s = (b.requests()? - before) as f64 / quiet.as_secs_f64();
    drop(followers);

    let (line50, line99) = p50_p99(&to_line);
    let (ret50, _) = p50_p99(&to_return);
    let (exit50, exit99) = p50_p99(&to_exit);
    println!(
        "events: replace on B to lockfs watch line on A p50 {line50} ms p99 {line99} ms (the \
         replace itself returned after p50 {ret50} ms); to lockfs wait --for changed exiting \
         p50 {exit50} ms p99 {exit99} ms; 10 followers, nothing changing: {per_s} cluster \
         requests/s"
    );
    Ok(json!({
        "replace_to_watch_line_ms": {"p50": line50, "p99": line99},
        "replace_returned_ms": {"p50": ret50},
        "replace_to_wait_exit_ms": {"p50": exit50, "p99": exit99},
        "requests_per_s_10_followers_idle": per_s,
    }))
}
