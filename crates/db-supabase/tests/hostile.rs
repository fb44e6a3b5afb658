//! Hostile values in every filter position, against `truststream serve`
//! over db-memory, through a REST-only provider: the rows matched must be
//! exactly the rows the filter means, whatever characters the value holds.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use support::{row, HOSTILE};

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{
    and, col, not, or, ColumnDef, ColumnDefault, Database, Filter, Query, Row, TableSchema,
};

async fn setup() -> (support::Served, Arc<dyn Database>) {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    mem.create_table(
        &TableSchema::new("items")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("name"))
            .column(ColumnDef::integer("n")),
    )
    .await
    .expect("items");
    mem.create_table(
        &TableSchema::new("tags")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("n")),
    )
    .await
    .expect("tags");
    let served = support::serve(mem, vec![]).await.expect("serve");
    let db: Arc<dyn Database> = Arc::new(support::rest_only(&served));
    let rows: Vec<Row> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, v)| row(json!({"name": v, "n": i})))
        .chain([row(json!({"name": null, "n": -1}))])
        .collect();
    db.create_many("items", rows).await.expect("seed");
    (served, db)
}

async fn names(db: &Arc<dyn Database>, f: Filter) -> Result<BTreeSet<String>, String> {
    let rows = db
        .read("items", &Query::new().filter(f.clone()))
        .await
        .map_err(|e| format!("{f:?}: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("<null>").to_string())
        .collect())
}

fn set<'a>(vs: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    vs.into_iter().map(str::to_string).collect()
}

fn all_but(v: &str) -> BTreeSet<String> {
    set(HOSTILE.iter().copied().filter(|x| *x != v))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_in_every_filter_position() {
    let (_served, db) = setup().await;
    let other = "plain";
    for &v in HOSTILE {
        let one = set([v]);
        assert_eq!(
            names(&db, col("name").eq(v)).await.unwrap(),
            one,
            "eq {v:?}"
        );
        assert_eq!(
            names(&db, col("name").ne(v)).await.unwrap(),
            all_but(v),
            "ne {v:?}"
        );
        assert_eq!(
            names(&db, not(col("name").eq(v))).await.unwrap(),
            all_but(v),
            "not eq {v:?}"
        );
        assert_eq!(
            names(&db, and([col("name").gte(v), col("name").lte(v)]))
                .await
                .unwrap(),
            one,
            "gte/lte {v:?}"
        );
        assert_eq!(
            names(&db, col("name").is_in([v, other])).await.unwrap(),
            one,
            "in {v:?}"
        );
        assert_eq!(
            names(&db, col("name").not_in([v, other])).await.unwrap(),
            all_but(v),
            "not in {v:?}"
        );
        // Inside or=(...): an in-list and a plain comparison.
        assert_eq!(
            names(&db, or([col("name").is_in([v]), col("n").eq(-2)]))
                .await
                .unwrap(),
            one,
            "in inside or {v:?}"
        );
        assert_eq!(
            names(&db, or([col("name").eq(v), col("n").eq(-2)]))
                .await
                .unwrap(),
            one,
            "eq inside or {v:?}"
        );
        // like without wildcards: the value itself, or refused.
        let like = names(&db, col("name").like(v)).await;
        if v.contains(['*', '\\']) {
            let e = db
                .read("items", &Query::new().filter(col("name").like(v)))
                .await
                .expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "like {v:?}");
        } else if !v.contains(['%', '_']) {
            assert_eq!(like.unwrap(), one, "like {v:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_is_refused_everywhere() {
    let (_served, db) = setup().await;
    for f in [
        col("name").eq("a\0b"),
        col("name").is_in(["a\0"]),
        or([col("name").eq("\0"), col("n").eq(1)]),
    ] {
        let e = db
            .read("items", &Query::new().filter(f.clone()))
            .await
            .expect_err("NUL");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{f:?}");
        let e = db.delete_many("items", &f).await.expect_err("NUL");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{f:?}");
    }
    let e = db.get("tags", &json!("k\0")).await.expect_err("NUL key");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        db.read("items", &Query::new()).await.unwrap().len(),
        HOSTILE.len() + 1,
        "nothing was deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_primary_keys_and_writes() {
    let (_served, db) = setup().await;
    for (i, &k) in HOSTILE.iter().enumerate() {
        db.create("tags", row(json!({"id": k, "n": i})))
            .await
            .unwrap_or_else(|e| panic!("create {k:?}: {e}"));
    }
    for (i, &k) in HOSTILE.iter().enumerate() {
        let got = db.get("tags", &json!(k)).await.unwrap();
        assert_eq!(
            got.as_ref().and_then(|r| r["n"].as_i64()),
            Some(i as i64),
            "get {k:?}"
        );
        let upd = db
            .update("tags", &json!(k), row(json!({"n": 1000 + i})))
            .await
            .unwrap();
        assert_eq!(upd["id"], json!(k));
    }
    let rows = db.read("tags", &Query::new()).await.unwrap();
    assert!(rows.iter().all(|r| r["n"].as_i64().unwrap_or(0) >= 1000));
    // update_many / delete_many by hostile values change exactly one row.
    for &v in HOSTILE {
        let n = db
            .update_many("items", &col("name").eq(v), row(json!({"n": 7777})))
            .await
            .unwrap();
        assert_eq!(n, 1, "update_many {v:?}");
    }
    for &k in HOSTILE {
        assert!(db.delete("tags", &json!(k)).await.unwrap(), "delete {k:?}");
        assert!(
            !db.delete("tags", &json!(k)).await.unwrap(),
            "delete again {k:?}"
        );
    }
    for &v in HOSTILE {
        assert_eq!(
            db.delete_many("items", &col("name").eq(v)).await.unwrap(),
            1,
            "{v:?}"
        );
    }
    let left = db.read("items", &Query::new()).await.unwrap();
    assert_eq!(left.len(), 1, "only the null-named row is left: {left:?}");
}
