//! `/realtime/v1/websocket`: the realtime-ws hub, mounted on the server's
//! own listener. The hub checks tokens through the configured auth
//! provider, with the server's two API keys recognized first (the anon key
//! joins as an anonymous subscriber, the service-role key as the service
//! role), and feeds `postgres_changes` from the configured database.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use truststream_core::Error;
use truststream_core_auth::{Auth, Principal};
use truststream_layer::{AuthLayer, LayeredAuth};
use truststream_realtime_ws::{WsRealtime, WsRealtimeConfig, DEFAULT_PATH};

use crate::keys::KeyRole;
use crate::{ApiKeys, Providers, ServeConfig, ServeState};

/// Starts the hub the server mounts.
pub(crate) async fn start_hub(
    config: &ServeConfig,
    providers: &Providers,
    keys: &ApiKeys,
) -> Result<Option<WsRealtime>, Error> {
    let mut tables = config.realtime.tables.clone();
    if config.row_security {
        // The database's policies decide for realtime as for /rest/v1:
        // every published table's changes are checked per subscriber.
        for entry in &config.realtime.publish {
            tables.entry(entry.clone()).or_default().row_security = true;
        }
    }
    let mut hub = WsRealtimeConfig {
        publish: config.realtime.publish.clone(),
        tables,
        ..WsRealtimeConfig::default()
    };
    if let Some(max) = config.realtime.max_payload_bytes {
        hub.max_payload_bytes = max;
    }
    let auth: Arc<dyn Auth> = Arc::new(LayeredAuth::new(
        providers.auth.clone(),
        Arc::new(KeyedAuth { keys: keys.clone() }),
    ));
    WsRealtime::embedded(hub, Some(providers.db.clone()), Some(auth))
        .await
        .map(Some)
}

/// Closes every WebSocket (code 1001, with a reason).
pub(crate) fn close_hub(state: &ServeState) {
    if let Some(hub) = &state.hub {
        hub.shutdown();
    }
}

/// The WebSocket route.
pub(crate) fn router(_state: Arc<ServeState>) -> Router<Arc<ServeState>> {
    Router::new().route(DEFAULT_PATH, get(upgrade))
}

/// The auth layer the hub sees: the API keys are recognized before the
/// auth provider is asked.
struct KeyedAuth {
    keys: ApiKeys,
}

#[async_trait]
impl AuthLayer for KeyedAuth {
    async fn validate_token(&self, next: &dyn Auth, token: &str) -> Result<Principal, Error> {
        let role = match self.keys.role_of(token) {
            Some(KeyRole::Anon) => "anon",
            Some(KeyRole::ServiceRole) => "service_role",
            None => return next.validate_token(token).await,
        };
        let mut claims = serde_json::Map::new();
        claims.insert("role".into(), role.into());
        Ok(Principal {
            user_id: String::new(),
            email: None,
            roles: vec![role.to_string()],
            session_id: None,
            // The keys do not expire while the server runs.
            expires_at: chrono::Utc::now() + chrono::Duration::days(3650),
            claims,
        })
    }
}

async fn upgrade(State(state): State<Arc<ServeState>>, mut req: Request) -> Response {
    let Some(hub) = &state.hub else {
        return refuse(404, "realtime is not enabled on this server".into());
    };
    let headers = req.headers().clone();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return refuse(400, "a WebSocket upgrade request is expected here".into());
    };
    if !is_upgrade
        || headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .and_then(|v| v.to_str().ok())
            != Some("13")
    {
        return refuse(
            400,
            "a WebSocket (version 13) upgrade request is expected here".into(),
        );
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    let lookup = move |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accepted = match hub.check_upgrade(&target, &lookup).await {
        Ok(a) => a,
        Err((status, message)) => return refuse(status, message),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return refuse(400, "this connection cannot be upgraded".into());
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => accepted.run(hyper_util::rt::TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "serve: WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&truststream_realtime_ws::accept_key(&key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

fn refuse(status: u16, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({ "error": message }))).into_response()
}
