//! Paged listings with provider-made cursors, and copy sources.
//!
//! A cursor is base64url of `k` + the last key a page returned, or `t` + the
//! server's continuation token when the page ended on a common prefix. A
//! key cursor continues with `StartAfter`, so pages are stable under writes
//! (keys added after the cursor appear, none repeat) on every S3 server,
//! whatever its continuation tokens mean. After a common prefix the server's
//! own token is used, as only it knows how to skip the whole group.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use truststream_core_storage::{keys, Error, ListOptions, ListPage, ObjectMeta, StorageResult};

use crate::error::{map_sdk, Target};

/// Characters left as they are in a copy source (RFC 3986 unreserved, `/`).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The `x-amz-copy-source` value of an object.
pub(crate) fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE))
}

/// Where a page continues.
#[derive(Debug, PartialEq, Eq)]
enum Cursor {
    /// After this key.
    After(String),
    /// The server's continuation token.
    Token(String),
}

fn encode(c: &Cursor) -> String {
    let raw = match c {
        Cursor::After(k) => format!("k{k}"),
        Cursor::Token(t) => format!("t{t}"),
    };
    URL_SAFE_NO_PAD.encode(raw.as_bytes())
}

fn decode(s: &str) -> StorageResult<Cursor> {
    let bad = || {
        Error::invalid_input(
            "malformed list cursor: pass the next_cursor of a previous page unchanged",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    match raw.split_at_checked(1) {
        Some(("k", key)) => {
            keys::validate_key(key).map_err(|_| bad())?;
            Ok(Cursor::After(key.to_string()))
        }
        Some(("t", token)) if !token.is_empty() => Ok(Cursor::Token(token.to_string())),
        _ => Err(bad()),
    }
}

/// One page of a listing.
pub(crate) async fn list_page(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    options: &ListOptions,
) -> StorageResult<ListPage> {
    let prefix = options.prefix.clone().unwrap_or_default();
    keys::validate_prefix(&prefix)?;
    let cursor = options.cursor.as_deref().map(decode).transpose()?;
    let limit = options.page_size();
    let mut req = client
        .list_objects_v2()
        .bucket(bucket)
        .max_keys(i32::try_from(limit).unwrap_or(1000));
    if !prefix.is_empty() {
        req = req.prefix(&prefix);
    }
    if options.delimited {
        req = req.delimiter("/");
    }
    req = match cursor {
        Some(Cursor::After(k)) => req.start_after(k),
        Some(Cursor::Token(t)) => req.continuation_token(t),
        None => req,
    };
    let out = req
        .send()
        .await
        .map_err(|e| map_sdk(e, Target::Bucket(bucket)))?;
    let mut page = ListPage::default();
    for o in out.contents() {
        let Some(key) = o.key() else { continue };
        page.objects.push(ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            content_type: None,
            etag: o.e_tag().unwrap_or_default().to_string(),
            last_modified: o
                .last_modified()
                .and_then(crate::to_chrono)
                .unwrap_or_else(chrono::Utc::now),
            metadata: Default::default(),
            public: false,
            checksum: None,
        });
    }
    page.common_prefixes = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix().map(str::to_string))
        .collect();
    if out.is_truncated() == Some(true) {
        // Objects and prefixes each come sorted; the page ends at the larger
        // of the two last entries.
        let last_key = page.objects.last().map(|o| o.key.as_str());
        let last_prefix = page.common_prefixes.last().map(String::as_str);
        let ends_on_prefix = match (last_key, last_prefix) {
            (Some(k), Some(p)) => p > k,
            (None, Some(_)) => true,
            _ => false,
        };
        let next = match (ends_on_prefix, out.next_continuation_token(), last_key) {
            (false, _, Some(k)) => Some(Cursor::After(k.to_string())),
            (_, Some(t), _) if !t.is_empty() => Some(Cursor::Token(t.to_string())),
            _ => None,
        };
        match next {
            Some(c) => page.next_cursor = Some(encode(&c)),
            None => {
                return Err(Error::internal(
                    "the S3 server said the listing continues but gave no way to continue it",
                ))
            }
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_roundtrip_and_garbage_is_rejected() {
        for c in [
            Cursor::After("a/ré sumé.txt".into()),
            Cursor::Token("opaque==".into()),
        ] {
            assert_eq!(decode(&encode(&c)).unwrap(), c);
        }
        for bad in [
            "%%%",
            "",
            &URL_SAFE_NO_PAD.encode("x"),
            &URL_SAFE_NO_PAD.encode("k../a"),
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(copy_source("b", "a b/c+d.txt"), "b/a%20b/c%2Bd.txt");
    }
}
