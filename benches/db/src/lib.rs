//! What the database bench (`benches/db.rs`) and its callgrind probe
//! (`examples/rows.rs`) share, so both time the same work: the table, its
//! rows (as JSON for the provider, as typed tuples for raw sqlx), the SQL
//! text the provider's compiler makes, and the raw sqlx side of the
//! multi-row paths (`createMany` of [`BATCH`] rows, the filtered and
//! ordered read of 50 rows). See docs/benchmarks.md.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::FromRow as _;
use truststream_core_db::sql::compile::{self, SqlDialect};
use truststream_core_db::{col, ColumnDef, Database, Query, Row, SortDirection, TableSchema};
use truststream_db_postgres::testing::Scratch;
use truststream_db_postgres::PgDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

/// Rows per `createMany` batch.
pub const BATCH: usize = 10_000;

/// Rows each table holds before the timed operations (keys `1..=SEED`).
pub const SEED: i64 = 1000;

/// One row of the bench table as the raw side binds and decodes it:
/// `(id, name, score, status)`.
pub type Agent = (i64, String, Option<f64>, Option<String>);

/// A result row of the bench table decoded into an [`Agent`] (by
/// position, as sqlx's `Row::get`).
///
/// # Panics
/// When a column does not decode.
pub fn agent_of<R>(r: &R) -> Agent
where
    R: sqlx::Row,
    Agent: for<'a> sqlx::FromRow<'a, R>,
{
    Agent::from_row(r).unwrap()
}

/// A JSON object as a [`Row`].
///
/// # Panics
/// When `v` is not an object.
pub fn row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        other => panic!("rows are objects, got {other}"),
    }
}

/// The bench table: `id` integer key, `name` text not null, `score` float,
/// `status` text.
pub fn schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::float("score"))
        .column(ColumnDef::text("status"))
}

/// The typed values of row `id` (the raw side's input).
pub fn agent(id: i64) -> Agent {
    (
        id,
        format!("agent-{id}"),
        Some((id % 100) as f64 + 0.5),
        Some(if id % 3 == 0 { "inactive" } else { "active" }.to_string()),
    )
}

/// Row `id` as the provider takes it: the values of [`agent`] as JSON.
pub fn input(id: i64) -> Row {
    let (id, name, score, status) = agent(id);
    row(json!({"id": id, "name": name, "score": score, "status": status}))
}

/// The filtered, ordered read of 50 rows.
pub fn read50_query() -> Query {
    Query::new()
        .filter(col("status").eq("active").and(col("score").gt(10.0)))
        .order_by("score", SortDirection::Desc)
        .order_by("id", SortDirection::Asc)
        .limit(50)
}

fn catalog(table: &str) -> HashMap<String, TableSchema> {
    [(table.to_string(), schema(table))].into()
}

/// The SQL the provider's compiler makes for each single-row operation and
/// the 50-row read, for the raw side to run verbatim.
pub struct Sql {
    /// Insert of one row, `RETURNING *`.
    pub insert: String,
    /// Select by primary key.
    pub select: String,
    /// Update of `score` by primary key, `RETURNING *`.
    pub update: String,
    /// [`read50_query`] (binds: `"active"`, `10.0`).
    pub read50: String,
}

/// The statements of [`Sql`] for `table` in `dialect`.
///
/// # Panics
/// When the compiler refuses one (a bench bug).
pub fn sql_for(dialect: SqlDialect, table: &str) -> Sql {
    let cat = catalog(table);
    let insert = compile::insert(dialect, &cat, table, &[input(1)])
        .unwrap()
        .sql;
    let select = compile::select(
        dialect,
        &cat,
        table,
        &Query::new().filter(col("id").eq(1)).limit(1),
    )
    .unwrap()
    .statement
    .sql;
    let patch = row(json!({"score": 1.0}));
    let update = compile::update(dialect, &cat, table, &patch, &col("id").eq(1))
        .unwrap()
        .sql;
    let read50 = compile::select(dialect, &cat, table, &read50_query())
        .unwrap()
        .statement
        .sql;
    Sql {
        insert: insert.to_string(),
        select: select.to_string(),
        update: update.to_string(),
        read50: read50.to_string(),
    }
}

/// Multi-row INSERT text as the provider chunks a `createMany` of
/// [`BATCH`] rows: chunks of [`BatchSql::rows`] rows (the dialect's bind
/// limit over four columns), the last one shorter; both texts made before
/// any timing, as the provider's statement cache keeps its shapes.
pub struct BatchSql {
    /// Rows per full chunk.
    pub rows: usize,
    full: String,
    tail: String,
}

impl BatchSql {
    /// The chunks of `dialect` into `bench_raw`.
    ///
    /// # Panics
    /// When the compiler refuses them (a bench bug).
    pub fn new(dialect: SqlDialect) -> Self {
        let rows = (dialect.max_binds() / 4).min(BATCH);
        let text = |n: usize| {
            if n == 0 {
                return String::new();
            }
            let rows: Vec<Row> = (0..n as i64).map(input).collect();
            compile::insert(dialect, &catalog("bench_raw"), "bench_raw", &rows)
                .unwrap()
                .sql
                .to_string()
        };
        BatchSql {
            rows,
            full: text(rows),
            tail: text(BATCH % rows),
        }
    }

    /// The INSERT of a chunk of `n` rows of a [`BATCH`].
    ///
    /// # Panics
    /// When `n` is neither a full chunk nor the last one.
    pub fn sql(&self, n: usize) -> &str {
        if n == self.rows {
            &self.full
        } else {
            assert_eq!(n, BATCH % self.rows, "a chunk of a {BATCH}-row batch");
            &self.tail
        }
    }
}

/// Creates `table` and fills it with rows `1..=SEED` through the provider.
///
/// # Panics
/// When a write fails.
pub async fn seed(db: &dyn Database, table: &str) {
    db.create_table(&schema(table)).await.unwrap();
    let rows: Vec<Row> = (1..=SEED).map(input).collect();
    db.create_many(table, rows).await.unwrap();
}

/// The raw sqlx side of the multi-row paths, written once for both
/// backends (`$begin` opens the transaction as the provider does).
macro_rules! raw_side {
    ($pool:ty, $conn:ty, $begin:expr) => {
        /// Inserts `rows` as the provider's `createMany` does (multi-row
        /// `INSERT ... RETURNING *` chunks of the same SQL; in one
        /// transaction when there is more than one chunk, a single
        /// statement on its own otherwise, as the provider runs it) and
        /// decodes every returned row into an [`Agent`], as the provider
        /// decodes them into JSON rows.
        ///
        /// # Panics
        /// When a statement fails.
        pub async fn create_many(pool: &$pool, b: &BatchSql, rows: Vec<Agent>) -> Vec<Agent> {
            if rows.len() <= b.rows {
                let mut conn = pool.acquire().await.unwrap();
                return insert_chunks(&mut conn, b, rows).await;
            }
            let mut tx = $begin(pool).await.unwrap();
            let out = insert_chunks(&mut tx, b, rows).await;
            tx.commit().await.unwrap();
            out
        }

        async fn insert_chunks(conn: &mut $conn, b: &BatchSql, rows: Vec<Agent>) -> Vec<Agent> {
            let mut out = Vec::with_capacity(rows.len());
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<Agent> = rows.by_ref().take(b.rows).collect();
                let mut q = sqlx::query(b.sql(chunk.len()));
                for (id, name, score, status) in chunk {
                    q = q.bind(id).bind(name).bind(score).bind(status);
                }
                for r in q.fetch_all(&mut *conn).await.unwrap() {
                    out.push(agent_of(&r));
                }
            }
            out
        }

        /// [`read50_query`] with the provider's SQL, each row decoded into
        /// an [`Agent`].
        ///
        /// # Panics
        /// When the query fails or does not return 50 rows.
        pub async fn read50(pool: &$pool, sql: &Sql) -> Vec<Agent> {
            let rows = sqlx::query(&sql.read50)
                .bind("active")
                .bind(10.0f64)
                .fetch_all(pool)
                .await
                .unwrap();
            assert_eq!(rows.len(), 50);
            rows.iter().map(agent_of).collect()
        }
    };
}

/// SQLite: the provider and a raw pool on one WAL file.
pub mod sqlite {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

    async fn begin(pool: &SqlitePool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    raw_side!(SqlitePool, sqlx::SqliteConnection, begin);

    /// The provider on `path` with `bench_ts` seeded, and a raw pool on the
    /// same file with the same connection settings with `bench_raw` seeded.
    ///
    /// # Panics
    /// When opening or seeding fails.
    pub async fn open(path: &Path) -> (SqliteDatabase, SqlitePool) {
        let db = SqliteDatabase::open(SqliteConfig::file(path))
            .await
            .unwrap();
        seed(&db, "bench_ts").await;
        seed(&db, "bench_raw").await;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // The provider's pool settings: no liveness ping on acquire.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .unwrap();
        (db, pool)
    }
}

/// PostgreSQL: the provider and a raw pool in one scratch schema.
pub mod postgres {
    use super::*;
    use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

    async fn begin(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        pool.begin().await
    }

    raw_side!(PgPool, sqlx::PgConnection, begin);

    /// The provider in a scratch schema on `DATABASE_URL` with `bench_ts`
    /// seeded, and a second pool with the provider's settings (same
    /// schema, same pool options, so neither side waits for the other)
    /// with `bench_raw` seeded; `None` when no server answers (outside CI).
    /// Drop the schema with [`Scratch::cleanup`].
    ///
    /// # Panics
    /// When opening or seeding fails.
    pub async fn open() -> Option<(PgDatabase, PgPool, Scratch)> {
        let url = truststream_db_postgres::testing::server().await?;
        let scratch = Scratch::new(url);
        let config = scratch.config("bench");
        let db = PgDatabase::open(config.clone()).await.unwrap();
        seed(&db, "bench_ts").await;
        seed(&db, "bench_raw").await;
        let mut opts: PgConnectOptions = config.url.expose().parse().unwrap();
        opts = opts.options([(
            "search_path",
            truststream_core_db::ident::quote(config.schema.as_deref().unwrap()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(opts)
            .await
            .unwrap();
        Some((db, pool, scratch))
    }
}
