//! `describe_table`: the schema a created table is described with.

use truststream_core_db::{ColumnType, TableSchema};

use super::{agents, agents_schema, Db};
use crate::{ensure, ensure_eq, CaseResult};

/// A created table is described with its columns (in order), their types,
/// nullability and the primary key; after `alter_table` the new column is
/// there; a missing table is `Ok(None)`.
pub(super) async fn describe_table(db: Db) -> CaseResult {
    ensure!(
        db.describe_table("agents").await?.is_none(),
        "a table not created yet is described as None"
    );
    agents(&db).await?;
    let expected = agents_schema();
    let got: TableSchema = db
        .describe_table("agents")
        .await?
        .ok_or_else(|| "describe_table(agents) is None after create_table".to_string())?;
    ensure_eq!(got.name, "agents", "described name");
    let shape = |s: &TableSchema| {
        s.columns
            .iter()
            .map(|c| (c.name.clone(), c.ty, c.nullable, c.primary_key))
            .collect::<Vec<_>>()
    };
    ensure_eq!(
        shape(&got),
        shape(&expected),
        "columns (name, type, nullable, primary key) in order"
    );
    ensure_eq!(
        got.primary_key().map(|c| c.name.as_str()),
        Some("id"),
        "primary key"
    );
    db.alter_table(
        "agents",
        &[truststream_core_db::AlterTable::AddColumn(
            truststream_core_db::ColumnDef::integer("level"),
        )],
    )
    .await?;
    let after = db
        .describe_table("agents")
        .await?
        .ok_or_else(|| "describe_table(agents) is None after alter_table".to_string())?;
    ensure_eq!(
        after.find("level").map(|c| c.ty),
        Some(ColumnType::Integer),
        "a column added by alter_table is described"
    );
    ensure!(
        db.describe_table("no_such_table").await?.is_none(),
        "a missing table is described as None"
    );
    db.drop_table("agents", false).await?;
    ensure!(
        db.describe_table("agents").await?.is_none(),
        "a dropped table is described as None"
    );
    Ok(())
}
