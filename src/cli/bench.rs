//! `lockfs bench`: programs that measure and print numbers (never tests that assert on time).
//!
//! - `write`: small-file writes through the client protocol against a running cluster; latency
//!   percentiles and throughput.
//! - `failover`: starts its own local 3-node cluster, kills -9 the leader several times and
//!   measures the time from the kill to the next acknowledged write.
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
use crate::proto::Response_oneof_result as Res;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Writes of small files; prints latency percentiles and throughput.
    Write(WriteArgs),
    /// Kills -9 the leader of a local 3-node cluster; prints the time to the next write.
    Failover(FailoverArgs),
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
    }
}

/// The value below which `p` of the sorted samples fall.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn record(out: &Option<PathBuf>, value: serde_json::Value) -> Result<(), CliError> {
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
    let client = Arc::new(a.client.client());
    super::files::mkdir(&client, "/bench", 0o755, true, false).await?;
    let payload = vec![b'x'; a.size];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let client = client.clone();
        let payload = payload.clone();
        let count = a.count;
        let step = a.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..count).step_by(step) {
                let path = format!("/bench/w{}", i % 256);
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
        .call(ops::cluster_status())
        .await
        .map_err(CliError::client("cluster status"))?
    {
        Res::status(s) if s.leader_id != 0 => Ok(s.leader_id),
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
    let opts = ClientOpts {
        servers: cluster.servers(),
        timeout: 30,
    };
    let mut times = Vec::new();
    for round in 0..a.rounds {
        let client = opts.client();
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
