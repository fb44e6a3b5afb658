#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use truststream_core::{Error, Health, ProviderInfo};
use truststream_core_jobs::lifecycle::{self, Start};
use truststream_core_jobs::{
    ClaimRequest, ClaimedJob, EnqueueOperation, Enqueued, FailOutcome, Job, JobError, JobId,
    JobQuery, JobState, JobStats, Jobs, JobsCapabilities, JobsRegistry, JobsResult, Lease, NewJob,
    RunTimes, StateCount, Wake,
};

/// The type name the provider registers under.
pub const TYPE_NAME: &str = "memory";

/// Configuration of the memory provider (it has no options).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryJobsConfig {}

struct Entry {
    job: Job,
    token: Option<String>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobId, Entry>,
    /// Unique key -> the queued or running job holding it.
    unique: HashMap<String, JobId>,
}

impl State {
    /// Frees the job's unique key when its state no longer holds it.
    fn sync_unique(&mut self, id: JobId) {
        let Some(e) = self.jobs.get(&id) else { return };
        if let Some(key) = &e.job.unique_key {
            if !e.job.state.holds_unique_key() && self.unique.get(key) == Some(&id) {
                self.unique.remove(key);
            }
        }
    }

    fn insert(&mut self, job: NewJob, now: DateTime<Utc>) -> JobsResult<Enqueued> {
        if let Some(existing) = job.unique_key.as_ref().and_then(|k| self.unique.get(k)) {
            return Ok(Enqueued::Duplicate(*existing));
        }
        if self.jobs.contains_key(&job.id) {
            return Err(Error::conflict(format!("a job with id {} exists", job.id))
                .with_operation("jobs.enqueue"));
        }
        let job = job.into_job(now);
        let id = job.id;
        if let Some(key) = &job.unique_key {
            self.unique.insert(key.clone(), id);
        }
        self.jobs.insert(id, Entry { job, token: None });
        Ok(Enqueued::Created(id))
    }

    /// The running job the lease belongs to, or `Conflict` / `NotFound`.
    fn held(&mut self, lease: &Lease, operation: &'static str) -> JobsResult<&mut Job> {
        let e = self
            .jobs
            .get_mut(&lease.job_id)
            .ok_or_else(|| lifecycle::not_found(&lease.job_id, operation))?;
        if e.job.state != JobState::Running || e.token.as_deref() != Some(lease.token.as_str()) {
            return Err(lifecycle::lease_lost(&lease.job_id, operation));
        }
        Ok(&mut e.job)
    }
}

/// The in-memory jobs provider. Cheap to clone: clones share the queue.
#[derive(Clone, Default)]
pub struct MemoryJobs {
    state: Arc<Mutex<State>>,
    wake: Arc<Wake>,
}

impl std::fmt::Debug for MemoryJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJobs")
            .field("jobs", &self.lock().jobs.len())
            .finish()
    }
}

impl MemoryJobs {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied
        // transition: each one is computed on a copy or is a single field
        // assignment sequence without fallible steps in between.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Jobs for MemoryJobs {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> JobsCapabilities {
        let mut c = JobsCapabilities::none();
        c.unique_keys = true;
        c.local_wakeups = true;
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        drop(self.lock());
        Health::healthy(start.elapsed())
    }

    async fn enqueue(&self, job: NewJob) -> JobsResult<Enqueued> {
        job.validate()?;
        let r = self.lock().insert(job, lifecycle::now())?;
        self.wake.wake();
        Ok(r)
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> JobsResult<Vec<Enqueued>> {
        for j in &jobs {
            j.validate()?;
        }
        let now = lifecycle::now();
        let out = {
            let mut st = self.lock();
            // All or nothing: check ids first (unique keys only de-duplicate).
            let mut ids = std::collections::HashSet::new();
            for j in &jobs {
                if st.jobs.contains_key(&j.id) || !ids.insert(j.id) {
                    return Err(Error::conflict(format!("a job with id {} exists", j.id))
                        .with_operation("jobs.enqueue_many"));
                }
            }
            jobs.into_iter()
                .map(|j| st.insert(j, now))
                .collect::<JobsResult<Vec<_>>>()?
        };
        self.wake.wake();
        Ok(out)
    }

    fn enqueue_operation(&self, job: &NewJob) -> JobsResult<EnqueueOperation> {
        let _ = job;
        Err(Error::unsupported(
            "the memory jobs provider has no database to enqueue in a transaction with",
        )
        .with_operation("jobs.enqueue_operation"))
    }

    async fn claim(&self, request: &ClaimRequest) -> JobsResult<Vec<ClaimedJob>> {
        request.validate()?;
        let now = lifecycle::now();
        let mut st = self.lock();
        let mut candidates: Vec<(i32, DateTime<Utc>, DateTime<Utc>, JobId)> = st
            .jobs
            .values()
            .filter(|e| e.job.is_claimable(now) && request.job_types.contains(&e.job.job_type))
            .map(|e| (e.job.priority, e.job.run_at, e.job.created_at, e.job.id))
            .collect();
        candidates.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        let mut out = Vec::new();
        for (_, _, _, id) in candidates {
            if out.len() >= request.batch {
                break;
            }
            let Some(e) = st.jobs.get_mut(&id) else {
                continue;
            };
            match e.job.start(now, request.lease, &request.worker_id) {
                Start::Dead => {
                    e.token = None;
                    st.sync_unique(id);
                }
                Start::Started => {
                    let token = lifecycle::new_token();
                    e.token = Some(token.clone());
                    let lease = Lease {
                        job_id: id,
                        token,
                        expires_at: e.job.lease_expires_at.unwrap_or(now),
                    };
                    out.push(ClaimedJob {
                        job: e.job.clone(),
                        lease,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn extend_lease(&self, lease: &Lease, by: Duration) -> JobsResult<DateTime<Utc>> {
        let mut st = self.lock();
        let job = st.held(lease, "jobs.extend_lease")?;
        Ok(job.extend(lifecycle::now(), by))
    }

    async fn complete(&self, lease: &Lease) -> JobsResult<()> {
        let mut st = self.lock();
        st.held(lease, "jobs.complete")?.complete(lifecycle::now());
        st.sync_unique(lease.job_id);
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &JobError) -> JobsResult<FailOutcome> {
        let out = {
            let mut st = self.lock();
            let out =
                st.held(lease, "jobs.fail")?
                    .fail(lifecycle::now(), error, rand::random::<f64>());
            st.sync_unique(lease.job_id);
            out
        };
        self.wake.wake();
        Ok(out)
    }

    async fn release(&self, lease: &Lease) -> JobsResult<()> {
        self.lock()
            .held(lease, "jobs.release")?
            .release(lifecycle::now());
        self.wake.wake();
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> JobsResult<Job> {
        let mut st = self.lock();
        let e = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| lifecycle::not_found(&id, "jobs.cancel"))?;
        e.job.cancel(lifecycle::now())?;
        let job = e.job.clone();
        st.sync_unique(id);
        Ok(job)
    }

    async fn retry_dead(&self, id: JobId) -> JobsResult<Job> {
        let job = {
            let mut st = self.lock();
            let e = st
                .jobs
                .get(&id)
                .ok_or_else(|| lifecycle::not_found(&id, "jobs.retry_dead"))?;
            let mut job = e.job.clone();
            job.requeue_dead(lifecycle::now())?;
            if let Some(key) = &job.unique_key {
                if let Some(holder) = st.unique.get(key) {
                    return Err(Error::conflict(format!(
                        "job {holder} holds the same unique key; retry job {id} after it finishes"
                    ))
                    .with_operation("jobs.retry_dead"));
                }
                st.unique.insert(key.clone(), id);
            }
            if let Some(e) = st.jobs.get_mut(&id) {
                e.job = job.clone();
                e.token = None;
            }
            job
        };
        self.wake.wake();
        Ok(job)
    }

    async fn get(&self, id: JobId) -> JobsResult<Option<Job>> {
        Ok(self.lock().jobs.get(&id).map(|e| e.job.clone()))
    }

    async fn list(&self, query: &JobQuery) -> JobsResult<Vec<Job>> {
        query.validate()?;
        let limit = query.effective_limit()? as usize;
        let st = self.lock();
        let mut jobs: Vec<&Job> = st
            .jobs
            .values()
            .map(|e| &e.job)
            .filter(|j| query.state.is_none_or(|s| j.state == s))
            .filter(|j| query.job_type.as_ref().is_none_or(|t| &j.job_type == t))
            .collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let skip = usize::try_from(query.offset).unwrap_or(usize::MAX);
        Ok(jobs.into_iter().skip(skip).take(limit).cloned().collect())
    }

    async fn stats(&self) -> JobsResult<JobStats> {
        let now = lifecycle::now();
        let st = self.lock();
        let mut counts: std::collections::BTreeMap<(String, JobState), u64> = Default::default();
        let mut oldest: Option<DateTime<Utc>> = None;
        let mut runs: Vec<(DateTime<Utc>, &str, Duration)> = Vec::new();
        for e in st.jobs.values() {
            if let (JobState::Completed, Some(s), Some(f)) =
                (e.job.state, e.job.started_at, e.job.finished_at)
            {
                runs.push((f, &e.job.job_type, (f - s).to_std().unwrap_or_default()));
            }
            *counts
                .entry((e.job.job_type.clone(), e.job.state))
                .or_default() += 1;
            if e.job.state == JobState::Queued && e.job.run_at <= now {
                oldest = Some(oldest.map_or(e.job.run_at, |o| o.min(e.job.run_at)));
            }
        }
        Ok(JobStats {
            counts: counts
                .into_iter()
                .map(|((job_type, state), count)| StateCount {
                    job_type,
                    state,
                    count,
                })
                .collect(),
            oldest_queued_age: oldest.map(|t| (now - t).to_std().unwrap_or_default()),
            run_times: {
                runs.sort_by_key(|r| std::cmp::Reverse(r.0));
                RunTimes::by_type(runs.into_iter().map(|(_, t, d)| (t.to_string(), d)))
            },
        })
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> JobsResult<u64> {
        let mut st = self.lock();
        let n = st.jobs.len();
        st.jobs.retain(|_, e| {
            !(e.job.state.is_finished() && e.job.finished_at.is_some_and(|t| t < before))
        });
        Ok((n - st.jobs.len()) as u64)
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        self.wake.wait(max_wait).await;
    }
}

/// Registers the provider as `"memory"`: each build makes an empty queue.
pub fn register(reg: &mut JobsRegistry) {
    reg.register(TYPE_NAME, |cfg, _db| async move {
        let _cfg: MemoryJobsConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(MemoryJobs::new()) as Arc<dyn Jobs>)
    });
}
