//! The value of the metadata attribute (`user.truststream.meta`), in its two
//! encodings.
//!
//! - **Compact** (magic `Tc`): binary, for an object without user metadata:
//!   44 bytes, plus 1-9 for a size of 128 bytes or more, plus the content
//!   type if any (45 bytes for 4 KiB without one). ext4 keeps a value of up
//!   to 56 bytes next to this name inside a 256-byte inode (a content type
//!   of up to 11 bytes under 16 KiB, 10 under 2 MiB) instead of allocating an
//!   attribute block for every version, which costs a put 15-20 us there. It names its key only by
//!   a hash: the key of a file is where it lies, so a reader checks the hash
//!   against the key it asked for (a listing, against the key of the path it
//!   found the file at). Only keys stored under their own names (no hashed
//!   segment) are written this way.
//! - **JSON** (magic `TSx1`): everything else, and what the first version of
//!   the attribute layout wrote.
//!
//! Both carry a CRC32C of the rest of the value, so a damaged attribute is
//! reported, never read as other metadata.
//!
//! Compact layout, integers little-endian:
//!
//! ```text
//! 0   2  magic "Tc"
//! 2   4  CRC32C of bytes 6..
//! 6   1  flags: 1 = public, 2 = content type present
//! 7   n  size, LEB128 (1-10 bytes)
//! +   8  last modified, nanoseconds since the Unix epoch (i64)
//! +  16  ETag (the 128 bits between its quotes)
//! +   4  CRC32C of the content
//! +   8  first 8 bytes of SHA-256 of the key
//! +   *  content type (UTF-8, the rest of the value), when flagged
//! ```

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use truststream_core_storage::{Checksum, Error, ObjectMeta, StorageResult};

use crate::fsio;

const JSON_MAGIC: &[u8; 4] = b"TSx1";
const JSON_HEADER: usize = 4 + 4;
const COMPACT_MAGIC: &[u8; 2] = b"Tc";
const COMPACT_HEADER: usize = 2 + 4;
const PUBLIC: u8 = 1;
const HAS_CONTENT_TYPE: u8 = 2;
const KEY_HASH: usize = 8;

/// Metadata read from an attribute: whole, or compact (which knows its key
/// only by a hash, so it needs the key to become [`ObjectMeta`]).
#[derive(Debug, Clone)]
pub(crate) enum AttrMeta {
    Full(ObjectMeta),
    Compact(Compact),
}

/// The fields of a compact attribute.
#[derive(Debug, Clone)]
pub(crate) struct Compact {
    size: u64,
    last_modified: DateTime<Utc>,
    etag: u128,
    checksum: u32,
    public: bool,
    content_type: Option<String>,
    key_hash: [u8; KEY_HASH],
}

impl AttrMeta {
    /// The metadata, if it describes `key` (a file of another key, on a
    /// filesystem that folds case, or one moved by hand: `None`).
    pub(crate) fn for_key(self, bucket: &str, key: &str) -> Option<ObjectMeta> {
        match self {
            AttrMeta::Full(mut m) => {
                if m.key != key {
                    return None;
                }
                m.bucket = bucket.to_string();
                Some(m)
            }
            AttrMeta::Compact(c) => {
                if c.key_hash != key_hash(key) {
                    return None;
                }
                Some(ObjectMeta {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    size: c.size,
                    content_type: c.content_type,
                    etag: format!("\"{:032x}\"", c.etag),
                    last_modified: c.last_modified,
                    metadata: Default::default(),
                    public: c.public,
                    checksum: Some(Checksum::Crc32c(c.checksum)),
                })
            }
        }
    }

    /// The key it names, when it names it (the compact form only hashes it).
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            AttrMeta::Full(m) => Some(&m.key),
            AttrMeta::Compact(_) => None,
        }
    }
}

fn key_hash(key: &str) -> [u8; KEY_HASH] {
    let d = Sha256::digest(key.as_bytes());
    let mut h = [0u8; KEY_HASH];
    h.copy_from_slice(&d[..KEY_HASH]);
    h
}

/// The 128 bits of an ETag this provider made (`"` + 32 lowercase hex + `"`).
fn etag_bits(etag: &str) -> Option<u128> {
    let hex = etag.strip_prefix('"')?.strip_suffix('"')?;
    if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

/// Whether every segment of `key` is stored under its own name, so the key
/// can be read back from the path.
fn plain_key(key: &str) -> bool {
    key.split('/')
        .all(|s| matches!(fsio::seg_name(s), Cow::Borrowed(_)))
}

/// Encodes `meta` as the attribute value: compact when it can be.
pub(crate) fn encode(meta: &ObjectMeta) -> StorageResult<Vec<u8>> {
    if let Some(v) = encode_compact(meta) {
        return Ok(v);
    }
    let mut out = Vec::with_capacity(JSON_HEADER + 256);
    out.extend_from_slice(JSON_MAGIC);
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut out, meta)
        .map_err(|e| Error::internal(format!("cannot encode metadata: {e}")))?;
    let crc = crc_fast::crc32_iscsi(&out[JSON_HEADER..]);
    out[4..JSON_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn encode_compact(meta: &ObjectMeta) -> Option<Vec<u8>> {
    let Some(Checksum::Crc32c(checksum)) = meta.checksum else {
        return None;
    };
    if !meta.metadata.is_empty() || !plain_key(&meta.key) {
        return None;
    }
    let etag = etag_bits(&meta.etag)?;
    let nanos = meta.last_modified.timestamp_nanos_opt()?;
    let ct = meta.content_type.as_deref();
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(COMPACT_MAGIC);
    out.extend_from_slice(&[0; 4]);
    let mut flags = 0;
    if meta.public {
        flags |= PUBLIC;
    }
    if ct.is_some() {
        flags |= HAS_CONTENT_TYPE;
    }
    out.push(flags);
    let mut size = meta.size;
    loop {
        let b = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&nanos.to_le_bytes());
    out.extend_from_slice(&etag.to_le_bytes());
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(&key_hash(&meta.key));
    out.extend_from_slice(ct.unwrap_or_default().as_bytes());
    let crc = crc_fast::crc32_iscsi(&out[COMPACT_HEADER..]);
    out[2..COMPACT_HEADER].copy_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// Decodes an attribute value; `None` when it is damaged or foreign.
pub(crate) fn decode(value: &[u8]) -> Option<AttrMeta> {
    if let Some(json) = value.strip_prefix(JSON_MAGIC) {
        let (crc, json) = json.split_first_chunk::<4>()?;
        if *crc != crc_fast::crc32_iscsi(json).to_le_bytes() {
            return None;
        }
        return serde_json::from_slice(json).ok().map(AttrMeta::Full);
    }
    let rest = value.strip_prefix(COMPACT_MAGIC)?;
    let (crc, body) = rest.split_first_chunk::<4>()?;
    if *crc != crc_fast::crc32_iscsi(body).to_le_bytes() {
        return None;
    }
    decode_compact(body).map(AttrMeta::Compact)
}

fn decode_compact(body: &[u8]) -> Option<Compact> {
    let (&flags, mut rest) = body.split_first()?;
    if flags & !(PUBLIC | HAS_CONTENT_TYPE) != 0 {
        return None;
    }
    let mut size: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, r) = rest.split_first()?;
        rest = r;
        // The tenth byte holds the 64th bit and nothing more.
        if shift == 63 && b > 1 {
            return None;
        }
        size |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let (nanos, rest) = rest.split_first_chunk::<8>()?;
    let (etag, rest) = rest.split_first_chunk::<16>()?;
    let (checksum, rest) = rest.split_first_chunk::<4>()?;
    let (key_hash, rest) = rest.split_first_chunk::<KEY_HASH>()?;
    let content_type = match flags & HAS_CONTENT_TYPE {
        0 if rest.is_empty() => None,
        0 => return None,
        _ => Some(String::from_utf8(rest.to_vec()).ok()?),
    };
    Some(Compact {
        size,
        last_modified: DateTime::from_timestamp_nanos(i64::from_le_bytes(*nanos)),
        etag: u128::from_le_bytes(*etag),
        checksum: u32::from_le_bytes(*checksum),
        public: flags & PUBLIC != 0,
        content_type,
        key_hash: *key_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            bucket: "b".into(),
            key: key.into(),
            size: 4096,
            content_type: None,
            etag: format!("\"{:032x}\"", 0x0123_4567_89ab_cdef_0011_2233_4455_6677u128),
            last_modified: DateTime::from_timestamp_nanos(1_795_000_000_123_456_789),
            metadata: Default::default(),
            public: false,
            checksum: Some(Checksum::Crc32c(0xdead_beef)),
        }
    }

    fn round_trip(m: &ObjectMeta) -> Vec<u8> {
        let v = encode(m).unwrap();
        let back = decode(&v).unwrap().for_key("b", &m.key).unwrap();
        assert_eq!(&back, m);
        v
    }

    #[test]
    fn plain_metadata_is_compact_and_fits_in_an_ext4_inode() {
        let mut m = meta("small/obj-0001.bin");
        let v = round_trip(&m);
        assert_eq!(&v[..2], COMPACT_MAGIC);
        assert_eq!(v.len(), 45);
        m.content_type = Some("image/jpeg".into());
        m.public = true;
        assert!(round_trip(&m).len() <= 56);
        for size in [0, 127, 128, 1 << 40, u64::MAX] {
            m.size = size;
            round_trip(&m);
        }
        m.content_type = Some(String::new());
        round_trip(&m);
    }

    #[test]
    fn what_compact_cannot_hold_is_json() {
        let mut with_meta = meta("k");
        with_meta.metadata.insert("a".into(), "b".into());
        let mut foreign_etag = meta("k");
        foreign_etag.etag = "\"abc\"".into();
        let mut upper_etag = meta("k");
        upper_etag.etag = upper_etag.etag.to_uppercase();
        let mut sha = meta("k");
        sha.checksum = Some(Checksum::Sha256([7; 32]));
        let hashed = meta(&format!("a/{}/b", "x".repeat(300)));
        let reserved = meta("a/.~t1");
        for m in [with_meta, foreign_etag, upper_etag, sha, hashed, reserved] {
            let v = round_trip(&m);
            assert_eq!(&v[..4], JSON_MAGIC, "{m:?}");
        }
    }

    #[test]
    fn another_keys_attribute_is_not_this_keys() {
        for m in [meta("Docs/A.txt"), {
            let mut m = meta("Docs/A.txt");
            m.metadata.insert("x".into(), "y".into());
            m
        }] {
            let a = decode(&encode(&m).unwrap()).unwrap();
            assert!(a.clone().for_key("b", "docs/a.txt").is_none());
            assert!(a.for_key("b", "Docs/A.txt").is_some());
        }
    }

    #[test]
    fn a_damaged_or_truncated_attribute_is_rejected() {
        for m in [meta("k"), {
            let mut m = meta("k");
            m.content_type = Some("text/plain".into());
            m
        }] {
            let v = encode(&m).unwrap();
            for i in 0..v.len() {
                for bit in 0..8 {
                    let mut bad = v.clone();
                    bad[i] ^= 1 << bit;
                    assert!(decode(&bad).is_none(), "flip at {i}.{bit} accepted");
                }
            }
            for n in 0..v.len() {
                assert!(decode(&v[..n]).is_none(), "prefix of {n} accepted");
            }
        }
        // A well-formed checksum over a malformed body is still refused.
        let mut body = vec![0xff; 11];
        body.extend_from_slice(&[0; 36]);
        let mut v = COMPACT_MAGIC.to_vec();
        v.extend_from_slice(&crc_fast::crc32_iscsi(&body).to_le_bytes());
        v.extend_from_slice(&body);
        assert!(decode(&v).is_none());
    }
}
