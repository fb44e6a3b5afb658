#![doc = include_str!("../README.md")]

pub mod caller;
pub mod config;
pub mod keys;

mod auth;
mod realtime;
mod rest;
mod rls;
mod storage;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use truststream_core::{Error, HealthStatus};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_storage::Storage;
use truststream_realtime_ws::WsRealtime;

pub use caller::{Caller, CallerError, Role};
pub use config::{
    AuthSettings, BucketPolicy, RealtimeSettings, RpcPolicy, ServeConfig, TableAction, TablePolicy,
};
pub use keys::ApiKeys;

/// Renders the process's metrics as Prometheus text (`/metrics`).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the server serves: the configured providers (already in their
/// layers), the keys, and the configuration.
#[derive(Clone)]
pub struct Providers {
    /// The database behind `/rest/v1` and realtime's `postgres_changes`.
    pub db: Arc<dyn Database>,
    /// The auth provider behind `/auth/v1` and every token check.
    pub auth: Arc<dyn Auth>,
    /// The storage behind `/storage/v1`.
    pub storage: Arc<dyn Storage>,
    /// `/metrics` (404 without it).
    pub metrics: Option<MetricsRenderer>,
}

/// Shared by every handler.
pub struct ServeState {
    /// The database.
    pub db: Arc<dyn Database>,
    /// The auth provider.
    pub auth: Arc<dyn Auth>,
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// The anon and service-role keys and the signing secret.
    pub keys: ApiKeys,
    /// The configuration.
    pub config: ServeConfig,
    /// The URL clients reach the server at.
    pub public_url: String,
    /// The realtime hub mounted at `/realtime/v1/websocket`.
    pub hub: Option<WsRealtime>,
    metrics: Option<MetricsRenderer>,
    /// Bucket settings as last read, shared by every router built over
    /// this state, so this server's own bucket changes are seen at once
    /// by all of them ([`storage::settings::SettingsCache`]).
    settings: storage::settings::SettingsCache,
}

/// A built server: the router over the providers, ready to run on a
/// listener.
pub struct Server {
    state: Arc<ServeState>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Binds `config.bind`, starts the realtime hub over `providers.db` and
    /// `providers.auth`, and builds the routes.
    pub async fn bind(
        providers: Providers,
        keys: ApiKeys,
        config: ServeConfig,
    ) -> Result<Server, Error> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(&config.bind)
            .await
            .map_err(|e| {
                truststream_core_realtime::listen_error("serve", "bind", &config.bind, e)
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("serve: local address: {e}")))?;
        let public_url = config.public_url(addr);
        if config.row_security {
            rls::setup(&*providers.db).await?;
        }
        let hub = realtime::start_hub(&config, &providers, &keys).await?;
        let state = Arc::new(ServeState {
            db: providers.db,
            auth: providers.auth,
            storage: providers.storage,
            keys,
            config,
            public_url,
            hub,
            metrics: providers.metrics,
            settings: storage::settings::SettingsCache::default(),
        });
        Ok(Server { state, listener })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The URL clients reach the server at.
    pub fn url(&self) -> &str {
        &self.state.public_url
    }

    /// The keys clients use.
    pub fn keys(&self) -> &ApiKeys {
        &self.state.keys
    }

    /// The routes, for embedding in another axum application.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Runs the server on a background task until the returned handle is
    /// dropped or [`Running::stop`]ped (tests, embedding).
    pub fn spawn(self) -> Running {
        let url = self.state.public_url.clone();
        let keys = self.state.keys.clone();
        let addr = self.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            let _ = rx.await;
        }));
        Running {
            url,
            addr,
            keys,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, closes
    /// WebSockets (code 1001, with a reason) and lets in-flight requests
    /// finish for up to `shutdown_grace_s`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let grace = Duration::from_secs(self.state.config.shutdown_grace_s);
        let state = self.state.clone();
        let app = router(self.state.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            tracing::info!("serve: shutting down");
            realtime::close_hub(&state);
            let _ = stop_tx.send(true);
        };
        // Small responses go out at once (axum leaves Nagle's algorithm on).
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let mut stopped = stop_rx.clone();
        let deadline = async move {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = server => r.map_err(|e| Error::unavailable(format!("serve: {e}")).with_source(e)),
            () = deadline => {
                tracing::warn!("serve: requests still running after the {}s grace period; exiting", grace.as_secs());
                Ok(())
            }
        }
    }
}

/// A server running on a background task (see [`Server::spawn`]); dropping
/// it stops the server.
pub struct Running {
    /// The server's URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its keys.
    pub keys: ApiKeys,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
}

impl Running {
    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::internal(format!("serve task: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Every route, over `state`.
pub fn router(state: Arc<ServeState>) -> Router {
    let cors = cors(&state.config);
    let timeout = Duration::from_secs(state.config.request_timeout_s);
    let bounded = move |r: Router<Arc<ServeState>>| {
        r.layer(axum::middleware::from_fn(move |req, next| {
            deadline(timeout, req, next)
        }))
    };
    Router::new()
        .nest("/rest/v1", bounded(rest::router(state.clone())))
        .nest("/auth/v1", bounded(auth::router(state.clone())))
        // Uploads and downloads stream for as long as they take; the
        // storage routes bound their own metadata calls.
        .nest("/storage/v1", storage::router())
        .merge(realtime::router(state.clone()))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(cors)
        // One middleware for the access log and the unread-body check
        // (each `from_fn` layer costs a boxed future and a service clone
        // per request).
        .layer(axum::middleware::from_fn(access_log))
}

/// Bounds on reading the rest of a body its handler answered without
/// reading ([`close_unread`]): at most this many bytes...
const LINGER_BYTES: u64 = 4 * 1024 * 1024;
/// ...for at most this long in all...
const LINGER_TIME: Duration = Duration::from_secs(5);
/// ...and at most this long between two pieces of it.
const LINGER_IDLE: Duration = Duration::from_secs(1);

/// Handles a request whose handler answered without reading its body to
/// the end (a 413 for an upload over the limit, a 401 before an upload is
/// read).
///
/// The server first reads and drops the rest of the body, up to
/// [`LINGER_BYTES`] and [`LINGER_TIME`], before it answers: a client
/// still sending its body reads the answer only once it has sent it, and
/// a server that closed with bytes unread would reset the connection,
/// which can throw away the answer before the client reads it (the
/// client would see a broken connection instead of the 413). A body
/// read to its end leaves the connection reusable.
///
/// When the rest is larger than that, stops arriving, or the client asked
/// for `Expect: 100-continue` (it waits for the answer before sending),
/// the answer says `Connection: close`: the unread rest would otherwise
/// sit in the connection ahead of the client's next request, and hyper
/// closes such a connection anyway.
async fn close_unread(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use std::sync::atomic::Ordering;
    let headers = req.headers();
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.contains_key(http::header::CONTENT_LENGTH) && length != Some(0);
    if !has_body {
        return next.run(req).await;
    }
    let waits_for_answer = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let shared = Arc::new(Unread::default());
    let req = req.map(|body| {
        axum::body::Body::new(ReadToEnd {
            inner: Some(body),
            read: 0,
            shared: shared.clone(),
        })
    });
    let mut response = next.run(req).await;
    if shared.done.load(Ordering::Acquire) {
        return response;
    }
    let rest = shared
        .rest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let drained = match rest {
        Some((body, read)) if !waits_for_answer => {
            let left = length.map(|l| l.saturating_sub(read));
            left.is_none_or(|l| l <= LINGER_BYTES) && drain(body).await
        }
        _ => false,
    };
    if !drained {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Reads and drops `body` to its end within the linger bounds; whether it
/// got there.
async fn drain(body: axum::body::Body) -> bool {
    use futures::StreamExt;
    let mut body = body.into_data_stream();
    let give_up = tokio::time::Instant::now() + LINGER_TIME;
    let mut read: u64 = 0;
    loop {
        let wait = give_up
            .saturating_duration_since(tokio::time::Instant::now())
            .min(LINGER_IDLE);
        match tokio::time::timeout(wait, body.next()).await {
            Ok(None) => return true,
            Ok(Some(Ok(data))) => {
                read = read.saturating_add(data.len() as u64);
                if read > LINGER_BYTES {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// What [`ReadToEnd`] leaves for [`close_unread`]: whether the body was
/// read to its end, and if it was dropped before, its rest and how many
/// bytes of it the handler read.
#[derive(Default)]
struct Unread {
    done: std::sync::atomic::AtomicBool,
    rest: std::sync::Mutex<Option<(axum::body::Body, u64)>>,
}

/// A request body that records whether it was read to its end and hands
/// its unread rest back when it is dropped before.
struct ReadToEnd {
    inner: Option<axum::body::Body>,
    read: u64,
    shared: Arc<Unread>,
}

impl Drop for ReadToEnd {
    fn drop(&mut self) {
        if self.shared.done.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(body) = self.inner.take() {
            *self
                .shared
                .rest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((body, self.read));
        }
    }
}

impl hyper::body::Body for ReadToEnd {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(&mut *inner).poll_frame(cx);
        let ended = match &polled {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                let ended = hyper::body::Body::is_end_stream(&*inner);
                self.read = self.read.saturating_add(n);
                ended
            }
            _ => false,
        };
        if ended {
            self.shared
                .done
                .store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            hyper::body::Body::size_hint,
        )
    }
}

/// Answers 504 when the request takes longer than `limit`. The request's
/// work is dropped at that point; a write may or may not have been applied,
/// which the message says.
async fn deadline(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({
                "code": "timeout",
                "message": format!(
                    "the request took longer than {} s and was abandoned; a write may or may not have been applied",
                    limit.as_secs()
                ),
            })),
        )
            .into_response(),
    }
}

/// One structured `tracing` event per request (target `truststream::access`):
/// method, path (never the query string, which carries tokens and filter
/// values), status and duration; the request itself goes through
/// [`close_unread`].
async fn access_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = close_unread(req, next).await;
    tracing::info!(
        target: "truststream::access",
        method = %method,
        path = %truststream_core::echo(&path),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

fn cors(config: &ServeConfig) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            axum::http::header::CONTENT_RANGE,
            axum::http::HeaderName::from_static("x-supabase-api-version"),
            axum::http::HeaderName::from_static("x-sb-error-code"),
        ])
        .max_age(Duration::from_secs(3600));
    if config.cors_allowed_origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let origins: Vec<_> = config
            .cors_allowed_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(origins))
    }
}

/// How long each provider's probe may take at `/health`: one that does
/// not answer in time is unhealthy, not a hung health check.
const HEALTH_DEADLINE: Duration = Duration::from_secs(5);

async fn bounded_health(
    probe: impl Future<Output = truststream_core::Health>,
) -> truststream_core::Health {
    tokio::time::timeout(HEALTH_DEADLINE, probe)
        .await
        .unwrap_or_else(|_| {
            truststream_core::Health::unhealthy(HEALTH_DEADLINE, "no answer in time")
        })
}

async fn health(State(state): State<Arc<ServeState>>) -> Response {
    let (db, auth, storage) = tokio::join!(
        bounded_health(state.db.health()),
        bounded_health(state.auth.health()),
        bounded_health(state.storage.health())
    );
    let services = [("database", db), ("auth", auth), ("storage", storage)];
    let healthy = services
        .iter()
        .all(|(_, h)| h.status == HealthStatus::Healthy);
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "services": services.iter().map(|(name, h)| json!({
            "service": name,
            "status": h.status,
            "latency_ms": h.latency.as_secs_f64() * 1000.0,
        })).collect::<Vec<_>>(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<ServeState>>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "metrics are not enabled: add the metrics layer ([<profile>.database.layers] metrics = true)"})),
        )
            .into_response(),
    }
}
