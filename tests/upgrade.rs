//! A rolling upgrade with real processes. `LOCKFS_TEST_LOG_FORMAT=1` makes a node stand in for
//! a lockfs that reads log format 1 only. A cluster of three such nodes is upgraded one node at
//! a time, writes going on in between: the cluster keeps writing format 1 until all three run
//! the newest, then switches to format 2, and every acknowledged write is still there. A node
//! that goes back to format 1 afterwards is refused by its peers, and says why, instead of
//! being sent a log it cannot read; upgraded again, it catches up.
//!
//! The variable reaches the nodes through this process's environment, so this file holds one
//! test: no other test in this binary can start a node while it is set.

mod common;

use std::time::{Duration, Instant};

use common::{ok, Cluster};

const WAIT: Duration = Duration::from_secs(60);
const OLD: &str = "LOCKFS_TEST_LOG_FORMAT";

/// `field` of member `id` in the cluster's status, as the member itself reports it (`None`:
/// no answer).
fn status_of(c: &Cluster, id: u64, field: &str) -> Option<u64> {
    let out = c.cli(&c.servers(), &["cluster", "status", "--json"], None);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let members = v["members"].as_array()?;
    let member = members.iter().find(|m| m["id"].as_u64() == Some(id))?;
    member[field].as_u64()
}

/// The leader's commit index.
fn commit(c: &Cluster) -> u64 {
    let out = c.cli(&c.servers(), &["cluster", "status", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["commit"].as_u64().expect("a commit index")
}

/// The log format the cluster writes as node `id` reports it.
fn format_on(c: &Cluster, id: u64) -> Option<u64> {
    status_of(c, id, "log_format")
}

/// Waits until every node in `ids` reports `format`.
fn wait_format(c: &Cluster, ids: &[u64], format: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: Vec<Option<u64>> = ids.iter().map(|&id| format_on(c, id)).collect();
        if seen.iter().all(|f| *f == Some(format)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {ids:?} report log formats {seen:?}, not {format}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node `id` starts again, reading the newest log format (or only format 1, with `old`).
fn restart(c: &mut Cluster, id: u64, old: bool) {
    c.kill(id);
    if old {
        std::env::set_var(OLD, "1");
    }
    c.spawn(id);
    std::env::remove_var(OLD);
}

/// Writes `v<n>` to `/k<n>` through the cluster; returns both.
fn write(c: &Cluster, n: usize) -> (String, String) {
    let (key, value) = (format!("/k{n}"), format!("v{n}"));
    ok(&c.servers(), &["put", &key], Some(value.as_bytes()));
    (key, value)
}

#[test]
fn a_cluster_upgraded_node_by_node_switches_its_log_format_once_all_read_it() {
    std::env::set_var(OLD, "1");
    let mut c = Cluster::start(3, &[]);
    std::env::remove_var(OLD);
    let mut keys = vec![write(&c, 0)];
    wait_format(&c, &[1, 2, 3], 1);

    // One node at a time: while any node reads format 1 only, the cluster writes format 1.
    for (n, id) in [3, 2, 1].into_iter().enumerate() {
        restart(&mut c, id, false);
        c.wait_leader(WAIT);
        keys.push(write(&c, n + 1));
        if id != 1 {
            // Long enough for a leader that could switch to have done so.
            std::thread::sleep(Duration::from_secs(2));
            wait_format(&c, &[1, 2, 3], 1);
        }
    }
    // All three read format 2 now: the leader switches the cluster.
    wait_format(&c, &[1, 2, 3], 2);
    keys.push(write(&c, 10));
    for id in 1..=3 {
        for (key, value) in &keys {
            let got = ok(&c.addr(id), &["cat", key], None);
            assert_eq!(got, value.as_bytes(), "{key} on node {id}");
        }
    }

    // Node 3 goes back to a lockfs that reads format 1 only: its peers refuse it, it gets no
    // entry of the log, and the other two go on.
    restart(&mut c, 3, true);
    let deadline = Instant::now() + WAIT;
    let refusal = "reads log formats up to 1, and this cluster writes format 2";
    while !(1..=3).any(|id| c.log_of(id).contains(refusal)) {
        assert!(Instant::now() < deadline, "no refusal:\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (key, _) = write(&c, 11);
    let commit = commit(&c);
    assert!(
        status_of(&c, 3, "applied").expect("node 3's status") < commit,
        "node 3 was sent the log"
    );
    assert!(
        !c.log_of(3).contains("newer than node 3 reads"),
        "node 3 was sent an entry it cannot read:\n{}",
        c.log_of(3)
    );

    // Upgraded again, it catches up.
    restart(&mut c, 3, false);
    let deadline = Instant::now() + WAIT;
    while status_of(&c, 3, "applied").unwrap_or(0) < commit {
        assert!(
            Instant::now() < deadline,
            "node 3 did not catch up:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ok(&c.addr(3), &["cat", &key], None), b"v11");
}
