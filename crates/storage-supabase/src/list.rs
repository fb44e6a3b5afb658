//! Listing: the Storage API lists one folder at a time (`POST
//! /object/list/{bucket}` with `prefix`, `limit`, `offset`, `search`), names
//! relative to the folder, folders as entries without an id. The trait's
//! listing is flat (every key under a prefix, in key order) or delimited (one
//! level), paged with opaque cursors: this module walks the folders to
//! provide both.
//!
//! A cursor is the last entry a page returned (a key, or a common prefix
//! ending in `/`), base64url-encoded; the next page continues strictly after
//! it, so objects added or removed between pages cause no repeats.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use truststream_core_storage::keys::{validate_key, validate_prefix};
use truststream_core_storage::{Error, ListOptions, ListPage, ObjectMeta, StorageResult};

use crate::error::Target;
use crate::{parse_time, unquote, SupabaseStorage};

/// Entries asked for per list request.
const FOLDER_PAGE: usize = 1000;
/// Most entries read from one folder (a guard against a server that never
/// stops paging).
const MAX_FOLDER_ENTRIES: usize = 1_000_000;

/// One entry of a folder: an object, or a subfolder.
enum Entry {
    Object(ObjectMeta),
    /// A subfolder: its full prefix, ending in `/`.
    Folder(String),
}

impl Entry {
    /// Where the entry sorts among keys: a folder covers every key that
    /// starts with its prefix, so it sorts as the prefix.
    fn sort_key(&self) -> &str {
        match self {
            Entry::Object(m) => &m.key,
            Entry::Folder(p) => p,
        }
    }
}

/// Splits a listing prefix into the folder to list (empty or ending in `/`)
/// and the start of the names wanted in it.
fn split_prefix(prefix: &str) -> (&str, &str) {
    match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    }
}

fn encode_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn decode_cursor(cursor: &str) -> StorageResult<String> {
    let bad = || {
        Error::invalid_input(
            "malformed list cursor: pass the next_cursor of a previous page unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let entry = String::from_utf8(bytes).map_err(|_| bad())?;
    validate_key(entry.strip_suffix('/').unwrap_or(&entry)).map_err(|_| bad())?;
    Ok(entry)
}

/// Whether every key under `folder` (ending in `/`) sorts at or before
/// `after`, so the walk can pass the folder by.
fn folder_done(folder: &str, after: &str) -> bool {
    after > folder && !after.starts_with(folder)
}

struct Walk<'a> {
    store: &'a SupabaseStorage,
    bucket: &'a str,
    after: Option<String>,
    delimited: bool,
    /// Entries wanted: the page size plus one, to know whether a next page
    /// exists.
    want: usize,
    found: Vec<Entry>,
}

impl Walk<'_> {
    fn is_after(&self, sort_key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| sort_key > a)
    }

    /// Visits `folder`'s entries whose names start with `search`, in key
    /// order, descending into subfolders unless delimited; stops once
    /// `want` entries are found.
    async fn visit(&mut self, folder: String, search: String) -> StorageResult<()> {
        let entries = self.store.folder(self.bucket, &folder, &search).await?;
        for entry in entries {
            if self.found.len() >= self.want {
                return Ok(());
            }
            match entry {
                Entry::Folder(prefix) if !self.delimited => {
                    if self
                        .after
                        .as_deref()
                        .is_some_and(|a| folder_done(&prefix, a))
                    {
                        continue;
                    }
                    Box::pin(self.visit(prefix, String::new())).await?;
                }
                entry => {
                    if self.is_after(entry.sort_key()) {
                        self.found.push(entry);
                    }
                }
            }
        }
        Ok(())
    }
}

impl SupabaseStorage {
    /// One page of the trait's listing.
    pub(crate) async fn list_page(
        &self,
        bucket: &str,
        options: &ListOptions,
    ) -> StorageResult<ListPage> {
        let prefix = options.prefix.clone().unwrap_or_default();
        validate_prefix(&prefix)?;
        let after = options.cursor.as_deref().map(decode_cursor).transpose()?;
        let page_size = options.page_size();
        let (folder, search) = split_prefix(&prefix);
        let mut walk = Walk {
            store: self,
            bucket,
            after,
            delimited: options.delimited,
            want: page_size + 1,
            found: Vec::new(),
        };
        walk.visit(folder.to_string(), search.to_string()).await?;
        let mut found = walk.found;
        let more = found.len() > page_size;
        found.truncate(page_size);
        let mut page = ListPage {
            next_cursor: if more {
                found.last().map(|e| encode_cursor(e.sort_key()))
            } else {
                None
            },
            ..ListPage::default()
        };
        for entry in found {
            match entry {
                Entry::Object(m) => page.objects.push(m),
                Entry::Folder(p) => page.common_prefixes.push(p),
            }
        }
        Ok(page)
    }

    /// Every entry of `folder` (empty or ending in `/`) whose name starts
    /// with `search` (case-sensitive: the server's `search` is not, and may
    /// treat `%` and `_` as wildcards, so its answer is filtered again), in
    /// key order.
    async fn folder(&self, bucket: &str, folder: &str, search: &str) -> StorageResult<Vec<Entry>> {
        let path = format!("/object/list/{}", crate::encode_segment(bucket));
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut offset = 0usize;
        loop {
            let body = serde_json::json!({
                "prefix": folder.trim_end_matches('/'),
                "limit": FOLDER_PAGE,
                "offset": offset,
                "sortBy": {"column": "name", "order": "asc"},
                "search": search,
            });
            let rows: Vec<Value> = self
                .send_json(
                    self.request(reqwest::Method::POST, &path).json(&body),
                    Target::Bucket(bucket),
                )
                .await?;
            let got = rows.len();
            for row in rows {
                if let Some(entry) = entry_of(bucket, folder, search, &row) {
                    entries.insert(entry.sort_key().to_string(), entry);
                }
            }
            offset += got;
            if got < FOLDER_PAGE || offset >= MAX_FOLDER_ENTRIES {
                break;
            }
        }
        Ok(entries.into_values().collect())
    }
}

/// One row of a list answer as an entry, or `None` when it is not one this
/// listing wants (outside `search`, or a name no key can have).
fn entry_of(bucket: &str, folder: &str, search: &str, row: &Value) -> Option<Entry> {
    let name = row.get("name")?.as_str()?;
    if name.is_empty() || name.contains('/') || !name.starts_with(search) {
        return None;
    }
    let key = format!("{folder}{name}");
    validate_key(&key).ok()?;
    let is_folder = row.get("id").is_none_or(Value::is_null);
    if is_folder {
        return Some(Entry::Folder(format!("{key}/")));
    }
    let meta = row.get("metadata").filter(|m| m.is_object());
    let field = |name: &str| meta.and_then(|m| m.get(name));
    let size = field("size")
        .or_else(|| field("contentLength"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let etag = field("eTag")
        .and_then(Value::as_str)
        .map(unquote)
        .unwrap_or_default();
    let last_modified = field("lastModified")
        .or_else(|| row.get("updated_at"))
        .or_else(|| row.get("created_at"))
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or(chrono::DateTime::UNIX_EPOCH);
    Some(Entry::Object(ObjectMeta {
        bucket: bucket.to_string(),
        key,
        size,
        content_type: field("mimetype")
            .and_then(Value::as_str)
            .map(str::to_string),
        etag,
        last_modified,
        metadata: BTreeMap::new(),
        public: false,
        checksum: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_split_at_the_last_slash() {
        assert_eq!(split_prefix(""), ("", ""));
        assert_eq!(split_prefix("docs"), ("", "docs"));
        assert_eq!(split_prefix("docs/"), ("docs/", ""));
        assert_eq!(split_prefix("docs/su"), ("docs/", "su"));
    }

    #[test]
    fn folders_are_passed_when_the_cursor_is_beyond_them() {
        assert!(folder_done("a/", "b"));
        assert!(folder_done("a/", "a0"));
        assert!(!folder_done("a/", "a/x"));
        assert!(!folder_done("b/", "a/x"));
        assert!(!folder_done("a/", "a"));
        assert!(!folder_done("a/", "a-b"));
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_invalid_input() {
        assert_eq!(decode_cursor(&encode_cursor("a/b c")).unwrap(), "a/b c");
        assert_eq!(decode_cursor(&encode_cursor("a/")).unwrap(), "a/");
        for bad in ["!", "Li4v", &encode_cursor("../x")] {
            let e = decode_cursor(bad).unwrap_err();
            assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn rows_become_entries() {
        let row = serde_json::json!({
            "name": "a.txt", "id": "1",
            "metadata": {"eTag": "\"abc\"", "size": 3, "mimetype": "text/plain",
                          "lastModified": "2026-01-01T00:00:00Z"}
        });
        let Some(Entry::Object(m)) = entry_of("b", "d/", "", &row) else {
            panic!("not an object")
        };
        assert_eq!(
            (m.key.as_str(), m.size, m.etag.as_str()),
            ("d/a.txt", 3, "abc")
        );
        let folder = serde_json::json!({"name": "sub", "id": null});
        assert!(
            matches!(entry_of("b", "d/", "", &folder), Some(Entry::Folder(p)) if p == "d/sub/")
        );
        // The server's search is case-insensitive; ours is not.
        assert!(entry_of("b", "", "A", &row).is_none());
        let bad = serde_json::json!({"name": "..", "id": "1"});
        assert!(entry_of("b", "", "", &bad).is_none());
    }
}
