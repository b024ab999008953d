//! Length-delimited protobuf frames over any async byte stream.
//!
//! A frame is a 4-byte big-endian length and that many bytes. The reader refuses a declared
//! length above the connection's limit before reading the body, and never reserves memory
//! from a declared length: its buffer grows with the bytes that actually arrived (at most
//! [`READ_AHEAD`] beyond them), so a peer that announces a large frame and sends nothing holds
//! no more than that.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use protobuf::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Most buffer space reserved ahead of the bytes received for one frame.
pub const READ_AHEAD: usize = 256 * 1024;

const HEAD: usize = 4;

/// Most frames written out together by [`FrameWriter::send_all`].
pub const MAX_BURST: usize = 64;

/// The length-prefixed codec: see the module docs.
#[derive(Debug, Clone)]
pub struct Codec {
    max_frame: usize,
}

impl Codec {
    pub fn new(max_frame: usize) -> Self {
        Codec { max_frame }
    }
}

impl Decoder for Codec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        if src.len() < HEAD {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes is larger than this connection's limit of {} bytes",
                    self.max_frame
                ),
            ));
        }
        let missing = (HEAD + len).saturating_sub(src.len());
        if missing > 0 {
            src.reserve(missing.min(READ_AHEAD));
            return Ok(None);
        }
        src.advance(HEAD);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<Bytes> for Codec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let len = u32::try_from(item.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("frame of {} bytes is too large to send", item.len()),
            )
        })?;
        dst.reserve(HEAD + item.len());
        dst.put_u32(len);
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Decode(#[from] protobuf::ProtobufError),
}

/// A connection that sends and receives whole protobuf messages.
pub struct FramedConn<S> {
    inner: Framed<S, Codec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedConn<S> {
    /// Wraps `stream`, accepting frames of at most `max_frame` bytes until told otherwise.
    pub fn new(stream: S, max_frame: usize) -> Self {
        FramedConn {
            inner: Framed::new(stream, Codec::new(max_frame)),
        }
    }

    /// Raises (or lowers) the limit on received frames, e.g. once the other side has
    /// authenticated itself.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.inner.codec_mut().max_frame = max_frame;
    }

    pub async fn send<M: Message>(&mut self, msg: &M) -> Result<(), FrameError> {
        let bytes = msg.write_to_bytes()?;
        self.inner.send(Bytes::from(bytes)).await?;
        Ok(())
    }

    /// Sends an already encoded message.
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), FrameError> {
        self.inner.send(bytes).await?;
        Ok(())
    }

    /// Queues an already encoded message without writing it out (unless the queue is full):
    /// [`FramedConn::flush`] writes what is queued. Frames fed one after the other go out in
    /// as few system calls as the socket takes them in.
    pub async fn feed_raw(&mut self, bytes: Bytes) -> Result<(), FrameError> {
        self.inner.feed(bytes).await?;
        Ok(())
    }

    /// Writes out every queued frame.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await?;
        Ok(())
    }

    /// Receives the next message; `Closed` when the other side hung up cleanly.
    pub async fn recv<M: Message>(&mut self) -> Result<M, FrameError> {
        match self.inner.next().await {
            None => Err(FrameError::Closed),
            Some(Err(e)) => Err(FrameError::Io(e)),
            Some(Ok(buf)) => Ok(super::parse(&buf.freeze())?),
        }
    }

    /// Splits into independent halves so one task can read while another writes.
    pub fn split(self) -> (FrameReader<S>, FrameWriter<S>) {
        let (sink, stream) = self.inner.split();
        (FrameReader { inner: stream }, FrameWriter { inner: sink })
    }
}

pub struct FrameReader<S> {
    inner: futures::stream::SplitStream<Framed<S, Codec>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    pub async fn recv<M: Message>(&mut self) -> Result<M, FrameError> {
        match self.inner.next().await {
            None => Err(FrameError::Closed),
            Some(Err(e)) => Err(FrameError::Io(e)),
            Some(Ok(buf)) => Ok(super::parse(&buf.freeze())?),
        }
    }
}

pub struct FrameWriter<S> {
    inner: futures::stream::SplitSink<Framed<S, Codec>, Bytes>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameWriter<S> {
    pub async fn send<M: Message>(&mut self, msg: &M) -> Result<(), FrameError> {
        let bytes = msg.write_to_bytes()?;
        self.inner.send(Bytes::from(bytes)).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), FrameError> {
        self.inner.send(bytes).await?;
        Ok(())
    }

    /// Sends `first`, then the messages `more` has ready at once (up to [`MAX_BURST`] in
    /// all), and writes them out together: a writer task draining its queue this way makes
    /// one system call for a burst of messages instead of one for each.
    pub async fn send_all<M: Message>(
        &mut self,
        first: &M,
        mut more: impl FnMut() -> Option<M>,
    ) -> Result<(), FrameError> {
        self.inner
            .feed(Bytes::from(first.write_to_bytes()?))
            .await?;
        for _ in 1..MAX_BURST {
            let Some(next) = more() else { break };
            self.inner.feed(Bytes::from(next.write_to_bytes()?)).await?;
        }
        self.inner.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn framed(body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        Codec::new(usize::MAX)
            .encode(Bytes::copy_from_slice(body), &mut buf)
            .unwrap();
        buf
    }

    #[test]
    fn frames_arrive_whole_however_the_bytes_are_cut() {
        let mut wire = framed(b"hello");
        wire.extend_from_slice(&framed(b""));
        wire.extend_from_slice(&framed(&[7; 1000]));
        let mut codec = Codec::new(1000);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                got.push(frame.to_vec());
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![7; 1000]]);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn a_burst_arrives_whole_in_order_and_stops_at_its_bound() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (_, mut writer) = FramedConn::new(a, 1024).split();
        let mut reader = FramedConn::new(b, 1024);
        let ack = |index| {
            let mut m = crate::proto::CacheAck::new();
            m.index = index;
            m
        };
        let mut queue: std::collections::VecDeque<_> = (1..=100).map(ack).collect();
        writer
            .send_all(&ack(0), || queue.pop_front())
            .await
            .unwrap();
        assert_eq!(queue.len(), 100 - (MAX_BURST - 1), "taken from the queue");
        for want in 0..MAX_BURST as u64 {
            let got: crate::proto::CacheAck = reader.recv().await.unwrap();
            assert_eq!(got.index, want);
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_body() {
        let mut buf = BytesMut::from(&[0u8, 0, 4, 1][..]);
        let err = Codec::new(1024).decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("1025 bytes"), "{err}");
    }

    #[test]
    fn a_declared_length_reserves_no_more_than_the_read_ahead() {
        let mut buf = BytesMut::from(&(900u32 << 20).to_be_bytes()[..]);
        buf.extend_from_slice(b"only a few bytes");
        let mut codec = Codec::new(1 << 30);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= READ_AHEAD + 64,
            "reserved {} bytes for a 900 MiB declaration",
            buf.capacity()
        );
    }

    /// Arbitrary bytes give frames, "need more" or an error; never a panic, never a frame over
    /// the limit.
    #[test]
    fn random_input_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for _ in 0..2000 {
            let len = rng.gen_range(0..64);
            let mut buf: BytesMut = (0..len).map(|_| rng.gen::<u8>()).collect();
            if rng.gen_bool(0.5) && len >= 4 {
                buf[0] = 0;
                buf[1] = 0;
            }
            let mut codec = Codec::new(rng.gen_range(0..100));
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                assert!(frame.len() <= codec.max_frame);
            }
        }
    }
}
