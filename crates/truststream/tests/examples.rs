//! The examples under `examples/` run here, so none can drift from the
//! code: each example's `run` is called and its report checked (the
//! examples' own `main` only prints the same report).

#![allow(dead_code)] // each example's `main`, unused here

#[cfg(feature = "db-sqlite")]
#[path = "../examples/agents.rs"]
mod agents;
#[cfg(all(feature = "db-sqlite", feature = "auth-jwt", feature = "auth-http"))]
#[path = "../examples/auth.rs"]
mod auth;
#[cfg(all(feature = "db-sqlite", feature = "realtime-memory"))]
#[path = "../examples/realtime.rs"]
mod realtime;
#[cfg(all(feature = "db-sqlite", feature = "storage-fs"))]
#[path = "../examples/storage.rs"]
mod storage;
#[cfg(all(feature = "db-memory", feature = "db-sqlite"))]
#[path = "../examples/switching.rs"]
mod switching;
#[cfg(feature = "db-memory")]
#[path = "../examples/third_party.rs"]
mod third_party;

use truststream::prelude::*;

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))
}

#[cfg(feature = "db-sqlite")]
#[tokio::test]
async fn the_agents_example_runs() -> Result<()> {
    let dir = tempdir()?;
    let runtime = agents::embedded_runtime(dir.path()).await?;
    let r = agents::run(&runtime).await?;
    let top: Vec<&str> = r.top.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(top, ["agent-23", "agent-22", "agent-20"]);
    // 25 agents, every third idle: 16 active, read 10 to a page.
    assert_eq!(r.active_ids.len(), 16);
    assert_eq!(r.pages, 2);
    let mut sorted = r.active_ids.clone();
    sorted.sort();
    assert_eq!(r.active_ids, sorted, "keyset pages come in id order");
    // The transaction retired the 9 idle ones, deleted one active agent
    // and added one.
    let counts: Vec<(&str, usize)> = r.by_status.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(counts, [("active", 16), ("idle", 0), ("retired", 9)]);
    Ok(())
}

#[cfg(all(feature = "db-sqlite", feature = "storage-fs"))]
#[tokio::test]
async fn the_storage_example_runs() -> Result<()> {
    let dir = tempdir()?;
    let runtime = storage::embedded_runtime(dir.path()).await?;
    let r = storage::run(&runtime).await?;
    assert_eq!(&r.body[..], b"agent,score\nada,97\ngrace,93\n");
    assert_eq!(&r.head[..], b"agent");
    assert_eq!(r.content_type.as_deref(), Some("text/csv"));
    assert_eq!(r.author.as_deref(), Some("ada"));
    let mut keys = r.keys.clone();
    keys.sort();
    assert_eq!(keys, ["reports/2026/q1.csv", "reports/latest.csv"]);
    assert!(r.signed_url.is_some(), "storage-fs signs URLs");
    Ok(())
}

#[cfg(all(feature = "db-sqlite", feature = "auth-jwt", feature = "auth-http"))]
#[tokio::test]
async fn the_auth_example_runs() -> Result<()> {
    let dir = tempdir()?;
    let runtime = auth::embedded_runtime(dir.path()).await?;
    let r = auth::run(&runtime).await?;
    assert_eq!(r.roles, ["member"]);
    assert!(r.may_write && !r.may_delete);
    assert!(r.reused_refresh_refused, "refresh tokens are single-use");
    assert!(r.session_revoked, "reuse revokes the session");
    assert_eq!(r.statuses, [401, 200, 403]);
    assert_eq!(r.me, r.user_id);
    Ok(())
}

#[cfg(all(feature = "db-sqlite", feature = "realtime-memory"))]
#[tokio::test]
async fn the_realtime_example_runs() -> Result<()> {
    let dir = tempdir()?;
    let runtime = realtime::embedded_runtime(dir.path()).await?;
    let r = realtime::run(&runtime).await?;
    assert_eq!(
        r.broadcast,
        serde_json::json!({ "agent": "ada", "score": 97 })
    );
    assert_eq!(r.joined, ["alice"]);
    assert_eq!(
        r.row_changes,
        [serde_json::json!(95), serde_json::json!(97)]
    );
    Ok(())
}

#[cfg(all(feature = "db-memory", feature = "db-sqlite"))]
#[tokio::test]
async fn the_switching_example_runs() -> Result<()> {
    let dir = tempdir()?;
    let r = switching::run(dir.path()).await?;
    assert_eq!(r.providers.1, "sqlite");
    assert_ne!(r.providers.0, r.providers.1);
    assert_eq!(r.rows_after_switch, 1, "a switch moves no data");
    assert!(r.refused.contains("refusing to switch"), "{}", r.refused);
    assert_eq!(r.still, "sqlite");
    Ok(())
}

/// A provider written outside the workspace passes the storage conformance
/// suite, with exactly the cases of the capabilities it lacks skipped, and
/// the runtime builds it from configuration by its type name.
#[cfg(feature = "db-memory")]
#[tokio::test]
async fn the_third_party_provider_example_runs() -> Result<()> {
    let r = third_party::run().await?;
    assert!(r.failed.is_empty(), "{}: {:#?}", r.summary, r.failed);
    assert!(r.passed >= 20, "{}", r.summary);
    // Each skip is a capability the provider does not declare.
    for skipped in &r.skipped {
        assert!(
            ["copy", "signed", "checksum"]
                .iter()
                .any(|cap| skipped.contains(cap)),
            "{skipped} was skipped: {}",
            r.summary
        );
    }
    assert!(!r.skipped.is_empty(), "{}", r.summary);
    assert_eq!(r.runtime_provider, third_party::TYPE_NAME);
    assert_eq!(&r.downloaded[..], b"hello");
    Ok(())
}
