//! The anon and service-role API keys, and the server's signing secret.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use truststream_core::{Error, Secret};

use crate::config::ServeConfig;

/// The file under `data_dir` that keeps generated keys.
pub const KEYS_FILE: &str = "serve-keys.json";

/// The two API keys clients send (`apikey` header, and as bearer token
/// when no user is signed in) and the secret the server signs its own
/// tokens with (storage signed URLs; the embedded auth provider's tokens
/// when no auth provider is configured).
///
/// Keys are JWT-shaped (`{"iss": "truststream", "role": "anon"}` signed
/// HS256), as Supabase's legacy keys are, so clients that decode them work;
/// the server recognizes them by comparing the whole key, never by
/// trusting its claims.
#[derive(Clone)]
pub struct ApiKeys {
    anon: Secret,
    service_role: Secret,
    secret: Secret,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeys(<redacted>)")
    }
}

#[derive(Serialize, Deserialize)]
struct KeysFile {
    anon_key: String,
    service_role_key: String,
    secret: String,
}

/// Which key a presented string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The anon (publishable) key.
    Anon,
    /// The service-role (secret) key.
    ServiceRole,
}

impl ApiKeys {
    /// Fixed keys (tests, or keys taken from configuration).
    pub fn new(anon: Secret, service_role: Secret, secret: Secret) -> Result<Self, Error> {
        if anon.is_empty() || service_role.is_empty() || secret.expose().len() < 32 {
            return Err(Error::invalid_input(
                "serve keys: the anon and service-role keys must be set and the secret at least 32 bytes",
            ));
        }
        if anon.expose() == service_role.expose() {
            return Err(Error::invalid_input(
                "serve keys: the anon key and the service-role key must differ",
            ));
        }
        Ok(ApiKeys {
            anon,
            service_role,
            secret,
        })
    }

    /// Fresh random keys, kept nowhere (tests).
    pub fn generate() -> Self {
        let secret = Secret::new(random_secret());
        let signing = derive(&secret, KEY_SIGNING_LABEL);
        ApiKeys {
            anon: Secret::new(sign_key(&signing, "anon")),
            service_role: Secret::new(sign_key(&signing, "service_role")),
            secret,
        }
    }

    /// The keys of `config`: those it names, else the ones kept in
    /// `<data_dir>/serve-keys.json`, generated (and written with mode 0600)
    /// on first start.
    pub fn load_or_generate(config: &ServeConfig) -> Result<Self, Error> {
        let path = PathBuf::from(&config.data_dir).join(KEYS_FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: KeysFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::invalid_input(format!(
                        "serve keys: {} is not a keys file ({e}); remove it to generate new keys",
                        path.display()
                    ))
                })?;
                ApiKeys::new(
                    Secret::new(f.anon_key),
                    Secret::new(f.service_role_key),
                    Secret::new(f.secret),
                )?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = ApiKeys::generate();
                write_keys(&path, &keys)?;
                keys
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "serve keys: cannot read {}: {e}",
                    path.display()
                ))
                .with_source(e))
            }
        };
        ApiKeys::new(
            config.anon_key.clone().unwrap_or(stored.anon),
            config
                .service_role_key
                .clone()
                .unwrap_or(stored.service_role),
            stored.secret,
        )
    }

    /// The anon key.
    pub fn anon(&self) -> &str {
        self.anon.expose()
    }

    /// The service-role key.
    pub fn service_role(&self) -> &str {
        self.service_role.expose()
    }

    /// A secret of its own for one use, derived from the server's secret
    /// (HMAC-SHA256 of `label`, base64): each use (the API keys, storage's
    /// signed URLs, the embedded auth provider's access tokens) signs with a
    /// different key, so a token of one can never pass as another's.
    pub fn derived_secret(&self, label: &str) -> Secret {
        Secret::new(STANDARD.encode(self.derived_key(label)))
    }

    /// [`ApiKeys::derived_secret`] as raw key bytes.
    pub(crate) fn derived_key(&self, label: &str) -> DerivedKey {
        derive(&self.secret, label)
    }

    /// Which key `presented` is, compared in constant time.
    pub fn role_of(&self, presented: &str) -> Option<KeyRole> {
        if constant_time_eq(presented.as_bytes(), self.anon.expose().as_bytes()) {
            Some(KeyRole::Anon)
        } else if constant_time_eq(presented.as_bytes(), self.service_role.expose().as_bytes()) {
            Some(KeyRole::ServiceRole)
        } else {
            None
        }
    }
}

/// Equality that takes the same time for every byte position of a
/// difference (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A 32-byte key derived from the server secret.
pub(crate) type DerivedKey = [u8; 32];

/// What the API keys are signed with (derived from the server secret).
const KEY_SIGNING_LABEL: &str = "truststream serve: API keys v1";

/// HMAC-SHA256 of `label` under `secret`.
fn derive(secret: &Secret, label: &str) -> DerivedKey {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A compact HS256 JWT of `claims` signed with `key`.
pub(crate) fn hs256_jwt(key: &[u8], claims: &impl Serialize) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// An API key: `{"iss": "truststream", "role": role, "iat", "exp"}` (ten
/// years) signed with `key`.
fn sign_key(key: &[u8], role: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "truststream",
        "role": role,
        "iat": now,
        "exp": now + 10 * 365 * 24 * 3600,
    });
    hs256_jwt(key, &claims)
}

fn write_keys(path: &Path, keys: &ApiKeys) -> Result<(), Error> {
    use std::io::Write as _;
    let io = |e: std::io::Error| {
        Error::unavailable(format!("serve keys: cannot write {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let body = serde_json::to_vec_pretty(&KeysFile {
        anon_key: keys.anon.expose().into(),
        service_role_key: keys.service_role.expose().into(),
        secret: keys.secret.expose().into(),
    })
    .map_err(|e| Error::internal(format!("serve keys: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    // A concurrent first start may have written keys meanwhile: keep theirs.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_and_recognized() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig {
            data_dir: dir.path().to_string_lossy().into(),
            ..ServeConfig::default()
        };
        let a = ApiKeys::load_or_generate(&config).unwrap();
        let b = ApiKeys::load_or_generate(&config).unwrap();
        assert_eq!(a.anon(), b.anon());
        assert_eq!(a.service_role(), b.service_role());
        assert_eq!(a.role_of(a.anon()), Some(KeyRole::Anon));
        assert_eq!(a.role_of(a.service_role()), Some(KeyRole::ServiceRole));
        assert_eq!(a.role_of("nope"), None);
        assert_eq!(a.anon().split('.').count(), 3);
        // Each use signs with a key of its own, none of them the secret.
        let (x, y) = (a.derived_secret("one"), a.derived_secret("two"));
        assert_ne!(x.expose(), y.expose());
        assert_ne!(x.expose(), a.secret.expose());
        assert_eq!(x.expose(), b.derived_secret("one").expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEYS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "keys file readable by others");
        }
    }
}
