//! Opening connections: WebSocket clients and plain TCP, spread over source addresses.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, WebSocketStream};

use crate::BenchError;
use crate::deflate::{self, Reader};

pub type Socket = WebSocketStream<TcpStream>;

/// Where to connect, and from which local addresses (round-robin), since one source address
/// can open only about 28,000 connections to one port.
pub struct Target {
    pub server: SocketAddr,
    pub host: String,
    pub sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    /// Readers (`reader`) offer permessage-deflate (`--deflate`).
    pub deflate: bool,
}

impl Target {
    /// `base` is `http://host:port` (or `ws://`); only IP literals and `localhost` are resolved.
    pub fn parse(base: &str, sources: Vec<IpAddr>, deflate: bool) -> Result<Self, BenchError> {
        let authority = base
            .split("://")
            .nth(1)
            .unwrap_or(base)
            .trim_end_matches('/');
        let server = authority
            .replace("localhost", "127.0.0.1")
            .parse::<SocketAddr>()
            .map_err(|_| BenchError::Url(base.to_owned()))?;
        Ok(Self {
            server,
            host: authority.to_owned(),
            sources,
            next_source: AtomicUsize::new(0),
            deflate,
        })
    }

    pub async fn tcp(&self) -> Result<TcpStream, BenchError> {
        let socket = if self.server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !self.sources.is_empty() {
            let index = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            bind_address_no_port(&socket);
            socket.bind(SocketAddr::new(self.sources[index], 0))?;
        }
        let stream = socket.connect(self.server).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a WebSocket on `path` (already filled in with the room).
    pub async fn websocket(&self, path: &str) -> Result<Socket, BenchError> {
        let stream = self.tcp().await?;
        let uri = format!("ws://{}{}", self.host, path);
        let (socket, _) = ClientBuilder::new()
            .uri(&uri)
            .map_err(|_| BenchError::Url(uri.clone()))?
            .connect_on(stream)
            .await?;
        Ok(socket)
    }

    /// Opens a connection that only reads (a subscriber, an idle connection): a plain WebSocket,
    /// or with `deflate` one that agreed to permessage-deflate.
    pub async fn reader(&self, path: &str) -> Result<Reader, BenchError> {
        if self.deflate {
            return deflate::connect(self.tcp().await?, &self.host, path).await;
        }
        Ok(Box::pin(self.websocket(path).await?))
    }
}

/// The servers a run connects to: one, or the nodes of one deployment (behind the same Redis),
/// which connection number `n` reaches round-robin.
pub struct Nodes {
    targets: Vec<Arc<Target>>,
}

impl Nodes {
    pub fn parse(urls: &[String], sources: &[IpAddr], deflate: bool) -> Result<Self, BenchError> {
        let targets = urls
            .iter()
            .map(|url| Target::parse(url, sources.to_vec(), deflate).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(BenchError::Url(String::new()));
        }
        Ok(Self { targets })
    }

    /// The server that connection number `n` goes to.
    pub fn for_connection(&self, n: usize) -> &Arc<Target> {
        &self.targets[n % self.targets.len()]
    }

    /// The one server of a scenario that does not spread over nodes.
    pub fn only(&self, scenario: &'static str) -> Result<Arc<Target>, BenchError> {
        match self.targets.as_slice() {
            [target] => Ok(target.clone()),
            _ => Err(BenchError::CouldNotRun(
                scenario,
                "it takes one --url (fanout and idle spread over several)".into(),
            )),
        }
    }
}

/// Leaves the choice of the local port to `connect` (IP_BIND_ADDRESS_NO_PORT). Otherwise `bind`
/// to port 0 picks a port no other socket holds, TIME_WAIT ones included: with tens of thousands of
/// those on the machine (after a run of handshakes whose client closes first), each bind scans
/// for long, and handshakes/s measure the scan rather than the server. `connect` needs only the
/// whole address pair to be unique. Best effort: without it, bind works as before.
fn bind_address_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and an int option of the size given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Fills `{room}` in a path template such as `/ws/chat/{room}/`.
pub fn room_path(template: &str, room: &str) -> String {
    template.replace("{room}", room)
}
