//! One pipelined connection to one server: mutual TLS (unless the client is `--insecure`), a
//! hello, then a writer task sends requests and a reader task matches responses to waiting
//! callers by request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthError, Expect, Tls};
use crate::proto::{self, frame::FramedConn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const QUEUE: usize = 1024;

/// Why a connection could not be opened.
#[derive(Debug, Clone)]
pub enum OpenError {
    /// The server refused us, or we refused it (certificates, plain TCP against TLS, protocol
    /// version): trying the same server again will not help.
    Refused(String),
    /// Anything else (unreachable, timed out, reset): worth trying again.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused(m) | OpenError::Failed(m) => f.write_str(m),
        }
    }
}

/// A frame error while saying hello: TLS refusals surface here as invalid data (the server
/// checks our certificate after the handshake, and says so with an alert).
fn hello_error(e: proto::frame::FrameError) -> OpenError {
    match &e {
        proto::frame::FrameError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            OpenError::Refused(format!("the node refused this client: {e}"))
        }
        _ => OpenError::Failed(e.to_string()),
    }
}

/// How a call failed at the connection level.
pub enum CallError {
    /// The request never left: safe to send again elsewhere.
    NotSent(String),
    /// The connection broke after the request was sent.
    Lost(String),
    TimedOut,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<proto::Response>>>>;

pub struct Conn {
    pub addr: String,
    tx: mpsc::Sender<proto::Request>,
    waiters: Waiters,
    open: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The reader would otherwise wait on the socket for as long as the server keeps it open.
        self.reader.abort();
    }
}

/// Where a connection hands what the server pushes.
pub struct Pushes {
    /// The sessions that session events are for. Each event is handed over before the reader
    /// reads on, so a reply that follows an event on the wire is seen after it: a grant pushed
    /// before the answer that says the session expired reaches its wait first.
    pub sessions: super::session::SessionRoutes,
    /// Watch events, tagged with `epoch`, the connection's number.
    pub watches: Arc<super::watches::WatchRoutes>,
    pub epoch: u64,
    /// Told when the connection closes, so that whoever keeps the session alive reconnects at
    /// once instead of at its next keep-alive.
    pub closed: Arc<tokio::sync::Notify>,
}

impl Conn {
    /// Connects to `addr` as `tls` says; what the server pushes goes where `pushes` says.
    pub async fn open(
        addr: &str,
        name: &str,
        tls: &Tls,
        pushes: Pushes,
    ) -> Result<Conn, OpenError> {
        let failed = |m: String| OpenError::Failed(m);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| failed("connect timed out".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(stream, Expect::AnyPeer))
            .await
            .map_err(|_| failed("TLS handshake timed out".into()))?
            .map_err(|e| match e {
                AuthError::Io(..) => OpenError::Failed(e.to_string()),
                _ => OpenError::Refused(e.to_string()),
            })?;
        let mut framed = FramedConn::new(stream, proto::HELLO_MAX_FRAME);
        let mut hello = proto::Hello::new();
        hello.version = proto::PROTOCOL_VERSION;
        hello.mut_client().name = name.to_string();
        framed.send(&hello).await.map_err(hello_error)?;
        let reply: proto::HelloReply = tokio::time::timeout(CONNECT_TIMEOUT, framed.recv())
            .await
            .map_err(|_| failed("no hello reply".into()))?
            .map_err(hello_error)?;
        if let Some(err) = reply.error.as_ref() {
            return Err(OpenError::Refused(format!("refused: {}", err.message)));
        }
        framed.set_max_frame(proto::CLIENT_MAX_FRAME);
        let (mut reader, mut writer) = framed.split();

        let waiters: Waiters = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel::<proto::Request>(QUEUE);
        let writer_open = open.clone();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if writer.send_all(&req, || rx.try_recv().ok()).await.is_err() {
                    break;
                }
            }
            writer_open.store(false, Ordering::SeqCst);
        });
        let reader_waiters = waiters.clone();
        let reader_open = open.clone();
        let reader = tokio::spawn(async move {
            while let Ok(frame) = reader.recv::<proto::ServerFrame>().await {
                let resp = match frame.kind {
                    Some(proto::ServerFrame_oneof_kind::response(r)) => r,
                    Some(proto::ServerFrame_oneof_kind::event(e)) => {
                        super::session::dispatch_event(&pushes.sessions, e);
                        continue;
                    }
                    Some(proto::ServerFrame_oneof_kind::watch_event(e)) => {
                        pushes.watches.deliver(pushes.epoch, e);
                        continue;
                    }
                    None => continue,
                };
                if resp.id == 0 {
                    // The server gave up on the connection (bad frame); it closes next.
                    log::warn!(
                        "server closed the connection: {}",
                        resp.error.as_ref().map_or("", |e| e.message.as_str())
                    );
                    break;
                }
                let waiter = reader_waiters.lock().expect("poisoned").remove(&resp.id);
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            reader_open.store(false, Ordering::SeqCst);
            // Dropping the senders tells every waiter that its answer will never come.
            reader_waiters.lock().expect("poisoned").clear();
            pushes.closed.notify_waiters();
        });
        Ok(Conn {
            addr: addr.to_string(),
            tx,
            waiters,
            open,
            reader,
        })
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst) && !self.tx.is_closed()
    }

    pub async fn call(
        &self,
        req: proto::Request,
        timeout: Duration,
    ) -> Result<proto::Response, CallError> {
        let id = req.id;
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("poisoned").insert(id, tx);
        if !self.is_open() || self.tx.send(req).await.is_err() {
            self.waiters.lock().expect("poisoned").remove(&id);
            return Err(CallError::NotSent(format!(
                "{}: connection closed",
                self.addr
            )));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(CallError::Lost(format!("{}: connection lost", self.addr))),
            Err(_) => {
                self.waiters.lock().expect("poisoned").remove(&id);
                Err(CallError::TimedOut)
            }
        }
    }
}
