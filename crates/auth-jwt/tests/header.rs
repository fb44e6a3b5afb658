//! JWT header hygiene: `crit` is refused (RFC 7515 §4.1.11; no extension is
//! supported), a `kid` naming no configured key is refused, and `jku`,
//! `x5u` and `jwk` are never fetched nor trusted. Every refusal is
//! `Unauthenticated`; each case sits next to a control token that differs
//! in the header only and is accepted.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::net::TcpListener;

use common::*;
use jsonwebtoken::{jwk::Jwk, Algorithm as A, Header};
use serde_json::{json, Value};
use truststream_auth_jwt::{Algorithm, ExternalIssuer, JwtAuth, JwtAuthConfig, Revocation};
use truststream_core_auth::{Auth, ErrorKind};

const IDP: &str = "https://idp.example.com/auth/v1";
const IDP_SECRET: &str = "the identity provider's own HS256 secret, 32+ bytes";

async fn stateless(mut c: JwtAuthConfig) -> JwtAuth {
    c.revocation = Revocation::Stateless;
    provider(c).await
}

async fn refused(auth: &JwtAuth, token: &str, why: &str) {
    match auth.validate_token(token).await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{why}: {e}"),
        Ok(p) => panic!("{why}: accepted as {p:?}"),
    }
}

fn idp_claims(sub: &str) -> Value {
    let mut c = claims(sub);
    c["iss"] = json!(IDP);
    c
}

#[tokio::test]
async fn crit_headers_are_refused() {
    let mut c = config();
    c.external_issuers = vec![ExternalIssuer::with_secret(
        IDP,
        "authenticated",
        IDP_SECRET,
    )];
    let auth = stateless(c).await;
    for (secret, claims, who) in [
        (SECRET, claims("u"), "own"),
        (IDP_SECRET, idp_claims("u"), "external"),
    ] {
        let s = secret.as_bytes();
        let control = json!({"alg": "HS256", "typ": "JWT", "x-ext": "1"});
        auth.validate_token(&sign_raw_hs256(&control, &claims, s))
            .await
            .unwrap_or_else(|e| panic!("{who} control: {e}"));
        for crit in [json!(["x-ext"]), json!(["exp"]), json!([]), Value::Null] {
            let mut h = control.clone();
            h["crit"] = crit.clone();
            refused(
                &auth,
                &sign_raw_hs256(&h, &claims, s),
                &format!("{who} crit {crit}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn a_kid_naming_no_configured_key_is_refused() {
    // An HMAC secret without `key_id`: no kid names it.
    let auth = stateless(config()).await;
    auth.validate_token(&sign_raw_hs256(
        &json!({"alg": "HS256"}),
        &claims("u"),
        SECRET.as_bytes(),
    ))
    .await
    .unwrap();
    refused(
        &auth,
        &sign_raw_hs256(
            &json!({"alg": "HS256", "kid": "other"}),
            &claims("u"),
            SECRET.as_bytes(),
        ),
        "a kid for an HMAC key without one",
    )
    .await;

    // With `key_id`: issued tokens carry it; another kid is refused.
    let mut c = config();
    c.key_id = Some("k1".into());
    let auth = stateless(c).await;
    for (kid, ok) in [(Some("k1"), true), (None, true), (Some("k2"), false)] {
        let mut h = json!({"alg": "HS256"});
        if let Some(k) = kid {
            h["kid"] = json!(k);
        }
        let t = sign_raw_hs256(&h, &claims("u"), SECRET.as_bytes());
        if ok {
            auth.validate_token(&t).await.unwrap();
        } else {
            refused(&auth, &t, "kid k2 when the key is k1").await;
        }
    }

    // An RS256 key is named by its thumbprint (the published kid).
    let mut c = JwtAuthConfig::with_private_key(Algorithm::RS256, key("rsa_private.pem"));
    c.revocation = Revocation::Stateless;
    let auth = JwtAuth::new(c, memory_db()).await.unwrap();
    let ours = auth.jwks()["keys"][0]["kid"].as_str().unwrap().to_string();
    auth.validate_token(&sign_rs256(&claims("u"), "rsa_private.pem", Some(&ours)))
        .await
        .unwrap();
    refused(
        &auth,
        &sign_rs256(&claims("u"), "rsa_private.pem", Some("not-ours")),
        "our RSA key under another kid",
    )
    .await;
    // (A JWKS issuer refuses an unknown kid after at most one refetch:
    // tests/external.rs, jwks_keys_are_fetched_cached_and_refreshed_....)
}

/// A listener on loopback that nobody should ever connect to.
struct Trap {
    listener: TcpListener,
    url: String,
}

impl Trap {
    fn new() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/keys.json", listener.local_addr().unwrap());
        Trap { listener, url }
    }

    /// Fails if any connection reached the listener (a connect completes in
    /// the kernel's backlog whether or not anyone accepts it).
    fn assert_untouched(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("the token's URL was fetched (from {peer})"),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_x5u_and_jwk_headers_are_never_fetched_nor_trusted() {
    let trap = Trap::new();
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "k1")]})).await;
    let mut c = config();
    c.revocation = Revocation::Stateless;
    c.external_issuers = vec![ExternalIssuer::with_jwks(IDP, "authenticated", &server.url)];
    let auth = JwtAuth::new(c, memory_db()).await.unwrap();

    // The attacker's key, offered by URL and inline.
    let attacker = rsa_key("rsa2_private.pem");
    let attacker_jwk = Jwk::from_encoding_key(&attacker, A::RS256).unwrap();
    let header = |kid: Option<&str>| {
        let mut h = Header::new(A::RS256);
        h.kid = kid.map(str::to_string);
        h.jku = Some(trap.url.clone());
        h.x5u = Some(trap.url.clone());
        h.jwk = Some(attacker_jwk.clone());
        h
    };

    // Our own HS256 tokens: the URLs are ignored, the configured key decides.
    let mut h = Header::new(A::HS256);
    h.jku = Some(trap.url.clone());
    h.x5u = Some(trap.url.clone());
    let t = jsonwebtoken::encode(
        &h,
        &claims("u"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    auth.validate_token(&t).await.unwrap();
    // The attacker's RS256 token in our name: refused.
    let t = jsonwebtoken::encode(&header(None), &claims("u"), &attacker).unwrap();
    refused(&auth, &t, "own issuer, attacker key by jku/x5u/jwk").await;

    // The JWKS issuer: the configured key set decides, whatever the header
    // points at; an unknown kid is looked up at the configured URL only.
    let t = jsonwebtoken::encode(
        &header(Some("k1")),
        &idp_claims("u"),
        &rsa_key("rsa_private.pem"),
    )
    .unwrap();
    auth.validate_token(&t).await.unwrap();
    for kid in [Some("k1"), Some("attacker"), None] {
        let t = jsonwebtoken::encode(&header(kid), &idp_claims("u"), &attacker).unwrap();
        refused(
            &auth,
            &t,
            &format!("JWKS issuer, attacker key, kid {kid:?}"),
        )
        .await;
    }
    assert!(server.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    trap.assert_untouched();
}
