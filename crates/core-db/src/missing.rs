//! Tables a provider keeps in a database but did not create because it was
//! built read-only ([`truststream_core::BuildOptions::read_only`]: a health
//! check creates nothing), and how its health says so.

use std::time::Duration;

use truststream_core::{ErrorKind, Health, HealthStatus};

use crate::{Database, DbResult, Query};

/// Which of `tables` do not exist in `db`, in the order given. Asks
/// [`Database::describe_table`]; a provider that cannot describe tables
/// is asked for one row of each instead (`NotFound`: missing). Reads
/// only.
pub async fn missing_tables(db: &dyn Database, tables: &[String]) -> DbResult<Vec<String>> {
    let mut missing = Vec::new();
    for t in tables {
        let exists = match db.describe_table(t).await {
            Ok(found) => found.is_some(),
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                match db.read(t, &Query::new().limit(1)).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == ErrorKind::NotFound => false,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if !exists {
            missing.push(t.clone());
        }
    }
    Ok(missing)
}

/// The health of a provider built read-only whose `tables` are missing:
/// degraded (it builds them when the application starts), naming them,
/// their `owner` (`auth-jwt`) and how to create them. `None` when none is
/// missing.
pub fn missing_tables_health(owner: &str, tables: &[String], latency: Duration) -> Option<Health> {
    if tables.is_empty() {
        return None;
    }
    Some(Health {
        status: HealthStatus::Degraded,
        latency,
        message: Some(missing_tables_message(owner, tables)),
    })
}

/// `tables missing: a, b — auth-jwt creates them when the application
/// starts (...)`.
pub fn missing_tables_message(owner: &str, tables: &[String]) -> String {
    format!(
        "tables missing: {} — {owner} creates them when the application starts (e.g. \
         `truststream serve`, or building the runtime); a health check creates nothing",
        tables.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_tables_the_owner_and_the_fix() {
        let h = missing_tables_health("jobs-db", &["truststream_jobs".to_string()], Duration::ZERO)
            .unwrap();
        assert_eq!(h.status, HealthStatus::Degraded);
        let m = h.message.unwrap();
        assert!(
            m.starts_with("tables missing: truststream_jobs — jobs-db creates"),
            "{m}"
        );
        assert!(m.contains("truststream serve"), "{m}");
        assert!(missing_tables_health("x", &[], Duration::ZERO).is_none());
    }
}
