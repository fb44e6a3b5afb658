//! Running named cases against a provider factory and reporting the outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use truststream_core::BoxFuture;

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// A failure with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Failure(msg.into())
    }

    /// Not a failure: the case cannot run on this fixture (for example it
    /// needs a way to fetch signed URLs that the fixture does not provide).
    /// The case is reported as skipped with `reason`, never as passed.
    pub fn skip(reason: impl Into<String>) -> Self {
        Failure(format!("{SKIP_MARKER}{}", reason.into()))
    }

    /// The reason given to [`Failure::skip`], if this is a skip.
    pub fn skip_reason(&self) -> Option<&str> {
        self.0.strip_prefix(SKIP_MARKER)
    }
}

/// Starts the message of a [`Failure::skip`] (control characters, so no real
/// failure message can start with it by accident).
const SKIP_MARKER: &str = "\u{1}skip\u{1}";

impl From<truststream_core::Error> for Failure {
    fn from(e: truststream_core::Error) -> Self {
        Failure(format!("unexpected error: {e}"))
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

/// Builds a fresh provider instance (or fixture) for each case.
pub type Factory<P> = Arc<dyn Fn() -> BoxFuture<'static, Result<P, String>> + Send + Sync>;

/// Wraps an async closure as a [`Factory`].
pub fn factory<P, F, Fut>(f: F) -> Factory<P>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<P, String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// A case body.
pub type CaseFn<P> = fn(P) -> BoxFuture<'static, crate::CaseResult>;

/// One named case.
pub struct Case<P> {
    /// Stable name (`crud.create_returns_row`).
    pub name: &'static str,
    /// Capability flags the case needs (field names of the capabilities struct).
    pub needs: &'static [&'static str],
    /// The body.
    pub run: CaseFn<P>,
}

/// What happened to one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseOutcome {
    /// It passed.
    Passed,
    /// It failed, with why.
    Failed(String),
    /// It was not run, with why: a capability the provider lacks, or a reason
    /// the case gave through [`Failure::skip`].
    Skipped(String),
}

/// One row of a report.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// `database`, `storage`, `realtime`, `auth`.
    pub interface: &'static str,
    /// Provider label.
    pub provider: String,
    /// Case name.
    pub case: &'static str,
    /// Outcome.
    pub outcome: CaseOutcome,
    /// Wall time.
    pub elapsed: Duration,
}

/// The outcome of one or more suite runs.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per case run (or skipped).
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Appends another report.
    pub fn merge(&mut self, other: Report) {
        self.cases.extend(other.cases);
    }
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, CaseOutcome::Passed))
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, CaseOutcome::Failed(_)))
    }
    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, CaseOutcome::Skipped(_)))
    }
    fn count(&self, f: impl Fn(&CaseOutcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }
    /// Names of the skipped cases, in run order.
    pub fn skipped_cases(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, CaseOutcome::Skipped(_)))
            .map(|c| c.case)
            .collect()
    }
    /// `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
    /// Prints one line per case (interface, provider, case, outcome), then the
    /// failures and skips with their reasons.
    pub fn print_table(&self) {
        let w_case = self
            .cases
            .iter()
            .map(|c| c.case.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let w_prov = self
            .cases
            .iter()
            .map(|c| c.provider.len())
            .max()
            .unwrap_or(8)
            .max(8);
        println!(
            "{:<10} {:<w_prov$} {:<w_case$} {:<7} {:>8}",
            "interface", "provider", "case", "result", "ms"
        );
        for c in &self.cases {
            let r = match &c.outcome {
                CaseOutcome::Passed => "pass",
                CaseOutcome::Failed(_) => "FAIL",
                CaseOutcome::Skipped(_) => "skipped",
            };
            println!(
                "{:<10} {:<w_prov$} {:<w_case$} {:<7} {:>8.1}",
                c.interface,
                c.provider,
                c.case,
                r,
                c.elapsed.as_secs_f64() * 1000.0
            );
        }
        for c in &self.cases {
            match &c.outcome {
                CaseOutcome::Failed(why) => {
                    println!("FAIL    {}/{}/{}: {why}", c.interface, c.provider, c.case)
                }
                CaseOutcome::Skipped(why) => {
                    println!("skipped {}/{}/{}: {why}", c.interface, c.provider, c.case)
                }
                CaseOutcome::Passed => {}
            }
        }
    }
}

/// How long one case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cases` against instances made by `factory`. `capabilities` reads the
/// provider's capability struct as JSON (flags looked up by name); `only`
/// keeps the cases whose name contains it. Each case runs in its own task, so
/// a panic fails that case only.
pub(crate) async fn run_cases<P>(
    interface: &'static str,
    provider: &str,
    factory: Factory<P>,
    cases: &[Case<P>],
    capabilities: fn(&P) -> serde_json::Value,
    only: Option<&str>,
) -> Report
where
    P: Send + 'static,
{
    let mut report = Report::default();
    for case in cases {
        if only.is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        let start = Instant::now();
        let outcome = run_one(&factory, case, capabilities).await;
        report.cases.push(CaseReport {
            interface,
            provider: provider.to_string(),
            case: case.name,
            outcome,
            elapsed: start.elapsed(),
        });
    }
    report
}

async fn run_one<P: Send + 'static>(
    factory: &Factory<P>,
    case: &Case<P>,
    capabilities: fn(&P) -> serde_json::Value,
) -> CaseOutcome {
    let instance = match tokio::time::timeout(CASE_TIMEOUT, factory()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return CaseOutcome::Failed(format!("factory failed: {e}")),
        Err(_) => return CaseOutcome::Failed("factory timed out".into()),
    };
    let caps = capabilities(&instance);
    let missing: Vec<&str> = case
        .needs
        .iter()
        .copied()
        .filter(|n| caps.get(*n) != Some(&serde_json::Value::Bool(true)))
        .collect();
    if !missing.is_empty() {
        return CaseOutcome::Skipped(format!("provider lacks capability {}", missing.join(", ")));
    }
    let fut = (case.run)(instance);
    match tokio::time::timeout(CASE_TIMEOUT, tokio::spawn(fut)).await {
        Ok(Ok(Ok(()))) => CaseOutcome::Passed,
        Ok(Ok(Err(f))) => match f.skip_reason() {
            Some(reason) => CaseOutcome::Skipped(reason.to_string()),
            None => CaseOutcome::Failed(f.0),
        },
        Ok(Err(join)) => CaseOutcome::Failed(format!("case panicked: {join}")),
        Err(_) => CaseOutcome::Failed(format!("case timed out after {CASE_TIMEOUT:?}")),
    }
}
