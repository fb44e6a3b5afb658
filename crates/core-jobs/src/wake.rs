//! Wake-ups for idle workers, shared by the providers'
//! [`Jobs::wait_for_work`](crate::Jobs::wait_for_work).

use std::time::Duration;

use tokio::sync::Notify;

/// Wakes workers waiting for work. A wake-up is never lost: it reaches
/// every idle waiter, and one more is kept for a worker between an empty
/// claim and its wait.
#[derive(Debug, Default)]
pub struct Wake(Notify);

impl Wake {
    /// A signal nobody waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every idle waiter, and leaves one wake-up for a worker
    /// between an empty claim and its wait.
    pub fn wake(&self) {
        self.0.notify_waiters();
        self.0.notify_one();
    }

    /// Waits for a wake-up, at most `max_wait`.
    pub async fn wait(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.0.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let w = Wake::new();
        w.wake();
        // Returns at once: the kept wake-up, not the 30 s deadline.
        tokio::time::timeout(Duration::from_secs(20), w.wait(Duration::from_secs(30)))
            .await
            .expect("the wake-up was kept");
    }
}
