//! What the `jwt_backends` bench measures: one token validation
//! (`jsonwebtoken::decode`, signature and claims) per algorithm, with the
//! crypto backend a process installed.
//!
//! The keys are auth-jwt's test keys and the [`Validation`] is the one
//! auth-jwt builds for its own tokens (pinned algorithm, required
//! exp/aud/iss/sub, nbf, leeway), the verification key made from the
//! public JWK as auth-jwt makes it: the bench measures what
//! `validate_token` spends in jsonwebtoken.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};

/// The algorithms measured, in table order.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

const SECRET: &[u8] = b"benchmark secret, at least 32 bytes long";
const RSA_PEM: &str = include_str!("../../../crates/auth-jwt/tests/keys/rsa_private.pem");
const EC_PEM: &str = include_str!("../../../crates/auth-jwt/tests/keys/ec_private.pem");
const ED_PEM: &str = include_str!("../../../crates/auth-jwt/tests/keys/ed_private.pem");

/// One of jsonwebtoken's crypto backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `aws_lc_rs`: the aws-lc C library (the workspace's backend).
    AwsLc,
    /// `rust_crypto`: the RustCrypto crates (needs this package's
    /// `rust_crypto` feature).
    RustCrypto,
}

impl Backend {
    /// The backends this build can measure.
    pub fn available() -> Vec<Backend> {
        let mut v = vec![Backend::AwsLc];
        if cfg!(feature = "rust_crypto") {
            v.push(Backend::RustCrypto);
        }
        v
    }

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Backend::AwsLc => "aws_lc_rs",
            Backend::RustCrypto => "rust_crypto",
        }
    }

    /// The backend called `name`, if this build has it.
    pub fn parse(name: &str) -> Option<Backend> {
        Backend::available().into_iter().find(|b| b.name() == name)
    }

    /// Installs this backend as the process's jsonwebtoken provider. Once
    /// per process: `Err` when one is in force already.
    pub fn install(self) -> Result<(), String> {
        let provider = match self {
            Backend::AwsLc => &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
            #[cfg(feature = "rust_crypto")]
            Backend::RustCrypto => &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
            #[cfg(not(feature = "rust_crypto"))]
            Backend::RustCrypto => return Err("built without the rust_crypto feature".to_string()),
        };
        provider
            .install_default()
            .map_err(|_| "a jsonwebtoken crypto provider is installed already".to_string())
    }
}

/// The algorithm called `name` (`HS256`, `RS256`, `ES256`, `EdDSA`).
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    ALGORITHMS
        .into_iter()
        .find(|a| format!("{a:?}").eq_ignore_ascii_case(name))
}

/// A signed token and what validates it.
pub struct Fixture {
    /// The token, as auth-jwt issues it (same claims).
    pub token: String,
    key: DecodingKey,
    validation: Validation,
}

impl Fixture {
    /// Signs a token with `alg` using the provider in force (install one
    /// first) and builds its verification key and validation.
    pub fn new(alg: Algorithm) -> Result<Fixture, jsonwebtoken::errors::Error> {
        let (encoding, key) = match alg {
            Algorithm::RS256 => public_half(EncodingKey::from_rsa_pem(RSA_PEM.as_bytes())?, alg)?,
            Algorithm::ES256 => public_half(EncodingKey::from_ec_pem(EC_PEM.as_bytes())?, alg)?,
            Algorithm::EdDSA => {
                // jsonwebtoken cannot derive an Ed25519 public key: take it
                // from the PKCS#8 document, as auth-jwt does.
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let encoding = EncodingKey::from_ed_pem(ED_PEM.as_bytes())?;
                let sk = ed25519_dalek::SigningKey::from_pkcs8_der(encoding.inner())
                    .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
                let key = DecodingKey::from_ed_der(sk.verifying_key().as_bytes());
                (encoding, key)
            }
            _ => (
                EncodingKey::from_secret(SECRET),
                DecodingKey::from_secret(SECRET),
            ),
        };
        // Far from expiry: the bench's tokens never lapse mid-run.
        let now = 1_700_000_000_u64;
        let claims = json!({
            "sub": "6f0c1c1e-5b1a-4c55-9f1e-9a3e5f1d2c3b",
            "aud": "authenticated",
            "iss": "truststream",
            "iat": now,
            "nbf": now,
            "exp": 4_000_000_000_u64,
            "email": "bench@example.com",
            "role": "authenticated",
            "roles": ["user"],
            "session_id": "0b9f2a64-8c1d-4f3e-a2b7-5d6e7f8a9b0c",
        });
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &encoding)?;
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_audience(&["authenticated"]);
        validation.set_issuer(&["truststream"]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        Ok(Fixture {
            token,
            key,
            validation,
        })
    }

    /// Validates `token` (signature and claims), as `validate_token`'s
    /// jsonwebtoken part does.
    pub fn validate(&self, token: &str) -> Result<Map<String, Value>, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map(|d| d.claims)
    }
}

/// The verification key from the public JWK, as auth-jwt makes its own.
fn public_half(
    encoding: EncodingKey,
    alg: Algorithm,
) -> Result<(EncodingKey, DecodingKey), jsonwebtoken::errors::Error> {
    let jwk = Jwk::from_encoding_key(&encoding, alg)?;
    let key = DecodingKey::from_jwk(&jwk)?;
    Ok((encoding, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One process, one provider: aws-lc, which every build has. Each
    /// algorithm's token validates, and a token with another signature
    /// does not (the bench would otherwise time an error path).
    #[test]
    fn every_fixture_validates_and_rejects_a_forged_signature() {
        // Another test of this binary may have installed it already.
        let _ = Backend::AwsLc.install();
        for alg in ALGORITHMS {
            let f = Fixture::new(alg).expect("fixture");
            let claims = f.validate(&f.token).expect("valid token");
            assert_eq!(claims["iss"], "truststream", "{alg:?}");
            let (head, sig) = f.token.rsplit_once('.').expect("three parts");
            let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
            let forged = format!("{head}.{flipped}{}", &sig[1..]);
            assert!(f.validate(&forged).is_err(), "{alg:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for b in Backend::available() {
            assert_eq!(Backend::parse(b.name()), Some(b));
        }
        for a in ALGORITHMS {
            assert_eq!(parse_algorithm(&format!("{a:?}")), Some(a));
        }
        assert_eq!(parse_algorithm("none"), None);
    }
}
