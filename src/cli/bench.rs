//! `lockfs bench`: programs that measure and print numbers (never tests that assert on time).
//!
//! - `write`: small-file writes through the client protocol against a running cluster; latency
//!   percentiles and throughput.
//! - `failover`: starts its own local 3-node cluster, kills -9 the leader several times and
//!   measures the time from the kill to the next acknowledged write.
//! - `flock`: through one or more mounts (of one cluster): the latency of an uncontended
//!   flock acquire+release cycle, then hand-offs per second between contenders spread over the
//!   mounts (real `flock(2)` calls, as `flock(1)` makes them).
//!
//! - `cache` (`bench_cache.rs`): the mounts' cache and events, with the cache on and off.
//! - `sessions`: holds idle sessions open, level after level, for a driver that measures what
//!   they cost meanwhile (`bench/curves.py`).
//!
//! Each prints a human summary and, with `--out FILE`, appends one JSON line per run to FILE.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;

use super::dev::LocalCluster;
use super::{CliError, ClientOpts};
use crate::client::{ops, Client};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Writes of small files; prints latency percentiles and throughput.
    Write(WriteArgs),
    /// Kills -9 the leader of a local 3-node cluster; prints the time to the next write.
    Failover(FailoverArgs),
    /// flock(2) through mounts: cycle latency and contended hand-offs per second.
    Flock(FlockArgs),
    /// The mounts' cache and events: reads, writes with other mounts caching, event latency
    /// and what following scripts cost, on a local cluster with its own mounts.
    Cache(super::bench_cache::CacheArgs),
    /// Holds idle sessions open (each kept alive, as a host's would be), level after level:
    /// prints "ready N" once N are open and goes on to the next level at a line on stdin.
    Sessions(SessionsArgs),
}

#[derive(Args)]
pub struct SessionsArgs {
    /// Session counts to reach, in increasing order, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    levels: Vec<usize>,
    /// Sessions per client connection.
    #[arg(long, default_value_t = 250)]
    per_connection: usize,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
pub struct FlockArgs {
    /// Mountpoints of one cluster (two stand for two hosts), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    mounts: Vec<PathBuf>,
    /// Uncontended acquire+release cycles.
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Contending processes' worth of open files, spread round-robin over the mounts.
    #[arg(long, default_value_t = 4)]
    contenders: usize,
    /// Seconds of contention.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct WriteArgs {
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Writers in flight at once (1 = sequential).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Distinct files written to, round robin (/bench/w0 ...).
    #[arg(long, default_value_t = 256)]
    files: usize,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
pub struct FailoverArgs {
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Port of node 1 of the benchmark's own cluster.
    #[arg(long, default_value_t = 7101)]
    base_port: u16,
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: BenchCmd) -> Result<(), CliError> {
    match cmd {
        BenchCmd::Write(a) => super::block_on(write(a)),
        BenchCmd::Failover(a) => failover(a),
        BenchCmd::Flock(a) => flock(a),
        BenchCmd::Cache(a) => super::bench_cache::run(a),
        BenchCmd::Sessions(a) => super::block_on(sessions(a)),
    }
}

/// Opens sessions up to each level in turn, keeps them alive, and waits for a line on stdin
/// before the next level; closes none of them (they expire after the process ends).
async fn sessions(a: SessionsArgs) -> Result<(), CliError> {
    use crate::client::session::Session;

    if a.per_connection == 0 || a.levels.windows(2).any(|w| w[0] >= w[1]) {
        return Err(CliError::Usage(
            "--levels must increase and --per-connection be > 0".into(),
        ));
    }
    let ttl = Duration::from_secs(a.ttl);
    let mut clients: Vec<Arc<Client>> = Vec::new();
    let mut held = Vec::new();
    // A line on stdin (false at its end), read off the runtime's threads.
    let next_line = || async {
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0)
        })
        .await
        .unwrap_or(false)
    };
    for (k, &level) in a.levels.iter().enumerate() {
        let started = Instant::now();
        let mut opening = tokio::task::JoinSet::new();
        for n in held.len()..level {
            if n % a.per_connection == 0 {
                clients.push(Arc::new(a.client.client()?));
            }
            let client = clients[n / a.per_connection].clone();
            // One host name per connection: the cluster counts sessions per host.
            let host = format!("bench-{}", n / a.per_connection);
            opening.spawn(async move {
                Session::open(client, ttl, ttl, &host, "lockfs bench sessions").await
            });
            // Not all at once: a few hundred opens in flight fill the commits well enough.
            if opening.len() >= 256 {
                if let Some(r) = opening.join_next().await {
                    held.push(open_result(r)?);
                }
            }
        }
        while let Some(r) = opening.join_next().await {
            held.push(open_result(r)?);
        }
        println!(
            "ready {} {:.3}",
            held.len(),
            started.elapsed().as_secs_f64()
        );
        if k + 1 < a.levels.len() && !next_line().await {
            break;
        }
    }
    // Wait for the driver to be done with the last level.
    next_line().await;
    Ok(())
}

fn open_result(
    r: Result<
        Result<Arc<crate::client::session::Session>, crate::client::ClientError>,
        tokio::task::JoinError,
    >,
) -> Result<Arc<crate::client::session::Session>, CliError> {
    r.map_err(|e| CliError::Other(format!("opening a session: {e}")))?
        .map_err(CliError::client("opening a session"))
}

/// The value below which `p` of the sorted samples fall.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(super) fn record(out: &Option<PathBuf>, value: serde_json::Value) -> Result<(), CliError> {
    if let Some(path) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
        writeln!(f, "{value}").map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

async fn write(a: WriteArgs) -> Result<(), CliError> {
    if a.count == 0 || a.concurrency == 0 {
        return Err(CliError::Usage(
            "--count and --concurrency must be > 0".into(),
        ));
    }
    let client = Arc::new(a.client.client()?);
    super::files::mkdir(&client, "/bench", 0o755, true, false).await?;
    let payload = vec![b'x'; a.size];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let client = client.clone();
        let payload = payload.clone();
        let count = a.count;
        let step = a.concurrency;
        let files = a.files.max(1);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..count).step_by(step) {
                let path = format!("/bench/w{}", i % files);
                let t = Instant::now();
                client
                    .call(ops::put(&path, payload.clone(), 0o644, 0, 0))
                    .await
                    .map_err(CliError::client(path))?;
                lat.push(t.elapsed());
            }
            Ok::<_, CliError>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(a.count);
    for t in tasks {
        lat.extend(
            t.await
                .map_err(|e| CliError::Other(format!("writer failed: {e}")))??,
        );
    }
    let elapsed = started.elapsed();
    lat.sort();
    let throughput = a.count as f64 / elapsed.as_secs_f64();
    println!(
        "write: {} ops, {} in flight, {} B: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  {:.0} ops/s",
        a.count,
        a.concurrency,
        a.size,
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 100.0)),
        throughput
    );
    record(
        &a.out,
        json!({
            "bench": "write", "count": a.count, "concurrency": a.concurrency, "size": a.size,
            "p50_ms": ms(percentile(&lat, 50.0)), "p90_ms": ms(percentile(&lat, 90.0)),
            "p99_ms": ms(percentile(&lat, 99.0)), "max_ms": ms(percentile(&lat, 100.0)),
            "ops_per_s": throughput.round(),
        }),
    )
}

async fn leader_of(client: &Client) -> Result<u64, CliError> {
    // A linearizable read first, so the answer comes from a leader that has committed.
    client
        .call(ops::stat("/"))
        .await
        .map_err(CliError::client("stat /"))?;
    match client
        .status()
        .await
        .map_err(CliError::client("cluster status"))?
    {
        s if s.leader_id != 0 => Ok(s.leader_id),
        _ => Err(CliError::Other("no leader".into())),
    }
}

fn failover(a: FailoverArgs) -> Result<(), CliError> {
    let data = std::env::temp_dir().join(format!("lockfs-bench-{}", std::process::id()));
    let result = failover_rounds(&a, data.clone());
    let _ = std::fs::remove_dir_all(&data);
    let times = result?;
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "failover: {} rounds, kill -9 of the leader to the next acknowledged write: min {:.0} ms  p50 {:.0} ms  max {:.0} ms",
        sorted.len(),
        ms(sorted[0]),
        ms(percentile(&sorted, 50.0)),
        ms(*sorted.last().expect("at least one round"))
    );
    record(
        &a.out,
        json!({
            "bench": "failover", "rounds": sorted.len(),
            "times_ms": times.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "p50_ms": ms(percentile(&sorted, 50.0)), "max_ms": ms(*sorted.last().unwrap()),
        }),
    )
}

fn failover_rounds(a: &FailoverArgs, data: PathBuf) -> Result<Vec<Duration>, CliError> {
    if a.rounds == 0 {
        return Err(CliError::Usage("--rounds must be > 0".into()));
    }
    let mut cluster = LocalCluster::start(3, data, a.base_port)?;
    let opts = cluster.client_opts(30);
    let mut times = Vec::new();
    for round in 0..a.rounds {
        let client = opts.client()?;
        let leader = super::block_on(async {
            let leader = leader_of(&client).await?;
            client
                .call(ops::put("/failover", b"before".to_vec(), 0o644, 0, 0))
                .await
                .map_err(CliError::client("/failover"))?;
            Ok(leader)
        })?;
        cluster.kill(leader);
        let killed = Instant::now();
        let took = super::block_on(async {
            let deadline = killed + Duration::from_secs(60);
            loop {
                let put = ops::put(
                    "/failover",
                    format!("round {round}").into_bytes(),
                    0o644,
                    0,
                    0,
                );
                match client.call(put).await {
                    Ok(_) => return Ok(killed.elapsed()),
                    // The write in flight on the dead leader's connection has an unknown outcome;
                    // the next one goes to the new leader.
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => return Err(CliError::client("/failover")(e)),
                }
            }
        })?;
        println!(
            "round {}: node {leader} killed, next write after {:.0} ms",
            round + 1,
            ms(took)
        );
        times.push(took);
        cluster.spawn(leader)?;
        // Let the restarted node catch up before the next round.
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(times)
}

/// flock(2) on `file`, retrying when a signal interrupts the wait.
fn flock_fd(file: &std::fs::File, op: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock(2) on a descriptor owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn open_rw(path: &std::path::Path) -> Result<std::fs::File, CliError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
}

fn flock(a: FlockArgs) -> Result<(), CliError> {
    if a.count == 0 || a.contenders == 0 || a.seconds.is_nan() || a.seconds <= 0.0 {
        return Err(CliError::Usage(
            "--count, --contenders and --seconds must be > 0".into(),
        ));
    }
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| CliError::Other(format!("{path}: {e}"))
    };
    // Uncontended: one open file, lock and unlock in a loop; each cycle is two commits.
    let path = a.mounts[0].join(".bench-flock-cycle");
    let file = open_rw(&path)?;
    let mut lat = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        let t = Instant::now();
        flock_fd(&file, libc::LOCK_EX).map_err(io(&path))?;
        flock_fd(&file, libc::LOCK_UN).map_err(io(&path))?;
        lat.push(t.elapsed());
    }
    drop(file);
    lat.sort();
    println!(
        "flock cycle (acquire+release, uncontended): {} cycles: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        a.count,
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 100.0)),
    );
    // Contended: each contender has its own open file (its own flock owner) on one of the
    // mounts, takes the lock, notes the acquisition and releases it again at once. Every
    // acquisition after the first is a hand-off from another contender (or, when nobody else
    // is queued, a re-take).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for c in 0..a.contenders {
        let path = a.mounts[c % a.mounts.len()].join(".bench-flock-contended");
        let file = open_rw(&path)?;
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut acquired = 0u64;
            let mut waits = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                flock_fd(&file, libc::LOCK_EX).map_err(io(&path))?;
                waits.push(t.elapsed());
                acquired += 1;
                flock_fd(&file, libc::LOCK_UN).map_err(io(&path))?;
            }
            Ok::<_, CliError>((acquired, waits))
        }));
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut per = Vec::new();
    let mut waits = Vec::new();
    for t in threads {
        let (n, w) = t
            .join()
            .map_err(|_| CliError::Other("a contender panicked".into()))??;
        total += n;
        per.push(n);
        waits.extend(w);
    }
    let elapsed = started.elapsed();
    waits.sort();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "flock contended: {} contenders on {} mounts: {:.0} hand-offs/s ({total} in {:.1} s, per contender {per:?}); wait p50 {:.3} ms  p99 {:.3} ms",
        a.contenders,
        a.mounts.len(),
        rate,
        elapsed.as_secs_f64(),
        ms(percentile(&waits, 50.0)),
        ms(percentile(&waits, 99.0)),
    );
    record(
        &a.out,
        json!({
            "bench": "flock", "mounts": a.mounts.len(), "count": a.count,
            "cycle_p50_ms": ms(percentile(&lat, 50.0)), "cycle_p90_ms": ms(percentile(&lat, 90.0)),
            "cycle_p99_ms": ms(percentile(&lat, 99.0)), "cycle_max_ms": ms(percentile(&lat, 100.0)),
            "contenders": a.contenders, "handoffs_per_s": rate.round(), "per_contender": per,
            "wait_p50_ms": ms(percentile(&waits, 50.0)), "wait_p99_ms": ms(percentile(&waits, 99.0)),
        }),
    )
}
