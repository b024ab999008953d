//! Wire messages and framing, shared by servers, clients and the mount.
//!
//! The message types are generated at build time from `proto/lockfs.proto` (see `build.rs`); this
//! module adds the framing that every connection uses: a 4-byte big-endian length followed by one
//! protobuf message, with a maximum frame size per connection kind so that no peer can make a node
//! allocate without bound. Framing is kept apart from meaning, as in mini-redis: `frame` reads and
//! writes messages, the server and the client decide what they mean.

#[allow(
    clippy::all,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_imports,
    unused_results,
    missing_docs,
    dead_code,
    renamed_and_removed_lints,
    box_pointers,
    unknown_lints,
    unused_parens,
    mismatched_lifetime_syntaxes
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/lockfs.rs"));
}

pub mod frame;

pub use generated::*;

/// The protocol version spoken by this build; sent in every `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted before the other side has introduced itself.
pub const HELLO_MAX_FRAME: usize = 64 * 1024;

/// Largest frame on a client connection: a whole small file plus its envelope, with room to spare
/// for the largest configurable file size. A node accepts less from its clients: see
/// [`client_request_limit`].
pub const CLIENT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Room in a client's request beyond the file data it carries: paths, names, the caller's groups.
pub const CLIENT_FRAME_MARGIN: usize = 64 * 1024;

/// Largest request frame a node accepts from a client when files hold at most `max_file_size`
/// bytes: no request needs more, so no client can make a node buffer more.
pub fn client_request_limit(max_file_size: u64) -> usize {
    usize::try_from(max_file_size)
        .unwrap_or(usize::MAX)
        .saturating_add(CLIENT_FRAME_MARGIN)
        .min(CLIENT_MAX_FRAME)
}

/// Largest frame between peers, accepted only once the peer is authenticated: raft messages
/// carry batches of entries (about 1 MiB, or one entry of up to `max_file_size` and its
/// envelope), and snapshots come in chunks of about 1 MiB plus one record.
pub const PEER_MAX_FRAME: usize = 64 * 1024 * 1024;
