//! Access-token verification: every attack of issue 5 that needs key
//! material, each next to a control token that differs in one thing only
//! and is accepted (so no case passes for the wrong reason).
//!
//! These run in `stateless` mode so that hand-made tokens (whose sessions do
//! not exist) are judged on signature and claims alone.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use common::*;
use serde_json::{json, Value};
use truststream_auth_jwt::{Algorithm, JwtAuth, JwtAuthConfig, Revocation};
use truststream_core_auth::{Auth, ErrorKind, SignUp};

async fn stateless() -> JwtAuth {
    let mut c = config();
    c.revocation = Revocation::Stateless;
    provider(c).await
}

async fn rejected(auth: &JwtAuth, token: &str, why: &str) -> String {
    match auth.validate_token(token).await {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{why}: {e}");
            assert!(
                !e.to_string().contains(token),
                "{why}: the error echoes the token"
            );
            e.message().to_string()
        }
        Ok(p) => panic!("{why}: accepted as {p:?}"),
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[tokio::test]
async fn control_token_is_accepted() {
    let auth = stateless().await;
    let p = auth
        .validate_token(&sign_hs256(&claims("user-1"), SECRET.as_bytes()))
        .await
        .unwrap();
    assert_eq!(p.user_id, "user-1");
}

#[tokio::test]
async fn expired_and_not_yet_valid() {
    let auth = stateless().await;
    let c = claims("u");
    // Leeway is 5 s: 3 s past expiry still passes, 60 s does not.
    auth.validate_token(&sign_hs256(
        &with(c.clone(), "exp", json!(now() - 3)),
        SECRET.as_bytes(),
    ))
    .await
    .unwrap();
    let m = rejected(
        &auth,
        &sign_hs256(
            &with(c.clone(), "exp", json!(now() - 60)),
            SECRET.as_bytes(),
        ),
        "expired",
    )
    .await;
    assert!(m.contains("expired"), "{m}");
    auth.validate_token(&sign_hs256(
        &with(c.clone(), "nbf", json!(now() - 10)),
        SECRET.as_bytes(),
    ))
    .await
    .unwrap();
    let m = rejected(
        &auth,
        &sign_hs256(&with(c, "nbf", json!(now() + 120)), SECRET.as_bytes()),
        "not yet valid",
    )
    .await;
    assert!(m.contains("not yet valid"), "{m}");
}

#[tokio::test]
async fn audience_and_issuer_are_required_and_checked() {
    let auth = stateless().await;
    let c = claims("u");
    let m = rejected(
        &auth,
        &sign_hs256(&with(c.clone(), "aud", json!("other")), SECRET.as_bytes()),
        "wrong aud",
    )
    .await;
    assert!(m.contains("audience"), "{m}");
    let m = rejected(
        &auth,
        &sign_hs256(&with(c.clone(), "iss", json!("evil")), SECRET.as_bytes()),
        "wrong iss",
    )
    .await;
    assert!(m.contains("issuer"), "{m}");
    for claim in ["aud", "iss", "exp", "sub"] {
        rejected(
            &auth,
            &sign_hs256(&without(c.clone(), claim), SECRET.as_bytes()),
            claim,
        )
        .await;
    }
}

#[tokio::test]
async fn exp_and_nbf_of_the_wrong_json_type_are_rejected() {
    let auth = stateless().await;
    let c = claims("u");
    for (claim, v) in [
        ("exp", json!("99999999999")),
        ("exp", json!(null)),
        ("exp", json!([now() + 600])),
        ("exp", json!({"t": now() + 600})),
        ("nbf", json!("0")),
        ("nbf", json!(true)),
    ] {
        rejected(
            &auth,
            &sign_hs256(&with(c.clone(), claim, v.clone()), SECRET.as_bytes()),
            &format!("{claim} = {v}"),
        )
        .await;
    }
}

#[tokio::test]
async fn token_signed_by_an_unknown_key_is_rejected() {
    let auth = stateless().await;
    rejected(
        &auth,
        &sign_hs256(&claims("u"), b"another secret that is also 32 bytes long"),
        "unknown HMAC key",
    )
    .await;
    // HS384 with the right secret: not the pinned algorithm.
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims("u"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    rejected(&auth, &t, "HS384 when HS256 is pinned").await;
}

async fn asymmetric(alg: Algorithm, pem: &str) -> JwtAuth {
    let mut c = JwtAuthConfig::with_private_key(alg, key(pem));
    c.argon2 = truststream_auth_jwt::Argon2Cost::minimal();
    c.revocation = Revocation::Stateless;
    JwtAuth::new(c, memory_db()).await.unwrap()
}

#[tokio::test]
async fn rs256_public_key_as_hs256_secret_is_rejected() {
    let auth = asymmetric(Algorithm::RS256, "rsa_private.pem").await;
    // Control: the real key signs an accepted token.
    let good = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims("u"),
        &jsonwebtoken::EncodingKey::from_rsa_pem(key("rsa_private.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    auth.validate_token(&good).await.unwrap();
    // The attack: HS256 keyed with the public key (PEM and the JWKS n bytes).
    let public_pem = key("rsa_public.pem");
    rejected(
        &auth,
        &sign_hs256(&claims("u"), public_pem.as_bytes()),
        "public key PEM as HMAC secret",
    )
    .await;
    let jwks = auth.jwks();
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    rejected(
        &auth,
        &sign_hs256(&claims("u"), n.as_bytes()),
        "JWK n as HMAC secret",
    )
    .await;
    // Another RSA key.
    let other = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims("u"),
        &jsonwebtoken::EncodingKey::from_rsa_pem(key("rsa2_private.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    rejected(&auth, &other, "unknown RSA key").await;
}

#[tokio::test]
async fn every_algorithm_issues_and_verifies_and_publishes_only_public_keys() {
    for (alg, pem, kty) in [
        (Algorithm::RS256, "rsa_private.pem", "RSA"),
        (Algorithm::PS256, "rsa_private.pem", "RSA"),
        (Algorithm::ES256, "ec_private.pem", "EC"),
        (Algorithm::EdDSA, "ed_private.pem", "OKP"),
    ] {
        let auth = asymmetric(alg, pem).await;
        let s = auth
            .sign_up(SignUp::new(unique_email(), PASSWORD))
            .await
            .unwrap();
        let token = s.access_token.expose();
        let p = auth.validate_token(token).await.unwrap();
        assert_eq!(p.user_id, s.user.id, "{alg:?}");

        let jwks = auth.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{alg:?}: {jwks}");
        let k = &keys[0];
        assert_eq!(k["kty"], kty, "{alg:?}");
        assert_eq!(k["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "{alg:?} JWKS has {private}: {k}");
        }
        // The published key verifies the token, and the header names it.
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.kid.as_deref(), k["kid"].as_str(), "{alg:?}");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.clone()).unwrap();
        let mut v = jsonwebtoken::Validation::new(alg_of(alg));
        v.set_audience(&["authenticated"]);
        jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
            &v,
        )
        .unwrap();
        // Debug shows no key material.
        let dbg = format!("{auth:?} {:?}", auth.config());
        assert!(
            !dbg.contains("PRIVATE KEY") && !dbg.contains(&key(pem)[30..60]),
            "{dbg}"
        );
    }
}

fn alg_of(a: Algorithm) -> jsonwebtoken::Algorithm {
    match a {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn hmac_jwks_is_empty() {
    let auth = stateless().await;
    assert_eq!(auth.jwks(), json!({"keys": []}));
}

#[tokio::test]
async fn key_configuration_errors_are_clear_and_secret_free() {
    let db = memory_db();
    let short = JwtAuthConfig::with_secret("too short");
    let e = JwtAuth::new(short, db.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("at least 32 bytes") && !e.to_string().contains("too short"));
    let e = JwtAuth::new(JwtAuthConfig::default(), db.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing field `jwt_secret`"), "{e}");
    let e = JwtAuth::new(
        JwtAuthConfig::with_private_key(
            Algorithm::RS256,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n",
        ),
        db.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.to_string().contains("not a key"), "{e}");
    // An EC key for RS256.
    let e = JwtAuth::new(
        JwtAuthConfig::with_private_key(Algorithm::RS256, key("ec_private.pem")),
        db,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn oversized_token_rejected_before_decoding() {
    let auth = stateless().await;
    let mut c = claims("u");
    c["pad"] = json!("x".repeat(20_000));
    rejected(&auth, &sign_hs256(&c, SECRET.as_bytes()), "20 KB token").await;
}
