//! The realtime suite: every `core-realtime` provider runs these cases.

use std::sync::Arc;

use truststream_core_db::Database;
use truststream_core_realtime::Realtime;

use crate::harness::{run_cases, Case, Factory};
use crate::Report;

/// What a realtime case gets.
#[derive(Clone)]
pub struct RealtimeFixture {
    /// The provider under test.
    pub realtime: Arc<dyn Realtime>,
    /// A second handle on the same realtime system, as another participant
    /// would have it: the same instance for in-process providers, a second
    /// client connection for networked ones.
    pub peer: Arc<dyn Realtime>,
    /// The database whose change feed the provider is wired to (row cases
    /// write through it), if any.
    pub db: Option<Arc<dyn Database>>,
}

/// Builds a fresh fixture per case.
pub type RealtimeFactory = Factory<RealtimeFixture>;

/// Runs the realtime suite against `provider`; `only` keeps the cases whose
/// name contains it.
pub async fn run(provider: &str, factory: RealtimeFactory, only: Option<&str>) -> Report {
    run_cases(
        "realtime",
        provider,
        factory,
        &cases(),
        |f| serde_json::to_value(f.realtime.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<RealtimeFixture>> {
    vec![]
}
