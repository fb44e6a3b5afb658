//! Bulk loads: `insert_many` stores exactly what `create_many` stores for
//! the same input (every column type, values a text format must escape,
//! defaults, a database-assigned key), all or none; and
//! `AlterTable::AddForeignKey`, which a bulk load uses to check its
//! references once after the rows, where `add_foreign_keys` says so.

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{
    AlterTable, ColumnDef, ColumnDefault, ForeignKey, Query, Row, TableSchema, Value,
};

use super::{row, Db};
use crate::{ensure, ensure_eq, expect_kind, CaseResult};

/// A table with a column of every type, a constant and a `now` default.
fn every_type(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("t"))
        .column(ColumnDef::integer("n"))
        .column(ColumnDef::float("f"))
        .column(ColumnDef::boolean("b"))
        .column(ColumnDef::timestamp("ts"))
        .column(ColumnDef::uuid("u"))
        .column(ColumnDef::json("j"))
        .column(ColumnDef::bytes("raw"))
        .column(ColumnDef::numeric("d"))
        .column(ColumnDef::text("status").not_null().default_value("active"))
        .column(
            ColumnDef::timestamp("created_at")
                .not_null()
                .default(ColumnDefault::Now),
        )
}

/// Rows whose values a text wire format has to escape or spell exactly.
fn awkward_rows() -> Vec<Row> {
    let mut rows = vec![
        row(json!({
            "id": 1,
            "t": "tab\there\nnew line\\back slash\rcr \\N \"q\" 'a' données ✓ 😀",
            "n": i64::MAX, "f": 0.1, "b": true,
            "ts": "1999-12-31T23:59:59.999999Z",
            "u": "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "j": {"s": "line\nbreak\\ \t", "n": [1, 2.5, null, -0.0], "u": "é", "e": {}},
            "raw": "AAEC/1wJCg0=",
            "d": "12345678901234567890.123456789",
            "status": "paused",
        })),
        row(json!({
            "id": 2,
            "t": "", "n": i64::MIN + 1, "f": 1e300, "b": false,
            "ts": "0001-01-01T00:00:00Z",
            "j": "a JSON string with a \\N",
            "raw": "",
            "d": -0.5,
        })),
        row(json!({"id": 3, "f": -2.5e-300, "j": [], "ts": "9999-12-31T23:59:59.000001+02:00"})),
        // Every nullable column NULL (JSON null is stored as NULL too).
        row(
            json!({"id": 4, "t": null, "n": null, "f": null, "b": null, "ts": null,
                   "u": null, "j": null, "raw": null, "d": null}),
        ),
    ];
    rows.extend((5..300).map(|i| {
        row(
            json!({"id": i, "t": format!("row {i}\t{i}"), "n": i * 7, "f": f64::from(i) / 3.0,
                   "j": {"i": i}, "raw": "3q2+7w=="}),
        )
    }));
    rows
}

/// The rows of `table` by key, without `created_at` (a `now` default,
/// different for two calls) but checking it was filled in.
async fn stored(db: &Db, table: &str) -> Result<Vec<Row>, crate::Failure> {
    let mut rows = db.read(table, &Query::new().order_by_asc("id")).await?;
    for r in &mut rows {
        let at = r.shift_remove("created_at");
        ensure!(
            at.as_ref().is_some_and(Value::is_string),
            "created_at filled in: {at:?}"
        );
    }
    Ok(rows)
}

/// `insert_many` returns how many rows it stored, and stores what
/// `create_many` stores for the same input, also for values a bulk path's
/// text format must escape; an empty batch is a no-op.
pub(super) async fn insert_many_stores_what_create_many_does(db: Db) -> CaseResult {
    db.create_table(&every_type("bulk_copy")).await?;
    db.create_table(&every_type("bulk_ref")).await?;
    let rows = awkward_rows();
    let n = rows.len() as u64;
    ensure_eq!(db.insert_many("bulk_copy", rows.clone()).await?, n);
    db.create_many("bulk_ref", rows).await?;
    let (copied, reference) = (
        stored(&db, "bulk_copy").await?,
        stored(&db, "bulk_ref").await?,
    );
    ensure_eq!(copied.len(), reference.len());
    for (c, r) in copied.iter().zip(&reference) {
        ensure_eq!(c, r, "insert_many and create_many store the same row");
    }
    ensure_eq!(
        db.insert_many("bulk_copy", Vec::new()).await?,
        0,
        "empty batch"
    );
    Ok(())
}

/// A key the database assigns: left out of every row, or given in some
/// rows only (the rows then give different columns); the assigned keys are
/// distinct and the given one is kept.
pub(super) async fn insert_many_generated_keys(db: Db) -> CaseResult {
    let auto = TableSchema::new("bulk_auto")
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::text("name").not_null());
    db.create_table(&auto).await?;
    let named = |n: &str| row(json!({ "name": n }));
    ensure_eq!(
        db.insert_many("bulk_auto", vec![named("a"), named("b")])
            .await?,
        2
    );
    ensure_eq!(
        db.insert_many(
            "bulk_auto",
            vec![named("c"), row(json!({"id": 1000, "name": "d"}))]
        )
        .await?,
        2
    );
    let all = db
        .read("bulk_auto", &Query::new().order_by_asc("name"))
        .await?;
    let ids: Vec<i64> = all
        .iter()
        .map(|r| r.get("id").and_then(Value::as_i64).unwrap_or(-1))
        .collect();
    ensure_eq!(all.len(), 4);
    ensure!(
        ids.iter().all(|i| *i > 0) && ids[3] == 1000,
        "assigned and given keys: {ids:?}"
    );
    let distinct: std::collections::HashSet<i64> = ids.iter().copied().collect();
    ensure_eq!(distinct.len(), 4, "distinct keys: {ids:?}");
    Ok(())
}

/// `insert_many` is all or none, as `create_many`: a duplicate key in the
/// batch or against a stored row is `Conflict`, a value of the wrong type
/// or a missing NOT NULL value `InvalidInput`, a missing table `NotFound`;
/// none of them stores a row.
pub(super) async fn insert_many_all_or_nothing(db: Db) -> CaseResult {
    // Each batch twice: as given, and padded past the size from which a
    // provider's bulk copy takes it (`sql::write::COPY_MIN_ROWS`), so both
    // of a provider's insert paths refuse the same batches.
    let padding = truststream_core_db::sql::write::COPY_MIN_ROWS as i64;
    for (table, pad) in [("bulk_atomic", 0), ("bulk_atomic_big", padding)] {
        db.create_table(&every_type(table)).await?;
        let some = |ids: &[i64]| -> Vec<Row> {
            ids.iter()
                .copied()
                .chain(1000..1000 + pad)
                .map(|i| row(json!({"id": i, "t": format!("r{i}")})))
                .collect()
        };
        let count = |db: Db| async move {
            Ok::<_, crate::Failure>(db.read(table, &Query::new()).await?.len())
        };
        expect_kind(
            db.insert_many(table, some(&[1, 2, 3, 2])).await,
            ErrorKind::Conflict,
            "a duplicate key inside the batch",
        )?;
        ensure_eq!(count(db.clone()).await?, 0, "nothing stored");
        let mut bad = some(&[1, 2, 3]);
        bad[2].insert("n".into(), json!("seven"));
        expect_kind(
            db.insert_many(table, bad).await,
            ErrorKind::InvalidInput,
            "a value of the wrong type",
        )?;
        let mut missing = some(&[1, 2]);
        missing[1].insert("status".into(), Value::Null);
        expect_kind(
            db.insert_many(table, missing).await,
            ErrorKind::InvalidInput,
            "NULL for a NOT NULL column",
        )?;
        ensure_eq!(count(db.clone()).await?, 0, "nothing stored");
        db.insert_many(table, vec![row(json!({"id": 10, "t": "r10"}))])
            .await?;
        expect_kind(
            db.insert_many(table, some(&[11, 12, 10, 13])).await,
            ErrorKind::Conflict,
            "a key already stored",
        )?;
        ensure_eq!(count(db.clone()).await?, 1, "only the first row stays");
    }
    expect_kind(
        db.insert_many("bulk_nowhere", vec![row(json!({"id": 1, "t": "r1"}))])
            .await,
        ErrorKind::NotFound,
        "a missing table",
    )?;
    Ok(())
}

fn parents() -> TableSchema {
    TableSchema::new("afk_parents")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name"))
}

fn children() -> TableSchema {
    TableSchema::new("afk_children")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::integer("parent_id"))
}

/// With `add_foreign_keys`: adding a foreign key that a stored row breaks
/// is `Conflict` and adds nothing; once the rows agree it is added,
/// described and enforced; a second one of the same name and one to a
/// missing table are `InvalidInput`. Without it: `Unsupported`,
/// and the table is as before.
pub(super) async fn add_foreign_keys(db: Db) -> CaseResult {
    db.create_table(&parents()).await?;
    db.create_table(&children()).await?;
    db.create("afk_parents", row(json!({"id": 1, "name": "p"})))
        .await?;
    db.create("afk_children", row(json!({"id": 1, "parent_id": 1})))
        .await?;
    db.create("afk_children", row(json!({"id": 2, "parent_id": 99})))
        .await?;
    let fk = ForeignKey::new(["parent_id"], "afk_parents", ["id"]);
    let add = |db: Db, fk: ForeignKey| async move {
        db.alter_table("afk_children", &[AlterTable::AddForeignKey(fk)])
            .await
    };
    let keys = |db: Db| async move {
        Ok::<_, crate::Failure>(
            db.describe_table("afk_children")
                .await?
                .map(|s| s.foreign_keys.len())
                .unwrap_or(usize::MAX),
        )
    };
    if !db.capabilities().add_foreign_keys {
        expect_kind(
            add(db.clone(), fk).await,
            ErrorKind::Unsupported,
            "AddForeignKey without add_foreign_keys",
        )?;
        ensure_eq!(keys(db.clone()).await?, 0, "no foreign key added");
        return Ok(());
    }
    expect_kind(
        add(db.clone(), fk.clone()).await,
        ErrorKind::Conflict,
        "a stored row references nothing",
    )?;
    ensure_eq!(keys(db.clone()).await?, 0, "a refused key is not added");
    db.update("afk_children", &json!(2), row(json!({"parent_id": null})))
        .await?;
    add(db.clone(), fk.clone()).await?;
    let described = db
        .describe_table("afk_children")
        .await?
        .ok_or_else(|| "afk_children is described".to_string())?;
    ensure_eq!(described.foreign_keys.len(), 1);
    ensure_eq!(
        described.foreign_keys[0].resolved_name("afk_children"),
        "afk_children_parent_id_fkey"
    );
    expect_kind(
        db.create("afk_children", row(json!({"id": 3, "parent_id": 42})))
            .await,
        ErrorKind::Conflict,
        "the added key is enforced",
    )?;
    expect_kind(
        add(db.clone(), fk).await,
        ErrorKind::InvalidInput,
        "a second foreign key of the same name",
    )?;
    expect_kind(
        add(
            db.clone(),
            ForeignKey::new(["parent_id"], "afk_nowhere", ["id"]).named("afk_other"),
        )
        .await,
        ErrorKind::InvalidInput,
        "a reference to a missing table",
    )?;
    Ok(())
}
