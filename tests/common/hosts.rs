//! Hosts for mount tests: a real cluster, two real mounts of it (`$A`, `$B` in scripts) and a
//! scratch directory (`$OUT`). Background processes run in their own process groups and are
//! killed (the whole group) when the test ends, then the mounts are stopped, then the cluster.
//!
//! The two mounts are two hosts to the cluster as well: mount A runs with the host certificate
//! `host-a`, mount B with `host-b`. Scripts run with the test administrator's credentials in
//! `LOCKFS_TLS_DIR`, which every `lockfs` they start inherits.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{tls, Cluster, Mount};

/// The bound on any one foreground command; generous, the machine may be busy.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// The bound on waiting for something that should happen.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A cluster, two mounts of it (`$A`, `$B` in scripts) and a scratch directory outside them
/// (`$OUT`, for markers).
pub struct Hosts {
    children: Vec<Child>,
    pub a: Mount,
    pub b: Mount,
    pub cluster: Cluster,
    pub dir: super::testdir::TempDir,
}

impl Hosts {
    pub fn start() -> Hosts {
        Self::start_with("allow_other")
    }

    /// As [`Hosts::start`], with both mounts' `-o options`.
    pub fn start_with(options: &str) -> Hosts {
        // A short lock-delay keeps tests that expire sessions quick; the mounts use the default
        // TTL so that a leader failover never expires them.
        let cluster = Cluster::start(3, &["--lock-delay-ms", "1000"]);
        Self::on(cluster, options, options)
    }

    /// Hosts on a cluster behind proxies (`proxy.rs`), so that a host can be cut off from it
    /// (`Cluster::isolate_client`), with a lock-delay of `lock_delay_ms` and each mount's
    /// `-o options`.
    pub fn start_proxied(lock_delay_ms: u64, a_options: &str, b_options: &str) -> Hosts {
        let delay = lock_delay_ms.to_string();
        let cluster = Cluster::start_proxied(3, &["--lock-delay-ms", &delay]);
        Self::on(cluster, a_options, b_options)
    }

    fn on(cluster: Cluster, a_options: &str, b_options: &str) -> Hosts {
        let dir = super::testdir::tempdir().expect("tempdir");
        let servers = cluster.servers();
        let a = Mount::start_as(
            "host-a",
            &servers,
            &dir.path().join("a"),
            a_options,
            &dir.path().join("mount-a.log"),
            "info",
        );
        let b = Mount::start_as(
            "host-b",
            &servers,
            &dir.path().join("b"),
            b_options,
            &dir.path().join("mount-b.log"),
            "info",
        );
        Hosts {
            children: Vec::new(),
            a,
            b,
            cluster,
            dir,
        }
    }

    /// Another host: a mount of the cluster at `$OUT/name` as host `host` (an existing host
    /// certificate), with `-o options`, logging to `$OUT/mount-name.log`. The caller stops it.
    pub fn extra_mount(&self, name: &str, host: &str, options: &str) -> Mount {
        Mount::start_as(
            host,
            &self.cluster.servers(),
            &self.dir.path().join(name),
            options,
            &self.dir.path().join(format!("mount-{name}.log")),
            "info",
        )
    }

    /// Reads and writes that the cluster's members handled since they started, all
    /// together (keep-alives aside), from `lockfs cluster status --json`.
    pub fn requests(&self) -> u64 {
        let out = self.ok("\"$LOCKFS\" cluster status --json");
        let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
        status["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                let r = &m["requests"];
                r["reads"].as_u64().expect("reads") + r["writes"].as_u64().expect("writes")
            })
            .sum()
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The contents of `$OUT/name` ("" while it does not exist).
    pub fn read_out(&self, name: &str) -> String {
        std::fs::read_to_string(self.out(name)).unwrap_or_default()
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("A", &self.a.path)
            .env("B", &self.b.path)
            .env("OUT", self.dir.path())
            .env("LOCKFS", env!("CARGO_BIN_EXE_lockfs"))
            .env("LOCKFS_SERVERS", self.cluster.servers())
            .env(tls::ENV, tls::admin_dir())
            .env(
                "EXAMPLES",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-tools/examples"),
            )
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .process_group(0);
        cmd
    }

    /// Runs a bash script and waits for it (bounded).
    pub fn sh(&self, script: &str) -> Out {
        let mut cmd = self.command("bash");
        cmd.arg("-c").arg(script);
        run(cmd, COMMAND_LIMIT)
    }

    /// Runs a bash script that must succeed; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed: {}\nstdout: {}\nstderr: {}\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.logs()
        );
        out.stdout
    }

    /// Starts a program in the background, in its own process group; returns its pid.
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts a bash script that signals readiness by creating `$OUT/marker`; waits for it.
    pub fn spawn_ready(&mut self, script: &str, marker: &str) -> u32 {
        let pid = self.spawn("bash", &["-c", script]);
        let path = self.out(marker);
        wait_until(&format!("marker {marker}"), || {
            assert!(self.running(pid), "`{script}` exited before {marker}");
            path.exists()
        });
        pid
    }

    pub fn child_mut(&mut self, pid: u32) -> &mut Child {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("a child of this test")
    }

    pub fn running(&mut self, pid: u32) -> bool {
        self.child_mut(pid).try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for a background child to exit.
    pub fn wait_child(&mut self, pid: u32) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child_mut(pid).try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < WAIT_LIMIT,
                "process {pid} still running after {WAIT_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Cuts host B's mount off from the cluster; on hosts from [`Hosts::start_proxied`] only.
    /// `Cluster::heal` restores it.
    pub fn cut_off_b(&self) {
        let mount = self.b.pid().expect("mount B runs");
        self.cluster.isolate_client(&format!("[{mount}]"));
    }

    /// SIGSTOP of host B's mount process alone (a hung or paused mount; the host's other
    /// processes run on). It resumes when the guard drops, also when the test fails.
    pub fn freeze_b(&self) -> Frozen {
        let mount = self.b.pid().expect("mount B runs");
        // SAFETY: kill(2) of the mount process this test started.
        unsafe { libc::kill(mount as i32, libc::SIGSTOP) };
        Frozen(mount)
    }

    /// kill -9 of a background child's whole process group, and reaps the child.
    pub fn kill9(&mut self, pid: u32) {
        kill_group(pid, libc::SIGKILL);
        let _ = self.child_mut(pid).wait();
    }

    pub fn logs(&self) -> String {
        format!(
            "--- mount a ---\n{}\n--- mount b ---\n{}\n{}",
            tail(&self.a.log_text()),
            tail(&self.b.log_text()),
            self.cluster.logs()
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Processes first (they hold files open in the mounts), then the mounts; the cluster
        // goes last, when its field drops.
        for child in &mut self.children {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        self.a.stop();
        self.b.stop();
    }
}

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(30).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A process stopped with SIGSTOP, resumed when this drops.
pub struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process that was stopped.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

pub fn kill_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) of a process group we created (the child's pid is its group id).
    unsafe { libc::kill(-(pid as i32), signal) };
}

pub fn run(mut cmd: Command, limit: Duration) -> Out {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read the pipes on threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            panic!("command did not finish within {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    Out {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        elapsed,
    }
}

/// A shell line that writes to `$OUT/marker` what it sees of process `pid` (a child of the
/// test, so never reaped meanwhile): its state and flags (`/proc/PID/stat` fields 3 and 9),
/// `Z ...` once it died, or `gone`.
pub fn note_state_of(pid: u32, marker: &str) -> String {
    format!(
        "state=$(cut -d' ' -f3,9 /proc/{pid}/stat 2>/dev/null) || state=gone
         echo \"$state\" > \"$OUT/{marker}\""
    )
}

/// Whether what [`note_state_of`] wrote says the process was dead: gone, a zombie, or
/// exiting (PF_EXITING: it runs no code of its own any more; closing its files on a frozen
/// mount can keep it from becoming a zombie until the mount answers).
pub fn noted_dead(noted: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let mut words = noted.split_whitespace();
    let state = words.next();
    let flags: u64 = words.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, Some("Z") | Some("gone")) || flags & PF_EXITING != 0
}

/// Whether `cond` came true within [`WAIT_LIMIT`] (for a caller that explains a timeout).
pub fn waited(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT_LIMIT {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out after {WAIT_LIMIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
