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

/// Parses one message that fills `bytes`, as `Message::parse_from_bytes` does, but never
/// allocating for a length the input declares and does not hold. Every message read from the
/// network or the disk goes through here.
///
/// `parse_from_bytes` reserves memory for a declared length before it checks that the bytes
/// are there: for a `bytes` field of raft-rs's messages (log entries, snapshots), the whole
/// declared length below 10 MB; for lockfs's own `bytes` and `string` fields, up to 10 MB. A
/// few bytes of a hello or a frame could make a node allocate that much. Read from a `Bytes`
/// (raft-rs's fields then share it instead of being copied out), with the input's length as
/// the stream's limit, every declared length is checked against the bytes that remain first.
pub fn parse<M: protobuf::Message>(bytes: &bytes::Bytes) -> protobuf::ProtobufResult<M> {
    let mut input = protobuf::CodedInputStream::from_carllerche_bytes(bytes);
    input.push_limit(bytes.len() as u64)?;
    let message = M::parse_from(&mut input)?;
    input.check_eof()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use protobuf::Message;

    use super::*;

    #[test]
    fn a_message_parses_as_with_protobuf_itself() {
        let mut hello = Hello::new();
        hello.version = PROTOCOL_VERSION;
        hello.mut_client().name = "host".into();
        let bytes = Bytes::from(hello.write_to_bytes().unwrap());
        assert_eq!(parse::<Hello>(&bytes).unwrap(), hello);
        assert!(parse::<Hello>(&bytes.slice(..bytes.len() - 1)).is_err());
        assert_eq!(parse::<Hello>(&Bytes::new()).unwrap(), Hello::new());
        let entry = raft::prelude::Entry {
            index: 7,
            data: Bytes::from_static(b"data"),
            ..Default::default()
        };
        let bytes = Bytes::from(entry.write_to_bytes().unwrap());
        assert_eq!(parse::<raft::prelude::Entry>(&bytes).unwrap(), entry);
    }

    /// Six bytes that declare 1 GiB of a peer frame's raft message, or 9 MiB of a log entry's
    /// data: refused as truncated, with nothing reserved for the declared length.
    #[test]
    fn a_declared_length_past_the_input_reserves_nothing() {
        let frame = Bytes::from_static(&[0x0a, 0x80, 0x80, 0x80, 0x80, 0x04]);
        let entry = Bytes::from_static(&[0x22, 0x80, 0x80, 0x80, 0x04, 0x00]);
        let (result, largest) = crate::fuzz::largest_allocation(|| parse::<PeerFrame>(&frame));
        assert!(result.is_err());
        assert!(largest < 4096, "{largest} bytes reserved for a peer frame");
        let (result, largest) =
            crate::fuzz::largest_allocation(|| parse::<raft::prelude::Entry>(&entry));
        assert!(result.is_err());
        assert!(largest < 4096, "{largest} bytes reserved for a log entry");
    }
}
