//! Targets of what a node reads from its disk: state records (`StateMachine::from_records`),
//! state snapshots (`StateMachine::restore`), sealed values (`storage::unseal`), and a real
//! RocksDB store damaged behind its back (every load a node does when it starts).
//!
//! Also the states the other targets apply decoded commands to: built by random commands from
//! fixed seeds, with files, directories, sessions, handles, cached results, held and queued
//! locks and lock-delays, so that their records are of every kind.

use std::sync::OnceLock;

use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::GetEntriesContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::alloc::bounded;
use super::mutate::{arbitrary, mutate};
use super::run;
use crate::encoding::LogFormat;
use crate::server::entry::{EntryKind, Envelope};
use crate::state::{
    cmd, ApplyCtx, Command, CreateSpec, LockKind, LockStyle, Outcome, RequestId, StateError,
    StateMachine, Target,
};
use crate::storage::{
    seal, unseal, Cf, Identity, MemberInfo, Members, StorageError, Store, WriteBatch, CF_RAFT,
    CF_STATE,
};

const PATHS: [&str; 8] = ["/a", "/b", "/a/x", "/a/y", "/b/z", "/e", "/e/f", "/e/g"];
/// Nanoseconds between two commands of a built state.
const STEP_NS: u64 = 10_000_000;

/// The states of the corpus, built once for the whole test binary.
pub fn states() -> &'static [StateMachine] {
    static STATES: OnceLock<Vec<StateMachine>> = OnceLock::new();
    STATES.get_or_init(|| {
        [0, 30, 150, 400]
            .iter()
            .enumerate()
            .map(|(seed, &steps)| build(seed as u64, steps))
            .collect()
    })
}

pub fn some_state(rng: &mut StdRng) -> StateMachine {
    let states = states();
    states[rng.gen_range(0..states.len())].clone()
}

/// The context of a command applied at `index` of a built state.
pub fn ctx(index: u64) -> ApplyCtx {
    ApplyCtx {
        index,
        time_ns: index * STEP_NS,
        max_file_size: 1024,
        lock_delay_ns: 3 * STEP_NS,
        caller: None,
        quotas: None,
    }
}

/// Who can be named by the next command: sessions opened and handles open so far.
#[derive(Default)]
pub struct Names {
    sessions: Vec<u64>,
    handles: Vec<(u64, u64)>,
    seq: u64,
}

impl Names {
    fn session(&self, rng: &mut StdRng) -> u64 {
        if self.sessions.is_empty() || rng.gen_ratio(1, 20) {
            rng.gen_range(0..4)
        } else {
            self.sessions[rng.gen_range(0..self.sessions.len())]
        }
    }

    fn handle(&self, rng: &mut StdRng) -> (u64, u64) {
        if self.handles.is_empty() || rng.gen_ratio(1, 20) {
            (self.session(rng), rng.gen_range(0..4))
        } else {
            self.handles[rng.gen_range(0..self.handles.len())]
        }
    }

    /// The request id of a command, sometimes (for the cached results it leaves).
    pub fn request(&mut self, rng: &mut StdRng, cmd: &Command) -> Option<RequestId> {
        let session = cmd.session().filter(|_| rng.gen())?;
        self.seq += 1;
        Some(RequestId {
            session,
            seq: self.seq,
            first_unacked: self.seq.saturating_sub(rng.gen_range(0..4)),
        })
    }

    /// Remembers what `cmd` made.
    pub fn learn(&mut self, cmd: &Command, outcome: &Result<Outcome, StateError>) {
        match (cmd, outcome) {
            (_, Ok(Outcome::Session { id, .. })) => self.sessions.push(*id),
            (Command::Open(cmd::Open { session, .. }), Ok(Outcome::Opened { handle, .. })) => {
                self.handles.push((*session, *handle))
            }
            _ => {}
        }
    }
}

fn target(rng: &mut StdRng) -> Target {
    match rng.gen_range(0..8) {
        0 => Target::Ino(rng.gen_range(1..12)),
        1 => Target::Child {
            parent: rng.gen_range(1..4),
            name: ["a", "x", "f"][rng.gen_range(0..3)].into(),
        },
        _ => Target::Path(PATHS[rng.gen_range(0..PATHS.len())].into()),
    }
}

/// A command of the kind clients send, on a few paths, mostly naming sessions and handles
/// that exist.
pub fn command(rng: &mut StdRng, names: &Names) -> Command {
    let data = |rng: &mut StdRng| (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
    let range = |rng: &mut StdRng| {
        let start = rng.gen_range(0..8);
        let end = if rng.gen_ratio(1, 4) {
            u64::MAX
        } else {
            start + rng.gen_range(0..8)
        };
        (start, end)
    };
    let style = |rng: &mut StdRng| {
        if rng.gen() {
            LockStyle::Flock
        } else {
            LockStyle::Posix
        }
    };
    match rng.gen_range(0..20) {
        0 => Command::Mkdir(cmd::Mkdir {
            at: target(rng),
            mode: 0o755,
            uid: 0,
            gid: 0,
        }),
        1 | 2 => Command::Put(cmd::Put {
            at: target(rng),
            data: data(rng),
            mode: 0o644,
            uid: rng.gen_range(0..3),
            gid: 0,
            if_generation: rng.gen_ratio(1, 4).then(|| rng.gen_range(0..3)),
        }),
        3 => Command::Write(cmd::Write {
            target: target(rng),
            offset: rng.gen_range(0..64),
            data: data(rng),
            truncate: rng.gen(),
            append: rng.gen(),
        }),
        4 => Command::OpenSession(cmd::OpenSession {
            ttl_ms: rng.gen_range(10..1000),
            host: ["h1", "h2", "h3"][rng.gen_range(0..3)].into(),
            pid: rng.gen(),
            name: "fuzz".into(),
            owner: ["", "client:a"][rng.gen_range(0..2)].into(),
            secret: rng.gen(),
            cache: rng.gen(),
        }),
        5..=7 => Command::Open(cmd::Open {
            session: names.session(rng),
            at: target(rng),
            create: rng.gen_ratio(2, 3).then(|| CreateSpec {
                mode: 0o600,
                uid: 0,
                gid: 0,
                exclusive: rng.gen_ratio(1, 4),
            }),
        }),
        8 => {
            let (session, handle) = names.handle(rng);
            Command::Close(cmd::Close { session, handle })
        }
        9..=12 => {
            let (session, handle) = names.handle(rng);
            let (start, end) = range(rng);
            Command::Lock(cmd::Lock {
                session,
                handle,
                owner: rng.gen_range(0..3),
                style: style(rng),
                kind: if rng.gen() {
                    LockKind::Shared
                } else {
                    LockKind::Exclusive
                },
                start,
                end,
                wait: rng.gen(),
                pid: rng.gen(),
            })
        }
        13 => {
            let (session, handle) = names.handle(rng);
            let (start, end) = range(rng);
            Command::Unlock(cmd::Unlock {
                session,
                handle,
                owner: rng.gen_range(0..3),
                style: style(rng),
                start,
                end,
            })
        }
        14 => Command::CancelWait(cmd::CancelWait {
            session: names.session(rng),
            wait: rng.gen_range(0..20),
        }),
        15 => Command::SetEphemeral(cmd::SetEphemeral {
            target: Target::Path("/e".into()),
            ephemeral: rng.gen(),
        }),
        16 => match rng.gen_range(0..5) {
            3 => Command::Link(cmd::Link {
                target: target(rng),
                at: target(rng),
            }),
            4 => Command::Symlink(cmd::Symlink {
                at: target(rng),
                target: "f".into(),
                uid: 0,
                gid: 0,
            }),
            0 => Command::Rename(cmd::Rename {
                from: target(rng),
                to: target(rng),
            }),
            1 => Command::RenameNoReplace(cmd::RenameNoReplace {
                from: target(rng),
                to: target(rng),
            }),
            _ => Command::Exchange(cmd::Exchange {
                a: target(rng),
                b: target(rng),
            }),
        },
        17 if rng.gen_ratio(1, 4) => {
            if rng.gen() {
                Command::ExpireSession(cmd::ExpireSession {
                    session: names.session(rng),
                })
            } else {
                Command::CloseSession(cmd::CloseSession {
                    session: names.session(rng),
                })
            }
        }
        18 => Command::Unlink(cmd::Unlink { at: target(rng) }),
        _ => Command::Wake,
    }
}

/// A state after `steps` random commands.
fn build(seed: u64, steps: u64) -> StateMachine {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sm = StateMachine::new();
    let mut names = Names::default();
    for index in 1..=steps {
        let cmd = command(&mut rng, &names);
        let req = names.request(&mut rng, &cmd);
        let outcome = sm.apply_request(&ctx(index), req.as_ref(), &cmd);
        names.learn(&cmd, &outcome);
    }
    sm.take_changes();
    sm.take_events();
    sm
}

/// Applies a few more random commands to a state that was accepted: none may panic, and the
/// state stays valid and rebuildable from its records.
fn exercise(rng: &mut StdRng, mut state: StateMachine) {
    let mut names = Names::default();
    let start = 10_000;
    for index in start..start + rng.gen_range(0..6) {
        let cmd = command(rng, &names);
        let req = names.request(rng, &cmd);
        let outcome = state.apply_request(&ctx(index), req.as_ref(), &cmd);
        names.learn(&cmd, &outcome);
        state
            .validate()
            .unwrap_or_else(|e| panic!("{cmd:?} on a state that loaded broke it: {e}"));
    }
    let reloaded = StateMachine::from_records(state.records()).expect("records of a valid state");
    assert_eq!(reloaded.records(), state.records());
}

/// Damages a state's records as a disk might, and as a bug might: values and keys changed,
/// records lost, repeated, or taken from another state.
fn damage_records(rng: &mut StdRng, records: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    for _ in 0..rng.gen_range(1..=2) {
        if records.is_empty() {
            records.push((b"m/meta".to_vec(), arbitrary(rng)));
            continue;
        }
        let i = rng.gen_range(0..records.len());
        match rng.gen_range(0..7) {
            0 | 1 => mutate(rng, &mut records[i].1),
            2 => mutate(rng, &mut records[i].0),
            3 => {
                records.remove(i);
            }
            4 => records.push(records[i].clone()),
            5 => {
                let j = rng.gen_range(0..records.len());
                let value = records[j].1.clone();
                records[i].1 = value;
            }
            _ => {
                // The record of the same key in another state, or another record of the
                // same kind from it: each is valid alone, but not in this company.
                let other = some_state(rng).records();
                let prefix = records[i].0[..2.min(records[i].0.len())].to_vec();
                let kin: Vec<_> = other
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .collect();
                if let Some(&(k, v)) = kin.get(rng.gen_range(0..kin.len().max(1))) {
                    if rng.gen() {
                        records[i].1 = v.clone();
                    } else {
                        records.push((k.clone(), v.clone()));
                    }
                }
            }
        }
    }
}

/// The keys and values of `records` one after the other.
fn flat(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    records
        .iter()
        .flat_map(|(k, v)| [k, v])
        .flatten()
        .copied()
        .collect()
}

/// What loading gave: a corrupt state refused as such, or a valid one.
fn loaded(result: Result<StateMachine, StateError>, what: &str) -> Option<StateMachine> {
    match result {
        Ok(state) => {
            state
                .validate()
                .unwrap_or_else(|e| panic!("{what} gave an invalid state: {e}"));
            Some(state)
        }
        Err(StateError::Corrupt(_)) => None,
        Err(e) => panic!("{what} answered {e:?}, not Corrupt"),
    }
}

#[test]
fn state_records() {
    states();
    run("records::state_records", 1000, |rng| {
        let original = some_state(rng).records();
        let mut records = original.clone();
        let intact = rng.gen_ratio(1, 10);
        if !intact {
            damage_records(rng, &mut records);
        }
        let result = bounded("state records", &flat(&records), || {
            StateMachine::from_records(records.clone())
        });
        match loaded(result, "from_records") {
            Some(state) => {
                if intact {
                    assert_eq!(state.records(), original);
                }
                exercise(rng, state);
                "loaded"
            }
            None => {
                assert!(!intact, "intact records refused");
                "refused"
            }
        }
    });
}

#[test]
fn snapshots() {
    states();
    run("records::snapshots", 800, |rng| {
        let original = some_state(rng);
        let mut data = original.snapshot();
        let intact = rng.gen_ratio(1, 10);
        if intact {
        } else if rng.gen_ratio(1, 10) {
            data = arbitrary(rng);
        } else {
            mutate(rng, &mut data);
        }
        let result = bounded("snapshot", &data, || StateMachine::restore(&data));
        match loaded(result, "restore") {
            Some(state) => {
                if intact {
                    assert_eq!(state.records(), original.records());
                }
                exercise(rng, state);
                "restored"
            }
            None => {
                assert!(!intact, "an intact snapshot refused");
                "refused"
            }
        }
    });
}

#[test]
fn sealed_values() {
    run("records::sealed_values", 2000, |rng| {
        let key = arbitrary(rng);
        let value = arbitrary(rng);
        let sealed = seal(&key, &value);
        assert_eq!(unseal(&key, &sealed, "fuzz").unwrap(), value);
        let mut damaged = sealed.clone();
        mutate(rng, &mut damaged);
        let mut other_key = key.clone();
        if rng.gen() {
            mutate(rng, &mut other_key);
        }
        match unseal(&other_key, &damaged, "fuzz") {
            Ok(v) => {
                assert!(
                    damaged == sealed && other_key == key && v == value,
                    "a damaged value passed its checksum"
                );
                "unchanged"
            }
            Err(StorageError::Corrupt(_)) => "refused",
            Err(e) => panic!("unseal answered {e}, not Corrupt"),
        }
    });
}

/// A store holding a bit of everything a node keeps: identity, divergence mark, hard state,
/// conf state, member book, snapshot, log entries and state records.
fn filled_store(store: &Store) {
    store
        .set_identity(Identity {
            cluster_id: 7,
            node_id: 2,
        })
        .unwrap();
    store.set_diverged(3).unwrap();
    let mut log = store.raft_log().unwrap();
    let mut batch = WriteBatch::default();
    let mut rng = StdRng::seed_from_u64(0);
    let mut names = Names {
        sessions: vec![1, 2],
        ..Default::default()
    };
    let entries: Vec<Entry> = (1..=40)
        .map(|index| {
            let command = command(&mut rng, &names);
            let request = names.request(&mut rng, &command);
            let data = Envelope {
                time_ns: index,
                max_file_size: 1024,
                lock_delay_ns: 0,
                request,
                caller: None,
                quotas: None,
                command,
            }
            .encode(LogFormat::NEWEST);
            Entry {
                index,
                term: 1 + index / 10,
                entry_type: EntryType::EntryNormal,
                data: data.into(),
                context: EntryKind::Command.context(LogFormat::NEWEST).into(),
                ..Default::default()
            }
        })
        .collect();
    log.stage_append(&mut batch, &entries).unwrap();
    let hs = HardState {
        term: 5,
        vote: 1,
        commit: 30,
        ..Default::default()
    };
    log.stage_hard_state(&mut batch, hs);
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..Default::default()
    };
    log.stage_conf_state(&mut batch, cs.clone());
    log.stage_members(
        &mut batch,
        Members::from([(
            4,
            MemberInfo {
                addr: "127.0.0.1:7004".into(),
                promote: true,
            },
        )]),
    );
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 10;
    snapshot.mut_metadata().term = 2;
    snapshot.mut_metadata().set_conf_state(cs);
    snapshot.data = states()[1].snapshot().into();
    log.stage_compact(&mut batch, snapshot).unwrap();
    store
        .state_store()
        .stage_replace_all(&mut batch, &states()[2].records(), 30);
    store.write(batch, true).unwrap();
}

/// Every load a starting node does, and a read of the whole log; `Err` if any found
/// corruption. Errors of another kind fail the test.
fn load_all(store: &Store) -> Result<(), String> {
    let corrupt = |e: StorageError| match e {
        StorageError::Corrupt(why) => why,
        e => panic!("a load answered {e}, not Corrupt"),
    };
    store.identity().map_err(corrupt)?;
    store.diverged().map_err(corrupt)?;
    let log = store.raft_log().map_err(corrupt)?;
    let (first, last) = (log.first_index(), log.last_index());
    for index in first.saturating_sub(1)..=last {
        raft::Storage::term(&log, index).expect("a term inside the log");
    }
    if first <= last {
        let entries =
            raft::Storage::entries(&log, first, last + 1, None, GetEntriesContext::empty(false));
        entries.map_err(|e| e.to_string())?;
    }
    let (_, records) = store.state_store().load().map_err(corrupt)?;
    loaded(StateMachine::from_records(records), "the stored state")
        .map(|_| ())
        .ok_or_else(|| "corrupt state".to_string())
}

fn ends(what: &'static str, result: Result<(), String>) -> &'static str {
    match (what, result) {
        ("resealed", Ok(())) => "resealed, loaded",
        ("resealed", Err(_)) => "resealed, refused",
        (_, Ok(())) => "moved, loaded",
        (_, Err(_)) => "moved, refused",
    }
}

#[test]
fn stores() {
    states();
    let dir = crate::testdir::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).unwrap();
    filled_store(&store);
    load_all(&store).expect("the filled store loads");
    let raw: Vec<(Cf, Vec<u8>, Vec<u8>)> = [CF_RAFT, CF_STATE]
        .into_iter()
        .flat_map(|cf| {
            store
                .raw_records(cf)
                .into_iter()
                .map(move |(k, v)| (cf, k, v))
        })
        .collect();
    run("records::stores", 400, |rng| {
        let (cf, key, sealed) = &raw[rng.gen_range(0..raw.len())];
        let value = unseal(key, sealed, "fuzz").expect("stored values are sealed");
        let end = match rng.gen_range(0..4) {
            // Damage on the disk: the checksum must catch it.
            0 | 1 => {
                let mut damaged = sealed.clone();
                mutate(rng, &mut damaged);
                if damaged == *sealed {
                    return "unchanged";
                }
                store.put_raw(*cf, key, &damaged);
                let result = load_all(&store);
                store.put_raw(*cf, key, sealed);
                assert!(result.is_err(), "damaged {cf} record {key:02x?} loaded");
                "damaged, refused"
            }
            // A damaged value with a valid checksum (written so by a bug): refused or
            // loaded, never a panic.
            2 => {
                let mut value = value.to_vec();
                mutate(rng, &mut value);
                store.put_raw(*cf, key, &seal(key, &value));
                ends("resealed", load_all(&store))
            }
            // A record under a damaged key.
            _ => {
                let mut other = key.clone();
                mutate(rng, &mut other);
                if raw.iter().any(|(c, k, _)| c == cf && *k == other) {
                    "unchanged"
                } else {
                    store.put_raw(*cf, &other, sealed);
                    let result = load_all(&store);
                    store.delete_raw(*cf, &other);
                    ends("moved", result)
                }
            }
        };
        store.put_raw(*cf, key, sealed);
        end
    });
    load_all(&store).expect("the repaired store loads");
}
