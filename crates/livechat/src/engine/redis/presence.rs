//! Presence across nodes. Each node keeps its members of a room in a hash of its own in the
//! room's slot (`#seq`, `#members`, and each user's connections, with the node's TTL) and relays
//! what changed, at once and then at most once per announcement period: one script writes the
//! hash and publishes the change on the room's channel (never stored in history). A node that opens a room reads every
//! live node's hash, then follows their changes; one that missed a change reads that node's hash
//! again. Typing travels on the channel too.

use std::sync::Arc;

use futures_util::future::join_all;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Health;
use super::connection::Connection;
use super::keys::Keys;
use super::nodes::live_nodes;
use crate::message::Author;
use crate::presence::{ANNOUNCE_EVERY, NodeChange, NodeView, Person, Roster, UserCount, user_key};
use crate::room::RoomName;
use crate::tasks::Tasks;

/// KEYS: the node's presence hash. ARGV: TTL (ms), full (0/1), seq, members, the publish
/// command, the channel, the event, then field and value pairs (an empty value: gone).
const RELAY_SCRIPT: &str = r#"
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
for i = 8, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[4] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], '#seq', ARGV[3], '#members', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
redis.call(ARGV[5], ARGV[6], ARGV[7])
return 1
"#;

/// What nodes say on a room's channel besides messages.
#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChannelEvent {
    Presence {
        node: String,
        seq: u64,
        members: u64,
        full: bool,
        users: Vec<UserCount>,
    },
    Typing {
        user: Author,
    },
}

impl ChannelEvent {
    /// Whether a payload on a room's channel is an event rather than a message.
    pub fn is_event(payload: &[u8]) -> bool {
        payload.starts_with(br#"{"event":"#)
    }

    /// Whether it is a change to a stored message (`crate::change`), for members as it is.
    pub fn is_change(payload: &[u8]) -> bool {
        [
            &br#"{"event":"edited""#[..],
            br#"{"event":"deleted""#,
            br#"{"event":"reaction""#,
        ]
        .iter()
        .any(|prefix| payload.starts_with(prefix))
    }

    /// A presence event as the roster's change.
    pub fn change(seq: u64, members: u64, full: bool, users: Vec<UserCount>) -> NodeChange {
        NodeChange {
            seq,
            members,
            full,
            people: users.into_iter().filter_map(person).collect(),
        }
    }
}

fn person(count: UserCount) -> Option<(Arc<str>, Person)> {
    let user = Author {
        id: count.id,
        name: count.name,
    };
    Some((
        user_key(&user)?,
        Person {
            user: Arc::new(user),
            connections: count.connections,
        },
    ))
}

fn count(person: &Person) -> UserCount {
    UserCount {
        id: person.user.id.clone(),
        name: person.user.name.clone(),
        connections: person.connections,
    }
}

/// Relays this node's changes to the others as they come, at most once per announcement period.
pub struct Relay {
    pub connection: Connection,
    pub keys: Keys,
    pub ttl: std::time::Duration,
    pub roster: Arc<Roster>,
    pub health: Arc<Health>,
}

impl Relay {
    pub async fn run(self, stop: CancellationToken) {
        let script = Script::new(RELAY_SCRIPT);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.roster.changed() => {}
            }
            let relayed = join_all(
                self.roster
                    .take_local_changes()
                    .into_iter()
                    .map(|(room, change)| self.relay(&script, room, change)),
            )
            .await;
            match relayed.into_iter().find(Result::is_err) {
                Some(Err(error)) => {
                    // Retried every period: one line per outage.
                    if !failing {
                        tracing::warn!(%error, "cannot relay presence; will send it whole when Redis is back");
                    }
                    failing = true;
                    self.health.failed(&error);
                    self.roster.relay_everything();
                }
                _ => failing = false,
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
        }
    }

    async fn relay(&self, script: &Script, room: RoomName, change: NodeChange) -> RedisResult<()> {
        let node = self.roster.node();
        let users: Vec<UserCount> = change
            .people
            .iter()
            .map(|(_, person)| count(person))
            .collect();
        let event = ChannelEvent::Presence {
            node: node.to_owned(),
            seq: change.seq,
            members: change.members,
            full: change.full,
            users,
        };
        // A value that cannot be written is logged and counted there; nothing is relayed then
        // (not a Redis failure: the link stays healthy).
        let Ok(event) = crate::json::to_string(&event) else {
            return Ok(());
        };
        let mut people = Vec::with_capacity(change.people.len());
        for (key, person) in &change.people {
            let value = match person.connections {
                0 => String::new(),
                _ => match crate::json::to_string(&count(person)) {
                    Ok(value) => value,
                    Err(_) => return Ok(()),
                },
            };
            people.push((key, value));
        }
        let mut invocation = script.key(self.keys.presence(&room, node));
        invocation
            .arg(self.ttl.as_millis() as u64)
            .arg(u8::from(change.full))
            .arg(change.seq)
            .arg(change.members)
            .arg(self.connection.publish_command())
            .arg(self.keys.channel(&room))
            .arg(event);
        for (key, value) in people {
            invocation.arg(&**key).arg(value);
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async::<i64>(&mut connection).await?;
        Ok(())
    }
}

/// One node's members of `room`, as its hash holds them.
pub async fn read_node(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    node: &str,
) -> RedisResult<NodeView> {
    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(keys.presence(room, node))
        .query_async(connection)
        .await?;
    Ok(node_view(fields))
}

/// Every live node's members of `room`.
pub async fn read_room(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
) -> RedisResult<Vec<(String, NodeView)>> {
    let nodes = live_nodes(connection, keys).await?;
    read_nodes(connection, keys, room, &nodes).await
}

/// The members of `room` on each of `nodes`.
pub async fn read_nodes(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    nodes: &[String],
) -> RedisResult<Vec<(String, NodeView)>> {
    if nodes.is_empty() {
        return Ok(Vec::new()); // An empty pipeline is an error.
    }
    let mut pipeline = redis::pipe();
    for node in nodes {
        pipeline.cmd("HGETALL").arg(keys.presence(room, node));
    }
    let hashes: Vec<Vec<(String, String)>> = pipeline.query_async(connection).await?;
    Ok(nodes
        .iter()
        .cloned()
        .zip(hashes.into_iter().map(node_view))
        .collect())
}

fn node_view(fields: Vec<(String, String)>) -> NodeView {
    let mut view = NodeView::default();
    for (field, value) in fields {
        match field.as_str() {
            "#seq" => view.seq = value.parse().unwrap_or(0),
            "#members" => view.members = value.parse().unwrap_or(0),
            _ => {
                if let Some((key, person)) = serde_json::from_str(&value).ok().and_then(person) {
                    view.people.insert(key, person);
                }
            }
        }
    }
    view
}

/// Publishes that `user` is typing in `room` (not waited for; lost if Redis is down).
pub fn typing(connection: &Connection, keys: &Keys, room: &RoomName, user: Author, tasks: &Tasks) {
    // Logged and counted there if it cannot be written; nothing is relayed then.
    let Ok(event) = crate::json::to_string(&ChannelEvent::Typing { user }) else {
        return;
    };
    let mut command = redis::cmd(connection.publish_command());
    command.arg(keys.channel(room)).arg(event);
    let mut connection = connection.clone();
    // Bounded by the Redis timeout.
    tasks.spawn_to_end(async move {
        if let Err(error) = command.query_async::<i64>(&mut connection).await {
            tracing::debug!(%error, "typing not relayed");
        }
    });
}
