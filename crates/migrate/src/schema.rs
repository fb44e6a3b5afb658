//! The database plan: which tables, in which order, with which schema and
//! indexes, and what the target cannot represent — all decided from reads
//! only, before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use truststream_core::{Error, Result};
use truststream_core_db::sql::SqlDialect;
use truststream_core_db::{
    ident, ColumnType, Database, IndexSpec, Params, Query, TableSchema, Value,
};

/// Something about a table or bucket the migration has to tell before it
/// writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// What it is about: `table <name>` or `bucket <name>`.
    pub subject: String,
    /// The column, when the issue is about one.
    pub column: Option<String>,
    /// What is wrong, for people.
    pub message: String,
    /// `true`: the copy does not start (the target cannot hold the data, or
    /// a copy would duplicate rows). `false`: a warning.
    pub blocking: bool,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.blocking { "error" } else { "warning" };
        match &self.column {
            Some(c) => write!(f, "{level}: {} column {c}: {}", self.subject, self.message),
            None => write!(f, "{level}: {}: {}", self.subject, self.message),
        }
    }
}

/// One table to copy.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// The source's schema (what the target's table is created with).
    pub schema: TableSchema,
    /// The source's indexes other than the primary key and unique columns
    /// (made on the target after the rows).
    pub indexes: Vec<IndexSpec>,
    /// The table exists on the target already.
    pub exists_on_target: bool,
    /// Foreign-key level: 0 references no other table of the plan; a table
    /// of level n references only tables of lower levels.
    pub level: usize,
}

impl TablePlan {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// The primary-key column's name.
    pub fn key(&self) -> Result<&str> {
        self.schema
            .primary_key()
            .map(|c| c.name.as_str())
            .ok_or_else(|| {
                Error::invalid_input(format!("table {} has no primary key", self.schema.name))
            })
    }
}

/// The database part of a migration, decided before anything is written.
#[derive(Debug, Clone, Default)]
pub struct DatabasePlan {
    /// The tables, in foreign-key order (referenced tables first).
    pub tables: Vec<TablePlan>,
    /// What the target cannot represent, and warnings.
    pub issues: Vec<Issue>,
}

impl DatabasePlan {
    /// The blocking issues.
    pub fn blocking(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.blocking)
    }

    /// The tables grouped by foreign-key level (each group can be copied in
    /// parallel once the groups before it are done).
    pub fn levels(&self) -> Vec<Vec<TablePlan>> {
        let mut out: Vec<Vec<TablePlan>> = Vec::new();
        for t in &self.tables {
            while out.len() <= t.level {
                out.push(Vec::new());
            }
            out[t.level].push(t.clone());
        }
        out
    }
}

fn dialect(db: &dyn Database) -> Option<SqlDialect> {
    let caps = db.capabilities();
    if caps.raw_sql {
        caps.sql_dialect
    } else {
        None
    }
}

/// The application tables of `db`, read from the SQL catalog (SQLite and
/// PostgreSQL through `raw_query`). Provider tables (`_truststream*`,
/// `sqlite_*`) are left out. Other providers cannot list their tables:
/// `Unsupported`, naming `--tables`.
pub async fn list_tables(db: &dyn Database) -> Result<Vec<String>> {
    let sql = match dialect(db) {
        Some(SqlDialect::Sqlite) => {
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        }
        Some(SqlDialect::Postgres) => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
        }
        _ => {
            return Err(Error::unsupported(format!(
                "the {} database provider cannot list its tables: name them with --tables",
                db.info().name
            )))
        }
    };
    let rows = db.raw_query(sql, &Params::new()).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
        .filter(|n| !n.starts_with("_truststream") && !n.starts_with("sqlite_"))
        .filter(|n| ident::table(n).is_ok())
        .collect())
}

/// The secondary indexes of `table` (not the primary key, not unique
/// constraints) from the SQL catalog; none for other providers.
pub async fn list_indexes(db: &dyn Database, table: &str) -> Result<Vec<IndexSpec>> {
    let sql = match dialect(db) {
        Some(SqlDialect::Sqlite) => {
            "SELECT il.name AS index_name, il.\"unique\" AS uniq, ii.name AS col \
             FROM pragma_index_list(:table) AS il, pragma_index_info(il.name) AS ii \
             WHERE il.origin = 'c' ORDER BY il.name, ii.seqno"
        }
        Some(SqlDialect::Postgres) => {
            "SELECT i.relname::text AS index_name, ix.indisunique AS uniq, a.attname::text AS col \
             FROM pg_index ix \
             JOIN pg_class t ON t.oid = ix.indrelid \
             JOIN pg_class i ON i.oid = ix.indexrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             CROSS JOIN LATERAL unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE n.nspname = current_schema() AND t.relname = :table \
               AND NOT ix.indisprimary \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid) \
             ORDER BY i.relname, k.ord"
        }
        _ => return Ok(Vec::new()),
    };
    let mut params = Params::new();
    params.insert("table".into(), Value::from(table));
    let rows = db.raw_query(sql, &params).await?;
    let mut by_name: BTreeMap<String, IndexSpec> = BTreeMap::new();
    for r in rows {
        let (Some(name), Some(column)) = (
            r.get("index_name").and_then(Value::as_str),
            r.get("col").and_then(Value::as_str),
        ) else {
            continue;
        };
        let unique = match r.get("uniq") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        };
        let spec = by_name.entry(name.to_string()).or_insert_with(|| {
            let mut s = IndexSpec::new(table, Vec::<String>::new()).named(name);
            s.unique = unique;
            s.if_not_exists = true;
            s
        });
        spec.columns.push(column.to_string());
    }
    Ok(by_name
        .into_values()
        .filter(|s| s.validate().is_ok())
        .collect())
}

/// Reads the source's tables (all, or `only`), orders them by foreign keys,
/// and lists what the target cannot represent. Reads only.
pub async fn plan(
    source: &dyn Database,
    target: &dyn Database,
    only: Option<&[String]>,
    resume: bool,
) -> Result<DatabasePlan> {
    let names = match only {
        Some(t) => t.to_vec(),
        None => list_tables(source).await?,
    };
    let mut issues = Vec::new();
    let mut schemas = Vec::new();
    for name in &names {
        ident::table(name)?;
        match source.describe_table(name).await? {
            Some(s) => schemas.push(s),
            None => issues.push(Issue {
                subject: format!("table {}", name),
                column: None,
                message: "the source has no such table (or cannot describe it)".into(),
                blocking: true,
            }),
        }
    }
    let levels = fk_levels(&schemas, &mut issues);
    let tcaps = target.capabilities();
    let mut tables = Vec::new();
    for schema in schemas {
        let name = schema.name.clone();
        let existing = target.describe_table(&name).await?;
        if existing.is_none() && !tcaps.schema {
            issues.push(Issue {
                subject: format!("table {}", name),
                column: None,
                message: format!(
                    "the target ({}) cannot create tables and has no table of this name",
                    target.info().name
                ),
                blocking: true,
            });
        }
        if let Some(t) = &existing {
            compare_columns(&schema, t, &mut issues);
            if !resume && !is_empty(target, &schema).await? {
                issues.push(Issue {
                    subject: format!("table {}", name),
                    column: None,
                    message: "the target table already holds rows: migrate copies into empty tables (pass --resume to continue an interrupted run)".into(),
                    blocking: true,
                });
            }
        }
        if !schema.foreign_keys.is_empty() && !tcaps.foreign_keys {
            issues.push(Issue {
                subject: format!("table {}", name),
                column: None,
                message: format!(
                    "the target ({}) does not enforce foreign keys; they are declared but not checked",
                    target.info().name
                ),
                blocking: false,
            });
        }
        value_checks(source, target, &schema, &mut issues).await?;
        let indexes = list_indexes(source, &name).await?;
        let level = levels.get(&name).copied().unwrap_or(0);
        tables.push(TablePlan {
            schema,
            indexes,
            exists_on_target: existing.is_some(),
            level,
        });
    }
    tables.sort_by(|a, b| a.level.cmp(&b.level).then_with(|| a.name().cmp(b.name())));
    Ok(DatabasePlan { tables, issues })
}

async fn is_empty(db: &dyn Database, schema: &TableSchema) -> Result<bool> {
    let key = schema.primary_key().map_or("id", |c| c.name.as_str());
    let q = Query::new().select([key]).limit(1);
    Ok(db.read(&schema.name, &q).await?.is_empty())
}

/// Columns the target's existing table lacks or types differently.
fn compare_columns(source: &TableSchema, target: &TableSchema, issues: &mut Vec<Issue>) {
    for c in &source.columns {
        match target.find(&c.name) {
            None => issues.push(Issue {
                subject: format!("table {}", source.name),
                column: Some(c.name.clone()),
                message: "the target's existing table has no such column".into(),
                blocking: true,
            }),
            Some(t) if t.ty != c.ty => issues.push(Issue {
                subject: format!("table {}", source.name),
                column: Some(c.name.clone()),
                message: format!(
                    "type {:?} on the source, {:?} in the target's existing table",
                    c.ty, t.ty
                ),
                blocking: true,
            }),
            Some(t) if t.primary_key != c.primary_key => issues.push(Issue {
                subject: format!("table {}", source.name),
                column: Some(c.name.clone()),
                message:
                    "the primary key differs between the source and the target's existing table"
                        .into(),
                blocking: true,
            }),
            Some(_) => {}
        }
    }
}

/// Foreign-key levels of the tables; a cycle between tables (a table that
/// references itself is fine) is a blocking issue.
fn fk_levels(schemas: &[TableSchema], issues: &mut Vec<Issue>) -> BTreeMap<String, usize> {
    let names: BTreeSet<&str> = schemas.iter().map(|s| s.name.as_str()).collect();
    let deps: BTreeMap<&str, BTreeSet<&str>> = schemas
        .iter()
        .map(|s| {
            let d = s
                .foreign_keys
                .iter()
                .map(|fk| fk.referenced_table.as_str())
                .filter(|t| *t != s.name && names.contains(t))
                .collect();
            (s.name.as_str(), d)
        })
        .collect();
    for s in schemas {
        for fk in &s.foreign_keys {
            if fk.referenced_table != s.name && !names.contains(fk.referenced_table.as_str()) {
                issues.push(Issue {
                    subject: format!("table {}", s.name),
                    column: fk.columns.first().cloned(),
                    message: format!(
                        "references table {}, which is not part of this migration (it must exist on the target)",
                        fk.referenced_table
                    ),
                    blocking: false,
                });
            }
            if fk.referenced_table == s.name {
                issues.push(Issue {
                    subject: format!("table {}", s.name),
                    column: fk.columns.first().cloned(),
                    message: "references its own table: rows are copied in primary-key order, so a row must not reference a later key".into(),
                    blocking: false,
                });
            }
        }
    }
    let mut level: BTreeMap<String, usize> = BTreeMap::new();
    let mut remaining: BTreeSet<&str> = names.clone();
    let mut current = 0;
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining
            .iter()
            .copied()
            .filter(|t| {
                deps.get(t)
                    .is_none_or(|d| d.iter().all(|x| !remaining.contains(x)))
            })
            .collect();
        if ready.is_empty() {
            for t in &remaining {
                issues.push(Issue {
                    subject: format!("table {t}"),
                    column: None,
                    message:
                        "is part of a foreign-key cycle between tables; the copy cannot order it"
                            .into(),
                    blocking: true,
                });
            }
            break;
        }
        for t in ready {
            level.insert(t.to_string(), current);
            remaining.remove(t);
        }
        current += 1;
    }
    level
}

/// Values the target cannot hold, found on the source before the copy.
///
/// SQLite keeps column types loosely: a column declared `integer` can hold
/// text written by another program, and PostgreSQL refuses it mid-copy. For
/// an SQLite source each column's stored classes are counted in one pass of
/// SQL per table; on a PostgreSQL target, text and JSON holding a NUL
/// character (which PostgreSQL cannot store) are counted too.
/// Runs `SELECT {sums} FROM table` (sums of counts) over the two halves
/// of the table's rowid range at once, on two connections, and adds the
/// halves up: the check reads every row, and nothing else runs while the
/// plan is made. A table without rowid (or without rows) is read whole.
async fn scan_halves(
    source: &dyn Database,
    table: &str,
    sums: &str,
) -> Result<std::collections::HashMap<String, i64>> {
    let t = ident::quote(table);
    let middle = source
        .raw_query(
            &format!("SELECT (MIN(rowid) + MAX(rowid)) / 2 AS m FROM {t}"),
            &Params::new(),
        )
        .await
        .ok()
        .and_then(|rows| {
            rows.first()
                .and_then(|r| r.get("m"))
                .and_then(Value::as_i64)
        });
    let sql = |filter: &str| format!("SELECT {sums} FROM {t}{filter}");
    let parts = match middle {
        Some(m) => {
            let (low, high) = (
                sql(&format!(" WHERE rowid <= {m}")),
                sql(&format!(" WHERE rowid > {m}")),
            );
            let none = Params::new();
            let (a, b) = futures::join!(
                source.raw_query(&low, &none),
                source.raw_query(&high, &none)
            );
            vec![a?, b?]
        }
        None => vec![source.raw_query(&sql(""), &Params::new()).await?],
    };
    let mut out = std::collections::HashMap::new();
    for row in parts.iter().filter_map(|rows| rows.first()) {
        for (k, v) in row {
            *out.entry(k.clone()).or_insert(0) += v.as_i64().unwrap_or(0);
        }
    }
    Ok(out)
}

async fn value_checks(
    source: &dyn Database,
    target: &dyn Database,
    schema: &TableSchema,
    issues: &mut Vec<Issue>,
) -> Result<()> {
    if dialect(source) != Some(SqlDialect::Sqlite) {
        return Ok(());
    }
    let to_pg = target.capabilities().sql_dialect == Some(SqlDialect::Postgres);
    let mut exprs = Vec::new();
    let mut labels = Vec::new();
    for (i, c) in schema.columns.iter().enumerate() {
        let q = ident::quote(&c.name);
        let allowed = match c.ty {
            ColumnType::Integer => "'integer'",
            ColumnType::Float => "'integer','real'",
            ColumnType::Numeric => "'integer','real','text'",
            ColumnType::Boolean => "'integer'",
            ColumnType::Text | ColumnType::Timestamp | ColumnType::Uuid | ColumnType::Json => {
                "'text'"
            }
            ColumnType::Bytes => "'blob'",
        };
        exprs.push(format!(
            "SUM(CASE WHEN {q} IS NOT NULL AND typeof({q}) NOT IN ({allowed}) THEN 1 ELSE 0 END) AS \"b{i}\""
        ));
        let extra = match c.ty {
            ColumnType::Timestamp => Some(format!(
                "SUM(CASE WHEN typeof({q}) = 'text' AND julianday({q}) IS NULL THEN 1 ELSE 0 END)"
            )),
            ColumnType::Json if to_pg => Some(format!(
                "SUM(CASE WHEN typeof({q}) = 'text' AND (instr({q}, char(0)) > 0 OR instr({q}, '\\u0000') > 0) THEN 1 ELSE 0 END)"
            )),
            ColumnType::Text if to_pg => Some(format!(
                "SUM(CASE WHEN typeof({q}) = 'text' AND instr({q}, char(0)) > 0 THEN 1 ELSE 0 END)"
            )),
            ColumnType::Boolean => Some(format!(
                "SUM(CASE WHEN typeof({q}) = 'integer' AND {q} NOT IN (0, 1) THEN 1 ELSE 0 END)"
            )),
            _ => None,
        };
        if let Some(e) = extra {
            exprs.push(format!("{e} AS \"x{i}\""));
        }
        labels.push(c);
    }
    if exprs.is_empty() {
        return Ok(());
    }
    let counts = scan_halves(source, &schema.name, &exprs.join(", ")).await?;
    let count = |k: &str| counts.get(k).copied().unwrap_or(0);
    let target_name = target.info().name;
    for (i, c) in labels.iter().enumerate() {
        let bad = count(&format!("b{i}"));
        if bad > 0 {
            issues.push(Issue {
                subject: format!("table {}", schema.name),
                column: Some(c.name.clone()),
                message: format!(
                    "declared {:?}, but {bad} value(s) are stored as another type (SQLite keeps column types loosely); the target ({target_name}) cannot hold them in this column",
                    c.ty
                ),
                blocking: true,
            });
        }
        let extra = count(&format!("x{i}"));
        if extra > 0 {
            let what = match c.ty {
                ColumnType::Timestamp => "are not timestamps".to_string(),
                ColumnType::Boolean => "are integers other than 0 and 1".to_string(),
                _ => format!(
                    "contain a NUL character, which the target ({target_name}) cannot store"
                ),
            };
            issues.push(Issue {
                subject: format!("table {}", schema.name),
                column: Some(c.name.clone()),
                message: format!("{extra} value(s) {what}"),
                blocking: true,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use truststream_core_db::ColumnDef;

    fn t(name: &str, refs: &[&str]) -> TableSchema {
        let mut s = TableSchema::new(name).column(ColumnDef::integer("id").primary_key());
        for r in refs {
            let c = format!("{r}_id");
            s = s.column(ColumnDef::integer(&c)).references(&c, r, "id");
        }
        s
    }

    #[test]
    fn levels_follow_foreign_keys_and_cycles_block() {
        let mut issues = Vec::new();
        let l = fk_levels(
            &[
                t("c", &["b", "a"]),
                t("b", &["a"]),
                t("a", &[]),
                t("d", &["d"]),
            ],
            &mut issues,
        );
        assert_eq!(l["a"], 0);
        assert_eq!(l["d"], 0);
        assert_eq!(l["b"], 1);
        assert_eq!(l["c"], 2);
        assert!(issues.iter().all(|i| !i.blocking), "{issues:?}");
        let mut issues = Vec::new();
        fk_levels(&[t("x", &["y"]), t("y", &["x"])], &mut issues);
        assert_eq!(issues.iter().filter(|i| i.blocking).count(), 2);
    }
}
