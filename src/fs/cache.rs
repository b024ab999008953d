//! The mount's cache of the tree (Chubby's client cache): attributes, names looked up (and
//! names found missing), directory listings and whole file contents, kept correct by the
//! cluster.
//!
//! The mount's session is opened to cache and registers its cache with the leader (a watch of
//! "/" with `cache`); the leader answers no write that changes something before this mount
//! dropped it (see `crate::server::cache`). So a read served from here after a write returned
//! anywhere sees that write, as a read from the cluster would. What this module guarantees:
//! - It serves only under a [`Validity`]: the session that registered the cache, on the
//!   connection it registered through, while the session's lease holds. Anything else (a
//!   lapsed lease, a new connection, a new session) and it serves nothing; the caller then
//!   [`Cache::flush`]es before the cache is registered again, because events may have been
//!   missed meanwhile.
//! - An answer read from the cluster is kept only if nothing was dropped since the read was
//!   sent ([`Ticket`]): a read that raced with a change never puts old data back.
//! - The leader may tell it of a write of a file before the write commits (a PENDING notice,
//!   [`Cache::notice`]): it drops what it holds of the file, and keeps nothing of the file's
//!   attributes or contents read from the cluster until it hears an event at or past the
//!   notice's index. Only then does it acknowledge the notice, and the leader may answer the
//!   write as soon as it applies: a read kept meanwhile could show the file from before it.
//! - The attributes a write of this mount answers with are kept only if exactly one change of
//!   the file (an event or a notice; those of one index count once) was heard while the write
//!   was in flight ([`WriteTicket::keep`]): that change is the write's own, so nothing changed
//!   the file after it. The event of that very write, if it comes after the answer, leaves
//!   them kept.
//! - The attributes and name of a file this mount created are kept only if the creation made
//!   it (it was exclusive) and exactly one change of it was heard while the creation was in
//!   flight ([`CreateTicket::keep`]): that change is the creation itself.
//! - A directory's listing, once kept, follows the names made and removed in it, heard as
//!   events, instead of being dropped by them (`State::edit_listing`); a name absent from it
//!   is answered as missing. A lookup that finds a name missing in a small directory reads
//!   its listing too, so the next new names there cost the cluster nothing to look up.
//! - It holds at most [`MAX_ITEMS`] entries and [`MAX_BYTES`] bytes of contents; past either it
//!   starts over empty.
//! - Lock state (holders, lock generation) is never served from here: it is always asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::backend::{DirEntry, FileAttr, NodeKind};
use crate::proto::{self, WatchEvent_Change as Change};

/// Most attributes, names, listings and contents kept at once.
pub const MAX_ITEMS: usize = 100_000;
/// Most bytes of file contents kept at once.
pub const MAX_BYTES: usize = 64 << 20;

/// Under what the cache serves: (session id, connection epoch) of its registration, and the
/// session's count of lease gaps (see `Session::lease_holds`).
pub type Validity = (u64, u64, u64);

/// Taken before a read from the cluster; the answer is kept only if the cache dropped
/// nothing since (and is still valid under the same registration).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    valid: Validity,
}

/// Taken before this mount sends a write of a file (see [`WriteTicket::keep`]). While it
/// lives, the cache notes the changes it hears of the file.
pub struct WriteTicket<'a> {
    cache: &'a Cache,
    ino: u64,
    valid: Validity,
    clears: u64,
    /// How many of the file's heard changes were heard before this ticket.
    start: usize,
}

impl WriteTicket<'_> {
    /// Keeps the attributes the write answered with if they are the file's latest: the cache
    /// is still valid under the ticket's registration and did not start over, it heard
    /// exactly one change of the file since the ticket was taken (an event or a notice; those
    /// of one log index count once), and no notice of a later one.
    ///
    /// Why that suffices: the leader answers a write only once this cache acknowledged the
    /// write's event or its notice (its registration covers the whole tree, see
    /// `crate::server::cache`), and every write of a named file is heard as a change of it.
    /// So the write's own change was heard before its answer came; if it is the only one, no
    /// later change of the file was, and none that returned without this cache hearing it.
    /// The attributes are kept as of that change's index: its event, if it comes later,
    /// does not drop them ([`Cache::apply`]).
    pub fn keep(&self, attr: &FileAttr) {
        let mut s = self.cache.lock();
        if nameless(attr) || attr.ino != self.ino {
            return;
        }
        if s.valid != Some(self.valid) || s.clears != self.clears {
            return;
        }
        let own = match s.written.get(&self.ino).map(|w| w.heard.get(self.start..)) {
            Some(Some(&[index])) if index != LOST => index,
            _ => return,
        };
        if s.pending_all != 0 || s.pending.get(&self.ino).is_some_and(|p| *p > own) {
            return;
        }
        if s.items() >= MAX_ITEMS {
            s.clear();
            return;
        }
        s.attrs.insert(attr.ino, attr.clone());
        s.written_at.insert(attr.ino, own);
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let mut s = self.cache.lock();
        if let Some(w) = s.written.get_mut(&self.ino) {
            w.tickets -= 1;
            if w.tickets == 0 {
                s.written.remove(&self.ino);
            }
        }
    }
}

/// Taken before this mount sends the exclusive creation of a file (see
/// [`CreateTicket::keep`]). While it lives, the cache notes which nodes the changes it hears
/// name, since the new file's instance is known only from the answer.
pub struct CreateTicket<'a> {
    cache: &'a Cache,
    id: u64,
    valid: Validity,
    clears: u64,
}

impl CreateTicket<'_> {
    /// Keeps the attributes and the name (`name` in `dir`) that an exclusive creation
    /// answered with, if they are the new file's latest: the cache is still valid under the
    /// ticket's registration and did not start over, it heard every change since the ticket
    /// was taken (no resync, no more than [`MAX_HEARD`]), and exactly one of them named the
    /// new file.
    ///
    /// Why that suffices: the creation was exclusive, so the file did not exist before it and
    /// no earlier change named it. The leader answers a creation only once this cache
    /// acknowledged it (its registration covers the whole tree, see `crate::server::cache`),
    /// so the creation was heard before its answer came; if it is the only change heard of
    /// the file, no later one was. A later change of what is at `name` (a removal, a rename
    /// away or over it) names the file too, so the name is as fresh as the attributes.
    ///
    /// Says whether it kept them: then nothing but the creation was heard of the file so far.
    pub fn keep(&self, dir: u64, name: &str, attr: &FileAttr) -> bool {
        let mut s = self.cache.lock();
        if nameless(attr) || attr.kind != NodeKind::File {
            return false;
        }
        if s.valid != Some(self.valid) || s.clears != self.clears {
            return false;
        }
        let Some(heard) = s.creating.get(&self.id) else {
            return false;
        };
        if heard.lost {
            return false;
        }
        let mut indexes: Vec<u64> = heard
            .named
            .iter()
            .filter(|c| c.instance == attr.ino)
            .map(|c| c.index)
            .collect();
        indexes.dedup();
        if indexes.len() != 1 {
            return false;
        }
        if !s.settled(attr.ino) {
            return false;
        }
        if s.items() + 2 > MAX_ITEMS {
            s.clear();
            return false;
        }
        s.attrs.insert(attr.ino, attr.clone());
        s.names.insert((dir, name.to_string()), Some(attr.ino));
        true
    }

    /// Keeps the attributes of the directory the file was created in, as the creation's
    /// answer gave them (`dir`, right after the creation at log index `index`), if nothing
    /// is kept of them and they are its latest: the cache is still valid under the ticket's
    /// registration and did not start over, it heard every change since the ticket was taken,
    /// the creation among them, and no change of the directory after the creation (a name
    /// made or removed in it, or a change of the directory itself).
    ///
    /// Why that suffices: the creation's own change drops the directory's attributes when it
    /// is heard, and the leader answers a read that shows a later change of the directory
    /// only once this cache acknowledged that change (see `crate::server::cache`). So
    /// whatever is kept of the directory by now was read after the creation, and is kept
    /// as it is; and if nothing is, no later state of the directory was shown on this host
    /// without its change having been heard here.
    pub fn keep_dir(&self, index: u64, dir: &FileAttr) {
        let mut s = self.cache.lock();
        if dir.kind != NodeKind::Dir || s.valid != Some(self.valid) || s.clears != self.clears {
            return;
        }
        let Some(heard) = s.creating.get(&self.id) else {
            return;
        };
        let of_dir = |c: &&HeardChange| c.instance == dir.ino || c.dir_of_name == Some(dir.ino);
        let creation = heard
            .named
            .iter()
            .filter(of_dir)
            .any(|c| c.index == index && c.dir_of_name == Some(dir.ino));
        let later = heard.named.iter().filter(of_dir).any(|c| c.index > index);
        if heard.lost || !creation || later || s.attrs.contains_key(&dir.ino) {
            return;
        }
        if s.items() >= MAX_ITEMS {
            s.clear();
            return;
        }
        s.attrs.insert(dir.ino, dir.clone());
    }
}

impl Drop for CreateTicket<'_> {
    fn drop(&mut self) {
        self.cache.lock().creating.remove(&self.id);
    }
}

/// Most entries of a directory whose listing a lookup that finds a name missing reads too.
pub const LISTED_WHEN_MISSING: u64 = 256;

/// Most changes a creation in flight notes; past it, its answer is not kept.
pub const MAX_HEARD: usize = 1024;

/// One change a creation in flight heard.
struct HeardChange {
    /// The node the change was of.
    instance: u64,
    /// For a name made or removed: the directory of the name, whose attributes the change
    /// moved too.
    dir_of_name: Option<u64>,
    index: u64,
}

/// What a creation in flight heard.
#[derive(Default)]
struct Heard {
    named: Vec<HeardChange>,
    /// Changes went unheard (a resync), or more than [`MAX_HEARD`] came.
    lost: bool,
}

/// The changes heard of a file that writes of this mount are in flight on.
#[derive(Default)]
struct Written {
    tickets: usize,
    /// The log indexes of the changes heard (events and notices of one index count once;
    /// [`LOST`] for changes that may have gone unheard).
    heard: Vec<u64>,
}

/// Stands for changes that may have gone unheard (a resync), in [`Written::heard`].
const LOST: u64 = u64::MAX;

/// Most files with notices outstanding that the cache tracks one by one; past it, it keeps
/// nothing read until it has heard an event past every notice ([`State::pending_all`]).
pub const MAX_PENDING: usize = 65536;

#[derive(Default)]
struct State {
    valid: Option<Validity>,
    /// Bumped by everything that drops entries.
    generation: u64,
    /// Bumped each time the cache starts over.
    clears: u64,
    /// Files with write tickets out, by instance.
    written: HashMap<u64, Written>,
    /// Creations in flight, by ticket.
    creating: HashMap<u64, Heard>,
    next_ticket: u64,
    attrs: HashMap<u64, FileAttr>,
    /// Files whose attributes were kept from this mount's own write, and the log index of
    /// that write: an event at or below it does not drop them.
    written_at: HashMap<u64, u64>,
    /// Files told of by a notice (`Cache::notice`), and its highest index: nothing of them
    /// read from the cluster is kept until an event at or past it is heard.
    pending: HashMap<u64, u64>,
    /// Notices past [`MAX_PENDING`]: nothing read is kept until an event at or past this
    /// index is heard (0: none).
    pending_all: u64,
    /// (directory, name) -> the instance there, or `None`: nothing is there.
    names: HashMap<(u64, String), Option<u64>>,
    listings: HashMap<u64, Arc<Vec<DirEntry>>>,
    contents: HashMap<u64, Arc<Vec<u8>>>,
    bytes: usize,
}

impl State {
    fn items(&self) -> usize {
        self.attrs.len() + self.names.len() + self.listings.len() + self.contents.len()
    }

    /// Starts over empty. Outstanding notices stay: they still hold back what is read.
    fn clear(&mut self) {
        self.generation += 1;
        self.clears += 1;
        self.attrs.clear();
        self.written_at.clear();
        self.names.clear();
        self.listings.clear();
        self.contents.clear();
        self.bytes = 0;
    }

    /// Whether an answer read under `ticket` may be kept, making room first.
    fn admits(&mut self, ticket: Ticket, bytes: usize) -> bool {
        if self.valid != Some(ticket.valid) || self.generation != ticket.generation {
            return false;
        }
        if self.items() >= MAX_ITEMS || self.bytes + bytes > MAX_BYTES {
            self.clear();
            return false;
        }
        true
    }

    /// Whether what is read of `ino` from the cluster may be kept: no notice of it is
    /// outstanding.
    fn settled(&self, ino: u64) -> bool {
        self.pending_all == 0 && !self.pending.contains_key(&ino)
    }

    fn drop_attrs(&mut self, ino: u64) {
        self.attrs.remove(&ino);
        self.written_at.remove(&ino);
    }

    /// Drops the name `name` in `dir` and what the directory's entries, times and size were.
    fn drop_name(&mut self, dir: u64, name: &str) -> Option<Option<u64>> {
        self.drop_attrs(dir);
        self.listings.remove(&dir);
        self.names.remove(&(dir, name.to_string()))
    }

    /// Follows a name made or removed in a directory whose listing is kept: the listing is
    /// kept current, not dropped. What makes that sound: a listing is kept only from a read
    /// that no heard change raced with ([`Ticket`]), and the cluster answers a read of a
    /// directory only once this cache acknowledged every change of it up to the state the
    /// read shows (see `crate::server::cache`; notices, which come before that, are of file
    /// contents only, never of names). So the listing is the directory at some index, every
    /// change of it up to there was heard before, and every later one is heard after, in
    /// order.
    fn edit_listing(&mut self, e: &proto::WatchEvent) {
        let Some(list) = self.listings.get_mut(&e.parent) else {
            return;
        };
        let list = Arc::make_mut(list);
        let at = list.binary_search_by(|d| d.name.as_str().cmp(e.name.as_str()));
        match (e.change, at) {
            (Change::CREATED, Ok(i)) => {
                list[i].ino = e.instance;
                list[i].kind = kind_of(e.kind);
            }
            (Change::CREATED, Err(i)) => list.insert(
                i,
                DirEntry {
                    name: e.name.clone(),
                    ino: e.instance,
                    kind: kind_of(e.kind),
                },
            ),
            // The name may already hold what replaced the node (a rename over it).
            (Change::DELETED, Ok(i)) if list[i].ino == e.instance => {
                list.remove(i);
            }
            _ => {}
        }
    }

    fn drop_contents(&mut self, ino: u64) {
        if let Some(data) = self.contents.remove(&ino) {
            self.bytes -= data.len();
        }
    }
}

#[derive(Default)]
pub struct Cache {
    state: Mutex<State>,
    /// Answers served from here, and reads that went to the cluster instead (a ticket is
    /// taken for each), for the mount's metrics.
    pub hits: prometheus_client::metrics::counter::Counter,
    pub misses: prometheus_client::metrics::counter::Counter,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("poisoned")
    }

    /// Serves nothing and forgets everything, until [`Cache::serve_under`].
    pub fn flush(&self) {
        let mut s = self.lock();
        s.valid = None;
        s.clear();
    }

    /// Serves (and keeps answers) under `valid`, the cache's new registration. Call it only
    /// once the cache was flushed after the last registration ended.
    pub fn serve_under(&self, valid: Validity) {
        self.lock().valid = Some(valid);
    }

    /// A ticket for a read that may fill the cache; `None` if the cache is not valid under
    /// `now`.
    pub fn ticket(&self, now: Option<Validity>) -> Option<Ticket> {
        self.misses.inc();
        let s = self.lock();
        let valid = now.filter(|v| s.valid == Some(*v))?;
        Some(Ticket {
            generation: s.generation,
            valid,
        })
    }

    /// Runs `f` on the state if the cache serves under `now`.
    fn read<T>(&self, now: Option<Validity>, f: impl FnOnce(&State) -> Option<T>) -> Option<T> {
        let s = self.lock();
        if now.is_none() || s.valid != now {
            return None;
        }
        let found = f(&s);
        if found.is_some() {
            self.hits.inc();
        }
        found
    }

    pub fn attr(&self, now: Option<Validity>, ino: u64) -> Option<FileAttr> {
        self.read(now, |s| s.attrs.get(&ino).cloned())
    }

    /// What is at `name` in `dir`: `Some(None)` if it is known to be missing (looked up so,
    /// or absent from the directory's kept listing).
    pub fn name(&self, now: Option<Validity>, dir: u64, name: &str) -> Option<Option<FileAttr>> {
        self.read(now, |s| match s.names.get(&(dir, name.to_string())) {
            Some(None) => Some(None),
            Some(Some(ino)) => s.attrs.get(ino).cloned().map(Some),
            None => {
                let listed = s.listings.get(&dir)?;
                let missing = listed
                    .binary_search_by(|d| d.name.as_str().cmp(name))
                    .is_err();
                missing.then_some(None)
            }
        })
    }

    /// Whether files made in `dir` need no handle: the cache serves, and keeps the directory's
    /// attributes, which say its files are not ephemeral.
    pub fn makes_plain_files(&self, now: Option<Validity>, dir: u64) -> bool {
        let s = self.lock();
        now.is_some()
            && s.valid == now
            && s.attrs
                .get(&dir)
                .is_some_and(|a| a.kind == NodeKind::Dir && !a.ephemeral)
    }

    /// Whether a lookup that found a name missing in `dir` should also read the directory's
    /// listing, so that the next missing names there are answered here: the cache serves,
    /// keeps no listing of it, and knows it to have at most [`LISTED_WHEN_MISSING`] entries.
    pub fn wants_listing(&self, now: Option<Validity>, dir: u64) -> bool {
        let s = self.lock();
        now.is_some()
            && s.valid == now
            && !s.listings.contains_key(&dir)
            && s.attrs
                .get(&dir)
                .is_some_and(|a| a.kind == NodeKind::Dir && a.children <= LISTED_WHEN_MISSING)
    }

    pub fn listing(&self, now: Option<Validity>, dir: u64) -> Option<Arc<Vec<DirEntry>>> {
        self.read(now, |s| s.listings.get(&dir).cloned())
    }

    pub fn contents(&self, now: Option<Validity>, ino: u64) -> Option<Arc<Vec<u8>>> {
        self.read(now, |s| s.contents.get(&ino).cloned())
    }

    /// Keeps a node's attributes. A file without a name (unlinked while open) is never kept:
    /// no event names its later changes.
    pub fn keep_attr(&self, ticket: Ticket, attr: &FileAttr) {
        let mut s = self.lock();
        if nameless(attr) {
            return;
        }
        if s.settled(attr.ino) && s.admits(ticket, 0) {
            s.attrs.insert(attr.ino, attr.clone());
        }
    }

    /// Keeps what a lookup of `name` in `dir` found (`None`: nothing).
    pub fn keep_name(&self, ticket: Ticket, dir: u64, name: &str, found: Option<&FileAttr>) {
        let mut s = self.lock();
        if s.admits(ticket, 0) {
            s.names
                .insert((dir, name.to_string()), found.map(|a| a.ino));
            if let Some(a) = found.filter(|a| s.settled(a.ino)) {
                s.attrs.insert(a.ino, a.clone());
            }
        }
    }

    pub fn keep_listing(&self, ticket: Ticket, dir: u64, entries: Arc<Vec<DirEntry>>) {
        let mut s = self.lock();
        if s.admits(ticket, 0) {
            s.listings.insert(dir, entries);
        }
    }

    /// Keeps a whole file's contents, with its attributes as read with them.
    pub fn keep_contents(&self, ticket: Ticket, attr: &FileAttr, data: Arc<Vec<u8>>) {
        let mut s = self.lock();
        if nameless(attr) {
            return;
        }
        if s.settled(attr.ino) && s.admits(ticket, data.len()) {
            s.drop_contents(attr.ino);
            s.bytes += data.len();
            s.contents.insert(attr.ino, data);
            s.attrs.insert(attr.ino, attr.clone());
        }
    }

    /// A ticket for a write of `ino` this mount is about to send; `None` if the cache is not
    /// valid under `now`.
    pub fn write_ticket(&self, now: Option<Validity>, ino: u64) -> Option<WriteTicket<'_>> {
        let mut s = self.lock();
        let valid = now.filter(|v| s.valid == Some(*v))?;
        let clears = s.clears;
        let w = s.written.entry(ino).or_default();
        w.tickets += 1;
        Some(WriteTicket {
            cache: self,
            ino,
            valid,
            clears,
            start: w.heard.len(),
        })
    }

    /// A ticket for an exclusive creation this mount is about to send; `None` if the cache is
    /// not valid under `now`.
    pub fn create_ticket(&self, now: Option<Validity>) -> Option<CreateTicket<'_>> {
        let mut s = self.lock();
        let valid = now.filter(|v| s.valid == Some(*v))?;
        s.next_ticket += 1;
        let id = s.next_ticket;
        s.creating.insert(id, Heard::default());
        Some(CreateTicket {
            cache: self,
            id,
            valid,
            clears: s.clears,
        })
    }

    /// Notes the nodes the change `e` names for every creation in flight.
    fn note_creating(s: &mut State, e: &proto::WatchEvent) {
        for heard in s.creating.values_mut() {
            if e.change == Change::RESYNC || heard.named.len() >= MAX_HEARD {
                heard.lost = true;
                heard.named.clear();
            }
            if !heard.lost {
                let names = matches!(e.change, Change::CREATED | Change::DELETED);
                heard.named.push(HeardChange {
                    instance: e.instance,
                    dir_of_name: names.then_some(e.parent),
                    index: e.index,
                });
            }
        }
    }

    /// Notes the change `e` (an event or a notice) for the files with write tickets whose
    /// attributes it drops.
    fn count_written(s: &mut State, e: &proto::WatchEvent) {
        if s.written.is_empty() {
            return;
        }
        let named = [e.instance, e.parent];
        let dirs = matches!(e.change, Change::CREATED | Change::DELETED | Change::RESYNC);
        for (ino, w) in s.written.iter_mut() {
            let index = if e.change == Change::RESYNC {
                LOST
            } else if named[0] == *ino || (dirs && named[1] == *ino) {
                e.index
            } else {
                continue;
            };
            if w.heard.len() >= MAX_HEARD {
                // Too many to tell apart: one LOST stands for all the rest.
                if w.heard.last() != Some(&LOST) {
                    w.heard.push(LOST);
                }
            } else if index == LOST || !w.heard.contains(&index) {
                w.heard.push(index);
            }
        }
    }

    /// Drops what is kept of `name` in `dir` (and the directory's listing and attributes),
    /// for a change of this mount that the cluster refused there. The refusal (EEXIST, ENOENT,
    /// ENOTEMPTY...) can come from a change of another host that is applied but not yet
    /// acknowledged by this cache, whose event may still be on its way: after it, this mount
    /// asks the cluster again rather than contradict the answer it just had.
    pub fn forget_name(&self, dir: u64, name: &str) {
        let mut s = self.lock();
        s.generation += 1;
        if let Some(Some(ino)) = s.drop_name(dir, name) {
            s.drop_attrs(ino);
            s.listings.remove(&ino);
        }
    }

    /// Drops what a notice names (a write of the file `e.instance`, proposed at `e.index`,
    /// not yet committed), and keeps nothing of the file read from the cluster until an event
    /// at or past that index is heard: the leader may answer the write before this cache
    /// hears its event.
    pub fn notice(&self, e: &proto::WatchEvent) {
        let mut s = self.lock();
        Self::count_written(&mut s, e);
        Self::note_creating(&mut s, e);
        s.generation += 1;
        if s.written_at.get(&e.instance).is_none_or(|at| *at < e.index) {
            s.drop_attrs(e.instance);
        }
        s.drop_contents(e.instance);
        if s.pending.len() >= MAX_PENDING && !s.pending.contains_key(&e.instance) {
            let highest = s.pending.values().copied().max().unwrap_or(0);
            s.pending_all = s.pending_all.max(highest).max(e.index);
            s.pending.clear();
        } else {
            let at = s.pending.entry(e.instance).or_default();
            *at = (*at).max(e.index);
        }
    }

    /// Drops what a change in the cluster makes stale. Lock changes change nothing kept here.
    pub fn apply(&self, e: &proto::WatchEvent) {
        if matches!(e.change, Change::LOCKED | Change::UNLOCKED) {
            return;
        }
        let mut s = self.lock();
        Self::count_written(&mut s, e);
        Self::note_creating(&mut s, e);
        s.generation += 1;
        // Every notice at or below this index is followed: its write applied, or never will.
        s.pending.retain(|_, at| *at > e.index);
        if s.pending_all <= e.index {
            s.pending_all = 0;
        }
        // Attributes this mount's own write kept are as of its index: an event of that write,
        // or of an earlier one, is older.
        let newer = e.change != Change::RESYNC
            && s.written_at
                .get(&e.instance)
                .is_some_and(|at| *at >= e.index);
        if !newer {
            s.drop_attrs(e.instance);
        }
        s.drop_contents(e.instance);
        s.listings.remove(&e.instance);
        if e.change == Change::RESYNC {
            s.drop_name(e.parent, &e.name);
        }
        if matches!(e.change, Change::CREATED | Change::DELETED) {
            s.drop_attrs(e.parent);
            s.names.remove(&(e.parent, e.name.clone()));
            s.edit_listing(e);
            if e.change == Change::DELETED {
                // A directory that goes takes what was known to be missing in it.
                let gone = e.instance;
                s.names.retain(|(dir, _), _| *dir != gone);
            }
        }
    }
}

/// The mount's kind of a node the cluster names.
pub(super) fn kind_of(k: proto::Kind) -> NodeKind {
    match k {
        proto::Kind::DIR => NodeKind::Dir,
        proto::Kind::FILE => NodeKind::File,
        proto::Kind::SYMLINK => NodeKind::Symlink,
    }
}

/// A file that lost its last name while open: the cluster reports its changes to no watch.
fn nameless(attr: &FileAttr) -> bool {
    attr.kind == NodeKind::File && attr.links == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Option<Validity> = Some((1, 1, 0));

    fn attr(ino: u64) -> FileAttr {
        FileAttr {
            ino,
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            content_generation: 1,
            lock_generation: 0,
            acl_generation: 0,
            ephemeral: false,
            children: 0,
            links: 1,
        }
    }

    fn event(change: Change, instance: u64, parent: u64, name: &str) -> proto::WatchEvent {
        let mut e = proto::WatchEvent::new();
        e.change = change;
        e.instance = instance;
        e.parent = parent;
        e.name = name.into();
        e
    }

    fn serving() -> Cache {
        let c = Cache::default();
        c.flush();
        c.serve_under((1, 1, 0));
        c
    }

    #[test]
    fn serves_only_under_its_registration() {
        let c = serving();
        let t = c.ticket(V).unwrap();
        c.keep_attr(t, &attr(5));
        assert!(c.attr(V, 5).is_some());
        assert!(c.attr(Some((1, 2, 0)), 5).is_none(), "another connection");
        assert!(c.attr(None, 5).is_none(), "a lapsed lease");
        assert!(c.ticket(Some((2, 1, 0))).is_none(), "another session");
        c.flush();
        c.serve_under((1, 2, 0));
        assert!(c.attr(Some((1, 2, 0)), 5).is_none(), "flushed");
    }

    #[test]
    fn an_answer_that_raced_with_a_change_is_not_kept() {
        let c = serving();
        let t = c.ticket(V).unwrap();
        c.apply(&event(Change::MODIFIED, 5, 1, "f"));
        c.keep_contents(t, &attr(5), Arc::new(b"old".to_vec()));
        assert!(c.contents(V, 5).is_none());
        let t = c.ticket(V).unwrap();
        c.keep_contents(t, &attr(5), Arc::new(b"new".to_vec()));
        assert_eq!(c.contents(V, 5).unwrap().as_slice(), b"new");
        c.apply(&event(Change::MODIFIED, 5, 1, "f"));
        assert!(c.contents(V, 5).is_none());
        assert!(c.attr(V, 5).is_none());
    }

    #[test]
    fn a_refused_change_drops_the_name_and_the_directory() {
        let c = serving();
        let t = c.ticket(V).unwrap();
        c.keep_name(t, 1, "x", None);
        c.keep_name(t, 1, "y", Some(&attr(5)));
        c.keep_listing(t, 1, Arc::new(Vec::new()));
        c.keep_attr(t, &attr(1));
        let stale = c.ticket(V).unwrap();
        c.forget_name(1, "x");
        assert_eq!(c.name(V, 1, "x"), None, "asked of the cluster again");
        assert!(c.listing(V, 1).is_none() && c.attr(V, 1).is_none());
        assert!(c.name(V, 1, "y").is_some(), "other names stay");
        // A read that was in flight may have missed the change: it is not kept.
        c.keep_name(stale, 1, "x", None);
        assert_eq!(c.name(V, 1, "x"), None);
    }

    #[test]
    fn creation_and_deletion_drop_the_name_and_the_directory_s_attributes() {
        let c = serving();
        let t = c.ticket(V).unwrap();
        c.keep_name(t, 1, "f", None);
        c.keep_attr(t, &attr(1));
        assert_eq!(c.name(V, 1, "f"), Some(None), "known missing");
        c.apply(&event(Change::CREATED, 7, 1, "f"));
        assert_eq!(c.name(V, 1, "f"), None);
        assert!(c.attr(V, 1).is_none());
        let t = c.ticket(V).unwrap();
        c.keep_name(t, 1, "f", Some(&attr(7)));
        assert_eq!(c.name(V, 1, "f").unwrap().unwrap().ino, 7);
        // Lock changes keep everything.
        c.apply(&event(Change::LOCKED, 7, 1, "f"));
        assert!(c.name(V, 1, "f").is_some());
        c.apply(&event(Change::DELETED, 7, 1, "f"));
        assert_eq!(c.name(V, 1, "f"), None);
    }

    fn entry(name: &str, ino: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            ino,
            kind: NodeKind::File,
        }
    }

    fn names(c: &Cache, dir: u64) -> Vec<(String, u64)> {
        let listed = c.listing(V, dir).expect("a listing is kept");
        listed.iter().map(|d| (d.name.clone(), d.ino)).collect()
    }

    #[test]
    fn a_kept_listing_follows_names_made_and_removed_and_answers_missing_names() {
        let c = serving();
        let mut d = attr(1);
        d.kind = NodeKind::Dir;
        d.children = LISTED_WHEN_MISSING;
        c.keep_attr(c.ticket(V).unwrap(), &d);
        assert!(c.wants_listing(V, 1));
        assert!(!c.wants_listing(V, 2), "nothing known of directory 2");
        let t = c.ticket(V).unwrap();
        c.keep_listing(t, 1, Arc::new(vec![entry("b", 5), entry("d", 6)]));
        assert!(!c.wants_listing(V, 1));
        // Missing names are answered from the listing; listed ones need their attributes.
        assert_eq!(c.name(V, 1, "a"), Some(None));
        assert_eq!(c.name(V, 1, "b"), None);
        c.apply(&event(Change::CREATED, 7, 1, "c"));
        c.apply(&event(Change::CREATED, 8, 1, "a"));
        assert_eq!(
            names(&c, 1),
            [
                ("a".into(), 8),
                ("b".into(), 5),
                ("c".into(), 7),
                ("d".into(), 6)
            ]
        );
        assert_eq!(c.name(V, 1, "a"), None);
        c.apply(&event(Change::DELETED, 5, 1, "b"));
        assert_eq!(c.name(V, 1, "b"), Some(None));
        // A rename of 6 over "c", its events in either order; a deletion of a node the name
        // no longer holds changes nothing.
        c.apply(&event(Change::CREATED, 6, 1, "c"));
        c.apply(&event(Change::DELETED, 7, 1, "c"));
        c.apply(&event(Change::DELETED, 6, 1, "d"));
        assert_eq!(names(&c, 1), [("a".into(), 8), ("c".into(), 6)]);
        c.apply(&event(Change::DELETED, 8, 1, "a"));
        c.apply(&event(Change::CREATED, 9, 1, "a"));
        assert_eq!(names(&c, 1), [("a".into(), 9), ("c".into(), 6)]);
        // Changes in other directories, and of the directory's attributes, leave it.
        c.apply(&event(Change::CREATED, 10, 2, "a"));
        c.apply(&event(Change::MODIFIED, 6, 1, "c"));
        assert_eq!(names(&c, 1), [("a".into(), 9), ("c".into(), 6)]);
        // A change of the directory itself (a rename, its mode) drops it; so does a refusal
        // in it, which may come from a change not heard yet.
        c.apply(&event(Change::ATTRIB, 1, 0, "dir"));
        assert!(c.listing(V, 1).is_none());
        assert_eq!(c.name(V, 1, "zz"), None);
        c.keep_listing(c.ticket(V).unwrap(), 1, Arc::new(vec![entry("a", 9)]));
        c.forget_name(1, "b");
        assert!(c.listing(V, 1).is_none());
        // A listing read while a change was heard is not kept.
        let t = c.ticket(V).unwrap();
        c.apply(&event(Change::CREATED, 11, 1, "e"));
        c.keep_listing(t, 1, Arc::new(vec![entry("a", 9)]));
        assert!(c.listing(V, 1).is_none());
    }

    fn change_at(index: u64, change: Change, instance: u64, parent: u64) -> proto::WatchEvent {
        let mut e = event(change, instance, parent, "f");
        e.index = index;
        e
    }

    #[test]
    fn a_write_answer_is_kept_when_its_own_change_is_the_only_one_heard() {
        let c = serving();
        let t = c.write_ticket(V, 5).unwrap();
        c.apply(&change_at(10, Change::MODIFIED, 5, 1));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_some());
        drop(t);
        assert!(
            c.lock().written.is_empty(),
            "a ticket stops the counting when it goes"
        );

        // A file with two names is heard twice at one index: still one change.
        let t = c.write_ticket(V, 5).unwrap();
        c.apply(&change_at(11, Change::MODIFIED, 5, 1));
        c.apply(&change_at(11, Change::MODIFIED, 5, 2));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_some());
    }

    #[test]
    fn a_write_answer_is_not_kept_when_the_file_may_have_changed_after_it() {
        let c = serving();
        // Nothing heard: the write's change is still to come.
        let t = c.write_ticket(V, 5).unwrap();
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);

        // Two changes: one of them may be later than the write.
        let t = c.write_ticket(V, 5).unwrap();
        c.apply(&change_at(10, Change::MODIFIED, 5, 1));
        c.apply(&change_at(12, Change::ATTRIB, 5, 1));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);

        // Changes of other files do not count; a change of the file as a parent does.
        let t = c.write_ticket(V, 5).unwrap();
        c.apply(&change_at(13, Change::MODIFIED, 6, 1));
        c.apply(&change_at(14, Change::MODIFIED, 5, 1));
        c.apply(&change_at(15, Change::CREATED, 7, 5));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);

        // Changes may have gone unheard.
        let t = c.write_ticket(V, 5).unwrap();
        c.apply(&change_at(16, Change::RESYNC, 0, 0));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);

        // The cache started over, or serves under another registration.
        let t = c.write_ticket(V, 5).unwrap();
        c.flush();
        c.serve_under((1, 1, 0));
        c.apply(&change_at(17, Change::MODIFIED, 5, 1));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);
        assert!(c.write_ticket(Some((1, 2, 0)), 5).is_none());

        // A file without a name is never kept.
        let t = c.write_ticket(V, 5).unwrap();
        c.apply(&change_at(18, Change::MODIFIED, 5, 1));
        let mut orphan = attr(5);
        orphan.links = 0;
        t.keep(&orphan);
        assert!(c.attr(V, 5).is_none());
    }

    /// The events of a creation at `index` of file `ino` in directory 1, as `f`.
    fn created_at(c: &Cache, index: u64, ino: u64) {
        c.apply(&change_at(index, Change::CREATED, ino, 1));
        c.apply(&change_at(index, Change::ATTRIB, ino, 0));
    }

    #[test]
    fn a_creation_answer_is_kept_when_its_own_change_is_the_only_one_heard() {
        let c = serving();
        let t = c.create_ticket(V).unwrap();
        // Changes of other nodes, before and after, do not count.
        c.apply(&change_at(9, Change::MODIFIED, 6, 1));
        created_at(&c, 10, 5);
        c.apply(&change_at(11, Change::CREATED, 7, 1));
        t.keep(1, "f", &attr(5));
        assert_eq!(c.attr(V, 5), Some(attr(5)));
        assert_eq!(c.name(V, 1, "f"), Some(Some(attr(5))));
        drop(t);
        assert!(
            c.lock().creating.is_empty(),
            "a ticket stops the noting when it goes"
        );
        // A later change drops both as usual.
        c.apply(&change_at(12, Change::DELETED, 5, 1));
        assert_eq!(c.attr(V, 5), None);
        assert_eq!(c.name(V, 1, "f"), None);
    }

    /// Takes a creation ticket, lets `heard` happen, and offers `answer` (file 5, `f` in
    /// directory 1): asserts that nothing of it was kept.
    fn not_kept(c: &Cache, heard: impl FnOnce(&Cache), answer: &FileAttr) {
        let t = c.create_ticket(V).unwrap();
        heard(c);
        t.keep(1, "f", answer);
        assert!(c.attr(V, 5).is_none() && c.name(V, 1, "f").is_none());
    }

    #[test]
    fn a_creation_answer_is_not_kept_when_the_file_may_have_changed_after_it() {
        let c = serving();
        // Nothing heard: the creation is still to come.
        not_kept(&c, |_| {}, &attr(5));
        // Two changes: one of them is later than the creation.
        not_kept(
            &c,
            |c| {
                created_at(c, 10, 5);
                c.apply(&change_at(11, Change::MODIFIED, 5, 1));
            },
            &attr(5),
        );
        // Removed from its directory by a later change (named as the one that went).
        not_kept(
            &c,
            |c| {
                created_at(c, 12, 5);
                c.apply(&change_at(13, Change::DELETED, 5, 1));
            },
            &attr(5),
        );
        // Changes may have gone unheard.
        not_kept(
            &c,
            |c| {
                c.apply(&change_at(14, Change::RESYNC, 0, 0));
                created_at(c, 15, 5);
            },
            &attr(5),
        );
        // More changes came than a creation notes.
        not_kept(
            &c,
            |c| {
                for i in 0..MAX_HEARD as u64 {
                    c.apply(&change_at(100 + i, Change::MODIFIED, 6, 1));
                }
                created_at(c, 100 + MAX_HEARD as u64, 5);
            },
            &attr(5),
        );
        // The cache started over, or serves under another registration.
        not_kept(
            &c,
            |c| {
                c.flush();
                c.serve_under((1, 1, 0));
                created_at(c, 2000, 5);
            },
            &attr(5),
        );
        assert!(c.create_ticket(Some((1, 2, 0))).is_none());
        // Only files, and only files with a name.
        let mut dir = attr(5);
        dir.kind = NodeKind::Dir;
        not_kept(&c, |c| created_at(c, 2001, 5), &dir);
        let mut orphan = attr(5);
        orphan.links = 0;
        not_kept(&c, |c| created_at(c, 2002, 5), &orphan);
        assert!(c.lock().creating.is_empty());
    }

    fn dir_attr(ino: u64, children: u64) -> FileAttr {
        FileAttr {
            kind: NodeKind::Dir,
            children,
            links: 2,
            ..attr(ino)
        }
    }

    /// Takes a creation ticket, lets `heard` happen, and offers the answer's directory
    /// (directory 1 right after a creation at index 10): whether it was kept.
    fn dir_kept(c: &Cache, heard: impl FnOnce(&Cache)) -> bool {
        let t = c.create_ticket(V).unwrap();
        heard(c);
        t.keep_dir(10, &dir_attr(1, 3));
        let kept = c.attr(V, 1) == Some(dir_attr(1, 3));
        drop(t);
        c.lock().attrs.remove(&1);
        kept
    }

    #[test]
    fn a_creation_answer_keeps_its_directory_only_if_no_later_change_of_it_was_heard() {
        let c = serving();
        // The creation heard, with changes of other directories and files around it, and a
        // later write of a file in the directory (which moves nothing of the directory).
        assert!(dir_kept(&c, |c| {
            c.apply(&change_at(9, Change::CREATED, 6, 2));
            created_at(c, 10, 5);
            c.apply(&change_at(11, Change::CREATED, 7, 2));
            c.apply(&change_at(12, Change::MODIFIED, 8, 1));
        }));
        // The creation not heard (yet): nothing says the cache dropped what it held before.
        assert!(!dir_kept(&c, |c| {
            c.apply(&change_at(9, Change::CREATED, 6, 1));
        }));
        // A later name made or removed in the directory, or a later change of the directory
        // itself.
        for later in [
            change_at(11, Change::CREATED, 7, 1),
            change_at(11, Change::DELETED, 5, 1),
            change_at(11, Change::ATTRIB, 1, 0),
            change_at(11, Change::DELETED, 1, 0),
        ] {
            assert!(
                !dir_kept(&c, |c| {
                    created_at(c, 10, 5);
                    c.apply(&later);
                }),
                "kept after {later:?}"
            );
        }
        // Changes may have gone unheard.
        assert!(!dir_kept(&c, |c| {
            created_at(c, 10, 5);
            c.apply(&change_at(11, Change::RESYNC, 0, 0));
        }));
        // The cache started over meanwhile.
        assert!(!dir_kept(&c, |c| {
            created_at(c, 10, 5);
            c.flush();
            c.serve_under((1, 1, 0));
        }));
        // Something kept of the directory since the creation was read after it: it stays.
        let t = c.create_ticket(V).unwrap();
        created_at(&c, 10, 5);
        let ticket = c.ticket(V).unwrap();
        c.keep_attr(ticket, &dir_attr(1, 4));
        t.keep_dir(10, &dir_attr(1, 3));
        assert_eq!(c.attr(V, 1), Some(dir_attr(1, 4)));
        // Only a directory's attributes.
        drop(t);
        c.lock().attrs.remove(&1);
        let t = c.create_ticket(V).unwrap();
        created_at(&c, 10, 5);
        t.keep_dir(10, &attr(1));
        assert_eq!(c.attr(V, 1), None);
    }

    /// A notice that a write of file `ino` was proposed at `index`.
    fn notice_at(index: u64, ino: u64) -> proto::WatchEvent {
        change_at(index, Change::PENDING, ino, 1)
    }

    #[test]
    fn a_notice_drops_the_file_and_holds_back_its_reads_until_an_event_at_or_past_it() {
        let c = serving();
        let t = c.ticket(V).unwrap();
        c.keep_contents(t, &attr(5), Arc::new(b"old".to_vec()));
        c.keep_attr(c.ticket(V).unwrap(), &attr(6));
        // A read under way when the notice comes is not kept either.
        let under_way = c.ticket(V).unwrap();
        c.notice(&notice_at(10, 5));
        assert!(c.attr(V, 5).is_none() && c.contents(V, 5).is_none());
        assert!(c.attr(V, 6).is_some(), "other files stay");
        c.keep_attr(under_way, &attr(5));
        assert!(c.attr(V, 5).is_none());
        // Read after the notice: it may show the file from before the write; not kept.
        c.keep_attr(c.ticket(V).unwrap(), &attr(5));
        let t = c.ticket(V).unwrap();
        c.keep_contents(t, &attr(5), Arc::new(b"old".to_vec()));
        c.keep_name(c.ticket(V).unwrap(), 1, "f", Some(&attr(5)));
        assert!(c.attr(V, 5).is_none() && c.contents(V, 5).is_none());
        assert_eq!(
            c.name(V, 1, "f"),
            None,
            "the name is kept, not the attributes"
        );
        // An earlier event, of anything: still held back.
        c.apply(&change_at(9, Change::MODIFIED, 7, 1));
        c.keep_attr(c.ticket(V).unwrap(), &attr(5));
        assert!(c.attr(V, 5).is_none());
        // An event at the notice's index (the write, or whatever took its place): kept again.
        c.apply(&change_at(10, Change::MODIFIED, 8, 1));
        c.keep_attr(c.ticket(V).unwrap(), &attr(5));
        assert!(c.attr(V, 5).is_some());
        // A full cache starts over, but what it was told of stays held back.
        c.notice(&notice_at(12, 5));
        c.lock().clear();
        c.keep_attr(c.ticket(V).unwrap(), &attr(5));
        assert!(c.attr(V, 5).is_none());
    }

    #[test]
    fn past_its_bound_a_notice_holds_back_every_read() {
        let c = serving();
        for i in 0..MAX_PENDING as u64 {
            c.notice(&notice_at(100 + i, 1000 + i));
        }
        c.keep_attr(c.ticket(V).unwrap(), &attr(5));
        assert!(c.attr(V, 5).is_some(), "within the bound, others are kept");
        c.notice(&notice_at(100_000, 5_000_000));
        assert!(c.lock().pending.is_empty());
        c.keep_attr(c.ticket(V).unwrap(), &attr(6));
        assert!(c.attr(V, 6).is_none());
        c.apply(&change_at(99_999, Change::MODIFIED, 7, 1));
        c.keep_attr(c.ticket(V).unwrap(), &attr(6));
        assert!(c.attr(V, 6).is_none());
        c.apply(&change_at(100_000, Change::MODIFIED, 7, 1));
        c.keep_attr(c.ticket(V).unwrap(), &attr(6));
        assert!(c.attr(V, 6).is_some());
    }

    #[test]
    fn a_write_answer_told_by_its_notice_is_kept_and_outlives_its_own_later_event() {
        let c = serving();
        let t = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(10, 5));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_some());
        drop(t);
        // The write's own event, after the answer: older than what is kept.
        c.apply(&change_at(10, Change::MODIFIED, 5, 1));
        assert!(c.attr(V, 5).is_some());
        // A later one drops it.
        c.apply(&change_at(11, Change::ATTRIB, 5, 1));
        assert!(c.attr(V, 5).is_none());

        // Its event heard too before the answer: one change still.
        let t = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(12, 5));
        c.apply(&change_at(12, Change::MODIFIED, 5, 1));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_some());
        drop(t);
        // A notice of a later write drops it, and holds back the file until its event.
        c.notice(&notice_at(13, 5));
        assert!(c.attr(V, 5).is_none());
        c.apply(&change_at(13, Change::MODIFIED, 5, 1));

        // Another write's notice heard while this one was in flight: either may be the later.
        let t = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(14, 5));
        c.notice(&notice_at(15, 5));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);
        c.apply(&change_at(15, Change::MODIFIED, 5, 1));

        // A notice and an event of different indexes: two changes.
        let t = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(16, 5));
        c.apply(&change_at(17, Change::MODIFIED, 5, 1));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        drop(t);

        // Kept from a write at 18, then the events of changes up to it come late.
        let t = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(18, 5));
        t.keep(&attr(5));
        drop(t);
        c.apply(&change_at(18, Change::MODIFIED, 5, 1));
        assert!(c.attr(V, 5).is_some());
        c.apply(&change_at(19, Change::MODIFIED, 5, 1));
        assert!(c.attr(V, 5).is_none());

        // More changes than a write notes: never kept, for the writes in flight then or
        // after, until every ticket is gone.
        let t = c.write_ticket(V, 5).unwrap();
        for i in 0..MAX_HEARD as u64 + 5 {
            c.apply(&change_at(100 + i, Change::MODIFIED, 5, 1));
        }
        let late = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(5000, 5));
        t.keep(&attr(5));
        late.keep(&attr(5));
        assert!(c.attr(V, 5).is_none());
        assert!(c.lock().written[&5].heard.len() <= MAX_HEARD + 1);
        drop((t, late));
        c.apply(&change_at(5000, Change::MODIFIED, 5, 1));
        let t = c.write_ticket(V, 5).unwrap();
        c.notice(&notice_at(5001, 5));
        t.keep(&attr(5));
        assert!(c.attr(V, 5).is_some());
    }

    #[test]
    fn it_starts_over_when_full() {
        let c = serving();
        let t = c.ticket(V).unwrap();
        c.keep_contents(t, &attr(2), Arc::new(vec![0; MAX_BYTES - 1]));
        assert!(c.contents(V, 2).is_some());
        c.keep_contents(t, &attr(3), Arc::new(vec![0; 2]));
        assert!(c.contents(V, 2).is_none() && c.contents(V, 3).is_none());
    }
}
