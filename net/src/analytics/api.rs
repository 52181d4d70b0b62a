//! The two APIs of Kinesis Data Analytics for SQL over one store of applications:
//! `KinesisAnalytics_20150814` (boto3's `kinesisanalytics`) and the SQL applications of
//! `KinesisAnalytics_20180523` (`kinesisanalyticsv2`, `RuntimeEnvironment` `SQL-1_0`). Both
//! sign as `kinesisanalytics`. An application is a catalog resource of kind
//! `AnalyticsApplication` whose one shard log holds its snapshots.

use std::sync::Arc;
use std::time::Duration;

use millrace_core::{
    Engine, NewResource, ReadLimits, ResourceKey, ResourceKind, ResourceUpdate, StartPosition, StreamMode,
};

use super::discover;
use super::error::{self, codes, invalid, not_found};
use super::model::{self, App, Input, Output, Reference};
use super::worker::{Fallback, Phase, Start, WorkerConfig, Workers};
use crate::aws::service::{Call, Reply, ReplyFuture, Routing, Service};
use crate::aws::{document as value, ApiError, Protocol, Request, Value};
use crate::firehose::sink::Sink;

pub const TARGET_PREFIX_V1: &str = "KinesisAnalytics_20150814";
pub const TARGET_PREFIX_V2: &str = "KinesisAnalytics_20180523";
/// Outputs per application (AWS's limit), inputs (KDA for SQL reads one streaming source).
const OUTPUTS_MAX: usize = 3;
const INPUTS_MAX: usize = 1;
const REFERENCES_MAX: usize = 1;
const TAGS_MAX: usize = 50;
const DESCRIPTION_MAX: usize = 1024;
/// Records DiscoverInputSchema samples.
const SAMPLES_MAX: usize = 100;

#[derive(Clone)]
pub struct AnalyticsConfig {
    pub region: String,
    pub worker: WorkerConfig,
    /// Where event-time windows aggregate (`--analytics-device`): opened with
    /// [`millrace_gpu::run::open_device`].
    pub device: Option<millrace_gpu::run::Device>,
}

impl Default for AnalyticsConfig {
    fn default() -> AnalyticsConfig {
        AnalyticsConfig { region: "us-east-1".into(), worker: WorkerConfig::default(), device: None }
    }
}

pub struct AnalyticsApi {
    engine: Engine,
    config: AnalyticsConfig,
    sink: Option<Sink>,
    workers: Workers,
    control: tokio::sync::Mutex<()>,
}

/// The v2 API's face of the same applications.
pub struct AnalyticsV2(pub Arc<AnalyticsApi>);

fn key(name: &str) -> ResourceKey {
    ResourceKey::new(ResourceKind::AnalyticsApplication, name)
}

impl AnalyticsApi {
    /// The API over `engine`; applications that were running when the server stopped resume
    /// from their last snapshot, on `runtime`. `sink`: where reference data is read from.
    pub fn new(
        engine: Engine,
        config: AnalyticsConfig,
        sink: Option<Sink>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<AnalyticsApi> {
        let workers =
            Workers::new(engine.clone(), sink.clone(), config.worker.clone(), config.device.clone(), runtime);
        for meta in engine.list(ResourceKind::AnalyticsApplication) {
            if let Ok(app) = App::decode(meta.spec()) {
                if app.running {
                    let fallback = if app.start.as_deref() == Some("NOW") {
                        Fallback::Now
                    } else {
                        Fallback::TrimHorizon
                    };
                    workers.start(&app.name, Start::Resume(fallback));
                }
            }
        }
        Arc::new(AnalyticsApi { engine, config, sink, workers, control: tokio::sync::Mutex::new(()) })
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub async fn handle(
        &self,
        api: u8,
        operation: &str,
        protocol: Protocol,
        body: &[u8],
        request_id: &str,
    ) -> Result<Value, ApiError> {
        let outcome = match value::decode(protocol, body) {
            Ok(value) => self.dispatch(api, operation, Request::new(protocol, &value)).await,
            Err(error) => Err(error),
        };
        outcome.map_err(|error| crate::aws::error::scrub(error, "kinesisanalytics", request_id))
    }

    async fn dispatch(&self, api: u8, operation: &str, request: Request<'_>) -> Result<Value, ApiError> {
        match operation {
            "CreateApplication" if api == 1 => self.create_v1(request).await,
            "CreateApplication" => self.create_v2(request).await,
            "DescribeApplication" => self.describe(api, request),
            "ListApplications" => self.list(api, request),
            "DeleteApplication" => self.delete(request).await,
            "StartApplication" => self.start(api, request).await,
            "StopApplication" => self.stop(api, request).await,
            "UpdateApplication" => self.update(api, request).await,
            "AddApplicationInput" => {
                self.change(api, request, Part::Inputs, |app, request, role| {
                    if app.inputs.len() >= INPUTS_MAX {
                        return Err(invalid("An application has one streaming source; it has one already"));
                    }
                    let id = app.fresh_id();
                    let input = request.structure_opt("Input")?.ok_or_else(|| value::missing("Input"))?;
                    app.inputs.push(model::input_from(input, id, role)?);
                    Ok(())
                })
                .await
            }
            "AddApplicationOutput" => {
                self.change(api, request, Part::Outputs, |app, request, role| {
                    if app.outputs.len() >= OUTPUTS_MAX {
                        return Err(ApiError::new(
                            codes::LIMIT_EXCEEDED,
                            format!("An application has at most {OUTPUTS_MAX} outputs"),
                        ));
                    }
                    let id = app.fresh_id();
                    let output = request.structure_opt("Output")?.ok_or_else(|| value::missing("Output"))?;
                    app.outputs.push(model::output_from(output, id, role)?);
                    Ok(())
                })
                .await
            }
            "DeleteApplicationOutput" => {
                self.change(api, request, Part::Outputs, |app, request, _| {
                    let id = request.str_req("OutputId")?;
                    let before = app.outputs.len();
                    app.outputs.retain(|output| output.id != id);
                    if app.outputs.len() == before {
                        return Err(ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Output {id} is not found.")));
                    }
                    Ok(())
                })
                .await
            }
            "AddApplicationReferenceDataSource" => {
                self.change(api, request, Part::References, |app, request, role| {
                    if app.references.len() >= REFERENCES_MAX {
                        return Err(ApiError::new(
                            codes::LIMIT_EXCEEDED,
                            format!("An application has at most {REFERENCES_MAX} reference data source"),
                        ));
                    }
                    let id = app.fresh_id();
                    let source = request
                        .structure_opt("ReferenceDataSource")?
                        .ok_or_else(|| value::missing("ReferenceDataSource"))?;
                    app.references.push(model::reference_from(source, id, role)?);
                    Ok(())
                })
                .await
            }
            "DeleteApplicationReferenceDataSource" => {
                self.change(api, request, Part::References, |app, request, _| {
                    let id = request.str_req("ReferenceId")?;
                    let before = app.references.len();
                    app.references.retain(|reference| reference.id != id);
                    if app.references.len() == before {
                        return Err(ApiError::new(
                            codes::RESOURCE_NOT_FOUND,
                            format!("Reference data source {id} is not found."),
                        ));
                    }
                    Ok(())
                })
                .await
            }
            "AddApplicationCloudWatchLoggingOption" => {
                self.change(api, request, Part::Logging, |app, request, _| {
                    let option = request
                        .structure_opt("CloudWatchLoggingOption")?
                        .ok_or_else(|| value::missing("CloudWatchLoggingOption"))?;
                    let stream = option.str_req("LogStreamARN")?;
                    let id = app.fresh_id();
                    app.logging.push(
                        Value::map()
                            .with("CloudWatchLoggingOptionId", id)
                            .with("LogStreamARN", stream)
                            .with_opt("RoleARN", option.str_opt("RoleARN")?),
                    );
                    Ok(())
                })
                .await
            }
            "DeleteApplicationCloudWatchLoggingOption" => {
                self.change(api, request, Part::Logging, |app, request, _| {
                    let id = request.str_req("CloudWatchLoggingOptionId")?;
                    let before = app.logging.len();
                    app.logging.retain(|option| {
                        !matches!(option.get("CloudWatchLoggingOptionId"), Some(Value::Str(found)) if found == id)
                    });
                    if app.logging.len() == before {
                        return Err(ApiError::new(
                            codes::RESOURCE_NOT_FOUND,
                            format!("CloudWatch logging option {id} is not found."),
                        ));
                    }
                    Ok(())
                })
                .await
            }
            "AddApplicationInputProcessingConfiguration" => Err(ApiError::new(
                codes::UNSUPPORTED_OPERATION,
                "Input processing (a Lambda preprocessor) is not supported by this server",
            )),
            "DeleteApplicationInputProcessingConfiguration" => {
                self.change(api, request, Part::Inputs, |app, request, _| {
                    let id = request.str_req("InputId")?;
                    let input = app
                        .inputs
                        .iter_mut()
                        .find(|input| input.id == id)
                        .ok_or_else(|| ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Input {id} is not found.")))?;
                    input.processing = None;
                    Ok(())
                })
                .await
            }
            "DiscoverInputSchema" => self.discover(request).await,
            "TagResource" => self.tag(request).await,
            "UntagResource" => self.untag(request).await,
            "ListTagsForResource" => self.list_tags(request),
            _ => Err(ApiError::new(
                codes::UNSUPPORTED_OPERATION,
                format!("Operation {operation} is not supported by this server's Kinesis Data Analytics for SQL"),
            )),
        }
    }

    fn load(&self, name: &str) -> Result<(App, u64), ApiError> {
        let meta = self.engine.describe(&key(name)).map_err(|_| not_found(name))?;
        Ok((App::decode(meta.spec())?, meta.version()))
    }

    async fn store(&self, app: &App, catalog_version: u64) -> Result<(), ApiError> {
        self.engine
            .update_at(&key(&app.name), Some(catalog_version), ResourceUpdate::Spec(app.encode()))
            .await
            .map_err(error::engine)
    }

    fn status(&self, app: &App) -> &'static str {
        match self.workers.phase(&app.name) {
            Some(Phase::Starting) => "STARTING",
            Some(Phase::Running) if app.running => "RUNNING",
            Some(Phase::Running | Phase::Stopping) => "STOPPING",
            None => "READY",
        }
    }

    // -------------------------------------------------------------------------------------
    // Create, describe, list, delete

    async fn create_v1(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let mut app = App::new(&name, 1, self.engine.now_ms());
        app.description = description(request)?;
        for input in request.list_opt("Inputs")?.unwrap_or(&[]) {
            let id = app.fresh_id();
            app.inputs.push(model::input_from(Request::new(request.protocol, input), id, true)?);
        }
        for output in request.list_opt("Outputs")?.unwrap_or(&[]) {
            let id = app.fresh_id();
            app.outputs.push(model::output_from(Request::new(request.protocol, output), id, true)?);
        }
        for option in request.list_opt("CloudWatchLoggingOptions")?.unwrap_or(&[]) {
            let option = Request::new(request.protocol, option);
            let id = app.fresh_id();
            app.logging.push(
                Value::map()
                    .with("CloudWatchLoggingOptionId", id)
                    .with("LogStreamARN", option.str_req("LogStreamARN")?)
                    .with_opt("RoleARN", option.str_opt("RoleARN")?),
            );
        }
        app.code = request.str_opt("ApplicationCode")?.unwrap_or("").to_owned();
        let tags = model::tags_of(request, "Tags")?;
        self.create(app, tags).await?;
        let arn = model::arn(&self.config.region, &name);
        Ok(Value::map().with(
            "ApplicationSummary",
            Value::map()
                .with("ApplicationName", name.as_str())
                .with("ApplicationARN", arn)
                .with("ApplicationStatus", "READY"),
        ))
    }

    async fn create_v2(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let runtime = request.str_req("RuntimeEnvironment")?;
        if runtime != "SQL-1_0" {
            return Err(ApiError::new(
                codes::UNSUPPORTED_OPERATION,
                format!("RuntimeEnvironment {runtime}: this server runs SQL applications (SQL-1_0)"),
            ));
        }
        let mut app = App::new(&name, 2, self.engine.now_ms());
        app.description = description(request)?;
        app.service_role = Some(request.str_req("ServiceExecutionRole")?.to_owned());
        if let Some(configuration) = request.structure_opt("ApplicationConfiguration")? {
            if let Some(sql) = configuration.structure_opt("SqlApplicationConfiguration")? {
                for input in sql.list_opt("Inputs")?.unwrap_or(&[]) {
                    let id = app.fresh_id();
                    app.inputs.push(model::input_from(Request::new(request.protocol, input), id, false)?);
                }
                for output in sql.list_opt("Outputs")?.unwrap_or(&[]) {
                    let id = app.fresh_id();
                    app.outputs.push(model::output_from(Request::new(request.protocol, output), id, false)?);
                }
                for reference in sql.list_opt("ReferenceDataSources")?.unwrap_or(&[]) {
                    let id = app.fresh_id();
                    app.references.push(model::reference_from(
                        Request::new(request.protocol, reference),
                        id,
                        false,
                    )?);
                }
            }
            if let Some(code) = configuration.structure_opt("ApplicationCodeConfiguration")? {
                let kind = code.str_req("CodeContentType")?;
                if kind != "PLAINTEXT" {
                    return Err(invalid(format!(
                        "CodeContentType {kind}: SQL applications take PLAINTEXT code"
                    )));
                }
                if let Some(content) = code.structure_opt("CodeContent")? {
                    app.code = content.str_opt("TextContent")?.unwrap_or("").to_owned();
                }
            }
        }
        for option in request.list_opt("CloudWatchLoggingOptions")?.unwrap_or(&[]) {
            let option = Request::new(request.protocol, option);
            let id = app.fresh_id();
            app.logging.push(
                Value::map()
                    .with("CloudWatchLoggingOptionId", id)
                    .with("LogStreamARN", option.str_req("LogStreamARN")?),
            );
        }
        let tags = model::tags_of(request, "Tags")?;
        self.create(app.clone(), tags).await?;
        Ok(Value::map().with("ApplicationDetail", self.detail_v2(&app)))
    }

    async fn create(&self, app: App, tags: Vec<(String, String)>) -> Result<(), ApiError> {
        check_limits(&app)?;
        if tags.len() > TAGS_MAX {
            return Err(ApiError::new(codes::TOO_MANY_TAGS, format!("At most {TAGS_MAX} tags")));
        }
        app.check_code()?;
        let _guard = self.control.lock().await;
        let new = NewResource {
            key: key(&app.name),
            shards: 1,
            mode: StreamMode::Provisioned,
            spec: app.encode(),
            tags,
            retention_hours: millrace_core::RETENTION_HOURS_MIN,
            max_record_bytes: millrace_core::DEFAULT_MAX_RECORD_BYTES,
            encryption_key_id: None,
        };
        self.engine.create(new).await.map_err(error::engine)
    }

    fn describe(&self, api: u8, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let (app, _) = self.load(&name)?;
        let detail = if api == 1 { self.detail_v1(&app) } else { self.detail_v2(&app) };
        Ok(Value::map().with("ApplicationDetail", detail))
    }

    fn detail_v1(&self, app: &App) -> Value {
        Value::map()
            .with("ApplicationName", app.name.as_str())
            .with_opt("ApplicationDescription", app.description.clone())
            .with("ApplicationARN", app.arn(&self.config.region))
            .with("ApplicationStatus", self.status(app))
            .with("CreateTimestamp", Value::Timestamp(app.created_ms))
            .with("LastUpdateTimestamp", Value::Timestamp(app.updated_ms))
            .with("InputDescriptions", app.input_descriptions())
            .with("OutputDescriptions", app.output_descriptions())
            .with("ReferenceDataSourceDescriptions", app.reference_descriptions())
            .with("CloudWatchLoggingOptionDescriptions", Value::List(app.logging.clone()))
            .with("ApplicationCode", app.code.as_str())
            .with("ApplicationVersionId", app.version)
    }

    fn detail_v2(&self, app: &App) -> Value {
        let sql = Value::map()
            .with("InputDescriptions", app.input_descriptions())
            .with("OutputDescriptions", app.output_descriptions())
            .with("ReferenceDataSourceDescriptions", app.reference_descriptions());
        let code = Value::map().with("CodeContentType", "PLAINTEXT").with(
            "CodeContentDescription",
            Value::map()
                .with("TextContent", app.code.as_str())
                .with(
                    "CodeMD5",
                    crate::aws::sigv4::hex(&<md5::Md5 as md5::Digest>::digest(app.code.as_bytes())),
                )
                .with("CodeSize", app.code.len()),
        );
        Value::map()
            .with("ApplicationARN", app.arn(&self.config.region))
            .with_opt("ApplicationDescription", app.description.clone())
            .with("ApplicationName", app.name.as_str())
            .with("RuntimeEnvironment", "SQL-1_0")
            .with_opt("ServiceExecutionRole", app.service_role.clone())
            .with("ApplicationStatus", self.status(app))
            .with("ApplicationVersionId", app.version)
            .with("CreateTimestamp", Value::Timestamp(app.created_ms))
            .with("LastUpdateTimestamp", Value::Timestamp(app.updated_ms))
            .with(
                "ApplicationConfigurationDescription",
                Value::map()
                    .with("SqlApplicationConfigurationDescription", sql)
                    .with("ApplicationCodeConfigurationDescription", code),
            )
            .with("CloudWatchLoggingOptionDescriptions", Value::List(app.logging.clone()))
            .with("ApplicationMode", "STREAMING")
    }

    fn list(&self, api: u8, request: Request<'_>) -> Result<Value, ApiError> {
        let limit = request.int_opt("Limit")?.unwrap_or(50);
        if !(1..=50).contains(&limit) {
            return Err(ApiError::validation("Limit", &limit.to_string(), "Member must be between 1 and 50"));
        }
        let after = if api == 1 {
            request.str_opt("ExclusiveStartApplicationName")?
        } else {
            request.str_opt("NextToken")?
        };
        let mut apps: Vec<App> = self
            .engine
            .list(ResourceKind::AnalyticsApplication)
            .iter()
            .filter_map(|meta| App::decode(meta.spec()).ok())
            .filter(|app| after.is_none_or(|after| app.name.as_str() > after))
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        let more = apps.len() > limit as usize;
        apps.truncate(limit as usize);
        let summaries = apps
            .iter()
            .map(|app| {
                let summary = Value::map()
                    .with("ApplicationName", app.name.as_str())
                    .with("ApplicationARN", app.arn(&self.config.region))
                    .with("ApplicationStatus", self.status(app));
                if api == 1 {
                    summary
                } else {
                    summary.with("ApplicationVersionId", app.version).with("RuntimeEnvironment", "SQL-1_0")
                }
            })
            .collect();
        let out = Value::map().with("ApplicationSummaries", Value::List(summaries));
        Ok(if api == 1 {
            out.with("HasMoreApplications", more)
        } else {
            out.with_opt("NextToken", more.then(|| apps.last().map(|app| app.name.clone())).flatten())
        })
    }

    async fn delete(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let created =
            request.timestamp_opt("CreateTimestamp")?.ok_or_else(|| value::missing("CreateTimestamp"))?;
        let _guard = self.control.lock().await;
        let (app, _) = self.load(&name)?;
        // The timestamp comes back as DescribeApplication gave it (seconds, maybe rounded).
        if (created - app.created_ms).abs() >= 1000 {
            return Err(invalid(format!(
                "CreateTimestamp does not match application {name}'s creation time"
            )));
        }
        self.workers.stop_and_wait(&name).await;
        self.engine.delete(&key(&name), false).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    // -------------------------------------------------------------------------------------
    // Start and stop

    async fn start(&self, api: u8, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let _guard = self.control.lock().await;
        let (mut app, version) = self.load(&name)?;
        if app.running || self.workers.phase(&name).is_some() {
            return Err(ApiError::new(
                codes::RESOURCE_IN_USE,
                format!(
                    "Application {name} is in {} status; it can be started in READY status",
                    self.status(&app)
                ),
            ));
        }
        let configurations: Vec<Value> = if api == 1 {
            request.list_req("InputConfigurations")?.to_vec()
        } else {
            match request.structure_opt("RunConfiguration")? {
                Some(run) => run.list_opt("SqlRunConfigurations")?.unwrap_or(&[]).to_vec(),
                None => Vec::new(),
            }
        };
        let mut start = None;
        for configuration in &configurations {
            let configuration = Request::new(request.protocol, configuration);
            let id = configuration.str_req(if api == 1 { "Id" } else { "InputId" })?;
            if !app.inputs.iter().any(|input| input.id == id) {
                return Err(ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Input {id} is not found.")));
            }
            let position = configuration
                .structure_opt("InputStartingPositionConfiguration")?
                .map(|position| position.str_opt("InputStartingPosition"))
                .transpose()?
                .flatten()
                .unwrap_or("NOW");
            start = Some((
                position.to_owned(),
                Start::parse(position).ok_or_else(|| {
                    ApiError::validation(
                        "InputStartingPosition",
                        position,
                        "Member must satisfy enum value set: [NOW, TRIM_HORIZON, LAST_STOPPED_POINT]",
                    )
                })?,
            ));
        }
        let (position, start) = start.unwrap_or_else(|| ("NOW".to_owned(), Start::Now));
        self.check_runnable(&app)?;
        if start == Start::LastStopped && !self.has_snapshot(&name).await {
            return Err(invalid(format!(
                "Application {name} has never run, so it has no last stopped point; start it with NOW or TRIM_HORIZON"
            )));
        }
        app.running = true;
        app.start = Some(position);
        self.store(&app, version).await?;
        self.workers.start(&name, start);
        Ok(if api == 1 { Value::map() } else { Value::map().with("OperationId", operation_id()) })
    }

    async fn has_snapshot(&self, name: &str) -> bool {
        let Ok(meta) = self.engine.describe(&key(name)) else { return false };
        let Some(shard) = meta.shards().first() else { return false };
        matches!(
            self.engine.get_checkpoint(&key(name), super::checkpoint::SNAPSHOT_OWNER, shard.shard_id()).await,
            Ok(Some(_))
        )
    }

    /// What a start needs: code that compiles, one input and its stream, outputs whose
    /// streams exist and that name streams the code creates.
    fn check_runnable(&self, app: &App) -> Result<(), ApiError> {
        let refuse = |message: String| ApiError::new(codes::INVALID_CONFIGURATION, message);
        let input =
            app.inputs.first().ok_or_else(|| refuse(format!("Application {} has no input", app.name)))?;
        if app.code.trim().is_empty() {
            return Err(refuse(format!("Application {} has no application code", app.name)));
        }
        let compiled = app.compile()?;
        let exists =
            |kind: ResourceKind, name: &str| self.engine.describe(&ResourceKey::new(kind, name)).is_ok();
        if !exists(input.source.kind, &input.source.name) {
            return Err(ApiError::new(
                codes::RESOURCE_NOT_FOUND,
                format!("The input stream {} does not exist", input.source.arn),
            ));
        }
        for output in &app.outputs {
            let Some(destination) = &output.destination else {
                return Err(refuse(format!("Output {} has no destination this server can write", output.id)));
            };
            if !exists(destination.kind, &destination.name) {
                return Err(ApiError::new(
                    codes::RESOURCE_NOT_FOUND,
                    format!("The output stream {} does not exist", destination.arn),
                ));
            }
            if !output.name.eq_ignore_ascii_case("error_stream")
                && compiled.columns_of(&output.name).is_none()
            {
                return Err(refuse(format!(
                    "Output {} names the in-application stream {}, which the application code does not create",
                    output.id, output.name
                )));
            }
        }
        if !app.references.is_empty() && self.sink.is_none() {
            return Err(refuse(
                "Reference data needs the S3 store, which this server was started without".into(),
            ));
        }
        Ok(())
    }

    async fn stop(&self, api: u8, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let _guard = self.control.lock().await;
        let (mut app, version) = self.load(&name)?;
        if app.running {
            app.running = false;
            self.store(&app, version).await?;
            self.workers.stop(&name);
        }
        Ok(if api == 1 { Value::map() } else { Value::map().with("OperationId", operation_id()) })
    }

    // -------------------------------------------------------------------------------------
    // Changes

    /// A change of one part under `CurrentApplicationVersionId`; a running application picks
    /// it up (it restarts from its last snapshot).
    async fn change(
        &self,
        api: u8,
        request: Request<'_>,
        part: Part,
        apply: impl FnOnce(&mut App, Request<'_>, bool) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let _guard = self.control.lock().await;
        let (mut app, version) = self.load(&name)?;
        let current = request.int_req("CurrentApplicationVersionId")?;
        if current != app.version {
            return Err(ApiError::new(
                codes::CONCURRENT_MODIFICATION,
                format!(
                    "Application {name} is at version {}, not {current}; describe it and retry",
                    app.version
                ),
            ));
        }
        apply(&mut app, request, api == 1)?;
        check_limits(&app)?;
        app.check_code()?;
        self.commit(&mut app, version).await?;
        Ok(if api == 1 {
            Value::map()
        } else {
            let out = Value::map()
                .with("ApplicationARN", app.arn(&self.config.region))
                .with("ApplicationVersionId", app.version);
            match part {
                Part::Inputs => out.with("InputDescriptions", app.input_descriptions()),
                Part::Outputs => out.with("OutputDescriptions", app.output_descriptions()),
                Part::References => out.with("ReferenceDataSourceDescriptions", app.reference_descriptions()),
                Part::Logging => {
                    out.with("CloudWatchLoggingOptionDescriptions", Value::List(app.logging.clone()))
                }
            }
        })
    }

    async fn commit(&self, app: &mut App, catalog_version: u64) -> Result<(), ApiError> {
        app.version += 1;
        app.updated_ms = self.engine.now_ms();
        if app.running {
            self.check_runnable(app)?;
        }
        self.store(app, catalog_version).await?;
        if app.running {
            self.workers.stop_and_wait(&app.name).await;
            let fallback =
                if app.start.as_deref() == Some("NOW") { Fallback::Now } else { Fallback::TrimHorizon };
            self.workers.start(&app.name, Start::Resume(fallback));
        }
        Ok(())
    }

    async fn update(&self, api: u8, request: Request<'_>) -> Result<Value, ApiError> {
        let name = model::application_name(request)?;
        let _guard = self.control.lock().await;
        let (mut app, version) = self.load(&name)?;
        let current = request.int_opt("CurrentApplicationVersionId")?;
        match current {
            Some(current) if current != app.version => {
                return Err(ApiError::new(
                    codes::CONCURRENT_MODIFICATION,
                    format!(
                        "Application {name} is at version {}, not {current}; describe it and retry",
                        app.version
                    ),
                ))
            }
            None if api == 1 => return Err(value::missing("CurrentApplicationVersionId")),
            _ => {}
        }
        let role = api == 1;
        let (inputs, outputs, references, code) = if api == 1 {
            let update = request
                .structure_opt("ApplicationUpdate")?
                .ok_or_else(|| value::missing("ApplicationUpdate"))?;
            (
                update.list_opt("InputUpdates")?,
                update.list_opt("OutputUpdates")?,
                update.list_opt("ReferenceDataSourceUpdates")?,
                update.str_opt("ApplicationCodeUpdate")?,
            )
        } else {
            match request.structure_opt("ApplicationConfigurationUpdate")? {
                Some(update) => {
                    let sql = update.structure_opt("SqlApplicationConfigurationUpdate")?;
                    let code = match update.structure_opt("ApplicationCodeConfigurationUpdate")? {
                        Some(code) => match code.structure_opt("CodeContentUpdate")? {
                            Some(content) => content.str_opt("TextContentUpdate")?,
                            None => None,
                        },
                        None => None,
                    };
                    match sql {
                        Some(sql) => (
                            sql.list_opt("InputUpdates")?,
                            sql.list_opt("OutputUpdates")?,
                            sql.list_opt("ReferenceDataSourceUpdates")?,
                            code,
                        ),
                        None => (None, None, None, code),
                    }
                }
                None => (None, None, None, None),
            }
        };
        for update in inputs.unwrap_or(&[]) {
            update_input(&mut app, Request::new(request.protocol, update), role)?;
        }
        for update in outputs.unwrap_or(&[]) {
            update_output(&mut app, Request::new(request.protocol, update), role)?;
        }
        for update in references.unwrap_or(&[]) {
            update_reference(&mut app, Request::new(request.protocol, update), role)?;
        }
        if let Some(code) = code {
            app.code = code.to_owned();
        }
        check_limits(&app)?;
        app.check_code()?;
        self.commit(&mut app, version).await?;
        Ok(if api == 1 {
            Value::map()
        } else {
            Value::map().with("ApplicationDetail", self.detail_v2(&app)).with("OperationId", operation_id())
        })
    }

    // -------------------------------------------------------------------------------------
    // Schema discovery

    async fn discover(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let samples = if let Some(s3) = request.structure_opt("S3Configuration")? {
            let bucket_arn = s3.str_req("BucketARN")?;
            let bucket =
                bucket_arn.strip_prefix("arn:aws:s3:::").filter(|bucket| !bucket.is_empty()).ok_or_else(
                    || invalid(format!("{bucket_arn} is not an S3 bucket's ARN (arn:aws:s3:::BUCKET)")),
                )?;
            let sink = self.sink.as_ref().ok_or_else(|| invalid("This server has no S3 store"))?;
            let body = sink
                .get(bucket, s3.str_req("FileKey")?, 64 << 20)
                .await
                .map_err(|why| ApiError::new(codes::RESOURCE_NOT_FOUND, why))?;
            vec![body]
        } else {
            let arn = request.str_opt("ResourceARN")?.ok_or_else(|| value::missing("ResourceARN"))?;
            let target = model::target_of(arn, None)?;
            let position = request
                .structure_opt("InputStartingPositionConfiguration")?
                .map(|position| position.str_opt("InputStartingPosition"))
                .transpose()?
                .flatten()
                .unwrap_or("NOW");
            self.samples(&target, position).await?
        };
        let raw: Vec<Value> =
            samples.iter().map(|sample| Value::from(String::from_utf8_lossy(sample).into_owned())).collect();
        let found = discover::discover(&samples).ok_or_else(|| {
            ApiError::new(codes::UNABLE_TO_DETECT_SCHEMA, "No data was found to infer a schema from")
        })?;
        let parsed = found
            .parsed
            .iter()
            .map(|row| Value::List(row.iter().map(|value| Value::from(value.as_str())).collect()))
            .collect();
        Ok(Value::map()
            .with("InputSchema", found.schema)
            .with("ParsedInputRecords", Value::List(parsed))
            .with("ProcessedInputRecords", Value::List(raw.clone()))
            .with("RawInputRecords", Value::List(raw)))
    }

    /// Up to [`SAMPLES_MAX`] records of a stream from `position` (NOW waits a little for new
    /// ones, as the console's discovery does).
    async fn samples(&self, target: &model::Target, position: &str) -> Result<Vec<Vec<u8>>, ApiError> {
        let source = ResourceKey::new(target.kind, target.name.as_str());
        let meta = self.engine.describe(&source).map_err(|_| {
            ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Stream {} is not found.", target.arn))
        })?;
        let start = match position {
            "NOW" => StartPosition::Latest,
            "TRIM_HORIZON" | "LAST_STOPPED_POINT" => StartPosition::TrimHorizon,
            other => {
                return Err(ApiError::validation(
                    "InputStartingPosition",
                    other,
                    "Member must satisfy enum value set: [NOW, TRIM_HORIZON, LAST_STOPPED_POINT]",
                ))
            }
        };
        let mut shards = Vec::new();
        for shard in meta.shards() {
            let from = self.engine.resolve(&source, shard.shard_id(), start).await.map_err(error::engine)?;
            shards.push((shard.shard_id(), from));
        }
        let deadline = self.engine.now_ms() + if start == StartPosition::Latest { 3_000 } else { 0 };
        let mut samples = Vec::new();
        loop {
            for (shard, from) in &mut shards {
                let limits = ReadLimits { max_records: SAMPLES_MAX - samples.len(), max_bytes: 4 << 20 };
                if limits.max_records == 0 {
                    break;
                }
                let read = self.engine.read(&source, *shard, *from, limits).await.map_err(error::engine)?;
                if let Some(next) = read.next {
                    *from = next;
                }
                samples.extend(read.records.into_iter().map(|record| record.data));
            }
            if !samples.is_empty() || self.engine.now_ms() >= deadline {
                return Ok(samples);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // -------------------------------------------------------------------------------------
    // Tags

    fn name_of_arn(&self, request: Request<'_>) -> Result<String, ApiError> {
        let arn = request.str_req("ResourceARN")?;
        let prefix = format!(
            "arn:aws:kinesisanalytics:{}:{}:application/",
            self.config.region,
            crate::aws::ACCOUNT_ID
        );
        match arn.strip_prefix(&prefix) {
            Some(name) if self.engine.describe(&key(name)).is_ok() => Ok(name.to_owned()),
            _ => Err(ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Resource {arn} is not found."))),
        }
    }

    async fn tag(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.name_of_arn(request)?;
        let tags = model::tags_of(request, "Tags")?;
        let _guard = self.control.lock().await;
        let meta = self.engine.describe(&key(&name)).map_err(error::engine)?;
        let kept =
            meta.tags().iter().filter(|(existing, _)| !tags.iter().any(|(new, _)| new == existing)).count();
        if kept + tags.len() > TAGS_MAX {
            return Err(ApiError::new(
                codes::TOO_MANY_TAGS,
                format!("At most {TAGS_MAX} tags per application"),
            ));
        }
        self.engine.update(&key(&name), ResourceUpdate::AddTags(tags)).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    async fn untag(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.name_of_arn(request)?;
        let keys: Vec<String> = request
            .list_req("TagKeys")?
            .iter()
            .filter_map(|key| match key {
                Value::Str(key) => Some(key.clone()),
                _ => None,
            })
            .collect();
        let _guard = self.control.lock().await;
        self.engine.update(&key(&name), ResourceUpdate::RemoveTags(keys)).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    fn list_tags(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.name_of_arn(request)?;
        let meta = self.engine.describe(&key(&name)).map_err(error::engine)?;
        let tags = meta
            .tags()
            .iter()
            .map(|(key, value)| Value::map().with("Key", key.as_str()).with("Value", value.as_str()))
            .collect();
        Ok(Value::map().with("Tags", Value::List(tags)))
    }
}

#[derive(Clone, Copy)]
enum Part {
    Inputs,
    Outputs,
    References,
    Logging,
}

fn description(request: Request<'_>) -> Result<Option<String>, ApiError> {
    match request.str_opt("ApplicationDescription")? {
        Some(text) if text.chars().count() > DESCRIPTION_MAX => Err(ApiError::validation(
            "ApplicationDescription",
            text,
            "Member must have length less than or equal to 1024",
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

fn check_limits(app: &App) -> Result<(), ApiError> {
    if app.code.len() > model::CODE_BYTES_MAX {
        return Err(invalid(format!(
            "The application code is {} bytes; at most {}",
            app.code.len(),
            model::CODE_BYTES_MAX
        )));
    }
    if app.inputs.len() > INPUTS_MAX {
        return Err(invalid("An application reads one streaming source"));
    }
    if app.outputs.len() > OUTPUTS_MAX {
        return Err(ApiError::new(
            codes::LIMIT_EXCEEDED,
            format!("An application has at most {OUTPUTS_MAX} outputs"),
        ));
    }
    if app.references.len() > REFERENCES_MAX {
        return Err(ApiError::new(
            codes::LIMIT_EXCEEDED,
            format!("An application has at most {REFERENCES_MAX} reference data source"),
        ));
    }
    Ok(())
}

fn operation_id() -> String {
    let bytes = crate::secrets::random_bytes(8).unwrap_or_else(|_| vec![0; 8]);
    crate::aws::sigv4::hex(&bytes)
}

fn update_input(app: &mut App, update: Request<'_>, role: bool) -> Result<(), ApiError> {
    let id = update.str_req("InputId")?;
    let input: &mut Input = app
        .inputs
        .iter_mut()
        .find(|input| input.id == id)
        .ok_or_else(|| ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Input {id} is not found.")))?;
    if let Some(prefix) = update.str_opt("NamePrefixUpdate")? {
        if prefix.is_empty() || prefix.chars().count() > 32 {
            return Err(ApiError::validation(
                "NamePrefixUpdate",
                prefix,
                "Member must have length between 1 and 32",
            ));
        }
        input.name_prefix = prefix.to_owned();
    }
    for member in ["KinesisStreamsInputUpdate", "KinesisFirehoseInputUpdate"] {
        if let Some(source) = update.structure_opt(member)? {
            let arn = source.str_opt("ResourceARNUpdate")?.unwrap_or(&input.source.arn).to_owned();
            let role_arn = source.str_opt("RoleARNUpdate")?.map(str::to_owned).or(input.source.role.clone());
            if role && role_arn.is_none() {
                return Err(value::missing("RoleARNUpdate"));
            }
            input.source = model::target_of(&arn, role_arn.as_deref())?;
        }
    }
    if let Some(schema) = update.structure_opt("InputSchemaUpdate")? {
        let mut new = input.schema.clone();
        if let Value::Map(members) = &mut new {
            for (from, to) in [
                ("RecordFormatUpdate", "RecordFormat"),
                ("RecordEncodingUpdate", "RecordEncoding"),
                ("RecordColumnUpdates", "RecordColumns"),
            ] {
                if let Some(value) = schema.member(from) {
                    members.retain(|(name, _)| name != to);
                    members.push((to.to_owned(), value.clone()));
                }
            }
        }
        model::compile_schema(&new, "InputSchemaUpdate")?;
        input.schema = new;
    }
    if let Some(parallelism) = update.structure_opt("InputParallelismUpdate")? {
        if parallelism.int_opt("CountUpdate")?.is_some_and(|count| count != 1) {
            return Err(invalid(
                "InputParallelism: this server runs one in-application stream per input (Count 1)",
            ));
        }
    }
    Ok(())
}

fn update_output(app: &mut App, update: Request<'_>, role: bool) -> Result<(), ApiError> {
    let id = update.str_req("OutputId")?;
    let output: &mut Output = app
        .outputs
        .iter_mut()
        .find(|output| output.id == id)
        .ok_or_else(|| ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Output {id} is not found.")))?;
    if let Some(name) = update.str_opt("NameUpdate")? {
        if name.is_empty() || name.chars().count() > 32 {
            return Err(ApiError::validation("NameUpdate", name, "Member must have length between 1 and 32"));
        }
        output.name = name.to_owned();
    }
    for member in ["KinesisStreamsOutputUpdate", "KinesisFirehoseOutputUpdate"] {
        if let Some(destination) = update.structure_opt(member)? {
            let current = output.destination.clone();
            let arn = match destination.str_opt("ResourceARNUpdate")? {
                Some(arn) => arn.to_owned(),
                None => current
                    .as_ref()
                    .map(|target| target.arn.clone())
                    .ok_or_else(|| value::missing("ResourceARNUpdate"))?,
            };
            let role_arn = destination
                .str_opt("RoleARNUpdate")?
                .map(str::to_owned)
                .or(current.and_then(|target| target.role));
            if role && role_arn.is_none() {
                return Err(value::missing("RoleARNUpdate"));
            }
            output.destination = Some(model::target_of(&arn, role_arn.as_deref())?);
        }
    }
    if update.member("LambdaOutputUpdate").is_some() {
        return Err(ApiError::new(
            codes::UNSUPPORTED_OPERATION,
            "LambdaOutput is not supported by this server",
        ));
    }
    if let Some(schema) = update.structure_opt("DestinationSchemaUpdate")? {
        let format = schema.str_req("RecordFormatType")?;
        if format != "JSON" && format != "CSV" {
            return Err(ApiError::validation(
                "RecordFormatType",
                format,
                "Member must satisfy enum value set: [JSON, CSV]",
            ));
        }
        output.format = format.to_owned();
    }
    Ok(())
}

fn update_reference(app: &mut App, update: Request<'_>, role: bool) -> Result<(), ApiError> {
    let id = update.str_req("ReferenceId")?;
    let reference: &mut Reference =
        app.references.iter_mut().find(|reference| reference.id == id).ok_or_else(|| {
            ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Reference data source {id} is not found."))
        })?;
    if let Some(table) = update.str_opt("TableNameUpdate")? {
        reference.table = table.to_owned();
    }
    if let Some(source) = update.structure_opt("S3ReferenceDataSourceUpdate")? {
        if let Some(bucket) = source.str_opt("BucketARNUpdate")? {
            if !bucket.starts_with("arn:aws:s3:::") {
                return Err(invalid(format!("{bucket} is not an S3 bucket's ARN (arn:aws:s3:::BUCKET)")));
            }
            reference.bucket_arn = bucket.to_owned();
        }
        if let Some(file_key) = source.str_opt("FileKeyUpdate")? {
            reference.file_key = file_key.to_owned();
        }
        if let Some(role_arn) = source.str_opt("ReferenceRoleARNUpdate")? {
            reference.role = Some(role_arn.to_owned());
        }
        if role && reference.role.is_none() {
            return Err(value::missing("ReferenceRoleARNUpdate"));
        }
    }
    if let Some(schema) = update.member("ReferenceSchemaUpdate") {
        model::compile_schema(schema, "ReferenceSchemaUpdate")?;
        reference.schema = schema.clone();
    }
    Ok(())
}

impl Service for AnalyticsApi {
    fn name(&self) -> &'static str {
        "kinesisanalytics"
    }

    fn signing_name(&self) -> &'static str {
        "kinesisanalytics"
    }

    fn routing(&self) -> Routing {
        Routing::Target { prefix: TARGET_PREFIX_V1 }
    }

    fn call(self: Arc<Self>, call: Call) -> ReplyFuture {
        serve(self, 1, call)
    }
}

/// One call of either API version: the same handler, told which version's shapes to use.
fn serve(api: Arc<AnalyticsApi>, version: u8, call: Call) -> ReplyFuture {
    Box::pin(async move {
        let protocol = call.head.protocol;
        let operation = call.head.operation.clone().unwrap_or_default();
        let request_id = call.head.request_id.clone();
        Reply::target(
            protocol,
            api.handle(version, &operation, protocol, call.body.bytes(), &request_id).await,
        )
    })
}

impl Service for AnalyticsV2 {
    fn name(&self) -> &'static str {
        "kinesisanalyticsv2"
    }

    fn signing_name(&self) -> &'static str {
        "kinesisanalytics"
    }

    fn routing(&self) -> Routing {
        Routing::Target { prefix: TARGET_PREFIX_V2 }
    }

    fn call(self: Arc<Self>, call: Call) -> ReplyFuture {
        serve(self.0.clone(), 2, call)
    }
}
