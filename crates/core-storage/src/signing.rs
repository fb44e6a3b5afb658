//! HMAC-SHA256 signed URLs for providers that sign URLs themselves
//! (filesystem, memory); S3 presigns with SigV4 instead.
//!
//! A URL is `{base}/{bucket}/{key}?method=GET&expires=<unix seconds>&signature=<hex>`
//! with the key percent-encoded per segment. The signature covers a version
//! tag, the method, the bucket, the key and the expiry, so changing any of them
//! invalidates it. Verification compares in constant time.
//!
//! Beside signing and verifying, [`UrlSigner`] holds what such providers
//! share around it: the configuration checks ([`UrlSigner::configured`]), the
//! lifetime rule ([`check_lifetime`], also used by S3), signing for a lifetime
//! ([`UrlSigner::sign_for`]) and serving a signed request against a store
//! ([`UrlSigner::fetch`]).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Timelike, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

use crate::keys::{validate_bucket, validate_key};
use crate::{Error, SignedUrl, SignedUrlMethod, Storage, StorageResult, UploadOptions};

/// Longest lifetime of a signed URL: the S3 limit, so code that works on one
/// provider works on all.
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Checks a signed URL lifetime: more than zero and at most [`MAX_LIFETIME`],
/// else `ErrorKind::InvalidInput`.
pub fn check_lifetime(expires_in: Duration) -> StorageResult<()> {
    if expires_in.is_zero() || expires_in > MAX_LIFETIME {
        return Err(Error::invalid_input(format!(
            "signed URL lifetime of {expires_in:?} is out of range: \
             use more than zero and at most 7 days"
        )));
    }
    Ok(())
}

/// Rounds up to the next whole second (signed URLs expire on second
/// boundaries; rounding down would shorten a one-second URL to almost none).
fn ceil_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    if t.nanosecond() == 0 {
        t
    } else {
        t.with_nanosecond(0).unwrap_or(t) + chrono::Duration::seconds(1)
    }
}

/// Characters left unencoded in a key segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Signs and verifies URLs with a secret key.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
    base_url: String,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner")
            .field("key", &"<redacted>")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// What a verified URL grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUrl {
    /// The method allowed.
    pub method: SignedUrlMethod,
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
}

impl UrlSigner {
    /// A signer with `secret` (at least 32 bytes) producing URLs under
    /// `base_url` (no trailing slash needed).
    pub fn new(secret: &[u8], base_url: &str) -> StorageResult<Self> {
        if secret.len() < 32 {
            return Err(Error::invalid_input(
                "the URL signing secret must be at least 32 bytes",
            ));
        }
        Ok(UrlSigner {
            key: secret.to_vec(),
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// A signer for the configuration of provider `provider` (its registry
    /// type name, used in messages): `base_url` without its trailing `/`s
    /// must be non-empty and carry no query, `secret` must be at least 32
    /// bytes. Either failure is `ErrorKind::InvalidInput` naming the option
    /// (never the secret).
    pub fn configured(provider: &str, secret: &[u8], base_url: &str) -> StorageResult<Self> {
        let base = base_url.trim_end_matches('/');
        if base.is_empty() || base.contains('?') {
            return Err(Error::invalid_input(format!(
                "invalid base_url {base:?} for the {provider} storage provider: use a non-empty \
                 URL without a query, like \"http://localhost:8080/storage\""
            )));
        }
        Self::new(secret, base).map_err(|e| {
            Error::invalid_input(format!("signing_secret: {}", e.message()))
                .with_context("provider", provider.to_string())
        })
    }

    /// The base URL signed URLs start with (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Signs a URL allowing `method` on `bucket/key` for `expires_in` from
    /// now, rounded up to a whole second. The names must be valid
    /// ([`crate::keys`]) and the lifetime pass [`check_lifetime`], else
    /// `ErrorKind::InvalidInput`.
    pub fn sign_for(
        &self,
        method: SignedUrlMethod,
        bucket: &str,
        key: &str,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        check_lifetime(expires_in)?;
        let lifetime = chrono::Duration::from_std(expires_in)
            .map_err(|_| Error::invalid_input("signed URL lifetime is too long"))?;
        self.sign(method, bucket, key, ceil_to_second(Utc::now() + lifetime))
    }

    /// Verifies, as of now, a full URL that must start with this signer's
    /// base URL and `/`; otherwise as [`UrlSigner::verify`]. A URL under
    /// another base is `ErrorKind::PermissionDenied` as well.
    pub fn verify_issued(&self, method: SignedUrlMethod, url: &str) -> StorageResult<VerifiedUrl> {
        let issued_here = url
            .strip_prefix(self.base_url.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        if !issued_here {
            return Err(Error::permission_denied(
                "signed URL rejected: it was not issued under this store's base URL",
            ));
        }
        self.verify(method, url, Utc::now())
    }

    /// Performs on `storage` the request a signed URL allows, the way an HTTP
    /// layer in front of the store would: a GET returns the object's bytes,
    /// a PUT stores `body` (empty when `None`) and returns `None`. The URL is
    /// checked by [`UrlSigner::verify_issued`]; a GET with a body is
    /// `ErrorKind::InvalidInput`.
    pub async fn fetch<S: Storage + ?Sized>(
        &self,
        storage: &S,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> StorageResult<Option<Bytes>> {
        let op = |e: Error| e.with_operation("storage.fetch_signed");
        let granted = self.verify_issued(method, url).map_err(op)?;
        match method {
            SignedUrlMethod::Get => {
                if body.is_some() {
                    return Err(op(Error::invalid_input("a GET request carries no body")));
                }
                Ok(Some(storage.download(&granted.bucket, &granted.key).await?))
            }
            SignedUrlMethod::Put => {
                let data = body.unwrap_or_default();
                storage
                    .upload(&granted.bucket, &granted.key, data, &UploadOptions::new())
                    .await?;
                Ok(None)
            }
        }
    }

    fn mac(&self, method: SignedUrlMethod, bucket: &str, key: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in [
            "ts-url-v1",
            method.as_str(),
            bucket,
            key,
            &expires.to_string(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// Signs a URL allowing `method` on `bucket/key` until `expires_at`.
    pub fn sign(
        &self,
        method: SignedUrlMethod,
        bucket: &str,
        key: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<SignedUrl> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let expires = expires_at.timestamp();
        let sig = hex::encode(
            self.mac(method, bucket, key, expires)
                .finalize()
                .into_bytes(),
        );
        Ok(SignedUrl {
            url: format!(
                "{}/{bucket}/{}?method={}&expires={expires}&signature={sig}",
                self.base_url,
                encode_key(key),
                method.as_str()
            ),
            method,
            expires_at: chrono::DateTime::from_timestamp(expires, 0).unwrap_or(expires_at),
        })
    }

    /// Verifies a URL made by [`UrlSigner::sign`] (the full URL, or its path
    /// and query) for a request with `method` at time `now`. A tampered,
    /// foreign or malformed URL is [`crate::ErrorKind::PermissionDenied`]; an
    /// expired one too, with a message saying so.
    ///
    /// Only the exact form [`UrlSigner::sign`] writes verifies: the key
    /// percent-encoded as `sign` encodes it (no other escapes of the same
    /// characters), `method`, `expires` and `signature` once each and in that
    /// order, the expiry as a plain decimal (no sign, no leading zero), the
    /// signature as 64 lowercase hex digits. A duplicated or unknown query
    /// parameter is refused, so no two spellings of one URL ever both verify
    /// and a proxy or cache in front reads the same URL this check did.
    pub fn verify(
        &self,
        method: SignedUrlMethod,
        url: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<VerifiedUrl> {
        let denied = |why: &str| Error::permission_denied(format!("signed URL rejected: {why}"));
        let rest = url.strip_prefix(self.base_url.as_str()).unwrap_or(url);
        let (path, query) = rest.split_once('?').ok_or_else(|| denied("no query"))?;
        let path = path.strip_prefix('/').unwrap_or(path);
        let (bucket, enc_key) = path.split_once('/').ok_or_else(|| denied("no key"))?;
        let key = enc_key
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| denied("key is not UTF-8"))?
            .join("/");
        let params = Params::parse(query).map_err(|why| denied(&why))?;
        if params.method != method.as_str() {
            return Err(denied("signed for another method"));
        }
        let expires: i64 = params.expires.parse().map_err(|_| denied("bad expiry"))?;
        let sig = hex::decode(params.signature).map_err(|_| denied("bad signature encoding"))?;
        validate_bucket(bucket).map_err(|_| denied("bad bucket"))?;
        validate_key(&key).map_err(|_| denied("bad key"))?;
        if encode_key(&key) != enc_key {
            return Err(denied(
                "the key is not percent-encoded in the form the signer writes",
            ));
        }
        if expires.to_string() != params.expires {
            return Err(denied("the expiry is not a plain decimal number"));
        }
        if hex::encode(&sig) != params.signature {
            return Err(denied("the signature is not lowercase hex"));
        }
        self.mac(method, bucket, &key, expires)
            .verify_slice(&sig)
            .map_err(|_| denied("signature mismatch"))?;
        if now.timestamp() >= expires {
            return Err(denied("expired"));
        }
        Ok(VerifiedUrl {
            method,
            bucket: bucket.to_string(),
            key,
        })
    }
}

/// `key` as it stands in a signed URL's path: each segment percent-encoded
/// (all but RFC 3986 unreserved characters), segments joined by `/`.
fn encode_key(key: &str) -> String {
    let segments: Vec<String> = key
        .split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    segments.join("/")
}

/// The query of a signed URL, in its one accepted form.
struct Params<'a> {
    method: &'a str,
    expires: &'a str,
    signature: &'a str,
}

impl<'a> Params<'a> {
    /// The names the query holds, in the order [`UrlSigner::sign`] writes
    /// them.
    const NAMES: [&'static str; 3] = ["method", "expires", "signature"];

    /// Splits `query` into its three parameters, refusing an unknown, a
    /// duplicated or a missing one and any other order. The reason never
    /// repeats the caller's text.
    fn parse(query: &'a str) -> Result<Self, String> {
        let mut values: [Option<&'a str>; 3] = [None; 3];
        for (at, pair) in query.split('&').enumerate() {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(slot) = Self::NAMES.iter().position(|n| *n == name) else {
                return Err(format!(
                    "unknown query parameter (only {} are allowed)",
                    Self::NAMES.join(", ")
                ));
            };
            if values[slot].replace(value).is_some() {
                return Err(format!("duplicated query parameter {name:?}"));
            }
            if slot != at {
                return Err(format!(
                    "query parameters out of order (expected {})",
                    Self::NAMES.join(", ")
                ));
            }
        }
        match values {
            [Some(method), Some(expires), Some(signature)] => Ok(Params {
                method,
                expires,
                signature,
            }),
            _ => Err("missing method, expires or signature".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn signer() -> UrlSigner {
        UrlSigner::new(&[7u8; 32], "http://localhost:8080/storage/").unwrap()
    }

    #[test]
    fn roundtrip_and_tamper() {
        let s = signer();
        let now = Utc::now();
        let url = s
            .sign(
                SignedUrlMethod::Get,
                "docs",
                "a b/ünï?&.txt",
                now + Duration::seconds(60),
            )
            .unwrap();
        let v = s.verify(SignedUrlMethod::Get, &url.url, now).unwrap();
        assert_eq!(v.key, "a b/ünï?&.txt");
        assert!(s.verify(SignedUrlMethod::Put, &url.url, now).is_err());
        assert!(s
            .verify(SignedUrlMethod::Get, &url.url.replace("docs", "doce"), now)
            .is_err());
        assert!(s
            .verify(
                SignedUrlMethod::Get,
                &url.url.replace("expires=", "expires=9"),
                now
            )
            .is_err());
        let e = s
            .verify(SignedUrlMethod::Get, &url.url, now + Duration::seconds(61))
            .unwrap_err();
        assert!(e.to_string().contains("expired"));
        let other = UrlSigner::new(&[8u8; 32], "http://localhost:8080/storage").unwrap();
        assert!(other.verify(SignedUrlMethod::Get, &url.url, now).is_err());
    }

    /// A URL for `key` valid for a minute, and the time to verify it at.
    fn signed(key: &str) -> (String, chrono::DateTime<Utc>) {
        let now = Utc::now();
        let url = signer()
            .sign(
                SignedUrlMethod::Get,
                "docs",
                key,
                now + Duration::seconds(60),
            )
            .unwrap();
        (url.url, now)
    }

    /// Asserts `url` is refused with a reason containing `why`.
    fn refused(url: &str, now: chrono::DateTime<Utc>, why: &str) {
        let e = signer()
            .verify(SignedUrlMethod::Get, url, now)
            .expect_err(url);
        assert_eq!(e.kind(), crate::ErrorKind::PermissionDenied, "{url}");
        assert!(e.to_string().contains(why), "{url}: {e}");
    }

    #[test]
    fn the_canonical_form_still_verifies() {
        for key in ["a", "a b/ünï?&.txt", "x/y-z_1.~t", "%41/+"] {
            let (url, now) = signed(key);
            let v = signer().verify(SignedUrlMethod::Get, &url, now).unwrap();
            assert_eq!(v.key, key);
            assert_eq!(v.bucket, "docs");
            // Also given as its path and query only.
            let path = url.strip_prefix("http://localhost:8080/storage").unwrap();
            assert_eq!(signer().verify(SignedUrlMethod::Get, path, now).unwrap(), v);
        }
    }

    #[test]
    fn percent_encoded_path_characters_are_refused() {
        let (url, now) = signed("report/a.txt");
        // `a` escaped, `.` escaped, `/` between segments escaped.
        for forged in [
            url.replace("/report/a.txt", "/report/%61.txt"),
            url.replace("/report/a.txt", "/report/a%2Etxt"),
            url.replace("/report/a.txt", "/report%2Fa.txt"),
        ] {
            refused(&forged, now, "percent-encoded");
        }
        // Escapes the signer writes in upper case, written in lower case.
        let (url, now) = signed("ü");
        assert!(url.contains("/%C3%BC?"), "{url}");
        refused(&url.replace("%C3%BC", "%c3%bc"), now, "percent-encoded");
    }

    #[test]
    fn non_canonical_expiries_are_refused() {
        let (url, now) = signed("a");
        for (from, to) in [("expires=", "expires=+"), ("expires=", "expires=0")] {
            refused(&url.replacen(from, to, 1), now, "plain decimal");
        }
    }

    #[test]
    fn duplicated_unknown_and_reordered_parameters_are_refused() {
        let (url, now) = signed("a");
        let (head, sig) = url.split_once("&signature=").unwrap();
        let bogus = "0".repeat(64);
        // The valid signature second, and first.
        refused(
            &format!("{head}&signature={bogus}&signature={sig}"),
            now,
            "duplicated query parameter \"signature\"",
        );
        refused(&format!("{url}&signature={bogus}"), now, "duplicated");
        refused(&format!("{url}&expires=1"), now, "duplicated");
        refused(&format!("{url}&x-note=1"), now, "unknown query parameter");
        refused(&format!("{url}&"), now, "unknown query parameter");
        let (base, query) = url.split_once('?').unwrap();
        let mut parts: Vec<&str> = query.split('&').collect();
        parts.swap(0, 1);
        refused(&format!("{base}?{}", parts.join("&")), now, "out of order");
        // Upper-case hex is another spelling of the same signature.
        refused(
            &format!("{head}&signature={}", sig.to_uppercase()),
            now,
            "lowercase hex",
        );
    }

    #[test]
    fn a_long_unknown_parameter_is_not_echoed() {
        let (url, now) = signed("a");
        let long = "n".repeat(10_000);
        let e = signer()
            .verify(SignedUrlMethod::Get, &format!("{url}&{long}=1"), now)
            .unwrap_err();
        assert!(!e.to_string().contains("nnnn"), "{e}");
    }

    #[test]
    fn sign_for_checks_the_lifetime_and_rounds_up() {
        let s = signer();
        for bad in [
            std::time::Duration::ZERO,
            MAX_LIFETIME + std::time::Duration::from_secs(1),
        ] {
            let e = s
                .sign_for(SignedUrlMethod::Get, "docs", "a", bad)
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        }
        let before = Utc::now();
        let url = s
            .sign_for(
                SignedUrlMethod::Get,
                "docs",
                "a",
                std::time::Duration::from_millis(1),
            )
            .unwrap();
        assert!(
            url.expires_at > before,
            "a 1 ms URL lives to the next second"
        );
        assert_eq!(url.expires_at.timestamp_subsec_nanos(), 0);
        assert!(s.verify_issued(SignedUrlMethod::Get, &url.url).is_ok());
    }

    #[test]
    fn configured_checks_base_url_and_secret() {
        for base in ["", "/", "http://h/s?x=1"] {
            let e = UrlSigner::configured("fs", &[1; 32], base).unwrap_err();
            assert!(e.message().contains("base_url"), "{e}");
        }
        let e = UrlSigner::configured("fs", b"0123456789", "http://h").unwrap_err();
        assert!(e.message().contains("signing_secret"), "{e}");
        assert!(!e.to_string().contains("0123456789"), "{e}");
        let s = UrlSigner::configured("fs", &[1; 32], "http://h/s//").unwrap();
        assert_eq!(s.base_url(), "http://h/s");
    }

    #[test]
    fn verify_issued_refuses_urls_under_another_base() {
        let (url, _) = signed("a");
        let moved = url.replace("http://localhost:8080/storage", "http://other/storage");
        let e = signer()
            .verify_issued(SignedUrlMethod::Get, &moved)
            .unwrap_err();
        assert!(e.message().contains("not issued"), "{e}");
        // The base followed by anything but `/` is another base.
        let joined = url.replace("/storage/docs", "/storagedocs");
        assert!(signer()
            .verify_issued(SignedUrlMethod::Get, &joined)
            .is_err());
    }

    #[test]
    fn short_secret_rejected_and_debug_redacts() {
        assert!(UrlSigner::new(b"short", "x").is_err());
        assert!(!format!("{:?}", signer()).contains('7'));
    }
}
