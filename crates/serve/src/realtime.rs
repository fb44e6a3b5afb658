//! `/realtime/v1/websocket`: the realtime-ws hub, mounted.

use std::sync::Arc;

use axum::Router;
use truststream_core::Error;
use truststream_realtime_ws::WsRealtime;

use crate::{ApiKeys, Providers, ServeConfig, ServeState};

/// Starts the hub the server mounts.
pub(crate) async fn start_hub(
    _config: &ServeConfig,
    _providers: &Providers,
    _keys: &ApiKeys,
) -> Result<Option<WsRealtime>, Error> {
    Ok(None)
}

/// Closes every WebSocket (code 1001, with a reason).
pub(crate) fn close_hub(_state: &ServeState) {}

/// The WebSocket route.
pub(crate) fn router(_state: Arc<ServeState>) -> Router<Arc<ServeState>> {
    Router::new()
}
