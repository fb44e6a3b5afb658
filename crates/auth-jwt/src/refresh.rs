//! Opaque refresh tokens: 32 random bytes, base64url. Only their SHA-256
//! is stored.
//!
//! The token that replaces one on rotation (its child) is derived from it
//! with HMAC-SHA-256 under a key only the server holds. Two things follow:
//! the child's id (its hash) is known before it is stored, so two rotations
//! of one token collide on a primary key and exactly one commits; and a
//! request that presents the parent again within the reuse interval (a
//! second tab, a lost response) can be answered with the very same current
//! token, although no token is stored in the clear.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use truststream_core_auth::{AuthResult, Error};

/// Length of a token in characters (32 bytes, base64url without padding).
pub(crate) const TOKEN_LEN: usize = 43;

/// The key children are derived under.
pub(crate) struct RefreshKeys {
    derive_key: [u8; 32],
}

impl RefreshKeys {
    /// Derives the key from the provider's signing key material, so every
    /// instance sharing a configuration derives the same children.
    pub(crate) fn from_material(material: &[u8]) -> AuthResult<Self> {
        let mut mac = hmac_with(material)?;
        mac.update(b"truststream-auth-jwt/refresh-token-derivation/v1");
        Ok(RefreshKeys {
            derive_key: mac.finalize().into_bytes().into(),
        })
    }

    /// The child of `token`.
    pub(crate) fn child(&self, token: &str) -> AuthResult<String> {
        let mut mac = hmac_with(&self.derive_key)?;
        mac.update(b"child:");
        mac.update(token.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

fn hmac_with(key: &[u8]) -> AuthResult<Hmac<Sha256>> {
    // HMAC takes keys of any length; the error exists for other MACs.
    <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| Error::internal("HMAC key rejected"))
}

/// A fresh random token.
pub(crate) fn generate() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// The stored id of a token: hex SHA-256.
pub(crate) fn hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Lower-case hex SHA-256 of `bytes`, written digit by digit from a table
/// into the result (`hex::encode` collects an iterator of `char`s, about
/// 2,000 instructions a call; this is a few hundred).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(Sha256::digest(bytes)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII digits and letters were written.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Whether `token` has the shape of a token (checked before any lookup).
pub(crate) fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_hex_encode() {
        for input in ["", "a", "a token", &"x".repeat(1000)] {
            assert_eq!(
                sha256_hex(input.as_bytes()),
                hex::encode(Sha256::digest(input.as_bytes()))
            );
        }
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_random_well_formed_and_children_deterministic() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &a[..42])));
        let k = RefreshKeys::from_material(b"secret material").unwrap();
        let child = k.child(&a).unwrap();
        assert_eq!(child, k.child(&a).unwrap());
        assert_ne!(child, k.child(&b).unwrap());
        assert!(well_formed(&child));
        let other = RefreshKeys::from_material(b"other material").unwrap();
        assert_ne!(child, other.child(&a).unwrap());
        assert_eq!(hash(&a).len(), 64);
    }
}
