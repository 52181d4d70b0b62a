//! The small part of the AWS Glue Data Catalog (`AWSGlue.*`, JSON 1.1, SigV4 service `glue`)
//! that declares the schema a Firehose record format conversion reads: databases and tables
//! (CreateDatabase, GetDatabase, GetDatabases, DeleteDatabase, CreateTable, GetTable,
//! GetTables, UpdateTable, DeleteTable), as boto3, the AWS CLI and Terraform's
//! `aws_glue_catalog_*` resources call them. Databases and tables are catalog resources
//! (`GlueDatabase`, and `GlueTable` named `database.table`), their inputs kept as sent.
//!
//! Names are lower-cased, as Glue stores them.

use std::sync::Arc;

use millrace_core::{Engine, NewResource, ResourceKey, ResourceKind, ResourceUpdate, StreamMode};

use crate::aws::service::{Call, Reply, ReplyFuture, Routing, Service};
use crate::aws::{document as value, ApiError, ErrorCode, Protocol, Request, Value, ACCOUNT_ID};

pub const TARGET_PREFIX: &str = "AWSGlue";

pub mod codes {
    pub use crate::aws::codes::*;
    use crate::aws::ErrorCode;

    pub const ENTITY_NOT_FOUND: ErrorCode = ErrorCode::new("EntityNotFoundException", 400);
    pub const ALREADY_EXISTS: ErrorCode = ErrorCode::new("AlreadyExistsException", 400);
    pub const INVALID_INPUT: ErrorCode = ErrorCode::new("InvalidInputException", 400);
    pub const CONCURRENT_MODIFICATION: ErrorCode = ErrorCode::new("ConcurrentModificationException", 400);
}

fn error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// A column of a table, as a conversion reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The Hive type as declared (`string`, `bigint`, `decimal(10,2)`, `array<string>`, …).
    pub hive_type: String,
}

/// A table's schema: its columns, then its partition keys (which a conversion leaves out:
/// they belong in the object's prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub database: String,
    pub table: String,
    pub version_id: String,
    pub columns: Vec<Column>,
}

pub struct GlueApi {
    engine: Engine,
    region: String,
    control: tokio::sync::Mutex<()>,
}

fn database_key(name: &str) -> ResourceKey {
    ResourceKey::new(ResourceKind::GlueDatabase, name)
}

fn table_key(database: &str, table: &str) -> ResourceKey {
    ResourceKey::new(ResourceKind::GlueTable, format!("{database}.{table}"))
}

/// Glue's name rule for databases and tables: 1–255 characters, no control characters;
/// returned lower-cased.
fn name(request: Request<'_>, member: &str) -> Result<String, ApiError> {
    let text = request.str_req(member)?;
    if text.is_empty()
        || text.chars().count() > 255
        || text.chars().any(char::is_control)
        || text.contains('.')
    {
        return Err(ApiError::validation(
            member,
            text,
            "Member must have length between 1 and 255, no control characters and no '.'",
        ));
    }
    Ok(text.to_lowercase())
}

/// The stored spec: the input as sent, with the server's own fields.
fn spec_of(input: &Value, extra: &[(&str, Value)]) -> Vec<u8> {
    let mut stored = input.clone();
    if let Value::Map(members) = &mut stored {
        for (name, value) in extra {
            members.retain(|(existing, _)| existing != name);
            members.push(((*name).to_owned(), value.clone()));
        }
    }
    value::encode(Protocol::Json, &stored)
}

impl GlueApi {
    pub fn new(engine: Engine, region: &str) -> Arc<GlueApi> {
        Arc::new(GlueApi { engine, region: region.to_owned(), control: tokio::sync::Mutex::new(()) })
    }

    pub async fn handle(
        &self,
        operation: &str,
        protocol: Protocol,
        body: &[u8],
        request_id: &str,
    ) -> Result<Value, ApiError> {
        let outcome = match value::decode(protocol, body) {
            Ok(value) => self.dispatch(operation, Request::new(protocol, &value)).await,
            Err(error) => Err(error),
        };
        outcome.map_err(|error| crate::aws::error::scrub(error, "glue", request_id))
    }

    async fn dispatch(&self, operation: &str, request: Request<'_>) -> Result<Value, ApiError> {
        match operation {
            "CreateDatabase" => self.create_database(request).await,
            "GetDatabase" => self.get_database(request),
            "GetDatabases" => self.get_databases(request),
            "DeleteDatabase" => self.delete_database(request).await,
            "CreateTable" => self.create_table(request).await,
            "GetTable" => self.get_table(request),
            "GetTables" => self.get_tables(request),
            "UpdateTable" => self.update_table(request).await,
            "DeleteTable" => self.delete_table(request).await,
            _ => Err(error(
                codes::UNKNOWN_OPERATION,
                format!(
                    "Operation {operation} is not supported by this endpoint (Glue here: CreateDatabase, GetDatabase, \
                     GetDatabases, DeleteDatabase, CreateTable, GetTable, GetTables, UpdateTable, DeleteTable)"
                ),
            )),
        }
    }

    fn catalog_id(&self, request: Request<'_>) -> Result<(), ApiError> {
        match request.str_opt("CatalogId")? {
            Some(id) if id != ACCOUNT_ID => Err(error(
                codes::ENTITY_NOT_FOUND,
                format!("Catalog {id} not found; this server's catalog is {ACCOUNT_ID}"),
            )),
            _ => Ok(()),
        }
    }

    fn stored(&self, key: &ResourceKey) -> Option<(Value, i64)> {
        let meta = self.engine.describe(key).ok()?;
        let stored = value::decode(Protocol::Json, meta.spec()).ok()?;
        Some((stored, meta.created_ms()))
    }

    async fn create_database(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let input = request.structure_opt("DatabaseInput")?.ok_or_else(|| value::missing("DatabaseInput"))?;
        let database = name(input, "Name")?;
        let _guard = self.control.lock().await;
        if self.engine.describe(&database_key(&database)).is_ok() {
            return Err(error(codes::ALREADY_EXISTS, "Database already exists."));
        }
        let spec = spec_of(input.value, &[("Name", Value::from(database.as_str()))]);
        let new = NewResource {
            key: database_key(&database),
            shards: 0,
            mode: StreamMode::Provisioned,
            spec,
            tags: request.string_map_opt("Tags")?.unwrap_or_default(),
            retention_hours: millrace_core::RETENTION_HOURS_MIN,
            max_record_bytes: millrace_core::DEFAULT_MAX_RECORD_BYTES,
            encryption_key_id: None,
        };
        self.engine.create(new).await.map_err(engine_error)?;
        Ok(Value::map())
    }

    fn database_value(&self, database: &str) -> Option<Value> {
        let (stored, created_ms) = self.stored(&database_key(database))?;
        let mut out = Value::map().with("Name", database);
        for member in ["Description", "LocationUri", "Parameters"] {
            if let Some(value) = stored.get(member) {
                out = out.with(member, value.clone());
            }
        }
        Some(out.with("CreateTime", Value::Timestamp(created_ms)).with("CatalogId", ACCOUNT_ID))
    }

    fn get_database(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let database = name(request, "Name")?;
        let found = self
            .database_value(&database)
            .ok_or_else(|| error(codes::ENTITY_NOT_FOUND, format!("Database {database} not found.")))?;
        Ok(Value::map().with("Database", found))
    }

    fn get_databases(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let limit = request.int_opt("MaxResults")?.unwrap_or(100).clamp(1, 100) as usize;
        let after = request.str_opt("NextToken")?;
        let mut names: Vec<String> = self
            .engine
            .list(ResourceKind::GlueDatabase)
            .iter()
            .map(|meta| meta.name().to_owned())
            .filter(|name| after.is_none_or(|after| name.as_str() > after))
            .collect();
        names.sort();
        let more = names.len() > limit;
        names.truncate(limit);
        let databases = names.iter().filter_map(|name| self.database_value(name)).collect();
        Ok(Value::map()
            .with("DatabaseList", Value::List(databases))
            .with_opt("NextToken", more.then(|| names.last().cloned()).flatten()))
    }

    async fn delete_database(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let database = name(request, "Name")?;
        let _guard = self.control.lock().await;
        if self.engine.describe(&database_key(&database)).is_err() {
            return Err(error(codes::ENTITY_NOT_FOUND, format!("Database {database} not found.")));
        }
        // Glue deletes a database's tables with it.
        let prefix = format!("{database}.");
        for table in self.engine.list(ResourceKind::GlueTable) {
            if table.name().starts_with(&prefix) {
                let key = ResourceKey::new(ResourceKind::GlueTable, table.name());
                self.engine.delete(&key, false).await.map_err(engine_error)?;
            }
        }
        self.engine.delete(&database_key(&database), false).await.map_err(engine_error)?;
        Ok(Value::map())
    }

    fn table_input<'a>(&self, request: Request<'a>) -> Result<(String, Request<'a>, String), ApiError> {
        self.catalog_id(request)?;
        let database = name(request, "DatabaseName")?;
        let input = request.structure_opt("TableInput")?.ok_or_else(|| value::missing("TableInput"))?;
        let table = name(input, "Name")?;
        if let Some(descriptor) = input.structure_opt("StorageDescriptor")? {
            for column in descriptor.list_opt("Columns")?.unwrap_or(&[]) {
                let column = Request::new(request.protocol, column);
                let column_name = column.str_req("Name")?;
                if column_name.is_empty() || column_name.chars().count() > 255 {
                    return Err(error(
                        codes::INVALID_INPUT,
                        format!("Column name {column_name:?} must be 1-255 characters"),
                    ));
                }
                if let Some(kind) = column.str_opt("Type")? {
                    if kind.chars().count() > 131_072 {
                        return Err(error(
                            codes::INVALID_INPUT,
                            "A column type is longer than 131072 characters",
                        ));
                    }
                }
            }
        }
        if self.engine.describe(&database_key(&database)).is_err() {
            return Err(error(codes::ENTITY_NOT_FOUND, format!("Database {database} not found.")));
        }
        Ok((database, input, table))
    }

    async fn create_table(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let (database, input, table) = self.table_input(request)?;
        let _guard = self.control.lock().await;
        if self.engine.describe(&table_key(&database, &table)).is_ok() {
            return Err(error(codes::ALREADY_EXISTS, "Table already exists."));
        }
        let now = self.engine.now_ms();
        let spec = spec_of(
            input.value,
            &[
                ("Name", Value::from(table.as_str())),
                ("DatabaseName", Value::from(database.as_str())),
                ("UpdateTime", Value::Timestamp(now)),
                ("VersionId", Value::from("0")),
            ],
        );
        let new = NewResource {
            key: table_key(&database, &table),
            shards: 0,
            mode: StreamMode::Provisioned,
            spec,
            tags: Vec::new(),
            retention_hours: millrace_core::RETENTION_HOURS_MIN,
            max_record_bytes: millrace_core::DEFAULT_MAX_RECORD_BYTES,
            encryption_key_id: None,
        };
        self.engine.create(new).await.map_err(engine_error)?;
        Ok(Value::map())
    }

    fn table_value(&self, database: &str, table: &str) -> Option<Value> {
        let (stored, created_ms) = self.stored(&table_key(database, table))?;
        let mut out = Value::map().with("Name", table).with("DatabaseName", database);
        for member in ["Description", "Owner"] {
            if let Some(value) = stored.get(member) {
                out = out.with(member, value.clone());
            }
        }
        out = out
            .with("CreateTime", Value::Timestamp(created_ms))
            .with("UpdateTime", stored.get("UpdateTime").cloned().unwrap_or(Value::Timestamp(created_ms)))
            .with("Retention", stored.get("Retention").cloned().unwrap_or(Value::Int(0)));
        for member in ["StorageDescriptor", "PartitionKeys", "TableType", "Parameters"] {
            if let Some(value) = stored.get(member) {
                out = out.with(member, value.clone());
            }
        }
        if out.get("PartitionKeys").is_none() {
            out = out.with("PartitionKeys", Value::List(Vec::new()));
        }
        Some(
            out.with("IsRegisteredWithLakeFormation", false)
                .with("CatalogId", ACCOUNT_ID)
                .with("VersionId", stored.get("VersionId").cloned().unwrap_or(Value::from("0"))),
        )
    }

    fn get_table(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let database = name(request, "DatabaseName")?;
        let table = name(request, "Name")?;
        if self.engine.describe(&database_key(&database)).is_err() {
            return Err(error(codes::ENTITY_NOT_FOUND, format!("Database {database} not found.")));
        }
        let found = self
            .table_value(&database, &table)
            .ok_or_else(|| error(codes::ENTITY_NOT_FOUND, format!("Table {table} not found.")))?;
        Ok(Value::map().with("Table", found))
    }

    fn get_tables(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let database = name(request, "DatabaseName")?;
        if self.engine.describe(&database_key(&database)).is_err() {
            return Err(error(codes::ENTITY_NOT_FOUND, format!("Database {database} not found.")));
        }
        let limit = request.int_opt("MaxResults")?.unwrap_or(100).clamp(1, 100) as usize;
        let after = request.str_opt("NextToken")?;
        let expression = request.str_opt("Expression")?;
        let prefix = format!("{database}.");
        let mut names: Vec<String> = self
            .engine
            .list(ResourceKind::GlueTable)
            .iter()
            .filter_map(|meta| meta.name().strip_prefix(&prefix).map(str::to_owned))
            .filter(|name| after.is_none_or(|after| name.as_str() > after))
            .filter(|name| expression.is_none_or(|expression| matches_expression(expression, name)))
            .collect();
        names.sort();
        let more = names.len() > limit;
        names.truncate(limit);
        let tables = names.iter().filter_map(|name| self.table_value(&database, name)).collect();
        Ok(Value::map()
            .with("TableList", Value::List(tables))
            .with_opt("NextToken", more.then(|| names.last().cloned()).flatten()))
    }

    async fn update_table(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let (database, input, table) = self.table_input(request)?;
        let _guard = self.control.lock().await;
        let key = table_key(&database, &table);
        let meta = self
            .engine
            .describe(&key)
            .map_err(|_| error(codes::ENTITY_NOT_FOUND, format!("Table {table} not found.")))?;
        let stored = value::decode(Protocol::Json, meta.spec())?;
        let version: u64 = match stored.get("VersionId") {
            Some(Value::Str(text)) => text.parse().unwrap_or(0),
            _ => 0,
        };
        if let Some(expected) = request.str_opt("VersionId")? {
            if expected != version.to_string() {
                return Err(error(
                    codes::CONCURRENT_MODIFICATION,
                    format!("Table {table} is at version {version}, not {expected}"),
                ));
            }
        }
        let spec = spec_of(
            input.value,
            &[
                ("Name", Value::from(table.as_str())),
                ("DatabaseName", Value::from(database.as_str())),
                ("UpdateTime", Value::Timestamp(self.engine.now_ms())),
                ("VersionId", Value::from((version + 1).to_string())),
            ],
        );
        self.engine
            .update_at(&key, Some(meta.version()), ResourceUpdate::Spec(spec))
            .await
            .map_err(engine_error)?;
        Ok(Value::map())
    }

    async fn delete_table(&self, request: Request<'_>) -> Result<Value, ApiError> {
        self.catalog_id(request)?;
        let database = name(request, "DatabaseName")?;
        let table = name(request, "Name")?;
        let _guard = self.control.lock().await;
        if self.engine.describe(&database_key(&database)).is_err() {
            return Err(error(codes::ENTITY_NOT_FOUND, format!("Database {database} not found.")));
        }
        if self.engine.describe(&table_key(&database, &table)).is_err() {
            return Err(error(codes::ENTITY_NOT_FOUND, format!("Table {table} not found.")));
        }
        self.engine.delete(&table_key(&database, &table), false).await.map_err(engine_error)?;
        Ok(Value::map())
    }

    pub fn region(&self) -> &str {
        &self.region
    }
}

/// A table's schema from the catalog (what a Firehose conversion reads).
pub fn table_schema(engine: &Engine, database: &str, table: &str) -> Result<TableSchema, String> {
    let (database, table) = (database.to_lowercase(), table.to_lowercase());
    let meta = engine
        .describe(&table_key(&database, &table))
        .map_err(|_| format!("The Glue table {database}.{table} was not found"))?;
    let stored = value::decode(Protocol::Json, meta.spec()).map_err(|error| error.message)?;
    let columns = match stored.get("StorageDescriptor").and_then(|descriptor| descriptor.get("Columns")) {
        Some(Value::List(columns)) => columns
            .iter()
            .filter_map(|column| match (column.get("Name"), column.get("Type")) {
                (Some(Value::Str(name)), Some(Value::Str(kind))) => {
                    Some(Column { name: name.clone(), hive_type: kind.trim().to_lowercase() })
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if columns.is_empty() {
        return Err(format!("The Glue table {database}.{table} has no columns in its StorageDescriptor"));
    }
    let version_id = match stored.get("VersionId") {
        Some(Value::Str(text)) => text.clone(),
        _ => "0".to_owned(),
    };
    Ok(TableSchema { database, table, version_id, columns })
}

/// GetTables' `Expression`: names matching any of its `|`-separated patterns, where `*` is
/// any run of characters (the forms the Glue documentation shows).
fn matches_expression(expression: &str, name: &str) -> bool {
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
            Some((b'.', rest)) if rest.first() == Some(&b'*') => {
                (0..=text.len()).any(|skip| glob(&rest[1..], &text[skip..]))
            }
            Some((&byte, rest)) => text.first() == Some(&byte) && glob(rest, &text[1..]),
        }
    }
    expression.split('|').any(|pattern| glob(pattern.trim().to_lowercase().as_bytes(), name.as_bytes()))
}

fn engine_error(error: millrace_core::EngineError) -> ApiError {
    match &error {
        millrace_core::EngineError::Catalog(millrace_core::CatalogError::Exists { kind, .. }) => {
            let what = if *kind == ResourceKind::GlueDatabase { "Database" } else { "Table" };
            ApiError::new(codes::ALREADY_EXISTS, format!("{what} already exists."))
        }
        millrace_core::EngineError::Catalog(millrace_core::CatalogError::NotFound { kind, name }) => {
            ApiError::new(codes::ENTITY_NOT_FOUND, format!("{} {name} not found.", kind.noun()))
        }
        millrace_core::EngineError::Catalog(millrace_core::CatalogError::Invalid(
            millrace_core::Invalid::Version { .. },
        )) => {
            ApiError::new(codes::CONCURRENT_MODIFICATION, "The table was changed by another request; retry.")
        }
        _ => ApiError::from(error),
    }
}

impl Service for GlueApi {
    fn name(&self) -> &'static str {
        "glue"
    }

    fn signing_name(&self) -> &'static str {
        "glue"
    }

    fn routing(&self) -> Routing {
        Routing::Target { prefix: TARGET_PREFIX }
    }

    fn call(self: Arc<Self>, call: Call) -> ReplyFuture {
        Box::pin(async move {
            let protocol = call.head.protocol;
            let operation = call.head.operation.clone().unwrap_or_default();
            let request_id = call.head.request_id.clone();
            Reply::target(protocol, self.handle(&operation, protocol, call.body.bytes(), &request_id).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert!(matches_expression("events*", "events_2026"));
        assert!(matches_expression("a|events.*", "events"));
        assert!(!matches_expression("logs*", "events"));
        assert!(matches_expression("*", "anything"));
    }
}
