//! `channels_redis` 4.x's wire format, as its `RedisChannelLayer` writes and reads it:
//!
//! - a group is the sorted set `{prefix}:group:{group}` of channel names scored by the time they
//!   were added (seconds, a float), on the host the group's name hashes to;
//! - a channel `name` is the sorted set `{prefix}{name}` of message bodies scored by the time they
//!   were sent; a process-local channel `a!b` shares the set `{prefix}a!` with its process's
//!   others, on the host `a!` hashes to, and each body says which of them it is for in
//!   `__asgi_channel__` (a list of names for a group send);
//! - a body is 12 random bytes (so that equal messages stay distinct members), then the message
//!   as msgpack, encrypted into a Fernet token when the app sets `symmetric_encryption_keys`;
//! - a host is picked by CRC-32 of the name, masked to 12 bits and scaled to the number of hosts.

use std::time::{SystemTime, UNIX_EPOCH};

use rmpv::Value;

use super::fernet::{self, Fernet, FernetError};

/// Random bytes before each body.
pub const RANDOM_PREFIX: usize = 12;
/// The key a body names its channels in.
pub const CHANNEL_KEY: &str = "__asgi_channel__";
/// Deepest nesting of a layer message read (msgpack arrays and maps).
const MAX_DEPTH: usize = 64;

/// The host, of `hosts`, that holds `name` (a group, or a channel's non-local part).
pub fn consistent_hash(name: &str, hosts: usize) -> usize {
    if hosts <= 1 {
        return 0;
    }
    let value = crc32fast::hash(name.as_bytes()) & 0xFFF;
    (f64::from(value) / (4096.0 / hosts as f64)) as usize
}

/// The part of a channel name its sorted set is named after: up to and including `!`.
pub fn non_local_name(channel: &str) -> &str {
    match channel.find('!') {
        Some(bang) => &channel[..=bang],
        None => channel,
    }
}

pub fn group_key(prefix: &str, group: &str) -> String {
    format!("{prefix}:group:{group}")
}

pub fn channel_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}{}", non_local_name(channel))
}

/// Seconds since the Unix epoch, as the layer scores its sorted sets.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than its random prefix")]
    Short,
    #[error(transparent)]
    Fernet(#[from] FernetError),
    #[error("not msgpack: {0}")]
    Msgpack(String),
    #[error("not a map with a string `type`")]
    NotAMessage,
    #[error(
        "`{0}` cannot be written as JSON (bytes, an extension, a non-string key or a non-finite number)"
    )]
    NotJson(&'static str),
}

/// How bodies are sealed and opened: msgpack, optionally inside Fernet.
pub struct Codec {
    /// The first encrypts; any decrypts (the app's `symmetric_encryption_keys`).
    keys: Vec<Fernet>,
    /// Seconds a token is accepted for: the layer's expiry plus 10, as `channels_redis`.
    ttl: u64,
}

/// A message read from the layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMessage {
    /// The channels it was for (`__asgi_channel__`).
    pub channels: Vec<String>,
    /// Its `type`, e.g. `chat.message`.
    pub kind: String,
    /// The whole message, as JSON, `__asgi_channel__` left out.
    pub body: serde_json::Map<String, serde_json::Value>,
}

impl Codec {
    pub fn new(keys: &[String], expiry_seconds: u64) -> Self {
        Self {
            keys: keys.iter().map(|key| Fernet::from_setting(key)).collect(),
            ttl: expiry_seconds + 10,
        }
    }

    /// A body for the layer: `message` (a JSON object) with `channels` in `__asgi_channel__`.
    pub fn seal(
        &self,
        message: &serde_json::Map<String, serde_json::Value>,
        channels: &[&str],
    ) -> Vec<u8> {
        let mut entries: Vec<(Value, Value)> = message
            .iter()
            .map(|(key, value)| (Value::from(key.as_str()), to_msgpack(value)))
            .collect();
        entries.push((
            Value::from(CHANNEL_KEY),
            Value::Array(
                channels
                    .iter()
                    .map(|channel| Value::from(*channel))
                    .collect(),
            ),
        ));
        let mut packed = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut packed, &Value::Map(entries));
        let payload = match self.keys.first() {
            Some(key) => key.encrypt(&packed, now_seconds() as u64),
            None => packed,
        };
        let mut body = vec![0u8; RANDOM_PREFIX];
        if let Err(error) = getrandom::fill(&mut body) {
            tracing::error!(%error, "no randomness for a layer message's prefix");
        }
        body.extend_from_slice(&payload);
        body
    }

    /// The message in a body read from a channel's sorted set.
    pub fn open(&self, body: &[u8]) -> Result<LayerMessage, DecodeError> {
        let payload = body.get(RANDOM_PREFIX..).ok_or(DecodeError::Short)?;
        let plain;
        let packed = if self.keys.is_empty() {
            payload
        } else {
            plain = fernet::decrypt(&self.keys, payload, Some(self.ttl), now_seconds() as u64)?;
            &plain[..]
        };
        let mut reader = packed;
        let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
            .map_err(|error| DecodeError::Msgpack(error.to_string()))?;
        let Value::Map(entries) = value else {
            return Err(DecodeError::NotAMessage);
        };
        let mut channels = Vec::new();
        let mut body = serde_json::Map::new();
        for (key, value) in entries {
            let Some(key) = key.as_str() else {
                return Err(DecodeError::NotJson("a key"));
            };
            if key == CHANNEL_KEY {
                channels = match value {
                    Value::String(one) => one.into_str().into_iter().collect(),
                    Value::Array(many) => many
                        .into_iter()
                        .filter_map(|channel| channel.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                continue;
            }
            body.insert(key.to_owned(), to_json(value)?);
        }
        let kind = match body.get("type") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            _ => return Err(DecodeError::NotAMessage),
        };
        Ok(LayerMessage {
            channels,
            kind,
            body,
        })
    }
}

fn to_msgpack(value: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match value {
        Json::Null => Value::Nil,
        Json::Bool(value) => Value::Boolean(*value),
        Json::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(unsigned), _) => Value::from(unsigned),
            (None, Some(signed)) => Value::from(signed),
            _ => Value::F64(number.as_f64().unwrap_or(0.0)),
        },
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(to_msgpack).collect()),
        Json::Object(entries) => Value::Map(
            entries
                .iter()
                .map(|(key, value)| (Value::from(key.as_str()), to_msgpack(value)))
                .collect(),
        ),
    }
}

fn to_json(value: Value) -> Result<serde_json::Value, DecodeError> {
    use serde_json::Value as Json;
    Ok(match value {
        Value::Nil => Json::Null,
        Value::Boolean(value) => Json::Bool(value),
        Value::Integer(integer) => match (integer.as_u64(), integer.as_i64()) {
            (Some(unsigned), _) => Json::from(unsigned),
            (None, Some(signed)) => Json::from(signed),
            _ => return Err(DecodeError::NotJson("an integer")),
        },
        Value::F32(float) => number(f64::from(float))?,
        Value::F64(float) => number(float)?,
        Value::String(text) => match text.into_str() {
            Some(text) => Json::String(text),
            None => return Err(DecodeError::NotJson("a string that is not UTF-8")),
        },
        Value::Binary(_) => return Err(DecodeError::NotJson("bytes")),
        Value::Ext(..) => return Err(DecodeError::NotJson("an extension")),
        Value::Array(items) => {
            Json::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(entries) => {
            let mut object = serde_json::Map::new();
            for (key, value) in entries {
                let Value::String(key) = key else {
                    return Err(DecodeError::NotJson("a key"));
                };
                let key = key.into_str().ok_or(DecodeError::NotJson("a key"))?;
                object.insert(key, to_json(value)?);
            }
            Json::Object(object)
        }
    })
}

fn number(float: f64) -> Result<serde_json::Value, DecodeError> {
    serde_json::Number::from_f64(float)
        .map(serde_json::Value::Number)
        .ok_or(DecodeError::NotJson("a non-finite number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hashes_names_to_hosts_as_channels_redis() {
        // channels_redis.utils._consistent_hash(name, n) for these names.
        for (name, two, three, five) in [
            ("chat_lobby", 1, 1, 2),
            ("chat_dev", 0, 1, 2),
            ("chat_a", 0, 0, 0),
            ("livechat!", 1, 1, 3),
            ("specific.abc!", 1, 2, 4),
        ] {
            assert_eq!(consistent_hash(name, 2), two, "{name}");
            assert_eq!(consistent_hash(name, 3), three, "{name}");
            assert_eq!(consistent_hash(name, 5), five, "{name}");
            assert_eq!(consistent_hash(name, 1), 0);
        }
    }

    #[test]
    fn names_keys_as_channels_redis() {
        assert_eq!(group_key("asgi", "chat_lobby"), "asgi:group:chat_lobby");
        assert_eq!(channel_key("asgi", "livechat!chat_lobby"), "asgilivechat!");
        assert_eq!(channel_key("asgi", "plain.channel"), "asgiplain.channel");
    }

    /// A body `RedisChannelLayer.group_send` wrote for
    /// `{"type": "chat.message", "message": {"text": "héllo", "n": [1, -2, 2.5, None, True]}}`
    /// to one channel of the group.
    const PYTHON_BODY: &str = "48a5472c5129b83e6bf4a8e883a474797065ac636861742e6d657373616765a76d65737361676582a474657874a668c3a96c6c6fa16e9501fecb4004000000000000c0c3b05f5f617367695f6368616e6e656c5f5f91b36c6976656368617421636861745f6c6f626279";

    #[test]
    fn opens_what_channels_redis_sealed() {
        let codec = Codec::new(&[], 60);
        let message = codec.open(&unhex(PYTHON_BODY)).unwrap();
        assert_eq!(message.channels, ["livechat!chat_lobby"]);
        assert_eq!(message.kind, "chat.message");
        assert_eq!(
            serde_json::Value::Object(message.body),
            serde_json::json!({"type": "chat.message", "message": {"text": "héllo", "n": [1, -2, 2.5, null, true]}})
        );
    }

    #[test]
    fn seals_what_it_opens_with_and_without_keys() {
        let message = serde_json::json!({"type": "chat.message", "message": {"a": [1, -1, 1.5, "x", null, false]}, "id": 7});
        let serde_json::Value::Object(message) = message else {
            unreachable!()
        };
        for keys in [vec![], vec!["k1".to_owned(), "k0".to_owned()]] {
            let codec = Codec::new(&keys, 60);
            let sealed = codec.seal(&message, &["specific.x!y", "specific.x!z"]);
            let opened = codec.open(&sealed).unwrap();
            assert_eq!(opened.channels, ["specific.x!y", "specific.x!z"]);
            assert_eq!(opened.body, message);
        }
        let other = Codec::new(&["k2".to_owned()], 60);
        assert!(matches!(
            other.open(&Codec::new(&["k1".to_owned()], 60).seal(&message, &["c"])),
            Err(DecodeError::Fernet(FernetError::WrongKey))
        ));
        assert_eq!(Codec::new(&[], 60).open(b"short"), Err(DecodeError::Short));
    }

    #[test]
    fn refuses_what_json_cannot_hold() {
        let codec = Codec::new(&[], 60);
        let mut body = vec![0u8; RANDOM_PREFIX];
        let value = Value::Map(vec![
            (Value::from("type"), Value::from("chat.message")),
            (Value::from("message"), Value::Binary(vec![1, 2])),
        ]);
        rmpv::encode::write_value(&mut body, &value).unwrap();
        assert_eq!(codec.open(&body), Err(DecodeError::NotJson("bytes")));
        let mut body = vec![0u8; RANDOM_PREFIX];
        rmpv::encode::write_value(&mut body, &Value::from(5)).unwrap();
        assert_eq!(codec.open(&body), Err(DecodeError::NotAMessage));
    }
}
