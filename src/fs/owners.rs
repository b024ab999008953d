//! When POSIX locks end: the kernel's rules, kept locally.
//!
//! A POSIX lock belongs to a process (its `files_struct`, the kernel's lock owner) and goes
//! when that process closes *any* descriptor of the file. FUSE tells us of each close(2) with a
//! FLUSH carrying the closing process's owner, and expects the filesystem to drop that owner's
//! locks (the kernel skips the unlock it would send itself). Open-file-description locks
//! (F_OFD_SETLK) look like POSIX locks owned by the open file description; they must go when
//! the description is released, which FUSE reports as RELEASE without any owner.
//!
//! So the mount remembers which (node, owner) pairs ever took a POSIX lock here, and through
//! which open files. A FLUSH unlocks only owners in that table (most closes, `cat` for
//! instance, cost no round trip). A RELEASE unlocks the owners that locked through the released
//! file and were not flushed: a process owner that locked through a file has closed it, and so
//! been flushed, before the file can be released, so what is left are descriptor owners.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub struct LockOwners {
    /// (ino, owner) -> the open files (fh) it locked through.
    owners: Mutex<HashMap<(u64, u64), HashSet<u64>>>,
}

impl LockOwners {
    /// Records a POSIX lock request; call it before the request is sent, so that no lock is
    /// ever held that the table does not know of.
    pub fn note(&self, ino: u64, owner: u64, fh: u64) {
        self.owners
            .lock()
            .unwrap()
            .entry((ino, owner))
            .or_default()
            .insert(fh);
    }

    /// A close(2) by `owner`: if it may hold POSIX locks on `ino`, the open files it locked
    /// through (and it is forgotten).
    pub fn take_owner(&self, ino: u64, owner: u64) -> Option<HashSet<u64>> {
        self.owners.lock().unwrap().remove(&(ino, owner))
    }

    /// Whether some owner still here locked `ino` through open file `fh`.
    pub fn holds_through(&self, ino: u64, fh: u64) -> bool {
        self.owners
            .lock()
            .unwrap()
            .iter()
            .any(|((i, _), fhs)| *i == ino && fhs.contains(&fh))
    }

    /// The release of open file `fh`: the owners that locked through it and are still here.
    pub fn take_released(&self, ino: u64, fh: u64) -> Vec<u64> {
        let mut owners = self.owners.lock().unwrap();
        let released: Vec<u64> = owners
            .iter()
            .filter(|((i, _), fhs)| *i == ino && fhs.contains(&fh))
            .map(|((_, owner), _)| *owner)
            .collect();
        for owner in &released {
            owners.remove(&(ino, *owner));
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_forgets_the_owner_and_release_takes_what_is_left() {
        let t = LockOwners::default();
        t.note(5, 100, 1); // a process lock through fh 1
        t.note(5, 200, 2); // an OFD lock through fh 2
        assert_eq!(t.take_owner(5, 999), None);
        assert_eq!(t.take_owner(5, 100), Some(HashSet::from([1])));
        assert_eq!(t.take_owner(5, 100), None);
        assert_eq!(t.take_released(5, 1), Vec::<u64>::new());
        assert_eq!(t.take_released(6, 2), Vec::<u64>::new());
        assert_eq!(t.take_released(5, 2), vec![200]);
        assert_eq!(t.take_released(5, 2), Vec::<u64>::new());
    }
}
