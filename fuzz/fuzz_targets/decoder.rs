//! Feeds arbitrary bytes, cut into arbitrary chunks, to the server's WebSocket frame decoder: it
//! must never panic, never take more than it was given, and stop at the first protocol error.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use livechat::websocket::frame::Decoder;

fuzz_target!(|input: &[u8]| {
    let Some((&cuts, stream)) = input.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(1 << 16);
    if cuts & 1 == 1 {
        decoder.keep_binary();
    }
    let chunk = usize::from(cuts >> 1).max(1);
    let mut buffer = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
