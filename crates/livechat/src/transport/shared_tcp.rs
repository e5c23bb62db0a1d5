//! A plain TCP connection shared between its WebSocket task and its outbound queue: the queue
//! writes delivered frames straight into the socket when nothing else waits to be written
//! (`crate::outbound`), the task reads, and writes what the queue could not. The socket itself
//! is a standard non-blocking `TcpStream` in an `Arc`; only the task waits for readiness, through
//! a registration with the runtime's poller that it alone holds (so the socket's wakers are the
//! task's). The registration is made the first time the task has to wait (a read or a write
//! would block), not before: a connection that parks (`crate::transport::parking`) as soon as
//! it opens, or that wakes up only to answer and close, never makes one.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

pub enum SharedTcp {
    /// Not registered: calls are tried as they come.
    Bare(Arc<TcpStream>),
    /// Registered with the runtime's poller, for the task to wait on.
    Watched(AsyncFd<Arc<TcpStream>>),
}

impl SharedTcp {
    /// A tokio stream as accepted, taken out of the runtime's poller.
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Self> {
        Ok(Self::Bare(Arc::new(stream.into_std()?)))
    }

    /// The stream, for the outbound queue to write into.
    pub fn stream(&self) -> &Arc<TcpStream> {
        match self {
            Self::Bare(stream) => stream,
            Self::Watched(registration) => registration.get_ref(),
        }
    }

    /// Whether it is registered with the runtime's poller.
    pub fn is_watched(&self) -> bool {
        matches!(self, Self::Watched(_))
    }

    /// The stream without its registration (a parked connection keeps only this).
    pub fn unregister(self) -> Arc<TcpStream> {
        match self {
            Self::Bare(stream) => stream,
            Self::Watched(registration) => registration.into_inner(),
        }
    }

    /// Runs a non-blocking call: at once while it is not registered, and once the socket is
    /// ready for it after that (registering it the first time the call would block).
    fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut call: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        if let Self::Bare(stream) = self {
            match call(stream) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            // SAFETY: the registration owns a reference to the stream, which keeps the
            // descriptor open, and the same, until the registration is dropped or undone
            // (`unregister`).
            let registration = unsafe { AsyncFd::register(stream.clone()) }?;
            *self = Self::Watched(registration);
        }
        let Self::Watched(registration) = self else {
            unreachable!("registered just above");
        };
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
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = ready!(
            self.get_mut()
                .poll_io(cx, Interest::READABLE, |mut stream| {
                    stream.read(buf.initialize_unfilled())
                })
        )?;
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
        self.get_mut()
            .poll_io(cx, Interest::WRITABLE, |mut stream| stream.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, Interest::WRITABLE, |mut stream| {
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
