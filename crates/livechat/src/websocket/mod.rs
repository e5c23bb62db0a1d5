//! The WebSocket protocol (RFC 6455), server side: framing in `frame`, a connection's reads and
//! writes in `socket`, permessage-deflate (RFC 7692) in `deflate`. The opening handshake is
//! HTTP, in `transport::upgrade`.

pub mod deflate;
pub mod frame;
pub mod socket;

pub use frame::{CloseCode, Incoming, ProtocolError};
pub use socket::{ReadError, WebSocket};
