//! What the catalog keeps of a delivery stream (its spec document, JSON): the type, the
//! `VersionId` UpdateDestination bumps, the destination's description, the Kinesis source
//! and the server-side encryption settings. Tags, the ARN's name and the creation time are
//! the catalog's own.

use super::config::{Destination, DestinationKind};
use crate::aws::document::{self, Protocol, Request, Value};
use crate::aws::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub struct KinesisSource {
    pub stream: String,
    pub stream_arn: String,
    pub role_arn: String,
    /// When delivery from the stream starts (the delivery stream's creation), ms.
    pub start_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// `DirectPut` or `KinesisStreamAsSource`.
    pub delivery_type: String,
    pub version_id: u64,
    pub destination: Destination,
    pub kinesis_source: Option<KinesisSource>,
    /// `KeyType` and `KeyARN` while server-side encryption is on.
    pub encryption: Option<(String, Option<String>)>,
}

impl Spec {
    pub fn encode(&self) -> Vec<u8> {
        let mut value = Value::map()
            .with("DeliveryStreamType", self.delivery_type.as_str())
            .with("VersionId", self.version_id as i64)
            .with(member_of(self.destination.kind), self.destination.stored.clone());
        if let Some(source) = &self.kinesis_source {
            value = value.with(
                "KinesisStreamSource",
                Value::map()
                    .with("Stream", source.stream.as_str())
                    .with("KinesisStreamARN", source.stream_arn.as_str())
                    .with("RoleARN", source.role_arn.as_str())
                    .with("StartMs", source.start_ms),
            );
        }
        if let Some((key_type, key_arn)) = &self.encryption {
            value = value.with(
                "Encryption",
                Value::map().with("KeyType", key_type.as_str()).with_opt("KeyARN", key_arn.clone()),
            );
        }
        document::encode(Protocol::Json, &value)
    }

    pub fn decode(bytes: &[u8]) -> Result<Spec, ApiError> {
        let value = document::decode(Protocol::Json, bytes)?;
        let spec = Request::new(Protocol::Json, &value);
        let destination = [
            DestinationKind::S3,
            DestinationKind::Http,
            DestinationKind::OpenSearch,
            DestinationKind::Elasticsearch,
            DestinationKind::Splunk,
        ]
        .into_iter()
        .find_map(|kind| {
            spec.member(member_of(kind)).map(|stored| Destination { kind, stored: stored.clone() })
        })
        .ok_or_else(|| document::missing("ExtendedS3DestinationDescription"))?;
        let kinesis_source = match spec.structure_opt("KinesisStreamSource")? {
            Some(source) => Some(KinesisSource {
                stream: source.str_req("Stream")?.to_owned(),
                stream_arn: source.str_req("KinesisStreamARN")?.to_owned(),
                role_arn: source.str_req("RoleARN")?.to_owned(),
                start_ms: source.int_req("StartMs")?,
            }),
            None => None,
        };
        let encryption = match spec.structure_opt("Encryption")? {
            Some(encryption) => Some((
                encryption.str_req("KeyType")?.to_owned(),
                encryption.str_opt("KeyARN")?.map(str::to_owned),
            )),
            None => None,
        };
        Ok(Spec {
            delivery_type: spec.str_req("DeliveryStreamType")?.to_owned(),
            version_id: spec.int_req("VersionId")? as u64,
            destination,
            kinesis_source,
            encryption,
        })
    }
}

fn member_of(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::S3 => "ExtendedS3DestinationDescription",
        DestinationKind::Http => "HttpEndpointDestination",
        DestinationKind::OpenSearch => "AmazonopensearchserviceDestination",
        DestinationKind::Elasticsearch => "ElasticsearchDestination",
        DestinationKind::Splunk => "SplunkDestination",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let spec = Spec {
            delivery_type: "KinesisStreamAsSource".into(),
            version_id: 3,
            destination: Destination {
                kind: DestinationKind::Http,
                stored: Value::map().with("BufferingHints", Value::map().with("SizeInMBs", 5i64)),
            },
            kinesis_source: Some(KinesisSource {
                stream: "s".into(),
                stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/s".into(),
                role_arn: "arn:aws:iam::000000000000:role/r".into(),
                start_ms: 1_700_000_000_123,
            }),
            encryption: Some(("AWS_OWNED_CMK".into(), None)),
        };
        assert_eq!(Spec::decode(&spec.encode()).unwrap(), spec);
    }
}
