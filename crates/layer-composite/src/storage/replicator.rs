//! The storage replicator: takes due journal entries in id order, makes
//! each named object (or bucket) on the secondary what it is on the
//! primary now, then removes the entries it applied.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use truststream_core::{Error, ErrorKind, Result};
use truststream_core_storage::{ListOptions, Storage, StorageExt, UploadOptions};

use super::journal::{self, Target};
use super::layer::Shared;
use crate::layer::ReplicationLag;

/// The background task: passes every `interval` (straight away again
/// while passes come back full), until `stopped` fires (the layer was
/// dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(shared.config.interval) => {}
        }
        loop {
            match pass(&shared).await {
                // A full batch read and some of it applied: more may be
                // due, straight on from where the pass stopped.
                Ok(n) if n > 0 && *shared.pass.lock().await != 0 => {
                    if stopped.try_recv() != Err(tokio::sync::oneshot::error::TryRecvError::Empty) {
                        return;
                    }
                }
                // Drained, or failed (logged by the pass): wait an interval.
                _ => break,
            }
        }
        // Keeps the gauges current.
        let _ = lag(&shared).await;
    }
}

/// One pass: at most `batch` due entries, after where the previous pass
/// stopped when it read a full batch (so passes go round the journal).
/// Entries are grouped by target
/// (each object or bucket is synced once, whatever the number of its
/// entries); entries of targets with a write under way are left for a
/// later pass. A target that fails is left in the journal and the others
/// go on, unless the failure is `Unavailable` / `Timeout` (a side is down:
/// the pass stops). Returns the number of entries removed; an error when a
/// target failed (after removing what was applied).
pub(crate) async fn pass(shared: &Shared) -> Result<usize> {
    let mut cursor = shared.pass.lock().await;
    let result = pass_locked(shared, &mut cursor).await;
    shared.passes.note(&result, &shared.labels);
    result
}

async fn pass_locked(shared: &Shared, cursor: &mut i64) -> Result<usize> {
    let table = &shared.config.journal_table;
    let batch = shared.config.batch;
    let entries = match journal::due(&*shared.journal, table, *cursor, batch).await {
        Ok(entries) => entries,
        Err(e) => {
            *cursor = 0;
            return Err(e);
        }
    };
    // A full batch: the next pass goes on after it; else from the start.
    *cursor = match entries.last() {
        Some((id, _)) if entries.len() as u64 >= batch => *id,
        _ => 0,
    };
    // Read after the entries: a write whose entry is among them either is
    // still in flight here, or has ended (its state is on the primary).
    let in_flight: HashSet<Target> = shared.in_flight().keys().cloned().collect();
    let mut groups: Vec<(Target, Vec<i64>)> = Vec::new();
    for (id, target) in entries {
        if in_flight.contains(&target) {
            continue;
        }
        match groups.iter_mut().find(|(t, _)| *t == target) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((target, vec![id])),
        }
    }
    let mut done = Vec::new();
    let mut failure = None;
    for (target, ids) in groups {
        match apply(shared, &target).await {
            Ok(()) => done.extend(ids),
            Err(e) => {
                let stop = matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout);
                let e = match &target {
                    Target::Object { bucket, key } => e
                        .with_context("bucket", bucket.as_str())
                        .with_context("key", key.as_str()),
                    Target::Bucket(bucket) => e.with_context("bucket", bucket.as_str()),
                };
                failure.get_or_insert(e);
                if stop {
                    break;
                }
            }
        }
    }
    let removed = journal::remove(&*shared.journal, table, &done).await;
    if removed.is_ok() {
        shared
            .passes
            .applied
            .fetch_add(done.len() as u64, Ordering::Relaxed);
    }
    match (failure, removed) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(done.len()),
    }
}

/// Makes `target` on the secondary what it is on the primary now.
async fn apply(shared: &Shared, target: &Target) -> Result<()> {
    match target {
        Target::Object { bucket, key } => sync_object(shared, bucket, key).await,
        Target::Bucket(bucket) => sync_bucket(shared, bucket).await,
    }
}

/// Copies the object from the primary (content, content type, user
/// metadata, public flag), or deletes it on the secondary when the primary
/// has none. A secondary without the bucket gets it first.
async fn sync_object(shared: &Shared, bucket: &str, key: &str) -> Result<()> {
    let (primary, secondary) = (&*shared.primary, &*shared.secondary);
    let mut made_bucket = false;
    // Deleted or replaced between two calls: looked at again, a few times.
    for _ in 0..5 {
        let Some(meta) = primary.metadata_opt(bucket, key).await? else {
            return delete_object(secondary, bucket, key).await;
        };
        let options = UploadOptions {
            content_type: meta.content_type,
            metadata: meta.metadata,
            public: meta.public && secondary.capabilities().public_objects,
            condition: Default::default(),
        };
        let streaming = primary.capabilities().streaming && secondary.capabilities().streaming;
        let uploaded = if streaming {
            match primary.download_stream(bucket, key, None).await {
                Ok(stream) => secondary.upload_stream(bucket, key, stream, &options).await,
                // Deleted since: look again.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        } else {
            match primary.download(bucket, key).await {
                Ok(data) => secondary.upload(bucket, key, data, &options).await,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        };
        match uploaded {
            Ok(_) => return Ok(()),
            // The secondary has no such bucket (its create entry may still
            // be waiting, or the bucket predates the layer): made once.
            Err(e) if e.kind() == ErrorKind::NotFound && !made_bucket => {
                made_bucket = true;
                create_bucket(secondary, bucket).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::conflict(
        "composite: the object kept changing on the primary while it was copied; retried next pass",
    ))
}

async fn delete_object(secondary: &dyn Storage, bucket: &str, key: &str) -> Result<()> {
    match secondary.delete(bucket, key).await {
        // No such bucket: no such object either.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

async fn create_bucket(secondary: &dyn Storage, bucket: &str) -> Result<()> {
    match secondary.create_bucket(bucket).await {
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
        other => other,
    }
}

/// Creates the bucket on the secondary when the primary has it; deletes it
/// there (with whatever objects the secondary still holds in it) when the
/// primary has not. A secondary that cannot manage buckets is left as it
/// is.
async fn sync_bucket(shared: &Shared, bucket: &str) -> Result<()> {
    let secondary = &*shared.secondary;
    if !secondary.capabilities().manage_buckets {
        return Ok(());
    }
    let on_primary = shared
        .primary
        .list_buckets()
        .await?
        .iter()
        .any(|b| b.name == bucket);
    if on_primary {
        return create_bucket(secondary, bucket).await;
    }
    match secondary.delete_bucket(bucket).await {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        // Objects the journal did not name (written before the layer, or
        // by hand): the primary's bucket is gone, so are they.
        Err(e) if e.kind() == ErrorKind::Conflict => {
            for key in keys(secondary, bucket).await? {
                delete_object(secondary, bucket, &key).await?;
            }
            match secondary.delete_bucket(bucket).await {
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        other => other,
    }
}

/// Every key of `bucket` on `storage` (none when it has no such bucket).
pub(crate) async fn keys(storage: &dyn Storage, bucket: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut options = ListOptions::new();
    loop {
        let page = match storage.list(bucket, &options).await {
            Ok(page) => page,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(e),
        };
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_cursor {
            Some(cursor) => options = options.cursor(cursor),
            None => return Ok(keys),
        }
    }
}

/// The journal's due entries and the age of the oldest; updates the
/// gauges.
pub(crate) async fn lag(shared: &Shared) -> Result<ReplicationLag> {
    let (entries, oldest) = journal::lag(&*shared.journal, &shared.config.journal_table).await?;
    metrics::gauge!(
        "truststream_composite_storage_journal_entries",
        &shared.labels
    )
    .set(entries as f64);
    metrics::gauge!("truststream_composite_storage_lag_seconds", &shared.labels)
        .set(oldest.as_secs_f64());
    Ok(ReplicationLag { entries, oldest })
}
