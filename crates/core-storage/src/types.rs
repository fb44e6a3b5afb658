//! Data types of the storage interface.

use std::collections::BTreeMap;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::{Checksum, Error, StorageResult};

/// A stream of byte chunks (uploads and downloads of large objects). An `Err`
/// item ends the transfer: a download never yields a silently short body.
pub type ByteStream = Pin<Box<dyn Stream<Item = StorageResult<Bytes>> + Send>>;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type given at upload (or guessed by the provider).
    pub content_type: Option<String>,
    /// Entity tag: changes whenever the content changes.
    pub etag: String,
    /// When the object was last written.
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// User metadata given at upload.
    pub metadata: BTreeMap<String, String>,
    /// Whether the object was uploaded as public.
    pub public: bool,
    /// Checksum of the content recorded at upload, where the provider
    /// records one (see [`Checksum`]); a whole download is checked against
    /// it. Metadata serialized by earlier versions as `checksum_sha256` (a
    /// hex SHA-256) still reads.
    #[serde(default, alias = "checksum_sha256")]
    pub checksum: Option<Checksum>,
}

/// An object's metadata and its bytes (or a range of them), read together:
/// what [`Storage::download_with_metadata`](crate::Storage::download_with_metadata)
/// answers.
///
/// Where the provider reads both in one operation, `meta` describes exactly
/// the version `body` yields (its size, ETag, content type and checksum).
pub struct ObjectDownload {
    /// Metadata of the object, as [`Storage::get_metadata`](crate::Storage::get_metadata)
    /// returns it.
    pub meta: ObjectMeta,
    /// The bytes `body` yields: `start..end` of the object, `0..meta.size`
    /// for a whole one. A requested range ending past the object is cut at
    /// its end here.
    pub range: std::ops::Range<u64>,
    /// The bytes, as [`Storage::download_stream`](crate::Storage::download_stream)
    /// yields them (a whole object is checked against its checksum at the
    /// end, where one was recorded).
    pub body: ByteStream,
}

impl ObjectDownload {
    /// Number of bytes `body` yields.
    pub fn len(&self) -> u64 {
        self.range.end.saturating_sub(self.range.start)
    }

    /// Whether `body` yields nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the body is part of the object rather than all of it.
    pub fn is_partial(&self) -> bool {
        self.range != (0..self.meta.size)
    }

    /// Reads the whole body into one buffer (no copy when it comes as one
    /// chunk). An `Err` item of the body is the error.
    pub async fn into_bytes(mut self) -> StorageResult<Bytes> {
        use futures::StreamExt;
        let Some(first) = self.body.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.body.next().await.transpose()? else {
            return Ok(first);
        };
        let mut buf = bytes::BytesMut::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

impl std::fmt::Debug for ObjectDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectDownload")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// When an upload may replace what is there.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteCondition {
    /// Always write.
    #[default]
    None,
    /// Only if no object exists at the key (create-only).
    IfNotExists,
    /// Only if the current object's ETag is this one (safe read-modify-write).
    IfMatch(String),
}

impl WriteCondition {
    /// Checks the condition against what is stored at `bucket`/`key`:
    /// `current_etag` is the stored object's ETag, `None` when there is no
    /// object. ETags compare without their surrounding quotes. A failed
    /// condition is `ErrorKind::Conflict`, saying which; for providers that
    /// check conditions themselves (under their own lock).
    ///
    /// ```
    /// use truststream_core_storage::{ErrorKind, WriteCondition};
    ///
    /// let c = WriteCondition::IfMatch("\"abc\"".into());
    /// assert!(c.check(Some("abc"), "b", "k").is_ok());
    /// let e = c.check(Some("\"def\""), "b", "k").unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Conflict);
    /// assert!(WriteCondition::IfNotExists.check(None, "b", "k").is_ok());
    /// ```
    pub fn check(&self, current_etag: Option<&str>, bucket: &str, key: &str) -> StorageResult<()> {
        fn unquote(etag: &str) -> &str {
            etag.trim().trim_matches('"')
        }
        match (self, current_etag) {
            (WriteCondition::None, _) | (WriteCondition::IfNotExists, None) => Ok(()),
            (WriteCondition::IfNotExists, Some(_)) => Err(Error::conflict(format!(
                "object {key:?} already exists in bucket {bucket:?} (write condition: if not exists)"
            ))),
            (WriteCondition::IfMatch(expected), None) => Err(Error::conflict(format!(
                "object {key:?} does not exist in bucket {bucket:?}, so it cannot match ETag {expected}"
            ))),
            (WriteCondition::IfMatch(expected), Some(etag)) if unquote(etag) == unquote(expected) => {
                Ok(())
            }
            (WriteCondition::IfMatch(expected), Some(etag)) => Err(Error::conflict(format!(
                "object {key:?} in bucket {bucket:?} changed: its ETag is {etag}, not {expected}; \
                 read it again and retry"
            ))),
        }
    }
}

/// Options of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UploadOptions {
    /// MIME type.
    pub content_type: Option<String>,
    /// User metadata (keys: ASCII letters, digits, `-`, `_`).
    pub metadata: BTreeMap<String, String>,
    /// Whether the object may be served without a signed URL.
    pub public: bool,
    /// Write condition.
    pub condition: WriteCondition,
}

impl UploadOptions {
    /// Defaults: no content type, no metadata, private, unconditional.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the MIME type.
    pub fn content_type(mut self, ct: impl Into<String>) -> Self {
        self.content_type = Some(ct.into());
        self
    }
    /// Adds a metadata pair.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Sets the public flag.
    pub fn public(mut self, public: bool) -> Self {
        self.public = public;
        self
    }
    /// Sets the write condition.
    pub fn condition(mut self, condition: WriteCondition) -> Self {
        self.condition = condition;
        self
    }
    /// Checks an upload of these options to `bucket/key`: the bucket name and
    /// the key ([`crate::keys`]), then the options ([`UploadOptions::validate`]),
    /// as every provider does before it stores anything.
    pub fn validate_upload(&self, bucket: &str, key: &str) -> StorageResult<()> {
        crate::keys::validate_bucket(bucket)?;
        crate::keys::validate_key(key)?;
        self.validate()
    }

    /// Checks metadata keys and sizes (limits of S3: 2 KiB of metadata in all).
    pub fn validate(&self) -> StorageResult<()> {
        let mut total = 0;
        for (k, v) in &self.metadata {
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::invalid_input(format!(
                    "metadata key {k:?}: use ASCII letters, digits, '-' and '_'"
                )));
            }
            if v.chars().any(char::is_control) {
                return Err(Error::invalid_input(format!(
                    "metadata value of {k:?} contains control characters"
                )));
            }
            total += k.len() + v.len();
        }
        if total > 2048 {
            return Err(Error::too_large("user metadata exceeds 2 KiB"));
        }
        if let Some(ct) = &self.content_type {
            if ct.len() > 255 || ct.chars().any(char::is_control) {
                return Err(Error::invalid_input("invalid content type"));
            }
        }
        Ok(())
    }
}

/// A byte range: `start..end` (end exclusive) or `start..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte; `None` = to the end.
    pub end: Option<u64>,
}

impl ByteRange {
    /// `start..end`.
    pub fn new(start: u64, end: u64) -> Self {
        ByteRange {
            start,
            end: Some(end),
        }
    }
    /// `start..`.
    pub fn from(start: u64) -> Self {
        ByteRange { start, end: None }
    }
    /// Resolves against an object size: the `start..end` to return, or
    /// `InvalidInput` when the range is empty, reversed or starts past the end.
    pub fn resolve(&self, size: u64) -> StorageResult<std::ops::Range<u64>> {
        let end = self.end.unwrap_or(size).min(size);
        if self.end.is_some_and(|e| e <= self.start) {
            return Err(Error::invalid_input(format!(
                "empty or reversed byte range {}..{:?}",
                self.start, self.end
            )));
        }
        if self.start >= size && !(self.start == 0 && size == 0) {
            return Err(Error::invalid_input(format!(
                "byte range starts at {} but the object has {size} bytes",
                self.start
            )));
        }
        Ok(self.start..end)
    }
}

/// Options of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListOptions {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Group keys by `/` after the prefix into `common_prefixes`.
    pub delimited: bool,
    /// Page size (default and maximum 1000).
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl ListOptions {
    /// Everything, first page.
    pub fn new() -> Self {
        Self::default()
    }
    /// Keys starting with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// Page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Continue after a previous page.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }
    /// Group by `/` into common prefixes.
    pub fn delimited(mut self) -> Self {
        self.delimited = true;
        self
    }
    /// The page size to use: `limit` clamped to 1..=1000.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(1000).clamp(1, 1000)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<ObjectMeta>,
    /// With `delimited`: the "directories" (prefix + segment + `/`).
    pub common_prefixes: Vec<String>,
    /// Pass as `ListOptions::cursor` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// HTTP method a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SignedUrlMethod {
    /// Download.
    Get,
    /// Upload.
    Put,
}

impl SignedUrlMethod {
    /// `"GET"` or `"PUT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignedUrlMethod::Get => "GET",
            SignedUrlMethod::Put => "PUT",
        }
    }
}

/// A signed URL and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUrl {
    /// The URL.
    pub url: String,
    /// The method it allows.
    pub method: SignedUrlMethod,
    /// Expiry.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// Name.
    pub name: String,
    /// Creation time, where known.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}
