//! `floor`: not a chat server, the least one must do to serve the fan-out rows, to state a
//! server's CPU per delivery against. One thread, no async runtime: non-blocking std sockets
//! under one epoll. It accepts WebSocket connections on `/ws/chat/{room}/` (a minimal
//! handshake, enough for this load generator's client), and each text frame a member sends is
//! relayed as it came (`{"message": X}`, the seed's shape, so the send time inside reaches the
//! subscribers unchanged): encoded once as a server frame, appended to the room's pending
//! bytes, and written to every member of the room with one `write` per socket per pass. Nothing
//! is parsed, stored, checked or counted; a member whose socket is full keeps the rest in a
//! buffer of its own, written when the socket has room.
//!
//! Each pass writes everything that arrived since the previous one, so under load passes carry
//! several frames each (as livechat's write pacing does); `--write-interval` spaces passes out.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::BenchError;

#[derive(Debug, Clone, clap::Args)]
pub struct Floor {
    /// Address to listen on (port 0: any free port; the one taken is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8003")]
    pub bind: SocketAddr,
    /// Least time between two passes of writes (0: a pass whenever something arrived).
    #[arg(long, value_parser = crate::parse_duration, default_value = "0ms")]
    pub write_interval: Duration,
}

/// The listener's epoll token; connections are their slot in `Connections` plus one.
const LISTENER: u64 = 0;
/// A member whose unread bytes pass this is closed (a bound, not a policy: the generator reads).
const MOST_BACKLOG: usize = 64 << 20;
/// The longest request head or client frame taken.
const MOST_INPUT: usize = 1 << 20;
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Serves until killed.
pub fn serve(options: &Floor) -> Result<(), BenchError> {
    let listener = TcpListener::bind(options.bind)?;
    listener.set_nonblocking(true)?;
    // std listens with a backlog of 128; the generator opens 256 connections at once.
    // SAFETY: listen on a bound socket; called again, it only raises the backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    eprintln!("floor: listening on http://{}", listener.local_addr()?);
    let mut floor = Server::new(listener, options.write_interval)?;
    floor.run()
}

struct Server {
    listener: TcpListener,
    epoll: Epoll,
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    rooms: Vec<Room>,
    room_index: HashMap<String, usize>,
    /// Rooms with pending frames.
    pending: Vec<usize>,
    /// Connections with bytes their socket did not take.
    backlogged: Vec<usize>,
    write_interval: Duration,
    last_pass: Instant,
    scratch: Vec<u8>,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet taken: the request head, then partial client frames.
    input: Vec<u8>,
    /// The room, once the handshake is done.
    room: Option<usize>,
    /// Bytes the socket did not take yet.
    backlog: Vec<u8>,
}

#[derive(Default)]
struct Room {
    members: Vec<usize>,
    /// Frames to write to every member in the next pass, encoded.
    frames: Vec<u8>,
}

impl Server {
    fn new(listener: TcpListener, write_interval: Duration) -> Result<Self, BenchError> {
        let epoll = Epoll::new()?;
        epoll.add(listener.as_raw_fd(), LISTENER, libc::EPOLLIN)?;
        Ok(Self {
            listener,
            epoll,
            connections: Vec::new(),
            free: Vec::new(),
            rooms: Vec::new(),
            room_index: HashMap::new(),
            pending: Vec::new(),
            backlogged: Vec::new(),
            write_interval,
            last_pass: Instant::now(),
            scratch: vec![0; 64 * 1024],
        })
    }

    fn run(&mut self) -> Result<(), BenchError> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        loop {
            let timeout = self.wait_timeout();
            let ready = self.epoll.wait(&mut events, timeout)?;
            for event in &events[..ready] {
                match event.u64 {
                    LISTENER => self.accept()?,
                    token => {
                        let slot = (token - 1) as usize;
                        if event.events & libc::EPOLLOUT as u32 != 0 {
                            self.flush_backlog(slot);
                        }
                        if event.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32
                            != 0
                        {
                            self.read(slot);
                        }
                    }
                }
            }
            if !self.pending.is_empty() && self.last_pass.elapsed() >= self.write_interval {
                self.pass();
            }
        }
    }

    /// How long epoll may wait: until the next pass when frames are pending, else for input.
    fn wait_timeout(&self) -> i32 {
        if self.pending.is_empty() {
            return -1;
        }
        let left = self.write_interval.saturating_sub(self.last_pass.elapsed());
        left.as_micros().div_ceil(1000) as i32
    }

    fn accept(&mut self) -> Result<(), BenchError> {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                // Out of files, or a connection reset before it was taken: the others go on.
                Err(error) => {
                    eprintln!("floor: accept: {error}");
                    return Ok(());
                }
            };
            // As livechat and the peers: each frame leaves at once, no Nagle delay.
            if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
                continue;
            }
            let slot = self.free.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            self.epoll
                .add(stream.as_raw_fd(), slot as u64 + 1, libc::EPOLLIN)?;
            self.connections[slot] = Some(Connection {
                stream,
                input: Vec::new(),
                room: None,
                backlog: Vec::new(),
            });
        }
    }

    /// Reads what the connection sent: its request head, then frames.
    fn read(&mut self, slot: usize) {
        loop {
            let Some(connection) = self.connections[slot].as_mut() else {
                return;
            };
            match connection.stream.read(&mut self.scratch) {
                Ok(0) => return self.close(slot),
                Ok(read) => connection.input.extend_from_slice(&self.scratch[..read]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(slot),
            }
            if connection.input.len() > MOST_INPUT {
                return self.close(slot);
            }
        }
        let open = self.connections[slot]
            .as_ref()
            .is_some_and(|connection| connection.room.is_some());
        if !open && !self.handshake(slot) {
            return self.close(slot);
        }
        if !self.take_frames(slot) {
            return self.close(slot);
        }
        self.flush_backlog(slot);
    }

    /// Answers a complete request head (101 for `/ws/chat/{room}/`, else 404); false to close.
    fn handshake(&mut self, slot: usize) -> bool {
        let Some(connection) = self.connections[slot].as_mut() else {
            return false;
        };
        let Some(end) = find(&connection.input, b"\r\n\r\n") else {
            return true; // More to come.
        };
        let head = String::from_utf8_lossy(&connection.input[..end]).into_owned();
        connection.input.drain(..end + 4);
        let (Some(room), Some(key)) = (room_of(&head), header(&head, "sec-websocket-key")) else {
            let _ = connection.stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return false;
        };
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        );
        // A fresh socket's buffer takes these few bytes whole.
        if connection.stream.write_all(answer.as_bytes()).is_err() {
            return false;
        }
        let room = match self.room_index.get(room) {
            Some(&room) => room,
            None => {
                self.rooms.push(Room::default());
                self.room_index
                    .insert(room.to_owned(), self.rooms.len() - 1);
                self.rooms.len() - 1
            }
        };
        self.rooms[room].members.push(slot);
        connection.room = Some(room);
        true
    }

    /// Takes every whole client frame: a text frame is relayed to its room, a ping answered, a
    /// close answered and the connection closed (false).
    fn take_frames(&mut self, slot: usize) -> bool {
        let Some(connection) = self.connections[slot].as_mut() else {
            return false;
        };
        let Some(room) = connection.room else {
            return true;
        };
        let mut taken = 0;
        let mut open = true;
        while let Some(frame) = ClientFrame::parse(&connection.input[taken..]) {
            let Some(frame) = frame else {
                open = false; // Not a frame this floor takes (unmasked, fragmented, too long).
                break;
            };
            let payload = &mut connection.input[taken + frame.header..taken + frame.len];
            for (index, byte) in payload.iter_mut().enumerate() {
                *byte ^= frame.mask[index % 4];
            }
            match frame.opcode {
                0x1 => {
                    let frames = &mut self.rooms[room].frames;
                    if frames.is_empty() {
                        self.pending.push(room);
                    }
                    encode(frames, 0x1, payload);
                }
                // Queued behind any frames the socket has not taken; written after this read.
                0x9 => {
                    let mut pong = Vec::new();
                    encode(&mut pong, 0xA, payload);
                    connection.backlog.extend_from_slice(&pong);
                }
                0x8 => {
                    let mut close = Vec::new();
                    encode(&mut close, 0x8, &payload[..payload.len().min(2)]);
                    let _ = connection.stream.write_all(&close);
                    open = false;
                    break;
                }
                _ => {}
            }
            taken += frame.len;
        }
        connection.input.drain(..taken);
        open
    }

    /// Writes each pending room's frames to every member, one write per socket.
    fn pass(&mut self) {
        self.last_pass = Instant::now();
        let mut closing = Vec::new();
        for room in std::mem::take(&mut self.pending) {
            let Room { members, frames } = &mut self.rooms[room];
            for &slot in members.iter() {
                let Some(connection) = self.connections[slot].as_mut() else {
                    continue;
                };
                if !connection.backlog.is_empty() {
                    connection.backlog.extend_from_slice(frames);
                    if connection.backlog.len() > MOST_BACKLOG {
                        closing.push(slot);
                    }
                    continue;
                }
                match write_some(&connection.stream, frames) {
                    Some(written) if written == frames.len() => {}
                    Some(written) => {
                        connection.backlog.extend_from_slice(&frames[written..]);
                        self.backlogged.push(slot);
                    }
                    None => closing.push(slot),
                }
            }
            frames.clear();
        }
        for slot in std::mem::take(&mut self.backlogged) {
            self.flush_backlog(slot);
        }
        for slot in closing {
            self.close(slot);
        }
    }

    /// Writes what the socket takes of a connection's backlog; waits for room (EPOLLOUT) when
    /// some is left.
    fn flush_backlog(&mut self, slot: usize) {
        let Some(connection) = self.connections[slot].as_mut() else {
            return;
        };
        if connection.backlog.is_empty() {
            return;
        }
        let Some(written) = write_some(&connection.stream, &connection.backlog) else {
            return self.close(slot);
        };
        connection.backlog.drain(..written);
        let interest = match connection.backlog.is_empty() {
            true => libc::EPOLLIN,
            false => libc::EPOLLIN | libc::EPOLLOUT,
        };
        if self
            .epoll
            .modify(connection.stream.as_raw_fd(), slot as u64 + 1, interest)
            .is_err()
        {
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(connection) = self.connections[slot].take() else {
            return;
        };
        let _ = self.epoll.delete(connection.stream.as_raw_fd());
        if let Some(room) = connection.room {
            let members = &mut self.rooms[room].members;
            if let Some(position) = members.iter().position(|&member| member == slot) {
                members.swap_remove(position);
            }
        }
        self.backlogged.retain(|&backlogged| backlogged != slot);
        self.free.push(slot);
    }
}

/// Writes what the socket takes now; None when the connection is gone. A plain `write(2)`, as
/// servers do (std's `send` is not counted in `/proc/PID/io`'s `wchar`, which the generator
/// reads for bytes written per delivery).
fn write_some(stream: &TcpStream, bytes: &[u8]) -> Option<usize> {
    loop {
        // SAFETY: an open descriptor and a buffer of `bytes.len()` bytes. SIGPIPE is ignored
        // by Rust's runtime, so a closed peer is an EPIPE error here.
        let written =
            unsafe { libc::write(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if written >= 0 {
            return Some(written as usize);
        }
        match std::io::Error::last_os_error().kind() {
            ErrorKind::WouldBlock => return Some(0),
            ErrorKind::Interrupted => continue,
            _ => return None,
        }
    }
}

/// A client frame's layout; `parse` gives None while incomplete, Some(None) for one not taken.
struct ClientFrame {
    opcode: u8,
    mask: [u8; 4],
    header: usize,
    len: usize,
}

impl ClientFrame {
    fn parse(bytes: &[u8]) -> Option<Option<Self>> {
        let [first, second, ..] = *bytes else {
            return None;
        };
        let (fin, opcode, masked) = (first & 0x80 != 0, first & 0x0F, second & 0x80 != 0);
        if !fin || !masked {
            return Some(None);
        }
        let (length, at) = match second & 0x7F {
            126 => (
                u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
                10,
            ),
            short => (short as usize, 2),
        };
        if length > MOST_INPUT {
            return Some(None);
        }
        let mask: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        let header = at + 4;
        if bytes.len() < header + length {
            return None;
        }
        Some(Some(Self {
            opcode,
            mask,
            header,
            len: header + length,
        }))
    }
}

/// Appends a server frame (FIN, unmasked) holding `payload`.
fn encode(into: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    into.push(0x80 | opcode);
    match payload.len() {
        short @ 0..=125 => into.push(short as u8),
        medium @ 126..=0xFFFF => {
            into.push(126);
            into.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            into.push(127);
            into.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    into.extend_from_slice(payload);
}

/// The room of `GET /ws/chat/{room}/...`, with or without the trailing slash or a query.
fn room_of(head: &str) -> Option<&str> {
    let target = head.lines().next()?.strip_prefix("GET ")?;
    let room = target.strip_prefix("/ws/chat/")?;
    let room = &room[..room.find([' ', '/', '?']).unwrap_or(room.len())];
    let valid = !room.is_empty()
        && room.len() <= 94
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(room)
}

/// A header's value (name compared without case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// RFC 6455's Sec-WebSocket-Accept for a client's key.
fn accept_key(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The one epoll instance the floor waits on.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> std::io::Result<Self> {
        // SAFETY: creates a descriptor owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    fn control(&self, operation: i32, fd: RawFd, token: u64, events: i32) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and an event struct that outlives the call.
        match unsafe { libc::epoll_ctl(self.0, operation, fd, &mut event) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    fn add(&self, fd: RawFd, token: u64, events: i32) -> std::io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    fn modify(&self, fd: RawFd, token: u64, events: i32) -> std::io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    fn delete(&self, fd: RawFd) -> std::io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout` ms (-1: no limit); how many events were filled in.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: i32) -> std::io::Result<usize> {
        // SAFETY: the buffer holds `events.len()` entries.
        let ready =
            unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout) };
        match ready {
            ready if ready >= 0 => Ok(ready as usize),
            _ => match std::io::Error::last_os_error() {
                error if error.kind() == ErrorKind::Interrupted => Ok(0),
                error => Err(error),
            },
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_room_and_key_of_a_handshake() {
        let head = "GET /ws/chat/bench3/?meta=1 HTTP/1.1\r\nHost: x\r\nsec-websocket-key: \
                    dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(room_of(head), Some("bench3"));
        assert_eq!(room_of("GET /ws/chat/r HTTP/1.1"), Some("r"));
        assert_eq!(room_of("GET /ws/chat/a-b/ HTTP/1.1"), None);
        assert_eq!(room_of("GET /other/ HTTP/1.1"), None);
        let key = header(head, "Sec-WebSocket-Key").unwrap();
        // RFC 6455, section 1.3.
        assert_eq!(accept_key(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn parses_masked_frames_and_encodes_server_frames() {
        let mut frame = vec![0x81, 0x80 | 3, 1, 2, 3, 4];
        frame.extend(b"abc".iter().zip([1, 2, 3]).map(|(b, m)| b ^ m));
        assert!(ClientFrame::parse(&frame[..5]).is_none(), "incomplete");
        let parsed = ClientFrame::parse(&frame).unwrap().unwrap();
        assert_eq!((parsed.opcode, parsed.header, parsed.len), (1, 6, 9));
        assert!(
            ClientFrame::parse(&[0x81, 3, b'a', b'b', b'c'])
                .unwrap()
                .is_none(),
            "unmasked"
        );
        let mut out = Vec::new();
        encode(&mut out, 1, &[b'x'; 200]);
        assert_eq!(&out[..4], &[0x81, 126, 0, 200]);
        assert_eq!(out.len(), 204);
    }
}
