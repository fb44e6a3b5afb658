//! The resume checkpoints: one JSON file per migration, rewritten
//! atomically (temporary file, fsync, rename) after every committed batch.
//!
//! Why a file and not a table on the target: it works for every target
//! (no transactions, no schema rights, nothing the application or `serve`
//! would see), and a storage target has no tables at all. A crash between a
//! batch's commit and the file's rewrite is harmless: a batch is one
//! all-or-nothing `insert_many` (a bulk `COPY` on PostgreSQL), and on resume the copy looks up the keys
//! of the batches after the checkpoint on the target and writes only the
//! rows that are not there (see `copy::copy_table`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use truststream_core::{Error, Result};
use truststream_core_db::Value;

/// Format version of the state file.
const VERSION: u32 = 1;

/// Progress of one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableState {
    /// Primary key of the last row of the last committed batch (`None`:
    /// nothing committed yet).
    pub last_key: Option<Value>,
    /// Rows committed so far.
    pub rows: u64,
    /// Every row is copied and the indexes are made.
    pub done: bool,
}

/// Progress of one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketState {
    /// The listing cursor after the last page whose objects were all copied
    /// (`None`: start at the first page).
    pub cursor: Option<String>,
    /// Objects copied so far.
    pub objects: u64,
    /// Bytes copied so far.
    pub bytes: u64,
    /// Every object is copied.
    pub done: bool,
}

/// Everything a resumed run needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Per table.
    #[serde(default)]
    pub tables: BTreeMap<String, TableState>,
    /// Per bucket.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketState>,
}

/// The state file of one migration, shared by the copy tasks.
#[derive(Debug)]
pub struct StateFile {
    path: Option<PathBuf>,
    state: tokio::sync::Mutex<State>,
}

impl StateFile {
    /// A state kept in memory only (dry runs, verification, tests).
    pub fn in_memory() -> Self {
        StateFile {
            path: None,
            state: tokio::sync::Mutex::new(State {
                version: VERSION,
                ..State::default()
            }),
        }
    }

    /// Opens the state at `path`. With `resume` the file must exist (it is
    /// the run to continue); without, it must not hold a previous run's
    /// progress (a fresh copy into a half-copied target would duplicate).
    pub fn open(path: &Path, resume: bool) -> Result<Self> {
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::invalid_input(format!(
                        "the migration state file {} is not valid: {e}",
                        path.display()
                    ))
                })?;
                if state.version != VERSION {
                    return Err(Error::invalid_input(format!(
                        "the migration state file {} has version {}, this build reads {VERSION}",
                        path.display(),
                        state.version
                    )));
                }
                if !resume && (!state.tables.is_empty() || !state.buckets.is_empty()) {
                    return Err(Error::conflict(format!(
                        "a previous migration's progress is in {}: pass --resume to continue it, or delete the file to start over (into empty targets)",
                        path.display()
                    )));
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if resume {
                    return Err(Error::not_found(format!(
                        "--resume: no migration state at {} (nothing to resume)",
                        path.display()
                    )));
                }
                State {
                    version: VERSION,
                    ..State::default()
                }
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "cannot read the migration state file {}",
                    path.display()
                ))
                .with_source(e))
            }
        };
        Ok(StateFile {
            path: Some(path.to_path_buf()),
            state: tokio::sync::Mutex::new(state),
        })
    }

    /// Where the state is kept, if in a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A copy of the current state.
    pub async fn snapshot(&self) -> State {
        self.state.lock().await.clone()
    }

    /// The state of `table` (default when unknown).
    pub async fn table(&self, table: &str) -> TableState {
        self.state
            .lock()
            .await
            .tables
            .get(table)
            .cloned()
            .unwrap_or_default()
    }

    /// The state of `bucket` (default when unknown).
    pub async fn bucket(&self, bucket: &str) -> BucketState {
        self.state
            .lock()
            .await
            .buckets
            .get(bucket)
            .cloned()
            .unwrap_or_default()
    }

    /// Records `table`'s progress and writes the file.
    pub async fn set_table(&self, table: &str, value: TableState) -> Result<()> {
        let mut s = self.state.lock().await;
        s.tables.insert(table.to_string(), value);
        self.write(&s).await
    }

    /// Records `bucket`'s progress and writes the file.
    pub async fn set_bucket(&self, bucket: &str, value: BucketState) -> Result<()> {
        let mut s = self.state.lock().await;
        s.buckets.insert(bucket.to_string(), value);
        self.write(&s).await
    }

    /// Writes the state: a temporary file beside it, fsync, rename, so a
    /// crash leaves the old file or the new one, never a torn one. Runs
    /// under the state lock, so writes are in order.
    async fn write(&self, state: &State) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::internal("cannot encode the migration state").with_source(e))?;
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| Error::internal("the state writer task failed").with_source(e))?
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::unavailable(format!(
            "cannot write the migration state file {}",
            path.display()
        ))
        .with_source(e)
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // The file holds primary-key values (an email can be a key): readable
    // by its owner only.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_run_refuses_old_progress_and_resume_needs_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let e = StateFile::open(&path, true).unwrap_err();
        assert_eq!(e.kind(), truststream_core::ErrorKind::NotFound);
        let s = StateFile::open(&path, false).unwrap();
        s.set_table(
            "users",
            TableState {
                last_key: Some(Value::from(7)),
                rows: 7,
                done: false,
            },
        )
        .await
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "state file mode {mode:o}");
        }
        let e = StateFile::open(&path, false).unwrap_err();
        assert_eq!(e.kind(), truststream_core::ErrorKind::Conflict);
        let s = StateFile::open(&path, true).unwrap();
        assert_eq!(s.table("users").await.rows, 7);
        assert_eq!(s.table("users").await.last_key, Some(Value::from(7)));
    }
}
