//! Counting the calls in flight on a provider, so that a switch can wait for
//! them (the drain) before the old provider is closed.
//!
//! The runtime hands out every provider wrapped in a [`Tracked`] handle: each
//! async call through it holds a [`CallGuard`] until it finishes (or its
//! future is dropped), and [`InFlight::idle`] waits until none is left.
//! Sync methods (`info`, `capabilities`) return at once and are not counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Notify;
use truststream_core::{Health, ProviderInfo};
use truststream_core_auth::{
    Auth, AuthCapabilities, AuthResult, Principal, Session, SessionInfo, SignIn, SignUp, User,
};
use truststream_core_db::{
    AlterTable, ChangeStream, Database, DbCapabilities, DbResult, Filter, IndexSpec, Operation,
    OperationOutput, Params, Query, Row, TableSchema,
};
use truststream_core_realtime::{
    ChangeSpec, Channel, ChannelOptions, Handler, Realtime, RealtimeCapabilities, RowChange,
    RtResult, Subscription,
};
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectMeta, SignedUrl,
    SignedUrlMethod, Storage, StorageCapabilities, StorageResult, UploadOptions,
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

/// A provider and the count of its calls in flight. Forwards every method
/// of the interface (`clippy::missing_trait_methods` keeps it so).
pub(crate) struct Tracked<T: ?Sized> {
    inner: Arc<T>,
    calls: Arc<InFlight>,
}

impl<T: ?Sized> Tracked<T> {
    /// Wraps `inner`; returns the wrapper and its counter.
    pub(crate) fn wrap(inner: Arc<T>) -> (Self, Arc<InFlight>) {
        let calls = Arc::new(InFlight::default());
        (
            Tracked {
                inner,
                calls: Arc::clone(&calls),
            },
            calls,
        )
    }
}

/// Forwards `async fn` methods: `fwd!(self.method(args...))` counts the call
/// and awaits the inner provider's method.
macro_rules! fwd {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let _call = $self.calls.enter();
        $self.inner.$method($($arg),*).await
    }};
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Database for Tracked<dyn Database> {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> DbCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        fwd!(self.health())
    }
    async fn connect(&self) -> DbResult<()> {
        fwd!(self.connect())
    }
    async fn disconnect(&self) -> DbResult<()> {
        fwd!(self.disconnect())
    }
    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        fwd!(self.create(table, row))
    }
    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        fwd!(self.read(table, query))
    }
    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        fwd!(self.get(table, id))
    }
    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        fwd!(self.update(table, id, patch))
    }
    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        fwd!(self.delete(table, id))
    }
    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        fwd!(self.create_many(table, rows))
    }
    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        fwd!(self.update_many(table, filter, patch))
    }
    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        fwd!(self.delete_many(table, filter))
    }
    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        fwd!(self.raw_query(sql, params))
    }
    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        fwd!(self.transaction(operations))
    }
    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        fwd!(self.create_table(schema))
    }
    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()> {
        fwd!(self.drop_table(table, if_exists))
    }
    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        fwd!(self.alter_table(table, changes))
    }
    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        fwd!(self.create_index(index))
    }
    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        fwd!(self.subscribe_changes(table))
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Storage for Tracked<dyn Storage> {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> StorageCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        fwd!(self.health())
    }
    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        fwd!(self.upload(bucket, key, data, options))
    }
    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        fwd!(self.upload_stream(bucket, key, data, options))
    }
    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        fwd!(self.download(bucket, key))
    }
    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        fwd!(self.download_range(bucket, key, range))
    }
    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        fwd!(self.download_stream(bucket, key, range))
    }
    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        fwd!(self.get_metadata(bucket, key))
    }
    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        fwd!(self.delete(bucket, key))
    }
    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        fwd!(self.list(bucket, options))
    }
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta> {
        fwd!(self.copy(from_bucket, from_key, to_bucket, to_key))
    }
    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        fwd!(self.signed_url(bucket, key, method, expires_in))
    }
    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        fwd!(self.list_buckets())
    }
    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        fwd!(self.create_bucket(name))
    }
    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        fwd!(self.delete_bucket(name))
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Auth for Tracked<dyn Auth> {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> AuthCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        fwd!(self.health())
    }
    async fn sign_up(&self, request: SignUp) -> AuthResult<Session> {
        fwd!(self.sign_up(request))
    }
    async fn sign_in(&self, request: SignIn) -> AuthResult<Session> {
        fwd!(self.sign_in(request))
    }
    async fn sign_out(&self, principal: &Principal) -> AuthResult<()> {
        fwd!(self.sign_out(principal))
    }
    async fn sign_out_everywhere(&self, principal: &Principal) -> AuthResult<()> {
        fwd!(self.sign_out_everywhere(principal))
    }
    async fn get_user(&self, principal: &Principal) -> AuthResult<User> {
        fwd!(self.get_user(principal))
    }
    async fn get_session(&self, principal: &Principal) -> AuthResult<SessionInfo> {
        fwd!(self.get_session(principal))
    }
    async fn refresh_session(&self, refresh_token: &str) -> AuthResult<Session> {
        fwd!(self.refresh_session(refresh_token))
    }
    async fn validate_token(&self, access_token: &str) -> AuthResult<Principal> {
        fwd!(self.validate_token(access_token))
    }
    async fn get_user_roles(&self, principal: &Principal) -> AuthResult<Vec<String>> {
        fwd!(self.get_user_roles(principal))
    }
    async fn has_permission(&self, principal: &Principal, permission: &str) -> AuthResult<bool> {
        fwd!(self.has_permission(principal, permission))
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Realtime for Tracked<dyn Realtime> {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> RealtimeCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        fwd!(self.health())
    }
    async fn channel(&self, name: &str, options: ChannelOptions) -> RtResult<Arc<dyn Channel>> {
        fwd!(self.channel(name, options))
    }
    async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        fwd!(self.subscribe_changes(spec, handler))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
