//! The frames the server sends, whatever made them: chat messages (plain and meta shape),
//! changes to stored messages, presence and typing, read receipts, resume events, control
//! events, confirmations, error replies, keepalive pings, pongs and close frames. Each is built
//! here once, as the complete WebSocket frame (header included) that every recipient shares;
//! queues and sockets take its bytes (`into_bytes`). The compressed variants for members with
//! permessage-deflate (`Variants`) are made here too, and a transport that sends frames'
//! payloads in its own way (the event stream) reads them back here (`carried`): a change to how
//! frames are encoded touches this module alone.
//!
//! A value that cannot be written as JSON (only a `Serialize` impl's own error does that: a map
//! with keys JSON cannot have, a refusal of its own) is not sent as an empty frame: it is logged,
//! counted (`livechat_frames_unencodable_total`, see `crate::json`), and the recipients get an
//! error frame, `{"error": "the server could not encode this frame"}`, in its place.

use bytes::Bytes;
use serde::Serialize;

use crate::websocket::deflate;
use crate::websocket::frame::{self, CloseCode};

pub use crate::websocket::frame::Encoded as Carried;

/// What goes out in place of a frame whose value could not be written as JSON.
const UNENCODABLE: &[u8] = br#"{"error":"the server could not encode this frame"}"#;

/// A complete WebSocket frame the server sends: built once, shared by every recipient (a clone
/// only bumps a reference count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingFrame(Bytes);

// Every frame queued for a member is one of these (or its bytes): its size is paid once per
// frame waiting in each queue, so it stays the size of the shared buffer's handle.
const _: () = assert!(std::mem::size_of::<OutgoingFrame>() <= 32);

impl OutgoingFrame {
    /// A text frame holding `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match crate::json::to_vec(value) {
            Ok(json) => Self(frame::text(&[&json])),
            // Logged and counted already.
            Err(_) => Self(frame::text(&[UNENCODABLE])),
        }
    }

    /// A text frame whose payload is `parts` end to end, which the caller knows to be one JSON
    /// text: a stored message's JSON inside the seed's shape, or an event another node (or the
    /// app, through the server API) wrote and that was checked as JSON when it came in.
    pub fn raw_json_parts(parts: &[&[u8]]) -> Self {
        Self(frame::text(parts))
    }

    /// A keepalive ping, with no payload.
    pub fn ping() -> Self {
        Self(frame::ping(b""))
    }

    /// The answer to a client's ping: its payload, back.
    pub fn pong(payload: &[u8]) -> Self {
        Self(frame::pong(payload))
    }

    /// A close frame; the reason is cut (at a character's edge) to what fits in a control frame.
    pub fn close(code: CloseCode, reason: &str) -> Self {
        Self(frame::close(code, reason))
    }

    /// The bytes to queue for a socket.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// What a frame built here, as queued (`into_bytes`, or one of `Variants`' frames), carries:
    /// a text payload (JSON), a ping, or something else.
    pub fn carried(queued: &Bytes) -> Carried {
        frame::encoded(queued)
    }
}

/// A batch of frames for a room's members, as they are queued: plain, or compressed for the
/// members that agreed to permessage-deflate (one variant per window size, each built the first
/// time a member that needs it comes, then shared by every such member).
pub struct Variants<'a> {
    plain: Vec<Bytes>,
    settings: &'a deflate::Settings,
    built: Vec<(u8, Vec<Bytes>)>,
}

impl<'a> Variants<'a> {
    pub fn new(frames: Vec<OutgoingFrame>, settings: &'a deflate::Settings) -> Self {
        Self {
            // The same layout: the vector is reused, not copied.
            plain: frames.into_iter().map(OutgoingFrame::into_bytes).collect(),
            settings,
            built: Vec::new(),
        }
    }

    /// The frames for a member: plain (`None`), or as compressed with its window size.
    pub fn frames(&mut self, deflate_window: Option<u8>) -> &[Bytes] {
        let Some(window_bits) = deflate_window else {
            return &self.plain;
        };
        let index = match self.built.iter().position(|(bits, _)| *bits == window_bits) {
            Some(index) => index,
            None => {
                let frames = self
                    .plain
                    .iter()
                    .map(|plain| {
                        match frame::deflated(plain, window_bits, self.settings.min_bytes) {
                            Some(compressed) => {
                                self.settings.compressed.increment(1);
                                compressed
                            }
                            None => plain.clone(),
                        }
                    })
                    .collect();
                self.built.push((window_bits, frames));
                self.built.len() - 1
            }
        };
        &self.built[index].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_cannot_be_written_is_an_error_frame_and_counted() {
        let before = crate::json::unencodable_values();
        let frame = OutgoingFrame::json(&crate::json::tests::Unwritable);
        assert!(crate::json::unencodable_values() > before);
        match OutgoingFrame::carried(&frame.into_bytes()) {
            Carried::Text(payload) => {
                let error: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert!(
                    error["error"]
                        .as_str()
                        .unwrap()
                        .contains("could not encode")
                );
            }
            other => panic!("an error frame, not {other:?}"),
        }
    }

    #[test]
    fn json_frames_are_the_compact_json_of_the_value() {
        let value = serde_json::json!({ "event": "typing", "room": "r", "n": [1, 2] });
        let frame = OutgoingFrame::json(&value).into_bytes();
        assert_eq!(frame[0], 0x81, "FIN, text");
        assert_eq!(
            OutgoingFrame::carried(&frame),
            Carried::Text(Bytes::from(value.to_string()))
        );
        let parts = OutgoingFrame::raw_json_parts(&[b"{\"message\":", b"1", b"}"]).into_bytes();
        assert_eq!(&parts[2..], br#"{"message":1}"#);
        assert_eq!(
            OutgoingFrame::carried(&OutgoingFrame::ping().into_bytes()),
            Carried::Ping
        );
    }

    #[test]
    fn variants_share_the_plain_frames_and_compress_the_long_ones_once() {
        let settings = deflate::Settings {
            min_bytes: 16,
            compressed: metrics::Counter::noop(),
        };
        let long = serde_json::json!({ "message": "chat ".repeat(50) });
        let frames = vec![
            OutgoingFrame::json(&long),
            OutgoingFrame::raw_json_parts(&[b"{}"]),
        ];
        let plain_ptr = frames[0].0.as_ptr();
        let mut variants = Variants::new(frames, &settings);
        assert_eq!(variants.frames(None)[0].as_ptr(), plain_ptr, "not copied");
        let compressed = variants.frames(Some(15)).to_vec();
        assert_eq!(compressed[0][0], 0xC1, "FIN, RSV1, text");
        assert_eq!(compressed[1].as_ptr(), variants.frames(None)[1].as_ptr());
        assert_eq!(
            variants.frames(Some(15))[0].as_ptr(),
            compressed[0].as_ptr()
        );
    }
}
