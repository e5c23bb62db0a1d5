//! Parked connections: an idle plain-TCP WebSocket without a task and without a registration
//! with the runtime's poller, the two largest things an idle connection held (a task cell of
//! 512 bytes, 128-byte aligned; tokio's `ScheduledIo`, 256). A parked connection is its state in
//! one allocation, here, its socket watched by one epoll set of our own, and its outbound queue
//! (which still writes deliveries into the socket directly).
//!
//! A connection parks when it waits with nothing under way and was asked to (`Outbound::park`):
//! a new one as soon as its first frames are out, a running one once the keepalive sweep finds
//! its client quiet; it never parks mid-message, with publishes waiting for the store or a hook,
//! or with frames to write. It gets a task again (spawned on the runtime, counted by the
//! connection tracker as before) when:
//! - its client sends anything, or hangs up (the epoll set, read by `run`);
//! - anything would have woken its task: frames queued (the socket was full), a ping the socket
//!   did not take, a close (kicked, shut down, token expired, unresponsive): its queue holds a
//!   waker (`Unparker`) that has `run` give it back its task instead.
//!
//! TLS connections keep their task (their socket is hyper's), as do connections with a renewal
//! of the connect hook's answer due (a timer of their own).
//!
//! What it holds: per parked connection its state (`ParkedConnection`, 248 bytes, asserted), a
//! slot (24 bytes) and its waker (32); the slots are kept for reuse, as many as were ever parked
//! at once (bounded by the connection caps). Each parked connection holds a connection-tracker
//! token, so shutdown still waits for it, and when `run` ends (the server stops) every parked
//! connection gets its task back, and none parks again.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};

use metrics::Gauge;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::outbound::Outbound;
use crate::throttle::Throttle;

/// A connection's state while it is parked; it knows how to run again.
pub trait Parked: Send {
    /// Its outbound queue.
    fn outbound(&self) -> &Outbound;
    /// Its socket, watched while it is parked.
    fn stream(&self) -> &TcpStream;
    /// Spawns its task again (on `runtime`).
    fn resume(self: Box<Self>, runtime: &tokio::runtime::Handle);
}

pub struct Parking {
    epoll: Arc<OwnedFd>,
    slots: Mutex<Slots>,
    /// Tokens were queued in `Slots::woken`.
    woken: Notify,
    runtime: tokio::runtime::Handle,
    parked_gauge: Gauge,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    vacant: Vec<u32>,
    /// Tokens whose wakers were called, for `run` to unpark (at most one per parked connection
    /// in a row: a waker is taken when it is called).
    woken: Vec<u64>,
    /// The server stops: nothing parks any more.
    closed: bool,
}

/// A parked connection's place; its token is the slot's index and generation, so a waker or an
/// event left over from an earlier occupant finds nothing.
#[derive(Default)]
struct Slot {
    generation: u32,
    parked: Option<Box<dyn Parked>>,
}

const _: () = assert!(std::mem::size_of::<Slot>() <= 24);

/// Events taken from the epoll set per call.
const EVENTS_PER_WAIT: usize = 256;

/// Lines about connections that could not park (the epoll set refused them): at most 10 a
/// minute, the rest counted in the next line let through.
static REFUSAL_LINES: Throttle = Throttle::new(std::time::Duration::from_secs(60), 10);

/// Why a connection could not park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Something came for it meanwhile: its task was woken for it; it may park later.
    Busy,
    /// The parking cannot take it (the server stops, or the epoll set refused it): it keeps its
    /// task for good, rather than being asked again at every sweep.
    Unavailable,
}

impl Parking {
    /// A parking on the current runtime.
    pub fn new(parked_gauge: Gauge) -> io::Result<Arc<Self>> {
        // SAFETY: a plain system call; its result is checked before use.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Self {
            // SAFETY: the descriptor was just created and is owned by nothing else.
            epoll: Arc::new(unsafe { OwnedFd::from_raw_fd(epoll) }),
            slots: Mutex::default(),
            woken: Notify::new(),
            runtime: tokio::runtime::Handle::current(),
            parked_gauge,
        }))
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Parks `connection`, or gives it back when it cannot park after all, saying why.
    pub fn park<P: Parked + 'static>(
        self: &Arc<Self>,
        connection: Box<P>,
    ) -> Result<(), (Box<P>, Refused)> {
        let mut slots = self.slots();
        if slots.closed {
            return Err((connection, Refused::Unavailable));
        }
        let index = match slots.vacant.last() {
            Some(&index) => index,
            None => match u32::try_from(slots.entries.len()) {
                Ok(index) => {
                    slots.entries.push(Slot::default());
                    slots.vacant.push(index);
                    index
                }
                Err(_) => return Err((connection, Refused::Unavailable)),
            },
        };
        let token = token(index, slots.entries[index as usize].generation);
        let fd = connection.stream().as_raw_fd();
        // Level-triggered and one-shot: bytes that came before the socket is watched are
        // reported at once, and one event is all a parked connection needs. A socket parked
        // before is still in the set (disarmed, or armed with a token that finds nothing now):
        // a socket leaves the set when it closes, not when its connection runs again.
        let watch = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        let watched = match self.control(libc::EPOLL_CTL_ADD, fd, watch, token) {
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {
                self.control(libc::EPOLL_CTL_MOD, fd, watch, token)
            }
            added => added,
        };
        if let Err(error) = watched {
            if let Some(held_back) = REFUSAL_LINES.allow() {
                tracing::warn!(%error, not_logged = held_back, "a connection could not park: it keeps its task");
            }
            return Err((connection, Refused::Unavailable));
        }
        let unparker = Waker::from(Arc::new(Unparker {
            parking: Arc::downgrade(self),
            token,
        }));
        if !connection.outbound().park(unparker) {
            let _ = self.control(libc::EPOLL_CTL_DEL, fd, 0, 0);
            // An event already taken for this token must not find the next connection parked here.
            let slot = &mut slots.entries[index as usize];
            slot.generation = slot.generation.wrapping_add(1);
            return Err((connection, Refused::Busy));
        }
        slots.vacant.pop();
        slots.entries[index as usize].parked = Some(connection);
        self.parked_gauge.increment(1.0);
        Ok(())
    }

    /// Something came for the connection parked under `token`: `run` gives it its task back.
    /// (Not here: a waker is called under the caller's locks, a hub shard's among them, and
    /// spawning there could drop the connection in place on a runtime that is stopping.)
    fn wake(&self, token: u64) {
        let mut slots = self.slots();
        if slots.closed {
            return;
        }
        let first = slots.woken.is_empty();
        slots.woken.push(token);
        drop(slots);
        if first {
            self.woken.notify_one();
        }
    }

    /// Gives the connection parked under `token` its task back (nothing if it has it already).
    fn unpark(&self, token: u64) {
        let connection = {
            let mut slots = self.slots();
            let (index, generation) = ((token & 0xffff_ffff) as u32, (token >> 32) as u32);
            let Some(slot) = slots.entries.get_mut(index as usize) else {
                return;
            };
            if slot.generation != generation || slot.parked.is_none() {
                return;
            }
            let connection = slot.parked.take();
            slot.generation = slot.generation.wrapping_add(1);
            slots.vacant.push(index);
            connection
        };
        if let Some(connection) = connection {
            self.resume(connection);
        }
    }

    fn resume(&self, connection: Box<dyn Parked>) {
        self.parked_gauge.decrement(1.0);
        connection.outbound().unparked();
        connection.resume(&self.runtime);
    }

    /// Nothing parks from now on, and every parked connection gets its task back.
    fn close(&self) {
        let parked: Vec<Box<dyn Parked>> = {
            let mut slots = self.slots();
            slots.closed = true;
            slots.woken = Vec::new();
            slots
                .entries
                .iter_mut()
                .filter_map(|slot| slot.parked.take())
                .collect()
        };
        for connection in parked {
            self.resume(connection);
        }
    }

    fn control(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open (the stream's owner is alive for this call), and the
        // event is a valid, initialised structure.
        match unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Watches the parked connections' sockets until the server stops, giving each its task
    /// back when its client sends or hangs up; then unparks them all.
    pub async fn run(self: Arc<Self>) {
        let _unpark_all = CloseOnDrop(self.clone());
        // SAFETY: the registration owns a reference to the epoll descriptor, which keeps it
        // open, and the same, for as long as the registration lives.
        let epoll = match unsafe {
            AsyncFd::register_with_interest(self.epoll.clone(), Interest::READABLE)
        } {
            Ok(epoll) => epoll,
            Err(refused) => {
                let error = io::Error::from(refused);
                tracing::error!(%error, "cannot watch parked connections: none will park");
                return;
            }
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        let mut woken = Vec::new();
        loop {
            let mut ready = tokio::select! {
                ready = epoll.readable() => match ready {
                    Ok(ready) => ready,
                    Err(error) => {
                        tracing::error!(%error, "parked connections' poller failed: unparking them");
                        return;
                    }
                },
                () = self.woken.notified() => {
                    std::mem::swap(&mut self.slots().woken, &mut woken);
                    for token in woken.drain(..) {
                        self.unpark(token);
                    }
                    continue;
                }
            };
            // SAFETY: the buffer holds EVENTS_PER_WAIT events; a zero timeout never blocks.
            let count = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_WAIT as libc::c_int,
                    0,
                )
            };
            let Ok(count) = usize::try_from(count) else {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(%error, "parked connections' poller failed: unparking them");
                return;
            };
            for event in &events[..count] {
                self.unpark(event.u64);
            }
            if count < EVENTS_PER_WAIT {
                ready.clear_ready();
            }
        }
    }
}

fn token(index: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(index)
}

/// A parked connection's waker, in its outbound queue: what would have woken its task unparks it.
struct Unparker {
    parking: Weak<Parking>,
    token: u64,
}

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(parking) = self.parking.upgrade() {
            parking.wake(self.token);
        }
    }
}

/// Ends the parking with the task that watches it (the server stops, or it failed).
struct CloseOnDrop(Arc<Parking>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
