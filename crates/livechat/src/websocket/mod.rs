//! The WebSocket protocol (RFC 6455), server side: framing in `frame`, a connection's reads and
//! writes in `socket`. The opening handshake is HTTP, in `transport::upgrade`.

pub mod frame;
pub mod socket;

pub use frame::{CloseCode, Incoming, ProtocolError};
pub use socket::{ReadError, WebSocket};
