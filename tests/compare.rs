//! `bench/compare.py --short`: etcd, ZooKeeper and lockfs each start as three members on
//! loopback, and every workload of the comparison runs against each of them for a moment. The
//! numbers of a short run mean nothing and are not looked at; what is checked is that every
//! system started and every workload ran and recorded a result.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

const SYSTEMS: [&str; 3] = ["etcd", "zookeeper", "lockfs"];
const WORKLOADS: [&str; 9] = [
    "write",
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
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile_dir();
    let status = Command::new("/usr/bin/python3")
        .arg(repo.join("bench/compare.py"))
        .args(["--short", "--lockfs", env!("CARGO_BIN_EXE_lockfs"), "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()
        .expect("running bench/compare.py");
    let results = std::fs::read_to_string(out.join("short.jsonl")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
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
        let own: &[&str] = if system == "lockfs" { &LOCKFS_ONLY } else { &[] };
        for workload in WORKLOADS.iter().chain(own).chain(&["start"]) {
            assert!(
                seen.contains(&(system.to_string(), workload.to_string())),
                "{system} has no {workload} result:\n{results}"
            );
        }
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lockfs-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
