//! Registered (enhanced fan-out) consumers: register, deregister, describe, list.

use millrace_core::{CatalogError, ConsumerMeta, ResourceUpdate, StreamName};

use super::error::{self, codes};
use super::{bounded_int, parse_stream_name, KinesisApi};
use crate::aws::ApiError;
use crate::aws::{Request, Value};

impl KinesisApi {
    fn consumer_arn(&self, stream: &str, consumer: &ConsumerMeta) -> String {
        format!("{}/consumer/{}:{}", self.stream_arn(stream), consumer.name(), consumer.created_ms() / 1000)
    }

    fn consumer_value(&self, stream: &str, consumer: &ConsumerMeta) -> Value {
        Value::map()
            .with("ConsumerName", consumer.name())
            .with("ConsumerARN", self.consumer_arn(stream, consumer))
            .with("ConsumerStatus", "ACTIVE")
            .with("ConsumerCreationTimestamp", Value::Timestamp(consumer.created_ms()))
    }

    /// The (stream, consumer) a request names: by `ConsumerARN`, or by `StreamARN` and
    /// `ConsumerName`.
    pub(super) fn consumer_of(&self, request: Request<'_>) -> Result<(StreamName, String), ApiError> {
        if let Some(arn) = request.str_opt("ConsumerARN")? {
            let bad = || {
                ApiError::validation(
                    "ConsumerARN",
                    arn,
                    "Member must satisfy regular expression pattern: \
                     ^(arn):aws.*:kinesis:.*:\\d{12}:.*stream/[a-zA-Z0-9_.-]+/consumer/[a-zA-Z0-9_.-]+:[0-9]+",
                )
            };
            let (stream_arn, rest) = arn.split_once("/consumer/").ok_or_else(bad)?;
            let (consumer, created) = rest.rsplit_once(':').ok_or_else(bad)?;
            if created.is_empty() || !created.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(bad());
            }
            let stream = parse_stream_name("ConsumerARN", super::stream_name_from_arn(stream_arn)?)?;
            // An ARN names one registration: a consumer re-registered under the same name
            // has another creation time.
            let meta = self.describe(&stream)?;
            let found = meta
                .consumers()
                .iter()
                .find(|meta| meta.name() == consumer && (meta.created_ms() / 1000).to_string() == created);
            if found.is_none() {
                return Err(CatalogError::ConsumerNotFound {
                    stream: stream.to_string(),
                    consumer: consumer.to_owned(),
                }
                .into());
            }
            return Ok((stream, consumer.to_owned()));
        }
        let stream_arn = request.str_opt("StreamARN")?.ok_or_else(|| {
            error::invalid("Either ConsumerARN or both StreamARN and ConsumerName must be provided")
        })?;
        let consumer = request.str_opt("ConsumerName")?.ok_or_else(|| {
            error::invalid("Either ConsumerARN or both StreamARN and ConsumerName must be provided")
        })?;
        let stream = parse_stream_name("StreamARN", super::stream_name_from_arn(stream_arn)?)?;
        Ok((stream, consumer.to_owned()))
    }

    fn find_consumer(&self, stream: &StreamName, consumer: &str) -> Result<(String, ConsumerMeta), ApiError> {
        let meta = self.describe(stream)?;
        meta.consumers()
            .iter()
            .find(|meta| meta.name() == consumer)
            .map(|found| (meta.name().to_owned(), found.clone()))
            .ok_or_else(|| {
                ApiError::from(CatalogError::ConsumerNotFound {
                    stream: stream.to_string(),
                    consumer: consumer.to_owned(),
                })
            })
    }

    pub(super) async fn register_consumer(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let stream_arn = request.str_req("StreamARN")?;
        let consumer = request.str_req("ConsumerName")?;
        let stream = parse_stream_name("StreamARN", super::stream_name_from_arn(stream_arn)?)?;
        self.engine
            .update_stream(
                &stream,
                ResourceUpdate::RegisterConsumer { name: consumer.to_owned(), created_ms: self.now_ms() },
            )
            .await?;
        let (stream_name, meta) = self.find_consumer(&stream, consumer)?;
        Ok(Value::map().with("Consumer", self.consumer_value(&stream_name, &meta)))
    }

    pub(super) async fn deregister_consumer(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let (stream, consumer) = self.consumer_of(request)?;
        self.engine.update_stream(&stream, ResourceUpdate::DeregisterConsumer { name: consumer }).await?;
        Ok(Value::map())
    }

    pub(super) fn describe_consumer(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let (stream, consumer) = self.consumer_of(request)?;
        let (stream_name, meta) = self.find_consumer(&stream, &consumer)?;
        let description =
            self.consumer_value(&stream_name, &meta).with("StreamARN", self.stream_arn(&stream_name));
        Ok(Value::map().with("ConsumerDescription", description))
    }

    pub(super) fn list_consumers(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let stream_arn = request.str_req("StreamARN")?;
        let stream = parse_stream_name("StreamARN", super::stream_name_from_arn(stream_arn)?)?;
        let limit = bounded_int(request, "MaxResults", 1, 10_000)?.unwrap_or(100) as usize;
        let meta = self.describe(&stream)?;
        let mut consumers: Vec<&ConsumerMeta> = meta.consumers().iter().collect();
        consumers.sort_by(|left, right| left.name().cmp(right.name()));
        let start = match request.str_opt("NextToken")? {
            Some(token) => {
                let after = token.strip_prefix("after:").ok_or_else(|| {
                    ApiError::new(codes::INVALID_ARGUMENT, format!("NextToken {token} is invalid"))
                })?;
                consumers.iter().take_while(|consumer| consumer.name() <= after).count()
            }
            None => 0,
        };
        let page: Vec<&ConsumerMeta> = consumers[start..].iter().take(limit).copied().collect();
        let next = (start + page.len() < consumers.len())
            .then(|| page.last().map(|last| format!("after:{}", last.name())))
            .flatten();
        Ok(Value::map()
            .with(
                "Consumers",
                Value::List(page.iter().map(|consumer| self.consumer_value(meta.name(), consumer)).collect()),
            )
            .with_opt("NextToken", next))
    }
}
