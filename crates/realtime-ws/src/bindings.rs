//! The `postgres_changes` bindings of a WebSocket join: parsed from the
//! join's config, checked against the publication and the subscriber (see
//! [`truststream_core_realtime::access`]), and the table feeds they need.

use std::sync::Arc;

use serde_json::{json, Value};
use truststream_core::{Error, ErrorKind};
use truststream_core_auth::Principal;
use truststream_core_db::{eval, ChangeKind, Filter};
use truststream_core_realtime::RtResult;

use crate::filter::WireFilter;
use crate::hub::{Binding, FeedLease, Hub, MemberId};
use truststream_core_realtime::access::shown;

/// Most bindings one channel may have.
const MAX_BINDINGS: usize = 100;

/// A join's checked bindings.
pub(crate) struct Bound {
    pub bindings: Vec<Binding>,
    /// The reply's echo: each binding as sent, plus its id.
    pub echo: Vec<Value>,
    /// The feeds of the bound tables, one per table.
    pub feeds: Vec<FeedLease>,
}

/// Parses the join's `postgres_changes` (`v`), checks that the subscriber
/// (`principal`; `None` when the hub has no auth provider) may bind each
/// table, and subscribes to the tables' feeds. Any refused binding refuses
/// them all.
pub(crate) async fn bind(
    hub: &Arc<Hub>,
    v: Option<&Value>,
    principal: Option<&Principal>,
) -> RtResult<Bound> {
    let (bindings, echo) = parse(hub, v)?;
    for b in &bindings {
        let mut columns: Vec<&str> = Vec::new();
        if let Some(f) = &b.filter {
            columns.push(&f.column);
        }
        if let Some(f) = &b.filter_tree {
            columns.extend(
                eval::filter_columns(f)
                    .into_iter()
                    .map(|c| c.column.as_str()),
            );
        }
        hub.publication
            .authorize(hub.auth.as_ref(), principal, &b.table, &columns)
            .await?;
    }
    let mut tables: Vec<&str> = bindings.iter().map(|b| b.table.as_str()).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut feeds = Vec::with_capacity(tables.len());
    for t in tables {
        feeds.push(hub.watch_table(t).await?);
    }
    Ok(Bound {
        bindings,
        echo,
        feeds,
    })
}

/// Checks member `id`'s bindings on `topic` again for a new token's
/// `principal` (its permissions may differ); the caller closes the channel
/// on an error.
pub(crate) async fn reauthorize(
    hub: &Arc<Hub>,
    topic: &str,
    id: MemberId,
    principal: &Principal,
) -> RtResult<()> {
    for table in hub.bound_tables(topic, id) {
        hub.publication
            .authorize(hub.auth.as_ref(), Some(principal), &table, &[])
            .await?;
    }
    Ok(())
}

/// Parses `postgres_changes` bindings; returns them and the reply's echo.
fn parse(hub: &Hub, v: Option<&Value>) -> RtResult<(Vec<Binding>, Vec<Value>)> {
    let list = match v {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Error::invalid_input("postgres_changes must be a list")),
    };
    if list.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    if !hub.row_changes_available() {
        return Err(Error::unsupported(
            "postgres_changes need a database with a change feed, and this hub has none",
        ));
    }
    if list.len() > MAX_BINDINGS {
        return Err(Error::invalid_input(format!(
            "at most {MAX_BINDINGS} postgres_changes bindings per channel"
        )));
    }
    let mut bindings = Vec::with_capacity(list.len());
    let mut echoes = Vec::with_capacity(list.len());
    for b in list {
        let o = b
            .as_object()
            .ok_or_else(|| Error::invalid_input("a postgres_changes binding is an object"))?;
        let event = match o.get("event").and_then(Value::as_str).unwrap_or("*") {
            "*" => None,
            e if e.eq_ignore_ascii_case("insert") => Some(ChangeKind::Insert),
            e if e.eq_ignore_ascii_case("update") => Some(ChangeKind::Update),
            e if e.eq_ignore_ascii_case("delete") => Some(ChangeKind::Delete),
            other => {
                return Err(Error::invalid_input(format!(
                    "unknown postgres_changes event {} (*, INSERT, UPDATE, DELETE)",
                    shown(other)
                )))
            }
        };
        match o.get("schema").and_then(Value::as_str) {
            Some("public") | Some("*") | None => {}
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "unknown schema {}: this hub's tables are in \"public\"",
                    shown(other)
                )))
            }
        }
        let table =
            match o.get("table").and_then(Value::as_str) {
                None | Some("*") => return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "a postgres_changes binding must name a published table: a binding without \
                     one (or with \"*\") would stream every table, and is refused",
                )),
                Some(t) => truststream_core_db::ident::table(t)?.to_string(),
            };
        let filter = match o.get("filter").and_then(Value::as_str) {
            None | Some("") => None,
            Some(s) => Some(WireFilter::parse(s)?),
        };
        let key = o.get("key").cloned().filter(|k| !k.is_null());
        let filter_tree = match o.get("where") {
            None | Some(Value::Null) => None,
            Some(w) => {
                let f: Filter = serde_json::from_value(w.clone())
                    .map_err(|e| Error::invalid_input(format!("invalid where filter: {e}")))?;
                f.validate()?;
                Some(f)
            }
        };
        let id = hub.next_binding_id();
        let mut echoed = o.clone();
        echoed.insert("id".into(), json!(id));
        echoes.push(Value::Object(echoed));
        bindings.push(Binding {
            id,
            event,
            table,
            filter,
            key,
            filter_tree,
        });
    }
    Ok((bindings, echoes))
}
