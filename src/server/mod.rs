//! `lockfs serve`: one member of a cluster.
//!
//! Layers, top to bottom: [`service`] accepts peers and clients on one port; [`transport`] sends
//! raft messages to peers; [`node`] runs the Raft loop on its own thread and is the only owner of
//! the state machine (`crate::state`) and the store (`crate::storage`). The tokio runtime does the
//! network; the Raft loop is plain synchronous code, so its behaviour is a function of its inputs.

pub mod config;
mod convert;
mod entry;
mod error;
mod events;
pub mod node;
mod service;
mod transport;

use std::sync::Arc;

use raft::prelude::ConfState;

pub use config::ServeConfig;
pub use error::{errno, ServerError};

use crate::state::StateMachine;
use crate::storage::{Identity, Store, WriteBatch};
use node::{Input, Node};

/// Runs a node until SIGINT or SIGTERM.
pub fn serve(cfg: ServeConfig) -> Result<(), ServerError> {
    let store = Store::open(&cfg.data)?;
    let cluster_id = check_identity(&store, &cfg)?;
    let mut raft_log = store.raft_log()?;
    if !raft_log.is_initialized() {
        // A fresh data directory: every node of the initial cluster starts from the same
        // configuration, so they agree on the voters without any exchange.
        let cs = ConfState {
            voters: cfg.peers.keys().copied().collect(),
            ..Default::default()
        };
        let mut batch = WriteBatch::default();
        raft_log.stage_conf_state(&mut batch, cs);
        store.write(batch, true)?;
        log::info!(
            "node {} initialized {} for cluster {cluster_id:016x} with voters {}",
            cfg.id,
            cfg.data.display(),
            config::format_peers(&cfg.peers)
        );
    }
    let (applied, records) = store.state_store().load()?;
    let machine = StateMachine::from_records(records)?;
    if applied > raft_log.hard_state().commit {
        // Entries are applied before the hard state of the same turn is written; a crash in
        // between leaves the applied index ahead of the stored commit index. Applied entries
        // were committed, so the commit index can safely catch up.
        let mut batch = WriteBatch::default();
        raft_log.stage_commit(&mut batch, applied);
        store.write(batch, true)?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lockfs-net")
        .build()
        .map_err(|e| ServerError::Io("starting the runtime".into(), e))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&cfg.listen))
        .map_err(|e| ServerError::Io(format!("listening on {}", cfg.listen), e))?;
    log::info!(
        "node {} listening on {} (applied index {applied})",
        cfg.id,
        cfg.listen
    );

    let (inbox_tx, inbox_rx) = std::sync::mpsc::channel();
    let transport = {
        let _guard = runtime.enter();
        transport::Transport::start(cluster_id, cfg.id, &cfg.peers, inbox_tx.clone())
    };
    let events = Arc::new(events::EventRouter::default());
    let service = Arc::new(service::Service {
        cluster_id,
        node_id: cfg.id,
        peers: cfg.peers.clone(),
        inbox: inbox_tx.clone(),
        events: events.clone(),
        next_conn: std::sync::atomic::AtomicU64::new(1),
    });
    let node = Node::new(
        cfg, cluster_id, store, raft_log, machine, applied, transport, inbox_rx, events,
    )?;
    let raft_thread = std::thread::Builder::new()
        .name("lockfs-raft".into())
        .spawn(move || {
            let result = node.run();
            if let Err(e) = &result {
                // Halting is the safe answer to a storage or consistency failure: the other
                // replicas carry on, and this one must not serve or acknowledge anything more.
                log::error!("halting: {e}");
                std::process::exit(1);
            }
            result
        })
        .map_err(|e| ServerError::Io("starting the raft thread".into(), e))?;

    let stop_watch = {
        let _guard = runtime.enter();
        tokio::spawn(service.serve(listener))
    };
    let outcome = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| ServerError::Io("installing a SIGTERM handler".into(), e))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => log::info!("interrupted; stopping"),
            _ = term.recv() => log::info!("terminated; stopping"),
        }
        Ok::<(), ServerError>(())
    });
    stop_watch.abort();
    let _ = inbox_tx.send(Input::Shutdown);
    let node_result = raft_thread
        .join()
        .unwrap_or_else(|_| Err(ServerError::Config("the raft thread panicked".into())));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome.and(node_result)
}

/// Makes sure the data directory belongs to this node of this cluster, claiming it if new.
fn check_identity(store: &Store, cfg: &ServeConfig) -> Result<u64, ServerError> {
    let wanted = config::cluster_id_for(&cfg.peers);
    match store.identity()? {
        Some(id) if id.node_id != cfg.id => Err(ServerError::Config(format!(
            "{} holds the data of node {}, not node {}",
            cfg.data.display(),
            id.node_id,
            cfg.id
        ))),
        Some(id) => {
            if id.cluster_id != wanted {
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
