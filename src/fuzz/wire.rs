//! Targets of what a node reads from the network, and of the raft records it stores: frames,
//! the protobuf messages of clients and peers, what `server::convert` makes of a request, and
//! raft-rs's messages, entries, conf changes and snapshots.
//!
//! A request that converts is taken down the path a node takes it: the checks made before the
//! Raft log (`server::limits`), its log entry (which must round-trip), and its application or
//! query on a real state.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use bytes::{BufMut, BytesMut};
use protobuf::text_format::print_to_string;
use protobuf::Message;
use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, HardState,
    Snapshot,
};
use rand::rngs::StdRng;
use rand::Rng;
use tokio_util::codec::Decoder;

use super::alloc::bounded;
use super::entries::{apply, envelope, log_format, member_info};
use super::mutate::{arbitrary, mutate, varint, Input};
use super::records::{some_state, states};
use super::run;
use super::schema::Schema;
use crate::encoding::LogFormat;
use crate::proto::{self, frame::Codec};
use crate::server::convert::{self, Action};
use crate::server::entry::Envelope;
use crate::server::events::{EventRouter, WatchSpec};
use crate::server::limits;
use crate::server::membership::{plan, ChangeContext};
use crate::state::{Kind, NodeChange, NodeEvent};
use crate::storage::{MemberInfo, Members};

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::of(&[
            proto::file_descriptor_proto(),
            raft::eraftpb::file_descriptor_proto(),
        ])
    })
}

/// An encoding of a message of type `name`: valid, flawed by construction, damaged after, or
/// arbitrary bytes.
fn pick(rng: &mut StdRng, name: &str) -> Input {
    if rng.gen_ratio(1, 8) {
        Input::Damaged(schema().encode(rng, name, true))
    } else {
        Input::pick(rng, |rng| schema().encode(rng, name, false))
    }
}

/// Parses `input` as an `M`; what parses must encode and parse back to the same fields, and a
/// valid encoding must parse.
///
/// Fields are compared in protobuf's text format, which leaves out unknown fields: protobuf
/// keeps them, but compares an emptied set of them unequal to none at all (a message field
/// given twice leaves one).
fn parse<M: Message>(input: &Input) -> Option<M> {
    let bytes = input.bytes();
    let name = M::descriptor_static().name();
    let shared = bytes::Bytes::copy_from_slice(bytes);
    match bounded(name, bytes, || proto::parse::<M>(&shared)) {
        Ok(m) => {
            let again = m.write_to_bytes().expect("a parsed message encodes");
            let back: M = proto::parse(&again.clone().into()).expect("a re-encoding parses");
            let (text, back) = (print_to_string(&m), print_to_string(&back));
            assert_eq!(
                text, back,
                "{name} changed in a round trip; input {bytes:02x?}, encoded again {again:02x?}"
            );
            Some(m)
        }
        Err(e) => {
            assert!(!input.is_valid(), "a valid {name} was refused: {e}");
            None
        }
    }
}

fn ends<M>(parsed: Option<M>) -> &'static str {
    match parsed {
        Some(_) => "parsed",
        None => "refused",
    }
}

#[test]
fn frames() {
    run("wire::frames", 1000, |rng| {
        let max = [0, 1, 16, 100, 1000, proto::HELLO_MAX_FRAME][rng.gen_range(0..6)];
        let bodies: Vec<Vec<u8>> = (0..rng.gen_range(0..6))
            .map(|_| {
                let len = [0, 1, 15, 16, 17, 100, 1000, 1001][rng.gen_range(0..8)];
                (0..len).map(|_| rng.gen()).collect()
            })
            .collect();
        let mut wire = Vec::new();
        for body in &bodies {
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        let damaged = rng.gen_ratio(1, 3);
        if damaged {
            mutate(rng, &mut wire);
        }
        let mut codec = Codec::new(max);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut refused = false;
        let mut rest = &wire[..];
        'feed: while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(600));
            buf.put_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                let received = buf.to_vec();
                match bounded("frame", &received, || codec.decode(&mut buf)) {
                    Ok(Some(frame)) => {
                        assert!(frame.len() <= max, "a frame over the limit");
                        got.push(frame.to_vec());
                    }
                    Ok(None) => break,
                    Err(_) => {
                        refused = true;
                        break 'feed;
                    }
                }
            }
        }
        if !damaged {
            let fitting = bodies.iter().take_while(|b| b.len() <= max).count();
            assert_eq!(got, bodies[..fitting], "frames lost or changed");
            assert_eq!(refused, fitting < bodies.len());
            if !refused {
                assert!(buf.is_empty(), "bytes left over after whole frames");
            }
        }
        match (refused, damaged) {
            (true, _) => "refused",
            (false, true) => "damaged, not refused",
            (false, false) => "read",
        }
    });
}

#[test]
fn hellos_and_replies() {
    run("wire::hellos_and_replies", 3000, |rng| {
        match rng.gen_range(0..3) {
            // What a node reads first from whoever connects.
            0 => ends(parse::<proto::Hello>(&pick(rng, ".lockfs.Hello"))),
            // What clients read from a node.
            1 => ends(parse::<proto::HelloReply>(&pick(rng, ".lockfs.HelloReply"))),
            _ => ends(parse::<proto::ServerFrame>(&pick(
                rng,
                ".lockfs.ServerFrame",
            ))),
        }
    });
}

#[test]
fn requests() {
    states();
    run("wire::requests", 5000, |rng| {
        let Some(req) = parse::<proto::Request>(&pick(rng, ".lockfs.Request")) else {
            return "refused";
        };
        take(rng, &req)
    });
}

/// Takes a parsed request down the path a node takes it; returns how far it went.
fn take(rng: &mut StdRng, req: &proto::Request) -> &'static str {
    let _ = convert::session_secret(req);
    let caller = convert::user_ids(req);
    let Ok(action) = convert::action(req) else {
        return "not converted";
    };
    let caller = caller.ok().flatten();
    let mut state = some_state(rng);
    match action {
        Action::Write { command, request } => {
            let max_file_size = [0, 1, 100, 4096][rng.gen_range(0..4)];
            if limits::check(&command, max_file_size).is_err() {
                return "over a limit";
            }
            let mut entry = envelope(rng, command);
            entry.request = request;
            entry.caller = caller;
            entry.max_file_size = max_file_size;
            let format = log_format(rng);
            let bytes = entry.encode(format);
            let back = Envelope::decode(format, &bytes).expect("an entry decodes");
            assert_eq!(back.command, entry.command);
            assert_eq!(back.encode(format), bytes);
            apply(&mut state, 100_000, &back)
        }
        Action::Read(query) => match state.query_as(&query, caller.as_ref()) {
            Ok(_) => "answered",
            Err(_) => "refused when queried",
        },
        Action::Members(op) => {
            let conf = ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                ..Default::default()
            };
            let members: Members = (1..=4)
                .map(|id| {
                    let info = MemberInfo {
                        addr: format!("127.0.0.1:700{id}"),
                        promote: id == 4,
                    };
                    (id, info)
                })
                .collect();
            match plan(&op, &conf, &members, &BTreeSet::from([1, 2])) {
                Ok(_) => "member change planned",
                Err(_) => "member change refused",
            }
        }
        Action::Watch {
            path,
            recursive,
            cache,
            early,
            ..
        } => {
            // A watch of any path that converts registers, and sees events at that path.
            let router = EventRouter::default();
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let spec = WatchSpec {
                conn: 1,
                id: 1,
                session: 1,
                path: path.clone(),
                recursive,
                cache,
                early,
                tx,
            };
            router.watch(spec, 0).expect("a converted path registers");
            if cache {
                assert!(router.cache_ack(1, 1, 5, 0));
                assert_eq!(router.cache_registration(1).unwrap().acked, 5);
            }
            router.publish_changes(&[NodeEvent {
                index: 1,
                path,
                instance: 2,
                parent: 1,
                name: "x".into(),
                kind: Kind::File,
                by: 0,
                change: NodeChange::Created,
            }]);
            // A cache hears of it at once, any other watch once it is released.
            router.release_through(1);
            assert!(rx.try_recv().is_ok(), "a watch sees its own path");
            "watch registered"
        }
        Action::Unwatch { .. } => "unwatch",
        Action::CacheAck { .. } => "cache ack",
        Action::Status | Action::KeepAlive { .. } => "status or keep-alive",
    }
}

#[test]
fn peer_messages() {
    run("wire::peer_messages", 2500, |rng| {
        // A peer frame around a raft message, either of them damaged.
        let raft = pick(rng, ".eraftpb.Message");
        let mut frame = Vec::new();
        if !raft.bytes().is_empty() || rng.gen() {
            varint(1 << 3 | 2, &mut frame);
            varint(raft.bytes().len() as u64, &mut frame);
            frame.extend_from_slice(raft.bytes());
        }
        let input = match rng.gen_range(0..8) {
            0 => Input::Damaged(arbitrary(rng)),
            1 | 2 => {
                mutate(rng, &mut frame);
                Input::Damaged(frame)
            }
            _ => Input::Valid(frame),
        };
        let Some(frame) = parse::<proto::PeerFrame>(&input) else {
            return "frame refused";
        };
        let raft = match input {
            Input::Valid(_) => raft,
            Input::Damaged(_) => Input::Damaged(frame.raft.clone()),
        };
        assert_eq!(raft.bytes(), &frame.raft[..]);
        match parse::<raft::prelude::Message>(&raft) {
            Some(_) => "parsed",
            None => "message refused",
        }
    });
}

#[test]
fn raft_records() {
    run("wire::raft_records", 4000, |rng| {
        match rng.gen_range(0..7) {
            0 => ends(parse::<Entry>(&pick(rng, ".eraftpb.Entry"))),
            1 => ends(parse::<HardState>(&pick(rng, ".eraftpb.HardState"))),
            2 => ends(parse::<ConfState>(&pick(rng, ".eraftpb.ConfState"))),
            3 => ends(parse::<Snapshot>(&pick(rng, ".eraftpb.Snapshot"))),
            // A conf change entry as a replica applies it: its context is the member book
            // entry.
            4 => match parse::<ConfChange>(&pick(rng, ".eraftpb.ConfChange")) {
                Some(cc) => context(&cc.context),
                None => "refused",
            },
            5 => match parse::<ConfChangeV2>(&pick(rng, ".eraftpb.ConfChangeV2")) {
                Some(cc) => context(&cc.context),
                None => "refused",
            },
            // One as the leader proposes it, with a real context.
            _ => {
                let id = rng.gen_range(1..6);
                let change = ConfChangeSingle {
                    change_type: ConfChangeType::AddLearnerNode,
                    node_id: id,
                    ..Default::default()
                };
                let book_entry = ChangeContext {
                    id,
                    info: rng.gen::<bool>().then(|| member_info(rng)),
                };
                let cc = ConfChangeV2 {
                    changes: vec![change].into(),
                    context: book_entry.encode(LogFormat::NEWEST).into(),
                    ..Default::default()
                };
                let input = Input::pick(rng, |_| cc.write_to_bytes().unwrap());
                match parse::<ConfChangeV2>(&input) {
                    Some(cc) => context(&cc.context),
                    None => "refused",
                }
            }
        }
    });
}

fn context(bytes: &[u8]) -> &'static str {
    match bounded("conf change context", bytes, || {
        ChangeContext::decode(LogFormat::NEWEST, bytes)
    }) {
        Ok(_) => "conf change with a context",
        Err(_) => "conf change without a context",
    }
}
