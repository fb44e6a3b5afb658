#![doc = include_str!("../README.md")]

mod client;
mod codec;
mod handlers;
mod hub;
mod local;
mod outbox;
mod server;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use truststream_core::{Error, Health, ProviderInfo, Secret};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::feed::health_report;
use truststream_core_realtime::{
    listen_error, validate_channel_name, ChangeSpec, Channel, ChannelOptions, Handler, NotServing,
    Realtime, RealtimeCapabilities, RealtimeDeps, RealtimeRegistry, RowChange, RtResult,
    Subscription,
};

pub use hub::Counters;
pub use outbox::SLOW_CLIENT_GRACE;
use truststream_core_realtime::access::{ChannelAccess, Publication};
pub use truststream_core_realtime::access::{ChannelRule, TableRule};

/// The provider's type name in configuration (`type = "socketio"`).
pub const TYPE_NAME: &str = "socketio";
/// The guide's spelling, registered as an alias (`type = "socket-io"`).
pub const TYPE_ALIAS: &str = "socket-io";

/// Configuration of both modes: server mode unless `url` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Server: the address to listen on (`SocketIoRealtime::start`).
    pub listen: String,
    /// Server: the Socket.IO path (socket.io-client's `path` option).
    pub path: String,
    /// Server: accept clients without a token when no auth provider is
    /// configured. Off by default: a server without auth refuses every
    /// client.
    pub allow_anonymous: bool,
    /// Largest broadcast payload and presence state, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// Server: connections at once; more are refused at the handshake.
    pub max_connections: usize,
    /// Server: channels one connection may be a member of, and row
    /// subscriptions it may hold (each counted on its own).
    pub max_channels_per_connection: usize,
    /// Server: bytes queued per connection before it is disconnected as a
    /// slow client (at least `max_payload_bytes` + 64 KiB).
    pub outgoing_queue_bytes: usize,
    /// Server: packets socketioxide buffers per connection (its
    /// `max_buffer_size`), on top of `outgoing_queue_bytes`.
    pub engine_buffer_packets: usize,
    /// Server: client commands waiting per connection; a client that sends
    /// more is disconnected.
    pub command_queue_capacity: usize,
    /// Deliveries waiting per in-process handle (server) or per client
    /// connection (client mode) before the handle is dropped as slow.
    pub member_queue_capacity: usize,
    /// engine.io ping interval, seconds.
    pub ping_interval_secs: u64,
    /// engine.io ping timeout, seconds: a client silent for the interval
    /// plus this is disconnected.
    pub ping_timeout_secs: u64,
    /// Server: tables Socket.IO clients may subscribe to
    /// (`rt:subscribe_rows`): names or `prefix*` patterns; empty by
    /// default. Private tables (the auth provider's, `auth_*`,
    /// `_truststream*`) are refused.
    pub publish: Vec<String>,
    /// Server: how clients may read each published table, keyed by its
    /// `publish` entry (owner column, permission, hidden columns,
    /// anonymous readers; the same rules as realtime-ws). A published table
    /// without a rule is readable by every authenticated client, never
    /// anonymously. `row_security` is not supported here (refused).
    pub tables: BTreeMap<String, TableRule>,
    /// Server: private channels, keyed by channel name or `prefix*`
    /// pattern (`"*"`: every channel): the roles or permission a client
    /// needs to join. A channel no entry covers is open to every client
    /// the server let in.
    pub channels: BTreeMap<String, ChannelRule>,
    /// Client mode: the Socket.IO server, e.g. `http://127.0.0.1:3000`.
    pub url: Option<String>,
    /// Client mode: the token sent in the handshake's `auth` payload.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// Client mode: how long a request waits for its acknowledgement.
    pub request_timeout_secs: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            listen: "127.0.0.1:4001".into(),
            path: "/socket.io".into(),
            allow_anonymous: false,
            max_payload_bytes: 256 * 1024,
            max_connections: 10_000,
            max_channels_per_connection: 100,
            outgoing_queue_bytes: 4 * 1024 * 1024,
            engine_buffer_packets: 128,
            command_queue_capacity: 256,
            member_queue_capacity: 1024,
            ping_interval_secs: 25,
            ping_timeout_secs: 20,
            publish: Vec::new(),
            tables: BTreeMap::new(),
            channels: BTreeMap::new(),
            url: None,
            token: None,
            request_timeout_secs: 10,
        }
    }
}

impl SocketIoConfig {
    /// A server configuration listening on `listen` (e.g. `127.0.0.1:0`).
    pub fn server(listen: impl Into<String>) -> Self {
        SocketIoConfig {
            listen: listen.into(),
            ..Self::default()
        }
    }

    /// A client configuration for the Socket.IO server at `url`.
    pub fn client(url: impl Into<String>, token: Option<&str>) -> Self {
        SocketIoConfig {
            url: Some(url.into()),
            token: token.map(Secret::from),
            ..Self::default()
        }
    }

    /// Checks limits (each at least 1; the queue holds a largest frame),
    /// the path, the publication and the channel rules.
    pub fn validate(&self) -> RtResult<()> {
        let positive = [
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_connections", self.max_connections),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection,
            ),
            ("engine_buffer_packets", self.engine_buffer_packets),
            ("command_queue_capacity", self.command_queue_capacity),
            ("member_queue_capacity", self.member_queue_capacity),
            ("ping_interval_secs", self.ping_interval_secs as usize),
            ("ping_timeout_secs", self.ping_timeout_secs as usize),
            ("request_timeout_secs", self.request_timeout_secs as usize),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::invalid_input(format!(
                    "realtime socketio: {name} must be at least 1"
                )));
            }
        }
        if self.outgoing_queue_bytes < self.max_frame_bytes() {
            return Err(Error::invalid_input(format!(
                "realtime socketio: outgoing_queue_bytes ({}) must be at least max_payload_bytes + \
                 65536 ({}), the largest frame",
                self.outgoing_queue_bytes,
                self.max_frame_bytes()
            )));
        }
        if !self.path.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "realtime socketio: path must start with '/', got {:?}",
                truststream_core::echo(&self.path)
            )));
        }
        self.publication()?;
        ChannelAccess::check_config(&self.channels)?;
        Ok(())
    }

    /// The checked publication; `row_security` is refused: this server
    /// cannot read rows as each subscriber.
    pub(crate) fn publication(&self) -> RtResult<Publication> {
        let publication = Publication::check_config(&self.publish, &self.tables)?;
        if let Some(entry) = publication.row_security_entries().first() {
            return Err(Error::unsupported(format!(
                "realtime.tables.{}.row_security: the Socket.IO server does not check row-level \
                 security; use an owner_column or a permission, or realtime-ws",
                truststream_core::echo(entry)
            )));
        }
        Ok(publication)
    }

    /// The largest message a connection accepts: a payload plus 64 KiB.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_payload_bytes.saturating_add(64 * 1024)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

struct ServerMode {
    hub: Arc<hub::Hub>,
    io: socketioxide::SocketIo,
    layer: socketioxide::layer::SocketIoLayer,
    addr: Option<SocketAddr>,
    /// The server task of [`SocketIoRealtime::start`] (it owns the
    /// listen socket); taken by [`Realtime::close`].
    serve: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

enum Mode {
    Server(ServerMode),
    Client(client::Client),
}

/// The Socket.IO realtime provider.
///
/// - **Server mode** ([`SocketIoRealtime::start`], or
///   [`SocketIoRealtime::embedded`] + [`SocketIoRealtime::layer`] on the
///   application's own axum router): `socket.io-client` front ends connect
///   to it, and this process's calls are members of the same channels.
/// - **Client mode** ([`SocketIoRealtime::connect`]): every call goes to an
///   existing Socket.IO server that speaks the protocol in the README.
///
/// Dropping a server-mode provider shuts the server down.
pub struct SocketIoRealtime {
    mode: Mode,
}

impl SocketIoRealtime {
    /// A server without a listener of its own: mount [`Self::layer`] on
    /// the application's axum router.
    pub async fn embedded(
        config: SocketIoConfig,
        db: Option<Arc<dyn Database>>,
        auth: Option<Arc<dyn Auth>>,
    ) -> RtResult<Self> {
        config.validate()?;
        let publication = config.publication()?.with_private_tables(auth.as_ref())?;
        let channels = ChannelAccess::check_config(&config.channels)?;
        let hub = hub::Hub::new(config, db, auth, publication, channels);
        let (layer, io) = server::build(&hub);
        Ok(SocketIoRealtime {
            mode: Mode::Server(ServerMode {
                hub,
                io,
                layer,
                addr: None,
                serve: std::sync::Mutex::new(None),
            }),
        })
    }

    /// What a read-only build ([`truststream_core::BuildOptions::read_only`],
    /// `truststream health`) makes of a server configuration: checked as
    /// [`SocketIoRealtime::start`] checks it, but nothing bound on `listen`
    /// (the running application may hold the port), no task started and no
    /// change feed subscribed. Its health is healthy with a note that it does
    /// not serve in this process.
    pub fn check_server(
        config: &SocketIoConfig,
        db: Option<&Arc<dyn Database>>,
        auth: Option<&Arc<dyn Auth>>,
    ) -> RtResult<NotServing> {
        config.validate()?;
        config.publication()?.with_private_tables(auth)?;
        ChannelAccess::check_config(&config.channels)?;
        Ok(NotServing::server(
            TYPE_NAME,
            env!("CARGO_PKG_VERSION"),
            &config.listen,
            config.max_payload_bytes,
            db,
        ))
    }

    /// Starts a server on `config.listen` (axum), with `db`'s change feed
    /// feeding row subscriptions and `auth` checking the handshake's token.
    pub async fn start(
        config: SocketIoConfig,
        db: Option<Arc<dyn Database>>,
        auth: Option<Arc<dyn Auth>>,
    ) -> RtResult<Self> {
        let listen = config.listen.clone();
        let mut rt = Self::embedded(config, db, auth).await?;
        let Mode::Server(server) = &mut rt.mode else {
            return Err(Error::internal("embedded() built a client"));
        };
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| listen_error("realtime socketio", "listen", &listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("realtime socketio: local address: {e}")))?;
        let app = axum::Router::new().layer(server.layer.clone());
        server.addr = Some(addr);
        *server.serve.get_mut().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(error = %e, "realtime socketio: the server stopped");
                }
            }));
        Ok(rt)
    }

    /// Connects to the Socket.IO server at `config.url` (client mode).
    pub async fn connect(config: SocketIoConfig) -> RtResult<Self> {
        config.validate()?;
        let client = client::Client::connect(config).await?;
        Ok(SocketIoRealtime {
            mode: Mode::Client(client),
        })
    }

    /// Server mode: the tower layer serving the Socket.IO endpoint, for
    /// the application's own axum router (`Router::new().layer(..)`).
    pub fn layer(&self) -> Option<socketioxide::layer::SocketIoLayer> {
        match &self.mode {
            Mode::Server(s) => Some(s.layer.clone()),
            Mode::Client(_) => None,
        }
    }

    /// Server mode started with [`Self::start`]: the bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.mode {
            Mode::Server(s) => s.addr,
            Mode::Client(_) => None,
        }
    }

    /// The URL socket.io-client connects to (`http://<addr>`; the path is
    /// the `path` option), or the client mode's server.
    pub fn url(&self) -> Option<String> {
        match &self.mode {
            Mode::Server(s) => s.addr.map(|a| format!("http://{a}")),
            Mode::Client(c) => Some(c.url().to_string()),
        }
    }

    /// Server mode: live counters.
    pub fn counters(&self) -> Option<Arc<Counters>> {
        match &self.mode {
            Mode::Server(s) => Some(s.hub.counters.clone()),
            Mode::Client(_) => None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SocketIoConfig {
        match &self.mode {
            Mode::Server(s) => &s.hub.config,
            Mode::Client(c) => c.config(),
        }
    }

    /// Server mode: disconnects every client and ends the server, as
    /// dropping the provider does.
    pub fn shutdown(&self) {
        if let Mode::Server(s) = &self.mode {
            s.hub.shutdown();
            if let Some(task) = s.serve.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                task.abort();
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let io = s.io.clone();
                rt.spawn(async move { io.close().await });
            }
        }
    }
}

impl Drop for SocketIoRealtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for SocketIoRealtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Server(s) => f
                .debug_struct("SocketIoRealtime")
                .field("mode", &"server")
                .field("addr", &s.addr)
                .finish(),
            Mode::Client(c) => f
                .debug_struct("SocketIoRealtime")
                .field("mode", &"client")
                .field("url", &c.url())
                .finish(),
        }
    }
}

#[async_trait]
impl Realtime for SocketIoRealtime {
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
            Mode::Server(s) => {
                caps.row_changes = s.hub.row_changes_available();
                caps.max_payload_bytes = Some(s.hub.config.max_payload_bytes);
            }
            Mode::Client(c) => {
                let hello = c.hello();
                caps.row_changes = hello.row_changes;
                caps.max_payload_bytes = Some(hello.max_payload_bytes);
            }
        }
        caps
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        match &self.mode {
            Mode::Server(s) => {
                let problem = if s.hub.is_shut_down() {
                    Some("the Socket.IO server was shut down".to_string())
                } else {
                    s.hub.feed_health.problem()
                };
                health_report(start, problem)
            }
            Mode::Client(c) => match c.ping().await {
                Ok(()) => Health::healthy(start.elapsed()),
                Err(e) => Health::unhealthy(start.elapsed(), e.to_string()),
            },
        }
    }

    /// Server mode: [`SocketIoRealtime::shutdown`] (clients disconnected,
    /// members removed, feed readers stopped), then waits for the server
    /// task of [`SocketIoRealtime::start`] to end, so its port can be bound
    /// again. Later calls fail with `Unavailable`. A client has nothing of
    /// its own to close: its connection ends when it is dropped.
    async fn close(&self) -> RtResult<()> {
        if let Mode::Server(s) = &self.mode {
            self.shutdown();
            let serve = s.serve.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = serve {
                // Aborted by `shutdown`: the listen socket goes with it.
                let _ = task.await;
            }
        }
        Ok(())
    }

    async fn channel(&self, name: &str, options: ChannelOptions) -> RtResult<Arc<dyn Channel>> {
        let op = "realtime.channel";
        validate_channel_name(name).map_err(|e| e.with_operation(op))?;
        match &self.mode {
            Mode::Server(s) => {
                s.hub.check_open().map_err(|e| e.with_operation(op))?;
                let ch = local::LocalChannel::new(&s.hub, name, options)
                    .map_err(|e| e.with_operation(op))?;
                Ok(Arc::new(ch))
            }
            Mode::Client(c) => c.channel(name, options).map_err(|e| e.with_operation(op)),
        }
    }

    async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        let op = "realtime.subscribe_changes";
        match &self.mode {
            Mode::Server(s) => s.hub.subscribe_rows(spec, handler).await,
            Mode::Client(c) => c.subscribe_changes(spec, handler).await,
        }
        .map_err(|e| e.with_operation(op))
    }
}

/// Registers the provider as `"socketio"` and `"socket-io"`: a server
/// (wired to the runtime's database and auth provider), or a client when
/// `url` is set.
pub fn register(reg: &mut RealtimeRegistry) {
    for name in [TYPE_NAME, TYPE_ALIAS] {
        reg.register_with_options(name, move |cfg, deps: RealtimeDeps, options| async move {
            let config: SocketIoConfig = truststream_core::parse_config(name, cfg)?;
            let rt = if config.url.is_some() {
                SocketIoRealtime::connect(config).await?
            } else if options.read_only {
                let server =
                    SocketIoRealtime::check_server(&config, deps.db.as_ref(), deps.auth.as_ref())?;
                return Ok(Arc::new(server) as Arc<dyn Realtime>);
            } else {
                SocketIoRealtime::start(config, deps.db, deps.auth).await?
            };
            Ok(Arc::new(rt) as Arc<dyn Realtime>)
        });
    }
}
