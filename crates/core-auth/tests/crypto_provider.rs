//! `ensure_crypto_provider` when the provider in force cannot sign: an
//! `Internal` error, not a panic. Its own test binary (one process), since
//! a jsonwebtoken provider is installed once per process.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils};
use truststream_core_auth::{ensure_crypto_provider, ErrorKind};

/// What jsonwebtoken falls back to when a build enables both backends and
/// a token comes before any provider is installed: every factory panics.
static BROKEN: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| panic!("no crypto provider (test)"),
    verifier_factory: |_, _| panic!("no crypto provider (test)"),
    jwk_utils: JwkUtils::new_unimplemented(),
};

#[test]
fn a_panicking_provider_is_an_internal_error_every_time() {
    assert!(BROKEN.install_default().is_ok());
    for _ in 0..2 {
        let e = ensure_crypto_provider().expect_err("the probe must fail");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.to_string().contains("crypto provider"), "{e}");
    }
}
