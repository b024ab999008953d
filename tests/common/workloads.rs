//! The fault suite's workloads (`tests/faults.rs`): clients that lock, write, read and hold
//! ephemeral files while the nemesis runs, each recording what it saw for the checkers. The
//! shell clients are scripts in `tests/scripts/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::linearizable::{Kind as RegKind, Op as RegOp};
use super::nemesis::{now_ns, signal};
use super::Rng;
use lockfs::client::{ops, Client};

/// One critical section, run by `flock` while it holds the lock: read the fencing token, make
/// `$N` writes stamped with it to the fenced store (outside the cluster), log each (before, `i`,
/// and after, `w`: a section killed in the middle may have made a write it could not log) and
/// the section with the time `flock` was invoked (`$INV`). With `$MARKER`, it says it holds the
/// lock by creating that file.
pub const CRITICAL_SECTION: &str = include_str!("../scripts/critical-section.sh");

/// A lock client: loops until `$OUT/stop` exists (or, as a bound, until `$END`, seconds since
/// the epoch) taking the lock with `flock -w` for short critical sections.
pub const LOCK_CLIENT: &str = include_str!("../scripts/lock-client.sh");

/// The holder that host B's cut-off strands: it takes the lock once and keeps writing to the
/// store for longer than its session can outlive the cut-off. Its late writes must be refused
/// by the store once a newer holder wrote.
pub const STALE_CLIENT: &str = include_str!("../scripts/stale-client.sh");

/// A semaphore client: loops like [`LOCK_CLIENT`] on `$M/sem`, logging when each turn began,
/// ticked (its work, every 0.1 s) and ended, all inside the lock, so the true holding contains
/// the logged one; a turn killed on lock loss ends at its last tick.
pub const SEM_CLIENT: &str = include_str!("../scripts/sem-client.sh");

pub fn setfattr(path: &Path, name: &str, value: &str) {
    let set = Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path)
        .status()
        .expect("setfattr");
    assert!(
        set.success(),
        "setfattr {name}={value} {}: {set}",
        path.display()
    );
}

/// Makes `dir` on a mount an ephemeral directory, with setfattr(1) as a user would.
pub fn ephemeral_dir(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    let ok = Command::new("setfattr")
        .args(["-n", "user.lockfs.ephemeral", "-v", "1"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "setfattr on {}", dir.display());
}

/// Where the fault suite's shell clients run: the two hosts (name and mount), the directory
/// their logs go to, and when they stop at the latest (seconds since the epoch), should the
/// test die before it tells them to.
pub struct Clients<'a> {
    pub hosts: [(&'a str, &'a Path); 2],
    pub out: &'a Path,
    pub end: u64,
}

impl Clients<'_> {
    /// The host of the `i`th client (from 1): the first host for odd ones, the second for even.
    fn host(&self, i: usize) -> (&str, &Path) {
        self.hosts[(i + 1) % 2]
    }

    /// Starts `n` lock clients (`LOCK_CLIENT`), "c1" to "cN", on the hosts in turn, each
    /// writing to the fenced store `store` in its critical sections; returns their ids.
    pub fn start_lock_clients(&self, procs: &mut Procs, store: &Path, n: usize) -> Vec<String> {
        let ids: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
        for (i, id) in (1..).zip(&ids) {
            let (host, mount) = self.host(i);
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(LOCK_CLIENT)
                .env("ID", id)
                .env("HOST", host)
                .env("M", mount)
                .env("OUT", self.out)
                .env("STORE", store)
                .env("CS", CRITICAL_SECTION)
                .env("END", self.end.to_string());
            procs.spawn(cmd);
        }
        ids
    }

    /// Starts `n` clients (`SEM_CLIENT`) of the semaphore `sem` at the root of the mounts,
    /// "s1" to "sN", on the hosts in turn; returns their ids and hosts.
    pub fn start_sem_clients(&self, procs: &mut Procs, n: usize) -> Vec<(String, String)> {
        let mut started = Vec::new();
        for i in 1..=n {
            let (host, mount) = self.host(i);
            let id = format!("s{i}");
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(SEM_CLIENT)
                .env("ID", &id)
                .env("M", mount)
                .env("OUT", self.out)
                .env("END", self.end.to_string());
            procs.spawn(cmd);
            started.push((id, host.to_string()));
        }
        started
    }
}

/// Background processes in their own process groups, killed (whole group) on drop.
#[derive(Default)]
pub struct Procs(Vec<Child>);

impl Procs {
    pub fn spawn(&mut self, mut cmd: Command) {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawning a client");
        self.0.push(child);
    }

    /// Waits (bounded) for every process to exit by itself; kills what is left, and says
    /// what each process of its group was doing.
    pub fn wait_all(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut left = Vec::new();
        for c in &mut self.0 {
            loop {
                if c.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let group = c.id().to_string();
                    let ps = Command::new("ps")
                        .args(["-e", "-o", "pgid=,pid=,stat=,wchan:32=,etime=,args="])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.split_whitespace().next() == Some(group.as_str()))
                        .collect::<Vec<_>>()
                        .join("\n");
                    left.push(ps);
                    signal(c.id(), libc::SIGKILL);
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        left
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: kill(2) of the process group of a child we started.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Writes `/set/<i>` through the client library until stopped; the acknowledged ones.
pub fn set_writer(
    servers: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u64>, u64)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let servers = servers.split(',').map(String::from).collect();
            let client = Client::new(
                servers,
                Duration::from_secs(5),
                "set-writer".into(),
                super::tls::admin(),
            );
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let put = ops::put(
                    &format!("/set/{i}"),
                    i.to_string().into_bytes(),
                    0o644,
                    0,
                    0,
                );
                match client.call(put).await {
                    Ok(_) => acked.push(i),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, failed)
        })
    })
}

/// How a register client reaches `/reg`: through a mount's files, or the `lockfs` CLI.
#[derive(Clone)]
pub enum Via {
    /// `read(2)`, `write(2)` (an `echo >`: open with O_TRUNC, write, close) and the
    /// `user.lockfs.content_generation` attribute of the file on a mount.
    Files(PathBuf),
    /// `lockfs cat`, `lockfs stat --json`, `lockfs put [--if-generation G]`, a process each.
    Cli(String),
    /// Only reads of the file on a mount (`cat`), which its cache may serve.
    Reads(PathBuf),
    /// Only replaces of the file on a mount (`echo >`).
    Replaces(PathBuf),
}

/// The content generation as the mount's attribute shows it.
pub fn xattr_generation(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: both strings are NUL-terminated and buf is writable for its length.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"user.lockfs.content_generation".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The generation in `lockfs stat --json` output.
pub fn json_generation(stdout: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    v.get("content_generation")?.as_u64()
}

/// Reads, writes and (through the CLI) compare-and-sets `/reg` until stopped, recording each
/// operation with its invocation and return times (ns since `epoch`). Writes are of unique
/// values; a compare-and-set is at the generation this client saw last, which another
/// client's write may have moved on: some apply, some are refused.
pub fn register_client(
    client_id: u64,
    via: Via,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<RegOp>> {
    std::thread::spawn(move || {
        let mut rng = Rng(client_id * 7919 + 1);
        let mut history = Vec::new();
        let at = || epoch.elapsed().as_nanos() as u64;
        let mut last_gen = 0u64;
        for n in 0..1_000_000u64 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let value = format!("c{client_id}-{n}");
            let call = at();
            // A file write that failed after its open may have left only its O_TRUNC behind.
            let mut maybe_truncated = false;
            // What happened: Some(kind, known) or None (a read that failed: nothing to check).
            let outcome: Option<(RegKind, bool)> = match (&via, rng.below(8)) {
                (Via::Reads(path), _) => std::fs::read(path).ok().map(|d| {
                    (
                        RegKind::Read(String::from_utf8_lossy(&d).into_owned()),
                        true,
                    )
                }),
                (Via::Replaces(path), _) => {
                    let ok = std::fs::write(path, &value).is_ok();
                    maybe_truncated = !ok;
                    Some((RegKind::Write(value), ok))
                }
                (Via::Files(path), 0..=2) => std::fs::read(path).ok().map(|d| {
                    (
                        RegKind::Read(String::from_utf8_lossy(&d).into_owned()),
                        true,
                    )
                }),
                (Via::Files(path), 3..=4) => xattr_generation(path).map(|g| {
                    last_gen = g;
                    (RegKind::ReadGen(g), true)
                }),
                // A failed write (EIO after the session expired, say) may still have been
                // applied: its outcome is unknown. Its open's O_TRUNC may have been applied
                // without the data, as on a local filesystem (the close commits it).
                (Via::Files(path), _) => {
                    let ok = std::fs::write(path, &value).is_ok();
                    maybe_truncated = !ok;
                    Some((RegKind::Write(value), ok))
                }
                (Via::Cli(servers), 0..=1) => {
                    let out = super::cli(servers, &["cat", "/reg"], None);
                    out.status.success().then(|| {
                        let value = String::from_utf8_lossy(&out.stdout).into_owned();
                        (RegKind::Read(value), true)
                    })
                }
                (Via::Cli(servers), 2..=3) => {
                    let out = super::cli(servers, &["stat", "--json", "/reg"], None);
                    let gen = out.status.success().then(|| json_generation(&out.stdout));
                    gen.flatten().map(|g| {
                        last_gen = g;
                        (RegKind::ReadGen(g), true)
                    })
                }
                (Via::Cli(servers), 4..=5) => {
                    let out = super::cli(servers, &["put", "/reg"], Some(value.as_bytes()));
                    Some((RegKind::Write(value), out.status.success()))
                }
                (Via::Cli(servers), _) => {
                    let gen = last_gen.to_string();
                    let args = ["put", "--if-generation", &gen, "/reg"];
                    let status = super::cli(servers, &args, Some(value.as_bytes())).status;
                    // 0: applied; 3: refused, the generation was another; else (a failure, or
                    // killed by the bound) unknown.
                    let cas = RegKind::Cas {
                        gen: last_gen,
                        value,
                        ok: status.code() != Some(3),
                    };
                    Some((cas, matches!(status.code(), Some(0) | Some(3))))
                }
            };
            if let Some((kind, known)) = outcome {
                history.push(RegOp {
                    client: client_id,
                    kind,
                    call,
                    ret: if known { at() } else { u64::MAX },
                });
            }
            if maybe_truncated {
                history.push(RegOp {
                    client: client_id,
                    kind: RegKind::Write(String::new()),
                    call,
                    ret: u64::MAX,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        history
    })
}

/// The names under `/set` as node `addr` serves them.
pub fn set_on(addr: &str) -> Result<Vec<u64>, String> {
    super::block_on(async {
        let client = Client::pinned(
            addr.to_string(),
            Duration::from_secs(30),
            "check".into(),
            super::tls::admin(),
        );
        match client.readdir("/set").await {
            Ok(entries) => Ok(entries.iter().filter_map(|e| e.name.parse().ok()).collect()),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// Polls `path` (on host A) and records when it was seen present and absent.
pub fn observe(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u64, bool)>> {
    std::thread::spawn(move || {
        let mut seen: Vec<(u64, bool)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let present = path.exists();
            if seen.last().map(|(_, p)| *p) != Some(present) {
                seen.push((now_ns(), present));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}
