//! Files that lost their last name while they may still be open: POSIX keeps such a file
//! usable (read, write, fstat with no links, locks) until its last close.
//!
//! Unlinking a file, or renaming another file over it, takes its name away. If a handle holds
//! the file, or a mount may hold it without one, it becomes an *orphan*: a node with no name
//! (its parent is 0), reachable by instance number only, with its data and its lock table.
//! Otherwise it is deleted at once, as before.
//!
//! A mount that caches the tree opens read-only files without a handle (no commit for `cat`).
//! The cluster cannot see those opens, so while any caching session is live an unlinked file is
//! kept for a while even without a handle: until twice the longest TTL of the caching sessions,
//! plus a second. A mount learns of the unlink from its cache's events, before it acknowledges
//! them, and opens a handle on every file it holds that way; a mount that misses events
//! (reconnection) does the same for all of them. By the time the orphan is due, each such
//! mount has a handle on it, or lost its lease long ago.
//!
//! An orphan is deleted when no handle holds it and its time has come: at the close or session
//! end that drops its last handle after that time, or at the first command at or after that time
//! (the leader proposes `Wake` then, see [`StateMachine::next_wake_ns`]). Orphans have no path,
//! so their changes are reported to no watch; caches never keep them.

use serde::{Deserialize, Serialize};

use super::tree::StateMachine;
use super::NodeChange;

/// Nanoseconds added to twice the longest caching TTL before an unheld orphan may go.
const ORPHAN_MARGIN_NS: u64 = 1_000_000_000;

/// An orphan's record; its instance number is the key it is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Orphan {
    /// The path the file had when it lost its name: what subtree-limited callers are checked
    /// against and what `lockfs locks` shows.
    pub path: String,
    /// Before this time the orphan stays even without a handle.
    pub keep_until_ns: u64,
}

impl StateMachine {
    /// Whether node `ino` is an orphan.
    pub fn is_orphan(&self, ino: u64) -> bool {
        self.orphans.contains_key(&ino)
    }

    /// Takes the last name of file `ino` away: it becomes an orphan if a handle holds it or a
    /// caching mount may; otherwise it is deleted.
    pub(super) fn unlink_file(&mut self, ino: u64, now: u64) {
        let held = self.holds.contains_key(&ino);
        let longest_ttl_ms = self.caching_sessions().map(|(_, ttl)| ttl).max();
        if !held && longest_ttl_ms.is_none() {
            self.delete_node(ino, now);
            return;
        }
        // Without a caching mount only handles can hold it: it goes at the last close.
        let keep_ns = longest_ttl_ms.map_or(0, |ttl| {
            ttl.saturating_mul(2_000_000)
                .saturating_add(ORPHAN_MARGIN_NS)
        });
        let path = self.path_of(ino);
        self.node_event(ino, NodeChange::Deleted);
        let node = self.node_mut(ino);
        let parent = std::mem::replace(&mut node.parent, 0);
        let name = std::mem::take(&mut node.name);
        node.ctime_ns = now;
        self.dir_mut(parent, now).children.remove(&name);
        let keep_until_ns = now.saturating_add(keep_ns);
        self.orphans.insert(
            ino,
            Orphan {
                path,
                keep_until_ns,
            },
        );
        self.orphan_times.insert((keep_until_ns, ino));
        self.dirty_orphans.insert(ino);
    }

    /// Deletes the orphans whose time has come and that no handle holds. Those still held go at
    /// the close of their last handle.
    pub(super) fn end_orphans(&mut self, now: u64) {
        while let Some(&(until, ino)) = self.orphan_times.first() {
            if until > now {
                break;
            }
            self.orphan_times.remove(&(until, ino));
            if !self.holds.contains_key(&ino) {
                self.destroy_orphan(ino);
            }
        }
    }

    /// Whether orphan `ino`, now held by no handle, is due to go at `now`.
    pub(super) fn orphan_due(&self, ino: u64, now: u64) -> bool {
        self.orphans
            .get(&ino)
            .is_some_and(|o| o.keep_until_ns <= now)
    }

    /// The earliest time an orphan may become due, for the leader's `Wake`.
    pub(super) fn next_orphan_ns(&self) -> Option<u64> {
        self.orphan_times.first().map(|&(until, _)| until)
    }

    /// Removes orphan `ino` for good, with its lock table (its waiters fail).
    pub(super) fn destroy_orphan(&mut self, ino: u64) {
        self.drop_locks(ino);
        let node = self.nodes.remove(&ino).expect("an orphan is a node");
        let orphan = self.orphans.remove(&ino).expect("checked by the caller");
        self.orphan_times.remove(&(orphan.keep_until_ns, ino));
        self.usage.resize(node.data.len(), 0);
        self.dirty_nodes.insert(ino);
        self.dirty_orphans.insert(ino);
    }
}
