//! Foreign keys: a declared reference round-trips through
//! `describe_table`, follows a renamed column, keeps its column from being
//! dropped, and is enforced where `capabilities().foreign_keys` says so.

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{AlterTable, ColumnDef, Database, Filter, Query, TableSchema};

use super::{row, Db};
use crate::{ensure, ensure_eq, expect_kind, CaseResult};

fn users() -> TableSchema {
    TableSchema::new("fk_users")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name").not_null())
}

fn posts() -> TableSchema {
    TableSchema::new("fk_posts")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::integer("author_id"))
        .column(ColumnDef::text("title"))
        .references("author_id", "fk_users", "id")
}

/// `(columns, referenced table, referenced columns, constraint name)` of
/// each foreign key `describe_table` reports for `table`.
async fn described(
    db: &dyn Database,
    table: &str,
) -> Result<Vec<(Vec<String>, String, Vec<String>, String)>, crate::Failure> {
    let schema = db
        .describe_table(table)
        .await?
        .ok_or_else(|| format!("describe_table({table}) is None after create_table"))?;
    Ok(schema
        .foreign_keys
        .iter()
        .map(|fk| {
            (
                fk.columns.clone(),
                fk.referenced_table.clone(),
                fk.referenced_columns.clone(),
                fk.resolved_name(table),
            )
        })
        .collect())
}

fn one(columns: &str, name: &str) -> Vec<(Vec<String>, String, Vec<String>, String)> {
    vec![(
        vec![columns.to_string()],
        "fk_users".to_string(),
        vec!["id".to_string()],
        name.to_string(),
    )]
}

/// A table declaring `references(...)` is described with that foreign key
/// (the referenced table with none); renaming the column carries the
/// reference along under its original name; dropping it is `InvalidInput`.
/// With `foreign_keys`, a value with no referenced row and deleting or
/// re-keying a referenced row are `Conflict` and change nothing, NULL
/// references nothing, and a reference to a missing table is refused
/// (`InvalidInput`). Without it, declaring one is `Unsupported` (and no
/// table appears) or it is kept and described as declared.
pub(super) async fn foreign_keys(db: Db) -> CaseResult {
    let enforced = db.capabilities().foreign_keys;
    db.create_table(&users()).await?;
    let created = db.create_table(&posts()).await;
    if !enforced {
        if let Err(e) = created {
            ensure_eq!(
                e.kind(),
                ErrorKind::Unsupported,
                "declaring a reference without foreign_keys: {e}"
            );
            ensure!(
                db.describe_table("fk_posts").await?.is_none(),
                "a refused table does not appear"
            );
            return Ok(());
        }
    } else {
        created?;
    }
    ensure_eq!(
        described(&*db, "fk_posts").await?,
        one("author_id", "fk_posts_author_id_fkey"),
        "the declared reference, as described"
    );
    ensure!(
        described(&*db, "fk_users").await?.is_empty(),
        "the referenced table has no foreign key of its own"
    );
    db.alter_table(
        "fk_posts",
        &[AlterTable::RenameColumn {
            from: "author_id".into(),
            to: "writer_id".into(),
        }],
    )
    .await?;
    ensure_eq!(
        described(&*db, "fk_posts").await?,
        one("writer_id", "fk_posts_author_id_fkey"),
        "a renamed column keeps its reference (and the constraint its name)"
    );
    expect_kind(
        db.alter_table("fk_posts", &[AlterTable::DropColumn("writer_id".into())])
            .await,
        ErrorKind::InvalidInput,
        "dropping a column of a foreign key",
    )?;
    if !enforced {
        return Ok(());
    }

    db.create("fk_users", row(json!({"id": 1, "name": "ada"})))
        .await?;
    db.create(
        "fk_posts",
        row(json!({"id": 10, "writer_id": 1, "title": "hello"})),
    )
    .await?;
    db.create(
        "fk_posts",
        row(json!({"id": 11, "writer_id": null, "title": "anonymous"})),
    )
    .await?;
    expect_kind(
        db.create("fk_posts", row(json!({"id": 12, "writer_id": 99})))
            .await,
        ErrorKind::Conflict,
        "a value with no referenced row",
    )?;
    expect_kind(
        db.update("fk_posts", &json!(10), row(json!({"writer_id": 99})))
            .await,
        ErrorKind::Conflict,
        "updating to a value with no referenced row",
    )?;
    expect_kind(
        db.delete("fk_users", &json!(1)).await,
        ErrorKind::Conflict,
        "deleting a referenced row",
    )?;
    expect_kind(
        db.update("fk_users", &json!(1), row(json!({"id": 2})))
            .await,
        ErrorKind::Conflict,
        "re-keying a referenced row",
    )?;
    ensure_eq!(
        db.read("fk_posts", &Query::new()).await?.len(),
        2,
        "refused writes changed nothing"
    );
    ensure!(
        db.get("fk_users", &json!(1)).await?.is_some(),
        "the referenced row is still there"
    );
    // Children first, then the parent.
    db.delete_many("fk_posts", &Filter::And(vec![])).await?;
    ensure!(
        db.delete("fk_users", &json!(1)).await?,
        "an unreferenced row deletes"
    );
    expect_kind(
        db.create_table(
            &TableSchema::new("fk_orphans")
                .column(ColumnDef::integer("id").primary_key())
                .column(ColumnDef::integer("owner"))
                .references("owner", "fk_nowhere", "id"),
        )
        .await,
        ErrorKind::InvalidInput,
        "a reference to a missing table",
    )?;
    Ok(())
}
