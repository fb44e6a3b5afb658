//! Unique keys are enforced by a partial unique index on the live jobs'
//! keys, so jobs without a key put no entry in it; a table made by an
//! earlier version (a full `UNIQUE` constraint on `unique_slot`, one claim
//! index of queued and running rows) is moved to the partial index and the
//! queued and running indexes when the provider opens it, and keeps
//! de-duplicating.

use truststream_core_jobs::{Enqueued, Jobs, NewJob};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

/// The unique constraints on `unique_slot` and the definitions of the
/// unique indexes over it, for the jobs table of `schema`.
async fn uniqueness(jobs: &PgJobs, schema: &str) -> (i64, Vec<String>) {
    let table = format!("\"{schema}\".\"{}\"", jobs.table());
    let constraints: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'u'",
    )
    .bind(&table)
    .fetch_one(jobs.pool())
    .await
    .expect("read pg_constraint");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index AS i \
         WHERE i.indrelid = $1::regclass AND i.indisunique AND NOT i.indisprimary",
    )
    .bind(&table)
    .fetch_all(jobs.pool())
    .await
    .expect("read pg_index");
    (constraints, indexes)
}

async fn enqueue_keyed(jobs: &PgJobs, key: &str) -> Enqueued {
    jobs.enqueue(
        NewJob::new("t", &serde_json::json!({"k": key}))
            .expect("job")
            .unique_key(key),
    )
    .await
    .expect("enqueue")
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_unique_through_a_partial_index_and_old_tables_move_to_it() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch.config("pgjobs_uq").schema.expect("scratch schema");
    let config = PgJobsConfig::new(url.clone()).with_schema(schema.clone());

    let jobs = PgJobs::open(config.clone()).await.expect("open");
    let (constraints, indexes) = uniqueness(&jobs, &schema).await;
    assert_eq!(constraints, 0, "no full unique constraint on a new table");
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert!(
        indexes[0].contains("(unique_slot) WHERE (unique_slot IS NOT NULL)"),
        "{indexes:?}"
    );
    let first = enqueue_keyed(&jobs, "k1").await;
    assert!(matches!(first, Enqueued::Created(_)), "{first:?}");
    assert_eq!(
        enqueue_keyed(&jobs, "k1").await,
        Enqueued::Duplicate(first.id())
    );

    // The table as an earlier version made it: a full unique constraint,
    // no partial index, and one claim index of queued and running rows.
    let table = format!("\"{schema}\".\"{}\"", jobs.table());
    let partial = indexes[0]
        .split_whitespace()
        .nth(3)
        .expect("the index name")
        .to_string();
    for statement in [
        format!("DROP INDEX \"{schema}\".{partial}"),
        format!("ALTER TABLE {table} ADD CONSTRAINT old_full_unique UNIQUE (unique_slot)"),
        format!(
            "CREATE INDEX truststream_jobs_claim ON {table} (priority DESC, run_at, id) \
             WHERE state IN ('queued', 'running')"
        ),
    ] {
        sqlx::query(&statement)
            .execute(jobs.pool())
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let (constraints, _) = uniqueness(&jobs, &schema).await;
    assert_eq!(constraints, 1);
    // The statement text works on the old table too (the insert's
    // `ON CONFLICT ... WHERE` is answered by the full constraint).
    assert_eq!(
        enqueue_keyed(&jobs, "k1").await,
        Enqueued::Duplicate(first.id())
    );
    jobs.close().await.expect("close");

    let reopened = PgJobs::open(config).await.expect("reopen");
    let old_claim: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 \
         AND indexname = 'truststream_jobs_claim'",
    )
    .bind(&schema)
    .fetch_one(reopened.pool())
    .await
    .expect("read pg_indexes");
    assert_eq!(old_claim, 0, "the old claim index was dropped");
    let (constraints, indexes) = uniqueness(&reopened, &schema).await;
    assert_eq!(constraints, 0, "the full constraint was dropped");
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert!(indexes[0].contains("WHERE (unique_slot IS NOT NULL)"));
    assert_eq!(
        enqueue_keyed(&reopened, "k1").await,
        Enqueued::Duplicate(first.id()),
        "the key is still unique after the move"
    );
    assert!(matches!(
        enqueue_keyed(&reopened, "k2").await,
        Enqueued::Created(_)
    ));
    reopened.close().await.expect("close");
}
