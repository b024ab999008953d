//! The replicated file tree: directories and small files addressed by path, by instance number,
//! or by (parent, name).
//!
//! Every command validates everything that can fail before it touches anything, so a refused
//! command leaves the tree, the counters and the change log exactly as they were. Mutations mark
//! the records they touch; [`StateMachine::take_changes`] hands those records to the caller.

use std::collections::{BTreeMap, BTreeSet};

use super::node::{Node, PERMISSION_BITS};
use super::path::{split_path, validate_name};
use super::record::{self, Meta, META_KEY};
use super::{ApplyCtx, Attr, Command, DirEntry, Kind, Outcome, Query, StateError, Target};

/// The instance number of the root directory.
pub const ROOT: u64 = 1;

/// A record to write: `Some(value)` to put, `None` to delete the key.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// The deterministic state of the file tree. See the module docs of [`crate::state`].
#[derive(Debug, Clone)]
pub struct StateMachine {
    nodes: BTreeMap<u64, Node>,
    meta: Meta,
    /// Nodes created, changed or removed since the last `take_changes`.
    dirty_nodes: BTreeSet<u64>,
    meta_dirty: bool,
}

/// Where a creating command puts its node: the entry `name` of directory `parent`, which may
/// already hold a node. For the path "/" it is the root itself (existing, with no name).
struct Slot {
    parent: u64,
    name: String,
    existing: Option<u64>,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
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
            },
            dirty_nodes: BTreeSet::from([ROOT]),
            meta_dirty: true,
        }
    }

    /// Applies one committed command. On error nothing changed.
    pub fn apply(&mut self, ctx: &ApplyCtx, cmd: &Command) -> Result<Outcome, StateError> {
        let now = self.meta.clock_ns.max(ctx.time_ns);
        let max_size = ctx.max_file_size;
        let outcome = match cmd {
            Command::Mkdir { at, mode, uid, gid } => self.mkdir(at, *mode, *uid, *gid, now),
            Command::Create {
                at,
                mode,
                uid,
                gid,
                exclusive,
            } => self.create(at, *mode, *uid, *gid, *exclusive, now),
            Command::Write {
                target,
                offset,
                data,
                truncate,
            } => self.write(target, *offset, data, *truncate, max_size, now),
            Command::Put {
                at,
                data,
                mode,
                uid,
                gid,
            } => self.put(at, data, *mode, *uid, *gid, max_size, now),
            Command::Truncate { target, size } => self.truncate(target, *size, max_size, now),
            Command::Unlink { at } => self.unlink(at, now),
            Command::Rmdir { at } => self.rmdir(at, now),
            Command::Rename { from, to } => self.rename(from, to, now),
            Command::SetAttr {
                target,
                mode,
                uid,
                gid,
                atime_ns,
                mtime_ns,
            } => self.set_attr(target, *mode, *uid, *gid, *atime_ns, *mtime_ns, now),
            Command::SetEphemeral { target, ephemeral } => {
                self.set_ephemeral(target, *ephemeral, now)
            }
        }?;
        if now != self.meta.clock_ns {
            self.meta.clock_ns = now;
            self.meta_dirty = true;
        }
        Ok(outcome)
    }

    /// Answers a read-only question.
    pub fn query(&self, q: &Query) -> Result<Outcome, StateError> {
        match q {
            Query::Stat(target) => self.attr(self.lookup(target)?).map(Outcome::Attr),
            Query::Read {
                target,
                offset,
                len,
            } => {
                let ino = self.lookup(target)?;
                let node = self.file(ino)?;
                let size = node.data.len();
                let start = usize::try_from(*offset).unwrap_or(usize::MAX).min(size);
                let wanted = len.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                let end = start.saturating_add(wanted).min(size);
                Ok(Outcome::Data {
                    attr: node.attr(ino),
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
        }
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

    /// The attributes of node `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, StateError> {
        self.node(ino).map(|node| node.attr(ino))
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

    // ---- Commands. Each one checks everything first; the first mutation comes after the last `?`.

    fn mkdir(
        &mut self,
        at: &Target,
        mode: u32,
        uid: u32,
        gid: u32,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let slot = self.resolve_slot(at)?;
        if slot.existing.is_some() {
            return Err(StateError::AlreadyExists);
        }
        let node = Node::new(Kind::Dir, slot.parent, &slot.name, mode, uid, gid, now);
        let ino = self.insert_node(node, now);
        Ok(Outcome::Attr(self.nodes[&ino].attr(ino)))
    }

    fn create(
        &mut self,
        at: &Target,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let slot = self.resolve_slot(at)?;
        if let Some(ino) = slot.existing {
            return if exclusive {
                Err(StateError::AlreadyExists)
            } else {
                self.file(ino).map(|node| Outcome::Attr(node.attr(ino)))
            };
        }
        let node = Node::new(Kind::File, slot.parent, &slot.name, mode, uid, gid, now);
        let ino = self.insert_node(node, now);
        Ok(Outcome::Attr(self.nodes[&ino].attr(ino)))
    }

    fn write(
        &mut self,
        target: &Target,
        offset: u64,
        data: &[u8],
        truncate: bool,
        max_size: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup(target)?;
        let node = self.file(ino)?;
        let old_len = if truncate { 0 } else { node.data.len() as u64 };
        // As with pwrite(2), writing nothing never extends the file.
        let new_len = if data.is_empty() {
            old_len
        } else {
            let end = offset
                .checked_add(data.len() as u64)
                .ok_or(StateError::FileTooLarge)?;
            old_len.max(end)
        };
        let new_len = checked_size(new_len, max_size)?;
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
        Ok(Outcome::Attr(Self::modified(node, now).attr(ino)))
    }

    #[allow(clippy::too_many_arguments)] // one per field of Command::Put, plus the context
    fn put(
        &mut self,
        at: &Target,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        max_size: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let slot = self.resolve_slot(at)?;
        if let Some(ino) = slot.existing {
            self.file(ino)?;
        }
        checked_size(data.len() as u64, max_size)?;
        let ino = match slot.existing {
            Some(ino) => ino,
            None => {
                let node = Node::new(Kind::File, slot.parent, &slot.name, mode, uid, gid, now);
                self.insert_node(node, now)
            }
        };
        let node = self.node_mut(ino);
        node.data = data.to_vec();
        Ok(Outcome::Attr(Self::modified(node, now).attr(ino)))
    }

    fn truncate(
        &mut self,
        target: &Target,
        size: u64,
        max_size: u64,
        now: u64,
    ) -> Result<Outcome, StateError> {
        let ino = self.lookup(target)?;
        self.file(ino)?;
        let size = checked_size(size, max_size)?;
        let node = self.node_mut(ino);
        node.data.resize(size, 0);
        Ok(Outcome::Attr(Self::modified(node, now).attr(ino)))
    }

    fn unlink(&mut self, at: &Target, now: u64) -> Result<Outcome, StateError> {
        let ino = self.lookup(at)?;
        self.file(ino)?;
        self.remove_node(ino, now);
        Ok(Outcome::Done)
    }

    fn rmdir(&mut self, at: &Target, now: u64) -> Result<Outcome, StateError> {
        let ino = self.lookup(at)?;
        if ino == ROOT {
            return Err(StateError::Busy);
        }
        if !self.dir(ino)?.children.is_empty() {
            return Err(StateError::NotEmpty);
        }
        self.remove_node(ino, now);
        Ok(Outcome::Done)
    }

    fn rename(&mut self, from: &Target, to: &Target, now: u64) -> Result<Outcome, StateError> {
        let ino = self.lookup(from)?;
        if self.node(ino)?.is_dir() {
            return Err(StateError::CrossDevice);
        }
        let slot = self.resolve_slot(to)?;
        match slot.existing {
            Some(existing) if existing == ino => return Ok(Outcome::Done),
            Some(existing) => {
                self.file(existing)?;
                self.remove_node(existing, now);
            }
            None => {}
        }
        let node = self.node_mut(ino);
        let old_parent = node.parent;
        let old_name = std::mem::replace(&mut node.name, slot.name.clone());
        node.parent = slot.parent;
        node.ctime_ns = now;
        self.dir_mut(old_parent, now).children.remove(&old_name);
        self.dir_mut(slot.parent, now)
            .children
            .insert(slot.name, ino);
        Ok(Outcome::Done)
    }

    #[allow(clippy::too_many_arguments)] // one per field of Command::SetAttr, plus the time
    fn set_attr(
        &mut self,
        target: &Target,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
        now: u64,
    ) -> Result<Outcome, StateError> {
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
        Ok(Outcome::Attr(node.attr(ino)))
    }

    fn set_ephemeral(
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
        Ok(Outcome::Attr(node.attr(ino)))
    }

    // ---- Resolution: read-only, every error a command can meet while naming things.

    fn node(&self, ino: u64) -> Result<&Node, StateError> {
        self.nodes.get(&ino).ok_or(StateError::NotFound)
    }

    fn dir(&self, ino: u64) -> Result<&Node, StateError> {
        let node = self.node(ino)?;
        if node.is_dir() {
            Ok(node)
        } else {
            Err(StateError::NotADirectory)
        }
    }

    fn file(&self, ino: u64) -> Result<&Node, StateError> {
        let node = self.node(ino)?;
        if node.is_dir() {
            Err(StateError::IsADirectory)
        } else {
            Ok(node)
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
    fn resolve_slot(&self, target: &Target) -> Result<Slot, StateError> {
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

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        self.dirty_nodes.insert(ino);
        self.nodes
            .get_mut(&ino)
            .expect("node was resolved before mutation")
    }

    /// A directory whose entries are about to change: its mtime and ctime become `now`.
    fn dir_mut(&mut self, ino: u64, now: u64) -> &mut Node {
        let dir = self.node_mut(ino);
        dir.mtime_ns = now;
        dir.ctime_ns = now;
        dir
    }

    /// Records a change of contents.
    fn modified(node: &mut Node, now: u64) -> &mut Node {
        node.content_generation += 1;
        node.mtime_ns = now;
        node.ctime_ns = now;
        node
    }

    /// Adds a node under a fresh instance number into its parent, which must be a directory
    /// without an entry of that name. Files inherit the parent's ephemeral flag.
    fn insert_node(&mut self, mut node: Node, now: u64) -> u64 {
        let ino = self.meta.next_instance;
        self.meta.next_instance += 1;
        self.meta_dirty = true;
        let parent = self.dir_mut(node.parent, now);
        parent.children.insert(node.name.clone(), ino);
        node.ephemeral = node.kind == Kind::File && parent.ephemeral;
        self.nodes.insert(ino, node);
        self.dirty_nodes.insert(ino);
        ino
    }

    /// Removes a file or an empty directory other than the root.
    fn remove_node(&mut self, ino: u64, now: u64) {
        let node = self
            .nodes
            .remove(&ino)
            .expect("node was resolved before removal");
        self.dirty_nodes.insert(ino);
        self.dir_mut(node.parent, now).children.remove(&node.name);
    }

    // ---- Persistence.

    /// The records changed since the last call, sorted by key, one per key: `Some` to put,
    /// `None` to delete. Write them in one batch with the applied index.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut changes = Vec::with_capacity(self.dirty_nodes.len() + 1);
        // "m/meta" sorts before every "n/..." key.
        if std::mem::take(&mut self.meta_dirty) {
            changes.push((META_KEY.to_vec(), Some(record::encode(&self.meta))));
        }
        for ino in std::mem::take(&mut self.dirty_nodes) {
            let value = self.nodes.get(&ino).map(record::encode);
            changes.push((record::node_key(ino), value));
        }
        changes
    }

    /// Every record of the state, sorted by key.
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let meta = (META_KEY.to_vec(), record::encode(&self.meta));
        let nodes = self
            .nodes
            .iter()
            .map(|(&ino, node)| (record::node_key(ino), record::encode(node)));
        std::iter::once(meta).chain(nodes).collect()
    }

    /// Rebuilds the state from stored records, in any order. No tree records at all gives
    /// [`StateMachine::new`] (with its records pending); keys of unknown prefixes are ignored.
    pub fn from_records(
        records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, StateError> {
        let mut nodes = BTreeMap::new();
        let mut meta = None;
        for (key, value) in records {
            if key == META_KEY {
                if meta
                    .replace(record::decode::<Meta>("meta record", &value)?)
                    .is_some()
                {
                    return Err(StateError::Corrupt("meta record appears twice".into()));
                }
            } else if let Some(ino) = record::parse_node_key(&key) {
                let ino = ino?;
                let node: Node = record::decode(&format!("node record {ino}"), &value)?;
                if nodes.insert(ino, node).is_some() {
                    return Err(StateError::Corrupt(format!("node {ino} appears twice")));
                }
            }
        }
        let meta = match meta {
            None if nodes.is_empty() => return Ok(Self::new()),
            None => return Err(StateError::Corrupt("meta record missing".into())),
            Some(meta) => meta,
        };
        let links: Vec<(u64, String, u64)> = nodes
            .iter()
            .filter(|(&ino, _)| ino != ROOT)
            .map(|(&ino, node)| (node.parent, node.name.clone(), ino))
            .collect();
        for (parent, name, ino) in links {
            let dir = nodes
                .get_mut(&parent)
                .filter(|dir| dir.is_dir())
                .ok_or_else(|| {
                    StateError::Corrupt(format!("node {ino}: parent {parent} is not a directory"))
                })?;
            if dir.children.insert(name, ino).is_some() {
                return Err(StateError::Corrupt(format!(
                    "node {ino}: name taken in {parent}"
                )));
            }
        }
        let state = StateMachine {
            nodes,
            meta,
            dirty_nodes: BTreeSet::new(),
            meta_dirty: false,
        };
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

    /// Checks the structural invariants: the root is a directory and its own parent; every
    /// other node has a valid name and sits, under that name, in a directory that exists;
    /// every node is reachable from the root; files have no entries, directories no data;
    /// modes are permission bits; instance numbers are below the next one.
    pub fn validate(&self) -> Result<(), StateError> {
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
            for (name, child) in &node.children {
                match self.nodes.get(child) {
                    Some(c) if *child != ROOT && c.parent == ino && &c.name == name => {}
                    _ => {
                        return corrupt(format!("directory {ino}: entry {name:?} is inconsistent"))
                    }
                }
            }
            if ino == ROOT {
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
        if seen.len() != self.nodes.len() {
            return corrupt("some nodes are not reachable from the root".into());
        }
        Ok(())
    }
}

/// A file size, refused beyond the cluster's limit.
fn checked_size(size: u64, max_size: u64) -> Result<usize, StateError> {
    if size > max_size {
        return Err(StateError::FileTooLarge);
    }
    usize::try_from(size).map_err(|_| StateError::FileTooLarge)
}
