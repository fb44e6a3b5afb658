//! Table definitions: what `create_table`, `alter_table` and `create_index` take.

use serde::{Deserialize, Serialize};

use crate::ident;
use crate::{DbResult, Error, Value};

/// Column types every provider maps (see `docs/type-mapping.md` in each SQL
/// provider). Values travel as JSON:
///
/// | type | JSON value |
/// |---|---|
/// | `Text` | string |
/// | `Integer` | integer (i64) |
/// | `Float` | number |
/// | `Boolean` | bool |
/// | `Timestamp` | RFC 3339 string, returned in UTC |
/// | `Uuid` | hyphenated lowercase string |
/// | `Json` | any JSON value |
/// | `Bytes` | standard base64 string |
/// | `Numeric` | decimal string (exact) or number |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Float,
    /// Boolean.
    Boolean,
    /// Timestamp with time zone.
    Timestamp,
    /// UUID.
    Uuid,
    /// JSON document.
    Json,
    /// Binary data.
    Bytes,
    /// Exact decimal.
    Numeric,
}

/// A column default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnDefault {
    /// A constant value.
    Value(Value),
    /// The current time (timestamp columns).
    Now,
    /// A random (v4) UUID (uuid columns).
    RandomUuid,
    /// The next integer of a sequence (integer primary keys).
    AutoIncrement,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: ColumnType,
    /// Whether NULL is allowed (default true; primary keys never).
    pub nullable: bool,
    /// Whether values must be unique.
    pub unique: bool,
    /// The primary key (exactly one column per table).
    pub primary_key: bool,
    /// Value used when an insert does not give one.
    pub default: Option<ColumnDefault>,
}

impl ColumnDef {
    /// A nullable column of the given type.
    pub fn new(name: &str, ty: ColumnType) -> Self {
        ColumnDef {
            name: name.to_string(),
            ty,
            nullable: true,
            unique: false,
            primary_key: false,
            default: None,
        }
    }
    /// Text column.
    pub fn text(name: &str) -> Self {
        Self::new(name, ColumnType::Text)
    }
    /// Integer column.
    pub fn integer(name: &str) -> Self {
        Self::new(name, ColumnType::Integer)
    }
    /// Float column.
    pub fn float(name: &str) -> Self {
        Self::new(name, ColumnType::Float)
    }
    /// Boolean column.
    pub fn boolean(name: &str) -> Self {
        Self::new(name, ColumnType::Boolean)
    }
    /// Timestamp column.
    pub fn timestamp(name: &str) -> Self {
        Self::new(name, ColumnType::Timestamp)
    }
    /// UUID column.
    pub fn uuid(name: &str) -> Self {
        Self::new(name, ColumnType::Uuid)
    }
    /// JSON column.
    pub fn json(name: &str) -> Self {
        Self::new(name, ColumnType::Json)
    }
    /// Bytes column.
    pub fn bytes(name: &str) -> Self {
        Self::new(name, ColumnType::Bytes)
    }
    /// Numeric column.
    pub fn numeric(name: &str) -> Self {
        Self::new(name, ColumnType::Numeric)
    }
    /// Marks as the primary key (implies not null).
    pub fn primary_key(mut self) -> Self {
        self.primary_key = true;
        self.nullable = false;
        self
    }
    /// Disallows NULL.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
    /// Requires unique values.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    /// Sets a default.
    pub fn default(mut self, default: ColumnDefault) -> Self {
        self.default = Some(default);
        self
    }
    /// Sets a constant default.
    pub fn default_value(self, value: impl Into<Value>) -> Self {
        self.default(ColumnDefault::Value(value.into()))
    }

    /// Checks the name and that the default fits the type.
    pub fn validate(&self) -> DbResult<()> {
        ident::validate(&self.name)?;
        let ok = match (&self.default, self.ty) {
            (None | Some(ColumnDefault::Value(_)), _) => true,
            (Some(ColumnDefault::Now), ColumnType::Timestamp) => true,
            (Some(ColumnDefault::RandomUuid), ColumnType::Uuid) => true,
            (Some(ColumnDefault::AutoIncrement), ColumnType::Integer) => self.primary_key,
            _ => false,
        };
        if !ok {
            return Err(Error::invalid_input(format!(
                "default {:?} does not fit column {} of type {:?}",
                self.default, self.name, self.ty
            )));
        }
        Ok(())
    }
}

/// A table definition.
///
/// ```
/// use truststream_core_db::{ColumnDef, ColumnDefault, TableSchema};
/// let agents = TableSchema::new("agents")
///     .column(ColumnDef::uuid("id").primary_key().default(ColumnDefault::RandomUuid))
///     .column(ColumnDef::text("name").not_null())
///     .column(ColumnDef::text("status").not_null().default_value("active"))
///     .column(ColumnDef::timestamp("created_at").not_null().default(ColumnDefault::Now))
///     .column(ColumnDef::timestamp("deleted_at"));
/// agents.validate().unwrap();
/// assert_eq!(agents.primary_key().unwrap().name, "id");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns, in order.
    pub columns: Vec<ColumnDef>,
    /// Do nothing if the table exists.
    #[serde(default)]
    pub if_not_exists: bool,
    /// References to other tables (or this one). Enforced where
    /// [`crate::DbCapabilities::foreign_keys`] is `true`; reported by
    /// [`crate::Database::describe_table`], so front ends (the REST API's
    /// embedded resources) can follow them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKey>,
}

/// A foreign key: `columns` of the declaring table hold the values of
/// `referenced_columns` (the primary key or a unique column) of
/// `referenced_table`. Deleting or re-keying a referenced row that is still
/// referenced is refused (`NO ACTION`), as is a value with no referenced
/// row; a NULL in any of `columns` references nothing.
///
/// ```
/// use truststream_core_db::{ColumnDef, ForeignKey, TableSchema};
/// let posts = TableSchema::new("posts")
///     .column(ColumnDef::integer("id").primary_key())
///     .column(ColumnDef::integer("author_id"))
///     .references("author_id", "users", "id");
/// posts.validate().unwrap();
/// assert_eq!(posts.foreign_keys[0].resolved_name("posts"), "posts_author_id_fkey");
/// assert_eq!(posts.foreign_keys[0], ForeignKey::new(["author_id"], "users", ["id"]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The constraint name; default `<table>_<col1>_<col2>_fkey`
    /// (PostgreSQL's own default), see [`ForeignKey::resolved_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The referencing columns of the declaring table, in order.
    pub columns: Vec<String>,
    /// The referenced table.
    pub referenced_table: String,
    /// The referenced columns, one per referencing column.
    pub referenced_columns: Vec<String>,
}

impl ForeignKey {
    /// `columns` referencing `referenced_columns` of `referenced_table`.
    pub fn new<A: AsRef<str>, B: AsRef<str>>(
        columns: impl IntoIterator<Item = A>,
        referenced_table: &str,
        referenced_columns: impl IntoIterator<Item = B>,
    ) -> Self {
        ForeignKey {
            name: None,
            columns: columns
                .into_iter()
                .map(|c| c.as_ref().to_string())
                .collect(),
            referenced_table: referenced_table.to_string(),
            referenced_columns: referenced_columns
                .into_iter()
                .map(|c| c.as_ref().to_string())
                .collect(),
        }
    }

    /// Names the constraint.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The constraint name on table `table`: given, or
    /// `<table>_<col1>_<col2>_fkey` truncated to [`ident::MAX_LEN`].
    pub fn resolved_name(&self, table: &str) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let mut n = format!("{table}_{}_fkey", self.columns.join("_"));
        n.truncate(ident::MAX_LEN);
        n
    }

    /// Checks that `target` (the referenced table's schema, `None` when it
    /// does not exist) has the referenced columns; `InvalidInput` naming
    /// what is missing. `table`: the declaring table.
    pub fn check_target(&self, table: &str, target: Option<&TableSchema>) -> DbResult<()> {
        let name = self.resolved_name(table);
        let Some(target) = target else {
            return Err(Error::invalid_input(format!(
                "foreign key {name} of table {table} references table {}, which does not exist",
                self.referenced_table
            )));
        };
        match self
            .referenced_columns
            .iter()
            .find(|c| target.find(c).is_none())
        {
            Some(c) => Err(Error::invalid_input(format!(
                "foreign key {name} of table {table} references column {c}, which table {} does not have",
                self.referenced_table
            ))),
            None => Ok(()),
        }
    }

    /// Checks identifiers and that both sides have the same (non-zero)
    /// number of columns.
    pub fn validate(&self, table: &str) -> DbResult<()> {
        ident::table(&self.referenced_table)?;
        self.columns.iter().try_for_each(|c| ident::validate(c))?;
        self.referenced_columns
            .iter()
            .try_for_each(|c| ident::validate(c))?;
        ident::validate(&self.resolved_name(table))?;
        if self.columns.is_empty() || self.columns.len() != self.referenced_columns.len() {
            return Err(Error::invalid_input(format!(
                "foreign key {} of table {table} needs as many referenced columns as columns (at least one), has {} and {}",
                self.resolved_name(table),
                self.columns.len(),
                self.referenced_columns.len()
            )));
        }
        Ok(())
    }
}

impl TableSchema {
    /// A table with no columns yet.
    pub fn new(name: &str) -> Self {
        TableSchema {
            name: name.to_string(),
            columns: Vec::new(),
            if_not_exists: false,
            foreign_keys: Vec::new(),
        }
    }
    /// Adds a column.
    pub fn column(mut self, column: ColumnDef) -> Self {
        self.columns.push(column);
        self
    }
    /// Declares that `column` references `referenced_column` (the primary
    /// key or a unique column) of `referenced_table`.
    pub fn references(self, column: &str, referenced_table: &str, referenced_column: &str) -> Self {
        self.foreign_key(ForeignKey::new(
            [column],
            referenced_table,
            [referenced_column],
        ))
    }
    /// Declares a foreign key.
    pub fn foreign_key(mut self, foreign_key: ForeignKey) -> Self {
        self.foreign_keys.push(foreign_key);
        self
    }
    /// The foreign keys of this table that use `column`.
    pub fn foreign_keys_using<'a>(
        &'a self,
        column: &'a str,
    ) -> impl Iterator<Item = &'a ForeignKey> + 'a {
        self.foreign_keys
            .iter()
            .filter(move |fk| fk.columns.iter().any(|c| c == column))
    }
    /// Renames a column, in the column list and in the foreign keys that
    /// use it (this table's, and its own references to itself).
    pub fn rename_column(&mut self, from: &str, to: &str) {
        let self_name = self.name.clone();
        for c in &mut self.columns {
            if c.name == from {
                c.name = to.to_string();
            }
        }
        for fk in &mut self.foreign_keys {
            // A renamed foreign key keeps the name it was created with.
            if fk.name.is_none() {
                fk.name = Some(fk.resolved_name(&self_name));
            }
            for c in &mut fk.columns {
                if c == from {
                    *c = to.to_string();
                }
            }
            if fk.referenced_table == self_name {
                for c in &mut fk.referenced_columns {
                    if c == from {
                        *c = to.to_string();
                    }
                }
            }
        }
    }
    /// `InvalidInput` when `column` is part of a foreign key of this table
    /// (drop the table's reference first: `alter_table` cannot drop it).
    pub fn check_droppable(&self, column: &str) -> DbResult<()> {
        match self.foreign_keys_using(column).next() {
            Some(fk) => Err(Error::invalid_input(format!(
                "cannot drop column {column} of table {}: it is part of foreign key {}",
                self.name,
                fk.resolved_name(&self.name)
            ))),
            None => Ok(()),
        }
    }
    /// Makes `create_table` a no-op when the table exists.
    pub fn if_not_exists(mut self) -> Self {
        self.if_not_exists = true;
        self
    }
    /// The primary-key column.
    pub fn primary_key(&self) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.primary_key)
    }
    /// A column by name.
    pub fn find(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Checks names, duplicates, defaults and that there is exactly one
    /// primary key.
    pub fn validate(&self) -> DbResult<()> {
        ident::table(&self.name)?;
        if self.columns.is_empty() {
            return Err(Error::invalid_input(format!(
                "table {} has no columns",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            c.validate()?;
            if !seen.insert(c.name.as_str()) {
                return Err(Error::invalid_input(format!(
                    "column {} appears twice in table {}",
                    c.name, self.name
                )));
            }
        }
        if let n @ (0 | 2..) = self.columns.iter().filter(|c| c.primary_key).count() {
            return Err(Error::invalid_input(format!(
                "table {} must have exactly one primary-key column, has {n}",
                self.name
            )));
        }
        let mut names = std::collections::HashSet::new();
        for fk in &self.foreign_keys {
            fk.validate(&self.name)?;
            let name = fk.resolved_name(&self.name);
            if !names.insert(name.clone()) {
                return Err(Error::invalid_input(format!(
                    "foreign key {name} appears twice in table {}",
                    self.name
                )));
            }
            let mut cols = std::collections::HashSet::new();
            for c in &fk.columns {
                if self.find(c).is_none() {
                    return Err(Error::invalid_input(format!(
                        "foreign key {name}: table {} has no column {c}",
                        self.name
                    )));
                }
                if !cols.insert(c.as_str()) {
                    return Err(Error::invalid_input(format!(
                        "foreign key {name} names column {c} twice"
                    )));
                }
            }
            if fk.referenced_table == self.name {
                if let Some(c) = fk
                    .referenced_columns
                    .iter()
                    .find(|c| self.find(c).is_none())
                {
                    return Err(Error::invalid_input(format!(
                        "foreign key {name}: table {} has no column {c}",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One change of `alter_table`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlterTable {
    /// Adds a column (not a primary key). Existing rows get its default, or
    /// NULL; a NOT NULL column without a default on a non-empty table is
    /// [`crate::ErrorKind::InvalidInput`].
    AddColumn(ColumnDef),
    /// Drops a column (not the primary key).
    DropColumn(String),
    /// Renames a column.
    RenameColumn {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Adds a foreign key to the table, checked against the rows it holds
    /// (a row referencing nothing fails the change). Only where
    /// [`crate::DbCapabilities::add_foreign_keys`] says so; elsewhere
    /// [`crate::ErrorKind::Unsupported`], and a foreign key is declared in
    /// [`crate::Database::create_table`]. A bulk load adds its foreign keys
    /// after the rows, as one check instead of one per row.
    AddForeignKey(ForeignKey),
}

impl AlterTable {
    /// Checks identifiers.
    pub fn validate(&self) -> DbResult<()> {
        match self {
            AlterTable::AddColumn(c) => {
                c.validate()?;
                if c.primary_key {
                    return Err(Error::invalid_input("cannot add a primary-key column"));
                }
                Ok(())
            }
            AlterTable::DropColumn(c) => ident::validate(c),
            AlterTable::RenameColumn { from, to } => {
                ident::validate(from)?;
                ident::validate(to)
            }
            // The rest (as many columns as referenced ones, the default
            // name) is checked with the table's schema, which names it.
            AlterTable::AddForeignKey(fk) => {
                if let Some(n) = &fk.name {
                    ident::validate(n)?;
                }
                ident::table(&fk.referenced_table)?;
                fk.columns
                    .iter()
                    .chain(&fk.referenced_columns)
                    .try_for_each(|c| ident::validate(c))
            }
        }
    }
}

/// An index definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Index name; default `<table>_<col1>_<col2>_idx` (truncated to fit).
    pub name: Option<String>,
    /// Indexed table.
    pub table: String,
    /// Indexed columns, in order.
    pub columns: Vec<String>,
    /// A unique index (duplicates become `Conflict`).
    pub unique: bool,
    /// Do nothing if an index of that name exists.
    #[serde(default)]
    pub if_not_exists: bool,
}

impl IndexSpec {
    /// A non-unique index on the columns.
    pub fn new<S: AsRef<str>>(table: &str, columns: impl IntoIterator<Item = S>) -> Self {
        IndexSpec {
            name: None,
            table: table.to_string(),
            columns: columns
                .into_iter()
                .map(|c| c.as_ref().to_string())
                .collect(),
            unique: false,
            if_not_exists: false,
        }
    }
    /// Makes it unique.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    /// Names it.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// No-op when it exists.
    pub fn if_not_exists(mut self) -> Self {
        self.if_not_exists = true;
        self
    }
    /// The index name, given or derived.
    pub fn resolved_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let mut n = format!("{}_{}_idx", self.table, self.columns.join("_"));
        n.truncate(ident::MAX_LEN);
        n
    }
    /// Checks identifiers and that there is at least one column.
    pub fn validate(&self) -> DbResult<()> {
        ident::table(&self.table)?;
        if self.columns.is_empty() {
            return Err(Error::invalid_input("an index needs at least one column"));
        }
        self.columns.iter().try_for_each(|c| ident::validate(c))?;
        ident::validate(&self.resolved_name())
    }
}
