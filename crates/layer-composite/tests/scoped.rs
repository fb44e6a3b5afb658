//! Request-scoped handles (row-level security) are refused through the
//! composite layer, even over a primary that supports them: its outbox,
//! replicator and secondary reads are not covered by the primary's
//! policies.

#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::sync::Arc;

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{Database, RequestScope};
use truststream_db_memory::MemoryDatabase;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_layer_composite::{CompositeConfig, CompositeLayer};

#[tokio::test(flavor = "multi_thread")]
async fn scoped_handles_are_refused_with_the_reason() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let primary = Arc::new(s.database("composite_rls").await.unwrap());
    assert!(primary.capabilities().row_security);
    let config = CompositeConfig::new("memory", json!({}));
    let db = CompositeLayer::wrap(primary, Arc::new(MemoryDatabase::new()), &config)
        .await
        .unwrap();
    assert!(!db.capabilities().row_security);
    let claims = json!({"sub": "u1"}).as_object().unwrap().clone();
    let scope = RequestScope::new("authenticated", claims).unwrap();
    let e = db.scoped(scope).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("composite"), "{e}");
    assert!(e.message().contains("row-level security"), "{e}");
    s.cleanup().await.unwrap();
}
