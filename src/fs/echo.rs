//! Other hosts' creations and deletions, replayed to this host's kernel so that inotify on the
//! mount reports them (`inotifywait -e create,delete` on a directory).
//!
//! The kernel reports to inotify only what passes through it, and FUSE has no notification
//! that reports a creation (nor, for a name the kernel no longer holds, a deletion: with zero
//! entry TTLs it drops names as soon as they are unused). So the mount replays them: a
//! thread of the mount process creates the name through the mount itself (`open(O_CREAT)`,
//! `mkdir`), or removes it (`unlink`, `rmdir`), and the mount answers that one thread's
//! requests for that name from what the event says, without asking the cluster: a lookup
//! finds the name missing (a creation) or present (a deletion), and the create, mkdir,
//! unlink or rmdir succeeds. The kernel then reports IN_CREATE or IN_DELETE to inotify, as
//! for a local change; the cluster sees nothing.
//!
//! Replays are asked for with `-o inotify`: one holds the mount for a moment, and an unmount
//! at that instant finds the mount busy.
//!
//! Only changes made by other sessions are replayed (this host's own went through its kernel
//! already). A rename elsewhere shows as a deletion and a creation, not as IN_MOVED_*;
//! contents and attributes changed elsewhere are not reported (IN_MODIFY, IN_ATTRIB): no
//! replay can make them without changing them. Replays run in order on a thread of their
//! own, never in a request handler: the replay's own requests must be answered while it
//! waits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use super::backend::{FileAttr, NodeKind};
use crate::proto::{self, WatchEvent_Change as Change};

/// What a replayed name is being replayed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Created elsewhere: a lookup finds it missing, a create or mkdir succeeds. It answers
    /// with the node's attributes, or, if it is gone again already, with a stand-in made from
    /// the event (its number and kind): the creation is still reported, and the replay of its
    /// deletion follows.
    Create { instance: u64, dir: bool },
    /// Deleted elsewhere: a lookup finds this node, an unlink or rmdir succeeds.
    Delete { instance: u64, dir: bool },
}

/// Names being replayed: (directory, name) -> the thread that replays it, and how.
#[derive(Debug, Default)]
pub struct Echoes {
    replaying: Mutex<HashMap<(u64, String), (u32, Replay)>>,
}

impl Echoes {
    /// How a request about `name` in `dir` made by thread `tid` is answered, if it is a
    /// replay's.
    pub fn replay(&self, dir: u64, name: &str, tid: u32) -> Option<Replay> {
        self.replaying
            .lock()
            .expect("poisoned")
            .get(&(dir, name.to_string()))
            .filter(|(t, _)| *t == tid)
            .map(|(_, r)| *r)
    }

    fn begin(&self, dir: u64, name: &str, tid: u32, how: Replay) {
        let key = (dir, name.to_string());
        self.replaying
            .lock()
            .expect("poisoned")
            .insert(key, (tid, how));
    }

    fn end(&self, dir: u64, name: &str) {
        let key = (dir, name.to_string());
        self.replaying.lock().expect("poisoned").remove(&key);
    }
}

/// What a replayed deletion's lookup answers: the node that was deleted, as far as the event
/// tells (its number and kind), owned by root and writable by its owner only.
pub fn stand_in(instance: u64, dir: bool) -> FileAttr {
    FileAttr {
        ino: instance,
        kind: if dir { NodeKind::Dir } else { NodeKind::File },
        mode: if dir { 0o700 } else { 0o600 },
        uid: 0,
        gid: 0,
        size: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        content_generation: 0,
        lock_generation: 0,
        acl_generation: 0,
        ephemeral: false,
        children: 0,
        links: if dir { 2 } else { 1 },
    }
}

/// What replays changes to this host's kernel: where the mount is, and the names being
/// replayed.
pub struct Kernel {
    pub mountpoint: PathBuf,
    pub echoes: Arc<Echoes>,
}

/// Replays events in order on a thread of its own; dropped, the thread ends.
pub struct Replayer {
    tx: mpsc::Sender<proto::WatchEvent>,
}

impl Replayer {
    pub fn start(kernel: Kernel) -> Replayer {
        let (tx, rx) = mpsc::channel::<proto::WatchEvent>();
        std::thread::Builder::new()
            .name("lockfs-echo".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    kernel.replay(&e);
                }
            })
            .expect("spawning the replay thread");
        Replayer { tx }
    }

    /// Replays `e` if it is a creation or a deletion.
    pub fn send(&self, e: &proto::WatchEvent) {
        if matches!(e.change, Change::CREATED | Change::DELETED) {
            let _ = self.tx.send(e.clone());
        }
    }
}

impl Kernel {
    fn replay(&self, e: &proto::WatchEvent) {
        let path = self.mountpoint.join(e.path.trim_start_matches('/'));
        let dir = e.kind == proto::Kind::DIR;
        // SAFETY: gettid(2) has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        let (how, done) = match e.change {
            Change::DELETED => {
                let how = Replay::Delete {
                    instance: e.instance,
                    dir,
                };
                self.echoes.begin(e.parent, &e.name, tid, how);
                let done = if dir {
                    std::fs::remove_dir(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                ("deletion", done)
            }
            Change::CREATED => {
                let how = Replay::Create {
                    instance: e.instance,
                    dir,
                };
                self.echoes.begin(e.parent, &e.name, tid, how);
                let done = if dir {
                    std::fs::create_dir(&path)
                } else {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map(drop)
                };
                ("creation", done)
            }
            _ => return,
        };
        self.echoes.end(e.parent, &e.name);
        if let Err(err) = done {
            log::debug!("replaying the {how} of {}: {err}", e.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_replaying_thread_is_answered_from_the_replay() {
        let echoes = Echoes::default();
        let how = Replay::Create {
            instance: 7,
            dir: false,
        };
        echoes.begin(1, "f", 42, how);
        assert_eq!(echoes.replay(1, "f", 42), Some(how));
        assert_eq!(echoes.replay(1, "f", 43), None);
        assert_eq!(echoes.replay(1, "g", 42), None);
        echoes.end(1, "f");
        assert_eq!(echoes.replay(1, "f", 42), None);
    }
}
