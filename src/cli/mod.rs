//! The `lockfs` command line: one binary, one subcommand per job.
//!
//! Every subcommand returns a [`CliError`]; `main` prints it as one line on stderr and exits
//! non-zero, which is the only place errors become exit codes.

mod bench;
mod bench_cache;
mod cert;
mod cluster;
mod dev;
mod files;
mod locks;
mod mount;
mod sessions;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::Tls;
use crate::client::{Client, ClientError};
use crate::server::{self, ServerError};

/// The embedded default: where `lockfs dev` puts its nodes and where clients look first.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser)]
#[command(
    name = "lockfs",
    version,
    about = "A replicated lock service that Linux hosts mount as a filesystem"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct ClientOpts {
    #[command(flatten)]
    pub cluster: ClusterOpts,
    /// Give up after this many seconds without an answer from a leader.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Where the cluster is and how to authenticate to it.
#[derive(Args, Clone)]
pub struct ClusterOpts {
    /// Cluster members to contact (any subset; the leader is found from there).
    #[arg(long, env = "LOCKFS_SERVERS", default_value = DEFAULT_SERVERS, value_delimiter = ',')]
    pub servers: Vec<String>,
    #[command(flatten)]
    pub tls: TlsOpts,
}

impl ClusterOpts {
    /// Client options with a request timeout of `timeout_s` seconds.
    pub fn with_timeout(self, timeout_s: u64) -> ClientOpts {
        ClientOpts {
            cluster: self,
            timeout: timeout_s,
        }
    }
}

/// How a process authenticates to the cluster.
#[derive(Args, Clone, Default)]
pub struct TlsOpts {
    /// Directory with this host's credentials from `lockfs cert issue`: ca.pem, cert.pem and
    /// key.pem (mutual TLS with the cluster's CA).
    #[arg(long, env = "LOCKFS_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Plain TCP, no authentication: only for a cluster whose nodes all run with --insecure
    /// (which they allow on loopback addresses only).
    #[arg(long)]
    pub insecure: bool,
}

impl TlsOpts {
    /// The credentials the options name; `--insecure` wins over a TLS directory from the
    /// environment.
    pub fn load(&self) -> Result<Tls, CliError> {
        let dir = if self.insecure {
            None
        } else {
            self.tls_dir.as_deref()
        };
        Tls::load(dir, self.insecure).map_err(|e| CliError::Usage(e.to_string()))
    }
}

impl ClientOpts {
    fn client(&self) -> Result<Client, CliError> {
        Ok(Client::new(
            self.cluster.servers.clone(),
            Duration::from_secs(self.timeout),
            self.name(),
            self.cluster.tls.load()?,
        ))
    }

    /// How long requests look for a leader before giving up.
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// A client of exactly the one server at `addr` (see [`Client::pinned`]).
    fn pinned(&self, addr: String, timeout: Duration) -> Result<Client, CliError> {
        Ok(Client::pinned(
            addr,
            timeout,
            self.name(),
            self.cluster.tls.load()?,
        ))
    }

    /// How this process introduces itself to the cluster (for its logs).
    fn name(&self) -> String {
        format!("lockfs-cli@{}[{}]", hostname(), std::process::id())
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one member of a cluster.
    Serve(ServeArgs),
    /// Run a local cluster on loopback for trying lockfs out, mounted at MOUNTPOINT if given
    /// (Ctrl-C stops it).
    Dev(dev::DevArgs),
    /// Mount the cluster: flock on the mount is a cluster-wide lock.
    Mount(mount::MountArgs),
    /// Write stdin to a file, creating it if needed; replaces the contents atomically.
    Put {
        path: String,
        /// Permission bits of a new file, in octal.
        #[arg(long, default_value = "644")]
        mode: String,
        /// Compare-and-set: write only if the file is at this content generation (`lockfs
        /// stat`, or `user.lockfs.content_generation` on a mount); 0 means missing or never
        /// written. Otherwise nothing is written and the exit status is 3.
        #[arg(long, value_name = "GENERATION")]
        if_generation: Option<u64>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print a file's contents.
    Cat {
        path: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List a directory.
    Ls {
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a file's or directory's attributes and generation numbers.
    Stat {
        path: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Create a directory.
    Mkdir {
        path: String,
        /// Create missing parents too, and succeed if the directory exists.
        #[arg(short, long)]
        parents: bool,
        /// Permission bits, in octal.
        #[arg(long, default_value = "755")]
        mode: String,
        /// Files created in it are ephemeral: deleted when no session holds them open.
        #[arg(long)]
        ephemeral: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Hold a cluster-wide lock on PATH while CMD runs: lockfs run --lock PATH -- CMD ARGS...
    Run(locks::RunArgs),
    /// List every lock in the cluster: path, mode, holders (host, pid, since), waiters; or
    /// release one.
    Locks {
        #[command(subcommand)]
        cmd: Option<locks::LocksCmd>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List the cluster's sessions (host, identity, age, TTL, locks, handles), or end one.
    Sessions {
        #[command(subcommand)]
        cmd: Option<sessions::SessionsCmd>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a file or an empty directory.
    Rm {
        path: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print each change to PATH (and its children; with -r everything below it) as it
    /// commits, one line each, until interrupted.
    Watch(watch::WatchArgs),
    /// Return as soon as PATH exists, is gone, changed, is unlocked or is locked (exit 0), or
    /// exit 1 when --timeout passes first.
    Wait(watch::WaitArgs),
    /// Measure latency, throughput and failover time.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// Inspect the cluster and change its members.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Make a cluster CA and issue certificates with it.
    Cert {
        #[command(subcommand)]
        cmd: cert::CertCmd,
    },
    /// The lock guardian a mount starts for lock-loss enforcement; reads the mount's lines on
    /// stdin (see `fs/guardian.rs`).
    #[command(hide = true)]
    LockGuard,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Show the leader and every member: role, reachability, applied index and lag.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Add node ID at ADDR as a learner; the leader promotes it to voter once it has caught up
    /// (start it with `lockfs serve --id ID --listen ADDR --join ...` and an empty directory).
    Add {
        id: u64,
        addr: String,
        /// Keep it a learner (a read replica that never votes).
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove node ID (refused if the voters left would not have a live majority).
    Remove {
        id: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Make learner ID a voter now.
    Promote {
        id: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Make the members match a file, one safe change at a time, and report each change.
    Reconcile(cluster::ReconcileArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags win over the file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (1, 2, ...), as in --peers.
    #[arg(long)]
    id: Option<u64>,
    /// Data directory (RocksDB); created if missing.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on for peers and clients (default: this node's address in --peers).
    #[arg(long)]
    listen: Option<String>,
    /// Every member of the initial cluster: 1=HOST:PORT,2=HOST:PORT,... (read only when the
    /// data directory is new and there is nothing to --join).
    #[arg(long)]
    peers: Option<String>,
    /// Join the cluster at HOST:PORT[,HOST:PORT...] if the data directory is new: the node is
    /// added as a learner and promoted to voter once caught up. A node with data ignores it.
    #[arg(long)]
    join: Option<String>,
    /// With --join: stay a learner (a read replica) instead of becoming a voter.
    #[arg(long)]
    learner: bool,
    /// Raft tick length in milliseconds.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Ticks without a leader before an election (randomized up to twice this).
    #[arg(long)]
    election_ticks: Option<usize>,
    /// Ticks between the leader's heartbeats.
    #[arg(long)]
    heartbeat_ticks: Option<usize>,
    /// Applied entries between snapshots (the log is compacted at each snapshot).
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Largest file in bytes.
    #[arg(long)]
    max_file_size: Option<u64>,
    /// Milliseconds during which a lock freed by a session expiry is granted to nobody.
    #[arg(long)]
    lock_delay_ms: Option<u64>,
    /// Milliseconds after which a client connection that sent nothing, with nothing pending,
    /// is closed (default 900000).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Client requests (keep-alives aside) handled at once; more are answered "busy, retry"
    /// (default 16384).
    #[arg(long)]
    max_requests: Option<usize>,
    /// Applied entries between checks that the replicas' states agree (default 10000).
    #[arg(long)]
    check_entries: Option<u64>,
    /// Serve Prometheus metrics, /health and /ready over HTTP at HOST:PORT (no credentials:
    /// bind it where only monitoring reaches).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Directory with this node's credentials from `lockfs cert issue --role peer --id ID`:
    /// ca.pem, cert.pem and key.pem.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// Plain TCP without authentication, for trying things out: only on a loopback address,
    /// and every node and client of the cluster must say --insecure too.
    #[arg(long, conflicts_with = "tls_dir")]
    insecure: bool,
}

/// What a subcommand failed with, already worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Server(#[from] ServerError),
    #[error("{context}: {source}")]
    Client {
        context: String,
        source: ClientError,
    },
    #[error("{0}")]
    Other(String),
    /// A compare-and-set found another generation: exit status 3, so that scripts can tell it
    /// from a failure and retry.
    #[error("{0}")]
    Precondition(String),
    /// Exit with this code and print nothing more (e.g. the status of the command `run` ran).
    #[error("exit status {0}")]
    Exit(i32),
}

impl CliError {
    fn client(context: impl Into<String>) -> impl FnOnce(ClientError) -> CliError {
        let context = context.into();
        move |source| CliError::Client { context, source }
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let default_level = match cli.cmd {
        Cmd::Serve(_) | Cmd::Dev(_) | Cmd::Bench { .. } | Cmd::Mount(_) | Cmd::LockGuard => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    match run(cli.cmd) {
        Ok(()) => 0,
        Err(CliError::Exit(code)) => code,
        // As clap does for bad arguments; mount.lockfs tells mount(8) "incorrect invocation".
        Err(e @ CliError::Usage(_)) => {
            eprintln!("lockfs: {e}");
            2
        }
        Err(e @ CliError::Precondition(_)) => {
            eprintln!("lockfs: {e}");
            3
        }
        Err(e) => {
            eprintln!("lockfs: {e}");
            1
        }
    }
}

fn run(cmd: Cmd) -> Result<(), CliError> {
    match cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Dev(args) => dev::run(args),
        Cmd::Mount(args) => mount::run(args),
        Cmd::Put {
            path,
            mode,
            if_generation,
            client,
        } => {
            let mode = parse_mode(&mode)?;
            block_on(files::put(&client.client()?, &path, mode, if_generation))
        }
        Cmd::Cat { path, client } => block_on(files::cat(&client.client()?, &path)),
        Cmd::Ls { path, json, client } => block_on(files::ls(&client.client()?, &path, json)),
        Cmd::Stat { path, json, client } => block_on(files::stat(&client.client()?, &path, json)),
        Cmd::Mkdir {
            path,
            parents,
            mode,
            ephemeral,
            client,
        } => {
            let mode = parse_mode(&mode)?;
            block_on(files::mkdir(
                &client.client()?,
                &path,
                mode,
                parents,
                ephemeral,
            ))
        }
        Cmd::Run(args) => block_on(locks::run(args)),
        Cmd::Watch(args) => block_on(watch::watch(args)),
        Cmd::Wait(args) => block_on(watch::wait(args)),
        Cmd::Locks { cmd, json, client } => block_on(locks::locks(cmd, &client, json)),
        Cmd::Sessions { cmd, json, client } => block_on(sessions::run(cmd, &client, json)),
        Cmd::Rm { path, client } => block_on(files::rm(&client.client()?, &path)),
        Cmd::Cluster { cmd } => match cmd {
            ClusterCmd::Status { json, client } => block_on(cluster::status(&client, json)),
            ClusterCmd::Add {
                id,
                addr,
                learner,
                client,
            } => block_on(cluster::change(
                &client,
                crate::client::ops::add_member(id, &addr, learner),
            )),
            ClusterCmd::Remove { id, client } => block_on(cluster::change(
                &client,
                crate::client::ops::remove_member(id),
            )),
            ClusterCmd::Promote { id, client } => block_on(cluster::change(
                &client,
                crate::client::ops::promote_member(id),
            )),
            ClusterCmd::Reconcile(args) => block_on(cluster::reconcile(args)),
        },
        Cmd::Bench { cmd } => bench::run(cmd),
        Cmd::Cert { cmd } => cert::run(cmd),
        Cmd::LockGuard => {
            crate::fs::run_lock_guardian();
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> Result<(), CliError> {
    let mut file = match &a.config {
        Some(path) => server::config::ConfigFile::read(path)?,
        None => server::config::ConfigFile::default(),
    };
    macro_rules! flag_wins {
        ($($f:ident),*) => { $( if a.$f.is_some() { file.$f = a.$f; } )* };
    }
    if a.learner {
        file.learner = Some(true);
    }
    if a.insecure {
        file.insecure = Some(true);
        file.tls_dir = None;
    }
    flag_wins!(
        id,
        data,
        listen,
        peers,
        join,
        tick_ms,
        election_ticks,
        heartbeat_ticks,
        snapshot_entries,
        max_file_size,
        lock_delay_ms,
        idle_timeout_ms,
        max_requests,
        check_entries,
        metrics_listen,
        tls_dir
    );
    let cfg = file.finish()?;
    let data = cfg.data.clone();
    match server::serve(cfg) {
        Err(e) if e.is_corrupt() => {
            log::error!("{e}; {}", server::ServerError::corrupt_advice(&data));
            Err(CliError::Exit(server::EXIT_CORRUPT))
        }
        result => Ok(result?),
    }
}

/// Returns when SIGTERM arrives (never, if it cannot be listened for).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Returns when SIGINT (Ctrl-C) or SIGTERM arrives.
async fn interrupted() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
    }
}

fn block_on<T, F: std::future::Future<Output = Result<T, CliError>>>(f: F) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("starting the runtime: {e}")))?
        .block_on(f)
}

fn parse_mode(s: &str) -> Result<u32, CliError> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CliError::Usage(format!("mode '{s}' is not an octal permission (e.g. 644)")))
}

/// This machine's name as a certificate may carry it: characters a certificate name does not
/// allow become '-'.
pub(crate) fn hostname_for_cert() -> String {
    let name: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(crate::auth::identity::NAME_MAX)
        .collect();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length and gethostname NUL-terminates within it
    // (or truncates, which we handle by taking up to the first NUL or the end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
