//! A layer that records the storage methods called through it.

/// Records the storage methods called through it, in order.
#[derive(Default)]
pub struct Calls(std::sync::Mutex<Vec<&'static str>>);

impl truststream_layer::Around for Calls {
    fn around<'a>(
        &'a self,
        op: truststream_layer::Op<'a>,
        next: truststream_layer::Next<'a>,
    ) -> truststream_core::BoxFuture<'a, truststream_core::Result<()>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op.method);
        next.run()
    }
}

impl Calls {
    /// The calls since the last `take`.
    pub fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
