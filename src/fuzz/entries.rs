//! Targets of what Raft log entries and snapshots carry, in bincode: a command's envelope
//! (`server::entry::Envelope`), a conf change's context (`ChangeContext`), check and report
//! entries (`Integrity::apply_check`, `apply_report`), and the snapshot's wrapper
//! (`SnapshotData`) around the state.
//!
//! A decoded envelope is applied the way a replica applies a committed entry; whatever it
//! says, the state must stay valid.

use std::collections::BTreeSet;

use raft::prelude::ConfState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::alloc::bounded;
use super::mutate::{overwrite, Input};
use super::records::{command, some_state, states, Names};
use super::run;
use crate::encoding::LogFormat;
use crate::server::entry::Envelope;
use crate::server::integrity::{Check, Integrity, Report, Verdict};
use crate::server::membership::{plan, ChangeContext, MemberOp, SnapshotData};
use crate::state::{cmd, Command, Quotas, StateMachine, Target, UserIds};
use crate::storage::{MemberInfo, Members};

/// Largest file size a node may be configured with; the fuzzed entries stay far below it,
/// and a decoded one is held to it (applying 8 MiB writes would only be slow).
const MAX_FILE_SIZE: u64 = 64 * 1024;

fn quotas(rng: &mut StdRng) -> Option<Quotas> {
    match rng.gen_range(0..3) {
        0 => None,
        1 => Some(Quotas::default()),
        _ => Some(Quotas {
            sessions: rng.gen_range(1..4),
            sessions_per_host: rng.gen_range(1..4),
            handles_per_session: rng.gen_range(1..4),
            nodes: rng.gen_range(1..20),
            bytes: rng.gen_range(1..200),
            waiters_per_lock: rng.gen_range(1..4),
            waiters: rng.gen_range(1..4),
        }),
    }
}

fn caller(rng: &mut StdRng) -> Option<UserIds> {
    rng.gen::<bool>().then(|| UserIds {
        uid: rng.gen_range(0..3),
        gid: rng.gen_range(0..3),
        groups: (0..rng.gen_range(0..3))
            .map(|_| rng.gen_range(0..3))
            .collect(),
    })
}

/// Either log format, at random.
pub fn log_format(rng: &mut StdRng) -> LogFormat {
    if rng.gen() {
        LogFormat::One
    } else {
        LogFormat::Two
    }
}

pub fn envelope(rng: &mut StdRng, command: Command) -> Envelope {
    let mut names = Names::default();
    Envelope {
        time_ns: rng.gen_range(0..10_000) * 1_000_000,
        max_file_size: rng.gen_range(0..=MAX_FILE_SIZE),
        lock_delay_ns: rng.gen_range(0..3) * 1_000_000,
        request: names.request(rng, &command),
        caller: caller(rng),
        quotas: quotas(rng),
        command,
    }
}

/// Applies `envelope` as a replica applies the committed entry at `index`: the state stays
/// valid, whatever the entry says. Returns how it ended.
pub fn apply(state: &mut StateMachine, index: u64, envelope: &Envelope) -> &'static str {
    let mut ctx = envelope.ctx(index);
    ctx.max_file_size = ctx.max_file_size.min(MAX_FILE_SIZE);
    let result = state.apply_request(&ctx, envelope.request.as_ref(), &envelope.command);
    state
        .validate()
        .unwrap_or_else(|e| panic!("applying {envelope:?} broke the state: {e}"));
    state.take_changes();
    state.take_events();
    match result {
        Ok(_) => "applied",
        Err(_) => "refused when applied",
    }
}

#[test]
fn log_entries() {
    states();
    run("entries::log_entries", 2000, |rng| {
        let format = log_format(rng);
        let input = Input::pick(rng, |rng| {
            let names = Names::default();
            let cmd = command(rng, &names);
            envelope(rng, cmd).encode(format)
        });
        let bytes = input.bytes();
        let decoded = bounded("log entry", bytes, || Envelope::decode(format, bytes));
        let envelope = match decoded {
            Ok(e) => e,
            Err(e) => {
                assert!(!input.is_valid(), "a valid entry was refused: {e}");
                return "undecodable";
            }
        };
        let again = envelope.encode(format);
        if input.is_valid() {
            assert_eq!(again, bytes, "an entry encodes back to other bytes");
        }
        let back = Envelope::decode(format, &again).expect("a re-encoded entry decodes");
        assert_eq!(back.command, envelope.command);
        assert_eq!(back.encode(format), again);
        let mut state = some_state(rng);
        apply(&mut state, 100_000, &envelope)
    });
}

pub fn member_info(rng: &mut StdRng) -> MemberInfo {
    MemberInfo {
        addr: ["", "127.0.0.1:7001", "[::1]:9", "a"][rng.gen_range(0..4)].into(),
        promote: rng.gen(),
    }
}

#[test]
fn conf_change_contexts() {
    run("entries::conf_change_contexts", 3000, |rng| {
        let format = log_format(rng);
        let input = Input::pick(rng, |rng| {
            ChangeContext {
                id: rng.gen_range(0..6),
                info: rng.gen::<bool>().then(|| member_info(rng)),
            }
            .encode(format)
        });
        let bytes = input.bytes();
        match bounded("conf change context", bytes, || {
            ChangeContext::decode(format, bytes)
        }) {
            Ok(cc) => {
                let again = cc.encode(format);
                if input.is_valid() {
                    assert_eq!(again, bytes);
                }
                let back = ChangeContext::decode(format, &again).unwrap();
                assert_eq!(back.encode(format), again);
                let mut members: Members = (1..4).map(|id| (id, member_info(rng))).collect();
                cc.apply_to(&mut members);
                // What the next membership change would make of the book.
                let conf = ConfState {
                    voters: vec![1, 2, 3],
                    learners: members.keys().copied().filter(|&id| id > 3).collect(),
                    ..Default::default()
                };
                let live = BTreeSet::from([1, 2]);
                let op = MemberOp::Promote { id: cc.id };
                let _ = plan(&op, &conf, &members, &live);
                "decoded"
            }
            Err(e) => {
                assert!(!input.is_valid(), "a valid context was refused: {e}");
                "undecodable"
            }
        }
    });
}

#[test]
fn check_and_report_entries() {
    run("entries::check_and_report_entries", 3000, |rng| {
        let mut integrity = Integrity::new(rng.gen_ratio(1, 4).then(|| rng.gen_range(0..50)));
        let format = log_format(rng);
        // A few checks first, so that digests are there to compare with.
        for index in 1..rng.gen_range(1u64..5) {
            let check = Check {
                at: index.saturating_sub(1),
                digest: rng.gen_ratio(1, 2).then(|| rng.gen_range(0..3)),
            };
            let data = format.encode(&check);
            integrity
                .apply_check(index * 10, format, &data, rng.gen_range(0..3))
                .expect("a valid check entry");
        }
        let index = rng.gen_range(0..100);
        if rng.gen() {
            let check = Check {
                at: [0, 10, 20, 30, u64::MAX][rng.gen_range(0..5)],
                digest: rng.gen_ratio(1, 2).then(|| rng.gen()),
            };
            let input = Input::pick(rng, |_| format.encode(&check));
            let bytes = input.bytes();
            let result = bounded("check entry", bytes, || {
                integrity.apply_check(index, format, bytes, rng.gen())
            });
            match result {
                Ok(Verdict::Agrees) => "agreeing checks",
                Ok(Verdict::Diverged { .. }) => "diverging checks",
                Err(e) => {
                    assert!(!input.is_valid(), "a valid check refused: {e}");
                    "undecodable checks"
                }
            }
        } else {
            let report = Report {
                node: rng.gen_range(0..5),
                at: rng.gen(),
            };
            let input = Input::pick(rng, |_| Integrity::report(report.node, report.at, format));
            let bytes = input.bytes();
            let result = bounded("report entry", bytes, || {
                integrity.apply_report(index, format, bytes)
            });
            match result {
                Ok(r) => {
                    if input.is_valid() {
                        assert_eq!(r, report);
                    }
                    assert!(integrity.reported.contains_key(&r.node));
                    "reports"
                }
                Err(e) => {
                    assert!(!input.is_valid(), "a valid report refused: {e}");
                    "undecodable reports"
                }
            }
        }
    });
}

#[test]
fn snapshot_data() {
    states();
    run("entries::snapshot_data", 400, |rng| {
        let state = some_state(rng);
        let members: Members = (1..rng.gen_range(1..5))
            .map(|id| (id, member_info(rng)))
            .collect();
        let format = log_format(rng);
        let input = Input::pick(rng, |_| {
            SnapshotData {
                members: members.clone(),
                state: state.snapshot(),
            }
            .encode(format)
        });
        let bytes = input.bytes();
        let data = match bounded("snapshot", bytes, || SnapshotData::decode(bytes)) {
            Ok(data) => data,
            Err(e) => {
                assert!(!input.is_valid(), "a valid snapshot was refused: {e}");
                return "undecodable";
            }
        };
        let again = data.encode(SnapshotData::format_of(bytes));
        if input.is_valid() {
            assert_eq!(again, bytes);
            assert_eq!(data.members, members);
        }
        let restored = bounded("snapshot's state", &data.state, || {
            StateMachine::restore(&data.state)
        });
        match restored {
            Ok(restored) => {
                restored.validate().expect("a restored state is valid");
                if input.is_valid() {
                    assert_eq!(restored.records(), state.records());
                }
                "restored"
            }
            Err(e) => {
                assert!(!input.is_valid(), "a valid snapshot's state refused: {e}");
                "state refused"
            }
        }
    });
}

/// Every position of a valid encoding in turn holds a huge length, as bincode writes lengths:
/// 8 bytes in format 1 (log entries, conf change contexts and snapshots), a marker and 8 bytes
/// in format 2 and in state records. The decoders refuse or accept it, allocating at most what
/// serde preallocates for a container whose declared size it cannot trust (1 MiB), never the
/// declared size.
#[test]
fn every_length_set_huge() {
    let mut rng = StdRng::seed_from_u64(0);
    let put = Command::Put(cmd::Put {
        at: Target::Path("/a/b".into()),
        data: vec![7; 40],
        mode: 0o644,
        uid: 0,
        gid: 0,
        if_generation: None,
    });
    let members: Members = (1..3).map(|id| (id, member_info(&mut rng))).collect();
    let envelope = envelope(&mut rng, put);
    let context = ChangeContext {
        id: 4,
        info: Some(member_info(&mut rng)),
    };
    let snapshot = SnapshotData {
        members,
        state: states()[1].snapshot(),
    };
    type Decoder<'a> = dyn Fn(&[u8]) -> bool + 'a;
    let huge = [u64::MAX, 1 << 40, u64::from(u32::MAX)];
    for format in [LogFormat::One, LogFormat::Two] {
        let decoders: [(&str, Vec<u8>, &Decoder); 3] = [
            ("log entry", envelope.encode(format), &|b| {
                Envelope::decode(format, b).is_ok()
            }),
            ("conf change context", context.encode(format), &|b| {
                ChangeContext::decode(format, b).is_ok()
            }),
            ("snapshot", snapshot.encode(format), &|b| {
                SnapshotData::decode(b).is_ok()
            }),
        ];
        for (what, valid, decode) in decoders {
            assert!(decode(&valid), "{what}");
            for at in 0..valid.len() {
                for length in huge {
                    let mut bytes = valid.clone();
                    let mut declared = match format {
                        LogFormat::One => vec![],
                        LogFormat::Two => vec![0xfd],
                    };
                    declared.extend_from_slice(&length.to_le_bytes());
                    overwrite(&mut bytes, at, &declared);
                    bounded(what, &bytes, || decode(&bytes));
                }
            }
        }
    }
    let valid = states()[1].snapshot();
    for at in 0..valid.len() {
        for length in huge {
            let mut bytes = valid.clone();
            let mut varint = vec![0xfd];
            varint.extend_from_slice(&length.to_le_bytes());
            overwrite(&mut bytes, at, &varint);
            let _ = bounded("state snapshot", &bytes, || StateMachine::restore(&bytes));
        }
    }
}
