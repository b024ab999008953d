//! What a normal Raft log entry carries: one state-machine command plus what the leader stamped
//! on it when it proposed it (time, file size limit, lock-delay, quotas). Replicas apply the
//! stamp, never their own clock or settings, so they stay identical.
//!
//! An entry's context says what its data is and in which log format (see `crate::encoding`):
//! [`EntryKind::of`] reads it, [`EntryKind::context`] writes it. Every replica reads an entry by its
//! context alone, so a log holds entries of both formats.

use serde::{Deserialize, Serialize};

use crate::encoding::LogFormat;
use crate::state::{ApplyCtx, Command, Quotas, RequestId, UserIds};

/// What the data of an entry holds, by its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An [`Envelope`] (a client's or the leader's command).
    Command,
    /// An integrity check (`integrity.rs`).
    Check,
    /// A replica's report that its state diverged (`integrity.rs`).
    Report,
    /// The context of a membership change (`membership::ChangeContext`), in a conf change entry.
    Change,
}

/// Contexts of format 1, which named only checks and reports.
const CHECK_1: &[u8] = b"lockfs/check";
const REPORT_1: &[u8] = b"lockfs/diverged";
/// Contexts of format 2.
const COMMAND_2: &[u8] = b"2";
const CHECK_2: &[u8] = b"2/check";
const REPORT_2: &[u8] = b"2/diverged";

impl EntryKind {
    /// The context of an entry of this kind in `format`.
    pub fn context(self, format: LogFormat) -> Vec<u8> {
        match (self, format) {
            (EntryKind::Command | EntryKind::Change, LogFormat::One) => Vec::new(),
            (EntryKind::Check, LogFormat::One) => CHECK_1.to_vec(),
            (EntryKind::Report, LogFormat::One) => REPORT_1.to_vec(),
            (EntryKind::Command | EntryKind::Change, LogFormat::Two) => COMMAND_2.to_vec(),
            (EntryKind::Check, LogFormat::Two) => CHECK_2.to_vec(),
            (EntryKind::Report, LogFormat::Two) => REPORT_2.to_vec(),
        }
    }

    /// What a normal entry with `context` holds, and in which format; `None`: a context no
    /// lockfs this one knows writes (every replica skips the entry alike).
    pub fn of(context: &[u8]) -> Option<(EntryKind, LogFormat)> {
        match context {
            b"" => Some((EntryKind::Command, LogFormat::One)),
            CHECK_1 => Some((EntryKind::Check, LogFormat::One)),
            REPORT_1 => Some((EntryKind::Report, LogFormat::One)),
            COMMAND_2 => Some((EntryKind::Command, LogFormat::Two)),
            CHECK_2 => Some((EntryKind::Check, LogFormat::Two)),
            REPORT_2 => Some((EntryKind::Report, LogFormat::Two)),
            _ => None,
        }
    }

    /// The format of a conf change entry's context, by the entry's own context; `None`: one no
    /// lockfs this one knows writes.
    pub fn change_format(context: &[u8]) -> Option<LogFormat> {
        match context {
            b"" => Some(LogFormat::One),
            COMMAND_2 => Some(LogFormat::Two),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The leader's wall clock when it proposed the command (nanoseconds since the epoch).
    pub time_ns: u64,
    /// The leader's configured file-size limit.
    pub max_file_size: u64,
    /// The leader's configured lock-delay after a session expiry.
    pub lock_delay_ns: u64,
    /// The session and sequence number of the client request, for at-most-once application.
    pub request: Option<RequestId>,
    /// Whose permissions the command is checked against (a host's user), if anyone's.
    pub caller: Option<UserIds>,
    /// The leader's configured quotas, for a command that can grow something.
    pub quotas: Option<Quotas>,
    pub command: Command,
}

impl Envelope {
    pub fn encode(&self, format: LogFormat) -> Vec<u8> {
        format.encode(self)
    }

    pub fn decode(format: LogFormat, bytes: &[u8]) -> Result<Envelope, String> {
        format.decode(bytes).map_err(|e| e.to_string())
    }

    pub fn ctx(&self, index: u64) -> ApplyCtx {
        ApplyCtx {
            index,
            time_ns: self.time_ns,
            max_file_size: self.max_file_size,
            lock_delay_ns: self.lock_delay_ns,
            caller: self.caller.clone(),
            quotas: self.quotas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_context_reads_back_as_its_kind_and_format() {
        for format in [LogFormat::One, LogFormat::Two] {
            for kind in [EntryKind::Command, EntryKind::Check, EntryKind::Report] {
                assert_eq!(EntryKind::of(&kind.context(format)), Some((kind, format)));
            }
            let change = EntryKind::Change.context(format);
            assert_eq!(EntryKind::change_format(&change), Some(format));
        }
        assert_eq!(EntryKind::of(b"3"), None);
        assert_eq!(EntryKind::change_format(b"lockfs/check"), None);
    }
}
