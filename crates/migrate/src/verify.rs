//! Verification: per table, the row count and the order-independent digest
//! of both sides (streamed in keyset pages, both sides at once); when they
//! differ, a second streamed pass names the rows (first N). Per bucket, the
//! two listings merged in key order: size, checksum, content type and user
//! metadata per object.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use truststream_core::Result;
use truststream_core_db::{Database, Row, TableSchema};
use truststream_core_storage::{ListOptions, ObjectMeta, Storage};

use crate::copy::{read_page, rows_by_keys};
use crate::digest::{differing_columns, key_text, row_hash, TableDigest};

/// One difference found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A row of the source is missing on the target.
    MissingRow {
        /// Table.
        table: String,
        /// Primary key (canonical text).
        key: String,
    },
    /// The target holds a row the source does not.
    ExtraRow {
        /// Table.
        table: String,
        /// Primary key (canonical text).
        key: String,
    },
    /// The row differs.
    ChangedRow {
        /// Table.
        table: String,
        /// Primary key (canonical text).
        key: String,
        /// The columns whose values differ.
        columns: Vec<String>,
    },
    /// An object of the source is missing on the target.
    MissingObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The target holds an object the source does not.
    ExtraObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The object differs.
    ChangedObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What differs (`size`, `checksum`, `content_type`, `metadata`).
        fields: Vec<&'static str>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::MissingRow { table, key } => {
                write!(f, "table {table}: row {key} is missing on the target")
            }
            Difference::ExtraRow { table, key } => {
                write!(f, "table {table}: row {key} is on the target only")
            }
            Difference::ChangedRow {
                table,
                key,
                columns,
            } => write!(
                f,
                "table {table}: row {key} differs in {}",
                columns.join(", ")
            ),
            Difference::MissingObject { bucket, key } => {
                write!(f, "bucket {bucket}: object {key} is missing on the target")
            }
            Difference::ExtraObject { bucket, key } => {
                write!(f, "bucket {bucket}: object {key} is on the target only")
            }
            Difference::ChangedObject {
                bucket,
                key,
                fields,
            } => write!(
                f,
                "bucket {bucket}: object {key} differs in {}",
                fields.join(", ")
            ),
        }
    }
}

/// Verification of one table.
#[derive(Debug, Clone)]
pub struct TableCheck {
    /// Table.
    pub table: String,
    /// Source rows and digest.
    pub source: TableDigest,
    /// Target rows and digest.
    pub target: TableDigest,
    /// The differing rows (at most the limit asked for).
    pub differences: Vec<Difference>,
}

impl TableCheck {
    /// Both sides hold the same rows.
    pub fn is_ok(&self) -> bool {
        self.source == self.target
    }
}

/// Verification of one bucket.
#[derive(Debug, Clone, Default)]
pub struct BucketCheck {
    /// Bucket.
    pub bucket: String,
    /// Source objects and bytes.
    pub source_objects: u64,
    /// Source bytes.
    pub source_bytes: u64,
    /// Target objects.
    pub target_objects: u64,
    /// Target bytes.
    pub target_bytes: u64,
    /// How many objects differ (all of them counted).
    pub different: u64,
    /// The differing objects (at most the limit asked for).
    pub differences: Vec<Difference>,
}

impl BucketCheck {
    /// Both sides hold the same objects.
    pub fn is_ok(&self) -> bool {
        self.different == 0
    }
}

async fn digest(db: &dyn Database, schema: &TableSchema, batch: usize) -> Result<TableDigest> {
    let key = schema.primary_key().map(|c| c.name.clone());
    let mut d = TableDigest::default();
    let mut after = None;
    loop {
        let page = read_page(db, schema, after.as_ref(), batch).await?;
        for r in &page {
            d.add(row_hash(schema, r));
        }
        if page.len() < batch {
            return Ok(d);
        }
        after = key
            .as_ref()
            .and_then(|k| page.last().and_then(|r| r.get(k)).cloned());
    }
}

/// Rows of `from` that `other` lacks or holds differently, in `from`'s
/// key order; with `changed` false, only the missing ones are reported
/// (the second pass, from the target's side).
async fn diff_pass(
    from: &dyn Database,
    other: &dyn Database,
    schema: &TableSchema,
    batch: usize,
    limit: usize,
    from_is_source: bool,
    out: &mut Vec<Difference>,
) -> Result<()> {
    let Some(key) = schema.primary_key().map(|c| c.name.clone()) else {
        return Ok(());
    };
    let mut after = None;
    loop {
        if out.len() >= limit {
            return Ok(());
        }
        let page = read_page(from, schema, after.as_ref(), batch).await?;
        let keys = page.iter().filter_map(|r| r.get(&key).cloned()).collect();
        let others: HashMap<String, Row> = rows_by_keys(other, schema, keys)
            .await?
            .into_iter()
            .filter_map(|r| r.get(&key).map(|k| (key_text(schema, k), r.clone())))
            .collect();
        for r in &page {
            let Some(k) = r.get(&key) else { continue };
            let k = key_text(schema, k);
            let table = schema.name.clone();
            let d = match others.get(&k) {
                None if from_is_source => Some(Difference::MissingRow { table, key: k }),
                None => Some(Difference::ExtraRow { table, key: k }),
                Some(o) if from_is_source && row_hash(schema, o) != row_hash(schema, r) => {
                    Some(Difference::ChangedRow {
                        table,
                        key: k,
                        columns: differing_columns(schema, r, o),
                    })
                }
                Some(_) => None,
            };
            if let Some(d) = d {
                if out.len() < limit {
                    out.push(d);
                }
            }
        }
        if page.len() < batch {
            return Ok(());
        }
        after = page.last().and_then(|r| r.get(&key)).cloned();
    }
}

/// Verifies one table (the source's schema decides the columns compared).
pub async fn verify_table(
    source: Arc<dyn Database>,
    target: Arc<dyn Database>,
    schema: &TableSchema,
    batch: usize,
    limit: usize,
) -> Result<TableCheck> {
    let (s, t) = tokio::join!(
        digest(source.as_ref(), schema, batch),
        digest(target.as_ref(), schema, batch)
    );
    let (s, t) = (s?, t?);
    let mut differences = Vec::new();
    if s != t {
        diff_pass(
            source.as_ref(),
            target.as_ref(),
            schema,
            batch,
            limit,
            true,
            &mut differences,
        )
        .await?;
        diff_pass(
            target.as_ref(),
            source.as_ref(),
            schema,
            batch,
            limit,
            false,
            &mut differences,
        )
        .await?;
    }
    Ok(TableCheck {
        table: schema.name.clone(),
        source: s,
        target: t,
        differences,
    })
}

/// A bucket's listing, page by page.
struct Lister<'a> {
    storage: &'a dyn Storage,
    bucket: &'a str,
    page: std::collections::VecDeque<ObjectMeta>,
    cursor: Option<String>,
    end: bool,
}

impl<'a> Lister<'a> {
    fn new(storage: &'a dyn Storage, bucket: &'a str) -> Self {
        Lister {
            storage,
            bucket,
            page: Default::default(),
            cursor: None,
            end: false,
        }
    }

    async fn peek(&mut self) -> Result<Option<&ObjectMeta>> {
        while self.page.is_empty() && !self.end {
            let mut o = ListOptions::new().limit(1000);
            if let Some(c) = self.cursor.take() {
                o = o.cursor(c);
            }
            let p = self.storage.list(self.bucket, &o).await?;
            self.page.extend(p.objects);
            self.cursor = p.next_cursor;
            self.end = self.cursor.is_none();
        }
        Ok(self.page.front())
    }

    fn pop(&mut self) -> Option<ObjectMeta> {
        self.page.pop_front()
    }
}

/// What differs between two objects' metadata.
pub(crate) fn object_fields(a: &ObjectMeta, b: &ObjectMeta) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.size != b.size {
        f.push("size");
    }
    if let (Some(x), Some(y)) = (&a.checksum, &b.checksum) {
        if x.algorithm() == y.algorithm() && x != y {
            f.push("checksum");
        }
    }
    if a.content_type.is_some() && a.content_type != b.content_type {
        f.push("content_type");
    }
    if a.metadata != b.metadata {
        f.push("metadata");
    }
    f
}

/// The object's whole metadata. A listing entry without a checksum or a
/// content type is partial: S3's ListObjectsV2 and Supabase's list carry
/// neither the user metadata nor the public flag either, so such an entry
/// is completed with `get_metadata` (one request per object).
pub(crate) async fn full_meta(storage: &dyn Storage, m: ObjectMeta) -> Result<ObjectMeta> {
    if m.content_type.is_some() && m.checksum.is_some() {
        return Ok(m);
    }
    storage.get_metadata(&m.bucket, &m.key).await
}

/// Verifies one bucket: both listings merged in key order.
pub async fn verify_bucket(
    source: &dyn Storage,
    target: &dyn Storage,
    bucket: &str,
    limit: usize,
) -> Result<BucketCheck> {
    let mut check = BucketCheck {
        bucket: bucket.to_string(),
        ..Default::default()
    };
    let target_has = target
        .list_buckets()
        .await?
        .iter()
        .any(|b| b.name == bucket);
    let mut s = Lister::new(source, bucket);
    let mut t = Lister::new(target, bucket);
    t.end = !target_has;
    let note = |check: &mut BucketCheck, d: Difference| {
        check.different += 1;
        if check.differences.len() < limit {
            check.differences.push(d);
        }
    };
    loop {
        let sk = s.peek().await?.map(|m| m.key.clone());
        let tk = t.peek().await?.map(|m| m.key.clone());
        match (sk, tk) {
            (None, None) => break,
            (Some(a), b) if b.as_ref().is_none_or(|b| a < *b) => {
                if let Some(m) = s.pop() {
                    check.source_objects += 1;
                    check.source_bytes += m.size;
                }
                note(
                    &mut check,
                    Difference::MissingObject {
                        bucket: bucket.to_string(),
                        key: a,
                    },
                );
            }
            (a, Some(b)) if a.as_ref().is_none_or(|a| b < *a) => {
                if let Some(m) = t.pop() {
                    check.target_objects += 1;
                    check.target_bytes += m.size;
                }
                note(
                    &mut check,
                    Difference::ExtraObject {
                        bucket: bucket.to_string(),
                        key: b,
                    },
                );
            }
            _ => {
                let (Some(a), Some(b)) = (s.pop(), t.pop()) else {
                    break;
                };
                check.source_objects += 1;
                check.source_bytes += a.size;
                check.target_objects += 1;
                check.target_bytes += b.size;
                let (a, b) = tokio::try_join!(full_meta(source, a), full_meta(target, b))?;
                let fields = object_fields(&a, &b);
                if !fields.is_empty() {
                    note(
                        &mut check,
                        Difference::ChangedObject {
                            bucket: bucket.to_string(),
                            key: a.key,
                            fields,
                        },
                    );
                }
            }
        }
    }
    Ok(check)
}
