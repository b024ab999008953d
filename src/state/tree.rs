//! The replicated file tree: directories and small files addressed by path, by instance number,
//! or by (parent, name); and the dispatcher of every command and query. Sessions and handles
//! are in `session.rs`, locks in `lock.rs` and `locking.rs`, deduplication in `dedup.rs`,
//! records in `persist.rs`.
//!
//! Every command validates everything that can fail before it touches anything, so a refused
//! command leaves the tree, the counters and the change log exactly as they were. Mutations mark
//! the records they touch; [`StateMachine::take_changes`] hands those records to the caller.

use std::collections::{BTreeMap, BTreeSet};

use crate::encoding::LogFormat;

use super::cmd::{Applying, Create, Mkdir, Put, SetAttr, Symlink, Truncate, Write};
use super::command::RenameHow;
use super::lock::LockTable;
use super::locking::LockRequest;
use super::node::{Node, GROUP_EXEC, PERMISSION_BITS, SET_GID, SET_UID};
use super::on_loss::OnLoss;
use super::orphan::Orphan;
use super::path::{normalize, split_path, validate_name};
use super::quota::Usage;
use super::record::Meta;
use super::semaphore::Semaphore;
use super::session::{Handle, Session};
use super::{
    ApplyCtx, Attr, Command, DirEntry, Event, Kind, NodeChange, NodeEvent, Outcome, Query,
    StateError, Target, UserIds, MAX_PAGE,
};

/// The instance number of the root directory.
pub const ROOT: u64 = 1;

/// A symbolic link's target is shorter than this (Linux's PATH_MAX).
pub const MAX_SYMLINK: usize = 4096;

/// A record to write: `Some(value)` to put, `None` to delete the key.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// The deterministic state of the file tree. See the module docs of [`crate::state`].
#[derive(Debug, Clone)]
pub struct StateMachine {
    pub(super) nodes: BTreeMap<u64, Node>,
    pub(super) meta: Meta,
    pub(super) sessions: BTreeMap<u64, Session>,
    /// Open handles by id.
    pub(super) handles: BTreeMap<u64, Handle>,
    /// Lock tables of nodes that have holders, waiters or a pending lock-delay.
    pub(super) locks: BTreeMap<u64, LockTable>,
    /// Derived: open handles per instance.
    pub(super) holds: BTreeMap<u64, u64>,
    /// Derived: (delay_until_ns, instance) of every pending lock-delay.
    pub(super) delays: BTreeSet<(u64, u64)>,
    /// Derived: the counts quotas are checked against (`quota.rs`).
    pub(super) usage: Usage,
    /// Derived: the live sessions whose clients cache the tree.
    pub(super) caching: BTreeSet<u64>,
    /// Files without a name that may still be open (`orphan.rs`), by instance.
    pub(super) orphans: BTreeMap<u64, Orphan>,
    /// Derived: (keep_until_ns, instance) of every orphan not yet due.
    pub(super) orphan_times: BTreeSet<(u64, u64)>,
    /// The names of files beyond their first (`links.rs`), by instance.
    pub(super) extra_names: BTreeMap<u64, Vec<(u64, String)>>,
    /// Nodes that admit more than one exclusive flock holder (`semaphore.rs`), by instance.
    pub(super) semaphores: BTreeMap<u64, Semaphore>,
    /// Nodes whose locks demand a signal to their holders on loss (`on_loss.rs`), by instance.
    pub(super) on_loss: BTreeMap<u64, OnLoss>,
    /// Events since the last `take_events`. Not stored.
    pub(super) events: Vec<Event>,
    /// Node changes since the last `take_node_events`. Not stored.
    pub(super) node_events: Vec<NodeEvent>,
    /// The log index of the command being applied, for `node_events`. Not stored.
    pub(super) applying: u64,
    /// The session whose request is being applied (0: none), for `node_events`. Not stored.
    pub(super) applying_for: u64,
    /// Who makes the command being applied, if a user other than root (see `modified`). Not
    /// stored.
    pub(super) unprivileged: Option<UserIds>,
    /// Records created, changed or removed since the last `take_changes`.
    pub(super) dirty_nodes: BTreeSet<u64>,
    pub(super) dirty_sessions: BTreeSet<u64>,
    pub(super) dirty_handles: BTreeSet<u64>,
    pub(super) dirty_locks: BTreeSet<u64>,
    pub(super) dirty_orphans: BTreeSet<u64>,
    pub(super) dirty_extra_names: BTreeSet<u64>,
    pub(super) dirty_semaphores: BTreeSet<u64>,
    pub(super) dirty_on_loss: BTreeSet<u64>,
    /// (session, request sequence number) of cached results.
    pub(super) dirty_responses: BTreeSet<(u64, u64)>,
    pub(super) meta_dirty: bool,
    /// The number of the log format the cluster writes (`cmd::SetLogFormat`); 1 until it
    /// switches.
    pub(super) log_format: u32,
    pub(super) log_format_dirty: bool,
}

/// Where a creating command puts its node: the entry `name` of directory `parent`, which may
/// already hold a node. For the path "/" it is the root itself (existing, with no name).
pub(super) struct Slot {
    pub parent: u64,
    pub name: String,
    pub existing: Option<u64>,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// A live session's credentials and its acknowledged requests, for the node that admits
/// requests into the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAccess<'a> {
    /// `role:name` of the identity that opened it; empty when anyone may use it.
    pub owner: &'a str,
    pub secret: u128,
    /// Every request below this sequence number was answered.
    pub acked_below: u64,
}

impl StateMachine {
    /// An empty tree: the root directory (instance 1, mode 0o755, owned by root). Its records
    /// are pending in `take_changes`, so the first batch the caller writes contains them.
    pub fn new() -> Self {
        let root = Node::new(Kind::Dir, ROOT, "", 0o755, 0, 0, 0);
        StateMachine {
            nodes: BTreeMap::from([(ROOT, root)]),
            meta: Meta {
                next_instance: ROOT + 1,
                clock_ns: 0,
                next_session: 1,
                next_handle: 1,
                next_wait: 1,
            },
            sessions: BTreeMap::new(),
            handles: BTreeMap::new(),
            locks: BTreeMap::new(),
            holds: BTreeMap::new(),
            delays: BTreeSet::new(),
            usage: Usage::default(),
            caching: BTreeSet::new(),
            orphans: BTreeMap::new(),
            orphan_times: BTreeSet::new(),
            extra_names: BTreeMap::new(),
            semaphores: BTreeMap::new(),
            on_loss: BTreeMap::new(),
            events: Vec::new(),
            node_events: Vec::new(),
            applying: 0,
            applying_for: 0,
            unprivileged: None,
            dirty_nodes: BTreeSet::from([ROOT]),
            dirty_sessions: BTreeSet::new(),
            dirty_handles: BTreeSet::new(),
            dirty_locks: BTreeSet::new(),
            dirty_orphans: BTreeSet::new(),
            dirty_extra_names: BTreeSet::new(),
            dirty_semaphores: BTreeSet::new(),
            dirty_on_loss: BTreeSet::new(),
            dirty_responses: BTreeSet::new(),
            meta_dirty: true,
            log_format: 1,
            log_format_dirty: false,
        }
    }

    /// Applies a command (deduplication aside, see `dedup.rs`). After a successful command the
    /// lock-delays whose time has come end, and the clock moves to the command's time.
    pub(super) fn execute(&mut self, ctx: &ApplyCtx, cmd: &Command) -> Result<Outcome, StateError> {
        if let Some(caller) = &ctx.caller {
            self.check_command(cmd, caller)?;
        }
        let now = self.meta.clock_ns.max(ctx.time_ns);
        self.applying = ctx.index;
        // Only a change of contents needs it (see `modified`).
        let changes_contents = matches!(
            cmd,
            Command::Write(_) | Command::Put(_) | Command::Truncate(_)
        );
        self.unprivileged = ctx
            .caller
            .as_ref()
            .filter(|c| changes_contents && c.uid != 0)
            .cloned();
        if let Some(quotas) = &ctx.quotas {
            self.check_quotas(cmd, quotas, now)?;
        }
        let applying = Applying {
            now,
            max_file_size: ctx.max_file_size,
            lock_delay_ns: ctx.lock_delay_ns,
        };
        let outcome = cmd.apply(self, &applying)?;
        self.end_delays(now);
        self.end_orphans(now);
        if now != self.meta.clock_ns {
            self.meta.clock_ns = now;
            self.meta_dirty = true;
        }
        Ok(outcome)
    }

    /// Answers a read-only question.
    /// What a request must show to use session `id` (see [`SessionAccess`]), if it is live.
    pub fn session_access(&self, id: u64) -> Option<SessionAccess<'_>> {
        self.sessions.get(&id).map(|s| SessionAccess {
            owner: &s.owner,
            secret: s.secret,
            acked_below: s.acked_below,
        })
    }

    /// Answers `q` if `caller` (when given) may ask it (see `perm`).
    pub fn query_as(&self, q: &Query, caller: Option<&UserIds>) -> Result<Outcome, StateError> {
        if let Some(caller) = caller {
            self.check_query(q, caller)?;
        }
        self.query(q)
    }

    pub fn query(&self, q: &Query) -> Result<Outcome, StateError> {
        match q {
            Query::Stat(target) => self.attr(self.lookup(target)?).map(Outcome::Attr),
            Query::Read {
                target,
                offset,
                len,
            } => {
                let ino = self.lookup(target)?;
                // A symbolic link reads as its target (readlink).
                let node = match self.node(ino)? {
                    link if link.kind == Kind::Symlink => link,
                    _ => self.file(ino)?,
                };
                let size = node.data.len();
                let start = usize::try_from(*offset).unwrap_or(usize::MAX).min(size);
                let wanted = len.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                let end = start.saturating_add(wanted).min(size);
                Ok(Outcome::Data {
                    attr: self.attr_of(ino),
                    data: node.data[start..end].to_vec(),
                })
            }
            Query::Readdir(target) => {
                let dir = self.dir(self.lookup(target)?)?;
                let entries = dir
                    .children
                    .iter()
                    .map(|(name, &instance)| DirEntry {
                        name: name.clone(),
                        instance,
                        kind: self.nodes[&instance].kind,
                    })
                    .collect();
                Ok(Outcome::Entries(entries))
            }
            Query::GetLock {
                session,
                handle,
                owner,
                style,
                kind,
                start,
                end,
            } => self.get_lock(&LockRequest {
                session: *session,
                handle: *handle,
                owner: *owner,
                style: *style,
                kind: *kind,
                start: *start,
                end: *end,
                pid: 0,
            }),
            Query::Locks { after, limit } => {
                let (locks, next) = self.lock_infos(*after, *limit);
                Ok(Outcome::Locks { locks, next })
            }
            Query::Sessions { after, limit } => {
                let (sessions, next) = self.sessions_info(*after, *limit);
                Ok(Outcome::Sessions { sessions, next })
            }
        }
    }

    /// The events of the commands applied since the last call, in order. See [`Event`].
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The node changes of the commands applied since the last call, in order. See
    /// [`NodeEvent`].
    pub fn take_node_events(&mut self) -> Vec<NodeEvent> {
        std::mem::take(&mut self.node_events)
    }

    /// The directory the command at `index` (the last applied) created node `ino` in, if it
    /// did; looked up among the node changes not yet taken.
    pub fn created_in(&self, index: u64, ino: u64) -> Option<u64> {
        self.node_events
            .iter()
            .rev()
            .take_while(|e| e.index == index)
            .find(|e| e.instance == ino && e.change == NodeChange::Created)
            .map(|e| e.parent)
    }

    /// The instance number a target names.
    pub fn lookup(&self, target: &Target) -> Result<u64, StateError> {
        match target {
            Target::Path(path) => self.walk(&split_path(path)?),
            Target::Ino(ino) => self.node(*ino).map(|_| *ino),
            Target::Child { parent, name } => {
                validate_name(name)?;
                self.dir(*parent)?
                    .children
                    .get(name)
                    .copied()
                    .ok_or(StateError::NotFound)
            }
        }
    }

    /// The absolute path a target names, whether or not a node is there (for a path, or a
    /// parent and a name); an instance must be live.
    pub fn path_of_target(&self, target: &Target) -> Result<String, StateError> {
        match target {
            Target::Path(path) => normalize(path),
            Target::Ino(ino) => self.node(*ino).map(|_| self.path_of(*ino)),
            Target::Child { parent, name } => {
                validate_name(name)?;
                self.dir(*parent)?;
                match self.path_of(*parent).as_str() {
                    "/" => Ok(format!("/{name}")),
                    p => Ok(format!("{p}/{name}")),
                }
            }
        }
    }

    /// The attributes of node `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, StateError> {
        self.node(ino).map(|_| self.attr_of(ino))
    }

    /// Number of nodes, the root included.
    #[allow(clippy::len_without_is_empty)] // the root always exists, so the tree is never empty
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The latest leader time applied, in nanoseconds.
    pub fn clock_ns(&self) -> u64 {
        self.meta.clock_ns
    }

    /// The instance number the next created node will get.
    pub fn next_instance(&self) -> u64 {
        self.meta.next_instance
    }

    /// The log format the cluster writes (see `crate::encoding`).
    pub fn log_format(&self) -> LogFormat {
        // Loading and `SetLogFormat` admit only formats this lockfs knows.
        LogFormat::from_number(self.log_format).expect("a known log format")
    }

    // ---- Commands. Each one checks everything first; the first mutation comes after the last `?`.

    pub(super) fn mkdir(&mut self, c: &Mkdir, now: u64) -> Result<Outcome, StateError> {
        let (at, mode, uid, gid) = (&c.at, c.mode, c.uid, c.gid);
        let slot = self.resolve_slot(at)?;
        if slot.existing.is_some() {
            return Err(StateError::AlreadyExists);
        }
        let node = Node::new(Kind::Dir, slot.parent, &slot.name, mode, uid, gid, now);
        let ino = self.insert_node(node, now);
        Ok(Outcome::Attr(self.attr_of(ino)))
    }

    /// symlink(2): a new symbolic link at `at` to `target`, which `limits` bounds before the
    /// log (a non-empty path without NUL bytes, shorter than PATH_MAX).
    pub(super) fn symlink(&mut self, c: &Symlink, now: u64) -> Result<Outcome, StateError> {
        let (at, target, uid, gid) = (&c.at, c.target.as_str(), c.uid, c.gid);
        if target.is_empty() || target.len() >= MAX_SYMLINK || target.contains('\0') {
            return Err(StateError::InvalidArgument(
                "a symbolic link's target is 1 to 4095 bytes without NUL".into(),
            ));
        }
        let slot = self.resolve_slot(at)?;
        if slot.existing.is_some() {
            return Err(StateError::AlreadyExists);
        }
        self.not_ephemeral(slot.parent)?;
        let mut node = Node::new(Kind::Symlink, slot.parent, &slot.name, 0o777, uid, gid, now);
        node.data = target.as_bytes().to_vec();
        let ino = self.insert_node(node, now);
        Ok(Outcome::Attr(self.attr_of(ino)))
    }

    pub(super) fn create(&mut self, c: &Create, now: u64) -> Result<Outcome, StateError> {
        let (at, mode, uid, gid, exclusive) = (&c.at, c.mode, c.uid, c.gid, c.exclusive);
        let slot = self.resolve_slot(at)?;
        if let Some(ino) = slot.existing {
            return if exclusive {
                Err(StateError::AlreadyExists)
            } else {
                self.file(ino).map(|_| Outcome::Attr(self.attr_of(ino)))
            };
        }
        self.not_ephemeral(slot.parent)?;
        let node = Node::new(Kind::File, slot.parent, &slot.name, mode, uid, gid, now);
        let ino = self.insert_node(node, now);
        Ok(Outcome::Attr(self.attr_of(ino)))
    }

    pub(super) fn write(
        &mut self,
        c: &Write,
        max_size: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let (target, offset, data, truncate, append) =
            (&c.target, c.offset, c.data.as_slice(), c.truncate, c.append);
        let ino = self.lookup(target)?;
        let node = self.file(ino)?;
        let old_len = node.data.len();
        let new_len = written_len(old_len as u64, offset, data.len(), truncate, append)?;
        let new_len = checked_size(new_len, max_size)?;
        let kept = if truncate { 0 } else { old_len as u64 };
        let offset = if append { kept } else { offset };
        self.usage.resize(old_len, new_len);
        let unprivileged = self.unprivileged.clone();
        let node = self.node_mut(ino);
        if truncate {
            node.data.clear();
        }
        if !data.is_empty() {
            // `offset` fits: offset + data.len() <= new_len, which fits in usize.
            let start = offset as usize;
            node.data.resize(new_len, 0);
            node.data[start..start + data.len()].copy_from_slice(data);
        }
        Self::modified(node, now, unprivileged.as_ref());
        let attr = self.attr_of(ino);
        self.node_event(ino, modified_change(&attr));
        Ok(Outcome::Attr(attr))
    }

    pub(super) fn put(&mut self, c: &Put, max_size: u64, now: u64) -> Result<Outcome, StateError> {
        let (at, data, mode, uid, gid, if_generation) = (
            &c.at,
            c.data.as_slice(),
            c.mode,
            c.uid,
            c.gid,
            c.if_generation,
        );
        let slot = self.resolve_slot(at)?;
        match slot.existing {
            Some(ino) => self.file(ino).map(|_| ())?,
            None => self.not_ephemeral(slot.parent)?,
        }
        if let Some(expected) = if_generation {
            // A missing file and one never written are both at generation 0.
            let current = match slot.existing {
                Some(ino) => self.node(ino)?.content_generation,
                None => 0,
            };
            if current != expected {
                return Err(StateError::GenerationMismatch { expected, current });
            }
        }
        checked_size(data.len() as u64, max_size)?;
        let ino = match slot.existing {
            Some(ino) => ino,
            None => {
                let node = Node::new(Kind::File, slot.parent, &slot.name, mode, uid, gid, now);
                self.insert_node(node, now)
            }
        };
        self.usage.resize(self.nodes[&ino].data.len(), data.len());
        let unprivileged = self.unprivileged.clone();
        let node = self.node_mut(ino);
        node.data = data.to_vec();
        Self::modified(node, now, unprivileged.as_ref());
        let attr = self.attr_of(ino);
        self.node_event(ino, modified_change(&attr));
        Ok(Outcome::Attr(attr))
    }

    pub(super) fn truncate(
        &mut self,
        c: &Truncate,
        max_size: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let (target, size) = (&c.target, c.size);
        let ino = self.lookup(target)?;
        self.file(ino)?;
        let size = checked_size(size, max_size)?;
        self.usage.resize(self.nodes[&ino].data.len(), size);
        let unprivileged = self.unprivileged.clone();
        let node = self.node_mut(ino);
        node.data.resize(size, 0);
        Self::modified(node, now, unprivileged.as_ref());
        let attr = self.attr_of(ino);
        self.node_event(ino, modified_change(&attr));
        Ok(Outcome::Attr(attr))
    }

    pub(super) fn unlink(&mut self, at: &Target, now: u64) -> Result<Outcome, StateError> {
        let ino = self.lookup_linked(at)?;
        if self.node(ino)?.is_dir() {
            return Err(StateError::IsADirectory);
        }
        let (parent, name) = self.name_at(at, ino)?;
        self.remove_name(ino, parent, &name, now);
        Ok(Outcome::Done)
    }

    /// The name a target reaches linked node `ino` by: its own for a path or a (parent,
    /// name), the first one for an instance.
    fn name_at(&self, target: &Target, ino: u64) -> Result<(u64, String), StateError> {
        match target {
            Target::Ino(_) => {
                let node = &self.nodes[&ino];
                Ok((node.parent, node.name.clone()))
            }
            _ => {
                let slot = self.resolve_slot(target)?;
                Ok((slot.parent, slot.name))
            }
        }
    }

    pub(super) fn rmdir(&mut self, at: &Target, now: u64) -> Result<Outcome, StateError> {
        let ino = self.lookup_linked(at)?;
        if ino == ROOT {
            return Err(StateError::Busy);
        }
        if !self.dir(ino)?.children.is_empty() {
            return Err(StateError::NotEmpty);
        }
        self.delete_node(ino, now);
        Ok(Outcome::Done)
    }

    /// rename(2) and renameat2(2), with Linux's errors: the root cannot move (Busy); a
    /// directory cannot move below itself (InvalidArgument); a directory replaces only an empty
    /// directory (NotEmpty), a file only a file (IsADirectory, NotADirectory). A node renamed
    /// onto itself is left as it is.
    pub(super) fn rename(
        &mut self,
        from: &Target,
        to: &Target,
        how: RenameHow,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup_linked(from)?;
        let slot = self.resolve_slot(to)?;
        if ino == ROOT || slot.existing == Some(ROOT) {
            return Err(StateError::Busy);
        }
        let existing = match (slot.existing, how) {
            (Some(_), RenameHow::NoReplace) => return Err(StateError::AlreadyExists),
            (None, RenameHow::Exchange) => return Err(StateError::NotFound),
            (existing, _) => existing,
        };
        if existing == Some(ino) {
            return Ok(Outcome::Done);
        }
        let source = &self.nodes[&ino];
        let (old_parent, old_name) = self.name_at(from, ino)?;
        if source.is_dir() && self.is_below(slot.parent, ino) {
            return Err(StateError::InvalidArgument(
                "a directory cannot move below itself".into(),
            ));
        }
        if let Some(target) = existing {
            let node = &self.nodes[&target];
            if how == RenameHow::Exchange {
                if node.is_dir() && self.is_below(old_parent, target) {
                    return Err(StateError::InvalidArgument(
                        "a directory cannot move below itself".into(),
                    ));
                }
            } else {
                match (source.is_dir(), node.is_dir()) {
                    (true, true) if !node.children.is_empty() => return Err(StateError::NotEmpty),
                    (true, false) => return Err(StateError::NotADirectory),
                    (false, true) => return Err(StateError::IsADirectory),
                    _ => {}
                }
            }
        }
        // Checked; from here on nothing fails. What leaves `to` is reported first.
        let to = (slot.parent, slot.name.as_str());
        match existing {
            Some(target) if how == RenameHow::Exchange => {
                self.name_event(target, slot.parent, &slot.name, NodeChange::Deleted);
            }
            Some(target) if self.nodes[&target].is_dir() => self.delete_node(target, now),
            Some(target) => self.remove_name(target, slot.parent, &slot.name, now),
            None => {}
        }
        let is_dir = |sm: &Self, n: u64| u64::from(sm.nodes[&n].is_dir());
        self.name_event(ino, old_parent, &old_name, NodeChange::Deleted);
        let moved_dir = is_dir(self, ino);
        let from_dir = self.dir_mut(old_parent, now);
        from_dir.children.remove(&old_name);
        from_dir.subdirs -= moved_dir;
        self.move_name(ino, (old_parent, &old_name), to);
        self.node_mut(ino).ctime_ns = now;
        let to_dir = self.dir_mut(slot.parent, now);
        to_dir.children.insert(slot.name.clone(), ino);
        to_dir.subdirs += moved_dir;
        if let (Some(target), RenameHow::Exchange) = (existing, how) {
            let other_dir = is_dir(self, target);
            self.move_name(target, to, (old_parent, &old_name));
            self.node_mut(target).ctime_ns = now;
            self.dir_mut(slot.parent, now).subdirs -= other_dir;
            let back = self.dir_mut(old_parent, now);
            back.children.insert(old_name.clone(), target);
            back.subdirs += other_dir;
            self.name_event(target, old_parent, &old_name, NodeChange::Created);
        }
        self.name_event(ino, slot.parent, &slot.name, NodeChange::Created);
        Ok(Outcome::Done)
    }

    /// Whether node `ino` is `ancestor` or lies below it.
    fn is_below(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            ino = self.nodes[&ino].parent;
        }
    }

    pub(super) fn set_attr(&mut self, c: &SetAttr, now: u64) -> Result<Outcome, StateError> {
        let (target, mode, uid, gid, atime_ns, mtime_ns) =
            (&c.target, c.mode, c.uid, c.gid, c.atime_ns, c.mtime_ns);
        let ino = self.lookup(target)?;
        let node = self.node_mut(ino);
        if mode.is_some() || uid.is_some() || gid.is_some() {
            node.acl_generation += 1;
        }
        if let Some(mode) = mode {
            node.mode = mode & PERMISSION_BITS;
        }
        node.uid = uid.unwrap_or(node.uid);
        node.gid = gid.unwrap_or(node.gid);
        node.atime_ns = atime_ns.unwrap_or(node.atime_ns);
        node.mtime_ns = mtime_ns.unwrap_or(node.mtime_ns);
        node.ctime_ns = now;
        let attr = self.attr_of(ino);
        self.node_event(ino, NodeChange::Attrib);
        Ok(Outcome::Attr(attr))
    }

    pub(super) fn set_ephemeral(
        &mut self,
        target: &Target,
        ephemeral: bool,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup(target)?;
        self.dir(ino)?;
        let node = self.node_mut(ino);
        node.ephemeral = ephemeral;
        node.ctime_ns = now;
        let attr = self.attr_of(ino);
        self.node_event(ino, NodeChange::Attrib);
        Ok(Outcome::Attr(attr))
    }

    // ---- Resolution: read-only, every error a command can meet while naming things.

    /// New files in an ephemeral directory are made by `Open` with `create` only, so that an
    /// ephemeral file is never without a handle.
    fn not_ephemeral(&self, dir: u64) -> Result<(), StateError> {
        if self.nodes[&dir].ephemeral {
            return Err(StateError::InvalidArgument(
                "files in an ephemeral directory are created by opening them".into(),
            ));
        }
        Ok(())
    }

    /// As [`StateMachine::lookup`], but an orphan is not found: what has no name cannot lose
    /// it again or move.
    fn lookup_linked(&self, target: &Target) -> Result<u64, StateError> {
        let ino = self.lookup(target)?;
        if self.is_orphan(ino) {
            return Err(StateError::NotFound);
        }
        Ok(ino)
    }

    pub(super) fn node(&self, ino: u64) -> Result<&Node, StateError> {
        self.nodes.get(&ino).ok_or(StateError::NotFound)
    }

    pub(super) fn dir(&self, ino: u64) -> Result<&Node, StateError> {
        let node = self.node(ino)?;
        if node.is_dir() {
            Ok(node)
        } else {
            Err(StateError::NotADirectory)
        }
    }

    /// A regular file: what has contents to read and write.
    pub(super) fn file(&self, ino: u64) -> Result<&Node, StateError> {
        let node = self.node(ino)?;
        match node.kind {
            Kind::File => Ok(node),
            Kind::Dir => Err(StateError::IsADirectory),
            Kind::Symlink => Err(StateError::InvalidArgument(
                "a symbolic link has no contents of its own".into(),
            )),
        }
    }

    /// Follows validated path components from the root.
    fn walk(&self, components: &[&str]) -> Result<u64, StateError> {
        components.iter().try_fold(ROOT, |ino, name| {
            self.dir(ino)?
                .children
                .get(*name)
                .copied()
                .ok_or(StateError::NotFound)
        })
    }

    /// Where a creating command (or the destination of a rename) puts its node.
    pub(super) fn resolve_slot(&self, target: &Target) -> Result<Slot, StateError> {
        let (parent, name) = match target {
            Target::Path(path) => {
                let components = split_path(path)?;
                let Some((name, parents)) = components.split_last() else {
                    return Ok(Slot {
                        parent: ROOT,
                        name: String::new(),
                        existing: Some(ROOT),
                    });
                };
                (self.walk(parents)?, name.to_string())
            }
            Target::Ino(_) => {
                return Err(StateError::InvalidArgument(
                    "a new entry needs a path or a parent and name".into(),
                ))
            }
            Target::Child { parent, name } => {
                validate_name(name)?;
                (*parent, name.clone())
            }
        };
        let existing = self.dir(parent)?.children.get(&name).copied();
        Ok(Slot {
            parent,
            name,
            existing,
        })
    }

    // ---- Mutation helpers: they assume the checks above passed and mark what they change.

    pub(super) fn node_mut(&mut self, ino: u64) -> &mut Node {
        self.dirty_nodes.insert(ino);
        self.nodes
            .get_mut(&ino)
            .expect("node was resolved before mutation")
    }

    /// A directory whose entries are about to change: its mtime and ctime become `now`.
    pub(super) fn dir_mut(&mut self, ino: u64, now: u64) -> &mut Node {
        let dir = self.node_mut(ino);
        dir.mtime_ns = now;
        dir.ctime_ns = now;
        dir
    }

    /// Records a change of contents. A change by a user other than root (`unprivileged`) also
    /// clears the set-user-id bit, and the set-group-id bit of a group-executable file or of
    /// a file whose group the user is not in, as Linux does for a writer without CAP_FSETID.
    fn modified<'a>(node: &'a mut Node, now: u64, unprivileged: Option<&UserIds>) -> &'a mut Node {
        node.content_generation += 1;
        node.mtime_ns = now;
        node.ctime_ns = now;
        if let Some(user) = unprivileged {
            let mut kept = node.mode & !SET_UID;
            if node.mode & GROUP_EXEC != 0 || !user.in_group(node.gid) {
                kept &= !SET_GID;
            }
            if kept != node.mode {
                node.mode = kept;
                node.acl_generation += 1;
            }
        }
        node
    }

    /// Adds a node under a fresh instance number into its parent, which must be a directory
    /// without an entry of that name. Files inherit the parent's ephemeral flag.
    pub(super) fn insert_node(&mut self, mut node: Node, now: u64) -> u64 {
        let ino = self.meta.next_instance;
        self.meta.next_instance += 1;
        self.meta_dirty = true;
        let parent = self.dir_mut(node.parent, now);
        parent.children.insert(node.name.clone(), ino);
        parent.subdirs += u64::from(node.kind == Kind::Dir);
        node.ephemeral = node.kind == Kind::File && parent.ephemeral;
        // A set-group-id directory gives what is made in it its group, and its subdirectories
        // its set-group-id bit, as Linux does (the kernel already stripped the bit from a file
        // made by someone outside the group).
        if parent.mode & SET_GID != 0 {
            node.gid = parent.gid;
            if node.kind == Kind::Dir {
                node.mode |= SET_GID;
            }
        }
        self.usage.resize(0, node.data.len());
        self.nodes.insert(ino, node);
        self.dirty_nodes.insert(ino);
        self.node_event(ino, NodeChange::Created);
        ino
    }

    /// Removes a file or an empty directory other than the root, with its locks (its waiters
    /// fail). Handles on it stay open.
    pub(super) fn delete_node(&mut self, ino: u64, now: u64) {
        self.drop_locks(ino);
        self.node_event(ino, NodeChange::Deleted);
        self.drop_extra_names(ino, now);
        let node = self
            .nodes
            .remove(&ino)
            .expect("node was resolved before removal");
        self.usage.resize(node.data.len(), 0);
        self.dirty_nodes.insert(ino);
        let parent = self.dir_mut(node.parent, now);
        parent.children.remove(&node.name);
        parent.subdirs -= u64::from(node.is_dir());
    }
}

impl StateMachine {
    /// Reports a change of live node `ino` at each of its names (`links.rs`). An orphan has
    /// none: its changes are reported to nobody (see `orphan.rs`).
    pub(super) fn node_event(&mut self, ino: u64, change: NodeChange) {
        if ino == ROOT {
            let event = NodeEvent {
                index: self.applying,
                path: "/".into(),
                instance: ROOT,
                parent: ROOT,
                name: String::new(),
                kind: Kind::Dir,
                by: self.applying_for,
                change,
            };
            self.node_events.push(event);
            return;
        }
        for (parent, name) in self.names_of(ino) {
            self.name_event(ino, parent, &name, change.clone());
        }
    }
}

/// The change a write made to a file, from its attributes after it.
fn modified_change(attr: &Attr) -> NodeChange {
    NodeChange::Modified {
        generation: attr.content_generation,
        size: attr.size,
    }
}

/// How much a listing page holds for a requested `limit` (see [`crate::state::MAX_PAGE`]).
pub(super) fn page_size(limit: u32) -> u32 {
    match limit {
        0 => MAX_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// The size of a file of `old_len` bytes after writing `len` bytes at `offset` (at the end
/// with `append`), emptied first with `truncate`.
pub(super) fn written_len(
    old_len: u64,
    offset: u64,
    len: usize,
    truncate: bool,
    append: bool,
) -> Result<u64, StateError> {
    let old_len = if truncate { 0 } else { old_len };
    let offset = if append { old_len } else { offset };
    // As with pwrite(2), writing nothing never extends the file.
    if len == 0 {
        return Ok(old_len);
    }
    let end = offset
        .checked_add(len as u64)
        .ok_or(StateError::FileTooLarge)?;
    Ok(old_len.max(end))
}

/// A file size, refused beyond the cluster's limit.
fn checked_size(size: u64, max_size: u64) -> Result<usize, StateError> {
    if size > max_size {
        return Err(StateError::FileTooLarge);
    }
    usize::try_from(size).map_err(|_| StateError::FileTooLarge)
}
