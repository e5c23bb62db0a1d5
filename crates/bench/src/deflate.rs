//! A reading client that agrees to permessage-deflate (RFC 7692), for `--deflate`: the handshake
//! offers it as browsers do, compressed frames are inflated, pings answered. It reads only
//! (subscribers and idle connections); publishers stay plain. What it yields is what a plain
//! client yields, so the scenarios read both alike.

use std::pin::Pin;

use flate2::{Decompress, FlushDecompress};
use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_websockets::{Error, Message};

use crate::BenchError;

/// Messages from the server, whichever client reads them.
pub type Reader = Pin<Box<dyn Stream<Item = Result<Message, Error>> + Send>>;

const RSV1: u8 = 0x40;
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

struct Connection {
    stream: BufReader<TcpStream>,
    inflater: Decompress,
}

/// Opens a WebSocket on `path` over `tcp` offering permessage-deflate; an error if the server
/// does not agree to it (a run with `--deflate` measures compression or nothing).
pub async fn connect(tcp: TcpStream, host: &str, path: &str) -> Result<Reader, BenchError> {
    let mut stream = BufReader::new(tcp);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    );
    stream.get_mut().write_all(request.as_bytes()).await?;
    let (mut line, mut head) = (String::new(), String::new());
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(BenchError::Http(
                "connection closed in the handshake".into(),
            ));
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    if !head.starts_with("http/1.1 101") {
        return Err(BenchError::Http(format!("handshake refused: {head}")));
    }
    if !head.contains("sec-websocket-extensions: permessage-deflate") {
        return Err(BenchError::Http(
            "the server did not agree to permessage-deflate".into(),
        ));
    }
    let connection = Connection {
        stream,
        inflater: Decompress::new(false),
    };
    Ok(Box::pin(futures_util::stream::unfold(
        connection,
        |mut connection| async move {
            let next = connection.next().await.transpose()?;
            Some((next, connection))
        },
    )))
}

impl Connection {
    /// The next text or binary message; `None` after a close frame.
    async fn next(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let first = self.stream.read_u8().await?;
            let len = match self.stream.read_u8().await? & 0x7F {
                126 => u64::from(self.stream.read_u16().await?),
                127 => self.stream.read_u64().await?,
                len => u64::from(len),
            };
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await?;
            match first & 0x0F {
                0x8 => return Ok(None),
                0x9 => self.pong(&payload).await?,
                0x1 | 0x2 => {
                    if first & RSV1 != 0 {
                        payload = self.inflate(&payload)?;
                    }
                    let text = String::from_utf8(payload)
                        .map_err(|_| invalid("a message that is not UTF-8"))?;
                    return Ok(Some(Message::text(text)));
                }
                _ => {}
            }
        }
    }

    async fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        // Masked with a zero key: the payload goes as it is.
        let mut frame = vec![0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream.get_mut().write_all(&frame).await?;
        Ok(())
    }

    fn inflate(&mut self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(payload.len() * 4 + 64);
        for input in [payload, &TAIL[..]] {
            let mut at = 0;
            while at < input.len() || out.len() == out.capacity() {
                if out.len() == out.capacity() {
                    out.reserve(out.capacity());
                }
                let read = self.inflater.total_in();
                self.inflater
                    .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| invalid("invalid deflate data"))?;
                let consumed = (self.inflater.total_in() - read) as usize;
                if consumed == 0 && out.len() < out.capacity() {
                    break;
                }
                at += consumed;
            }
        }
        self.inflater.reset(false);
        Ok(out)
    }
}

fn invalid(what: &str) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}
