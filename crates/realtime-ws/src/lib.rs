#![doc = include_str!("../README.md")]

mod bindings;
mod client;
mod cluster;
mod deliver;
mod filter;
mod hub;
mod local;
pub mod protocol;
mod rls;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use truststream_core::{echo, Error, Health, ProviderInfo, Secret};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::feed::health_report;
use truststream_core_realtime::{
    listen_error, validate_channel_name, ChangeSpec, Channel, ChannelOptions, Handler, NotServing,
    Realtime, RealtimeCapabilities, RealtimeDeps, RealtimeRegistry, RowChange, RtResult,
    Subscription,
};

pub use cluster::{ClusterConfig, ClusterStats, BROKERS};
pub use hub::Counters;
pub use protocol::Vsn;
pub use server::{accept_key, Upgrade};
pub use truststream_core_realtime::access::TableRule;

use crate::hub::{Hub, TaskGuard};
use truststream_core_realtime::access::Publication;

/// The type name the provider registers under.
pub const TYPE_NAME: &str = "ws";

/// The default WebSocket path (what supabase-js connects to).
pub const DEFAULT_PATH: &str = "/realtime/v1/websocket";

/// Configuration of the WebSocket provider (`[realtime]` section with
/// `type = "ws"`). Every field has a default.
///
/// Without `url` the provider runs a hub listening on `listen`; with `url`
/// it is a client of the hub there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsRealtimeConfig {
    /// Hub: the address to listen on (default `127.0.0.1:4000`; port 0
    /// picks a free one, see [`WsRealtime::local_addr`]).
    pub listen: String,
    /// Hub: the WebSocket path (default `/realtime/v1/websocket`).
    pub path: String,
    /// Largest broadcast payload or presence state in bytes of serialized
    /// JSON, or in bytes for a binary broadcast payload (default 262144,
    /// Supabase's free-tier limit). Frames larger than this plus 64 KiB
    /// close the connection.
    pub max_payload_bytes: usize,
    /// Hub: channels one connection may join (default 100).
    pub max_channels_per_connection: usize,
    /// Hub: connections at once (default 10000); more are refused with 429.
    pub max_connections: usize,
    /// Hub: bytes of frames that may wait to be written to one connection,
    /// queued or taken by its writer and not yet handed to the WebSocket
    /// layer (default 4194304, 4 MiB; at least `max_payload_bytes` + 64 KiB, the
    /// largest frame). Fan-out never waits for a client: one whose queue
    /// would go over this is disconnected with close code 1008 and the
    /// reason. A single frame larger than the budget is still queued when
    /// nothing else waits (a large `presence_state`).
    pub outgoing_queue_bytes: usize,
    /// Deliveries waiting for one in-process handle's handlers (default
    /// 1024). A handle this far behind is removed from its channel.
    pub member_queue_capacity: usize,
    /// Hub: a connection that sends nothing (not even a heartbeat) for this
    /// long is closed (default 60 s; clients send one every 25 s).
    pub heartbeat_timeout_secs: u64,
    /// Hub: the tables WebSocket clients may bind `postgres_changes` to:
    /// names, or `prefix*` patterns (default none). The auth provider's
    /// tables, every `auth_*` table and TrustStream's own `_truststream*`
    /// tables can never be published: a configuration naming one is
    /// refused. (In-process row subscriptions of this process are not
    /// limited by it.)
    pub publish: Vec<String>,
    /// Hub: how subscribers may read each published table, keyed by its
    /// `publish` entry: owner column, required permission, hidden columns,
    /// anonymous access. A published table without a rule is readable by
    /// every authenticated subscriber.
    pub tables: BTreeMap<String, TableRule>,
    /// Client mode: the hub's URL, e.g.
    /// `ws://127.0.0.1:4000/realtime/v1/websocket`.
    pub url: Option<String>,
    /// Client mode: the apikey / access token sent to the hub.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// Hub: cluster mode, hubs joined through a broker
    /// (`cluster = { broker = "nats", url = "nats://...", node_id = "a" }`).
    /// `None` (the default): a single hub.
    pub cluster: Option<ClusterConfig>,
}

impl Default for WsRealtimeConfig {
    fn default() -> Self {
        WsRealtimeConfig {
            listen: "127.0.0.1:4000".into(),
            path: DEFAULT_PATH.into(),
            max_payload_bytes: 256 * 1024,
            max_channels_per_connection: 100,
            max_connections: 10_000,
            outgoing_queue_bytes: 4 * 1024 * 1024,
            member_queue_capacity: 1024,
            heartbeat_timeout_secs: 60,
            publish: Vec::new(),
            tables: BTreeMap::new(),
            url: None,
            api_key: None,
            cluster: None,
        }
    }
}

impl WsRealtimeConfig {
    /// A hub configuration listening on `listen` (e.g. `127.0.0.1:0`).
    pub fn hub(listen: impl Into<String>) -> Self {
        WsRealtimeConfig {
            listen: listen.into(),
            ..Self::default()
        }
    }

    /// A client configuration for the hub at `url`.
    pub fn client(url: impl Into<String>, api_key: Option<&str>) -> Self {
        WsRealtimeConfig {
            url: Some(url.into()),
            api_key: api_key.map(Secret::from),
            ..Self::default()
        }
    }

    /// Checks the limits (each at least 1; the outgoing queue holds at least
    /// one largest frame) and the path.
    pub fn validate(&self) -> RtResult<()> {
        let positive = [
            ("max_payload_bytes", self.max_payload_bytes),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection,
            ),
            ("max_connections", self.max_connections),
            ("member_queue_capacity", self.member_queue_capacity),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::invalid_input(format!(
                    "realtime ws: {name} must be at least 1"
                )));
            }
        }
        let largest_frame = self.max_frame_bytes();
        if self.outgoing_queue_bytes < largest_frame {
            return Err(Error::invalid_input(format!(
                "realtime ws: outgoing_queue_bytes ({}) must be at least max_payload_bytes + \
                 65536 ({largest_frame}), the largest frame",
                self.outgoing_queue_bytes
            )));
        }
        if self.heartbeat_timeout_secs == 0 {
            return Err(Error::invalid_input(
                "realtime ws: heartbeat_timeout_secs must be at least 1",
            ));
        }
        Publication::check_config(&self.publish, &self.tables)?;
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if !self.path.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "realtime ws: path must start with '/', got {:?}",
                self.path
            )));
        }
        Ok(())
    }

    /// The largest frame a connection accepts: a payload plus 64 KiB of
    /// envelope.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_payload_bytes.saturating_add(64 * 1024)
    }

    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_secs)
    }
}

/// The hub's configuration (the same struct; client fields are unused).
pub(crate) type WsHubConfig = WsRealtimeConfig;

enum Mode {
    Hub(HubMode),
    Client(client::Client),
}

struct HubMode {
    hub: Arc<Hub>,
    /// `None` for an embedded hub (no listener of its own).
    addr: Option<SocketAddr>,
}

/// The WebSocket realtime provider.
///
/// - **Hub mode** ([`WsRealtime::start`]): listens for WebSocket clients
///   (`@supabase/realtime-js`, other services in client mode) and serves
///   this process's own calls in-process, as members of the same channels.
/// - **Client mode** ([`WsRealtime::connect`]): every call goes to a remote
///   hub over one WebSocket connection.
///
/// Dropping a hub-mode provider shuts the hub down: connections are closed
/// with code 1001, background tasks end.
pub struct WsRealtime {
    mode: Mode,
}

/// A hub of a checked configuration (limits, publication).
fn new_hub(
    config: WsRealtimeConfig,
    db: Option<Arc<dyn Database>>,
    auth: Option<Arc<dyn Auth>>,
) -> RtResult<Arc<Hub>> {
    let publication = check_publication(&config, db.as_ref(), auth.as_ref())?;
    let cluster = config.cluster.clone().map(cluster::Cluster::new);
    Ok(Hub::new(config, db, auth, publication, cluster))
}

/// A hub's configuration checked: addresses and limits, the publication,
/// and a database that enforces the row security it asks for.
fn check_publication(
    config: &WsRealtimeConfig,
    db: Option<&Arc<dyn Database>>,
    auth: Option<&Arc<dyn Auth>>,
) -> RtResult<Publication> {
    config.validate()?;
    let publication =
        Publication::check_config(&config.publish, &config.tables)?.with_private_tables(auth)?;
    if let Some(entry) = publication.row_security_entries().first() {
        let enforced = db.as_ref().is_some_and(|db| db.capabilities().row_security);
        if !enforced {
            let which = db.as_ref().map_or_else(
                || "the hub has no database".to_string(),
                |db| format!("database provider {:?} does not", db.info().name),
            );
            return Err(Error::invalid_input(format!(
                "realtime.tables.{}.row_security needs a database that enforces row-level \
                 security (PostgreSQL), and {which}: turn it off and use owner_column / \
                 permission, or configure PostgreSQL",
                echo(entry)
            )));
        }
    }
    Ok(publication)
}

/// What a read-only build ([`truststream_core::BuildOptions::read_only`],
/// `truststream health`) makes of a hub configuration: checked as
/// [`WsRealtime::start`] checks it, but nothing bound on `listen` (the
/// running application may hold the port), no cluster joined, no task
/// started and no change feed subscribed. Its health is healthy with a
/// note that it does not serve in this process.
pub fn check_hub(
    config: &WsRealtimeConfig,
    db: Option<&Arc<dyn Database>>,
    auth: Option<&Arc<dyn Auth>>,
) -> RtResult<NotServing> {
    check_publication(config, db, auth)?;
    Ok(NotServing::server(
        TYPE_NAME,
        env!("CARGO_PKG_VERSION"),
        &config.listen,
        config.max_payload_bytes,
        db,
    ))
}

/// Cluster mode: connects the hub to its broker and starts the link's
/// tasks (the hub serves local members even while the broker is down).
async fn join_cluster(hub: &Arc<Hub>) -> RtResult<()> {
    if let Some(c) = &hub.cluster {
        if let Err(e) = cluster::start(c, hub).await {
            hub.shutdown();
            return Err(e);
        }
    }
    Ok(())
}

impl WsRealtime {
    /// Starts a hub on `config.listen`, with `db`'s change feed feeding
    /// `postgres_changes` and row subscriptions, and `auth` checking tokens
    /// (without auth, every client is accepted).
    pub async fn start(
        config: WsRealtimeConfig,
        db: Option<Arc<dyn Database>>,
        auth: Option<Arc<dyn Auth>>,
    ) -> RtResult<Self> {
        let hub = new_hub(config, db, auth)?;
        join_cluster(&hub).await?;
        let listener = tokio::net::TcpListener::bind(&hub.config.listen)
            .await
            .map_err(|e| listen_error("realtime ws", "listen", &hub.config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("realtime ws: local address: {e}")))?;
        tokio::spawn(server::accept_loop(
            hub.clone(),
            listener,
            TaskGuard::new(&hub.counters),
        ));
        Ok(WsRealtime {
            mode: Mode::Hub(HubMode {
                hub,
                addr: Some(addr),
            }),
        })
    }

    /// Starts a hub without a listener of its own, for an HTTP server that
    /// mounts it (`truststream serve`): the server hands each upgrade
    /// request to [`WsRealtime::check_upgrade`]. `config.listen` is
    /// ignored; everything else applies as for [`WsRealtime::start`].
    pub async fn embedded(
        config: WsRealtimeConfig,
        db: Option<Arc<dyn Database>>,
        auth: Option<Arc<dyn Auth>>,
    ) -> RtResult<Self> {
        let hub = new_hub(config, db, auth)?;
        join_cluster(&hub).await?;
        Ok(WsRealtime {
            mode: Mode::Hub(HubMode { hub, addr: None }),
        })
    }

    /// Hub mode: checks an upgrade request another HTTP server received
    /// (`target` = path and query, `header` looks a request header up by
    /// name): the connection limit, path, vsn and apikey. On `Ok` the
    /// server answers `101 Switching Protocols` (with
    /// [`accept_key`] of the client's `Sec-WebSocket-Key`) and hands the
    /// upgraded connection to [`Upgrade::run`]; on `Err` it answers the
    /// status with the message. Client mode: 404.
    pub async fn check_upgrade(
        &self,
        target: &str,
        header: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    ) -> Result<Upgrade, (u16, String)> {
        match &self.mode {
            Mode::Hub(h) => server::check_upgrade(&h.hub, target, header).await,
            Mode::Client(_) => Err((404, "this realtime provider is a client, not a hub".into())),
        }
    }

    /// Hub mode: closes every connection (code 1001, "the realtime hub was
    /// shut down") and ends the hub's tasks, as dropping it does.
    pub fn shutdown(&self) {
        if let Mode::Hub(h) = &self.mode {
            h.hub.shutdown();
        }
    }

    /// Connects to the hub at `config.url` (client mode).
    pub async fn connect(config: WsRealtimeConfig) -> RtResult<Self> {
        config.validate()?;
        let client = client::Client::connect(config).await?;
        Ok(WsRealtime {
            mode: Mode::Client(client),
        })
    }

    /// Hub mode: the address the hub listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.mode {
            Mode::Hub(h) => h.addr,
            Mode::Client(_) => None,
        }
    }

    /// Hub mode: the WebSocket URL clients connect to
    /// (`ws://<addr><path>`).
    pub fn url(&self) -> Option<String> {
        match &self.mode {
            Mode::Hub(h) => h
                .addr
                .map(|addr| format!("ws://{}{}", addr, h.hub.config.path)),
            Mode::Client(c) => Some(c.url().to_string()),
        }
    }

    /// Hub mode: live counters (connections, tasks, members). They stay
    /// readable after the provider is dropped, so tests can check that
    /// everything ended.
    pub fn counters(&self) -> Option<Arc<Counters>> {
        match &self.mode {
            Mode::Hub(h) => Some(h.hub.counters.clone()),
            Mode::Client(_) => None,
        }
    }

    /// Hub in cluster mode: the broker link's traffic counters (`None`
    /// for a single hub or a client).
    pub fn cluster_stats(&self) -> Option<Arc<ClusterStats>> {
        match &self.mode {
            Mode::Hub(h) => h.hub.cluster.as_ref().map(|c| c.stats.clone()),
            Mode::Client(_) => None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &WsRealtimeConfig {
        match &self.mode {
            Mode::Hub(h) => &h.hub.config,
            Mode::Client(c) => c.config(),
        }
    }
}

impl Drop for WsRealtime {
    fn drop(&mut self) {
        if let Mode::Hub(h) = &self.mode {
            h.hub.shutdown();
        }
    }
}

impl std::fmt::Debug for WsRealtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Hub(h) => f
                .debug_struct("WsRealtime")
                .field("mode", &"hub")
                .field("addr", &h.addr)
                .field(
                    "connections",
                    &h.hub.counters.connections.load(Ordering::Relaxed),
                )
                .finish(),
            Mode::Client(c) => f
                .debug_struct("WsRealtime")
                .field("mode", &"client")
                .field("url", &c.url())
                .finish(),
        }
    }
}

#[async_trait]
impl Realtime for WsRealtime {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> RealtimeCapabilities {
        let mut caps = RealtimeCapabilities::channels();
        caps.remote = true;
        match &self.mode {
            Mode::Hub(h) => {
                caps.row_changes = h.hub.row_changes_available();
                caps.max_payload_bytes = Some(h.hub.config.max_payload_bytes);
            }
            Mode::Client(c) => {
                let info = c.hub_info();
                caps.row_changes = info.row_changes;
                caps.max_payload_bytes = Some(info.max_payload_bytes);
            }
        }
        caps
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        match &self.mode {
            Mode::Hub(h) => {
                let problem = if h.hub.is_shut_down() {
                    Some("the hub was shut down".to_string())
                } else {
                    let cluster = h.hub.cluster.as_ref().and_then(|c| c.problem());
                    match (h.hub.feed_health.problem(), cluster) {
                        (Some(f), Some(c)) => Some(format!("{f}; {c}")),
                        (f, c) => f.or(c),
                    }
                };
                health_report(start, problem)
            }
            Mode::Client(c) => match c.ping().await {
                Ok(()) => Health::healthy(start.elapsed()),
                Err(e) => Health::unhealthy(start.elapsed(), e.to_string()),
            },
        }
    }

    /// Hub mode: shuts the hub down as dropping it does (members removed,
    /// feed readers stopped, the cluster told goodbye) and returns once
    /// the listen socket is closed, so the port can be bound again. Later
    /// calls fail with `Unavailable`. A client has nothing of its own to
    /// close: its connection ends when it is dropped.
    async fn close(&self) -> RtResult<()> {
        if let Mode::Hub(h) = &self.mode {
            h.hub.shutdown();
            let mut listening = h.hub.listening.subscribe();
            // The sender lives in the hub, which outlives this call.
            let _ = listening.wait_for(|n| *n == 0).await;
        }
        Ok(())
    }

    async fn channel(&self, name: &str, options: ChannelOptions) -> RtResult<Arc<dyn Channel>> {
        validate_channel_name(name).map_err(|e| e.with_operation("realtime.channel"))?;
        match &self.mode {
            Mode::Hub(h) => {
                let ch = local::LocalChannel::new(&h.hub, name, options)
                    .map_err(|e| e.with_operation("realtime.channel"))?;
                Ok(Arc::new(ch))
            }
            Mode::Client(c) => c
                .channel(name, options)
                .map_err(|e| e.with_operation("realtime.channel")),
        }
    }

    async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        let op = "realtime.subscribe_changes";
        match &self.mode {
            Mode::Hub(h) => {
                let hub = &h.hub;
                hub.check_open().map_err(|e| e.with_operation(op))?;
                if !hub.row_changes_available() {
                    return Err(Error::unsupported(
                        "row change subscriptions need a database with a change feed; start the \
                         hub with one (or configure a database for the runtime)",
                    )
                    .with_operation(op));
                }
                spec.validate().map_err(|e| e.with_operation(op))?;
                // The subscription keeps the table's feed while it lives.
                let feed = hub
                    .watch_table(&spec.table)
                    .await
                    .map_err(|e| e.with_operation(op))?;
                hub.row_subs
                    .add(spec, handler, feed)
                    .map_err(|e| e.with_operation(op))
            }
            Mode::Client(c) => c
                .subscribe_changes(spec, handler)
                .await
                .map_err(|e| e.with_operation(op)),
        }
    }
}

/// Registers the provider as `"ws"`: a hub (wired to the runtime's database
/// and auth provider), or a client when `url` is set.
pub fn register(reg: &mut RealtimeRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, deps: RealtimeDeps, options| async move {
        let config: WsRealtimeConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let rt = if config.url.is_some() {
            WsRealtime::connect(config).await?
        } else if options.read_only {
            let hub = check_hub(&config, deps.db.as_ref(), deps.auth.as_ref())?;
            return Ok(Arc::new(hub) as Arc<dyn Realtime>);
        } else {
            WsRealtime::start(config, deps.db, deps.auth).await?
        };
        Ok(Arc::new(rt) as Arc<dyn Realtime>)
    });
}
