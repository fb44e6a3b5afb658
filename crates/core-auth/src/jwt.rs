//! The process-wide jsonwebtoken crypto provider (feature `jsonwebtoken`).
//!
//! jsonwebtoken 10 picks its crypto backend from its cargo features. When a
//! build turns on both `aws_lc_rs` and `rust_crypto` (feature unification:
//! any crate in the graph may ask for the other one), or neither, it cannot
//! choose and panics on the first signature unless a provider was installed
//! for the process. The auth providers call [`ensure_crypto_provider`] when
//! they are built, before any token is signed or verified, so that case is
//! an error at construction instead of a panic inside a request.

use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

use truststream_core::Error;

/// Installs jsonwebtoken's aws-lc provider for the process, unless one is
/// installed already, and checks that the provider in force signs and
/// verifies a token.
///
/// Idempotent and cheap after the first call (the outcome is kept). A
/// provider the application installed earlier (for example jsonwebtoken's
/// `rust_crypto` one) stays in force. When the provider in force cannot sign
/// or verify (jsonwebtoken fell back to its panicking placeholder because
/// the first use came before this call in a build with both backends), the
/// answer is an [`ErrorKind::Internal`](truststream_core::ErrorKind::Internal)
/// error that says so; the panic is caught, never passed to the caller.
///
/// ```
/// truststream_core_auth::ensure_crypto_provider().unwrap();
/// // A second call gives the same answer without doing the work again.
/// truststream_core_auth::ensure_crypto_provider().unwrap();
/// ```
pub fn ensure_crypto_provider() -> Result<(), Error> {
    static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();
    OUTCOME
        .get_or_init(|| {
            // `Err` means a provider is in force already (installed by the
            // application, or fixed by an earlier first use): keep it, and
            // let the probe tell whether it works.
            let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
            probe()
        })
        .clone()
        .map_err(Error::internal)
}

/// Signs and verifies one HS256 token with the provider in force.
fn probe() -> Result<(), String> {
    let run = || -> Result<(), jsonwebtoken::errors::Error> {
        let secret = b"truststream crypto provider probe";
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let claims = serde_json::json!({ "sub": "probe" });
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret),
            &validation,
        )?;
        Ok(())
    };
    // The closure only reads constants: nothing it could leave half-changed.
    match panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "the jsonwebtoken crypto provider cannot sign and verify a token: {e}"
        )),
        Err(_) => Err(
            "no usable jsonwebtoken crypto provider: the one in force panicked on a \
             test signature (as jsonwebtoken's placeholder does when a build enables \
             both backends and a token was handled before any provider was installed); \
             call truststream_core_auth::ensure_crypto_provider, or install a working \
             jsonwebtoken CryptoProvider, before the first token"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn installs_and_probes_once() {
        assert!(super::ensure_crypto_provider().is_ok());
        assert!(super::ensure_crypto_provider().is_ok());
    }
}
