//! A fault-injecting TCP proxy in front of one node, for network partitions on loopback.
//!
//! The proxy never looks at the bytes (they are TLS): it knows who dials by the process at the
//! other end of the connection, which runs on this machine. On accept it finds the dialer's
//! socket in `/proc/net/tcp` (or `tcp6`) by its two addresses, and the process that holds that
//! socket open by scanning `/proc/*/fd` (the tests run as root, so every process is readable).
//! A `lockfs serve --id N` is the peer `N`; any other process is a client named `lockfs[PID]`.
//! A dialer that cannot be found (it is already gone) counts as a client that is never
//! blocked.
//!
//! A blocked dialer is hung up on at once; otherwise the proxy connects to the node and copies
//! bytes both ways, unchanged. Blocking a dialer also cuts its live connections, so a partition
//! takes effect at once, in both directions when both ends are blocked (`Cluster::partition`).
//! The nodes advertise the proxies' addresses, so clients and peers reach each other only
//! through them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Who dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Party {
    Peer(u64),
    /// Clients whose name (`lockfs[PID]`) contains this.
    Client(String),
}

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
    inbound: TcpStream,
    backend: String,
    rules: Arc<Rules>,
    mut changed: watch::Receiver<u64>,
) {
    let (Ok(dialer), Ok(proxy)) = (inbound.peer_addr(), inbound.local_addr()) else {
        return;
    };
    // `changed` was subscribed at accept: a block from now on is seen below, by `cut`.
    let who = tokio::task::spawn_blocking(move || identify(dialer, proxy))
        .await
        .ok()
        .flatten();
    let blocked = || who.as_ref().is_some_and(|w| rules.blocks(w));
    if blocked() {
        return;
    }
    let Ok(outbound) = TcpStream::connect(&backend).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
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
            if changed.changed().await.is_err() || blocked() {
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

/// Who dialed the connection from `dialer` to the proxy at `proxy`: the peer `N` if the
/// dialing process is a `lockfs serve` given `--id N`, else the client `lockfs[PID]`; None if
/// the dialing process cannot be found.
fn identify(dialer: SocketAddr, proxy: SocketAddr) -> Option<Party> {
    let pid = dialing_process(dialer, proxy)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_lockfs = args
        .first()
        .is_some_and(|a| std::path::Path::new(a).file_name() == Some("lockfs".as_ref()));
    let serve = is_lockfs && args.get(1).is_some_and(|a| a == "serve");
    let id = args.iter().enumerate().find_map(|(i, a)| {
        let value = match a.strip_prefix("--id=") {
            Some(value) => value,
            None if a == "--id" => args.get(i + 1)?.as_str(),
            None => return None,
        };
        value.parse().ok()
    });
    Some(match (serve, id) {
        (true, Some(id)) => Party::Peer(id),
        _ => Party::Client(format!("lockfs[{pid}]")),
    })
}

/// The process on this machine that dialed the TCP connection from `dialer` to `proxy`: the
/// socket whose local address is `dialer` and remote address is `proxy` is looked up by inode
/// in `/proc/net/tcp` and `/proc/net/tcp6`, and its holder among the links `/proc/PID/fd/*`
/// (`socket:[INODE]`). Processes named `lockfs`, and this one (in-process clients), are searched
/// first: they are the usual dialers. None once the dialer has closed the socket or exited.
/// Bounded by the number of sockets and of open files on the machine; reads only `/proc`.
fn dialing_process(dialer: SocketAddr, proxy: SocketAddr) -> Option<u32> {
    let (dialer, proxy) = (unmapped(dialer), unmapped(proxy));
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            // After the header: "sl local_address rem_address st tx:rx tr:when retrnsmt uid
            // timeout inode ...".
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (local, remote) = (proc_addr(f.get(1)?)?, proc_addr(f.get(2)?)?);
                let inode: u64 = f.get(9)?.parse().ok()?;
                (local == dialer && remote == proxy && inode != 0).then_some(inode)
            })
        })?;
    let link = std::path::PathBuf::from(format!("socket:[{inode}]"));
    let me = std::process::id();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let named_lockfs = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "lockfs")
    };
    let (likely, others): (Vec<u32>, Vec<u32>) = pids
        .into_iter()
        .partition(|&pid| pid == me || named_lockfs(pid));
    likely.into_iter().chain(others).find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == link))
        })
    })
}

/// An address as `/proc/net/tcp{,6}` prints it: the IP address as hexadecimal 32-bit words, each
/// in the machine's byte order, a colon, and the port in hexadecimal.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        32 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(unmapped(SocketAddr::new(ip, port)))
}

/// `addr` with an IPv4-mapped IPv6 address (an IPv6 socket's view of IPv4) as plain IPv4.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}
