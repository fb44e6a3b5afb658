//! Paged listing over a bucket's sorted key map, with opaque cursors.
//!
//! A cursor is the last entry a page returned (an object key, or a common
//! prefix ending in `/`), base64url-encoded. The next page continues strictly
//! after it, so objects added or removed between pages never cause repeats;
//! when the cursor is a common prefix, every key under it is skipped.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use truststream_core_storage::{keys, Error, ListOptions, ListPage, StorageResult};

use crate::StoredObject;

/// Encodes the last entry of a page as a cursor.
pub(crate) fn encode_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// Decodes and checks a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(cursor: &str) -> StorageResult<String> {
    let bad = || {
        Error::invalid_input(
            "malformed list cursor: pass the next_cursor of a previous page unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let entry = String::from_utf8(bytes).map_err(|_| bad())?;
    // An entry is a key, or a common prefix (a key followed by '/').
    let as_key = entry.strip_suffix('/').unwrap_or(&entry);
    keys::validate_key(as_key).map_err(|_| bad())?;
    Ok(entry)
}

/// A checked listing request: prefix, where to continue, grouping, page size.
pub(crate) struct Plan {
    prefix: String,
    after: Option<String>,
    delimited: bool,
    page_size: usize,
}

impl Plan {
    pub(crate) fn new(options: &ListOptions) -> StorageResult<Plan> {
        let prefix = options.prefix.clone().unwrap_or_default();
        keys::validate_prefix(&prefix)?;
        let after = options.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Plan {
            prefix,
            after,
            delimited: options.delimited,
            page_size: options.page_size(),
        })
    }

    /// One page of `objects`. Each step is one ordered-map lookup, so a
    /// common prefix holding many keys is passed over without visiting them.
    pub(crate) fn page(&self, objects: &BTreeMap<String, Arc<StoredObject>>) -> ListPage {
        let mut from = match &self.after {
            Some(a) if a.ends_with('/') => Bound::Included(past_group(a)),
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Included(self.prefix.clone()),
        };
        if let Bound::Included(s) | Bound::Excluded(s) = &from {
            if s.as_str() < self.prefix.as_str() {
                from = Bound::Included(self.prefix.clone());
            }
        }
        let mut page = ListPage::default();
        let mut last: Option<String> = None;
        let mut count = 0;
        loop {
            let bound = match &from {
                Bound::Included(s) => Bound::Included(s.as_str()),
                Bound::Excluded(s) => Bound::Excluded(s.as_str()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let Some((key, obj)) = objects.range::<str, _>((bound, Bound::Unbounded)).next() else {
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
            let group = if self.delimited {
                key[self.prefix.len()..]
                    .find('/')
                    .map(|i| &key[..self.prefix.len() + i + 1])
            } else {
                None
            };
            match group {
                Some(group) => {
                    page.common_prefixes.push(group.to_string());
                    from = Bound::Included(past_group(group));
                    last = Some(group.to_string());
                }
                None => {
                    page.objects.push(obj.meta.clone());
                    from = Bound::Excluded(key.clone());
                    last = Some(key.clone());
                }
            }
        }
        page
    }
}

/// The smallest string after every string starting with `group` (which ends
/// with `/`): `a/` becomes `a0`, as `0` follows `/` in byte order.
fn past_group(group: &str) -> String {
    let stem = group.strip_suffix('/').unwrap_or(group);
    format!("{stem}0")
}
