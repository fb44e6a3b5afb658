//! Content checksums (see [`Checksum`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;

use crate::Error;

/// A checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// CRC-32C (Castagnoli, iSCSI): what providers record.
    Crc32c,
    /// SHA-256: read back from objects earlier versions wrote.
    Sha256,
}

impl ChecksumAlgorithm {
    /// `"crc32c"` or `"sha256"`: the prefix of the text form.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32c => "crc32c",
            ChecksumAlgorithm::Sha256 => "sha256",
        }
    }
}

/// A content checksum: recorded when an object is written, checked when it is
/// read back whole, so silent corruption is an error instead of data.
///
/// Providers record CRC32C (Castagnoli, the checksum S3 calls `CRC32C`): it
/// catches every burst error up to 32 bits and random corruption with
/// probability 1 - 2^-32, and runs at memory speed on current CPUs (SSE4.2 /
/// PCLMULQDQ / ARMv8 CRC instructions, picked at run time), so checking a
/// 64 MiB object costs a few milliseconds instead of the ~30 ms SHA-256 takes.
/// It detects accidents, not attacks: whoever can rewrite the stored bytes can
/// rewrite the checksum beside them. Objects written with SHA-256 by earlier
/// versions keep their SHA-256 and are still checked with it.
///
/// The text form, used in serialized metadata and provider headers, is
/// `crc32c:` + 8 lowercase hex digits, or `sha256:` + 64. A bare 64-digit hex
/// string parses as SHA-256 (the form earlier versions stored).
///
/// ```
/// use truststream_core_storage::{Checksum, ChecksumHasher};
///
/// let sum = Checksum::crc32c(b"123456789");
/// assert_eq!(sum, Checksum::Crc32c(0xe306_9283));
/// assert_eq!(sum.to_string(), "crc32c:e3069283");
/// assert!(sum.matches(b"123456789"));
///
/// // Incrementally, as a stream arrives:
/// let mut h = ChecksumHasher::new(sum.algorithm());
/// h.update(b"1234");
/// h.update(b"56789");
/// assert_eq!(h.finish(), sum);
/// assert_eq!("crc32c:e3069283".parse::<Checksum>().unwrap(), sum);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// CRC-32C of the content.
    Crc32c(u32),
    /// SHA-256 of the content.
    Sha256([u8; 32]),
}

impl Checksum {
    /// CRC-32C of `data`.
    pub fn crc32c(data: &[u8]) -> Self {
        Checksum::Crc32c(crc_fast::crc32_iscsi(data))
    }

    /// SHA-256 of `data`.
    pub fn sha256(data: &[u8]) -> Self {
        Checksum::Sha256(sha2::Sha256::digest(data).into())
    }

    /// The checksum of `data` with `algorithm`.
    pub fn compute(algorithm: ChecksumAlgorithm, data: &[u8]) -> Self {
        match algorithm {
            ChecksumAlgorithm::Crc32c => Self::crc32c(data),
            ChecksumAlgorithm::Sha256 => Self::sha256(data),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Checksum::Crc32c(_) => ChecksumAlgorithm::Crc32c,
            Checksum::Sha256(_) => ChecksumAlgorithm::Sha256,
        }
    }

    /// Whether `data` has this checksum.
    pub fn matches(&self, data: &[u8]) -> bool {
        Self::compute(self.algorithm(), data) == *self
    }

    /// `Ok` when `actual` (computed over what was read) equals this recorded
    /// checksum; otherwise the error a download reports:
    /// `ErrorKind::Internal`, naming the object.
    pub fn verify(&self, actual: &Checksum, bucket: &str, key: &str) -> Result<(), Error> {
        if self == actual {
            return Ok(());
        }
        Err(Error::internal(format!(
            "object {key:?} in bucket {bucket:?} is corrupt: its content does not match the \
             {} checksum recorded at upload ({self}, read {actual}); upload it again",
            self.algorithm().as_str().to_uppercase()
        ))
        .with_context("bucket", bucket)
        .with_context("key", key))
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Crc32c(v) => write!(f, "crc32c:{v:08x}"),
            Checksum::Sha256(v) => write!(f, "sha256:{}", hex::encode(v)),
        }
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Checksum {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid_input(format!(
                "invalid checksum {s:?}: expected \"crc32c:\" and 8 hex digits or \"sha256:\" \
                 and 64"
            ))
        };
        let hex_of = |v: &str, len: usize| {
            (v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hex::decode(v).ok())
                .flatten()
        };
        if let Some(v) = s.strip_prefix("crc32c:") {
            let bytes = hex_of(v, 8).ok_or_else(bad)?;
            let arr: [u8; 4] = bytes.try_into().map_err(|_| bad())?;
            return Ok(Checksum::Crc32c(u32::from_be_bytes(arr)));
        }
        let v = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes = hex_of(v, 64).ok_or_else(bad)?;
        Ok(Checksum::Sha256(bytes.try_into().map_err(|_| bad())?))
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Computes a [`Checksum`] over data arriving in pieces.
#[derive(Clone)]
pub struct ChecksumHasher(Inner);

#[derive(Clone)]
enum Inner {
    Crc32c(crc_fast::Digest),
    Sha256(sha2::Sha256),
}

impl ChecksumHasher {
    /// A hasher for `algorithm`.
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        ChecksumHasher(match algorithm {
            ChecksumAlgorithm::Crc32c => {
                Inner::Crc32c(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
            }
            ChecksumAlgorithm::Sha256 => Inner::Sha256(sha2::Sha256::new()),
        })
    }

    /// Adds the next piece.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Inner::Crc32c(d) => d.update(data),
            Inner::Sha256(h) => h.update(data),
        }
    }

    /// Appends what `other` hashed (the bytes right after this hasher's) to
    /// this hasher, so pieces hashed on different threads make one checksum.
    /// CRC-32C only: for SHA-256 this returns `false` and changes nothing.
    #[must_use = "`false` means nothing was combined"]
    pub fn combine(&mut self, other: &ChecksumHasher) -> bool {
        match (&mut self.0, &other.0) {
            (Inner::Crc32c(a), Inner::Crc32c(b)) => {
                a.combine(b);
                true
            }
            _ => false,
        }
    }

    /// The checksum of everything added.
    pub fn finish(self) -> Checksum {
        match self.0 {
            Inner::Crc32c(d) => Checksum::Crc32c(d.finalize() as u32),
            Inner::Sha256(h) => Checksum::Sha256(h.finalize().into()),
        }
    }
}

impl fmt::Debug for ChecksumHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alg = match self.0 {
            Inner::Crc32c(_) => ChecksumAlgorithm::Crc32c,
            Inner::Sha256(_) => ChecksumAlgorithm::Sha256,
        };
        f.debug_tuple("ChecksumHasher").field(&alg).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The CRC-32C check value, and S3's documented example for "".
        assert_eq!(
            Checksum::crc32c(b"123456789"),
            Checksum::Crc32c(0xe306_9283)
        );
        assert_eq!(Checksum::crc32c(b""), Checksum::Crc32c(0));
        assert_eq!(
            Checksum::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn text_form_round_trips_and_reads_legacy_hex() {
        for sum in [Checksum::crc32c(b"a"), Checksum::sha256(b"a")] {
            assert_eq!(sum.to_string().parse::<Checksum>().unwrap(), sum);
            let json = serde_json::to_string(&sum).unwrap();
            assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), sum);
        }
        let legacy = hex::encode(sha2::Sha256::digest(b"a"));
        assert_eq!(legacy.parse::<Checksum>().unwrap(), Checksum::sha256(b"a"));
        for bad in [
            "",
            "crc32c:",
            "crc32c:123",
            "crc32c:1234567g",
            "crc32c:+1234567",
            "md5:00",
            "sha256:00",
        ] {
            assert!(bad.parse::<Checksum>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn pieces_and_combined_halves_equal_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Sha256] {
            let mut h = ChecksumHasher::new(alg);
            for piece in data.chunks(777) {
                h.update(piece);
            }
            assert_eq!(h.finish(), Checksum::compute(alg, &data));
        }
        let (a, b) = data.split_at(40_001);
        let mut first = ChecksumHasher::new(ChecksumAlgorithm::Crc32c);
        first.update(a);
        let mut second = ChecksumHasher::new(ChecksumAlgorithm::Crc32c);
        second.update(b);
        assert!(first.combine(&second));
        assert_eq!(first.finish(), Checksum::crc32c(&data));
    }

    #[test]
    fn verify_names_the_object() {
        let rec = Checksum::crc32c(b"good");
        assert!(rec.verify(&Checksum::crc32c(b"good"), "b", "k").is_ok());
        let err = rec.verify(&Checksum::crc32c(b"bad"), "b", "k").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Internal);
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
