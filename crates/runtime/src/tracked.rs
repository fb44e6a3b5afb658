//! Counting the calls in flight on a provider, so that a switch can wait for
//! them (the drain) before the old provider is closed.
//!
//! The runtime hands out every provider (in its configured layers) wrapped
//! in one more layer, outermost: [`Count`], an [`Around`] layer that holds a
//! [`CallGuard`] while each call runs (until it finishes or its future is
//! dropped), so that [`InFlight::idle`] can wait until none is left;
//! health checks included. Sync methods (`info`, `capabilities`) return at once and are not counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use truststream_core::{BoxFuture, Result};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_core_storage::Storage;
use truststream_layer::{
    around_auth, around_database, around_realtime, around_storage, Around, Next, Op,
};

/// The number of calls running on one provider.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// Counts a call until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> CallGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        CallGuard(Arc::clone(self))
    }

    /// The calls running now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until no call is running, at most `deadline`; `Err` carries the
    /// number still running when the deadline passed.
    pub(crate) async fn idle(&self, deadline: Duration) -> std::result::Result<(), usize> {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the check, so a call finishing in
                // between still wakes us.
                notified.as_mut().enable();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| self.count())
    }
}

/// One call in flight; dropping it ends the call.
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<InFlight>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Every call of every interface, counted while it runs.
struct Count(Arc<InFlight>);

impl Around for Count {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _call = self.0.enter();
            next.run().await
        })
    }
}

/// A provider of one interface wrapped in the counting layers.
pub(crate) trait Track {
    /// Wraps `inner`; returns the wrapper and its counter.
    fn track(inner: Arc<Self>) -> (Arc<Self>, Arc<InFlight>);
}

/// `Track` for one interface: the generic hook around every method.
macro_rules! track {
    ($interface:ident, $around:ident) => {
        impl Track for dyn $interface {
            fn track(inner: Arc<Self>) -> (Arc<Self>, Arc<InFlight>) {
                let calls = Arc::new(InFlight::default());
                let counted = $around(inner, Arc::new(Count(Arc::clone(&calls))));
                (counted, calls)
            }
        }
    };
}

track!(Database, around_database);
track!(Storage, around_storage);
track!(Auth, around_auth);
track!(Realtime, around_realtime);

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use truststream_core::Health;
    use truststream_db_memory::MemoryDatabase;
    use truststream_layer::{DatabaseLayer, LayeredDatabase};

    /// Holds health checks and reads until the test lets them go (one
    /// permit each).
    struct Held(tokio::sync::Semaphore);

    #[async_trait]
    impl DatabaseLayer for Held {
        async fn health(&self, next: &dyn Database) -> Health {
            self.0.acquire().await.map(|p| p.forget()).ok();
            next.health().await
        }
        async fn read(
            &self,
            next: &dyn Database,
            table: &str,
            query: &truststream_core_db::Query,
        ) -> Result<Vec<truststream_core_db::Row>> {
            self.0.acquire().await.map(|p| p.forget()).ok();
            next.read(table, query).await
        }
    }

    #[tokio::test]
    async fn calls_and_health_checks_are_counted_while_they_run() {
        let held = Arc::new(Held(tokio::sync::Semaphore::new(0)));
        let inner: Arc<dyn Database> = Arc::new(LayeredDatabase::new(
            Arc::new(MemoryDatabase::new()),
            Arc::clone(&held),
        ));
        let (db, calls) = <dyn Database>::track(inner);
        assert_eq!(db.info().name, "memory");
        let (health, read) = {
            let (a, b) = (Arc::clone(&db), Arc::clone(&db));
            (
                tokio::spawn(async move { a.health().await }),
                tokio::spawn(async move { b.read("t", &Default::default()).await }),
            )
        };
        let both = async {
            while calls.count() < 2 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the health check and the read are both counted");
        assert_eq!(calls.idle(Duration::from_millis(10)).await, Err(2));
        held.0.add_permits(2);
        assert!(health.await.unwrap().is_healthy());
        assert!(read.await.unwrap().is_err(), "no such table");
        assert_eq!(calls.idle(Duration::from_secs(5)).await, Ok(()));
        // A call whose future is dropped mid-way is no longer counted.
        let query = truststream_core_db::Query::new();
        let pending = db.read("t", &query);
        let dropped = tokio::time::timeout(Duration::from_millis(10), pending).await;
        assert!(dropped.is_err());
        assert_eq!(calls.count(), 0);
    }

    #[tokio::test]
    async fn idle_waits_for_the_last_call_and_reports_what_is_left() {
        let calls = Arc::new(InFlight::default());
        assert_eq!(calls.idle(Duration::ZERO).await, Ok(()));
        let a = calls.enter();
        let b = calls.enter();
        assert_eq!(calls.idle(Duration::from_millis(10)).await, Err(2));
        drop(a);
        let waiter = {
            let calls = Arc::clone(&calls);
            tokio::spawn(async move { calls.idle(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        drop(b);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        assert_eq!(calls.count(), 0);
    }
}
