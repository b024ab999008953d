//! The mount: the cluster's tree as a local filesystem, through FUSE (`fuser`).
//!
//! This layer translates and holds no policy. Each kernel request becomes calls of the
//! [`Backend`] trait (the cluster, through the mount's session) and the answer goes back to the
//! kernel as a local filesystem would give it. What it adds is only what the kernel protocol
//! needs and the cluster cannot see:
//!
//! - `filesystem.rs`: the request handlers; a request the cache answers (or that has nothing
//!   to do) is answered at once, every other from a tokio task.
//! - `open_files.rs`: open files; which of them hold a handle in the cluster (a read-only open
//!   of an ordinary file does not until a lock needs one, so reading commits nothing); an
//!   O_TRUNC folded into the first write or the close so that `echo x > f` replaces contents
//!   atomically (DESIGN.md, "Consistency").
//! - `locks.rs`: flock and fcntl locks, blocking waits answered asynchronously.
//! - `lock_style.rs`: telling flock from fcntl, which fuser 0.18 does not pass on.
//! - `signal.rs`: noticing a signal to a process blocked in a lock wait, which fuser 0.18
//!   does not pass on either (it answers FUSE_INTERRUPT with ENOSYS itself).
//! - `owners.rs`: which POSIX lock owners to release at close(2) and at the last close.
//! - `pins.rs`: files open without a cluster handle, and the handles that keep them alive
//!   once they lose their name elsewhere.
//! - `xattr.rs`: the `user.lockfs.*` attributes.
//! - `lock_loss.rs`, `guardian.rs`: who holds each lock, and signalling them when the lock is
//!   lost, from a process of its own that a frozen mount cannot hold up.
//! - `echo.rs`: other hosts' creations and deletions replayed to this host's kernel, for
//!   inotify.
//! - `cache.rs`: the mount's cache of names, attributes, listings and contents, which the
//!   cluster keeps correct (`cluster.rs` registers it and applies the cluster's events).
//! - `kernel.rs`: what of that cache the kernel is let keep (attributes, and names where the
//!   kernel takes name epochs), and taking it back before the cluster's writes are
//!   acknowledged.
//! - `metrics.rs`: the host's metrics (`-o metrics=HOST:PORT`): requests, lock waits, session,
//!   cache.
//! - `attr.rs`, `errors.rs`: attributes and errno as the kernel wants them.
//! - `mount.rs`: mounting and unmounting.
//!
//! Inode numbers are the cluster's instance numbers (root = 1). The kernel keeps only what
//! `kernel.rs` lets it, for no longer than the cache's lease; files are opened with direct I/O,
//! so every read reaches the mount process, whose cache serves only while its lease holds: a
//! frozen mount serves nothing stale, and neither does its kernel.

mod attr;
pub mod backend;
mod cache;
pub mod cluster;
pub mod echo;
mod errors;
mod filesystem;
mod guardian;
mod kernel;
mod lock_loss;
mod lock_style;
mod locks;
pub mod metrics;
pub mod mount;
mod open_files;
mod owners;
mod pins;
mod signal;
mod xattr;

#[cfg(test)]
mod tests;

pub use backend::{
    Backend, BoxFut, DirEntry, Errno, FileAttr, Holder, LockKind, LockReply, LockSpec, LockStyle,
    NodeKind,
};
pub use guardian::run as run_lock_guardian;
pub use lock_loss::{
    children as process_children, parse as parse_lock_loss, Policy as LockLossPolicy,
};
pub use mount::{mount, mount_counting, MountConfig, MountHandle};
