//! Raft messages between peers, over TCP.
//!
//! Each peer gets its own task with a bounded queue: the Raft loop hands messages over without
//! ever blocking, and one slow or dead peer only fills (and then drops from) its own queue. Raft
//! tolerates lost messages; heartbeats and retries repair the gap. A peer's task dials, sets up
//! mutual TLS (accepting only the certificate of the node it dials), says hello (cluster id and
//! both node ids), then streams frames, reconnecting with exponential backoff when the
//! connection breaks.
//!
//! A snapshot message carries no state: the records of the state at its index come from a
//! stream that the Raft loop opened when raft-rs asked for the snapshot ([`Transport::opener`],
//! fed by a thread reading a RocksDB snapshot), and follow the message in chunks of about
//! 1 MiB. The stream is bounded (two batches wait at most), so the reader goes only as fast as
//! the peer takes the chunks; other messages to the peer (heartbeats) go out between chunks.
//!
//! The set of peers follows the member book: when a conf change or a snapshot changes it, the
//! node calls [`Transport::set_peers`], which starts links to new members and ends the links of
//! removed ones (dropping a link's queue ends its task). The same book tells the service which
//! peers may connect.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::log_formats::{self, LogFormats};
use super::membership::SnapshotData;
use super::node::{InboxSender, Input};
use crate::auth::{Expect, Stream, Tls};
use crate::encoding::LogFormat;
use crate::proto;
use crate::proto::frame::{FrameError, FramedConn, MAX_BURST};
use crate::storage::{Members, Records, SnapshotOpener};

/// Messages waiting for one peer; beyond this, new ones are dropped.
const QUEUE: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Outgoing {
    frame: Bytes,
    /// The log format the peer must read to be sent this (`log_formats::needed`).
    needs: LogFormat,
    /// For snapshots: the Raft loop must learn whether it was delivered, and the state
    /// follows the message from this stream (`None` when there was none to send).
    snapshot: Option<Option<StateStream>>,
}

/// The records of one snapshot: batches, then `None` after the last; the channel closes early
/// if reading the state failed.
struct StateStream {
    index: u64,
    batches: mpsc::Receiver<Option<Records>>,
}

/// Snapshot streams opened for each peer, waiting for their message.
type Streams = Arc<Mutex<HashMap<u64, StateStream>>>;

/// Addresses of the members, this node included: who may connect as a peer, and where to.
pub type PeerBook = Arc<RwLock<BTreeMap<u64, String>>>;

/// Where the Raft node's messages go: its peers over TCP ([`Transport`]), or the network of a
/// test (`harness/`). None of these calls blocks; a message may be lost, as on any network.
pub trait Links: Send {
    /// Makes the links match `peers` (every member, this node included: id -> address).
    fn set_peers(&mut self, peers: &BTreeMap<u64, String>);
    /// Sends `msg` to `msg.to`, or drops it.
    fn send(&self, msg: Message);
    /// What the raft log calls when raft-rs wants a snapshot for a peer: where the records of
    /// the state at the snapshot's index go, to follow its message.
    fn opener(&self) -> SnapshotOpener;
}

/// The Raft loop's handle for sending to peers.
pub struct Transport {
    cluster_id: u64,
    me: u64,
    inbox: InboxSender,
    runtime: tokio::runtime::Handle,
    tls: Tls,
    book: PeerBook,
    /// The newest log format this node reads, and what the peers and the cluster do.
    log_format: LogFormat,
    formats: Arc<LogFormats>,
    /// One link per peer other than `me`: its address and its queue.
    peers: BTreeMap<u64, (String, mpsc::Sender<Outgoing>)>,
    outbox: Streams,
}

impl Transport {
    /// A transport with links to `peers` (other than `me`), on the runtime of `runtime`; this
    /// node reads log formats up to `log_format`.
    pub fn start(
        cluster_id: u64,
        me: u64,
        peers: &BTreeMap<u64, String>,
        inbox: InboxSender,
        runtime: tokio::runtime::Handle,
        tls: Tls,
        (log_format, formats): (LogFormat, Arc<LogFormats>),
    ) -> Transport {
        let mut t = Transport {
            cluster_id,
            me,
            inbox,
            runtime,
            tls,
            book: PeerBook::default(),
            log_format,
            formats,
            peers: BTreeMap::new(),
            outbox: Streams::default(),
        };
        t.set_peers(peers);
        t
    }

    /// The shared address book, for the service's check of connecting peers.
    pub fn book(&self) -> PeerBook {
        self.book.clone()
    }
}

impl Links for Transport {
    /// Makes the links match `peers`: new members get a link, removed ones lose theirs, and a
    /// member whose address changed is dialed at the new one.
    fn set_peers(&mut self, peers: &BTreeMap<u64, String>) {
        *self.book.write().expect("peer book poisoned") = peers.clone();
        // A stream waiting for a removed member would hold its RocksDB snapshot forever.
        self.outbox
            .lock()
            .expect("outbox poisoned")
            .retain(|id, _| peers.contains_key(id));
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
                log_format: self.log_format,
                formats: self.formats.clone(),
            };
            self.runtime.spawn(link.run(rx));
            self.peers.insert(id, (addr.clone(), tx));
        }
    }

    /// What the raft log calls when raft-rs wants a snapshot for a peer: the stream of its
    /// records is kept for the peer until the snapshot's message is sent (a newer one replaces
    /// it, which ends the older stream's reader).
    fn opener(&self) -> SnapshotOpener {
        let outbox = self.outbox.clone();
        let formats = self.formats.clone();
        Arc::new(move |to: u64, index: u64, members: &Members| {
            let (tx, batches) = mpsc::channel(2);
            outbox
                .lock()
                .expect("outbox poisoned")
                .insert(to, StateStream { index, batches });
            let sink = Box::new(move |batch: Option<Records>| tx.blocking_send(batch).is_ok());
            let data = SnapshotData {
                members: members.clone(),
                state: Vec::new(),
            };
            (
                sink as crate::storage::RecordSink,
                data.encode(formats.cluster()),
            )
        })
    }

    /// Queues `msg` for its recipient; never blocks.
    fn send(&self, msg: Message) {
        let Some((_, queue)) = self.peers.get(&msg.to) else {
            log::warn!("dropping a raft message to unknown node {}", msg.to);
            return;
        };
        let snapshot = (msg.get_msg_type() == MessageType::MsgSnapshot).then(|| {
            let index = msg.get_snapshot().get_metadata().index;
            let stream = self.outbox.lock().expect("outbox poisoned").remove(&msg.to);
            stream.filter(|s| s.index == index)
        });
        let mut frame = proto::PeerFrame::new();
        frame.raft = msg
            .write_to_bytes()
            .expect("encoding a raft message into a vector cannot fail");
        let bytes = frame
            .write_to_bytes()
            .expect("encoding a frame into a vector cannot fail");
        let out = Outgoing {
            frame: Bytes::from(bytes),
            needs: log_formats::needed(&msg),
            snapshot,
        };
        if queue.try_send(out).is_err() {
            log::debug!("queue to node {} full; dropping a raft message", msg.to);
        }
    }
}

/// Why a connection to a peer could not be made.
enum ConnectError {
    /// Nothing listens at the peer's address: its process is not running.
    Refused(String),
    /// Anything else: a timeout, a handshake that failed, a refusal by the peer itself.
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) | ConnectError::Failed(e) => f.write_str(e),
        }
    }
}

/// The connection to one peer.
struct Link {
    cluster_id: u64,
    me: u64,
    peer: u64,
    addr: String,
    inbox: InboxSender,
    tls: Tls,
    log_format: LogFormat,
    formats: Arc<LogFormats>,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<Outgoing>) {
        let mut backoff = BACKOFF_MIN;
        let mut was_connected = true;
        loop {
            let (mut conn, reads) = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    if was_connected {
                        log::warn!("peer {} at {} unreachable: {}", self.peer, self.addr, e);
                        was_connected = false;
                    }
                    let _ = self.inbox.send(Input::Unreachable(self.peer));
                    if let ConnectError::Refused(_) = e {
                        let _ = self.inbox.send(Input::PeerDown(self.peer));
                    }
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
            let mut held_back = false;
            // A message taken from the queue while writing out a burst, not sent with it.
            let mut next: Option<Outgoing> = None;
            loop {
                let out = if let Some(out) = next.take() {
                    Some(out)
                } else {
                    tokio::select! {
                        out = rx.recv() => out,
                        // The peer writes nothing on this connection after its hello reply,
                        // so a read ends only with the connection: a peer whose process died
                        // is noticed now, not at the next message sent to it (a follower sends
                        // its leader nothing until asked).
                        end = conn.recv::<proto::PeerFrame>() => {
                            let why = end
                                .err()
                                .map_or("unexpected frame".into(), |e| e.to_string());
                            log::warn!("lost connection to peer {}: {why}", self.peer);
                            let _ = self.inbox.send(Input::Unreachable(self.peer));
                            break;
                        }
                    }
                };
                let Some(out) = out else {
                    return; // the peer was removed, or the node is shutting down
                };
                if out.needs > reads {
                    if !held_back {
                        log::error!(
                            "peer {} reads log formats up to {}: not sending it the log in \
                             format {}; upgrade lockfs on node {}",
                            self.peer,
                            reads.number(),
                            out.needs.number(),
                            self.peer
                        );
                        held_back = true;
                    }
                    self.report_snapshot(&out, false);
                    continue;
                }
                let result = match out.snapshot {
                    Some(stream) => {
                        self.send_snapshot(&mut conn, out.frame, stream, &mut rx)
                            .await
                    }
                    None => Self::send_burst(&mut conn, out.frame, &mut rx, &mut next, reads).await,
                };
                if let Err(e) = result {
                    log::warn!("lost connection to peer {}: {}", self.peer, e);
                    let _ = self.inbox.send(Input::Unreachable(self.peer));
                    if let Some(out) = next.take() {
                        self.report_snapshot(&out, false);
                    }
                    break;
                }
            }
        }
    }

    /// Sends `frame` and the plain messages queued behind it (up to [`MAX_BURST`] in all),
    /// written out together. The first queued message that needs more than a write (a
    /// snapshot, or a log format the peer does not read) is left in `next`, unsent.
    async fn send_burst(
        conn: &mut FramedConn<Stream>,
        frame: Bytes,
        rx: &mut mpsc::Receiver<Outgoing>,
        next: &mut Option<Outgoing>,
        reads: LogFormat,
    ) -> Result<(), String> {
        let fail = |e: FrameError| e.to_string();
        conn.feed_raw(frame).await.map_err(fail)?;
        for _ in 1..MAX_BURST {
            let Ok(out) = rx.try_recv() else { break };
            if out.snapshot.is_some() || out.needs > reads {
                *next = Some(out);
                break;
            }
            conn.feed_raw(out.frame).await.map_err(fail)?;
        }
        conn.flush().await.map_err(fail)
    }

    fn report_snapshot(&self, out: &Outgoing, delivered: bool) {
        if out.snapshot.is_some() {
            let _ = self.inbox.send(Input::SnapshotSent {
                to: self.peer,
                delivered,
            });
        }
    }

    /// Sends a snapshot's message, then its records in chunks, with the other messages queued
    /// meanwhile in between; tells the Raft loop whether the whole of it went out. An error
    /// is a broken connection; a snapshot that could not be read is only reported undelivered.
    async fn send_snapshot(
        &self,
        conn: &mut FramedConn<Stream>,
        frame: Bytes,
        stream: Option<StateStream>,
        rx: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), String> {
        let report = |delivered| {
            let _ = self.inbox.send(Input::SnapshotSent {
                to: self.peer,
                delivered,
            });
        };
        let Some(mut stream) = stream else {
            log::warn!("no state to send with the snapshot for peer {}", self.peer);
            report(false);
            return Ok(());
        };
        if let Err(e) = conn.send_raw(frame).await {
            report(false);
            return Err(e.to_string());
        }
        let (started, mut bytes) = (std::time::Instant::now(), 0usize);
        loop {
            let Some(batch) = stream.batches.recv().await else {
                log::warn!("the snapshot for peer {} could not be read", self.peer);
                report(false);
                return Ok(());
            };
            let last = batch.is_none();
            let mut chunk = proto::SnapshotChunk::new();
            chunk.index = stream.index;
            chunk.last = last;
            for (key, value) in batch.unwrap_or_default() {
                let mut r = proto::Record::new();
                r.key = key;
                r.value = value;
                chunk.records.push(r);
            }
            let mut frame = proto::PeerFrame::new();
            frame.set_chunk(chunk);
            let encoded = frame
                .write_to_bytes()
                .expect("encoding a frame into a vector cannot fail");
            bytes += encoded.len();
            if let Err(e) = conn.send_raw(Bytes::from(encoded)).await {
                report(false);
                return Err(e.to_string());
            }
            if last {
                log::info!(
                    "sent the snapshot at index {} to peer {} ({bytes} bytes in {:?})",
                    stream.index,
                    self.peer,
                    started.elapsed()
                );
                report(true);
                return Ok(());
            }
            // Heartbeats and the like go out between chunks; a newer snapshot waits its turn
            // (raft-rs asks for one only after this one is reported).
            while let Ok(out) = rx.try_recv() {
                if out.snapshot.is_some() {
                    self.report_snapshot(&out, false);
                    continue;
                }
                if let Err(e) = conn.send_raw(out.frame).await {
                    report(false);
                    return Err(e.to_string());
                }
            }
        }
    }

    /// A connection to the peer, and the newest log format the peer reads.
    async fn connect(&self) -> Result<(FramedConn<Stream>, LogFormat), ConnectError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| ConnectError::Failed("connect timed out".to_string()))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectError::Refused(e.to_string()),
                _ => ConnectError::Failed(e.to_string()),
            })?;
        self.handshake(stream).await.map_err(ConnectError::Failed)
    }

    /// TLS and hello on a new connection to the peer.
    async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<(FramedConn<Stream>, LogFormat), String> {
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
        peer.log_format = self.log_format.number();
        conn.send(&hello).await.map_err(|e| e.to_string())?;
        let reply: proto::HelloReply = tokio::time::timeout(CONNECT_TIMEOUT, conn.recv())
            .await
            .map_err(|_| "no hello reply".to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(err) = reply.error.as_ref() {
            return Err(format!("refused: {}", err.message));
        }
        let reads = self.formats.hello(self.peer, reply.log_format)?;
        conn.set_max_frame(proto::PEER_MAX_FRAME);
        Ok((conn, reads))
    }
}
