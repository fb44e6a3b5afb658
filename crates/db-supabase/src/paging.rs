//! Reads longer than the server's row cap (`max_rows`): the order made
//! total with the primary key, and the keyset condition "after this row"
//! that the next page is read with, so a page boundary neither repeats nor
//! skips a row when rows are written between pages. Also the primary keys
//! a PostgREST server states in its OpenAPI description (REST only).

use std::collections::HashMap;

use truststream_core_db::{
    and, or, ColumnRef, Filter, OrderBy, Row, SelectItem, SortDirection, Value,
};

/// `order` with `pk` appended (ascending) when it is not already a key;
/// and whether the result is total (the primary key is one of its keys),
/// which keyset paging needs.
pub(crate) fn total_order(order: &[OrderBy], pk: Option<&str>) -> (Vec<OrderBy>, bool) {
    let mut out = order.to_vec();
    let Some(pk) = pk else {
        return (out, false);
    };
    if !out.iter().any(|o| o.column.column == pk) {
        out.push(OrderBy {
            column: ColumnRef {
                table: None,
                column: pk.to_string(),
            },
            direction: SortDirection::Asc,
            nulls: None,
        });
    }
    (out, true)
}

/// The rows strictly after `row` in `order` (a total order whose nulls
/// placement is explicit, as the compiled `order=` sends it), as a filter;
/// `None` when `row` does not show every key's value under its own name
/// (the select list leaves it out or renames it) or a value is not a
/// scalar, so the caller falls back to an ordered offset.
pub(crate) fn after_row(row: &Row, order: &[OrderBy], select: &[SelectItem]) -> Option<Filter> {
    let mut values = Vec::with_capacity(order.len());
    for o in order {
        let name = o.column.column.as_str();
        if !shown_as_itself(select, name) {
            return None;
        }
        let v = row.get(name)?;
        if v.is_array() || v.is_object() {
            return None;
        }
        values.push(v.clone());
    }
    let mut branches = Vec::with_capacity(order.len());
    for (i, (o, v)) in order.iter().zip(&values).enumerate() {
        let Some(after) = after_value(o, v) else {
            continue;
        };
        let mut parts: Vec<Filter> = order[..i]
            .iter()
            .zip(&values)
            // `eq(null)` is `is null` (core-db).
            .map(|(k, kv)| k.column.clone().eq(kv.clone()))
            .collect();
        parts.push(after);
        branches.push(and(parts));
    }
    // No branch: nothing comes after the row (an empty `or` matches nothing).
    Some(or(branches))
}

/// The values of key `o` that sort after `v`: beyond it in the key's
/// direction, and the nulls when they sort last; after a null, the
/// non-nulls when nulls sort first, else nothing.
fn after_value(o: &OrderBy, v: &Value) -> Option<Filter> {
    let c = o.column.clone();
    let nulls_first = o.nulls_first();
    if v.is_null() {
        return nulls_first.then(|| c.is_not_null());
    }
    let beyond = match o.direction {
        SortDirection::Asc => c.clone().gt(v.clone()),
        SortDirection::Desc => c.clone().lt(v.clone()),
    };
    Some(if nulls_first {
        beyond
    } else {
        or([beyond, c.is_null()])
    })
}

/// The order's key columns a select list leaves out, to be read as well
/// (and removed from each row after): with them every page can be read
/// after the last row seen, where an offset would repeat or skip rows
/// written between pages. Empty when nothing is missing, or when adding
/// columns would change the answer or clash: aggregates (grouping), an
/// output name already taken by a key's name, a key of another table.
pub(crate) fn missing_keys(order: &[OrderBy], select: &[SelectItem]) -> Vec<String> {
    if select.is_empty()
        || select
            .iter()
            .any(|s| matches!(s, SelectItem::Aggregate { .. }))
    {
        return Vec::new();
    }
    let taken = |name: &str| {
        select.iter().any(|s| match s {
            SelectItem::Column { column, alias } => {
                alias.as_deref().unwrap_or(column.column.as_str()) == name
            }
            _ => false,
        })
    };
    let mut out = Vec::new();
    for o in order {
        let name = o.column.column.as_str();
        if o.column.table.is_some() || shown_as_itself(select, name) {
            continue;
        }
        if taken(name) {
            return Vec::new();
        }
        out.push(name.to_string());
    }
    out
}

/// Whether `row`, read with `select`, holds column `name`'s value.
pub(crate) fn shows(row: &Row, name: &str, select: &[SelectItem]) -> bool {
    row.contains_key(name) && shown_as_itself(select, name)
}

/// Whether a row read with `select` holds column `name` under its own name.
fn shown_as_itself(select: &[SelectItem], name: &str) -> bool {
    let renamed = select.iter().any(|s| {
        matches!(s, SelectItem::Column { column, alias: Some(a) }
            if a == name && column.column != name)
    });
    if renamed {
        return false;
    }
    select.is_empty()
        || select.iter().any(|s| match s {
            SelectItem::All { .. } => true,
            SelectItem::Column { column, alias } => {
                column.column == name && alias.as_deref().is_none_or(|a| a == name)
            }
            SelectItem::Aggregate { .. } => false,
        })
}

/// The single-column primary keys a PostgREST OpenAPI (Swagger 2.0)
/// description states: a property whose description holds `<pk/>`.
/// Tables with a composite key (or none) are left out.
pub(crate) fn openapi_primary_keys(doc: &serde_json::Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(defs) = doc.get("definitions").and_then(|d| d.as_object()) else {
        return out;
    };
    for (table, def) in defs {
        let Some(props) = def.get("properties").and_then(|p| p.as_object()) else {
            continue;
        };
        let mut keys = props.iter().filter(|(_, p)| {
            p.get("description")
                .and_then(|d| d.as_str())
                .is_some_and(|d| d.contains("<pk/>"))
        });
        if let (Some((column, _)), None) = (keys.next(), keys.next()) {
            out.insert(table.clone(), column.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::{col, NullsOrder, Query};

    fn row(v: Value) -> Row {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn keys_left_out_of_a_select_list_are_added_unless_that_changes_the_answer() {
        let (o, _) = total_order(&Query::new().order_by_asc("n").order_by, Some("id"));
        let sel = |q: Query| q.select;
        assert_eq!(missing_keys(&o, &sel(Query::new().select(["n"]))), ["id"]);
        assert_eq!(
            missing_keys(&o, &sel(Query::new().select(["x"]))),
            ["n", "id"]
        );
        assert!(missing_keys(&o, &[]).is_empty(), "every column is read");
        assert!(missing_keys(&o, &sel(Query::new().select(["id", "n"]))).is_empty());
        // An output named like a key: adding the key would clash.
        let clash = vec![SelectItem::Column {
            column: ColumnRef {
                table: None,
                column: "x".into(),
            },
            alias: Some("id".into()),
        }];
        assert!(missing_keys(&o, &clash).is_empty());
        // An aggregate: another column would change the grouping.
        let agg = vec![SelectItem::Aggregate {
            func: truststream_core_db::AggFunc::Count,
            column: None,
            filter: None,
            alias: "c".into(),
        }];
        assert!(missing_keys(&o, &agg).is_empty());
    }

    #[test]
    fn the_primary_key_makes_the_order_total() {
        let q = Query::new().order_by_desc("n");
        let (o, total) = total_order(&q.order_by, Some("id"));
        assert!(total);
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].column.column, "id");
        let q = Query::new().order_by_asc("id").order_by_asc("n");
        let (o, total) = total_order(&q.order_by, Some("id"));
        assert!(total);
        assert_eq!(o.len(), 2, "already a key: not added twice");
        let (_, total) = total_order(&q.order_by, None);
        assert!(!total, "without a primary key the order may have ties");
    }

    #[test]
    fn after_a_row_in_each_direction_and_nulls_placement() {
        // n asc (nulls last), id asc.
        let (o, _) = total_order(&Query::new().order_by_asc("n").order_by, Some("id"));
        let f = after_row(&row(json!({"id": 7, "n": 3, "x": "y"})), &o, &[]).expect("a filter");
        assert_eq!(
            f,
            or([
                and([or([col("n").gt(3), col("n").is_null()])]),
                and([col("n").eq(3), or([col("id").gt(7), col("id").is_null()])]),
            ])
        );
        // n desc (nulls first): after a null, every non-null n.
        let (o, _) = total_order(&Query::new().order_by_desc("n").order_by, Some("id"));
        let f = after_row(&row(json!({"id": 7, "n": null})), &o, &[]).expect("a filter");
        assert_eq!(
            f,
            or([
                and([col("n").is_not_null()]),
                and([
                    col("n").is_null(),
                    or([col("id").gt(7), col("id").is_null()])
                ]),
            ])
        );
        // n asc nulls last, after a null: only the same n (null) with a larger id.
        let q = Query::new().order_by_asc("n").nulls(NullsOrder::Last);
        let (o, _) = total_order(&q.order_by, Some("id"));
        let f = after_row(&row(json!({"id": 7, "n": null})), &o, &[]).expect("a filter");
        assert_eq!(
            f,
            or([and([
                col("n").is_null(),
                or([col("id").gt(7), col("id").is_null()])
            ])])
        );
    }

    #[test]
    fn no_keyset_when_a_key_is_not_shown() {
        let (o, _) = total_order(&Query::new().order_by_asc("n").order_by, Some("id"));
        let r = row(json!({"id": 1, "n": 2}));
        let sel = |q: Query| q.select;
        assert!(after_row(&r, &o, &sel(Query::new().select(["id", "n"]))).is_some());
        assert!(after_row(&r, &o, &sel(Query::new().select(["*"]))).is_some());
        assert!(after_row(&r, &o, &sel(Query::new().select(["n"]))).is_none());
        assert!(
            after_row(&r, &o, &sel(Query::new().select(["id", "name AS n"]))).is_none(),
            "n is another column's value"
        );
        assert!(after_row(&row(json!({"id": 1})), &o, &[]).is_none());
        assert!(after_row(&row(json!({"id": 1, "n": [1]})), &o, &[]).is_none());
    }

    #[test]
    fn primary_keys_from_openapi() {
        let doc = json!({"definitions": {
            "items": {"properties": {
                "id": {"type": "integer", "description": "Note:\nThis is a Primary Key.<pk/>"},
                "n": {"type": "integer"}
            }},
            "pairs": {"properties": {
                "a": {"description": "<pk/>"}, "b": {"description": "<pk/>"}
            }},
            "view": {"properties": {"x": {"type": "text"}}}
        }});
        let keys = openapi_primary_keys(&doc);
        assert_eq!(keys.get("items").map(String::as_str), Some("id"));
        assert!(!keys.contains_key("pairs"), "composite keys are left out");
        assert!(!keys.contains_key("view"));
        assert!(openapi_primary_keys(&json!({"not": "openapi"})).is_empty());
    }
}
