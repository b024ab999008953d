//! The node's listening port: peers and clients connect to the same address and say which they
//! are in their first frame.
//!
//! Every connection is mutual TLS (see `crate::auth::tls`) unless the node runs `--insecure`;
//! nothing about the cluster, not even its id, is sent before the dialer is authenticated, and
//! a refused hello says why without it. The authenticated identity decides what the connection
//! may do (see [`super::authz`]): speak Raft as one particular node, or make client requests.
//! How many connections are held at once, and how many unauthenticated ones per remote
//! address, is capped before anything is read (see [`super::admission`]).
//!
//! A peer connection carries raft messages into the node's inbox. A client connection carries
//! pipelined requests: each request is handled in its own task and its response is written as
//! soon as it is ready, so a slow request never holds up the ones behind it.
//!
//! Bounds, so that no client can make a node buffer without limit: a client's frames are at
//! most `max_file_size` plus a small margin (peers get more, once authenticated); one
//! connection has at most [`CLIENT_IN_FLIGHT`] requests in the node (then it stops reading);
//! the node as a whole has at most `max_requests` client requests in hand, and answers
//! more with "busy, retry" (ENOBUFS, which clients retry with backoff) instead of queueing them.
//! Keep-alives are exempt, so load never expires a session. A client connection that sends
//! nothing for the idle timeout while nothing of it is pending is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::admission::{Admission, Ticket};
use super::authz::Caller;
use super::convert::{self, Action};
use super::events::{EventRouter, FrameSender, WatchSpec};
use super::log_formats::LogFormats;
use super::metrics::{self, KindLabel, NodeMetrics, RequestLabels};
use super::node::{InboxSender, Input};
use super::transport::PeerBook;
use super::ServerError;
use crate::auth::{refuse_handshake, Accepted, Stream, Tls};
use crate::encoding::LogFormat;
use crate::proto::{self, frame::FramedConn, Hello_oneof_kind as HelloKind};
use crate::state::StateError;
use crate::storage::Records;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses waiting to be written to one client.
const CLIENT_QUEUE: usize = 1024;
/// Most bytes of records one snapshot from a peer may bring: far above what the default quotas
/// let a cluster hold (1 GiB of file data), far below what would end a node.
const MAX_SNAPSHOT_BYTES: usize = 8 << 30;
/// Requests of one client being handled at once; the connection stops reading beyond this.
pub const CLIENT_IN_FLIGHT: usize = 1024;

/// What every connection handler needs to know.
pub struct Service {
    pub cluster_id: u64,
    pub node_id: u64,
    /// Members' addresses, kept current by the transport: who may connect as a peer.
    pub peers: PeerBook,
    pub inbox: InboxSender,
    pub events: Arc<EventRouter>,
    pub next_conn: AtomicU64,
    pub tls: Tls,
    pub admission: Arc<Admission>,
    /// Largest request frame from a client (see [`proto::client_request_limit`]).
    pub client_max_frame: usize,
    /// A client connection that sends nothing for this long, with nothing pending, is closed.
    pub idle_timeout: Duration,
    /// Client requests (keep-alives aside) handled at once.
    pub max_requests: usize,
    /// Permits for client requests in hand, `max_requests` of them.
    pub requests: Arc<tokio::sync::Semaphore>,
    pub counts: Arc<RequestCounts>,
    pub metrics: Arc<NodeMetrics>,
    /// The newest log format this node reads, and what its peers and the cluster do.
    pub log_format: LogFormat,
    pub formats: Arc<LogFormats>,
}

impl Service {
    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let Some(ticket) = self.admission.admit(addr.ip()) else {
                        continue; // dropping the stream closes it
                    };
                    let _ = stream.set_nodelay(true);
                    let svc = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = svc.connection(stream, addr, ticket).await {
                            log::debug!("connection from {addr} ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        mut ticket: Ticket,
    ) -> Result<(), String> {
        let accepted = tokio::time::timeout(HELLO_TIMEOUT, self.tls.accept(stream))
            .await
            .map_err(|_| "no TLS handshake in time".to_string())?;
        let (stream, caller): (Stream, Caller) = match accepted {
            Ok(Accepted::Tls(stream, identity)) => (stream, Caller::Verified(identity)),
            Ok(Accepted::Plain(stream)) if matches!(self.tls, Tls::Off) => {
                (stream, Caller::Insecure)
            }
            Ok(Accepted::Plain(stream)) => {
                let why = "this node requires mutual TLS: connect with --tls-dir (or \
                           LOCKFS_TLS_DIR) holding a certificate from the cluster's CA";
                log::warn!("refusing a plain-TCP connection from {addr}");
                let mut conn = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
                let _ = tokio::time::timeout(HELLO_TIMEOUT, refuse(&mut conn, why)).await;
                return Err(why.into());
            }
            Ok(Accepted::UnexpectedTls(mut stream)) => {
                log::warn!("refusing a TLS connection from {addr}: this node runs --insecure");
                let _ = tokio::time::timeout(HELLO_TIMEOUT, refuse_handshake(&mut stream)).await;
                return Err("TLS on an --insecure node".into());
            }
            Err(e) => {
                log::warn!("refusing a connection from {addr}: {e}");
                return Err(e.to_string());
            }
        };
        let mut conn = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
        let hello: proto::Hello = tokio::time::timeout(HELLO_TIMEOUT, conn.recv())
            .await
            .map_err(|_| "no hello".to_string())?
            .map_err(|e| e.to_string())?;
        let refusal = if hello.version != proto::PROTOCOL_VERSION {
            Some(format!(
                "protocol version {} not supported (this node speaks {})",
                hello.version,
                proto::PROTOCOL_VERSION
            ))
        } else {
            match &hello.kind {
                Some(HelloKind::peer(p)) => self.check_peer(p, &caller),
                Some(HelloKind::client(_)) => None,
                None => Some("hello names no connection kind".to_string()),
            }
        };
        if let Some(why) = refusal {
            log::warn!("refusing a connection from {addr}: {why}");
            let _ = refuse(&mut conn, &why).await;
            return Err(why);
        }
        ticket.authenticated();
        let mut reply = proto::HelloReply::new();
        reply.cluster_id = self.cluster_id;
        reply.node_id = self.node_id;
        reply.log_format = self.log_format.number();
        conn.send(&reply).await.map_err(|e| e.to_string())?;
        match hello.kind {
            Some(HelloKind::peer(p)) => self.peer(conn, p.from).await,
            _ => self.client(conn, caller, addr).await,
        }
    }

    fn check_peer(&self, p: &proto::PeerHello, caller: &Caller) -> Option<String> {
        if let Err(why) = caller.check_peer(p.from) {
            Some(why)
        } else if p.cluster_id != self.cluster_id {
            Some(format!(
                "peer {} belongs to cluster {:016x}, not to this node's",
                p.from, p.cluster_id
            ))
        } else if p.to != self.node_id {
            Some(format!(
                "peer {} dialed node {}, this is node {}",
                p.from, p.to, self.node_id
            ))
        } else if p.from == self.node_id
            || !self
                .peers
                .read()
                .expect("peer book poisoned")
                .contains_key(&p.from)
        {
            Some(format!("unknown node id {}", p.from))
        } else {
            self.formats.hello(p.from, p.log_format).err()
        }
    }

    /// Steps a peer's raft messages into the node. A snapshot's message is held back until
    /// the records that follow it have all arrived, and goes to the node with them.
    async fn peer(&self, mut conn: FramedConn<Stream>, from: u64) -> Result<(), String> {
        conn.set_max_frame(proto::PEER_MAX_FRAME);
        let mut incoming: Option<Incoming> = None;
        loop {
            let mut frame: proto::PeerFrame = conn.recv().await.map_err(|e| e.to_string())?;
            let input = if frame.has_chunk() {
                let chunk = frame.take_chunk();
                let Some(snapshot) = incoming.as_mut().filter(|i| i.index == chunk.index) else {
                    log::debug!("peer {from} sent a chunk of no snapshot under way");
                    continue;
                };
                for mut r in chunk.records.into_iter() {
                    snapshot.bytes += r.key.len() + r.value.len();
                    if snapshot.bytes > MAX_SNAPSHOT_BYTES {
                        return Err(format!(
                            "peer {from} sent a snapshot of more than {MAX_SNAPSHOT_BYTES} bytes"
                        ));
                    }
                    snapshot.records.push((r.take_key(), r.take_value()));
                }
                if !chunk.last {
                    continue;
                }
                let Incoming { msg, records, .. } = incoming.take().expect("matched above");
                log::info!(
                    "received the snapshot at index {} from peer {from} ({} records)",
                    chunk.index,
                    records.len()
                );
                Input::Snapshot { msg, records }
            } else {
                let msg = proto::parse::<Message>(&std::mem::take(&mut frame.raft).into())
                    .map_err(|e| format!("malformed raft message from peer {from}: {e}"))?;
                if msg.from != from || msg.to != self.node_id {
                    return Err(format!(
                        "peer {from} sent a message from {} to {}",
                        msg.from, msg.to
                    ));
                }
                if msg.get_msg_type() == MessageType::MsgSnapshot {
                    incoming = Some(Incoming {
                        index: msg.get_snapshot().get_metadata().index,
                        msg,
                        records: Vec::new(),
                        bytes: 0,
                    });
                    continue;
                }
                Input::Raft(msg)
            };
            if self.inbox.send(input).is_err() {
                return Err("node stopped".into());
            }
        }
    }

    async fn client(
        &self,
        mut conn: FramedConn<Stream>,
        caller: Caller,
        addr: SocketAddr,
    ) -> Result<(), String> {
        conn.set_max_frame(self.client_max_frame);
        let _open = Open::new(&self.metrics.connections);
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (mut reader, mut writer) = conn.split();
        let (tx, mut rx) = mpsc::channel::<proto::ServerFrame>(CLIENT_QUEUE);
        let write_task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer
                    .send_all(&frame, || rx.try_recv().ok())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(CLIENT_IN_FLIGHT));
        let ctx = Arc::new(Handler {
            inbox: self.inbox.clone(),
            events: self.events.clone(),
            counts: self.counts.clone(),
            metrics: self.metrics.clone(),
            caller,
            addr,
            conn: conn_id,
            tx: tx.clone(),
        });
        let result = loop {
            let received = loop {
                // Cancelling `recv` keeps a partly read frame: the codec's buffer outlives it.
                match tokio::time::timeout(self.idle_timeout, reader.recv()).await {
                    Ok(received) => break Some(received),
                    Err(_) if in_flight.available_permits() < CLIENT_IN_FLIGHT => continue,
                    Err(_) => break None,
                }
            };
            let Some(received) = received else {
                log::debug!("closing client connection {conn_id} from {addr}: idle");
                break Ok(());
            };
            let req: proto::Request = match received {
                Ok(r) => r,
                Err(proto::frame::FrameError::Closed) => break Ok(()),
                Err(e) => {
                    // Tell the client why before hanging up: the stream cannot be resynchronized.
                    let mut resp = proto::Response::new();
                    let mut err = proto::Error::new();
                    err.code = super::error::errno::EMSGSIZE;
                    err.message = format!("bad frame: {e}");
                    resp.set_error(err);
                    let mut frame = proto::ServerFrame::new();
                    frame.set_response(resp);
                    let _ = tx.send(frame).await;
                    break Err(e.to_string());
                }
            };
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break Ok(());
            };
            let keep_alive = matches!(req.op, Some(proto::Request_oneof_op::keep_alive(_)));
            let node_permit = match self.requests.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) if keep_alive => None,
                Err(_) => {
                    let mut resp = proto::Response::new();
                    resp.id = req.id;
                    resp.set_error(convert::error(&ServerError::Busy(format!(
                        "node {} has {} requests in hand; retry",
                        self.node_id, self.max_requests
                    ))));
                    let mut frame = proto::ServerFrame::new();
                    frame.set_response(resp);
                    let _ = tx.send(frame).await;
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _permits = (permit, node_permit);
                let mut resp = proto::Response::new();
                resp.id = req.id;
                let started = std::time::Instant::now();
                let result = handle(&ctx, &req).await;
                let kind = metrics::request_kind(&req);
                let outcome = metrics::request_outcome(&result);
                let m = &ctx.metrics;
                m.requests
                    .get_or_create(&RequestLabels { kind, outcome })
                    .inc();
                m.request_seconds
                    .get_or_create(&KindLabel { kind })
                    .observe(started.elapsed().as_secs_f64());
                if matches!(result, Err(ServerError::Dropped)) {
                    // No answer: the connection closes with the node, and the client takes
                    // the write's outcome as unknown, as it is.
                    log::warn!("the node stopped with request {} in hand", req.id);
                    return;
                }
                match result {
                    Ok(res) => {
                        // A connection that keeps a session alive (or opened it) gets its events.
                        if let proto::Response_oneof_result::session(s) = &res {
                            ctx.events.subscribe(s.session, ctx.conn, &ctx.tx);
                        }
                        resp.result = Some(res)
                    }
                    Err(e) => resp.set_error(convert::error(&e)),
                }
                let _ = ctx.tx.send(response_frame(resp)).await;
            });
        };
        self.events.unsubscribe(conn_id);
        // The writer ends once every sender is gone: this one, the handler's, and those of
        // requests still being answered.
        drop(ctx);
        drop(tx);
        let _ = write_task.await;
        result
    }
}

/// The frame carrying `resp`; an error in its place when it would exceed the client frame
/// limit (the client would refuse it, and the connection with it).
fn response_frame(resp: proto::Response) -> proto::ServerFrame {
    let id = resp.id;
    let mut frame = proto::ServerFrame::new();
    frame.set_response(resp);
    let size = frame.compute_size() as usize;
    if size > proto::CLIENT_MAX_FRAME {
        let mut resp = proto::Response::new();
        resp.id = id;
        let mut err = proto::Error::new();
        err.code = super::error::errno::EMSGSIZE;
        err.message = format!(
            "the reply was too large to send ({size} bytes, at most {} in a frame)",
            proto::CLIENT_MAX_FRAME
        );
        resp.set_error(err);
        frame.set_response(resp);
    }
    frame
}

/// A snapshot being received: its message and the records so far.
struct Incoming {
    index: u64,
    msg: Message,
    records: Records,
    bytes: usize,
}

/// Answers a hello with a refusal that says why, and nothing about the cluster.
async fn refuse(conn: &mut FramedConn<Stream>, why: &str) -> Result<(), proto::frame::FrameError> {
    let mut reply = proto::HelloReply::new();
    let mut err = proto::Error::new();
    err.code = super::error::errno::EPROTO;
    err.message = why.to_string();
    reply.set_error(err);
    conn.send(&reply).await
}

/// Client requests a node handled since it started, by kind (`lockfs cluster status --json`
/// shows them): what a client costs the cluster can be counted.
#[derive(Default)]
pub struct RequestCounts {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub keep_alives: AtomicU64,
    pub watches: AtomicU64,
}

/// Counts a client connection as open while it lives.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Open {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the requests of one client connection are handled with.
struct Handler {
    inbox: InboxSender,
    events: Arc<EventRouter>,
    counts: Arc<RequestCounts>,
    metrics: Arc<NodeMetrics>,
    caller: Caller,
    addr: SocketAddr,
    /// The connection's id, and its outgoing frames (where its watches' events go too).
    conn: u64,
    tx: FrameSender,
}

/// Handles one client request.
async fn handle(
    ctx: &Handler,
    req: &proto::Request,
) -> Result<proto::Response_oneof_result, ServerError> {
    let (inbox, caller, addr, events) = (&ctx.inbox, &ctx.caller, ctx.addr, &ctx.events);
    let (conn, tx) = (ctx.conn, &ctx.tx);
    // Not taken: nothing was done, retry elsewhere. Taken and its answer dropped: unknown.
    let stopped = || ServerError::Unavailable("node shutting down".into());
    let dropped = |_| ServerError::Dropped;
    let mut action = convert::action(req)?;
    let counter = match &action {
        Action::Read(_) => Some(&ctx.counts.reads),
        Action::Write { .. } => Some(&ctx.counts.writes),
        Action::KeepAlive { .. } => Some(&ctx.counts.keep_alives),
        Action::Watch { .. } => Some(&ctx.counts.watches),
        _ => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    caller
        .authorize(&action)
        .inspect_err(|e| log::warn!("refused a request from {addr}: {e}"))?;
    caller.stamp(&mut action);
    let auth = caller.access(convert::session_secret(req), convert::user_ids(req)?);
    match action {
        Action::Status => {
            let (reply, rx) = oneshot::channel();
            inbox.send(Input::Status { reply }).map_err(|_| stopped())?;
            let mut status = convert::status(rx.await.map_err(|_| stopped())?);
            if let proto::Response_oneof_result::status(s) = &mut status {
                let counts = &ctx.counts;
                s.client_reads = counts.reads.load(Ordering::Relaxed);
                s.client_writes = counts.writes.load(Ordering::Relaxed);
                s.keep_alives = counts.keep_alives.load(Ordering::Relaxed);
                s.watch_requests = counts.watches.load(Ordering::Relaxed);
                s.watches = events.watch_count() as u64;
            }
            Ok(status)
        }
        Action::Members(op) => {
            let (reply, rx) = oneshot::channel();
            inbox
                .send(Input::ChangeMembers { op, reply })
                .map_err(|_| stopped())?;
            rx.await.map_err(dropped)??;
            let (reply, rx) = oneshot::channel();
            inbox.send(Input::Status { reply }).map_err(|_| stopped())?;
            Ok(convert::status(rx.await.map_err(|_| stopped())?))
        }
        Action::Write { command, request } => {
            let (reply, rx) = oneshot::channel();
            inbox
                .send(Input::Propose {
                    command,
                    request,
                    auth,
                    reply,
                })
                .map_err(|_| stopped())?;
            Ok(convert::outcome(rx.await.map_err(dropped)??))
        }
        Action::KeepAlive { session } => {
            let (reply, rx) = oneshot::channel();
            inbox
                .send(Input::KeepAlive {
                    session,
                    auth,
                    reply,
                })
                .map_err(|_| stopped())?;
            let ttl_ms = rx.await.map_err(|_| stopped())??;
            let mut p = proto::SessionReply::new();
            p.session = session;
            p.ttl_ms = ttl_ms;
            Ok(proto::Response_oneof_result::session(p))
        }
        Action::Read(query) => {
            let (reply, rx) = oneshot::channel();
            inbox
                .send(Input::Read { query, auth, reply })
                .map_err(|_| stopped())?;
            Ok(convert::outcome(rx.await.map_err(|_| stopped())??))
        }
        Action::Watch {
            session,
            id,
            path,
            recursive,
            cache,
            early,
        } => {
            let (reply, rx) = oneshot::channel();
            let spec = WatchSpec {
                conn,
                id,
                session,
                path,
                recursive,
                cache,
                early,
                tx: tx.clone(),
            };
            inbox
                .send(Input::Watch { spec, auth, reply })
                .map_err(|_| stopped())?;
            Ok(convert::watching(&rx.await.map_err(|_| stopped())??))
        }
        Action::CacheAck {
            session,
            index,
            early,
        } => {
            // Only this connection's own registration (checked when it was made) moves.
            if !events.cache_ack(session, conn, index, early) {
                return Err(ServerError::State(StateError::InvalidArgument(format!(
                    "session {session} has no cache registered through this connection"
                ))));
            }
            inbox.send(Input::CacheAcked).map_err(|_| stopped())?;
            Ok(proto::Response_oneof_result::done(proto::Done::new()))
        }
        Action::Unwatch { id, .. } => {
            // Only this connection's own watch: nothing to check.
            events.unwatch(conn, id);
            Ok(proto::Response_oneof_result::done(proto::Done::new()))
        }
    }
}
