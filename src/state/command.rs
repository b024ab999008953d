//! What commands (`cmd/`) and queries carry, and what comes out of them: targets, the leader's
//! context, outcomes, events, listings. Commands travel through the Raft log, and results are
//! cached for deduplication, so every type here is serializable and compares by value.

use serde::{Deserialize, Serialize};

use super::perm::UserIds;
use super::quota::Quotas;

use super::on_loss::OnLoss;
use super::StateError;

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
    /// A symbolic link: its target is its data.
    Symlink,
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
    /// How long a lock freed by a session's expiry stays ungrantable (Chubby's lock-delay).
    pub lock_delay_ns: u64,
    /// Whose permissions the command is checked against (see `perm`); `None`: not checked.
    pub caller: Option<UserIds>,
    /// The cluster's quotas (see `quota.rs`), for commands that can grow something; `None`:
    /// not checked.
    pub quotas: Option<Quotas>,
}

/// How a rename treats what is at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RenameHow {
    Replace,
    NoReplace,
    Exchange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// flock(2) locks and fcntl (POSIX) locks never conflict with each other, as on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LockStyle {
    Flock,
    Posix,
}

/// A granted lock, as `lockfs locks` and F_GETLK show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub session: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    /// Exclusive; `u64::MAX` is "to the end of the file".
    pub end: u64,
    pub pid: u32,
    /// The host of the holder's session.
    pub host: String,
    pub since_ns: u64,
}

/// A queued request, in queue order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWaiter {
    pub wait: u64,
    pub session: u64,
    pub owner: u64,
    pub style: LockStyle,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
    pub host: String,
    pub since_ns: u64,
}

/// The locks of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub instance: u64,
    pub path: String,
    pub lock_generation: u64,
    pub holders: Vec<LockHolder>,
    pub waiters: Vec<LockWaiter>,
    /// Nothing is granted before this time; 0 when no lock-delay is pending.
    pub delay_until_ns: u64,
    /// How many exclusive flock holders the node admits at once (`semaphore.rs`).
    pub max_holders: u32,
    /// What a mount does to the holders when it loses the lock (`on_loss.rs`).
    pub on_loss: Option<OnLoss>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockResult {
    /// `generation` is the node's lock generation after the grant (the fencing token).
    Granted { generation: u64 },
    /// `conflict` is the first conflicting holder; `None` when only queued waiters or a
    /// lock-delay stand in the way.
    WouldBlock { conflict: Option<LockHolder> },
    /// The request waits; an [`Event::Granted`] or [`Event::WaitFailed`] with this id follows.
    Queued { wait: u64 },
    /// Granted on a node with an `on_loss` setting (`on_loss.rs`), which the holder's mount
    /// enforces.
    GrantedOnLoss { generation: u64, on_loss: OnLoss },
}

impl LockResult {
    /// The generation and `on_loss` setting of a grant.
    pub fn granted(&self) -> Option<(u64, Option<OnLoss>)> {
        match *self {
            LockResult::Granted { generation } => Some((generation, None)),
            LockResult::GrantedOnLoss {
                generation,
                on_loss,
            } => Some((generation, Some(on_loss))),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: u64,
    pub ttl_ms: u64,
    pub host: String,
    pub pid: u32,
    pub name: String,
    /// Open handles.
    pub handles: u64,
    pub created_ns: u64,
    /// Who opened it (the certified identity; empty on an insecure cluster).
    pub owner: String,
    /// Locks it holds (each range of a POSIX lock counts once).
    pub locks: u64,
}

/// Identifies a client request for deduplication (Raft thesis 6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub session: u64,
    pub seq: u64,
    /// Every request of this session below this number has its answer: the client never
    /// retries them, so their cached results may go.
    pub first_unacked: u64,
}

/// What applying told someone other than the caller; see [`crate::state::StateMachine::take_events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A queued wait was granted (by the command that freed the lock, or after a lock-delay).
    Granted {
        session: u64,
        wait: u64,
        instance: u64,
        generation: u64,
        /// The node's `on_loss` setting (`on_loss.rs`).
        on_loss: Option<OnLoss>,
    },
    /// A queued wait can never be granted (its node was deleted, its handle closed).
    WaitFailed {
        session: u64,
        wait: u64,
        error: StateError,
    },
    /// A session ended (closed or expired): the server tells that client.
    SessionEnded { session: u64, expired: bool },
    /// An administrator released a lock the session held (`Command::ReleaseLocks`): its
    /// host treats it as lost (the file it was held through fails, its holders may be
    /// signalled).
    LockRevoked {
        session: u64,
        instance: u64,
        handle: u64,
        owner: u64,
        style: LockStyle,
    },
}

/// What happened to a node, as watches report it (see [`NodeEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeChange {
    /// The node appeared at its path (created, or renamed to it).
    Created,
    /// The node left its path (deleted, or renamed away from it).
    Deleted,
    /// A file's contents changed: its content generation and size after the change.
    Modified { generation: u64, size: u64 },
    /// Mode, owner, times or the ephemeral flag changed.
    Attrib,
    /// A lock was granted: to whom, the node's lock generation after it, and how many locks
    /// the node has then.
    Locked {
        holder: LockHolder,
        generation: u64,
        holders: u32,
    },
    /// A lock was released (unlocked, closed, its session ended, its node deleted), with
    /// the number of locks left.
    Unlocked {
        holder: LockHolder,
        generation: u64,
        holders: u32,
    },
}

/// A change to one node, in commit order: every replica produces the same sequence from the
/// same log. `path` is where the node is (or, for `Deleted`, was) when the change applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// The log index of the command that made the change.
    pub index: u64,
    pub path: String,
    pub instance: u64,
    /// The directory the node is (or was) in, and its name there ("" for the root).
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    /// The session whose request made the change; 0 for the leader's own commands (an
    /// expiry, a wake-up) and requests outside a session.
    pub by: u64,
    pub change: NodeChange,
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
    /// F_GETLK: the first holder that would conflict with this request.
    GetLock {
        session: u64,
        handle: u64,
        owner: u64,
        style: LockStyle,
        kind: LockKind,
        start: u64,
        end: u64,
    },
    /// The nodes with holders or waiters, by instance number, one page at a time: those above
    /// `after` (0: from the start), as many as fit in `limit` (see [`MAX_PAGE`]).
    Locks {
        after: u64,
        limit: u32,
    },
    /// The live sessions, by id, one page at a time: ids above `after`, at most `limit`.
    Sessions {
        after: u64,
        limit: u32,
    },
}

/// The most a listing page holds (a larger `limit` is lowered to it, and 0 means it). A
/// session counts 1; a node's locks count 1 plus one per holder and waiter, and a page holds
/// at least one node whatever its size, so that a page stays far below the frame limit.
pub const MAX_PAGE: u32 = 1000;

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
    /// st_nlink: a file's names (`links.rs`; 0 for an orphan, `orphan.rs`), a directory's 2
    /// and one per subdirectory.
    pub links: u64,
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
        #[serde(with = "super::record::file_bytes")]
        data: Vec<u8>,
    },
    /// Sorted by name; no "." or "..".
    Entries(Vec<DirEntry>),
    Done,
    /// A new session: its id, and the secret its requests must carry (told to its opener
    /// only; never listed).
    Session {
        id: u64,
        secret: u128,
    },
    Opened {
        handle: u64,
        attr: Attr,
        /// When the request created the file: the creation's log index and its directory's
        /// attributes right after it. Filled by the server for its answer, never by the
        /// state machine, and never stored (the answers a session may be given again keep
        /// their stored form).
        #[serde(skip)]
        created_in: Option<(u64, Attr)>,
    },
    Lock(LockResult),
    Cancelled {
        was_granted: bool,
    },
    LockProbe(Option<LockHolder>),
    /// A page of [`Query::Locks`]; `next`: more remain, ask again with `after: next`.
    Locks {
        locks: Vec<LockInfo>,
        next: Option<u64>,
    },
    /// A page of [`Query::Sessions`]; `next` as for `Locks`.
    Sessions {
        sessions: Vec<SessionInfo>,
        next: Option<u64>,
    },
    /// The answer to a `Create` that made the file: its attributes, and the creation's log
    /// index with its directory's attributes right after it. Given by the server for its
    /// answer only (the state machine answers `Attr`, and stores that), never stored. Last,
    /// so that the stored answers' encoding of every other variant stays as it was.
    #[serde(skip)]
    Made {
        attr: Attr,
        created_in: (u64, Attr),
    },
}
