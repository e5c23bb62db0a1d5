//! Prometheus metrics (`GET /metrics`, text format), with `metrics` and
//! `metrics-exporter-prometheus`: its output is Prometheus' own text format, which `promtool check
//! metrics` accepts as is (prometheus-client writes OpenMetrics, whose `_total` names promtool's
//! linter flags). Every series is a handle registered once on a recorder this server owns (no
//! global recorder, no lookup by name when counting): counting is an atomic add, and the fan-out
//! counts per delivered batch, not per frame.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 4096.0,
];

const HOOK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];
const DELIVERY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Why a publish was refused.
#[derive(Debug, Clone, Copy)]
pub enum PublishError {
    StoreUnavailable,
    Overloaded,
    ShuttingDown,
    RateLimited,
    Forbidden,
    /// The publish hook refused it.
    HookRefused,
    /// The publish hook failed, and failures are rejected.
    HookFailed,
    /// The publish cannot be stored as it is (a reply to no message).
    Invalid,
    /// The sender is banned or muted.
    Barred,
    /// The disk holding the embedded history is full.
    StorageFull,
    /// Something the publish needed could not be written as JSON (a bug).
    Unencodable,
}

/// Why the server closed (or lost) a WebSocket connection.
#[derive(Debug, Clone, Copy)]
pub enum CloseReason {
    /// The client sent a close frame.
    Client,
    /// The connection ended without a close frame.
    ClientGone,
    Protocol,
    SlowConsumer,
    Shutdown,
    RateLimit,
    /// The token expired.
    Auth,
    /// No answer to a ping.
    Timeout,
    /// A moderator disconnected the user, or banned it from the room.
    Moderated,
}

/// One of the app's URLs livechat calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect,
    Publish,
    Webhook,
}

/// How a call to the app went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOutcome {
    /// Accepted (a webhook batch: acknowledged).
    Accepted,
    /// The publish hook gave another message.
    Rewritten,
    /// A 401/403 (connect) or 4xx (publish): the app said no.
    Refused,
    /// No usable answer: timeout, unreachable, another status, nonsense.
    Failed,
    /// A connect hook answer reused (cached, or a call in flight joined).
    Reused,
}

const HOOKS: [&str; 3] = ["connect", "publish", "webhook"];
const HOOK_OUTCOMES: [&str; 5] = ["accepted", "rewritten", "refused", "failed", "reused"];

/// Label values, in the order of `PublishError`.
const PUBLISH_ERRORS: [&str; 11] = [
    "store_unavailable",
    "overloaded",
    "shutting_down",
    "rate_limited",
    "forbidden",
    "hook_refused",
    "hook_failed",
    "invalid",
    "barred",
    "storage_full",
    "unencodable",
];

/// What became of a message read from the Django Channels layer.
#[derive(Debug, Clone, Copy)]
pub enum LayerIn {
    /// Published in its room.
    Published,
    /// Of another type, or for no room livechat serves.
    Ignored,
    /// Not a message livechat can read (not msgpack, a wrong key, no `message`, bytes...).
    Malformed,
    /// Its `message` is larger than `LIVECHAT_MAX_MESSAGE_BYTES`.
    Oversized,
    /// The layer's expiry passed before it was read: lost.
    Expired,
    /// The store refused it for good (a refusal, not an outage).
    Refused,
}

/// What became of a message livechat sent to the Django Channels layer.
#[derive(Debug, Clone, Copy)]
pub enum LayerOut {
    /// Sent to the room's group (counted once, whatever the group's size).
    Sent,
    /// A channel of the group was at its capacity: it did not get the message.
    OverCapacity,
    /// Not sent: too much was waiting for the layer (it was down or slow).
    Dropped,
}

const LAYER_IN: [&str; 6] = [
    "published",
    "ignored",
    "malformed",
    "oversized",
    "expired",
    "refused",
];
const LAYER_OUT: [&str; 3] = ["sent", "over_capacity", "dropped"];

/// Label values, in the order of `CloseReason`.
const CLOSE_REASONS: [&str; 9] = [
    "client",
    "client_gone",
    "protocol",
    "slow_consumer",
    "shutdown",
    "rate_limit",
    "auth",
    "timeout",
    "moderated",
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub connections: Gauge,
    /// Of those, the ones parked: idle, without a task (`transport::parking`).
    pub connections_parked: Gauge,
    pub rooms: Gauge,
    published_ws: Counter,
    published_http: Counter,
    pub deliveries: Counter,
    /// Publishes answered with an earlier message (their nonce was seen).
    pub duplicates: Counter,
    /// Read receipts not sent: too many gathered within a second.
    pub receipts_dropped: Counter,
    /// Frames compressed for permessage-deflate members (once per frame, not per member).
    pub frames_compressed: Counter,
    /// Frames whose value could not be written as JSON (counted by `outgoing`, read at render).
    frames_unencodable: Counter,
    publish_errors: Vec<Counter>,
    closes: Vec<Counter>,
    pub store_commit_seconds: Histogram,
    pub store_batch_messages: Histogram,
    pub redis_errors: Counter,
    pub redis_reconnects: Counter,
    /// By hook, then outcome.
    hook_calls: Vec<Counter>,
    hook_seconds: Vec<Histogram>,
    /// Webhook events waiting in the outbox, delivered, and dropped because it was full.
    pub webhook_pending: Gauge,
    pub webhook_delivery_seconds: Histogram,
    pub webhook_events_dropped: Counter,
    /// 1 while the disk holding the embedded history is full (publishes refused), else 0.
    pub store_full: Gauge,
    /// 1 while the Django Channels layer's Redis answers, 0 while it does not.
    pub channels_layer_up: Gauge,
    layer_in: Vec<Counter>,
    layer_out: Vec<Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("livechat_store_commit_seconds".into()),
                COMMIT_BUCKETS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("livechat_store_batch_messages".into()),
                    BATCH_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("livechat_hook_seconds".into()),
                    HOOK_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("livechat_webhook_delivery_seconds".into()),
                    DELIVERY_BUCKETS,
                )
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let describe =
            |name: &'static str, unit: Option<Unit>, help: &'static str| (name, unit, help);
        let descriptions = [
            describe("livechat_connections", None, "Open WebSocket connections."),
            describe(
                "livechat_connections_parked",
                None,
                "Open WebSocket connections parked: idle, without a task of their own.",
            ),
            describe("livechat_rooms", None, "Rooms with members on this node."),
            describe(
                "livechat_messages_published_total",
                None,
                "Messages stored, by transport.",
            ),
            describe(
                "livechat_publish_duplicates_total",
                None,
                "Publishes whose nonce was already stored: answered, not stored again.",
            ),
            describe(
                "livechat_receipts_dropped_total",
                None,
                "Read receipts not sent: more users and rooms read within a second than are gathered.",
            ),
            describe(
                "livechat_frames_compressed_total",
                None,
                "Frames compressed for WebSocket clients with permessage-deflate: once per room frame, whatever the number of such members.",
            ),
            describe(
                "livechat_frames_unencodable_total",
                None,
                "Values the server could not write as JSON (a bug; see the log): an error frame went out in place of a frame, or the call, write or event that needed it failed.",
            ),
            describe(
                "livechat_deliveries_total",
                None,
                "Messages handed to WebSocket clients.",
            ),
            describe(
                "livechat_publish_errors_total",
                None,
                "Publishes refused, by reason.",
            ),
            describe(
                "livechat_connections_closed_total",
                None,
                "WebSocket connections ended, by reason.",
            ),
            describe(
                "livechat_store_commit_seconds",
                Some(Unit::Seconds),
                "Time to store one batch.",
            ),
            describe(
                "livechat_store_batch_messages",
                None,
                "Messages stored per batch.",
            ),
            describe(
                "livechat_redis_errors_total",
                None,
                "Redis commands or connections that failed.",
            ),
            describe(
                "livechat_redis_reconnects_total",
                None,
                "Times the Redis connection came back.",
            ),
            describe(
                "livechat_http_requests_total",
                None,
                "HTTP requests, by route and status.",
            ),
            describe(
                "livechat_hook_calls_total",
                None,
                "Calls to the app's hooks and webhook URL, by hook and outcome.",
            ),
            describe(
                "livechat_hook_seconds",
                Some(Unit::Seconds),
                "Time for the app to answer a hook call (waiting for a turn included).",
            ),
            describe(
                "livechat_webhook_pending",
                None,
                "Webhook events in the outbox, not yet acknowledged.",
            ),
            describe(
                "livechat_webhook_delivery_seconds",
                Some(Unit::Seconds),
                "From a webhook event's time to its acknowledgement by the app.",
            ),
            describe(
                "livechat_webhook_events_dropped_total",
                None,
                "Webhook events not recorded because the outbox was full.",
            ),
            describe(
                "livechat_store_full",
                None,
                "1 while the disk holding the embedded history is full and publishes are refused.",
            ),
            describe(
                "livechat_channels_layer_up",
                None,
                "1 while the Django Channels layer's Redis answers, 0 while it does not.",
            ),
            describe(
                "livechat_channels_received_total",
                None,
                "Messages read from the Django Channels layer, by what became of them.",
            ),
            describe(
                "livechat_channels_sent_total",
                None,
                "Messages sent to the Django Channels layer, by outcome.",
            ),
        ];
        for (name, unit, help) in descriptions {
            if name.ends_with("_seconds") || name.ends_with("_messages") {
                recorder.describe_histogram(name.into(), unit, help.into());
            } else if matches!(
                name,
                "livechat_connections"
                    | "livechat_connections_parked"
                    | "livechat_rooms"
                    | "livechat_webhook_pending"
                    | "livechat_store_full"
                    | "livechat_channels_layer_up"
            ) {
                recorder.describe_gauge(name.into(), unit, help.into());
            } else {
                recorder.describe_counter(name.into(), unit, help.into());
            }
        }
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &metadata)
        };
        let labelled = |name: &'static str, label: &'static str, value: &'static str| {
            counter(name, vec![Label::new(label, value)])
        };
        let metrics = Self {
            handle: recorder.handle(),
            connections: recorder
                .register_gauge(&Key::from_static_name("livechat_connections"), &metadata),
            connections_parked: recorder.register_gauge(
                &Key::from_static_name("livechat_connections_parked"),
                &metadata,
            ),
            rooms: recorder.register_gauge(&Key::from_static_name("livechat_rooms"), &metadata),
            published_ws: labelled("livechat_messages_published_total", "transport", "ws"),
            published_http: labelled("livechat_messages_published_total", "transport", "http"),
            deliveries: counter("livechat_deliveries_total", Vec::new()),
            duplicates: counter("livechat_publish_duplicates_total", Vec::new()),
            receipts_dropped: counter("livechat_receipts_dropped_total", Vec::new()),
            frames_compressed: counter("livechat_frames_compressed_total", Vec::new()),
            frames_unencodable: counter("livechat_frames_unencodable_total", Vec::new()),
            publish_errors: PUBLISH_ERRORS
                .iter()
                .map(|reason| labelled("livechat_publish_errors_total", "reason", reason))
                .collect(),
            closes: CLOSE_REASONS
                .iter()
                .map(|reason| labelled("livechat_connections_closed_total", "reason", reason))
                .collect(),
            store_commit_seconds: recorder.register_histogram(
                &Key::from_static_name("livechat_store_commit_seconds"),
                &metadata,
            ),
            store_batch_messages: recorder.register_histogram(
                &Key::from_static_name("livechat_store_batch_messages"),
                &metadata,
            ),
            redis_errors: counter("livechat_redis_errors_total", Vec::new()),
            redis_reconnects: counter("livechat_redis_reconnects_total", Vec::new()),
            hook_calls: HOOKS
                .iter()
                .flat_map(|hook| {
                    HOOK_OUTCOMES.iter().map(|outcome| {
                        counter(
                            "livechat_hook_calls_total",
                            vec![Label::new("hook", *hook), Label::new("outcome", *outcome)],
                        )
                    })
                })
                .collect(),
            hook_seconds: HOOKS
                .iter()
                .map(|hook| {
                    recorder.register_histogram(
                        &Key::from_parts("livechat_hook_seconds", vec![Label::new("hook", *hook)]),
                        &metadata,
                    )
                })
                .collect(),
            webhook_pending: recorder.register_gauge(
                &Key::from_static_name("livechat_webhook_pending"),
                &metadata,
            ),
            webhook_delivery_seconds: recorder.register_histogram(
                &Key::from_static_name("livechat_webhook_delivery_seconds"),
                &metadata,
            ),
            webhook_events_dropped: counter("livechat_webhook_events_dropped_total", Vec::new()),
            store_full: recorder
                .register_gauge(&Key::from_static_name("livechat_store_full"), &metadata),
            channels_layer_up: recorder.register_gauge(
                &Key::from_static_name("livechat_channels_layer_up"),
                &metadata,
            ),
            layer_in: LAYER_IN
                .iter()
                .map(|outcome| labelled("livechat_channels_received_total", "outcome", outcome))
                .collect(),
            layer_out: LAYER_OUT
                .iter()
                .map(|outcome| labelled("livechat_channels_sent_total", "outcome", outcome))
                .collect(),
            recorder,
        };
        Arc::new(metrics)
    }

    pub fn published(&self, over_http: bool) {
        match over_http {
            true => self.published_http.increment(1),
            false => self.published_ws.increment(1),
        }
    }

    pub fn publish_error(&self, error: PublishError) {
        self.publish_errors[error as usize].increment(1);
    }

    pub fn hook_call(&self, hook: Hook, outcome: HookOutcome) {
        self.hook_calls[hook as usize * HOOK_OUTCOMES.len() + outcome as usize].increment(1);
    }

    pub fn hook_seconds(&self, hook: Hook) -> &Histogram {
        &self.hook_seconds[hook as usize]
    }

    pub fn layer_in(&self, outcome: LayerIn, count: u64) {
        self.layer_in[outcome as usize].increment(count);
    }

    pub fn layer_out(&self, outcome: LayerOut, count: u64) {
        self.layer_out[outcome as usize].increment(count);
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].increment(1);
    }

    /// One HTTP request answered; `route` is the route's pattern, never the path itself (rooms
    /// would make a series each).
    pub fn http_request(&self, route: &str, status: u16) {
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.recorder
            .register_counter(
                &Key::from_parts("livechat_http_requests_total", labels),
                &metadata,
            )
            .increment(1);
    }

    /// The text exposition; `rooms` is read now, the rest is counted as it happens.
    pub fn render(&self, rooms: usize) -> String {
        self.rooms.set(rooms as f64);
        self.frames_unencodable
            .absolute(crate::json::unencodable_values());
        self.handle.run_upkeep();
        self.handle.render()
    }
}
