//! The JSON document operators (`cs`, `cd`, `ov`) and full-text search
//! (`fts`, `plfts`, `phfts`, `wfts`): the semantics every provider that
//! declares `json_containment` / `full_text_search` must give (PostgreSQL's
//! `jsonb @>` / `<@`, array overlap, `to_tsvector @@ *to_tsquery`), and the
//! `Unsupported` answer of one that does not.

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{
    and, col, not, or, ColumnDef, Filter, Query, TableSchema, TextSearchKind, Value,
};

use super::{row, Db};
use crate::{ensure_eq, expect_kind, CaseResult, Failure};

fn docs_schema() -> TableSchema {
    TableSchema::new("docs")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::json("tags"))
        .column(ColumnDef::json("meta"))
        .column(ColumnDef::text("body"))
}

/// `docs` with rows covering arrays, nested arrays, objects, a top-level
/// scalar, numbers written differently and NULLs.
async fn docs(db: &Db) -> CaseResult {
    db.create_table(&docs_schema()).await?;
    let rows = [
        json!({"id": 1, "tags": ["a", "b"], "meta": {"k": 1, "nested": {"x": [1, 2]}},
               "body": "The quick brown fox jumps over the lazy dog"}),
        json!({"id": 2, "tags": ["b", "c"], "meta": {"k": 2},
               "body": "Cats are jumping on the sofa"}),
        json!({"id": 3, "tags": [], "meta": {}, "body": "A lazy cat sleeps"}),
        json!({"id": 4, "tags": null, "meta": null, "body": null}),
        json!({"id": 5, "tags": ["a", ["n"]], "meta": {"k": 1.0}, "body": "nothing here"}),
        json!({"id": 6, "tags": "a", "meta": [1], "body": "just a fox"}),
    ];
    db.create_many("docs", rows.into_iter().map(row).collect())
        .await?;
    Ok(())
}

/// The ids of the rows matching `f`, sorted.
async fn ids(db: &Db, f: Filter) -> Result<Vec<i64>, Failure> {
    let mut ids: Vec<i64> = db
        .read("docs", &Query::new().filter(f))
        .await?
        .iter()
        .filter_map(|r| r.get("id").and_then(Value::as_i64))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// `cs`, `cd` and `ov` on arrays, objects, nested values and a top-level
/// scalar, with `jsonb`'s rules; NULL is unknown (neither a match nor a
/// match of the negation); they combine with `and`/`or`/`not`, drive
/// filtered writes, and refuse a non-JSON column or an `ov` list that is
/// not of scalars.
pub(super) async fn json_containment(db: Db) -> CaseResult {
    docs(&db).await?;
    let t = || col("tags");
    let m = || col("meta");
    ensure_eq!(ids(&db, t().contains(json!(["a"]))).await?, [1, 5]);
    ensure_eq!(ids(&db, t().contains(json!(["b", "a"]))).await?, [1]);
    ensure_eq!(
        ids(&db, t().contains(json!("a"))).await?,
        [1, 5, 6],
        "a top-level array contains a scalar element; a scalar contains itself"
    );
    ensure_eq!(ids(&db, t().contains(json!([]))).await?, [1, 2, 3, 5]);
    ensure_eq!(ids(&db, t().contains(json!([["n"]]))).await?, [5]);
    ensure_eq!(
        ids(&db, t().contains(json!(["n"]))).await?,
        Vec::<i64>::new(),
        "a nested array's element is not an element"
    );
    ensure_eq!(
        ids(&db, not(t().contains(json!(["a"])))).await?,
        [2, 3, 6],
        "not(cs) leaves the NULL row out"
    );
    ensure_eq!(
        ids(&db, t().contained_by(json!(["a", "b", "c"]))).await?,
        [1, 2, 3, 6]
    );
    ensure_eq!(
        ids(&db, m().contains(json!({"k": 1}))).await?,
        [1, 5],
        "1 = 1.0"
    );
    ensure_eq!(
        ids(&db, m().contains(json!({"nested": {"x": [2]}}))).await?,
        [1]
    );
    ensure_eq!(ids(&db, m().contains(json!({}))).await?, [1, 2, 3, 5]);
    ensure_eq!(
        ids(
            &db,
            m().contained_by(json!({"k": 1, "nested": {"x": [1, 2, 3]}}))
        )
        .await?,
        [1, 3, 5]
    );
    ensure_eq!(ids(&db, m().contains(json!([1]))).await?, [6]);
    ensure_eq!(ids(&db, t().overlaps(["c", "z"])).await?, [2]);
    ensure_eq!(
        ids(&db, t().overlaps(["a"])).await?,
        [1, 5],
        "ov: a non-array never overlaps"
    );
    ensure_eq!(ids(&db, not(t().overlaps(["a"]))).await?, [2, 3, 6]);
    ensure_eq!(ids(&db, m().overlaps([1])).await?, [6]);
    ensure_eq!(
        ids(
            &db,
            or([t().contains(json!(["c"])), m().contains(json!({"k": 1}))])
        )
        .await?,
        [1, 2, 5]
    );
    ensure_eq!(
        ids(
            &db,
            and([
                t().contains(json!(["b"])),
                not(m().contains(json!({"k": 2})))
            ])
        )
        .await?,
        [1]
    );
    // Values as wide as core-db accepts work everywhere (SQLite unrolls
    // them into SQL, whose expression depth is limited); wider or deeper
    // ones are refused as bad input, never a database failure.
    let wide = |first: &[&str]| -> Vec<Value> {
        let mut v: Vec<Value> = first.iter().map(|s| json!(s)).collect();
        let n = truststream_core_db::MAX_JSON_OPERAND_NODES - 1 - v.len();
        v.extend((0..n).map(|i| json!(1000 + i)));
        v
    };
    ensure_eq!(
        ids(&db, t().overlaps(wide(&["a"]))).await?,
        [1, 5],
        "ov with a list as long as allowed"
    );
    ensure_eq!(
        ids(&db, t().contained_by(Value::Array(wide(&["a", "b", "c"])))).await?,
        [1, 2, 3, 6],
        "cd with an array as long as allowed"
    );
    ensure_eq!(
        ids(&db, t().contains(Value::Array(wide(&["a"])))).await?,
        Vec::<i64>::new(),
        "cs with an array as long as allowed"
    );
    let mut deep = json!(["n"]);
    for _ in 1..truststream_core_db::MAX_JSON_OPERAND_DEPTH {
        deep = json!([deep]);
    }
    ensure_eq!(
        ids(&db, t().contains(deep.clone())).await?,
        Vec::<i64>::new(),
        "cs with a value as deep as allowed"
    );
    expect_kind(
        db.read("docs", &Query::new().filter(t().contains(json!([deep]))))
            .await,
        ErrorKind::InvalidInput,
        "cs with a value nested too deep",
    )?;
    let mut too_wide = wide(&["a"]);
    too_wide.push(json!("z"));
    expect_kind(
        db.read("docs", &Query::new().filter(t().overlaps(too_wide)))
            .await,
        ErrorKind::InvalidInput,
        "ov with a list longer than allowed",
    )?;
    let changed = db
        .update_many(
            "docs",
            &t().contains(json!(["c"])),
            row(json!({"body": "changed"})),
        )
        .await?;
    ensure_eq!(changed, 1, "update_many with cs");
    ensure_eq!(ids(&db, col("body").eq("changed")).await?, [2]);
    ensure_eq!(
        db.delete_many("docs", &t().overlaps(["a"])).await?,
        2,
        "delete_many with ov"
    );
    expect_kind(
        db.read(
            "docs",
            &Query::new().filter(col("body").contains(json!(["a"]))),
        )
        .await,
        ErrorKind::InvalidInput,
        "cs on a text column",
    )?;
    expect_kind(
        db.read(
            "docs",
            &Query::new().filter(t().overlaps([json!({"a": 1})])),
        )
        .await,
        ErrorKind::InvalidInput,
        "ov with an object in its list",
    )?;
    expect_kind(
        db.read("docs", &Query::new().filter(t().contains(Value::Null)))
            .await,
        ErrorKind::InvalidInput,
        "cs null",
    )?;
    Ok(())
}

fn search(query: &str, kind: TextSearchKind, config: Option<&str>) -> Filter {
    col("body").text_search(query, kind, config)
}

/// Full-text search with PostgreSQL's meaning: stemming (`jumping` finds
/// `jumps`), phrases in order, web-search `-` and `or`, tsquery operators;
/// NULL is unknown; the configuration is a checked name (a hostile one and
/// an unknown one are `InvalidInput`, as is a tsquery syntax error and a
/// search of a JSON column).
pub(super) async fn full_text_search(db: Db) -> CaseResult {
    use TextSearchKind::{Phrase, Plain, Tsquery, Websearch};
    docs(&db).await?;
    let en = Some("english");
    ensure_eq!(ids(&db, search("jumping cats", Plain, en)).await?, [2]);
    ensure_eq!(ids(&db, search("lazy", Plain, en)).await?, [1, 3]);
    ensure_eq!(ids(&db, search("lazy dog", Phrase, en)).await?, [1]);
    ensure_eq!(
        ids(&db, search("dog lazy", Phrase, en)).await?,
        Vec::<i64>::new()
    );
    ensure_eq!(ids(&db, search("lazy -dog", Websearch, en)).await?, [3]);
    ensure_eq!(
        ids(&db, search("fox or sofa", Websearch, en)).await?,
        [1, 2, 6]
    );
    ensure_eq!(ids(&db, search("cat & !lazy", Tsquery, en)).await?, [2]);
    ensure_eq!(
        ids(&db, search("quick | sleep:*", Tsquery, en)).await?,
        [1, 3]
    );
    ensure_eq!(
        ids(&db, search("fox", Plain, Some("pg_catalog.simple"))).await?,
        [1, 6]
    );
    ensure_eq!(
        ids(&db, search("fox", Plain, None)).await?,
        [1, 6],
        "default config"
    );
    ensure_eq!(
        ids(&db, not(search("lazy", Plain, en))).await?,
        [2, 5, 6],
        "not(fts) leaves the NULL row out"
    );
    for (what, f) in [
        (
            "a hostile config",
            search("x", Plain, Some("english'); DROP TABLE docs; --")),
        ),
        (
            "an unknown config",
            search("x", Plain, Some("no_such_config")),
        ),
        ("a tsquery syntax error", search("cat dog", Tsquery, en)),
        ("a JSON column", col("tags").text_search("a", Plain, None)),
    ] {
        expect_kind(
            db.read("docs", &Query::new().filter(f)).await,
            ErrorKind::InvalidInput,
            what,
        )?;
    }
    ensure_eq!(
        ids(&db, col("id").gt(0)).await?.len(),
        6,
        "the table is intact"
    );
    Ok(())
}

/// `json_containment` tells the truth: `cs` is served, or `Unsupported`.
pub(super) async fn json_containment_flag(db: Db) -> CaseResult {
    docs(&db).await?;
    let q = Query::new().filter(col("tags").contains(json!(["a"])));
    let r = db.read("docs", &q).await;
    if db.capabilities().json_containment {
        ensure_eq!(r?.len(), 2);
    } else {
        let e = r
            .err()
            .ok_or_else(|| "cs without json_containment succeeded".to_string())?;
        ensure_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    }
    Ok(())
}

/// `full_text_search` tells the truth: `plfts` is served, or
/// `Unsupported` naming the operator.
pub(super) async fn full_text_search_flag(db: Db) -> CaseResult {
    docs(&db).await?;
    let q = Query::new().filter(search("lazy", TextSearchKind::Plain, Some("english")));
    let r = db.read("docs", &q).await;
    if db.capabilities().full_text_search {
        ensure_eq!(r?.len(), 2);
    } else {
        let e = r
            .err()
            .ok_or_else(|| "plfts without full_text_search succeeded".to_string())?;
        ensure_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        crate::ensure!(e.message().contains("plfts"), "the error names plfts: {e}");
    }
    Ok(())
}
