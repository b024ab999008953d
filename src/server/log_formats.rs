//! Which log format each peer reads, and which the cluster writes (see `crate::encoding`).
//!
//! Every peer connection starts with a hello each way, and each side names there the newest
//! log format it reads (a lockfs from before log formats names none: format 1). [`LogFormats`]
//! keeps the latest each peer named, for three uses:
//! - the leader switches the cluster to a newer format only once every member has named it
//!   (`Node::switch_log_format`);
//! - a connection never carries a log entry or a snapshot in a format its peer did not name
//!   ([`needed`]): such a peer stays behind, and the log says why, instead of misreading them;
//! - once the cluster writes a format, a peer that names an older one is refused at its hello,
//!   with a message that says to upgrade it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use raft::prelude::{EntryType, Message, MessageType};

use super::entry::EntryKind;
use super::membership::SnapshotData;
use crate::encoding::LogFormat;

/// Shared by a node's Raft loop, its service (hellos of peers that dial it) and its
/// transport (hello replies of peers it dials).
#[derive(Debug)]
pub struct LogFormats {
    /// The format the cluster writes, as of this node's applied state.
    cluster: AtomicU32,
    /// The newest format each peer named in its latest hello.
    peers: Mutex<BTreeMap<u64, LogFormat>>,
}

impl Default for LogFormats {
    fn default() -> Self {
        LogFormats {
            cluster: AtomicU32::new(LogFormat::One.number()),
            peers: Mutex::default(),
        }
    }
}

impl LogFormats {
    /// The format a peer names in its hello: `said` as the wire carries it. A number newer
    /// than this lockfs knows comes from a newer lockfs, which reads every format this one
    /// writes.
    pub fn named(said: u32) -> LogFormat {
        LogFormat::from_number(said).unwrap_or(LogFormat::NEWEST)
    }

    pub fn set_cluster(&self, format: LogFormat) {
        self.cluster.store(format.number(), Ordering::Relaxed);
    }

    pub fn cluster(&self) -> LogFormat {
        Self::named(self.cluster.load(Ordering::Relaxed))
    }

    /// Notes that peer `id` named `said` in its hello; refuses it (with the reason) when it
    /// cannot read what the cluster writes.
    pub fn hello(&self, id: u64, said: u32) -> Result<LogFormat, String> {
        let reads = Self::named(said);
        self.peers
            .lock()
            .expect("log formats poisoned")
            .insert(id, reads);
        let cluster = self.cluster();
        if reads < cluster {
            return Err(format!(
                "node {id} reads log formats up to {}, and this cluster writes format {}: \
                 upgrade lockfs on node {id}",
                reads.number(),
                cluster.number()
            ));
        }
        Ok(reads)
    }

    /// Whether every one of `ids` has named `format` (or a newer one) in its latest hello.
    pub fn all_read(&self, mut ids: impl Iterator<Item = u64>, format: LogFormat) -> bool {
        let peers = self.peers.lock().expect("log formats poisoned");
        ids.all(|id| peers.get(&id).is_some_and(|&f| f >= format))
    }
}

/// The newest log format among what `msg` carries: its entries, by their contexts, and its
/// snapshot's envelope. A peer must read it to be sent `msg`.
pub fn needed(msg: &Message) -> LogFormat {
    let entries = msg.get_entries().iter().map(|e| match e.get_entry_type() {
        EntryType::EntryNormal => EntryKind::of(&e.context).map_or(LogFormat::NEWEST, |(_, f)| f),
        _ => EntryKind::change_format(&e.context).unwrap_or(LogFormat::NEWEST),
    });
    let snapshot = (msg.get_msg_type() == MessageType::MsgSnapshot)
        .then(|| SnapshotData::format_of(&msg.get_snapshot().data));
    entries.chain(snapshot).max().unwrap_or(LogFormat::One)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    #[test]
    fn a_peer_that_cannot_read_what_the_cluster_writes_is_refused() {
        let f = LogFormats::default();
        assert_eq!(
            f.hello(2, 0),
            Ok(LogFormat::One),
            "no format named: format 1"
        );
        assert_eq!(f.hello(3, 2), Ok(LogFormat::Two));
        assert!(!f.all_read([2, 3].into_iter(), LogFormat::Two));
        assert!(
            !f.all_read([3, 4].into_iter(), LogFormat::Two),
            "4 never said"
        );
        assert_eq!(f.hello(2, 9), Ok(LogFormat::NEWEST), "a newer lockfs");
        assert!(f.all_read([2, 3].into_iter(), LogFormat::Two));
        f.set_cluster(LogFormat::Two);
        assert_eq!(f.cluster(), LogFormat::Two);
        let why = f.hello(2, 1).unwrap_err();
        assert!(why.contains("upgrade lockfs on node 2"), "{why}");
        assert!(
            !f.all_read([2].into_iter(), LogFormat::Two),
            "the latest hello counts"
        );
    }

    #[test]
    fn a_message_needs_the_newest_format_it_carries() {
        let entry = |kind: EntryKind, format: LogFormat| Entry {
            context: kind.context(format).into(),
            data: b"x".to_vec().into(),
            ..Entry::default()
        };
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        assert_eq!(
            needed(&msg),
            LogFormat::One,
            "a heartbeat or an empty append"
        );
        msg.mut_entries()
            .push(entry(EntryKind::Command, LogFormat::One));
        msg.mut_entries()
            .push(entry(EntryKind::Check, LogFormat::One));
        assert_eq!(needed(&msg), LogFormat::One);
        msg.mut_entries()
            .push(entry(EntryKind::Report, LogFormat::Two));
        assert_eq!(needed(&msg), LogFormat::Two);
        let mut conf = entry(EntryKind::Change, LogFormat::Two);
        conf.set_entry_type(EntryType::EntryConfChangeV2);
        let mut msg = Message::default();
        msg.mut_entries().push(conf);
        assert_eq!(needed(&msg), LogFormat::Two);
        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        let data = SnapshotData {
            members: Default::default(),
            state: Vec::new(),
        };
        snap.mut_snapshot().data = data.encode(LogFormat::One).into();
        assert_eq!(needed(&snap), LogFormat::One);
        snap.mut_snapshot().data = data.encode(LogFormat::Two).into();
        assert_eq!(needed(&snap), LogFormat::Two);
    }
}
