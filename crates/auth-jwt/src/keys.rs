//! The provider's own signing key, its verification key and its published
//! JWKS.

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use truststream_core_auth::{AuthResult, Error};

use crate::config::{Algorithm, JwtAuthConfig, MIN_SECRET_BYTES};

/// Everything needed to sign and verify this provider's access tokens.
pub(crate) struct OwnKeys {
    pub(crate) algorithm: Algorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    pub(crate) validation: Validation,
    pub(crate) header: Header,
    /// The public key as a JWK (asymmetric algorithms only).
    pub(crate) public_jwk: Option<Jwk>,
    /// Key material from which the refresh-token derivation key is made.
    pub(crate) material: Vec<u8>,
}

fn key_error(what: &str, e: jsonwebtoken::errors::Error) -> Error {
    // jsonwebtoken's key errors never contain key bytes.
    Error::invalid_input(format!("{what}: {e}"))
}

impl OwnKeys {
    pub(crate) fn from_config(cfg: &JwtAuthConfig) -> AuthResult<Self> {
        let alg = cfg.algorithm;
        let (encoding, decoding, public_jwk, material) = if alg.is_symmetric() {
            if cfg.private_key.is_some() {
                return Err(Error::invalid_input(format!(
                    "algorithm {alg:?} uses jwt_secret; remove private_key or pick an asymmetric algorithm"
                )));
            }
            let Some(secret) = cfg.jwt_secret.as_ref().filter(|s| !s.is_empty()) else {
                // Worded like serde's message so the runtime names the key
                // and the environment variable to set.
                return Err(Error::invalid_input(format!(
                    "missing field `jwt_secret` (required for {alg:?})"
                )));
            };
            if secret.expose().len() < MIN_SECRET_BYTES {
                return Err(Error::invalid_input(format!(
                    "jwt_secret must be at least {MIN_SECRET_BYTES} bytes"
                )));
            }
            let bytes = secret.expose().as_bytes();
            (
                EncodingKey::from_secret(bytes),
                DecodingKey::from_secret(bytes),
                None,
                bytes.to_vec(),
            )
        } else {
            if cfg.jwt_secret.is_some() {
                return Err(Error::invalid_input(format!(
                    "algorithm {alg:?} uses private_key; remove jwt_secret or use HS256"
                )));
            }
            let Some(pem) = cfg.private_key.as_ref().filter(|s| !s.is_empty()) else {
                return Err(Error::invalid_input(format!(
                    "missing field `private_key` (a PKCS#8 PEM key, required for {alg:?})"
                )));
            };
            let pem_bytes = pem.expose().as_bytes();
            let encoding = match alg {
                Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem_bytes),
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem_bytes),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem_bytes),
                _ => unreachable_symmetric(),
            }
            .map_err(|e| key_error("private_key is not a valid key for the algorithm", e))?;
            let mut jwk = public_jwk(&encoding, alg)?;
            let kid = cfg
                .key_id
                .clone()
                .unwrap_or_else(|| jwk.thumbprint(ThumbprintHash::SHA256));
            jwk.common.key_id = Some(kid);
            let decoding = DecodingKey::from_jwk(&jwk)
                .map_err(|e| key_error("the public key could not be derived", e))?;
            (encoding, decoding, Some(jwk), pem_bytes.to_vec())
        };

        let mut validation = Validation::new(alg.to_jwt());
        validation.algorithms = vec![alg.to_jwt()];
        validation.leeway = cfg.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[cfg.audience.as_str()]);
        validation.set_issuer(&[cfg.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);

        let mut header = Header::new(alg.to_jwt());
        header.kid = match &public_jwk {
            Some(j) => j.common.key_id.clone(),
            None => cfg.key_id.clone(),
        };
        Ok(OwnKeys {
            algorithm: alg,
            encoding,
            decoding,
            validation,
            header,
            public_jwk,
            material,
        })
    }

    /// The published key set: the public key for asymmetric algorithms,
    /// nothing for HMAC (a shared secret is never published).
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .public_jwk
                .iter()
                .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
                .cloned()
                .collect(),
        }
    }
}

fn unreachable_symmetric() -> Result<EncodingKey, jsonwebtoken::errors::Error> {
    Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into())
}

/// The public half of an asymmetric signing key as a JWK (`use: sig`, `alg`).
fn public_jwk(key: &EncodingKey, alg: Algorithm) -> AuthResult<Jwk> {
    let mut jwk = if alg == Algorithm::EdDSA {
        // jsonwebtoken cannot derive Ed25519 JWKs itself: take the public
        // key from the PKCS#8 document with ed25519-dalek.
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let sk = ed25519_dalek::SigningKey::from_pkcs8_der(key.inner())
            .map_err(|_| Error::invalid_input("private_key is not a valid Ed25519 PKCS#8 key"))?;
        use base64::Engine;
        Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sk.verifying_key().as_bytes()),
            }),
        }
    } else {
        Jwk::from_encoding_key(key, alg.to_jwt())
            .map_err(|e| key_error("the public key could not be derived", e))?
    };
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match alg {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Err(Error::internal("no public key for an HMAC algorithm"))
        }
    });
    Ok(jwk)
}

/// The protected header of `token`, checked for what this server must
/// refuse before any key is chosen: a `crit` member (RFC 7515 §4.1.11: the
/// token may only be accepted by a recipient that understands the named
/// extensions, and this server supports none, so any `crit` — even empty or
/// `null` — is refused). `jku`, `x5u`, `jwk` and `x5c` are parsed but never
/// used: keys come from the configuration only, and nothing is fetched from
/// a URL a token names.
pub(crate) fn checked_header(token: &str) -> AuthResult<Header> {
    use base64::Engine;
    let malformed = || Error::unauthenticated("invalid access token");
    let segment = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed())?;
    let members: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if members.contains_key("crit") {
        return Err(Error::unauthenticated(
            "access token requires header extensions (crit) this server does not support",
        ));
    }
    serde_json::from_value(Value::Object(members)).map_err(|_| malformed())
}

/// Refuses a `kid` that names no key of ours: a token may leave `kid` out,
/// but when it names one it must be `ours` (`None` for an HMAC secret
/// configured without `key_id`).
pub(crate) fn check_kid(header: &Header, ours: Option<&str>) -> AuthResult<()> {
    match header.kid.as_deref() {
        Some(kid) if Some(kid) != ours => Err(unknown_key()),
        _ => Ok(()),
    }
}

/// The answer to a token whose key is not configured.
pub(crate) fn unknown_key() -> Error {
    Error::unauthenticated("access token is signed by an unknown key")
}

/// Maps a jsonwebtoken verification error to `Unauthenticated`, naming
/// what was wrong without echoing the token.
pub(crate) fn verify_error(e: jsonwebtoken::errors::Error) -> Error {
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
