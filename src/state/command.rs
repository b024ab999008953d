//! What goes into the state machine and what comes out. Commands travel through the Raft log,
//! so every type here is serializable and compares by value.

use serde::{Deserialize, Serialize};

/// Names a node. Creation commands read a target as (parent directory, last name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// An absolute path such as "/a/b"; "/" is the root.
    Path(String),
    /// A node by instance number (the inode number the mount reports).
    Ino(u64),
    /// The entry `name` in directory `parent`, as FUSE names things.
    Child { parent: u64, name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
}

/// Stamped by the leader when it proposes a command, so every replica applies the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyCtx {
    /// The Raft log index of the command.
    pub index: u64,
    /// The leader's wall clock, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The cluster's file size limit in bytes.
    pub max_file_size: u64,
}

/// A mutation of the tree. Modes keep only the permission bits (`& 0o7777`); the kind is
/// implied by the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Mkdir {
        at: Target,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Returns the existing file's attributes unchanged when `exclusive` is false.
    Create {
        at: Target,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    },
    /// `truncate` folds in an `O_TRUNC` pending since open: clear, then write at `offset`.
    Write {
        target: Target,
        offset: u64,
        data: Vec<u8>,
        truncate: bool,
    },
    /// Creates the file if missing (mode, uid, gid used only then) and replaces its contents.
    Put {
        at: Target,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Truncate {
        target: Target,
        size: u64,
    },
    Unlink {
        at: Target,
    },
    Rmdir {
        at: Target,
    },
    /// Files only; replaces an existing file at `to` atomically.
    Rename {
        from: Target,
        to: Target,
    },
    /// Any of mode, uid, gid given bumps the acl generation once.
    SetAttr {
        target: Target,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    },
    /// Directories only: files created in it from now on are ephemeral.
    SetEphemeral {
        target: Target,
        ephemeral: bool,
    },
}

/// A read-only question about the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Stat(Target),
    /// `len: None` reads to the end; an offset past the end reads nothing.
    Read {
        target: Target,
        offset: u64,
        len: Option<u64>,
    },
    Readdir(Target),
}

/// What `stat` shows about a node, plus Chubby's monotonic numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// Never reused; the inode number.
    pub instance: u64,
    /// The containing directory; the root is its own parent (as "/.." is "/").
    pub parent: u64,
    pub kind: Kind,
    /// Permission bits only (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of data for files, 0 for directories.
    pub size: u64,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub content_generation: u64,
    pub lock_generation: u64,
    pub acl_generation: u64,
    /// For a file: it is ephemeral. For a directory: files created in it will be.
    pub ephemeral: bool,
    /// Number of entries of a directory, 0 for files.
    pub children: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub instance: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Attr(Attr),
    Data {
        attr: Attr,
        data: Vec<u8>,
    },
    /// Sorted by name; no "." or "..".
    Entries(Vec<DirEntry>),
    Done,
}
