//! Local token verification: forged, expired, `alg: none`, wrong audience
//! or issuer, and the project's JWKS served by a real HTTP server (axum)
//! whose fetches are counted: cached, fetched again on an unknown `kid`,
//! at most once per `jwks_min_refresh_secs`.
#![allow(clippy::unwrap_used)] // test code

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use truststream_auth_supabase::{SupabaseAuth, SupabaseAuthConfig};
use truststream_core_auth::{Auth, ErrorKind, Principal};

const SECRET: &str = "the project's jwt secret, 32+ bytes long";
const RSA_PEM: &str = include_str!("keys/rsa_private.pem");
const EC_PEM: &str = include_str!("keys/ec_private.pem");

/// A JWKS endpoint with a swappable key set, a status to answer with, and
/// a fetch counter.
#[derive(Clone, Default)]
struct Jwks {
    keys: Arc<RwLock<Vec<Jwk>>>,
    fetches: Arc<AtomicU64>,
    status: Arc<AtomicU16>,
}

async fn jwks(State(s): State<Jwks>) -> axum::response::Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    let status = s.status.load(Ordering::SeqCst);
    if status != 0 && status != 200 {
        return (StatusCode::from_u16(status).unwrap(), "down").into_response();
    }
    let set = JwkSet {
        keys: s.keys.read().unwrap().clone(),
    };
    Json(serde_json::to_value(set).unwrap()).into_response()
}

async fn start_jwks(s: Jwks) -> String {
    let app = Router::new()
        .route("/auth/v1/.well-known/jwks.json", get(jwks))
        .with_state(s);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PEM.as_bytes()).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

fn issuer(url: &str) -> String {
    format!("{url}/auth/v1")
}

fn claims(url: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": issuer(url),
        "sub": "7b0c2a4e-0000-4000-8000-000000000001",
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "ada@example.com",
        "role": "authenticated",
        "app_metadata": {"provider": "email", "roles": ["member"], "permissions": ["write:reports"]},
        "user_metadata": {},
        "session_id": "5f0b6f8e-0000-4000-8000-000000000002",
        "is_anonymous": false,
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn provider(url: &str, secret: bool, jwks: bool) -> SupabaseAuth {
    let mut cfg = SupabaseAuthConfig::new(url, "anon");
    cfg.jwt_secret = secret.then(|| SECRET.into());
    cfg.jwks = jwks;
    cfg.jwks_min_refresh_secs = 2;
    cfg.roles.insert("member".into(), vec!["read:*".into()]);
    SupabaseAuth::new(cfg).unwrap()
}

async fn refused(auth: &SupabaseAuth, token: &str, what: &str) -> String {
    let e = auth.validate_token(token).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{what}: {e}");
    e.to_string()
}

async fn accepted(auth: &SupabaseAuth, token: &str) -> Principal {
    auth.validate_token(token).await.unwrap()
}

#[tokio::test]
async fn hs256_claims_become_the_principal() {
    let url = "http://127.0.0.1:9";
    let auth = provider(url, true, false);
    let p = accepted(&auth, &hs(&claims(url))).await;
    assert_eq!(p.user_id, "7b0c2a4e-0000-4000-8000-000000000001");
    assert_eq!(p.email.as_deref(), Some("ada@example.com"));
    assert_eq!(p.roles, ["member"]);
    assert_eq!(
        p.session_id.as_deref(),
        Some("5f0b6f8e-0000-4000-8000-000000000002")
    );
    assert_eq!(auth.get_user_roles(&p).await.unwrap(), ["member"]);
    // The role grants read:*; the claim grants write:reports; nothing else.
    assert!(auth.has_permission(&p, "read:agents").await.unwrap());
    assert!(auth.has_permission(&p, "write:reports").await.unwrap());
    assert!(!auth.has_permission(&p, "write:agents").await.unwrap());
    assert!(!auth.has_permission(&p, "*").await.unwrap());
    assert_eq!(
        auth.has_permission(&p, "bad").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Without app_metadata.roles the role is `role`.
    let mut c = claims(url);
    c["app_metadata"] = json!({"provider": "email"});
    let p = accepted(&auth, &hs(&c)).await;
    assert_eq!(p.roles, ["authenticated"]);
    assert!(!auth.has_permission(&p, "read:agents").await.unwrap());
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let url = "http://127.0.0.1:9";
    let auth = provider(url, true, false);
    let good = claims(url);

    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another secret that is 32+ bytes long!!"),
        &good,
    );
    let msg = refused(&auth, &forged, "wrong secret").await;
    assert!(!msg.contains(&forged), "the token is echoed: {msg}");

    let mut c = good.clone();
    c["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    c["iat"] = json!(chrono::Utc::now().timestamp() - 7200);
    assert!(refused(&auth, &hs(&c), "expired").await.contains("expired"));

    let mut c = good.clone();
    c["aud"] = json!("somebody-else");
    assert!(refused(&auth, &hs(&c), "aud").await.contains("audience"));

    let mut c = good.clone();
    c["iss"] = json!("https://evil.example/auth/v1");
    assert!(refused(&auth, &hs(&c), "iss").await.contains("issuer"));

    for missing in ["exp", "sub", "aud", "iss"] {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(missing);
        refused(&auth, &hs(&c), missing).await;
    }

    let mut c = good.clone();
    c["exp"] = json!("9999999999");
    refused(&auth, &hs(&c), "exp as a string").await;

    // alg none, with and without a signature part, in any spelling.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    for h in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let h = URL_SAFE_NO_PAD.encode(h);
        refused(&auth, &format!("{h}.{payload}."), "alg none").await;
        refused(&auth, &format!("{h}.{payload}"), "alg none, 2 parts").await;
    }
    // A good token with its payload swapped keeps its signature only.
    let token = hs(&good);
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = good.clone();
    c["app_metadata"]["roles"] = json!(["admin"]);
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap()),
        parts[2]
    );
    refused(&auth, &swapped, "swapped payload").await;
    refused(
        &auth,
        &format!("{}.{}.", parts[0], parts[1]),
        "no signature",
    )
    .await;
    // crit, garbage, oversized.
    let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","crit":["exp"]}"#);
    refused(&auth, &format!("{crit}.{}.{}", parts[1], parts[2]), "crit").await;
    for bad in ["", "x", "a.b.c", &"a".repeat(20_000)] {
        refused(&auth, bad, "garbage").await;
    }
    // The untouched token still passes.
    accepted(&auth, &token).await;
}

#[tokio::test]
async fn an_hs256_token_without_a_secret_is_refused() {
    let url = "http://127.0.0.1:9";
    let auth = provider(url, false, true);
    let msg = refused(&auth, &hs(&claims(url)), "no secret").await;
    assert!(msg.contains("no jwt_secret"), "{msg}");
    // And an asymmetric token with JWKS off.
    let auth = provider(url, true, false);
    let t = sign(Algorithm::RS256, Some("k1"), &rsa(), &claims(url));
    refused(&auth, &t, "jwks off").await;
}

#[tokio::test]
async fn jwks_is_cached_and_fetched_again_on_an_unknown_kid() {
    let s = Jwks::default();
    s.keys
        .write()
        .unwrap()
        .push(jwk(&rsa(), Algorithm::RS256, "k1"));
    let url = start_jwks(s.clone()).await;
    let auth = provider(&url, false, true);
    let c = claims(&url);
    // Signed up front: RSA signing in a debug build is slow enough to
    // outlast the refresh interval.
    let flood: Vec<String> = (0..20)
        .map(|i| sign(Algorithm::RS256, Some(&format!("made-up-{i}")), &rsa(), &c))
        .collect();

    // First RS256 token: one fetch; the next ones use the cache.
    let t1 = sign(Algorithm::RS256, Some("k1"), &rsa(), &c);
    accepted(&auth, &t1).await;
    accepted(&auth, &t1).await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(auth.stats().jwks_fetches, 1);

    // The project rotates in an ES256 key: a token naming it makes the
    // set be fetched again, once (after jwks_min_refresh_secs since the
    // last fetch; before that it is an unknown key, and nothing is fetched).
    s.keys
        .write()
        .unwrap()
        .push(jwk(&ec(), Algorithm::ES256, "e2"));
    let t2 = sign(Algorithm::ES256, Some("e2"), &ec(), &c);
    refused(&auth, &t2, "a new kid right after a fetch").await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    accepted(&auth, &t2).await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 2);
    accepted(&auth, &t2).await;
    accepted(&auth, &t1).await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 2);

    // A flood of made-up kids within jwks_min_refresh_secs fetches nothing.
    for t in &flood {
        assert!(refused(&auth, t, "unknown kid")
            .await
            .contains("unknown key"));
    }
    assert_eq!(s.fetches.load(Ordering::SeqCst), 2);
    // After the interval one more fetch is allowed.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let t = sign(Algorithm::RS256, Some("made-up-x"), &rsa(), &c);
    refused(&auth, &t, "unknown kid after the interval").await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn jwks_keys_do_not_verify_what_they_did_not_sign() {
    let s = Jwks::default();
    s.keys
        .write()
        .unwrap()
        .push(jwk(&rsa(), Algorithm::RS256, "k1"));
    s.keys
        .write()
        .unwrap()
        .push(jwk(&ec(), Algorithm::ES256, "e1"));
    // A symmetric key in a public set must never be used.
    let oct: Jwk = serde_json::from_value(json!({
        "kty": "oct", "kid": "oct1", "alg": "HS256",
        "k": URL_SAFE_NO_PAD.encode(SECRET),
    }))
    .unwrap();
    s.keys.write().unwrap().push(oct);
    let url = start_jwks(s.clone()).await;
    let auth = provider(&url, false, true);
    let c = claims(&url);

    // Signed by another RSA key but naming k1.
    let other_pem = {
        // The EC key cannot sign RS256; reuse the RSA key's claims with an
        // ES256 signature under the RSA kid instead.
        sign(Algorithm::ES256, Some("k1"), &ec(), &c)
    };
    refused(&auth, &other_pem, "ES256 signature under an RSA kid").await;
    // RS256 naming the EC key.
    refused(
        &auth,
        &sign(Algorithm::RS256, Some("e1"), &rsa(), &c),
        "RS256 under an EC kid",
    )
    .await;
    // HS256 signed with the published oct key, naming it.
    refused(
        &auth,
        &sign(
            Algorithm::HS256,
            Some("oct1"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &c,
        ),
        "HS256 with a published oct key",
    )
    .await;
    // No kid while the set holds several keys: refused, not guessed.
    refused(
        &auth,
        &sign(Algorithm::RS256, None, &rsa(), &c),
        "no kid, several keys",
    )
    .await;
    // Expired RS256 token with the right key.
    let mut old = c.clone();
    old["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    assert!(refused(
        &auth,
        &sign(Algorithm::RS256, Some("k1"), &rsa(), &old),
        "expired RS256"
    )
    .await
    .contains("expired"));
    // The right ones pass.
    accepted(&auth, &sign(Algorithm::RS256, Some("k1"), &rsa(), &c)).await;
    accepted(&auth, &sign(Algorithm::ES256, Some("e1"), &ec(), &c)).await;
}

#[tokio::test]
async fn an_unreachable_jwks_is_unavailable_and_a_cached_set_outlives_it() {
    let s = Jwks::default();
    s.keys
        .write()
        .unwrap()
        .push(jwk(&rsa(), Algorithm::RS256, "k1"));
    s.status.store(500, Ordering::SeqCst);
    let url = start_jwks(s.clone()).await;
    let auth = provider(&url, false, true);
    let t = sign(Algorithm::RS256, Some("k1"), &rsa(), &claims(&url));
    let e = auth.validate_token(&t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // Within the refresh interval nothing is fetched, still Unavailable.
    let e = auth.validate_token(&t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(s.fetches.load(Ordering::SeqCst), 1);
    // The project recovers.
    s.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    accepted(&auth, &t).await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 2);

    // A set gone stale is fetched again; when that fails, the stale set is
    // used rather than refusing every token while the project is down.
    let mut cfg = SupabaseAuthConfig::new(&url, "anon");
    cfg.jwks_cache_secs = 1;
    cfg.jwks_min_refresh_secs = 1;
    let auth = SupabaseAuth::new(cfg).unwrap();
    accepted(&auth, &t).await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 3);
    s.status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    accepted(&auth, &t).await;
    assert_eq!(
        s.fetches.load(Ordering::SeqCst),
        4,
        "the stale set was fetched again"
    );
    // A kid the stale set lacks is still unknown (and fetches nothing more
    // within the interval).
    let other = sign(Algorithm::RS256, Some("k9"), &rsa(), &claims(&url));
    refused(&auth, &other, "unknown kid while the project is down").await;
    assert_eq!(s.fetches.load(Ordering::SeqCst), 4);
}
