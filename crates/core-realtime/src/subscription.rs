//! Handles that remove a handler when dropped.

/// Keeps a handler registered; dropping it (or [`Subscription::unsubscribe`])
/// removes the handler.
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    cancel: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Subscription {
    /// A subscription that runs `cancel` once when unsubscribed or dropped.
    pub fn new(cancel: impl FnOnce() + Send + Sync + 'static) -> Self {
        Subscription {
            cancel: Some(Box::new(cancel)),
        }
    }

    /// A subscription with nothing to cancel.
    pub fn noop() -> Self {
        Subscription { cancel: None }
    }

    /// Removes the handler now.
    pub fn unsubscribe(mut self) {
        if let Some(c) = self.cancel.take() {
            c();
        }
    }

    /// Keeps the handler registered for the provider's lifetime.
    pub fn detach(mut self) {
        self.cancel = None;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(c) = self.cancel.take() {
            c();
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("active", &self.cancel.is_some())
            .finish()
    }
}
