//! User metadata, the public flag and the checksum as S3 user metadata
//! (`x-amz-meta-*` headers).
//!
//! S3 lowercases metadata names and only carries visible ASCII in values,
//! while TrustStream keeps the case of keys and allows any printable text.
//! So besides one header per user key (lowercased, readable by other S3
//! tools), the provider writes `x-amz-meta-truststream-keys`: the original
//! keys in order, each followed by `*` when its value is percent-encoded.
//! Names starting with `truststream-` are reserved.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use truststream_core_storage::{Checksum, Error, ObjectMeta, StorageResult, UploadOptions};

/// Prefix of the provider's own metadata names.
pub(crate) const RESERVED: &str = "truststream-";
/// The content's checksum, in [`Checksum`]'s text form (`crc32c:…`).
pub(crate) const CHECKSUM: &str = "truststream-checksum";
/// Lowercase hex SHA-256 of the content, as earlier versions recorded it
/// (still read).
pub(crate) const SHA256: &str = "truststream-sha256";
/// `true` when uploaded as public.
pub(crate) const PUBLIC: &str = "truststream-public";
/// The original user keys (see the module docs).
pub(crate) const KEYS: &str = "truststream-keys";

/// Characters encoded in a value that is not sent as is.
const VALUE: &AsciiSet = &CONTROLS.add(b'%').add(b' ').add(b'"').add(b',');

/// Whether a value can travel as a header unchanged.
fn plain(v: &str) -> bool {
    !v.is_empty()
        && v.bytes().all(|b| (0x21..=0x7e).contains(&b) || b == b' ')
        && !v.starts_with(' ')
        && !v.ends_with(' ')
}

/// The `x-amz-meta-*` map for an upload (names without the prefix).
/// `options` must already be validated.
pub(crate) fn encode(
    options: &UploadOptions,
    checksum: Option<Checksum>,
) -> StorageResult<HashMap<String, String>> {
    let mut out = HashMap::with_capacity(options.metadata.len() + 3);
    let mut keys = Vec::with_capacity(options.metadata.len());
    for (k, v) in &options.metadata {
        let lower = k.to_ascii_lowercase();
        if lower.starts_with(RESERVED) {
            return Err(Error::invalid_input(format!(
                "metadata key {k:?}: names starting with {RESERVED:?} are reserved by the S3 provider"
            )));
        }
        let value = if plain(v) {
            keys.push(k.clone());
            v.clone()
        } else {
            keys.push(format!("{k}*"));
            utf8_percent_encode(v, VALUE).to_string()
        };
        if out.insert(lower, value).is_some() {
            return Err(Error::invalid_input(format!(
                "metadata key {k:?}: S3 metadata names are case-insensitive, and another key \
                 differs from it only in case"
            )));
        }
    }
    if !keys.is_empty() {
        out.insert(KEYS.to_string(), keys.join(","));
    }
    if options.public {
        out.insert(PUBLIC.to_string(), "true".to_string());
    }
    if let Some(sum) = checksum {
        out.insert(CHECKSUM.to_string(), sum.to_string());
    }
    Ok(out)
}

/// What the `x-amz-meta-*` map of an object says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) public: bool,
    pub(crate) checksum: Option<Checksum>,
}

/// Reads back what [`encode`] wrote; metadata written by other tools comes
/// through with the lowercase names S3 gives it.
pub(crate) fn decode(raw: Option<&HashMap<String, String>>) -> Decoded {
    let mut d = Decoded::default();
    let Some(raw) = raw else { return d };
    // Some servers keep the case of names: compare lowercase.
    let lower: HashMap<String, &String> = raw
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    d.public = lower.get(PUBLIC).is_some_and(|v| v.as_str() == "true");
    // An unreadable value (written by another tool) is no checksum rather
    // than an error: the object is then served unverified.
    d.checksum = lower
        .get(CHECKSUM)
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            lower
                .get(SHA256)
                .filter(|v| v.len() == 64)
                .and_then(|v| v.parse().ok())
        });
    let mut named = std::collections::HashSet::new();
    if let Some(list) = lower.get(KEYS) {
        for entry in list.split(',').filter(|e| !e.is_empty()) {
            let (key, encoded) = match entry.strip_suffix('*') {
                Some(k) => (k, true),
                None => (entry, false),
            };
            let lk = key.to_ascii_lowercase();
            let value = lower.get(&lk).map(|v| v.as_str()).unwrap_or_default();
            let value = if encoded {
                percent_decode_str(value).decode_utf8_lossy().into_owned()
            } else {
                value.to_string()
            };
            d.metadata.insert(key.to_string(), value);
            named.insert(lk);
        }
    }
    for (k, v) in &lower {
        if !k.starts_with(RESERVED) && !named.contains(k) {
            d.metadata.insert(k.clone(), (*v).clone());
        }
    }
    d
}

/// The object headers S3 answers to a HEAD and a GET alike, borrowed from
/// either response: one mapping to [`ObjectMeta`] for both.
pub(crate) struct ObjectHeaders<'a> {
    /// The whole object's size.
    pub(crate) size: u64,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) etag: Option<&'a str>,
    pub(crate) last_modified: Option<&'a aws_sdk_s3::primitives::DateTime>,
    pub(crate) metadata: Option<&'a HashMap<String, String>>,
}

impl<'a> ObjectHeaders<'a> {
    /// The headers of a `HeadObject` answer.
    pub(crate) fn of_head(out: &'a HeadObjectOutput) -> Self {
        ObjectHeaders {
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            content_type: out.content_type(),
            etag: out.e_tag(),
            last_modified: out.last_modified(),
            metadata: out.metadata(),
        }
    }

    /// The headers of a `GetObject` answer. A ranged answer's length is the
    /// range's: the object's size is the total of its `Content-Range`.
    pub(crate) fn of_get(out: &'a GetObjectOutput) -> Self {
        let length = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        ObjectHeaders {
            size: out.content_range().and_then(range_total).unwrap_or(length),
            content_type: out.content_type(),
            etag: out.e_tag(),
            last_modified: out.last_modified(),
            metadata: out.metadata(),
        }
    }

    /// The object's metadata.
    pub(crate) fn into_meta(self, bucket: &str, key: &str) -> ObjectMeta {
        let decoded = decode(self.metadata);
        ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: self.size,
            content_type: self.content_type.map(str::to_string),
            etag: self.etag.unwrap_or_default().to_string(),
            last_modified: self
                .last_modified
                .and_then(crate::to_chrono)
                .unwrap_or_else(chrono::Utc::now),
            metadata: decoded.metadata,
            public: decoded.public,
            checksum: decoded.checksum,
        }
    }
}

/// The total of a `Content-Range` value (`bytes 0-99/1000` → 1000); `None`
/// when it is unknown (`*`) or unreadable.
pub(crate) fn range_total(content_range: &str) -> Option<u64> {
    let (_, total) = content_range.trim().rsplit_once('/')?;
    total.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_case_and_text() {
        let opts = UploadOptions::new()
            .metadata("agentId", "42")
            .metadata("note", " ré sumé, 100% ")
            .metadata("empty", "")
            .public(true);
        let sum = Checksum::crc32c(b"content");
        let enc = encode(&opts, Some(sum)).unwrap();
        assert_eq!(enc["agentid"], "42");
        assert!(enc.values().all(|v| v.is_ascii()));
        let dec = decode(Some(&enc));
        assert_eq!(dec.metadata, opts.metadata);
        assert!(dec.public);
        assert_eq!(dec.checksum, Some(sum));
    }

    #[test]
    fn checksums_of_earlier_versions_and_other_tools() {
        let legacy: HashMap<String, String> = [(SHA256.to_string(), "AB".repeat(32))].into();
        assert_eq!(
            decode(Some(&legacy)).checksum,
            Some(Checksum::Sha256([0xab; 32]))
        );
        for junk in ["", "crc32c:xyz", "md5:00", "sha256"] {
            let raw: HashMap<String, String> = [(CHECKSUM.to_string(), junk.to_string())].into();
            assert_eq!(decode(Some(&raw)).checksum, None, "{junk:?}");
        }
    }

    #[test]
    fn reserved_and_case_collisions_rejected() {
        let r = encode(&UploadOptions::new().metadata("TrustStream-x", "1"), None);
        assert!(r.is_err());
        let c = encode(
            &UploadOptions::new().metadata("a", "1").metadata("A", "2"),
            None,
        );
        assert!(c.unwrap_err().to_string().contains("case"));
    }

    #[test]
    fn content_range_totals() {
        assert_eq!(range_total("bytes 0-99/1000"), Some(1000));
        assert_eq!(range_total(" bytes 5-5/6 "), Some(6));
        assert_eq!(range_total("bytes 0-99/*"), None);
        assert_eq!(range_total("garbage"), None);
    }

    #[test]
    fn foreign_metadata_comes_through() {
        let raw: HashMap<String, String> = [("owner".to_string(), "ops".to_string())].into();
        let d = decode(Some(&raw));
        assert_eq!(d.metadata["owner"], "ops");
        assert!(!d.public && d.checksum.is_none());
    }
}
