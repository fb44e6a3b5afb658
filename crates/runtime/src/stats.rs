//! `truststream stats`: the metrics of a short self-test run against the
//! configured database and storage.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use truststream_core::{Error, Result};
use truststream_core_db::{ColumnDef, Database, Query, TableSchema};
use truststream_core_storage::{Storage, UploadOptions};
use truststream_layer_metrics::{MetricsRegistry, SeriesStats};

use crate::build::Registries;
use crate::config::{Config, Interface};
use crate::redact;

/// The rows `truststream stats` writes unless `--rows` says otherwise.
pub const DEFAULT_STATS_ROWS: usize = 20;

/// What a [`self_test`] did and measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsRun {
    /// The database provider type it ran against.
    pub database: String,
    /// The storage provider type it ran against.
    pub storage: String,
    /// Rows written (and objects uploaded).
    pub rows: usize,
    /// Per interface, provider, operation and target: calls, errors,
    /// latency percentiles (what the `metrics` layer recorded).
    pub series: Vec<SeriesStats>,
    /// Why the run stopped early, if it did (the series show the calls up
    /// to there).
    pub failure: Option<String>,
}

impl StatsRun {
    /// The series as a table (the `metrics` layer's
    /// [`truststream_layer_metrics::render_table`]), then the failure, if
    /// any.
    pub fn table(&self) -> String {
        let mut out = format!(
            "self-test: {} rows on database {:?}, {} objects on storage {:?}\n",
            self.rows, self.database, self.rows, self.storage
        );
        out.push_str(&truststream_layer_metrics::render_table(&self.series));
        if let Some(f) = &self.failure {
            out.push_str(&format!("the run stopped early: {f}\n"));
        }
        out
    }
}

/// Builds the configured database and storage from `registries` and
/// `config` with the `metrics` layer on (added to each section's layers
/// when missing or `false`; its settings kept when given), recording into
/// a registry of this run's own, then runs a small workload: on the
/// database a scratch table (`truststream_stats_<n>`, created and dropped)
/// with `rows` rows created, read by key, listed, updated and deleted; on
/// the storage `rows` objects under a scratch prefix
/// (`truststream-stats/<n>/`) in the first bucket (or a scratch bucket,
/// created and deleted, when there is none) uploaded, read, described and
/// deleted.
///
/// Fails when a provider cannot be built; a failure during the workload
/// ends it (the scratch table and objects are still removed) and is
/// reported in [`StatsRun::failure`].
pub async fn self_test(
    mut registries: Registries,
    config: &Config,
    rows: usize,
) -> Result<StatsRun> {
    let metrics = Arc::new(MetricsRegistry::new());
    truststream_layer_metrics::register_with(&mut registries.layers, Arc::clone(&metrics));
    let registries = Arc::new(registries);
    let mut config = config.clone();
    for i in [Interface::Database, Interface::Storage] {
        let section = config.section(i).clone();
        let mut layers = section.layers().clone();
        if matches!(
            layers.get(truststream_layer_metrics::NAME),
            None | Some(Value::Bool(false))
        ) {
            layers.insert(truststream_layer_metrics::NAME.into(), Value::Bool(true));
        }
        config.set_section(i, section.with_layers(layers));
    }
    let db = registries.build_database(&config).await?;
    let storage = match registries.build_storage(&config).await {
        Ok(s) => s,
        Err(e) => {
            let _ = db.disconnect().await;
            return Err(e);
        }
    };
    let scratch = scratch_name();
    let mut failure = database_workload(&*db, &scratch, rows).await.err();
    if let Err(e) = storage_workload(&*storage, &scratch, rows).await {
        failure.get_or_insert(e);
    }
    // Taken before the disconnect: the workload's calls only.
    let series = metrics.snapshot();
    let _ = db.disconnect().await;
    // Scrubbed like a build error: a provider's message may quote its
    // settings (a connection URL, a password).
    let secrets: Vec<String> = [Interface::Database, Interface::Storage]
        .iter()
        .flat_map(|&i| config.section(i).secrets())
        .collect();
    Ok(StatsRun {
        database: config.section(Interface::Database).kind().to_string(),
        storage: config.section(Interface::Storage).kind().to_string(),
        rows,
        series,
        failure: failure.map(|e| redact::scrub(&e.display_chain().to_string(), &secrets)),
    })
}

/// A name no other run uses: the process id and the time.
fn scratch_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}_{nanos}", std::process::id())
}

async fn database_workload(db: &dyn Database, scratch: &str, rows: usize) -> Result<()> {
    let table = format!("truststream_stats_{scratch}");
    db.create_table(
        &TableSchema::new(&table)
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("n")),
    )
    .await?;
    let run = async {
        for n in 0..rows {
            let row = json!({ "id": format!("r{n}"), "n": n });
            db.create(&table, object(row)).await?;
        }
        for n in 0..rows {
            if db.get(&table, &json!(format!("r{n}"))).await?.is_none() {
                return Err(Error::internal(format!(
                    "stats self-test: row r{n} written to {table} but not read back"
                )));
            }
        }
        db.read(&table, &Query::new()).await?;
        for n in 0..rows {
            let patch = object(json!({ "n": n + 1 }));
            db.update(&table, &json!(format!("r{n}")), patch).await?;
        }
        for n in 0..rows {
            db.delete(&table, &json!(format!("r{n}"))).await?;
        }
        Ok(())
    };
    let result = run.await;
    let dropped = db.drop_table(&table, true).await;
    result.and(dropped)
}

async fn storage_workload(storage: &dyn Storage, scratch: &str, rows: usize) -> Result<()> {
    let existing = storage.list_buckets().await?;
    let (bucket, made) = match existing.first() {
        Some(b) => (b.name.clone(), false),
        None => {
            let name = format!("truststream-stats-{}", scratch.replace('_', "-"));
            storage.create_bucket(&name).await?;
            (name, true)
        }
    };
    let prefix = format!("truststream-stats/{scratch}/");
    let data = Bytes::from_static(b"truststream stats self-test object");
    let run = async {
        for n in 0..rows {
            let key = format!("{prefix}{n}");
            storage
                .upload(&bucket, &key, data.clone(), &UploadOptions::new())
                .await?;
        }
        for n in 0..rows {
            let key = format!("{prefix}{n}");
            if storage.download(&bucket, &key).await? != data {
                return Err(Error::internal(format!(
                    "stats self-test: object {key} read back different from what was written"
                )));
            }
            storage.get_metadata(&bucket, &key).await?;
        }
        Ok(())
    };
    let result = run.await;
    let mut cleaned = Ok(());
    for n in 0..rows {
        if let Err(e) = storage.delete(&bucket, &format!("{prefix}{n}")).await {
            cleaned = cleaned.and(Err(e));
        }
    }
    if made {
        cleaned = cleaned.and(storage.delete_bucket(&bucket).await);
    }
    result.and(cleaned)
}

fn object(v: Value) -> truststream_core_db::Row {
    match v {
        Value::Object(m) => m,
        _ => truststream_core_db::Row::new(),
    }
}
