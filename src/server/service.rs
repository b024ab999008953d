//! The node's listening port: peers and clients connect to the same address and say which they
//! are in their first frame.
//!
//! A peer connection carries raft messages into the node's inbox. A client connection carries
//! pipelined requests: each request is handled in its own task and its response is written as
//! soon as it is ready, so a slow request never holds up the ones behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::convert::{self, Action};
use super::events::EventRouter;
use super::node::Input;
use super::transport::PeerBook;
use super::ServerError;
use crate::proto::{self, frame::FramedConn, Hello_oneof_kind as HelloKind};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses waiting to be written to one client.
const CLIENT_QUEUE: usize = 1024;
/// Requests of one client being handled at once; the connection stops reading beyond this.
const CLIENT_IN_FLIGHT: usize = 4096;

/// What every connection handler needs to know.
pub struct Service {
    pub cluster_id: u64,
    pub node_id: u64,
    /// Members' addresses, kept current by the transport: who may connect as a peer.
    pub peers: PeerBook,
    pub inbox: Sender<Input>,
    pub events: Arc<EventRouter>,
    pub next_conn: AtomicU64,
}

impl Service {
    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let svc = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = svc.connection(stream).await {
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

    async fn connection(&self, stream: TcpStream) -> Result<(), String> {
        let mut conn = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
        let hello: proto::Hello = tokio::time::timeout(HELLO_TIMEOUT, conn.recv())
            .await
            .map_err(|_| "no hello".to_string())?
            .map_err(|e| e.to_string())?;
        let mut reply = proto::HelloReply::new();
        reply.cluster_id = self.cluster_id;
        reply.node_id = self.node_id;
        let refusal = if hello.version != proto::PROTOCOL_VERSION {
            Some(format!(
                "protocol version {} not supported (this node speaks {})",
                hello.version,
                proto::PROTOCOL_VERSION
            ))
        } else {
            match &hello.kind {
                Some(HelloKind::peer(p)) => self.check_peer(p),
                Some(HelloKind::client(_)) => None,
                None => Some("hello names no connection kind".to_string()),
            }
        };
        if let Some(why) = refusal {
            log::warn!("refusing a connection: {why}");
            let mut err = proto::Error::new();
            err.code = super::error::errno::EPROTO;
            err.message = why.clone();
            reply.set_error(err);
            let _ = conn.send(&reply).await;
            return Err(why);
        }
        conn.send(&reply).await.map_err(|e| e.to_string())?;
        match hello.kind {
            Some(HelloKind::peer(p)) => self.peer(conn, p.from).await,
            _ => self.client(conn).await,
        }
    }

    fn check_peer(&self, p: &proto::PeerHello) -> Option<String> {
        if p.cluster_id != self.cluster_id {
            Some(format!(
                "peer {} belongs to cluster {:016x}, this node to {:016x}",
                p.from, p.cluster_id, self.cluster_id
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
            None
        }
    }

    async fn peer(&self, mut conn: FramedConn<TcpStream>, from: u64) -> Result<(), String> {
        conn.set_max_frame(proto::PEER_MAX_FRAME);
        loop {
            let frame: proto::PeerFrame = conn.recv().await.map_err(|e| e.to_string())?;
            let msg = Message::parse_from_bytes(&frame.raft)
                .map_err(|e| format!("malformed raft message from peer {from}: {e}"))?;
            if msg.from != from || msg.to != self.node_id {
                return Err(format!(
                    "peer {from} sent a message from {} to {}",
                    msg.from, msg.to
                ));
            }
            if self.inbox.send(Input::Raft(msg)).is_err() {
                return Err("node stopped".into());
            }
        }
    }

    async fn client(&self, mut conn: FramedConn<TcpStream>) -> Result<(), String> {
        conn.set_max_frame(proto::CLIENT_MAX_FRAME);
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (mut reader, mut writer) = conn.split();
        let (tx, mut rx) = mpsc::channel::<proto::ServerFrame>(CLIENT_QUEUE);
        let write_task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer.send(&frame).await.is_err() {
                    break;
                }
            }
        });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(CLIENT_IN_FLIGHT));
        let result = loop {
            let req: proto::Request = match reader.recv().await {
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
            let tx = tx.clone();
            let inbox = self.inbox.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut resp = proto::Response::new();
                resp.id = req.id;
                match handle(&inbox, &req).await {
                    Ok(res) => {
                        // A connection that keeps a session alive (or opened it) gets its events.
                        if let proto::Response_oneof_result::session(s) = &res {
                            events.subscribe(s.session, conn_id, &tx);
                        }
                        resp.result = Some(res)
                    }
                    Err(e) => resp.set_error(convert::error(&e)),
                }
                let mut frame = proto::ServerFrame::new();
                frame.set_response(resp);
                let _ = tx.send(frame).await;
            });
        };
        self.events.unsubscribe(conn_id);
        drop(tx);
        let _ = write_task.await;
        result
    }
}

async fn handle(
    inbox: &Sender<Input>,
    req: &proto::Request,
) -> Result<proto::Response_oneof_result, ServerError> {
    let stopped = || ServerError::Unavailable("node shutting down".into());
    match convert::action(req)? {
        Action::Status => {
            let (reply, rx) = oneshot::channel();
            inbox.send(Input::Status { reply }).map_err(|_| stopped())?;
            Ok(convert::status(rx.await.map_err(|_| stopped())?))
        }
        Action::Members(op) => {
            let (reply, rx) = oneshot::channel();
            inbox
                .send(Input::ChangeMembers { op, reply })
                .map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())??;
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
                    reply,
                })
                .map_err(|_| stopped())?;
            Ok(convert::outcome(rx.await.map_err(|_| stopped())??))
        }
        Action::KeepAlive { session } => {
            let (reply, rx) = oneshot::channel();
            inbox
                .send(Input::KeepAlive { session, reply })
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
                .send(Input::Read { query, reply })
                .map_err(|_| stopped())?;
            Ok(convert::outcome(rx.await.map_err(|_| stopped())??))
        }
    }
}
