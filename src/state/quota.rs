//! Cluster-wide quotas: how many sessions (in all and per host), open handles per session,
//! nodes, bytes of file data and lock waiters (per lock and in all) the state may hold.
//!
//! What they guarantee: no client, however many requests it sends, can grow the replicated
//! state past these bounds, and a request that would is refused with
//! [`StateError::QuotaExceeded`] (EDQUOT) and changes nothing. A quota refuses only what grows
//! the count it bounds: with a quota lowered below what the state already holds, removing,
//! closing and shrinking still work, and nothing is taken away.
//!
//! Determinism: the state machine applies the quotas the leader stamped into the command's
//! [`ApplyCtx`](super::ApplyCtx), never settings of its own, so every replica refuses the same
//! commands even while the nodes' configurations differ. Only commands that can grow something
//! carry quotas (`None`: no check). The node that receives a request runs the same check
//! ([`StateMachine::check_quotas`]) with its own quotas before the request enters the Raft
//! log, so a request past a quota costs neither the log nor any replica's memory.
//!
//! The counts the checks need are derived, never stored: sessions per host, bytes of file data
//! and waiters are kept up to date by the mutations (`tree.rs`, `session.rs`, `locking.rs`) and
//! rebuilt from the records on load ([`Usage::of`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::locking::LockRequest;
use super::tree::StateMachine;
use super::{cmd, Command, StateError};

/// The bounds; every one is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Live sessions in the cluster.
    pub sessions: u64,
    /// Live sessions of one host (as the session's host name).
    pub sessions_per_host: u64,
    /// Open handles of one session.
    pub handles_per_session: u64,
    /// Directories and files in the tree, the root included.
    pub nodes: u64,
    /// Bytes of file data in the whole tree.
    pub bytes: u64,
    /// Queued waiters of one node's locks.
    pub waiters_per_lock: u64,
    /// Queued waiters in the cluster.
    pub waiters: u64,
}

impl Default for Quotas {
    /// Generous for real use: well beyond what a lock service's clients need, well below what
    /// would exhaust a node's memory.
    fn default() -> Self {
        Quotas {
            sessions: 100_000,
            sessions_per_host: 10_000,
            handles_per_session: 65_536,
            nodes: 1_000_000,
            bytes: 1 << 30,
            waiters_per_lock: 10_000,
            waiters: 100_000,
        }
    }
}

/// The derived counts the quotas are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Usage {
    /// Live sessions by host; hosts without sessions are absent.
    pub sessions_per_host: BTreeMap<String, u64>,
    /// Bytes of data of every file.
    pub bytes: u64,
    /// Queued waiters of every lock table.
    pub waiters: u64,
}

impl Usage {
    /// The counts of `state`, from scratch.
    pub fn of(state: &StateMachine) -> Usage {
        let mut sessions_per_host = BTreeMap::new();
        for session in state.sessions.values() {
            *sessions_per_host.entry(session.host.clone()).or_insert(0) += 1;
        }
        Usage {
            sessions_per_host,
            bytes: state.nodes.values().map(|n| n.data.len() as u64).sum(),
            waiters: state.locks.values().map(|t| t.waiters.len() as u64).sum(),
        }
    }

    pub fn add_session(&mut self, host: &str) {
        *self.sessions_per_host.entry(host.to_owned()).or_insert(0) += 1;
    }

    pub fn remove_session(&mut self, host: &str) {
        if let Some(n) = self.sessions_per_host.get_mut(host) {
            *n -= 1;
            if *n == 0 {
                self.sessions_per_host.remove(host);
            }
        }
    }

    /// A file's data went from `old` to `new` bytes.
    pub fn resize(&mut self, old: usize, new: usize) {
        self.bytes = self.bytes - old as u64 + new as u64;
    }
}

/// What the state holds now, for monitoring (`lockfs serve --metrics-listen`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: u64,
    pub nodes: u64,
    pub bytes: u64,
    pub ephemeral_nodes: u64,
    pub shared_locks: u64,
    pub exclusive_locks: u64,
    pub waiters: u64,
}

impl StateMachine {
    /// The counts of [`Stats`]. Walks every node and lock table: for an occasional look, not
    /// for every command.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            sessions: self.sessions.len() as u64,
            nodes: self.nodes.len() as u64,
            bytes: self.usage.bytes,
            waiters: self.usage.waiters,
            ephemeral_nodes: (self.nodes.values())
                .filter(|n| n.ephemeral && n.kind == super::Kind::File)
                .count() as u64,
            ..Stats::default()
        };
        for held in self.locks.values().flat_map(|t| &t.holders) {
            match held.kind {
                super::LockKind::Shared => stats.shared_locks += 1,
                super::LockKind::Exclusive => stats.exclusive_locks += 1,
            }
        }
        stats
    }
}

/// A count about to go from `now` to `after`: refused when it grows past `limit`.
fn within(what: &str, now: u64, after: u64, limit: u64) -> Result<(), StateError> {
    if after > now && after > limit {
        return Err(StateError::QuotaExceeded(format!(
            "quota: at most {limit} {what}"
        )));
    }
    Ok(())
}

impl StateMachine {
    /// Refuses `cmd` if applying it at time `now` would grow a count past its quota. Read-only;
    /// a command that would fail for another reason passes here and is refused by its own
    /// checks. The state machine runs it on every command that carries quotas, and the node
    /// that receives a request runs it before proposing.
    pub fn check_quotas(&self, cmd: &Command, q: &Quotas, now: u64) -> Result<(), StateError> {
        match cmd {
            Command::OpenSession(cmd::OpenSession { host, .. }) => {
                let sessions = self.sessions.len() as u64;
                within("sessions", sessions, sessions + 1, q.sessions)?;
                let of_host = self.usage.sessions_per_host.get(host).copied().unwrap_or(0);
                within(
                    &format!("sessions for host {host}"),
                    of_host,
                    of_host + 1,
                    q.sessions_per_host,
                )
            }
            Command::Mkdir(cmd::Mkdir { at, .. }) | Command::Create(cmd::Create { at, .. }) => {
                self.check_new_node(at, q)
            }
            Command::Symlink(cmd::Symlink { at, target, .. }) => {
                self.check_new_node(at, q)?;
                let bytes = self.usage.bytes;
                within(
                    "bytes of file data",
                    bytes,
                    bytes.saturating_add(target.len() as u64),
                    q.bytes,
                )
            }
            Command::Open(cmd::Open {
                session,
                at,
                create,
            }) => {
                if let Some(s) = self.sessions.get(session) {
                    let handles = s.handles.len() as u64;
                    within(
                        "open handles per session",
                        handles,
                        handles + 1,
                        q.handles_per_session,
                    )?;
                }
                if create.is_some() {
                    self.check_new_node(at, q)?;
                }
                Ok(())
            }
            Command::Put(cmd::Put { at, data, .. }) => {
                self.check_new_node(at, q)?;
                let old = match self.resolve_slot(at).map(|slot| slot.existing) {
                    Ok(None) => 0,
                    Ok(Some(ino)) => match self.file(ino) {
                        Ok(node) => node.data.len() as u64,
                        Err(_) => return Ok(()),
                    },
                    Err(_) => return Ok(()),
                };
                self.check_bytes(old, data.len() as u64, q)
            }
            Command::Write(cmd::Write {
                target,
                offset,
                data,
                truncate,
                append,
            }) => {
                let Some(node) = self.lookup(target).ok().and_then(|i| self.file(i).ok()) else {
                    return Ok(());
                };
                let old = node.data.len() as u64;
                match super::tree::written_len(old, *offset, data.len(), *truncate, *append) {
                    Ok(new) => self.check_bytes(old, new, q),
                    Err(_) => Ok(()),
                }
            }
            Command::Truncate(cmd::Truncate { target, size }) => {
                let Some(node) = self.lookup(target).ok().and_then(|i| self.file(i).ok()) else {
                    return Ok(());
                };
                self.check_bytes(node.data.len() as u64, *size, q)
            }
            Command::Lock(lock) if lock.wait => {
                let request = LockRequest::of(lock);
                let Some(ino) = self.would_queue(&request, now) else {
                    return Ok(());
                };
                let of_lock = self.locks.get(&ino).map_or(0, |t| t.waiters.len() as u64);
                within("waiters per lock", of_lock, of_lock + 1, q.waiters_per_lock)?;
                let waiters = self.usage.waiters;
                within("waiters", waiters, waiters + 1, q.waiters)
            }
            _ => Ok(()),
        }
    }

    /// A node created at `at` (if nothing is there yet) must fit.
    fn check_new_node(&self, at: &super::Target, q: &Quotas) -> Result<(), StateError> {
        match self.resolve_slot(at) {
            Ok(slot) if slot.existing.is_none() => {
                let nodes = self.nodes.len() as u64;
                within("nodes", nodes, nodes + 1, q.nodes)
            }
            _ => Ok(()),
        }
    }

    /// A file going from `old` to `new` bytes must fit in the total.
    fn check_bytes(&self, old: u64, new: u64, q: &Quotas) -> Result<(), StateError> {
        let total = self.usage.bytes;
        let after = (total - old).saturating_add(new);
        within("bytes of file data", total, after, q.bytes)
    }
}
