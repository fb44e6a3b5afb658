//! Local verification of a project's access tokens: HS256 with the shared
//! JWT secret, RS256/ES256 with the keys the project publishes (JWKS).
//! Nothing about a token is trusted before its signature verifies; the
//! header is read only to pick the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use truststream_core_auth::{AuthResult, Error, Secret};

use crate::config::SupabaseAuthConfig;

/// Longest access token accepted, in bytes (checked before decoding).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Largest key-set document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The asymmetric algorithms GoTrue signs with.
const ASYMMETRIC: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

pub(crate) struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    issuer: String,
    audience: String,
    leeway: u64,
}

fn invalid() -> Error {
    Error::unauthenticated("invalid access token")
}

fn unknown_key() -> Error {
    Error::unauthenticated("access token is signed by an unknown key")
}

/// What the protected header says, before anything is verified.
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the header of `token`: three base64url parts, a JSON object, an
/// `alg` this provider accepts (exact spelling: `none` in any case is
/// refused), no `crit` (no extension is understood here). `jku`, `x5u`,
/// `jwk` and `x5c` are ignored: keys come from the configuration and the
/// project's JWKS only.
fn header(token: &str) -> AuthResult<Header> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| invalid())?;
    let members: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if members.contains_key("crit") {
        return Err(Error::unauthenticated(
            "access token requires header extensions (crit) this provider does not support",
        ));
    }
    let alg = match members.get("alg").and_then(Value::as_str) {
        Some("HS256") => Algorithm::HS256,
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        _ => {
            return Err(Error::unauthenticated(
                "access token uses an algorithm that is not accepted",
            ))
        }
    };
    let kid = match members.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err(invalid()),
    };
    Ok(Header { alg, kid })
}

/// Maps a jsonwebtoken verification error to `Unauthenticated`, naming
/// what was wrong without echoing the token.
fn verify_error(e: jsonwebtoken::errors::Error) -> Error {
    use jsonwebtoken::errors::ErrorKind as K;
    let msg = match e.kind() {
        K::ExpiredSignature => "access token expired",
        K::ImmatureSignature => "access token not yet valid",
        K::InvalidAudience => "access token has the wrong audience",
        K::InvalidIssuer => "access token has the wrong issuer",
        K::MissingRequiredClaim(_) => "access token lacks a required claim",
        K::InvalidSignature => "access token signature does not verify",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => {
            "access token uses an algorithm that is not accepted"
        }
        _ => "invalid access token",
    };
    Error::unauthenticated(msg).with_source(e)
}

impl Verifier {
    pub(crate) fn new(
        cfg: &SupabaseAuthConfig,
        client: reqwest::Client,
        fetches: Arc<AtomicU64>,
    ) -> Self {
        Verifier {
            secret: cfg
                .jwt_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            jwks: cfg.jwks.then(|| JwksCache {
                url: format!("{}/auth/v1/.well-known/jwks.json", cfg.base_url()),
                anon_key: cfg.anon_key.clone(),
                client,
                ttl: Duration::from_secs(cfg.jwks_cache_secs),
                min_refresh: Duration::from_secs(cfg.jwks_min_refresh_secs),
                state: RwLock::new(None),
                fetch_lock: Mutex::new(None),
                fetches,
            }),
            issuer: cfg.effective_issuer(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
        }
    }

    /// The verified claims of `token`, or `Unauthenticated` (`Unavailable`
    /// or `Timeout` when the key set is needed and cannot be fetched).
    pub(crate) async fn verify(&self, token: &str) -> AuthResult<Map<String, Value>> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(invalid());
        }
        let h = header(token)?;
        let key = if h.alg == Algorithm::HS256 {
            self.secret.clone().ok_or_else(|| {
                Error::unauthenticated(
                    "access token is signed with a shared secret (HS256) and no jwt_secret is configured",
                )
            })?
        } else {
            let Some(jwks) = &self.jwks else {
                return Err(Error::unauthenticated(
                    "access token is signed with an asymmetric key and JWKS verification is off",
                ));
            };
            jwks.key(h.kid.as_deref(), h.alg).await?
        };
        let mut v = Validation::new(h.alg);
        v.algorithms = vec![h.alg];
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_audience(&[self.audience.as_str()]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(verify_error)
    }
}

/// The project's key set, fetched on first use, kept for `ttl`, and
/// fetched again early when a token names an unknown `kid`, at most once
/// per `min_refresh`.
struct JwksCache {
    url: String,
    anon_key: Secret,
    client: reqwest::Client,
    ttl: Duration,
    min_refresh: Duration,
    state: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching (one fetch at a time); holds the last attempt.
    fetch_lock: Mutex<Option<Instant>>,
    fetches: Arc<AtomicU64>,
}

struct KeySet {
    /// Usable keys by `kid`, with the algorithm each may verify.
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    /// Usable keys without a `kid`.
    unnamed: Vec<(Algorithm, DecodingKey)>,
    fetched_at: Instant,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let fits = |(a, k): &(Algorithm, DecodingKey)| (*a == alg).then(|| k.clone());
        match kid {
            Some(kid) => self.by_kid.get(kid).and_then(fits),
            // No kid: only when the set holds exactly one key.
            None => {
                let mut all = self.by_kid.values().chain(self.unnamed.iter());
                match (all.next(), all.next()) {
                    (Some(only), None) => fits(only),
                    _ => None,
                }
            }
        }
    }
}

impl JwksCache {
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> AuthResult<DecodingKey> {
        let current = self.state.read().await.clone();
        if let Some(set) = &current {
            if set.fetched_at.elapsed() < self.ttl {
                if let Some(k) = set.find(kid, alg) {
                    return Ok(k);
                }
            }
        }
        // Stale, missing, or the kid is unknown: fetch, one caller at a time.
        let mut last_attempt = self.fetch_lock.lock().await;
        let current = self.state.read().await.clone();
        if let Some(set) = &current {
            if set.fetched_at.elapsed() < self.ttl {
                if let Some(k) = set.find(kid, alg) {
                    return Ok(k);
                }
            }
        }
        let recently = last_attempt.is_some_and(|t| t.elapsed() < self.min_refresh);
        if recently {
            // No fetch within `min_refresh` of the last attempt. A stale set
            // is here only when that attempt failed: it still serves.
            if let Some(k) = current.as_ref().and_then(|s| s.find(kid, alg)) {
                return Ok(k);
            }
            return Err(match current {
                Some(_) => unknown_key(),
                None => Error::unavailable(format!(
                    "supabase auth: the project's JWKS could not be fetched; the next attempt is allowed {} s after the last",
                    self.min_refresh.as_secs()
                ))
                .with_operation("auth.validate_token"),
            });
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let found = set.find(kid, alg);
                *self.state.write().await = Some(Arc::new(set));
                found.ok_or_else(unknown_key)
            }
            Err(e) => {
                // A stale set beats failing every request while the project
                // is unreachable.
                if let Some(k) = current.as_ref().and_then(|s| s.find(kid, alg)) {
                    tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; using the cached key set");
                    return Ok(k);
                }
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> AuthResult<KeySet> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let op = "auth.validate_token";
        let resp = self
            .client
            .get(&self.url)
            .header("apikey", self.anon_key.expose())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| crate::gotrue::transport_error(e, "fetching the project's JWKS"))?;
        let status = resp.status();
        let body = crate::gotrue::read_bounded(resp, MAX_JWKS_BYTES)
            .await
            .map_err(|e| e.with_operation(op))?;
        if !status.is_success() {
            return Err(Error::unavailable(format!(
                "supabase auth: the project's JWKS answered HTTP {}",
                status.as_u16()
            ))
            .with_operation(op));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| {
            Error::unavailable("supabase auth: the project's JWKS is not a JWK set")
                .with_source(e)
                .with_operation(op)
        })?;
        let mut by_kid = HashMap::new();
        let mut unnamed = Vec::new();
        for jwk in &set.keys {
            // A symmetric key never belongs in a public key set: whoever can
            // read the set could sign tokens with it.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(_), None | Some(KeyAlgorithm::ES256)) => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if !ASYMMETRIC.contains(&alg) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), (alg, key));
                }
                None => unnamed.push((alg, key)),
            }
        }
        Ok(KeySet {
            by_kid,
            unnamed,
            fetched_at: Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn headers_that_are_refused() {
        for h in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"RS256","kid":5}"#,
            r#"[1]"#,
        ] {
            let t = format!("{}.{}.sig", b64(h), b64("{}"));
            assert!(header(&t).is_err(), "{h}");
        }
        assert!(header("a.b").is_err());
        assert!(header("a.b.c.d").is_err());
        let t = format!("{}.x.y", b64(r#"{"alg":"ES256","kid":"k1"}"#));
        let h = header(&t).unwrap();
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.kid.as_deref(), Some("k1"));
    }
}
