//! Routing of what the state machine reports to the client connections that asked for it:
//! - session events (lock granted, wait failed, session ended) go to the connections
//!   subscribed to their session;
//! - node events (created, deleted, modified, attributes, lock granted or released) go to the
//!   watches whose path covers them.
//!
//! Every node applies the same log, so every node produces the same events in the same order;
//! each pushes them to the connections it holds, in commit order, from its node thread.
//!
//! A node event reaches the caches' registrations (see `cache.rs`) as it is applied (lock
//! changes never do: a cache keeps no lock state), and every other watch only once it is
//! released ([`EventRouter::release_through`]): once no cache
//! can still serve what the change replaced. Until then a watcher that saw the event could
//! read the old state through a mount, as if the change had not happened. The node releases
//! events at a linearizable read's index (see `Node::release_events`); the events held
//! meanwhile are bounded ([`MAX_HELD_EVENTS`]); past the bound they are dropped and every such
//! watch is owed a RESYNC.
//!
//! A cache registered with `early` also hears of a write of a file when it is proposed, before
//! it commits ([`EventRouter::notice`], see `cache.rs`).
//!
//! Session events: a connection subscribes to a session with a KeepAlive (or by opening it). A
//! push that cannot be delivered is dropped: clients re-check what they wait for after
//! reconnecting, so a lost push delays a grant but never loses it.
//!
//! Watches: a watch of path P sees the events of the node at P, of P's direct children, and with
//! `recursive` of everything below P, from the applied index at which it was registered on (see
//! `Node::register_watch`). Bounded: a connection has at most [`MAX_WATCHES_PER_CONNECTION`]
//! watches, a node [`MAX_WATCHES`], and events wait in the connection's bounded queue. When that
//! queue is full the watch's events are dropped, and the watch is owed a RESYNC, sent (with
//! the index up to which events may be missing) as soon as the queue has room: a slow
//! watcher costs the node a flag, never memory. A watch ends with Unwatch, with its
//! connection, or with its session.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::cache::Registration;
use super::convert;
use super::error::errno;
use super::ServerError;
use crate::proto;
use crate::state::{parent_of, Kind, NodeChange, NodeEvent};

pub type FrameSender = mpsc::Sender<proto::ServerFrame>;

/// Most watches one client connection may hold.
pub const MAX_WATCHES_PER_CONNECTION: usize = 1024;
/// Most watches one node holds, all connections together.
pub const MAX_WATCHES: usize = 65536;
/// Longest path a watch may name, in bytes (Linux's PATH_MAX).
pub const MAX_WATCH_PATH: usize = 4096;
/// Most node events a node holds for its watches other than caches while they wait to be
/// released ...
pub const MAX_HELD_EVENTS: usize = 65536;
/// ... and most bytes they may take (paths are up to [`MAX_WATCH_PATH`] long).
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// What holding `event` costs in memory, near enough.
fn held_cost(event: &NodeEvent) -> usize {
    let host = match &event.change {
        NodeChange::Locked { holder, .. } | NodeChange::Unlocked { holder, .. } => {
            holder.host.len()
        }
        _ => 0,
    };
    std::mem::size_of::<NodeEvent>() + event.path.len() + event.name.len() + host
}

/// A watch to register: (connection, id) names it.
pub struct WatchSpec {
    pub conn: u64,
    pub id: u64,
    pub session: u64,
    /// Normalized: "/" or "/a/b", no trailing or repeated slashes.
    pub path: String,
    pub recursive: bool,
    /// The session's cache registration (see `cache.rs`).
    pub cache: bool,
    /// A cache registration that takes PENDING notices ([`EventRouter::notice`]).
    pub early: bool,
    pub tx: FrameSender,
}

struct Watch {
    session: u64,
    path: String,
    recursive: bool,
    /// A cache registration: events reach it as they are applied, not when released.
    cache: bool,
    /// The applied index it was registered at: it sees only events after it.
    from: u64,
    tx: FrameSender,
    /// Events up to this index were dropped; a RESYNC is owed before any other event.
    missed: Option<u64>,
}

impl Watch {
    /// Whether an event at `index` is this watch's when routing to caches (`caches`) or to
    /// the other watches.
    fn takes(&self, index: u64, caches: bool) -> bool {
        self.cache == caches && index > self.from
    }
}

/// (connection, watch id): names a watch.
pub type Key = (u64, u64);

/// By log index: the cache registrations told of the write there before it committed, as
/// (session, registration).
pub type Told = BTreeMap<u64, Vec<(u64, Key)>>;

/// A session's cache registration: its watch, and the highest index it acknowledged.
struct CacheReg {
    key: Key,
    acked: u64,
    /// It takes PENDING notices.
    early: bool,
    /// The highest index of a PENDING notice it acknowledged.
    early_acked: u64,
}

#[derive(Default)]
struct Watches {
    by_key: HashMap<Key, Watch>,
    /// By session.
    caches: HashMap<u64, CacheReg>,
    /// Ordered, so that the watches below a path are one range.
    by_path: BTreeMap<String, BTreeSet<Key>>,
    per_conn: HashMap<u64, usize>,
    /// Keys of watches owed a RESYNC.
    owed: BTreeSet<Key>,
    /// Events applied but not yet released to the watches that are not caches, in commit
    /// order; kept only while such a watch exists.
    held: VecDeque<NodeEvent>,
    /// What `held` costs ([`held_cost`]).
    held_bytes: usize,
    /// Events handed to connections (`metrics.rs`).
    pushed: prometheus_client::metrics::counter::Counter,
}

impl Watches {
    fn remove(&mut self, key: Key) {
        let Some(w) = self.by_key.remove(&key) else {
            return;
        };
        if self.caches.get(&w.session).is_some_and(|c| c.key == key) {
            self.caches.remove(&w.session);
        }
        if let Some(keys) = self.by_path.get_mut(&w.path) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_path.remove(&w.path);
            }
        }
        if let Some(n) = self.per_conn.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&key.0);
            }
        }
        self.owed.remove(&key);
    }

    fn remove_where(&mut self, pred: impl Fn(&Key, &Watch) -> bool) {
        let keys: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(k, w)| pred(k, w))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// The watches of paths strictly below directory `path`.
    fn below(&self, path: &str) -> Vec<Key> {
        let prefix = match path {
            "/" => "/".to_string(),
            p => format!("{p}/"),
        };
        self.by_path
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect()
    }

    /// Owes watch `key` a RESYNC for what it may have missed up to `index`.
    fn owe(&mut self, key: Key, index: u64) {
        if let Some(w) = self.by_key.get_mut(&key) {
            w.missed = Some(w.missed.unwrap_or(0).max(index));
            self.owed.insert(key);
        }
    }

    /// The watches that see an event at `path`: those of the path itself, of its parent, and
    /// the recursive ones of its other ancestors.
    fn covering(&self, path: &str) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .by_path
            .get(path)
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default();
        let mut at = path;
        let mut direct = true;
        while let Some(parent) = parent_of(at) {
            if let Some(ks) = self.by_path.get(parent) {
                keys.extend(ks.iter().filter(|k| direct || self.by_key[*k].recursive));
            }
            direct = false;
            at = parent;
        }
        keys
    }

    /// The watches that are caches (`caches`) or the others that `event` reaches: (those
    /// owed a RESYNC, below a directory that appeared or left; those covering its path).
    fn reached(&self, event: &NodeEvent, caches: bool) -> (Vec<Key>, Vec<Key>) {
        // A cache keeps no lock state, so a lock change is nothing it must drop: sending it
        // would cost the cache an acknowledgement per lock and unlock, and hold nothing up.
        if caches
            && matches!(
                event.change,
                NodeChange::Locked { .. } | NodeChange::Unlocked { .. }
            )
        {
            return (Vec::new(), Vec::new());
        }
        let takes = |k: &Key| self.by_key[k].takes(event.index, caches);
        // A directory that appears at a path or leaves it (made, removed, renamed) changes
        // what every path below it names: watches there are owed a RESYNC.
        let owed = if event.kind == Kind::Dir
            && matches!(event.change, NodeChange::Created | NodeChange::Deleted)
        {
            self.below(&event.path).into_iter().filter(takes).collect()
        } else {
            Vec::new()
        };
        let covering = self
            .covering(&event.path)
            .into_iter()
            .filter(takes)
            .collect();
        (owed, covering)
    }

    /// Whether `event` reaches any watch that is a cache (`caches`), or any other.
    fn reaches_any(&self, event: &NodeEvent, caches: bool) -> bool {
        let (owed, covering) = self.reached(event, caches);
        !owed.is_empty() || !covering.is_empty()
    }

    /// Routes `event` to the watches it reaches, caches (`caches`) or the others; a cache
    /// registration in `told` at the event's index hears it marked `told`. Returns whether a
    /// RESYNC is owed.
    fn route(&mut self, event: &NodeEvent, caches: bool, told: &Told) -> bool {
        let (owed, covering) = self.reached(event, caches);
        for key in &owed {
            self.owe(*key, event.index);
        }
        if !covering.is_empty() {
            let wire = convert::watch_event(event);
            let told = told.get(&event.index);
            for key in covering {
                let mut wire = wire.clone();
                wire.told = told.is_some_and(|t| t.iter().any(|(_, k)| *k == key))
                    && self.acked_early(key, event.index);
                self.send(key, wire);
            }
        }
        !owed.is_empty()
    }

    /// Whether watch `key` is its session's cache registration and has acknowledged the
    /// notice of `index` already. Only then is the event of that write marked `told`: a
    /// registration that has not (a notice still on its way, or one that registered anew
    /// through the same watch) acknowledges the event itself, so a write is never left
    /// waiting for an acknowledgement nobody will send.
    fn acked_early(&self, key: Key, index: u64) -> bool {
        self.by_key
            .get(&key)
            .and_then(|w| self.caches.get(&w.session))
            .is_some_and(|c| c.key == key && c.early_acked >= index)
    }

    /// Whether a watch other than a cache registration exists.
    fn has_plain(&self) -> bool {
        self.by_key.len() > self.caches.len()
    }

    /// Holds `event` for the watches that are not caches; past [`MAX_HELD_EVENTS`] or
    /// [`MAX_HELD_BYTES`] drops what is held and owes each of them a RESYNC. Returns whether
    /// one is owed.
    fn hold(&mut self, event: &NodeEvent) -> bool {
        let cost = held_cost(event);
        if self.held.len() < MAX_HELD_EVENTS && self.held_bytes + cost <= MAX_HELD_BYTES {
            self.held.push_back(event.clone());
            self.held_bytes += cost;
            return false;
        }
        self.held.clear();
        self.held_bytes = 0;
        let keys: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(_, w)| w.takes(event.index, false))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.owe(key, event.index);
        }
        true
    }

    /// Sends `event` on watch `key`, or marks the watch owed a RESYNC when its queue is full.
    fn send(&mut self, key: Key, mut event: proto::WatchEvent) {
        let Some(w) = self.by_key.get_mut(&key) else {
            return;
        };
        if let Some(missed) = &mut w.missed {
            *missed = (*missed).max(event.index);
            return;
        }
        event.watch = key.1;
        let index = event.index;
        let mut frame = proto::ServerFrame::new();
        frame.set_watch_event(event);
        match w.tx.try_send(frame) {
            Ok(()) => {
                self.pushed.inc();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                w.missed = Some(index);
                self.owed.insert(key);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.remove(key),
        }
    }
}

#[derive(Default)]
pub struct EventRouter {
    /// session -> (connection id, the connection's outgoing frames)
    subscribers: Mutex<HashMap<u64, Vec<(u64, FrameSender)>>>,
    watches: Mutex<Watches>,
}

impl EventRouter {
    /// A router that counts the events it pushes on `pushed`.
    pub fn counting(pushed: prometheus_client::metrics::counter::Counter) -> EventRouter {
        let router = EventRouter::default();
        router.watches.lock().expect("poisoned").pushed = pushed;
        router
    }

    pub fn subscribe(&self, session: u64, conn: u64, tx: &FrameSender) {
        let mut subs = self.subscribers.lock().expect("poisoned");
        let list = subs.entry(session).or_default();
        if !list.iter().any(|(c, _)| *c == conn) {
            list.push((conn, tx.clone()));
        }
    }

    /// Forgets a connection that closed, with its watches.
    pub fn unsubscribe(&self, conn: u64) {
        let mut subs = self.subscribers.lock().expect("poisoned");
        subs.retain(|_, list| {
            list.retain(|(c, _)| *c != conn);
            !list.is_empty()
        });
        drop(subs);
        let mut watches = self.watches.lock().expect("poisoned");
        watches.remove_where(|(c, _), _| *c == conn);
    }

    /// Pushes `event` to every connection subscribed to `session`; never blocks. When the
    /// session `ended`, its subscriptions and watches end too.
    pub fn publish(&self, session: u64, event: proto::Event, ended: bool) {
        let mut subs = self.subscribers.lock().expect("poisoned");
        if let Some(list) = subs.get_mut(&session) {
            list.retain(|(_, tx)| {
                let mut frame = proto::ServerFrame::new();
                frame.set_event(event.clone());
                !matches!(
                    tx.try_send(frame),
                    Err(mpsc::error::TrySendError::Closed(_))
                )
            });
        }
        if ended {
            subs.remove(&session);
            drop(subs);
            let mut watches = self.watches.lock().expect("poisoned");
            watches.remove_where(|_, w| w.session == session);
        }
    }

    /// Registers a watch (replacing the connection's watch of the same id, and for a cache
    /// the session's earlier registration). Call it from the node thread, which publishes
    /// node events, at the applied index `index` the watch starts after.
    pub fn watch(&self, spec: WatchSpec, index: u64) -> Result<(), ServerError> {
        let mut watches = self.watches.lock().expect("poisoned");
        let key = (spec.conn, spec.id);
        watches.remove(key);
        if spec.cache {
            if let Some(old) = watches.caches.get(&spec.session).map(|c| c.key) {
                watches.remove(old);
            }
        }
        if watches.per_conn.get(&spec.conn).copied().unwrap_or(0) >= MAX_WATCHES_PER_CONNECTION {
            return Err(ServerError::Refused {
                code: errno::EDQUOT,
                message: format!(
                    "a connection may hold at most {MAX_WATCHES_PER_CONNECTION} watches"
                ),
            });
        }
        if watches.by_key.len() >= MAX_WATCHES {
            return Err(ServerError::Refused {
                code: errno::EDQUOT,
                message: format!("this node holds {MAX_WATCHES} watches, its most"),
            });
        }
        watches
            .by_path
            .entry(spec.path.clone())
            .or_default()
            .insert(key);
        *watches.per_conn.entry(spec.conn).or_default() += 1;
        if spec.cache {
            let reg = CacheReg {
                key,
                acked: index,
                early: spec.early,
                early_acked: 0,
            };
            watches.caches.insert(spec.session, reg);
        }
        watches.by_key.insert(
            key,
            Watch {
                session: spec.session,
                path: spec.path,
                recursive: spec.recursive,
                cache: spec.cache,
                from: index,
                tx: spec.tx,
                missed: None,
            },
        );
        Ok(())
    }

    /// Ends watch `id` of connection `conn`, if it exists.
    pub fn unwatch(&self, conn: u64, id: u64) {
        self.watches.lock().expect("poisoned").remove((conn, id));
    }

    /// Pushes node events, applied at their indexes, to the cache registrations that cover
    /// them, and holds those that other watches cover until [`EventRouter::release_through`];
    /// never blocks.
    pub fn publish_changes(&self, events: &[NodeEvent]) {
        self.publish_changes_told(events, &Told::new())
    }

    /// As [`EventRouter::publish_changes`], where `told` names the cache registrations told
    /// of the writes at its indexes before they committed, whose acknowledgements of those
    /// notices stand for the writes' own (see `cache.rs`): those that have acknowledged the
    /// notice already hear the write's event marked `told`, and need not acknowledge it.
    pub fn publish_changes_told(&self, events: &[NodeEvent], told: &Told) {
        let mut watches = self.watches.lock().expect("poisoned");
        if watches.by_key.is_empty() {
            return;
        }
        let plain = watches.has_plain();
        let mut owing = false;
        for event in events {
            owing |= watches.route(event, true, told);
            // Only what a watch registered now would see: a later one starts after it.
            if plain && watches.reaches_any(event, false) {
                owing |= watches.hold(event);
            }
        }
        drop(watches);
        if owing {
            self.flush();
        }
    }

    /// Whether events wait to be released to watches.
    pub fn holds_events(&self) -> bool {
        !self.watches.lock().expect("poisoned").held.is_empty()
    }

    /// Pushes the held events up to `index` to the watches, other than caches, that cover
    /// them: no cache can serve what they replaced anymore.
    pub fn release_through(&self, index: u64) {
        let mut watches = self.watches.lock().expect("poisoned");
        let mut owing = false;
        while watches.held.front().is_some_and(|e| e.index <= index) {
            let event = watches.held.pop_front().expect("looked at above");
            watches.held_bytes -= held_cost(&event);
            owing |= watches.route(&event, false, &Told::new());
        }
        if !watches.has_plain() {
            watches.held.clear();
            watches.held_bytes = 0;
        }
        drop(watches);
        if owing {
            self.flush();
        }
    }

    /// Owes every cache registration a RESYNC (this node stopped leading: they are to
    /// register with the new leader), sent at once where there is room.
    pub fn resync_caches(&self, index: u64) {
        {
            let mut watches = self.watches.lock().expect("poisoned");
            let keys: Vec<Key> = watches.caches.values().map(|c| c.key).collect();
            for key in keys {
                watches.owe(key, index);
            }
        }
        self.flush();
    }

    /// Sends the RESYNCs owed to watches whose queues have room again.
    pub fn flush(&self) {
        let mut watches = self.watches.lock().expect("poisoned");
        let owed: Vec<Key> = watches.owed.iter().copied().collect();
        for key in owed {
            let Some(w) = watches.by_key.get_mut(&key) else {
                continue;
            };
            let Some(index) = w.missed else {
                watches.owed.remove(&key);
                continue;
            };
            let mut event = proto::WatchEvent::new();
            event.watch = key.1;
            event.index = index;
            event.change = proto::WatchEvent_Change::RESYNC;
            event.path = w.path.clone();
            let mut frame = proto::ServerFrame::new();
            frame.set_watch_event(event);
            match w.tx.try_send(frame) {
                Ok(()) => {
                    w.missed = None;
                    watches.owed.remove(&key);
                    watches.pushed.inc();
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => watches.remove(key),
            }
        }
    }

    /// A session's cache registration on this node: the path it watches and the highest
    /// index it acknowledged.
    pub fn cache_registration(&self, session: u64) -> Option<Registration> {
        let watches = self.watches.lock().expect("poisoned");
        let c = watches.caches.get(&session)?;
        Some(Registration {
            path: watches.by_key[&c.key].path.clone(),
            acked: c.acked,
            key: c.key,
            early_acked: c.early_acked,
        })
    }

    /// The cache of `session`, registered through connection `conn`, acknowledged the events
    /// up to `index` and the PENDING notices up to `early`; false if it has no registration
    /// through that connection.
    pub fn cache_ack(&self, session: u64, conn: u64, index: u64, early: u64) -> bool {
        let mut watches = self.watches.lock().expect("poisoned");
        match watches.caches.get_mut(&session) {
            Some(c) if c.key.0 == conn => {
                c.acked = c.acked.max(index);
                c.early_acked = c.early_acked.max(early);
                true
            }
            _ => false,
        }
    }

    /// Tells every cache registration that takes notices and covers `path` that a write of
    /// the file `instance` there was proposed at `index` (a PENDING notice: see
    /// `crate::server::cache`), by `by`. Returns the registrations it reached: (session,
    /// registration). A registration owed a RESYNC, registered at or after `index`, or whose
    /// queue is full is not told: it is waited for when the write applies, as without
    /// notices. Never blocks.
    pub fn notice(&self, index: u64, instance: u64, path: &str, by: u64) -> Vec<(u64, Key)> {
        let mut watches = self.watches.lock().expect("poisoned");
        let regs: Vec<(u64, Key)> = watches
            .caches
            .iter()
            .filter(|(_, c)| c.early)
            .map(|(s, c)| (*s, c.key))
            .collect();
        let mut told = Vec::new();
        for (session, key) in regs {
            let Some(w) = watches.by_key.get_mut(&key) else {
                continue;
            };
            if w.missed.is_some() || w.from >= index || !super::authz::within(path, &w.path) {
                continue;
            }
            let mut event = proto::WatchEvent::new();
            event.watch = key.1;
            event.index = index;
            event.change = proto::WatchEvent_Change::PENDING;
            event.path = path.to_string();
            event.instance = instance;
            event.kind = proto::Kind::FILE;
            event.by = by;
            let mut frame = proto::ServerFrame::new();
            frame.set_watch_event(event);
            match w.tx.try_send(frame) {
                Ok(()) => {
                    watches.pushed.inc();
                    told.push((session, key));
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => watches.remove(key),
            }
        }
        told
    }

    /// Watches registered on this node.
    pub fn watch_count(&self) -> usize {
        self.watches.lock().expect("poisoned").by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Kind, NodeChange};

    fn event(index: u64, path: &str) -> NodeEvent {
        NodeEvent {
            index,
            path: path.into(),
            instance: 9,
            parent: 1,
            name: "x".into(),
            kind: Kind::File,
            by: 0,
            change: NodeChange::Created,
        }
    }

    fn spec(conn: u64, id: u64, path: &str, recursive: bool, tx: &FrameSender) -> WatchSpec {
        WatchSpec {
            conn,
            id,
            session: 1,
            path: path.into(),
            recursive,
            cache: false,
            early: false,
            tx: tx.clone(),
        }
    }

    /// Applies and at once releases `events`.
    fn publish(router: &EventRouter, events: &[NodeEvent]) {
        router.publish_changes(events);
        router.release_through(u64::MAX);
    }

    /// (watch id, index, change) of what arrived.
    fn received(rx: &mut mpsc::Receiver<proto::ServerFrame>) -> Vec<(u64, u64, String)> {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            let e = frame.get_watch_event();
            out.push((e.watch, e.index, format!("{:?} {}", e.change, e.path)));
        }
        out
    }

    #[test]
    fn watches_below_a_directory_that_moves_are_owed_a_resync() {
        let router = EventRouter::default();
        let (tx, mut rx) = mpsc::channel(100);
        router.watch(spec(1, 1, "/a/b", false, &tx), 0).unwrap();
        router.watch(spec(1, 2, "/ab", false, &tx), 0).unwrap();
        router.watch(spec(1, 3, "/x/b/c", true, &tx), 0).unwrap();
        router.watch(spec(1, 4, "/", true, &tx), 0).unwrap();
        let moved = |index, path: &str, change| NodeEvent {
            kind: Kind::Dir,
            change,
            ..event(index, path)
        };
        // /a moves to /x: what /a/b and /x/b/c name changed, /ab's did not.
        publish(
            &router,
            &[
                moved(5, "/a", NodeChange::Deleted),
                moved(5, "/x", NodeChange::Created),
                event(6, "/x/b/c"),
            ],
        );
        let got = received(&mut rx);
        let resyncs: Vec<_> = got
            .iter()
            .filter(|(_, _, c)| c.starts_with("RESYNC"))
            .collect();
        assert_eq!(
            resyncs,
            [
                &(1, 5, "RESYNC /a/b".to_string()),
                &(3, 6, "RESYNC /x/b/c".to_string())
            ]
        );
        // The recursive watch of the root sees the move itself, and no RESYNC.
        assert!(got.contains(&(4, 5, "DELETED /a".to_string())), "{got:?}");
        assert!(got.contains(&(4, 5, "CREATED /x".to_string())), "{got:?}");
        assert!(got.iter().all(|(w, _, _)| *w != 2), "{got:?}");
    }

    #[test]
    fn a_watch_sees_its_node_its_children_and_with_recursive_all_below() {
        let router = EventRouter::default();
        let (tx, mut rx) = mpsc::channel(100);
        router.watch(spec(1, 1, "/a", false, &tx), 0).unwrap();
        router.watch(spec(1, 2, "/a", true, &tx), 0).unwrap();
        router.watch(spec(1, 3, "/a/b/c", false, &tx), 0).unwrap();
        router.watch(spec(1, 4, "/", true, &tx), 0).unwrap();
        publish(
            &router,
            &[
                event(1, "/a"),
                event(2, "/a/b"),
                event(3, "/a/b/c"),
                event(4, "/ab"),
            ],
        );
        let got: Vec<(u64, u64)> = received(&mut rx).iter().map(|(w, i, _)| (*w, *i)).collect();
        let mut want = vec![
            (1, 1),
            (2, 1),
            (4, 1),
            (1, 2),
            (2, 2),
            (4, 2),
            (3, 3),
            (2, 3),
            (4, 3),
            (4, 4),
        ];
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want);
        // Commit order across watches: indexes never go back.
        assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "{got:?}");
    }

    #[test]
    fn watches_other_than_caches_see_an_event_only_once_it_is_released() {
        let router = EventRouter::default();
        let (tx, mut rx) = mpsc::channel(100);
        let (cache_tx, mut cache_rx) = mpsc::channel(100);
        router.watch(spec(1, 1, "/f", false, &tx), 0).unwrap();
        let cache = WatchSpec {
            session: 2,
            cache: true,
            ..spec(2, 1, "/", true, &cache_tx)
        };
        router.watch(cache, 0).unwrap();
        router.publish_changes(&[event(3, "/f")]);
        assert_eq!(received(&mut cache_rx), [(1, 3, "CREATED /f".to_string())]);
        assert!(
            received(&mut rx).is_empty(),
            "a plain watch saw a held event"
        );
        assert!(router.holds_events());
        router.release_through(2);
        assert!(received(&mut rx).is_empty());
        router.release_through(3);
        assert_eq!(received(&mut rx), [(1, 3, "CREATED /f".to_string())]);
        assert!(!router.holds_events());
        // A watch registered at 5 sees nothing from before it, even if released after it.
        router.publish_changes(&[event(4, "/f"), event(5, "/f")]);
        router.watch(spec(1, 2, "/f", false, &tx), 5).unwrap();
        router.publish_changes(&[event(6, "/f")]);
        router.release_through(6);
        let got: Vec<(u64, u64)> = received(&mut rx).iter().map(|(w, i, _)| (*w, *i)).collect();
        assert_eq!(got, [(1, 4), (1, 5), (1, 6), (2, 6)]);
        assert_eq!(received(&mut cache_rx).len(), 3);
        // Held events are bounded: past the bound they go, and each plain watch is owed one
        // RESYNC, sent at once.
        let many: Vec<NodeEvent> = (0..=MAX_HELD_EVENTS as u64)
            .map(|i| event(10 + i, "/f"))
            .collect();
        let last = many.last().unwrap().index;
        for e in &many {
            router.publish_changes(std::slice::from_ref(e));
        }
        let _ = received(&mut cache_rx);
        let mut got = received(&mut rx);
        got.sort();
        assert_eq!(
            got,
            [
                (1, last, "RESYNC /f".to_string()),
                (2, last, "RESYNC /f".to_string())
            ]
        );
        router.release_through(u64::MAX);
        assert!(
            received(&mut rx).is_empty(),
            "dropped events were sent after all"
        );
        // Long paths reach the byte bound first.
        router.watch(spec(1, 3, "/", true, &tx), last).unwrap();
        let long = format!("/{}", "d".repeat(MAX_WATCH_PATH - 1));
        let fits = MAX_HELD_BYTES / held_cost(&event(0, &long));
        assert!(fits < MAX_HELD_EVENTS);
        for i in 0..=fits as u64 {
            router.publish_changes(&[event(last + 1 + i, &long)]);
        }
        let got = received(&mut rx);
        assert!(
            got.contains(&(3, last + 1 + fits as u64, "RESYNC /".to_string())),
            "{got:?}"
        );
        router.release_through(u64::MAX);
        assert!(
            received(&mut rx).is_empty(),
            "dropped events were sent after all"
        );
        router.unwatch(1, 3);
        let last = last + 1 + fits as u64;
        // Nor what no plain watch covers.
        router.publish_changes(&[event(last + 1, "/g")]);
        assert!(!router.holds_events());
        let last = last + 1;
        // Without plain watches nothing is held.
        router.unwatch(1, 1);
        router.unwatch(1, 2);
        router.publish_changes(&[event(last + 1, "/f")]);
        assert!(!router.holds_events());
    }

    #[test]
    fn caches_hear_of_no_lock_changes_and_plain_watches_do() {
        let router = EventRouter::default();
        let (tx, mut rx) = mpsc::channel(100);
        let (cache_tx, mut cache_rx) = mpsc::channel(100);
        router.watch(spec(1, 1, "/", true, &tx), 0).unwrap();
        let cache = WatchSpec {
            session: 2,
            cache: true,
            ..spec(2, 1, "/", true, &cache_tx)
        };
        router.watch(cache, 0).unwrap();
        let holder = crate::state::LockHolder {
            session: 2,
            owner: 1,
            style: crate::state::LockStyle::Flock,
            kind: crate::state::LockKind::Exclusive,
            start: 0,
            end: u64::MAX,
            pid: 7,
            host: "b".into(),
            since_ns: 0,
        };
        let locked = NodeEvent {
            change: NodeChange::Locked {
                holder: holder.clone(),
                generation: 1,
                holders: 1,
            },
            ..event(3, "/f")
        };
        let unlocked = NodeEvent {
            change: NodeChange::Unlocked {
                holder,
                generation: 1,
                holders: 0,
            },
            ..event(4, "/f")
        };
        publish(&router, &[locked, unlocked, event(5, "/f")]);
        assert_eq!(received(&mut cache_rx), [(1, 5, "CREATED /f".to_string())]);
        let got: Vec<u64> = received(&mut rx).iter().map(|(_, i, _)| *i).collect();
        assert_eq!(got, [3, 4, 5]);
    }

    #[test]
    fn notices_reach_only_caches_that_take_them_cover_the_file_and_can_be_told_now() {
        let router = EventRouter::default();
        let (tx, mut rx) = mpsc::channel(100);
        let (plain_tx, mut plain_rx) = mpsc::channel(100);
        let (old_tx, mut old_rx) = mpsc::channel(100);
        let (full_tx, mut full_rx) = mpsc::channel(1);
        let (sub_tx, mut sub_rx) = mpsc::channel(100);
        let cache = |session, conn, path, early, tx| WatchSpec {
            session,
            cache: true,
            early,
            ..spec(conn, 1, path, true, tx)
        };
        router.watch(spec(1, 1, "/", true, &plain_tx), 0).unwrap();
        router.watch(cache(2, 2, "/", true, &tx), 0).unwrap();
        router.watch(cache(3, 3, "/", false, &old_tx), 0).unwrap();
        router.watch(cache(4, 4, "/", true, &full_tx), 0).unwrap();
        router.watch(cache(5, 5, "/d", true, &sub_tx), 0).unwrap();
        // One frame fills session 4's queue.
        router.publish_changes(&[event(3, "/x")]);
        let told = router.notice(7, 9, "/f", 2);
        assert_eq!(told, vec![(2, (2, 1))]);
        assert_eq!(
            received(&mut rx),
            [
                (1, 3, "CREATED /x".to_string()),
                (1, 7, "PENDING /f".to_string())
            ]
        );
        assert!(
            received(&mut plain_rx).is_empty(),
            "plain watches are never told"
        );
        assert_eq!(
            received(&mut old_rx).len(),
            1,
            "a cache without notices is not told"
        );
        assert_eq!(
            received(&mut full_rx).len(),
            1,
            "a full queue is not told, and owes nothing"
        );
        assert!(
            received(&mut sub_rx).is_empty(),
            "a cache of another subtree is not told"
        );
        // Session 4's queue has room again.
        let mut told = router.notice(8, 10, "/d/g", 2);
        told.sort();
        assert_eq!(told, vec![(2, (2, 1)), (4, (4, 1)), (5, (5, 1))]);
        // A registration at or after the proposal's index is not told of it.
        router.watch(cache(2, 2, "/", true, &tx), 9).unwrap();
        received(&mut rx);
        assert!(router.notice(9, 9, "/f", 2).is_empty());
        assert!(received(&mut rx).is_empty());
        // The acknowledgement of notices moves only the registration's own, and starts over
        // with a new registration.
        assert!(router.cache_ack(2, 2, 0, 10));
        assert!(!router.cache_ack(2, 3, 0, 11));
        let reg = router.cache_registration(2).unwrap();
        assert_eq!((reg.acked, reg.early_acked, reg.key), (9, 10, (2, 1)));
        router.watch(cache(2, 2, "/", true, &tx), 10).unwrap();
        assert_eq!(router.cache_registration(2).unwrap().early_acked, 0);
    }

    #[test]
    fn a_write_s_event_is_marked_told_only_where_its_notice_was_acknowledged() {
        let router = EventRouter::default();
        let (tx2, mut rx2) = mpsc::channel(100);
        let (tx3, mut rx3) = mpsc::channel(100);
        for (session, tx) in [(2, &tx2), (3, &tx3)] {
            let spec = WatchSpec {
                session,
                cache: true,
                early: true,
                ..spec(session, 1, "/", true, tx)
            };
            router.watch(spec, 0).unwrap();
        }
        let told = router.notice(5, 9, "/f", 2);
        assert_eq!(told.len(), 2);
        // 2 acknowledged the notice; 3 has not yet.
        assert!(router.cache_ack(2, 2, 0, 5));
        let marked = |rx: &mut mpsc::Receiver<proto::ServerFrame>| -> Vec<(u64, bool)> {
            let mut out = Vec::new();
            while let Ok(frame) = rx.try_recv() {
                let e = frame.get_watch_event();
                out.push((e.index, e.told));
            }
            out
        };
        marked(&mut rx2);
        marked(&mut rx3);
        let mut by_index = Told::new();
        by_index.insert(5, told);
        router.publish_changes_told(&[event(5, "/f"), event(6, "/g")], &by_index);
        assert_eq!(marked(&mut rx2), [(5, true), (6, false)]);
        assert_eq!(marked(&mut rx3), [(5, false), (6, false)]);
    }

    #[test]
    fn a_full_queue_drops_events_and_owes_one_resync() {
        let router = EventRouter::default();
        let (tx, mut rx) = mpsc::channel(2);
        router.watch(spec(1, 7, "/f", false, &tx), 0).unwrap();
        publish(
            &router,
            &[
                event(1, "/f"),
                event(2, "/f"),
                event(3, "/f"),
                event(4, "/f"),
            ],
        );
        router.flush(); // still full: nothing more
        assert_eq!(received(&mut rx).len(), 2);
        publish(&router, &[event(5, "/f")]); // owed a resync: dropped too
        router.flush();
        publish(&router, &[event(6, "/f")]);
        assert_eq!(
            received(&mut rx),
            vec![
                (7, 5, "RESYNC /f".to_string()),
                (7, 6, "CREATED /f".to_string())
            ],
            "one resync naming the last dropped index, then events again"
        );
    }

    #[test]
    fn watches_end_with_their_connection_session_or_unwatch_and_are_capped() {
        let router = EventRouter::default();
        let (tx, _rx) = mpsc::channel(10);
        router.watch(spec(1, 1, "/x", false, &tx), 0).unwrap();
        router.watch(spec(1, 1, "/y", false, &tx), 0).unwrap(); // replaces id 1
        router.watch(spec(2, 1, "/x", false, &tx), 0).unwrap();
        assert_eq!(router.watch_count(), 2);
        router.unsubscribe(2);
        assert_eq!(router.watch_count(), 1);
        router.publish(1, proto::Event::new(), true);
        assert_eq!(router.watch_count(), 0);
        for id in 0..MAX_WATCHES_PER_CONNECTION as u64 {
            router.watch(spec(3, id, "/x", false, &tx), 0).unwrap();
        }
        let refused = router.watch(spec(3, u64::MAX, "/x", false, &tx), 0);
        assert!(matches!(
            refused,
            Err(ServerError::Refused {
                code: errno::EDQUOT,
                ..
            })
        ));
        router.unwatch(3, 0);
        router
            .watch(spec(3, u64::MAX, "/x", false, &tx), 0)
            .unwrap();
    }

    #[test]
    fn parents_of_normalized_paths() {
        assert_eq!(parent_of("/"), None);
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/a/b"), Some("/a"));
    }
}
