//! `action:resource` permissions with wildcards, and the role map.

use std::collections::BTreeMap;

use crate::{AuthResult, Error};

/// A permission `action:resource`; either part may be `*`. The single `*`
/// means `*:*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    /// The action (`read`, `write`, ... or `*`).
    pub action: String,
    /// The resource (`agents`, ... or `*`).
    pub resource: String,
}

impl Permission {
    /// Parses `action:resource` or `*`. Parts are non-empty, made of ASCII
    /// letters, digits, `_`, `-`, `.`, or exactly `*`.
    pub fn parse(s: &str) -> AuthResult<Self> {
        if s == "*" {
            return Ok(Permission {
                action: "*".into(),
                resource: "*".into(),
            });
        }
        let part_ok = |p: &str| {
            p == "*"
                || (!p.is_empty()
                    && p.len() <= 64
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        };
        match s.split_once(':') {
            Some((a, r)) if part_ok(a) && part_ok(r) => Ok(Permission {
                action: a.to_string(),
                resource: r.to_string(),
            }),
            _ => Err(Error::invalid_input(format!(
                "invalid permission {:?}: expected action:resource (parts may be *)",
                s.chars().take(80).collect::<String>()
            ))),
        }
    }

    /// Whether this (granted) permission covers `wanted`.
    pub fn covers(&self, wanted: &Permission) -> bool {
        (self.action == "*" || self.action == wanted.action)
            && (self.resource == "*" || self.resource == wanted.resource)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.action, self.resource)
    }
}

/// Role -> granted permissions, from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePermissions {
    grants: BTreeMap<String, Vec<Permission>>,
}

impl RolePermissions {
    /// Builds the map from `role -> ["action:resource", ...]`.
    pub fn from_config(map: &BTreeMap<String, Vec<String>>) -> AuthResult<Self> {
        let mut rp = RolePermissions::default();
        for (role, perms) in map {
            for p in perms {
                rp.grant(role, p)?;
            }
        }
        Ok(rp)
    }

    /// Grants `permission` to `role`.
    pub fn grant(&mut self, role: &str, permission: &str) -> AuthResult<()> {
        let p = Permission::parse(permission)?;
        self.grants.entry(role.to_string()).or_default().push(p);
        Ok(())
    }

    /// The permissions granted to `role`.
    pub fn permissions_of(&self, role: &str) -> &[Permission] {
        self.grants.get(role).map_or(&[], Vec::as_slice)
    }

    /// Whether any of `roles` grants `permission`.
    pub fn allows(&self, roles: &[String], permission: &str) -> AuthResult<bool> {
        let wanted = Permission::parse(permission)?;
        Ok(roles
            .iter()
            .flat_map(|r| self.permissions_of(r))
            .any(|g| g.covers(&wanted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_garbage() {
        for bad in ["", "read", ":x", "x:", "a:b:c", "re ad:x", "a:b\n"] {
            assert!(Permission::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Permission::parse("*").unwrap().to_string(), "*:*");
    }

    #[test]
    fn wildcards() {
        let mut rp = RolePermissions::default();
        rp.grant("r", "*:agents").unwrap();
        let roles = vec!["r".to_string()];
        assert!(rp.allows(&roles, "delete:agents").unwrap());
        assert!(!rp.allows(&roles, "delete:users").unwrap());
        assert!(!rp.allows(&[], "read:agents").unwrap());
        assert!(rp.allows(&roles, "bad").is_err());
    }
}
