//! permessage-deflate (RFC 7692), server side, always without context takeover in either
//! direction: every message is compressed and inflated on its own. So a room's frame is
//! compressed once and the same bytes go to every member that negotiated the extension, and a
//! connection keeps no zlib state between messages (an idle one holds none): the compressors and
//! the inflater live in a small pool per worker thread, reset after each message.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a sync flush ends with; RFC 7692 7.2.1 takes it off a compressed message and 7.2.2
/// puts it back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const MAX_WINDOW_BITS: u8 = 15;
/// zlib makes no raw deflate stream with a 256-byte window (8 bits): an offer that insists on
/// one is declined.
const MIN_SERVER_WINDOW_BITS: u8 = 9;
/// Output grows by at most this much at a time while inflating, so that a message's bound is
/// checked before much more than it is allocated.
const INFLATE_STEP: usize = 64 * 1024;

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What this server agreed to with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The window this server compresses with (`server_max_window_bits`; 15 when not asked).
    pub server_window_bits: u8,
    /// Whether the client asked for `server_max_window_bits` (the answer repeats it).
    server_bits_asked: bool,
    /// The `client_max_window_bits` answered, when the client offered the parameter.
    client_window_bits: Option<u8>,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` answer. Both sides drop their context after each message:
    /// RFC 7692 lets the server ask that of the client even when its offer did not.
    pub fn response(&self) -> String {
        let mut answer = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.server_bits_asked {
            answer.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        if let Some(bits) = self.client_window_bits {
            answer.push_str(&format!("; client_max_window_bits={bits}"));
        }
        answer
    }
}

/// The first `permessage-deflate` offer among the `Sec-WebSocket-Extensions` header values that
/// this server can honour. Offers with an unknown or repeated parameter, an invalid value, or a
/// window of 8 bits asked of the server are skipped (RFC 7692 section 5: declined).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut agreement = Agreement {
        server_window_bits: MAX_WINDOW_BITS,
        server_bits_asked: false,
        client_window_bits: None,
    };
    let (mut server_no_takeover, mut client_no_takeover, mut client_bits_offered) =
        (false, false, false);
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (parameter, None),
        };
        let seen = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => &mut server_no_takeover,
            "client_no_context_takeover" if value.is_none() => &mut client_no_takeover,
            "server_max_window_bits" => {
                let bits = window_bits(value?)?;
                if bits < MIN_SERVER_WINDOW_BITS {
                    return None;
                }
                agreement.server_window_bits = bits;
                &mut agreement.server_bits_asked
            }
            "client_max_window_bits" => {
                agreement.client_window_bits = Some(match value {
                    Some(value) => window_bits(value)?,
                    None => MAX_WINDOW_BITS,
                });
                &mut client_bits_offered
            }
            _ => return None,
        };
        if std::mem::replace(seen, true) {
            return None;
        }
    }
    Some(agreement)
}

/// A parameter's value, out of its quotes if it has them (RFC 7692 section 7.1).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size: 8 to 15, in decimal without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    /// Compressors by window size, reset after each message.
    static COMPRESSORS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
    /// One inflater with the largest window (it reads any smaller one), reset after each message.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `payload` compressed as one message (raw deflate, sync-flushed, the tail taken off) with a
/// window of `window_bits`; `None` if zlib failed.
pub fn compress(payload: &[u8], window_bits: u8) -> Option<Vec<u8>> {
    let window_bits = window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
    COMPRESSORS.with_borrow_mut(|pool| {
        let index = match pool.iter().position(|(bits, _)| *bits == window_bits) {
            Some(index) => index,
            None => {
                let compressor =
                    Compress::new_with_window_bits(Compression::default(), false, window_bits);
                pool.push((window_bits, compressor));
                pool.len() - 1
            }
        };
        let compressor = &mut pool[index].1;
        let compressed = sync_flush(compressor, payload);
        compressor.reset();
        let mut compressed = compressed?;
        if compressed.ends_with(&TAIL) {
            compressed.truncate(compressed.len() - TAIL.len());
        }
        Some(compressed)
    })
}

fn sync_flush(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(compressor.total_in()).ok()?;
        compressor
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .ok()?;
        let done = compressor.total_in() as usize == payload.len();
        // Room left in the output: zlib had nothing more to write.
        if done && out.len() < out.capacity() {
            return Some(out);
        }
        out.reserve(out.capacity().max(64));
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit (found before more than the limit is allocated).
    TooBig,
    /// It is not a valid deflate stream.
    Invalid,
}

/// A compressed message's payload inflated, refused once it passes `max` bytes: the output
/// never holds more than `max + 1` bytes, whatever the input claims.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|slot| {
        let inflater = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        let inflated = inflate_with(inflater, compressed, max);
        inflater.reset(false);
        inflated
    })
}

fn inflate_with(
    inflater: &mut Decompress,
    compressed: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    for input in [compressed, &TAIL[..]] {
        let mut at = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                // Exact, so that the allocation stays within `max + 1`.
                let step = INFLATE_STEP
                    .max(compressed.len() * 2)
                    .min(max + 1 - out.len());
                out.reserve_exact(step);
            }
            let (read, written) = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            let progressed = inflater.total_in() != read || out.len() != written;
            at += (inflater.total_in() - read) as usize;
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            match status {
                // A final block: what follows it (the tail put back, at least) is not read.
                Status::StreamEnd => return Ok(out),
                _ if at == input.len() && out.len() < out.capacity() => break,
                // Neither read nor wrote with room to do both: nothing more will come.
                _ if !progressed => break,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// How room frames are compressed for the members that negotiated permessage-deflate.
#[derive(Clone)]
pub struct Settings {
    /// Messages below this many bytes go uncompressed (RSV1 clear), as RFC 7692 allows.
    pub min_bytes: usize,
    /// Counts the frames compressed: once per frame (and window size), whatever the number of
    /// members that receive it.
    pub compressed: metrics::Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(header: &str) -> Option<String> {
        negotiate([header]).map(|agreement| agreement.response())
    }

    #[test]
    fn negotiates_without_context_takeover_and_answers_window_sizes() {
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(agreed("permessage-deflate").as_deref(), Some(both));
        // What browsers offer.
        assert_eq!(
            agreed("permessage-deflate; client_max_window_bits"),
            Some(format!("{both}; client_max_window_bits=15"))
        );
        assert_eq!(
            agreed("permessage-deflate; client_max_window_bits=10; server_max_window_bits=\"12\""),
            Some(format!(
                "{both}; server_max_window_bits=12; client_max_window_bits=10"
            ))
        );
        assert_eq!(
            agreed("Permessage-Deflate;Server_No_Context_Takeover").as_deref(),
            Some(both)
        );
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=9"])
                .unwrap()
                .server_window_bits,
            9
        );
    }

    #[test]
    fn skips_offers_it_cannot_honour() {
        for refused in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; client_max_window_bits=\"10",
        ] {
            assert_eq!(agreed(refused), None, "{refused}");
        }
        // The next acceptable offer is taken, in the same header value or the next.
        let fallback = negotiate([
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10",
        ]);
        assert_eq!(fallback.unwrap().server_window_bits, 10);
        let next_value = negotiate(["foo", "permessage-deflate"]);
        assert_eq!(next_value.unwrap().server_window_bits, 15);
    }

    #[test]
    fn compressed_messages_inflate_to_what_was_compressed() {
        let chat = br#"{"message":"hello everyone, this is a chat message that repeats, repeats, repeats itself"}"#;
        let large: Vec<u8> = (0..200_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect();
        for payload in [&b""[..], &b"x"[..], &chat[..], &large[..]] {
            for bits in [9, 12, 15] {
                let compressed = compress(payload, bits).unwrap();
                assert!(!compressed.ends_with(&TAIL), "the tail is taken off");
                assert_eq!(inflate(&compressed, payload.len()).unwrap(), payload);
            }
        }
        let compressed = compress(chat, 15).unwrap();
        assert!(compressed.len() < chat.len(), "{}", compressed.len());
        // The pooled compressor is reset: the same input compresses to the same bytes.
        assert_eq!(compress(chat, 15).unwrap(), compressed);
    }

    #[test]
    fn a_zip_bomb_is_refused_at_the_limit() {
        let bomb = compress(&vec![0; 8 * 1024 * 1024], 15).unwrap();
        assert!(bomb.len() < 10_000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 1024 * 1024), Err(InflateError::TooBig));
        assert_eq!(inflate(&bomb, 0), Err(InflateError::TooBig));
        // The inflater is usable again after a refusal.
        let small = compress(b"fine", 15).unwrap();
        assert_eq!(inflate(&small, 4).unwrap(), b"fine");
        assert_eq!(inflate(&small, 3), Err(InflateError::TooBig));
    }

    #[test]
    fn invalid_deflate_data_is_refused() {
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(InflateError::Invalid)
        );
    }

    #[test]
    fn a_final_block_ends_the_message() {
        // Compressed with a final block (BFINAL set), as some clients do: the tail put back
        // after it is not read.
        let mut compressor = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(64);
        compressor
            .compress_vec(b"done", &mut out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate(&out, 100).unwrap(), b"done");
    }
}
