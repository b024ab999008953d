//! Catch-up from a large tree: a new node joins a cluster that holds many full-size files and
//! becomes a voter, receiving the state as a snapshot streamed in chunks; the numbers (fill
//! time, time to become a voter, peak memory of the sender and the newcomer) are printed.
//!
//! CI runs a short size; `LOCKFS_CATCHUP_MB=1024` runs the 1 GiB measurement.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{block_on, ok, tls, Cluster};
use lockfs::client::{ops, Client};
use lockfs::proto::Response_oneof_result as Res;

const FILE: usize = 256 * 1024;

fn status(servers: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(servers, &["cluster", "status", "--json"], None))
        .expect("status json")
}

/// (current, peak) resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect(name)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The contents of file `i`: distinct per file, so a mix-up shows.
fn contents(i: usize) -> Vec<u8> {
    let mut data = vec![(i % 251) as u8; FILE];
    data[..8].copy_from_slice(&(i as u64).to_be_bytes());
    data
}

#[test]
fn a_new_node_catches_up_from_a_large_tree() {
    let mb: usize = std::env::var("LOCKFS_CATCHUP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let files = mb * 1024 * 1024 / FILE;
    let mut c = Cluster::start_with_config(3, "[quotas]\nbytes = 17179869184\n");
    let servers = c.servers();

    // Fill, 16 writes at a time.
    let client = Arc::new(Client::new(
        c.nodes.iter().map(|n| n.addr.clone()).collect(),
        Duration::from_secs(60),
        "fill".into(),
        tls::admin(),
    ));
    let started = Instant::now();
    block_on(async {
        ok_call(&client, ops::mkdir("/big", 0o755, 0, 0)).await;
        for batch in (0..files).collect::<Vec<_>>().chunks(16) {
            let writes = batch.iter().map(|&i| {
                let client = client.clone();
                async move {
                    let op = ops::put(&format!("/big/f{i}"), contents(i), 0o644, 0, 0);
                    ok_call(&client, op).await;
                }
            });
            futures::future::join_all(writes).await;
        }
    });
    let fill = started.elapsed();
    let leader = status(&servers)["leader"].as_u64().expect("leader");
    let leader_pid = c.nodes[leader as usize - 1].pid().expect("leader runs");

    // A new node joins; the leader compacts its log for it, so it catches up from a snapshot.
    let started = Instant::now();
    let addr = c.join(4, &[]);
    let deadline = started + Duration::from_secs(if mb > 256 { 1200 } else { 180 });
    let voter = loop {
        let s = status(&servers);
        let role = s["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["id"] == 4)
            .and_then(|m| m["role"].as_str().map(String::from));
        if role.as_deref() == Some("follower") {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "node 4 is not a voter: {role:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let newcomer_pid = c.nodes.iter().find(|n| n.id == 4).unwrap().pid().unwrap();
    let (leader_rss, leader_peak) = rss_mib(leader_pid);
    let (new_rss, new_peak) = rss_mib(newcomer_pid);
    let log = c.log_of(leader);
    let sent = log
        .lines()
        .find(|l| l.contains("sent the snapshot") && l.contains("to peer 4"))
        .unwrap_or("(no snapshot sent: the log was enough)")
        .to_string();
    println!(
        "catch-up: {mb} MiB in {files} files; filled in {fill:.1?}; node 4 a voter after \
         {voter:.1?}; leader RSS {leader_rss} MiB (peak {leader_peak}); newcomer RSS \
         {new_rss} MiB (peak {new_peak})\n  {sent}"
    );
    assert!(sent.contains("sent the snapshot"), "{}", c.logs());

    // The newcomer serves the files, each with its own contents.
    let node = Client::pinned(addr, Duration::from_secs(30), "check".into(), tls::admin());
    for i in [0, files / 2, files - 1] {
        match block_on(node.call(ops::read(&format!("/big/f{i}")))) {
            Ok(Res::data(d)) => assert!(d.data == contents(i), "file {i} differs"),
            other => panic!("file {i} on node 4: {other:?}"),
        }
    }
}

async fn ok_call(client: &Client, op: lockfs::proto::Request_oneof_op) {
    if let Err(e) = client.call(op).await {
        panic!("fill: {e}");
    }
}
