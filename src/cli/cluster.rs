//! `lockfs cluster status|add|remove|promote|reconcile`.
//!
//! Status combines two views: the leader's (roles, whom it hears from, how far each log
//! matches, which members reported their state diverged) and each member's own (its applied
//! index, its latest state digest, whether it found itself diverged), asked of every member
//! directly, so a member the CLI cannot reach shows as such. Reconcile compares the members with a file and
//! makes one change at a time, waiting for each to be applied (and a new member to catch up)
//! before planning the next; the cluster itself refuses any change that would lose its majority.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;
use serde_json::json;

use super::{CliError, ClientOpts};
use crate::client::{answer, ops, Client};
use crate::proto::{Member, Request_oneof_op as Op, StatusReply};

/// How long the CLI waits for one member's own status.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

async fn ask(client: &Client) -> Result<StatusReply, CliError> {
    client
        .status()
        .await
        .map_err(CliError::client("cluster status"))
}

/// The leader's status (or, with no leader, that of the first node that answers).
async fn leader_status(opts: &ClientOpts) -> Result<StatusReply, CliError> {
    let s = ask(&opts.client()?).await?;
    // Only the leader knows every member's progress; ask it when the first node is not it.
    if s.leader_id != 0 && s.leader_id != s.node_id {
        if let Some(leader) = s.members.iter().find(|m| m.id == s.leader_id) {
            let pinned = opts.pinned(leader.addr.clone(), MEMBER_TIMEOUT)?;
            if let Ok(from_leader) = ask(&pinned).await {
                return Ok(from_leader);
            }
        }
    }
    Ok(s)
}

/// Each member's own status, or `None` when it did not answer in time.
async fn own_status(opts: &ClientOpts, members: &[Member]) -> BTreeMap<u64, Option<StatusReply>> {
    let asks = members.iter().map(|m| {
        let client = opts.pinned(m.addr.clone(), MEMBER_TIMEOUT);
        let id = m.id;
        async move {
            let Ok(client) = client else {
                return (id, None);
            };
            let own = tokio::time::timeout(MEMBER_TIMEOUT, ask(&client))
                .await
                .ok()
                .and_then(Result::ok)
                .filter(|s| s.node_id == id);
            (id, own)
        }
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

pub async fn status(opts: &ClientOpts, as_json: bool) -> Result<(), CliError> {
    let s = leader_status(opts).await?;
    let own = own_status(opts, &s.members).await;
    let applied: BTreeMap<u64, Option<u64>> = own
        .iter()
        .map(|(id, o)| (*id, o.as_ref().map(|o| o.applied)))
        .collect();
    let lag = |id: u64| applied[&id].map(|a| s.commit.saturating_sub(a));
    let diverged: BTreeMap<u64, u64> = s
        .reported
        .iter()
        .map(|d| (d.node_id, d.index))
        .chain(own.iter().filter_map(|(id, o)| {
            o.as_ref()
                .filter(|o| o.diverged_at != 0)
                .map(|o| (*id, o.diverged_at))
        }))
        .collect();
    let digest = |id: u64| {
        own[&id]
            .as_ref()
            .filter(|o| o.check_index != 0)
            .map(|o| (o.check_index, hex(&o.check_digest)))
    };
    if as_json {
        let members: Vec<_> = s
            .members
            .iter()
            .map(|m| {
                let (check_index, check_digest) = digest(m.id).unzip();
                let requests = own[&m.id].as_ref().map(|o| {
                    json!({"reads": o.client_reads, "writes": o.client_writes,
                           "keep_alives": o.keep_alives, "watches": o.watch_requests})
                });
                json!({"id": m.id, "addr": m.addr, "role": m.role, "reachable": m.reachable,
                       "matched": m.matched, "applied": applied[&m.id], "lag": lag(m.id),
                       "promote": m.promote, "unreachable_ms": m.unreachable_ms,
                       "diverged_at": diverged.get(&m.id), "check_index": check_index,
                       "check_digest": check_digest, "requests": requests,
                       "log_format": own[&m.id].as_ref().map(|o| o.log_format),
                       "watches": own[&m.id].as_ref().map(|o| o.watches)})
            })
            .collect();
        let leader = if s.leader_id == 0 {
            serde_json::Value::Null
        } else {
            json!(s.leader_id)
        };
        println!(
            "{}",
            json!({
                "cluster_id": format!("{:016x}", s.cluster_id),
                "leader": leader,
                "term": s.term,
                "commit": s.commit,
                "answered_by": s.node_id,
                "applied": s.applied,
                "first_index": s.first_index,
                "last_index": s.last_index,
                "snapshot_index": s.snapshot_index,
                "log_format": s.log_format,
                "members": members,
                "diverged": diverged.keys().collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    let leader = match s.leader_id {
        0 => "none".to_string(),
        id => id.to_string(),
    };
    println!(
        "cluster {:016x}  leader {leader}  term {}  commit {}",
        s.cluster_id, s.term, s.commit
    );
    println!(
        "node {} applied {}, log {}..{} in format {}, snapshot at {}",
        s.node_id, s.applied, s.first_index, s.last_index, s.log_format, s.snapshot_index
    );
    println!(
        "{:>4}  {:<22} {:<10} {:<10} {:>10} {:>10} {:>8}  STATE",
        "ID", "ADDRESS", "ROLE", "REACHABLE", "MATCHED", "APPLIED", "LAG"
    );
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for m in &s.members {
        let reachable = if m.reachable {
            "yes".to_string()
        } else if m.unreachable_ms > 0 {
            format!("no ({}s)", m.unreachable_ms / 1000)
        } else {
            "no".to_string()
        };
        let state = match (diverged.get(&m.id), &own[&m.id]) {
            (Some(at), _) => format!("DIVERGED at {at}"),
            (None, Some(_)) => "ok".to_string(),
            (None, None) => "-".to_string(),
        };
        println!(
            "{:>4}  {:<22} {:<10} {:<10} {:>10} {:>10} {:>8}  {state}",
            m.id,
            m.addr,
            m.role,
            reachable,
            m.matched,
            or_dash(applied[&m.id]),
            or_dash(lag(m.id))
        );
    }
    for (id, at) in &diverged {
        println!(
            "warning: node {id}'s state diverged from the leader's at index {at}; it serves no \
             reads. Rebuild it: see README, \"Rebuilding a node\"."
        );
    }
    Ok(())
}

/// Sends one membership change and prints the members afterwards.
pub async fn change(opts: &ClientOpts, op: Op) -> Result<(), CliError> {
    let s = send_change(opts, op).await?;
    for m in &s.members {
        println!("{:>4}  {:<22} {}", m.id, m.addr, m.role);
    }
    Ok(())
}

async fn send_change(opts: &ClientOpts, op: Op) -> Result<StatusReply, CliError> {
    let res = opts
        .client()?
        .call(op)
        .await
        .map_err(CliError::client("membership change"))?;
    answer::status("a membership change", res).map_err(CliError::client("membership change"))
}

#[derive(Args)]
pub struct ReconcileArgs {
    /// A TOML file naming the members: members = "1=HOST:PORT,2=HOST:PORT,..." (`peers`, as in
    /// a node's config file, is read too).
    #[arg(long)]
    config: PathBuf,
    /// Replace a listed member that has been unreachable for this many seconds (remove it and
    /// add it back, so a fresh node started there with --join takes its place).
    #[arg(long)]
    dead_after: Option<u64>,
    /// Seconds to wait for each added member to catch up and become a voter.
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// Print the first change that would be made, and make none.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Deserialize)]
struct ReconcileFile {
    members: Option<String>,
    peers: Option<String>,
    dead_after_s: Option<u64>,
}

/// The default for `--dead-after`: long enough that a reboot or a network blip is never taken
/// for a death.
const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(600);
/// Changes one reconcile makes at most (each member is added, removed or replaced at most once).
const MAX_STEPS: usize = 64;

/// What reconcile knows of a current member.
#[derive(Debug, Clone)]
pub struct Current {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    pub unreachable: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Add { id: u64, addr: String },
    Remove { id: u64, why: String },
}

/// The next change that brings `current` towards `desired`, or `None` when they match.
/// Removing before adding would shrink the cluster's margin, so: first members at a wrong
/// address (a replacement starts with its removal), then missing members are added (learners
/// cost no quorum), then unlisted members go (learners, then dead voters, then live ones), and
/// last, listed members dead for longer than `dead_after` are replaced, each at most once per
/// run (`replaced`).
pub fn next_step(
    desired: &BTreeMap<u64, String>,
    current: &[Current],
    dead_after: Duration,
    replaced: &BTreeSet<u64>,
) -> Option<Step> {
    if let Some(c) = current
        .iter()
        .find(|c| desired.get(&c.id).is_some_and(|addr| *addr != c.addr))
    {
        return Some(Step::Remove {
            id: c.id,
            why: format!("listed at {}, not {}", desired[&c.id], c.addr),
        });
    }
    if let Some((id, addr)) = desired
        .iter()
        .find(|(id, _)| !current.iter().any(|c| c.id == **id))
    {
        return Some(Step::Add {
            id: *id,
            addr: addr.clone(),
        });
    }
    let mut unlisted: Vec<&Current> = current
        .iter()
        .filter(|c| !desired.contains_key(&c.id))
        .collect();
    unlisted.sort_by_key(|c| (c.voter, c.unreachable.is_zero(), c.id));
    if let Some(c) = unlisted.first() {
        return Some(Step::Remove {
            id: c.id,
            why: "not in the file".into(),
        });
    }
    current
        .iter()
        .find(|c| c.unreachable > dead_after && !replaced.contains(&c.id))
        .map(|c| Step::Remove {
            id: c.id,
            why: format!(
                "unreachable for {} s; it is added back for a fresh node to take its place",
                c.unreachable.as_secs()
            ),
        })
}

fn currents(s: &StatusReply) -> Vec<Current> {
    s.members
        .iter()
        .map(|m| Current {
            id: m.id,
            addr: m.addr.clone(),
            voter: m.role != "learner",
            unreachable: Duration::from_millis(m.unreachable_ms),
        })
        .collect()
}

pub async fn reconcile(args: ReconcileArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| CliError::Other(format!("{}: {e}", args.config.display())))?;
    let file: ReconcileFile = toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{}: {}", args.config.display(), e.message())))?;
    let list = file.members.or(file.peers).ok_or_else(|| {
        CliError::Usage(format!(
            "{}: no `members = \"1=HOST:PORT,...\"`",
            args.config.display()
        ))
    })?;
    let desired = crate::server::config::parse_peers(&list)?;
    let dead_after = args
        .dead_after
        .or(file.dead_after_s)
        .map_or(DEFAULT_DEAD_AFTER, Duration::from_secs);
    let opts = &args.client;
    let mut replaced = BTreeSet::new();
    for _ in 0..MAX_STEPS {
        let s = leader_status(opts).await?;
        let Some(step) = next_step(&desired, &currents(&s), dead_after, &replaced) else {
            println!("members match {}", args.config.display());
            return Ok(());
        };
        if args.dry_run {
            println!("would {}", describe(&step));
            return Ok(());
        }
        match &step {
            Step::Remove { id, why } => {
                send_change(opts, ops::remove_member(*id)).await?;
                println!("removed node {id}: {why}");
                if desired.contains_key(id) {
                    replaced.insert(*id);
                }
            }
            Step::Add { id, addr } => {
                let started = Instant::now();
                send_change(opts, ops::add_member(*id, addr, false)).await?;
                replaced.insert(*id);
                match wait_for_voter(opts, *id, Duration::from_secs(args.wait)).await? {
                    true => println!(
                        "added node {id} at {addr}: caught up and a voter after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                    false => println!(
                        "added node {id} at {addr} as a learner; not caught up within {} s (is \
                         `lockfs serve --id {id} --listen {addr} --join ...` running there?); \
                         the leader promotes it once it is",
                        args.wait
                    ),
                }
            }
        }
    }
    Err(CliError::Other(format!(
        "gave up after {MAX_STEPS} changes; run reconcile again"
    )))
}

fn describe(step: &Step) -> String {
    match step {
        Step::Add { id, addr } => format!("add node {id} at {addr}"),
        Step::Remove { id, why } => format!("remove node {id} ({why})"),
    }
}

/// Waits (up to `limit`) until `id` is a voter.
async fn wait_for_voter(opts: &ClientOpts, id: u64, limit: Duration) -> Result<bool, CliError> {
    let start = Instant::now();
    loop {
        let s = leader_status(opts).await?;
        if s.members.iter().any(|m| m.id == id && m.role != "learner") {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(id: u64, voter: bool, dead_s: u64) -> Current {
        Current {
            id,
            addr: format!("h:{id}"),
            voter,
            unreachable: Duration::from_secs(dead_s),
        }
    }

    fn want(ids: &[u64]) -> BTreeMap<u64, String> {
        ids.iter().map(|id| (*id, format!("h:{id}"))).collect()
    }

    const DEAD: Duration = Duration::from_secs(60);

    #[test]
    fn adds_before_removing_and_removes_learners_and_dead_first() {
        let none = BTreeSet::new();
        let current = vec![
            cur(1, true, 0),
            cur(2, true, 0),
            cur(3, true, 100),
            cur(5, false, 0),
        ];
        // 4 is missing: added first, whatever else differs.
        assert_eq!(
            next_step(&want(&[1, 4]), &current, DEAD, &none),
            Some(Step::Add {
                id: 4,
                addr: "h:4".into()
            })
        );
        let mut current = current;
        current.push(cur(4, false, 0));
        // Then the unlisted: the learner 5, the dead voter 3, the live voter 2.
        let order: Vec<u64> = (0..3)
            .map(|_| {
                let Some(Step::Remove { id, .. }) =
                    next_step(&want(&[1, 4]), &current, DEAD, &none)
                else {
                    panic!("expected a removal")
                };
                current.retain(|c| c.id != id);
                id
            })
            .collect();
        assert_eq!(order, vec![5, 3, 2]);
        assert_eq!(next_step(&want(&[1, 4]), &current, DEAD, &none), None);
    }

    #[test]
    fn wrong_addresses_and_long_dead_members_are_replaced_once() {
        let none = BTreeSet::new();
        let mut moved = want(&[1, 2]);
        moved.insert(2, "h:22".into());
        let current = vec![cur(1, true, 0), cur(2, true, 0)];
        assert!(matches!(
            next_step(&moved, &current, DEAD, &none),
            Some(Step::Remove { id: 2, .. })
        ));
        let current = vec![cur(1, true, 0), cur(2, true, 61), cur(3, true, 59)];
        assert!(matches!(
            next_step(&want(&[1, 2, 3]), &current, DEAD, &none),
            Some(Step::Remove { id: 2, .. })
        ));
        let done = BTreeSet::from([2]);
        assert_eq!(next_step(&want(&[1, 2, 3]), &current, DEAD, &done), None);
    }
}
