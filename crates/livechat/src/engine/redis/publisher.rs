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

/// KEYS: stream, sequence. ARGV: message JSON, max count, max age in ms (0: none), channel,
/// publish command, author JSON (empty: none). Returns {id, ts}. The frame published is
/// `{"id":N,"ts":T,"user":U,"message":X}` (`user` only with an author).
const PUBLISH_SCRIPT: &str = r#"
local id = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local head = string.format('{"id":%d,"ts":%d,', id, ts)
if ARGV[6] == '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], string.format('%d-0', id),
             'ts', string.format('%d', ts), 'm', ARGV[1])
else
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], string.format('%d-0', id),
             'ts', string.format('%d', ts), 'm', ARGV[1], 'u', ARGV[6])
  head = head .. '"user":' .. ARGV[6] .. ','
end
local max_age = tonumber(ARGV[3])
if max_age > 0 then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 16)) do
    if tonumber(entry[2][2]) >= ts - max_age then break end
    redis.call('XDEL', KEYS[1], entry[1])
  end
end
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
    pub health: std::sync::Arc<Health>,
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
                .arg(2)
                .arg(self.keys.stream(&draft.room))
                .arg(self.keys.sequence(&draft.room))
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
                );
            answers.push(answer);
        }
        let sent = by_room.into_values().map(|(pipeline, answers)| async move {
            let mut connection = self.connection.clone();
            let stored: RedisResult<Vec<(u64, u64)>> = pipeline.query_async(&mut connection).await;
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
