//! Tokens of external identity providers: a shared secret (Supabase's JWT
//! secret) and a JWKS document served on loopback by the test itself.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::sync::atomic::Ordering;

use common::*;
use jsonwebtoken::{Algorithm as A, EncodingKey, Header};
use serde_json::{json, Value};
use truststream_auth_jwt::{ExternalIssuer, JwtAuth};
use truststream_core_auth::{Auth, ErrorKind, SignUp};

const IDP: &str = "https://idp.example.com/auth/v1";
const IDP_SECRET: &str = "the identity provider's own HS256 secret, 32+ bytes";

fn idp_claims(sub: &str) -> Value {
    json!({
        "iss": IDP,
        "aud": "authenticated",
        "sub": sub,
        "exp": now() + 600,
        "iat": now(),
        "role": "authenticated",
        "email": "ext@example.com",
        "session_id": "external-session",
    })
}

#[tokio::test]
async fn shared_secret_issuer_is_accepted_next_to_own_tokens() {
    let mut c = config();
    c.external_issuers = vec![ExternalIssuer::with_secret(
        IDP,
        "authenticated",
        IDP_SECRET,
    )];
    let auth = provider(c).await;
    assert!(auth.capabilities().external_tokens);

    let p = auth
        .validate_token(&sign_hs256(&idp_claims("ext-user"), IDP_SECRET.as_bytes()))
        .await
        .unwrap();
    assert_eq!(p.user_id, "ext-user");
    assert_eq!(p.email.as_deref(), Some("ext@example.com"));
    // No claim mapping: its `role` claim is no local role.
    assert!(p.roles.is_empty(), "{:?}", p.roles);
    // Users and sessions of an external provider are not kept here.
    assert_eq!(
        auth.get_user(&p).await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(
        auth.sign_out(&p).await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert!(auth.get_user_roles(&p).await.unwrap().is_empty());

    // Own tokens still work.
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    auth.validate_token(s.access_token.expose()).await.unwrap();

    // The IdP's secret cannot mint tokens with our issuer, nor ours with its.
    let mut forged = idp_claims("x");
    forged["iss"] = json!("truststream");
    assert!(auth
        .validate_token(&sign_hs256(&forged, IDP_SECRET.as_bytes()))
        .await
        .is_err());
    assert!(auth
        .validate_token(&sign_hs256(&idp_claims("x"), SECRET.as_bytes()))
        .await
        .is_err());
    // Wrong audience, unknown issuer.
    let mut wrong = idp_claims("x");
    wrong["aud"] = json!("service_role");
    assert!(auth
        .validate_token(&sign_hs256(&wrong, IDP_SECRET.as_bytes()))
        .await
        .is_err());
    let mut unknown = idp_claims("x");
    unknown["iss"] = json!("https://elsewhere.example.com");
    let e = auth
        .validate_token(&sign_hs256(&unknown, IDP_SECRET.as_bytes()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
}

/// The attack of issue 13: an external token that claims a local role name.
fn admin_claims(sub: &str) -> Value {
    let mut c = idp_claims(sub);
    c["app_metadata"] = json!({"roles": ["admin"], "provider": "email"});
    c["permissions"] = json!(["delete:agents", "*", "write:*"]);
    c["role"] = json!("admin");
    c
}

fn secret_issuer(mapping: Value) -> ExternalIssuer {
    serde_json::from_value(json!({
        "issuer": IDP,
        "audience": "authenticated",
        "jwt_secret": IDP_SECRET,
        "claim_mapping": mapping,
    }))
    .unwrap()
}

#[tokio::test]
async fn external_roles_grant_nothing_without_a_claim_mapping() {
    let mut c = config();
    c.external_issuers = vec![ExternalIssuer::with_secret(
        IDP,
        "authenticated",
        IDP_SECRET,
    )];
    let auth = provider(c).await;
    let p = auth
        .validate_token(&sign_hs256(&admin_claims("ext"), IDP_SECRET.as_bytes()))
        .await
        .unwrap();
    // Authenticated, but `app_metadata.roles: ["admin"]`, `role: admin` and
    // `permissions` of a foreign token mean nothing here.
    assert_eq!(p.user_id, "ext");
    assert!(p.roles.is_empty(), "{:?}", p.roles);
    assert!(auth.get_user_roles(&p).await.unwrap().is_empty());
    for perm in ["delete:agents", "read:agents", "write:agents"] {
        assert!(!auth.has_permission(&p, perm).await.unwrap(), "{perm}");
    }
}

#[tokio::test]
async fn a_claim_mapping_says_which_claims_are_roles_and_permissions() {
    // Roles by name from `app_metadata.roles`.
    let mut c = config();
    c.external_issuers = vec![secret_issuer(json!({"roles": "app_metadata.roles"}))];
    let auth = provider(c).await;
    let p = auth
        .validate_token(&sign_hs256(&admin_claims("ext"), IDP_SECRET.as_bytes()))
        .await
        .unwrap();
    assert_eq!(p.roles, ["admin"]);
    assert!(auth.has_permission(&p, "delete:agents").await.unwrap());

    // A role map is an allow-list: `admin` is not in it, `staff` becomes
    // the local `member`; a single string claim works too.
    let mut c = config();
    c.external_issuers = vec![secret_issuer(json!({
        "roles": "app_metadata.roles",
        "role_map": {"staff": "member"},
    }))];
    let auth = provider(c).await;
    let p = auth
        .validate_token(&sign_hs256(&admin_claims("ext"), IDP_SECRET.as_bytes()))
        .await
        .unwrap();
    assert!(p.roles.is_empty(), "{:?}", p.roles);
    assert!(!auth.has_permission(&p, "delete:agents").await.unwrap());
    let mut staff = idp_claims("ext");
    staff["app_metadata"] = json!({"roles": "staff"});
    let p = auth
        .validate_token(&sign_hs256(&staff, IDP_SECRET.as_bytes()))
        .await
        .unwrap();
    assert_eq!(p.roles, ["member"]);
    assert!(auth.has_permission(&p, "write:agents").await.unwrap());
    assert!(!auth.has_permission(&p, "delete:agents").await.unwrap());

    // Permissions from a namespaced claim (a key with dots, as a list of
    // keys): exact ones are granted, wildcards never.
    let mut c = config();
    c.external_issuers = vec![secret_issuer(json!({
        "permissions": ["https://example.com/claims", "permissions"],
    }))];
    let auth = provider(c).await;
    let mut t = idp_claims("ext");
    t["https://example.com/claims"] = json!({"permissions": ["delete:agents", "*", "write:*"]});
    let p = auth
        .validate_token(&sign_hs256(&t, IDP_SECRET.as_bytes()))
        .await
        .unwrap();
    assert!(p.roles.is_empty());
    assert!(auth.has_permission(&p, "delete:agents").await.unwrap());
    assert!(!auth.has_permission(&p, "delete:users").await.unwrap());
    assert!(!auth.has_permission(&p, "write:agents").await.unwrap());
}

async fn jwks_provider(url: &str, min_refresh_secs: u64) -> JwtAuth {
    let mut issuer = ExternalIssuer::with_jwks(IDP, "authenticated", url);
    issuer.jwks_min_refresh_secs = min_refresh_secs;
    let mut c = config();
    c.external_issuers = vec![issuer];
    JwtAuth::new(c, memory_db()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_fetched_cached_and_refreshed_on_unknown_kid_with_a_rate_limit() {
    let server = jwks_server(json!({"keys": [jwk("rsa_private.pem", "k1")]})).await;
    let auth = jwks_provider(&server.url, 1).await;

    // Fetched once, then served from the cache.
    for _ in 0..5 {
        let p = auth
            .validate_token(&sign_rs256(
                &idp_claims("u1"),
                "rsa_private.pem",
                Some("k1"),
            ))
            .await
            .unwrap();
        assert_eq!(p.user_id, "u1");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(auth.stats().jwks_fetches, 1);

    // A flood of unknown kids (signed beforehand, so the flood itself is
    // quick): no refetch within the minimum interval after the last fetch.
    let flood: Vec<String> = (0..50)
        .map(|i| {
            sign_rs256(
                &idp_claims("u"),
                "rsa2_private.pem",
                Some(&format!("bogus-{i}")),
            )
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let start = std::time::Instant::now();
    for t in &flood {
        let e = auth.validate_token(t).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    }
    // One refetch (the first unknown kid after the interval), then none.
    if start.elapsed() < std::time::Duration::from_millis(900) {
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    }

    // The IdP rotates its key: after the minimum interval a token with the
    // new kid triggers one fetch and validates.
    *server.doc.lock().unwrap() =
        json!({"keys": [jwk("rsa_private.pem", "k1"), jwk("rsa2_private.pem", "k2")]});
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = server.hits.load(Ordering::SeqCst);
    auth.validate_token(&sign_rs256(
        &idp_claims("u2"),
        "rsa2_private.pem",
        Some("k2"),
    ))
    .await
    .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), before + 1);

    // A valid kid with the other key's signature is still refused.
    let e = auth
        .validate_token(&sign_rs256(
            &idp_claims("u"),
            "rsa2_private.pem",
            Some("k1"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_keys_in_a_jwks_are_ignored() {
    // A JWKS that (wrongly) lists an HMAC key: a token signed with it must
    // not validate, whatever its header says.
    let oct = json!({"kty": "oct", "kid": "sym", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"});
    let server = jwks_server(json!({"keys": [oct, jwk("rsa_private.pem", "k1")]})).await;
    let auth = jwks_provider(&server.url, 30).await;
    let mut h = Header::new(A::HS256);
    h.kid = Some("sym".into());
    let t = jsonwebtoken::encode(
        &h,
        &idp_claims("u"),
        &EncodingKey::from_secret(b"secret-secret-secret-secret-secret"),
    )
    .unwrap();
    assert_eq!(
        auth.validate_token(&t).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
    // The RSA key of the same document works.
    auth.validate_token(&sign_rs256(&idp_claims("u"), "rsa_private.pem", Some("k1")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_is_unavailable_not_unauthenticated() {
    // Bind and drop a listener: nothing listens on that port any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let auth = jwks_provider(&format!("http://{addr}/jwks.json"), 30).await;
    let e = auth
        .validate_token(&sign_rs256(&idp_claims("u"), "rsa_private.pem", Some("k1")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    // Within the minimum refetch interval the next request fetches nothing
    // and is still Unavailable (not an unknown key).
    let e = auth
        .validate_token(&sign_rs256(&idp_claims("u"), "rsa_private.pem", Some("k1")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(auth.stats().jwks_fetches, 1);
}

#[tokio::test]
async fn external_issuer_configuration_is_checked() {
    for bad in [
        json!({"issuer": IDP, "audience": "a"}),
        json!({"issuer": IDP, "audience": "a", "jwt_secret": IDP_SECRET, "jwks_url": "https://x/jwks.json"}),
        json!({"issuer": IDP, "audience": "a", "jwt_secret": "short"}),
        json!({"issuer": IDP, "audience": "a", "jwt_secret": IDP_SECRET, "algorithms": ["RS256"]}),
        json!({"issuer": IDP, "audience": "a", "jwks_url": "https://x/jwks.json", "algorithms": ["HS256"]}),
        json!({"issuer": IDP, "audience": "a", "jwks_url": "file:///etc/passwd"}),
        json!({"issuer": "truststream", "audience": "a", "jwt_secret": IDP_SECRET}),
        json!({"issuer": IDP, "audience": "a", "jwt_secret": IDP_SECRET,
               "claim_mapping": {"role_map": {"admin": "admin"}}}),
        json!({"issuer": IDP, "audience": "a", "jwt_secret": IDP_SECRET,
               "claim_mapping": {"roles": "r", "role_map": {"admin": "not a role!"}}}),
    ] {
        let mut c = config();
        c.external_issuers = vec![serde_json::from_value(bad.clone()).unwrap()];
        let e = JwtAuth::new(c, memory_db()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(!e.to_string().contains(IDP_SECRET), "{e}");
    }
    // Claim paths are checked when the configuration is read.
    for bad in [json!(""), json!("a..b"), json!([]), json!(["a", ""])] {
        let doc = json!({"issuer": IDP, "audience": "a", "jwt_secret": IDP_SECRET,
                         "claim_mapping": {"roles": bad}});
        assert!(
            serde_json::from_value::<ExternalIssuer>(doc).is_err(),
            "{bad}"
        );
    }
}
