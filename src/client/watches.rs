//! Watches: a session's view of the changes to a path, pushed by the cluster in commit order.
//!
//! A [`Watcher`] starts with the state of its path at the index where the watch began, then
//! yields each change after that index. The events of one registration arrive in commit order
//! on one connection. When they may have been interrupted (the connection was replaced after a
//! failover or a network fault, or the server dropped events because this client read too
//! slowly), the watcher registers again and yields a [`WatchItem::Resync`] with the state at
//! the new starting index: nothing between the last event and that state is reported, so a
//! consumer re-reads what it cares about from the resync. Events of an older registration that
//! are still in flight are discarded, so nothing is reported twice or out of order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::session::{Session, SessionState};
use super::{answer, ClientError};
use crate::proto::{self, Request_oneof_op as Op};

/// An event as it left one connection: (that connection's epoch, the event).
type Routed = (u64, proto::WatchEvent);

/// Where each watch's events go, by watch id; shared by the client's connections.
#[derive(Default)]
pub struct WatchRoutes {
    routes: Mutex<HashMap<u64, mpsc::UnboundedSender<Routed>>>,
    next_id: AtomicU64,
}

impl WatchRoutes {
    /// Hands an event that arrived on the connection of `epoch` to its watcher, if it still
    /// exists.
    pub fn deliver(&self, epoch: u64, event: proto::WatchEvent) {
        let routes = self.routes.lock().expect("poisoned");
        if let Some(tx) = routes.get(&event.watch) {
            let _ = tx.send((epoch, event));
        }
    }

    fn add(&self) -> (u64, mpsc::UnboundedReceiver<Routed>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().expect("poisoned").insert(id, tx);
        (id, rx)
    }

    fn remove(&self, id: u64) {
        self.routes.lock().expect("poisoned").remove(&id);
    }
}

/// The watched path at an index: its attributes unless missing, and how many locks it has.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub index: u64,
    pub attr: Option<proto::Attr>,
    pub holders: u32,
}

#[derive(Debug, Clone)]
pub enum WatchItem {
    /// Events may have been missed before this state (which is at `index`); later events
    /// follow it.
    Resync(Snapshot),
    Event(proto::WatchEvent),
    /// A cache watcher only: events may have been missed from here on, and the watcher is
    /// about to register again. A cache drops everything now: once registered, the leader
    /// stops waiting for what this registration was not told.
    Interrupted,
}

pub struct Watcher {
    session: Arc<Session>,
    routes: Arc<WatchRoutes>,
    id: u64,
    path: String,
    recursive: bool,
    rx: mpsc::UnboundedReceiver<Routed>,
    /// The session's cache registration (see `crate::server::cache`).
    cache: bool,
    epochs: watch::Receiver<u64>,
    /// (connection epoch, index) of the registration events are taken from; `None`: register
    /// again before taking any.
    current: Option<(u64, u64)>,
    /// A cache watcher reported [`WatchItem::Interrupted`] for the registration to come.
    told: bool,
}

impl Watcher {
    /// Watches `path` (with `recursive`, everything below it) in `session`; returns the
    /// watcher and the state the path had where the watch began.
    pub async fn start(
        session: Arc<Session>,
        path: &str,
        recursive: bool,
    ) -> Result<(Watcher, Snapshot), ClientError> {
        Self::start_with(session, path, recursive, false).await
    }

    /// As [`Watcher::start`]; with `cache`, the session's cache registration (recursive): the
    /// leader waits for [`Session::cache_ack`] before it answers writes that change what it
    /// watches.
    pub async fn start_with(
        session: Arc<Session>,
        path: &str,
        recursive: bool,
        cache: bool,
    ) -> Result<(Watcher, Snapshot), ClientError> {
        let routes = session.client().watch_routes();
        let (id, rx) = routes.add();
        let mut watcher = Watcher {
            epochs: session.client().epoch(),
            session,
            routes,
            id,
            path: path.to_string(),
            recursive,
            rx,
            cache,
            current: None,
            told: true,
        };
        let snapshot = watcher.register().await?;
        Ok((watcher, snapshot))
    }

    /// The path this watches.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The connection epoch (see [`crate::client::Client::epoch`]) of the registration events
    /// are taken from, if it is current; `None` while it must register again.
    pub fn registered_on(&self) -> Option<u64> {
        self.current
            .map(|(epoch, _)| epoch)
            .filter(|e| *e == *self.epochs.borrow())
    }

    /// The next item if one has arrived, without waiting (`None`: nothing yet). An item that
    /// needs a round trip (registering again) is left for [`Watcher::next`].
    pub fn try_next(&mut self) -> Option<proto::WatchEvent> {
        let (epoch, index) = self.current?;
        if *self.epochs.borrow() != epoch {
            return None;
        }
        loop {
            let (from, event) = self.rx.try_recv().ok()?;
            if from != epoch {
                continue;
            }
            if event.change == proto::WatchEvent_Change::RESYNC {
                self.current = None;
                return None;
            }
            if event.index > index {
                return Some(event);
            }
        }
    }

    /// Registers (again) on the client's current connection.
    async fn register(&mut self) -> Result<Snapshot, ClientError> {
        loop {
            let before = *self.epochs.borrow_and_update();
            let mut m = proto::Watch::new();
            m.id = self.id;
            m.path = self.path.clone();
            m.recursive = self.recursive;
            m.cache = self.cache;
            // A cache watcher also yields PENDING notices (see `crate::fs::cache`).
            m.early = self.cache;
            let reply = answer::watching("watch", self.session.call(Op::watch(m)).await?)?;
            // Registered on the connection of `before` only if none replaced it meanwhile.
            if *self.epochs.borrow_and_update() == before {
                self.current = Some((before, reply.index));
                self.told = false;
                return Ok(Snapshot {
                    index: reply.index,
                    attr: reply.exists.then(|| reply.get_attr().clone()),
                    holders: reply.holders,
                });
            }
        }
    }

    /// The next change, or a resync after events may have been missed. Fails when the
    /// session ends.
    pub async fn next(&mut self) -> Result<WatchItem, ClientError> {
        let mut state = self.session.state();
        loop {
            if let SessionState::Ended { expired } = *state.borrow_and_update() {
                return Err(ClientError::Remote {
                    code: super::session::SESSION_EXPIRED,
                    message: if expired {
                        "session expired".into()
                    } else {
                        "session closed".into()
                    },
                });
            }
            let Some((epoch, index)) = self.current else {
                if self.cache && !self.told {
                    self.told = true;
                    return Ok(WatchItem::Interrupted);
                }
                return self.register().await.map(WatchItem::Resync);
            };
            if *self.epochs.borrow() != epoch {
                self.current = None;
                continue;
            }
            tokio::select! {
                item = self.rx.recv() => {
                    let Some((from, event)) = item else {
                        return Err(ClientError::Protocol("watch routes dropped".into()));
                    };
                    if from != epoch {
                        continue;
                    }
                    if event.change == proto::WatchEvent_Change::RESYNC {
                        self.current = None;
                        continue;
                    }
                    if event.index > index {
                        return Ok(WatchItem::Event(event));
                    }
                }
                _ = self.epochs.changed() => {}
                _ = state.changed() => {}
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.routes.remove(self.id);
        if self.session.has_ended() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let session = self.session.clone();
            let mut m = proto::Unwatch::new();
            m.id = self.id;
            rt.spawn(async move {
                let _ = session.call(Op::unwatch(m)).await;
            });
        }
    }
}
