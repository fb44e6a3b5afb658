//! Who a database call runs as, for databases that enforce row-level
//! security ([`crate::Database::scoped`]).

use crate::{DbResult, Error, Value};

/// The identity one request's database calls run as: a database role and the
/// verified claims of the caller's token, as PostgreSQL row-level security
/// policies read them (`current_setting('request.jwt.claims')`,
/// `auth.uid()`, `auth.role()`).
///
/// The claims must come from a token the application has **verified**
/// (through a `core-auth` provider's `validate_token`): a provider trusts
/// them as given. `token`, when set, is that same token; providers that
/// forward the caller's identity to a server which verifies it itself (a
/// PostgREST-compatible REST API) send it instead of the claims.
///
/// ```
/// use truststream_core_db::RequestScope;
/// let claims = serde_json::json!({"sub": "5b0c…", "role": "authenticated"});
/// let scope = RequestScope::new("authenticated", claims.as_object().unwrap().clone())
///     .unwrap()
///     .with_token("eyJ…");
/// assert_eq!(scope.subject(), Some("5b0c…"));
/// assert!(RequestScope::new("x; drop table t", Default::default()).is_err());
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct RequestScope {
    /// The database role (`anon`, `authenticated`, or any role the
    /// database knows): a plain identifier, checked by [`RequestScope::new`].
    pub role: String,
    /// The verified token claims (`sub`, `role`, `email`, ...).
    pub claims: serde_json::Map<String, Value>,
    /// The caller's bearer token, for providers that forward it.
    pub token: Option<String>,
}

impl RequestScope {
    /// A scope running as `role` with `claims`. `role` must be a plain
    /// identifier (ASCII letters, digits, `_`, not starting with a digit, at
    /// most 63 bytes): anything else is [`crate::ErrorKind::InvalidInput`].
    pub fn new(role: impl Into<String>, claims: serde_json::Map<String, Value>) -> DbResult<Self> {
        let role = role.into();
        let plain = !role.is_empty()
            && role.len() <= 63
            && !role.as_bytes()[0].is_ascii_digit()
            && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(Error::invalid_input(format!(
                "a request scope's role must be a plain identifier (letters, digits, _), got {}",
                truststream_core::echo(&role)
            )));
        }
        Ok(RequestScope {
            role,
            claims,
            token: None,
        })
    }

    /// The same scope carrying the caller's bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The `sub` claim (the user id), when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Claims and tokens are credentials: `Debug` shows the role and subject
/// only.
impl std::fmt::Debug for RequestScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestScope")
            .field("role", &self.role)
            .field("sub", &self.subject())
            .field("claims", &format_args!("<{} claims>", self.claims.len()))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_plain_identifiers() {
        for ok in ["anon", "authenticated", "service_role", "_r1"] {
            assert!(RequestScope::new(ok, Default::default()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1role",
            "a b",
            "a\"b",
            "a;b",
            "rôle",
            &"r".repeat(64),
            "x')--",
        ] {
            let e = RequestScope::new(bad, Default::default()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn debug_hides_claims_and_token() {
        let claims = serde_json::json!({"sub": "u1", "email": "secret@example.com"});
        let s = RequestScope::new("authenticated", claims.as_object().unwrap().clone())
            .unwrap()
            .with_token("tok-secret");
        let d = format!("{s:?}");
        assert!(d.contains("u1") && !d.contains("secret"), "{d}");
    }
}
