//! Files this host has open without a cluster handle, and the handles the mount takes to keep
//! them alive once they lose their name.
//!
//! A read-only open of an ordinary file takes no handle (`open_files.rs`): the cluster cannot
//! see it. When such a file is unlinked or replaced elsewhere, the cluster keeps it, nameless,
//! for a while (`crate::state` orphans): long enough for this mount to hear of it from its
//! cache's events and take one handle on it, before it acknowledges them. That handle (the
//! *keeper*) holds the file until the last of this host's open files on it is released, so its
//! reads and `fstat` go on as POSIX says. A mount that may have missed events (a new
//! registration, a resync) takes keepers on every file pinned here.
//!
//! Pins are counted per (session, inode): an open file belongs to the session it was opened
//! in, and a keeper is taken in that session only.

use std::collections::HashMap;

struct Pin<K> {
    /// Open files on the node, in the session.
    open: usize,
    /// The cluster handle holding the node for them, once it lost its name.
    keeper: Option<K>,
}

/// See the module docs; `K` is how the backend names a keeper. Not synchronized: the backend
/// keeps it behind a mutex.
pub struct Pins<K> {
    pins: HashMap<(u64, u64), Pin<K>>,
}

impl<K> Default for Pins<K> {
    fn default() -> Self {
        Pins {
            pins: HashMap::new(),
        }
    }
}

impl<K> Pins<K> {
    /// One more open file on `ino` without a handle, in `session`.
    pub fn pin(&mut self, session: u64, ino: u64) {
        self.pins
            .entry((session, ino))
            .or_insert(Pin {
                open: 0,
                keeper: None,
            })
            .open += 1;
    }

    /// One open file fewer; when it was the last, the keeper to close, if one was taken.
    pub fn unpin(&mut self, session: u64, ino: u64) -> Option<K> {
        let pin = self.pins.get_mut(&(session, ino))?;
        pin.open -= 1;
        if pin.open > 0 {
            return None;
        }
        self.pins.remove(&(session, ino)).and_then(|p| p.keeper)
    }

    /// Whether `ino` is open here in `session` without a keeper yet.
    pub fn needs_keeper(&self, session: u64, ino: u64) -> bool {
        self.pins
            .get(&(session, ino))
            .is_some_and(|p| p.keeper.is_none())
    }

    /// Every inode open here in `session` without a keeper yet.
    pub fn all_needing_keepers(&self, session: u64) -> Vec<u64> {
        self.pins
            .iter()
            .filter(|((s, _), p)| *s == session && p.keeper.is_none())
            .map(|((_, ino), _)| *ino)
            .collect()
    }

    /// Records `handle` as the keeper of `ino`. `Some(handle)` back when it is not needed (the
    /// files were released meanwhile, or another keeper came first): the caller closes it.
    pub fn kept(&mut self, session: u64, ino: u64, handle: K) -> Option<K> {
        match self.pins.get_mut(&(session, ino)) {
            Some(pin) if pin.keeper.is_none() => {
                pin.keeper = Some(handle);
                None
            }
            _ => Some(handle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keeper_lives_until_the_last_open_file_goes() {
        let mut p = Pins::<u64>::default();
        p.pin(1, 7);
        p.pin(1, 7);
        p.pin(2, 7);
        assert!(p.needs_keeper(1, 7));
        assert!(!p.needs_keeper(1, 8));
        let mut all = p.all_needing_keepers(1);
        all.sort();
        assert_eq!(all, [7]);
        assert_eq!(p.kept(1, 7, 100), None);
        assert!(!p.needs_keeper(1, 7));
        // A second keeper is not needed.
        assert_eq!(p.kept(1, 7, 101), Some(101));
        assert_eq!(p.unpin(1, 7), None);
        assert_eq!(p.unpin(1, 7), Some(100));
        assert!(p.all_needing_keepers(1).is_empty());
        // Released before its keeper came: the keeper goes back.
        assert_eq!(p.kept(1, 7, 102), Some(102));
        assert_eq!(p.unpin(2, 7), None);
        assert_eq!(p.unpin(2, 7), None);
    }
}
