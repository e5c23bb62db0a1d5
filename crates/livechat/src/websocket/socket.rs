//! A WebSocket connection's I/O. Reading uses a buffer that exists only while bytes are pending
//! (an idle connection holds none); writing sends the queued frames, already encoded and shared
//! with other recipients, in one vectored write per wake-up, with no copy in between.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::frame::{Decoder, Incoming, ProtocolError};

/// Bytes asked of the socket per read when nothing is pending.
const READ_CHUNK: usize = 4096;
/// Frames handed to one vectored write (Linux takes up to 1024; past 64 the gain is nil).
const MAX_SLICES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub struct WebSocket<Io> {
    io: Io,
    read: BytesMut,
    decoder: Decoder,
    /// Encoded frames waiting to be written; the first may be partly written already.
    outbox: VecDeque<Bytes>,
    written: usize,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> WebSocket<Io> {
    /// `max_message`: the largest message accepted from the client (larger: close 1009).
    pub fn new(io: Io, max_message: usize) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            decoder: Decoder::new(max_message),
            outbox: VecDeque::new(),
            written: 0,
        }
    }

    /// The connection it runs on.
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// Nothing read and not yet acted on, nothing to write, no message under way: all that is
    /// left is the connection and the decoder's settings (`into_parts`).
    pub fn is_idle(&self) -> bool {
        self.read.is_empty() && self.outbox.is_empty() && self.decoder.between_messages()
    }

    /// The connection and the decoder, for an idle socket to be kept in less room
    /// (`from_parts` makes it again); buffers are dropped (empty when `is_idle`).
    pub fn into_parts(self) -> (Io, Decoder) {
        (self.io, self.decoder)
    }

    pub fn from_parts(io: Io, decoder: Decoder) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            decoder,
            outbox: VecDeque::new(),
            written: 0,
        }
    }

    /// Bytes the client sent before the socket was handed over (read along with the handshake).
    pub fn already_read(&mut self, bytes: &[u8]) {
        self.read.extend_from_slice(bytes);
    }

    /// permessage-deflate was agreed: compressed messages from the client are inflated. Frames
    /// to send come compressed already, from `frame::deflated` (shared by a room's members).
    pub fn accept_compressed(&mut self) {
        self.decoder.accept_compressed();
    }

    /// Binary messages keep their payload from now on (the chat protocol refuses them unread).
    pub fn keep_binary(&mut self) {
        self.decoder.keep_binary();
    }

    /// The client's next message or control frame; `None` once it closed the TCP connection.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Incoming>, ReadError>> {
        loop {
            if let Some(incoming) = self.decoder.decode(&mut self.read)? {
                if self.read.is_empty() {
                    // Give the buffer back: an idle connection should hold no read buffer.
                    self.read = BytesMut::new();
                }
                return Poll::Ready(Ok(Some(incoming)));
            }
            if ready!(self.poll_read(cx))? == 0 {
                return Poll::Ready(Ok(None));
            }
        }
    }

    /// Reads more bytes into the read buffer. With nothing pending, it reads into the stack and
    /// allocates only for what arrived, so that a connection waiting for its client holds no
    /// buffer at all.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.read.is_empty() {
            self.read.reserve(READ_CHUNK);
            return poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut filled = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut filled))?;
        self.read.extend_from_slice(filled.filled());
        Poll::Ready(Ok(filled.filled().len()))
    }

    /// Reads and drops whatever the client still sends until it closes the connection.
    pub fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.read.clear();
        loop {
            self.read.reserve(READ_CHUNK);
            if ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))? == 0 {
                return Poll::Ready(Ok(()));
            }
            self.read.clear();
        }
    }

    /// Frames queued and not yet fully written.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.iter().map(Bytes::len).sum::<usize>() - self.written
    }

    /// Queues an encoded frame behind the others.
    pub fn queue(&mut self, frame: Bytes) {
        self.outbox.push_back(frame);
    }

    /// The outbox itself, when it is empty, for a producer to swap its frames into.
    pub fn empty_outbox(&mut self) -> Option<&mut VecDeque<Bytes>> {
        self.outbox.is_empty().then_some(&mut self.outbox)
    }

    /// Writes queued frames; ready once all are written, pending while the socket is full.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outbox.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(&self.outbox) {
                let start = if count == 0 { self.written } else { 0 };
                *slot = IoSlice::new(&frame[start..]);
                count += 1;
            }
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn advance(&mut self, mut written: usize) {
        while let Some(front) = self.outbox.front() {
            let left = front.len() - self.written;
            if written < left {
                self.written += written;
                return;
            }
            written -= left;
            self.written = 0;
            self.outbox.pop_front();
        }
    }

    /// Writes everything queued, then closes our side of the TCP connection.
    pub async fn finish(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(cx)).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut self.io).await
    }

    /// Reads frames until the client's close frame or the end of the connection, dropping the rest.
    pub async fn await_close(&mut self) {
        while let Ok(Some(incoming)) = std::future::poll_fn(|cx| self.poll_next(cx)).await {
            if matches!(incoming, Incoming::Close(_)) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_queued_frames_whole_through_a_small_pipe() {
        let (server, mut client) = tokio::io::duplex(7);
        let mut socket = WebSocket::new(server, 1024);
        let frames: Vec<Bytes> = (0..100)
            .map(|n| frame::text(&[format!("{n}").as_bytes()]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for frame in frames {
            socket.queue(frame);
        }
        let reader = tokio::spawn(async move {
            let mut got = vec![0; expected.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected);
        });
        poll_fn(|cx| socket.poll_write(cx)).await.unwrap();
        assert_eq!(socket.queued(), 0);
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn reads_messages_and_holds_no_buffer_between_them() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut socket = WebSocket::new(server, 1024);
        // Masked with a zero key, so the payload reads as sent.
        client.write_all(b"\x81\x82\0\0\0\0hi").await.unwrap();
        let next = poll_fn(|cx| socket.poll_next(cx)).await.unwrap();
        assert_eq!(next, Some(Incoming::Text(Bytes::from_static(b"hi"))));
        assert_eq!(socket.read.capacity(), 0);
        // Waiting for more allocates nothing either.
        assert!(
            poll_fn(|cx| Poll::Ready(socket.poll_next(cx)))
                .await
                .is_pending()
        );
        assert_eq!(socket.read.capacity(), 0);
        drop(client);
        assert_eq!(poll_fn(|cx| socket.poll_next(cx)).await.unwrap(), None);
    }
}
