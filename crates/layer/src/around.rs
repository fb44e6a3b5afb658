//! The generic hook: every call described by an [`Op`], run through
//! [`Around::around`] with a [`Next`] that runs the rest of the stack.

use std::sync::Mutex;

use truststream_core::{BoxFuture, Error, Health, Result};

/// The interface a call belongs to (and a configuration section's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interface {
    /// [`truststream_core_db::Database`].
    Database,
    /// [`truststream_core_auth::Auth`].
    Auth,
    /// [`truststream_core_storage::Storage`].
    Storage,
    /// [`truststream_core_realtime::Realtime`].
    Realtime,
}

impl Interface {
    /// Every interface, in a stable order.
    pub const ALL: [Interface; 4] = [
        Interface::Database,
        Interface::Auth,
        Interface::Storage,
        Interface::Realtime,
    ];

    /// `"database"`, `"auth"`, `"storage"`, `"realtime"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Database => "database",
            Interface::Auth => "auth",
            Interface::Storage => "storage",
            Interface::Realtime => "realtime",
        }
    }

    /// The interface named `name` (`"database"`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == name)
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call does, for layers that treat kinds differently (a timeout per
/// kind, a cache that serves reads and is invalidated by writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads data (`get`, `read`, `download`, `validate_token`).
    Read,
    /// Changes data (`create`, `upload`, `sign_in`, raw SQL).
    Write,
    /// Changes structure (tables, indexes, buckets).
    Schema,
    /// Sets up a stream or a subscription (`subscribe_changes`,
    /// `download_stream`, `channel`); the call covers the setup only.
    Stream,
    /// Probes or manages the provider itself (`health`, `connect`).
    Admin,
}

impl Access {
    /// `"read"`, `"write"`, `"schema"`, `"stream"`, `"admin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Schema => "schema",
            Access::Stream => "stream",
            Access::Admin => "admin",
        }
    }
}

/// One call through a layer: which interface, provider and method, what it
/// touches, and whether repeating it is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op<'a> {
    /// The interface.
    pub interface: Interface,
    /// The provider's registry type name (`ProviderInfo::name` of the
    /// provider under the layer).
    pub provider: &'static str,
    /// The method, as named on the interface trait (`"get"`, `"upload"`).
    pub method: &'static str,
    /// What the call does.
    pub access: Access,
    /// The table, bucket or channel it touches, when it names one.
    pub target: Option<&'a str>,
    /// Whether running the call twice has the same effect as running it once
    /// (reads; `update` by key; `delete`; an unconditional `upload`).
    /// `create`, `create_many`, raw SQL, conditional uploads and sign-ins are
    /// not.
    pub idempotent: bool,
    /// Whether the call can be run again at all: `false` when an argument is
    /// consumed by the first attempt (a streamed upload's body).
    pub replayable: bool,
}

impl Op<'_> {
    /// Whether a call that failed with `error` may be run again: the error is
    /// retryable, the arguments can be replayed, and either the call is
    /// idempotent or the error says it changed nothing
    /// ([`Error::is_unapplied`]). A non-idempotent write whose outcome is
    /// unknown is never repeated.
    pub fn may_repeat(&self, error: &Error) -> bool {
        error.is_retryable() && self.replayable && (self.idempotent || error.is_unapplied())
    }
}

type RunFn<'a> = dyn Fn(bool) -> BoxFuture<'a, Result<()>> + Send + Sync + 'a;

/// The rest of the stack below a layer: the next layer, or the provider.
///
/// Its result carries only success or the error; the call's value goes
/// straight to the caller. A layer may run it more than once (a retry) with
/// [`Next::run_again_later`], and once more, or only once, with
/// [`Next::run`].
#[derive(Clone, Copy)]
pub struct Next<'a> {
    to: To<'a>,
}

/// What a [`Next`] runs.
#[derive(Clone, Copy)]
enum To<'a> {
    /// The rest of the stack, as a function of "keep a copy of the
    /// arguments".
    Call(&'a RunFn<'a>),
    /// The next layers of a [`Chain`], then `bottom`; `again`: an outer
    /// layer of the chain may run this attempt again.
    Chain {
        layers: &'a [std::sync::Arc<dyn Around>],
        op: Op<'a>,
        bottom: &'a RunFn<'a>,
        again: bool,
    },
}

impl<'a> Next<'a> {
    /// Runs the rest of the stack, handing it the call's arguments: the last
    /// attempt a layer makes.
    pub fn run(&self) -> BoxFuture<'a, Result<()>> {
        self.go(false)
    }

    /// Runs the rest of the stack with a copy of the arguments, so that the
    /// layer can run it again (a retry). For a call that is not
    /// [`Op::replayable`] this is [`Next::run`].
    pub fn run_again_later(&self) -> BoxFuture<'a, Result<()>> {
        self.go(true)
    }

    fn go(&self, later: bool) -> BoxFuture<'a, Result<()>> {
        match self.to {
            To::Call(run) => run(later),
            To::Chain {
                layers,
                op,
                bottom,
                again,
            } => {
                let again = again || later;
                match layers.split_first() {
                    None => bottom(again),
                    // The next layer runs with a `Next` that carries the
                    // rest of the chain: no closure, no allocation.
                    Some((first, rest)) => first.around(
                        op,
                        Next {
                            to: To::Chain {
                                layers: rest,
                                op,
                                bottom,
                                again,
                            },
                        },
                    ),
                }
            }
        }
    }
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}

/// A layer that applies the same behaviour to every method of every
/// interface (timeout, retry, circuit breaker, concurrency limit, metrics,
/// tracing): it sees each call as an [`Op`] and decides whether, when and
/// how often to run the rest of the stack.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use truststream_core::{BoxFuture, Result};
/// use truststream_layer::{Around, Next, Op};
///
/// /// Counts the failed calls.
/// #[derive(Default)]
/// struct CountFailures(AtomicU64);
///
/// impl Around for CountFailures {
///     fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
///         Box::pin(async move {
///             let result = next.run().await;
///             if result.is_err() {
///                 self.0.fetch_add(1, Ordering::Relaxed);
///             }
///             result
///         })
///     }
/// }
/// ```
pub trait Around: Send + Sync + 'static {
    /// Runs one call: usually `next.run().await` with something before and
    /// after it. Returning `Ok` without running `next` is a bug the caller
    /// reports as [`truststream_core::ErrorKind::Internal`].
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>>;
}

impl<A: Around + ?Sized> Around for std::sync::Arc<A> {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        (**self).around(op, next)
    }
}

/// Several generic layers run as one, outermost first: each layer's
/// [`Next`] runs the next layer of the chain, the last one's the rest of
/// the stack. The same calls in the same order as the layers wrapped one by
/// one (`around_database(around_database(db, inner), outer)`), for less:
/// one wrapper, one [`Op`] and one hand-off of the arguments for the whole
/// chain instead of one per layer. A [`crate::Stack`] built from
/// configuration runs consecutive generic layers this way.
///
/// A layer's [`Next::run_again_later`] is honoured through the layers
/// below it in the chain: the arguments are copied for every attempt of an
/// outer layer that may run the call again, even when an inner layer (a
/// timeout) makes one attempt of it with [`Next::run`].
///
/// ```
/// use std::sync::Arc;
/// use truststream_core_db::Database;
/// use truststream_layer::{around_database, Around, Chain};
///
/// fn both(db: Arc<dyn Database>, outer: Arc<dyn Around>, inner: Arc<dyn Around>) -> Arc<dyn Database> {
///     around_database(db, Arc::new(Chain::new(vec![outer, inner])))
/// }
/// ```
pub struct Chain {
    layers: Vec<std::sync::Arc<dyn Around>>,
}

impl Chain {
    /// `layers`, outermost first (an empty chain runs the call as it is).
    pub fn new(layers: Vec<std::sync::Arc<dyn Around>>) -> Self {
        Chain { layers }
    }

    /// How many layers it runs.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether it runs no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Around for Chain {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        if op.access == Access::Admin && op.method == "health" {
            return health_chain(&self.layers, op, next);
        }
        match next.to {
            To::Call(bottom) => Next {
                to: To::Chain {
                    layers: &self.layers,
                    op,
                    bottom,
                    again: false,
                },
            }
            .run(),
            // A chain under a chain (built by hand): each level keeps its
            // own `Next` in a boxed future.
            To::Chain { .. } => run_chain(&self.layers, op, next, false),
        }
    }
}

/// A `health` call through `layers` as through the layers wrapped one by
/// one: there each wrapper turns an error of its layer into an unhealthy
/// report, so the layers above it see `Ok` (a retry does not repeat a
/// probe a timeout cut short, metrics count no error). Here the error of
/// the layers below each layer is kept aside and `Ok` handed up; the last
/// one kept is the call's error (the unhealthy report's message), unless
/// the provider answered after it.
fn health_chain<'a>(
    layers: &'a [std::sync::Arc<dyn Around>],
    op: Op<'a>,
    bottom: Next<'a>,
) -> BoxFuture<'a, Result<()>> {
    fn level<'a: 'k, 'k>(
        layers: &'a [std::sync::Arc<dyn Around>],
        op: Op<'a>,
        bottom: Next<'a>,
        kept: &'k Mutex<Option<Error>>,
    ) -> BoxFuture<'k, Result<()>> {
        let Some((first, rest)) = layers.split_first() else {
            // The arguments of `health` are `()`: every attempt gets them.
            let fut = bottom.run_again_later();
            return Box::pin(async move {
                fut.await?;
                *lock(kept) = None;
                Ok(())
            });
        };
        Box::pin(async move {
            let run = move |_later: bool| -> BoxFuture<'_, Result<()>> {
                let below = level(rest, op, bottom, kept);
                Box::pin(async move {
                    if let Err(e) = below.await {
                        *lock(kept) = Some(e);
                    }
                    Ok(())
                })
            };
            first.around(op, Next { to: To::Call(&run) }).await
        })
    }
    Box::pin(async move {
        let kept = Mutex::new(None);
        level(layers, op, bottom, &kept).await?;
        let e = lock(&kept).take();
        e.map_or(Ok(()), Err)
    })
}

/// Runs `layers` (outermost first) over `bottom`; `again`: an outer layer
/// may run this attempt again, so `bottom` must keep a copy of the
/// arguments.
fn run_chain<'a>(
    layers: &'a [std::sync::Arc<dyn Around>],
    op: Op<'a>,
    bottom: Next<'a>,
    again: bool,
) -> BoxFuture<'a, Result<()>> {
    let Some((first, rest)) = layers.split_first() else {
        return if again {
            bottom.run_again_later()
        } else {
            bottom.run()
        };
    };
    Box::pin(async move {
        let run = move |later: bool| -> BoxFuture<'_, Result<()>> {
            run_chain(rest, op, bottom, again || later)
        };
        first.around(op, Next { to: To::Call(&run) }).await
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `call(args)` through `layer` as `op`: keeps the arguments for
/// repeats (`copy` makes one; `None` when they cannot be copied) and hands
/// the value of the attempt that succeeded back to the caller.
pub(crate) async fn through<'a, L, S, T, F>(
    layer: &'a L,
    op: Op<'a>,
    args: S,
    copy: fn(&S) -> Option<S>,
    call: F,
) -> Result<T>
where
    L: Around + ?Sized,
    S: Send + 'a,
    T: Send + 'a,
    F: Fn(S) -> BoxFuture<'a, Result<T>> + Send + Sync + 'a,
{
    let args = Mutex::new(Some(args));
    let out: Mutex<Option<T>> = Mutex::new(None);
    let run = |again: bool| -> BoxFuture<'_, Result<()>> {
        let taken = {
            let mut slot = lock(&args);
            match (again, slot.as_ref().and_then(copy)) {
                (true, Some(copied)) => Some(copied),
                _ => slot.take(),
            }
        };
        let Some(taken) = taken else {
            return Box::pin(async {
                Err(Error::internal(
                    "a layer ran a call again after its last attempt",
                ))
            });
        };
        let fut = call(taken);
        let out = &out;
        Box::pin(async move {
            let value = fut.await?;
            *lock(out) = Some(value);
            Ok(())
        })
    };
    layer.around(op, Next { to: To::Call(&run) }).await?;
    let value = lock(&out).take();
    value.ok_or_else(|| Error::internal("a layer answered Ok without running the call"))
}

/// Runs a provider's `health()` through `layer` as `op` (`Access::Admin`,
/// method `health`): health never fails, so an error from the layers (an
/// open breaker, a timeout, a full queue) becomes an unhealthy report that
/// says why, timed from the start of the call.
pub(crate) async fn health_through<'a, L, F>(layer: &'a L, op: Op<'a>, health: F) -> Health
where
    L: Around + ?Sized,
    F: Fn() -> BoxFuture<'a, Health> + Send + Sync + 'a,
{
    let started = std::time::Instant::now();
    let result = through(layer, op, (), copy_unit, |()| {
        let fut = health();
        Box::pin(async move { Ok(fut.await) })
    })
    .await;
    match result {
        Ok(health) => health,
        Err(e) => Health::unhealthy(started.elapsed(), e.to_string()),
    }
}

/// `copy` for arguments that are references or nothing.
pub(crate) fn copy_unit(_: &()) -> Option<()> {
    Some(())
}

/// `copy` for owned arguments that can be cloned.
pub(crate) fn copy_clone<S: Clone>(s: &S) -> Option<S> {
    Some(s.clone())
}

/// `copy` for arguments the first attempt consumes.
pub(crate) fn copy_none<S>(_: &S) -> Option<S> {
    None
}
