//! Publishing: one task takes queued publishes in arrival order and sends them as pipelines, one
//! per room (a room's keys share a slot, so this works on a cluster too), each message as one
//! atomic script that numbers it, stores it in the room's stream and publishes it.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use redis::RedisResult;

use super::Health;
use super::connection::Connection;
use super::keys::Keys;
use crate::engine::queue::{Answer, QueueReceiver};
use crate::engine::{Accepted, EngineError};
use crate::message::Draft;
use crate::room::RoomName;

/// KEYS: stream, sequence, byte total. ARGV: message JSON, max count, max age in ms (0: none),
/// channel, publish command, author JSON (empty: none), max bytes. Returns {id, ts}. The frame
/// published is `{"id":N,"ts":T,"user":U,"message":X}` (`user` only with an author).
/// After adding, the oldest entries go while the room is over its count, its bytes or its age;
/// the newest stays. A stream written before byte totals existed counts from zero, so its older
/// entries are under-counted until they are trimmed.
const PUBLISH_SCRIPT: &str = r#"
local id = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local head = string.format('{"id":%d,"ts":%d,', id, ts)
local entry = string.format('%d-0', id)
if ARGV[6] == '' then
  redis.call('XADD', KEYS[1], entry, 'ts', string.format('%d', ts), 'm', ARGV[1])
else
  redis.call('XADD', KEYS[1], entry, 'ts', string.format('%d', ts), 'm', ARGV[1], 'u', ARGV[6])
  head = head .. '"user":' .. ARGV[6] .. ','
end
local bytes = redis.call('INCRBY', KEYS[3], string.len(ARGV[1]) + string.len(ARGV[6]))
local count = redis.call('XLEN', KEYS[1])
local max_count, max_age, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[7])
while count > 1 and (count > max_count or bytes > max_bytes or max_age > 0) do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local fields, size, old_ts = oldest[2], 0, ts
  for i = 1, #fields, 2 do
    if fields[i] == 'ts' then old_ts = tonumber(fields[i + 1])
    else size = size + string.len(fields[i + 1]) end
  end
  local too_old = max_age > 0 and old_ts < ts - max_age
  if count <= max_count and bytes <= max_bytes and not too_old then break end
  redis.call('XDEL', KEYS[1], oldest[1])
  count = count - 1
  bytes = redis.call('DECRBY', KEYS[3], size)
end
if bytes < 0 then redis.call('SET', KEYS[3], 0) end
redis.call(ARGV[5], ARGV[4], head .. '"message":' .. ARGV[1] .. '}')
return {id, ts}
"#;

/// Most publishes sent in one round of pipelines.
const MAX_BATCH: usize = 1024;

pub struct Publisher {
    pub connection: Connection,
    pub keys: Keys,
    pub max_count: u64,
    pub max_age: Option<Duration>,
    pub max_bytes: u64,
    pub health: std::sync::Arc<Health>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Publisher {
    pub async fn run(self, mut queued: QueueReceiver<()>) {
        while let Some(batch) = queued.next_batch(MAX_BATCH).await {
            if !batch.drafts.is_empty() {
                self.send(batch.drafts.into_iter().zip(batch.answers).collect())
                    .await;
            }
            if batch.stop {
                break;
            }
        }
    }

    /// Sends one pipeline per room, all at once, and answers every publisher.
    async fn send(&self, batch: Vec<(Draft, Answer)>) {
        let mut by_room: HashMap<RoomName, (redis::Pipeline, Vec<Answer>)> = HashMap::new();
        for (draft, answer) in batch {
            let (pipeline, answers) = by_room.entry(draft.room.clone()).or_default();
            pipeline
                .cmd("EVAL")
                .arg(PUBLISH_SCRIPT)
                .arg(3)
                .arg(self.keys.stream(&draft.room))
                .arg(self.keys.sequence(&draft.room))
                .arg(self.keys.bytes(&draft.room))
                .arg(draft.message.get())
                .arg(self.max_count)
                .arg(self.max_age.map_or(0, |age| age.as_millis() as u64))
                .arg(self.keys.channel(&draft.room))
                .arg(self.connection.publish_command())
                .arg(
                    draft
                        .user
                        .as_ref()
                        .map_or(String::new(), |user| user.to_json()),
                )
                .arg(self.max_bytes);
            answers.push(answer);
        }
        let sent = by_room.into_values().map(|(pipeline, answers)| async move {
            let mut connection = self.connection.clone();
            let started = std::time::Instant::now();
            let stored: RedisResult<Vec<(u64, u64)>> = pipeline.query_async(&mut connection).await;
            let metrics = &self.metrics;
            metrics
                .store_commit_seconds
                .record(started.elapsed().as_secs_f64());
            metrics.store_batch_messages.record(answers.len() as f64);
            (stored, answers)
        });
        for (stored, answers) in join_all(sent).await {
            match stored {
                Ok(stored) => {
                    self.health.succeeded();
                    for ((id, ts), answer) in stored.into_iter().zip(answers) {
                        let _ = answer.send(Ok(Accepted { id, ts }));
                    }
                }
                Err(error) => {
                    self.health.failed(&error);
                    let error = EngineError::Unavailable(format!("Redis: {error}"));
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}
