//! A plain TCP connection shared between its WebSocket task and its outbound queue: the queue
//! writes delivered frames straight into the socket when nothing else waits to be written
//! (`crate::outbound`), the task reads, and writes what the queue could not. Both sides use the
//! non-blocking `try_*` calls on one `Arc<TcpStream>`; only the task waits for readiness, so the
//! socket's wakers are the task's alone.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    pub fn new(stream: Arc<TcpStream>) -> Self {
        Self(stream)
    }

    /// The stream, for the outbound queue to write into.
    pub fn stream(&self) -> &Arc<TcpStream> {
        &self.0
    }
}

/// Runs a non-blocking call once the socket is ready for it, again while it would block.
fn poll_io<T>(
    cx: &mut Context<'_>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut call: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(ready(cx))?;
        match call() {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.0;
        let read = ready!(poll_io(
            cx,
            |cx| stream.poll_read_ready(cx),
            || stream.try_read(buf.initialize_unfilled()),
        ))?;
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = &self.0;
        poll_io(
            cx,
            |cx| stream.poll_write_ready(cx),
            || stream.try_write(buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = &self.0;
        poll_io(
            cx,
            |cx| stream.poll_write_ready(cx),
            || stream.try_write_vectored(bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Closes the sending side (what `TcpStream`'s own shutdown does).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: the descriptor is open: the stream it belongs to is alive for this call.
        let done = unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(match done {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        })
    }
}
