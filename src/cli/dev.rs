//! `lockfs dev`: the embedded default. Starts N `lockfs serve` processes on loopback, waits for a
//! leader, prints how to use the cluster, and stops everything on Ctrl-C or SIGTERM.
//!
//! The nodes are real child processes of this binary (not threads), so what a user tries here is
//! exactly what a deployment runs, mutual TLS included: the cluster gets its own CA and
//! certificates under its data directory (`tls/`), and `lockfs dev` prints the
//! `LOCKFS_TLS_DIR` that lets the CLI in.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{CliError, ClientOpts, ClusterOpts, TlsOpts};
use crate::auth::{Identity, Role};
use crate::client::ops;

#[derive(Args)]
pub struct DevArgs {
    /// Where to mount the cluster (created if missing).
    #[arg(default_value = "/mnt/lockfs")]
    mountpoint: PathBuf,
    /// Run the cluster only, without a mount.
    #[arg(long)]
    no_mount: bool,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Data directory (one subdirectory per node); a fresh temporary one, removed on exit, if
    /// not given.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Port of node 1; node i listens on base-port + i - 1.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
}

/// A local cluster of `lockfs serve` child processes; stopped (SIGTERM, then SIGKILL) on drop.
pub struct LocalCluster {
    pub exe: PathBuf,
    pub data: PathBuf,
    /// Credentials: `ca`, `node-N` for each node, `admin` and `host` (see [`super::cert::ensure`]).
    pub tls: PathBuf,
    pub addrs: Vec<(u64, String)>,
    peers: String,
    children: Vec<(u64, Option<Child>)>,
}

impl LocalCluster {
    /// Starts `nodes` nodes on consecutive loopback ports from `base_port`, data under `data`.
    pub fn start(nodes: u16, data: PathBuf, base_port: u16) -> Result<LocalCluster, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::Other(format!("locating the lockfs binary: {e}")))?;
        let addrs: Vec<(u64, String)> = (1..=nodes as u64)
            .map(|i| (i, format!("127.0.0.1:{}", base_port as u64 + i - 1)))
            .collect();
        for (_, addr) in &addrs {
            if std::net::TcpListener::bind(addr).is_err() {
                return Err(CliError::Other(format!(
                    "{addr} is in use (another lockfs dev?); pick other ports with --base-port"
                )));
            }
        }
        let peers = addrs
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let tls = data.join("tls");
        let identity = |role, name: &str| Identity {
            role,
            name: name.to_string(),
            subtree: None,
        };
        let mut wanted: Vec<(String, Identity)> = (1..=nodes as u64)
            .map(|i| {
                (
                    format!("node-{i}"),
                    identity(Role::Peer(i), &format!("node-{i}")),
                )
            })
            .collect();
        wanted.push(("admin".into(), identity(Role::Admin, "dev-admin")));
        wanted.push((
            "host".into(),
            identity(Role::Host, &super::hostname_for_cert()),
        ));
        let wanted: Vec<(&str, Identity)> = wanted
            .iter()
            .map(|(d, i)| (d.as_str(), i.clone()))
            .collect();
        super::cert::ensure(&tls, &wanted)?;
        let mut cluster = LocalCluster {
            exe,
            tls,
            data,
            children: addrs.iter().map(|(id, _)| (*id, None)).collect(),
            addrs,
            peers,
        };
        for id in 1..=nodes as u64 {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    pub fn servers(&self) -> Vec<String> {
        self.addrs.iter().map(|(_, a)| a.clone()).collect()
    }

    /// Options for a client of this cluster, as its administrator.
    pub fn client_opts(&self, timeout: u64) -> ClientOpts {
        ClusterOpts {
            servers: self.servers(),
            tls: TlsOpts {
                tls_dir: Some(self.tls.join("admin")),
                insecure: false,
            },
        }
        .with_timeout(timeout)
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.data.join(format!("node{id}.log"))
    }

    /// Starts (or restarts) node `id`.
    pub fn spawn(&mut self, id: u64) -> Result<(), CliError> {
        let addr = self.addrs[(id - 1) as usize].1.clone();
        let dir = self.data.join(format!("node{id}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError::Other(format!("{}: {e}", dir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .map_err(|e| CliError::Other(format!("creating the log of node {id}: {e}")))?;
        let child = Command::new(&self.exe)
            .arg("serve")
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                &addr,
                "--peers",
                &self.peers,
            ])
            .arg("--data")
            .arg(&dir)
            .arg("--tls-dir")
            .arg(self.tls.join(format!("node-{id}")))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| CliError::Other(e.to_string()))?,
            )
            .stderr(log)
            .spawn()
            .map_err(|e| CliError::Other(format!("starting node {id}: {e}")))?;
        self.children[(id - 1) as usize].1 = Some(child);
        Ok(())
    }

    /// kill -9 of node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[(id - 1) as usize].1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A node that exited on its own, if any.
    fn exited(&mut self) -> Option<(u64, std::process::ExitStatus)> {
        self.children.iter_mut().find_map(|(id, c)| {
            c.as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .map(|s| (*id, s))
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter().filter_map(|(_, c)| c.as_ref()) {
            // SAFETY: plain kill(2) on a pid we spawned and have not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (id, slot) in &mut self.children {
            let Some(child) = slot.as_mut() else { continue };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("node {id} did not stop; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

pub fn run(args: DevArgs) -> Result<(), CliError> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err(CliError::Usage("--nodes must be between 1 and 9".into()));
    }
    let (data, temporary) = match args.data {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("lockfs-dev-{}", std::process::id())),
            true,
        ),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        install_flag(sig, stop.clone())?;
    }
    let mut cluster = LocalCluster::start(args.nodes, data.clone(), args.base_port)?;
    let servers = cluster.servers();
    let opts = cluster.client_opts(20);
    let leader = super::block_on(async {
        // A linearizable read proves a leader that has committed in its term.
        let client = opts.client()?;
        client
            .call(ops::stat("/"))
            .await
            .map_err(|e| CliError::Other(format!("the cluster did not come up: {e}")))?;
        match client.status().await {
            Ok(s) => Ok(s.leader_id),
            Err(e) => Err(CliError::Other(format!("the cluster did not come up: {e}"))),
        }
    })?;

    let list = servers.join(",");
    let mut mount = if args.no_mount {
        None
    } else {
        let m = &args.mountpoint;
        std::fs::create_dir_all(m)
            .map_err(|e| CliError::Other(format!("creating {}: {e}", m.display())))?;
        if is_mounted(&std::fs::canonicalize(m).unwrap_or(m.clone())) {
            return Err(CliError::Other(format!(
                "{} is already a lockfs mount (another lockfs dev?); give another mountpoint",
                m.display()
            )));
        }
        Some(MountChild::start(
            &cluster.exe,
            m,
            &list,
            &cluster.tls.join("host"),
            &data,
            "",
            "mount.log",
        )?)
    };
    println!(
        "lockfs dev: {} nodes running (leader: node {leader})",
        args.nodes
    );
    println!("  data and logs: {}", data.display());
    println!();
    println!("  export LOCKFS_SERVERS={list}");
    println!(
        "  export LOCKFS_TLS_DIR={}",
        cluster.tls.join("admin").display()
    );
    println!("  echo hello | lockfs put /greeting");
    println!("  lockfs cat /greeting");
    println!("  lockfs ls /");
    println!("  lockfs cluster status");
    if mount.is_some() {
        let m = args.mountpoint.display();
        println!();
        println!("  mounted at {m}:");
        println!("  echo hello > {m}/greeting; cat {m}/greeting");
        println!("  flock {m}/job -c 'echo I hold the cluster-wide lock; sleep 5'");
        println!("  getfattr -n user.lockfs.lock_generation {m}/job");
    }
    println!();
    println!("Ctrl-C stops the cluster.");

    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        if let Some(status) = mount
            .as_mut()
            .and_then(|m| m.child.try_wait().ok().flatten())
        {
            break Err(CliError::Other(format!(
                "the mount exited ({status}); see {}",
                data.join("mount.log").display()
            )));
        }
        if let Some((id, status)) = cluster.exited() {
            break Err(CliError::Other(format!(
                "node {id} exited ({status}); see {}",
                cluster.log_path(id).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("stopping...");
    // The mount first, while the cluster can still close its session.
    drop(mount.take());
    drop(cluster);
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

/// `lockfs mount --foreground` as a child of `lockfs dev` (or of a benchmark); unmounted
/// (SIGTERM) on drop.
pub(super) struct MountChild {
    child: Child,
}

impl MountChild {
    /// Mounts with options `-o options` (none if empty), logging to `data/log_name`.
    pub(super) fn start(
        exe: &std::path::Path,
        mountpoint: &std::path::Path,
        servers: &str,
        tls_dir: &std::path::Path,
        data: &std::path::Path,
        options: &str,
        log_name: &str,
    ) -> Result<MountChild, CliError> {
        let log = std::fs::File::create(data.join(log_name))
            .map_err(|e| CliError::Other(format!("creating the mount log: {e}")))?;
        let mut command = Command::new(exe);
        command
            .args(["mount", "--foreground", "--servers", servers])
            .arg("--tls-dir")
            .arg(tls_dir);
        if !options.is_empty() {
            command.args(["-o", options]);
        }
        let mut child = command
            .arg(mountpoint)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| CliError::Other(e.to_string()))?,
            )
            .stderr(log)
            .spawn()
            .map_err(|e| CliError::Other(format!("starting the mount: {e}")))?;
        // Ready when the mountpoint shows up in the mount table.
        let deadline = Instant::now() + Duration::from_secs(20);
        let wanted = std::fs::canonicalize(mountpoint).unwrap_or(mountpoint.to_path_buf());
        loop {
            if is_mounted(&wanted) {
                return Ok(MountChild { child });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CliError::Other(format!(
                    "mounting {} failed ({status}); see {}",
                    mountpoint.display(),
                    data.join("mount.log").display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CliError::Other(format!(
                    "mounting {} timed out",
                    mountpoint.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a lockfs mount sits at `path` (as /proc/self/mounts spells it).
pub fn is_mounted(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.to_string_lossy();
    mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.next() == Some("lockfs") && fields.next() == Some(&*path)
    })
}

impl Drop for MountChild {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(flag) = FLAG.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// Sets `flag` when `sig` arrives (an async-signal-safe store, nothing more).
fn install_flag(sig: i32, flag: Arc<AtomicBool>) -> Result<(), CliError> {
    let _ = FLAG.set(flag);
    // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
    let prev = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    if prev == libc::SIG_ERR {
        return Err(CliError::Other(format!(
            "installing a handler for signal {sig}"
        )));
    }
    Ok(())
}
