//! `lockfs mount`: the cluster as a local filesystem.
//!
//! Without `--foreground` the command daemonizes, but only after the mount is in place: the
//! parent waits on a pipe until the child reports success (then exits 0) or a failure (then
//! prints it and exits 1), so `mount` errors reach the shell that asked. The daemon logs to
//! `--log`. SIGTERM, SIGINT or an external `umount` end it: it unmounts and closes its session,
//! which releases the mount's locks and ephemeral files at once.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, ClientOpts};
use crate::fs::cluster::ClusterBackend;
use crate::fs::metrics::MountMetrics;
use crate::fs::{mount_counting, Backend as _, MountConfig, MountHandle};

#[derive(Args)]
pub struct MountArgs {
    /// Where to mount (an existing directory).
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated: allow_other, default_permissions (on unless
    /// no_default_permissions), ro, rw, ttl=SECONDS (session TTL, default 10), tls_dir=DIR
    /// (as --tls-dir), insecure (as --insecure), root_squash (uid and gid 0 act as nobody in
    /// the cluster's permission checks), cache=on|off (keep a consistent cache of the tree;
    /// on by default), inotify (report other hosts' creations and deletions to inotify),
    /// on_lock_loss=signal[:SIG] (when the session is lost, or in jeopardy for
    /// lock_loss_after=SECONDS, default 0, every process holding a lock here gets SIG, TERM by
    /// default, and KILL lock_loss_grace=SECONDS later, default 2); _netdev,
    /// defaults, auto, noauto, nofail, user, nouser, dev, suid, exec are accepted and ignored
    /// (they concern mount(8) and fstab).
    #[arg(short = 'o')]
    pub options: Option<String>,
    /// Stay in the foreground (and log to stderr).
    #[arg(long)]
    pub foreground: bool,
    /// Log file of a daemonized mount.
    #[arg(long, default_value = "/tmp/lockfs-mount.log")]
    pub log: PathBuf,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Parsed `-o` options.
pub struct Options {
    pub config: MountConfig,
    pub ttl: Duration,
    pub tls_dir: Option<PathBuf>,
    pub insecure: bool,
    /// Cache the tree (see `fs/cache.rs`): on unless `cache=off`, or unless permissions are
    /// the cluster's to check per user (`no_default_permissions`) or root is squashed, where
    /// one cache cannot serve every user alike.
    pub cache: bool,
    /// Replay other hosts' creations and deletions to this host's kernel, for inotify
    /// (`fs/echo.rs`); needs the cache.
    pub inotify: bool,
    /// Serve the host's metrics, /health and /ready over HTTP here (`fs/metrics.rs`).
    pub metrics: Option<String>,
}

fn seconds(name: &str, v: &str) -> Result<Duration, CliError> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| CliError::Usage(format!("{name}={v}: not a number of seconds")))
}

pub fn parse_options(s: Option<&str>) -> Result<Options, CliError> {
    let mut o = Options {
        config: MountConfig::default(),
        ttl: Duration::from_secs(10),
        tls_dir: None,
        insecure: false,
        cache: true,
        inotify: false,
        metrics: None,
    };
    for opt in s
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        match opt.split_once('=') {
            Some(("ttl", v)) => {
                let secs: f64 = v
                    .parse()
                    .map_err(|_| CliError::Usage(format!("ttl={v}: not a number of seconds")))?;
                o.ttl = Duration::try_from_secs_f64(secs)
                    .map_err(|_| CliError::Usage(format!("ttl={v}: not a number of seconds")))?;
            }
            Some(("tls_dir", v)) if !v.is_empty() => o.tls_dir = Some(PathBuf::from(v)),
            Some(("metrics", v)) if !v.is_empty() => o.metrics = Some(v.to_string()),
            Some(("on_lock_loss", v)) => {
                let signal = crate::fs::parse_lock_loss(v).map_err(CliError::Usage)?;
                o.config.lock_loss.signal = Some(signal);
            }
            Some(("lock_loss_after", v)) => {
                o.config.lock_loss.after = seconds("lock_loss_after", v)?
            }
            Some(("lock_loss_grace", v)) => {
                o.config.lock_loss.grace = seconds("lock_loss_grace", v)?
            }
            Some(("cache", "on")) => o.cache = true,
            Some(("inotify", "on")) => o.inotify = true,
            Some(("inotify", "off")) => o.inotify = false,
            Some(("cache", "off")) => o.cache = false,
            Some(_) => return Err(CliError::Usage(format!("unknown mount option '{opt}'"))),
            None => match opt {
                "allow_other" => o.config.allow_other = true,
                "default_permissions" => o.config.default_permissions = true,
                "no_default_permissions" => o.config.default_permissions = false,
                "ro" => o.config.read_only = true,
                "rw" => o.config.read_only = false,
                "inotify" => o.inotify = true,
                "insecure" => o.insecure = true,
                "root_squash" => o.config.root_squash = true,
                "_netdev" | "defaults" | "auto" | "noauto" | "nofail" | "user" | "nouser"
                | "dev" | "suid" | "exec" | "nodev" | "nosuid" | "noexec" => {}
                _ => return Err(CliError::Usage(format!("unknown mount option '{opt}'"))),
            },
        }
    }
    Ok(o)
}

pub fn run(mut a: MountArgs) -> Result<(), CliError> {
    let mut options = parse_options(a.options.as_deref())?;
    if options.tls_dir.is_some() {
        a.client.cluster.tls.tls_dir = options.tls_dir.clone();
    }
    a.client.cluster.tls.insecure |= options.insecure;
    // Credentials are checked before daemonizing, so that their errors reach the shell.
    a.client.cluster.tls.load()?;
    options.config.cluster = cluster_attribute(&a)?;
    if !a.mountpoint.is_dir() {
        return Err(CliError::Usage(format!(
            "{}: not a directory",
            a.mountpoint.display()
        )));
    }
    if a.foreground {
        return serve_mount(&a, options, None);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array on success.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(CliError::Other(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Fork before any thread exists (no runtime has been built yet), so the child is sound.
    // SAFETY: fork(2); the child only continues with this single-threaded program.
    match unsafe { libc::fork() } {
        -1 => Err(CliError::Other(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(read_end);
            let code = match daemon_child(&a, options, write_end) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        _ => {
            drop(write_end);
            let mut status = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut status);
            match status.strip_prefix("ok") {
                Some(_) => Ok(()),
                None if status.is_empty() => Err(CliError::Other(format!(
                    "the mount daemon died; see {}",
                    a.log.display()
                ))),
                None => Err(CliError::Other(
                    status.trim_start_matches("error: ").to_string(),
                )),
            }
        }
    }
}

fn daemon_child(a: &MountArgs, options: Options, status: OwnedFd) -> Result<(), CliError> {
    // SAFETY: setsid(2) in the freshly forked child: it leaves the shell's session.
    unsafe { libc::setsid() };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log)
        .map_err(|e| CliError::Other(format!("{}: {e}", a.log.display())))?;
    let devnull =
        std::fs::File::open("/dev/null").map_err(|e| CliError::Other(format!("/dev/null: {e}")))?;
    use std::os::fd::AsRawFd;
    // SAFETY: dup2(2) onto the standard descriptors, from descriptors we own.
    unsafe {
        libc::dup2(devnull.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    serve_mount(a, options, Some(status))
}

/// Reports the mount's outcome to the waiting parent (if any).
fn report(status: &mut Option<OwnedFd>, message: &str) {
    if let Some(fd) = status.take() {
        let _ = std::fs::File::from(fd).write_all(message.as_bytes());
    }
}

/// How tools on this host reach the cluster behind the mount (`user.lockfs.cluster` on its
/// root, see `fs/xattr.rs`): the servers, and the credentials' directory or `insecure`.
fn cluster_attribute(a: &MountArgs) -> Result<String, CliError> {
    let tls = &a.client.cluster.tls;
    let auth = match (&tls.tls_dir, tls.insecure) {
        (_, true) | (None, _) => "insecure=1".to_string(),
        (Some(dir), false) => {
            let dir = dir
                .canonicalize()
                .map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
            format!("tls_dir={}", dir.display())
        }
    };
    Ok(format!(
        "servers={}\n{auth}\n",
        a.client.cluster.servers.join(",")
    ))
}

fn serve_mount(a: &MountArgs, options: Options, status: Option<OwnedFd>) -> Result<(), CliError> {
    let mut status = status;
    let result = mount_and_wait(a, options, &mut status);
    if let Err(e) = &result {
        report(&mut status, &format!("error: {e}"));
    }
    result
}

fn mount_and_wait(
    a: &MountArgs,
    options: Options,
    status: &mut Option<OwnedFd>,
) -> Result<(), CliError> {
    // One worker, as on the servers: the request tasks wait on the cluster and never block
    // (what takes kernel locks, dropping pages and names, runs on threads of its own), and a
    // FUSE request then wakes one worker, not two. Through two mounts on 2 cores this cut an
    // `echo >` and a flock cycle by about a tenth.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("lockfs-mount")
        .build()
        .map_err(|e| CliError::Other(format!("starting the runtime: {e}")))?;
    let client = Arc::new(a.client.client()?);
    let name = format!("lockfs mount {}", a.mountpoint.display());
    let cache = options.cache && options.config.default_permissions && !options.config.root_squash;
    if options.cache && !cache {
        log::info!("not caching: no_default_permissions or root_squash leave permissions to the cluster, per user");
    }
    let max_ttl = crate::server::MAX_CACHE_TTL;
    let cache = cache && options.ttl <= max_ttl;
    if options.cache && options.ttl > max_ttl {
        log::info!(
            "not caching: with a session ttl above {max_ttl:?}, a silent cache would hold the \
             cluster's writes that long"
        );
    }
    let backend = runtime
        .block_on(ClusterBackend::connect(
            client,
            options.ttl,
            super::hostname(),
            name,
            cache,
        ))
        .map_err(CliError::client("connecting to the cluster"))?;
    let backend = Arc::new(backend);
    if cache {
        runtime.spawn(ClusterBackend::keep_cache(Arc::downgrade(&backend)));
    }
    // Where replays (`fs/echo.rs`) find the mount, whatever the process's directory.
    let absolute = a
        .mountpoint
        .canonicalize()
        .map_err(|e| CliError::Other(format!("{}: {e}", a.mountpoint.display())))?;
    let (metrics, registry) = MountMetrics::new(backend.cache_counters());
    let metrics = Arc::new(metrics);
    if let Some(addr) = &options.metrics {
        let pages = Arc::new(metrics_pages(registry, metrics.clone(), backend.clone()));
        let server = runtime
            .block_on(crate::metrics::bind(addr, pages))
            .map_err(|e| CliError::Other(format!("serving metrics on {addr}: {e}")))?;
        runtime.spawn(server);
    }
    let handle = mount_counting(
        backend.clone(),
        &a.mountpoint,
        options.config,
        runtime.handle().clone(),
        metrics,
    )
    .map_err(|e| CliError::Other(format!("mounting {}: {e}", a.mountpoint.display())))?;
    if cache && options.inotify {
        let mut kernel = handle.kernel();
        kernel.mountpoint = absolute;
        backend.replay_to(kernel);
    }
    log::info!("mounted {}", a.mountpoint.display());
    report(status, "ok");
    runtime.block_on(wait_for_end(&handle));
    log::info!("unmounting {}", a.mountpoint.display());
    let already_gone = handle.is_finished();
    match handle.unmount() {
        // Someone else unmounted it; nothing was left to unmount.
        Err(_) if already_gone => {}
        Err(e) => log::warn!("unmounting {}: {e}", a.mountpoint.display()),
        Ok(()) => {}
    }
    runtime.block_on(backend.shutdown());
    Ok(())
}

/// What `-o metrics=HOST:PORT` serves: the host's metrics; healthy and ready while the
/// mount's session is live.
fn metrics_pages(
    registry: prometheus_client::registry::Registry,
    metrics: Arc<MountMetrics>,
    backend: Arc<ClusterBackend>,
) -> crate::metrics::Pages {
    let live = move |backend: &ClusterBackend| -> Result<(), String> {
        match backend.session_state() {
            "live" => Ok(()),
            "jeopardy" => Err("session in jeopardy: its lease ran out; still trying".into()),
            _ => Err("no live session: the next request opens one".into()),
        }
    };
    let (b1, b2) = (backend.clone(), backend.clone());
    crate::metrics::Pages {
        registry,
        refresh: Box::new(move || {
            metrics.refresh(backend.session_state());
            Box::pin(async {})
        }),
        health: Box::new(move || {
            let verdict = live(&b1);
            Box::pin(async move { verdict })
        }),
        ready: Box::new(move || {
            let verdict = live(&b2);
            Box::pin(async move { verdict })
        }),
    }
}

/// Until SIGTERM, SIGINT or an external unmount.
async fn wait_for_end(handle: &MountHandle) {
    let unmounted = async {
        while !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = super::interrupted() => {}
        _ = unmounted => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_parse() {
        let o = parse_options(Some("allow_other,ro,ttl=2.5,_netdev")).unwrap();
        assert!(o.config.allow_other && o.config.read_only);
        assert_eq!(o.ttl, Duration::from_millis(2500));
        assert!(parse_options(Some("bogus")).is_err());
        assert!(parse_options(Some("ttl=x")).is_err());
        assert!(parse_options(None).unwrap().config.default_permissions);
        let o = parse_options(Some("tls_dir=/etc/lockfs/tls,rw")).unwrap();
        assert_eq!(o.tls_dir, Some(PathBuf::from("/etc/lockfs/tls")));
        assert!(parse_options(Some("insecure")).unwrap().insecure);
    }
}
