//! What the mount lets its kernel cache, and taking it back before the cluster's writes are
//! acknowledged.
//!
//! The mount's own cache (`cache.rs`) answers every request that reaches the mount process;
//! this lets the kernel answer some requests without asking at all. Two things, each granted
//! only from the mount's cache while its registration and lease hold, for at most the time the
//! lease has left:
//! - **attributes** (what `stat` shows, and what the kernel checks permissions against), in
//!   GETATTR answers only. The kernel has the inode then, so taking them back
//!   (`inval_inode` with a negative offset: attributes only) reaches them, and the kernel's
//!   attribute version drops an answer that crosses a taking back. Taking attributes back
//!   takes no kernel lock, so it is safe from any thread at any time: the cache task does it
//!   for every node an event names before it acknowledges the event.
//! - **directory names** (positive entries of directories), in LOOKUP answers, with their
//!   attributes not cached. Directories never move (a rename of a directory is refused), so
//!   such an entry goes stale only when its directory is deleted. Then every use of the entry
//!   needs the directory's attributes, which were taken back, and asking for them answers
//!   ESTALE ([`KernelCache::stale`]): the kernel walks the path again, asking for every name.
//!   So no entry needs `inval_entry`, which locks the parent directory in the kernel and
//!   deadlocks against a create in that directory that waits for this very acknowledgement.
//!
//! Names of files are not cached by the kernel (a rename by another host would leave the old
//! name showing the file), nor names found missing, nor contents (files keep FOPEN_DIRECT_IO).
//!
//! A grant ends by itself when the lease could have lapsed, so a mount frozen past its lease
//! lets its kernel serve nothing from before: the kernel asks, and the frozen mount does not
//! answer. A grant whose answer reached the kernel late (the mount paused between deciding it
//! and sending it) is taken back at once ([`KernelCache::sent`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most inodes with live grants of each kind; past it, nothing more is granted until some
/// expire.
pub const MAX_GRANTS: usize = 100_000;

/// An answer sent later than this after its grant was decided is taken back.
const SLACK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Grants {
    /// Inode -> until when the kernel may hold its attributes.
    attrs: HashMap<u64, Instant>,
    /// Directory inode -> until when the kernel may hold a name for it.
    dirs: HashMap<u64, Instant>,
}

/// Grants to the kernel and their taking back; grants nothing until [`KernelCache::attach`].
#[derive(Default)]
pub struct KernelCache {
    notifier: OnceLock<fuser::Notifier>,
    grants: Mutex<Grants>,
}

/// A grant decided for an answer: send it, then call [`KernelCache::sent`].
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub ttl: Duration,
    ino: u64,
    decided: Instant,
}

/// The TTL of a grant, zero for none.
pub fn ttl(grant: Option<Grant>) -> Duration {
    grant.map_or(Duration::ZERO, |g| g.ttl)
}

/// Records `ino` in `map` until `until`, making room by forgetting expired grants; `false`
/// if there is no room.
fn record(map: &mut HashMap<u64, Instant>, ino: u64, until: Instant, now: Instant) -> bool {
    if map.len() >= MAX_GRANTS && !map.contains_key(&ino) {
        map.retain(|_, end| *end > now);
        if map.len() >= MAX_GRANTS {
            return false;
        }
    }
    let end = map.entry(ino).or_insert(until);
    *end = (*end).max(until);
    true
}

impl KernelCache {
    /// Lets grants be taken back through `notifier`, and so lets them be made.
    pub fn attach(&self, notifier: fuser::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    fn grant(&self, ino: u64, left: Duration, dir: bool) -> Option<Grant> {
        self.notifier.get()?;
        if left <= SLACK {
            return None;
        }
        let now = Instant::now();
        let until = now + left + SLACK;
        let mut g = self.grants.lock().expect("poisoned");
        let map = if dir { &mut g.dirs } else { &mut g.attrs };
        record(map, ino, until, now).then_some(Grant {
            ttl: left,
            ino,
            decided: now,
        })
    }

    /// How long the kernel may keep `ino`'s attributes, served from the cache with `left` of
    /// the lease to go (zero: not at all).
    pub fn attrs(&self, ino: u64, left: Duration) -> Option<Grant> {
        self.grant(ino, left, false)
    }

    /// How long the kernel may keep a name of directory `ino` (its attributes: not at all).
    pub fn dir_entry(&self, ino: u64, left: Duration) -> Option<Grant> {
        self.grant(ino, left, true)
    }

    /// Call once the answer carrying `grant` is sent: if it left late, the attributes are
    /// taken back (a late directory entry needs nothing: see the module docs).
    pub fn sent(&self, grant: Option<Grant>) {
        if let Some(g) = grant {
            if g.decided.elapsed() > SLACK {
                self.take_back(g.ino);
            }
        }
    }

    /// Whether a "no such node" for `ino` must be ESTALE: the kernel may still hold a name of
    /// it as a directory, and should look the path up again.
    pub fn stale(&self, ino: u64) -> bool {
        let g = self.grants.lock().expect("poisoned");
        g.dirs.get(&ino).is_some_and(|end| *end > Instant::now())
    }

    /// Takes back what the kernel may hold of `ino`'s attributes. Takes no kernel lock.
    pub fn take_back(&self, ino: u64) {
        let live = {
            let mut g = self.grants.lock().expect("poisoned");
            g.attrs.remove(&ino).is_some_and(|end| end > Instant::now())
        };
        if live {
            self.inval(ino);
        }
    }

    /// Takes back every attribute grant still running (after the cache missed events).
    pub fn take_back_all(&self) {
        let now = Instant::now();
        let live: Vec<u64> = {
            let mut g = self.grants.lock().expect("poisoned");
            let live = g
                .attrs
                .iter()
                .filter(|(_, end)| **end > now)
                .map(|(ino, _)| *ino)
                .collect();
            g.attrs.clear();
            live
        };
        for ino in live {
            self.inval(ino);
        }
    }

    fn inval(&self, ino: u64) {
        let Some(n) = self.notifier.get() else { return };
        // ENOENT: the kernel has forgotten the inode, and with it the attributes.
        if let Err(e) = n.inval_inode(fuser::INodeNo(ino), -1, 0) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::warn!("taking back the kernel's attributes of inode {ino}: {e}");
            }
        }
    }
}
