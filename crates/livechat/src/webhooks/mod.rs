//! Webhooks: what happened (messages, who came and went), told to the app after the fact, at
//! least once, in order per room, batched and signed (docs/hooks.md).

/// The kinds of event the app can be told (`LIVECHAT_WEBHOOK_EVENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum EventKind {
    Message,
    Join,
    Leave,
    RoomOccupied,
    RoomVacated,
}
