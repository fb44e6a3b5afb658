//! Typed conveniences over any [`Database`], written once.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Cursor, Database, DbResult, Error, Params, Query, Row, SelectItem, Value};

/// Serializes a value into a [`Row`]; it must serialize to a JSON object.
pub fn to_row<T: Serialize + ?Sized>(value: &T) -> DbResult<Row> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::invalid_input(format!(
            "a row must serialize to a JSON object, got {}",
            json_type(&other)
        ))),
        Err(e) => {
            Err(Error::invalid_input("value could not be serialized into a row").with_source(e))
        }
    }
}

use crate::result_set::from_row;

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Largest `page_size` [`DatabaseExt::read_page`] accepts (a page is read
/// into memory whole).
pub const MAX_PAGE_SIZE: u64 = 100_000;

/// One page of a keyset-paginated read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Pass to [`DatabaseExt::read_page`] to get the next page; `None` on the
    /// last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Whether another page follows.
    pub fn has_more(&self) -> bool {
        self.next_cursor.is_some()
    }
}

/// Typed reads and writes over serde, and keyset pagination, for every
/// [`Database`] (including `dyn Database`).
///
/// ```
/// # use truststream_core_db::{Database, DatabaseExt, Query, col};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Agent { id: String, name: String, status: String }
///
/// async fn active(db: &dyn Database) -> Result<Vec<Agent>, truststream_core_db::Error> {
///     db.read_as::<Agent>("agents", &Query::new().where_eq("status", "active")).await
/// }
/// ```
#[async_trait]
pub trait DatabaseExt: Database {
    /// [`Database::create`] with a serde value in and a typed row out.
    async fn create_as<T, D>(&self, table: &str, data: &D) -> DbResult<T>
    where
        T: DeserializeOwned,
        D: Serialize + Sync + ?Sized,
    {
        from_row(self.create(table, to_row(data)?).await?)
    }

    /// [`Database::read`] into typed rows (deserialized from
    /// [`Database::read_set`], as `serde_json::from_value` of each row).
    async fn read_as<T: DeserializeOwned>(&self, table: &str, query: &Query) -> DbResult<Vec<T>> {
        self.read_set(table, query).await?.deserialize()
    }

    /// The first row of a query, typed (the query is read with `limit 1`;
    /// one that has it already is not copied).
    async fn read_one_as<T: DeserializeOwned>(
        &self,
        table: &str,
        query: &Query,
    ) -> DbResult<Option<T>> {
        if query.limit == Some(1) {
            return self.read_set(table, query).await?.deserialize_first();
        }
        let q = query.clone().limit(1);
        self.read_set(table, &q).await?.deserialize_first()
    }

    /// [`Database::get`], typed (deserialized from [`Database::get_set`]).
    async fn get_as<T: DeserializeOwned>(&self, table: &str, id: &Value) -> DbResult<Option<T>> {
        self.get_set(table, id).await?.deserialize_first()
    }

    /// [`Database::get_columns_set`], typed: the named columns of the row
    /// whose primary key is `id`, deserialized (a struct of just the
    /// fields a caller needs, without reading or decoding the others).
    ///
    /// ```no_run
    /// # async fn f(db: &dyn truststream_core_db::Database) -> truststream_core_db::DbResult<()> {
    /// use truststream_core_db::DatabaseExt;
    /// #[derive(serde::Deserialize)]
    /// struct Name {
    ///     name: String,
    /// }
    /// let name: Option<Name> = db
    ///     .get_columns_as("agents", &serde_json::json!(7), &["name"])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    async fn get_columns_as<T: DeserializeOwned>(
        &self,
        table: &str,
        id: &Value,
        columns: &[&str],
    ) -> DbResult<Option<T>> {
        self.get_columns_set(table, id, columns)
            .await?
            .deserialize_first()
    }

    /// [`Database::update`] with a serde patch and a typed row out.
    async fn update_as<T, D>(&self, table: &str, id: &Value, patch: &D) -> DbResult<T>
    where
        T: DeserializeOwned,
        D: Serialize + Sync + ?Sized,
    {
        from_row(self.update(table, id, to_row(patch)?).await?)
    }

    /// [`Database::create_many`] with serde values.
    async fn create_many_as<T, D>(&self, table: &str, data: &[D]) -> DbResult<Vec<T>>
    where
        T: DeserializeOwned,
        D: Serialize + Sync,
    {
        let rows = data.iter().map(to_row).collect::<DbResult<Vec<_>>>()?;
        self.create_many(table, rows)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// [`Database::raw_query`] into typed rows.
    async fn raw_query_as<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &Params,
    ) -> DbResult<Vec<T>> {
        self.raw_query(sql, params)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// One page of a keyset-paginated read.
    ///
    /// `query` must order by columns that are non-null and together unique
    /// (end with the primary key), and must select them. `cursor` is the
    /// previous page's `next_cursor`. Rows inserted or deleted between pages
    /// never cause skipped or repeated rows, unlike offset paging.
    /// `page_size` is 1 to [`MAX_PAGE_SIZE`]; anything else is
    /// [`crate::ErrorKind::InvalidInput`].
    async fn read_page(
        &self,
        table: &str,
        query: &Query,
        page_size: u64,
        cursor: Option<&str>,
    ) -> DbResult<Page<Row>> {
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(Error::invalid_input(format!(
                "page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}"
            )));
        }
        if query.order_by.is_empty() {
            return Err(Error::invalid_input(
                "read_page needs order_by keys ending in a unique column",
            ));
        }
        let mut q = query.clone();
        q.limit = Some(page_size + 1);
        q.offset = None;
        if let Some(c) = cursor {
            q.after = Some(Cursor::decode(c)?);
        }
        let mut items = self.read(table, &q).await?;
        let next_cursor = if items.len() as u64 > page_size {
            items.truncate(page_size as usize);
            let last = items.last().ok_or_else(|| Error::internal("empty page"))?;
            Some(cursor_of(&q, last)?.encode())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// [`DatabaseExt::read_page`], typed.
    async fn read_page_as<T: DeserializeOwned>(
        &self,
        table: &str,
        query: &Query,
        page_size: u64,
        cursor: Option<&str>,
    ) -> DbResult<Page<T>> {
        let page = self.read_page(table, query, page_size, cursor).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(from_row)
                .collect::<DbResult<_>>()?,
            next_cursor: page.next_cursor,
        })
    }
}

impl<D: Database + ?Sized> DatabaseExt for D {}

/// The cursor values of `row` for the query's order keys: the output column
/// is the key's alias in the select list, else its bare name.
fn cursor_of(q: &Query, row: &Row) -> DbResult<Cursor> {
    let mut values = Vec::with_capacity(q.order_by.len());
    for key in &q.order_by {
        let out_name = q
            .select
            .iter()
            .find_map(|s| match s {
                SelectItem::Column {
                    column,
                    alias: Some(a),
                } if *column == key.column => Some(a.as_str()),
                _ => None,
            })
            .unwrap_or(key.column.column.as_str());
        match row.get(out_name) {
            Some(v) if !v.is_null() => values.push(v.clone()),
            _ => {
                return Err(Error::invalid_input(format!(
                    "order key {} is null or not selected; keyset pagination needs non-null, selected keys",
                    key.column
                )))
            }
        }
    }
    Ok(Cursor(values))
}
