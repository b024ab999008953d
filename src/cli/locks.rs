//! `lockfs run --lock PATH -- CMD` (hold a cluster-wide lock while CMD runs), `lockfs locks`
//! and `lockfs locks release PATH`.
//!
//! `run` works like `consul lock`: it opens a session, takes the lock (waiting in the cluster's
//! FIFO queue unless told otherwise), runs CMD with the lock generation (the fencing token) in
//! `LOCKFS_LOCK_GENERATION`, and releases everything when CMD exits. If the session is lost while
//! CMD runs, someone else may get the lock soon: CMD gets SIGTERM, then SIGKILL after a grace.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{CliError, ClientOpts};
use crate::client::session::{LockOutcome, LockRequest, Session, SessionState, Wait};
use crate::proto;

#[derive(Args)]
pub struct RunArgs {
    /// The file to lock (created if missing).
    #[arg(long)]
    lock: String,
    /// Take a shared lock (many holders) instead of an exclusive one.
    #[arg(long)]
    shared: bool,
    /// Make the lock a semaphore first: up to N exclusive holders at once (the file's
    /// `user.lockfs.max_holders`; refused while more than N hold it).
    #[arg(long, value_name = "N")]
    max_holders: Option<u32>,
    /// Seconds to wait for the lock; 0 tries once. Without it, waits as long as it takes.
    #[arg(long)]
    wait: Option<f64>,
    /// Session TTL in seconds: how long the cluster keeps the lock after this process vanished.
    #[arg(long, default_value_t = 10.0)]
    ttl: f64,
    /// Seconds between SIGTERM and SIGKILL when the lock is lost while CMD runs.
    #[arg(long, default_value_t = 5.0)]
    kill_grace: f64,
    #[command(flatten)]
    client: ClientOpts,
    /// The command to run while holding the lock.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

fn seconds(s: f64, what: &str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| CliError::Usage(format!("{what} must be a number of seconds >= 0")))
}

pub async fn run(a: RunArgs) -> Result<(), CliError> {
    let ttl = seconds(a.ttl, "--ttl")?;
    let kill_grace = seconds(a.kill_grace, "--kill-grace")?;
    let wait = match a.wait {
        None => Wait::Forever,
        Some(s) if s <= 0.0 => Wait::No,
        Some(s) => Wait::For(seconds(s, "--wait")?),
    };
    let client = Arc::new(a.client.client()?);
    let host = super::hostname();
    let session = Session::open(client, ttl, ttl, &host, "lockfs run")
        .await
        .map_err(CliError::client("opening a session"))?;
    let result = run_in_session(&session, &a, wait, kill_grace).await;
    // However CMD ended, give the lock back now rather than after the TTL.
    let _ = session.close().await;
    result
}

async fn run_in_session(
    session: &Arc<Session>,
    a: &RunArgs,
    wait: Wait,
    kill_grace: Duration,
) -> Result<(), CliError> {
    let (handle, _) = session
        .open_file(&a.lock, true, 0o644, false)
        .await
        .map_err(CliError::client(a.lock.as_str()))?;
    if let Some(n) = a.max_holders {
        session
            .call(crate::client::ops::set_max_holders(&a.lock, n))
            .await
            .map_err(CliError::client(format!("{}: max_holders {n}", a.lock)))?;
    }
    let req = LockRequest {
        handle,
        owner: handle,
        style: proto::LockStyle::FLOCK,
        kind: if a.shared {
            proto::LockKind::SHARED
        } else {
            proto::LockKind::EXCLUSIVE
        },
        start: 0,
        end: u64::MAX,
        pid: std::process::id(),
    };
    let generation = match session
        .lock(&req, wait, super::interrupted())
        .await
        .map_err(CliError::client(a.lock.as_str()))?
    {
        LockOutcome::Granted(grant) => grant.generation,
        LockOutcome::WouldBlock { conflict } => {
            let by = conflict
                .map(|h| format!(" (held by pid {} on {})", h.pid, h.host))
                .unwrap_or_default();
            return Err(CliError::Other(format!("{}: lock is held{by}", a.lock)));
        }
        LockOutcome::GaveUp => {
            return Err(CliError::Other(format!(
                "{}: gave up waiting for the lock",
                a.lock
            )))
        }
    };
    log::info!("{}: lock held, generation {generation}", a.lock);

    let mut child = tokio::process::Command::new(&a.cmd[0])
        .args(&a.cmd[1..])
        .env("LOCKFS_LOCK_GENERATION", generation.to_string())
        .env("LOCKFS_LOCK_PATH", &a.lock)
        .spawn()
        .map_err(|e| CliError::Other(format!("{}: {e}", a.cmd[0])))?;
    let mut state = session.state();
    let ended = async {
        loop {
            if matches!(*state.borrow_and_update(), SessionState::Ended { .. }) {
                return "session ended";
            }
            if state.changed().await.is_err() {
                return "session ended";
            }
        }
    };
    // An administrator's release (`lockfs locks release`) loses the lock too; the session
    // hears of it as a push, looked at here a few times a second.
    let revoked = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !session.take_revoked().is_empty() {
                return "released by an administrator";
            }
        }
    };
    let lost = async {
        tokio::select! {
            why = ended => why,
            why = revoked => why,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| CliError::Other(format!("waiting for {}: {e}", a.cmd[0])))?,
        why = lost => {
            eprintln!("lockfs: {}: lock lost ({why}); stopping {}", a.lock, a.cmd[0]);
            signal(&child, libc::SIGTERM);
            if tokio::time::timeout(kill_grace, child.wait()).await.is_err() {
                signal(&child, libc::SIGKILL);
                let _ = child.wait().await;
            }
            return Err(CliError::Exit(1));
        }
        _ = super::terminated() => {
            signal(&child, libc::SIGTERM);
            let status = child.wait().await.map_err(|e| CliError::Other(e.to_string()))?;
            return Err(CliError::Exit(exit_code(status)));
        }
    };
    match exit_code(status) {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

/// Signals the child and every process descended from it (a shell's commands), so that none
/// runs on without the lock.
fn signal(child: &tokio::process::Child, sig: i32) {
    let Some(pid) = child.id() else { return };
    let mut pids = descendants(pid);
    pids.push(pid);
    for p in pids {
        // SAFETY: kill(2) of our own child, which has not been reaped (we have not waited
        // it), and of processes whose parent chain reached it just now.
        unsafe { libc::kill(p as i32, sig) };
    }
}

/// The processes descended from `pid`, from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let children = crate::fs::process_children();
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if out.len() > 10_000 {
            break;
        }
        for &c in children.get(&p).into_iter().flatten() {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn kind_name(k: proto::LockKind) -> &'static str {
    match k {
        proto::LockKind::SHARED => "shared",
        proto::LockKind::EXCLUSIVE => "exclusive",
    }
}

fn style_name(s: proto::LockStyle) -> &'static str {
    match s {
        proto::LockStyle::FLOCK => "flock",
        proto::LockStyle::POSIX => "posix",
    }
}

fn holder_json(h: &proto::LockHolder) -> serde_json::Value {
    let mut v = json!({
        "session": h.session, "owner": h.owner, "style": style_name(h.style),
        "mode": kind_name(h.kind), "start": h.start, "end": h.end, "host": h.host,
        "pid": h.pid, "since_ns": h.since_ns,
    });
    if h.wait != 0 {
        v["wait"] = json!(h.wait);
    }
    v
}

#[derive(Subcommand)]
pub enum LocksCmd {
    /// Free the lock on PATH (a path in the cluster's tree), as its holder's expiry would: the
    /// next waiter gets it after the lock-delay, because the holder may still be running. The
    /// holder's session stays; its host hears of it: the file the lock was held through fails
    /// (EIO), and its holders are signalled if the file's `on_loss` or the mount's
    /// `on_lock_loss` says so (`lockfs run` stops its command). Needs an `admin` certificate.
    Release {
        path: String,
        /// Only the locks of this session (an ID from `lockfs sessions` or `lockfs locks`);
        /// without it, every holder's.
        #[arg(long)]
        holder: Option<u64>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn locks(
    cmd: Option<LocksCmd>,
    opts: &ClientOpts,
    as_json: bool,
) -> Result<(), CliError> {
    match cmd {
        Some(LocksCmd::Release {
            path,
            holder,
            client,
        }) => {
            client
                .client()?
                .release_locks(&path, holder)
                .await
                .map_err(CliError::client(format!("releasing the lock on {path}")))?;
            println!("released the lock on {path}");
            Ok(())
        }
        None => list(opts, as_json).await,
    }
}

/// `lockfs locks`: every lock and waiter in the cluster, sorted by path (fetched a page at a
/// time).
pub async fn list(opts: &ClientOpts, as_json: bool) -> Result<(), CliError> {
    let mut locks = opts
        .client()?
        .all_locks()
        .await
        .map_err(CliError::client("locks"))?;
    locks.sort_by(|a, b| (&a.path, a.instance).cmp(&(&b.path, b.instance)));
    if as_json {
        let v: Vec<_> = locks
            .iter()
            .map(|l| {
                json!({
                    "path": l.path, "instance": l.instance, "generation": l.lock_generation,
                    "holders": l.holders.iter().map(holder_json).collect::<Vec<_>>(),
                    "waiters": l.waiters.iter().map(holder_json).collect::<Vec<_>>(),
                    "delay_until_ns": l.delay_until_ns,
                    "max_holders": l.max_holders.max(1),
                    "on_loss": on_loss_name(l.on_loss),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    for l in &locks {
        let mut semaphore = if l.max_holders > 1 {
            format!(" (a semaphore: at most {} exclusive)", l.max_holders)
        } else {
            String::new()
        };
        if let Some(name) = on_loss_name(l.on_loss) {
            semaphore.push_str(&format!(" (on loss: {name})"));
        }
        println!(
            "{}  generation {}  {} holder(s){semaphore}, {} waiter(s)",
            l.path,
            l.lock_generation,
            l.holders.len(),
            l.waiters.len()
        );
        for h in &l.holders {
            println!(
                "  held    {} {} by {} pid {} (session {})",
                style_name(h.style),
                kind_name(h.kind),
                h.host,
                h.pid,
                h.session
            );
        }
        for w in &l.waiters {
            println!(
                "  waiting {} {} by {} pid {} (session {})",
                style_name(w.style),
                kind_name(w.kind),
                w.host,
                w.pid,
                w.session
            );
        }
    }
    Ok(())
}

/// A file's `on_loss` setting as `user.lockfs.on_loss` shows it.
fn on_loss_name(v: proto::OnLoss) -> Option<&'static str> {
    match v {
        proto::OnLoss::NONE => None,
        proto::OnLoss::TERM => Some("term"),
        proto::OnLoss::KILL => Some("kill"),
    }
}
