//! One page of a listing over a bucket's sorted index, with opaque cursors.
//!
//! A cursor is the last entry a page returned (a key, or a common prefix
//! ending in `/`), base64url-encoded; the next page continues strictly after
//! it, so writes between pages never repeat an entry.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use truststream_core_storage::{keys, Error, ListOptions, ListPage, ObjectMeta, StorageResult};

/// A checked listing request.
pub(crate) struct Plan {
    prefix: String,
    after: Option<String>,
    delimited: bool,
    page_size: usize,
}

impl Plan {
    /// Checks the prefix and cursor of `options`.
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

    /// One page of `index`. Each step is one ordered lookup, so a common
    /// prefix with many keys is skipped without visiting them.
    pub(crate) fn page(&self, index: &BTreeMap<String, ObjectMeta>) -> ListPage {
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
            let Some((key, meta)) = index.range::<str, _>((bound, Bound::Unbounded)).next() else {
                break;
            };
            if !key.starts_with(&self.prefix) {
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
                    page.objects.push(meta.clone());
                    from = Bound::Excluded(key.clone());
                    last = Some(key.clone());
                }
            }
        }
        page
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
    keys::validate_key(entry.strip_suffix('/').unwrap_or(&entry)).map_err(|_| bad())?;
    Ok(entry)
}

/// The smallest string after every string that starts with `group` (which
/// ends with `/`): `a/` becomes `a0`, since `0` follows `/`.
fn past_group(group: &str) -> String {
    format!("{}0", group.strip_suffix('/').unwrap_or(group))
}
