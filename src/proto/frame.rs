//! Length-delimited protobuf frames over any async byte stream.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protobuf::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

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
    inner: Framed<S, LengthDelimitedCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedConn<S> {
    /// Wraps `stream`, accepting frames of at most `max_frame` bytes until told otherwise.
    pub fn new(stream: S, max_frame: usize) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(max_frame)
            .new_codec();
        FramedConn {
            inner: Framed::new(stream, codec),
        }
    }

    /// Raises (or lowers) the frame limit, e.g. once the other side has authenticated itself.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.inner.codec_mut().set_max_frame_length(max_frame);
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

    /// Receives the next message; `Closed` when the other side hung up cleanly.
    pub async fn recv<M: Message>(&mut self) -> Result<M, FrameError> {
        match self.inner.next().await {
            None => Err(FrameError::Closed),
            Some(Err(e)) => Err(FrameError::Io(e)),
            Some(Ok(buf)) => Ok(M::parse_from_bytes(&buf)?),
        }
    }

    /// Splits into independent halves so one task can read while another writes.
    pub fn split(self) -> (FrameReader<S>, FrameWriter<S>) {
        let (sink, stream) = self.inner.split();
        (FrameReader { inner: stream }, FrameWriter { inner: sink })
    }
}

pub struct FrameReader<S> {
    inner: futures::stream::SplitStream<Framed<S, LengthDelimitedCodec>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    pub async fn recv<M: Message>(&mut self) -> Result<M, FrameError> {
        match self.inner.next().await {
            None => Err(FrameError::Closed),
            Some(Err(e)) => Err(FrameError::Io(e)),
            Some(Ok(buf)) => Ok(M::parse_from_bytes(&buf)?),
        }
    }
}

pub struct FrameWriter<S> {
    inner: futures::stream::SplitSink<Framed<S, LengthDelimitedCodec>, Bytes>,
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
}
