//! `--follow`: writes made to the source while the bulk copy runs are on
//! the target at the end (SQLite -> PostgreSQL), and verify passes.

#![allow(clippy::unwrap_used)] // a failed setup step or assertion panics: this is a test

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{Database, Query, Row, Value};
use truststream_db_postgres::testing::{server, Scratch};
use truststream_migrate::{run, run_until, Options, ProgressMode, Side};

fn side(db: &Arc<dyn Database>) -> Side {
    Side {
        db: Some(Arc::clone(db)),
        storage: None,
    }
}

fn options() -> Options {
    Options {
        progress: ProgressMode::Off,
        batch: 1_000,
        follow: true,
        ..Options::default()
    }
}

fn obj(v: Value) -> Row {
    v.as_object().cloned().unwrap()
}

async fn count(db: &dyn Database, table: &str) -> usize {
    db.read(table, &Query::new().select(["id"]))
        .await
        .unwrap()
        .len()
}

/// The writes the application makes during the copy: updates of rows the
/// copy has already passed and of rows it has not reached, inserts (an
/// auto-increment key among them), deletes; 5 changes per round.
async fn write_round(src: &dyn Database, i: usize, total: usize) -> usize {
    let c = common::counts(total);
    let (orgs, users, doc_tags) = (c[0].1, c[1].1, c[4].1);
    let org = src
        .create(
            "orgs",
            obj(
                json!({"name": format!("during copy {i} ✓"), "created_at": "2026-12-03T10:00:00Z"}),
            ),
        )
        .await
        .unwrap();
    src.create(
        "users",
        obj(json!({"id": format!("new-{i}-ü"), "org_id": org["id"], "email": null})),
    )
    .await
    .unwrap();
    src.update(
        "orgs",
        &json!((i % orgs) as i64 + 1),
        obj(json!({"name": format!("renamed {i}")})),
    )
    .await
    .unwrap();
    src.update(
        "users",
        &json!(format!("user-{:07}-ü", users - 1 - i)),
        obj(json!({"score": -1.5, "email": format!("late{i}@例え.jp")})),
    )
    .await
    .unwrap();
    assert!(src
        .delete("doc_tags", &json!((doc_tags - 1 - i) as i64))
        .await
        .unwrap());
    5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_during_the_copy_are_on_the_target_at_the_end() {
    let Some(url) = server().await else { return };
    let scratch = Scratch::new(url);
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    let total = common::test_rows();
    common::fill(src.as_ref(), total).await;
    let dst = common::postgres(&scratch, "migrate_follow").await;
    let n_doc_tags = common::counts(total)[4].1;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let (src, dst) = (Arc::clone(&src), Arc::clone(&dst));
        tokio::spawn(async move {
            // Start once the copy has written rows of the second level
            // (users): the last level (doc_tags) is not copied yet.
            loop {
                let started = dst.describe_table("users").await.unwrap().is_some()
                    && count(dst.as_ref(), "users").await > 0;
                if started {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // doc_tags (last level) is not created yet, or not complete.
            let during = match dst.describe_table("doc_tags").await.unwrap() {
                Some(_) => count(dst.as_ref(), "doc_tags").await,
                None => 0,
            };
            let mut writes = 0;
            for i in 0..40 {
                writes += write_round(src.as_ref(), i, total).await;
            }
            // Let the follower apply some live, then stop it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            writes += write_round(src.as_ref(), 40, total).await;
            stop_tx.send(()).unwrap();
            (during, writes)
        })
    };
    let summary = run_until(&side(&src), &side(&dst), &options(), async {
        let _ = stop_rx.await;
    })
    .await
    .unwrap();
    let (during, writes) = writer.await.unwrap();
    assert!(
        during < n_doc_tags,
        "the writes started while the copy ran ({during} of {n_doc_tags} doc_tags copied)"
    );
    assert!(summary.is_ok(), "{summary}");
    let followed = summary.followed.unwrap();
    assert_eq!(followed.applied() as usize, writes, "{summary}");
    assert_eq!(followed.ignored, 0);
    // Spot checks: an insert with a generated key, an update of a row the
    // copy had passed, one it had not reached, a delete.
    let c = common::counts(total);
    let new_user = dst.get("users", &json!("new-40-ü")).await.unwrap().unwrap();
    let org = dst.get("orgs", &new_user["org_id"]).await.unwrap().unwrap();
    assert_eq!(org["name"], json!("during copy 40 ✓"));
    let renamed = dst.get("orgs", &json!(1)).await.unwrap().unwrap();
    assert_eq!(renamed["name"], json!("renamed 0"));
    let late = dst
        .get("users", &json!(format!("user-{:07}-ü", c[1].1 - 1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late["email"], json!("late0@例え.jp"));
    assert!(dst
        .get("doc_tags", &json!((c[4].1 - 1) as i64))
        .await
        .unwrap()
        .is_none());
    assert_eq!(count(dst.as_ref(), "orgs").await, c[0].1 + 41);
    assert_eq!(count(dst.as_ref(), "doc_tags").await, c[4].1 - 41);
    // The identity sequence moved past the keys the follower created.
    let o = dst
        .create(
            "orgs",
            obj(json!({"name": "after cut-over", "created_at": "2026-12-03T11:00:00Z"})),
        )
        .await
        .unwrap();
    assert_eq!(o["id"], json!(c[0].1 as i64 + 42));
    scratch.cleanup().await.unwrap();
}

#[tokio::test]
async fn follow_refuses_what_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    let dst = common::sqlite(dir.path(), "dst.db").await;
    for (what, opts) in [
        (
            "--resume",
            Options {
                resume: true,
                ..options()
            },
        ),
        (
            "--dry-run",
            Options {
                dry_run: true,
                ..options()
            },
        ),
        (
            "--verify-only",
            Options {
                verify_only: true,
                ..options()
            },
        ),
    ] {
        let e = run(&side(&src), &side(&dst), &opts).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    // Storage only: nothing to follow.
    let e = run(&Side::default(), &Side::default(), &options())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn an_instance_scoped_feed_is_a_warning_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    let dst = common::sqlite(dir.path(), "dst.db").await;
    common::fill(src.as_ref(), 200).await;
    let dry = Options {
        follow: false,
        dry_run: true,
        ..options()
    };
    let plain = run(&side(&src), &side(&dst), &dry).await.unwrap();
    assert!(plain.issues.iter().all(|i| !i.message.contains("--follow")));
    // Stop at once: the copy runs, nothing is written during it.
    let s = run_until(&side(&src), &side(&dst), &options(), async {})
        .await
        .unwrap();
    assert!(s.is_ok(), "{s}");
    let warning = s
        .issues
        .iter()
        .find(|i| i.message.contains("--follow"))
        .unwrap();
    assert!(!warning.blocking, "{warning}");
    assert!(warning.message.contains("instance"), "{warning}");
    assert_eq!(s.followed.unwrap().applied(), 0);
}

/// A source still written after the stop (the application was not
/// switched): following ends after the wind-down with `Conflict`, instead
/// of waiting for a quiet moment that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_still_written_after_the_stop_ends_the_run_with_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    let dst = common::sqlite(dir.path(), "dst.db").await;
    common::fill(src.as_ref(), 200).await;
    let writer = {
        let src = Arc::clone(&src);
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("still writing {i}");
                src.create(
                    "orgs",
                    obj(json!({"name": name, "created_at": "2026-12-04T10:00:00Z"})),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let opts = Options {
        follow_wind_down: Duration::from_secs(1),
        ..options()
    };
    let started = std::time::Instant::now();
    // Stop at once: the writer keeps going.
    let e = run_until(&side(&src), &side(&dst), &opts, async {})
        .await
        .unwrap_err();
    writer.abort();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("still being written"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run ended on the wind-down, not on a test timeout"
    );
}
