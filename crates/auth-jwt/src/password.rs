//! Argon2id password hashing off the async threads, with a dummy hash so
//! that an unknown email costs what a wrong password costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params, Version};
use truststream_core_auth::{AuthResult, Error, Secret};

use crate::config::Argon2Cost;

/// Counters of password work, for operators and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hashes: AtomicU64,
    pub(crate) verifications: AtomicU64,
    pub(crate) dummy_verifications: AtomicU64,
}

pub(crate) struct Passwords {
    params: Params,
    /// A hash of a random password with the configured cost: verified when
    /// the email is unknown.
    dummy_hash: String,
    pub(crate) counters: Arc<Counters>,
}

impl Passwords {
    pub(crate) fn new(cost: &Argon2Cost) -> AuthResult<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| Error::invalid_input(format!("invalid argon2 cost: {e}")))?;
        let random = {
            use argon2::password_hash::rand_core::RngCore;
            let mut b = [0u8; 32];
            OsRng.fill_bytes(&mut b);
            hex::encode(b)
        };
        let dummy_hash = hash_with(&params, random.as_bytes())?;
        Ok(Passwords {
            params,
            dummy_hash,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Hashes on the blocking pool.
    pub(crate) async fn hash(&self, password: &Secret) -> AuthResult<String> {
        let params = self.params.clone();
        let pw = password.clone();
        self.counters.hashes.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || hash_with(&params, pw.expose().as_bytes()))
            .await
            .map_err(|_| Error::internal("password hashing task failed"))?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no
    /// user (the answer is then always `false`, after the same work).
    pub(crate) async fn verify(&self, password: &Secret, stored: Option<&str>) -> AuthResult<bool> {
        let (hash, real) = match stored {
            Some(h) => (h.to_string(), true),
            None => (self.dummy_hash.clone(), false),
        };
        if real {
            self.counters.verifications.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters
                .dummy_verifications
                .fetch_add(1, Ordering::Relaxed);
        }
        let pw = password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|_| Error::internal("a stored password hash is malformed"))?;
            Ok::<bool, Error>(
                Argon2::default()
                    .verify_password(pw.expose().as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|_| Error::internal("password verification task failed"))??;
        Ok(ok && real)
    }
}

fn hash_with(params: &Params, password: &[u8]) -> AuthResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
}
