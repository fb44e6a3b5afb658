//! Argon2id password hashing off the async threads, with a dummy hash so
//! that an unknown email costs what a wrong password costs, behind one gate
//! that bounds how many hashes run at once and how many requests wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use truststream_core_auth::{AuthResult, Error, ErrorKind, Secret};

use crate::config::{Argon2Cost, PasswordHashing};

/// Counters of password work, for operators and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hashes: AtomicU64,
    pub(crate) verifications: AtomicU64,
    pub(crate) dummy_verifications: AtomicU64,
    /// Hashes running now.
    pub(crate) running: AtomicU64,
    /// Most hashes that ever ran at once.
    pub(crate) peak_running: AtomicU64,
    /// Requests answered `RateLimited` by the gate.
    pub(crate) refused: AtomicU64,
}

/// At most `max_concurrent` hashes at once (one semaphore permit each, held
/// until the hash is done even if the caller gave up), at most `max_queued`
/// requests waiting, each for at most `timeout`.
struct Gate {
    slots: Arc<Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
    timeout: Duration,
}

/// Leaves the queue when dropped (also when the waiting request is
/// cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A hash in progress: holds its slot (given back when dropped), and
/// counts itself out when dropped.
struct Running {
    counters: Arc<Counters>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.counters.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer beyond the gate's bounds. It says nothing about the account:
/// it depends on the load only, and comes before any password is checked.
fn busy() -> Error {
    Error::new(
        ErrorKind::RateLimited,
        "too many sign-ins and sign-ups in progress; try again shortly",
    )
}

pub(crate) struct Passwords {
    params: Params,
    /// A hash of a random password with the configured cost: verified when
    /// the email is unknown.
    dummy_hash: String,
    gate: Gate,
    pub(crate) counters: Arc<Counters>,
}

impl Passwords {
    pub(crate) fn new(cost: &Argon2Cost, limits: &PasswordHashing) -> AuthResult<Self> {
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
            gate: Gate {
                slots: Arc::new(Semaphore::new(limits.effective_max_concurrent())),
                max_queued: limits.max_queued,
                queued: AtomicUsize::new(0),
                timeout: Duration::from_millis(limits.queue_timeout_ms),
            },
            counters: Arc::new(Counters::default()),
        })
    }

    /// Requests waiting for a hashing slot now.
    pub(crate) fn waiting(&self) -> u64 {
        self.gate.queued.load(Ordering::SeqCst) as u64
    }

    /// A hashing slot: at once if one is free, else after waiting in the
    /// bounded queue; `RateLimited` when the queue is full or the wait
    /// exceeds the deadline.
    async fn slot(&self) -> AuthResult<OwnedSemaphorePermit> {
        let gate = &self.gate;
        if let Ok(p) = gate.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let ahead = gate.queued.fetch_add(1, Ordering::SeqCst);
        let _queued = Queued(&gate.queued);
        if ahead >= gate.max_queued {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(busy());
        }
        match tokio::time::timeout(gate.timeout, gate.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::internal("the password hashing gate is closed")),
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(busy())
            }
        }
    }

    /// Runs `work` on the blocking pool once the gate lets it; the slot is
    /// given back when `work` is done.
    async fn gated<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> AuthResult<T> {
        let slot = self.slot().await?;
        let counters = self.counters.clone();
        tokio::task::spawn_blocking(move || {
            let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.peak_running.fetch_max(now, Ordering::SeqCst);
            // Counted out and the slot given back when the work is done,
            // even if it panicked.
            let _running = Running {
                counters,
                _slot: slot,
            };
            work()
        })
        .await
        .map_err(|_| Error::internal("password hashing task failed"))
    }

    /// Hashes on the blocking pool, through the gate.
    pub(crate) async fn hash(&self, password: &Secret) -> AuthResult<String> {
        let params = self.params.clone();
        let pw = password.clone();
        let hashed = self
            .gated(move || hash_with(&params, pw.expose().as_bytes()))
            .await??;
        self.counters.hashes.fetch_add(1, Ordering::Relaxed);
        Ok(hashed)
    }

    /// Verifies against `stored`, or against the dummy hash when there is no
    /// user (the answer is then always `false`, after the same work).
    pub(crate) async fn verify(&self, password: &Secret, stored: Option<&str>) -> AuthResult<bool> {
        let (hash, real) = match stored {
            Some(h) => (h.to_string(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let pw = password.clone();
        let ok = self
            .gated(move || {
                let parsed = PasswordHash::new(&hash)
                    .map_err(|_| Error::internal("a stored password hash is malformed"))?;
                Ok::<bool, Error>(
                    Argon2::default()
                        .verify_password(pw.expose().as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        if real {
            self.counters.verifications.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters
                .dummy_verifications
                .fetch_add(1, Ordering::Relaxed);
        }
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
