//! Clients that take turns on one exclusive flock in the random schedules, and the check of
//! lock safety from what they were told, as Chubby promises it: a client that was granted the
//! lock may act under it until it sends its unlock or its session's lease runs out by its own
//! count (from when it sent the last keep-alive that was answered, plus the TTL); no other
//! client may be granted the lock before then. Session expiry, the lock-delay and the new
//! leader's grace are what keep this true across crashes, partitions and a client frozen
//! while it holds the lock (as a paused host: it sends nothing, and goes on believing).
//! Without the lock-delay, and with clients that count their lease twice as long, the check
//! fails within a few dozen schedules.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{Answer, Cluster};
use crate::state::{cmd, Command, CreateSpec, LockKind, LockResult, LockStyle, Outcome, Target};

/// The clients' session TTL.
const TTL: Duration = Duration::from_millis(2_000);
const LOCK_PATH: &str = "/lock";

#[derive(Default)]
struct Client {
    session: Option<u64>,
    handle: Option<u64>,
    /// Since when it holds the lock, as it was told, and the generation it was granted.
    holding: Option<(Duration, u64)>,
    /// When its outstanding request was sent.
    busy: Option<Duration>,
    /// When its outstanding keep-alive was sent (keep-alives go beside the requests).
    keeping: Option<Duration>,
    /// When it last sent a keep-alive.
    kept: Duration,
    /// Until when it is frozen (as a paused host): it sends nothing, and believes it holds
    /// what it held, until its lease runs out.
    frozen_until: Duration,
    /// Until when its lease runs by its own count.
    lease_end: Duration,
}

pub struct LockClients {
    clients: Vec<Client>,
    /// Acknowledged grants.
    pub grants: usize,
}

impl LockClients {
    pub fn new(n: usize) -> LockClients {
        LockClients {
            clients: (0..n).map(|_| Client::default()).collect(),
            grants: 0,
        }
    }

    /// Whether `what` names one of these clients' requests.
    pub fn owns(what: &str) -> bool {
        what.starts_with('c')
            && what
                .split_once(' ')
                .is_some_and(|(c, _)| c[1..].parse::<usize>().is_ok())
    }

    /// One client not waiting for an answer takes its next step, through `node`.
    pub fn step(&mut self, c: &mut Cluster, rng: &mut StdRng, node: u64) {
        let i = rng.gen_range(0..self.clients.len());
        let now = c.now();
        let client = &mut self.clients[i];
        if client.busy.is_some() || now < client.frozen_until {
            return;
        }
        // A client whose lease ran out by its own count stops acting under the lock.
        if client.holding.is_some() && now >= client.lease_end {
            client.holding = None;
        }
        let (Some(session), handle) = (client.session, client.handle) else {
            client.busy = Some(now);
            c.open_session_as(node, TTL.as_millis() as u64, format!("c{i} session"));
            return;
        };
        let Some(handle) = handle else {
            client.busy = Some(now);
            let open = Command::Open(cmd::Open {
                session,
                at: Target::Path(LOCK_PATH.into()),
                create: Some(CreateSpec {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    exclusive: false,
                }),
            });
            c.propose_as(node, session, format!("c{i} open"), open);
            return;
        };
        let command = if client.holding.is_some() {
            if rng.gen_bool(0.5) {
                return; // It works under the lock a while longer.
            }
            // From the moment it sends its unlock, it no longer acts under the lock.
            client.holding = None;
            Command::Unlock(cmd::Unlock {
                session,
                handle,
                owner: i as u64 + 1,
                style: LockStyle::Flock,
                start: 0,
                end: u64::MAX,
            })
        } else {
            Command::Lock(cmd::Lock {
                session,
                handle,
                owner: i as u64 + 1,
                style: LockStyle::Flock,
                kind: LockKind::Exclusive,
                start: 0,
                end: u64::MAX,
                wait: false,
                pid: 1,
            })
        };
        let what = match command {
            Command::Lock(_) => "lock",
            _ => "unlock",
        };
        client.busy = Some(now);
        c.propose_as(node, session, format!("c{i} {what}"), command);
    }

    /// One client freezes for one to four TTLs.
    pub fn freeze(&mut self, rng: &mut StdRng, now: Duration) {
        let i = rng.gen_range(0..self.clients.len());
        let ms = rng.gen_range(TTL.as_millis()..4 * TTL.as_millis()) as u64;
        self.clients[i].frozen_until = now + Duration::from_millis(ms);
    }

    /// Every client with a session and no keep-alive in flight sends one a third of a TTL
    /// after its last, through `node`.
    pub fn keep_alive(&mut self, c: &mut Cluster, node: u64) {
        let now = c.now();
        for (i, client) in self.clients.iter_mut().enumerate() {
            let Some(session) = client.session else {
                continue;
            };
            if client.keeping.is_none()
                && now >= client.kept + TTL / 3
                && now >= client.frozen_until
            {
                client.keeping = Some(now);
                client.kept = now;
                c.keep_alive_as(node, session, format!("c{i} keep-alive"));
            }
        }
    }

    /// Takes in the answer to one of these clients' requests at time `now`; an error is a
    /// broken promise.
    pub fn answered(&mut self, a: &Answer, now: Duration) -> Result<(), String> {
        let (who, what) = a.what.split_once(' ').expect("cN what");
        let i: usize = who[1..].parse().expect("a client number");
        let client = &mut self.clients[i];
        let slot = if what == "keep-alive" {
            &mut client.keeping
        } else {
            &mut client.busy
        };
        let sent = slot.take().expect("an answer to a request in flight");
        match (what, &a.result) {
            ("session", Ok(Outcome::Session { id, .. })) => {
                *client = Client {
                    session: Some(*id),
                    lease_end: sent + TTL,
                    kept: sent,
                    keeping: client.keeping,
                    ..Client::default()
                };
            }
            ("keep-alive", Ok(_)) => client.lease_end = client.lease_end.max(sent + TTL),
            ("open", Ok(Outcome::Opened { handle, .. })) => client.handle = Some(*handle),
            ("lock", Ok(Outcome::Lock(result))) => {
                let granted = match result {
                    LockResult::Granted { generation }
                    | LockResult::GrantedOnLoss { generation, .. } => Some(*generation),
                    _ => None,
                };
                // A grant heard after its own lease ran out is not acted on.
                if let Some(generation) = granted.filter(|_| now < client.lease_end) {
                    client.holding = Some((now, generation));
                    self.grants += 1;
                    for (j, other) in self.clients.iter().enumerate() {
                        if let (true, Some((since, theirs))) = (j != i, other.holding) {
                            if now < other.lease_end {
                                return Err(format!(
                                    "c{i} was granted the lock (generation {generation}) at \
                                     {now:?} while c{j} held it since {since:?} (generation \
                                     {theirs}) with a lease until {:?}",
                                    other.lease_end
                                ));
                            }
                        }
                    }
                }
            }
            // A client whose session expired starts over.
            (_, Err(e)) if e.contains("session expired") => {
                *client = Client {
                    keeping: client.keeping,
                    busy: client.busy,
                    ..Client::default()
                };
            }
            _ => {}
        }
        Ok(())
    }
}
