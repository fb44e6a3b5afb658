//! Named external issuers: what a preset (`auth0`, `cognito`, `supabase`)
//! derives from its few fields — issuer, key URL, audience rule, claim
//! mapping — and the checks of an issuer's configuration, generic or not.

use truststream_core_auth::{AuthResult, Error, Secret};

use crate::config::{
    Algorithm, ClaimMapping, ClaimPath, ExternalIssuer, Preset, TokenUse, MIN_SECRET_BYTES,
};

/// Where an issuer's verification keys come from.
pub(crate) enum KeyConfig {
    /// A shared HMAC secret.
    Secret(Secret),
    /// A JWKS document at this URL.
    Jwks(String),
}

/// An external issuer's settings in effect.
pub(crate) struct Resolved {
    /// The exact `iss`.
    pub(crate) issuer: String,
    /// Accepted `aud` values (one must match); empty when `aud` is not
    /// checked (Cognito access tokens have none).
    pub(crate) audiences: Vec<String>,
    /// Accepted `client_id` values (Cognito access tokens); empty when not
    /// checked.
    pub(crate) client_ids: Vec<String>,
    /// The `token_use` a token must carry (Cognito).
    pub(crate) token_use: Option<TokenUse>,
    pub(crate) key: KeyConfig,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) mapping: ClaimMapping,
}

impl Preset {
    /// The claim mapping a preset uses when `claim_mapping` is not set:
    ///
    /// - `auth0`: permissions from the RBAC `permissions` array and from
    ///   the `scope` string; no roles (Auth0 has no standard roles claim:
    ///   map a namespaced one such as `["https://example.com/roles"]`).
    /// - `cognito`: roles from `cognito:groups`, permissions from `scope`.
    /// - `supabase`: roles from `app_metadata.roles` (`app_metadata` is
    ///   writable by the service role only, unlike `user_metadata`).
    ///
    /// Only vendor-controlled claims are read; setting `claim_mapping`
    /// replaces these defaults entirely.
    pub fn default_mapping(self) -> ClaimMapping {
        let path = |keys: &[&str]| ClaimPath::keys(keys.iter().copied()).ok();
        match self {
            Preset::Auth0 => ClaimMapping {
                permissions: path(&["permissions"]),
                scopes: path(&["scope"]),
                ..ClaimMapping::default()
            },
            Preset::Cognito => ClaimMapping {
                roles: path(&["cognito:groups"]),
                scopes: path(&["scope"]),
                ..ClaimMapping::default()
            },
            Preset::Supabase => ClaimMapping {
                roles: path(&["app_metadata", "roles"]),
                ..ClaimMapping::default()
            },
        }
    }
}

/// The settings of `cfg` in effect, or `InvalidInput` naming the key that
/// is missing, misplaced or malformed. Messages never hold a secret.
pub(crate) fn resolve(cfg: &ExternalIssuer) -> AuthResult<Resolved> {
    let label = match cfg.preset {
        Some(p) => format!("external issuer (preset {})", p.name()),
        None => format!("external issuer {:?}", cfg.issuer),
    };
    let bad = |msg: String| Error::invalid_input(format!("{label}: {msg}"));
    // Keys of the other presets (or of any preset, for a generic issuer).
    let set: [(&str, bool, &[Preset]); 8] = [
        ("issuer", !cfg.issuer.is_empty(), &[]),
        (
            "audience",
            !cfg.audience.is_empty(),
            &[Preset::Auth0, Preset::Supabase],
        ),
        ("tenant", cfg.tenant.is_some(), &[Preset::Auth0]),
        ("region", cfg.region.is_some(), &[Preset::Cognito]),
        (
            "user_pool_id",
            cfg.user_pool_id.is_some(),
            &[Preset::Cognito],
        ),
        ("client_ids", !cfg.client_ids.is_empty(), &[Preset::Cognito]),
        ("token_use", cfg.token_use.is_some(), &[Preset::Cognito]),
        (
            "project_url",
            cfg.project_url.is_some(),
            &[Preset::Supabase],
        ),
    ];
    if let Some(preset) = cfg.preset {
        for (key, present, allowed) in set {
            if present && !allowed.contains(&preset) {
                return Err(bad(match key {
                    "issuer" => "`issuer` is derived from the preset's fields; remove it".into(),
                    _ => format!("`{key}` does not apply to preset {}", preset.name()),
                }));
            }
        }
    } else {
        for (key, present, allowed) in set {
            if present && !allowed.is_empty() && key != "audience" {
                return Err(bad(format!("`{key}` needs `preset`")));
            }
        }
    }
    let required = |v: &Option<String>, key: &str| -> AuthResult<String> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(bad(format!("missing `{key}`"))),
        }
    };
    let mut audiences = Vec::new();
    let mut client_ids = Vec::new();
    let mut token_use = None;
    let (issuer, derived_jwks, default_algs) = match cfg.preset {
        None => {
            if cfg.issuer.is_empty() || cfg.audience.is_empty() {
                return Err(Error::invalid_input(
                    "external issuer: `issuer` and `audience` must not be empty (or set `preset`)",
                ));
            }
            audiences.push(cfg.audience.clone());
            (cfg.issuer.clone(), None, None)
        }
        Some(Preset::Auth0) => {
            let tenant = required(&cfg.tenant, "tenant")?;
            if !is_host(&tenant) {
                return Err(bad(
                    "`tenant` must be the tenant's domain, such as example.us.auth0.com (no scheme, no path)".into(),
                ));
            }
            if cfg.audience.is_empty() {
                return Err(bad(
                    "missing `audience` (the API identifier the tokens are issued for)".into(),
                ));
            }
            audiences.push(cfg.audience.clone());
            let issuer = format!("https://{tenant}/");
            let jwks = format!("https://{tenant}/.well-known/jwks.json");
            (issuer, Some(jwks), Some(vec![Algorithm::RS256]))
        }
        Some(Preset::Cognito) => {
            let region = required(&cfg.region, "region")?;
            if region.len() > 32
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(bad(
                    "`region` must be an AWS region name such as eu-west-1".into()
                ));
            }
            let pool = required(&cfg.user_pool_id, "user_pool_id")?;
            let id_part = pool.strip_prefix(&format!("{region}_")).ok_or_else(|| {
                bad(format!(
                    "`user_pool_id` must be <region>_<id> with region {region}"
                ))
            })?;
            if id_part.is_empty()
                || id_part.len() > 64
                || !id_part.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(bad(
                    "`user_pool_id` must be <region>_<letters and digits>".into()
                ));
            }
            if cfg.client_ids.is_empty() {
                return Err(bad(
                    "missing `client_ids` (the app client ids whose tokens are accepted)".into(),
                ));
            }
            if cfg.client_ids.iter().any(|c| {
                c.is_empty() || c.len() > 128 || !c.chars().all(|c| c.is_ascii_alphanumeric())
            }) {
                return Err(bad(
                    "`client_ids` entries must be app client ids (letters and digits)".into(),
                ));
            }
            let usage = cfg.token_use.unwrap_or(TokenUse::Access);
            match usage {
                TokenUse::Access => client_ids.clone_from(&cfg.client_ids),
                TokenUse::Id => audiences.clone_from(&cfg.client_ids),
            }
            token_use = Some(usage);
            let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{pool}");
            let jwks = format!("{issuer}/.well-known/jwks.json");
            (issuer, Some(jwks), Some(vec![Algorithm::RS256]))
        }
        Some(Preset::Supabase) => {
            let url = required(&cfg.project_url, "project_url")?;
            let url = url.trim_end_matches('/');
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if !host.is_some_and(is_host) {
                return Err(bad(
                    "`project_url` must be the project's http(s) URL without a path, such as https://<ref>.supabase.co".into(),
                ));
            }
            audiences.push(if cfg.audience.is_empty() {
                "authenticated".to_string()
            } else {
                cfg.audience.clone()
            });
            let issuer = format!("{url}/auth/v1");
            let jwks = format!("{issuer}/.well-known/jwks.json");
            (issuer, Some(jwks), None)
        }
    };
    let key = match (&cfg.jwt_secret, &cfg.jwks_url, derived_jwks) {
        (Some(_), Some(_), _) => {
            return Err(bad("set only one of `jwt_secret` and `jwks_url`".into()));
        }
        (Some(_), None, _) if cfg.preset == Some(Preset::Cognito) => {
            return Err(bad(
                "Cognito signs with its published keys only: remove `jwt_secret`".into(),
            ));
        }
        (Some(s), None, _) => KeyConfig::Secret(s.clone()),
        (None, Some(url), _) => KeyConfig::Jwks(url.clone()),
        (None, None, Some(url)) => KeyConfig::Jwks(url),
        (None, None, None) => {
            return Err(bad("set exactly one of `jwt_secret` and `jwks_url`".into()));
        }
    };
    let algorithms = if !cfg.algorithms.is_empty() {
        cfg.algorithms.clone()
    } else if matches!(key, KeyConfig::Secret(_)) {
        vec![Algorithm::HS256]
    } else {
        default_algs.unwrap_or_else(|| vec![Algorithm::RS256, Algorithm::ES256])
    };
    match &key {
        KeyConfig::Secret(s) => {
            if s.expose().len() < MIN_SECRET_BYTES {
                return Err(bad(format!(
                    "`jwt_secret` must be at least {MIN_SECRET_BYTES} bytes"
                )));
            }
            if !algorithms.iter().all(|a| a.is_symmetric()) {
                return Err(bad("a `jwt_secret` verifies HS256/HS384/HS512 only".into()));
            }
        }
        KeyConfig::Jwks(url) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(bad("`jwks_url` must be an http(s) URL".into()));
            }
            if algorithms.iter().any(|a| a.is_symmetric()) {
                return Err(bad(
                    "keys from a JWKS URL verify asymmetric `algorithms` only".into(),
                ));
            }
        }
    }
    let mapping = match (&cfg.claim_mapping, cfg.preset) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => p.default_mapping(),
        (None, None) => ClaimMapping::default(),
    };
    mapping.validate(&issuer)?;
    Ok(Resolved {
        issuer,
        audiences,
        client_ids,
        token_use,
        key,
        algorithms,
        mapping,
    })
}

/// A host name with an optional port: dotted labels of letters, digits and
/// hyphens (no scheme, path, user or query).
fn is_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    port_ok
        && !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::is_host;

    #[test]
    fn hosts() {
        for ok in [
            "example.us.auth0.com",
            "login.example.com",
            "localhost:54321",
        ] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in [
            "",
            "https://example.auth0.com",
            "example.auth0.com/",
            "a@b.com",
            "exa mple.com",
            "example.com:",
            "example.com:99999",
            "-x.com",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
    }
}
