//! Publishing: one task takes queued publishes in arrival order and sends them as pipelines, one
//! per room (a room's keys share a slot, so this works on a cluster too), each message as one
//! atomic script that numbers it, stores it in the room's stream and publishes it. The script
//! runs by its SHA; a server that does not have it (new, restarted, failed over) gets it loaded
//! and the pipeline sent again (nothing of it ran).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::join_all;
use redis::{ErrorKind, RedisResult, Script, ServerErrorKind};
use serde_json::value::RawValue;

use super::Health;
use super::changes;
use super::connection::Connection;
use super::keys::Keys;
use super::stream;
use super::webhooks::RedisOutbox;
use crate::engine::queue::{Answer, QueueReceiver};

use crate::change::{Change, ChangeRefused, Changed};
use crate::engine::{Accepted, EngineError};
use crate::epoch::{Epoch, new_epoch};
use crate::message::{Author, Draft, Extra, Nonce, StoredMessage};
use crate::room::RoomName;
use crate::store::{Refused, now_ms};
use tokio::sync::oneshot;

/// KEYS: stream, sequence, byte total, epoch, moved ids, changed records, changed positions,
/// reacted (the room's keys, see `Keys`), then the nonce's key when ARGV[12] is `1`,
/// then the webhook outbox and its byte total when ARGV[13] (the outbox's most bytes) is not
/// empty.
/// ARGV: message JSON, max count, max age in ms (0: none), channel, publish command, author JSON
/// (empty: none), max bytes, an epoch to use if the room has none, the nonce as a JSON string
/// (empty: none), the dedupe window in ms, the room's TTL in ms (0: none), whether a nonce key
/// is given, the outbox's most bytes (empty: no outbox here), the room's name, the id it replies
/// to (empty: none).
/// Returns {id, ts, epoch, outcome (0: stored, 1: duplicate, 2: no message to reply to), the
/// first message's JSON and author when duplicate, 1 if the message's webhook event did not fit
/// in the outbox}. The event is `{"type":"message","room":R,"ts":T,"message":{"id","room",
/// "message","ts","user"?,"nonce"?,"reply_to"?}}`, as `crate::webhooks::Event::message` writes it.
/// The frame published is `{"id":N,"ts":T,"epoch":E,"user":U,"nonce":K,"reply_to":P,"message":X}`
/// (`user`, `nonce`, `reply_to` only when present). After adding, the oldest entries go while
/// the room is over its count, its bytes or its age; the newest stays (unless the count is 0:
/// nothing stays), and what the room keeps of changes to messages older than the oldest kept
/// goes with them. A stream written before byte totals existed counts from zero, so its older
/// entries are under-counted until they are trimmed.
const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[8]
  redis.call('SET', KEYS[4], epoch)
end
local nonce_key, outbox, outbox_bytes = nil, nil, nil
local next_key = 9
if ARGV[12] == '1' then
  nonce_key = KEYS[9]
  next_key = 10
end
if ARGV[13] ~= '' then
  outbox, outbox_bytes = KEYS[next_key], KEYS[next_key + 1]
end
if nonce_key then
  local seen = redis.call('GET', nonce_key)
  if seen then
    local id, ts = string.match(seen, '(%d+):(%d+)')
    local first = redis.call('XRANGE', KEYS[1], id .. '-0', id .. '-0')[1]
    local body, user = '', ''
    if first then
      local fields = first[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then body = fields[i + 1] elseif fields[i] == 'u' then user = fields[i + 1] end
      end
    end
    return {tonumber(id), tonumber(ts), epoch, 1, body, user, 0}
  end
end
if ARGV[15] ~= '' then
  local target = ARGV[15]
  if #redis.call('XRANGE', KEYS[1], target .. '-0', target .. '-0') == 0
    and not redis.call('ZSCORE', KEYS[5], target) then
    return {0, 0, epoch, 2, '', '', 0}
  end
end
local id = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local head = string.format('{"id":%d,"ts":%d,"epoch":"%s",', id, ts, epoch)
local entry = {'XADD', KEYS[1], string.format('%d-0', id), 'ts', string.format('%d', ts), 'm', ARGV[1]}
if ARGV[6] ~= '' then
  table.insert(entry, 'u')
  table.insert(entry, ARGV[6])
  head = head .. '"user":' .. ARGV[6] .. ','
end
if ARGV[9] ~= '' then
  table.insert(entry, 'n')
  table.insert(entry, ARGV[9])
  head = head .. '"nonce":' .. ARGV[9] .. ','
end
if ARGV[15] ~= '' then
  table.insert(entry, 'r')
  table.insert(entry, ARGV[15])
  head = head .. '"reply_to":' .. ARGV[15] .. ','
end
if nonce_key then
  redis.call('SET', nonce_key, string.format('%d:%d', id, ts), 'PX', ARGV[10])
end
redis.call(unpack(entry))
local bytes = redis.call('INCRBY', KEYS[3], string.len(ARGV[1]) + string.len(ARGV[6]) + string.len(ARGV[9]))
local count = redis.call('XLEN', KEYS[1])
local max_count, max_age, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[7])
-- The newest message stays whatever its size or age, unless no message is to be kept at all.
local floor = 1
if max_count == 0 then floor = 0 end
local trimmed = false
while count > floor and (count > max_count or bytes > max_bytes or max_age > 0) do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local fields, size, old_ts = oldest[2], 0, ts
  for i = 1, #fields, 2 do
    if fields[i] == 'ts' then old_ts = tonumber(fields[i + 1])
    elseif fields[i] ~= 'r' then size = size + string.len(fields[i + 1]) end
  end
  local too_old = max_age > 0 and old_ts < ts - max_age
  if count <= max_count and bytes <= max_bytes and not too_old then break end
  redis.call('XDEL', KEYS[1], oldest[1])
  trimmed = true
  count = count - 1
  bytes = redis.call('DECRBY', KEYS[3], size)
end
if bytes < 0 then redis.call('SET', KEYS[3], 0) end
if trimmed then
  -- Changes and reactions of messages older than the oldest kept go too.
  local kept = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local below = id + 1
  if kept then below = tonumber(string.match(kept[1], '^(%d+)')) end
  local forget = function(gone)
    for _, field in ipairs({'m', 't', 'u', 'n', 'r', 'e', 'd', 's'}) do
      redis.call('HDEL', KEYS[6], gone .. ':' .. field)
    end
    redis.call('ZREM', KEYS[7], gone)
  end
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. below)) do forget(gone) end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. below)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', '(' .. below)) do
    forget(string.match(member, '^(%d+)'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. below)
end
if ARGV[11] ~= '0' then
  for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], ARGV[11]) end
end
redis.call(ARGV[5], ARGV[4], head .. '"message":' .. ARGV[1] .. '}')
local unrecorded = 0
if outbox then
  local message = string.format('{"id":%d,"room":"%s","message":', id, ARGV[14]) .. ARGV[1]
    .. string.format(',"ts":%d', ts)
  if ARGV[6] ~= '' then message = message .. ',"user":' .. ARGV[6] end
  if ARGV[9] ~= '' then message = message .. ',"nonce":' .. ARGV[9] end
  if ARGV[15] ~= '' then message = message .. ',"reply_to":' .. ARGV[15] end
  local event = string.format('{"type":"message","room":"%s","ts":%d,"message":', ARGV[14], ts)
    .. message .. '}}'
  local size = string.len(event)
  if tonumber(redis.call('GET', outbox_bytes) or '0') + size <= tonumber(ARGV[13]) then
    redis.call('XADD', outbox, '*', 't', ts, 'e', event)
    redis.call('INCRBY', outbox_bytes, size)
  else
    unrecorded = 1
  end
end
return {id, ts, epoch, 0, '', '', unrecorded}
"#;

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_SCRIPT));

/// What the script answers: id, ts, epoch, duplicate, for a duplicate the first message's JSON
/// and author (empty when retention took it), and whether its webhook event did not fit.
type ScriptAnswer = (u64, u64, String, u8, String, String, u8);

/// Most publishes sent in one round of pipelines.
const MAX_BATCH: usize = 1024;

pub struct Publisher {
    pub connection: Connection,
    pub keys: Keys,
    pub max_count: u64,
    pub max_age: Option<Duration>,
    pub max_bytes: u64,
    pub dedupe_window: Duration,
    pub room_ttl: Duration,
    /// Replicas that must have a room's messages before they are acknowledged (0: none).
    pub wait_replicas: u32,
    /// How long to wait for them.
    pub wait_timeout: Duration,
    pub health: std::sync::Arc<Health>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The webhook outbox, when messages' events are recorded.
    pub outbox: Option<std::sync::Arc<RedisOutbox>>,
    /// How long authors may change their messages (`None`: always).
    pub edit_window: Option<Duration>,
    /// Where the room list's bookkeeping runs, apart from the writes.
    pub tasks: crate::tasks::Tasks,
}

/// Work for the publisher besides publishes, in order with them.
pub enum Work {
    Change(
        Change,
        oneshot::Sender<Result<Result<Changed, ChangeRefused>, EngineError>>,
    ),
}

impl Publisher {
    pub async fn run(self, mut queued: QueueReceiver<Work>) {
        while let Some(batch) = queued.next_batch(MAX_BATCH).await {
            if !batch.drafts.is_empty() {
                self.send(batch.drafts.into_iter().zip(batch.answers).collect())
                    .await;
            }
            for Work::Change(change, answer) in batch.other {
                let _ = answer.send(self.change(&change).await);
            }
            if batch.stop {
                break;
            }
        }
    }

    /// Makes a change with its script (loaded first if Redis does not have it); on a cluster,
    /// its webhook event is added after.
    async fn change(&self, change: &Change) -> Result<Result<Changed, ChangeRefused>, EngineError> {
        let mut connection = self.connection.clone();
        let outbox = self
            .outbox
            .as_ref()
            .filter(|_| !self.connection.is_cluster())
            .map(|outbox| outbox.max_bytes());
        let window = self
            .edit_window
            .map_or(0, |window| window.as_millis() as u64);
        let made = changes::make(
            &mut connection,
            &self.keys,
            change,
            window,
            self.room_ttl.as_millis() as u64,
            outbox,
        )
        .await;
        match made {
            Ok(made) => {
                self.health.succeeded();
                if let (Ok(changed), Some(outbox)) = (&made, &self.outbox)
                    && self.connection.is_cluster()
                    && let Some((_, event)) = crate::webhooks::Event::of_change(changed, now_ms())
                    && let Err(error) = outbox.add(&[event]).await
                {
                    tracing::warn!(%error, "cannot record the webhook event of a change");
                }
                Ok(made)
            }
            Err(error) => {
                self.health.failed(&error);
                Err(EngineError::Unavailable(format!("Redis: {error}")))
            }
        }
    }

    /// Sends one pipeline per room, all at once, and answers every publisher.
    async fn send(&self, batch: Vec<(Draft, Answer)>) {
        // Used only by a room that has no epoch yet (new, or its keys were lost).
        let fresh_epoch = new_epoch();
        let mut by_room: HashMap<RoomName, (redis::Pipeline, Vec<(Draft, Answer)>)> =
            HashMap::new();
        for (draft, answer) in batch {
            let (pipeline, drafts) = by_room.entry(draft.room.clone()).or_default();
            let room = &draft.room;
            let nonce = draft.nonce.as_ref().map(Nonce::as_str);
            // With a zero window nonces are kept with messages but not checked.
            let nonce_key = nonce
                .filter(|_| !self.dedupe_window.is_zero())
                .map(|nonce| self.keys.nonce(room, nonce));
            // The message's event goes with it, in the script, unless a cluster keeps the
            // outbox in another slot: then the node adds it after (see `record_events`).
            let outbox = self
                .outbox
                .as_ref()
                .filter(|_| !self.connection.is_cluster());
            let keys = 8 + usize::from(nonce_key.is_some()) + 2 * usize::from(outbox.is_some());
            pipeline
                .cmd("EVALSHA")
                .arg(PUBLISH.get_hash())
                .arg(keys)
                .arg(self.keys.stream(room))
                .arg(self.keys.sequence(room))
                .arg(self.keys.bytes(room))
                .arg(self.keys.epoch(room))
                .arg(self.keys.moved(room))
                .arg(self.keys.changes(room))
                .arg(self.keys.changed(room))
                .arg(self.keys.reacted(room));
            if let Some(nonce_key) = &nonce_key {
                pipeline.arg(nonce_key);
            }
            if outbox.is_some() {
                pipeline
                    .arg(self.keys.outbox())
                    .arg(self.keys.outbox_bytes());
            }
            pipeline
                .arg(draft.message.get())
                .arg(self.max_count)
                .arg(self.max_age.map_or(0, |age| age.as_millis() as u64))
                .arg(self.keys.channel(room))
                .arg(self.connection.publish_command())
                .arg(
                    draft
                        .user
                        .as_ref()
                        .map_or(String::new(), |user| user.to_json()),
                )
                .arg(self.max_bytes)
                .arg(&*fresh_epoch)
                .arg(nonce.map_or(String::new(), |nonce| {
                    serde_json::Value::from(nonce).to_string()
                }))
                .arg(self.nonce_ttl().as_millis() as u64)
                .arg(self.room_ttl.as_millis() as u64)
                .arg(if nonce_key.is_some() { "1" } else { "0" })
                .arg(outbox.map_or(String::new(), |outbox| outbox.max_bytes().to_string()))
                .arg(room.as_str())
                .arg(draft.reply_to.map_or(String::new(), |id| id.to_string()));
            drafts.push((draft, answer));
        }
        let sent = by_room.into_values().map(|(pipeline, drafts)| async move {
            let mut connection = self.connection.clone();
            let started = std::time::Instant::now();
            let mut stored: RedisResult<Vec<ScriptAnswer>> =
                pipeline.query_async(&mut connection).await;
            if stored.is_ok() && self.wait_replicas > 0 {
                stored = match self.replicated(&mut connection).await {
                    Ok(()) => stored,
                    Err(error) => Err(error),
                };
            }
            if stored
                .as_ref()
                .is_err_and(|error| error.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            {
                let loaded: RedisResult<String> = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(PUBLISH_SCRIPT)
                    .query_async(&mut connection)
                    .await;
                stored = match loaded {
                    Ok(_) => pipeline.query_async(&mut connection).await,
                    Err(error) => Err(error),
                };
            }
            let metrics = &self.metrics;
            metrics
                .store_commit_seconds
                .record(started.elapsed().as_secs_f64());
            metrics.store_batch_messages.record(drafts.len() as f64);
            (stored, drafts)
        });
        let mut written = Vec::new();
        for (stored, drafts) in join_all(sent).await {
            match stored {
                Ok(stored) => {
                    self.health.succeeded();
                    if let (Some(last), Some((draft, _))) = (stored.last(), drafts.first()) {
                        written.push((draft.room.clone(), last.1));
                    }
                    let mut events = Vec::new();
                    for (answer, (draft, reply)) in stored.into_iter().zip(drafts) {
                        if let Some(outbox) = &self.outbox {
                            outbox.count_dropped(u64::from(answer.6));
                        }
                        let accepted = accepted(answer, draft);
                        if let Some(event) = self.event_after(&accepted) {
                            events.push(event);
                        }
                        let _ = reply.send(accepted.accepted);
                    }
                    self.record_events(events).await;
                }
                Err(error) => {
                    self.health.failed(&error);
                    let error = EngineError::Unavailable(format!("Redis: {error}"));
                    for (_, reply) in drafts {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
        if !written.is_empty() {
            // For the room list; publishers are not kept waiting for it.
            let (mut connection, keys) = (self.connection.clone(), self.keys.clone());
            let room_ttl = self.room_ttl;
            self.tasks.spawn_to_end(async move {
                stream::note_written(&mut connection, &keys, &written, room_ttl).await
            });
        }
    }
}

impl Publisher {
    /// Waits until `wait_replicas` replicas have every write sent on `connection` so far; an
    /// error when fewer confirm in time (the messages are stored, but could be lost with the
    /// master: a client resends them with their nonces).
    async fn replicated(&self, connection: &mut Connection) -> RedisResult<()> {
        let confirmed: u32 = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(self.wait_timeout.as_millis() as u64)
            .query_async(connection)
            .await?;
        if confirmed >= self.wait_replicas {
            return Ok(());
        }
        Err(redis::RedisError::from((
            ErrorKind::Client,
            "not replicated in time",
            format!(
                "{confirmed} of {} replicas have it; send it again with its nonce to be sure",
                self.wait_replicas
            ),
        )))
    }

    /// How long a nonce is kept: the dedupe window, but not past its room's keys.
    fn nonce_ttl(&self) -> Duration {
        match self.room_ttl.is_zero() {
            true => self.dedupe_window,
            false => self.dedupe_window.min(self.room_ttl),
        }
    }
}

impl Publisher {
    /// A stored message's webhook event, when the node adds it itself (on a cluster).
    fn event_after(&self, stored: &Stored) -> Option<crate::webhooks::Event> {
        let outbox_here = self.outbox.is_some() && self.connection.is_cluster();
        let message = stored.message.as_ref().filter(|_| outbox_here)?;
        Some(crate::webhooks::Event::message(message))
    }

    /// Adds the events of messages just stored to the outbox (on a cluster); a node killed
    /// before this loses them (docs/hooks.md).
    async fn record_events(&self, events: Vec<crate::webhooks::Event>) {
        let Some(outbox) = &self.outbox else { return };
        if let Err(error) = outbox.add(&events).await {
            tracing::warn!(%error, events = events.len(), "cannot record webhook events of stored messages");
        }
    }
}

/// What became of a draft: the answer to its publisher, and the message if it was stored now.
struct Stored {
    accepted: Result<Accepted, EngineError>,
    message: Option<StoredMessage>,
}

/// The publisher's answer from the script's.
fn accepted((id, ts, epoch, outcome, body, user, _): ScriptAnswer, draft: Draft) -> Stored {
    let epoch = Epoch::from(epoch);
    if let (2, Some(target)) = (outcome, draft.reply_to) {
        return Stored {
            accepted: Err(EngineError::Refused(Refused::NoReplyTarget(target))),
            message: None,
        };
    }
    if outcome == 0 {
        let message = draft.stored(id, ts);
        return Stored {
            accepted: Ok(Accepted::new(id, ts, epoch)),
            message: Some(message),
        };
    }
    // The first message as stored; the draft's content if retention already took it.
    let (message, user) = match RawValue::from_string(body) {
        Ok(message) => (message, Author::from_json(&user)),
        Err(_) => (draft.message, draft.user),
    };
    let original = StoredMessage {
        id,
        room: draft.room,
        message,
        ts,
        user,
        nonce: draft.nonce,
        extra: Extra::replying(draft.reply_to),
    };
    Stored {
        accepted: Ok(Accepted::duplicate(original, epoch)),
        message: None,
    }
}
