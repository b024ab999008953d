//! Sessions and their open handles, and the lifetime of ephemeral files that follows from them.
//!
//! One session per mount. The leader decides when a session expired (it sent nothing for its
//! TTL) and commits `ExpireSession`; the state machine just obeys. Ending a session, cleanly or
//! by expiry, releases its locks, drops its waits, closes its handles and deletes every
//! ephemeral file no live handle holds anymore. Only expiry leaves a lock-delay on the nodes
//! the session held locks on: a clean close means the client knows its locks are gone.
//!
//! A handle is one open file description: it names a node by instance, so it survives renames.
//! A file that loses its last name while handles hold it lives on without a name until they
//! are closed (`orphan.rs`); a handle on a deleted directory stays open, and later operations
//! through it report NotFound.
//! flock locks belong to the handle they were taken through and go with it at Close; POSIX
//! locks belong to the process and are unlocked explicitly by the mount.
//!
//! An ephemeral file lives exactly as long as some handle of a live session holds it: it is
//! created only by `Open` with `create` (so it is born with a handle) and deleted by the Close
//! or session end that drops its last handle.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::cmd::OpenSession;
use super::lock::LockTable;
use super::node::Node;
use super::tree::{page_size, StateMachine};
use super::{Attr, CreateSpec, Event, Kind, LockStyle, Outcome, SessionInfo, StateError, Target};

/// A live session. Its handles and cached results are stored as records of their own (so an
/// open or a request does not rewrite every other one) and gathered here on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Session {
    pub ttl_ms: u64,
    pub host: String,
    pub pid: u32,
    pub name: String,
    pub created_ns: u64,
    /// Who may use the session (see `Command::OpenSession`); empty: anyone with the secret.
    pub owner: String,
    pub secret: u128,
    /// Its client caches the tree: the leader waits for its cache to drop what a write
    /// changes (see `crate::server::cache`).
    pub cache: bool,
    /// Every request below this sequence number was acknowledged to the client (the highest
    /// `first_unacked` it sent): its result is dropped and it is never applied again.
    pub acked_below: u64,
    /// Waits granted recently, by wait id, so that a CancelWait that lost the race to the grant
    /// can release what the wait obtained (`locking.rs`).
    pub granted: BTreeMap<u64, GrantedWait>,
    /// Open handles. Not stored: derived from the handle records.
    #[serde(skip)]
    pub handles: BTreeSet<u64>,
    /// Results by request sequence number. Not stored here: each is a record of its own.
    #[serde(skip)]
    pub responses: BTreeMap<u64, Result<Outcome, StateError>>,
}

/// What a granted wait obtained: the owner's `style` locks on `[start, end)` of `instance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct GrantedWait {
    pub instance: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub start: u64,
    pub end: u64,
}

/// An open handle; its id is the key it is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Handle {
    pub session: u64,
    pub instance: u64,
}

impl Session {
    /// What `lockfs sessions` shows of it, with the number of locks it holds.
    pub fn info(&self, id: u64, locks: u64) -> SessionInfo {
        SessionInfo {
            id,
            ttl_ms: self.ttl_ms,
            host: self.host.clone(),
            pid: self.pid,
            name: self.name.clone(),
            handles: self.handles.len() as u64,
            created_ns: self.created_ns,
            owner: self.owner.clone(),
            locks,
        }
    }
}

impl StateMachine {
    /// (id, ttl_ms) of every live session, by id: a new leader restarts every session's timer
    /// from these.
    pub fn session_ids(&self) -> Vec<(u64, u64)> {
        self.sessions
            .iter()
            .map(|(&id, s)| (id, s.ttl_ms))
            .collect()
    }

    /// A page of the sessions above id `after` (see `Query::Sessions`), and the id to go on
    /// from if more remain.
    pub(super) fn sessions_info(&self, after: u64, limit: u32) -> (Vec<SessionInfo>, Option<u64>) {
        // One pass over the lock tables counts every session's locks (they are bounded by
        // the cluster's quota on lock waiters and handles).
        let mut locks: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for held in self.locks.values().flat_map(|t| &t.holders) {
            *locks.entry(held.session).or_default() += 1;
        }
        let mut rest = self
            .sessions
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(&id, s)| s.info(id, locks.get(&id).copied().unwrap_or(0)));
        let page: Vec<SessionInfo> = rest.by_ref().take(page_size(limit) as usize).collect();
        let next = match (rest.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.id),
            _ => None,
        };
        (page, next)
    }

    /// Whether `session` is live and its client caches the tree.
    pub fn is_caching(&self, session: u64) -> bool {
        self.caching.contains(&session)
    }

    /// The TTL of live session `id`, in milliseconds; `None` if it is not live.
    pub fn session_ttl_ms(&self, id: u64) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.ttl_ms)
    }

    /// The live sessions whose clients cache the tree, with their TTLs in milliseconds.
    pub fn caching_sessions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.caching
            .iter()
            .map(|id| (*id, self.sessions[id].ttl_ms))
    }

    pub(super) fn live_session(&self, id: u64) -> Result<&Session, StateError> {
        self.sessions.get(&id).ok_or(StateError::SessionExpired)
    }

    pub(super) fn session_mut(&mut self, id: u64) -> &mut Session {
        self.dirty_sessions.insert(id);
        self.sessions
            .get_mut(&id)
            .expect("session was resolved before mutation")
    }

    /// The node an open handle of `session` names (which may have been deleted since).
    pub(super) fn handle_node(&self, session: u64, handle: u64) -> Result<u64, StateError> {
        self.live_session(session)?;
        match self.handles.get(&handle) {
            Some(h) if h.session == session => Ok(h.instance),
            _ => Err(StateError::BadHandle),
        }
    }

    // ---- Commands.

    pub(super) fn open_session(
        &mut self,
        c: &OpenSession,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let (ttl_ms, host, pid, name, owner, secret, cache) = (
            c.ttl_ms,
            c.host.as_str(),
            c.pid,
            c.name.as_str(),
            c.owner.as_str(),
            c.secret,
            c.cache,
        );
        let id = self.meta.next_session;
        self.meta.next_session += 1;
        self.meta_dirty = true;
        self.usage.add_session(host);
        self.sessions.insert(
            id,
            Session {
                ttl_ms,
                host: host.to_owned(),
                pid,
                name: name.to_owned(),
                created_ns: now,
                owner: owner.to_owned(),
                secret,
                cache,
                acked_below: 0,
                granted: BTreeMap::new(),
                handles: BTreeSet::new(),
                responses: BTreeMap::new(),
            },
        );
        self.dirty_sessions.insert(id);
        if cache {
            self.caching.insert(id);
        }
        Ok(Outcome::Session { id, secret })
    }

    /// Ends a session; `lock_delay_ns` is `Some` for an expiry.
    pub(super) fn end_session(
        &mut self,
        id: u64,
        lock_delay_ns: Option<u64>,
        now: u64,
    ) -> Result<Outcome, StateError> {
        self.live_session(id)?;
        let session = self.sessions.remove(&id).expect("checked above");
        self.caching.remove(&id);
        self.usage.remove_session(&session.host);
        self.dirty_sessions.insert(id);
        self.dirty_responses
            .extend(session.responses.keys().map(|&seq| (id, seq)));
        self.events.push(Event::SessionEnded {
            session: id,
            expired: lock_delay_ns.is_some(),
        });
        // Its locks and waits. No events for its own waits: the session is gone.
        let touched: Vec<u64> = self
            .locks
            .iter()
            .filter(|(_, t)| {
                t.holders.iter().any(|h| h.session == id)
                    || t.waiters.iter().any(|w| w.lock.session == id)
            })
            .map(|(&ino, _)| ino)
            .collect();
        let mut changed = Vec::new();
        for ino in touched {
            let mut table = self.locks.get(&ino).cloned().unwrap_or_default();
            let (held, _) = table.drop_session(id);
            if held {
                if let Some(delay) = lock_delay_ns.filter(|&d| d > 0) {
                    table.delay_until_ns = table.delay_until_ns.max(now.saturating_add(delay));
                }
            }
            changed.push((ino, table));
        }
        // Its handles, and the ephemeral files and orphans that lose their last one.
        let mut unheld = Vec::new();
        for handle in &session.handles {
            if let Some(ino) = self.drop_handle(*handle, now) {
                unheld.push(ino);
            }
        }
        for (ino, table) in changed {
            if self.nodes.contains_key(&ino) {
                self.settle(ino, table, now);
            }
        }
        for ino in unheld {
            self.remove_unheld(ino, now);
        }
        Ok(Outcome::Done)
    }

    pub(super) fn open(
        &mut self,
        session: u64,
        at: &Target,
        create: Option<&CreateSpec>,
        now: u64,
    ) -> Result<Outcome, StateError> {
        self.live_session(session)?;
        let ino = match create {
            None => self.lookup(at)?,
            Some(spec) => {
                let slot = self.resolve_slot(at)?;
                match slot.existing {
                    Some(_) if spec.exclusive => return Err(StateError::AlreadyExists),
                    Some(ino) => self.file(ino).map(|_| ino)?,
                    None => {
                        let node = Node::new(
                            Kind::File,
                            slot.parent,
                            &slot.name,
                            spec.mode,
                            spec.uid,
                            spec.gid,
                            now,
                        );
                        self.insert_node(node, now)
                    }
                }
            }
        };
        let handle = self.meta.next_handle;
        self.meta.next_handle += 1;
        self.meta_dirty = true;
        self.handles.insert(
            handle,
            Handle {
                session,
                instance: ino,
            },
        );
        self.dirty_handles.insert(handle);
        *self.holds.entry(ino).or_insert(0) += 1;
        self.session_mut(session).handles.insert(handle);
        let attr: Attr = self.attr_of(ino);
        Ok(Outcome::Opened {
            handle,
            attr,
            created_in: None,
        })
    }

    pub(super) fn close(
        &mut self,
        session: u64,
        handle: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.handle_node(session, handle)?;
        self.session_mut(session).handles.remove(&handle);
        if let Some(table) = self.locks.get(&ino) {
            let mut table: LockTable = table.clone();
            let through = |session_: u64, handle_: u64, style: LockStyle| {
                session_ == session && handle_ == handle && style == LockStyle::Flock
            };
            table
                .holders
                .retain(|h| !through(h.session, h.handle, h.style));
            let mut failed = Vec::new();
            table.waiters.retain(|w| {
                let gone = through(w.lock.session, w.lock.handle, w.lock.style);
                if gone {
                    failed.push(w.wait);
                }
                !gone
            });
            for wait in failed {
                self.events.push(Event::WaitFailed {
                    session,
                    wait,
                    error: StateError::BadHandle,
                });
            }
            self.settle(ino, table, now);
        }
        if let Some(unheld) = self.drop_handle(handle, now) {
            self.remove_unheld(unheld, now);
        }
        Ok(Outcome::Done)
    }

    /// Deletes a node [`StateMachine::drop_handle`] found it must go.
    fn remove_unheld(&mut self, ino: u64, now: u64) {
        if self.is_orphan(ino) {
            self.destroy_orphan(ino);
        } else {
            self.delete_node(ino, now);
        }
    }

    /// Forgets a handle; returns its node if no handle holds it now and it must go: an
    /// ephemeral file, or an orphan whose time has come (`orphan.rs`).
    fn drop_handle(&mut self, handle: u64, now: u64) -> Option<u64> {
        let h = self.handles.remove(&handle).expect("handle is open");
        self.dirty_handles.insert(handle);
        let count = self
            .holds
            .get_mut(&h.instance)
            .expect("held by this handle");
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.holds.remove(&h.instance);
        if self.is_orphan(h.instance) {
            return self.orphan_due(h.instance, now).then_some(h.instance);
        }
        self.nodes
            .get(&h.instance)
            // A directory's flag is about the files created in it, not about itself.
            .filter(|node| node.ephemeral && !node.is_dir())
            .map(|_| h.instance)
    }
}
