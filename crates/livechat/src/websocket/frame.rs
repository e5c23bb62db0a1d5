//! RFC 6455 framing, server side. Frames we send are unmasked, so each is encoded once, header
//! included, and the same bytes go to every recipient. Frames clients send are decoded with every
//! rule a server must enforce: masking, reserved bits, known opcodes, control-frame limits,
//! fragmentation, the message size limit, and UTF-8 in text messages and close reasons. With
//! permessage-deflate agreed (`deflate`), a message whose first frame has RSV1 set is inflated,
//! bounded by the same size limit; the compressed variant of a frame we send is built from it
//! by `deflated`. The server builds its frames through `crate::outgoing::OutgoingFrame`, the one
//! caller of the builders here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::deflate::InflateError;

const FIN: u8 = 0x80;
const RESERVED_BITS: u8 = 0x70;
/// The reserved bit permessage-deflate takes: the message is compressed.
const RSV1: u8 = 0x40;
const MASKED: u8 = 0x80;
/// Control frames (close, ping, pong) carry at most this much payload.
const MAX_CONTROL_PAYLOAD: usize = 125;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn parse(bits: u8) -> Option<Self> {
        Some(match bits {
            CONTINUATION => Self::Continuation,
            TEXT => Self::Text,
            BINARY => Self::Binary,
            CLOSE => Self::Close,
            PING => Self::Ping,
            PONG => Self::Pong,
            _ => return None,
        })
    }
}

/// A close status code (RFC 6455 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: Self = Self(1000);
    pub const GOING_AWAY: Self = Self(1001);
    pub const PROTOCOL_ERROR: Self = Self(1002);
    pub const INVALID_PAYLOAD: Self = Self(1007);
    pub const POLICY_VIOLATION: Self = Self(1008);
    pub const TOO_BIG: Self = Self(1009);

    /// Whether a peer may send this code in a close frame.
    fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message, UTF-8 checked.
    Text(Bytes),
    /// A whole binary message; its payload is empty unless the decoder keeps binary payloads
    /// (the chat protocol has no use for them).
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its status code if it gave one.
    Close(Option<CloseCode>),
}

/// The client broke the protocol: the connection is closed with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProtocolError {
    pub code: CloseCode,
    pub reason: &'static str,
}

fn protocol_error(reason: &'static str) -> ProtocolError {
    ProtocolError {
        code: CloseCode::PROTOCOL_ERROR,
        reason,
    }
}

/// A text frame whose payload is the concatenation of `parts`, in one allocation.
pub fn text(parts: &[&[u8]]) -> Bytes {
    encode(FIN | TEXT, parts)
}

pub fn binary(parts: &[&[u8]]) -> Bytes {
    encode(FIN | BINARY, parts)
}

pub fn pong(payload: &[u8]) -> Bytes {
    encode(FIN | PONG, &[payload])
}

pub fn ping(payload: &[u8]) -> Bytes {
    encode(FIN | PING, &[payload])
}

/// A close frame; the reason is cut (at a character boundary) to fit a control frame.
pub fn close(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode(
        FIN | CLOSE,
        &[&code.0.to_be_bytes(), &reason.as_bytes()[..end]],
    )
}

/// What a frame this server encoded carries (for a transport that sends its payloads
/// otherwise: the event stream).
#[derive(Debug, PartialEq, Eq)]
pub enum Encoded {
    Text(Bytes),
    Ping,
    /// Anything else (close, pong, binary, or a frame with reserved bits set).
    Other,
}

/// Reads back a frame `encode` made (unmasked, whole); the payload shares the frame's bytes.
pub fn encoded(frame: &Bytes) -> Encoded {
    match payload_start(frame) {
        Some(start) if frame[0] & RESERVED_BITS == 0 => match frame[0] & 0x0F {
            TEXT => Encoded::Text(frame.slice(start..)),
            PING => Encoded::Ping,
            _ => Encoded::Other,
        },
        _ => Encoded::Other,
    }
}

/// Where the payload of a whole frame `encode` made starts; `None` if it is not one.
fn payload_start(frame: &[u8]) -> Option<usize> {
    let (start, len) = match *frame.get(1)? & 0x7F {
        126 if frame.len() >= 4 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
        127 if frame.len() >= 10 => {
            let mut len = [0; 8];
            len.copy_from_slice(&frame[2..10]);
            (10, u64::from_be_bytes(len) as usize)
        }
        126 | 127 => return None,
        len => (2, len as usize),
    };
    (frame.len() == start + len).then_some(start)
}

/// The same message as `frame` (a text or binary frame `encode` made) compressed for a client
/// that agreed to permessage-deflate, with a window of `window_bits`: RSV1 set, the payload
/// deflated on its own. `None` when it goes as it is: a payload under `min_bytes` (never
/// empty), or a control frame. Above the minimum it is compressed even when that does not
/// shrink it (a few bytes more for data that does not compress): some clients (the Autobahn
/// suite's) mishandle uncompressed messages on a connection that agreed to compression.
pub fn deflated(frame: &Bytes, window_bits: u8, min_bytes: usize) -> Option<Bytes> {
    let start = payload_start(frame)?;
    let first = frame[0];
    let data = matches!(first & 0x0F, TEXT | BINARY);
    let payload = &frame[start..];
    if !data || first & RESERVED_BITS != 0 || payload.len() < min_bytes.max(1) {
        return None;
    }
    let compressed = super::deflate::compress(payload, window_bits)?;
    Some(encode(first | RSV1, &[&compressed]))
}

/// The one place frames are built: `first` is the first byte (FIN, reserved bits, opcode).
fn encode(first: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut frame = BytesMut::with_capacity(10 + len);
    frame.put_u8(first);
    if len < 126 {
        frame.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        frame.put_u8(126);
        frame.put_u16(len);
    } else {
        frame.put_u8(127);
        frame.put_u64(len as u64);
    }
    for part in parts {
        frame.put_slice(part);
    }
    frame.freeze()
}

/// Turns the bytes a client sent into messages; keeps a fragmented message until its last frame.
pub struct Decoder {
    max_message: usize,
    /// The fragments of the unfinished message so far; empty (and unallocated) between messages.
    gathered: BytesMut,
    /// `Some(text)` while a fragmented message is under way: whether it is text.
    fragmented: Option<bool>,
    /// Whether binary messages keep their payload. With `fragmented`, it fits where `gathered`
    /// leaves padding: keeping binary payloads costs an idle connection nothing.
    keep_binary: bool,
    /// permessage-deflate was agreed: RSV1 marks a compressed message (also in the padding).
    deflate: bool,
    /// Whether the fragmented message under way is compressed.
    compressed: bool,
}

/// A frame's header, once all of it has arrived.
struct Header {
    fin: bool,
    /// RSV1: the message is compressed (only with permessage-deflate agreed).
    compressed: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    /// `max_message`: the largest message (all its fragments together) accepted, in bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            gathered: BytesMut::new(),
            fragmented: None,
            keep_binary: false,
            deflate: false,
            compressed: false,
        }
    }

    /// permessage-deflate was agreed: messages whose first frame has RSV1 set are inflated.
    pub fn accept_compressed(&mut self) {
        self.deflate = true;
    }

    /// Binary messages keep their payload from now on.
    pub fn keep_binary(&mut self) {
        self.keep_binary = true;
    }

    /// No fragmented message is under way.
    pub fn between_messages(&self) -> bool {
        self.fragmented.is_none() && self.gathered.is_empty()
    }

    /// Takes the next message or control frame off the front of `buffer`; `None` when more bytes
    /// are needed. Limits are checked as soon as a header arrives, before its payload is read.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        loop {
            let Some(header) = Header::parse(buffer, self.deflate)? else {
                return Ok(None);
            };
            self.check(&header)?;
            if buffer.len() < header.header_len + header.payload_len {
                return Ok(None);
            }
            buffer.advance(header.header_len);
            let mut payload = buffer.split_to(header.payload_len);
            unmask(&mut payload, header.mask);
            if let Some(incoming) = self.take_frame(&header, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    fn check(&self, header: &Header) -> Result<(), ProtocolError> {
        match header.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if !header.fin {
                    return Err(protocol_error("control frames must not be fragmented"));
                }
                if header.payload_len > MAX_CONTROL_PAYLOAD {
                    return Err(protocol_error("control frame payload over 125 bytes"));
                }
                if header.compressed {
                    return Err(protocol_error("control frames are never compressed"));
                }
                Ok(())
            }
            OpCode::Continuation if header.compressed => Err(protocol_error(
                "RSV1 set on a continuation frame: only a message's first frame carries it",
            )),
            _ => {
                if self.gathered.len().saturating_add(header.payload_len) > self.max_message {
                    return Err(ProtocolError {
                        code: CloseCode::TOO_BIG,
                        reason: "message too large",
                    });
                }
                Ok(())
            }
        }
    }

    fn take_frame(
        &mut self,
        header: &Header,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ProtocolError> {
        let text = header.opcode == OpCode::Text;
        match (header.opcode, self.fragmented) {
            (OpCode::Ping, _) => Ok(Some(Incoming::Ping(payload.freeze()))),
            (OpCode::Pong, _) => Ok(Some(Incoming::Pong)),
            (OpCode::Close, _) => close_frame(&payload).map(Some),
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(protocol_error(
                "a new message started before the fragmented one ended",
            )),
            (OpCode::Text | OpCode::Binary, None) if header.fin => {
                let payload = self.inflated(header.compressed, text, payload.freeze())?;
                message(text, payload, self.keep_binary).map(Some)
            }
            (OpCode::Text | OpCode::Binary, None) => {
                self.fragmented = Some(text);
                self.compressed = header.compressed;
                self.gathered = payload;
                Ok(None)
            }
            (OpCode::Continuation, None) => Err(protocol_error(
                "continuation frame without a message to continue",
            )),
            (OpCode::Continuation, Some(text)) => {
                self.gathered.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                self.fragmented = None;
                let data = std::mem::take(&mut self.gathered).freeze();
                let compressed = std::mem::take(&mut self.compressed);
                let data = self.inflated(compressed, text, data)?;
                message(text, data, self.keep_binary).map(Some)
            }
        }
    }

    /// A whole message's payload, inflated if it came compressed; binary payloads that are not
    /// kept are not inflated either.
    fn inflated(
        &self,
        compressed: bool,
        text: bool,
        payload: Bytes,
    ) -> Result<Bytes, ProtocolError> {
        if !compressed || !(text || self.keep_binary) {
            return Ok(payload);
        }
        match super::deflate::inflate(&payload, self.max_message) {
            Ok(inflated) => Ok(Bytes::from(inflated)),
            Err(InflateError::TooBig) => Err(ProtocolError {
                code: CloseCode::TOO_BIG,
                reason: "message too large",
            }),
            Err(InflateError::Invalid) => Err(ProtocolError {
                code: CloseCode::INVALID_PAYLOAD,
                reason: "compressed message is not valid deflate data",
            }),
        }
    }
}

fn message(text: bool, payload: Bytes, keep_binary: bool) -> Result<Incoming, ProtocolError> {
    if !text {
        return Ok(Incoming::Binary(if keep_binary {
            payload
        } else {
            Bytes::new()
        }));
    }
    match std::str::from_utf8(&payload) {
        Ok(_) => Ok(Incoming::Text(payload)),
        Err(_) => Err(ProtocolError {
            code: CloseCode::INVALID_PAYLOAD,
            reason: "text message is not valid UTF-8",
        }),
    }
}

fn close_frame(payload: &[u8]) -> Result<Incoming, ProtocolError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(protocol_error("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_sendable() {
                return Err(protocol_error("close frame with an invalid status code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ProtocolError {
                    code: CloseCode::INVALID_PAYLOAD,
                    reason: "close reason is not valid UTF-8",
                });
            }
            Ok(Incoming::Close(Some(code)))
        }
    }
}

impl Header {
    /// `deflate`: permessage-deflate was agreed, so RSV1 may be set.
    fn parse(buffer: &[u8], deflate: bool) -> Result<Option<Self>, ProtocolError> {
        let [first, second, rest @ ..] = buffer else {
            return Ok(None);
        };
        let allowed = if deflate { RSV1 } else { 0 };
        if first & RESERVED_BITS & !allowed != 0 {
            return Err(protocol_error(
                "reserved bits set, but no extension was agreed",
            ));
        }
        let Some(opcode) = OpCode::parse(first & 0x0F) else {
            return Err(protocol_error("unknown opcode"));
        };
        if second & MASKED == 0 {
            return Err(protocol_error("client frames must be masked"));
        }
        let (payload_len, extended) = match second & 0x7F {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.first_chunk::<8>() {
                Some(bytes) => (u64::from_be_bytes(*bytes), 8),
                None => return Ok(None),
            },
            len => (u64::from(len), 0),
        };
        // RFC 6455 section 5.2: the length MUST be in its shortest form.
        if (extended == 2 && payload_len < 126) || (extended == 8 && payload_len <= 0xFFFF) {
            return Err(protocol_error("payload length not in its minimal encoding"));
        }
        if payload_len >> 63 != 0 {
            return Err(protocol_error("payload length has its top bit set"));
        }
        let Some(mask) = rest[extended..].first_chunk::<4>() else {
            return Ok(None);
        };
        Ok(Some(Self {
            fin: first & FIN != 0,
            compressed: first & RSV1 != 0,
            opcode,
            mask: *mask,
            header_len: 2 + extended + 4,
            // Larger than memory can hold is larger than any limit: it fails the size check.
            payload_len: usize::try_from(payload_len).unwrap_or(usize::MAX),
        }))
    }
}

/// XORs the payload with the client's masking key, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_frames_read_back_their_payloads() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![b'x'; len];
            let frame = text(&[&payload]);
            assert_eq!(
                encoded(&frame),
                Encoded::Text(Bytes::from(payload)),
                "{len}"
            );
        }
        assert_eq!(encoded(&ping(b"")), Encoded::Ping);
        assert_eq!(encoded(&close(CloseCode::NORMAL, "bye")), Encoded::Other);
        assert_eq!(encoded(&Bytes::from_static(b"\x81")), Encoded::Other);
        assert_eq!(encoded(&Bytes::from_static(b"\x81\x05ab")), Encoded::Other);
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A frame as a client sends it: masked with `KEY`.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            len if len < 126 => frame.push(MASKED | len as u8),
            len if len <= 0xFFFF => {
                frame.push(MASKED | 126);
                frame.extend((len as u16).to_be_bytes());
            }
            len => {
                frame.push(MASKED | 127);
                frame.extend((len as u64).to_be_bytes());
            }
        }
        frame.extend(KEY);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        frame
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Incoming>, ProtocolError> {
        let mut decoder = Decoder::new(max);
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(incoming) = decoder.decode(&mut buffer)? {
            out.push(incoming);
        }
        assert!(buffer.is_empty(), "every byte consumed");
        Ok(out)
    }

    fn code_of(result: Result<Vec<Incoming>, ProtocolError>) -> u16 {
        result.expect_err("a protocol error").code.0
    }

    /// xorshift64: deterministic, so a failing seed can be replayed.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    #[test]
    fn random_streams_cut_anywhere_decode_to_what_was_sent() {
        for seed in 1..=300u64 {
            let mut random = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (mut stream, mut expected) = (Vec::new(), Vec::new());
            for _ in 0..random.below(12) + 1 {
                let len = [0, 1, 125, 126, 127, 1000, 65_535, 65_536, 70_000][random.below(9)];
                // Multi-byte characters, so fragments also split them.
                let text: String = "abcdé€".chars().cycle().take(len).collect();
                let text = text.into_bytes();
                let mut rest = &text[..];
                // A third of the messages are binary, which the decoder is asked to keep.
                let binary = random.below(3) == 0;
                let mut opcode = if binary { BINARY } else { TEXT };
                loop {
                    let take = rest.len().min(random.below(text.len() / 2 + 2));
                    let (part, left) = rest.split_at(take);
                    let fin = left.is_empty() || random.below(4) == 0;
                    let (part, left) = if fin { (rest, &[][..]) } else { (part, left) };
                    stream.extend(client_frame(if fin { FIN | opcode } else { opcode }, part));
                    rest = left;
                    opcode = CONTINUATION;
                    if fin {
                        break;
                    }
                    if random.below(3) == 0 {
                        stream.extend(client_frame(FIN | PING, b"between"));
                        expected.push(Incoming::Ping(Bytes::from_static(b"between")));
                    }
                }
                expected.push(if binary {
                    Incoming::Binary(Bytes::from(text))
                } else {
                    Incoming::Text(Bytes::from(text))
                });
            }
            let mut decoder = Decoder::new(1 << 20);
            decoder.keep_binary();
            let (mut buffer, mut got, mut at) = (BytesMut::new(), Vec::new(), 0);
            while at < stream.len() {
                let chunk = (random.below(9000) + 1).min(stream.len() - at);
                buffer.extend_from_slice(&stream[at..at + chunk]);
                at += chunk;
                while let Some(incoming) = decoder.decode(&mut buffer).unwrap() {
                    got.push(incoming);
                }
            }
            assert!(buffer.is_empty(), "seed {seed}: bytes left over");
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    #[test]
    fn encodes_headers_for_every_length() {
        assert_eq!(&text(&[b"hi"])[..], b"\x81\x02hi");
        let medium = text(&[&[b'x'; 300]]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let large = text(&[&vec![b'x'; 70_000]]);
        assert_eq!(&large[..2], &[0x81, 127]);
        assert_eq!(&large[2..10], &70_000u64.to_be_bytes());
        assert_eq!(&pong(b"p")[..], b"\x8a\x01p");
        assert_eq!(&close(CloseCode::NORMAL, "")[..], b"\x88\x02\x03\xe8");
        let long_reason = "é".repeat(100);
        let frame = close(CloseCode::GOING_AWAY, &long_reason);
        assert!(frame.len() <= 2 + MAX_CONTROL_PAYLOAD);
        assert!(
            std::str::from_utf8(&frame[4..]).is_ok(),
            "cut at a boundary"
        );
    }

    #[test]
    fn decodes_masked_messages_of_every_length_byte_by_byte() {
        let small = b"{\"message\":1}".to_vec();
        let medium = vec![b'a'; 1000];
        let large = vec![b'b'; 70_000];
        let mut stream = Vec::new();
        for payload in [&small, &medium, &large] {
            stream.extend(client_frame(FIN | TEXT, payload));
        }
        let mut decoder = Decoder::new(1 << 20);
        let mut buffer = BytesMut::new();
        let mut got = Vec::new();
        for byte in stream {
            buffer.put_u8(byte);
            if let Some(incoming) = decoder.decode(&mut buffer).unwrap() {
                got.push(incoming);
            }
        }
        assert_eq!(
            got,
            [small, medium, large].map(|p| Incoming::Text(Bytes::from(p)))
        );
    }

    #[test]
    fn joins_fragments_with_control_frames_between() {
        let mut stream = client_frame(TEXT, b"hel");
        stream.extend(client_frame(FIN | PING, b"ping?"));
        stream.extend(client_frame(CONTINUATION, b"lo "));
        stream.extend(client_frame(FIN | CONTINUATION, "wörld".as_bytes()));
        stream.extend(client_frame(FIN | BINARY, b"\x00\x01"));
        stream.extend(client_frame(FIN | PONG, b""));
        stream.extend(client_frame(FIN | CLOSE, &[0x03, 0xe8, b'o', b'k']));
        assert_eq!(
            decode_all(&stream, 100).unwrap(),
            [
                Incoming::Ping(Bytes::from_static(b"ping?")),
                Incoming::Text(Bytes::from("hello wörld")),
                Incoming::Binary(Bytes::new()),
                Incoming::Pong,
                Incoming::Close(Some(CloseCode::NORMAL)),
            ]
        );
        assert_eq!(
            decode_all(&client_frame(FIN | CLOSE, b""), 100).unwrap(),
            [Incoming::Close(None)]
        );
    }

    #[test]
    fn enforces_the_size_limit_before_the_payload_arrives() {
        let frame = client_frame(FIN | TEXT, &[b'x'; 101]);
        // Only the header: the limit is known to be broken already.
        assert_eq!(code_of(decode_all(&frame[..8], 100)), 1009);
        let mut fragments = client_frame(TEXT, &[b'x'; 60]);
        fragments.extend(client_frame(FIN | CONTINUATION, &[b'x'; 41]));
        assert_eq!(code_of(decode_all(&fragments, 100)), 1009);
        assert!(decode_all(&client_frame(FIN | TEXT, &[b'x'; 100]), 100).is_ok());
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let unmasked = [FIN | TEXT, 1, b'x'];
        assert_eq!(code_of(decode_all(&unmasked, 100)), 1002);
        assert_eq!(
            code_of(decode_all(&client_frame(FIN | 0x40 | TEXT, b"x"), 100)),
            1002
        );
        assert_eq!(
            code_of(decode_all(&client_frame(FIN | 0x3, b"x"), 100)),
            1002
        );
        assert_eq!(code_of(decode_all(&client_frame(PING, b"x"), 100)), 1002);
        assert_eq!(
            code_of(decode_all(&client_frame(FIN | PING, &[0; 126]), 1000)),
            1002
        );
        assert_eq!(
            code_of(decode_all(&client_frame(FIN | CONTINUATION, b"x"), 100)),
            1002
        );
        let mut interleaved = client_frame(TEXT, b"a");
        interleaved.extend(client_frame(FIN | TEXT, b"b"));
        assert_eq!(code_of(decode_all(&interleaved, 100)), 1002);
        let mut huge = vec![FIN | TEXT, MASKED | 127];
        huge.extend(u64::MAX.to_be_bytes());
        huge.extend(KEY);
        assert_eq!(code_of(decode_all(&huge, 100)), 1002);
    }

    #[test]
    fn checks_utf8_and_close_payloads() {
        assert_eq!(
            code_of(decode_all(&client_frame(FIN | TEXT, b"\xff"), 100)),
            1007
        );
        // A character split between two fragments is fine.
        let mut split = client_frame(TEXT, &"é".as_bytes()[..1]);
        split.extend(client_frame(FIN | CONTINUATION, &"é".as_bytes()[1..]));
        assert!(decode_all(&split, 100).is_ok());
        assert_eq!(
            code_of(decode_all(&client_frame(FIN | CLOSE, &[3]), 100)),
            1002
        );
        for bad in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            let frame = client_frame(FIN | CLOSE, &bad.to_be_bytes());
            assert_eq!(code_of(decode_all(&frame, 100)), 1002, "code {bad}");
        }
        let bad_reason = client_frame(FIN | CLOSE, &[0x03, 0xe8, 0xff]);
        assert_eq!(code_of(decode_all(&bad_reason, 100)), 1007);
    }

    #[test]
    fn lengths_must_be_in_their_shortest_form() {
        let long_form = |len_byte: u8, length: &[u8], payload: &[u8]| {
            let mut frame = vec![FIN | TEXT, MASKED | len_byte];
            frame.extend(length);
            frame.extend(KEY);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
            frame
        };
        let five_in_16_bits = long_form(126, &5u16.to_be_bytes(), b"hello");
        assert_eq!(code_of(decode_all(&five_in_16_bits, 1 << 20)), 1002);
        let small_in_64_bits = long_form(127, &200u64.to_be_bytes(), &[b'a'; 200]);
        assert_eq!(code_of(decode_all(&small_in_64_bits, 1 << 20)), 1002);
        let shortest = long_form(126, &200u16.to_be_bytes(), &[b'a'; 200]);
        assert!(decode_all(&shortest, 1 << 20).is_ok());
    }

    /// `payload` compressed as a client would send it with permessage-deflate.
    fn deflate(payload: &[u8]) -> Vec<u8> {
        crate::websocket::deflate::compress(payload, 15).unwrap()
    }

    fn decode_compressed(bytes: &[u8], max: usize) -> Result<Vec<Incoming>, ProtocolError> {
        let mut decoder = Decoder::new(max);
        decoder.accept_compressed();
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(incoming) = decoder.decode(&mut buffer)? {
            out.push(incoming);
        }
        Ok(out)
    }

    #[test]
    fn inflates_compressed_messages_whole_or_fragmented() {
        let text = "a chat message, a chat message, a chat message: é€".repeat(20);
        let compressed = deflate(text.as_bytes());
        let mut stream = client_frame(FIN | RSV1 | TEXT, &compressed);
        // Fragmented: RSV1 on the first frame only, a ping between the fragments.
        let (head, tail) = compressed.split_at(compressed.len() / 2);
        stream.extend(client_frame(RSV1 | TEXT, head));
        stream.extend(client_frame(FIN | PING, b"p"));
        stream.extend(client_frame(FIN | CONTINUATION, tail));
        // Uncompressed messages stay allowed.
        stream.extend(client_frame(FIN | TEXT, b"plain"));
        assert_eq!(
            decode_compressed(&stream, 1 << 20).unwrap(),
            [
                Incoming::Text(Bytes::from(text.clone())),
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Text(Bytes::from(text)),
                Incoming::Text(Bytes::from_static(b"plain")),
            ]
        );
    }

    #[test]
    fn refuses_compression_where_it_does_not_belong() {
        let compressed = deflate(b"hello");
        let rsv1_text = client_frame(FIN | RSV1 | TEXT, &compressed);
        assert_eq!(code_of(decode_all(&rsv1_text, 100)), 1002, "not agreed");
        assert_eq!(
            code_of(decode_compressed(
                &client_frame(FIN | RSV1 | PING, b""),
                100
            )),
            1002
        );
        let mut on_continuation = client_frame(TEXT, b"a");
        on_continuation.extend(client_frame(FIN | RSV1 | CONTINUATION, b"b"));
        assert_eq!(code_of(decode_compressed(&on_continuation, 100)), 1002);
        let rsv2 = client_frame(FIN | 0x20 | TEXT, b"x");
        assert_eq!(code_of(decode_compressed(&rsv2, 100)), 1002);
        let garbage = client_frame(FIN | RSV1 | TEXT, &[0xff; 8]);
        assert_eq!(code_of(decode_compressed(&garbage, 100)), 1007);
        let not_utf8 = client_frame(FIN | RSV1 | TEXT, &deflate(b"\xff\xfe"));
        assert_eq!(code_of(decode_compressed(&not_utf8, 100)), 1007);
    }

    #[test]
    fn a_compressed_message_is_bounded_by_the_size_limit_once_inflated() {
        // 1 MiB of zeros compresses to about a kilobyte: the limit applies to what it inflates to.
        let bomb = deflate(&vec![b'0'; 1 << 20]);
        assert!(bomb.len() < 2000);
        let frame = client_frame(FIN | RSV1 | TEXT, &bomb);
        assert_eq!(code_of(decode_compressed(&frame, 64 * 1024)), 1009);
        assert!(decode_compressed(&frame, 1 << 20).is_ok());
    }

    #[test]
    fn deflated_frames_carry_rsv1_and_inflate_to_the_plain_payload() {
        let payload = "{\"message\":\"hello hello hello hello\"}".repeat(10);
        let plain = text(&[payload.as_bytes()]);
        let compressed = deflated(&plain, 15, 256).unwrap();
        assert_eq!(compressed[0], FIN | RSV1 | TEXT);
        assert!(compressed.len() < plain.len());
        let start = payload_start(&compressed).unwrap();
        let inflated = crate::websocket::deflate::inflate(&compressed[start..], 1 << 20).unwrap();
        assert_eq!(inflated, payload.as_bytes());
        assert_eq!(
            encoded(&compressed),
            Encoded::Other,
            "no plain payload to read"
        );
        // Short payloads and control frames go as they are.
        assert_eq!(deflated(&text(&[b"short"]), 15, 256), None);
        assert_eq!(deflated(&text(&[]), 15, 0), None);
        assert_eq!(deflated(&ping(&[b'p'; 100]), 15, 1), None);
        // What does not compress is compressed all the same, a few bytes longer.
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        let noise: Vec<u8> = (0..400).map(|_| random.below(256) as u8).collect();
        let stored = deflated(&binary(&[&noise]), 15, 1).unwrap();
        assert!(stored.len() <= noise.len() + 16, "{}", stored.len());
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn keeping_binary_payloads_does_not_grow_the_decoder() {
        // What an idle connection holds of the decoder: 48 bytes, as before binary payloads
        // could be kept.
        assert_eq!(std::mem::size_of::<Decoder>(), 48);
    }

    #[test]
    fn binary_payloads_are_kept_only_when_asked() {
        let mut fragmented = client_frame(BINARY, b"\x00\x01");
        fragmented.extend(client_frame(FIN | CONTINUATION, b"\x02"));
        let mut decoder = Decoder::new(100);
        decoder.keep_binary();
        let mut buffer = BytesMut::from(&fragmented[..]);
        assert_eq!(
            decoder.decode(&mut buffer).unwrap(),
            Some(Incoming::Binary(Bytes::from_static(b"\x00\x01\x02")))
        );
        assert_eq!(
            decode_all(&fragmented, 100).unwrap(),
            [Incoming::Binary(Bytes::new())]
        );
    }
}
