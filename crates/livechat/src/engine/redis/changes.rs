//! Changes to stored messages on Redis (see `crate::change`): one script per change, run by the
//! publisher in order with the room's publishes, that checks who may make it, makes it and
//! publishes the members' event on the room's channel, atomically. An edited or deleted message
//! leaves the stream for the room's `changes` hash (its old text is gone); reactions are members
//! of the room's `reacted` sorted set (`ID\tEMOJI\tUSER`, scored by the message's id).

use std::sync::LazyLock;

use redis::{RedisResult, Script, Value};

use super::connection::Connection;
use super::keys::Keys;
use crate::change::{Change, ChangeKind, ChangeRefused, Changed, MAX_EMOJI_PER_MESSAGE};
use crate::presence::user_key;

/// KEYS: stream, sequence, byte total, moved ids, changes, changed positions, change counter,
/// reacted, then the webhook outbox and its byte total when ARGV[13] is not empty.
/// ARGV: kind (`edit`, `delete`, `react`, `unreact`), the message's id, the asker's user key,
/// the asker as JSON, `1` for a moderator, the edit window in ms (`0`: none), the new text
/// (edit), the emoji as JSON (reactions), channel, publish command, room name (JSON), room TTL
/// in ms, the outbox's most bytes (empty: none), most emoji per message.
/// Returns `{"refused", REASON}` or `{"ok", N}`: N the edit's time, or the emoji's count.
const CHANGE_SCRIPT: &str = r#"
local kind, id = ARGV[1], ARGV[2]
local n = tonumber(id)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if not n or n < 1 or n > last then return {'refused', 'not_found'} end
local record = {}
local entry = redis.call('XRANGE', KEYS[1], id .. '-0', id .. '-0')[1]
if entry then
  local fields = entry[2]
  for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
  record.t = record.ts
else
  local fields = {'m', 't', 'u', 'n', 'r', 'e', 'd'}
  local keys = {}
  for i, field in ipairs(fields) do keys[i] = id .. ':' .. field end
  local values = redis.call('HMGET', KEYS[5], unpack(keys))
  for i, field in ipairs(fields) do if values[i] then record[field] = values[i] end end
  if not record.t then return {'refused', 'gone'} end
end
if record.d then return {'refused', 'deleted'} end
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if (kind == 'edit' or kind == 'delete') and ARGV[5] ~= '1' then
  local author = ''
  if record.u then
    local user = cjson.decode(record.u)
    if user.id then author = 'i:' .. tostring(user.id)
    elseif user.name then author = 'n:' .. user.name end
  end
  if author == '' or author ~= ARGV[3] then return {'refused', 'not_allowed'} end
  if ARGV[6] ~= '0' and ts - tonumber(record.t) > tonumber(ARGV[6]) then
    return {'refused', 'too_late'}
  end
end
local room = ARGV[11]
local event, answer
if kind == 'edit' or kind == 'delete' then
  if entry then
    local size = string.len(record.m or '') + string.len(record.u or '') + string.len(record.n or '')
    redis.call('XDEL', KEYS[1], entry[1])
    if redis.call('DECRBY', KEYS[3], size) < 0 then redis.call('SET', KEYS[3], 0) end
    redis.call('ZADD', KEYS[4], n, id)
  end
  if kind == 'edit' then
    redis.call('HSET', KEYS[5], id .. ':m', ARGV[7], id .. ':t', record.t, id .. ':e', ts)
    for _, field in ipairs({'u', 'n', 'r'}) do
      if record[field] then redis.call('HSET', KEYS[5], id .. ':' .. field, record[field]) end
    end
    event = '{"event":"edited","room":' .. room .. ',"id":' .. id .. ',"message":' .. ARGV[7]
      .. ',"edited_ts":' .. ts .. ',"by":' .. ARGV[4] .. '}'
    answer = ts
  else
    for _, field in ipairs({'m', 'u', 'n', 'r', 'e'}) do redis.call('HDEL', KEYS[5], id .. ':' .. field) end
    redis.call('HSET', KEYS[5], id .. ':d', 1, id .. ':t', record.t)
    redis.call('ZREMRANGEBYSCORE', KEYS[8], n, n)
    event = '{"event":"deleted","room":' .. room .. ',"id":' .. id .. ',"by":' .. ARGV[4] .. '}'
    answer = 0
  end
else
  local member = id .. '\t' .. ARGV[8] .. '\t' .. ARGV[3]
  local mine, kinds, count = false, {}, 0
  local prefix = id .. '\t' .. ARGV[8] .. '\t'
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', KEYS[8], n, n)) do
    local emoji = string.match(other, '^%d+\t(.-)\t')
    if emoji then kinds[emoji] = true end
    if other == member then mine = true end
    if string.sub(other, 1, string.len(prefix)) == prefix then count = count + 1 end
  end
  if kind == 'react' and not mine then
    local distinct = 0
    for _ in pairs(kinds) do distinct = distinct + 1 end
    if not kinds[ARGV[8]] and distinct >= tonumber(ARGV[14]) then return {'refused', 'too_many_emoji'} end
    redis.call('ZADD', KEYS[8], n, member)
    count = count + 1
  elseif kind == 'unreact' and mine then
    redis.call('ZREM', KEYS[8], member)
    count = count - 1
  end
  event = '{"event":"reaction","room":' .. room .. ',"id":' .. id .. ',"emoji":' .. ARGV[8]
    .. ',"user":' .. ARGV[4] .. ',"count":' .. count .. ',"on":' .. tostring(kind == 'react') .. '}'
  answer = count
end
local seq = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[5], id .. ':s', seq)
redis.call('ZADD', KEYS[6], last, id)
if ARGV[12] ~= '0' then
  for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], ARGV[12]) end
end
redis.call(ARGV[10], ARGV[9], event)
if ARGV[13] ~= '' and kind ~= 'react' and kind ~= 'unreact' then
  local app = '{"type":"deleted","room":' .. room .. ',"ts":' .. ts .. ',"id":' .. id
    .. ',"by":' .. ARGV[4] .. '}'
  if kind == 'edit' then
    app = '{"type":"edited","room":' .. room .. ',"ts":' .. ts .. ',"id":' .. id .. ',"by":'
      .. ARGV[4] .. ',"message":' .. ARGV[7] .. ',"edited_ts":' .. ts .. '}'
  end
  local size = string.len(app)
  if tonumber(redis.call('GET', KEYS[10]) or '0') + size <= tonumber(ARGV[13]) then
    redis.call('XADD', KEYS[9], '*', 't', ts, 'e', app)
    redis.call('INCRBY', KEYS[10], size)
  end
end
return {'ok', tostring(answer)}
"#;

static CHANGE: LazyLock<Script> = LazyLock::new(|| Script::new(CHANGE_SCRIPT));

/// Makes `change`; `outbox`: the webhook outbox's keys and most bytes, when its events are added
/// by the script (not on a cluster).
pub async fn make(
    connection: &mut Connection,
    keys: &Keys,
    change: &Change,
    edit_window_ms: u64,
    room_ttl_ms: u64,
    outbox: Option<u64>,
) -> RedisResult<Result<Changed, ChangeRefused>> {
    let room = &change.room;
    let (kind, text, emoji) = match &change.kind {
        ChangeKind::Edit(message) => ("edit", message.get(), String::new()),
        ChangeKind::Delete => ("delete", "", String::new()),
        ChangeKind::React { emoji, on } => (
            if *on { "react" } else { "unreact" },
            "",
            serde_json::Value::from(emoji.as_str()).to_string(),
        ),
    };
    let mut invocation = CHANGE.prepare_invoke();
    invocation
        .key(keys.stream(room))
        .key(keys.sequence(room))
        .key(keys.bytes(room))
        .key(keys.moved(room))
        .key(keys.changes(room))
        .key(keys.changed(room))
        .key(keys.change_counter(room))
        .key(keys.reacted(room));
    if outbox.is_some() {
        invocation.key(keys.outbox()).key(keys.outbox_bytes());
    }
    invocation
        .arg(kind)
        .arg(change.id)
        .arg(user_key(&change.by).map_or(String::new(), |key| key.to_string()))
        .arg(change.by.to_json())
        .arg(if change.moderator { "1" } else { "0" })
        .arg(edit_window_ms)
        .arg(text)
        .arg(emoji)
        .arg(keys.channel(room))
        .arg(connection.publish_command())
        .arg(serde_json::Value::from(room.as_str()).to_string())
        .arg(room_ttl_ms)
        .arg(outbox.map_or(String::new(), |bytes| bytes.to_string()))
        .arg(MAX_EMOJI_PER_MESSAGE);
    let answer: Vec<Value> = invocation.invoke_async(connection).await?;
    let text_at = |index: usize| {
        answer
            .get(index)
            .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
            .unwrap_or_default()
    };
    let id = change.id;
    if text_at(0) == "refused" {
        return Ok(Err(match text_at(1).as_str() {
            "deleted" => ChangeRefused::Deleted { id },
            "gone" => ChangeRefused::Gone { id },
            "not_allowed" => ChangeRefused::NotAllowed { id },
            "too_late" => ChangeRefused::TooLate {
                window_s: edit_window_ms / 1000,
            },
            "too_many_emoji" => ChangeRefused::TooManyEmoji { id },
            _ => ChangeRefused::NotFound { id },
        }));
    }
    let number: u64 = text_at(1).parse().unwrap_or(0);
    Ok(Ok(match &change.kind {
        ChangeKind::Edit(message) => Changed::Edited {
            room: room.clone(),
            id,
            message: message.clone(),
            edited_ts: number,
            by: change.by.clone(),
        },
        ChangeKind::Delete => Changed::Deleted {
            room: room.clone(),
            id,
            by: change.by.clone(),
        },
        ChangeKind::React { emoji, on } => Changed::Reacted {
            room: room.clone(),
            id,
            emoji: emoji.clone(),
            user: change.by.clone(),
            count: number,
            on: *on,
        },
    }))
}
