//! Reads longer than `max_rows` against `truststream serve`: paged in
//! order, each page after the last row seen, so rows written between
//! pages neither repeat nor hide others; nullable and descending keys;
//! `id` as the key when none is known (REST only); `max_rows = 0`.

mod support;

use std::sync::Arc;

use futures::FutureExt;
use serde_json::{json, Value};
use support::{row, Calls, Recording};
use truststream_core_db::{ColumnDef, Database, NullsOrder, Query, Row, TableSchema};
use truststream_db_supabase::{BytesFormat, SupabaseDb, SupabaseDbConfig};

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter()
        .map(|r| r["id"].as_i64().expect("an integer id"))
        .collect()
}

/// A memory database with `items(id, n)`: ten rows, `n` repeating and
/// sometimes null.
async fn items() -> Arc<dyn Database> {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    mem.create_table(
        &TableSchema::new("items")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("n")),
    )
    .await
    .expect("items");
    let rows = (0..10)
        .map(|i| row(json!({"id": i, "n": if i % 4 == 3 { json!(null) } else { json!(i % 3) }})))
        .collect();
    mem.create_many("items", rows).await.expect("rows");
    mem
}

/// serve over `mem`, its reads recorded (and followed by `hook`).
async fn serve_recorded(
    mem: Arc<dyn Database>,
    hook: Option<support::AfterRead>,
) -> (support::Served, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let recorded = Recording {
        inner: mem,
        calls: calls.clone(),
        server: None,
        after_read: hook,
    };
    let served = support::serve(Arc::new(recorded), vec![])
        .await
        .expect("serve");
    (served, calls)
}

/// A client of `served` with `max_rows = 3` (serve itself has no cap: the
/// client pages all the same), with `sql` as its SQL backend when given.
fn client(served: &support::Served, sql: Option<Arc<dyn Database>>) -> SupabaseDb {
    let mut cfg = SupabaseDbConfig::service_role(
        served.server.url.clone(),
        served.server.keys.service_role().to_string(),
    );
    cfg.bytes_format = BytesFormat::Base64;
    cfg.max_rows = Some(3);
    let db = SupabaseDb::new(cfg).expect("config");
    match sql {
        Some(s) => db.with_sql(s),
        None => db,
    }
}

/// Writes serve's database runs after answering the first and second page:
/// an already-read row is deleted (an offset would now skip one), a row
/// sorting before the cursor and one after it are inserted (an offset
/// would repeat one).
fn writes_between_pages(mem: &Arc<dyn Database>) -> support::AfterRead {
    let writer = mem.clone();
    Arc::new(move |n| {
        let db = writer.clone();
        async move {
            match n {
                1 => {
                    db.delete("items", &json!(1)).await.expect("delete 1");
                    db.create("items", row(json!({"id": 100, "n": 0})))
                        .await
                        .expect("insert 100");
                }
                2 => {
                    db.create("items", row(json!({"id": -1, "n": 0})))
                        .await
                        .expect("insert -1");
                }
                _ => {}
            }
        }
        .boxed()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_between_pages_are_neither_repeated_nor_skipped() {
    let mem = items().await;
    let (served, calls) = serve_recorded(mem.clone(), Some(writes_between_pages(&mem))).await;
    let db = client(&served, Some(mem.clone()));
    let rows = db.read("items", &Query::new()).await.expect("read");
    assert_eq!(
        ids(&rows),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100],
        "each row present throughout is read once; 1 was read before its delete, \
         -1 was inserted behind the cursor, 100 ahead of it"
    );
    let reads = calls.all().iter().filter(|c| *c == "read").count();
    assert_eq!(reads, 4, "four pages of at most 3 rows");
}

/// A select list without the key: the key is read as well (and left out of
/// the rows), so pages still go by keyset and writes between pages neither
/// repeat nor skip a row, as in the test above.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_left_out_of_the_select_list_still_pages_by_keyset() {
    let mem = items().await;
    let (served, _calls) = serve_recorded(mem.clone(), Some(writes_between_pages(&mem))).await;
    let db = client(&served, Some(mem.clone()));
    let rows = db
        .read("items", &Query::new().select(["n"]))
        .await
        .expect("read");
    // The n of ids 0..=9 then 100 (the rows of the test above), in id order.
    let expected =
        [0, 1, 2, -1, 1, 2, 0, -1, 2, 0, 0]
            .map(|n: i64| if n < 0 { json!(null) } else { json!(n) });
    let got: Vec<Value> = rows.iter().map(|r| r["n"].clone()).collect();
    assert_eq!(got, expected);
    assert!(
        rows.iter().all(|r| r.len() == 1 && r.contains_key("n")),
        "only the selected column is returned: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_follow_descending_and_nullable_keys() {
    let mem = items().await;
    let served = support::serve(mem.clone(), vec![]).await.expect("serve");
    let db = client(&served, Some(mem.clone()));
    let queries = [
        Query::new().order_by_desc("n"),
        Query::new().order_by_asc("n"),
        Query::new().order_by_asc("n").nulls(NullsOrder::First),
        Query::new().order_by_desc("n").nulls(NullsOrder::Last),
        Query::new().order_by_desc("n").offset(2).limit(7),
        Query::new().select(["id", "n"]).order_by_asc("n").limit(8),
        // The key is not in the select list: read as well, then dropped.
        Query::new().select(["n"]).order_by_asc("n"),
    ];
    for q in queries {
        // The memory database in one read, the same keys then the id.
        let whole = mem
            .read("items", &q.clone().order_by_asc("id"))
            .await
            .expect("whole");
        let paged = db.read("items", &q).await.expect("paged");
        assert_eq!(paged, whole, "{q:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_known_key_the_rows_id_is_the_key() {
    let mem = items().await;
    let (served, calls) = serve_recorded(mem.clone(), None).await;
    // REST only, and serve has no OpenAPI description: no primary key is
    // known until the first full page shows an `id`.
    let db = client(&served, None);
    let rows = db
        .read("items", &Query::new().order_by_asc("id"))
        .await
        .expect("read");
    assert_eq!(ids(&rows), (0..10).collect::<Vec<_>>());
    assert_eq!(
        calls.all().iter().filter(|c| *c == "read").count(),
        5,
        "the first page again, ordered by id, then three more"
    );
    let off = {
        let mut cfg = db.config().clone();
        cfg.max_rows = Some(0);
        SupabaseDb::new(cfg).expect("config")
    };
    calls.0.lock().expect("calls").clear();
    let rows = off.read("items", &Query::new()).await.expect("read");
    assert_eq!(rows.len(), 10);
    assert_eq!(
        calls.all().iter().filter(|c| *c == "read").count(),
        1,
        "max_rows = 0: one read"
    );
}
