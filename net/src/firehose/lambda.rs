//! The Lambda transformation contract (`net/FIREHOSE-NOTES.md` §5): the event Firehose
//! sends to a function through Lambda's Invoke API, and the decoder of the function's
//! answer. A batch fails as a whole, with AWS's error code, when the answer cannot be read,
//! when a record id is missing, or when one appears twice; every record of a failed batch goes
//! to `processing-failed` with its original data.
//!
//! Pure: records in, a JSON body out; a body out of the function, its records or a batch
//! failure back.

use std::collections::HashSet;

use crate::aws::document::{self, Protocol, Request, Value};

/// AWS's own messages, as real error records carry them ("record Ids", sic).
pub const MISSING_RECORD_ID: &str =
    "One or more record Ids were not returned. Ensure that the Lambda function returns all received record Ids.";
pub const DUPLICATED_RECORD_ID: &str = "Multiple records were returned with the same record Id. Ensure that the Lambda function returns a unique record Id for each record.";
pub const FUNCTION_ERROR: &str =
    "The Lambda function was successfully invoked but it returned an error result.";
pub const FUNCTION_TIMED_OUT: &str =
    "The Lambda function invocation timed out. Increase the Timeout setting in the Lambda function.";

/// One record as the function receives it.
pub struct EventRecord<'a> {
    pub record_id: &'a str,
    pub arrival_ms: i64,
    pub data: &'a [u8],
}

/// What the event says about its delivery stream.
pub struct Event<'a> {
    pub invocation_id: &'a str,
    pub delivery_stream_arn: &'a str,
    pub region: &'a str,
    pub records: &'a [EventRecord<'a>],
}

impl Event<'_> {
    /// The JSON payload of the Invoke call (DirectPut source: no Kinesis metadata).
    pub fn to_json(&self) -> Vec<u8> {
        let records = self
            .records
            .iter()
            .map(|record| {
                Value::map()
                    .with("recordId", record.record_id)
                    .with("approximateArrivalTimestamp", record.arrival_ms)
                    .with("data", Value::Bytes(record.data.to_vec()))
            })
            .collect::<Vec<_>>();
        let event = Value::map()
            .with("invocationId", self.invocation_id)
            .with("deliveryStreamArn", self.delivery_stream_arn)
            .with("region", self.region)
            .with("records", records);
        document::encode(Protocol::Json, &event)
    }
}

/// What the function did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok { data: Vec<u8>, partition_keys: Vec<(String, String)> },
    Dropped,
    ProcessingFailed,
}

/// A whole batch failed; every record goes to the error prefix with this code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BatchFailure {
    pub code: &'static str,
    pub message: String,
}

impl BatchFailure {
    fn json(message: impl Into<String>) -> BatchFailure {
        BatchFailure { code: "Lambda.JsonProcessingException", message: message.into() }
    }
}

/// Decodes the function's answer for the records sent, in the order they were sent. Answers
/// for ids that were not sent are ignored, as observed on the service.
pub fn decode_response(body: &[u8], sent: &[&str]) -> Result<Vec<Outcome>, BatchFailure> {
    let value = document::decode(Protocol::Json, body).map_err(|error| BatchFailure::json(error.message))?;
    let response = Request::new(Protocol::Json, &value);
    let records = response.list_req("records").map_err(|error| BatchFailure::json(error.message))?;
    let wanted: HashSet<&str> = sent.iter().copied().collect();
    let mut answered: Vec<(String, Outcome)> = Vec::with_capacity(sent.len());
    let mut seen = HashSet::with_capacity(sent.len());
    for record in records {
        let Value::Map(_) = record else {
            return Err(BatchFailure::json("each record must be a structure"));
        };
        let record = Request::new(Protocol::Json, record);
        let read = |error: crate::aws::error::ApiError| BatchFailure::json(error.message);
        let id = record.str_req("recordId").map_err(read)?;
        let result = record.str_req("result").map_err(read)?;
        let outcome = match result {
            "Ok" => {
                let data = record.blob_req("data").map_err(read)?;
                let partition_keys = match record.structure_opt("metadata").map_err(read)? {
                    Some(metadata) => {
                        metadata.string_map_opt("partitionKeys").map_err(read)?.unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                Outcome::Ok { data, partition_keys }
            }
            "Dropped" => Outcome::Dropped,
            "ProcessingFailed" => Outcome::ProcessingFailed,
            other => {
                return Err(BatchFailure::json(format!(
                    "record {id} has result {other:?}; expected Ok, Dropped or ProcessingFailed"
                )));
            }
        };
        if !wanted.contains(id) {
            continue;
        }
        if !seen.insert(id.to_owned()) {
            return Err(BatchFailure {
                code: "Lambda.DuplicatedRecordId",
                message: DUPLICATED_RECORD_ID.to_owned(),
            });
        }
        answered.push((id.to_owned(), outcome));
    }
    let mut outcomes = Vec::with_capacity(sent.len());
    for id in sent {
        let Some(at) = answered.iter().position(|(answered_id, _)| answered_id == id) else {
            return Err(BatchFailure {
                code: "Lambda.MissingRecordId",
                message: MISSING_RECORD_ID.to_owned(),
            });
        };
        outcomes.push(answered.swap_remove(at).1);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_event_has_the_documented_shape() {
        let records = [EventRecord { record_id: "r1", arrival_ms: 1_507_217_624_302, data: b"hello" }];
        let event = Event {
            invocation_id: "inv",
            delivery_stream_arn: "arn:aws:firehose:us-east-1:000000000000:deliverystream/d",
            region: "us-east-1",
            records: &records,
        };
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "invocationId": "inv",
                "deliveryStreamArn": "arn:aws:firehose:us-east-1:000000000000:deliverystream/d",
                "region": "us-east-1",
                "records": [{"recordId": "r1", "approximateArrivalTimestamp": 1_507_217_624_302_i64, "data": "aGVsbG8="}]
            })
        );
    }

    #[test]
    fn answers_in_any_order_with_partition_keys() {
        let body = br#"{"records":[
            {"recordId":"b","result":"Dropped","data":""},
            {"recordId":"x","result":"Ok","data":""},
            {"recordId":"a","result":"Ok","data":"aGk=","metadata":{"partitionKeys":{"k":"v"}}},
            {"recordId":"c","result":"ProcessingFailed","data":"aGk="}]}"#;
        assert_eq!(
            decode_response(body, &["a", "b", "c"]).unwrap(),
            [
                Outcome::Ok { data: b"hi".to_vec(), partition_keys: vec![("k".into(), "v".into())] },
                Outcome::Dropped,
                Outcome::ProcessingFailed
            ]
        );
    }

    #[test]
    fn whole_batch_failures_have_aws_codes() {
        let code = |body: &[u8]| decode_response(body, &["a", "b"]).unwrap_err().code;
        assert_eq!(
            code(br#"{"records":[{"recordId":"a","result":"Ok","data":""}]}"#),
            "Lambda.MissingRecordId"
        );
        assert_eq!(
            code(br#"{"records":[{"recordId":"a","result":"Ok","data":""},{"recordId":"a","result":"Dropped","data":""},{"recordId":"b","result":"Dropped","data":""}]}"#),
            "Lambda.DuplicatedRecordId"
        );
        for bad in [
            &br#"{"errorMessage":"boom","errorType":"Error"}"#[..],
            b"not json",
            br#"{"records":[{"recordId":"a","result":"ok","data":""}]}"#,
            br#"{"records":[{"recordId":"a","result":"Ok"}]}"#,
            br#"{"records":[{"recordId":"a","result":"Ok","data":"%%"}]}"#,
            br#"{"records":[1]}"#,
            br#"{"records":{}}"#,
        ] {
            assert_eq!(code(bad), "Lambda.JsonProcessingException", "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        /// Whatever the function answers for the records it was sent comes back, per record,
        /// as it was answered.
        #[test]
        fn answers_round_trip(records in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..64), 0u8..3, "[a-z]{0,4}"), 1..20)) {
            let ids: Vec<String> = (0..records.len()).map(|i| format!("id-{i}")).collect();
            let answers: Vec<Value> = records.iter().zip(&ids).rev().map(|((data, result, key), id)| {
                let result = ["Ok", "Dropped", "ProcessingFailed"][*result as usize];
                Value::map().with("recordId", id.as_str()).with("result", result).with("data", Value::Bytes(data.clone()))
                    .with("metadata", Value::map().with("partitionKeys", Value::map().with("k", key.as_str())))
            }).collect();
            let body = document::encode(Protocol::Json, &Value::map().with("records", answers));
            let sent: Vec<&str> = ids.iter().map(String::as_str).collect();
            let outcomes = decode_response(&body, &sent).unwrap();
            for ((data, result, key), outcome) in records.iter().zip(outcomes) {
                let expected = match result {
                    0 => Outcome::Ok { data: data.clone(), partition_keys: vec![("k".to_owned(), key.clone())] },
                    1 => Outcome::Dropped,
                    _ => Outcome::ProcessingFailed,
                };
                prop_assert_eq!(outcome, expected);
            }
        }
    }
}
