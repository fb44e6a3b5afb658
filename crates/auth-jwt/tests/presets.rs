//! The named external issuers (`preset = "auth0" | "cognito" |
//! "supabase"`): tokens in each vendor's exact shape, served keys from a
//! loopback JWKS endpoint per preset, rotation, and the tokens each must
//! refuse.
//!
//! The claim sets below are the vendors' documented example tokens, kept
//! as published except for the times (`iat`, `exp`, `auth_time`, made
//! current) and where a value must match the test's configuration (said
//! at each fixture).
#![allow(clippy::unwrap_used)] // test code

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm as A, EncodingKey, Header};
use serde_json::{json, Value};
use truststream_auth_jwt::{ExternalIssuer, JwtAuth, JwtAuthConfig, Preset};
use truststream_core_auth::{Auth, ErrorKind, Principal};

// ---------------------------------------------------------------- fixtures

const AUTH0_TENANT: &str = "my-domain.auth0.com";
const AUTH0_API: &str = "https://example.com/health-api";

/// Auth0's access token with RBAC ("Add Permissions in the Access Token")
/// and a namespaced custom claim. Source: Auth0 docs, "Access Token
/// Profiles" (the `auth0` profile example: `iss`, `sub`, `aud` as an array
/// with the tenant's `/userinfo`, `azp`, `scope`) and "Enable
/// Role-Based Access Control for APIs" (`permissions`); the namespaced
/// claim follows "Create Custom Claims" (`https://myapp.example.com/...`).
fn auth0_claims() -> Value {
    json!({
        "iss": "https://my-domain.auth0.com/",
        "sub": "auth0|123456",
        "aud": [
            "https://example.com/health-api",
            "https://my-domain.auth0.com/userinfo"
        ],
        "azp": "my_client_id",
        "exp": now() + 3600,
        "iat": now(),
        "scope": "openid profile read:patients read:admin",
        "permissions": ["read:patients", "read:admin"],
        "https://myapp.example.com/roles": ["admin"]
    })
}

const COGNITO_REGION: &str = "us-west-2";
const COGNITO_POOL: &str = "us-west-2_example";
const COGNITO_CLIENT: &str = "57cbishk4j24pabc1234567890";

/// A Cognito user pool access token. Source: AWS docs, Amazon Cognito
/// Developer Guide, "Understanding the access token" (example payload).
/// `cognito:groups` holds `member` (the docs' example group is `admin`)
/// so the mapping to a local role other than `admin` shows.
fn cognito_access_claims() -> Value {
    json!({
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "device_key": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "cognito:groups": ["member"],
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": now(),
        "iss": "https://cognito-idp.us-west-2.amazonaws.com/us-west-2_example",
        "exp": now() + 3600,
        "iat": now(),
        "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "client_id": "57cbishk4j24pabc1234567890",
        "username": "janedoe@example.com"
    })
}

/// A Cognito user pool id token. Source: AWS docs, Amazon Cognito
/// Developer Guide, "Understanding the identity (ID) token" (example
/// payload; `identities` trimmed to one entry). `aud` is the access-token
/// example's client id, so that only `token_use` tells them apart.
fn cognito_id_claims() -> Value {
    json!({
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "cognito:groups": ["test-group-a", "test-group-b", "test-group-c"],
        "email_verified": true,
        "cognito:preferred_role": "arn:aws:iam::111122223333:role/my-test-role",
        "iss": "https://cognito-idp.us-west-2.amazonaws.com/us-west-2_example",
        "cognito:username": "my-test-user",
        "middle_name": "Jane",
        "nonce": "abcdefg",
        "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "cognito:roles": ["arn:aws:iam::111122223333:role/my-test-role"],
        "aud": "57cbishk4j24pabc1234567890",
        "identities": [{
            "userId": "amzn1.account.EXAMPLE",
            "providerName": "LoginWithAmazon",
            "providerType": "LoginWithAmazon",
            "issuer": null,
            "primary": "true",
            "dateCreated": "1642699117273"
        }],
        "event_id": "64f513be-32db-42b0-b78e-b02127b4f463",
        "token_use": "id",
        "auth_time": now(),
        "name": "John Doe",
        "exp": now() + 3600,
        "iat": now(),
        "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "email": "my-test-user@example.com"
    })
}

const SUPABASE_PROJECT: &str = "https://abcdefghijklmnopqrst.supabase.co";

/// A Supabase Auth access token. Source: Supabase docs, "JWT Claims
/// Reference" (example payload of a user's access token). `app_metadata`
/// adds `roles` (as an app's custom access token hook or an admin call
/// would set it); `user_metadata` carries a `roles` the user could have
/// written themselves, which must grant nothing.
fn supabase_claims() -> Value {
    json!({
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now()}],
        "app_metadata": {"provider": "email", "providers": ["email"], "roles": ["member"]},
        "aud": "authenticated",
        "email": "user@example.com",
        "exp": now() + 3600,
        "iat": now(),
        "is_anonymous": false,
        "iss": "https://abcdefghijklmnopqrst.supabase.co/auth/v1",
        "phone": "",
        "role": "authenticated",
        "session_id": "5b6e1ab3-8f64-4c8e-9a8d-0c2d6f1f6f55",
        "sub": "2d2e2a3f-7c51-4f11-9a58-7ad0c4b6f2e3",
        "user_metadata": {"email_verified": true, "roles": ["admin"]}
    })
}

// ---------------------------------------------------------------- helpers

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(key("ec_private.pem").as_bytes()).unwrap()
}

fn ec_jwk(kid: &str) -> Value {
    let mut j = Jwk::from_encoding_key(&ec_key(), A::ES256).unwrap();
    j.common.key_id = Some(kid.to_string());
    serde_json::to_value(j).unwrap()
}

fn sign_es256(claims: &Value, kid: &str) -> String {
    let mut h = Header::new(A::ES256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &ec_key()).unwrap()
}

/// `preset` issuer from JSON fields, keys from `jwks_url`.
fn preset(fields: Value) -> ExternalIssuer {
    serde_json::from_value(fields).unwrap()
}

async fn provider_with(issuers: Vec<ExternalIssuer>) -> JwtAuth {
    let mut c = config();
    c.external_issuers = issuers;
    JwtAuth::new(c, memory_db()).await.unwrap()
}

async fn refused(auth: &JwtAuth, token: &str, why: &str) {
    match auth.validate_token(token).await {
        Ok(p) => panic!("{why}: accepted as {}", p.user_id),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{why}: {e}"),
    }
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// The attacks every JWKS issuer must refuse, given valid `claims` and the
/// published key's `kid` (an RSA key from `rsa_private.pem`).
async fn refuses_attacks(auth: &JwtAuth, claims: &Value, kid: &str) {
    // Sanity: the claims themselves are accepted.
    auth.validate_token(&sign_rs256(claims, "rsa_private.pem", Some(kid)))
        .await
        .unwrap();
    // Expired (beyond the 5 s leeway).
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 60);
    expired["iat"] = json!(now() - 3660);
    refused(
        auth,
        &sign_rs256(&expired, "rsa_private.pem", Some(kid)),
        "expired",
    )
    .await;
    // Forged: another key signs under the published kid.
    refused(
        auth,
        &sign_rs256(claims, "rsa2_private.pem", Some(kid)),
        "forged signature",
    )
    .await;
    // A signed token whose payload was altered afterwards.
    let good = sign_rs256(claims, "rsa_private.pem", Some(kid));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut more = claims.clone();
    more["sub"] = json!("someone-else");
    parts[1] = b64(&serde_json::to_vec(&more).unwrap());
    refused(auth, &parts.join("."), "altered payload").await;
    // alg none, with and without a signature.
    let none_header = b64(&serde_json::to_vec(&json!({"alg": "none", "typ": "JWT"})).unwrap());
    let payload = b64(&serde_json::to_vec(claims).unwrap());
    refused(auth, &format!("{none_header}.{payload}."), "alg none").await;
    refused(
        auth,
        &format!("{none_header}.{payload}.{}", parts[2]),
        "alg none, signed",
    )
    .await;
    // HS256 keyed with the public key (the RS/HS confusion), as PEM and as
    // the JWK's modulus, under the published kid and without one.
    let public_pem = key("rsa_public.pem");
    for secret in [public_pem.as_bytes(), public_pem.trim().as_bytes()] {
        refused(
            auth,
            &sign_raw_hs256(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                claims,
                secret,
            ),
            "HS256 with the public key",
        )
        .await;
        refused(
            auth,
            &sign_raw_hs256(&json!({"alg": "HS256", "typ": "JWT"}), claims, secret),
            "HS256 with the public key, no kid",
        )
        .await;
    }
    // A key the token names by URL is never fetched nor trusted.
    let mut h = Header::new(A::RS256);
    h.kid = Some("attacker".into());
    h.jku = Some("http://127.0.0.1:9/jwks.json".into());
    refused(
        auth,
        &jsonwebtoken::encode(&h, claims, &rsa_key("rsa2_private.pem")).unwrap(),
        "jku",
    )
    .await;
}

/// Roles and permissions as the require-auth layer sees them.
async fn allowed(auth: &JwtAuth, p: &Principal, perm: &str) -> bool {
    auth.has_permission(p, perm).await.unwrap()
}

// ---------------------------------------------------------------- auth0

fn auth0_issuer(jwks_url: &str) -> ExternalIssuer {
    preset(json!({
        "preset": "auth0",
        "tenant": AUTH0_TENANT,
        "audience": AUTH0_API,
        // The tenant's own https://my-domain.auth0.com/.well-known/jwks.json,
        // served on loopback.
        "jwks_url": jwks_url,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_tokens_map_rbac_permissions_and_scopes() {
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "auth0-k1")]})).await;
    let issuer = auth0_issuer(&server.url);
    assert_eq!(
        issuer.effective_issuer().unwrap(),
        "https://my-domain.auth0.com/"
    );
    let auth = provider_with(vec![issuer]).await;

    let p = auth
        .validate_token(&sign_rs256(
            &auth0_claims(),
            "rsa_private.pem",
            Some("auth0-k1"),
        ))
        .await
        .unwrap();
    assert_eq!(p.user_id, "auth0|123456");
    // Default mapping: no roles (the namespaced claim is not read unless
    // mapped), permissions from `permissions` and from `scope`.
    assert!(p.roles.is_empty(), "{:?}", p.roles);
    assert!(allowed(&auth, &p, "read:patients").await);
    assert!(allowed(&auth, &p, "read:admin").await);
    assert!(!allowed(&auth, &p, "write:patients").await);
    assert!(!allowed(&auth, &p, "delete:agents").await);
    let mut scoped = auth0_claims();
    scoped["permissions"] = json!([]);
    scoped["scope"] = json!("openid profile read:messages");
    let p = auth
        .validate_token(&sign_rs256(&scoped, "rsa_private.pem", Some("auth0-k1")))
        .await
        .unwrap();
    assert!(allowed(&auth, &p, "read:messages").await);
    assert!(!allowed(&auth, &p, "read:patients").await);

    // `aud` as a string (a token requested for the API only) works too.
    let mut single = auth0_claims();
    single["aud"] = json!(AUTH0_API);
    auth.validate_token(&sign_rs256(&single, "rsa_private.pem", Some("auth0-k1")))
        .await
        .unwrap();

    // Another API's token, and a token with only the userinfo audience.
    for aud in [
        json!("https://example.com/billing-api"),
        json!([
            "https://example.com/billing-api",
            "https://my-domain.auth0.com/userinfo"
        ]),
        json!("https://my-domain.auth0.com/userinfo"),
    ] {
        let mut other = auth0_claims();
        other["aud"] = aud.clone();
        refused(
            &auth,
            &sign_rs256(&other, "rsa_private.pem", Some("auth0-k1")),
            &format!("audience {aud}"),
        )
        .await;
    }
    // Another tenant (even signed by a key we know), and the issuer
    // without its trailing slash.
    for iss in [
        "https://other-tenant.auth0.com/",
        "https://my-domain.auth0.com",
    ] {
        let mut other = auth0_claims();
        other["iss"] = json!(iss);
        refused(
            &auth,
            &sign_rs256(&other, "rsa_private.pem", Some("auth0-k1")),
            iss,
        )
        .await;
    }
    refuses_attacks(&auth, &auth0_claims(), "auth0-k1").await;
    // One fetch served everything.
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_namespaced_roles_map_through_a_claim_mapping() {
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "auth0-k1")]})).await;
    let mut issuer = auth0_issuer(&server.url);
    issuer.claim_mapping = Some(
        serde_json::from_value(json!({
            "roles": ["https://myapp.example.com/roles"],
            "role_map": {"admin": "admin", "editor": "member"},
            "permissions": "permissions",
        }))
        .unwrap(),
    );
    let auth = provider_with(vec![issuer]).await;
    let p = auth
        .validate_token(&sign_rs256(
            &auth0_claims(),
            "rsa_private.pem",
            Some("auth0-k1"),
        ))
        .await
        .unwrap();
    assert_eq!(p.roles, ["admin"]);
    assert_eq!(auth.get_user_roles(&p).await.unwrap(), ["admin"]);
    assert!(allowed(&auth, &p, "delete:agents").await);

    let mut editor = auth0_claims();
    editor["https://myapp.example.com/roles"] = json!(["editor", "superuser"]);
    editor["permissions"] = json!([]);
    editor["scope"] = json!("openid delete:patients");
    let p = auth
        .validate_token(&sign_rs256(&editor, "rsa_private.pem", Some("auth0-k1")))
        .await
        .unwrap();
    assert_eq!(p.roles, ["member"]);
    assert!(allowed(&auth, &p, "write:agents").await);
    assert!(!allowed(&auth, &p, "delete:agents").await);
    // The mapping replaced the defaults: `scope` grants nothing now.
    assert!(!allowed(&auth, &p, "delete:patients").await);
}

// ---------------------------------------------------------------- cognito

fn cognito_issuer(jwks_url: &str, token_use: &str) -> ExternalIssuer {
    preset(json!({
        "preset": "cognito",
        "region": COGNITO_REGION,
        "user_pool_id": COGNITO_POOL,
        "client_ids": [COGNITO_CLIENT],
        "token_use": token_use,
        // The pool's https://cognito-idp.us-west-2.amazonaws.com/
        // us-west-2_example/.well-known/jwks.json, served on loopback.
        "jwks_url": jwks_url,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_access_tokens_map_groups_and_refuse_id_tokens() {
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "cognito-k1")]})).await;
    let issuer = cognito_issuer(&server.url, "access");
    assert_eq!(
        issuer.effective_issuer().unwrap(),
        "https://cognito-idp.us-west-2.amazonaws.com/us-west-2_example"
    );
    let auth = provider_with(vec![issuer]).await;
    let sign = |c: &Value| sign_rs256(c, "rsa_private.pem", Some("cognito-k1"));

    let p = auth
        .validate_token(&sign(&cognito_access_claims()))
        .await
        .unwrap();
    assert_eq!(p.user_id, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
    assert_eq!(p.claims["username"], "janedoe@example.com");
    // `cognito:groups` -> local roles: `member` grants read:* and
    // write:agents; the pool's default scope is no permission.
    assert_eq!(p.roles, ["member"]);
    assert!(allowed(&auth, &p, "read:reports").await);
    assert!(allowed(&auth, &p, "write:agents").await);
    assert!(!allowed(&auth, &p, "delete:agents").await);
    // A custom scope of the `action:resource` shape is a permission.
    let mut scoped = cognito_access_claims();
    scoped["cognito:groups"] = json!([]);
    scoped["scope"] = json!("aws.cognito.signin.user.admin delete:reports");
    let p = auth.validate_token(&sign(&scoped)).await.unwrap();
    assert!(p.roles.is_empty());
    assert!(allowed(&auth, &p, "delete:reports").await);
    assert!(!allowed(&auth, &p, "read:reports").await);

    // The pool's id token is refused where access tokens are required.
    refused(&auth, &sign(&cognito_id_claims()), "id token").await;
    // An access token of another app client, or with no client_id.
    let mut other = cognito_access_claims();
    other["client_id"] = json!("1example23456789");
    refused(&auth, &sign(&other), "other client").await;
    let mut none = cognito_access_claims();
    none.as_object_mut().unwrap().remove("client_id");
    refused(&auth, &sign(&none), "no client_id").await;
    // No token_use, or another value.
    for usage in [Value::Null, json!("refresh"), json!(["access"])] {
        let mut t = cognito_access_claims();
        t["token_use"] = usage.clone();
        refused(&auth, &sign(&t), &format!("token_use {usage}")).await;
    }
    // Another pool, in the same and in another region.
    for iss in [
        "https://cognito-idp.us-west-2.amazonaws.com/us-west-2_other",
        "https://cognito-idp.eu-west-1.amazonaws.com/us-west-2_example",
    ] {
        let mut t = cognito_access_claims();
        t["iss"] = json!(iss);
        refused(&auth, &sign(&t), iss).await;
    }
    refuses_attacks(&auth, &cognito_access_claims(), "cognito-k1").await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_id_tokens_when_configured_refuse_access_tokens() {
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "cognito-k1")]})).await;
    let auth = provider_with(vec![cognito_issuer(&server.url, "id")]).await;
    let sign = |c: &Value| sign_rs256(c, "rsa_private.pem", Some("cognito-k1"));
    let p = auth
        .validate_token(&sign(&cognito_id_claims()))
        .await
        .unwrap();
    assert_eq!(p.email.as_deref(), Some("my-test-user@example.com"));
    // Groups by name; none of them is a configured role, so nothing is
    // granted.
    assert_eq!(p.roles, ["test-group-a", "test-group-b", "test-group-c"]);
    assert!(!allowed(&auth, &p, "read:reports").await);
    refused(&auth, &sign(&cognito_access_claims()), "access token").await;
    // An id token for another app client.
    let mut other = cognito_id_claims();
    other["aud"] = json!("1example23456789");
    refused(&auth, &sign(&other), "other client's id token").await;
    refuses_attacks(&auth, &cognito_id_claims(), "cognito-k1").await;
}

// ---------------------------------------------------------------- supabase

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_tokens_from_the_project_jwks() {
    // New Supabase projects sign with ES256 keys; RS256 keys are offered
    // too: the set holds one of each.
    let server = jwks_server(json!({"keys": [
        ec_jwk("sb-ec-1"),
        jwk("rsa_private.pem", "sb-rsa-1"),
    ]}))
    .await;
    let issuer = preset(json!({
        "preset": "supabase",
        "project_url": SUPABASE_PROJECT,
        // The project's https://<ref>.supabase.co/auth/v1/.well-known/
        // jwks.json, served on loopback.
        "jwks_url": server.url,
    }));
    assert_eq!(
        issuer.effective_issuer().unwrap(),
        "https://abcdefghijklmnopqrst.supabase.co/auth/v1"
    );
    let auth = provider_with(vec![issuer]).await;
    let p = auth
        .validate_token(&sign_es256(&supabase_claims(), "sb-ec-1"))
        .await
        .unwrap();
    assert_eq!(p.user_id, "2d2e2a3f-7c51-4f11-9a58-7ad0c4b6f2e3");
    assert_eq!(p.email.as_deref(), Some("user@example.com"));
    assert_eq!(p.claims["aal"], "aal1");
    assert_eq!(p.claims["is_anonymous"], false);
    // Roles from app_metadata.roles; user_metadata's `admin` is ignored.
    assert_eq!(p.roles, ["member"]);
    assert!(allowed(&auth, &p, "write:agents").await);
    assert!(!allowed(&auth, &p, "delete:agents").await);
    // Its session lives at Supabase, not here.
    assert_eq!(
        auth.sign_out(&p).await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );

    // Another project; the service_role audience; an anon key (no `sub`).
    let mut other = supabase_claims();
    other["iss"] = json!("https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1");
    refused(&auth, &sign_es256(&other, "sb-ec-1"), "other project").await;
    let mut aud = supabase_claims();
    aud["aud"] = json!("service_role");
    refused(&auth, &sign_es256(&aud, "sb-ec-1"), "other audience").await;
    let anon = json!({
        "iss": "https://abcdefghijklmnopqrst.supabase.co/auth/v1",
        "aud": "authenticated", "role": "anon", "exp": now() + 3600, "iat": now()
    });
    refused(&auth, &sign_es256(&anon, "sb-ec-1"), "anon key").await;
    refuses_attacks(&auth, &supabase_claims(), "sb-rsa-1").await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn supabase_tokens_with_the_project_secret() {
    const PROJECT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
    let auth = provider_with(vec![preset(json!({
        "preset": "supabase",
        "project_url": SUPABASE_PROJECT,
        "jwt_secret": PROJECT_SECRET,
    }))])
    .await;
    let p = auth
        .validate_token(&sign_hs256(&supabase_claims(), PROJECT_SECRET.as_bytes()))
        .await
        .unwrap();
    assert_eq!(p.roles, ["member"]);
    // Another secret; an RS256 token (the secret verifies HS256 only);
    // alg none; an expired token.
    refused(
        &auth,
        &sign_hs256(
            &supabase_claims(),
            b"another project's secret, 32+ bytes long",
        ),
        "other secret",
    )
    .await;
    refused(
        &auth,
        &sign_rs256(&supabase_claims(), "rsa_private.pem", None),
        "RS256",
    )
    .await;
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::to_vec(&supabase_claims()).unwrap())
    );
    refused(&auth, &none, "alg none").await;
    let mut expired = supabase_claims();
    expired["exp"] = json!(now() - 60);
    refused(
        &auth,
        &sign_hs256(&expired, PROJECT_SECRET.as_bytes()),
        "expired",
    )
    .await;
    // Debug of the provider's configuration never shows the secret.
    let shown = format!("{:?}", auth.config());
    assert!(!shown.contains(PROJECT_SECRET), "{shown}");
    assert!(shown.contains("Supabase"), "{shown}");
}

// ---------------------------------------------------------------- rotation

/// One preset's rotation: the IdP publishes a second key, signs with it,
/// then stops publishing the first. `keep_removed_secs` is the issuer's
/// `jwks_keep_removed_secs`.
async fn rotation(
    make: impl Fn(&str, u64) -> ExternalIssuer,
    claims: Value,
    keep_removed_secs: u64,
) {
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "k1")]})).await;
    let auth = Arc::new(provider_with(vec![make(&server.url, keep_removed_secs)]).await);
    let old = sign_rs256(&claims, "rsa_private.pem", Some("k1"));
    auth.validate_token(&old).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // The IdP adds k2 and signs with it: twenty concurrent requests with
    // the new kid fetch the set once.
    *server.doc.lock().unwrap() =
        json!({"keys": [jwk("rsa2_private.pem", "k2"), jwk("rsa_private.pem", "k1")]});
    let new = sign_rs256(&claims, "rsa2_private.pem", Some("k2"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (auth, new) = (auth.clone(), new.clone());
            tokio::spawn(async move { auth.validate_token(&new).await.map(|p| p.user_id) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    assert_eq!(auth.stats().jwks_fetches, 2);
    // The old key is still published: old tokens stay valid, no fetch.
    auth.validate_token(&old).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    // The IdP stops publishing k1. A token naming a kid we do not know
    // makes us fetch the set again (this one is refused).
    *server.doc.lock().unwrap() = json!({"keys": [jwk("rsa2_private.pem", "k2")]});
    refused(
        &auth,
        &sign_rs256(&claims, "rsa2_private.pem", Some("k3")),
        "unknown kid",
    )
    .await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    auth.validate_token(&new).await.unwrap();
    if keep_removed_secs > 0 {
        // Kept: the old token is valid until it expires, without a fetch;
        // an expired one signed by the old key is not.
        auth.validate_token(&old).await.unwrap();
        assert_eq!(server.hits.load(Ordering::SeqCst), 3);
        let mut expired = claims.clone();
        expired["exp"] = json!(now() - 60);
        refused(
            &auth,
            &sign_rs256(&expired, "rsa_private.pem", Some("k1")),
            "expired under a kept key",
        )
        .await;
    } else {
        // Not kept: the old key is gone at once.
        refused(&auth, &old, "token of a key no longer published").await;
    }
}

fn with_refresh(mut i: ExternalIssuer, keep: u64) -> ExternalIssuer {
    // An unknown kid may refetch at once (the rate limit has its own test).
    i.jwks_min_refresh_secs = 0;
    i.jwks_keep_removed_secs = keep;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_key_rotation() {
    let make = |url: &str, keep| with_refresh(auth0_issuer(url), keep);
    rotation(make, auth0_claims(), 0).await;
    rotation(make, auth0_claims(), 3600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_key_rotation() {
    let make = |url: &str, keep| with_refresh(cognito_issuer(url, "access"), keep);
    rotation(make, cognito_access_claims(), 0).await;
    rotation(make, cognito_access_claims(), 3600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_key_rotation() {
    let make = |url: &str, keep| {
        with_refresh(
            preset(json!({"preset": "supabase", "project_url": SUPABASE_PROJECT, "jwks_url": url})),
            keep,
        )
    };
    rotation(make, supabase_claims(), 0).await;
    rotation(make, supabase_claims(), 3600).await;
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn preset_configuration_errors_name_the_key() {
    let secret = "a project secret of at least 32 bytes!!";
    for (doc, key) in [
        (
            json!({"preset": "auth0", "audience": AUTH0_API}),
            "`tenant`",
        ),
        (
            json!({"preset": "auth0", "tenant": AUTH0_TENANT}),
            "`audience`",
        ),
        (
            json!({"preset": "auth0", "tenant": "https://my-domain.auth0.com", "audience": AUTH0_API}),
            "`tenant`",
        ),
        (
            json!({"preset": "auth0", "tenant": AUTH0_TENANT, "audience": AUTH0_API,
                   "issuer": "https://evil.example.com/"}),
            "`issuer`",
        ),
        (
            json!({"preset": "auth0", "tenant": AUTH0_TENANT, "audience": AUTH0_API,
                   "region": "us-west-2"}),
            "`region`",
        ),
        (
            json!({"preset": "cognito", "user_pool_id": COGNITO_POOL, "client_ids": [COGNITO_CLIENT]}),
            "`region`",
        ),
        (
            json!({"preset": "cognito", "region": COGNITO_REGION, "client_ids": [COGNITO_CLIENT]}),
            "`user_pool_id`",
        ),
        (
            json!({"preset": "cognito", "region": "eu-west-1", "user_pool_id": COGNITO_POOL,
                   "client_ids": [COGNITO_CLIENT]}),
            "`user_pool_id`",
        ),
        (
            json!({"preset": "cognito", "region": COGNITO_REGION, "user_pool_id": COGNITO_POOL}),
            "`client_ids`",
        ),
        (
            json!({"preset": "cognito", "region": COGNITO_REGION, "user_pool_id": COGNITO_POOL,
                   "client_ids": [COGNITO_CLIENT], "audience": "x"}),
            "`audience`",
        ),
        (
            json!({"preset": "cognito", "region": COGNITO_REGION, "user_pool_id": COGNITO_POOL,
                   "client_ids": [COGNITO_CLIENT], "jwt_secret": secret}),
            "`jwt_secret`",
        ),
        (json!({"preset": "supabase"}), "`project_url`"),
        (
            json!({"preset": "supabase", "project_url": "abcdefghijklmnopqrst.supabase.co"}),
            "`project_url`",
        ),
        (
            json!({"preset": "supabase", "project_url": SUPABASE_PROJECT, "jwt_secret": "short"}),
            "`jwt_secret`",
        ),
        (
            json!({"preset": "supabase", "project_url": SUPABASE_PROJECT, "jwt_secret": secret,
                   "jwks_url": "https://x/jwks.json"}),
            "`jwks_url`",
        ),
        (
            json!({"issuer": "https://idp.example.com", "audience": "a", "jwt_secret": secret,
                   "tenant": AUTH0_TENANT}),
            "`preset`",
        ),
    ] {
        let mut c = config();
        c.external_issuers = vec![serde_json::from_value(doc.clone()).unwrap()];
        let e = JwtAuth::new(c, memory_db()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{doc}");
        let msg = e.to_string();
        assert!(msg.contains(key), "{doc}: {msg}");
        assert!(!msg.contains(secret), "{msg}");
    }

    // An unknown preset, through the provider's configuration as the
    // runtime parses it: the message names the key and the known values.
    let e = truststream_core::parse_config::<JwtAuthConfig>(
        "jwt",
        json!({"jwt_secret": SECRET, "external_issuers": [{"preset": "okta", "tenant": "x"}]}),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("`preset`") && msg.contains("okta"), "{msg}");
    assert!(msg.contains("auth0, cognito, supabase"), "{msg}");

    // The same issuer twice (two Cognito entries for one pool) is refused:
    // only the first would ever be consulted.
    let mut c = config();
    c.external_issuers = vec![
        cognito_issuer("http://127.0.0.1:9/jwks.json", "access"),
        cognito_issuer("http://127.0.0.1:9/jwks.json", "id"),
    ];
    let e = JwtAuth::new(c, memory_db()).await.unwrap_err();
    assert!(e.to_string().contains("configured twice"), "{e}");
}

#[test]
fn preset_names_round_trip() {
    for name in Preset::NAMES {
        let p = Preset::from_name(name).unwrap();
        assert_eq!(p.name(), name);
        assert_eq!(serde_json::to_value(p).unwrap(), json!(name));
    }
    // Defaults read vendor-controlled claims only.
    let m = Preset::Supabase.default_mapping();
    assert_eq!(
        serde_json::to_value(m.roles).unwrap(),
        json!(["app_metadata", "roles"])
    );
    assert_eq!(
        serde_json::to_value(Preset::Cognito.default_mapping().roles).unwrap(),
        json!(["cognito:groups"])
    );
}

// ---------------------------------------------------------------- layer

/// The three presets side by side behind the require-auth layer
/// (`require_auth(auth, Some("read:reports"))`): each vendor's token is
/// admitted by what its claims map to, and refused alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_require_auth_layer_treats_every_preset_alike() {
    const PROJECT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "k1")]})).await;
    let auth: Arc<dyn Auth> = Arc::new(
        provider_with(vec![
            auth0_issuer(&server.url),
            cognito_issuer(&server.url, "access"),
            preset(json!({
                "preset": "supabase",
                "project_url": SUPABASE_PROJECT,
                "jwt_secret": PROJECT_SECRET,
            })),
        ])
        .await,
    );
    let app = axum::Router::new().route(
        "/reports",
        axum::routing::get(|| async { "ok" }).layer(
            truststream_auth_http::require_auth(auth.clone(), Some("read:reports")).unwrap(),
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reports", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let status = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let rs = |c: &Value| sign_rs256(c, "rsa_private.pem", Some("k1"));

    // Auth0: the RBAC permission admits, its absence is 403.
    let mut a0 = auth0_claims();
    a0["permissions"] = json!(["read:reports"]);
    assert_eq!(status(rs(&a0)).await, 200);
    assert_eq!(status(rs(&auth0_claims())).await, 403);
    // Cognito: the `member` group (read:*) admits; the id token is 401.
    assert_eq!(status(rs(&cognito_access_claims())).await, 200);
    assert_eq!(status(rs(&cognito_id_claims())).await, 401);
    let mut no_group = cognito_access_claims();
    no_group["cognito:groups"] = json!(["test-group-a"]);
    assert_eq!(status(rs(&no_group)).await, 403);
    // Supabase: app_metadata.roles admits; user_metadata does not.
    assert_eq!(
        status(sign_hs256(&supabase_claims(), PROJECT_SECRET.as_bytes())).await,
        200
    );
    let mut self_made = supabase_claims();
    self_made["app_metadata"] = json!({"provider": "email", "providers": ["email"]});
    self_made["user_metadata"] = json!({"roles": ["member", "admin"]});
    assert_eq!(
        status(sign_hs256(&self_made, PROJECT_SECRET.as_bytes())).await,
        403
    );
    // Expired tokens of each are 401.
    for (mut c, sign) in [
        (a0.clone(), true),
        (cognito_access_claims(), true),
        (supabase_claims(), false),
    ] {
        c["exp"] = json!(now() - 60);
        let t = if sign {
            rs(&c)
        } else {
            sign_hs256(&c, PROJECT_SECRET.as_bytes())
        };
        assert_eq!(status(t).await, 401);
    }
    // One fetch per JWKS issuer (each keeps its own key set; here both
    // point at one loopback server).
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

/// The provider built as the runtime builds it: the registry's `jwt`
/// factory with the configuration as JSON.
#[tokio::test]
async fn presets_build_through_the_registry() {
    let mut reg = truststream_core_auth::AuthRegistry::new("auth");
    truststream_auth_jwt::register(&mut reg);
    let cfg = json!({
        "jwt_secret": SECRET,
        "external_issuers": [
            {"preset": "auth0", "tenant": AUTH0_TENANT, "audience": AUTH0_API},
            {"preset": "cognito", "region": COGNITO_REGION, "user_pool_id": COGNITO_POOL,
             "client_ids": [COGNITO_CLIENT]},
        ],
    });
    let deps = || truststream_core_auth::AuthDeps {
        db: Some(memory_db()),
    };
    let auth = reg.build("jwt", cfg.clone(), deps()).await.unwrap();
    assert!(auth.capabilities().external_tokens);
    // A missing tenant names the key through the same path.
    let mut bad = cfg;
    bad["external_issuers"][0]
        .as_object_mut()
        .unwrap()
        .remove("tenant");
    let e = reg.build("jwt", bad, deps()).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("missing `tenant`"), "{e}");
}
