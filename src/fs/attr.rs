//! Attributes as the kernel sees them, and how long it may believe them.
//!
//! Other hosts change the tree at any moment and nothing tells this kernel yet, so every
//! entry and attribute is valid for zero seconds: each `stat`, path walk and `open` asks the
//! cluster again. (Real caching needs invalidation pushed by the servers; it comes later.)

use std::time::{Duration, UNIX_EPOCH};

use super::backend::{FileAttr, NodeKind};

/// How long the kernel may cache entries and attributes.
pub const TTL: Duration = Duration::ZERO;

/// Block size reported by `stat` and `statfs`.
pub const BLOCK_SIZE: u32 = 4096;

pub fn file_type(kind: NodeKind) -> fuser::FileType {
    match kind {
        NodeKind::Dir => fuser::FileType::Directory,
        NodeKind::File => fuser::FileType::RegularFile,
        NodeKind::Symlink => fuser::FileType::Symlink,
    }
}

/// The kernel's view of a node; its link count is the cluster's (a file's names, none once it
/// lost the last while open; a directory's 2 and one per subdirectory).
pub fn to_kernel(attr: &FileAttr) -> fuser::FileAttr {
    let time = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    fuser::FileAttr {
        ino: fuser::INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: time(attr.atime_ns),
        mtime: time(attr.mtime_ns),
        ctime: time(attr.ctime_ns),
        crtime: time(attr.ctime_ns),
        kind: file_type(attr.kind),
        perm: (attr.mode & 0o7777) as u16,
        nlink: u32::try_from(attr.links).unwrap_or(u32::MAX),
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}
