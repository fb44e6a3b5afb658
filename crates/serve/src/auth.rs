//! `/auth/v1`.

use std::sync::Arc;

use axum::Router;

use crate::ServeState;

/// The routes under `/auth/v1`.
pub(crate) fn router(_state: Arc<ServeState>) -> Router<Arc<ServeState>> {
    Router::new()
}
