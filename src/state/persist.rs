//! The state as records (layout in `record.rs`): what changed since the last batch, everything
//! for a snapshot, the state rebuilt from stored records, and the invariants checked on load.

use std::collections::{BTreeMap, BTreeSet};

use super::dedup::MAX_CACHED_RESULTS;
use super::links::MAX_LINKS;
use super::lock::{conflict_among, Held, LockTable};
use super::locking::MAX_GRANTED_MEMORY;
use super::node::{Node, PERMISSION_BITS};
use super::on_loss::OnLoss;
use super::orphan::Orphan;
use super::path::validate_name;
use super::quota::Usage;
use super::record::{
    self, Meta, HANDLE_PREFIX, LOCK_PREFIX, LOG_FORMAT_KEY, META_KEY, NAMES_PREFIX, NODE_PREFIX,
    ON_LOSS_PREFIX, ORPHAN_PREFIX, RESPONSE_PREFIX, SEMAPHORE_PREFIX, SESSION_PREFIX,
};
use super::semaphore::{Semaphore, MAX_HOLDERS};
use super::session::{Handle, Session};
use super::tree::{Change, StateMachine, ROOT};
use super::{LockStyle, Outcome, StateError};

/// Highest value of an id counter: counting one by one never gets there (2^63 commands, at a
/// million a second, take 290,000 years), and below it the next id always fits.
const MAX_COUNTER: u64 = 1 << 63;

/// A cached result as stored.
type Response = Result<Outcome, StateError>;

impl StateMachine {
    /// The records changed since the last call, sorted by key, one per key: `Some` to put,
    /// `None` to delete. Write them in one batch with the applied index.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        if std::mem::take(&mut self.meta_dirty) {
            changes.push((META_KEY.to_vec(), Some(record::encode(&self.meta))));
        }
        if std::mem::take(&mut self.log_format_dirty) {
            let value = record::encode(&self.log_format);
            changes.push((LOG_FORMAT_KEY.to_vec(), Some(value)));
        }
        for ino in std::mem::take(&mut self.dirty_nodes) {
            let value = self.nodes.get(&ino).map(record::encode);
            changes.push((record::node_key(ino), value));
        }
        for id in std::mem::take(&mut self.dirty_sessions) {
            let value = self.sessions.get(&id).map(record::encode);
            changes.push((record::key(SESSION_PREFIX, &[id]), value));
        }
        for id in std::mem::take(&mut self.dirty_handles) {
            let value = self.handles.get(&id).map(record::encode);
            changes.push((record::key(HANDLE_PREFIX, &[id]), value));
        }
        for (id, seq) in std::mem::take(&mut self.dirty_responses) {
            let value = self
                .sessions
                .get(&id)
                .and_then(|s| s.responses.get(&seq))
                .map(record::encode);
            changes.push((record::key(RESPONSE_PREFIX, &[id, seq]), value));
        }
        for ino in std::mem::take(&mut self.dirty_locks) {
            let value = self.locks.get(&ino).map(record::encode);
            changes.push((record::key(LOCK_PREFIX, &[ino]), value));
        }
        for ino in std::mem::take(&mut self.dirty_orphans) {
            let value = self.orphans.get(&ino).map(record::encode);
            changes.push((record::key(ORPHAN_PREFIX, &[ino]), value));
        }
        for ino in std::mem::take(&mut self.dirty_extra_names) {
            let value = self.extra_names.get(&ino).map(record::encode);
            changes.push((record::key(NAMES_PREFIX, &[ino]), value));
        }
        for ino in std::mem::take(&mut self.dirty_semaphores) {
            let value = self.semaphores.get(&ino).map(record::encode);
            changes.push((record::key(SEMAPHORE_PREFIX, &[ino]), value));
        }
        for ino in std::mem::take(&mut self.dirty_on_loss) {
            let value = self.on_loss.get(&ino).map(record::encode);
            changes.push((record::key(ON_LOSS_PREFIX, &[ino]), value));
        }
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes
    }

    /// Every record of the state, sorted by key.
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records = Vec::new();
        self.for_each_record(|key, value| records.push((key, value)));
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records
    }

    /// Calls `f` with every record of the state, in no particular order.
    pub fn for_each_record(&self, mut f: impl FnMut(Vec<u8>, Vec<u8>)) {
        f(META_KEY.to_vec(), record::encode(&self.meta));
        if self.log_format > 1 {
            f(LOG_FORMAT_KEY.to_vec(), record::encode(&self.log_format));
        }
        for (&ino, node) in &self.nodes {
            f(record::node_key(ino), record::encode(node));
        }
        for (&id, session) in &self.sessions {
            f(record::key(SESSION_PREFIX, &[id]), record::encode(session));
            for (&seq, response) in &session.responses {
                f(
                    record::key(RESPONSE_PREFIX, &[id, seq]),
                    record::encode(response),
                );
            }
        }
        for (&id, handle) in &self.handles {
            f(record::key(HANDLE_PREFIX, &[id]), record::encode(handle));
        }
        for (&ino, table) in &self.locks {
            f(record::key(LOCK_PREFIX, &[ino]), record::encode(table));
        }
        for (&ino, orphan) in &self.orphans {
            f(record::key(ORPHAN_PREFIX, &[ino]), record::encode(orphan));
        }
        for (&ino, names) in &self.extra_names {
            f(record::key(NAMES_PREFIX, &[ino]), record::encode(names));
        }
        for (&ino, semaphore) in &self.semaphores {
            f(
                record::key(SEMAPHORE_PREFIX, &[ino]),
                record::encode(semaphore),
            );
        }
        for (&ino, on_loss) in &self.on_loss {
            f(record::key(ON_LOSS_PREFIX, &[ino]), record::encode(on_loss));
        }
    }

    /// Rebuilds the state from stored records, in any order. No records of the state at all
    /// gives [`StateMachine::new`] (with its records pending); keys of unknown prefixes are
    /// ignored.
    pub fn from_records(
        records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, StateError> {
        let mut nodes = BTreeMap::new();
        let mut sessions: BTreeMap<u64, Session> = BTreeMap::new();
        let mut handles: BTreeMap<u64, Handle> = BTreeMap::new();
        let mut responses: BTreeMap<(u64, u64), Response> = BTreeMap::new();
        let mut locks: BTreeMap<u64, LockTable> = BTreeMap::new();
        let mut orphans: BTreeMap<u64, Orphan> = BTreeMap::new();
        let mut extra_names: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
        let mut semaphores: BTreeMap<u64, Semaphore> = BTreeMap::new();
        let mut on_loss: BTreeMap<u64, OnLoss> = BTreeMap::new();
        let mut meta = None;
        let mut log_format = None;
        fn once<K: Ord + std::fmt::Debug, V>(
            map: &mut BTreeMap<K, V>,
            key: K,
            value: V,
        ) -> Result<(), StateError> {
            let what = format!("{key:?}");
            match map.insert(key, value) {
                None => Ok(()),
                Some(_) => Err(StateError::Corrupt(format!("record {what} appears twice"))),
            }
        }
        for (key, value) in records {
            if key == META_KEY {
                if meta
                    .replace(record::decode::<Meta>("meta record", &value)?)
                    .is_some()
                {
                    return Err(StateError::Corrupt("meta record appears twice".into()));
                }
            } else if key == LOG_FORMAT_KEY {
                let format: u32 = record::decode("log format record", &value)?;
                if crate::encoding::LogFormat::from_number(format).is_none() {
                    return Err(StateError::Corrupt(format!(
                        "the cluster writes log format {format}, newer than this lockfs reads"
                    )));
                }
                if log_format.replace(format).is_some() {
                    return Err(StateError::Corrupt(
                        "log format record appears twice".into(),
                    ));
                }
            } else if let Some(ids) = record::parse_key::<1>(NODE_PREFIX, &key) {
                let [ino] = ids?;
                let node: Node = record::decode(&format!("node record {ino}"), &value)?;
                once(&mut nodes, ino, node)?;
            } else if let Some(ids) = record::parse_key::<1>(SESSION_PREFIX, &key) {
                let [id] = ids?;
                once(&mut sessions, id, record::decode("session record", &value)?)?;
            } else if let Some(ids) = record::parse_key::<1>(HANDLE_PREFIX, &key) {
                let [id] = ids?;
                once(&mut handles, id, record::decode("handle record", &value)?)?;
            } else if let Some(ids) = record::parse_key::<2>(RESPONSE_PREFIX, &key) {
                let [id, seq] = ids?;
                let response = record::decode("cached result", &value)?;
                once(&mut responses, (id, seq), response)?;
            } else if let Some(ids) = record::parse_key::<1>(LOCK_PREFIX, &key) {
                let [ino] = ids?;
                once(&mut locks, ino, record::decode("lock record", &value)?)?;
            } else if let Some(ids) = record::parse_key::<1>(ORPHAN_PREFIX, &key) {
                let [ino] = ids?;
                once(&mut orphans, ino, record::decode("orphan record", &value)?)?;
            } else if let Some(ids) = record::parse_key::<1>(NAMES_PREFIX, &key) {
                let [ino] = ids?;
                once(
                    &mut extra_names,
                    ino,
                    record::decode("names record", &value)?,
                )?;
            } else if let Some(ids) = record::parse_key::<1>(SEMAPHORE_PREFIX, &key) {
                let [ino] = ids?;
                let semaphore = record::decode("semaphore record", &value)?;
                once(&mut semaphores, ino, semaphore)?;
            } else if let Some(ids) = record::parse_key::<1>(ON_LOSS_PREFIX, &key) {
                let [ino] = ids?;
                let setting = record::decode("on_loss record", &value)?;
                once(&mut on_loss, ino, setting)?;
            }
        }
        let meta = match meta {
            None if nodes.is_empty()
                && sessions.is_empty()
                && handles.is_empty()
                && responses.is_empty()
                && locks.is_empty()
                && orphans.is_empty()
                && extra_names.is_empty()
                && semaphores.is_empty()
                && on_loss.is_empty()
                && log_format.is_none() =>
            {
                return Ok(Self::new())
            }
            None => return Err(StateError::Corrupt("meta record missing".into())),
            Some(meta) => meta,
        };
        let links: Vec<(u64, String, u64)> = nodes
            .iter()
            // An orphan has no name (parent 0); `validate` checks it has its record.
            .filter(|(&ino, node)| ino != ROOT && node.parent != 0)
            .map(|(&ino, node)| (node.parent, node.name.clone(), ino))
            .chain(
                extra_names
                    .iter()
                    .flat_map(|(&ino, names)| names.iter().map(move |(p, n)| (*p, n.clone(), ino))),
            )
            .collect();
        for (parent, name, ino) in links {
            let is_dir = nodes.get(&ino).is_some_and(|n| n.is_dir());
            let dir = nodes
                .get_mut(&parent)
                .filter(|dir| dir.is_dir())
                .ok_or_else(|| {
                    StateError::Corrupt(format!("node {ino}: parent {parent} is not a directory"))
                })?;
            dir.subdirs += u64::from(is_dir);
            if dir.children.insert(name, ino).is_some() {
                return Err(StateError::Corrupt(format!(
                    "node {ino}: name taken in {parent}"
                )));
            }
        }
        let mut holds = BTreeMap::new();
        for (&id, handle) in &handles {
            let session = sessions.get_mut(&handle.session).ok_or_else(|| {
                StateError::Corrupt(format!("handle {id}: no session {}", handle.session))
            })?;
            session.handles.insert(id);
            *holds.entry(handle.instance).or_insert(0) += 1;
        }
        for ((id, seq), response) in responses {
            let session = sessions.get_mut(&id).ok_or_else(|| {
                StateError::Corrupt(format!("cached result {seq}: no session {id}"))
            })?;
            session.responses.insert(seq, response);
        }
        let delays = locks
            .iter()
            .filter(|(_, t)| t.delay_until_ns != 0)
            .map(|(&ino, t)| (t.delay_until_ns, ino))
            .collect();
        let caching = sessions
            .iter()
            .filter(|(_, s)| s.cache)
            .map(|(id, _)| *id)
            .collect();
        let orphan_times = orphans
            .iter()
            .map(|(&ino, o)| (o.keep_until_ns, ino))
            .filter(|&(until, _)| until > meta.clock_ns)
            .collect();
        let mut state = StateMachine {
            caching,
            orphans,
            orphan_times,
            extra_names,
            semaphores,
            on_loss,
            nodes,
            meta,
            sessions,
            handles,
            locks,
            holds,
            delays,
            usage: Usage::default(),
            events: Vec::new(),
            node_events: Vec::new(),
            applying: 0,
            applying_for: 0,
            unprivileged: None,
            dirty_nodes: BTreeSet::new(),
            dirty_sessions: BTreeSet::new(),
            dirty_handles: BTreeSet::new(),
            dirty_locks: BTreeSet::new(),
            dirty_orphans: BTreeSet::new(),
            dirty_extra_names: BTreeSet::new(),
            dirty_semaphores: BTreeSet::new(),
            dirty_on_loss: BTreeSet::new(),
            dirty_responses: BTreeSet::new(),
            meta_dirty: false,
            log_format: log_format.unwrap_or(1),
            log_format_dirty: false,
        };
        state.usage = Usage::of(&state);
        state.validate()?;
        Ok(state)
    }

    /// The whole state as one blob, for Raft snapshots.
    pub fn snapshot(&self) -> Vec<u8> {
        record::encode(&self.records())
    }

    /// The state a [`StateMachine::snapshot`] was taken of. Nothing is pending in
    /// `take_changes`: the caller replaces its stored records with [`StateMachine::records`].
    pub fn restore(data: &[u8]) -> Result<Self, StateError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> = record::decode("snapshot", data)?;
        Self::from_records(records)
    }

    /// Checks the invariants. Of the tree: the root is a directory and its own parent; every
    /// other node but the orphans has a valid name and sits, under that name, in a directory
    /// that exists; every node but the orphans is reachable from the root, and every orphan is a nameless file that
    /// is held or not yet due (`orphan.rs`); files have no entries, directories no data;
    /// modes are permission bits; instance numbers are below the next one. Of sessions and
    /// locks: see [`StateMachine::validate_sessions`] and [`StateMachine::validate_locks`].
    pub fn validate(&self) -> Result<(), StateError> {
        self.validate_counters()?;
        self.validate_tree()?;
        self.validate_sessions()?;
        self.validate_locks()
    }

    /// The counters hand out ids from 1 (0 names nothing), and none is beyond what counting
    /// can reach: the next id must fit, whatever is applied next.
    fn validate_counters(&self) -> Result<(), StateError> {
        let Meta {
            next_instance,
            next_session,
            next_handle,
            next_wait,
            ..
        } = self.meta;
        for (what, next) in [
            ("instance", next_instance),
            ("session", next_session),
            ("handle", next_handle),
            ("wait", next_wait),
        ] {
            if next == 0 || next > MAX_COUNTER {
                return Err(StateError::Corrupt(format!(
                    "next {what} id {next} out of range"
                )));
            }
        }
        Ok(())
    }

    fn validate_tree(&self) -> Result<(), StateError> {
        let corrupt = |what: String| Err(StateError::Corrupt(what));
        match self.nodes.get(&ROOT) {
            Some(root) if root.is_dir() && root.parent == ROOT && root.name.is_empty() => {}
            _ => return corrupt("root is missing or malformed".into()),
        }
        for (&ino, node) in &self.nodes {
            if ino == 0 || ino >= self.meta.next_instance {
                return corrupt(format!("node {ino}: instance out of range"));
            }
            if node.mode & !PERMISSION_BITS != 0 {
                return corrupt(format!("node {ino}: mode {:o}", node.mode));
            }
            if node.is_dir() && !node.data.is_empty() {
                return corrupt(format!("directory {ino} has data"));
            }
            if !node.is_dir() && !node.children.is_empty() {
                return corrupt(format!("file {ino} has entries"));
            }
            let subdirs = node
                .children
                .values()
                .filter(|c| self.nodes.get(c).is_some_and(Node::is_dir))
                .count() as u64;
            if node.subdirs != subdirs {
                return corrupt(format!(
                    "directory {ino}: {} subdirectories counted",
                    node.subdirs
                ));
            }
            for (name, child) in &node.children {
                let first = |c: &Node| c.parent == ino && &c.name == name;
                let other = || {
                    self.extra_names
                        .get(child)
                        .is_some_and(|names| names.iter().any(|(p, n)| *p == ino && n == name))
                };
                match self.nodes.get(child) {
                    Some(c) if *child != ROOT && (first(c) || other()) => {}
                    _ => {
                        return corrupt(format!("directory {ino}: entry {name:?} is inconsistent"))
                    }
                }
            }
            if ino == ROOT {
                continue;
            }
            if node.parent == 0 {
                match self.orphans.get(&ino) {
                    Some(o)
                        if !node.is_dir()
                            && node.name.is_empty()
                            && (o.keep_until_ns > self.meta.clock_ns
                                || self.holds.contains_key(&ino)) => {}
                    _ => return corrupt(format!("node {ino}: a nameless node that cannot be")),
                }
                continue;
            }
            if validate_name(&node.name).is_err() {
                return corrupt(format!("node {ino}: invalid name {:?}", node.name));
            }
            if self
                .nodes
                .get(&node.parent)
                .and_then(|p| p.children.get(&node.name))
                != Some(&ino)
            {
                return corrupt(format!(
                    "node {ino}: missing from its parent {}",
                    node.parent
                ));
            }
        }
        let mut seen = BTreeSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            for &child in self.nodes[&ino].children.values() {
                if seen.insert(child) {
                    stack.push(child);
                }
            }
        }
        for &ino in self.orphans.keys() {
            if self.nodes.get(&ino).is_none_or(|n| n.parent != 0) {
                return corrupt(format!("orphan {ino}: no nameless node"));
            }
        }
        for (&ino, names) in &self.extra_names {
            let file = self
                .nodes
                .get(&ino)
                .filter(|n| !n.is_dir() && n.parent != 0);
            if file.is_none() || names.is_empty() || names.len() >= MAX_LINKS {
                return corrupt(format!("names of {ino}: not a named file, or too many"));
            }
            for (parent, name) in names {
                let listed = self.nodes.get(parent).and_then(|d| d.children.get(name));
                if validate_name(name).is_err() || listed != Some(&ino) {
                    return corrupt(format!("names of {ino}: {name:?} in {parent}"));
                }
            }
        }
        if seen.len() + self.orphans.len() != self.nodes.len() {
            return corrupt("some nodes are not reachable from the root".into());
        }
        Ok(())
    }

    /// Ids are below their counters; every handle belongs to a live session and names an
    /// instance that was handed out; the derived maps agree with the handles; every ephemeral
    /// file is held by some handle; caches stay within their bounds and above the
    /// acknowledged sequence number.
    fn validate_sessions(&self) -> Result<(), StateError> {
        let corrupt = |what: String| Err(StateError::Corrupt(what));
        let mut holds: BTreeMap<u64, u64> = BTreeMap::new();
        for (&id, h) in &self.handles {
            if id == 0 || id >= self.meta.next_handle {
                return corrupt(format!("handle {id}: id out of range"));
            }
            if h.instance == 0 || h.instance >= self.meta.next_instance {
                return corrupt(format!("handle {id}: instance {} out of range", h.instance));
            }
            match self.sessions.get(&h.session) {
                Some(s) if s.handles.contains(&id) => {}
                _ => return corrupt(format!("handle {id}: session {} is not live", h.session)),
            }
            *holds.entry(h.instance).or_insert(0) += 1;
        }
        if holds != self.holds {
            return corrupt("handle counts disagree with the handles".into());
        }
        for (&id, s) in &self.sessions {
            if id == 0 || id >= self.meta.next_session {
                return corrupt(format!("session {id}: id out of range"));
            }
            if s.handles.iter().any(|h| !self.handles.contains_key(h)) {
                return corrupt(format!("session {id}: lists a handle that is not open"));
            }
            if s.responses.len() > MAX_CACHED_RESULTS
                || s.responses
                    .keys()
                    .next()
                    .is_some_and(|&seq| seq < s.acked_below)
            {
                return corrupt(format!("session {id}: cached results out of bounds"));
            }
            if s.granted.len() > MAX_GRANTED_MEMORY
                || s.granted
                    .keys()
                    .any(|&w| w == 0 || w >= self.meta.next_wait)
            {
                return corrupt(format!("session {id}: granted waits out of bounds"));
            }
        }
        for (&ino, node) in &self.nodes {
            if node.ephemeral
                && !node.is_dir()
                && !self.holds.contains_key(&ino)
                && !self.orphans.contains_key(&ino)
            {
                return corrupt(format!("ephemeral file {ino} is held by no handle"));
            }
        }
        Ok(())
    }

    /// Lock tables are of live nodes and not empty; a lock-delay is 0 or still ahead of the
    /// clock (an ended one was handled by the command that moved the clock); holders and
    /// waiters belong to live sessions and have sane ranges (flock: the whole node); holders
    /// are sorted, an owner's ranges are disjoint, no holder conflicts with an earlier one
    /// (so a semaphore's holders fit its slots); wait ids are below the counter and unique; no
    /// waiter could be granted (every scan ran to its end). Semaphores are of live nodes and
    /// admit 2 to `MAX_HOLDERS` holders; `on_loss` settings are of live nodes.
    fn validate_locks(&self) -> Result<(), StateError> {
        let corrupt = |what: String| Err(StateError::Corrupt(what));
        for (&ino, s) in &self.semaphores {
            if !self.nodes.contains_key(&ino) || !(2..=MAX_HOLDERS).contains(&s.max_holders) {
                return corrupt(format!("node {ino}: bad semaphore {s:?}"));
            }
        }
        if let Some(ino) = self.on_loss.keys().find(|i| !self.nodes.contains_key(i)) {
            return corrupt(format!("on_loss setting of missing node {ino}"));
        }
        let sane = |l: &Held| {
            self.sessions.contains_key(&l.session)
                && l.start < l.end
                && (l.style == LockStyle::Posix || (l.start, l.end) == (0, u64::MAX))
        };
        let mut waits = BTreeSet::new();
        for (&ino, t) in &self.locks {
            let Some(node) = self.nodes.get(&ino) else {
                return corrupt(format!("locks on missing node {ino}"));
            };
            if t.is_empty() {
                return corrupt(format!("empty lock table of node {ino}"));
            }
            if t.delay_until_ns != 0 && t.delay_until_ns <= self.meta.clock_ns {
                return corrupt(format!("node {ino}: a lock-delay that ended is pending"));
            }
            for (i, h) in t.holders.iter().enumerate() {
                if !sane(h) {
                    return corrupt(format!("node {ino}: bad holder {h:?}"));
                }
                if let Some(next) = t.holders.get(i + 1) {
                    let ordered = (h.style, h.session, h.owner, h.start)
                        < (next.style, next.session, next.owner, next.start);
                    let disjoint = !next.same_owner(h.session, h.owner, h.style)
                        || (h.end <= next.start
                            && (h.end < next.start || h.kind != next.kind)
                            && h.style == LockStyle::Posix);
                    if !ordered || !disjoint {
                        return corrupt(format!("node {ino}: holders overlap or are unsorted"));
                    }
                }
                if conflict_among(&t.holders[..i], h, self.slots(ino)).is_some() {
                    return corrupt(format!("node {ino}: conflicting holders"));
                }
            }
            for w in &t.waiters {
                if !sane(&w.lock) || w.wait == 0 || w.wait >= self.meta.next_wait {
                    return corrupt(format!("node {ino}: bad waiter {w:?}"));
                }
                if !waits.insert(w.wait) {
                    return corrupt(format!("wait {} queued twice", w.wait));
                }
            }
            let mut scanned = t.clone();
            let mut generation = node.lock_generation;
            if !scanned
                .scan(self.meta.clock_ns, self.slots(ino), &mut generation)
                .is_empty()
            {
                return corrupt(format!("node {ino}: a waiter could be granted"));
            }
        }
        Ok(())
    }
}
