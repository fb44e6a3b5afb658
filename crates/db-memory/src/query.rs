//! Running a [`Query`] against the tables: joins, filter, grouping and
//! aggregates, ordering, offset/limit and projection.
//!
//! Every column reference is resolved against the schemas before any row is
//! looked at, so an unknown or ambiguous column is an error even on an empty
//! table.

use std::collections::HashMap;

use truststream_core_db::eval;
use truststream_core_db::{
    AggFunc, CmpOp, ColumnDef, ColumnRef, ColumnType, Error, Filter, JoinKind, Query, Row,
    SelectItem, Value,
};

use crate::table::Table;
use crate::value::normalize;
use crate::State;
use truststream_core_db::sql::compile::type_name;

/// A table taking part in a query, under the name that qualifies its columns.
pub(crate) struct Source<'a> {
    pub qualifier: String,
    pub table: &'a Table,
}

/// A resolved column: source index and column definition.
#[derive(Clone, Copy)]
pub(crate) struct Resolved<'a> {
    pub src: usize,
    pub def: &'a ColumnDef,
}

/// One joined row: a row (or null, for an unmatched left join) per source.
type Combined<'a> = Vec<Option<&'a Row>>;

/// Resolves `c` against the first `upto` sources.
pub(crate) fn resolve<'a>(
    sources: &[Source<'a>],
    upto: usize,
    c: &ColumnRef,
) -> Result<Resolved<'a>, Error> {
    let scope = &sources[..upto.min(sources.len())];
    if let Some(t) = &c.table {
        let Some((src, s)) = scope.iter().enumerate().find(|(_, s)| &s.qualifier == t) else {
            let known: Vec<&str> = scope.iter().map(|s| s.qualifier.as_str()).collect();
            return Err(Error::invalid_input(format!(
                "column {c} names table {t}, which is not part of the query (tables: {})",
                known.join(", ")
            )));
        };
        let def = s.table.schema.find(&c.column).ok_or_else(|| {
            Error::invalid_input(format!("table {} has no column {}", s.qualifier, c.column))
        })?;
        return Ok(Resolved { src, def });
    }
    let found: Vec<Resolved<'a>> = scope
        .iter()
        .enumerate()
        .filter_map(|(src, s)| {
            s.table
                .schema
                .find(&c.column)
                .map(|def| Resolved { src, def })
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] if scope.len() == 1 => Err(Error::invalid_input(format!(
            "table {} has no column {}",
            scope[0].qualifier, c.column
        ))),
        [] => Err(Error::invalid_input(format!(
            "no table of the query has a column {}",
            c.column
        ))),
        many => Err(Error::invalid_input(format!(
            "column {} is ambiguous: qualify it as {}",
            c.column,
            many.iter()
                .map(|r| format!("{}.{}", scope[r.src].qualifier, c.column))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// A filter ready to evaluate: its columns resolved, its literals normalized
/// to the column types (so `created_at < '2024-01-01T00:00:00+02:00'`
/// compares as times).
pub(crate) struct Bound {
    filter: Filter,
    columns: HashMap<ColumnRef, (usize, String)>,
}

impl Bound {
    /// Binds `f` to `sources`.
    pub fn new(sources: &[Source<'_>], f: &Filter) -> Result<Bound, Error> {
        let mut columns = HashMap::new();
        for c in eval::filter_columns(f) {
            let r = resolve(sources, sources.len(), c)?;
            columns.insert(c.clone(), (r.src, r.def.name.clone()));
        }
        let filter = bind_literals(sources, f)?;
        Ok(Bound { filter, columns })
    }

    /// Whether a joined row matches (three-valued: only `true` matches).
    pub fn matches(&self, row: &[Option<&Row>]) -> Result<bool, Error> {
        let lookup = |c: &ColumnRef| {
            let (src, name) = self
                .columns
                .get(c)
                .ok_or_else(|| Error::internal(format!("column {c} was not bound")))?;
            Ok(row
                .get(*src)
                .copied()
                .flatten()
                .and_then(|r| r.get(name))
                .filter(|v| !v.is_null()))
        };
        eval::matches(&self.filter, &lookup)
    }
}

fn bind_literals(sources: &[Source<'_>], f: &Filter) -> Result<Filter, Error> {
    let ty =
        |c: &ColumnRef| resolve(sources, sources.len(), c).map(|r| (r.def.ty, r.def.name.clone()));
    Ok(match f {
        Filter::Cmp { column, op, value } => {
            let (t, name) = ty(column)?;
            let value = match op {
                CmpOp::Like | CmpOp::ILike => {
                    if !matches!(t, ColumnType::Text | ColumnType::Json) {
                        return Err(Error::invalid_input(format!(
                            "like/ilike needs a text column; {column} has type {}",
                            type_name(t)
                        )));
                    }
                    value.clone()
                }
                op if op.is_json() => {
                    if t != ColumnType::Json {
                        return Err(Error::invalid_input(format!(
                            "{} needs a json or array column; {column} has type {}",
                            op.name(),
                            type_name(t)
                        )));
                    }
                    value.clone()
                }
                _ => normalize(&name, t, value)?,
            };
            Filter::Cmp {
                column: column.clone(),
                op: *op,
                value,
            }
        }
        Filter::In { column, values } | Filter::NotIn { column, values } => {
            let (t, name) = ty(column)?;
            let values = values
                .iter()
                .map(|v| normalize(&name, t, v))
                .collect::<Result<Vec<_>, _>>()?;
            if matches!(f, Filter::In { .. }) {
                Filter::In {
                    column: column.clone(),
                    values,
                }
            } else {
                Filter::NotIn {
                    column: column.clone(),
                    values,
                }
            }
        }
        Filter::IsNull { .. } | Filter::IsNotNull { .. } => f.clone(),
        Filter::And(parts) => Filter::And(
            parts
                .iter()
                .map(|p| bind_literals(sources, p))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Or(parts) => Filter::Or(
            parts
                .iter()
                .map(|p| bind_literals(sources, p))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Not(inner) => Filter::Not(Box::new(bind_literals(sources, inner)?)),
        Filter::TextSearch { column, kind, .. } => {
            ty(column)?;
            return Err(Error::unsupported(format!(
                "full-text search ({} on {column}) needs PostgreSQL; the memory provider has none",
                kind.name()
            )));
        }
        _ => {
            return Err(Error::unsupported(
                "the memory provider does not support this kind of filter",
            ))
        }
    })
}

/// Where an ordering key's value comes from.
enum SortKey {
    /// A column of a source.
    Column(usize, String),
    /// An output column (aggregate queries).
    Output(String),
}

/// Runs `q` against `table`.
pub(crate) fn read(state: &State, table: &str, q: &Query) -> Result<Vec<Row>, Error> {
    let filter = q.effective_filter()?;
    let base = state.table(table)?;
    let mut sources = vec![Source {
        qualifier: table.to_string(),
        table: base,
    }];

    // Joins: resolve the conditions, then join nested-loop style.
    let mut joins = Vec::with_capacity(q.joins.len());
    for j in &q.joins {
        let t = state.table(&j.table)?;
        let qualifier = j.alias.clone().unwrap_or_else(|| j.table.clone());
        if sources.iter().any(|s| s.qualifier == qualifier) {
            return Err(Error::invalid_input(format!(
                "table or alias {qualifier} appears twice in the query; give the join an alias"
            )));
        }
        sources.push(Source {
            qualifier,
            table: t,
        });
        let n = sources.len();
        let l = resolve(&sources, n, &j.left)?;
        let r = resolve(&sources, n, &j.right)?;
        let (earlier, new) = if r.src == n - 1 && l.src < n - 1 {
            (l, r)
        } else if l.src == n - 1 && r.src < n - 1 {
            (r, l)
        } else {
            return Err(Error::invalid_input(format!(
                "join condition {} = {} must compare a column of {} with a column of an earlier table",
                j.left, j.right, j.table
            )));
        };
        joins.push((
            j.kind,
            earlier.src,
            earlier.def.name.clone(),
            new.def.name.clone(),
            t,
        ));
    }

    let mut rows: Vec<Combined<'_>> = base.rows.values().map(|r| vec![Some(r)]).collect();
    for (kind, e_src, e_col, n_col, t) in &joins {
        let mut next = Vec::with_capacity(rows.len());
        for combined in rows {
            let left = combined[*e_src].and_then(|r| r.get(e_col));
            let mut matched = false;
            for candidate in t.rows.values() {
                let equal = match (left, candidate.get(n_col)) {
                    (Some(a), Some(b)) => eval::compare(a, b) == Some(std::cmp::Ordering::Equal),
                    _ => false,
                };
                if equal {
                    matched = true;
                    let mut c = combined.clone();
                    c.push(Some(candidate));
                    next.push(c);
                }
            }
            if !matched && *kind == JoinKind::Left {
                let mut c = combined;
                c.push(None);
                next.push(c);
            }
        }
        rows = next;
    }

    if let Some(f) = &filter {
        let bound = Bound::new(&sources, f)?;
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows {
            if bound.matches(&r)? {
                kept.push(r);
            }
        }
        rows = kept;
    }

    let is_aggregate = !q.group_by.is_empty()
        || q.select
            .iter()
            .any(|s| matches!(s, SelectItem::Aggregate { .. }));
    let out = if is_aggregate {
        aggregate_query(&sources, q, &rows)?
    } else {
        plain_query(&sources, q, rows)?
    };
    Ok(out)
}

fn check_unique_outputs<'s>(names: impl IntoIterator<Item = &'s str>) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(Error::invalid_input(format!(
                "the result would have two columns named {n}; give one an alias (\"t.col as other_name\")"
            )));
        }
    }
    Ok(())
}

fn find_source<'a, 's>(
    sources: &'s [Source<'a>],
    t: &str,
) -> Result<(usize, &'s Source<'a>), Error> {
    sources
        .iter()
        .enumerate()
        .find(|(_, s)| s.qualifier == t)
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "select {t}.* names table {t}, which is not part of the query"
            ))
        })
}

fn plain_query(
    sources: &[Source<'_>],
    q: &Query,
    mut rows: Vec<Combined<'_>>,
) -> Result<Vec<Row>, Error> {
    // Projection plan: (output name, source, column).
    let mut plan: Vec<(String, usize, String)> = Vec::new();
    let all_of = |src: usize, plan: &mut Vec<(String, usize, String)>| {
        for c in &sources[src].table.schema.columns {
            plan.push((c.name.clone(), src, c.name.clone()));
        }
    };
    if q.select.is_empty() {
        all_of(0, &mut plan);
    }
    for item in &q.select {
        match item {
            SelectItem::All { table: None } => {
                (0..sources.len()).for_each(|s| all_of(s, &mut plan))
            }
            SelectItem::All { table: Some(t) } => {
                let (src, _) = find_source(sources, t)?;
                all_of(src, &mut plan);
            }
            SelectItem::Column { column, alias } => {
                let r = resolve(sources, sources.len(), column)?;
                let out = alias.clone().unwrap_or_else(|| column.column.clone());
                plan.push((out, r.src, r.def.name.clone()));
            }
            SelectItem::Aggregate { .. } => {
                return Err(Error::internal("aggregate in a plain query"));
            }
        }
    }
    check_unique_outputs(plan.iter().map(|p| p.0.as_str()))?;

    // Ordering keys: a source column, else an output alias.
    let mut keys = Vec::with_capacity(q.order_by.len());
    for o in &q.order_by {
        let key = match resolve(sources, sources.len(), &o.column) {
            Ok(r) => SortKey::Column(r.src, r.def.name.clone()),
            Err(e) => match o.column.table {
                None => match plan.iter().find(|p| p.0 == o.column.column) {
                    Some((_, src, col)) => SortKey::Column(*src, col.clone()),
                    None => return Err(e),
                },
                Some(_) => return Err(e),
            },
        };
        keys.push((key, o.direction, o.nulls_first()));
    }
    if !keys.is_empty() {
        let value = |row: &Combined<'_>, k: &SortKey| -> Option<Value> {
            match k {
                SortKey::Column(src, col) => row[*src].and_then(|r| r.get(col)).cloned(),
                SortKey::Output(_) => None,
            }
        };
        rows.sort_by(|a, b| {
            for (k, dir, nulls_first) in &keys {
                let ord = eval::sort_key_cmp(
                    value(a, k).as_ref(),
                    value(b, k).as_ref(),
                    *dir,
                    *nulls_first,
                );
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
    }

    let rows = window(rows, q);
    Ok(rows
        .into_iter()
        .map(|r| {
            plan.iter()
                .map(|(out, src, col)| {
                    let v = r[*src]
                        .and_then(|row| row.get(col))
                        .cloned()
                        .unwrap_or(Value::Null);
                    (out.clone(), v)
                })
                .collect()
        })
        .collect())
}

/// Applies offset and limit.
fn window<T>(rows: Vec<T>, q: &Query) -> Vec<T> {
    let offset = usize::try_from(q.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let limit = q
        .limit
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX);
    rows.into_iter().skip(offset).take(limit).collect()
}

enum OutItem {
    /// The i-th group-by value.
    Group(usize),
    Agg {
        func: AggFunc,
        column: Option<(usize, String, ColumnType)>,
        filter: Option<Box<Bound>>,
    },
}

fn aggregate_query(
    sources: &[Source<'_>],
    q: &Query,
    rows: &[Combined<'_>],
) -> Result<Vec<Row>, Error> {
    let group_cols: Vec<Resolved<'_>> = q
        .group_by
        .iter()
        .map(|c| resolve(sources, sources.len(), c))
        .collect::<Result<_, _>>()?;
    let group_index = |r: &Resolved<'_>| {
        group_cols
            .iter()
            .position(|g| g.src == r.src && g.def.name == r.def.name)
    };

    let mut plan: Vec<(String, OutItem)> = Vec::new();
    if q.select.is_empty() {
        return Err(Error::invalid_input(
            "an aggregate query needs a select list",
        ));
    }
    for item in &q.select {
        match item {
            SelectItem::All { .. } => {
                return Err(Error::invalid_input(
                    "`*` cannot be selected together with aggregates or group_by",
                ))
            }
            SelectItem::Column { column, alias } => {
                let r = resolve(sources, sources.len(), column)?;
                let i = group_index(&r).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "column {column} must appear in group_by or be used in an aggregate"
                    ))
                })?;
                plan.push((
                    alias.clone().unwrap_or_else(|| column.column.clone()),
                    OutItem::Group(i),
                ));
            }
            SelectItem::Aggregate {
                func,
                column,
                filter,
                alias,
            } => {
                let column = match column {
                    None => None,
                    Some(c) => {
                        let r = resolve(sources, sources.len(), c)?;
                        if matches!(func, AggFunc::Sum | AggFunc::Avg)
                            && !matches!(
                                r.def.ty,
                                ColumnType::Integer | ColumnType::Float | ColumnType::Numeric
                            )
                        {
                            return Err(Error::invalid_input(format!(
                                "{func:?} needs a numeric column; {c} has type {}",
                                type_name(r.def.ty)
                            )));
                        }
                        Some((r.src, r.def.name.clone(), r.def.ty))
                    }
                };
                let filter = filter
                    .as_ref()
                    .map(|f| Bound::new(sources, f).map(Box::new))
                    .transpose()?;
                plan.push((
                    alias.clone(),
                    OutItem::Agg {
                        func: *func,
                        column,
                        filter,
                    },
                ));
            }
        }
    }
    check_unique_outputs(plan.iter().map(|p| p.0.as_str()))?;

    // Groups in order of first appearance; one group over all rows without
    // group_by (even when there are no rows).
    let mut groups: Vec<(Vec<Value>, Vec<usize>)> = Vec::new();
    if group_cols.is_empty() {
        groups.push((Vec::new(), (0..rows.len()).collect()));
    } else {
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let values: Vec<Value> = group_cols
                .iter()
                .map(|g| {
                    r[g.src]
                        .and_then(|row| row.get(&g.def.name))
                        .cloned()
                        .unwrap_or(Value::Null)
                })
                .collect();
            let key = serde_json::to_string(&values).unwrap_or_default();
            let gi = *by_key.entry(key).or_insert_with(|| {
                groups.push((values, Vec::new()));
                groups.len() - 1
            });
            groups[gi].1.push(i);
        }
    }

    let mut out: Vec<Row> = Vec::with_capacity(groups.len());
    for (values, members) in &groups {
        let mut row = Row::new();
        for (name, item) in &plan {
            let v = match item {
                OutItem::Group(i) => values[*i].clone(),
                OutItem::Agg {
                    func,
                    column,
                    filter,
                } => {
                    let mut considered = Vec::with_capacity(members.len());
                    for &m in members {
                        if let Some(f) = filter {
                            if !f.matches(&rows[m])? {
                                continue;
                            }
                        }
                        considered.push(&rows[m]);
                    }
                    compute(*func, column.as_ref(), &considered)
                }
            };
            row.insert(name.clone(), v);
        }
        out.push(row);
    }

    // Ordering: by output name, or by a group_by column.
    let mut keys = Vec::with_capacity(q.order_by.len());
    for o in &q.order_by {
        let key = if o.column.table.is_none() && plan.iter().any(|p| p.0 == o.column.column) {
            SortKey::Output(o.column.column.clone())
        } else {
            let r = resolve(sources, sources.len(), &o.column)?;
            let i = group_index(&r).ok_or_else(|| {
                Error::invalid_input(format!(
                    "in an aggregate query, order by an output column or a group_by column, not {}",
                    o.column
                ))
            })?;
            SortKey::Column(i, String::new())
        };
        keys.push((key, o.direction, o.nulls_first()));
    }
    if !keys.is_empty() {
        let mut indexed: Vec<(usize, Row)> = out.into_iter().enumerate().collect();
        indexed.sort_by(|(ia, a), (ib, b)| {
            for (k, dir, nulls_first) in &keys {
                let (va, vb) = match k {
                    SortKey::Output(n) => (a.get(n), b.get(n)),
                    SortKey::Column(i, _) => (groups[*ia].0.get(*i), groups[*ib].0.get(*i)),
                };
                let ord = eval::sort_key_cmp(va, vb, *dir, *nulls_first);
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
        out = indexed.into_iter().map(|(_, r)| r).collect();
    }
    Ok(window(out, q))
}

fn compute(
    func: AggFunc,
    column: Option<&(usize, String, ColumnType)>,
    rows: &[&Combined<'_>],
) -> Value {
    let Some((src, col, ty)) = column else {
        // COUNT(*); validation guarantees only count lacks a column.
        return Value::from(rows.len() as u64);
    };
    let values: Vec<&Value> = rows
        .iter()
        .filter_map(|r| r[*src].and_then(|row| row.get(col)))
        .filter(|v| !v.is_null())
        .collect();
    match func {
        AggFunc::Count => Value::from(values.len() as u64),
        _ if values.is_empty() => Value::Null,
        AggFunc::Sum if *ty == ColumnType::Integer => {
            let total: i128 = values
                .iter()
                .filter_map(|v| v.as_i64())
                .map(i128::from)
                .sum();
            match i64::try_from(total) {
                Ok(t) => Value::from(t),
                Err(_) => float(total as f64),
            }
        }
        AggFunc::Sum => float(values.iter().filter_map(|v| v.as_f64()).sum()),
        AggFunc::Avg => {
            let total: f64 = values.iter().filter_map(|v| v.as_f64()).sum();
            float(total / values.len() as f64)
        }
        AggFunc::Min => values
            .iter()
            .copied()
            .min_by(|a, b| eval::total_cmp(a, b))
            .cloned()
            .unwrap_or(Value::Null),
        AggFunc::Max => values
            .iter()
            .copied()
            .max_by(|a, b| eval::total_cmp(a, b))
            .cloned()
            .unwrap_or(Value::Null),
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}
