//! The Raft node: one task that owns raft-rs's `RawNode`, the state machine and the store.
//!
//! Everything else talks to it through its inbox ([`Input`]); it never waits on the network. A
//! turn runs synchronously, except for one yield before its disk write: the node shares its
//! thread with its network tasks (`Server::start`), which then send what the turn queued. One
//! turn of its loop, following raft-rs's `five_mem_node` example:
//!
//! 1. take every input waiting (up to a bound): raft messages from peers are stepped, client
//!    writes are proposed, client reads are grouped into one ReadIndex request per turn;
//! 2. tick when a tick is due (one tick = `--tick-ms`, 100 ms by default);
//! 3. handle `Ready`: send messages (a leader may send before persisting), install a snapshot,
//!    apply committed entries (a follower about to acknowledge: after the acknowledgement),
//!    yield, persist new entries and the hard state in one synced RocksDB write, send the
//!    messages that had to wait for that write, `advance`, and apply what the light ready
//!    committed;
//! 4. answer reads whose ReadIndex is now applied, and take a snapshot when enough was applied.
//!
//! Membership changes (`membership.rs`) are conf change entries: applied in log order like
//! commands, they update raft-rs's configuration, the member book and the transport's links in
//! one step. The leader also watches its learners and promotes those that have caught up.
//!
//! Batching falls out of this loop: all writes proposed in one turn share one fsync, and all reads
//! of one turn share one ReadIndex round. A storage error halts the node (the process exits)
//! rather than letting this replica diverge from the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
    SnapshotStatus,
};
use raft::{RawNode, ReadOnlyOption, StateRole, Storage as _};
use slog::Drain as _;
use tokio::sync::oneshot;

use super::authz::{query_target, targets, within, Access, SEQ_WINDOW};
use super::cache::{CacheWaits, RecentChanges, View, ACK_GRACE, MAX_CACHE_TTL};
use super::clock::Clock;
use super::config::ServeConfig;
use super::convert;
use super::entry::{EntryKind, Envelope};
use super::events::{EventRouter, Key, Told, WatchSpec};
use super::integrity::{Integrity, RecordDigest, Verdict};
use super::limits;
use super::log_formats::LogFormats;
use super::membership::{self, ChangeContext, MemberOp, Plan, SnapshotData};
use super::metrics::{Gauges, KindLabel, NodeMetrics};
use super::session_timers::{Renewal, SessionTimers};
use super::transport::Links;
use super::ServerError;
use crate::encoding::LogFormat;
use crate::proto;
use crate::state::{
    cmd, parent_of, Attr, Command, Event, Kind, LockResult, NodeChange, Outcome, Query, RequestId,
    StateError, StateMachine, Target, UserIds,
};
use crate::storage::{Members, RaftLog, Records, StateStore, Store, WriteBatch};

/// How many inputs one turn takes before handling `Ready`, so a flood of requests cannot starve
/// ticks and persistence.
const MAX_INPUTS_PER_TURN: usize = 4096;
/// A read waits this long for its ReadIndex (no leader, no quorum) before the client is told to
/// retry.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a ReadIndex request goes unanswered before it is sent again (see
/// [`Node::retry_reads`]).
const READ_RETRY: Duration = Duration::from_millis(100);

/// The context of ReadIndex request `n` of node `id`. The leader merges requests with equal
/// contexts and answers only the first sender, so the node's id is part of it: contexts of
/// different nodes never collide.
fn read_ctx(id: u64, n: u64) -> Vec<u8> {
    let mut ctx = id.to_be_bytes().to_vec();
    ctx.extend_from_slice(&n.to_be_bytes());
    ctx
}

/// The request number in a ReadIndex context of node `id` (`None`: another node's).
fn read_ctx_number(id: u64, ctx: &[u8]) -> Option<u64> {
    let (node, n) = ctx.split_first_chunk::<8>()?;
    let n = <[u8; 8]>::try_from(n).ok()?;
    (u64::from_be_bytes(*node) == id).then_some(u64::from_be_bytes(n))
}

/// The refusal of a read whose ReadIndex only a leader that is gone could give.
fn leader_gone() -> ServerError {
    ServerError::Unavailable("the leader is gone; no leader confirms reads yet".into())
}
/// A learner whose log is within this many entries of the leader's is promoted to voter.
const PROMOTE_LAG: u64 = 64;
/// Bytes of proposals not yet committed beyond which new ones are refused (see `raft::Config`).
const MAX_UNCOMMITTED: u64 = 64 * 1024 * 1024;
/// How long the leader may hold back a waiting lock request that finds its lock held before it
/// proposes it alone (see [`Node::holds_back`]).
const HOLD_BACK: Duration = Duration::from_millis(2);

/// A client's command the leader admitted and holds back a moment ([`Node::holds_back`]).
struct HeldBack {
    command: Command,
    request: Option<RequestId>,
    user: Option<UserIds>,
    reply: Reply,
    since: Instant,
}

pub type Reply = oneshot::Sender<Result<Outcome, ServerError>>;
pub type WatchReply = oneshot::Sender<Result<Watching, ServerError>>;

/// Where a watch begins: the applied index it was registered at, and the watched node then.
#[derive(Debug, Clone)]
pub struct Watching {
    pub index: u64,
    /// `None` when nothing is at the path.
    pub attr: Option<Attr>,
    /// Locks the node has.
    pub holders: u32,
}

/// See [`Node::read_gate`].
enum ReadGate {
    Answer,
    Wait,
    AskAgain,
}

/// A read waiting for its ReadIndex: a query, a watch to register (a watch begins at a
/// linearizable point, so that a state it reports is never older than a write that returned),
/// or the release of the events held for watches (see [`Node::release_events`]).
enum PendingRead {
    Query(Query, Access, Reply),
    Watch(WatchSpec, Access, WatchReply),
    Events(EventsAsked),
}

/// Marks a release of held events as asked for while it lives: at most one is in flight.
struct EventsAsked(Arc<AtomicBool>);

impl Drop for EventsAsked {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl PendingRead {
    /// A cache registering: never held back by the writes waiting for caches.
    fn registers_cache(&self) -> bool {
        matches!(self, PendingRead::Watch(spec, ..) if spec.cache)
    }

    fn fail(self, e: ServerError) {
        match self {
            PendingRead::Query(_, _, reply) => {
                let _ = reply.send(Err(e));
            }
            PendingRead::Watch(_, _, reply) => {
                let _ = reply.send(Err(e));
            }
            // Dropped: asked for again at the end of a turn.
            PendingRead::Events(_) => {}
        }
    }
}

/// Where the service, the transport and the metrics pages put a node's inputs. Sending never
/// blocks, from any thread or task; what clients may have in flight is bounded by the service.
pub type InboxSender = tokio::sync::mpsc::UnboundedSender<Input>;
/// The node's end of its inbox.
pub type InboxReceiver = tokio::sync::mpsc::UnboundedReceiver<Input>;

/// A new inbox.
pub fn inbox() -> (InboxSender, InboxReceiver) {
    tokio::sync::mpsc::unbounded_channel()
}

/// What the node's network tasks (and the metrics pages, and tests) send to the node.
pub enum Input {
    /// A raft message from a peer.
    Raft(Message),
    /// A snapshot from the leader: its message, and the records of the state at its index,
    /// which followed it in chunks.
    Snapshot {
        msg: Message,
        records: Records,
    },
    /// A client's write: applied once committed.
    Propose {
        command: Command,
        request: Option<RequestId>,
        /// What the request shows to use the sessions it names.
        auth: Access,
        reply: Reply,
    },
    /// A session's keep-alive: answered by the leader alone, with the session's TTL in ms.
    KeepAlive {
        session: u64,
        auth: Access,
        reply: oneshot::Sender<Result<u64, ServerError>>,
    },
    /// A client's read: answered, linearizably, once this node has applied a ReadIndex.
    Read {
        query: Query,
        auth: Access,
        reply: Reply,
    },
    /// A session's cache acknowledged events (`cache.rs`): held answers may go.
    CacheAcked,
    /// A watch to register once this node has applied a ReadIndex (see `events.rs`).
    Watch {
        spec: WatchSpec,
        auth: Access,
        reply: WatchReply,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    /// What `/metrics` shows of this node's state and log (`metrics.rs`).
    Gauges {
        reply: oneshot::Sender<Gauges>,
    },
    /// A membership change: answered once applied (or refused).
    ChangeMembers {
        op: MemberOp,
        reply: Reply,
    },
    SnapshotSent {
        to: u64,
        delivered: bool,
    },
    Unreachable(u64),
    /// A peer's address refuses connections: no process listens there (see
    /// [`Node::peer_down`]).
    PeerDown(u64),
    Shutdown,
}

/// A node's view of the cluster, for `lockfs cluster status`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub cluster_id: u64,
    pub node_id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// The log format the cluster writes, as this node's applied state says.
    pub log_format: LogFormat,
    pub members: Vec<MemberStatus>,
    /// This replica's latest check: (index of the check entry, digest of its state there).
    pub check: Option<(u64, u128)>,
    /// Where this replica found its state diverged from the leader's.
    pub diverged_at: Option<u64>,
    /// Members that reported themselves diverged, and where.
    pub reported: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub id: u64,
    pub addr: String,
    pub role: &'static str,
    /// Known only on the leader (from check-quorum activity); elsewhere true for self only.
    pub reachable: bool,
    /// The leader's view of this member's log; 0 elsewhere.
    pub matched: u64,
    /// A learner to be promoted once caught up.
    pub promote: bool,
    /// Leader only: how long this member has not been heard from (zero while it is).
    pub unreachable: Duration,
}

struct ReadBatch {
    started: Instant,
    /// When its ReadIndex was last asked for.
    asked: Instant,
    reads: Vec<PendingRead>,
}

/// What a node keeps only while it leads: made afresh when a term of leadership begins here,
/// and gone as soon as raft no longer has this node leading (see [`Node::lead`]).
struct Leading {
    term: u64,
    /// When this term of leadership began here.
    since: Instant,
    /// The sessions' leases as this leadership counts them: every live session gets a full
    /// TTL from `since`.
    timers: SessionTimers,
    /// The applied index at which the timers last followed the live sessions.
    timers_synced: Option<u64>,
    /// When each peer was last known active.
    last_active: HashMap<u64, Instant>,
    /// When this leader last proposed a wake-up for an ended lock-delay.
    wake_proposed: Option<Instant>,
    /// When this leader last proposed a promotion.
    promote_proposed: Option<Instant>,
    /// When this (diverged) leader last tried to hand leadership away.
    handed_over: Option<Instant>,
    /// When this leader last proposed a switch of the log format.
    format_proposed: Option<Instant>,
}

impl Leading {
    /// A term of leadership beginning at `now`, with `expiring`: the sessions whose expiry
    /// is in the log and not applied yet (see [`Node::expiries_in_log`]).
    fn new(term: u64, now: Instant, expiring: Vec<u64>) -> Leading {
        let mut timers = SessionTimers::default();
        timers.lead(term);
        for session in expiring {
            timers.expiry_proposed(session);
        }
        Leading {
            term,
            since: now,
            timers,
            timers_synced: None,
            last_active: HashMap::new(),
            wake_proposed: None,
            promote_proposed: None,
            handed_over: None,
            format_proposed: None,
        }
    }
}

pub struct Node {
    raw: RawNode<RaftLog>,
    store: Store,
    state_store: StateStore,
    machine: StateMachine,
    applied: u64,
    cluster_id: u64,
    cfg: ServeConfig,
    transport: Box<dyn Links>,
    inbox: InboxReceiver,
    clock: Arc<dyn Clock>,
    /// The leader draws each new session's secret from here.
    secrets: Box<dyn FnMut() -> u128 + Send>,
    /// The log formats the peers read; this node keeps the cluster's current there.
    formats: Arc<LogFormats>,
    /// When the next raft tick is due.
    next_tick: Instant,
    /// Writes proposed here and not yet applied: log index -> (term proposed in, reply, when).
    /// The leader's own proposals (session expiry, wake-ups) have no reply.
    proposals: BTreeMap<u64, (u64, Option<Reply>, Instant)>,
    /// Admitted, not yet proposed, in the order they came ([`Node::holds_back`]).
    held_back: Vec<HeldBack>,
    /// Reads of this turn, not yet sent as a ReadIndex request.
    new_reads: Vec<PendingRead>,
    /// ReadIndex requests in flight, by request context.
    read_batches: HashMap<u64, ReadBatch>,
    next_read_ctx: u64,
    /// Reads whose ReadIndex is known, waiting for it to be applied.
    ready_reads: Vec<(u64, ReadBatch)>,
    /// A release of held events is asked for ([`Node::release_events`]).
    events_asked: Arc<AtomicBool>,
    /// ReadIndex answers to followers, sent once no cache may still serve an older state than
    /// their index shows (see [`Node::gated`]).
    gated_read_answers: Vec<Message>,
    /// Set on becoming leader: the last index then, held like a write until every cache has
    /// registered here or lost its lease (see [`Node::observe_role`]).
    pending_barrier: Option<u64>,
    /// Writes of files whose caches were told before they committed (`cache.rs`), by the
    /// index they were proposed at; forgotten as that index applies.
    noticed: BTreeMap<u64, Noticed>,
    role: StateRole,
    leader_id: u64,
    /// A follower's leader refuses connections (see [`Node::peer_down`]); cleared when a
    /// message from it arrives or another leader is known.
    leader_down: bool,
    events: Arc<EventRouter>,
    /// What this node keeps only while it leads (see [`Node::lead`]).
    lead: Option<Leading>,
    /// A member was added: snapshot (and compact) at the end of this turn, so the newcomer,
    /// whose log is empty, catches up from a snapshot that names it rather than from a log
    /// whose beginning predates the configuration it needs.
    snapshot_soon: bool,
    /// Checks of this replica's state against the leader's (`integrity.rs`).
    integrity: Integrity,
    /// The digest of the state machine's records as last taken with `take_changes`.
    digest: RecordDigest,
    /// When this (diverged) replica last proposed its report.
    report_proposed: Option<Instant>,
    /// The records of the snapshot last stepped, by its index, until it is installed.
    incoming: Option<(u64, Records)>,
    /// Answers to writes held until the caches that may hold what they changed dropped it.
    cache_waits: CacheWaits<(Reply, Result<Outcome, ServerError>)>,
    /// The latest changes caches may hold, for the reads a follower answers (see
    /// [`Node::read_gate`]).
    recent: RecentChanges,
    /// How long past its TTL (as this node knows it) a lease may still run: renewed by a
    /// former leader, or while its holder's acknowledgements were overdue (`cache.rs`).
    lease_margin: Duration,
    metrics: Arc<NodeMetrics>,
    /// For the lock wait and hold times (`metrics.rs`), by this node's clock: queued lock
    /// requests by (session, wait), and granted locks by (node, session, owner, style, start).
    /// Bounded by the waiter and lock quotas; past [`MAX_TIMED`] entries they start over.
    queued_at: HashMap<(u64, u64), Instant>,
    granted_at: HashMap<(u64, u64, u64, bool, u64), Instant>,
}

/// Most lock waits and holds timed at once.
const MAX_TIMED: usize = 1_000_000;

/// A write's answer as it leaves `apply`: its index, and the answer.
type Answer = (u64, Reply, Result<Outcome, ServerError>);

/// A write of a file proposed at some index, of which caches were told before it committed.
struct Noticed {
    /// The term it was proposed in: only an entry of that term at its index is this write.
    term: u64,
    /// The file it writes, as the state was when it was proposed.
    instance: u64,
    /// The registrations told: (session, registration).
    told: Vec<(u64, Key)>,
}

/// A write's answer on its way out: its index, the paths it changed (what caches may hold),
/// and the answer.
type Outgoing = (u64, Vec<String>, Reply, Result<Outcome, ServerError>);

/// What a node talks through: its links to the peers, its inbox, its clock, and where the
/// secrets of new sessions come from.
pub struct NodeIo {
    pub links: Box<dyn Links>,
    pub inbox: InboxReceiver,
    pub clock: Arc<dyn Clock>,
    /// Unguessable numbers: the system's random generator, outside tests.
    pub secrets: Box<dyn FnMut() -> u128 + Send>,
    /// What the peers said of the log formats they read (`log_formats.rs`).
    pub formats: Arc<LogFormats>,
}

/// What a node starts from: its data directory's store and Raft log, and the state machine as
/// last applied (with the digest of its records and the index it was applied to).
pub struct Recovered {
    pub store: Store,
    pub raft_log: RaftLog,
    pub machine: StateMachine,
    pub digest: RecordDigest,
    pub applied: u64,
}

impl Node {
    pub fn new(
        cfg: ServeConfig,
        cluster_id: u64,
        recovered: Recovered,
        io: NodeIo,
        events: Arc<EventRouter>,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Node, ServerError> {
        let Recovered {
            store,
            raft_log,
            machine,
            digest,
            applied,
        } = recovered;
        let NodeIo {
            links: transport,
            inbox,
            clock,
            secrets,
            formats,
        } = io;
        formats.set_cluster(machine.log_format());
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            // raft-rs draws from [min, max).
            min_election_tick: cfg.election_ticks,
            max_election_tick: if cfg.random_election {
                2 * cfg.election_ticks
            } else {
                cfg.election_ticks + 1
            },
            applied,
            max_size_per_msg: 1024 * 1024,
            // Proposals beyond this many bytes not yet committed are dropped (the client is
            // told to retry), so a burst of large writes cannot grow the log without bound
            // while a majority is slow or away.
            max_uncommitted_size: MAX_UNCOMMITTED,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            // A commit reaches followers with the next append or heartbeat, not in a message
            // of its own: each write then wakes a follower once instead of twice. Nothing
            // waits on a follower's commit index: a follower's read asks the leader
            // (ReadIndex), whose answer brings it.
            skip_bcast_commit: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let mut raft_log = raft_log;
        raft_log.set_applied(applied);
        raft_log.set_snapshot_opener(transport.opener());
        let tick = cfg.tick;
        let election = cfg.tick * u32::try_from(cfg.election_ticks).unwrap_or(u32::MAX);
        let lease_margin = ACK_GRACE + election * 2;
        let logger = slog::Logger::root(slog_stdlog::StdLog.fuse(), slog::o!());
        let raw = RawNode::new(&raft_cfg, raft_log, &logger)?;
        let state_store = store.state_store();
        let diverged = store.diverged()?;
        if let Some(at) = diverged {
            log::error!(
                "node {}'s state diverged from the leader's at index {at}: it serves no reads \
                 until its data directory is rebuilt (README: Rebuilding a node)",
                cfg.id
            );
        }
        Ok(Node {
            raw,
            store,
            state_store,
            machine,
            applied,
            cluster_id,
            cfg,
            transport,
            inbox,
            next_tick: clock.now() + tick,
            clock,
            secrets,
            formats,
            proposals: BTreeMap::new(),
            held_back: Vec::new(),
            new_reads: Vec::new(),
            read_batches: HashMap::new(),
            next_read_ctx: 1,
            ready_reads: Vec::new(),
            events_asked: Arc::default(),
            gated_read_answers: Vec::new(),
            pending_barrier: None,
            noticed: BTreeMap::new(),
            role: StateRole::Follower,
            leader_id: 0,
            leader_down: false,
            events,
            lead: None,
            snapshot_soon: false,
            integrity: Integrity::new(diverged),
            digest,
            report_proposed: None,
            incoming: None,
            cache_waits: CacheWaits::new(lease_margin),
            recent: {
                let mut recent = RecentChanges::default();
                recent.forget_through(applied);
                recent
            },
            lease_margin,
            metrics,
            queued_at: HashMap::new(),
            granted_at: HashMap::new(),
        })
    }

    /// The digest of the state as applied here (`integrity.rs`): replicas at the same applied
    /// index have the same.
    pub fn state_digest(&self) -> u128 {
        self.digest.sum()
    }

    /// What the state as applied here says of locks and sessions, for tracing a schedule.
    #[cfg(test)]
    pub fn locks_and_sessions(&self) -> String {
        let locks = self.machine.query(&Query::Locks { after: 0, limit: 0 });
        let sessions = self.machine.query(&Query::Sessions { after: 0, limit: 0 });
        format!(
            "applied {} locks {locks:?} sessions {sessions:?}",
            self.applied
        )
    }

    /// How much time one raft tick stands for.
    pub fn tick_length(&self) -> Duration {
        self.cfg.tick
    }

    /// Starts an election now, whatever the election timeout says (tests choose the leader).
    #[cfg(test)]
    pub fn campaign(&mut self) -> Result<(), ServerError> {
        self.raw.campaign()?;
        Ok(())
    }

    /// Runs turns until told to shut down; an error means the node had to halt. Meant to run
    /// on the same single-threaded runtime as the node's network tasks (see `Server::start`):
    /// a turn is synchronous and holds that thread, and between turns the network tasks move
    /// what the turn queued (messages, answers) and what arrived, with no hand-off between
    /// threads.
    pub async fn run(mut self) -> Result<(), ServerError> {
        loop {
            // Reads asked again (see `read_gate`) go out without waiting for a tick.
            let now = self.clock.now();
            let wait = if self.new_reads.is_empty() {
                let until = match self.held_back_due() {
                    Some(due) => self.next_tick.min(due),
                    None => self.next_tick,
                };
                until.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            let first = match tokio::time::timeout(wait, self.inbox.recv()).await {
                Ok(Some(input)) => Some(input),
                Ok(None) => break,
                Err(_) => None,
            };
            if !self.turn(first).await? {
                break;
            }
            // Let the network tasks send what this turn queued and read what came meanwhile
            // before the next turn, even when more inputs are already waiting.
            tokio::task::yield_now().await;
        }
        self.stop()
    }

    /// One turn of the loop (see the module's comment): `first` and the inputs waiting after
    /// it, the tick if one is due by the clock, then `Ready`. Never waits for an input (it
    /// yields once before a synced write, see `on_ready`); false means shut down (the rest of
    /// the turn is skipped). Nothing else touches the node while it yields, so its behaviour
    /// is a function of its inputs.
    pub async fn turn(&mut self, first: Option<Input>) -> Result<bool, ServerError> {
        if let Some(input) = first {
            if !self.handle(input)? {
                return Ok(false);
            }
        }
        for _ in 0..MAX_INPUTS_PER_TURN {
            match self.inbox.try_recv() {
                Ok(input) => {
                    if !self.handle(input)? {
                        return Ok(false);
                    }
                }
                Err(_) => break,
            }
        }
        let now = self.clock.now();
        if now >= self.next_tick {
            self.raw.tick();
            self.next_tick = now + self.cfg.tick;
            self.expire_reads(now);
            self.retry_reads(now);
            self.events.flush();
            let ready = self.settle_caches(Vec::new(), BTreeMap::new(), BTreeMap::new());
            send_answers(ready);
            self.report_divergence(now);
            if self.leading() {
                self.check_sessions(now);
                self.check_members(now);
                self.check_integrity(now);
            }
        }
        if self.leading() {
            self.switch_log_format(now);
        }
        if self.held_back_due().is_some_and(|due| now >= due)
            || (!self.held_back.is_empty() && !self.is_leader())
        {
            self.propose_held_back();
        }
        if !self.new_reads.is_empty() && self.leader_down {
            // A ReadIndex would go to a leader that is gone: the client tries elsewhere.
            for read in std::mem::take(&mut self.new_reads) {
                read.fail(leader_gone());
            }
        }
        if !self.new_reads.is_empty() {
            let ctx = self.next_read_ctx;
            self.next_read_ctx += 1;
            let reads = std::mem::take(&mut self.new_reads);
            self.read_batches.insert(
                ctx,
                ReadBatch {
                    started: now,
                    asked: now,
                    reads,
                },
            );
            self.raw.read_index(read_ctx(self.cfg.id, ctx));
        }
        self.on_ready().await?;
        self.answer_reads();
        self.release_events();
        self.send_read_answers();
        self.fail_truncated_proposals();
        self.maybe_snapshot()?;
        Ok(true)
    }

    fn stop(mut self) -> Result<(), ServerError> {
        let shutting_down = || ServerError::Unavailable("node shutting down".into());
        for (_, (_, reply, _)) in std::mem::take(&mut self.proposals) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(shutting_down()));
            }
        }
        for (reply, _) in self.cache_waits.drain() {
            let _ = reply.send(Err(shutting_down()));
        }
        for held in std::mem::take(&mut self.held_back) {
            let _ = held.reply.send(Err(shutting_down()));
        }
        log::info!("node {} stopped", self.cfg.id);
        Ok(())
    }

    /// Handles one input; false means shut down.
    fn handle(&mut self, input: Input) -> Result<bool, ServerError> {
        match input {
            // A snapshot is stepped only with its records (`Input::Snapshot`): raft-rs takes
            // it as soon as it is stepped, and installing it needs them.
            Input::Raft(msg) if msg.get_msg_type() == MessageType::MsgSnapshot => {
                log::warn!("dropping a snapshot message without its records");
            }
            Input::Raft(msg) => {
                if msg.from == self.leader_id {
                    self.leader_down = false;
                }
                self.check_heartbeat(&msg)?;
                if let Err(e) = self.raw.step(msg) {
                    log::debug!("raft refused a message: {e}");
                }
            }
            Input::Snapshot { msg, records } => {
                let index = msg.get_snapshot().get_metadata().index;
                self.incoming = Some((index, records));
                if let Err(e) = self.raw.step(msg) {
                    log::debug!("raft refused a snapshot: {e}");
                }
            }
            Input::Propose {
                command,
                request,
                auth,
                reply,
            } => {
                // Only the leader judges a command against the state: a follower may not have
                // applied what the leader acknowledged (a session closed, room made), and
                // would refuse what the leader admits. The client goes to the leader.
                let admitted = if self.is_leader() {
                    self.admit(&command, request.as_ref(), &auth)
                } else {
                    Err(self.not_leader())
                };
                match admitted {
                    Ok(()) if self.holds_back(&command) => self.held_back.push(HeldBack {
                        command,
                        request,
                        user: auth.user,
                        reply,
                        since: self.clock.now(),
                    }),
                    Ok(()) => {
                        self.propose(command, request, auth.user, Some(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Input::KeepAlive {
                session,
                auth,
                reply,
            } => {
                let answer = match self.machine.session_access(session) {
                    Some(access) => auth.admits(session, &access, false),
                    None => Ok(()),
                };
                let _ = reply.send(answer.and_then(|_| self.keep_alive(session)));
            }
            Input::Read { reply, .. } if self.integrity.diverged.is_some() => {
                let _ = reply.send(Err(self.diverged()));
            }
            Input::Read { query, auth, reply } => {
                self.new_reads.push(PendingRead::Query(query, auth, reply));
            }
            Input::CacheAcked => {
                let ready = self.settle_caches(Vec::new(), BTreeMap::new(), BTreeMap::new());
                send_answers(ready);
            }
            Input::Watch { reply, .. } if self.integrity.diverged.is_some() => {
                let _ = reply.send(Err(self.diverged()));
            }
            // A cache registers with the leader only (see `register_watch`), and is refused
            // elsewhere now: after a ReadIndex it could wait behind a new leader's barrier,
            // which waits for this very registration.
            Input::Watch { spec, reply, .. } if spec.cache && !self.leading() => {
                let _ = reply.send(Err(self.not_leader()));
            }
            Input::Watch { spec, auth, reply } => {
                self.new_reads.push(PendingRead::Watch(spec, auth, reply));
            }
            Input::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Input::Gauges { reply } => {
                let _ = reply.send(self.gauges());
            }
            Input::ChangeMembers { op, reply } => self.change_members(op, reply),
            Input::SnapshotSent { to, delivered } => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Input::Unreachable(id) => self.raw.report_unreachable(id),
            Input::PeerDown(id) => self.peer_down(id),
            Input::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// The refusal of a read by a replica that diverged.
    fn diverged(&self) -> ServerError {
        ServerError::Unavailable(format!(
            "node {}'s state diverged from the leader's at index {}: it serves no reads until \
             it is rebuilt",
            self.cfg.id,
            self.integrity.diverged.unwrap_or(0)
        ))
    }

    fn not_leader(&self) -> ServerError {
        let leader_id = self.raw.raft.leader_id;
        ServerError::NotLeader {
            leader_id,
            leader_addr: self
                .members()
                .get(&leader_id)
                .map(|m| m.addr.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether a client's command may enter the log: it must keep within the limits it can be
    /// judged by alone (`limits`) and the quotas as the state stands now, a caller limited to
    /// a subtree may touch nothing outside it, every session the command uses must admit it
    /// (its owner, with its secret), and its sequence number must lie within the session's
    /// window.
    /// Sessions that are not live pass: applying the command reports them ended.
    fn admit(
        &self,
        command: &Command,
        request: Option<&RequestId>,
        auth: &Access,
    ) -> Result<(), ServerError> {
        limits::check(command, self.cfg.max_file_size)?;
        // A retry of an applied request gets its cached result, even at a quota it reached.
        if command.can_grow() && !request.is_some_and(|r| self.machine.answered(r)) {
            let now = self.machine.clock_ns().max(self.clock.wall_ns());
            self.machine.check_quotas(command, &self.cfg.quotas, now)?;
        }
        if auth.subtree.is_some() {
            for (target, look) in targets(command) {
                auth.reaches(&self.machine.path_of_target(target)?, look)?;
            }
        }
        let ending = matches!(
            command,
            Command::CloseSession(_) | Command::ExpireSession(_)
        );
        for id in command
            .session()
            .into_iter()
            .chain(request.map(|r| r.session))
        {
            if let Some(access) = self.machine.session_access(id) {
                auth.admits(id, &access, ending)?;
            }
        }
        if let Some(r) = request {
            if let Some(access) = self.machine.session_access(r.session) {
                if r.seq >= access.acked_below.saturating_add(SEQ_WINDOW) {
                    return Err(StateError::InvalidArgument(format!(
                        "sequence number {} is too far ahead of the session's {}",
                        r.seq, access.acked_below
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Whether the leader holds `command` back instead of proposing it now: a waiting lock
    /// request that finds its lock held. It will wait anyway; proposed at once it would take a
    /// disk write of its own, which whatever comes next (above all the holder's unlock, which
    /// hands the lock on) would wait behind. Held back, it shares the write of the next
    /// proposal, or goes alone after [`HOLD_BACK`]. Held-back commands enter the log in the
    /// order they came and before whatever ends the hold, so the lock's queue and every
    /// session's order of requests stay as they were sent; applying the command decides
    /// what it gets, so a wrong guess costs only time.
    fn holds_back(&self, command: &Command) -> bool {
        let Command::Lock(lock) = command else {
            return false;
        };
        let now = self.machine.clock_ns().max(self.clock.wall_ns());
        self.machine.lock_would_wait(lock, now)
    }

    /// When the oldest command held back must be proposed, if any is.
    fn held_back_due(&self) -> Option<Instant> {
        self.held_back.first().map(|h| h.since + HOLD_BACK)
    }

    /// Proposes what is held back ([`Node::holds_back`]), in the order it came.
    fn propose_held_back(&mut self) {
        for held in std::mem::take(&mut self.held_back) {
            self.propose_now(held.command, held.request, held.user, Some(held.reply));
        }
    }

    /// Appends `command` to the log if this node leads, after what is held back; says whether
    /// it did (`reply` has the refusal otherwise). `user` is whose permissions applying it
    /// checks (see `state::perm`).
    fn propose(
        &mut self,
        command: Command,
        request: Option<RequestId>,
        user: Option<UserIds>,
        reply: Option<Reply>,
    ) -> bool {
        self.propose_held_back();
        self.propose_now(command, request, user, reply)
    }

    fn propose_now(
        &mut self,
        mut command: Command,
        request: Option<RequestId>,
        user: Option<UserIds>,
        reply: Option<Reply>,
    ) -> bool {
        let refuse = |reply: Option<Reply>, e: ServerError| {
            if let Some(reply) = reply {
                let _ = reply.send(Err(e));
            }
        };
        if !self.is_leader() {
            refuse(reply, self.not_leader());
            return false;
        }
        if let Command::OpenSession(cmd::OpenSession {
            ttl_ms,
            secret,
            cache,
            ..
        }) = &mut command
        {
            // The session's bearer secret: chosen here, replicated in the entry.
            *secret = (self.secrets)().max(1);
            let ttl = Duration::from_millis(*ttl_ms);
            if ttl < self.cfg.min_session_ttl || ttl > self.cfg.max_session_ttl {
                let why = format!(
                    "session ttl must be between {:?} and {:?}",
                    self.cfg.min_session_ttl, self.cfg.max_session_ttl
                );
                refuse(reply, StateError::InvalidArgument(why).into());
                return false;
            }
            if *cache && ttl > MAX_CACHE_TTL {
                let why = format!(
                    "a caching session's ttl may be at most {MAX_CACHE_TTL:?}: writes wait for \
                     a silent cache until its lease runs out"
                );
                refuse(reply, StateError::InvalidArgument(why).into());
                return false;
            }
        }
        if let Some(r) = &request {
            // Any request in a session shows the client is alive.
            self.touch(r.session);
        }
        let envelope = Envelope {
            time_ns: self.clock.wall_ns(),
            max_file_size: self.cfg.max_file_size,
            lock_delay_ns: self.cfg.lock_delay.as_nanos() as u64,
            request,
            caller: user,
            quotas: command.can_grow().then_some(self.cfg.quotas),
            command,
        };
        let format = self.machine.log_format();
        match self
            .raw
            .propose(EntryKind::Command.context(format), envelope.encode(format))
        {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.proposals
                    .insert(index, (term, reply, self.clock.now()));
                self.notice_caches(index, term, &envelope.command, envelope.request.as_ref());
                true
            }
            Err(e) => {
                self.metrics.proposals_failed.inc();
                refuse(
                    reply,
                    ServerError::Unavailable(format!("proposal dropped: {e}")),
                );
                false
            }
        }
    }

    /// Tells the caches that take notices of a write of a file's contents just proposed at
    /// `index` (a write, a truncation, or a put of a file that exists), so that they drop the
    /// file while the write commits (see `cache.rs`).
    fn notice_caches(
        &mut self,
        index: u64,
        term: u64,
        command: &Command,
        request: Option<&RequestId>,
    ) {
        let target = match command {
            Command::Write(cmd::Write { target, .. })
            | Command::Truncate(cmd::Truncate { target, .. })
            | Command::Put(cmd::Put { at: target, .. }) => target,
            _ => return,
        };
        if self.machine.caching_sessions().next().is_none() {
            return;
        }
        let Ok(instance) = self.machine.lookup(target) else {
            return;
        };
        if self.machine.attr(instance).map(|a| a.kind) != Ok(Kind::File) {
            return;
        }
        let Ok(path) = self.machine.path_of_target(&Target::Ino(instance)) else {
            return;
        };
        let by = request.map_or(0, |r| r.session);
        let told = self.events.notice(index, instance, &path, by);
        if !told.is_empty() {
            self.noticed.insert(
                index,
                Noticed {
                    term,
                    instance,
                    told,
                },
            );
        }
    }

    fn touch(&mut self, session: u64) {
        let now = self.clock.now();
        if let Some(lead) = self.lead() {
            lead.timers.touch(lead.term, session, now);
        }
    }

    /// Whether raft has this node leading now, with no other effect. Code that uses the
    /// leader-only tables asks [`Node::leading`] instead, which also begins them for a new
    /// term of leadership; `role` only tells [`Node::observe_role`] what changed.
    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether this node leads now (see [`Node::lead`]).
    fn leading(&mut self) -> bool {
        self.lead().is_some()
    }

    /// The leader-only state, if this node leads now. The first call in each term of
    /// leadership makes it afresh (session timers, the members' liveness), and the first call
    /// after raft stopped having this node lead drops it. It is asked wherever leader-only
    /// state is used, not only when a Ready reports the new role: raft makes this node leader
    /// as a vote arrives, and requests and ticks may come first.
    fn lead(&mut self) -> Option<&mut Leading> {
        if !self.is_leader() {
            self.lead = None;
            return None;
        }
        let term = self.raw.raft.term;
        if self.lead.as_ref().map(|l| l.term) != Some(term) {
            let expiring = self.expiries_in_log();
            self.lead = Some(Leading::new(term, self.clock.now(), expiring));
        }
        self.lead.as_mut()
    }

    /// The sessions whose expiry is in this node's log past what it applied: proposed by an
    /// earlier leadership (this node's, or another's) and not committed then. A leader never
    /// drops an entry of its own log, so these commit in its term: a keep-alive it renewed
    /// meanwhile would promise a lease that their commit ends, and with the expiry's
    /// lock-delay counted from when it was proposed, another client could be granted the
    /// session's locks at once. So a new leadership starts with them as expiring
    /// ([`Renewal::Expiring`]: the keep-alive is refused, not told "expired").
    fn expiries_in_log(&self) -> Vec<u64> {
        let log = &self.raw.raft.raft_log;
        if log.last_index() <= self.applied {
            return Vec::new();
        }
        let ctx = raft::GetEntriesContext::empty(false);
        let entries = match log.entries(self.applied + 1, None, ctx) {
            Ok(entries) => entries,
            Err(e) => {
                // Refusing every keep-alive would end healthy sessions; a log this node
                // cannot read will halt it at apply anyway.
                log::error!("node {}: reading the log past applied: {e}", self.cfg.id);
                return Vec::new();
            }
        };
        entries
            .iter()
            .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
            .filter_map(|e| match EntryKind::of(&e.context) {
                Some((EntryKind::Command, format)) => Envelope::decode(format, &e.data).ok(),
                _ => None,
            })
            .filter_map(|envelope| match envelope {
                Envelope {
                    command: Command::ExpireSession(cmd::ExpireSession { session }),
                    ..
                } => Some(session),
                _ => None,
            })
            .collect()
    }

    /// Renews a session's lease. Only the leader may: it alone expires sessions, and a new
    /// leader gives every session a full TTL, so a lease renewed by a deposed leader still ends
    /// before the new leader could expire the session.
    fn keep_alive(&mut self, session: u64) -> Result<u64, ServerError> {
        if !self.leading() {
            return Err(self.not_leader());
        }
        // Until an entry of its term commits, a newly elected leader's log may still lose to
        // another that holds an expiry of this session from an earlier term (uncommitted
        // then): a renewal promised now could be ended by that expiry's commit, with the
        // lock-delay counted from when it was proposed. Once one commits, every later leader
        // has this leader's log, and the expiries in it are known (`expiries_in_log`).
        if !self.raw.raft.commit_to_current_term() {
            return Err(ServerError::Unavailable(
                "a new leader renews leases once an entry of its term is committed; retry".into(),
            ));
        }
        let ttl = self
            .machine
            .session_ttl_ms(session)
            .ok_or(ServerError::State(StateError::SessionExpired))?;
        let term = self.raw.raft.term;
        let ttl_d = Duration::from_millis(ttl);
        // Only a cache registered here can be late: one that is not (its watch is on another
        // node, a former leader say) holds writes and reads only until their deadline, and
        // refusing its keep-alives would end a healthy session.
        if self.events.cache_registration(session).is_some()
            && self.cache_waits.overdue(session, self.clock.now())
        {
            return Err(ServerError::Unavailable(
                "the session's cache has not acknowledged changes in time; its lease is renewed \
                 once it has"
                    .into(),
            ));
        }
        self.metrics.keep_alives.inc();
        let now = self.clock.now();
        let Some(lead) = self.lead() else {
            return Err(self.not_leader());
        };
        let jeopardy = lead
            .timers
            .left(session, now)
            .is_some_and(|left| left < ttl_d / 3);
        let renewal = lead.timers.keep_alive(term, session, ttl_d, now);
        if jeopardy {
            self.metrics.jeopardy.inc();
        }
        match renewal {
            Renewal::Renewed => Ok(ttl),
            // Not renewed, but not "expired" either until the expiry commits: this leader may
            // be a deposed one that has not heard of its successor yet (resumed from a pause,
            // say), whose proposal will never commit. The client tries again, or elsewhere.
            Renewal::Expiring => Err(ServerError::Unavailable(
                "the session's expiry is being committed".into(),
            )),
        }
    }

    /// Leader, every tick: expire sessions not heard from within their TTL, and wake lock
    /// waiters whose lock-delay has ended. Both are ordinary commands, so every replica applies
    /// them at the same point of the log.
    fn check_sessions(&mut self, now: Instant) {
        let applied = self.applied;
        let machine = &self.machine;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        // The live sessions change only when entries are applied: an idle leader of many
        // sessions does not list them all on every tick.
        if lead.timers_synced != Some(applied) {
            let live: HashMap<u64, Duration> = machine
                .session_ids()
                .into_iter()
                .map(|(id, ttl_ms)| (id, Duration::from_millis(ttl_ms)))
                .collect();
            lead.timers.sync(lead.term, &live, now);
            lead.timers_synced = Some(applied);
        }
        let due = lead.timers.due(lead.term, now);
        let wake = machine.next_wake_ns().is_some_and(|wake_at| {
            let recently = lead
                .wake_proposed
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
            self.clock.wall_ns() >= wake_at && !recently
        });
        if wake {
            lead.wake_proposed = Some(now);
        }
        for session in due {
            log::info!("session {session} expired: not heard from within its TTL");
            // A dropped proposal (a leadership transfer under way) is tried again next tick.
            if self.propose(
                Command::ExpireSession(cmd::ExpireSession { session }),
                None,
                None,
                None,
            ) {
                if let Some(lead) = self.lead.as_mut() {
                    lead.timers.expiry_proposed(session);
                }
            }
        }
        if wake {
            self.propose(Command::Wake, None, None, None);
        }
    }

    /// Leader, every tick: propose a check entry when one is due; a diverged leader hands
    /// leadership to the most up-to-date live voter instead.
    fn check_integrity(&mut self, now: Instant) {
        if self.integrity.diverged.is_some() {
            let every = self.cfg.tick * 10;
            let Some(lead) = self.lead.as_mut() else {
                return;
            };
            let recently = lead
                .handed_over
                .is_some_and(|t| now.duration_since(t) < every);
            if !recently {
                lead.handed_over = Some(now);
                if let Some(next) = self.successor(now) {
                    log::error!(
                        "node {} diverged; handing leadership to node {next}",
                        self.cfg.id
                    );
                    self.raw.transfer_leader(next);
                }
            }
            return;
        }
        let format = self.machine.log_format();
        if let Some(data) = self
            .integrity
            .due(self.applied, self.cfg.check_entries, now, format)
        {
            if let Err(e) = self.raw.propose(EntryKind::Check.context(format), data) {
                log::debug!("check entry dropped: {e}");
            }
        }
    }

    /// Leader: the live voter, other than this node, whose log matches the most of this one's.
    fn successor(&self, now: Instant) -> Option<u64> {
        let live = self.live(now);
        let prs = self.raw.raft.prs();
        self.raw
            .store()
            .conf_state()
            .voters
            .iter()
            .filter(|id| **id != self.cfg.id && live.contains(id))
            .max_by_key(|id| prs.get(**id).map_or(0, |p| p.matched))
            .copied()
    }

    fn members(&self) -> &Members {
        self.raw.store().members()
    }

    /// Leader only: the voters and learners heard from within two election timeouts, and this
    /// node.
    fn live(&self, now: Instant) -> std::collections::BTreeSet<u64> {
        let window = self.cfg.tick * (2 * self.cfg.election_ticks as u32);
        let mut live: std::collections::BTreeSet<u64> = self
            .lead
            .iter()
            .flat_map(|l| l.last_active.iter())
            .filter(|(_, t)| now.duration_since(**t) <= window)
            .map(|(id, _)| *id)
            .collect();
        live.insert(self.cfg.id);
        live
    }

    /// Leader: once every other member has said it reads a newer log format than the
    /// cluster writes, and this node reads it too, proposes the switch to it (once a second
    /// until it applies). Entries proposed before the switch applies stay in the format they
    /// were proposed in: each says its own.
    fn switch_log_format(&mut self, now: Instant) {
        let target = self.cfg.log_format;
        if target <= self.machine.log_format() {
            return;
        }
        let conf = self.raw.store().conf_state();
        let others = (conf.voters.iter())
            .chain(&conf.learners)
            .chain(&conf.voters_outgoing)
            .chain(&conf.learners_next)
            .copied()
            .filter(|&id| id != self.cfg.id);
        if !self.formats.all_read(others, target) {
            return;
        }
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead
            .format_proposed
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        lead.format_proposed = Some(now);
        log::info!(
            "every member reads log format {}: switching the cluster to it",
            target.number()
        );
        let switch = cmd::SetLogFormat {
            format: target.number(),
        };
        self.propose(Command::SetLogFormat(switch), None, None, None);
    }

    /// Leader, every tick: note which peers are active, and promote a learner that caught up.
    fn check_members(&mut self, now: Instant) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        for (id, pr) in self.raw.raft.prs().iter() {
            if pr.recent_active && *id != self.cfg.id {
                lead.last_active.insert(*id, now);
            }
        }
        if self.raw.raft.has_pending_conf()
            || lead
                .promote_proposed
                .is_some_and(|t| now.duration_since(t) < self.cfg.tick * 10)
        {
            return;
        }
        let conf = self.raw.store().conf_state().clone();
        let live = self.live(now);
        let prs = self.raw.raft.prs();
        let candidate = membership::ready_to_promote(
            &conf,
            self.members(),
            &live,
            |id| prs.get(id).map(|p| p.matched),
            self.raw.raft.raft_log.last_index(),
            PROMOTE_LAG,
        );
        if let Some(id) = candidate {
            match membership::plan(&MemberOp::Promote { id }, &conf, self.members(), &live) {
                Ok(Plan::Propose(cc, context)) => {
                    log::info!("node {id} has caught up; promoting it to voter");
                    if let Some(lead) = self.lead.as_mut() {
                        lead.promote_proposed = Some(now);
                    }
                    self.propose_conf_change(cc, &context, None);
                }
                Ok(Plan::Done) => {}
                Err(e) => log::debug!("not promoting node {id} yet: {e}"),
            }
        }
    }

    /// A membership change asked for by a client (or by a node joining).
    fn change_members(&mut self, op: MemberOp, reply: Reply) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.raw.raft.has_pending_conf() {
            let _ = reply.send(Err(ServerError::Unavailable(
                "another membership change is in progress".into(),
            )));
            return;
        }
        let now = self.clock.now();
        let conf = self.raw.store().conf_state().clone();
        let live = self.live(now);
        let plan = match membership::plan(&op, &conf, self.members(), &live) {
            Ok(plan) => plan,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        match plan {
            Plan::Done => {
                let _ = reply.send(Ok(Outcome::Done));
            }
            Plan::Propose(..) if op == (MemberOp::Remove { id: self.cfg.id }) => {
                // A leader does not remove itself: it hands leadership to the most up-to-date
                // live voter, and the client's retry reaches the new leader.
                let why = match self.successor(now) {
                    Some(next) => {
                        log::info!(
                            "node {} is to be removed; handing leadership to node {next}",
                            self.cfg.id
                        );
                        self.raw.transfer_leader(next);
                        format!(
                            "node {} is the leader; handing leadership to node {next} first",
                            self.cfg.id
                        )
                    }
                    None => "the leader cannot be removed: no other live voter".into(),
                };
                let _ = reply.send(Err(ServerError::Unavailable(why)));
            }
            Plan::Propose(cc, context) => {
                log::info!("membership change requested: {op:?}");
                self.propose_conf_change(cc, &context, Some(reply));
            }
        }
    }

    /// Proposes `cc` with `context`, both in the cluster's log format.
    fn propose_conf_change(
        &mut self,
        mut cc: ConfChangeV2,
        context: &ChangeContext,
        reply: Option<Reply>,
    ) {
        let format = self.machine.log_format();
        cc.context = context.encode(format).into();
        match self
            .raw
            .propose_conf_change(EntryKind::Change.context(format), cc)
        {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.proposals
                    .insert(index, (term, reply, self.clock.now()));
            }
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ServerError::Unavailable(format!(
                        "membership change dropped: {e}"
                    ))));
                }
            }
        }
    }

    /// Applies a committed conf change: raft-rs's configuration and the member book, staged in
    /// `batch` with the rest of the turn's applied state.
    fn apply_conf_change(
        &mut self,
        index: u64,
        entry_context: &[u8],
        cc: &ConfChangeV2,
        batch: &mut WriteBatch,
    ) -> Result<Outcome, ServerError> {
        let corrupt = |e: String| {
            ServerError::Storage(crate::storage::StorageError::Corrupt(format!(
                "conf change context at {index}: {e}"
            )))
        };
        let context = if cc.context.is_empty() {
            None
        } else {
            let format = EntryKind::change_format(entry_context)
                .ok_or_else(|| corrupt("an entry context no lockfs writes".into()))?;
            Some(ChangeContext::decode(format, &cc.context).map_err(corrupt)?)
        };
        let cs = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            // Every replica refuses the same entry the same way, so skipping it keeps them
            // identical; the leader checks changes before proposing, so this is a bug guard.
            Err(e) => {
                log::error!("conf change at {index} refused: {e}");
                return Err(ServerError::Refused {
                    code: super::errno::EINVAL,
                    message: format!("membership change refused: {e}"),
                });
            }
        };
        let mut members = self.members().clone();
        if let Some(ctx) = &context {
            ctx.apply_to(&mut members);
        }
        for single in cc.get_changes() {
            let id = single.node_id;
            match single.get_change_type() {
                ConfChangeType::AddLearnerNode => {
                    log::info!("node {id} joined as a learner (index {index})");
                    self.snapshot_soon = true;
                    // A newcomer is not "unreachable since the leader started" (nor, after a
                    // replacement, since its predecessor died).
                    let now = self.clock.now();
                    if let Some(lead) = self.lead.as_mut() {
                        lead.last_active.insert(id, now);
                    }
                }
                ConfChangeType::AddNode => log::info!("node {id} is a voter (index {index})"),
                ConfChangeType::RemoveNode => {
                    if let Some(lead) = self.lead.as_mut() {
                        lead.last_active.remove(&id);
                    }
                    if id == self.cfg.id {
                        log::warn!("node {id} (this node) was removed from the cluster; it no longer takes part");
                    } else {
                        log::info!("node {id} was removed from the cluster (index {index})");
                    }
                }
            }
        }
        self.raw.mut_store().stage_conf_state(batch, cs);
        self.raw.mut_store().stage_members(batch, members);
        Ok(Outcome::Done)
    }

    /// Points the transport at the member book.
    fn follow_members(&mut self) {
        let peers = self
            .members()
            .iter()
            .map(|(id, m)| (*id, m.addr.clone()))
            .collect();
        self.transport.set_peers(&peers);
    }

    async fn on_ready(&mut self) -> Result<(), ServerError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.observe_role(ss.raft_state, ss.leader_id);
        }
        let early = ready.take_messages();
        let sent_early = !early.is_empty();
        self.send(early);
        if !ready.snapshot().is_empty() {
            let started = Instant::now();
            self.install_snapshot(ready.snapshot().clone())?;
            self.metrics.snapshots_installed.inc();
            self.metrics
                .snapshot_seconds
                .get_or_create(&KindLabel { kind: "installed" })
                .observe(started.elapsed().as_secs_f64());
        }
        for rs in ready.take_read_states() {
            self.read_state(rs.index, &rs.request_ctx);
        }
        // What waits for this node's disk write (a follower's acknowledgement) goes out before
        // the committed entries are applied; otherwise (a leader) the entries are applied first,
        // so their answers leave with the appends, before the disk write.
        let mut committed = ready.take_committed_entries();
        let acknowledges = !ready.persisted_messages().is_empty();
        if !acknowledges {
            self.apply(std::mem::take(&mut committed))?;
        }
        if ready.must_sync() && (sent_early || !acknowledges) {
            // The links and the client connections run on this thread too: let them send what
            // this turn queued (if it queued anything) before the disk write holds the thread.
            // Nothing of this node changes meanwhile (inputs wait in the inbox for the next
            // turn).
            tokio::task::yield_now().await;
        }

        let mut batch = WriteBatch::default();
        let mut dirty = false;
        // The hard state first: entries written now take a new commit index along.
        if let Some(hs) = ready.hs() {
            dirty |= self.raw.mut_store().take_hard_state(&mut batch, hs.clone());
        }
        if !ready.entries().is_empty() {
            self.raw
                .mut_store()
                .stage_append(&mut batch, ready.entries())?;
            dirty = true;
        }
        if dirty {
            let sync = ready.must_sync();
            let started = Instant::now();
            self.store.write(batch, sync)?;
            if sync {
                let took = started.elapsed().as_secs_f64();
                self.metrics.disk_sync_seconds.observe(took);
            }
        }
        self.send(ready.take_persisted_messages());
        if acknowledges {
            tokio::task::yield_now().await;
            self.apply(committed)?;
        }

        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().note_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        Ok(())
    }

    /// A leader's heartbeat carries a commit index no higher than what this node told it it
    /// holds. One past the end of this log means entries this node acknowledged are gone (a
    /// damaged write-ahead log cut short, or a data directory emptied under a member that
    /// kept its id): the node must not serve from here, and raft-rs would panic on it. Only
    /// heartbeats of this term or a later one count; raft-rs ignores older ones.
    fn check_heartbeat(&self, msg: &Message) -> Result<(), ServerError> {
        let last = self.raw.raft.raft_log.last_index();
        if msg.get_msg_type() != MessageType::MsgHeartbeat
            || msg.term < self.raw.raft.term
            || msg.commit <= last
        {
            return Ok(());
        }
        Err(ServerError::Storage(crate::storage::StorageError::Corrupt(
            format!(
                "node {} lost entries it had acknowledged: its leader (node {}) counts entries up \
             to {} as held here, but its log ends at {last}",
                self.cfg.id, msg.from, msg.commit
            ),
        )))
    }

    /// A peer's address refuses connections: nothing listens there, so the peer's process is
    /// not running (killed, crashed, restarting). A partitioned, paused or overloaded peer
    /// does not refuse; it only stays silent, and the election timeout is for that.
    ///
    /// If the peer is this follower's leader, waiting out the base election timeout would tell
    /// nothing more, so the election timer skips it: the node counts as not having heard from
    /// a leader for a whole election timeout. The randomized part of the timeout remains, so
    /// the followers still campaign one after another rather than splitting the vote, and one
    /// past the base timeout grants pre-votes (Raft's check-quorum lease has run out for it).
    /// Raft's safety does not rest on timing; this changes only how soon a dead leader is
    /// replaced. Reads waiting on the dead leader's ReadIndex fail now (the client retries
    /// elsewhere) instead of at their timeout.
    fn peer_down(&mut self, id: u64) {
        let raft = &mut self.raw.raft;
        if id == 0 || raft.state != StateRole::Follower || raft.leader_id != id {
            return;
        }
        let base = raft.election_timeout();
        if !self.leader_down {
            log::info!(
                "node {}: leader {id} refuses connections; election timer at {}/{} ticks",
                self.cfg.id,
                raft.election_elapsed.max(base),
                raft.randomized_election_timeout()
            );
        }
        raft.election_elapsed = raft.election_elapsed.max(base);
        self.leader_down = true;
        for (_, batch) in std::mem::take(&mut self.read_batches) {
            for read in batch.reads {
                read.fail(leader_gone());
            }
        }
    }

    fn observe_role(&mut self, role: StateRole, leader_id: u64) {
        if role == self.role && leader_id == self.leader_id {
            return;
        }
        self.leader_down = false;
        let term = self.raw.raft.term;
        if role != StateRole::Leader {
            self.lead = None;
        }
        if role == StateRole::Leader {
            let _ = self.leading();
            // Caches registered with former leaders may still serve what the entries up to
            // here replaced, and nothing here waits for them: reads wait for a barrier
            // instead, released once each cache registered here or its lease lapsed.
            self.pending_barrier = Some(self.raw.raft.raft_log.last_index());
        }
        match role {
            StateRole::Leader => log::info!("node {} is now the leader (term {term})", self.cfg.id),
            _ if leader_id == 0 => {
                log::info!("node {} is {role:?}, no leader (term {term})", self.cfg.id)
            }
            _ => log::info!(
                "node {} is {role:?}, leader is node {leader_id} (term {term})",
                self.cfg.id
            ),
        }
        if self.role == StateRole::Leader && role != StateRole::Leader {
            // Caches registered here must register with the new leader, which holds writes
            // until they have: told now, they do not wait for their next keep-alive.
            self.events.resync_caches(self.applied);
            self.noticed.clear();
        }
        if leader_id != 0 && leader_id != self.leader_id {
            self.metrics.leader_changes.inc();
        }
        self.role = role;
        self.leader_id = leader_id;
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            if msg.get_msg_type() == MessageType::MsgReadIndexResp && self.gated(msg.index) {
                self.gated_read_answers.push(msg);
            } else {
                self.transport.send(msg);
            }
        }
    }

    /// Whether the ReadIndex answer `index` to a follower must wait: a write at or below it is
    /// held until every cache that may hold what it changed has dropped it (`cache.rs`). A
    /// read that showed the write before then could be followed, on another host, by a read
    /// its cache answers with what the write replaced: the writes would not be linearizable.
    /// (The follower itself checks what it applied past `index`: [`Node::read_gate`].)
    fn gated(&self, index: u64) -> bool {
        self.pending_barrier.is_some_and(|b| b <= index) || self.cache_waits.holds_through(index)
    }

    /// What to do with a read whose ReadIndex `index` is applied. It is answered from the
    /// state at `self.applied`, which may show writes after `index`; it must show none that a
    /// cache may still serve the former state of (see [`Node::gated`]):
    /// - a write held here (the leader's, or a former leader's answers still held) that
    ///   changed something related to the read's path: the read waits for it;
    /// - on a follower, a change after `index` related to the path: the leader may still
    ///   hold it, and nothing here says when it no longer does. The read asks for a new
    ///   ReadIndex, which the leader gives once the change is released.
    fn read_gate(&self, index: u64, read: &PendingRead) -> ReadGate {
        if read.registers_cache() {
            return ReadGate::Answer;
        }
        let path = match read {
            PendingRead::Query(query, ..) => query_target(query)
                .and_then(|(target, _)| self.machine.path_of_target(target).ok())
                .unwrap_or_else(|| "/".into()),
            PendingRead::Watch(spec, ..) => spec.path.clone(),
            // Only events up to `index` are released, and only once no cache may still serve
            // what a write up to there replaced: here if this node holds such a write, and at
            // the leader for a follower's ReadIndex (see [`Node::gated`]).
            PendingRead::Events(_) if self.gated(index) => return ReadGate::Wait,
            PendingRead::Events(_) => return ReadGate::Answer,
        };
        let applied = self.applied;
        if self.pending_barrier.is_some_and(|b| b <= applied)
            || self.cache_waits.holds(applied, &path)
        {
            ReadGate::Wait
        } else if !self.is_leader() && self.recent.changed(index, applied, &path) {
            ReadGate::AskAgain
        } else {
            ReadGate::Answer
        }
    }

    fn send_read_answers(&mut self) {
        if self.gated_read_answers.is_empty() {
            return;
        }
        let (go, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.gated_read_answers)
            .into_iter()
            .partition(|m| !self.gated(m.index));
        self.gated_read_answers = wait;
        for msg in go {
            self.transport.send(msg);
        }
    }

    fn read_state(&mut self, index: u64, ctx: &[u8]) {
        let Some(ctx) = read_ctx_number(self.cfg.id, ctx) else {
            return;
        };
        if let Some(batch) = self.read_batches.remove(&ctx) {
            self.ready_reads.push((index, batch));
        }
    }

    /// Asks again for the ReadIndex of batches unanswered for [`READ_RETRY`]. A leader drops
    /// a ReadIndex request until it has committed an entry of its term (raft-rs does), and a
    /// message to a leader that is going away is lost; a leader that still has the request
    /// pending ignores the copy.
    fn retry_reads(&mut self, now: Instant) {
        let mut again = Vec::new();
        for (ctx, batch) in &mut self.read_batches {
            if now.duration_since(batch.asked) >= READ_RETRY {
                batch.asked = now;
                again.push(*ctx);
            }
        }
        for ctx in again {
            self.raw.read_index(read_ctx(self.cfg.id, ctx));
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready_reads = later;
        for (index, batch) in now {
            let mut waiting = Vec::new();
            let mut reads = Vec::new();
            for read in batch.reads {
                match self.read_gate(index, &read) {
                    ReadGate::Answer => reads.push(read),
                    ReadGate::Wait => waiting.push(read),
                    ReadGate::AskAgain => self.new_reads.push(read),
                }
            }
            if !waiting.is_empty() {
                self.ready_reads.push((
                    index,
                    ReadBatch {
                        reads: waiting,
                        ..batch
                    },
                ));
            }
            for read in reads {
                match read {
                    PendingRead::Query(query, access, reply) => {
                        let _ = reply.send(self.answer(&query, &access));
                    }
                    PendingRead::Watch(spec, access, reply) => {
                        let registered = self.register_watch(spec, &access);
                        let _ = reply.send(registered);
                        // A cache that registers anew may free held answers.
                        let ready =
                            self.settle_caches(Vec::new(), BTreeMap::new(), BTreeMap::new());
                        send_answers(ready);
                    }
                    PendingRead::Events(asked) => {
                        self.events.release_through(index);
                        // The next release may be asked for from here on.
                        drop(asked);
                    }
                }
            }
        }
    }

    /// Asks for the release of the events held for watches other than caches (`events.rs`),
    /// if some are held and none is asked for yet. A watcher learns of a change only once
    /// every cache that may hold what it replaced has dropped it: the release is a
    /// linearizable read, answered at its index once no write up to there is held for
    /// caches, by this node if it leads and by the leader for a follower (see
    /// [`Node::read_gate`]). It goes out at the next turn, which does not wait; not while the
    /// leader is known to be down, where it would only fail.
    fn release_events(&mut self) {
        if self.leader_down
            || self.events_asked.load(Ordering::Relaxed)
            || !self.events.holds_events()
        {
            return;
        }
        self.events_asked.store(true, Ordering::Relaxed);
        self.new_reads
            .push(PendingRead::Events(EventsAsked(self.events_asked.clone())));
    }

    /// Registers a watch at the applied index, if its session is live and usable by the
    /// caller and the caller may see the path (see `events.rs`): the events of every entry
    /// applied from now on reach it, and the reply says what the path held before them.
    fn register_watch(
        &mut self,
        spec: WatchSpec,
        access: &Access,
    ) -> Result<Watching, ServerError> {
        let session = self
            .machine
            .session_access(spec.session)
            .ok_or(StateError::SessionExpired)?;
        access.admits(spec.session, &session, false)?;
        if spec.cache {
            // The leader holds answers for caches: a cache registers there.
            if !self.leading() {
                return Err(self.not_leader());
            }
            if !self.machine.is_caching(spec.session) {
                return Err(StateError::InvalidArgument(
                    "only a session opened to cache may register a cache".into(),
                )
                .into());
            }
        }
        access.reaches(&spec.path, false)?;
        let user = access.user.as_ref();
        let target = Target::Path(spec.path.clone());
        let attr = match self.machine.query_as(&Query::Stat(target.clone()), user) {
            Ok(Outcome::Attr(attr)) => Some(attr),
            Ok(_) => unreachable!("a stat answers attributes"),
            Err(StateError::NotFound) => {
                // Watching a missing path tells when it appears: the caller must be able to
                // look at its nearest existing ancestor.
                let mut at = spec.path.as_str();
                loop {
                    at = parent_of(at).unwrap_or("/");
                    match self
                        .machine
                        .query_as(&Query::Stat(Target::Path(at.into())), user)
                    {
                        Err(StateError::NotFound) if at != "/" => continue,
                        Err(e) => return Err(e.into()),
                        Ok(_) => break,
                    }
                }
                None
            }
            Err(e) => return Err(e.into()),
        };
        if attr.as_ref().is_some_and(|a| a.kind == Kind::Dir) {
            // Events name the directory's children: the caller must be able to list it.
            self.machine.query_as(&Query::Readdir(target), user)?;
        }
        let holders = attr
            .as_ref()
            .map_or(0, |a| self.machine.lock_holders(a.instance));
        self.events.watch(spec, self.applied)?;
        Ok(Watching {
            index: self.applied,
            attr,
            holders,
        })
    }

    /// Answers a read as `access` allows: a query on a target outside the caller's subtree is
    /// refused, and listings are cut to what the caller may see.
    fn answer(&self, query: &Query, access: &Access) -> Result<Outcome, ServerError> {
        let user = access.user.as_ref();
        let Some(subtree) = &access.subtree else {
            return Ok(self.machine.query_as(query, user)?);
        };
        if let Some((target, look)) = query_target(query) {
            access.reaches(&self.machine.path_of_target(target)?, look)?;
        }
        Ok(match (query, self.machine.query_as(query, user)?) {
            (Query::Readdir(dir), Outcome::Entries(entries)) => {
                let dir = self.machine.path_of_target(dir)?;
                let dir = dir.trim_end_matches('/');
                Outcome::Entries(
                    entries
                        .into_iter()
                        .filter(|e| access.reaches(&format!("{dir}/{}", e.name), true).is_ok())
                        .collect(),
                )
            }
            (_, Outcome::Locks { locks, next }) => Outcome::Locks {
                locks: locks
                    .into_iter()
                    .filter(|l| within(&l.path, subtree))
                    .collect(),
                next,
            },
            (_, outcome) => outcome,
        })
    }

    fn expire_reads(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .read_batches
            .iter()
            .filter(|(_, b)| now.duration_since(b.started) > READ_TIMEOUT)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            let batch = self.read_batches.remove(&ctx).expect("collected above");
            for read in batch.reads {
                read.fail(ServerError::Unavailable(
                    "no leader confirmed the read in time".into(),
                ));
            }
        }
    }

    /// A new leader may have overwritten the tail of our log, taking our proposals with it.
    fn fail_truncated_proposals(&mut self) {
        let last = self.raw.raft.raft_log.last_index();
        while let Some(entry) = self.proposals.last_entry() {
            if *entry.key() <= last {
                break;
            }
            self.metrics.proposals_failed.inc();
            if let (_, Some(reply), _) = entry.remove() {
                let _ = reply.send(Err(ServerError::Unavailable(
                    "leader changed before the write committed".into(),
                )));
            }
        }
    }

    /// The answer to an open that created its file at `index` (the entry just applied) also
    /// gives the directory's attributes as they are now, right after the creation, and the
    /// index: a caching mount keeps them (`CreateTicket::keep_dir` in `fs/cache.rs`) instead
    /// of asking for the directory again. An answer given again from the session's stored
    /// answers created nothing at `index`, and gives neither.
    fn with_directory(
        &self,
        index: u64,
        mut result: Result<Outcome, ServerError>,
    ) -> Result<Outcome, ServerError> {
        if let Ok(Outcome::Opened {
            attr, created_in, ..
        }) = &mut result
        {
            *created_in = self
                .machine
                .created_in(index, attr.instance)
                .and_then(|dir| self.machine.attr(dir).ok())
                .map(|dir| (index, dir));
        }
        result
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), ServerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut replies: Vec<Answer> = Vec::new();
        let mut members_changed = false;
        // Indexes of session expiries applied in this batch (for `lock_delay_releases`).
        let mut expiries = std::collections::BTreeSet::new();
        // Writes applied here whose caches were told before they committed: index ->
        // (the file they were to write, the registrations told).
        let mut told: BTreeMap<u64, (u64, Vec<(u64, Key)>)> = BTreeMap::new();
        for entry in entries {
            let mut outcome = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => None, // a new leader's no-op
                EntryType::EntryNormal => {
                    let kind = EntryKind::of(&entry.context);
                    if let Some((_, format)) = kind {
                        self.check_readable(entry.index, format)?;
                    }
                    match kind {
                        Some((EntryKind::Check, format)) => {
                            // The digest must cover every entry before this one.
                            let changes = self.machine.take_changes();
                            self.digest.apply(&changes);
                            self.state_store
                                .stage_changes(&mut batch, changes, self.applied);
                            self.apply_check(entry.index, format, &entry.data)?;
                            None
                        }
                        Some((EntryKind::Report, format)) => {
                            self.apply_report(entry.index, format, &entry.data);
                            None
                        }
                        Some((EntryKind::Command, format)) => {
                            Some(self.apply_envelope(&entry, format, &mut expiries))
                        }
                        // The entry is as it was written (kept in memory, or read back from
                        // the store, which checks its seal), so every replica holds these same
                        // bytes and skips them alike.
                        Some((EntryKind::Change, _)) | None => {
                            log::error!(
                                "log entry {} has a context no lockfs writes; skipped",
                                entry.index
                            );
                            Some(Err(StateError::InvalidArgument(
                                "the request's log entry has an unknown context".into(),
                            )
                            .into()))
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    // Only ConfChangeV2 is ever proposed; a v1 entry is read as its v2 form.
                    let cc = proto::parse::<ConfChange>(&entry.data)
                        .map_err(|e| ServerError::Config(format!("conf change: {e}")))?;
                    members_changed = true;
                    if let Some(format) = EntryKind::change_format(&entry.context) {
                        self.check_readable(entry.index, format)?;
                    }
                    let cc = v2_of(cc);
                    Some(self.apply_conf_change(entry.index, &entry.context, &cc, &mut batch))
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = proto::parse::<ConfChangeV2>(&entry.data)
                        .map_err(|e| ServerError::Config(format!("conf change: {e}")))?;
                    members_changed = true;
                    if let Some(format) = EntryKind::change_format(&entry.context) {
                        self.check_readable(entry.index, format)?;
                    }
                    Some(self.apply_conf_change(entry.index, &entry.context, &cc, &mut batch))
                }
            };
            self.applied = entry.index;
            // Notices of proposals at earlier indexes, or of another term at this one, told of
            // writes that never applied; the caches forget them as they hear later events.
            while let Some(first) = self.noticed.first_entry() {
                if *first.key() > entry.index {
                    break;
                }
                let (index, noticed) = first.remove_entry();
                if index == entry.index && noticed.term == entry.term {
                    told.insert(index, (noticed.instance, noticed.told));
                }
            }
            // Proposals at earlier indexes were overwritten by another leader's entries.
            while let Some(first) = self.proposals.first_entry() {
                if *first.key() > entry.index {
                    break;
                }
                let (index, (term, reply, proposed)) = first.remove_entry();
                let result = match outcome.take() {
                    Some(result) if index == entry.index && term == entry.term => {
                        self.metrics.proposals_committed.inc();
                        let took = self
                            .clock
                            .now()
                            .saturating_duration_since(proposed)
                            .as_secs_f64();
                        self.metrics.proposal_seconds.observe(took);
                        self.with_directory(index, result)
                    }
                    _ => {
                        self.metrics.proposals_failed.inc();
                        Err(ServerError::Unavailable(
                            "leader changed before the write committed".into(),
                        ))
                    }
                };
                if let Some(reply) = reply {
                    replies.push((index, reply, result));
                }
            }
        }
        self.formats.set_cluster(self.machine.log_format());
        let events = self.machine.take_events();
        let node_events = self.machine.take_node_events();
        self.count_events(&events, &node_events, &expiries);
        let changes = self.machine.take_changes();
        self.digest.apply(&changes);
        self.state_store
            .stage_changes(&mut batch, changes, self.applied);
        self.store.write(batch, false)?;
        self.raw.mut_store().set_applied(self.applied);
        if members_changed {
            self.follow_members();
        }
        // A notice stands for the write only if the write changed the contents of the file
        // it named, and nothing else.
        for e in &node_events {
            let as_told = |(instance, _): &(u64, _)| {
                *instance == e.instance && matches!(e.change, NodeChange::Modified { .. })
            };
            let lock = matches!(
                e.change,
                NodeChange::Locked { .. } | NodeChange::Unlocked { .. }
            );
            if !lock && told.get(&e.index).is_some_and(|t| !as_told(t)) {
                told.remove(&e.index);
            }
        }
        let told: Told = told
            .into_iter()
            .map(|(index, (_, regs))| (index, regs))
            .collect();
        // Caches hear of the changes first; answers wait for them where they must.
        self.events.publish_changes_told(&node_events, &told);
        for event in events {
            if let (Event::SessionEnded { session, .. }, Some(lead)) = (&event, self.lead.as_mut())
            {
                lead.timers.ended(*session);
            }
            let ended = matches!(event, Event::SessionEnded { .. });
            self.events.publish(
                convert::event_session(&event),
                convert::event(&event),
                ended,
            );
        }
        // What caches may hold: everything but lock state.
        let mut changed: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for e in node_events {
            if !matches!(
                e.change,
                NodeChange::Locked { .. } | NodeChange::Unlocked { .. }
            ) {
                changed.entry(e.index).or_default().push(e.path);
            }
        }
        for (index, paths) in &changed {
            self.recent.record(*index, paths.clone());
        }
        let answers: Vec<Outgoing> = replies
            .into_iter()
            .map(|(index, reply, result)| {
                let paths = changed.remove(&index).unwrap_or_default();
                (index, paths, reply, result)
            })
            .collect();
        // Changes nobody here waits for (an expiry, a wake-up, a former leader's entries) are
        // held all the same, without answers: reads wait for them too.
        let ready = self.settle_caches(answers, changed, told);
        send_answers(ready);
        Ok(())
    }

    /// Refuses to go on past an entry in a log format newer than this node reads: that is
    /// only ever [`ServeConfig::log_format`] capped below the newest, which stands in for an
    /// older lockfs in tests, and a cluster switches only once every member reads the format.
    fn check_readable(&self, index: u64, format: LogFormat) -> Result<(), ServerError> {
        if format > self.cfg.log_format {
            return Err(ServerError::Config(format!(
                "log entry {index} is in log format {}, newer than node {} reads ({})",
                format.number(),
                self.cfg.id,
                self.cfg.log_format.number()
            )));
        }
        Ok(())
    }

    /// Applies a command entry: its result, for the client that proposed it.
    fn apply_envelope(
        &mut self,
        entry: &Entry,
        format: LogFormat,
        expiries: &mut std::collections::BTreeSet<u64>,
    ) -> Result<Outcome, ServerError> {
        match Envelope::decode(format, &entry.data) {
            Ok(envelope) => {
                let result = self.machine.apply_request(
                    &envelope.ctx(entry.index),
                    envelope.request.as_ref(),
                    &envelope.command,
                );
                self.count_applied(entry.index, &envelope.command, &result, expiries);
                match (result, &envelope.command) {
                    // A creation without a handle tells its directory too, as an open that
                    // creates does (`Node::with_directory`).
                    (Ok(Outcome::Attr(attr)), Command::Create(_)) => {
                        let dir = self
                            .machine
                            .created_in(entry.index, attr.instance)
                            .and_then(|dir| self.machine.attr(dir).ok());
                        Ok(match dir {
                            Some(dir) => Outcome::Made {
                                attr,
                                created_in: (entry.index, dir),
                            },
                            None => Outcome::Attr(attr),
                        })
                    }
                    (result, _) => result.map_err(ServerError::from),
                }
            }
            // The entry is as it was written (kept in memory, or read back from the store,
            // which checks its seal), so every replica holds these same bytes and skips them
            // alike.
            Err(e) => {
                log::error!("log entry {} cannot be decoded: {e}; skipped", entry.index);
                Err(
                    StateError::InvalidArgument(format!("the request could not be decoded: {e}"))
                        .into(),
                )
            }
        }
    }

    fn apply_report(&mut self, index: u64, format: LogFormat, data: &[u8]) {
        match self.integrity.apply_report(index, format, data) {
            Ok(r) => log::error!(
                "node {} reports that its state diverged from the leader's at index {}; \
                 rebuild it (README: Rebuilding a node)",
                r.node,
                r.at
            ),
            Err(e) => log::error!("{e}; skipped"),
        }
    }

    /// Counts what applying a command did that no event reports (`metrics.rs`).
    fn count_applied(
        &mut self,
        index: u64,
        command: &Command,
        result: &Result<Outcome, StateError>,
        expiries: &mut std::collections::BTreeSet<u64>,
    ) {
        let m = &self.metrics;
        match (command, result) {
            (Command::OpenSession(_), Ok(_)) => {
                m.sessions_opened.inc();
            }
            (Command::ExpireSession(_), Ok(_)) => {
                expiries.insert(index);
            }
            (Command::Lock(_), Ok(Outcome::Lock(r))) if r.granted().is_some() => {
                m.lock_wait_seconds.observe(0.0);
            }
            (
                Command::Lock(cmd::Lock { session, .. }),
                Ok(Outcome::Lock(LockResult::Queued { wait })),
            ) => {
                if self.queued_at.len() >= MAX_TIMED {
                    self.queued_at.clear();
                }
                self.queued_at.insert((*session, *wait), self.clock.now());
            }
            (_, Err(StateError::GenerationMismatch { .. })) => {
                m.fencing_refusals.inc();
            }
            _ => {}
        }
    }

    /// Counts what the events of applied commands report (`metrics.rs`).
    fn count_events(
        &mut self,
        events: &[Event],
        node_events: &[crate::state::NodeEvent],
        expiries: &std::collections::BTreeSet<u64>,
    ) {
        let m = &self.metrics;
        let now = self.clock.now();
        for event in events {
            match event {
                Event::SessionEnded { session, expired } => {
                    if *expired {
                        m.sessions_expired.inc();
                    } else {
                        m.sessions_closed.inc();
                    }
                    self.queued_at.retain(|(s, _), _| s != session);
                }
                Event::Granted { session, wait, .. } => {
                    if let Some(at) = self.queued_at.remove(&(*session, *wait)) {
                        m.lock_wait_seconds.observe((now - at).as_secs_f64());
                    }
                }
                Event::WaitFailed { session, wait, .. } => {
                    self.queued_at.remove(&(*session, *wait));
                }
                Event::LockRevoked { .. } => {}
            }
        }
        for e in node_events {
            let key = |h: &crate::state::LockHolder| {
                let flock = h.style == crate::state::LockStyle::Flock;
                (e.instance, h.session, h.owner, flock, h.start)
            };
            match &e.change {
                NodeChange::Locked { holder, .. } => {
                    m.lock_grants.inc();
                    if self.granted_at.len() >= MAX_TIMED {
                        self.granted_at.clear();
                    }
                    self.granted_at.insert(key(holder), now);
                }
                NodeChange::Unlocked { holder, .. } => {
                    if let Some(at) = self.granted_at.remove(&key(holder)) {
                        m.lock_hold_seconds.observe((now - at).as_secs_f64());
                    }
                    if expiries.contains(&e.index) {
                        m.lock_delay_releases.inc();
                    }
                }
                _ => {}
            }
        }
    }

    /// What `/metrics` shows of this node (`metrics.rs`).
    fn gauges(&self) -> Gauges {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let peer_lag = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .filter(|(id, _)| **id != self.cfg.id)
                .map(|(id, pr)| (*id, last.saturating_sub(pr.matched)))
                .collect()
        } else {
            Vec::new()
        };
        Gauges {
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied,
            leader_id: raft.leader_id,
            is_leader: raft.state == StateRole::Leader,
            peer_lag,
            diverged: self.integrity.diverged.is_some(),
            state: self.machine.stats(),
        }
    }

    /// Holds the answers of writes that changed something a cache may hold (see `cache.rs`),
    /// and gives back those no cache holds up anymore, with the ones held before.
    fn settle_caches(
        &mut self,
        answers: Vec<Outgoing>,
        unanswered: BTreeMap<u64, Vec<String>>,
        mut told: Told,
    ) -> Vec<(Reply, Result<Outcome, ServerError>)> {
        let caching: Vec<(u64, Duration)> = self
            .machine
            .caching_sessions()
            .map(|(s, ttl_ms)| (s, Duration::from_millis(ttl_ms)))
            .collect();
        if caching.is_empty() && self.cache_waits.is_empty() {
            // No cache to wait for.
            self.pending_barrier = None;
            return answers.into_iter().map(|(.., r, res)| (r, res)).collect();
        }
        let now = self.clock.now();
        let events = &self.events;
        let registration = |s: u64| events.cache_registration(s);
        // Only a leader's timers follow the leases; elsewhere none is known to have lapsed.
        let leading = self.is_leader();
        let term = self.raw.raft.term;
        let lead = self.lead.as_ref().filter(|_| leading);
        let margin = self.lease_margin;
        let lapsed = |s: u64| {
            lead.and_then(|l| l.timers.lease_end(term, s))
                .is_some_and(|end| now > end + margin)
        };
        let view = View {
            caching: &caching,
            registration: &registration,
            lapsed: &lapsed,
            now,
        };
        let mut ready = Vec::new();
        if let Some(index) = self.pending_barrier.take() {
            ready.extend(self.cache_waits.hold(
                index,
                vec!["/".into()],
                Vec::new(),
                &view,
                Vec::new(),
            ));
        }
        if leading {
            // A follower's holds would wait for caches registered elsewhere until their
            // deadline: it leaves its reads to `RecentChanges` instead.
            for (index, paths) in unanswered {
                let told = told.remove(&index).unwrap_or_default();
                let held = self.cache_waits.hold(index, paths, told, &view, Vec::new());
                ready.extend(held);
            }
        }
        for (index, paths, reply, result) in answers {
            if result.is_err() {
                // A refusal changed nothing, but it tells what the state was at `index`.
                ready.extend(self.cache_waits.hold_behind(index, (reply, result)));
                continue;
            }
            if paths.is_empty() {
                ready.push((reply, result));
                continue;
            }
            let told = told.remove(&index).unwrap_or_default();
            ready.extend(
                self.cache_waits
                    .hold(index, paths, told, &view, vec![(reply, result)]),
            );
        }
        ready.extend(self.cache_waits.release(&view));
        ready
    }

    /// Applies the check entry at `index`: compares this replica's digest with the proposer's
    /// and takes its own. A replica that finds itself diverged marks its data directory so
    /// before going on, and reports itself at its next tick (see `integrity.rs`).
    fn apply_check(
        &mut self,
        index: u64,
        format: LogFormat,
        data: &[u8],
    ) -> Result<(), ServerError> {
        match self
            .integrity
            .apply_check(index, format, data, self.digest.sum())
        {
            Ok(Verdict::Agrees) => {}
            Ok(Verdict::Diverged { at, own, theirs }) => {
                log::error!(
                    "STATE DIVERGED: node {}'s digest at index {at} is {own:032x}, the \
                     leader's {theirs:032x}. This node serves no reads from now on; rebuild \
                     it (README: Rebuilding a node)",
                    self.cfg.id
                );
                self.store.set_diverged(at)?;
            }
            Err(e) => log::error!("{e}; skipped"),
        }
        Ok(())
    }

    /// A diverged replica proposes its report entry (a follower's proposal goes to the
    /// leader), once a second until the report is applied. Not while a `Ready` is being
    /// handled: raft-rs allows no new messages between a `Ready` and its `advance`.
    fn report_divergence(&mut self, now: Instant) {
        let Some(at) = self.integrity.diverged else {
            return;
        };
        let recently = self
            .report_proposed
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
        if recently || self.leader_id == 0 || self.integrity.reported.contains_key(&self.cfg.id) {
            return;
        }
        self.report_proposed = Some(now);
        let format = self.machine.log_format();
        let report = Integrity::report(self.cfg.id, at, format);
        if let Err(e) = self.raw.propose(EntryKind::Report.context(format), report) {
            log::warn!("could not report the divergence to the leader: {e}");
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), ServerError> {
        let index = snapshot.get_metadata().index;
        let data = SnapshotData::decode(&snapshot.data).map_err(|e| {
            ServerError::Storage(crate::storage::StorageError::Corrupt(format!(
                "snapshot at {index}: {e}"
            )))
        })?;
        let records = match self.incoming.take() {
            Some((at, records)) if at == index => records,
            _ if !data.state.is_empty() => StateMachine::restore(&data.state)?.records(),
            _ => {
                return Err(ServerError::Storage(crate::storage::StorageError::Corrupt(
                    format!("the snapshot at {index} came without its records"),
                )))
            }
        };
        let mut batch = WriteBatch::default();
        self.state_store
            .stage_replace_all(&mut batch, &records, index);
        let digest = RecordDigest::of_records(&records);
        let machine = StateMachine::from_records(records)?;
        self.raw
            .mut_store()
            .stage_install_snapshot(&mut batch, snapshot);
        self.raw.mut_store().stage_members(&mut batch, data.members);
        self.store.write(batch, true)?;
        self.follow_members();
        log::info!(
            "node {} installed a snapshot at index {index} ({} nodes)",
            self.cfg.id,
            machine.len()
        );
        self.digest = digest;
        self.machine = machine;
        self.formats.set_cluster(self.machine.log_format());
        self.applied = index;
        self.raw.mut_store().set_applied(index);
        self.recent.forget_through(index);
        self.integrity.restored(index);
        // The records and the write batch of a large snapshot are freed now; glibc keeps freed
        // memory for reuse unless asked, which left a node that installed 1 GiB at 3 GiB.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(())
    }

    /// Compacts the log once enough was applied: records the point (index, term, members) as
    /// the latest snapshot, whose state is the stored state itself. A peer that needs the
    /// dropped entries gets a snapshot made when it needs it (see `RaftLog`'s `snapshot`).
    fn maybe_snapshot(&mut self) -> Result<(), ServerError> {
        let store = self.raw.store();
        let since = self.applied.saturating_sub(store.snapshot_index());
        let due = since >= self.cfg.snapshot_entries || (self.snapshot_soon && since > 0);
        if !due || self.applied > store.last_index() {
            return Ok(());
        }
        self.snapshot_soon = false;
        let started = Instant::now();
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = store.term(self.applied)?;
        meta.set_conf_state(store.conf_state().clone());
        snapshot.data = SnapshotData {
            members: store.members().clone(),
            state: Vec::new(),
        }
        .encode(self.machine.log_format())
        .into();
        let mut batch = WriteBatch::default();
        self.raw.mut_store().stage_compact(&mut batch, snapshot)?;
        self.store.write(batch, false)?;
        self.metrics.snapshots_taken.inc();
        self.metrics
            .snapshot_seconds
            .get_or_create(&KindLabel { kind: "taken" })
            .observe(started.elapsed().as_secs_f64());
        log::info!(
            "node {} compacted the log up to index {}",
            self.cfg.id,
            self.applied
        );
        Ok(())
    }

    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        let store = self.raw.store();
        let is_leader = raft.state == StateRole::Leader;
        let conf = store.conf_state();
        let mut members = Vec::new();
        let ids = conf
            .voters
            .iter()
            .map(|id| (*id, false))
            .chain(conf.learners.iter().map(|id| (*id, true)));
        let now = self.clock.now();
        let live = self.live(now);
        for (id, learner) in ids {
            let progress = raft.prs().get(id);
            let info = store.members().get(&id);
            let unreachable = if !is_leader || live.contains(&id) {
                Duration::ZERO
            } else {
                self.lead.as_ref().map_or(Duration::ZERO, |l| {
                    now.duration_since(l.last_active.get(&id).copied().unwrap_or(l.since))
                })
            };
            let role = if learner {
                "learner"
            } else if id == raft.leader_id {
                "leader"
            } else if id == self.cfg.id && raft.state == StateRole::Candidate {
                "candidate"
            } else {
                "follower"
            };
            members.push(MemberStatus {
                id,
                addr: info.map(|m| m.addr.clone()).unwrap_or_default(),
                role,
                reachable: id == self.cfg.id || (is_leader && live.contains(&id)),
                matched: if is_leader {
                    progress.map_or(0, |p| p.matched)
                } else {
                    0
                },
                promote: info.is_some_and(|m| m.promote),
                unreachable,
            });
        }
        members.sort_by_key(|m| m.id);
        NodeStatus {
            cluster_id: self.cluster_id,
            node_id: self.cfg.id,
            leader_id: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied,
            first_index: store.first_index(),
            last_index: store.last_index(),
            snapshot_index: store.snapshot_index(),
            log_format: self.machine.log_format(),
            members,
            check: self.integrity.latest(),
            diverged_at: self.integrity.diverged,
            reported: self.integrity.reported.clone(),
        }
    }
}

/// Sends answers that are ready.
fn send_answers(answers: Vec<(Reply, Result<Outcome, ServerError>)>) {
    for (reply, result) in answers {
        let _ = reply.send(result);
    }
}

/// A v1 conf change in its v2 form (raft-rs's own conversion is not exported).
fn v2_of(cc: ConfChange) -> ConfChangeV2 {
    let mut single = raft::prelude::ConfChangeSingle::default();
    single.set_change_type(cc.get_change_type());
    single.node_id = cc.node_id;
    let mut v2 = ConfChangeV2::default();
    v2.set_changes(vec![single].into());
    v2.context = cc.context;
    v2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_of_different_nodes_never_collide() {
        // The leader merges ReadIndex requests with equal contexts: request 1 of node 2 and
        // request 1 of node 3 must differ, and each node recognizes only its own.
        assert_ne!(read_ctx(2, 1), read_ctx(3, 1));
        assert_eq!(read_ctx_number(2, &read_ctx(2, 7)), Some(7));
        assert_eq!(read_ctx_number(3, &read_ctx(2, 7)), None);
        assert_eq!(read_ctx_number(2, &7u64.to_be_bytes()), None);
        assert_eq!(read_ctx_number(2, &[]), None);
    }
}
