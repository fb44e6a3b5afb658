//! The storage composite: writes go to the primary storage, each journaled
//! first; a replicator copies what the journal names to the secondary;
//! reads fall back to the secondary. See the [crate documentation](crate#storage).

mod config;
mod journal;
mod layer;
mod replicator;

pub use config::{StorageCompositeConfig, DEFAULT_JOURNAL_TABLE};
pub use layer::{StorageCompositeLayer, StorageCompositeStats};
