//! `lockfs sessions`: every session in the cluster, and `lockfs sessions end ID`, which ends
//! one as its expiry would (an administrator's way to evict a host without waiting for its TTL).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use serde_json::json;

use super::{CliError, ClientOpts};

#[derive(Subcommand)]
pub enum SessionsCmd {
    /// End session ID now, as its expiry would: its locks go to their next waiters after the
    /// lock-delay, its handles close and its ephemeral files vanish; its host finds its handles
    /// failing. Needs an `admin` certificate.
    End {
        id: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn run(
    cmd: Option<SessionsCmd>,
    opts: &ClientOpts,
    as_json: bool,
) -> Result<(), CliError> {
    match cmd {
        Some(SessionsCmd::End { id, client }) => end(&client, id).await,
        None => list(opts, as_json).await,
    }
}

async fn end(opts: &ClientOpts, id: u64) -> Result<(), CliError> {
    opts.client()?
        .end_session(id)
        .await
        .map_err(CliError::client(format!("ending session {id}")))?;
    println!("session {id} ended");
    Ok(())
}

/// Every session, by id (fetched a page at a time).
async fn list(opts: &ClientOpts, as_json: bool) -> Result<(), CliError> {
    let sessions = opts
        .client()?
        .all_sessions()
        .await
        .map_err(CliError::client("sessions"))?;
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    if as_json {
        let v: Vec<_> = sessions
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "host": s.host, "owner": s.owner, "name": s.name, "pid": s.pid,
                    "created_ns": s.created_ns, "ttl_ms": s.ttl_ms, "locks": s.locks,
                    "handles": s.handles,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!(
        "{:>8}  {:<20} {:<24} {:>8} {:>6} {:>5} {:>7}  PROGRAM",
        "ID", "HOST", "IDENTITY", "AGE", "TTL", "LOCKS", "HANDLES"
    );
    for s in &sessions {
        let age = Duration::from_nanos(now_ns.saturating_sub(s.created_ns));
        println!(
            "{:>8}  {:<20} {:<24} {:>8} {:>6} {:>5} {:>7}  {} (pid {})",
            s.id,
            s.host,
            if s.owner.is_empty() { "-" } else { &s.owner },
            format!("{}s", age.as_secs()),
            format!("{}s", s.ttl_ms / 1000),
            s.locks,
            s.handles,
            s.name,
            s.pid
        );
    }
    Ok(())
}
