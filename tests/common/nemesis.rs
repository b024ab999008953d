//! The fault suite's nemesis (`tests/faults.rs`): the faults it injects into servers and
//! hosts, each undone when its guard drops, also when a test fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Cluster;

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
