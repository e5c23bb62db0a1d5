//! Feeds arbitrary bytes, cut into arbitrary chunks, to the server's WebSocket frame decoder. It
//! must never panic; what it decodes must not depend on how the bytes were cut (the same messages
//! and the same first protocol error as when the stream arrives whole); a text message is UTF-8,
//! no message is over the limit, a ping carries at most 125 bytes, a binary payload is kept only
//! when asked; and a protocol error closes with 1002, 1007 or 1009.
//!
//! The first byte chooses: bit 0, keep binary payloads; bit 1, the rest is not the stream itself
//! but a recipe for frames (see `frames`), so that well-formed frames and frames wrong in a
//! single field are common; the other bits seed the chunk sizes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use livechat::websocket::frame::Decoder;
use livechat::websocket::{Incoming, ProtocolError};

const MAX_MESSAGE: usize = 1 << 16;

/// The messages decoded, then the protocol error that stopped the decoder, if any.
type Outcome = (Vec<Incoming>, Option<ProtocolError>);

fn decode(stream: &[u8], keep_binary: bool, mut next_chunk: impl FnMut() -> usize) -> Outcome {
    let mut decoder = Decoder::new(MAX_MESSAGE);
    if keep_binary {
        decoder.keep_binary();
    }
    let (mut buffer, mut messages, mut at) = (BytesMut::new(), Vec::new(), 0);
    while at < stream.len() {
        let end = stream.len().min(at.saturating_add(next_chunk()));
        buffer.extend_from_slice(&stream[at..end]);
        at = end;
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(incoming)) => messages.push(incoming),
                Ok(None) => break,
                Err(error) => return (messages, Some(error)),
            }
        }
    }
    (messages, None)
}

/// Client frames from a recipe of 8 bytes or more per frame: the first header byte (bit 6 of
/// `form` clear: reserved bits cleared and a known opcode), `form` (bits 0-1: the length in its
/// shortest form, or always 16 bits, or always 64; bits 2-4 all set: unmasked; bit 5: ASCII
/// filler, else multi-byte UTF-8 cut anywhere), the payload length (up to 199, or one of the
/// edges around 125, 65535 and the limit), the masking key, then a count of raw payload bytes
/// that come next; the filler makes up the rest of the payload.
fn frames(mut recipe: &[u8]) -> Vec<u8> {
    const EDGES: [usize; 8] = [124, 125, 126, 127, 65_535, 65_536, 65_537, 70_000];
    const OPCODES: [u8; 6] = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA];
    let mut stream = Vec::new();
    // Past 160 KiB (two of the largest messages), more frames only slow the fuzzer down.
    while stream.len() < 160 * 1024
        && let [first, form, size, k0, k1, k2, k3, raw, rest @ ..] = recipe
    {
        let first = if form & 0x40 == 0 {
            (first & 0x80) | OPCODES[usize::from(first & 0x0F) % OPCODES.len()]
        } else {
            *first
        };
        let len = match *size {
            size @ 0..200 => usize::from(size),
            size => EDGES[usize::from(size) % EDGES.len()],
        };
        let raw = rest.len().min(usize::from(raw % 32)).min(len);
        let filler: &[u8] = if form & 0x20 != 0 {
            b"a"
        } else {
            "a\u{e9}\u{20ac}".as_bytes()
        };
        let mut payload = rest[..raw].to_vec();
        payload.extend(filler.iter().cycle().take(len - raw));
        recipe = &rest[raw..];

        let masked = form & 0x1C != 0x1C;
        stream.push(first);
        let mask_bit = if masked { 0x80 } else { 0 };
        match form & 3 {
            1 => {
                stream.push(mask_bit | 126);
                stream.extend((len as u16).to_be_bytes());
            }
            2 => {
                stream.push(mask_bit | 127);
                stream.extend((len as u64).to_be_bytes());
            }
            _ if len < 126 => stream.push(mask_bit | len as u8),
            _ if len <= 0xFFFF => {
                stream.push(mask_bit | 126);
                stream.extend((len as u16).to_be_bytes());
            }
            _ => {
                stream.push(mask_bit | 127);
                stream.extend((len as u64).to_be_bytes());
            }
        }
        let key = [*k0, *k1, *k2, *k3];
        if masked {
            stream.extend(key);
        }
        stream.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }
    stream
}

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    let keep_binary = choice & 1 == 1;
    let built;
    let stream = if choice & 2 == 0 {
        rest
    } else {
        built = frames(rest);
        &built[..]
    };
    let whole = decode(stream, keep_binary, || usize::MAX);
    // Chunks of 1 to 64 bytes, or now and then up to 4 KiB, from a xorshift seeded by the first
    // byte.
    let mut state = u32::from(choice >> 2) | 0x100;
    let cut = decode(stream, keep_binary, || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let most = if state & 0x700 == 0 { 4096 } else { 64 };
        (state % most) as usize + 1
    });
    assert_eq!(whole, cut, "the outcome depends on how the stream was cut");

    let (messages, error) = whole;
    for message in &messages {
        match message {
            Incoming::Text(text) => {
                assert!(std::str::from_utf8(text).is_ok());
                assert!(text.len() <= MAX_MESSAGE);
            }
            Incoming::Binary(data) => {
                assert!(data.len() <= MAX_MESSAGE);
                assert!(keep_binary || data.is_empty());
            }
            Incoming::Ping(payload) => assert!(payload.len() <= 125),
            Incoming::Pong | Incoming::Close(_) => {}
        }
    }
    if let Some(error) = error {
        assert!(matches!(error.code.0, 1002 | 1007 | 1009), "{error:?}");
    }
});
