//! One directory or file of the tree. Its stored form is the node itself without the children
//! map, which is rebuilt from every node's (parent, name) on load, so the two can never disagree
//! on disk.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Attr, Kind};

/// A node; its instance number is the key it is stored under, not a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Node {
    pub parent: u64,
    /// Empty for the root.
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub content_generation: u64,
    pub lock_generation: u64,
    pub acl_generation: u64,
    pub ephemeral: bool,
    /// File contents; always empty for directories. Files are small, so they live in the record.
    #[serde(with = "super::record::file_bytes")]
    pub data: Vec<u8>,
    /// Entries of a directory by name. Not stored: derived from the children's parent and name.
    #[serde(skip)]
    pub children: BTreeMap<String, u64>,
    /// How many of a directory's entries are directories (each has ".." here). Not stored:
    /// derived like `children`.
    #[serde(skip)]
    pub subdirs: u64,
}

/// The permission bits of a mode; the kind is kept apart.
pub(super) const PERMISSION_BITS: u32 = 0o7777;
pub(super) const SET_UID: u32 = 0o4000;
pub(super) const SET_GID: u32 = 0o2000;
pub(super) const GROUP_EXEC: u32 = 0o010;

impl Node {
    /// A new node with all three times at `now` and every generation at 0.
    pub fn new(
        kind: Kind,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        now: u64,
    ) -> Self {
        Node {
            parent,
            name: name.to_owned(),
            kind,
            mode: mode & PERMISSION_BITS,
            uid,
            gid,
            atime_ns: now,
            mtime_ns: now,
            ctime_ns: now,
            content_generation: 0,
            lock_generation: 0,
            acl_generation: 0,
            ephemeral: false,
            data: Vec::new(),
            children: BTreeMap::new(),
            subdirs: 0,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn attr(&self, instance: u64) -> Attr {
        Attr {
            instance,
            parent: self.parent,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.data.len() as u64,
            atime_ns: self.atime_ns,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            content_generation: self.content_generation,
            lock_generation: self.lock_generation,
            acl_generation: self.acl_generation,
            ephemeral: self.ephemeral,
            children: self.children.len() as u64,
            // A directory: its entry in its parent, its ".", and each subdirectory's "..".
            links: match (self.kind, self.parent) {
                (Kind::Dir, _) => 2 + self.subdirs,
                (_, 0) => 0,
                (_, _) => 1,
            },
        }
    }
}
