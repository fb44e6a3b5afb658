//! Who may touch a table: the caller, hidden tables, the table's policy
//! (`[serve.tables]`), its permissions and the owner rule.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use truststream_core_db::{ColumnRef, Database, Filter, RequestScope, TableSchema};

use super::error::{ApiError, ApiResult};
use crate::caller::{identify, Caller, CallerError, Role};
use crate::config::TableAction;
use crate::ServeState;

/// The owner rule of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Owner {
    /// No rule: the service role, or a table without `owner_column`.
    Any,
    /// A signed-in user: rows whose `column` is `user_id` (typed for the
    /// column).
    User { column: String, user_id: Value },
    /// An anonymous caller on a table with an owner column: no row is
    /// theirs.
    Nobody { column: String },
}

impl Owner {
    /// The filter ANDed onto reads, updates and deletes.
    pub fn filter(&self) -> Option<Filter> {
        match self {
            Owner::Any => None,
            Owner::User { column, user_id } => Some(Filter::Cmp {
                column: ColumnRef {
                    table: None,
                    column: column.clone(),
                },
                op: truststream_core_db::CmpOp::Eq,
                value: user_id.clone(),
            }),
            // An empty `or` is false.
            Owner::Nobody { .. } => Some(Filter::Or(Vec::new())),
        }
    }
}

/// A request allowed on a table.
pub(crate) struct Access {
    pub caller: Caller,
    pub schema: TableSchema,
    pub owner: Owner,
    /// The database the request's calls go to: with `serve.row_security`,
    /// a handle scoped to an anon or authenticated caller (the database's
    /// row-level security policies apply); else the server's.
    pub db: Arc<dyn Database>,
}

impl Access {
    pub fn table(&self) -> &str {
        &self.schema.name
    }

    pub fn anonymous(&self) -> bool {
        self.caller.role == Role::Anon
    }

    /// `combined AND owner filter`.
    pub fn restrict(&self, filter: Option<Filter>) -> Option<Filter> {
        match (filter, self.owner.filter()) {
            (None, o) => o,
            (f, None) => f,
            (Some(f), Some(o)) => Some(Filter::And(vec![f, o])),
        }
    }
}

/// The caller of the request, or the PostgREST answer for a bad key/token.
pub(crate) async fn caller(state: &ServeState, headers: &HeaderMap) -> ApiResult<Caller> {
    identify(state, headers, None).await.map_err(|e| {
        let code = match e {
            CallerError::AuthUnavailable(_) => "PGRST000",
            _ => "PGRST301",
        };
        ApiError::new(e.status(), code, e.message())
    })
}

/// Tables never served, whoever asks: the auth provider's own tables, any
/// `auth_*` table and TrustStream's bookkeeping (`_truststream*`).
pub(crate) fn hidden(state: &ServeState, table: &str) -> bool {
    let lower = table.to_ascii_lowercase();
    lower.starts_with("auth_")
        || lower.starts_with("_truststream")
        || state
            .auth
            .capabilities()
            .private_tables
            .iter()
            .any(|t| t.eq_ignore_ascii_case(table))
}

fn denied(caller: &Caller, table: &str) -> ApiError {
    ApiError::permission_denied(
        caller.role == Role::Anon,
        format!("permission denied for table {table}"),
    )
}

/// Checks that `caller` may take every one of `actions` on `table` and
/// returns the table's schema and owner rule. Deny by default: a table
/// without a policy is the service role's only. `described`: the table's
/// schema when the caller has read it already (else it is read here).
pub(crate) async fn authorize(
    state: &ServeState,
    caller: Caller,
    token: Option<&str>,
    table: &str,
    actions: &[TableAction],
    described: Option<TableSchema>,
) -> ApiResult<Access> {
    if truststream_core_db::ident::validate(table).is_err() || hidden(state, table) {
        return Err(ApiError::unknown_table(table));
    }
    let mut owner_column = None;
    if caller.role != Role::ServiceRole {
        let policy = state
            .config
            .tables
            .get(table)
            .ok_or_else(|| denied(&caller, table))?;
        let granted = match caller.role {
            Role::Anon => &policy.anon,
            _ => &policy.authenticated,
        };
        if !actions.iter().all(|a| granted.contains(a)) {
            return Err(denied(&caller, table));
        }
        if let Some(principal) = &caller.principal {
            for a in actions {
                if let Some(perm) = policy.permissions.get(a) {
                    let ok =
                        state
                            .auth
                            .has_permission(principal, perm)
                            .await
                            .map_err(|e| match e.kind() {
                                truststream_core::ErrorKind::Unavailable
                                | truststream_core::ErrorKind::Timeout
                                | truststream_core::ErrorKind::RateLimited => ApiError::new(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "PGRST000",
                                    "The auth service is unavailable",
                                ),
                                _ => denied(&caller, table),
                            })?;
                    if !ok {
                        return Err(denied(&caller, table));
                    }
                }
            }
        }
        owner_column = policy.owner_column.clone();
    }
    let schema = match described {
        Some(s) => s,
        None => match state.db.describe_table(table).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(ApiError::unknown_table(table)),
            Err(e) => return Err(ApiError::from_db(&e)),
        },
    };
    let owner = match (owner_column, caller.user_id()) {
        (None, _) => Owner::Any,
        (Some(column), None) => Owner::Nobody { column },
        (Some(column), Some(uid)) => {
            if schema.find(&column).is_none() {
                tracing::warn!(
                    table,
                    column,
                    "rest: the policy's owner_column is not a column of the table"
                );
                return Err(denied(&caller, table));
            }
            // A user id that does not fit the column's type owns nothing.
            let user_id = super::plan::typed(&schema, &column, uid).ok();
            match user_id {
                Some(user_id) => Owner::User { column, user_id },
                None => Owner::Nobody { column },
            }
        }
    };
    let db = database_for(state, &caller, token).map_err(|e| ApiError::from_db(&e))?;
    Ok(Access {
        caller,
        schema,
        owner,
        db,
    })
}

/// The database handle of `caller`'s calls: with `serve.row_security`,
/// anon and authenticated callers run as their PostgreSQL role with their
/// verified claims (the service role stays unscoped); without it, the
/// server's handle. `token`: the request's bearer token, passed on for a
/// signed-in user (providers that forward it to a server verifying it
/// themselves, such as a Supabase REST API, need it).
pub(crate) fn database_for(
    state: &ServeState,
    caller: &Caller,
    token: Option<&str>,
) -> truststream_core::Result<Arc<dyn Database>> {
    if !state.config.row_security || caller.role == Role::ServiceRole {
        return Ok(Arc::clone(&state.db));
    }
    let mut scope = RequestScope::new(caller.role.name(), caller.claims())?;
    if let (Role::Authenticated, Some(t)) = (caller.role, token) {
        scope = scope.with_token(t);
    }
    Arc::clone(&state.db).scoped(scope)
}
