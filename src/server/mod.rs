//! `lockfs serve`: one member of a cluster.
//!
//! Layers, top to bottom: [`service`] accepts peers and clients on one port; [`transport`] sends
//! raft messages to peers; [`node`] runs the Raft loop and is the only owner of the state machine
//! (`crate::state`) and the store (`crate::storage`). All three share one thread and its
//! single-threaded tokio runtime; a Raft turn is plain synchronous code, so its behaviour is a
//! function of its inputs.
//!
//! A node starts in one of three ways, decided by its data directory alone (`prepare`): with
//! data, it recovers as itself (whatever the flags say about peers); empty with `--join`, it
//! asks the cluster to add it as a learner and catches up from a snapshot; empty without, it
//! bootstraps the initial cluster from `--peers`, as every other initial member does.
//!
//! [`Server::start`] prepares the data directory and starts the node on a runtime the caller
//! owns; [`Server::shutdown`] stops it, and the Raft loop's failure is returned, never turned
//! into an exit from inside. [`serve`] (`lockfs serve`) adds the signals; tests start nodes
//! in-process the same way.

mod admission;
mod authz;
mod cache;
pub mod clock;
pub mod config;
pub(crate) mod convert;
pub(crate) mod entry;
mod error;
pub(crate) mod events;
#[cfg(test)]
mod harness;
pub(crate) mod integrity;
pub(crate) mod limits;
pub(crate) mod log_formats;
pub mod membership;
pub mod metrics;
pub mod node;
mod service;
mod session_timers;
mod transport;

use std::sync::Arc;

use raft::prelude::ConfState;

pub use cache::MAX_CACHE_TTL;
pub use config::ServeConfig;
pub use error::{errno, ServerError, EXIT_CORRUPT};

use crate::auth::{Role, Tls};
use crate::client::{answer, ops, Client};
use crate::state::StateMachine;
use crate::storage::{Identity, MemberInfo, Members, RaftLog, Store, WriteBatch};
use node::{Input, Node};

/// How long a restarting node given --join tries to learn that cluster's id.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a joining node waits for the cluster to add it.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs a node until SIGINT or SIGTERM, or until its Raft loop halts (a storage or
/// consistency failure: the error is returned).
pub fn serve(cfg: ServeConfig) -> Result<(), ServerError> {
    exit_on_panic();
    // The node runs on a thread of its own (see `Server::start`); this runtime only waits for
    // the signals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Io("starting the runtime".into(), e))?;
    let mut server = Server::start(cfg)?;
    let outcome = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| ServerError::Io("installing a SIGTERM handler".into(), e))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => log::info!("interrupted; stopping"),
            _ = term.recv() => log::info!("terminated; stopping"),
            _ = server.halted() => {}
        }
        Ok::<(), ServerError>(())
    });
    let result = server.shutdown();
    outcome.and(result)
}

/// A running node: its Raft loop, its service (peers and clients on one port), its links to the
/// peers and its metrics, all on one thread of its own. Started by [`serve`], or in-process by
/// a test; stopped with [`Server::shutdown`], never by ending the process.
pub struct Server {
    addr: std::net::SocketAddr,
    inbox: node::InboxSender,
    node_thread: std::thread::JoinHandle<Result<(), ServerError>>,
    /// Fires when the Raft loop ended by itself.
    halted: tokio::sync::watch::Receiver<bool>,
}

impl Server {
    /// Prepares the data directory (see [`prepare`]), binds the listener and starts the node.
    /// Not from inside an async context: it waits for the preparation.
    ///
    /// The node's network tasks and its Raft loop share one single-threaded runtime on the
    /// node's thread. A Raft turn runs synchronously there, disk writes included; between
    /// turns the tasks read what arrived and write what the turn queued. So a message or an
    /// answer never waits for another thread to wake up (on 2 cores shared by three members
    /// and their clients, that cut the members' CPU per write by about a fifth).
    pub fn start(cfg: ServeConfig) -> Result<Server, ServerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServerError::Io("starting the runtime".into(), e))?;
        let tls = node_tls(&cfg)?;
        let store = Store::open(&cfg.data)?;
        let (cluster_id, raft_log) = prepare(&cfg, &store, &tls, &runtime)?;
        let recovered = recover(store, raft_log)?;
        let applied = recovered.applied;

        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&cfg.listen))
            .map_err(|e| ServerError::Io(format!("listening on {}", cfg.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Io(format!("listening on {}", cfg.listen), e))?;
        log::info!(
            "node {} listening on {} (applied index {applied})",
            cfg.id,
            cfg.listen
        );

        let (inbox_tx, inbox_rx) = node::inbox();
        let peers = recovered
            .raft_log
            .members()
            .iter()
            .map(|(id, m)| (*id, m.addr.clone()))
            .collect();
        let formats = Arc::new(log_formats::LogFormats::default());
        let transport = transport::Transport::start(
            cluster_id,
            cfg.id,
            &peers,
            inbox_tx.clone(),
            runtime.handle().clone(),
            tls.clone(),
            (cfg.log_format, formats.clone()),
        );
        let (metrics, registry) = metrics::NodeMetrics::new();
        let metrics = Arc::new(metrics);
        let events = Arc::new(events::EventRouter::counting(metrics.events_pushed.clone()));
        let service = Arc::new(service::Service {
            cluster_id,
            node_id: cfg.id,
            peers: transport.book(),
            inbox: inbox_tx.clone(),
            events: events.clone(),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            tls,
            admission: Arc::default(),
            client_max_frame: crate::proto::client_request_limit(cfg.max_file_size),
            idle_timeout: cfg.idle_timeout,
            max_requests: cfg.max_requests,
            requests: Arc::new(tokio::sync::Semaphore::new(cfg.max_requests)),
            counts: Arc::default(),
            metrics: metrics.clone(),
            log_format: cfg.log_format,
            formats: formats.clone(),
        });
        let data = cfg.data.clone();
        // Bound before the Raft loop starts, so a bad address fails the start, not a live node.
        let metrics_server = match &cfg.metrics_listen {
            Some(addr) => {
                let pages = Arc::new(metrics_pages(registry, metrics.clone(), inbox_tx.clone()));
                let server = runtime
                    .block_on(crate::metrics::bind(addr, pages))
                    .map_err(|e| ServerError::Io(format!("serving metrics on {addr}"), e))?;
                Some(server)
            }
            None => None,
        };
        let io = node::NodeIo {
            links: Box::new(transport),
            inbox: inbox_rx,
            clock: Arc::new(clock::SystemClock),
            secrets: Box::new(rand::random::<u128>),
            formats,
        };
        let node = Node::new(cfg, cluster_id, recovered, io, events, metrics.clone())?;
        let (halt, halted) = tokio::sync::watch::channel(false);
        let node_thread = std::thread::Builder::new()
            .name("lockfs-node".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    tokio::spawn(service.serve(listener));
                    if let Some(server) = metrics_server {
                        tokio::spawn(server);
                    }
                    node.run().await
                });
                // Ends the service, the links and the metrics with the Raft loop.
                drop(runtime);
                match &result {
                    // Halting is the safe answer to a storage or consistency failure: the other
                    // replicas carry on, and this one must not serve or acknowledge anything more.
                    Err(e) if e.is_corrupt() => {
                        log::error!("halting: {e}; {}", ServerError::corrupt_advice(&data))
                    }
                    Err(e) => log::error!("halting: {e}"),
                    Ok(()) => {}
                }
                let _ = halt.send(true);
                result
            })
            .map_err(|e| ServerError::Io("starting the node's thread".into(), e))?;
        Ok(Server {
            addr,
            inbox: inbox_tx,
            node_thread,
            halted,
        })
    }

    /// The address the node listens on (its port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Completes when the Raft loop has ended by itself (a storage or consistency failure;
    /// [`Server::shutdown`] then returns its error).
    pub async fn halted(&mut self) {
        let _ = self.halted.wait_for(|h| *h).await;
    }

    /// Stops the node: the Raft loop ends after its turn, and the service, the links and the
    /// metrics with it. Returns how the Raft loop ended.
    pub fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.inbox.send(Input::Shutdown);
        self.node_thread
            .join()
            .unwrap_or_else(|_| Err(ServerError::Config("the node's thread panicked".into())))
    }
}

/// The state a prepared data directory holds, as the node starts from it.
fn recover(store: Store, mut raft_log: RaftLog) -> Result<node::Recovered, ServerError> {
    let (applied, records) = store.state_store().load()?;
    let digest = integrity::RecordDigest::of_records(&records);
    let machine = StateMachine::from_records(records)?;
    if applied > raft_log.hard_state().commit {
        // Entries are applied before the hard state of the same turn is written; a crash in
        // between leaves the applied index ahead of the stored commit index. Applied entries
        // were committed, so the commit index can safely catch up.
        let mut batch = WriteBatch::default();
        raft_log.stage_commit(&mut batch, applied);
        store.write(batch, true)?;
    }
    Ok(node::Recovered {
        store,
        raft_log,
        machine,
        digest,
        applied,
    })
}

/// Makes the data directory ready to start from, in one of three ways decided by its contents
/// alone (see the module's comment): recovering, joining, or bootstrapping the initial
/// cluster. Returns the cluster's id and the Raft log.
fn prepare(
    cfg: &ServeConfig,
    store: &Store,
    tls: &Tls,
    runtime: &tokio::runtime::Runtime,
) -> Result<(u64, RaftLog), ServerError> {
    let mut raft_log = store.raft_log()?;
    let book = |peers: &std::collections::BTreeMap<u64, String>| -> Members {
        peers
            .iter()
            .map(|(id, addr)| {
                let info = MemberInfo {
                    addr: addr.clone(),
                    promote: true,
                };
                (*id, info)
            })
            .collect()
    };
    let cluster_id = if raft_log.is_initialized() {
        // Restarted with --join (a unit file keeps its flags): refuse only if the cluster named
        // there is provably another one; if it cannot be asked, this node's data decides.
        let others: Vec<String> = cfg
            .join
            .iter()
            .filter(|a| **a != cfg.listen)
            .cloned()
            .collect();
        if !others.is_empty() {
            match runtime.block_on(cluster_id_at(&others, tls, PROBE_TIMEOUT)) {
                Ok(theirs) => {
                    check_identity(store, cfg, theirs, true)?;
                }
                Err(e) => log::warn!("not checking the cluster to join: {e}"),
            }
        }
        if !cfg.join.is_empty() {
            log::info!(
                "{} already holds node {}'s data: recovering as itself, not joining",
                cfg.data.display(),
                cfg.id
            );
        }
        let cluster_id = check_identity(store, cfg, config::cluster_id_for(&cfg.peers), false)?;
        if raft_log.members().is_empty() {
            // Written before the member book existed: the initial peers are the book.
            let mut batch = WriteBatch::default();
            raft_log.stage_members(&mut batch, book(&cfg.peers));
            store.write(batch, true)?;
        }
        cluster_id
    } else if !cfg.join.is_empty() {
        let (cluster_id, members) = runtime.block_on(join(cfg, tls))?;
        check_identity(store, cfg, cluster_id, true)?;
        // Only the addresses, to talk to the leader until its snapshot arrives: the snapshot
        // brings the configuration, the member book and the state, all at one index.
        let mut batch = WriteBatch::default();
        raft_log.stage_members(&mut batch, members);
        store.write(batch, true)?;
        log::info!(
            "node {} joined cluster {cluster_id:016x} as a learner; catching up",
            cfg.id
        );
        cluster_id
    } else {
        let cluster_id = check_identity(store, cfg, config::cluster_id_for(&cfg.peers), false)?;
        // A fresh data directory: every node of the initial cluster starts from the same
        // configuration, so they agree on the voters without any exchange.
        let cs = ConfState {
            voters: cfg.peers.keys().copied().collect(),
            ..Default::default()
        };
        let mut batch = WriteBatch::default();
        raft_log.stage_conf_state(&mut batch, cs);
        raft_log.stage_members(&mut batch, book(&cfg.peers));
        store.write(batch, true)?;
        log::info!(
            "node {} initialized {} for cluster {cluster_id:016x} with voters {}",
            cfg.id,
            cfg.data.display(),
            config::format_peers(&cfg.peers)
        );
        cluster_id
    };
    Ok((cluster_id, raft_log))
}

/// What `--metrics-listen` serves: the node's metrics, with its gauges and verdicts read from
/// the Raft loop when asked.
fn metrics_pages(
    registry: prometheus_client::registry::Registry,
    metrics: Arc<metrics::NodeMetrics>,
    inbox: node::InboxSender,
) -> crate::metrics::Pages {
    let ask = move || {
        let inbox = inbox.clone();
        async move {
            let (reply, rx) = tokio::sync::oneshot::channel();
            inbox.send(Input::Gauges { reply }).ok()?;
            rx.await.ok()
        }
    };
    let verdict = |check: fn(&metrics::Gauges) -> Result<(), String>| {
        let ask = ask.clone();
        Box::new(move || {
            let gauges = ask();
            Box::pin(async move {
                let gauges = gauges.await;
                check(&gauges.ok_or_else(|| "the raft loop does not answer".to_string())?)
            }) as crate::metrics::BoxFuture<_>
        }) as Box<dyn Fn() -> crate::metrics::BoxFuture<Result<(), String>> + Send + Sync>
    };
    let (health, ready) = (
        verdict(metrics::Gauges::health),
        verdict(metrics::Gauges::ready),
    );
    crate::metrics::Pages {
        registry,
        refresh: Box::new(move || {
            let (gauges, metrics) = (ask(), metrics.clone());
            Box::pin(async move {
                if let Some(g) = gauges.await {
                    metrics.set(&g);
                }
            })
        }),
        health,
        ready,
    }
}

/// Makes sure the data directory belongs to this node of this cluster, claiming it if new.
/// `wanted` is the id of the cluster the flags name; when `strict` (the id came from a cluster
/// we are to join), a directory of another cluster is refused.
fn check_identity(
    store: &Store,
    cfg: &ServeConfig,
    wanted: u64,
    strict: bool,
) -> Result<u64, ServerError> {
    match store.identity()? {
        Some(id) if id.node_id != cfg.id => Err(ServerError::Config(format!(
            "{} holds the data of node {}, not node {}",
            cfg.data.display(),
            id.node_id,
            cfg.id
        ))),
        Some(id) if strict && id.cluster_id != wanted => Err(ServerError::Config(format!(
            "{} holds data of cluster {:016x}, but the cluster at {} is {wanted:016x}; \
             use an empty data directory to join it",
            cfg.data.display(),
            id.cluster_id,
            cfg.join.join(",")
        ))),
        Some(id) => {
            if id.cluster_id != wanted && !strict && !cfg.peers.is_empty() {
                log::info!(
                    "--peers differ from those the cluster {:016x} started with; keeping its id",
                    id.cluster_id
                );
            }
            Ok(id.cluster_id)
        }
        None => {
            store.set_identity(Identity {
                cluster_id: wanted,
                node_id: cfg.id,
            })?;
            Ok(wanted)
        }
    }
}

/// Makes any panic, on any thread, end the process with status 70 after one clear log line: a
/// node with a dead Raft thread or network task must not live on serving nothing, and a
/// supervisor (`Restart=on-failure`) restarts a process that exited.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic, exiting: {info}");
        default(info);
        std::process::exit(70);
    }));
}

/// This node's TLS credentials, which must be a peer certificate for its id (or plain TCP).
fn node_tls(cfg: &ServeConfig) -> Result<Tls, ServerError> {
    let tls = Tls::load(cfg.tls_dir.as_deref(), cfg.insecure)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    match tls.identity() {
        None => log::warn!(
            "--insecure: plain TCP without authentication; anyone who can reach {} owns the \
             cluster",
            cfg.listen
        ),
        Some(id) if id.role == Role::Peer(cfg.id) => {
            log::info!("authenticating as {id}")
        }
        Some(id) => {
            return Err(ServerError::Config(format!(
                "the certificate in {} is for {id}, not for peer node {}",
                cfg.tls_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display(),
                cfg.id
            )))
        }
    }
    Ok(tls)
}

fn client_for(addrs: &[String], id: u64, tls: &Tls, timeout: std::time::Duration) -> Client {
    Client::new(
        addrs.to_vec(),
        timeout,
        format!("lockfs-serve-{id}"),
        tls.clone(),
    )
}

/// The id of the cluster at `addrs`.
async fn cluster_id_at(
    addrs: &[String],
    tls: &Tls,
    timeout: std::time::Duration,
) -> Result<u64, ServerError> {
    match client_for(addrs, 0, tls, timeout).status().await {
        Ok(s) => Ok(s.cluster_id),
        Err(e) => Err(ServerError::Config(format!(
            "asking {} for its cluster id: {e}",
            addrs.join(",")
        ))),
    }
}

/// Asks the cluster at `cfg.join` to add this node as a learner; returns the cluster's id and
/// member book. Safe to repeat: adding a member that is already there at the same address
/// succeeds.
async fn join(cfg: &ServeConfig, tls: &Tls) -> Result<(u64, Members), ServerError> {
    log::info!(
        "node {} asking {} to add it at {}",
        cfg.id,
        cfg.join.join(","),
        cfg.listen
    );
    let op = ops::add_member(cfg.id, &cfg.listen, cfg.learner);
    let answer = match client_for(&cfg.join, cfg.id, tls, JOIN_TIMEOUT)
        .call(op)
        .await
    {
        Ok(res) => answer::status("a join request", res),
        Err(e) => Err(e),
    };
    match answer {
        Ok(s) => {
            let members = s
                .members
                .iter()
                .map(|m| {
                    let info = MemberInfo {
                        addr: m.addr.clone(),
                        promote: m.promote,
                    };
                    (m.id, info)
                })
                .collect();
            Ok((s.cluster_id, members))
        }
        Err(e) => Err(ServerError::Config(format!(
            "joining the cluster at {}: {e}",
            cfg.join.join(",")
        ))),
    }
}
