//! Signed URL tokens: JWT-shaped like Supabase's (`{url, iat, exp}`, HS256),
//! signed with a key derived from the server's secret (so they are never
//! mistaken for API keys or access tokens signed with the secret itself),
//! and bound to one purpose, one `bucket/key` and an expiry.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::error::{ApiError, ApiResult};
use crate::ServeState;

/// Longest lifetime of a signed download URL (ten years: Supabase sets no
/// limit, and storage-js users ask for a year).
pub(crate) const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// Lifetime of a signed upload URL (two hours, as Supabase's).
pub(crate) const UPLOAD_EXPIRES_IN: i64 = 2 * 3600;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Purpose {
    /// `GET /object/sign/...`.
    Download,
    /// `PUT /object/upload/sign/...`.
    Upload,
}

/// A token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// `bucket/key`.
    pub url: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// What the token allows.
    #[serde(rename = "ts_use")]
    pub purpose: Purpose,
    /// Upload tokens: whether the upload may replace an object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upsert: bool,
    /// Upload tokens: a random id, used once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// The label of the signed-URL key (derived from the server secret, never
/// the secret itself, so these tokens can never pass as API keys or access
/// tokens).
const SIGNING_LABEL: &str = "truststream serve: storage signed URLs v1";

fn signing_key(state: &ServeState) -> crate::keys::DerivedKey {
    state.keys.derived_key(SIGNING_LABEL)
}

fn mac(state: &ServeState) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(&signing_key(state)).expect("HMAC takes any key length")
}

/// Signs a token for `purpose` on `bucket/key` for `expires_in` seconds.
pub(crate) fn sign(
    state: &ServeState,
    purpose: Purpose,
    bucket: &str,
    key: &str,
    expires_in: i64,
    upsert: bool,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let jti = (purpose == Purpose::Upload).then(|| {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    });
    let claims = Claims {
        url: format!("{bucket}/{key}"),
        iat: now,
        exp: now.saturating_add(expires_in),
        purpose,
        upsert,
        jti,
    };
    crate::keys::hs256_jwt(&signing_key(state), &claims)
}

/// Checks a token: signature, purpose, expiry, and that it was issued for
/// `bucket/key`. Every refusal is 400 `InvalidJWT`.
pub(crate) fn verify(
    state: &ServeState,
    token: Option<&str>,
    purpose: Purpose,
    bucket: &str,
    key: &str,
) -> ApiResult<Claims> {
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid_jwt("a token is required (?token=)"))?;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::invalid_jwt("jwt malformed"));
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| ApiError::invalid_jwt("jwt malformed"))?;
    let mut m = mac(state);
    m.update(header.as_bytes());
    m.update(b".");
    m.update(payload.as_bytes());
    m.verify_slice(&sig)
        .map_err(|_| ApiError::invalid_jwt("invalid signature"))?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| ApiError::invalid_jwt("jwt malformed"))?;
    if claims.purpose != purpose {
        return Err(ApiError::invalid_jwt(match purpose {
            Purpose::Download => "this token is not a download token",
            Purpose::Upload => "this token is not an upload token",
        }));
    }
    if claims.exp <= chrono::Utc::now().timestamp() {
        return Err(ApiError::invalid_jwt("jwt expired"));
    }
    if claims.url != format!("{bucket}/{key}") {
        return Err(ApiError::invalid_jwt(
            "the token was not issued for this object",
        ));
    }
    Ok(claims)
}

/// Upload token ids in use or used, with their expiry (this process only).
static USED: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);

/// Claims a one-use upload token: `false` when it was used (or is in use).
pub(crate) fn claim(claims: &Claims) -> bool {
    let Some(jti) = &claims.jti else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    let mut guard = USED.lock().unwrap_or_else(|p| p.into_inner());
    let used = guard.get_or_insert_with(HashMap::new);
    if used.len() > 1024 {
        used.retain(|_, exp| *exp > now);
    }
    if used.contains_key(jti) {
        return false;
    }
    used.insert(jti.clone(), claims.exp);
    true
}

/// Gives back a claimed token whose upload failed, so it can be retried.
pub(crate) fn release(claims: &Claims) {
    if let Some(jti) = &claims.jti {
        let mut guard = USED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = guard.as_mut() {
            used.remove(jti);
        }
    }
}
