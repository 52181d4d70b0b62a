//! An application as the catalog keeps it (its spec: the configuration as sent, with the
//! server's ids and versions), read from and written to requests of both API versions, and
//! compiled into what the worker runs: the parsed SQL, the input's record schema and the
//! reference tables' schemas.

use millrace_core::ResourceKind;
use millrace_gpu::run::record::{InputSchema, OutputFormat};
use millrace_gpu::sql::plan::{Application, Column, Name, StreamDef};

use super::error::{codes, invalid};
use crate::aws::{document as value, ApiError, Protocol, Request, Value, ACCOUNT_ID};

/// In-application stream names: 1–32 characters.
const IN_APP_NAME_MAX: usize = 32;
/// Columns of an input schema at most (AWS's limit).
const COLUMNS_MAX: usize = 1000;
/// The code at most (AWS: 100,000 bytes).
pub const CODE_BYTES_MAX: usize = 102_400;

/// A stream an application reads or writes: a data stream or a delivery stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub kind: ResourceKind,
    pub name: String,
    pub arn: String,
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub id: String,
    pub name_prefix: String,
    pub source: Target,
    /// `SourceSchema` as sent.
    pub schema: Value,
    pub parallelism: i64,
    pub processing: Option<Value>,
}

impl Input {
    /// The in-application stream it feeds (`SOURCE_SQL_STREAM_001`).
    pub fn stream_name(&self) -> String {
        format!("{}_001", self.name_prefix)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub id: String,
    /// The in-application stream it writes out.
    pub name: String,
    pub destination: Option<Target>,
    /// `LambdaOutput` as sent (refused at start: this server invokes no Lambda for outputs).
    pub lambda: Option<Value>,
    /// JSON or CSV.
    pub format: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub id: String,
    pub table: String,
    pub bucket_arn: String,
    pub file_key: String,
    pub role: Option<String>,
    pub schema: Value,
}

impl Reference {
    pub fn bucket(&self) -> &str {
        self.bucket_arn.strip_prefix("arn:aws:s3:::").unwrap_or(&self.bucket_arn)
    }
}

/// An application.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    pub description: Option<String>,
    pub code: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Started, and not stopped since (a restarted server resumes it).
    pub running: bool,
    /// The starting position of the last start.
    pub start: Option<String>,
    /// 1 for KinesisAnalytics_20150814, 2 for KinesisAnalytics_20180523 (SQL-1_0).
    pub api: u8,
    pub service_role: Option<String>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub references: Vec<Reference>,
    /// `CloudWatchLoggingOptions` as sent, each with its id.
    pub logging: Vec<Value>,
    pub next_id: i64,
}

impl App {
    pub fn new(name: &str, api: u8, now_ms: i64) -> App {
        App {
            name: name.to_owned(),
            description: None,
            code: String::new(),
            version: 1,
            created_ms: now_ms,
            updated_ms: now_ms,
            running: false,
            start: None,
            api,
            service_role: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            references: Vec::new(),
            logging: Vec::new(),
            next_id: 1,
        }
    }

    /// A fresh id for an input, output, reference or logging option (`1.1`, `1.2`, …).
    pub fn fresh_id(&mut self) -> String {
        let id = format!("1.{}", self.next_id);
        self.next_id += 1;
        id
    }

    pub fn arn(&self, region: &str) -> String {
        arn(region, &self.name)
    }

    // -------------------------------------------------------------------------------------
    // Storage

    pub fn encode(&self) -> Vec<u8> {
        let target = |target: &Target| {
            Value::map()
                .with(
                    "Kind",
                    if target.kind == ResourceKind::DeliveryStream { "firehose" } else { "kinesis" },
                )
                .with("Name", target.name.as_str())
                .with("ARN", target.arn.as_str())
                .with_opt("Role", target.role.clone())
        };
        let inputs = self
            .inputs
            .iter()
            .map(|input| {
                Value::map()
                    .with("Id", input.id.as_str())
                    .with("NamePrefix", input.name_prefix.as_str())
                    .with("Source", target(&input.source))
                    .with("Schema", input.schema.clone())
                    .with("Parallelism", input.parallelism)
                    .with_opt("Processing", input.processing.clone())
            })
            .collect::<Vec<_>>();
        let outputs = self
            .outputs
            .iter()
            .map(|output| {
                Value::map()
                    .with("Id", output.id.as_str())
                    .with("Name", output.name.as_str())
                    .with_opt("Destination", output.destination.as_ref().map(target))
                    .with_opt("Lambda", output.lambda.clone())
                    .with("Format", output.format.as_str())
            })
            .collect::<Vec<_>>();
        let references = self
            .references
            .iter()
            .map(|reference| {
                Value::map()
                    .with("Id", reference.id.as_str())
                    .with("Table", reference.table.as_str())
                    .with("BucketARN", reference.bucket_arn.as_str())
                    .with("FileKey", reference.file_key.as_str())
                    .with_opt("Role", reference.role.clone())
                    .with("Schema", reference.schema.clone())
            })
            .collect::<Vec<_>>();
        let stored = Value::map()
            .with("Name", self.name.as_str())
            .with_opt("Description", self.description.clone())
            .with("Code", self.code.as_str())
            .with("Version", self.version)
            .with("Created", self.created_ms)
            .with("Updated", self.updated_ms)
            .with("Running", self.running)
            .with_opt("Start", self.start.clone())
            .with("Api", i64::from(self.api))
            .with_opt("ServiceRole", self.service_role.clone())
            .with("Inputs", Value::List(inputs))
            .with("Outputs", Value::List(outputs))
            .with("References", Value::List(references))
            .with("Logging", Value::List(self.logging.clone()))
            .with("NextId", self.next_id);
        value::encode(Protocol::Json, &stored)
    }

    pub fn decode(bytes: &[u8]) -> Result<App, ApiError> {
        let stored = value::decode(Protocol::Json, bytes)?;
        let corrupt = || ApiError::new(codes::INTERNAL_FAILURE, "a stored application cannot be read");
        let text = |value: &Value, member: &str| match value.get(member) {
            Some(Value::Str(text)) => Some(text.clone()),
            _ => None,
        };
        let int = |value: &Value, member: &str| match value.get(member) {
            Some(Value::Int(number)) => Some(*number),
            Some(Value::Float(number)) => Some(*number as i64),
            _ => None,
        };
        let list = |value: &Value, member: &str| match value.get(member) {
            Some(Value::List(items)) => items.clone(),
            _ => Vec::new(),
        };
        let target = |value: &Value| -> Option<Target> {
            Some(Target {
                kind: if text(value, "Kind")? == "firehose" {
                    ResourceKind::DeliveryStream
                } else {
                    ResourceKind::DataStream
                },
                name: text(value, "Name")?,
                arn: text(value, "ARN")?,
                role: text(value, "Role"),
            })
        };
        let mut inputs = Vec::new();
        for input in list(&stored, "Inputs") {
            inputs.push(Input {
                id: text(&input, "Id").ok_or_else(corrupt)?,
                name_prefix: text(&input, "NamePrefix").ok_or_else(corrupt)?,
                source: input.get("Source").and_then(target).ok_or_else(corrupt)?,
                schema: input.get("Schema").cloned().ok_or_else(corrupt)?,
                parallelism: int(&input, "Parallelism").unwrap_or(1),
                processing: input.get("Processing").cloned(),
            });
        }
        let mut outputs = Vec::new();
        for output in list(&stored, "Outputs") {
            outputs.push(Output {
                id: text(&output, "Id").ok_or_else(corrupt)?,
                name: text(&output, "Name").ok_or_else(corrupt)?,
                destination: output.get("Destination").and_then(target),
                lambda: output.get("Lambda").cloned(),
                format: text(&output, "Format").unwrap_or_else(|| "JSON".into()),
            });
        }
        let mut references = Vec::new();
        for reference in list(&stored, "References") {
            references.push(Reference {
                id: text(&reference, "Id").ok_or_else(corrupt)?,
                table: text(&reference, "Table").ok_or_else(corrupt)?,
                bucket_arn: text(&reference, "BucketARN").ok_or_else(corrupt)?,
                file_key: text(&reference, "FileKey").ok_or_else(corrupt)?,
                role: text(&reference, "Role"),
                schema: reference.get("Schema").cloned().ok_or_else(corrupt)?,
            });
        }
        Ok(App {
            name: text(&stored, "Name").ok_or_else(corrupt)?,
            description: text(&stored, "Description"),
            code: text(&stored, "Code").unwrap_or_default(),
            version: int(&stored, "Version").unwrap_or(1),
            created_ms: int(&stored, "Created").unwrap_or(0),
            updated_ms: int(&stored, "Updated").unwrap_or(0),
            running: matches!(stored.get("Running"), Some(Value::Bool(true))),
            start: text(&stored, "Start"),
            api: int(&stored, "Api").unwrap_or(1) as u8,
            service_role: text(&stored, "ServiceRole"),
            inputs,
            outputs,
            references,
            logging: list(&stored, "Logging"),
            next_id: int(&stored, "NextId").unwrap_or(1),
        })
    }

    // -------------------------------------------------------------------------------------
    // Descriptions

    pub fn input_descriptions(&self) -> Value {
        Value::List(
            self.inputs
                .iter()
                .map(|input| {
                    let source = Value::map()
                        .with("ResourceARN", input.source.arn.as_str())
                        .with_opt("RoleARN", input.source.role.clone());
                    let member = if input.source.kind == ResourceKind::DeliveryStream {
                        "KinesisFirehoseInputDescription"
                    } else {
                        "KinesisStreamsInputDescription"
                    };
                    Value::map()
                        .with("InputId", input.id.as_str())
                        .with("NamePrefix", input.name_prefix.as_str())
                        .with("InAppStreamNames", Value::List(vec![Value::from(input.stream_name())]))
                        .with_opt("InputProcessingConfigurationDescription", input.processing.clone())
                        .with(member, source)
                        .with("InputSchema", input.schema.clone())
                        .with("InputParallelism", Value::map().with("Count", input.parallelism))
                        .with(
                            "InputStartingPositionConfiguration",
                            Value::map().with_opt("InputStartingPosition", self.start.clone()),
                        )
                })
                .collect(),
        )
    }

    pub fn output_descriptions(&self) -> Value {
        Value::List(
            self.outputs
                .iter()
                .map(|output| {
                    let mut out =
                        Value::map().with("OutputId", output.id.as_str()).with("Name", output.name.as_str());
                    if let Some(destination) = &output.destination {
                        let member = if destination.kind == ResourceKind::DeliveryStream {
                            "KinesisFirehoseOutputDescription"
                        } else {
                            "KinesisStreamsOutputDescription"
                        };
                        out = out.with(
                            member,
                            Value::map()
                                .with("ResourceARN", destination.arn.as_str())
                                .with_opt("RoleARN", destination.role.clone()),
                        );
                    }
                    if let Some(lambda) = &output.lambda {
                        out = out.with("LambdaOutputDescription", lambda.clone());
                    }
                    out.with(
                        "DestinationSchema",
                        Value::map().with("RecordFormatType", output.format.as_str()),
                    )
                })
                .collect(),
        )
    }

    pub fn reference_descriptions(&self) -> Value {
        Value::List(
            self.references
                .iter()
                .map(|reference| {
                    Value::map()
                        .with("ReferenceId", reference.id.as_str())
                        .with("TableName", reference.table.as_str())
                        .with(
                            "S3ReferenceDataSourceDescription",
                            Value::map()
                                .with("BucketARN", reference.bucket_arn.as_str())
                                .with("FileKey", reference.file_key.as_str())
                                .with("ReferenceRoleARN", reference.role.clone().unwrap_or_default()),
                        )
                        .with("ReferenceSchema", reference.schema.clone())
                })
                .collect(),
        )
    }

    // -------------------------------------------------------------------------------------
    // Compiling

    /// The streams the code may read: the input's in-application stream, then the reference
    /// tables.
    pub fn stream_defs(&self) -> Result<(Vec<StreamDef>, Schemas), ApiError> {
        let mut defs = Vec::new();
        let mut schemas = Vec::new();
        for input in &self.inputs {
            let schema = compile_schema(&input.schema, "InputSchema")?;
            let name = Name::new(input.stream_name());
            defs.push(StreamDef { name: name.clone(), columns: schema.columns.clone() });
            schemas.push((name, schema));
        }
        for reference in &self.references {
            let schema = compile_schema(&reference.schema, "ReferenceSchema")?;
            let name = Name::new(reference.table.as_str());
            defs.push(StreamDef { name: name.clone(), columns: schema.columns.clone() });
            schemas.push((name, schema));
        }
        Ok((defs, schemas))
    }

    /// The code as CreateApplication and UpdateApplication check it: every error but a stream
    /// or table not defined yet (the input or a reference table may be added after the code;
    /// StartApplication checks the whole, [`App::compile`]).
    pub fn check_code(&self) -> Result<(), ApiError> {
        if self.code.trim().is_empty() {
            return Ok(());
        }
        let (defs, _) = self.stream_defs()?;
        match millrace_gpu::sql::parse_application(&self.code, &defs) {
            Ok(_) => Ok(()),
            Err(error) if error.undefined_stream => Ok(()),
            Err(error) => Err(code_error(&error)),
        }
    }

    /// The code parsed against the inputs and reference tables; a refusal names the line and
    /// column.
    pub fn compile(&self) -> Result<Compiled, ApiError> {
        let (defs, schemas) = self.stream_defs()?;
        let application =
            millrace_gpu::sql::parse_application(&self.code, &defs).map_err(|error| code_error(&error))?;
        Ok(Compiled { application, defs, schemas })
    }
}

/// Record schemas by in-application stream (the input) or table (a reference) name.
pub type Schemas = Vec<(Name, InputSchema)>;

/// What the worker runs.
pub struct Compiled {
    pub application: Application,
    pub defs: Vec<StreamDef>,
    /// The input's and each reference table's record schema, by stream name.
    pub schemas: Schemas,
}

impl Compiled {
    /// The columns of an in-application stream the code declares.
    pub fn columns_of(&self, stream: &str) -> Option<(Name, Vec<Column>)> {
        let exact = self.application.streams.iter().find(|definition| definition.name.as_str() == stream);
        let found = exact.or_else(|| {
            self.application
                .streams
                .iter()
                .find(|definition| definition.name.as_str().eq_ignore_ascii_case(stream))
        })?;
        Some((found.name.clone(), found.columns.clone()))
    }
}

fn code_error(error: &millrace_gpu::sql::SqlError) -> ApiError {
    ApiError::new(codes::CODE_VALIDATION, format!("The application code is invalid: {error}"))
}

pub fn arn(region: &str, name: &str) -> String {
    format!("arn:aws:kinesisanalytics:{region}:{ACCOUNT_ID}:application/{name}")
}

pub fn output_format(format: &str) -> OutputFormat {
    if format == "CSV" {
        OutputFormat::Csv
    } else {
        OutputFormat::Json
    }
}

/// Application names: 1–128 of `[a-zA-Z0-9_.-]`.
pub fn application_name(request: Request<'_>) -> Result<String, ApiError> {
    let name = request.str_req("ApplicationName")?;
    if name.is_empty()
        || name.len() > 128
        || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
    {
        return Err(ApiError::validation(
            "ApplicationName",
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and 128",
        ));
    }
    Ok(name.to_owned())
}

/// `arn:aws:kinesis:<region>:<account>:stream/<name>` or
/// `arn:aws:firehose:<region>:<account>:deliverystream/<name>`.
pub fn target_of(arn: &str, role: Option<&str>) -> Result<Target, ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let resource = if parts.len() == 6 && parts[0] == "arn" { Some((parts[2], parts[5])) } else { None };
    let (kind, name) = match resource {
        Some(("kinesis", rest)) => match rest.strip_prefix("stream/") {
            Some(name) if !name.is_empty() => (ResourceKind::DataStream, name),
            _ => return Err(invalid(format!("{arn} is not a Kinesis data stream's ARN"))),
        },
        Some(("firehose", rest)) => match rest.strip_prefix("deliverystream/") {
            Some(name) if !name.is_empty() => (ResourceKind::DeliveryStream, name),
            _ => return Err(invalid(format!("{arn} is not a Firehose delivery stream's ARN"))),
        },
        _ => {
            return Err(invalid(format!(
                "{arn} is not the ARN of a Kinesis data stream (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME) or a \
                 Firehose delivery stream (arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME)"
            )))
        }
    };
    Ok(Target { kind, name: name.to_owned(), arn: arn.to_owned(), role: role.map(str::to_owned) })
}

fn in_app_name(text: &str, member: &str) -> Result<String, ApiError> {
    if text.is_empty() || text.chars().count() > IN_APP_NAME_MAX {
        return Err(ApiError::validation(member, text, "Member must have length between 1 and 32"));
    }
    Ok(text.to_owned())
}

/// A stream input (`Input`, both versions), with its id.
pub fn input_from(request: Request<'_>, id: String, role_required: bool) -> Result<Input, ApiError> {
    let name_prefix = in_app_name(request.str_req("NamePrefix")?, "NamePrefix")?;
    let streams = request.structure_opt("KinesisStreamsInput")?;
    let firehose = request.structure_opt("KinesisFirehoseInput")?;
    let source = match (streams, firehose) {
        (Some(source), None) | (None, Some(source)) => {
            let role =
                if role_required { Some(source.str_req("RoleARN")?) } else { source.str_opt("RoleARN")? };
            let target = target_of(source.str_req("ResourceARN")?, role)?;
            let expected =
                if streams.is_some() { ResourceKind::DataStream } else { ResourceKind::DeliveryStream };
            if target.kind != expected {
                return Err(invalid(format!("{} is not the kind of stream its member names", target.arn)));
            }
            target
        }
        _ => return Err(invalid("An input has exactly one of KinesisStreamsInput and KinesisFirehoseInput")),
    };
    let schema = request.member("InputSchema").cloned().ok_or_else(|| value::missing("InputSchema"))?;
    compile_schema(&schema, "InputSchema")?;
    let parallelism = match request.structure_opt("InputParallelism")? {
        Some(parallelism) => parallelism.int_opt("Count")?.unwrap_or(1),
        None => 1,
    };
    if parallelism != 1 {
        return Err(invalid(format!(
            "InputParallelism {parallelism}: this server runs one in-application stream per input (Count 1); \
             its operators read every shard"
        )));
    }
    let processing = request.member("InputProcessingConfiguration").cloned();
    if processing.is_some() {
        return Err(ApiError::new(
            codes::UNSUPPORTED_OPERATION,
            "InputProcessingConfiguration (a Lambda preprocessor) is not supported by this server",
        ));
    }
    Ok(Input { id, name_prefix, source, schema, parallelism, processing })
}

/// An output (`Output`, both versions), with its id.
pub fn output_from(request: Request<'_>, id: String, role_required: bool) -> Result<Output, ApiError> {
    let name = in_app_name(request.str_req("Name")?, "Name")?;
    let format = match request.structure_opt("DestinationSchema")? {
        Some(schema) => schema.str_req("RecordFormatType")?.to_owned(),
        None => return Err(value::missing("DestinationSchema")),
    };
    if format != "JSON" && format != "CSV" {
        return Err(ApiError::validation(
            "DestinationSchema.RecordFormatType",
            &format,
            "Member must satisfy enum value set: [JSON, CSV]",
        ));
    }
    let streams = request.structure_opt("KinesisStreamsOutput")?;
    let firehose = request.structure_opt("KinesisFirehoseOutput")?;
    let lambda = request.member("LambdaOutput").cloned();
    let destination = match (streams, firehose, &lambda) {
        (Some(destination), None, None) | (None, Some(destination), None) => {
            let role = if role_required {
                Some(destination.str_req("RoleARN")?)
            } else {
                destination.str_opt("RoleARN")?
            };
            let target = target_of(destination.str_req("ResourceARN")?, role)?;
            let expected =
                if streams.is_some() { ResourceKind::DataStream } else { ResourceKind::DeliveryStream };
            if target.kind != expected {
                return Err(invalid(format!("{} is not the kind of stream its member names", target.arn)));
            }
            Some(target)
        }
        (None, None, Some(_)) => {
            return Err(ApiError::new(
                codes::UNSUPPORTED_OPERATION,
                "LambdaOutput is not supported by this server; write to a data stream or a delivery stream",
            ))
        }
        _ => {
            return Err(invalid(
                "An output has exactly one of KinesisStreamsOutput, KinesisFirehoseOutput and LambdaOutput",
            ))
        }
    };
    Ok(Output { id, name, destination, lambda: None, format })
}

/// A reference data source (`ReferenceDataSource`), with its id.
pub fn reference_from(request: Request<'_>, id: String, role_required: bool) -> Result<Reference, ApiError> {
    let table = in_app_name(request.str_req("TableName")?, "TableName")?;
    let source = request
        .structure_opt("S3ReferenceDataSource")?
        .ok_or_else(|| value::missing("S3ReferenceDataSource"))?;
    let bucket_arn = source.str_req("BucketARN")?.to_owned();
    if !bucket_arn.starts_with("arn:aws:s3:::") || bucket_arn.len() <= "arn:aws:s3:::".len() {
        return Err(invalid(format!("{bucket_arn} is not an S3 bucket's ARN (arn:aws:s3:::BUCKET)")));
    }
    let file_key = source.str_req("FileKey")?.to_owned();
    let role = if role_required {
        Some(source.str_req("ReferenceRoleARN")?.to_owned())
    } else {
        source.str_opt("ReferenceRoleARN")?.map(str::to_owned)
    };
    let schema =
        request.member("ReferenceSchema").cloned().ok_or_else(|| value::missing("ReferenceSchema"))?;
    compile_schema(&schema, "ReferenceSchema")?;
    Ok(Reference { id, table, bucket_arn, file_key, role, schema })
}

/// A `SourceSchema` as the record decoder runs it.
pub fn compile_schema(schema: &Value, member: &str) -> Result<InputSchema, ApiError> {
    let bad = |message: String| invalid(format!("{member}: {message}"));
    let schema = Request::new(Protocol::Json, schema);
    let format = schema.structure_opt("RecordFormat")?.ok_or_else(|| value::missing("RecordFormat"))?;
    if let Some(encoding) = schema.str_opt("RecordEncoding")? {
        if !encoding.eq_ignore_ascii_case("UTF-8") {
            return Err(bad(format!("RecordEncoding {encoding}: only UTF-8 is supported")));
        }
    }
    let columns = schema.list_req("RecordColumns")?;
    if columns.is_empty() || columns.len() > COLUMNS_MAX {
        return Err(bad(format!("RecordColumns has {} columns; 1 to {COLUMNS_MAX}", columns.len())));
    }
    let mut parsed = Vec::new();
    let mut mappings = Vec::new();
    for column in columns {
        let column = Request::new(Protocol::Json, column);
        let name = column.str_req("Name")?;
        if name.is_empty() {
            return Err(bad("a column has an empty name".into()));
        }
        let sql_type = column.str_req("SqlType")?;
        let sql_type = millrace_gpu::sql::parse_type(sql_type)
            .map_err(|error| bad(format!("column {name}: SqlType {sql_type}: {}", error.message)))?;
        let name = Name::new(name);
        if parsed.iter().any(|existing: &Column| existing.name == name) {
            return Err(bad(format!("column {name} is declared twice")));
        }
        mappings.push(column.str_opt("Mapping")?.map(str::to_owned));
        parsed.push(Column { name, sql_type, not_null: false });
    }
    let mapping = format.structure_opt("MappingParameters")?;
    let compiled = match format.str_req("RecordFormatType")? {
        "JSON" => {
            let row_path = match mapping
                .and_then(|mapping| mapping.structure_opt("JSONMappingParameters").transpose())
            {
                Some(json) => json?.str_req("RecordRowPath")?.to_owned(),
                None => "$".to_owned(),
            };
            let mappings: Vec<String> = mappings
                .into_iter()
                .zip(&parsed)
                .map(|(mapping, column)| mapping.unwrap_or_else(|| format!("$.{}", column.name.as_str())))
                .collect();
            let mappings: Vec<&str> = mappings.iter().map(String::as_str).collect();
            InputSchema::json(&row_path, parsed, &mappings).map_err(|error| bad(error.0))?
        }
        "CSV" => {
            let (rows, columns) =
                match mapping.and_then(|mapping| mapping.structure_opt("CSVMappingParameters").transpose()) {
                    Some(csv) => {
                        let csv = csv?;
                        (
                            csv.str_req("RecordRowDelimiter")?.to_owned(),
                            csv.str_req("RecordColumnDelimiter")?.to_owned(),
                        )
                    }
                    None => ("\n".to_owned(), ",".to_owned()),
                };
            InputSchema::csv(&rows, &columns, parsed).map_err(|error| bad(error.0))?
        }
        other => {
            return Err(ApiError::validation(
                "RecordFormat.RecordFormatType",
                other,
                "Member must satisfy enum value set: [JSON, CSV]",
            ))
        }
    };
    Ok(compiled)
}

/// Tags as both versions send them: `[{Key, Value}]`.
pub fn tags_of(request: Request<'_>, member: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut tags = Vec::new();
    for tag in request.list_opt(member)?.unwrap_or(&[]) {
        let tag = Request::new(request.protocol, tag);
        let key = tag.str_req("Key")?;
        if key.is_empty() || key.chars().count() > 128 || key.starts_with("aws:") {
            return Err(ApiError::new(
                codes::INVALID_ARGUMENT,
                format!("Tag key {key:?} must be 1-128 characters and not start with aws:"),
            ));
        }
        let value = tag.str_opt("Value")?.unwrap_or("");
        if value.chars().count() > 256 {
            return Err(ApiError::new(
                codes::INVALID_ARGUMENT,
                format!("The value of tag {key} is over 256 characters"),
            ));
        }
        tags.push((key.to_owned(), value.to_owned()));
    }
    Ok(tags)
}
