//! A node's metrics (`lockfs serve --metrics-listen HOST:PORT`), served by `crate::metrics`.
//!
//! Counters and histograms are moved where things happen: the Raft loop (`node.rs`: proposals,
//! disk syncs, snapshots, leader changes, and what applying the log did to sessions and
//! locks), the service (`service.rs`: requests, connections) and the event router
//! (`events.rs`: events pushed). Gauges of the state (sessions, nodes, locks, Raft indexes,
//! peers' lag) are read from the Raft loop when `/metrics` is asked for ([`Gauges`]), so
//! keeping them costs the loop nothing between scrapes.
//!
//! Every node applies the same log, so the counters of what applying did (grants, expiries,
//! sessions opened) agree across replicas that applied the same entries since they started;
//! times (waits, holds, latencies) are this node's own clock. Label values come from fixed
//! sets (request kinds, outcomes, peer ids), so no client can grow the number of series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::ServerError;
use crate::state::Stats;

/// `/health` fails when this replica's applied index is this far behind the commit index.
pub const HEALTH_LAG: u64 = 10_000;
/// `/ready` fails when it is this far behind.
pub const READY_LAG: u64 = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: &'static str,
    /// "ok", or the error's short name ("not_found", "busy", ...).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: u64,
}

/// The kind of a client request, as the `kind` label says it.
pub fn request_kind(req: &crate::proto::Request) -> &'static str {
    use crate::proto::Request_oneof_op as Op;
    match &req.op {
        None => "none",
        Some(op) => match op {
            Op::mkdir(_) => "mkdir",
            Op::create(_) => "create",
            Op::write(_) => "write",
            Op::put(_) => "put",
            Op::truncate(_) => "truncate",
            Op::unlink(_) => "unlink",
            Op::rmdir(_) => "rmdir",
            Op::rename(_) => "rename",
            Op::set_attr(_) => "set_attr",
            Op::set_ephemeral(_) => "set_ephemeral",
            Op::set_max_holders(_) => "set_max_holders",
            Op::set_on_loss(_) => "set_on_loss",
            Op::link(_) => "link",
            Op::symlink(_) => "symlink",
            Op::stat(_) => "stat",
            Op::read(_) => "read",
            Op::readdir(_) => "readdir",
            Op::cluster_status(_) => "cluster_status",
            Op::member_change(_) => "member_change",
            Op::open_session(_) => "open_session",
            Op::keep_alive(_) => "keep_alive",
            Op::close_session(_) => "close_session",
            Op::open(_) => "open",
            Op::close(_) => "close",
            Op::lock(_) => "lock",
            Op::unlock(_) => "unlock",
            Op::cancel_wait(_) => "cancel_wait",
            Op::get_lock(_) => "get_lock",
            Op::list_locks(_) => "list_locks",
            Op::list_sessions(_) => "list_sessions",
            Op::watch(_) => "watch",
            Op::unwatch(_) => "unwatch",
            Op::cache_ack(_) => "cache_ack",
            Op::release_locks(_) => "release_locks",
        },
    }
}

/// The outcome of a request, as the `outcome` label says it.
pub fn request_outcome<T>(result: &Result<T, ServerError>) -> &'static str {
    use super::errno;
    let Err(e) = result else { return "ok" };
    match e {
        ServerError::NotLeader { .. } => "not_leader",
        ServerError::Unavailable(_) => "unavailable",
        ServerError::Busy(_) => "busy",
        ServerError::Denied { .. } => "denied",
        e => match e.code() {
            errno::ENOENT => "not_found",
            errno::EEXIST => "exists",
            errno::EACCES | errno::EPERM => "denied",
            errno::EINVAL => "invalid",
            errno::EDQUOT => "quota",
            errno::EAGAIN | errno::EBUSY => "would_block",
            errno::EKEYEXPIRED => "expired",
            errno::EIO => "io",
            _ => "error",
        },
    }
}

/// What the Raft loop reports when asked (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub leader_id: u64,
    pub is_leader: bool,
    /// Leader only: (peer, entries its log is behind the leader's).
    pub peer_lag: Vec<(u64, u64)>,
    pub diverged: bool,
    pub state: Stats,
}

impl Gauges {
    /// `/health`: this node is in a cluster with a known leader, its state has not diverged,
    /// and it has applied to within [`HEALTH_LAG`] entries of the commit index.
    pub fn health(&self) -> Result<(), String> {
        self.within(HEALTH_LAG)
    }

    /// `/ready` (send clients here): as `/health`, within [`READY_LAG`] entries.
    pub fn ready(&self) -> Result<(), String> {
        self.within(READY_LAG)
    }

    fn within(&self, lag: u64) -> Result<(), String> {
        if self.diverged {
            return Err("this replica's state diverged from the leader's; rebuild it".into());
        }
        if self.leader_id == 0 {
            return Err(format!("no known leader (term {})", self.term));
        }
        let behind = self.commit.saturating_sub(self.applied);
        if behind > lag {
            return Err(format!(
                "applied index {} is {behind} entries behind the commit index {}",
                self.applied, self.commit
            ));
        }
        Ok(())
    }
}

fn latency() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn long() -> Histogram {
    // 1 ms to about 70 minutes.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

fn seconds_family<L>() -> Family<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    Family::new_with_constructor(latency as fn() -> Histogram)
}

/// Every metric of a node. Cheap to share: each field is a handle.
pub struct NodeMetrics {
    // Raft and the disk.
    pub is_leader: Gauge,
    pub term: Gauge,
    pub leader_changes: Counter,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub proposals_committed: Counter,
    pub proposals_failed: Counter,
    pub proposal_seconds: Histogram,
    pub disk_sync_seconds: Histogram,
    pub snapshots_taken: Counter,
    pub snapshots_installed: Counter,
    pub snapshot_seconds: Family<KindLabel, Histogram>,
    pub peer_lag: Family<PeerLabel, Gauge>,
    // Sessions.
    pub sessions: Gauge,
    pub sessions_opened: Counter,
    pub sessions_closed: Counter,
    pub sessions_expired: Counter,
    pub keep_alives: Counter,
    pub jeopardy: Counter,
    // Locks.
    pub locks_held: Family<KindLabel, Gauge>,
    pub lock_waiters: Gauge,
    pub lock_grants: Counter,
    pub lock_wait_seconds: Histogram,
    pub lock_hold_seconds: Histogram,
    pub lock_delay_releases: Counter,
    pub fencing_refusals: Counter,
    // The tree, requests, connections, events.
    pub nodes: Gauge,
    pub bytes: Gauge,
    pub ephemeral_nodes: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<KindLabel, Histogram>,
    pub connections: Gauge,
    pub events_pushed: Counter,
}

impl NodeMetrics {
    /// The metrics, and a registry that holds them all under the `lockfs_` prefix.
    pub fn new() -> (NodeMetrics, Registry) {
        let m = NodeMetrics {
            is_leader: Gauge::default(),
            term: Gauge::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            proposal_seconds: latency(),
            disk_sync_seconds: latency(),
            snapshots_taken: Counter::default(),
            snapshots_installed: Counter::default(),
            snapshot_seconds: Family::new_with_constructor(long as fn() -> Histogram),
            peer_lag: Family::default(),
            sessions: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Counter::default(),
            sessions_expired: Counter::default(),
            keep_alives: Counter::default(),
            jeopardy: Counter::default(),
            locks_held: Family::default(),
            lock_waiters: Gauge::default(),
            lock_grants: Counter::default(),
            lock_wait_seconds: long(),
            lock_hold_seconds: long(),
            lock_delay_releases: Counter::default(),
            fencing_refusals: Counter::default(),
            nodes: Gauge::default(),
            bytes: Gauge::default(),
            ephemeral_nodes: Gauge::default(),
            requests: Family::default(),
            request_seconds: seconds_family(),
            connections: Gauge::default(),
            events_pushed: Counter::default(),
        };
        let mut registry = Registry::with_prefix("lockfs");
        let r = &mut registry;
        r.register(
            "raft_is_leader",
            "1 if this node is the leader",
            m.is_leader.clone(),
        );
        r.register("raft_term", "The Raft term this node is in", m.term.clone());
        r.register(
            "raft_leader_changes",
            "Times this node saw a new leader",
            m.leader_changes.clone(),
        );
        r.register(
            "raft_commit_index",
            "Highest log index known committed",
            m.commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Highest log index applied",
            m.applied_index.clone(),
        );
        r.register(
            "raft_proposals_committed",
            "Writes proposed here and applied",
            m.proposals_committed.clone(),
        );
        r.register(
            "raft_proposals_failed",
            "Writes proposed here and lost (leader changed, or dropped)",
            m.proposals_failed.clone(),
        );
        r.register_with_unit(
            "raft_proposal_commit",
            "From a write's proposal to its application, on the leader",
            Unit::Seconds,
            m.proposal_seconds.clone(),
        );
        r.register_with_unit(
            "disk_sync",
            "Synced RocksDB writes (the Raft log and hard state)",
            Unit::Seconds,
            m.disk_sync_seconds.clone(),
        );
        r.register(
            "snapshots_taken",
            "Snapshots this node took",
            m.snapshots_taken.clone(),
        );
        r.register(
            "snapshots_installed",
            "Snapshots this node installed from the leader",
            m.snapshots_installed.clone(),
        );
        r.register_with_unit(
            "snapshot",
            "Time to take (kind=taken) or install (kind=installed) a snapshot",
            Unit::Seconds,
            m.snapshot_seconds.clone(),
        );
        r.register(
            "raft_peer_lag_entries",
            "Leader only: entries each peer's log is behind the leader's",
            m.peer_lag.clone(),
        );
        r.register("sessions", "Live sessions", m.sessions.clone());
        r.register(
            "sessions_opened",
            "Sessions opened",
            m.sessions_opened.clone(),
        );
        r.register(
            "sessions_closed",
            "Sessions closed by their clients",
            m.sessions_closed.clone(),
        );
        r.register(
            "sessions_expired",
            "Sessions ended because their lease ran out",
            m.sessions_expired.clone(),
        );
        r.register(
            "keep_alives",
            "Keep-alives received (leader)",
            m.keep_alives.clone(),
        );
        r.register(
            "session_jeopardy",
            "Keep-alives that came with less than a third of the session's TTL left (leader)",
            m.jeopardy.clone(),
        );
        r.register("locks_held", "Granted locks, by kind", m.locks_held.clone());
        r.register(
            "lock_waiters",
            "Queued lock requests",
            m.lock_waiters.clone(),
        );
        r.register("lock_grants", "Locks granted", m.lock_grants.clone());
        r.register_with_unit(
            "lock_wait",
            "From a lock request's application to its grant (0 for one granted at once)",
            Unit::Seconds,
            m.lock_wait_seconds.clone(),
        );
        r.register_with_unit(
            "lock_hold",
            "From a lock's grant to its release",
            Unit::Seconds,
            m.lock_hold_seconds.clone(),
        );
        r.register(
            "lock_delay_releases",
            "Locks released by a session's expiry (granted to nobody for the lock-delay)",
            m.lock_delay_releases.clone(),
        );
        r.register(
            "fencing_refusals",
            "Writes refused because a generation they named had moved on",
            m.fencing_refusals.clone(),
        );
        r.register(
            "tree_nodes",
            "Files and directories, the root included",
            m.nodes.clone(),
        );
        r.register_with_unit("tree", "Bytes of file data", Unit::Bytes, m.bytes.clone());
        r.register(
            "tree_ephemeral_nodes",
            "Ephemeral files",
            m.ephemeral_nodes.clone(),
        );
        r.register(
            "requests",
            "Client requests, by kind and outcome",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request",
            "Client requests from arrival to answer, by kind",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        r.register(
            "client_connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "events_pushed",
            "Watch events pushed to clients",
            m.events_pushed.clone(),
        );
        (m, registry)
    }

    /// Sets the gauges from what the Raft loop reported.
    pub fn set(&self, g: &Gauges) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(n(g.term));
        self.commit_index.set(n(g.commit));
        self.applied_index.set(n(g.applied));
        self.is_leader.set(i64::from(g.is_leader));
        self.peer_lag.clear();
        for (peer, lag) in &g.peer_lag {
            self.peer_lag
                .get_or_create(&PeerLabel { peer: *peer })
                .set(n(*lag));
        }
        let s = &g.state;
        self.sessions.set(n(s.sessions));
        self.nodes.set(n(s.nodes));
        self.bytes.set(n(s.bytes));
        self.ephemeral_nodes.set(n(s.ephemeral_nodes));
        self.lock_waiters.set(n(s.waiters));
        let held = |kind| KindLabel { kind };
        self.locks_held
            .get_or_create(&held("shared"))
            .set(n(s.shared_locks));
        self.locks_held
            .get_or_create(&held("exclusive"))
            .set(n(s.exclusive_locks));
    }
}
