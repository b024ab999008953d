//! Raft messages between peers, over TCP.
//!
//! Each peer gets its own task with a bounded queue: the raft thread hands messages over without
//! ever blocking, and one slow or dead peer only fills (and then drops from) its own queue. Raft
//! tolerates lost messages; heartbeats and retries repair the gap. A peer's task dials, sets up
//! mutual TLS (accepting only the certificate of the node it dials), says hello (cluster id and
//! both node ids), then streams frames, reconnecting with exponential backoff when the
//! connection breaks.
//!
//! The set of peers follows the member book: when a conf change or a snapshot changes it, the
//! node calls [`Transport::set_peers`], which starts links to new members and ends the links of
//! removed ones (dropping a link's queue ends its task). The same book tells the service which
//! peers may connect.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::node::Input;
use crate::auth::{Expect, Stream, Tls};
use crate::proto::{self, frame::FramedConn};

/// Messages waiting for one peer; beyond this, new ones are dropped.
const QUEUE: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Outgoing {
    frame: Bytes,
    /// For snapshots: the raft thread must learn whether it was delivered.
    snapshot: bool,
}

/// Addresses of the members, this node included: who may connect as a peer, and where to.
pub type PeerBook = Arc<RwLock<BTreeMap<u64, String>>>;

/// The raft thread's handle for sending to peers.
pub struct Transport {
    cluster_id: u64,
    me: u64,
    inbox: Sender<Input>,
    runtime: tokio::runtime::Handle,
    tls: Tls,
    book: PeerBook,
    /// One link per peer other than `me`: its address and its queue.
    peers: BTreeMap<u64, (String, mpsc::Sender<Outgoing>)>,
}

impl Transport {
    /// A transport with links to `peers` (other than `me`), on the runtime of `runtime`.
    pub fn start(
        cluster_id: u64,
        me: u64,
        peers: &BTreeMap<u64, String>,
        inbox: Sender<Input>,
        runtime: tokio::runtime::Handle,
        tls: Tls,
    ) -> Transport {
        let mut t = Transport {
            cluster_id,
            me,
            inbox,
            runtime,
            tls,
            book: PeerBook::default(),
            peers: BTreeMap::new(),
        };
        t.set_peers(peers);
        t
    }

    /// The shared address book, for the service's check of connecting peers.
    pub fn book(&self) -> PeerBook {
        self.book.clone()
    }

    /// Makes the links match `peers`: new members get a link, removed ones lose theirs, and a
    /// member whose address changed is dialed at the new one.
    pub fn set_peers(&mut self, peers: &BTreeMap<u64, String>) {
        *self.book.write().expect("peer book poisoned") = peers.clone();
        self.peers
            .retain(|id, (addr, _)| peers.get(id).is_some_and(|a| a == addr));
        for (&id, addr) in peers.iter().filter(|(&id, _)| id != self.me) {
            if self.peers.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let link = Link {
                cluster_id: self.cluster_id,
                me: self.me,
                peer: id,
                addr: addr.clone(),
                inbox: self.inbox.clone(),
                tls: self.tls.clone(),
            };
            self.runtime.spawn(link.run(rx));
            self.peers.insert(id, (addr.clone(), tx));
        }
    }

    /// Queues `msg` for its recipient; never blocks.
    pub fn send(&self, msg: Message) {
        let Some((_, queue)) = self.peers.get(&msg.to) else {
            log::warn!("dropping a raft message to unknown node {}", msg.to);
            return;
        };
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let mut frame = proto::PeerFrame::new();
        frame.raft = msg
            .write_to_bytes()
            .expect("encoding a raft message into a vector cannot fail");
        let bytes = frame
            .write_to_bytes()
            .expect("encoding a frame into a vector cannot fail");
        let out = Outgoing {
            frame: Bytes::from(bytes),
            snapshot,
        };
        if queue.try_send(out).is_err() {
            log::debug!("queue to node {} full; dropping a raft message", msg.to);
        }
    }
}

/// The connection to one peer.
struct Link {
    cluster_id: u64,
    me: u64,
    peer: u64,
    addr: String,
    inbox: Sender<Input>,
    tls: Tls,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<Outgoing>) {
        let mut backoff = BACKOFF_MIN;
        let mut was_connected = true;
        loop {
            let mut conn = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    if was_connected {
                        log::warn!("peer {} at {} unreachable: {}", self.peer, self.addr, e);
                        was_connected = false;
                    }
                    let _ = self.inbox.send(Input::Unreachable(self.peer));
                    // Messages queued while the peer is away are stale by the time it is back.
                    loop {
                        match rx.try_recv() {
                            Ok(out) => self.report_snapshot(&out, false),
                            Err(TryRecvError::Empty) => break,
                            // The peer was removed from the cluster, or the node stops.
                            Err(TryRecvError::Disconnected) => return,
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            log::info!("connected to peer {} at {}", self.peer, self.addr);
            was_connected = true;
            backoff = BACKOFF_MIN;
            loop {
                let Some(out) = rx.recv().await else {
                    return; // the peer was removed, or the node is shutting down
                };
                let result = conn.send_raw(out.frame.clone()).await;
                self.report_snapshot(&out, result.is_ok());
                if let Err(e) = result {
                    log::warn!("lost connection to peer {}: {}", self.peer, e);
                    let _ = self.inbox.send(Input::Unreachable(self.peer));
                    break;
                }
            }
        }
    }

    fn report_snapshot(&self, out: &Outgoing, delivered: bool) {
        if out.snapshot {
            let _ = self.inbox.send(Input::SnapshotSent {
                to: self.peer,
                delivered,
            });
        }
    }

    async fn connect(&self) -> Result<FramedConn<Stream>, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.tls.connect(stream, Expect::Peer(self.peer)),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let mut conn = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
        let mut hello = proto::Hello::new();
        hello.version = proto::PROTOCOL_VERSION;
        let peer = hello.mut_peer();
        peer.cluster_id = self.cluster_id;
        peer.from = self.me;
        peer.to = self.peer;
        conn.send(&hello).await.map_err(|e| e.to_string())?;
        let reply: proto::HelloReply = tokio::time::timeout(CONNECT_TIMEOUT, conn.recv())
            .await
            .map_err(|_| "no hello reply".to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(err) = reply.error.as_ref() {
            return Err(format!("refused: {}", err.message));
        }
        conn.set_max_frame(proto::PEER_MAX_FRAME);
        Ok(conn)
    }
}
