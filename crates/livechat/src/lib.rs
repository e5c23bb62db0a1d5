//! livechat: a real-time chat server that speaks the Django Channels live chat API (WebSocket rooms,
//! `POST /chat/send/`, `GET /chat/history/`) and keeps a durable history.
//!
//! The path of a message: `transport` (a socket or HTTP request) -> `engine` (stores it and
//! gives it its place in the room's order) -> `hub` (fans it out to local sockets). Who is in
//! each room is the `presence` roster's, which the hub keeps told of its members.

pub mod auth;
pub mod bridge;
pub mod change;
pub mod config;
pub mod control;
pub mod engine;
pub mod epoch;
pub mod hooks;
pub mod hub;
pub mod json;
pub mod keepalive;
pub mod message;
pub mod metrics;
pub mod moderation;
pub mod outbound;
pub mod outgoing;
pub mod pacer;
pub mod presence;
pub mod rate;
pub mod receipts;
pub mod room;
pub mod store;
pub mod tasks;
pub mod throttle;
pub mod transport;
pub mod webhooks;
pub mod websocket;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tasks::Tasks;

use crate::auth::{Auth, AuthSettings, AuthSetupError};
use crate::bridge::{Bridge, BridgeParts};
use crate::config::{Config, StoreKind};
use crate::engine::{EmbeddedEngine, Engine, RedisEngine, RedisSettings, RoomRegistry};
use crate::hooks::{Endpoint, Hooks};
use crate::hub::Hub;
use crate::keepalive::KeepaliveSettings;
use crate::metrics::Metrics;
use crate::moderation::Moderation;
use crate::outbound::QueueLimits;
use crate::pacer::Pacer;
use crate::presence::Roster;
use crate::rate::RateLimit;
use crate::receipts::Receipts;
use crate::store::{HistoryStore, MemoryStore, Retention, SqliteStore, StoreError};
use crate::transport::parking::Parking;
use crate::transport::{Admission, AppState, OriginPolicy, Shared, TlsError, TrustedProxies};
use crate::webhooks::WebhookSettings;
use crate::websocket::deflate;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("cannot read LIVECHAT_JWT_PUBLIC_KEY {path}: {source}")]
    PublicKey {
        path: String,
        source: std::io::Error,
    },
    #[error("LIVECHAT_ALLOWED_ORIGINS: {0}")]
    Origins(String),
    #[error("LIVECHAT_TRUSTED_PROXIES: {0}")]
    TrustedProxies(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen for metrics on {bind}: {source}")]
    MetricsBind {
        bind: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot use Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis settings: {0}")]
    RedisSettings(&'static str),
    #[error("{0}")]
    Settings(String),
    #[error("hooks: {0}")]
    Hooks(String),
    #[error("cannot watch idle connections (epoll): {0}")]
    Parking(std::io::Error),
}

/// Serves on `listener` until `shutdown` is cancelled, then closes every WebSocket with 1001,
/// stores everything already accepted and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    Server::start(config).await?.serve(listener, shutdown).await;
    Ok(())
}

/// A server with everything it needs checked and open (settings, keys, the store or Redis), not
/// yet listening: whatever cannot work fails here, before anyone is told it is listening.
pub struct Server {
    state: AppState,
    hub: Arc<Hub>,
    roster: Arc<Roster>,
    engine: Arc<dyn Engine>,
    connections: TaskTracker,
    /// Every background task, and shutdown's way to end them.
    tasks: Tasks,
    keepalive: KeepaliveSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// `GET /metrics` on an address of its own, bound before the server is announced.
    metrics_listener: Option<TcpListener>,
    request_timeout: std::time::Duration,
    shutdown_timeout: std::time::Duration,
    /// The app's webhook: where events go, and which.
    webhook: Option<(Endpoint, WebhookSettings)>,
    metrics: Arc<Metrics>,
    moderation: Arc<Moderation>,
    receipts: Arc<Receipts>,
    /// The Django Channels layer bridge, when `LIVECHAT_CHANNELS_LAYER` is set.
    bridge: Option<Arc<Bridge>>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Self, RunError> {
        let retention = Retention {
            max_count: config.history_max_count,
            max_age: config.history_max_age,
            max_bytes: config.history_max_bytes,
            dedupe_window: config.dedupe_window,
        };
        for warning in config.check().map_err(RunError::Settings)? {
            tracing::warn!("{warning}");
        }
        let auth = start_auth(&config)?;
        let origins = OriginPolicy::new(&config.allowed_origins).map_err(RunError::Origins)?;
        let trusted_proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(RunError::TrustedProxies)?;
        let admission = Admission::new(config.max_connections, config.max_connections_per_ip);
        let tls = transport::tls_acceptor(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
        let tasks = Tasks::new();
        let rate_limit = config.rate_limit.map(|rate| {
            let limit = RateLimit::new(rate, config.rate_burst);
            (limit, limit.for_http(&tasks))
        });
        let metrics = Metrics::new();
        let hooks = start_hooks(&config, &metrics).map_err(RunError::Hooks)?;
        let webhook = start_webhook(&config, &metrics).map_err(RunError::Hooks)?;
        let recorded = webhook.as_ref().map(|(_, settings)| *settings);
        let metrics_listener = match &config.metrics_bind {
            Some(bind) => Some(TcpListener::bind(bind.as_str()).await.map_err(|source| {
                RunError::MetricsBind {
                    bind: bind.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let (hub, roster, engine) = match config.redis_urls() {
            Some(urls) => start_redis(&config, urls, retention, &metrics, recorded, &tasks).await?,
            None => start_embedded(&config, retention, &metrics, recorded, &tasks)?,
        };
        if recorded.is_some_and(|settings| settings.wants_presence()) {
            roster.tell_the_app();
        }
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            max_connections = admission.max_total(),
            settings = %config.summary(),
            "livechat ready"
        );
        tracing::info!("what is kept: {}", config.exposure());
        let moderation = Moderation::new(
            engine.clone(),
            recorded,
            tasks.clone(),
            hooks.connect.clone(),
        );
        let receipts = Receipts::new(engine.clone(), metrics.receipts_dropped.clone());
        engine.set_moderation(moderation.clone());
        moderation.reload().await;
        let bridge = Bridge::start(
            &config.channels,
            BridgeParts {
                engine: engine.clone(),
                hub: hub.clone(),
                metrics: metrics.clone(),
                node: random_node_id(),
                max_message_bytes: config.max_message_bytes,
                timeout: config.redis_timeout,
            },
        )
        .map_err(RunError::Settings)?;
        let connections = TaskTracker::new();
        let parking =
            Parking::new(metrics.connections_parked.clone()).map_err(RunError::Parking)?;
        let state = AppState::new(Shared {
            hub: hub.clone(),
            roster: roster.clone(),
            engine: engine.clone(),
            default_room: config.default_room.clone(),
            max_message_bytes: config.max_message_bytes,
            history_page_bytes: config.history_page_bytes,
            replay_max: config.replay_max,
            connections: connections.clone(),
            parking,
            auth,
            origins,
            rate_limit,
            admission,
            trusted_proxies,
            request_timeout: config.request_timeout,
            close_timeout: config.shutdown_timeout,
            tls: tls.is_some(),
            metrics: metrics.clone(),
            metrics_here: config.metrics_bind.is_none(),
            page: config.page == config::Switch::On,
            compression: config.compression == config::Switch::On,
            history_reads: config.history_reads,
            room_list: config.room_list,
            hooks,
            moderation: moderation.clone(),
            receipts: receipts.clone(),
            bridge: bridge.clone(),
        });
        Ok(Self {
            state,
            hub,
            roster,
            engine,
            connections,
            tasks,
            keepalive: KeepaliveSettings {
                ping_interval: config.ping_interval,
                pong_timeout: config.pong_timeout,
            },
            tls,
            metrics_listener,
            request_timeout: config.request_timeout,
            shutdown_timeout: config.shutdown_timeout,
            webhook,
            metrics,
            moderation,
            receipts,
            bridge,
        })
    }

    /// Serves on `listener` until `shutdown` is cancelled, then closes every WebSocket with
    /// 1001, stores everything already accepted and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let tasks = &self.tasks;
        tasks.spawn(keepalive::run(self.hub.clone(), self.keepalive));
        tasks.spawn(self.state.parking.clone().run());
        tasks.spawn(self.moderation.clone().run());
        tasks.spawn(self.receipts.clone().run());
        let outbox = self.engine.outbox();
        let tell = match (&outbox, &self.webhook) {
            (Some(outbox), Some((_, settings))) => Some((outbox.clone(), *settings)),
            _ => None,
        };
        tasks.spawn(presence::run(self.roster.clone(), self.hub.clone(), tell));
        if let (Some(outbox), Some((endpoint, _))) = (outbox, self.webhook) {
            // It stops between deliveries; one under way may take up to the hook timeout.
            tasks.spawn_to_end(webhooks::sender::run(
                outbox,
                endpoint,
                self.metrics.clone(),
                shutdown.clone(),
            ));
        }
        // The bridge stops once the connections have (what they publish until then still
        // reaches the layer), and before the engine (it publishes what it reads there).
        let bridge_part = tasks.part();
        let bridge_end = self.bridge.clone().map(|bridge| {
            let (ended, end) = tokio::sync::oneshot::channel::<()>();
            let stop = bridge_part.token();
            bridge_part.spawn_to_end(async move {
                bridge.run(stop).await;
                let _ = ended.send(());
            });
            end
        });
        // On SIGTERM/SIGINT the hub tells every WebSocket connection to close with 1001.
        let closing_hub = self.hub.clone();
        let signal = shutdown.clone();
        tasks.spawn(async move {
            signal.cancelled().await;
            closing_hub.close_all();
        });
        if let Some(listener) = self.metrics_listener {
            if let Ok(address) = listener.local_addr() {
                tracing::info!("metrics on http://{address}/metrics");
            }
            let app = transport::metrics_router().with_state(self.state.clone());
            tasks.spawn_to_end(transport::serve(
                listener,
                app,
                None,
                self.request_timeout,
                shutdown.clone(),
            ));
        }
        let app = transport::router(self.state);
        transport::serve(listener, app, self.tls, self.request_timeout, shutdown).await;
        self.connections.close();
        if tokio::time::timeout(self.shutdown_timeout, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some WebSocket clients did not close in time");
        }
        // The bridge sends what is waiting (one try each) and stops; a read under way takes up
        // to a second and the Redis timeout.
        bridge_part.stop();
        if let Some(bridge_end) = bridge_end {
            let _ = tokio::time::timeout(self.shutdown_timeout, bridge_end).await;
        }
        // After the last connection: the engine stores what they published, then stops.
        self.engine.shutdown().await;
        match self.tasks.stop_all(self.shutdown_timeout).await {
            0 => tracing::info!("every background task ended"),
            left => tracing::warn!(left, "background tasks did not end in time"),
        }
        tracing::info!("stopped");
    }
}

type Parts = (Arc<Hub>, Arc<Roster>, Arc<dyn Engine>);

fn start_auth(config: &Config) -> Result<Auth, RunError> {
    let public_key_pem = match &config.jwt_public_key {
        Some(path) => Some(std::fs::read(path).map_err(|source| RunError::PublicKey {
            path: path.display().to_string(),
            source,
        })?),
        None => None,
    };
    let auth = Auth::new(AuthSettings {
        mode: config.auth,
        secret: config.jwt_secret.as_deref(),
        public_key_pem,
        issuer: config.jwt_issuer.as_deref(),
        audience: config.jwt_audience.as_deref(),
        api_key: config.api_key.as_deref(),
    })?;
    tracing::info!(mode = ?config.auth, "authentication");
    Ok(auth)
}

/// The app's hooks, as configured: one HTTP client for all of them.
fn start_hooks(config: &Config, metrics: &Arc<Metrics>) -> Result<Hooks, String> {
    use crate::hooks::{
        CallSettings, ConnectHook, Endpoint, PublishHook, http_client, signature::Signer,
    };
    use crate::metrics::Hook;
    if config.connect_hook.is_none() && config.publish_hook.is_none() {
        return Ok(Hooks::default());
    }
    let client = http_client()?;
    let settings = CallSettings {
        timeout: config.hook_timeout,
        concurrency: config.hook_concurrency as usize,
        signer: config.webhook_secret.as_deref().map(Signer::new),
    };
    let endpoint = |hook: Hook, setting: &str, url: &str| {
        Endpoint::new(hook, url, client.clone(), settings.clone(), metrics.clone())
            .map_err(|error| format!("{setting}: {error}"))
    };
    let connect = match &config.connect_hook {
        Some(url) => {
            let forwarded = config
                .hook_headers
                .iter()
                .map(|name| name.trim())
                .filter(|name| !name.is_empty())
                .map(|name| {
                    axum::http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| {
                            format!("LIVECHAT_HOOK_HEADERS: `{name}` is not a header name")
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let endpoint = endpoint(Hook::Connect, "LIVECHAT_CONNECT_HOOK", url)?;
            Some(ConnectHook::new(
                endpoint,
                forwarded,
                config.hook_cache,
                metrics.clone(),
            ))
        }
        None => None,
    };
    let publish = match &config.publish_hook {
        Some(url) => Some(PublishHook::new(
            endpoint(Hook::Publish, "LIVECHAT_PUBLISH_HOOK", url)?,
            config.publish_hook_failure,
            config.max_message_bytes,
            metrics.clone(),
        )),
        None => None,
    };
    tracing::info!(
        connect = config.connect_hook.is_some(),
        publish = config.publish_hook.is_some(),
        "the app's hooks"
    );
    Ok(Hooks { connect, publish })
}

/// The app's webhook, if set: its URL called one batch at a time, and the events recorded.
fn start_webhook(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<(Endpoint, WebhookSettings)>, String> {
    use crate::hooks::{CallSettings, http_client, signature::Signer};
    let Some(url) = &config.webhook_url else {
        return Ok(None);
    };
    let settings = CallSettings {
        timeout: config.hook_timeout,
        concurrency: 1,
        signer: config.webhook_secret.as_deref().map(Signer::new),
    };
    let endpoint = Endpoint::new(
        crate::metrics::Hook::Webhook,
        url,
        http_client()?,
        settings,
        metrics.clone(),
    )
    .map_err(|error| format!("LIVECHAT_WEBHOOK_URL: {error}"))?;
    if config.webhook_secret.is_none() {
        tracing::warn!(
            "LIVECHAT_WEBHOOK_URL is set without LIVECHAT_WEBHOOK_SECRET: webhooks are not signed, \
             so the app cannot tell them from anyone else's requests"
        );
    }
    let recorded = WebhookSettings::new(&config.webhook_events, config.webhook_outbox_bytes);
    Ok(Some((endpoint, recorded)))
}

fn compression_settings(config: &Config, metrics: &Metrics) -> deflate::Settings {
    deflate::Settings {
        min_bytes: config.compress_min_bytes,
        compressed: metrics.frames_compressed.clone(),
    }
}

fn queue_limits(config: &Config) -> QueueLimits {
    QueueLimits::new(config.outbound_queue, config.outbound_bytes)
}

fn start_embedded(
    config: &Config,
    retention: Retention,
    metrics: &Arc<Metrics>,
    webhooks: Option<WebhookSettings>,
    tasks: &Tasks,
) -> Result<Parts, RunError> {
    let roster = Roster::new("local", false);
    let hub = Hub::new(
        queue_limits(config),
        None,
        roster.clone(),
        start_pacer(config, tasks),
        metrics.deliveries.clone(),
        compression_settings(config, metrics),
    );
    let store: Arc<dyn HistoryStore> = match (config.store, webhooks) {
        (StoreKind::Sqlite, webhooks) => {
            let store = SqliteStore::open(&config.data_dir, retention, config.sqlite_sync)?;
            Arc::new(match webhooks {
                Some(webhooks) => store.with_outbox(webhooks)?,
                None => store,
            })
        }
        (StoreKind::Memory, Some(webhooks)) => {
            Arc::new(MemoryStore::new(retention).with_outbox(webhooks))
        }
        (StoreKind::Memory, None) => Arc::new(MemoryStore::new(retention)),
    };
    tracing::info!(store = ?config.store, data_dir = %config.data_dir.display(), "embedded engine");
    let engine = EmbeddedEngine::start(
        store,
        hub.clone(),
        roster.clone(),
        retention,
        config.edit_window,
        metrics.clone(),
        tasks.part(),
    );
    Ok((hub, roster, Arc::new(engine)))
}

async fn start_redis(
    config: &Config,
    urls: Vec<String>,
    retention: Retention,
    metrics: &Arc<Metrics>,
    webhooks: Option<WebhookSettings>,
    tasks: &Tasks,
) -> Result<Parts, RunError> {
    if config.redis_cluster && !config.redis_sentinel.is_empty() {
        return Err(RunError::RedisSettings(
            "LIVECHAT_REDIS_SENTINEL and LIVECHAT_REDIS_CLUSTER exclude each other",
        ));
    }
    if config.redis_cluster && config.redis_wait_replicas > 0 {
        return Err(RunError::RedisSettings(
            "LIVECHAT_REDIS_WAIT_REPLICAS is not supported with LIVECHAT_REDIS_CLUSTER",
        ));
    }
    let (registry, commands) = RoomRegistry::new(config.redis_timeout);
    let node_id = config.node_id.clone().unwrap_or_else(random_node_id);
    let roster = Roster::new(&node_id, true);
    let hub = Hub::new(
        queue_limits(config),
        Some(registry.clone()),
        roster.clone(),
        start_pacer(config, tasks),
        metrics.deliveries.clone(),
        compression_settings(config, metrics),
    );
    let shown: Vec<String> = urls.iter().map(|url| redact_url(url)).collect();
    tracing::info!(urls = ?shown, cluster = config.redis_cluster, %node_id, "Redis engine");
    let settings = RedisSettings {
        urls,
        cluster: config.redis_cluster,
        sentinel_master: (!config.redis_sentinel.is_empty())
            .then(|| config.redis_master_name.clone()),
        wait_replicas: config.redis_wait_replicas,
        prefix: config.redis_prefix.clone(),
        timeout: config.redis_timeout,
        node_id,
        node_ttl: config.node_ttl,
        room_ttl: config.room_ttl,
        retention,
        edit_window: config.edit_window,
        metrics: metrics.clone(),
        webhooks,
        tasks: tasks.part(),
    };
    let engine =
        RedisEngine::start(settings, hub.clone(), roster.clone(), registry, commands).await?;
    Ok((hub, roster, Arc::new(engine)))
}

fn start_pacer(config: &Config, tasks: &Tasks) -> Arc<Pacer> {
    let pacer = Pacer::new(config.write_interval);
    tasks.spawn(pacer.clone().run());
    pacer
}

/// A URL fit for logs: the password (and a user name) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn random_node_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let salt = RandomState::new().hash_one(std::process::id());
    format!("node-{}-{:08x}", std::process::id(), salt as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials_from_urls() {
        assert_eq!(
            super::redact_url("redis://user:secret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            super::redact_url("redis://:p@ss@cache/"),
            "redis://***@cache/"
        );
        assert_eq!(
            super::redact_url("redis://cache:6379/"),
            "redis://cache:6379/"
        );
    }
}
