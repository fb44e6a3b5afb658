//! `SupabaseDbConfig`: the `[database]` section for `type = "supabase"`.

use serde::{Deserialize, Serialize};
use truststream_core::Secret;
use truststream_core_db::{ident, DbResult, Error};

/// A Supabase project's default "Max rows" (PostgREST `db-max-rows`), the
/// default of [`SupabaseDbConfig::max_rows`].
pub const DEFAULT_MAX_ROWS: u64 = 1000;

/// Which path serves the calls both paths can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// The REST API (`/rest/v1`) for CRUD and queries; the SQL backend, when
    /// attached, only for what REST cannot do (the default).
    #[default]
    Rest,
    /// Every call goes to the SQL backend (the runtime attaches one built
    /// from `pooler_url`).
    Sql,
}

/// How `bytes` values travel over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BytesFormat {
    /// PostgreSQL's `bytea` text form, `\x` and hex: what PostgREST over
    /// PostgreSQL (Supabase) takes and answers (the default).
    #[default]
    Postgres,
    /// Standard base64 (core-db's own form): what `truststream serve`
    /// takes and answers.
    Base64,
}

/// Configuration of the Supabase database provider.
///
/// ```
/// use truststream_db_supabase::SupabaseDbConfig;
/// let cfg: SupabaseDbConfig = serde_json::from_value(serde_json::json!({
///     "url": "https://abcd.supabase.co",
///     "service_role_key": "eyJhbGciOi...",
///     "pooler_url": "postgres://postgres.abcd:pw@aws-0-eu.pooler.supabase.com:6543/postgres",
/// }))
/// .unwrap();
/// cfg.validate().unwrap();
/// let shown = format!("{cfg:?}");
/// assert!(!shown.contains("eyJ") && !shown.contains(":pw@"), "secrets are redacted");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupabaseDbConfig {
    /// The project URL (`https://<ref>.supabase.co`, or a `truststream
    /// serve` address); `/rest/v1` is appended.
    pub url: String,
    /// The path of the REST API under `url` (default `/rest/v1`, as on
    /// Supabase and `truststream serve`; `""` for a bare PostgREST server).
    pub rest_path: String,
    /// The anon (publishable) key: calls run as `anon` unless a scoped
    /// handle carries a user's token. Set this or `service_role_key`.
    pub anon_key: Option<Secret>,
    /// The service-role (secret) key: calls bypass row-level security.
    pub service_role_key: Option<Secret>,
    /// The schema tables live in (`Accept-Profile` / `Content-Profile`);
    /// `None` or `public`: the default schema.
    pub schema: Option<String>,
    /// `rest` (default) or `sql`.
    pub prefer: Prefer,
    /// The Postgres pooler (Supavisor) URL. This crate does not connect to
    /// it: the runtime builds the SQL backend from it and attaches it with
    /// [`crate::SupabaseDb::with_sql`]. Raw SQL, transactions and schema
    /// changes need it.
    pub pooler_url: Option<Secret>,
    /// How `bytes` columns travel when the schema is known (from the SQL
    /// backend): `postgres` (default) or `base64` (`truststream serve`).
    pub bytes_format: BytesFormat,
    /// The server's row cap (PostgREST `db-max-rows`; a Supabase project's
    /// "Max rows"). Default `Some(1000)`, Supabase's default: reads that
    /// may return more are made in pages of this size (ordered by the
    /// query's keys then the primary key, each page after the last row
    /// seen), so none is silently cut. Set the project's value when it was
    /// changed; `0` (or `None`) turns paging off, only right for a server
    /// without a cap (`truststream serve`).
    pub max_rows: Option<u64>,
    /// Longest a REST call may take, connect to last byte (default 30000 ms).
    pub request_timeout_ms: u64,
    /// Longest a TCP (and TLS) connect may take (default 5000 ms).
    pub connect_timeout_ms: u64,
    /// Idle HTTP connections kept per host (default 32).
    pub pool_max_idle_per_host: usize,
    /// Idle HTTP connections are closed after this long (default 90000 ms).
    pub pool_idle_timeout_ms: u64,
    /// Changes buffered per change-feed subscriber before it reports lost
    /// changes (default 1024).
    pub change_feed_capacity: usize,
}

impl Default for SupabaseDbConfig {
    fn default() -> Self {
        SupabaseDbConfig {
            url: String::new(),
            rest_path: "/rest/v1".to_string(),
            anon_key: None,
            service_role_key: None,
            schema: None,
            prefer: Prefer::Rest,
            pooler_url: None,
            bytes_format: BytesFormat::Postgres,
            max_rows: Some(DEFAULT_MAX_ROWS),
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            pool_max_idle_per_host: 32,
            pool_idle_timeout_ms: 90_000,
            change_feed_capacity: 1024,
        }
    }
}

impl SupabaseDbConfig {
    /// A configuration for the project at `url` using `key` as the service-role key.
    pub fn service_role(url: impl Into<String>, key: impl Into<String>) -> Self {
        SupabaseDbConfig {
            url: url.into(),
            service_role_key: Some(Secret::new(key)),
            ..Self::default()
        }
    }

    /// A configuration for the project at `url` using `key` as the anon key.
    pub fn anon(url: impl Into<String>, key: impl Into<String>) -> Self {
        SupabaseDbConfig {
            url: url.into(),
            anon_key: Some(Secret::new(key)),
            ..Self::default()
        }
    }

    /// The API key requests carry (`apikey`), if one is set.
    pub(crate) fn key(&self) -> Option<&Secret> {
        self.service_role_key
            .as_ref()
            .or(self.anon_key.as_ref())
            .filter(|k| !k.is_empty())
    }

    /// Checks the settings; every problem is
    /// [`ErrorKind::InvalidInput`](truststream_core::ErrorKind::InvalidInput)
    /// naming the setting (never its value when it is a secret).
    pub fn validate(&self) -> DbResult<()> {
        let bad = |setting: &'static str, msg: String| {
            Error::invalid_input(format!("supabase database: {msg}"))
                .with_context(truststream_core::SETTING, setting)
        };
        if self.prefer == Prefer::Rest || !self.url.is_empty() {
            let url = reqwest::Url::parse(&self.url).map_err(|_| {
                bad(
                    "url",
                    format!(
                        "url {:?} is not an http(s) URL like https://<ref>.supabase.co",
                        truststream_core::echo(&self.url).to_string()
                    ),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad("url", "url must be an http:// or https:// URL".into()));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad(
                    "url",
                    "url must not carry credentials; set anon_key or service_role_key".into(),
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(bad("url", "url must not have a query or fragment".into()));
            }
        }
        let anon = self.anon_key.as_ref().is_some_and(|k| !k.is_empty());
        let service = self
            .service_role_key
            .as_ref()
            .is_some_and(|k| !k.is_empty());
        if anon && service {
            return Err(bad(
                "service_role_key",
                "set one of anon_key and service_role_key, not both".into(),
            ));
        }
        if !anon && !service && self.prefer == Prefer::Rest {
            return Err(bad(
                "anon_key",
                "the REST API needs a key: set anon_key or service_role_key".into(),
            ));
        }
        for k in [&self.anon_key, &self.service_role_key]
            .into_iter()
            .flatten()
        {
            if k.expose().bytes().any(|b| b < 0x21 || b == 0x7f) {
                return Err(bad(
                    "anon_key",
                    "an API key must not contain spaces or control characters".into(),
                ));
            }
        }
        if !self
            .rest_path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
            || self.rest_path.contains("..")
        {
            return Err(bad(
                "rest_path",
                "rest_path must be a plain path like /rest/v1".into(),
            ));
        }
        if let Some(s) = &self.schema {
            ident::validate(s).map_err(|e| e.with_context(truststream_core::SETTING, "schema"))?;
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(bad(
                "request_timeout_ms",
                "request_timeout_ms and connect_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The schema when it is not `public` (sent as a profile header).
    pub(crate) fn profile(&self) -> Option<&str> {
        self.schema.as_deref().filter(|s| *s != "public")
    }

    /// `<url><rest_path>`.
    pub(crate) fn rest_base(&self) -> String {
        format!(
            "{}/{}",
            self.url.trim_end_matches('/'),
            self.rest_path.trim_matches('/')
        )
        .trim_end_matches('/')
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core::ErrorKind;

    fn parse(v: serde_json::Value) -> SupabaseDbConfig {
        truststream_core::parse_config("supabase", v).unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let c = parse(json!({"url": "http://127.0.0.1:54321/", "anon_key": "k"}));
        c.validate().unwrap();
        assert_eq!(c.rest_base(), "http://127.0.0.1:54321/rest/v1");
        let bare = parse(json!({"url": "http://h:3000", "anon_key": "k", "rest_path": ""}));
        bare.validate().unwrap();
        assert_eq!(bare.rest_base(), "http://h:3000");
        assert_eq!(c.prefer, Prefer::Rest);
        assert_eq!(c.request_timeout_ms, 30_000);
        assert_eq!(c.max_rows, Some(1000), "Supabase's default row cap");
        let off = parse(json!({"url": "http://h", "anon_key": "k", "max_rows": 0}));
        off.validate().unwrap();
        assert_eq!(off.max_rows, Some(0), "0 turns paging off");
        for bad in [
            json!({"url": "http://h", "anon_key": "a", "service_role_key": "b"}),
            json!({"url": "http://h"}),
            json!({"url": "ftp://h", "anon_key": "a"}),
            json!({"url": "http://u:p@h", "anon_key": "a"}),
            json!({"url": "not a url", "anon_key": "a"}),
            json!({"url": "http://h", "anon_key": "a b"}),
            json!({"url": "http://h", "anon_key": "a", "schema": "x;y"}),
            json!({"url": "http://h", "anon_key": "a", "request_timeout_ms": 0}),
            json!({"url": "http://h", "anon_key": "a", "rest_path": "/x?y"}),
        ] {
            let e = parse(bad.clone()).validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        // prefer = "sql" needs no REST key.
        parse(json!({"prefer": "sql", "pooler_url": "postgres://x"}))
            .validate()
            .unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_without_echoing_values() {
        let e = truststream_core::parse_config::<SupabaseDbConfig>(
            "supabase",
            json!({"url": "http://h", "anon_key": "a", "pooler": "postgres://u:hunter2@h"}),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("pooler") && !e.to_string().contains("hunter2"));
        let e = truststream_core::parse_config::<SupabaseDbConfig>(
            "supabase",
            json!({"url": "http://h", "anon_key": 5}),
        )
        .unwrap_err();
        assert!(!e.to_string().contains('5'), "{e}");
    }

    #[test]
    fn secrets_never_show() {
        let mut c = SupabaseDbConfig::service_role("http://h", "service-secret");
        c.pooler_url = Some(Secret::new("postgres://u:pw-secret@h/db"));
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(
            !shown.contains("service-secret") && !shown.contains("pw-secret"),
            "{shown}"
        );
    }
}
