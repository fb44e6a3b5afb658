//! The facade's prelude is enough for an application: build a runtime from
//! configuration, write and read rows, store and fetch an object.

use truststream::prelude::*;
use truststream::ConfigSources;

#[tokio::test]
async fn an_application_needs_only_the_prelude() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\
         [default.storage]\ntype = \"fs\"\nroot = {:?}\nbuckets = [\"docs\"]\n",
        dir.path().join("app.db"),
        dir.path().join("storage"),
    );
    let config = ConfigSources::new().toml_str(&toml).load()?;
    let runtime = Runtime::builder().config(config).build().await?;
    let db = runtime.db();
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("status")),
    )
    .await?;
    for (id, status) in [("a", "active"), ("b", "idle")] {
        let row = serde_json::json!({"id": id, "status": status});
        db.create("agents", row.as_object().cloned().unwrap_or_default())
            .await?;
    }
    let active = db
        .read("agents", &Query::new().filter(col("status").eq("active")))
        .await?;
    assert_eq!(active.len(), 1);
    let storage = runtime.storage();
    let body = Bytes::from_static(b"hello");
    storage
        .upload("docs", "hello.txt", body, &UploadOptions::default())
        .await?;
    assert_eq!(storage.download("docs", "hello.txt").await?, "hello");
    Ok(())
}

/// Background jobs through the prelude: the runtime's jobs provider
/// (`jobs.type = "database"`, kept in the configured database) takes a job.
#[cfg(feature = "jobs-db")]
#[tokio::test]
async fn jobs_need_only_the_prelude_too() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\
         [default.jobs]\ntype = \"database\"\n",
        dir.path().join("app.db"),
    );
    let config = ConfigSources::new().toml_str(&toml).load()?;
    let runtime = Runtime::builder().config(config).build().await?;
    let jobs: std::sync::Arc<dyn Jobs> = runtime
        .jobs()
        .ok_or_else(|| Error::internal("jobs.type = \"database\" gave no jobs provider"))?;
    let job = NewJob::new("email", &serde_json::json!({"to": "a@example.com"}))?;
    let first = jobs.enqueue(job).await?;
    let again = jobs
        .enqueue(NewJob::new(
            "email",
            &serde_json::json!({"to": "b@example.com"}),
        )?)
        .await?;
    assert_ne!(format!("{first:?}"), format!("{again:?}"), "two jobs");
    Ok(())
}
