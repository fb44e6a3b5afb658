//! HMAC-SHA256 signed URLs for providers that sign URLs themselves
//! (filesystem, memory); S3 presigns with SigV4 instead.
//!
//! A URL is `{base}/{bucket}/{key}?method=GET&expires=<unix seconds>&signature=<hex>`
//! with the key percent-encoded per segment. The signature covers a version
//! tag, the method, the bucket, the key and the expiry, so changing any of them
//! invalidates it. Verification compares in constant time.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

use crate::keys::{validate_bucket, validate_key};
use crate::{Error, SignedUrl, SignedUrlMethod, StorageResult};

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
        let path: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        Ok(SignedUrl {
            url: format!(
                "{}/{bucket}/{}?method={}&expires={expires}&signature={sig}",
                self.base_url,
                path.join("/"),
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
    pub fn verify(
        &self,
        method: SignedUrlMethod,
        url: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StorageResult<VerifiedUrl> {
        let denied = |why: &str| Error::permission_denied(format!("signed URL rejected: {why}"));
        let rest = url.strip_prefix(self.base_url.as_str()).unwrap_or(url);
        let (path, query) = rest.split_once('?').ok_or_else(|| denied("no query"))?;
        let path = path.trim_start_matches('/');
        let (bucket, enc_key) = path.split_once('/').ok_or_else(|| denied("no key"))?;
        let key = enc_key
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| denied("key is not UTF-8"))?
            .join("/");
        let (mut m, mut exp, mut sig) = (None, None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("method", v)) => m = Some(v),
                Some(("expires", v)) => exp = Some(v),
                Some(("signature", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (m, exp, sig) = match (m, exp, sig) {
            (Some(m), Some(e), Some(s)) => (m, e, s),
            _ => return Err(denied("missing method, expires or signature")),
        };
        if m != method.as_str() {
            return Err(denied("signed for another method"));
        }
        let expires: i64 = exp.parse().map_err(|_| denied("bad expiry"))?;
        let sig = hex::decode(sig).map_err(|_| denied("bad signature encoding"))?;
        validate_bucket(bucket).map_err(|_| denied("bad bucket"))?;
        validate_key(&key).map_err(|_| denied("bad key"))?;
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

    #[test]
    fn short_secret_rejected_and_debug_redacts() {
        assert!(UrlSigner::new(b"short", "x").is_err());
        assert!(!format!("{:?}", signer()).contains('7'));
    }
}
