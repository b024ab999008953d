//! Raft nodes of one cluster in one process, driven step by step, in the manner of raft-rs's
//! `harness/src/network.rs` and etcd-io/raft's interaction scripts.
//!
//! Each node is the real [`Node`] on a store in memory ([`MemDisk`], kept across the node's
//! crashes and restarts), with a [`ManualClock`] of its own and [`MemLinks`] instead of TCP: time
//! moves only when the test ticks a node, and every message a node sends waits here until the
//! test delivers it, or drops it because a partition cuts the link or its recipient is down.
//! So one run of a test is one schedule, the same every time, and a failing one is replayed by
//! running it again. Client requests enter a node's inbox as the service would put them there;
//! their answers are collected in the order the requests were made.
//!
//! `script.rs` reads the scripts in `testscripts/node/` (commands, and the output they must
//! print); `random.rs` draws schedules from a seed and checks the invariants the fault suite
//! checks on real processes.

#[cfg(test)]
mod held_back;
mod lock_clients;
mod random;
mod script;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::prelude::{Message, MessageType};
use tokio::sync::oneshot;

use super::authz::Access;
use super::clock::ManualClock;
use super::config::ConfigFile;
use super::events::EventRouter;
use super::log_formats::{self, LogFormats};
use super::membership::{MemberOp, SnapshotData};
use super::metrics::NodeMetrics;
use super::node::{InboxSender, Input, Node, NodeIo, NodeStatus};
use super::transport::Links;
use super::{node_tls, prepare, recover, ServeConfig, ServerError};
use crate::encoding::LogFormat;
use crate::state::{cmd, Command, Outcome, Query, Target};
use crate::storage::{MemDisk, MemberInfo, Members, Records, SnapshotOpener, Store, WriteBatch};

/// The wall clock every node starts at: any fixed time keeps runs identical.
const WALL_START_NS: u64 = 1_700_000_000_000_000_000;
/// How long a test waits for a snapshot's records, read by a thread of the sending node.
const SNAPSHOT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most delivery rounds one `stabilize` runs before it gives up (a livelock is a failure).
const MAX_ROUNDS: usize = 10_000;

/// A snapshot's records, as the sending node's reader thread hands them over.
#[derive(Default)]
struct Streamed {
    index: u64,
    records: Records,
    done: bool,
}

type Streams = Arc<Mutex<HashMap<u64, Arc<Mutex<Streamed>>>>>;

/// A node's network in this harness: what it sends is kept for the test to deliver.
pub struct MemLinks {
    sent: Arc<Mutex<Vec<Message>>>,
    streams: Streams,
    formats: Arc<LogFormats>,
}

impl Links for MemLinks {
    fn set_peers(&mut self, _peers: &BTreeMap<u64, String>) {
        // Messages are routed by node id; addresses mean nothing here.
    }

    fn send(&self, msg: Message) {
        self.sent.lock().expect("sent poisoned").push(msg);
    }

    fn opener(&self) -> SnapshotOpener {
        let streams = self.streams.clone();
        let formats = self.formats.clone();
        Arc::new(move |to: u64, index: u64, members: &Members| {
            let stream = Arc::new(Mutex::new(Streamed {
                index,
                ..Streamed::default()
            }));
            streams
                .lock()
                .expect("streams poisoned")
                .insert(to, stream.clone());
            let sink = Box::new(move |batch: Option<Records>| {
                let mut s = stream.lock().expect("stream poisoned");
                match batch {
                    Some(records) => s.records.extend(records),
                    None => s.done = true,
                }
                true
            });
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
}

/// One running node and what the harness holds of it.
struct Member {
    node: Node,
    inbox: InboxSender,
    clock: Arc<ManualClock>,
    sent: Arc<Mutex<Vec<Message>>>,
    streams: Streams,
    /// What the node was told of its peers' log formats, and the cluster's it keeps there.
    formats: Arc<LogFormats>,
}

/// What a request asked, and where its answer will come.
struct Request {
    number: u64,
    node: u64,
    what: String,
    answer: Waiting,
}

enum Waiting {
    Outcome(oneshot::Receiver<Result<Outcome, ServerError>>),
    /// A keep-alive's answer is the session's TTL.
    KeepAlive(oneshot::Receiver<Result<u64, ServerError>>),
}

impl Waiting {
    /// The answer, if it came (`Err(())`: not yet).
    fn try_take(&mut self) -> Result<Result<Outcome, String>, ()> {
        use oneshot::error::TryRecvError;
        let gone = || Err("no answer: the node stopped".to_string());
        match self {
            Waiting::Outcome(rx) => match rx.try_recv() {
                Ok(r) => Ok(r.map_err(|e| e.to_string())),
                Err(TryRecvError::Empty) => Err(()),
                Err(TryRecvError::Closed) => Ok(gone()),
            },
            Waiting::KeepAlive(rx) => match rx.try_recv() {
                Ok(r) => Ok(r.map(|_| Outcome::Done).map_err(|e| e.to_string())),
                Err(TryRecvError::Empty) => Err(()),
                Err(TryRecvError::Closed) => Ok(gone()),
            },
        }
    }
}

/// A client request's end: answered, or lost with its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub number: u64,
    pub node: u64,
    pub what: String,
    pub result: Result<Outcome, String>,
}

/// How the nodes of a cluster are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Election timeout of node `id`: `election_ticks + id * election_step` ticks, so the
    /// order in which followers time out is part of the schedule.
    pub election_ticks: usize,
    pub election_step: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_entries: u64,
    pub lock_delay: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            election_ticks: 10,
            election_step: 2,
            heartbeat_ticks: 2,
            snapshot_entries: 10_000,
            lock_delay: Duration::from_secs(5),
        }
    }
}

pub struct Cluster {
    settings: Settings,
    /// Every node's disk, from its first start on.
    disks: BTreeMap<u64, MemDisk>,
    /// The newest log format each node reads, as of its latest start: below the newest, it
    /// stands in for an older lockfs.
    reads: BTreeMap<u64, LogFormat>,
    running: BTreeMap<u64, Member>,
    /// Nodes that were started and are down now; their disks stay.
    down: BTreeSet<u64>,
    /// Every member ever added, with its address in the book.
    book: Members,
    /// Sent and not yet delivered, in the order they were sent.
    in_flight: VecDeque<Message>,
    /// Links (from, to) on which every message is dropped.
    cut: BTreeSet<(u64, u64)>,
    requests: Vec<Request>,
    next_request: u64,
    /// Set when the first node bootstraps.
    cluster_id: u64,
    /// See [`Cluster::now`].
    time: Duration,
    /// The secrets of the sessions opened, from their answers.
    secrets: BTreeMap<u64, u128>,
    /// Snapshots delivered since the last [`Cluster::take_log`]: (from, to, index).
    log: Vec<String>,
    runtime: tokio::runtime::Runtime,
}

fn addr(id: u64) -> String {
    format!("127.0.0.1:{}", 17000 + id)
}

impl Cluster {
    /// The initial cluster: voters `ids`, every node a follower at term 0, every node reading
    /// log formats up to `reads` (the newest when `None`).
    pub fn start(ids: &[u64], settings: Settings, reads: Option<LogFormat>) -> Cluster {
        let book: Members = ids
            .iter()
            .map(|&id| {
                let info = MemberInfo {
                    addr: addr(id),
                    promote: true,
                };
                (id, info)
            })
            .collect();
        let mut c = Cluster {
            settings,
            disks: BTreeMap::new(),
            reads: BTreeMap::new(),
            running: BTreeMap::new(),
            down: BTreeSet::new(),
            book,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            requests: Vec::new(),
            next_request: 1,
            cluster_id: 0,
            time: Duration::ZERO,
            secrets: BTreeMap::new(),
            log: Vec::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
        };
        if let Some(format) = reads {
            for &id in ids {
                c.set_reads(id, format);
            }
        }
        for &id in ids {
            c.boot(id, None);
        }
        c
    }

    /// Named in the configuration and in the node's log lines; nothing is written there.
    fn data_dir(&self, id: u64) -> PathBuf {
        PathBuf::from(format!("/harness/n{id}"))
    }

    fn config(&self, id: u64) -> ServeConfig {
        let peers = self
            .book
            .iter()
            .map(|(id, m)| format!("{id}={}", m.addr))
            .collect::<Vec<_>>()
            .join(",");
        let file = ConfigFile {
            id: Some(id),
            data: Some(self.data_dir(id)),
            peers: Some(peers),
            insecure: Some(true),
            election_ticks: Some(
                self.settings.election_ticks + id as usize * self.settings.election_step,
            ),
            heartbeat_ticks: Some(self.settings.heartbeat_ticks),
            snapshot_entries: Some(self.settings.snapshot_entries),
            lock_delay_ms: Some(self.settings.lock_delay.as_millis() as u64),
            ..ConfigFile::default()
        };
        let mut cfg = file.finish().expect("a valid configuration");
        cfg.random_election = false;
        cfg.log_format = self.reads(id);
        cfg
    }

    /// Starts node `id` from its data directory: bootstrapping, recovering, or, given the
    /// member book to join with, as a new member that catches up from the leader.
    fn boot(&mut self, id: u64, join: Option<Members>) {
        let cfg = self.config(id);
        let tls = node_tls(&cfg).expect("insecure credentials");
        let disk = self.disks.entry(id).or_default();
        let store = Store::in_memory(disk).expect("a store in memory");
        let (cluster_id, raft_log) = match join {
            None => prepare(&cfg, &store, &tls, &self.runtime).expect("prepared"),
            Some(members) => {
                let mut raft_log = store.raft_log().expect("a raft log");
                let mut batch = WriteBatch::default();
                raft_log.stage_members(&mut batch, members);
                store.write(batch, true).expect("written");
                let cluster_id = self.cluster_id;
                super::check_identity(&store, &cfg, cluster_id, true).expect("the same cluster");
                (cluster_id, raft_log)
            }
        };
        self.cluster_id = cluster_id;
        let recovered = recover(store, raft_log).expect("recovered");
        let (inbox, inbox_rx) = super::node::inbox();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let streams = Streams::default();
        let formats = Arc::new(LogFormats::default());
        let clock = Arc::new(ManualClock::new(WALL_START_NS));
        clock.advance(self.time);
        let io = NodeIo {
            links: Box::new(MemLinks {
                sent: sent.clone(),
                streams: streams.clone(),
                formats: formats.clone(),
            }),
            inbox: inbox_rx,
            clock: clock.clone(),
            // Different on every node, the same in every run.
            secrets: {
                let mut drawn = 0u128;
                Box::new(move || {
                    drawn += 1;
                    (u128::from(id) << 64) | drawn
                })
            },
            formats: formats.clone(),
        };
        let (metrics, _) = NodeMetrics::new();
        let events = Arc::new(EventRouter::counting(Default::default()));
        let node =
            Node::new(cfg, cluster_id, recovered, io, events, Arc::new(metrics)).expect("a node");
        self.down.remove(&id);
        self.running.insert(
            id,
            Member {
                node,
                inbox,
                clock,
                sent,
                streams,
                formats,
            },
        );
        self.hellos(id);
    }

    /// The newest log format node `id` reads.
    fn reads(&self, id: u64) -> LogFormat {
        self.reads.get(&id).copied().unwrap_or(LogFormat::NEWEST)
    }

    /// Node `id` (just started) and every running node exchange hellos, as connections
    /// between them would begin: each learns the log format the other reads. A refusal is
    /// only said; what the transport then holds back, [`Cluster::deliver`] drops.
    fn hellos(&mut self, id: u64) {
        let others: Vec<u64> = self.running().into_iter().filter(|&o| o != id).collect();
        for o in others {
            let _ = self.running[&id].formats.hello(o, self.reads(o).number());
            let _ = self.running[&o].formats.hello(id, self.reads(id).number());
        }
    }

    /// Node `id` reads log formats up to `format` from its next start on (below the newest,
    /// it stands in for an older lockfs).
    pub fn set_reads(&mut self, id: u64, format: LogFormat) {
        self.reads.insert(id, format);
    }

    /// The log format the cluster writes, as node `id`'s applied state says.
    pub fn writes(&self, id: u64) -> LogFormat {
        self.running[&id].formats.cluster()
    }

    /// Each node: the newest log format it reads, and the one the cluster writes as of its
    /// applied state.
    pub fn describe_formats(&self) -> String {
        let mut out = String::new();
        for (id, m) in &self.running {
            let _ = writeln!(
                out,
                "n{id}: reads {}, writes {}",
                self.reads(*id).number(),
                m.formats.cluster().number()
            );
        }
        out
    }

    fn member(&mut self, id: u64) -> &mut Member {
        self.running
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn running(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    /// Runs one turn of node `id` and collects what it sent.
    fn turn(&mut self, id: u64) {
        let m = self.member(id);
        let going = futures::executor::block_on(m.node.turn(None)).expect("the node's turn");
        assert!(going, "node {id} shut down");
        let sent = std::mem::take(&mut *m.sent.lock().expect("sent poisoned"));
        self.in_flight.extend(sent);
    }

    /// Moves node `id`'s clock one tick on and runs its turn (which ticks raft).
    pub fn tick(&mut self, id: u64) {
        let tick = self.member(id).node.tick_length();
        let clock = self.member(id).clock.clone();
        clock.advance(tick);
        self.time = self.time.max(clock.elapsed());
        self.turn(id);
    }

    /// How far the furthest clock has moved since the cluster started; a node that starts
    /// (again) starts there.
    pub fn now(&self) -> Duration {
        self.time
    }

    /// Every running node takes a turn, in id order.
    pub fn turn_all(&mut self) {
        for id in self.running() {
            self.turn(id);
        }
    }

    /// Starts an election on node `id` now.
    pub fn campaign(&mut self, id: u64) {
        self.member(id).node.campaign().expect("campaign");
        self.turn(id);
    }

    /// Delivers every message in flight (or drops it), then lets every node take a turn.
    /// Returns how many were delivered.
    pub fn deliver(&mut self) -> usize {
        let mut delivered = 0;
        for msg in std::mem::take(&mut self.in_flight) {
            let (from, to) = (msg.from, msg.to);
            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            // A node's transport sends a peer nothing in a log format the peer does not read.
            let reachable = !self.cut.contains(&(from, to))
                && self.running.contains_key(&to)
                && log_formats::needed(&msg) <= self.reads(to);
            if snapshot {
                let records = reachable.then(|| self.snapshot_records(&msg)).flatten();
                let ok = records.is_some();
                if let Some(records) = records {
                    let index = msg.get_snapshot().get_metadata().index;
                    self.log
                        .push(format!("snapshot n{from} -> n{to} at index {index}"));
                    let _ = self.running[&to]
                        .inbox
                        .send(Input::Snapshot { msg, records });
                    delivered += 1;
                }
                if let Some(sender) = self.running.get(&from) {
                    let _ = sender.inbox.send(Input::SnapshotSent { to, delivered: ok });
                }
            } else if reachable {
                let _ = self.running[&to].inbox.send(Input::Raft(msg));
                delivered += 1;
            }
        }
        self.turn_all();
        delivered
    }

    /// The records that follow snapshot `msg`, once its sender's reader has read them all.
    fn snapshot_records(&self, msg: &Message) -> Option<Records> {
        let index = msg.get_snapshot().get_metadata().index;
        let stream = self
            .running
            .get(&msg.from)?
            .streams
            .lock()
            .expect("streams poisoned")
            .remove(&msg.to)
            .filter(|s| s.lock().expect("stream poisoned").index == index)?;
        let deadline = Instant::now() + SNAPSHOT_READ_TIMEOUT;
        loop {
            {
                let mut s = stream.lock().expect("stream poisoned");
                if s.done {
                    return Some(std::mem::take(&mut s.records));
                }
            }
            assert!(
                Instant::now() < deadline,
                "the snapshot's records were not read"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Delivers until nothing is in flight: every node has heard all it will hear without
    /// time passing.
    pub fn stabilize(&mut self) {
        self.turn_all();
        for _ in 0..MAX_ROUNDS {
            if self.in_flight.is_empty() {
                return;
            }
            self.deliver();
        }
        panic!("messages still in flight after {MAX_ROUNDS} rounds");
    }

    /// `ticks` rounds of: every node ticks, then the network stabilizes.
    pub fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for id in self.running() {
                self.tick(id);
            }
            self.stabilize();
        }
    }

    /// Node `id` stops as by kill -9: what it had not written is gone, its disk stays, and
    /// the requests it held get no answer.
    pub fn crash(&mut self, id: u64) {
        self.running
            .remove(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"));
        self.down.insert(id);
    }

    /// Node `id`'s machine loses power: it stops as in [`Cluster::crash`], and its disk also
    /// loses what was written since its last synced write.
    pub fn lose_power(&mut self, id: u64) {
        self.crash(id);
        self.disks[&id].lose_power();
    }

    /// Node `id` starts again from its disk.
    pub fn restart(&mut self, id: u64) {
        assert!(self.down.contains(&id), "node {id} is not down");
        self.boot(id, None);
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn partition(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Cuts only the link from `from` to `to`.
    pub fn cut_one_way(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    fn request(
        &mut self,
        node: u64,
        what: String,
        input: impl FnOnce(super::node::Reply) -> Input,
    ) {
        let (tx, rx) = oneshot::channel();
        let _ = self.member(node).inbox.send(input(tx));
        self.await_answer(node, what, Waiting::Outcome(rx));
    }

    /// Notes a request sent to `node`, whose answer comes on `answer`.
    fn await_answer(&mut self, node: u64, what: String, answer: Waiting) {
        self.requests.push(Request {
            number: self.next_request,
            node,
            what,
            answer,
        });
        self.next_request += 1;
    }

    /// A write through node `node`.
    pub fn propose(&mut self, node: u64, what: String, command: Command) {
        self.request(node, what, |reply| Input::Propose {
            command,
            request: None,
            auth: Access::default(),
            reply,
        });
    }

    /// A write through node `node` that uses `session` (with its secret).
    pub fn propose_as(&mut self, node: u64, session: u64, what: String, command: Command) {
        let auth = Access {
            secret: self.secrets.get(&session).copied().unwrap_or(0),
            ..Access::default()
        };
        self.request(node, what, |reply| Input::Propose {
            command,
            request: None,
            auth,
            reply,
        });
    }

    /// Replaces the contents of `path`.
    pub fn put(&mut self, node: u64, path: &str, data: &str) {
        let command = Command::Put(cmd::Put {
            at: Target::Path(path.into()),
            data: data.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            if_generation: None,
        });
        self.propose(node, format!("put {path} {data}"), command);
    }

    /// Opens a session with a TTL of `ttl_ms`.
    pub fn open_session(&mut self, node: u64, ttl_ms: u64) {
        self.open_session_as(node, ttl_ms, format!("session ttl={ttl_ms}"));
    }

    /// Opens a session, the request named `what`.
    pub fn open_session_as(&mut self, node: u64, ttl_ms: u64, what: String) {
        let command = Command::OpenSession(cmd::OpenSession {
            ttl_ms,
            host: "harness".into(),
            pid: 1,
            name: String::new(),
            owner: String::new(),
            secret: 0,
            cache: false,
        });
        self.propose(node, what, command);
    }

    /// A linearizable read of `path` through node `node`.
    pub fn read(&mut self, node: u64, path: &str) {
        let query = Query::Read {
            target: Target::Path(path.into()),
            offset: 0,
            len: None,
        };
        self.request(node, format!("read {path}"), |reply| Input::Read {
            query,
            auth: Access::default(),
            reply,
        });
    }

    /// A linearizable listing of the live sessions through node `node`.
    pub fn sessions(&mut self, node: u64) {
        let query = Query::Sessions { after: 0, limit: 0 };
        self.request(node, "sessions".into(), |reply| Input::Read {
            query,
            auth: Access::default(),
            reply,
        });
    }

    /// A keep-alive of `session` through node `node`; its answer shows as `ok` or the refusal.
    pub fn keep_alive(&mut self, node: u64, session: u64) {
        self.keep_alive_as(node, session, format!("keep-alive {session}"));
    }

    /// A keep-alive, the request named `what`.
    pub fn keep_alive_as(&mut self, node: u64, session: u64, what: String) {
        let (tx, rx) = oneshot::channel();
        let secret = self.secrets.get(&session).copied().unwrap_or(0);
        let _ = self.member(node).inbox.send(Input::KeepAlive {
            session,
            auth: Access {
                secret,
                ..Access::default()
            },
            reply: tx,
        });
        self.await_answer(node, what, Waiting::KeepAlive(rx));
    }

    /// A membership change asked of node `node`.
    pub fn change_members(&mut self, node: u64, op: MemberOp) {
        self.request(node, format!("{op:?}"), |reply| Input::ChangeMembers {
            op,
            reply,
        });
    }

    /// Adds node `id` through node `via`: the change is asked for, and the new node starts
    /// with an empty data directory, knowing only the member book, as `--join` leaves it.
    /// With `promote`, the leader makes it a voter once it has caught up; without, it stays a
    /// learner until promoted.
    pub fn add(&mut self, via: u64, id: u64, promote: bool) {
        self.book.insert(
            id,
            MemberInfo {
                addr: addr(id),
                promote,
            },
        );
        self.change_members(
            via,
            MemberOp::Add {
                id,
                addr: addr(id),
                promote,
            },
        );
        let book = self.book.clone();
        self.boot(id, Some(book));
    }

    /// The answers that have come in since last asked, in the order of the requests.
    pub fn answers(&mut self) -> Vec<Answer> {
        let mut out = Vec::new();
        let mut waiting = Vec::new();
        for mut r in std::mem::take(&mut self.requests) {
            let Ok(result) = r.answer.try_take() else {
                waiting.push(r);
                continue;
            };
            if let Ok(Outcome::Session { id, secret }) = &result {
                self.secrets.insert(*id, *secret);
            }
            out.push(Answer {
                number: r.number,
                node: r.node,
                what: r.what,
                result,
            });
        }
        self.requests = waiting;
        out
    }

    /// Requests still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Snapshots delivered since last asked.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    pub fn status(&self, id: u64) -> Option<NodeStatus> {
        self.running.get(&id).map(|m| m.node.status())
    }

    /// The digest of node `id`'s applied state.
    /// Node `id`'s locks and sessions as applied there (see `Node::locks_and_sessions`).
    pub fn locks_and_sessions(&self, id: u64) -> Option<String> {
        self.running.get(&id).map(|m| m.node.locks_and_sessions())
    }

    pub fn digest(&self, id: u64) -> Option<u128> {
        self.running.get(&id).map(|m| m.node.state_digest())
    }

    /// Every node ever started or added, by id (removed ones included).
    pub fn known(&self) -> Vec<u64> {
        self.book.keys().copied().collect()
    }

    /// One line per node: its role, term, leader, commit and applied index, and a short
    /// digest of its state.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // The members as a leader knows them: a node it does not list was removed.
        let members: Option<BTreeSet<u64>> = self
            .running
            .keys()
            .filter_map(|&id| self.status(id).filter(|s| s.leader_id == id))
            .max_by_key(|s| s.term)
            .map(|s| s.members.iter().map(|m| m.id).collect());
        for id in self.known() {
            match self.status(id) {
                None if self.down.contains(&id) => {
                    let _ = writeln!(out, "n{id}: down");
                }
                None => {}
                Some(s) => {
                    let removed = members.as_ref().is_some_and(|m| !m.contains(&id));
                    let role = if removed {
                        "removed"
                    } else if s.leader_id == id {
                        "leader"
                    } else if s.members.iter().any(|m| m.id == id && m.role == "learner") {
                        "learner"
                    } else {
                        "follower"
                    };
                    let digest = self.digest(id).unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "n{id}: {role} term={} leader={} commit={} applied={} state={:08x}",
                        s.term,
                        s.leader_id,
                        s.commit,
                        s.applied,
                        (digest >> 96) as u32
                    );
                }
            }
        }
        out
    }
}

/// What a caught panic said.
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// An answer as the scripts print it.
pub fn show(a: &Answer) -> String {
    let result = match &a.result {
        Ok(Outcome::Done) => "ok".to_string(),
        Ok(Outcome::Attr(attr)) => format!("ok instance={}", attr.instance),
        Ok(Outcome::Data { data, .. }) => format!("{:?}", String::from_utf8_lossy(data)),
        Ok(Outcome::Session { id, .. }) => format!("session {id}"),
        Ok(Outcome::Sessions { sessions, .. }) => {
            let ids: Vec<u64> = sessions.iter().map(|s| s.id).collect();
            format!("{ids:?}")
        }
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error: {e}"),
    };
    format!("#{} n{} {}: {result}", a.number, a.node, a.what)
}
