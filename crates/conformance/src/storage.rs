//! The storage suite: every `core-storage` provider runs these cases.
//!
//! The factory must return a fresh, isolated store per case with no objects
//! in it; cases create the buckets they need (or use the fixture's bucket on
//! providers that cannot create buckets).

use std::sync::Arc;

use truststream_core_storage::Storage;

use crate::harness::{run_cases, Case, Factory};
use crate::Report;

/// What a storage case gets: the provider and a bucket that exists and is empty.
#[derive(Clone)]
pub struct StorageFixture {
    /// The provider under test.
    pub storage: Arc<dyn Storage>,
    /// An existing, empty bucket the case may use.
    pub bucket: String,
}

/// Builds a fresh fixture per case.
pub type StorageFactory = Factory<StorageFixture>;

/// Runs the storage suite against `provider`; `only` keeps the cases whose
/// name contains it.
pub async fn run(provider: &str, factory: StorageFactory, only: Option<&str>) -> Report {
    run_cases(
        "storage",
        provider,
        factory,
        &cases(),
        |f| serde_json::to_value(f.storage.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<StorageFixture>> {
    vec![]
}
