//! The guide's `HealthCheckService`: every configured service checked in
//! parallel under one deadline, with an overall status.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use truststream_core::{Health, HealthStatus};
use truststream_core_jobs::Jobs;

use crate::build::{Registries, Services};
use crate::config::{Config, Interface, NONE};
use crate::redact;
use crate::report::{read_only, Built, BuiltOne, Probe};

/// The deadline `truststream health` uses unless `--deadline-ms` says
/// otherwise.
pub const DEFAULT_HEALTH_DEADLINE: Duration = Duration::from_millis(5000);

/// The health of one configured service.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceHealth {
    /// Which service.
    pub service: Interface,
    /// The configured provider type (`postgres`, `fs`, ...).
    pub provider: String,
    /// `healthy`, `degraded` or `unhealthy`. A service that could not be
    /// built, or did not answer within the deadline, is `unhealthy`.
    pub status: HealthStatus,
    /// How long the check took, measured around the call (the deadline
    /// when it did not answer).
    pub response_time_ms: f64,
    /// Why it is degraded or unhealthy, or the provider's note; scrubbed of
    /// the section's secret values.
    pub message: Option<String>,
}

/// The health of the background jobs provider (the `[jobs]` section), when
/// one is configured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobsHealth {
    /// The configured provider type (`memory`, `database`, `postgres`).
    pub provider: String,
    /// As [`ServiceHealth::status`].
    pub status: HealthStatus,
    /// As [`ServiceHealth::response_time_ms`].
    pub response_time_ms: f64,
    /// As [`ServiceHealth::message`].
    pub message: Option<String>,
}

/// Every configured service's health and the overall status (the guide's
/// `HealthCheckService.checkSystemHealth`).
///
/// Overall: `healthy` when every configured service is healthy;
/// `unhealthy` when none is serving (every one unhealthy); `degraded`
/// otherwise — some serve, some do not, or some report degraded (the guide
/// calls anything short of all-healthy degraded; a system where nothing
/// answers is unhealthy).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthReport {
    /// The overall status.
    pub status: HealthStatus,
    /// When the check started, in milliseconds since the Unix epoch.
    pub checked_at_unix_ms: u64,
    /// The deadline each service had to answer within.
    pub deadline_ms: u64,
    /// The configured services, in order database, auth, storage,
    /// realtime.
    pub services: Vec<ServiceHealth>,
    /// Interfaces with no provider configured (`type = "none"`): not
    /// checked, not counted.
    pub not_configured: Vec<Interface>,
    /// The background jobs provider; `None` when `jobs.type = "none"`
    /// (counted in the overall status like the other services).
    pub jobs: Option<JobsHealth>,
}

impl HealthReport {
    /// Checks `services` (built from `config`) in parallel, each within
    /// `deadline`.
    pub async fn of(services: &Services, config: &Config, deadline: Duration) -> Self {
        let started = now_ms();
        let jobs = Ok(services.jobs.clone());
        // A turned-off interface (`type = "none"`) is not checked.
        let on = |i: Interface| config.section(i).kind() != NONE;
        let (database, auth, storage, realtime, jobs) = tokio::join!(
            probe(
                Interface::Database,
                config,
                Some(&services.db).filter(|_| on(Interface::Database)),
                deadline
            ),
            probe(Interface::Auth, config, services.auth.as_ref(), deadline),
            probe(
                Interface::Storage,
                config,
                Some(&services.storage).filter(|_| on(Interface::Storage)),
                deadline
            ),
            probe(
                Interface::Realtime,
                config,
                Some(&services.realtime).filter(|_| on(Interface::Realtime)),
                deadline
            ),
            probe_jobs(config, &jobs, deadline),
        );
        Self::from_parts(started, deadline, [database, auth, storage, realtime], jobs)
    }

    /// Builds each configured provider (in its layers) on its own, then
    /// checks them in parallel, each within `deadline`. A provider that
    /// fails to build is unhealthy, with the reason; so is one whose build
    /// does not finish within `deadline` (each build has the deadline to
    /// itself: the whole check takes at most five deadlines).
    ///
    /// A health check never writes: the providers are built read-only
    /// ([`truststream_core::BuildOptions::read_only`]), so none creates
    /// its tables (auth-jwt's users and sessions, the jobs table); one
    /// that finds them missing reports degraded, naming them and how to
    /// create them. The providers are closed before this returns.
    pub async fn check(registries: &Arc<Registries>, config: &Config, deadline: Duration) -> Self {
        let started = now_ms();
        let built = read_only(Built::each(registries, config, Some(deadline))).await;
        let (database, auth, storage, realtime, jobs) = tokio::join!(
            probe_built(Interface::Database, config, &built.database, deadline),
            probe_built(Interface::Auth, config, &built.auth, deadline),
            probe_built(Interface::Storage, config, &built.storage, deadline),
            probe_built(Interface::Realtime, config, &built.realtime, deadline),
            probe_jobs(config, &built.jobs, deadline),
        );
        built.close().await;
        Self::from_parts(started, deadline, [database, auth, storage, realtime], jobs)
    }

    fn from_parts(
        started: u64,
        deadline: Duration,
        parts: [std::result::Result<ServiceHealth, Interface>; 4],
        jobs: Option<JobsHealth>,
    ) -> Self {
        let mut services = Vec::new();
        let mut not_configured = Vec::new();
        for p in parts {
            match p {
                Ok(s) => services.push(s),
                Err(i) => not_configured.push(i),
            }
        }
        let mut statuses: Vec<HealthStatus> = services.iter().map(|s| s.status).collect();
        statuses.extend(jobs.as_ref().map(|j| j.status));
        HealthReport {
            status: overall(&statuses),
            checked_at_unix_ms: started,
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            services,
            not_configured,
            jobs,
        }
    }

    /// Whether no configured service is unhealthy (the exit status of
    /// `truststream health`): a degraded provider still serves.
    pub fn is_ok(&self) -> bool {
        self.services
            .iter()
            .all(|s| s.status != HealthStatus::Unhealthy)
            && self
                .jobs
                .as_ref()
                .is_none_or(|j| j.status != HealthStatus::Unhealthy)
    }

    /// The report as a table: one row per configured service, then the
    /// overall status.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "service".to_string(),
            "provider".to_string(),
            "status".to_string(),
            "time".to_string(),
            "message".to_string(),
        ]];
        for s in &self.services {
            rows.push([
                s.service.to_string(),
                s.provider.clone(),
                s.status.to_string(),
                format!("{:.1} ms", s.response_time_ms),
                s.message.clone().unwrap_or_default(),
            ]);
        }
        if let Some(j) = &self.jobs {
            rows.push([
                "jobs".to_string(),
                j.provider.clone(),
                j.status.to_string(),
                format!("{:.1} ms", j.response_time_ms),
                j.message.clone().unwrap_or_default(),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for i in &self.not_configured {
            let _ = writeln!(out, "{i}: not configured (not checked)");
        }
        let _ = writeln!(
            out,
            "overall: {} (deadline {} ms)",
            self.status, self.deadline_ms
        );
        out
    }
}

/// healthy when all are; unhealthy when none serves; degraded otherwise.
fn overall(statuses: &[HealthStatus]) -> HealthStatus {
    if statuses.iter().all(|s| *s == HealthStatus::Healthy) {
        HealthStatus::Healthy
    } else if statuses.iter().all(|s| *s == HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else {
        HealthStatus::Degraded
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Checks one provider within `deadline`; `Err(interface)` when none is
/// configured.
async fn probe<P: Probe>(
    interface: Interface,
    config: &Config,
    provider: Option<&P>,
    deadline: Duration,
) -> std::result::Result<ServiceHealth, Interface> {
    let provider = provider.ok_or(interface)?;
    let section = config.section(interface);
    let (status, message, response_time_ms) = timed(provider.health(), deadline).await;
    Ok(ServiceHealth {
        service: interface,
        provider: section.kind().to_string(),
        status,
        response_time_ms,
        message: message.map(|m| redact::scrub(&m, &section.secrets())),
    })
}

async fn probe_built<T: ?Sized>(
    interface: Interface,
    config: &Config,
    built: &BuiltOne<T>,
    deadline: Duration,
) -> std::result::Result<ServiceHealth, Interface>
where
    Arc<T>: Probe,
{
    match built {
        Ok(Some(b)) => probe(interface, config, Some(&b.provider), deadline).await,
        Ok(None) => Err(interface),
        Err(why) => {
            let section = config.section(interface);
            Ok(ServiceHealth {
                service: interface,
                provider: section.kind().to_string(),
                status: HealthStatus::Unhealthy,
                response_time_ms: 0.0,
                message: Some(format!("failed to build: {why}")),
            })
        }
    }
}

/// Checks the jobs provider within `deadline`; `None` when none is
/// configured. One that failed to build is unhealthy, with the reason.
async fn probe_jobs(
    config: &Config,
    built: &std::result::Result<Option<Arc<dyn Jobs>>, String>,
    deadline: Duration,
) -> Option<JobsHealth> {
    let section = config.jobs_section();
    let provider = section.kind().to_string();
    let jobs = match built {
        Ok(None) => return None,
        Ok(Some(j)) => j,
        Err(why) => {
            return Some(JobsHealth {
                provider,
                status: HealthStatus::Unhealthy,
                response_time_ms: 0.0,
                message: Some(format!("failed to build: {why}")),
            })
        }
    };
    let (status, message, response_time_ms) = timed(jobs.health(), deadline).await;
    Some(JobsHealth {
        provider,
        status,
        response_time_ms,
        message: message.map(|m| redact::scrub(&m, &section.secrets())),
    })
}

/// Awaits a health check within `deadline`: its status and message (or
/// unhealthy, "no answer within N ms"), and how long it took in ms.
async fn timed(
    check: impl std::future::Future<Output = Health>,
    deadline: Duration,
) -> (HealthStatus, Option<String>, f64) {
    let start = tokio::time::Instant::now();
    let (status, message) = match tokio::time::timeout(deadline, check).await {
        Ok(Health {
            status, message, ..
        }) => (status, message),
        Err(_) => (
            HealthStatus::Unhealthy,
            Some(format!("no answer within {} ms", deadline.as_millis())),
        ),
    };
    (status, message, start.elapsed().as_secs_f64() * 1000.0)
}
