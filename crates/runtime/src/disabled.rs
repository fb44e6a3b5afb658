//! The provider of an interface turned off (`type = "none"` in the
//! `database`, `storage` or `realtime` section): [`Disabled`] answers
//! every call with [`ErrorKind::Unsupported`] naming the key that turned
//! it off and where it was set, so an application that reaches for the
//! interface learns why and what to change. It holds nothing, so
//! connecting, disconnecting and closing it succeed; `check` and `health`
//! list the interface as not configured instead of asking it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use truststream_core::{Error, ErrorKind, Health, ProviderInfo, Result};
use truststream_core_db::{
    AlterTable, ChangeStream, Database, DbCapabilities, Filter, IndexSpec, Operation,
    OperationOutput, Params, Query, Row, TableSchema, Value,
};
use truststream_core_realtime::{
    ChangeSpec, Channel, ChannelOptions, Handler, Realtime, RealtimeCapabilities, RowChange,
    Subscription,
};
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectDownload, ObjectMeta,
    SignedUrl, SignedUrlMethod, Storage, StorageCapabilities, UploadOptions,
};

use crate::build::set_in;
use crate::config::{Config, Interface, NONE};

/// The provider of an interface whose section says `type = "none"`.
pub(crate) struct Disabled {
    /// `the database is turned off: database.type = "none" (set in ...)`.
    why: String,
}

impl Disabled {
    /// The provider of `interface`, which `config` turns off.
    pub(crate) fn new(config: &Config, interface: Interface) -> Self {
        let name = interface.as_str();
        Disabled {
            why: format!(
                "the {name} is turned off: `{name}.type = \"{NONE}\"` ({}); set `{name}.type` \
                 to one of its providers to use it",
                set_in(config, name, "type")
            ),
        }
    }

    /// The database provider of a `database.type = "none"` configuration.
    pub(crate) fn database(config: &Config) -> Arc<dyn Database> {
        Arc::new(Self::new(config, Interface::Database))
    }

    /// The storage provider of a `storage.type = "none"` configuration.
    pub(crate) fn storage(config: &Config) -> Arc<dyn Storage> {
        Arc::new(Self::new(config, Interface::Storage))
    }

    /// The realtime provider of a `realtime.type = "none"` configuration.
    pub(crate) fn realtime(config: &Config) -> Arc<dyn Realtime> {
        Arc::new(Self::new(config, Interface::Realtime))
    }

    fn refuse<T>(&self, operation: &'static str) -> Result<T> {
        Err(Error::new(ErrorKind::Unsupported, self.why.clone()).with_operation(operation))
    }

    fn health() -> Health {
        Health {
            message: Some("turned off (type = \"none\")".to_string()),
            ..Health::healthy(Duration::ZERO)
        }
    }
}

/// Who a disabled provider is (`none`, this crate's version).
const INFO: ProviderInfo = ProviderInfo {
    name: NONE,
    version: env!("CARGO_PKG_VERSION"),
};

#[async_trait]
impl Database for Disabled {
    fn info(&self) -> ProviderInfo {
        INFO
    }
    fn capabilities(&self) -> DbCapabilities {
        DbCapabilities::none()
    }
    async fn health(&self) -> Health {
        Self::health()
    }
    async fn connect(&self) -> Result<()> {
        Ok(())
    }
    async fn disconnect(&self) -> Result<()> {
        Ok(())
    }
    async fn create(&self, _table: &str, _row: Row) -> Result<Row> {
        self.refuse("db.create")
    }
    async fn read(&self, _table: &str, _query: &Query) -> Result<Vec<Row>> {
        self.refuse("db.read")
    }
    async fn get(&self, _table: &str, _id: &Value) -> Result<Option<Row>> {
        self.refuse("db.get")
    }
    async fn update(&self, _table: &str, _id: &Value, _patch: Row) -> Result<Row> {
        self.refuse("db.update")
    }
    async fn delete(&self, _table: &str, _id: &Value) -> Result<bool> {
        self.refuse("db.delete")
    }
    async fn create_many(&self, _table: &str, _rows: Vec<Row>) -> Result<Vec<Row>> {
        self.refuse("db.create_many")
    }
    async fn insert_many(&self, _table: &str, _rows: Vec<Row>) -> Result<u64> {
        self.refuse("db.insert_many")
    }
    async fn update_many(&self, _table: &str, _filter: &Filter, _patch: Row) -> Result<u64> {
        self.refuse("db.update_many")
    }
    async fn delete_many(&self, _table: &str, _filter: &Filter) -> Result<u64> {
        self.refuse("db.delete_many")
    }
    async fn raw_query(&self, _sql: &str, _params: &Params) -> Result<Vec<Row>> {
        self.refuse("db.raw_query")
    }
    async fn transaction(&self, _operations: Vec<Operation>) -> Result<Vec<OperationOutput>> {
        self.refuse("db.transaction")
    }
    async fn create_table(&self, _schema: &TableSchema) -> Result<()> {
        self.refuse("db.create_table")
    }
    async fn drop_table(&self, _table: &str, _if_exists: bool) -> Result<()> {
        self.refuse("db.drop_table")
    }
    async fn alter_table(&self, _table: &str, _changes: &[AlterTable]) -> Result<()> {
        self.refuse("db.alter_table")
    }
    async fn create_index(&self, _index: &IndexSpec) -> Result<()> {
        self.refuse("db.create_index")
    }
    async fn describe_table(&self, _table: &str) -> Result<Option<TableSchema>> {
        self.refuse("db.describe_table")
    }
    async fn subscribe_changes(&self, _table: Option<&str>) -> Result<ChangeStream> {
        self.refuse("db.subscribe_changes")
    }
}

#[async_trait]
impl Storage for Disabled {
    fn info(&self) -> ProviderInfo {
        INFO
    }
    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::default()
    }
    async fn health(&self) -> Health {
        Self::health()
    }
    async fn upload(
        &self,
        _bucket: &str,
        _key: &str,
        _data: Bytes,
        _options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        self.refuse("storage.upload")
    }
    async fn upload_stream(
        &self,
        _bucket: &str,
        _key: &str,
        _data: ByteStream,
        _options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        self.refuse("storage.upload_stream")
    }
    async fn download(&self, _bucket: &str, _key: &str) -> Result<Bytes> {
        self.refuse("storage.download")
    }
    async fn download_range(&self, _bucket: &str, _key: &str, _range: ByteRange) -> Result<Bytes> {
        self.refuse("storage.download_range")
    }
    async fn download_stream(
        &self,
        _bucket: &str,
        _key: &str,
        _range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.refuse("storage.download_stream")
    }
    async fn download_with_metadata(
        &self,
        _bucket: &str,
        _key: &str,
        _range: Option<ByteRange>,
    ) -> Result<ObjectDownload> {
        self.refuse("storage.download_with_metadata")
    }
    async fn get_metadata(&self, _bucket: &str, _key: &str) -> Result<ObjectMeta> {
        self.refuse("storage.get_metadata")
    }
    async fn delete(&self, _bucket: &str, _key: &str) -> Result<()> {
        self.refuse("storage.delete")
    }
    async fn list(&self, _bucket: &str, _options: &ListOptions) -> Result<ListPage> {
        self.refuse("storage.list")
    }
    async fn copy(
        &self,
        _from_bucket: &str,
        _from_key: &str,
        _to_bucket: &str,
        _to_key: &str,
    ) -> Result<ObjectMeta> {
        self.refuse("storage.copy")
    }
    async fn signed_url(
        &self,
        _bucket: &str,
        _key: &str,
        _method: SignedUrlMethod,
        _expires_in: Duration,
    ) -> Result<SignedUrl> {
        self.refuse("storage.signed_url")
    }
    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        self.refuse("storage.list_buckets")
    }
    async fn create_bucket(&self, _name: &str) -> Result<()> {
        self.refuse("storage.create_bucket")
    }
    async fn delete_bucket(&self, _name: &str) -> Result<()> {
        self.refuse("storage.delete_bucket")
    }
}

#[async_trait]
impl Realtime for Disabled {
    fn info(&self) -> ProviderInfo {
        INFO
    }
    fn capabilities(&self) -> RealtimeCapabilities {
        RealtimeCapabilities::default()
    }
    async fn health(&self) -> Health {
        Self::health()
    }
    async fn channel(&self, _name: &str, _options: ChannelOptions) -> Result<Arc<dyn Channel>> {
        self.refuse("realtime.channel")
    }
    async fn subscribe_changes(
        &self,
        _spec: ChangeSpec,
        _handler: Handler<RowChange>,
    ) -> Result<Subscription> {
        self.refuse("realtime.subscribe_changes")
    }
}
