//! Routing of state-machine events (lock granted, wait failed, session ended) to the client
//! connections subscribed to their session.
//!
//! Every node applies the same log, so every node produces the same events; each pushes them to
//! the connections it holds. A connection subscribes to a session with a KeepAlive (or by opening
//! it). A push that cannot be delivered is dropped: clients re-check what they wait for after
//! reconnecting, so a lost push delays a grant but never loses it.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::proto;

pub type FrameSender = mpsc::Sender<proto::ServerFrame>;

#[derive(Default)]
pub struct EventRouter {
    /// session -> (connection id, the connection's outgoing frames)
    subscribers: Mutex<HashMap<u64, Vec<(u64, FrameSender)>>>,
}

impl EventRouter {
    pub fn subscribe(&self, session: u64, conn: u64, tx: &FrameSender) {
        let mut subs = self.subscribers.lock().expect("poisoned");
        let list = subs.entry(session).or_default();
        if !list.iter().any(|(c, _)| *c == conn) {
            list.push((conn, tx.clone()));
        }
    }

    /// Forgets a connection that closed.
    pub fn unsubscribe(&self, conn: u64) {
        let mut subs = self.subscribers.lock().expect("poisoned");
        subs.retain(|_, list| {
            list.retain(|(c, _)| *c != conn);
            !list.is_empty()
        });
    }

    /// Pushes `event` to every connection subscribed to `session`; never blocks.
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
        }
    }
}
