//! A fault-injecting TCP proxy in front of one node, for network partitions on loopback.
//!
//! Every connection to a node starts with a `Hello` frame that names the dialer: a peer by its
//! node id, a client by its name (the CLI's and a mount's is "lockfs-cli@HOST[PID]"). The proxy
//! reads that
//! frame, and if the dialer is blocked it hangs up; otherwise it forwards the frame and then
//! copies bytes both ways. Blocking a dialer also cuts its live connections, so a partition
//! takes effect at once, in both directions when both ends are blocked (`Cluster::partition`).
//! The nodes advertise the proxies' addresses, so clients and peers reach each other only
//! through them.

use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Who dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Party {
    Peer(u64),
    /// Clients whose hello name contains this.
    Client(String),
}

/// Largest hello frame the proxy reads.
const HELLO_MAX: u32 = 64 * 1024;

#[derive(Default)]
struct Rules {
    blocked: Mutex<Vec<Party>>,
}

impl Rules {
    fn blocks(&self, who: &Party) -> bool {
        self.blocked.lock().unwrap().iter().any(|b| match (b, who) {
            (Party::Peer(a), Party::Peer(b)) => a == b,
            (Party::Client(pattern), Party::Client(name)) => name.contains(pattern.as_str()),
            _ => false,
        })
    }
}

pub struct Proxy {
    pub addr: String,
    rules: Arc<Rules>,
    /// Bumped on every change of the rules: live connections check themselves again.
    changed: watch::Sender<u64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `backend`.
    pub fn start(backend: String) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listen");
        let addr = listener.local_addr().unwrap().to_string();
        let rules = Arc::new(Rules::default());
        let (changed, _) = watch::channel(0u64);
        let (r, c) = (rules.clone(), changed.clone());
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(relay(stream, backend.clone(), r.clone(), c.subscribe()));
            }
        });
        Proxy {
            addr,
            rules,
            changed,
            runtime: Some(runtime),
        }
    }

    pub fn block(&self, who: Party) {
        self.rules.blocked.lock().unwrap().push(who);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn heal(&self) {
        self.rules.blocked.lock().unwrap().clear();
        self.changed.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn relay(
    mut inbound: TcpStream,
    backend: String,
    rules: Arc<Rules>,
    mut changed: watch::Receiver<u64>,
) {
    let Ok(len) = inbound.read_u32().await else {
        return;
    };
    if len > HELLO_MAX {
        return;
    }
    let mut hello = vec![0u8; len as usize];
    if inbound.read_exact(&mut hello).await.is_err() {
        return;
    }
    use lockfs::proto::Hello_oneof_kind as Kind;
    let who = match lockfs::proto::Hello::parse_from_bytes(&hello).map(|h| h.kind) {
        Ok(Some(Kind::peer(p))) => Party::Peer(p.from),
        Ok(Some(Kind::client(c))) => Party::Client(c.name),
        _ => return,
    };
    if rules.blocks(&who) {
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(&backend).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    if outbound.write_u32(len).await.is_err() || outbound.write_all(&hello).await.is_err() {
        return;
    }
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    let copy = async {
        tokio::select! {
            _ = tokio::io::copy(&mut ri, &mut wo) => {}
            _ = tokio::io::copy(&mut ro, &mut wi) => {}
        }
    };
    let cut = async {
        loop {
            if changed.changed().await.is_err() || rules.blocks(&who) {
                return;
            }
        }
    };
    // Either way both connections drop here: the two ends see the link break.
    tokio::select! {
        _ = copy => {}
        _ = cut => {}
    }
}
