//! The database suite: every `core-db` provider runs these cases.
//!
//! The factory must return a fresh, empty, isolated database per case (a new
//! in-memory instance, a new schema, a new file); cases create the tables they
//! need.

use std::sync::Arc;

use truststream_core_db::Database;

use crate::harness::{run_cases, Case, Factory};
use crate::Report;

/// Builds a fresh database per case.
pub type DbFactory = Factory<Arc<dyn Database>>;

/// Runs the database suite against `provider` (a label for the report);
/// `only` keeps the cases whose name contains it.
pub async fn run(provider: &str, factory: DbFactory, only: Option<&str>) -> Report {
    run_cases(
        "database",
        provider,
        factory,
        &cases(),
        |db| serde_json::to_value(db.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<Arc<dyn Database>>> {
    vec![]
}
