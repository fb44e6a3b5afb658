#![doc = include_str!("../README.md")]

mod copy;
pub mod digest;
mod follow;
mod progress;
pub mod schema;
pub mod state;
mod storage;
pub mod verify;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use truststream_core::{Error, Result};
use truststream_core_db::{AggFunc, Database, Query, SelectItem, Value};
use truststream_core_storage::Storage;

pub use follow::FollowSummary;
pub use progress::ProgressMode;
pub use schema::{DatabasePlan, Issue, TablePlan};
pub use state::{State, StateFile};
pub use verify::{BucketCheck, Difference, TableCheck};

/// Rows per batch (one keyset page read, one `insert_many` written).
pub const DEFAULT_BATCH: usize = 5_000;

/// Differences listed per table or bucket.
pub const DEFAULT_MAX_DIFFERENCES: usize = 20;

/// Which interfaces a migration covers (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// The database only.
    Database,
    /// The storage only.
    Storage,
}

impl std::str::FromStr for Only {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "db" | "database" => Ok(Only::Database),
            "storage" => Ok(Only::Storage),
            other => Err(Error::invalid_input(format!(
                "--only takes db or storage, not {}",
                truststream_core::echo(other)
            ))),
        }
    }
}

/// One side of a migration: the providers built from a profile. A side
/// without a database (or storage) skips that part.
#[derive(Clone, Default)]
pub struct Side {
    /// The database.
    pub db: Option<Arc<dyn Database>>,
    /// The storage.
    pub storage: Option<Arc<dyn Storage>>,
}

impl fmt::Debug for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Side")
            .field("db", &self.db.as_ref().map(|d| d.info().name))
            .field("storage", &self.storage.as_ref().map(|s| s.info().name))
            .finish()
    }
}

/// What `truststream migrate` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only the database or only the storage (`--only`).
    pub only: Option<Only>,
    /// These tables only (`--tables`); default: every table the source
    /// lists (SQLite, PostgreSQL; other sources need the list).
    pub tables: Option<Vec<String>>,
    /// These buckets only (`--buckets`); default: every bucket.
    pub buckets: Option<Vec<String>>,
    /// Read and report the plan, write nothing (`--dry-run`).
    pub dry_run: bool,
    /// Continue an interrupted run from its checkpoints (`--resume`).
    pub resume: bool,
    /// Compare only, copy nothing (`--verify-only`).
    pub verify_only: bool,
    /// Verify after the copy (default `true`; the CLI always does). `false`
    /// times the copy alone, as benchmarks against copy-only tools need.
    pub verify: bool,
    /// The checkpoint file (`--state`); `None` keeps checkpoints in memory
    /// (no resume).
    pub state_path: Option<PathBuf>,
    /// Rows per batch.
    pub batch: usize,
    /// Tables (of one foreign-key level) copied at once.
    pub parallel: usize,
    /// Differences listed per table or bucket.
    pub max_differences: usize,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// After the bulk copy, apply the source database's change feed to the
    /// target until the stop future given to [`run_until`] completes
    /// (`--follow`; see the crate's README for the cut-over procedure).
    /// Requires the source's `change_feed` capability; not with `dry_run`,
    /// `verify_only` or `resume`.
    pub follow: bool,
    /// With `follow`: how long, after the stop, changes may keep arriving
    /// before the run gives up on the source going quiet (the application
    /// still writing to the source) and fails with `Conflict`; what was
    /// applied stays on the target. Default [`DEFAULT_FOLLOW_WIND_DOWN`].
    pub follow_wind_down: Duration,
}

/// Default [`Options::follow_wind_down`]: 30 seconds.
pub const DEFAULT_FOLLOW_WIND_DOWN: Duration = Duration::from_secs(30);

impl Default for Options {
    fn default() -> Self {
        Options {
            only: None,
            tables: None,
            buckets: None,
            dry_run: false,
            resume: false,
            verify_only: false,
            verify: true,
            state_path: None,
            batch: DEFAULT_BATCH,
            parallel: 2,
            max_differences: DEFAULT_MAX_DIFFERENCES,
            progress: ProgressMode::Auto,
            follow: false,
            follow_wind_down: DEFAULT_FOLLOW_WIND_DOWN,
        }
    }
}

/// The outcome of one table.
#[derive(Debug, Clone)]
pub struct TableSummary {
    /// Table.
    pub table: String,
    /// Source rows (when known before the copy).
    pub source_rows: Option<u64>,
    /// Rows copied by this run.
    pub copied: u64,
    /// Verification, when it ran.
    pub check: Option<TableCheck>,
}

/// The outcome of one bucket.
#[derive(Debug, Clone)]
pub struct BucketSummary {
    /// Bucket.
    pub bucket: String,
    /// Objects copied by this run.
    pub objects: u64,
    /// Bytes copied by this run.
    pub bytes: u64,
    /// Verification, when it ran.
    pub check: Option<BucketCheck>,
}

/// What a migration did and found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Nothing was written (dry run, verification only, or a blocking
    /// issue).
    pub wrote_nothing: bool,
    /// What the target cannot represent, and warnings (a blocking issue
    /// stops the run before anything is written).
    pub issues: Vec<Issue>,
    /// Per table.
    pub tables: Vec<TableSummary>,
    /// Per bucket.
    pub buckets: Vec<BucketSummary>,
    /// What following the source's changes applied (`follow`).
    pub followed: Option<FollowSummary>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Summary {
    /// No blocking issue, and every verification that ran matched.
    pub fn is_ok(&self) -> bool {
        !self.issues.iter().any(|i| i.blocking)
            && self
                .tables
                .iter()
                .all(|t| t.check.as_ref().is_none_or(TableCheck::is_ok))
            && self
                .buckets
                .iter()
                .all(|b| b.check.as_ref().is_none_or(BucketCheck::is_ok))
    }

    /// Every difference found.
    pub fn differences(&self) -> impl Iterator<Item = &Difference> {
        self.tables
            .iter()
            .filter_map(|t| t.check.as_ref())
            .flat_map(|c| c.differences.iter())
            .chain(
                self.buckets
                    .iter()
                    .filter_map(|b| b.check.as_ref())
                    .flat_map(|c| c.differences.iter()),
            )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.issues {
            writeln!(f, "{i}")?;
        }
        if !self.tables.is_empty() {
            writeln!(
                f,
                "{:<28} {:>12} {:>12} {:>12}  {:<8} digest (source / target)",
                "table", "source rows", "copied", "target rows", "verify"
            )?;
            for t in &self.tables {
                let (src, dst, verdict, digests) = match &t.check {
                    Some(c) => (
                        c.source.rows.to_string(),
                        c.target.rows.to_string(),
                        if c.is_ok() { "ok" } else { "DIFFERS" },
                        format!("{} / {}", &c.source.hex()[..12], &c.target.hex()[..12]),
                    ),
                    None => (
                        t.source_rows.map_or("?".into(), |n| n.to_string()),
                        "-".into(),
                        "-",
                        String::new(),
                    ),
                };
                writeln!(
                    f,
                    "{:<28} {:>12} {:>12} {:>12}  {:<8} {}",
                    t.table, src, t.copied, dst, verdict, digests
                )?;
            }
        }
        if !self.buckets.is_empty() {
            writeln!(
                f,
                "{:<28} {:>12} {:>14} {:>12} {:>14}  verify",
                "bucket", "objects", "bytes", "copied", "copied bytes"
            )?;
            for b in &self.buckets {
                let (n, bytes, verdict) = match &b.check {
                    Some(c) => (
                        format!("{}/{}", c.source_objects, c.target_objects),
                        format!("{}/{}", c.source_bytes, c.target_bytes),
                        if c.is_ok() {
                            "ok".to_string()
                        } else {
                            format!("DIFFERS ({})", c.different)
                        },
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                writeln!(
                    f,
                    "{:<28} {:>12} {:>14} {:>12} {:>14}  {verdict}",
                    b.bucket, n, bytes, b.objects, b.bytes
                )?;
            }
        }
        let diffs: Vec<_> = self.differences().collect();
        if !diffs.is_empty() {
            writeln!(
                f,
                "differences (first {} per table or bucket):",
                diffs.len()
            )?;
            for d in diffs {
                writeln!(f, "  {d}")?;
            }
        }
        if let Some(x) = &self.followed {
            writeln!(
                f,
                "followed: {} changes applied ({} updated, {} created, {} deleted; {} of other tables ignored)",
                x.applied(),
                x.updated,
                x.created,
                x.deleted,
                x.ignored
            )?;
        }
        let mut tail = format!("took {:.1}s", self.elapsed.as_secs_f64());
        if self.wrote_nothing {
            tail.push_str("; nothing was written");
        }
        let _ = write!(f, "{tail}");
        writeln!(f)
    }
}

async fn count_rows(db: &dyn Database, table: &str) -> Option<u64> {
    if !db.capabilities().aggregates {
        return None;
    }
    let q = Query::new().select_item(SelectItem::aggregate(AggFunc::Count, None, "n"));
    let rows = db.read(table, &q).await.ok()?;
    rows.first()?.get("n").and_then(Value::as_u64)
}

/// Runs a migration from `from` to `to`: plan (reads only; a blocking
/// issue ends the run here, before anything is written), copy (unless
/// `dry_run` or `verify_only`), verify (unless `dry_run`, or `verify` is
/// off without `verify_only`).
///
/// Errors are failures to read, write or record progress; differences
/// found by verification are in the [`Summary`] (see [`Summary::is_ok`]).
///
/// With [`Options::follow`] this never ends: use [`run_until`].
pub async fn run(from: &Side, to: &Side, options: &Options) -> Result<Summary> {
    run_until(from, to, options, std::future::pending()).await
}

/// [`run`], following the source's changes after the bulk copy (with
/// [`Options::follow`]) until `stop` completes; then the changes still
/// arriving are applied (until none came for half a second) and both sides
/// are verified. Without `follow`, `stop` is not used.
///
/// The source's change feed is subscribed before the copy reads a row, so
/// a write committed on the source after the call started is on the target
/// when this returns (as long as the feed sees it: a source whose
/// `change_feed_scope` is `Instance`, such as SQLite, sees only writes
/// made through the same provider value — pass the application's own).
/// A feed that lost changes (a subscriber that fell behind, a broken link)
/// ends the run with an `Unavailable` error.
pub async fn run_until(
    from: &Side,
    to: &Side,
    options: &Options,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary {
        wrote_nothing: options.dry_run || options.verify_only,
        ..Summary::default()
    };
    let batch = options
        .batch
        .clamp(1, truststream_core_db::MAX_PAGE_SIZE as usize);
    let dbs = match (&from.db, &to.db, options.only) {
        (Some(s), Some(t), None | Some(Only::Database)) => Some((Arc::clone(s), Arc::clone(t))),
        _ => None,
    };
    let stores = match (&from.storage, &to.storage, options.only) {
        (Some(s), Some(t), None | Some(Only::Storage)) => Some((Arc::clone(s), Arc::clone(t))),
        _ => None,
    };
    if dbs.is_none() && stores.is_none() {
        return Err(Error::invalid_input(
            "nothing to migrate: neither a database nor a storage on both sides",
        ));
    }
    if options.follow {
        check_follow(options, dbs.as_ref().map(|(s, _)| s.as_ref()))?;
    }
    // Plan: reads only.
    let plan = match &dbs {
        Some((s, t)) => {
            schema::plan(
                s.as_ref(),
                t.as_ref(),
                options.tables.as_deref(),
                options.resume || options.verify_only,
            )
            .await?
        }
        None => DatabasePlan::default(),
    };
    summary.issues.extend(plan.issues.iter().cloned());
    let buckets = match &stores {
        Some((s, t)) => plan_buckets(s.as_ref(), t.as_ref(), options, &mut summary.issues).await?,
        None => Vec::new(),
    };
    for t in &plan.tables {
        let source_rows = match &dbs {
            Some((s, _)) => count_rows(s.as_ref(), t.name()).await,
            None => None,
        };
        summary.tables.push(TableSummary {
            table: t.name().to_string(),
            source_rows,
            copied: 0,
            check: None,
        });
    }
    for b in &buckets {
        summary.buckets.push(BucketSummary {
            bucket: b.clone(),
            objects: 0,
            bytes: 0,
            check: None,
        });
    }
    if options.follow {
        follow_issues(
            dbs.as_ref().map(|(s, _)| s.as_ref()),
            stores.is_some(),
            &mut summary.issues,
        );
    }
    if summary.issues.iter().any(|i| i.blocking) && !options.verify_only {
        summary.wrote_nothing = true;
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }
    if options.dry_run {
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }
    // Subscribed before the copy reads a row: see `follow`.
    let follower = match (&dbs, options.follow) {
        (Some((s, _)), true) => Some(follow::Follower::subscribe(s.as_ref()).await?),
        _ => None,
    };
    let progress = progress::Progress::new(options.progress);
    let result = copy_and_verify(
        &dbs,
        &stores,
        &plan,
        &buckets,
        options,
        batch,
        &progress,
        &mut summary,
        follower.map(|f| (f, stop)),
    )
    .await;
    progress.close();
    result?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

type Pair<T> = Option<(Arc<T>, Arc<T>)>;

/// `follow` is refused with options it cannot honour, and without a
/// database on both sides.
fn check_follow(options: &Options, source: Option<&dyn Database>) -> Result<()> {
    if options.dry_run || options.verify_only {
        return Err(Error::invalid_input(
            "--follow copies and then applies changes: not with --dry-run or --verify-only",
        ));
    }
    if options.resume {
        return Err(Error::invalid_input(
            "--follow cannot --resume: the changes made while no run was following are in no feed; \
             start over into empty tables (or resume without --follow, then --verify-only)",
        ));
    }
    if source.is_none() {
        return Err(Error::invalid_input(
            "--follow applies the source database's changes: it needs a database on both sides \
             (storage is not followed)",
        ));
    }
    Ok(())
}

/// What following cannot do with these providers: a source without a
/// change feed blocks the run; a feed of one provider instance only, and a
/// storage (not followed), are warnings.
fn follow_issues(source: Option<&dyn Database>, storage: bool, issues: &mut Vec<Issue>) {
    if let Some(s) = source {
        let caps = s.capabilities();
        let name = s.info().name;
        if !caps.change_feed {
            issues.push(Issue {
                subject: format!("database {name}"),
                column: None,
                message: "--follow: the source has no change feed; copy with the application stopped instead".into(),
                blocking: true,
            });
        } else if caps.change_feed_scope == Some(truststream_core_db::ChangeFeedScope::Instance) {
            issues.push(Issue {
                subject: format!("database {name}"),
                column: None,
                message: "--follow: the source's change feed sees only writes made through this provider instance, \
                          not the application's writes from another process; stop those writes, \
                          or run the migration in the application's process (see the migrate README)".into(),
                blocking: false,
            });
        }
    }
    if storage {
        issues.push(Issue {
            subject: "storage".into(),
            column: None,
            message: "--follow follows the database only: objects written to the source storage \
                      during the copy are not copied (verification lists them)"
                .into(),
            blocking: false,
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_and_verify(
    dbs: &Pair<dyn Database>,
    stores: &Pair<dyn Storage>,
    plan: &DatabasePlan,
    buckets: &[String],
    options: &Options,
    batch: usize,
    progress: &progress::Progress,
    summary: &mut Summary,
    follow: Option<(follow::Follower, impl Future<Output = ()>)>,
) -> Result<()> {
    if !options.verify_only {
        let state = match &options.state_path {
            Some(p) => StateFile::open(p, options.resume)?,
            None => StateFile::in_memory(),
        };
        if let Some((s, t)) = dbs {
            // A target that can add foreign keys to a filled table gets
            // them after the rows, each checked once, rather than one check
            // per row: every table is then created and copied at once.
            // Otherwise tables go in foreign-key order, level by level.
            let defer = t.capabilities().add_foreign_keys;
            let groups = if defer {
                vec![plan.tables.clone()]
            } else {
                plan.levels()
            };
            for level in groups {
                for table in &level {
                    copy::create_table(t.as_ref(), table, defer).await?;
                }
                let results: Vec<Result<(String, u64)>> = futures::stream::iter(level.iter())
                    .map(|table| {
                        let total = summary
                            .tables
                            .iter()
                            .find(|x| x.table == table.name())
                            .and_then(|x| x.source_rows)
                            .unwrap_or(0);
                        let task = progress.task(table.name(), "rows", total);
                        let (s, t, state) = (Arc::clone(s), Arc::clone(t), &state);
                        async move {
                            let n =
                                copy::copy_rows(s, t, table, state, batch, options.resume, &task)
                                    .await?;
                            task.finish("copied");
                            Ok((table.name().to_string(), n))
                        }
                    })
                    .buffer_unordered(options.parallel.max(1))
                    .collect()
                    .await;
                for r in results {
                    let (name, n) = r?;
                    if let Some(x) = summary.tables.iter_mut().find(|x| x.table == name) {
                        x.copied = n;
                    }
                }
            }
            if defer {
                copy::add_foreign_keys(t.as_ref(), &plan.tables, progress).await?;
            }
        }
        if let Some((s, t)) = stores {
            for b in buckets {
                let (_, bytes) = storage::totals(s.as_ref(), b).await?;
                let task = progress.task(b, "bytes", bytes);
                let (n, copied) = storage::copy_bucket(
                    Arc::clone(s),
                    Arc::clone(t),
                    b,
                    &state,
                    options.resume,
                    &task,
                )
                .await?;
                task.finish("copied");
                if let Some(x) = summary.buckets.iter_mut().find(|x| x.bucket == *b) {
                    x.objects = n;
                    x.bytes = copied;
                }
            }
        }
        if let Some(p) = state.path() {
            progress.message(&format!("migrate: checkpoints in {}", p.display()));
        }
        if let (Some((follower, stop)), Some((_, t))) = (follow, dbs) {
            let tables: Vec<_> = plan.tables.iter().map(|t| t.schema.clone()).collect();
            summary.followed = Some(
                follower
                    .run(
                        t.as_ref(),
                        &tables,
                        stop,
                        options.follow_wind_down,
                        progress,
                    )
                    .await?,
            );
            for table in &plan.tables {
                copy::advance_sequence(t.as_ref(), table).await?;
            }
        }
    }
    if !options.verify && !options.verify_only {
        return Ok(());
    }
    // Verify.
    if let Some((s, t)) = dbs {
        let checks: Vec<Result<TableCheck>> = futures::stream::iter(plan.tables.iter())
            .map(|table| {
                verify::verify_table(
                    Arc::clone(s),
                    Arc::clone(t),
                    &table.schema,
                    batch,
                    options.max_differences,
                )
            })
            .buffer_unordered(options.parallel.max(1))
            .collect()
            .await;
        for c in checks {
            let c = c?;
            if let Some(x) = summary.tables.iter_mut().find(|x| x.table == c.table) {
                x.check = Some(c);
            }
        }
    }
    if let Some((s, t)) = stores {
        for b in buckets {
            let c =
                verify::verify_bucket(s.as_ref(), t.as_ref(), b, options.max_differences).await?;
            if let Some(x) = summary.buckets.iter_mut().find(|x| x.bucket == *b) {
                x.check = Some(c);
            }
        }
    }
    Ok(())
}

/// The buckets to copy; a named bucket the source lacks, or a target that
/// cannot create a bucket it lacks, is a blocking issue.
async fn plan_buckets(
    source: &dyn Storage,
    target: &dyn Storage,
    options: &Options,
    issues: &mut Vec<Issue>,
) -> Result<Vec<String>> {
    let have: Vec<String> = source
        .list_buckets()
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    let names = match &options.buckets {
        Some(list) => {
            for b in list.iter().filter(|b| !have.contains(b)) {
                issues.push(Issue {
                    subject: format!("bucket {b}"),
                    column: None,
                    message: "the source has no such bucket".into(),
                    blocking: true,
                });
            }
            list.iter().filter(|b| have.contains(b)).cloned().collect()
        }
        None => have,
    };
    if !target.capabilities().manage_buckets && !options.verify_only {
        let on_target: Vec<String> = target
            .list_buckets()
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect();
        for b in names.iter().filter(|b| !on_target.contains(b)) {
            issues.push(Issue {
                subject: format!("bucket {b}"),
                column: None,
                message: format!(
                    "the target ({}) cannot create buckets and has no bucket of this name",
                    target.info().name
                ),
                blocking: true,
            });
        }
    }
    Ok(names)
}
