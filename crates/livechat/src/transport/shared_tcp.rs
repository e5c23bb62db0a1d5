//! A plain TCP connection shared between its WebSocket task and its outbound queue: the queue
//! writes delivered frames straight into the socket when nothing else waits to be written
//! (`crate::outbound`), the task reads, and writes what the queue could not. The socket itself
//! is a standard non-blocking `TcpStream` in an `Arc`; only the task waits for readiness, through
//! a registration with the runtime that it alone holds (so the socket's wakers are the task's),
//! and that a parked connection gives up (`crate::transport::parking`): an idle connection is
//! then its socket without any registration.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The stream, and its registration with the runtime's poller (held by the task alone).
pub struct SharedTcp(AsyncFd<Arc<TcpStream>>);

impl SharedTcp {
    /// Registers `stream` (non-blocking) with the runtime's poller, for the task to wait on.
    pub fn register(stream: Arc<TcpStream>) -> io::Result<Self> {
        // SAFETY: the registration owns a reference to the stream, which keeps the descriptor
        // open, and the same, until the registration is dropped or undone (`unregister`).
        let registration = unsafe { AsyncFd::register(stream) }?;
        Ok(Self(registration))
    }

    /// A tokio stream as accepted, taken out of the runtime and registered again as shared.
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Self> {
        Self::register(Arc::new(stream.into_std()?))
    }

    /// The stream, for the outbound queue to write into.
    pub fn stream(&self) -> &Arc<TcpStream> {
        self.0.get_ref()
    }

    /// The stream without its registration (a parked connection keeps only this).
    pub fn unregister(self) -> Arc<TcpStream> {
        self.0.into_inner()
    }
}

/// Runs a non-blocking call once the socket is ready for it, again while it would block.
fn poll_io<T>(
    cx: &mut Context<'_>,
    registration: &AsyncFd<Arc<TcpStream>>,
    interest: Interest,
    mut call: impl FnMut(&TcpStream) -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        let mut guard = match interest {
            Interest::READABLE => ready!(registration.poll_read_ready(cx))?,
            _ => ready!(registration.poll_write_ready(cx))?,
        };
        if let Ok(done) = guard.try_io(|stream| call(stream.get_ref())) {
            return Poll::Ready(done);
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = ready!(poll_io(cx, &self.0, Interest::READABLE, |mut stream| {
            stream.read(buf.initialize_unfilled())
        }))?;
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
        poll_io(cx, &self.0, Interest::WRITABLE, |mut stream| {
            stream.write(buf)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_io(cx, &self.0, Interest::WRITABLE, |mut stream| {
            stream.write_vectored(bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Closes the sending side.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream().shutdown(std::net::Shutdown::Write))
    }
}
