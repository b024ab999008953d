//! `lockfs watch PATH` (print each change as it commits) and `lockfs wait PATH --for COND`
//! (return as soon as a condition holds): scripts follow the cluster without polling.
//!
//! Both open a session and watch PATH in it (see `crate::client::watches`): the cluster pushes
//! every change in commit order, so a change is seen within a network round trip of its
//! commit and nothing is read while nothing changes. PATH is a path in the cluster, or a path
//! on a lockfs mount (then the mount says where the cluster is and with which credentials: see
//! [`on_mount`]), so scripts on a host with a mount need no server addresses.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::{CliError, ClientOpts, ClusterOpts};
use crate::client::session::Session;
use crate::client::watches::{Snapshot, WatchItem, Watcher};
use crate::client::Client;
use crate::proto::{self, WatchEvent_Change as Change};

/// Session TTL of `wait`: how long the cluster keeps its session once it is gone without
/// closing it (its watch ends with its connection anyway).
const TTL: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct WatchArgs {
    /// A path in the cluster, or on a lockfs mount.
    path: String,
    /// Also report changes below PATH at any depth (by default: PATH and its direct children).
    #[arg(short, long)]
    recursive: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// First print PATH's state where the watch begins (an `initial` line, as a `resync`
    /// line reads), so that a script can act on it and then on each change, missing none.
    #[arg(long)]
    initial: bool,
    /// Session TTL in seconds: a watch ends with its session, which ends this long after
    /// this process stopped being heard from.
    #[arg(long, default_value_t = 10.0)]
    ttl: f64,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Condition {
    /// Something is at PATH.
    Exists,
    /// Nothing is at PATH.
    Gone,
    /// PATH's contents or existence (for a directory, its entries) changed after the wait
    /// began.
    Changed,
    /// PATH has no lock.
    Unlocked,
    /// PATH has a lock.
    Locked,
}

#[derive(Args)]
pub struct WaitArgs {
    /// A path in the cluster, or on a lockfs mount.
    path: String,
    /// What to wait for.
    #[arg(long = "for", value_enum)]
    condition: Condition,
    /// Give up after this many seconds (exit status 1); 0 checks once. Default: forever.
    #[arg(long)]
    timeout: Option<f64>,
    #[command(flatten)]
    cluster: ClusterOpts,
}

/// How long `wait` looks for a leader before it fails (its own --timeout aside).
const WAIT_REQUEST_TIMEOUT_S: u64 = 30;

/// A lockfs mount that holds a local path, and the cluster path it stands for.
struct OnMount {
    mountpoint: String,
    cluster_path: String,
}

/// Finds the lockfs mount (from /proc/self/mountinfo: type `fuse.lockfs`, or source `lockfs`)
/// whose mount point is the longest prefix of `path`, if any. A relative path is taken from
/// the current directory; an absolute path under no lockfs mount is a cluster path.
fn on_mount(path: &str) -> Result<Option<OnMount>, CliError> {
    let absolute = if path.starts_with('/') {
        path.to_string()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| CliError::Other(format!("current directory: {e}")))?;
        format!("{}/{path}", cwd.display())
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| CliError::Other(format!("/proc/self/mountinfo: {e}")))?;
    let best = lockfs_mounts(&mountinfo)
        .into_iter()
        .filter_map(|m| under(&absolute, &m).map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.len());
    match best {
        Some((mountpoint, rest)) => Ok(Some(OnMount {
            mountpoint,
            cluster_path: rest,
        })),
        None if path.starts_with('/') => Ok(None),
        None => Err(CliError::Usage(format!(
            "{path}: a relative path must be on a lockfs mount"
        ))),
    }
}

/// The mount points of lockfs mounts in a mountinfo text.
fn lockfs_mounts(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            let source = fields.get(dash + 2)?;
            (*fstype == "fuse.lockfs" || (fstype.starts_with("fuse") && *source == "lockfs"))
                .then(|| unescape(fields.get(4)?))
                .flatten()
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape(field: &str) -> Option<String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.len() - i >= 4 {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4]).ok()?;
            out.push(u8::from_str_radix(code, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The cluster path of `path` if it is `mountpoint` or below it ("/" for the mount point).
fn under(path: &str, mountpoint: &str) -> Option<String> {
    let rest = if mountpoint == "/" {
        path
    } else {
        path.strip_prefix(mountpoint)?
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    Some(if parts.is_empty() {
        "/".into()
    } else {
        parts.iter().map(|p| format!("/{p}")).collect()
    })
}

/// The name of the attribute on a mount's root that says how to reach its cluster.
pub const CLUSTER_XATTR: &str = "user.lockfs.cluster";

/// A client of the cluster behind the mount at `mountpoint`, as its `user.lockfs.cluster`
/// attribute describes it: `servers=A,B`, then `tls_dir=DIR` or `insecure=1`, one per line.
fn mount_client(mountpoint: &str, timeout: Duration, name: String) -> Result<Client, CliError> {
    let value = getxattr(mountpoint, CLUSTER_XATTR).map_err(|e| {
        CliError::Other(format!(
            "{mountpoint}: reading {CLUSTER_XATTR} to find the cluster: {e}"
        ))
    })?;
    let mut servers = Vec::new();
    let mut tls_dir = None;
    let mut insecure = false;
    for line in value.lines() {
        match line.split_once('=') {
            Some(("servers", v)) => servers = v.split(',').map(str::to_string).collect(),
            Some(("tls_dir", v)) if !v.is_empty() => tls_dir = Some(std::path::PathBuf::from(v)),
            Some(("insecure", v)) => insecure = v == "1",
            _ => {}
        }
    }
    if servers.is_empty() {
        return Err(CliError::Other(format!(
            "{mountpoint}: {CLUSTER_XATTR} names no servers"
        )));
    }
    let tls = crate::auth::Tls::load(tls_dir.as_deref(), insecure)
        .map_err(|e| CliError::Other(format!("{mountpoint}: the mount's credentials: {e}")))?;
    Ok(Client::new(servers, timeout, name, tls))
}

fn getxattr(path: &str, name: &str) -> std::io::Result<String> {
    use std::ffi::CString;
    let c_path = CString::new(path).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let c_name = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and the buffer is valid for its length.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).map_err(|_| std::io::ErrorKind::InvalidData.into())
}

/// A session on the cluster that `path` names, and the cluster path.
async fn open(
    path: &str,
    opts: &ClientOpts,
    ttl: Duration,
    what: &str,
) -> Result<(Arc<Session>, String), CliError> {
    let (client, cluster_path) = match on_mount(path)? {
        Some(m) => (
            mount_client(&m.mountpoint, opts.timeout(), opts.name())?,
            m.cluster_path,
        ),
        None => (opts.client()?, path.to_string()),
    };
    let session = Session::open(Arc::new(client), ttl, ttl, &super::hostname(), what)
        .await
        .map_err(CliError::client("opening a session"))?;
    Ok((session, cluster_path))
}

pub async fn watch(a: WatchArgs) -> Result<(), CliError> {
    let ttl = Duration::try_from_secs_f64(a.ttl)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| CliError::Usage("--ttl must be a number of seconds > 0".into()))?;
    let (session, path) = open(&a.path, &a.client, ttl, "lockfs watch").await?;
    let result = tokio::select! {
        r = follow(&session, &path, &a) => r,
        _ = super::interrupted() => Ok(()),
    };
    let _ = session.close().await;
    result
}

async fn follow(session: &Arc<Session>, path: &str, a: &WatchArgs) -> Result<(), CliError> {
    use std::io::Write;
    let (mut watcher, snapshot) = session
        .watch(path, a.recursive)
        .await
        .map_err(CliError::client(path))?;
    eprintln!("watching {path} from index {}", snapshot.index);
    let mut first = a
        .initial
        .then(|| state_line("initial", path, &snapshot, a.json));
    loop {
        let line = match first.take() {
            Some(line) => line,
            None => match watcher.next().await.map_err(CliError::client(path))? {
                WatchItem::Resync(s) => state_line("resync", path, &s, a.json),
                WatchItem::Event(e) => {
                    caches_dropped(session, path).await;
                    event_line(&e, a.json)
                }
                WatchItem::Interrupted => continue,
            },
        };
        let mut out = std::io::stdout().lock();
        // A reader that went away (`lockfs watch | head -1`) ends the watch.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
    }
}

/// Returns once every mount's cache has dropped what the changes seen so far replaced: a
/// linearizable read answers only then (the leader holds reads behind writes that a cache has
/// not dropped yet, see `server::cache`). An event reaches a watcher as its change is applied,
/// which can be before the caches have dropped it; a script that reads through its host's
/// mount after a line of `lockfs watch` (or after `lockfs wait`) must see the change. Any
/// answer will do, a refusal included; a failure to get one is left to the next request.
async fn caches_dropped(session: &Session, path: &str) {
    let _ = session.call(crate::client::ops::stat(path)).await;
}

fn change_name(c: Change) -> &'static str {
    match c {
        Change::CREATED => "created",
        Change::DELETED => "deleted",
        Change::MODIFIED => "modified",
        Change::ATTRIB => "attrib",
        Change::LOCKED => "locked",
        Change::UNLOCKED => "unlocked",
        Change::RESYNC => "resync",
        // Only caches registered with `early` are told of writes before they commit.
        Change::PENDING => "pending",
    }
}

fn kind_name(k: proto::Kind) -> &'static str {
    match k {
        proto::Kind::DIR => "dir",
        proto::Kind::FILE => "file",
        proto::Kind::SYMLINK => "symlink",
    }
}

fn lock_kind(k: proto::LockKind) -> &'static str {
    match k {
        proto::LockKind::SHARED => "shared",
        proto::LockKind::EXCLUSIVE => "exclusive",
    }
}

/// One line for an event: `INDEX CHANGE PATH key=value...`, or a JSON object.
fn event_line(e: &proto::WatchEvent, json: bool) -> String {
    let change = change_name(e.change);
    let lock = matches!(e.change, Change::LOCKED | Change::UNLOCKED);
    if json {
        let mut v = json!({
            "index": e.index,
            "event": change,
            "path": e.path,
            "instance": e.instance,
            "type": kind_name(e.kind),
        });
        if e.change == Change::MODIFIED {
            v["generation"] = json!(e.generation);
            v["size"] = json!(e.size);
        }
        if lock {
            let h = e.get_holder();
            v["generation"] = json!(e.generation);
            v["holders"] = json!(e.holders);
            v["holder"] = json!({
                "session": h.session,
                "host": h.host,
                "pid": h.pid,
                "mode": lock_kind(h.kind),
            });
        }
        return v.to_string();
    }
    let mut line = format!("{} {change} {}", e.index, e.path);
    if e.change == Change::MODIFIED {
        line += &format!(" generation={} size={}", e.generation, e.size);
    }
    if lock {
        let h = e.get_holder();
        line += &format!(
            " generation={} holders={} holder={}:{} session={} mode={}",
            e.generation,
            e.holders,
            h.host,
            h.pid,
            h.session,
            lock_kind(h.kind)
        );
    }
    line
}

/// The line for the watched path's state where events begin (`initial`) or begin again
/// (`resync`).
fn state_line(word: &str, path: &str, s: &Snapshot, json: bool) -> String {
    if json {
        let mut v = json!({
            "index": s.index,
            "event": word,
            "path": path,
            "exists": s.attr.is_some(),
            "holders": s.holders,
        });
        if let Some(a) = &s.attr {
            v["instance"] = json!(a.instance);
            v["generation"] = json!(a.content_generation);
        }
        return v.to_string();
    }
    match &s.attr {
        Some(a) => format!(
            "{} {word} {path} exists generation={} holders={}",
            s.index, a.content_generation, s.holders
        ),
        None => format!("{} {word} {path} missing", s.index),
    }
}

/// What `wait` knows of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    /// (instance, content generation) of the node at the path, if any.
    node: Option<(u64, u64)>,
    holders: u32,
}

impl Known {
    fn of(s: &Snapshot) -> Known {
        Known {
            node: s.attr.as_ref().map(|a| (a.instance, a.content_generation)),
            holders: s.holders,
        }
    }

    /// Follows an event at the watched path itself.
    fn apply(&mut self, e: &proto::WatchEvent) {
        match e.change {
            Change::CREATED => {
                self.node = Some((e.instance, 0));
                self.holders = 0;
            }
            Change::DELETED => {
                self.node = None;
                self.holders = 0;
            }
            Change::MODIFIED => self.node = Some((e.instance, e.generation)),
            Change::LOCKED | Change::UNLOCKED => self.holders = e.holders,
            Change::ATTRIB | Change::RESYNC | Change::PENDING => {}
        }
    }
}

/// Whether `condition` holds, knowing `now`, what was known when the wait began, and whether
/// a directory's entries changed since.
fn holds(condition: Condition, now: &Known, start: &Known, entries_changed: bool) -> bool {
    match condition {
        Condition::Exists => now.node.is_some(),
        Condition::Gone => now.node.is_none(),
        Condition::Changed => now.node != start.node || entries_changed,
        Condition::Unlocked => now.holders == 0,
        Condition::Locked => now.holders > 0,
    }
}

pub async fn wait(a: WaitArgs) -> Result<(), CliError> {
    let timeout =
        match a.timeout {
            None => None,
            Some(s) => Some(Duration::try_from_secs_f64(s).map_err(|_| {
                CliError::Usage("--timeout must be a number of seconds >= 0".into())
            })?),
        };
    let opts = a.cluster.clone().with_timeout(WAIT_REQUEST_TIMEOUT_S);
    let (session, path) = open(&a.path, &opts, TTL, "lockfs wait").await?;
    let once = timeout == Some(Duration::ZERO);
    let limit = async {
        match timeout.filter(|_| !once) {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = wait_for(&session, &path, a.condition, once) => r,
        _ = limit => Err(timed_out(&a.path, a.condition)),
        _ = super::interrupted() => Err(CliError::Exit(130)),
    };
    let _ = session.close().await;
    result
}

fn timed_out(path: &str, condition: Condition) -> CliError {
    let name = condition
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    eprintln!("lockfs: {path}: timed out waiting for --for {name}");
    CliError::Exit(1)
}

async fn wait_for(
    session: &Arc<Session>,
    path: &str,
    condition: Condition,
    once: bool,
) -> Result<(), CliError> {
    let (mut watcher, snapshot): (Watcher, Snapshot) = session
        .watch(path, false)
        .await
        .map_err(CliError::client(path))?;
    let start = Known::of(&snapshot);
    let mut now = start.clone();
    let mut entries_changed = false;
    let mut seen_events = false;
    loop {
        if holds(condition, &now, &start, entries_changed) {
            if seen_events {
                caches_dropped(session, path).await;
            }
            return Ok(());
        }
        if once {
            return Err(timed_out(path, condition));
        }
        match watcher.next().await.map_err(CliError::client(path))? {
            WatchItem::Resync(s) => {
                // Entries of a directory may have changed unseen: its mtime tells.
                let dir_mtime = |s: &Snapshot| {
                    s.attr
                        .as_ref()
                        .filter(|a| a.kind == proto::Kind::DIR)
                        .map(|a| (a.instance, a.mtime_ns))
                };
                if dir_mtime(&s) != dir_mtime(&snapshot) {
                    entries_changed = true;
                }
                now = Known::of(&s);
            }
            WatchItem::Event(e) if e.path == path => {
                seen_events = true;
                now.apply(&e);
            }
            WatchItem::Event(e) => {
                seen_events = true;
                if matches!(e.change, Change::CREATED | Change::DELETED) {
                    entries_changed = true;
                }
            }
            WatchItem::Interrupted => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfs_mounts_are_found_in_mountinfo() {
        let info = "\
36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
50 29 0:45 / /mnt/lock\\040fs rw,nosuid,nodev - fuse.lockfs lockfs rw,user_id=0
51 29 0:46 / /mnt/other rw - fuse sshfs rw
52 29 0:47 / /mnt/plain rw - fuse lockfs rw";
        assert_eq!(lockfs_mounts(info), vec!["/mnt/lock fs", "/mnt/plain"]);
    }

    #[test]
    fn paths_under_a_mount_become_cluster_paths() {
        assert_eq!(under("/mnt/l/svc/db", "/mnt/l").as_deref(), Some("/svc/db"));
        assert_eq!(under("/mnt/l", "/mnt/l").as_deref(), Some("/"));
        assert_eq!(under("/mnt/l/", "/mnt/l").as_deref(), Some("/"));
        assert_eq!(under("/mnt/lx/a", "/mnt/l"), None);
        assert_eq!(under("/a//b", "/").as_deref(), Some("/a/b"));
    }

    #[test]
    fn conditions_follow_events() {
        let start = Known {
            node: None,
            holders: 0,
        };
        let mut now = start.clone();
        assert!(holds(Condition::Gone, &now, &start, false));
        let mut e = proto::WatchEvent::new();
        e.change = Change::CREATED;
        e.instance = 5;
        now.apply(&e);
        assert!(holds(Condition::Exists, &now, &start, false));
        assert!(holds(Condition::Changed, &now, &start, false));
        e.change = Change::LOCKED;
        e.holders = 1;
        now.apply(&e);
        assert!(holds(Condition::Locked, &now, &start, false));
        e.change = Change::UNLOCKED;
        e.holders = 0;
        now.apply(&e);
        assert!(holds(Condition::Unlocked, &now, &start, false));
    }
}
