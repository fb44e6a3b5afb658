//! Readers for the aggregate rows jobs-db selects; the jobs table itself
//! (schema, a job as a row and back) is `truststream_core_jobs::row`,
//! shared with jobs-postgres.

use truststream_core_db::Row;
use truststream_core_jobs::row::{int, state_of, text, unexpected};
use truststream_core_jobs::{JobState, JobsResult};

pub(crate) use truststream_core_jobs::row::{id_of, schema, time_of, StoredJob as Stored};

/// The `job_type` and `state` columns.
pub(crate) fn type_and_state(r: &Row) -> JobsResult<(String, JobState)> {
    Ok((text(r, "job_type")?.to_string(), state_of(r)?))
}

/// The `n` column of a count.
pub(crate) fn count_of(r: &Row) -> JobsResult<u64> {
    u64::try_from(int(r, "n")?).map_err(|_| unexpected("n", r.get("n")))
}
