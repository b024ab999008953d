//! Runtime membership with real processes and a client writing the whole time: grow 1 -> 3 -> 5,
//! shrink 5 -> 3, refuse a removal that would lose the majority, replace a node killed with -9
//! by a fresh one, reconcile from a file (one added, one removed), remove the leader itself;
//! at the end every acknowledged write is on every member and all members serve the same.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, fails_with, ok, Cluster};
use lockfs::client::{ops, Client};

const WAIT: Duration = Duration::from_secs(90);

fn status(servers: &str) -> serde_json::Value {
    let out = cli(servers, &["cluster", "status", "--json"], None);
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// (voters, learners) by id, as the leader reports them.
fn roles(servers: &str) -> (Vec<u64>, Vec<u64>) {
    let s = status(servers);
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    for m in s["members"].as_array().into_iter().flatten() {
        let id = m["id"].as_u64().unwrap();
        if m["role"] == "learner" {
            learners.push(id);
        } else {
            voters.push(id);
        }
    }
    voters.sort();
    learners.sort();
    (voters, learners)
}

fn wait_voters(c: &Cluster, want: &[u64]) {
    let start = Instant::now();
    loop {
        let (voters, learners) = roles(&c.servers());
        if voters == want && learners.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "voters {voters:?} (learners {learners:?}), wanted {want:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A client that writes `/w/<i>` = `v<i>` in a loop through a client configured with one
/// address only, and records which writes were acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(server: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = Client::new(
                    vec![server],
                    Duration::from_secs(10),
                    "writer".into(),
                    common::tls::admin(),
                );
                // Bounded: stops when told, or after this many writes at the most.
                for i in 0..1_000_000u64 {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let put = ops::put(
                        &format!("/w/{i}"),
                        format!("v{i}").into_bytes(),
                        0o644,
                        0,
                        0,
                    );
                    if client.call(put).await.is_ok() {
                        a.lock().unwrap().push(i);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits (bounded) until `more` further writes were acknowledged.
    fn progresses(&self, more: usize, c: &Cluster) {
        let target = self.count() + more;
        let start = Instant::now();
        while self.count() < target {
            assert!(
                start.elapsed() < WAIT,
                "writes stalled at {}\n{}",
                self.count(),
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Every file under `/w` as node `addr` serves it (its own linearizable reads).
/// `lockfs serve` arguments for node `id` listening on `listen`, joining through `join`, with
/// its data in `data`, then `extra`.
fn join_args(id: u64, listen: &str, join: &str, data: &Path, extra: &[&str]) -> Vec<String> {
    let data = data.display().to_string();
    let id = id.to_string();
    [
        "--id", &id, "--listen", listen, "--join", join, "--data", &data,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

fn contents(addr: &str) -> BTreeMap<String, Vec<u8>> {
    common::block_on(async {
        let client = Client::pinned(
            addr.to_string(),
            Duration::from_secs(30),
            "check".into(),
            common::tls::admin(),
        );
        let mut out = BTreeMap::new();
        for e in client.readdir("/w").await.expect("readdir") {
            let path = format!("/w/{}", e.name);
            let data = client.read(&path).await.expect("read");
            out.insert(path, data);
        }
        out
    })
}

#[test]
fn members_grow_shrink_get_replaced_and_reconciled_while_a_client_writes() {
    // A small snapshot interval, so newcomers also catch up from compacted logs.
    let mut c = Cluster::start(1, &["--snapshot-entries", "300"]);
    ok(&c.servers(), &["mkdir", "/w"], None);
    let writer = Writer::start(c.addr(1));
    writer.progresses(20, &c);

    // Grow 1 -> 3 -> 5: each joins as a learner and is promoted once caught up.
    c.join(2, &[]);
    c.join(3, &[]);
    wait_voters(&c, &[1, 2, 3]);
    writer.progresses(20, &c);
    c.join(4, &[]);
    c.join(5, &[]);
    wait_voters(&c, &[1, 2, 3, 4, 5]);
    assert!(
        c.log_of(5).contains("installed a snapshot"),
        "{}",
        c.log_of(5)
    );

    // Shrink 5 -> 3.
    for id in [4, 5] {
        ok(&c.servers(), &["cluster", "remove", &id.to_string()], None);
        assert!(c.terminate(id));
    }
    wait_voters(&c, &[1, 2, 3]);
    writer.progresses(20, &c);

    // kill -9 of node 3: removing node 2 as well would leave 1 live voter of 2: refused.
    let leader = c.wait_leader(WAIT);
    let victim = if leader == 3 { 2 } else { 3 };
    let other = 5 - victim; // the one of {2, 3} that stays alive
    c.kill(victim);
    // The leader notices the death within two election timeouts.
    std::thread::sleep(Duration::from_secs(5));
    fails_with(
        &c.servers(),
        &["cluster", "remove", &other.to_string()],
        None,
        "majority",
    );
    // Replace the dead node with a fresh one (same id, new address, empty directory).
    ok(
        &c.servers(),
        &["cluster", "remove", &victim.to_string()],
        None,
    );
    c.join(victim, &[]);
    wait_voters(&c, &[1, 2, 3]);
    writer.progresses(20, &c);

    // Reconcile: the file lists 1, 3 and a new 6, so 6 is added and 2 removed.
    let addr6 = format!("127.0.0.1:{}", common::free_port());
    let file = c.dir.path().join("cluster.toml");
    std::fs::write(
        &file,
        format!("members = \"1={},3={},6={addr6}\"\n", c.addr(1), c.addr(3)),
    )
    .unwrap();
    let dry = ok(
        &c.servers(),
        &[
            "cluster",
            "reconcile",
            "--config",
            file.to_str().unwrap(),
            "--dry-run",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&dry).trim(),
        format!("would add node 6 at {addr6}")
    );
    let servers = c.servers();
    let file_arg = file.to_str().unwrap().to_string();
    let reconcile = std::thread::spawn(move || {
        cli(
            &servers,
            &[
                "cluster",
                "reconcile",
                "--config",
                &file_arg,
                "--wait",
                "60",
            ],
            None,
        )
    });
    // The new member's process starts once reconcile has added it (its join is then a no-op).
    let start = Instant::now();
    while !roles(&c.servers()).1.contains(&6) {
        assert!(start.elapsed() < WAIT, "reconcile never added node 6");
        std::thread::sleep(Duration::from_millis(100));
    }
    let data6 = c.register(6, &addr6);
    let args = join_args(
        6,
        &addr6,
        &c.addr(1),
        &data6,
        &["--snapshot-entries", "300"],
    );
    c.spawn_with(6, &args);
    let out = reconcile.join().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("added node 6"), "{report}");
    assert!(report.contains("voter"), "{report}");
    assert!(
        report.contains("removed node 2: not in the file"),
        "{report}"
    );
    assert!(report.contains("members match"), "{report}");
    assert!(c.terminate(2));
    wait_voters(&c, &[1, 3, 6]);
    writer.progresses(20, &c);

    // Remove node 1, the only address the writer was given; if it leads, it hands over first.
    ok(&c.servers(), &["cluster", "remove", "1"], None);
    assert!(c.terminate(1));
    wait_voters(&c, &[3, 6]);
    // The writer, configured with node 1 alone, found the others.
    writer.progresses(20, &c);

    let acked = writer.finish();
    let reference = contents(&c.addr(3));
    for &i in &acked {
        assert_eq!(
            reference.get(&format!("/w/{i}")).map(Vec::as_slice),
            Some(format!("v{i}").as_bytes()),
            "acknowledged write {i} is missing"
        );
    }
    assert_eq!(
        contents(&c.addr(6)),
        reference,
        "members serve different contents"
    );
    eprintln!(
        "{} writes acknowledged through every change, all present on every member",
        acked.len()
    );
}

#[test]
fn a_node_with_another_clusters_data_is_refused_and_one_with_its_own_recovers() {
    let mut a = Cluster::start(1, &[]);
    let mut b = Cluster::start(1, &[]);
    ok(&a.servers(), &["put", "/a"], Some(b"a"));
    // Node 1 of cluster b, stopped, is restarted with --join to cluster a: refused.
    assert!(b.terminate(1));
    let args = join_args(1, &b.addr(1), &a.addr(1), &b.nodes[0].data, &[]);
    b.spawn_with(1, &args);
    assert_ne!(b.wait_exit(1, WAIT), Some(0));
    let log = b.log_of(1);
    assert!(log.contains("holds data of cluster"), "{log}");
    // A member of a that restarts with --join (as a systemd unit might) recovers as itself.
    assert!(a.terminate(1));
    let args = join_args(1, &a.addr(1), &a.addr(1), &a.nodes[0].data, &[]);
    a.spawn_with(1, &args);
    a.wait_leader(WAIT);
    assert_eq!(ok(&a.servers(), &["cat", "/a"], None), b"a");
}
