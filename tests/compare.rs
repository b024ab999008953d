//! `bench/compare.py --short`: etcd, ZooKeeper and lockfs each start as three members on
//! loopback, and every workload of the comparison runs against each of them for a moment; and
//! `bench/curves.py --short`, the cost curves at small levels; and `bench/elections.py --short`,
//! the count of elections in an idle cluster under CPU load. The numbers of a short run mean
//! nothing and are not looked at; what is checked is that every system started and every
//! workload and level ran and recorded a result.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

const SYSTEMS: [&str; 3] = ["etcd", "zookeeper", "lockfs"];
const WORKLOADS: [&str; 10] = [
    "write",
    "create",
    "read",
    "lock",
    "contended_4",
    "contended_32",
    "writes_64",
    "holder_crash_process",
    "holder_crash_host",
    "failover",
];
/// Workloads only lockfs has: its CLI protocol, next to its mount.
const LOCKFS_ONLY: [&str; 2] = ["write_cli", "writes_64_cli"];

#[test]
fn every_system_starts_and_runs_every_workload() {
    let (status, results) = run_short("compare.py", "short.jsonl");
    assert!(
        status.success(),
        "bench/compare.py --short failed ({status}); results so far:\n{results}"
    );
    let mut seen = BTreeSet::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let system = v["system"].as_str().expect("system").to_string();
        let workload = v["workload"].as_str().expect("workload").to_string();
        // Every result carries a positive measurement.
        let measured = [
            "p50_ms",
            "handoffs_per_s",
            "writes_per_s",
            "ops_per_s",
            "ms",
            "seconds",
        ]
        .iter()
        .filter_map(|k| v[*k].as_f64())
        .next();
        assert!(
            measured.is_some_and(|x| x > 0.0),
            "{system} {workload}: no positive measurement in {line}"
        );
        seen.insert((system, workload));
    }
    for system in SYSTEMS {
        let own: &[&str] = if system == "lockfs" {
            &LOCKFS_ONLY
        } else {
            &[]
        };
        for workload in WORKLOADS.iter().chain(own).chain(&["start"]) {
            assert!(
                seen.contains(&(system.to_string(), workload.to_string())),
                "{system} has no {workload} result:\n{results}"
            );
        }
    }
}

/// Runs `bench/SCRIPT --short` with this build's lockfs in a scratch directory; its exit status
/// and the JSON lines it wrote to `results` there.
fn run_short(script: &str, results: &str) -> (std::process::ExitStatus, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile_dir();
    let status = Command::new("/usr/bin/python3")
        .arg(repo.join("bench").join(script))
        .args(["--short", "--lockfs", env!("CARGO_BIN_EXE_lockfs"), "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running bench/{script}: {e}"));
    let text = std::fs::read_to_string(out.join(results)).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    (status, text)
}

fn tempfile_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lockfs-compare-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// `bench/curves.py --short`: both cost curves run their small levels, and every level
/// records measurements, not an error.
#[test]
fn the_cost_curves_run_every_level() {
    let (status, results) = run_short("curves.py", "curves-short.jsonl");
    assert!(
        status.success(),
        "bench/curves.py --short failed ({status}):\n{results}"
    );
    let mut levels = BTreeSet::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let curve = v["curve"].as_str().expect("curve").to_string();
        let level = v["level"].as_u64().expect("level");
        assert!(v["error"].is_null(), "{curve} {level} failed: {line}");
        let p50 = v["mount_flock"]["p50_ms"].as_f64();
        assert!(
            p50.is_some_and(|x| x > 0.0),
            "{curve} {level}: no flock latency in {line}"
        );
        levels.insert((curve, level));
    }
    for (curve, level) in [
        ("sessions", 0),
        ("sessions", 10),
        ("sessions", 100),
        ("tree", 0),
        ("tree", 100),
        ("tree", 1000),
    ] {
        assert!(
            levels.contains(&(curve.to_string(), level)),
            "no {curve} {level} result:\n{results}"
        );
    }
}

/// `bench/elections.py --short`: an idle cluster under busy loops is watched for a few seconds,
/// and the count of elections is recorded with the status samples it comes from. The count is
/// not checked: it depends on how loaded the machine is.
#[test]
fn the_idle_election_count_runs() {
    let (status, results) = run_short("elections.py", "elections-short.jsonl");
    assert!(
        status.success(),
        "bench/elections.py --short failed ({status}):\n{results}"
    );
    let line = results.lines().last().expect("a result line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    for key in ["elections", "leader_changes", "status_unanswered"] {
        assert!(v[key].as_u64().is_some(), "no {key} in {line}");
    }
    assert!(
        v["status_samples"].as_u64().is_some_and(|n| n > 0),
        "no status sample in {line}"
    );
}
