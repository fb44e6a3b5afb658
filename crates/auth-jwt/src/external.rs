//! Verifying access tokens of external identity providers (Supabase, Auth0,
//! Cognito, ...) by shared secret or by the keys they publish (JWKS).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use truststream_core_auth::{AuthResult, Error};

use truststream_core_auth::Permission;

use crate::config::{Algorithm, ClaimMapping, ExternalIssuer, TokenUse};
use crate::keys::{checked_header, unknown_key, verify_error};
use crate::preset::KeyConfig;

/// Largest key-set document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One configured external issuer.
pub(crate) struct ExternalVerifier {
    pub(crate) issuer: String,
    /// One validation per accepted algorithm: jsonwebtoken requires every
    /// algorithm of a validation to match the key's family, and a key set
    /// may hold RSA and EC keys side by side.
    validations: Vec<(jsonwebtoken::Algorithm, Validation)>,
    source: KeySource,
    mapping: ClaimMapping,
    /// Accepted `client_id` claims (Cognito access tokens); empty: not
    /// checked.
    client_ids: Vec<String>,
    /// The `token_use` claim required (Cognito).
    token_use: Option<TokenUse>,
}

enum KeySource {
    Secret(DecodingKey),
    Jwks(Box<JwksCache>),
}

impl ExternalVerifier {
    pub(crate) fn new(
        cfg: &ExternalIssuer,
        leeway_secs: u64,
        fetches: Arc<AtomicU64>,
    ) -> AuthResult<Self> {
        let r = cfg.resolve()?;
        let algs: Vec<jsonwebtoken::Algorithm> = r
            .algorithms
            .iter()
            .copied()
            .map(Algorithm::to_jwt)
            .collect();
        let validations = algs
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.algorithms = vec![alg];
                v.leeway = leeway_secs;
                v.validate_nbf = true;
                v.set_issuer(&[r.issuer.as_str()]);
                if r.audiences.is_empty() {
                    // Cognito access tokens carry `client_id`, not `aud`
                    // (checked after the signature).
                    v.validate_aud = false;
                    v.set_required_spec_claims(&["exp", "iss", "sub"]);
                } else {
                    v.set_audience(&r.audiences);
                    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
                }
                (alg, v)
            })
            .collect();
        let source = match r.key {
            KeyConfig::Secret(secret) => {
                KeySource::Secret(DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            KeyConfig::Jwks(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_millis(cfg.jwks_timeout_ms))
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .build()
                    .map_err(|e| {
                        Error::internal("cannot build the HTTP client for JWKS").with_source(e)
                    })?;
                KeySource::Jwks(Box::new(JwksCache {
                    url,
                    client,
                    algorithms: algs,
                    ttl: Duration::from_secs(cfg.jwks_cache_secs),
                    min_refresh: Duration::from_secs(cfg.jwks_min_refresh_secs),
                    keep_removed: Duration::from_secs(cfg.jwks_keep_removed_secs),
                    state: RwLock::new(None),
                    fetch_lock: Mutex::new(None),
                    fetches,
                }))
            }
        };
        Ok(ExternalVerifier {
            issuer: r.issuer,
            validations,
            source,
            mapping: r.mapping,
            client_ids: r.client_ids,
            token_use: r.token_use,
        })
    }

    /// The local roles the claim mapping gives a verified token's `claims`:
    /// none without a `roles` claim path; with a `role_map`, only the roles
    /// it names, under their local names.
    pub(crate) fn roles(&self, claims: &Map<String, Value>) -> Vec<String> {
        let Some(path) = &self.mapping.roles else {
            return Vec::new();
        };
        let mut roles: Vec<String> = path
            .strings(claims)
            .into_iter()
            .filter_map(|r| {
                if self.mapping.role_map.is_empty() {
                    crate::validate_role(r).ok().map(|()| r.to_string())
                } else {
                    self.mapping.role_map.get(r).cloned()
                }
            })
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Whether the mapping's `permissions` or `scopes` claim of `claims`
    /// grants `wanted` (exact permissions only: wildcards are never taken
    /// from an external token).
    pub(crate) fn grants(&self, claims: &Map<String, Value>, wanted: &Permission) -> bool {
        let listed = self
            .mapping
            .permissions
            .iter()
            .flat_map(|p| p.strings(claims));
        let scoped = self
            .mapping
            .scopes
            .iter()
            .flat_map(|p| p.strings(claims))
            .flat_map(str::split_whitespace);
        listed
            .chain(scoped)
            .filter(|p| !p.contains('*'))
            .filter_map(|p| Permission::parse(p).ok())
            .any(|p| p.covers(wanted))
    }

    /// Verifies `token` (whose unverified `iss` named this issuer).
    pub(crate) async fn verify(&self, token: &str) -> AuthResult<Map<String, Value>> {
        let header = checked_header(token)?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(Error::unauthenticated(
                "access token uses an algorithm that is not accepted",
            ));
        };
        let key = match &self.source {
            KeySource::Secret(k) => k.clone(),
            KeySource::Jwks(cache) => cache.key(header.kid.as_deref()).await?,
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, validation)
            .map(|d| d.claims)
            .map_err(verify_error)?;
        if let Some(usage) = self.token_use {
            if claims.get("token_use").and_then(Value::as_str) != Some(usage.as_str()) {
                return Err(Error::unauthenticated(format!(
                    "access token is not a Cognito {} token",
                    usage.as_str()
                )));
            }
        }
        if !self.client_ids.is_empty() {
            let client = claims.get("client_id").and_then(Value::as_str);
            if !client.is_some_and(|c| self.client_ids.iter().any(|k| k == c)) {
                return Err(Error::unauthenticated(
                    "access token was issued to another client",
                ));
            }
        }
        Ok(claims)
    }
}

/// The issuer's key set, fetched on first use, kept for `ttl`, and fetched
/// again early when a token names an unknown `kid` — at most once per
/// `min_refresh`. One slot per issuer with a timestamp is all the caching
/// this needs (no eviction policy, one document), hence no cache crate.
struct JwksCache {
    url: String,
    client: reqwest::Client,
    algorithms: Vec<jsonwebtoken::Algorithm>,
    ttl: Duration,
    min_refresh: Duration,
    /// How long a key that left the published set still verifies.
    keep_removed: Duration,
    state: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching (one fetch at a time); holds the last attempt.
    fetch_lock: Mutex<Option<Instant>>,
    fetches: Arc<AtomicU64>,
}

struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// Usable keys without a `kid`.
    unnamed: Vec<DecodingKey>,
    /// Keys no longer published, by `kid`, with when they were first seen
    /// missing: usable for `keep_removed` after that (rotation grace).
    retired: HashMap<String, (DecodingKey, Instant)>,
    fetched_at: Instant,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, keep_removed: Duration) -> Option<DecodingKey> {
        match kid {
            Some(k) => self.by_kid.get(k).cloned().or_else(|| {
                self.retired
                    .get(k)
                    .filter(|(_, removed)| removed.elapsed() < keep_removed)
                    .map(|(key, _)| key.clone())
            }),
            None => {
                let mut all = self.by_kid.values().chain(self.unnamed.iter());
                match (all.next(), all.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }
}

impl JwksCache {
    async fn key(&self, kid: Option<&str>) -> AuthResult<DecodingKey> {
        let current = self.state.read().await.clone();
        if let Some(set) = &current {
            if set.fetched_at.elapsed() < self.ttl {
                if let Some(k) = set.find(kid, self.keep_removed) {
                    return Ok(k);
                }
            }
        }
        // Stale, missing, or the kid is unknown: fetch, one caller at a time.
        let mut last_attempt = self.fetch_lock.lock().await;
        let current = self.state.read().await.clone();
        if let Some(set) = &current {
            // Someone else fetched while we waited.
            if set.fetched_at.elapsed() < self.ttl {
                if let Some(k) = set.find(kid, self.keep_removed) {
                    return Ok(k);
                }
            }
        }
        if last_attempt.is_some_and(|t| t.elapsed() < self.min_refresh) {
            // A fetch was tried moments ago: at most one per
            // `min_refresh`, also while the identity provider is down (the
            // set may then be stale: it is served, as after a failure).
            return match &current {
                Some(set) => set.find(kid, self.keep_removed).ok_or_else(unknown_key),
                None => Err(Error::unavailable(format!(
                    "the key set could not be fetched yet; the next try is at most {}s away ({})",
                    self.min_refresh.as_secs(),
                    self.url
                ))),
            };
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(mut set) => {
                if let Some(old) = &current {
                    self.retire(old, &mut set);
                }
                let found = set.find(kid, self.keep_removed);
                *self.state.write().await = Some(Arc::new(set));
                found.ok_or_else(unknown_key)
            }
            Err(e) => {
                // Serve the stale set rather than fail every request while
                // the identity provider is down.
                if let Some(k) = current
                    .as_ref()
                    .and_then(|s| s.find(kid, self.keep_removed))
                {
                    tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; using the cached key set");
                    return Ok(k);
                }
                Err(e)
            }
        }
    }

    /// Carries the keys of `old` that `new` no longer lists into `new`'s
    /// retired keys, while `keep_removed` allows (none when it is zero).
    fn retire(&self, old: &KeySet, new: &mut KeySet) {
        if self.keep_removed.is_zero() {
            return;
        }
        let now = Instant::now();
        let dropped = old
            .by_kid
            .iter()
            .filter(|(kid, _)| !new.by_kid.contains_key(*kid))
            .map(|(kid, key)| (kid.clone(), (key.clone(), now)));
        let still = old
            .retired
            .iter()
            .filter(|(kid, (_, removed))| {
                !new.by_kid.contains_key(*kid) && removed.elapsed() < self.keep_removed
            })
            .map(|(kid, v)| (kid.clone(), v.clone()));
        new.retired = dropped.chain(still).collect();
    }

    async fn fetch(&self) -> AuthResult<KeySet> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let unavailable = |msg: &str| Error::unavailable(format!("{msg} ({})", self.url));
        let resp = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable("cannot fetch the identity provider's JWKS").with_source(e))?;
        if !resp.status().is_success() {
            return Err(unavailable(&format!(
                "the identity provider's JWKS answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(unavailable("the identity provider's JWKS is too large"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| unavailable("cannot read the identity provider's JWKS").with_source(e))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable("the identity provider's JWKS is too large"));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| {
            unavailable("the identity provider's JWKS is not a JWK set").with_source(e)
        })?;
        let mut by_kid = HashMap::new();
        let mut unnamed = Vec::new();
        for jwk in &set.keys {
            // Symmetric keys never belong in a public key set; accepting one
            // would let whoever can read the set sign tokens.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            if let Some(alg) = jwk.common.key_algorithm {
                match key_algorithm(alg) {
                    Some(a) if self.algorithms.contains(&a) => {}
                    _ => continue,
                }
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), key);
                }
                None => unnamed.push(key),
            }
        }
        Ok(KeySet {
            by_kid,
            unnamed,
            retired: HashMap::new(),
            fetched_at: Instant::now(),
        })
    }
}

fn key_algorithm(a: KeyAlgorithm) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as A;
    Some(match a {
        KeyAlgorithm::RS256 => A::RS256,
        KeyAlgorithm::RS384 => A::RS384,
        KeyAlgorithm::RS512 => A::RS512,
        KeyAlgorithm::PS256 => A::PS256,
        KeyAlgorithm::PS384 => A::PS384,
        KeyAlgorithm::PS512 => A::PS512,
        KeyAlgorithm::ES256 => A::ES256,
        KeyAlgorithm::ES384 => A::ES384,
        KeyAlgorithm::EdDSA => A::EdDSA,
        _ => return None,
    })
}
