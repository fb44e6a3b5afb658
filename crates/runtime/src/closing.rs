//! Closing a set of providers in the one order that lets each finish its
//! work on the ones below it. Every path that lets providers go — the end
//! of the process ([`crate::Services::close`]), a build that failed half
//! way, a switch refused after its candidates were built, a finished
//! switch's retired providers, a `check` report's throw-away providers —
//! closes through [`Closing`], so the order is written once.

use std::sync::Arc;

use truststream_core::{Error, Result};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_core_realtime::Realtime;

/// Providers to close together. Fill in what exists; [`Closing::close`]
/// closes realtime (its servers stop listening, its change feed readers
/// end), then jobs (batched completions committed, its background tasks
/// and own connections stopped), then auth (its background tasks), and
/// last disconnects the database (its pools and change feed listener;
/// through its layers, so a composite's secondary is closed too). Storage
/// holds no connections and is not listed.
#[derive(Default)]
pub(crate) struct Closing {
    pub(crate) realtime: Option<Arc<dyn Realtime>>,
    pub(crate) jobs: Option<Arc<dyn Jobs>>,
    pub(crate) auth: Option<Arc<dyn Auth>>,
    pub(crate) db: Option<Arc<dyn Database>>,
}

impl Closing {
    /// Closes every provider listed, in order, even when one fails; the
    /// first failure is returned, prefixed with its interface (`closing
    /// jobs: ...`), with the provider's error as its source.
    pub(crate) async fn close(self) -> Result<()> {
        let mut first: Option<Error> = None;
        let mut note = |what: &str, r: Result<()>| {
            if let (Err(e), None) = (r, &first) {
                let message = format!("closing {what}: {}", e.message());
                first = Some(Error::new(e.kind(), message).with_source(e));
            }
        };
        if let Some(realtime) = self.realtime {
            note("realtime", realtime.close().await);
        }
        if let Some(jobs) = self.jobs {
            note("jobs", jobs.close().await);
        }
        if let Some(auth) = self.auth {
            note("auth", auth.close().await);
        }
        if let Some(db) = self.db {
            note("database", db.disconnect().await);
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Closes what a build that failed had built so far, and returns the
    /// build's error (a failure to close is dropped: the build's error is
    /// the one the caller must see).
    pub(crate) async fn abandon<T>(self, e: Error) -> Result<T> {
        let _ = self.close().await;
        Err(e)
    }
}
