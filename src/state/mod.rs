//! The deterministic state machine of the replicated file tree.
//!
//! Every server applies the committed Raft log to its own [`StateMachine`]. Replicas agree only
//! if applying is a pure function: the same commands in the same order must give the same state
//! and the same outputs on every node. So nothing here reads a clock, draws a random number,
//! does I/O or iterates a hash map. Time comes from the leader inside the command's
//! [`ApplyCtx`], and the state keeps its own monotonic clock (`max` of what it has seen) so a
//! leader with a clock behind its predecessor's never moves mtimes backwards.
//!
//! A command either applies completely or is refused with a [`StateError`] and changes nothing:
//! each command checks everything before its first mutation. A refusal is an ordinary outcome
//! replicated like any other (every replica refuses it the same way), not a fault.
//!
//! Persistence is by records. After applying, the caller takes the changed records with
//! [`StateMachine::take_changes`] and writes them in one batch together with the applied index,
//! so a crash never applies a command twice or skips one. On start it rebuilds the state with
//! [`StateMachine::from_records`]. A snapshot for Raft is the same records, streamed
//! from the store and given back to [`StateMachine::from_records`]; [`StateMachine::snapshot`]
//! and [`StateMachine::restore`] hold them in one blob (a snapshot message may carry its state
//! inline that way). The layout is in `record.rs`.
//!
//! Semantics follow a local Linux filesystem with the limits of DESIGN.md section 3: directories,
//! small files and symbolic links only; files and directories are renamed atomically (rename(2)
//! and renameat2(2)); a file may have several names (`links.rs`); a file that loses its last
//! name while open lives on until its last close (`orphan.rs`); instance numbers are never
//! reused. Two rules that Linux does not decide:
//! - `SetAttr` bumps the acl generation once whenever mode, uid or gid is given, even if the
//!   value is the same, and always sets ctime.
//! - A file is ephemeral when it is created in a directory marked ephemeral; it keeps that flag
//!   when renamed, and marking or unmarking a directory does not change existing files.
//!
//! On top of the tree (DESIGN.md section 3): sessions and their open handles (`session.rs`),
//! flock and POSIX locks with FIFO queues, lock-delay and fencing generations (`lock.rs` for
//! the table, `locking.rs` for the commands), ephemeral files that live exactly as long as a
//! handle holds them, and at-most-once application of client requests (`dedup.rs`). Besides
//! its outcome, applying a command may tell other clients something (a queued lock granted, a
//! wait failed, a session ended): the caller collects these with [`StateMachine::take_events`]
//! after each apply and delivers them once the command is committed and applied. Every change
//! to a node (created, deleted, modified, attributes, a lock granted or released) is also
//! reported, with its log index and path, to [`StateMachine::take_node_events`], for watches.
//!
//! Quotas (`quota.rs`) bound what the state may hold: sessions, handles, nodes, bytes and lock
//! waiters. The leader stamps them into each command that can grow something; a command past a
//! quota is refused like any other.

pub mod cmd;
mod command;
mod dedup;
mod error;
mod links;
mod lock;
mod locking;
mod node;
mod on_loss;
mod orphan;
mod path;
mod perm;
mod persist;
mod quota;
mod record;
mod semaphore;
mod session;
mod tree;

#[cfg(test)]
mod tests;

pub use cmd::{Command, CreateSpec};
pub use command::{
    ApplyCtx, Attr, DirEntry, Event, Kind, LockHolder, LockInfo, LockKind, LockResult, LockStyle,
    LockWaiter, NodeChange, NodeEvent, Outcome, Query, RequestId, SessionInfo, Target, MAX_PAGE,
};
pub use dedup::MAX_CACHED_RESULTS;
pub use error::StateError;
pub use links::MAX_LINKS;
pub use locking::{MAX_GRANTED_MEMORY, MAX_LOCKS_PER_NODE};
pub use on_loss::OnLoss;
pub use path::{normalize, parent_of, split_path, validate_name, MAX_NAME_LEN};
pub use perm::{UserIds, MAX_GROUPS};
pub use quota::{Quotas, Stats};
pub use semaphore::MAX_HOLDERS;
pub use tree::{Change, SessionAccess, StateMachine, MAX_SYMLINK, ROOT};
