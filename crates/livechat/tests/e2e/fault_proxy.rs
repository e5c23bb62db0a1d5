//! Test support: a TCP proxy between a node and Redis that breaks the link the ways networks do.
//! It adds latency to every chunk (chunks in flight overlap, as on a long link), stalls
//! connections without closing them (what a dead peer, a lost NAT entry or a firewall dropping
//! packets look like), and cuts a connection in the middle of a reply.
//!
//! A stall black-holes every connection open at the time for good: nothing more is forwarded
//! either way and nothing is closed, so only a timeout of the node's own can notice. New
//! connections made during the stall are accepted and held, unanswered, until `release`; after
//! it they pass again, as a network that healed would let a new connection through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    accepting: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    latency: Mutex<Duration>,
    /// Each open connection's "black-holed" flag.
    open: Mutex<Vec<Arc<AtomicBool>>>,
    /// Whether new connections are held.
    holding: Mutex<Option<watch::Sender<bool>>>,
    cut_next: AtomicBool,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

impl FaultProxy {
    /// Listens on a free port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared::default());
        let accepting = tokio::spawn(accept(listener, upstream, shared.clone()));
        FaultProxy {
            port,
            shared,
            accepting,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every chunk waits this long before it is passed on (both ways).
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency.lock().unwrap() = latency;
    }

    /// Black-holes every open connection for good and holds new ones until `release`.
    pub fn stall(&self) {
        let (hold, _) = watch::channel(true);
        *self.shared.holding.lock().unwrap() = Some(hold);
        for dead in self.shared.open.lock().unwrap().drain(..) {
            dead.store(true, Ordering::Release);
        }
    }

    /// New connections pass again (the black-holed ones stay so).
    pub fn release(&self) {
        if let Some(hold) = self.shared.holding.lock().unwrap().take() {
            let _ = hold.send(false);
        }
    }

    /// The next chunk Redis sends is cut in half: its first half is passed on, then both sides
    /// of that connection are closed.
    pub fn cut_next_reply(&self) {
        self.shared.cut_next.store(true, Ordering::Release);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Acquire)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, upstream: u16, shared: Arc<Shared>) {
    // Owns every connection's tasks: they end when the proxy does.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.accepted.fetch_add(1, Ordering::AcqRel);
                connections.spawn(connection(client, upstream, shared.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn connection(client: TcpStream, upstream: u16, shared: Arc<Shared>) {
    let held = shared
        .holding
        .lock()
        .unwrap()
        .as_ref()
        .map(|hold| hold.subscribe());
    if let Some(mut held) = held {
        // Accepted, never answered, until the stall is over.
        if held.wait_for(|holding| !holding).await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let dead = Arc::new(AtomicBool::new(false));
    shared.open.lock().unwrap().push(dead.clone());
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let requests = pump(
        client_read,
        server_write,
        shared.clone(),
        dead.clone(),
        false,
    );
    let replies = pump(server_read, client_write, shared.clone(), dead, true);
    // Whichever side ends (or is cut) ends the connection: both halves are dropped.
    tokio::select! {
        _ = requests => {}
        _ = replies => {}
    }
}

/// Passes chunks from `from` to `to`, each `latency` after it was read (chunks in flight
/// overlap, as on a long link), until either side ends, the connection is cut, or forever
/// silent once black-holed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    dead: Arc<AtomicBool>,
    replies: bool,
) {
    let (chunks, mut in_flight) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            if dead.load(Ordering::Acquire) {
                break;
            }
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let due = Instant::now() + *shared.latency.lock().unwrap();
            if chunks.send((due, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
        drop(chunks);
        // The writing side ends the pump, once it has passed on what was read.
        std::future::pending::<()>().await
    };
    let writing = async {
        while let Some((due, chunk)) = in_flight.recv().await {
            tokio::time::sleep_until(due).await;
            if dead.load(Ordering::Acquire) {
                return std::future::pending().await;
            }
            if replies && chunk.len() > 1 && shared.cut_next.swap(false, Ordering::AcqRel) {
                let _ = to.write_all(&chunk[..chunk.len() / 2]).await;
                let _ = to.flush().await;
                shared.cuts.fetch_add(1, Ordering::AcqRel);
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        if dead.load(Ordering::Acquire) {
            std::future::pending().await
        }
    };
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
}
