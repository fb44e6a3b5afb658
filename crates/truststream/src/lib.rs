//! TrustStream for application authors: one dependency for the four
//! interfaces (database, auth, storage, realtime), the runtime that builds
//! the configured providers, and the providers themselves as cargo features.
//!
//! ```toml
//! [dependencies]
//! truststream = { version = "0.1", default-features = false, features = ["embedded"] }
//! ```
//!
//! The `embedded` feature set is the embedded default: SQLite, files under
//! `./data`, the in-process realtime hub and auth-jwt. Every provider and
//! layer of `truststream-runtime` is a feature of the same name here
//! (`db-postgres`, `storage-s3`, `realtime-ws`, `layer-cache`, ...); the
//! default features are the runtime's own defaults.
//!
//! Application code programs against the interfaces through the
//! [`prelude`] and picks providers by configuration (`truststream.toml`,
//! `TRUSTSTREAM_*` environment variables):
//!
//! ```no_run
//! use truststream::prelude::*;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Agent {
//!     id: String,
//!     name: String,
//!     status: String,
//! }
//!
//! async fn active_agents(db: &dyn Database) -> Result<Vec<Agent>, Error> {
//!     let q = Query::new()
//!         .filter(col("status").eq("active"))
//!         .order_by_desc("name")
//!         .limit(50);
//!     db.read_as::<Agent>("agents", &q).await
//! }
//!
//! # async fn run() -> Result<(), Error> {
//! let runtime = Runtime::builder().config(Config::load()?).build().await?;
//! let agents = active_agents(runtime.db().as_ref()).await?;
//! # let _ = agents;
//! # Ok(())
//! # }
//! ```

// The Rust snippets of the documents outside any crate's rustdoc (this
// crate's README, the workspace README, docs/*.md) are compiled and run as
// this crate's doc tests, so they cannot drift from the code. The other
// crates' READMEs are their crate docs (`#![doc = include_str!(...)]`).
// Only under `cfg(doctest)`: a packaged crate has no workspace files.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct FacadeReadme;
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;
#[cfg(doctest)]
#[doc = include_str!("../../../docs/architecture.md")]
pub struct ArchitectureDoc;
#[cfg(doctest)]
#[doc = include_str!("../../../docs/benchmarks.md")]
pub struct BenchmarksDoc;

/// The guide's `requireAuth` for axum and any tower stack
/// (`truststream-auth-http`; feature `auth-http`, on by default).
#[cfg(feature = "auth-http")]
pub use truststream_auth_http as http;
pub use truststream_core as core;
pub use truststream_core_auth as auth;
pub use truststream_core_db as db;
pub use truststream_core_jobs as jobs;
pub use truststream_core_realtime as realtime;
pub use truststream_core_storage as storage;
/// Copy and verify a database and a storage between two configured
/// providers (`truststream-migrate`; feature `migrate`, on by default).
#[cfg(feature = "migrate")]
pub use truststream_migrate as migrate;
pub use truststream_runtime as runtime;

pub use truststream_runtime::{Config, ConfigSources, Runtime, RuntimeBuilder};

/// What application code needs most: the four interfaces and their
/// extension traits, queries, operations, errors, background jobs
/// ([`Runtime::jobs`](truststream_runtime::Runtime::jobs)) and the runtime.
pub mod prelude {
    pub use bytes::Bytes;
    pub use truststream_core::{Error, ErrorKind, Result};
    pub use truststream_core_auth::{Auth, Principal, SignIn, SignUp};
    pub use truststream_core_db::{
        col, ColumnDef, ColumnDefault, Database, DatabaseExt, Filter, Operation, Page, Query, Row,
        TableSchema, Value,
    };
    pub use truststream_core_jobs::{Jobs, NewJob};
    pub use truststream_core_realtime::{handler, Channel, ChannelOptions, Realtime, RealtimeExt};
    pub use truststream_core_storage::{Storage, StorageExt, UploadOptions};
    pub use truststream_runtime::{Config, Runtime};
}
