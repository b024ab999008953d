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
/// for the largest configurable file size.
pub const CLIENT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Largest frame between peers: raft messages carry batches of entries and whole state-machine
/// snapshots.
pub const PEER_MAX_FRAME: usize = 1024 * 1024 * 1024;
