#![doc = include_str!("../README.md")]

pub mod access;
pub mod feed;
mod not_serving;
mod subscription;
mod types;
mod validate;

use std::sync::Arc;

use async_trait::async_trait;

pub use not_serving::NotServing;
pub use subscription::Subscription;
pub use truststream_core::{Error, ErrorKind, Health, HealthStatus, ProviderInfo};
pub use truststream_core_db::{ChangeKind, RowChange, Value};
pub use types::{
    presence_state_of, ChangeSpec, ChannelOptions, Message, PresenceDiff, PresenceEvent,
    PresenceMeta, PresenceState, RealtimeCapabilities,
};
pub use validate::{
    check_json_size, not_joined, presence_key, validate_broadcast, validate_channel_name,
    validate_event, validate_presence_key, MAX_NAME_BYTES,
};

/// `Result` of realtime operations.
pub type RtResult<T> = Result<T, Error>;
/// The realtime error type (the shared TrustStream [`Error`]).
pub type RealtimeError = Error;

/// A callback. It runs on the delivering task: keep it short and non-blocking.
pub type Handler<T> = Arc<dyn Fn(T) + Send + Sync>;

/// Wraps a closure as a [`Handler`].
pub fn handler<T>(f: impl Fn(T) + Send + Sync + 'static) -> Handler<T> {
    Arc::new(f)
}

/// What a realtime provider may be built with: the configured database, whose
/// change feed feeds row subscriptions, and the auth provider that checks
/// access tokens (when one is configured).
#[derive(Clone)]
pub struct RealtimeDeps {
    /// The configured database provider.
    pub db: Option<Arc<dyn truststream_core_db::Database>>,
    /// The configured auth provider.
    pub auth: Option<Arc<dyn truststream_core_auth::Auth>>,
}

/// A failed bind of a server's listening address (`who` names the server,
/// `setting` the key of the address in its configuration: `listen`,
/// `bind`): names the address and the reason; a port already in use says
/// so and how to pick another. The error carries `setting` as its
/// `setting` context, so a caller that knows the section (the runtime)
/// names the whole key (`realtime.listen`) and where it was set. An
/// address that does not parse is `InvalidInput`, any other failure
/// `Unavailable` (retryable: the port may be freed).
///
/// ```
/// let taken = std::io::Error::from(std::io::ErrorKind::AddrInUse);
/// let e = truststream_core_realtime::listen_error("realtime ws", "listen", "127.0.0.1:4000", taken);
/// assert_eq!(e.kind(), truststream_core_realtime::ErrorKind::Unavailable);
/// assert!(e.message().starts_with("realtime ws: cannot listen on 127.0.0.1:4000: "));
/// assert!(e.message().contains("set `listen` to a free address"));
/// assert_eq!(e.context(), [("setting", "listen".to_string())]);
/// ```
pub fn listen_error(who: &str, setting: &str, address: &str, e: std::io::Error) -> Error {
    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "; another process is using the port: stop it, or set `{setting}` to a free \
             address (port 0 picks one)"
        )
    } else {
        String::new()
    };
    let message = format!("{who}: cannot listen on {address}: {e}{hint}");
    let error = match e.kind() {
        std::io::ErrorKind::InvalidInput => Error::invalid_input(message),
        _ => Error::unavailable(message),
    };
    error
        .with_context(truststream_core::SETTING, setting.to_string())
        .with_source(e)
}

/// Realtime provider factories by type name (see [`truststream_core::Registry`]).
pub type RealtimeRegistry = truststream_core::Registry<dyn Realtime, RealtimeDeps>;

/// A realtime provider.
#[async_trait]
pub trait Realtime: Send + Sync + 'static {
    /// Provider type name and crate version.
    fn info(&self) -> ProviderInfo;

    /// What this provider can do.
    fn capabilities(&self) -> RealtimeCapabilities;

    /// Probes the provider and reports status and latency. Never fails.
    async fn health(&self) -> Health;

    /// Shuts the provider down for good: disconnects its members and
    /// clients, stops its servers (the listen port is free when this
    /// returns), change feed readers and other background tasks.
    /// Idempotent. Later calls fail with [`ErrorKind::Unavailable`] instead
    /// of waiting. The default does nothing: for providers with nothing to
    /// close.
    async fn close(&self) -> RtResult<()> {
        Ok(())
    }

    /// A handle on the channel `name` (the guide's `createChannel`). The
    /// handle is a member only after [`Channel::join`]. Names are 1 to 255
    /// bytes without control characters.
    async fn channel(&self, name: &str, options: ChannelOptions) -> RtResult<Arc<dyn Channel>>;

    /// Calls `handler` for each committed row change matching `spec`. Requires
    /// [`RealtimeCapabilities::row_changes`] (a change feed was configured).
    async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription>;
}

/// One member's handle on a channel.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The channel name.
    fn name(&self) -> &str;

    /// Joins the channel (idempotent). After joining, broadcasts and presence
    /// changes reach this handle's handlers.
    async fn join(&self) -> RtResult<()>;

    /// Leaves the channel: untracks presence and stops deliveries. Sending
    /// after leaving is [`ErrorKind::InvalidInput`]; joining again works.
    async fn leave(&self) -> RtResult<()>;

    /// Whether the handle is currently joined.
    fn is_joined(&self) -> bool;

    /// Calls `handler` for each broadcast whose event is `event` (`"*"` for
    /// every event). By default a member does not receive its own broadcasts
    /// ([`ChannelOptions::broadcast_self`]).
    fn on(&self, event: &str, handler: Handler<Message>) -> Subscription;

    /// Broadcasts `payload` as `event` to the channel's members. Requires the
    /// handle to be joined. With [`ChannelOptions::ack`] it returns once the
    /// provider has accepted the message; a payload over
    /// [`RealtimeCapabilities::max_payload_bytes`] is [`ErrorKind::TooLarge`].
    async fn send(&self, event: &str, payload: Value) -> RtResult<()>;

    /// Publishes (or replaces) this member's presence state. Requires the
    /// handle to be joined.
    async fn track(&self, state: Value) -> RtResult<()>;

    /// Removes this member's presence state.
    async fn untrack(&self) -> RtResult<()>;

    /// The channel's current presence state.
    async fn presence_state(&self) -> RtResult<PresenceState>;

    /// Calls `handler` with the full state when joining and with diffs after.
    fn on_presence(&self, handler: Handler<PresenceEvent>) -> Subscription;
}

/// The guide's `subscribeToRow` and `trackPresence`, for every [`Realtime`].
#[async_trait]
pub trait RealtimeExt: Realtime {
    /// Calls `handler` for every committed change of the row of `table` whose
    /// primary key is `id`.
    async fn subscribe_to_row(
        &self,
        table: &str,
        id: Value,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        self.subscribe_changes(ChangeSpec::table(table).key(id), handler)
            .await
    }

    /// Joins `channel` and tracks `state` there; leave the returned channel
    /// (or untrack) to stop.
    async fn track_presence(&self, channel: &str, state: Value) -> RtResult<Arc<dyn Channel>> {
        let ch = self.channel(channel, ChannelOptions::default()).await?;
        ch.join().await?;
        ch.track(state).await?;
        Ok(ch)
    }
}

impl<R: Realtime + ?Sized> RealtimeExt for R {}
