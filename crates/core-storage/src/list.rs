//! Paged listing over a sorted key index, with opaque cursors, for providers
//! that keep (or build) their bucket's keys in a [`BTreeMap`] (memory,
//! filesystem).
//!
//! A cursor is the last entry a page returned (an object key, or a common
//! prefix ending in `/`), base64url-encoded. The next page continues strictly
//! after it, so objects added or removed between pages never cause repeats;
//! when the cursor is a common prefix, every key under it is skipped.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::{keys, Error, ListOptions, ListPage, ObjectMeta, StorageResult};

/// A checked listing request: prefix, where to continue, grouping, page size.
#[derive(Debug, Clone)]
pub struct ListPlan {
    prefix: String,
    after: Option<String>,
    delimited: bool,
    page_size: usize,
}

impl ListPlan {
    /// Checks the prefix and the cursor of `options`: a bad prefix or a
    /// cursor no page returned is `ErrorKind::InvalidInput`.
    pub fn new(options: &ListOptions) -> StorageResult<ListPlan> {
        let prefix = options.prefix.clone().unwrap_or_default();
        keys::validate_prefix(&prefix)?;
        let after = options.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(ListPlan {
            prefix,
            after,
            delimited: options.delimited,
            page_size: options.page_size(),
        })
    }

    /// One page of `index`, whose values `meta` turns into the listed
    /// metadata. Each step is one ordered-map lookup, so a common prefix
    /// holding many keys is passed over without visiting them.
    pub fn page<V>(
        &self,
        index: &BTreeMap<String, V>,
        meta: impl Fn(&V) -> ObjectMeta,
    ) -> ListPage {
        let start = match &self.after {
            Some(a) if a.ends_with('/') => Bound::Included(past_group(a)),
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Included(self.prefix.clone()),
        };
        let mut from = match start {
            Bound::Included(s) | Bound::Excluded(s) if s < self.prefix => {
                Bound::Included(self.prefix.clone())
            }
            other => other,
        };
        let mut page = ListPage::default();
        let mut last: Option<String> = None;
        let mut count = 0;
        loop {
            let bound = match &from {
                Bound::Included(s) => Bound::Included(s.as_str()),
                Bound::Excluded(s) => Bound::Excluded(s.as_str()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let Some((key, value)) = index.range::<str, _>((bound, Bound::Unbounded)).next() else {
                break;
            };
            if !key.starts_with(&self.prefix) {
                // Keys are sorted: once past the prefix, nothing else matches.
                break;
            }
            if count == self.page_size {
                page.next_cursor = last.as_deref().map(encode_cursor);
                break;
            }
            count += 1;
            let group = self
                .delimited
                .then(|| key[self.prefix.len()..].find('/'))
                .flatten()
                .map(|i| &key[..self.prefix.len() + i + 1]);
            match group {
                Some(group) => {
                    page.common_prefixes.push(group.to_string());
                    from = Bound::Included(past_group(group));
                    last = Some(group.to_string());
                }
                None => {
                    page.objects.push(meta(value));
                    from = Bound::Excluded(key.clone());
                    last = Some(key.clone());
                }
            }
        }
        page
    }
}

/// Encodes the last entry of a page as a cursor.
fn encode_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// Decodes and checks a cursor made by [`encode_cursor`].
fn decode_cursor(cursor: &str) -> StorageResult<String> {
    let bad = || {
        Error::invalid_input(
            "malformed list cursor: pass the next_cursor of a previous page unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let entry = String::from_utf8(bytes).map_err(|_| bad())?;
    // An entry is a key, or a common prefix (a key followed by '/').
    keys::validate_key(entry.strip_suffix('/').unwrap_or(&entry)).map_err(|_| bad())?;
    Ok(entry)
}

/// The smallest string after every string that starts with `group` (which
/// ends with `/`): `a/` becomes `a0`, as `0` follows `/` in byte order.
fn past_group(group: &str) -> String {
    format!("{}0", group.strip_suffix('/').unwrap_or(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            bucket: "b".into(),
            key: key.into(),
            size: 0,
            content_type: None,
            etag: String::new(),
            last_modified: chrono::DateTime::UNIX_EPOCH,
            metadata: BTreeMap::new(),
            public: false,
            checksum: None,
        }
    }

    fn keys_of(page: &ListPage) -> Vec<&str> {
        page.objects.iter().map(|m| m.key.as_str()).collect()
    }

    #[test]
    fn pages_group_and_continue_after_the_cursor() {
        let index: BTreeMap<String, ()> = ["a", "c/1", "c/2", "d", "e/f"]
            .into_iter()
            .map(|k| (k.to_string(), ()))
            .collect();
        let page = |o: &ListOptions| ListPlan::new(o).unwrap().page(&index, |_| meta("x"));
        let first = ListPlan::new(&ListOptions::new().delimited().limit(2))
            .unwrap()
            .page(&index, |_| meta("a"));
        assert_eq!(first.common_prefixes, ["c/"]);
        assert_eq!(keys_of(&first), ["a"]);
        let cursor = first.next_cursor.clone().unwrap();
        let rest = page(&ListOptions::new().delimited().cursor(cursor));
        // Every key under the `c/` cursor is skipped.
        assert_eq!(rest.objects.len(), 1);
        assert_eq!(rest.common_prefixes, ["e/"]);
        assert_eq!(rest.next_cursor, None);
        let under_c = page(&ListOptions::new().prefix("c/"));
        assert_eq!(under_c.objects.len(), 2);
    }

    #[test]
    fn bad_cursors_are_invalid_input() {
        for bad in ["/w", "Zm9vLy9iYXI", "!"] {
            let e = ListPlan::new(&ListOptions::new().cursor(bad)).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
