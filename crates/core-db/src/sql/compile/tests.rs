use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::{and, col, not, or, Cursor, ErrorKind, ForeignKey, NullsOrder};

fn catalog() -> HashMap<String, TableSchema> {
    let agents = TableSchema::new("agents")
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::text("status").not_null().default_value("active"))
        .column(ColumnDef::float("score"))
        .column(ColumnDef::timestamp("created_at").default(ColumnDefault::Now))
        .column(ColumnDef::timestamp("deleted_at"));
    let metrics = TableSchema::new("metrics")
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::uuid("agent_id"))
        .column(ColumnDef::integer("task_count"))
        .column(ColumnDef::text("name"));
    [agents, metrics]
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

fn sel(d: SqlDialect, q: &Query) -> SelectStatement {
    select(d, &catalog(), "agents", q).unwrap()
}

const HOSTILE: &str = "x'); DROP TABLE agents; --";

#[test]
fn plain_select_lists_every_column() {
    let s = sel(SqlDialect::Sqlite, &Query::new());
    assert!(s
        .statement
        .sql
        .starts_with("SELECT \"agents\".\"id\" AS \"id\", \"agents\".\"name\" AS \"name\""));
    assert!(s.statement.sql.ends_with(" FROM \"agents\""));
    assert_eq!(s.columns.len(), 6);
    assert_eq!(s.columns[4].ty, ColumnType::Timestamp);
}

#[test]
fn filters_bind_values_in_order_per_dialect() {
    let q = Query::new()
        .filter(and([
            col("status").eq("active"),
            or([col("score").gt(1.5), col("name").like("a%")]),
            not(col("deleted_at").is_not_null()),
        ]))
        .order_by_desc("created_at");
    let s = sel(SqlDialect::Postgres, &q);
    assert!(
        s.statement.sql.contains(
            "WHERE (\"agents\".\"status\" = $1 AND (\"agents\".\"score\" > $2 OR \"agents\".\"name\" LIKE $3 ESCAPE '') AND (NOT \"agents\".\"deleted_at\" IS NOT NULL))"
        ),
        "{}",
        s.statement.sql
    );
    assert!(s
        .statement
        .sql
        .ends_with("ORDER BY \"agents\".\"created_at\" DESC NULLS FIRST"));
    assert_eq!(
        s.statement.values(),
        vec![json!("active"), json!(1.5), json!("a%")]
    );
    assert_eq!(s.statement.binds[0].ty, Some(ColumnType::Text));
    assert_eq!(s.statement.binds[1].ty, Some(ColumnType::Float));
    let s = sel(SqlDialect::Sqlite, &q);
    assert!(s.statement.sql.contains("\"agents\".\"name\" LIKE ?)"));
    assert_eq!(s.statement.sql.matches('?').count(), 3);
}

#[test]
fn ilike_per_dialect() {
    let q = Query::new().filter(col("name").ilike("AB%"));
    assert!(sel(SqlDialect::Sqlite, &q)
        .statement
        .sql
        .contains("lower(\"agents\".\"name\") LIKE lower(?)"));
    assert!(sel(SqlDialect::Postgres, &q)
        .statement
        .sql
        .contains("\"agents\".\"name\" ILIKE $1 ESCAPE ''"));
    let mut cat = catalog();
    if let Some(t) = cat.get_mut("agents") {
        t.columns.push(ColumnDef::json("meta"));
    }
    let q = Query::new().filter(col("meta").like("a%"));
    let s = select(SqlDialect::Sqlite, &cat, "agents", &q).unwrap();
    assert!(s.statement.sql.contains(
        "(CASE WHEN json_type(\"agents\".\"meta\") = 'text' THEN json_extract(\"agents\".\"meta\", '$') END) LIKE ?"
    ), "{}", s.statement.sql);
    let s = select(SqlDialect::Postgres, &cat, "agents", &q).unwrap();
    assert!(
        s.statement.sql.contains("#>> '{}' END) LIKE $1"),
        "{}",
        s.statement.sql
    );
    let e = select(
        SqlDialect::Sqlite,
        &catalog(),
        "agents",
        &Query::new().filter(col("score").like("1%")),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn empty_in_lists_keep_three_valued_logic() {
    let q = Query::new().filter(and([
        col("name").is_in(Vec::<String>::new()),
        col("name").not_in(Vec::<String>::new()),
        col("status").is_in(["a", "b"]),
        col("status").not_in(["c"]),
        and([]),
        or([]),
    ]));
    let sql = sel(SqlDialect::Sqlite, &q).statement.sql;
    assert!(
        sql.contains("(\"agents\".\"name\" IS NULL AND NULL)"),
        "{sql}"
    );
    assert!(sql.contains("(\"agents\".\"name\" IS NOT NULL OR NULL)"));
    assert!(sql.contains("\"agents\".\"status\" IN (?, ?)"));
    assert!(sql.contains("\"agents\".\"status\" NOT IN (?)"));
    assert!(sql.contains("(1=1)") && sql.contains("(1=0)"));
}

#[test]
fn order_always_names_nulls_and_limits() {
    let q = Query::new()
        .order_by_asc("name")
        .order_by_asc("score")
        .nulls(NullsOrder::First)
        .order_by_desc("status")
        .nulls(NullsOrder::Last)
        .offset(5);
    let sql = sel(SqlDialect::Sqlite, &q).statement.sql;
    assert!(sql.ends_with(
        "ORDER BY \"agents\".\"name\" ASC NULLS LAST, \"agents\".\"score\" ASC NULLS FIRST, \"agents\".\"status\" DESC NULLS LAST LIMIT -1 OFFSET 5"
    ), "{sql}");
    let pg = sel(SqlDialect::Postgres, &q.clone().limit(u64::MAX))
        .statement
        .sql;
    assert!(
        pg.ends_with(&format!("LIMIT {} OFFSET 5", i64::MAX)),
        "{pg}"
    );
}

#[test]
fn keyset_cursor_is_folded_in() {
    let q = Query::new()
        .order_by_desc("created_at")
        .order_by_asc("id")
        .after(Cursor(vec![json!("2024-01-01T00:00:00Z"), json!("abc")]));
    let s = sel(SqlDialect::Postgres, &q);
    assert!(s.statement.sql.contains(
        "WHERE ((\"agents\".\"created_at\" < $1) OR (\"agents\".\"created_at\" = $2 AND \"agents\".\"id\" > $3))"
    ), "{}", s.statement.sql);
    assert_eq!(s.statement.binds.len(), 3);
}

#[test]
fn joins_aliases_and_star() {
    let q = Query::new()
        .select(["agents.*", "m.task_count", "m.name as metric_name"])
        .left_join("metrics m", "agents.id", "m.agent_id")
        .order_by_desc("task_count");
    let s = sel(SqlDialect::Sqlite, &q);
    assert!(s.statement.sql.contains(
        "FROM \"agents\" LEFT JOIN \"metrics\" AS \"m\" ON \"agents\".\"id\" = \"m\".\"agent_id\""
    ), "{}", s.statement.sql);
    assert!(s
        .statement
        .sql
        .contains("\"m\".\"name\" AS \"metric_name\""));
    assert!(s
        .statement
        .sql
        .contains("ORDER BY \"m\".\"task_count\" DESC NULLS FIRST"));
    assert_eq!(s.columns.len(), 8);
    // Unqualified `name` exists in both tables.
    let amb = Query::new()
        .select(["name"])
        .inner_join("metrics", "agents.id", "metrics.agent_id");
    let e = select(SqlDialect::Sqlite, &catalog(), "agents", &amb).unwrap_err();
    assert!(e.message().contains("ambiguous"), "{e}");
    // `*` over both tables repeats id and name.
    let dup = Query::new()
        .select(["*"])
        .inner_join("metrics", "agents.id", "metrics.agent_id");
    assert!(select(SqlDialect::Sqlite, &catalog(), "agents", &dup).is_err());
}

#[test]
fn aggregates_with_filter_group_and_order() {
    let q = Query::new()
        .select(["status"])
        .select_item(SelectItem::aggregate(AggFunc::Count, None, "total"))
        .select_item(
            SelectItem::aggregate(AggFunc::Count, None, "recent")
                .filtered(col("created_at").gte("2024-01-01")),
        )
        .select_item(SelectItem::aggregate(
            AggFunc::Avg,
            Some("score"),
            "avg_score",
        ))
        .filter(col("deleted_at").is_null())
        .group_by("status")
        .order_by_desc("total");
    let s = sel(SqlDialect::Sqlite, &q);
    assert_eq!(
        &*s.statement.sql,
        "SELECT \"agents\".\"status\" AS \"status\", COUNT(*) AS \"total\", COUNT(*) FILTER (WHERE \"agents\".\"created_at\" >= ?) AS \"recent\", AVG(\"agents\".\"score\") AS \"avg_score\" FROM \"agents\" WHERE \"agents\".\"deleted_at\" IS NULL GROUP BY \"agents\".\"status\" ORDER BY \"total\" DESC NULLS FIRST"
    );
    let tys: Vec<ColumnType> = s.columns.iter().map(|c| c.ty).collect();
    assert_eq!(
        tys,
        [
            ColumnType::Text,
            ColumnType::Integer,
            ColumnType::Integer,
            ColumnType::Float
        ]
    );
    let pg = sel(SqlDialect::Postgres, &q).statement.sql;
    assert!(pg.contains("AVG(CAST(\"agents\".\"score\" AS DOUBLE PRECISION))"));
    let bad = Query::new()
        .select(["name"])
        .select_item(SelectItem::aggregate(AggFunc::Count, None, "n"))
        .group_by("status");
    assert!(select(SqlDialect::Sqlite, &catalog(), "agents", &bad).is_err());
    let bad_sum = Query::new().select_item(SelectItem::aggregate(AggFunc::Sum, Some("name"), "s"));
    assert!(select(SqlDialect::Sqlite, &catalog(), "agents", &bad_sum).is_err());
}

#[test]
fn unknown_tables_and_columns() {
    let e = select(SqlDialect::Sqlite, &catalog(), "nope", &Query::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = select(
        SqlDialect::Sqlite,
        &catalog(),
        "agents",
        &Query::new().filter(col("zzz").eq(1)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("zzz"));
}

#[test]
fn hostile_identifiers_are_rejected_everywhere() {
    let cat = catalog();
    let d = SqlDialect::Sqlite;
    let bad = [
        select(d, &cat, HOSTILE, &Query::new()).unwrap_err(),
        select(d, &cat, "agents", &Query::new().select([HOSTILE])).unwrap_err(),
        select(d, &cat, "agents", &Query::new().order_by_asc(HOSTILE)).unwrap_err(),
        select(d, &cat, "agents", &Query::new().filter(col(HOSTILE).eq(1))).unwrap_err(),
        select(
            d,
            &cat,
            "agents",
            &Query::new().select([&format!("name as {HOSTILE}")]),
        )
        .unwrap_err(),
        insert(
            d,
            &cat,
            "agents",
            &[json!({ HOSTILE: 1 }).as_object().cloned().unwrap()],
        )
        .unwrap_err(),
        update(
            d,
            &cat,
            "agents",
            &json!({ HOSTILE: 1 }).as_object().cloned().unwrap(),
            &and([]),
        )
        .unwrap_err(),
        delete(d, &cat, HOSTILE, &and([])).unwrap_err(),
        drop_table(HOSTILE, true).unwrap_err(),
        create_index(&IndexSpec::new("agents", [HOSTILE])).unwrap_err(),
        alter_table(d, "agents", &AlterTable::DropColumn(HOSTILE.into())).unwrap_err(),
        create_table(
            d,
            &TableSchema::new(HOSTILE).column(ColumnDef::text("id").primary_key()),
        )
        .unwrap_err(),
    ];
    for e in bad {
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}

#[test]
fn hostile_values_only_appear_in_binds() {
    let cat = catalog();
    let q = Query::new()
        .filter(or([
            col("name").eq(HOSTILE),
            col("name").like(HOSTILE),
            col("status").is_in([HOSTILE]),
        ]))
        .after(Cursor(vec![json!(HOSTILE)]))
        .order_by_asc("name");
    let s = select(SqlDialect::Sqlite, &cat, "agents", &q).unwrap();
    assert!(!s.statement.sql.contains("DROP"));
    assert_eq!(s.statement.binds.len(), 4);
    let row = json!({"id": HOSTILE, "name": HOSTILE})
        .as_object()
        .cloned()
        .unwrap();
    let ins = insert(
        SqlDialect::Postgres,
        &cat,
        "agents",
        &[row.clone(), row.clone()],
    )
    .unwrap();
    assert_eq!(
        &*ins.sql,
        "INSERT INTO \"agents\" (\"id\", \"name\") VALUES ($1, $2), ($3, $4) RETURNING *"
    );
    assert!(ins.binds.iter().all(|b| b.value == json!(HOSTILE)));
    let up = update(
        SqlDialect::Sqlite,
        &cat,
        "agents",
        &row,
        &col("name").eq(HOSTILE),
    )
    .unwrap();
    assert!(!up.sql.contains("DROP"));
    assert_eq!(up.binds.len(), 3);
    let del = delete(SqlDialect::Sqlite, &cat, "agents", &col("name").eq(HOSTILE)).unwrap();
    assert_eq!(
        &*del.sql,
        "DELETE FROM \"agents\" WHERE \"agents\".\"name\" = ? RETURNING *"
    );
}

#[test]
fn writes_check_shapes() {
    let cat = catalog();
    let r = |v: Value| v.as_object().cloned().unwrap();
    assert!(insert(SqlDialect::Sqlite, &cat, "agents", &[]).is_err());
    let e = insert(
        SqlDialect::Sqlite,
        &cat,
        "agents",
        &[r(json!({"name": "a"})), r(json!({"status": "b"}))],
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = update(SqlDialect::Sqlite, &cat, "agents", &Row::new(), &and([])).unwrap_err();
    assert!(e.message().contains("at least one column"));
    let e = update(
        SqlDialect::Sqlite,
        &cat,
        "agents",
        &r(json!({"nope": 1})),
        &and([]),
    )
    .unwrap_err();
    assert!(e.message().contains("no column nope"));
    let schema = cat.schema("agents").unwrap();
    assert!(by_primary_key(schema, &Value::Null).is_err());
    assert_eq!(
        by_primary_key(schema, &json!("x")).unwrap(),
        col("id").eq("x")
    );
}

#[test]
fn ddl_per_dialect() {
    let cat = catalog();
    let agents = cat.schema("agents").unwrap();
    let s = create_table(SqlDialect::Sqlite, agents).unwrap();
    assert!(s[0].starts_with("CREATE TABLE \"agents\" (\"id\" TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)))"), "{}", s[0]);
    assert!(s[0].contains("\"status\" TEXT NOT NULL DEFAULT ('active')"));
    assert!(s[0].contains("\"created_at\" TEXT DEFAULT (strftime("));
    let metrics = cat.schema("metrics").unwrap();
    let s = create_table(SqlDialect::Sqlite, metrics).unwrap();
    assert!(s[0].contains("\"id\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"));
    let s = create_table(SqlDialect::Postgres, metrics).unwrap();
    assert!(s[0].contains("\"id\" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"));
    let uniq = TableSchema::new("r")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("k").unique().default_value("it's"))
        .column(ColumnDef::json("j").default_value(json!({"a": "'"})))
        .column(ColumnDef::bytes("b").default_value("aGk="))
        .column(ColumnDef::boolean("f").default_value(true))
        .if_not_exists();
    let s = create_table(SqlDialect::Sqlite, &uniq).unwrap();
    assert!(s[0].starts_with("CREATE TABLE IF NOT EXISTS \"r\""));
    assert!(s[0].contains("DEFAULT ('it''s')"), "{}", s[0]);
    assert!(s[0].contains("DEFAULT ('{\"a\":\"''\"}')"), "{}", s[0]);
    assert!(s[0].contains("DEFAULT (X'6869')"));
    assert!(s[0].contains("\"f\" INTEGER DEFAULT (1)"));
    assert_eq!(
        s[1],
        "CREATE UNIQUE INDEX IF NOT EXISTS \"r_k_key\" ON \"r\" (\"k\")"
    );
    let s = create_table(SqlDialect::Postgres, &uniq).unwrap();
    assert!(s[0].contains("\"f\" BOOLEAN DEFAULT (TRUE)"));
    assert!(s[0].contains("DEFAULT (E'\\\\x6869'::bytea)"), "{}", s[0]);
    assert!(s[0].contains("DEFAULT (E'it''s')"), "{}", s[0]);
    assert_eq!(drop_table("r", true).unwrap(), "DROP TABLE IF EXISTS \"r\"");
    assert_eq!(
        create_index(&IndexSpec::new("r", ["k", "id"]).unique()).unwrap(),
        "CREATE UNIQUE INDEX \"r_k_id_idx\" ON \"r\" (\"k\", \"id\")"
    );
}

#[test]
fn alter_table_statements() {
    let add_now = AlterTable::AddColumn(
        ColumnDef::timestamp("seen")
            .not_null()
            .default(ColumnDefault::Now),
    );
    let s = alter_table(SqlDialect::Sqlite, "agents", &add_now).unwrap();
    assert_eq!(s[0], "ALTER TABLE \"agents\" ADD COLUMN \"seen\" TEXT");
    assert!(s[1].starts_with("UPDATE \"agents\" SET \"seen\" = (strftime("));
    let s = alter_table(SqlDialect::Postgres, "agents", &add_now).unwrap();
    assert_eq!(
        s,
        ["ALTER TABLE \"agents\" ADD COLUMN \"seen\" TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP"]
    );
    let add_const = AlterTable::AddColumn(
        ColumnDef::integer("level")
            .not_null()
            .unique()
            .default_value(1),
    );
    let s = alter_table(SqlDialect::Sqlite, "agents", &add_const).unwrap();
    assert_eq!(
        s,
        [
            "ALTER TABLE \"agents\" ADD COLUMN \"level\" INTEGER NOT NULL DEFAULT (1)",
            "CREATE UNIQUE INDEX \"agents_level_key\" ON \"agents\" (\"level\")"
        ]
    );
    let s = alter_table(
        SqlDialect::Sqlite,
        "agents",
        &AlterTable::RenameColumn {
            from: "a".into(),
            to: "b".into(),
        },
    )
    .unwrap();
    assert_eq!(s, ["ALTER TABLE \"agents\" RENAME COLUMN \"a\" TO \"b\""]);
}

/// A default ending a plain literal where backslashes are escapes
/// (PostgreSQL with `standard_conforming_strings = off`).
#[test]
fn ddl_literals_are_safe_whatever_the_backslash_rules() {
    let evil = "\\' || current_user) --";
    let add = |d| {
        alter_table(
            d,
            "t",
            &AlterTable::AddColumn(ColumnDef::text("c").default_value(evil)),
        )
        .unwrap()
    };
    // PostgreSQL: an escape string, backslash and quote escaped, read the
    // same under either setting.
    assert_eq!(
        add(SqlDialect::Postgres),
        ["ALTER TABLE \"t\" ADD COLUMN \"c\" TEXT DEFAULT (E'\\\\'' || current_user) --')"]
    );
    // SQLite has no backslash escapes: a doubled quote is enough, the
    // backslash is an ordinary character.
    assert_eq!(
        add(SqlDialect::Sqlite),
        ["ALTER TABLE \"t\" ADD COLUMN \"c\" TEXT DEFAULT ('\\'' || current_user) --')"]
    );
    let json = TableSchema::new("j")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::json("j").default_value(json!({"k": evil})));
    let s = create_table(SqlDialect::Postgres, &json).unwrap();
    assert!(
        s[0].contains("DEFAULT (E'{\"k\":\"\\\\\\\\'' || current_user) --\"}'::jsonb)"),
        "{}",
        s[0]
    );
}

#[test]
fn foreign_keys_are_named_constraints_in_both_dialects() {
    let t = TableSchema::new("posts")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::integer("author_id"))
        .column(ColumnDef::integer("a"))
        .column(ColumnDef::integer("b"))
        .references("author_id", "users", "id")
        .foreign_key(ForeignKey::new(["a", "b"], "pairs", ["x", "y"]).named("pair_ref"));
    for dialect in [SqlDialect::Postgres, SqlDialect::Sqlite] {
        let ddl = create_table(dialect, &t).unwrap();
        assert!(
            ddl[0].ends_with(
                ", CONSTRAINT \"posts_author_id_fkey\" FOREIGN KEY (\"author_id\") REFERENCES \"users\" (\"id\"), \
                 CONSTRAINT \"pair_ref\" FOREIGN KEY (\"a\", \"b\") REFERENCES \"pairs\" (\"x\", \"y\"))"
            ),
            "{}",
            ddl[0]
        );
    }
}

#[test]
fn bad_foreign_keys_are_invalid_input() {
    let base = || {
        TableSchema::new("posts")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("author_id"))
    };
    let bad = [
        base().references("nope", "users", "id"),
        base().references("author_id", "users", "bad name"),
        base().references("author_id", "users; drop", "id"),
        base().foreign_key(ForeignKey::new(["author_id"], "users", ["id", "x"])),
        base().foreign_key(ForeignKey::new(
            Vec::<String>::new(),
            "users",
            Vec::<String>::new(),
        )),
        base()
            .references("author_id", "users", "id")
            .references("author_id", "users", "id"),
        base().references("author_id", "posts", "missing"),
    ];
    for t in bad {
        let e = create_table(SqlDialect::Postgres, &t).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{t:?}: {e}");
    }
    base()
        .references("author_id", "posts", "id")
        .validate()
        .expect("a reference to the table itself");
}

#[test]
fn renamed_columns_keep_their_references_and_stored_json_is_unchanged_without_any() {
    let mut t = TableSchema::new("nodes")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::integer("parent"))
        .references("parent", "nodes", "id");
    t.rename_column("id", "node_id");
    assert_eq!(t.foreign_keys[0].referenced_columns, ["node_id"]);
    t.rename_column("parent", "up");
    assert_eq!(t.foreign_keys[0].columns, ["up"]);
    assert_eq!(
        t.foreign_keys[0].resolved_name("nodes"),
        "nodes_parent_fkey"
    );
    assert_eq!(
        t.check_droppable("up").unwrap_err().kind(),
        crate::ErrorKind::InvalidInput
    );
    let plain = TableSchema::new("t").column(ColumnDef::integer("id").primary_key());
    let json = serde_json::to_string(&plain).unwrap();
    assert!(!json.contains("foreign_keys"), "{json}");
    let back: TableSchema = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plain);
}

fn docs_catalog() -> HashMap<String, TableSchema> {
    let docs = TableSchema::new("docs")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("body"))
        .column(ColumnDef::json("tags"));
    [(docs.name.clone(), docs)].into_iter().collect()
}

fn docs_where(d: SqlDialect, f: Filter) -> DbResult<Statement> {
    select(d, &docs_catalog(), "docs", &Query::new().filter(f)).map(|s| s.statement)
}

#[test]
fn json_operators_bind_every_value_and_key() {
    let value = json!({ HOSTILE: [HOSTILE, 1, true, null, {"k": 2.5}] });
    for d in [SqlDialect::Sqlite, SqlDialect::Postgres] {
        for f in [
            col("tags").contains(value.clone()),
            col("tags").contained_by(value.clone()),
            col("tags").overlaps([json!(HOSTILE), json!(3)]),
        ] {
            let s = docs_where(d, f).unwrap();
            assert!(!s.sql.contains("DROP"), "{d:?}: {}", s.sql);
            assert!(!s.binds.is_empty());
        }
    }
    let s = docs_where(SqlDialect::Postgres, col("tags").contains(json!(["a"]))).unwrap();
    assert!(
        s.sql.ends_with("WHERE to_jsonb(\"docs\".\"tags\") @> $1"),
        "{}",
        s.sql
    );
    assert_eq!(s.binds[0].ty, Some(ColumnType::Json));
    let s = docs_where(SqlDialect::Postgres, col("tags").contained_by(json!(["a"]))).unwrap();
    assert!(s.sql.contains("<@ $1"), "{}", s.sql);
}

#[test]
fn json_operators_need_a_json_column_and_valid_values() {
    for d in [SqlDialect::Sqlite, SqlDialect::Postgres] {
        let e = docs_where(d, col("body").contains(json!(["a"]))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("cs needs a json"), "{e}");
        let e = docs_where(d, col("tags").overlaps([json!({"a": 1})])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = docs_where(d, col("tags").contains(Value::Null)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn text_search_binds_config_and_query_on_postgres_only() {
    let f = col("body").text_search(HOSTILE, TextSearchKind::Websearch, Some("english"));
    let s = docs_where(SqlDialect::Postgres, f.clone()).unwrap();
    assert_eq!(
        s.sql.split(" WHERE ").nth(1).unwrap(),
        "to_tsvector($1::regconfig, \"docs\".\"body\") @@ websearch_to_tsquery($2::regconfig, $3)"
    );
    assert_eq!(
        s.values(),
        vec![json!("english"), json!("english"), json!(HOSTILE)]
    );
    let s = docs_where(
        SqlDialect::Postgres,
        col("body").text_search("fat & rat", TextSearchKind::Tsquery, None),
    )
    .unwrap();
    assert!(s
        .sql
        .ends_with("to_tsvector(\"docs\".\"body\") @@ to_tsquery($1)"));
    for kind in [TextSearchKind::Plain, TextSearchKind::Phrase] {
        let s = docs_where(
            SqlDialect::Postgres,
            col("body").text_search("a", kind, None),
        )
        .unwrap();
        assert!(s.sql.contains("to_tsquery($1)"), "{}", s.sql);
    }
    let e = docs_where(SqlDialect::Sqlite, f).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("wfts"), "{e}");
    for bad in [HOSTILE, "english'", "a.b.c", "", "1abc", "eng lish"] {
        let f = col("body").text_search("x", TextSearchKind::Plain, Some(bad));
        let e = docs_where(SqlDialect::Postgres, f).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
    }
    let f = col("body").text_search("x", TextSearchKind::Plain, Some("pg_catalog.english"));
    assert!(docs_where(SqlDialect::Postgres, f).is_ok());
    let f = col("tags").text_search("x", TextSearchKind::Plain, None);
    let e = docs_where(SqlDialect::Postgres, f).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn wide_json_values_compile_to_balanced_sql() {
    // A flat `AND`/`OR` chain over 999 elements would be 999 levels deep,
    // past SQLite's expression-depth limit (1,000); a balanced one is ~10.
    let many: Vec<Value> = (0..crate::MAX_JSON_OPERAND_NODES - 1)
        .map(|i| json!(i))
        .collect();
    for f in [
        col("tags").contains(Value::Array(many.clone())),
        col("tags").contained_by(Value::Array(many.clone())),
        col("tags").overlaps(many.clone()),
    ] {
        let s = docs_where(SqlDialect::Sqlite, f).unwrap();
        let (mut depth, mut deepest) = (0usize, 0usize);
        for c in s.sql.chars() {
            match c {
                '(' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        assert!(deepest < 40, "nesting {deepest}");
        assert!(!s.sql.contains("(1 AND") && !s.sql.contains("(0 OR"));
    }
    let mut more = many;
    more.push(json!("x"));
    let e = docs_where(SqlDialect::Sqlite, col("tags").overlaps(more)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let mut deep = json!(1);
    for _ in 0..=crate::MAX_JSON_OPERAND_DEPTH {
        deep = json!([deep]);
    }
    let e = docs_where(SqlDialect::Postgres, col("tags").contains(deep)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("too large"), "{e}");
}

/// A long `or` (1,000 terms) compiles to a tree SQLite accepts: halves in
/// parentheses, not a flat chain deeper than SQLite's expression limit.
#[test]
fn a_long_or_is_written_in_halves() {
    let q = Query::new().filter(or((0..1000).map(|i| col("score").eq(i))));
    let s = sel(SqlDialect::Sqlite, &q);
    assert_eq!(s.statement.sql.matches('?').count(), 1000);
    // Parenthesized halves; the deepest flat run is at most 16 terms.
    let longest_run = s
        .statement
        .sql
        .split(['(', ')'])
        .map(|run| run.matches(" OR ").count())
        .max()
        .unwrap_or(0);
    assert!(longest_run < 16, "{longest_run}: {}", s.statement.sql);
    let short = sel(
        SqlDialect::Sqlite,
        &Query::new().filter(or([
            col("score").eq(1),
            col("score").eq(2),
            col("score").eq(3),
        ])),
    );
    assert!(
        short.statement.sql.contains(
            "(\"agents\".\"score\" = ? OR \"agents\".\"score\" = ? OR \"agents\".\"score\" = ?)"
        ),
        "{}",
        short.statement.sql
    );
}
