//! The fault suite's nemesis (`tests/faults.rs`): the faults it injects into servers and
//! hosts, each undone when its guard drops, also when a test fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Cluster, Rng};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) of a process this test started and has not reaped.
    unsafe { libc::kill(pid as i32, sig) };
}

/// One injected fault, with its times (ns since the epoch).
#[derive(Debug, Clone)]
pub struct Fault {
    pub what: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A small tmpfs for one node's data directory, so its disk can be filled; unmounted (lazily)
/// when dropped, after the node is gone.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    /// The size leaves room for RocksDB's preallocated write-ahead log (about 70 MB) and, once
    /// the filler is gone, for the recovery that flushes it.
    pub const SIZE: &'static str = "size=200m";

    pub fn mount(path: PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", Self::SIZE, "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount(8)");
        assert!(
            ok.success(),
            "mounting a tmpfs at {} (needs root)",
            path.display()
        );
        SmallDisk { path }
    }

    /// Fills the disk with a file of zeros.
    pub fn fill(&self) {
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.path.join("filler").display()))
            .arg("bs=1M")
            .stderr(Stdio::null())
            .status();
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Processes stopped with SIGSTOP are resumed when this drops, also when a test fails, so
/// that the fixtures can stop them.
#[derive(Default)]
pub struct Paused(Mutex<Vec<u32>>);

impl Paused {
    pub fn pause(&self, pid: u32) {
        self.0.lock().unwrap().push(pid);
        signal(pid, libc::SIGSTOP);
    }

    pub fn resume(&self, pid: u32) {
        signal(pid, libc::SIGCONT);
        self.0.lock().unwrap().retain(|p| *p != pid);
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().drain(..) {
            signal(pid, libc::SIGCONT);
        }
    }
}

/// Stops node `id` with SIGSTOP for `ms`, then lets it go on.
pub fn pause_node(cluster: &Cluster, paused: &Paused, id: u64, ms: u64) {
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.id == id)
        .expect("a node of the cluster");
    let pid = node.pid().expect("the node runs");
    paused.pause(pid);
    std::thread::sleep(Duration::from_millis(ms));
    paused.resume(pid);
}

/// Random server faults for `secs` seconds, one every 1.5 to 4 s, each undone before the next:
/// kill -9 of the leader or of a follower (restarted after 0.5 to 2 s), SIGSTOP of the leader
/// (also for longer than the sessions' TTL of `ttl_s`) or of a follower, and a partition that
/// leaves the leader or a follower alone. Every fault waits for a leader first.
pub fn random_server_faults(
    cluster: &mut Cluster,
    paused: &Paused,
    rng: &mut Rng,
    secs: u64,
    ttl_s: u64,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    let fault_end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < fault_end {
        std::thread::sleep(Duration::from_millis(1500 + rng.below(2500)));
        let leader = cluster.wait_leader(Duration::from_secs(60));
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let start_ns = now_ns();
        let isolate = |cluster: &Cluster, id: u64, ms: u64| {
            cluster.partition(&[id]);
            std::thread::sleep(Duration::from_millis(ms));
            cluster.heal();
        };
        let what = match rng.below(7) {
            kind @ (0 | 1) => {
                let (id, role) = if kind == 0 {
                    (leader, "leader")
                } else {
                    (follower, "follower")
                };
                cluster.kill(id);
                std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
                cluster.spawn(id);
                format!("kill -9 of {role} {id}, restarted")
            }
            2 => {
                let ms = 1000 + rng.below(2000);
                pause_node(cluster, paused, leader, ms);
                format!("SIGSTOP of leader {leader} for {ms} ms")
            }
            3 => {
                // Longer than the sessions' TTL: the new leader must not expire them.
                let ms = ttl_s * 1000 + 2000;
                pause_node(cluster, paused, leader, ms);
                format!("SIGSTOP of leader {leader} for {ms} ms (longer than the TTL)")
            }
            4 => {
                let ms = 1000 + rng.below(3000);
                pause_node(cluster, paused, follower, ms);
                format!("SIGSTOP of follower {follower} for {ms} ms")
            }
            5 => {
                // The old leader loses its quorum and steps down; the majority elects anew.
                let ms = 2000 + rng.below(2000);
                isolate(cluster, leader, ms);
                format!("network partition: leader {leader} alone for {ms} ms")
            }
            _ => {
                let ms = 2000 + rng.below(2000);
                isolate(cluster, follower, ms);
                format!("network partition: follower {follower} alone for {ms} ms")
            }
        };
        faults.push(Fault {
            what,
            start_ns,
            end_ns: now_ns(),
        });
    }
    faults
}

/// A full disk on node `id`, whose data is on `disk`: files of 250 kB are written (at most
/// 600) until the node halts, since its preallocated log still takes writes until it has to
/// grow it. Then the files go, the disk is freed, and the node restarts and catches up.
/// Returns whether it halted, and the fault. A node must halt with an error rather than lose
/// or corrupt anything, while the others go on.
pub fn fill_until_halted(cluster: &mut Cluster, disk: &SmallDisk, id: u64) -> (bool, Fault) {
    let servers = cluster.servers();
    let start_ns = now_ns();
    disk.fill();
    let big = vec![b'x'; 250_000];
    let running = |cluster: &mut Cluster| {
        let node = cluster.nodes.iter_mut().find(|n| n.id == id);
        node.expect("a node of the cluster").is_running()
    };
    let mut filled = 0;
    while running(cluster) && filled < 600 {
        // A put may fail while the node, if it led, halts: what matters is that it halts.
        super::cli(&servers, &["put", &format!("/fill{filled}")], Some(&big));
        filled += 1;
    }
    let halted = !running(cluster);
    for i in 0..filled {
        super::cli(&servers, &["rm", &format!("/fill{i}")], None);
    }
    disk.free();
    cluster.kill(id); // reaps it
    cluster.spawn(id);
    let fault = Fault {
        what: format!("full disk on node {id} ({filled} files of 250 kB written until it halted)"),
        start_ns,
        end_ns: now_ns(),
    };
    (halted, fault)
}

/// Cuts a host off for `ms`: its mount process (`host` names it, `pid` is its process id)
/// frozen with SIGSTOP, or, when not `frozen`, the network between that mount and every node
/// cut while the host runs on (the proxies name a client after the process that dials,
/// "lockfs[PID]"). Returns the fault, once the host is back.
pub fn cut_off_host(
    cluster: &Cluster,
    paused: &Paused,
    (host, pid): (&str, u32),
    ms: u64,
    frozen: bool,
) -> Fault {
    let start_ns = now_ns();
    let how = if frozen {
        paused.pause(pid);
        std::thread::sleep(Duration::from_millis(ms));
        paused.resume(pid);
        "mount paused"
    } else {
        cluster.isolate_client(&format!("[{pid}]"));
        std::thread::sleep(Duration::from_millis(ms));
        cluster.heal();
        "network partition between its mount and the cluster"
    };
    Fault {
        what: format!("host {host} cut off ({how}) for {ms} ms"),
        start_ns,
        end_ns: now_ns(),
    }
}
