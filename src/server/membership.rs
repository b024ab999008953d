//! Runtime membership changes: which conf change a request becomes, and when it is refused.
//!
//! raft-rs knows members only by id (the conf state). The member book (`storage::Members`)
//! adds each member's address and whether a learner is to be promoted; it travels inside the
//! conf change entry (its context), so every replica updates both at the same log index, and
//! inside snapshots, so a node that catches up from one learns the addresses too.
//!
//! Changes go one at a time (raft-rs refuses a second while one is pending, and so do we, with
//! "retry"). A new member always enters as a learner: it receives the log without voting, so a
//! node that is still catching up never counts towards (or blocks) a quorum. The leader promotes
//! it once its log is close to the leader's. A change that would leave the voters without a live
//! majority is refused: that change could never commit its successors, and the cluster would be
//! stuck until the dead nodes came back.
//!
//! Everything here is a pure function of the current configuration and of which voters the
//! leader has heard from recently, so it is tested without a cluster.

use std::collections::BTreeSet;

use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};
use serde::{Deserialize, Serialize};

use super::limits::MAX_ADDR;
use super::{errno, ServerError};
use crate::encoding::LogFormat;
use crate::storage::{MemberInfo, Members};

// The errno codes of refusals, as the wire carries them.
use crate::errno::{EBUSY, EEXIST, ENOENT};

/// A membership change a client (or the leader itself) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOp {
    /// Add `id` at `addr` as a learner; with `promote`, the leader makes it a voter once it has
    /// caught up.
    Add {
        id: u64,
        addr: String,
        promote: bool,
    },
    /// Make the learner `id` a voter now.
    Promote { id: u64 },
    /// Remove a voter or a learner.
    Remove { id: u64 },
}

/// The context of a conf change entry: the member book entry it sets (`None` removes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeContext {
    pub id: u64,
    pub info: Option<MemberInfo>,
}

impl ChangeContext {
    /// In `format`, which the conf change entry's own context names (`entry::EntryKind::Change`).
    pub fn encode(&self, format: LogFormat) -> Vec<u8> {
        format.encode(self)
    }

    pub fn decode(format: LogFormat, bytes: &[u8]) -> Result<ChangeContext, String> {
        format.decode(bytes).map_err(|e| e.to_string())
    }

    /// Applies this change to the member book.
    pub fn apply_to(&self, members: &mut Members) {
        match &self.info {
            Some(info) => {
                members.insert(self.id, info.clone());
            }
            None => {
                members.remove(&self.id);
            }
        }
    }
}

/// What a Raft snapshot carries: the member book, and the state machine's own snapshot
/// ([`StateMachine::snapshot`](crate::state::StateMachine::snapshot)) or, when `state` is empty,
/// nothing of the state: its records follow the message in chunks (see `transport.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotData {
    pub members: Members,
    pub state: Vec<u8>,
}

/// What format 2 snapshot data starts with. Format 1 data starts with the member count as 8
/// little-endian bytes, whose fourth byte is 0 for any book under 2^24 members; this one's is
/// not, so the two are never mistaken for each other.
const SNAPSHOT_MAGIC: &[u8; 4] = b"LFS2";

impl SnapshotData {
    /// In `format`: the cluster's log format at the snapshot's index.
    pub fn encode(&self, format: LogFormat) -> Vec<u8> {
        match format {
            LogFormat::One => format.encode(self),
            LogFormat::Two => {
                let mut out = SNAPSHOT_MAGIC.to_vec();
                out.extend_from_slice(&format.encode(self));
                out
            }
        }
    }

    /// Snapshot data in either format (format 2 says so by its prefix).
    pub fn decode(bytes: &[u8]) -> Result<SnapshotData, String> {
        let format = Self::format_of(bytes);
        let rest = match format {
            LogFormat::One => bytes,
            LogFormat::Two => &bytes[SNAPSHOT_MAGIC.len()..],
        };
        format.decode(rest).map_err(|e| e.to_string())
    }

    /// The format of encoded snapshot data, by its prefix.
    pub fn format_of(bytes: &[u8]) -> LogFormat {
        if bytes.starts_with(SNAPSHOT_MAGIC) {
            LogFormat::Two
        } else {
            LogFormat::One
        }
    }
}

/// What to do about a request.
#[derive(Debug)]
pub enum Plan {
    /// Nothing: the cluster already is as asked (so a retried request succeeds).
    Done,
    /// Propose this conf change, with this context (encoded in the log's format when it is
    /// proposed).
    Propose(ConfChangeV2, ChangeContext),
}

fn is_voter(conf: &ConfState, id: u64) -> bool {
    conf.voters.contains(&id)
}

fn is_learner(conf: &ConfState, id: u64) -> bool {
    conf.learners.contains(&id)
}

fn refused(code: u32, message: String) -> ServerError {
    ServerError::Refused { code, message }
}

/// Checks that the voters `after` a change keep a live majority.
fn keeps_majority(
    after: &BTreeSet<u64>,
    live: &BTreeSet<u64>,
    what: &str,
) -> Result<(), ServerError> {
    if after.is_empty() {
        return Err(refused(
            EBUSY,
            format!("{what} would leave the cluster without voters"),
        ));
    }
    let alive = after.intersection(live).count();
    let needed = after.len() / 2 + 1;
    if alive < needed {
        return Err(refused(
            EBUSY,
            format!(
                "{what} would leave {alive} of {} voters reachable; a majority ({needed}) is \
                 needed (bring the others back, or remove dead members first)",
                after.len()
            ),
        ));
    }
    Ok(())
}

fn change(kind: ConfChangeType, context: ChangeContext) -> Plan {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = context.id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    Plan::Propose(cc, context)
}

/// Decides what `op` becomes, given the configuration, the member book and the voters the
/// leader heard from recently (itself included).
pub fn plan(
    op: &MemberOp,
    conf: &ConfState,
    members: &Members,
    live: &BTreeSet<u64>,
) -> Result<Plan, ServerError> {
    let voters: BTreeSet<u64> = conf.voters.iter().copied().collect();
    let known = |id: u64| is_voter(conf, id) || is_learner(conf, id);
    match op {
        MemberOp::Add { id, addr, promote } => {
            if *id == 0 {
                return Err(refused(errno::EINVAL, "node ids start at 1".into()));
            }
            if addr.is_empty() {
                return Err(refused(
                    errno::EINVAL,
                    format!("node {id}: no address given"),
                ));
            }
            if addr.len() > MAX_ADDR {
                return Err(refused(
                    errno::EINVAL,
                    format!("node {id}: an address is at most {MAX_ADDR} bytes"),
                ));
            }
            if known(*id) {
                let current = members.get(id).map(|m| m.addr.as_str()).unwrap_or("");
                if current == addr {
                    return Ok(Plan::Done);
                }
                return Err(refused(
                    EEXIST,
                    format!(
                        "node {id} is already a member, at {current}; remove it first to \
                         replace it"
                    ),
                ));
            }
            if let Some((other, _)) = members
                .iter()
                .find(|(other, m)| m.addr == *addr && known(**other))
            {
                return Err(refused(
                    EEXIST,
                    format!("{addr} is the address of member {other}"),
                ));
            }
            let info = MemberInfo {
                addr: addr.clone(),
                promote: *promote,
            };
            Ok(change(
                ConfChangeType::AddLearnerNode,
                ChangeContext {
                    id: *id,
                    info: Some(info),
                },
            ))
        }
        MemberOp::Promote { id } => {
            if is_voter(conf, *id) {
                return Ok(Plan::Done);
            }
            if !is_learner(conf, *id) {
                return Err(refused(ENOENT, format!("node {id} is not a member")));
            }
            let mut after = voters.clone();
            after.insert(*id);
            keeps_majority(&after, live, &format!("promoting node {id}"))?;
            let mut info = members.get(id).cloned().unwrap_or(MemberInfo {
                addr: String::new(),
                promote: true,
            });
            info.promote = true;
            Ok(change(
                ConfChangeType::AddNode,
                ChangeContext {
                    id: *id,
                    info: Some(info),
                },
            ))
        }
        MemberOp::Remove { id } => {
            if !known(*id) {
                return Err(refused(ENOENT, format!("node {id} is not a member")));
            }
            if is_voter(conf, *id) {
                let mut after = voters.clone();
                after.remove(id);
                keeps_majority(&after, live, &format!("removing node {id}"))?;
            }
            Ok(change(
                ConfChangeType::RemoveNode,
                ChangeContext {
                    id: *id,
                    info: None,
                },
            ))
        }
    }
}

/// The learners the leader should promote now: those that asked for it, are live, and whose
/// log is within `max_lag` entries of the leader's. `progress` gives (id, matched index).
pub fn ready_to_promote(
    conf: &ConfState,
    members: &Members,
    live: &BTreeSet<u64>,
    progress: impl Fn(u64) -> Option<u64>,
    last_index: u64,
    max_lag: u64,
) -> Option<u64> {
    conf.learners.iter().copied().find(|id| {
        members.get(id).is_some_and(|m| m.promote)
            && live.contains(id)
            && progress(*id).is_some_and(|matched| matched + max_lag >= last_index)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    fn book(ids: &[u64]) -> Members {
        ids.iter()
            .map(|&id| {
                (
                    id,
                    MemberInfo {
                        addr: format!("h:{id}"),
                        promote: true,
                    },
                )
            })
            .collect()
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    fn add(id: u64, addr: &str) -> MemberOp {
        MemberOp::Add {
            id,
            addr: addr.into(),
            promote: true,
        }
    }

    fn proposed(p: Result<Plan, ServerError>) -> (ConfChangeType, ChangeContext) {
        match p.expect("accepted") {
            Plan::Propose(cc, ctx) => {
                let single = &cc.changes[0];
                (single.get_change_type(), ctx)
            }
            Plan::Done => panic!("nothing proposed"),
        }
    }

    fn code(p: Result<Plan, ServerError>) -> u32 {
        match p {
            Err(e) => e.code(),
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    #[test]
    fn adding_enters_as_a_learner_and_is_idempotent() {
        let c = conf(&[1, 2, 3], &[]);
        let m = book(&[1, 2, 3]);
        let live = set(&[1]);
        let (kind, ctx) = proposed(plan(&add(4, "h:4"), &c, &m, &live));
        assert_eq!(kind, ConfChangeType::AddLearnerNode);
        assert_eq!(ctx.id, 4);
        assert_eq!(ctx.info.unwrap().addr, "h:4");
        let long = format!("{}:1", "h".repeat(300));
        assert_eq!(code(plan(&add(4, &long), &c, &m, &live)), errno::EINVAL);
        // Adding a learner never changes the voters, so it needs no live majority.
        assert!(matches!(
            plan(&add(2, "h:2"), &c, &m, &live),
            Ok(Plan::Done)
        ));
        assert_eq!(code(plan(&add(2, "h:9"), &c, &m, &live)), EEXIST);
        assert_eq!(code(plan(&add(5, "h:3"), &c, &m, &live)), EEXIST);
        assert_eq!(code(plan(&add(5, ""), &c, &m, &live)), errno::EINVAL);
        assert_eq!(code(plan(&add(0, "h:0"), &c, &m, &live)), errno::EINVAL);
    }

    #[test]
    fn removal_that_loses_the_majority_is_refused() {
        let c = conf(&[1, 2, 3], &[4]);
        let m = book(&[1, 2, 3, 4]);
        // 3 is dead: removing 2 leaves {1, 3} with one live voter of two.
        let live = set(&[1, 2]);
        assert_eq!(
            code(plan(&MemberOp::Remove { id: 2 }, &c, &m, &live)),
            EBUSY
        );
        // Removing the dead one leaves {1, 2}, both live.
        let (kind, ctx) = proposed(plan(&MemberOp::Remove { id: 3 }, &c, &m, &live));
        assert_eq!(kind, ConfChangeType::RemoveNode);
        assert!(ctx.info.is_none());
        // Learners go freely; strangers are refused.
        proposed(plan(&MemberOp::Remove { id: 4 }, &c, &m, &set(&[1])));
        assert_eq!(
            code(plan(&MemberOp::Remove { id: 9 }, &c, &m, &live)),
            ENOENT
        );
        // The last voter stays.
        let single = conf(&[1], &[]);
        assert_eq!(
            code(plan(
                &MemberOp::Remove { id: 1 },
                &single,
                &book(&[1]),
                &set(&[1])
            )),
            EBUSY
        );
    }

    #[test]
    fn promotion_needs_a_live_majority_of_the_larger_set() {
        let c = conf(&[1, 2], &[3]);
        let m = book(&[1, 2, 3]);
        // {1, 2, 3} with only 1 live: refused.
        assert_eq!(
            code(plan(&MemberOp::Promote { id: 3 }, &c, &m, &set(&[1]))),
            EBUSY
        );
        let (kind, _) = proposed(plan(&MemberOp::Promote { id: 3 }, &c, &m, &set(&[1, 3])));
        assert_eq!(kind, ConfChangeType::AddNode);
        assert!(matches!(
            plan(&MemberOp::Promote { id: 1 }, &c, &m, &set(&[1])),
            Ok(Plan::Done)
        ));
        assert_eq!(
            code(plan(&MemberOp::Promote { id: 7 }, &c, &m, &set(&[1]))),
            ENOENT
        );
    }

    #[test]
    fn learners_are_promoted_when_live_and_caught_up() {
        let c = conf(&[1], &[2, 3]);
        let mut m = book(&[1, 2, 3]);
        m.get_mut(&3).unwrap().promote = false;
        let matched = |id: u64| Some(if id == 2 { 95 } else { 100 });
        assert_eq!(
            ready_to_promote(&c, &m, &set(&[1, 2, 3]), matched, 100, 10),
            Some(2)
        );
        // Too far behind, or not heard from: not yet. A read replica: never.
        assert_eq!(
            ready_to_promote(&c, &m, &set(&[1, 2, 3]), matched, 200, 10),
            None
        );
        assert_eq!(
            ready_to_promote(&c, &m, &set(&[1, 3]), matched, 100, 10),
            None
        );
    }

    #[test]
    fn contexts_update_the_member_book() {
        let mut m = book(&[1, 2]);
        ChangeContext {
            id: 3,
            info: Some(MemberInfo {
                addr: "h:3".into(),
                promote: false,
            }),
        }
        .apply_to(&mut m);
        ChangeContext { id: 1, info: None }.apply_to(&mut m);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        let data = SnapshotData {
            members: m.clone(),
            state: vec![1, 2, 3],
        };
        for format in [LogFormat::One, LogFormat::Two] {
            let back = SnapshotData::decode(&data.encode(format)).unwrap();
            assert_eq!(back.members, m);
            assert_eq!(back.state, vec![1, 2, 3]);
        }
        let ctx = ChangeContext { id: 2, info: None };
        for format in [LogFormat::One, LogFormat::Two] {
            let back = ChangeContext::decode(format, &ctx.encode(format)).unwrap();
            assert_eq!((back.id, back.info), (2, None));
        }
    }
}
