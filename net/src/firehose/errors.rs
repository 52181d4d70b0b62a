//! What Firehose writes under the error prefix (`net/FIREHOSE-NOTES.md` §3): one JSON
//! object per failed record, one per line, with the fields in AWS's order, timestamps and
//! counts as JSON numbers (milliseconds), the original record base64 in `rawData`.

use crate::aws::document::{self, Protocol, Value};

/// The value of `!{firehose:error-output-type}`, as the service spells each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOutputType {
    ProcessingFailed,
    FormatConversionFailed,
    HttpEndpointFailed,
    OpenSearchFailed,
    SplunkFailed,
    ActivePartitionExceeded,
}

impl ErrorOutputType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorOutputType::ProcessingFailed => "processing-failed",
            ErrorOutputType::FormatConversionFailed => "format-conversion-failed",
            ErrorOutputType::HttpEndpointFailed => "http-endpoint-failed",
            ErrorOutputType::OpenSearchFailed => "AmazonOpenSearchService-failed",
            ErrorOutputType::SplunkFailed => "splunk-failed",
            ErrorOutputType::ActivePartitionExceeded => "activePartitionExceeded",
        }
    }
}

/// The Glue table a format conversion read its schema from.
pub struct CatalogTable<'a> {
    pub catalog_id: &'a str,
    pub database_name: &'a str,
    pub table_name: &'a str,
    pub region: &'a str,
    pub version_id: &'a str,
    pub catalog_arn: &'a str,
}

/// The fields that depend on where the record failed.
pub enum Detail<'a> {
    /// Lambda transformation; `lambda_arn` is empty for whole-batch answer errors, as on the
    /// service.
    Processing {
        lambda_arn: &'a str,
    },
    /// JSON to Parquet; the code and message are named `lastErrorCode`/`lastErrorMessage`.
    FormatConversion {
        sequence_number: &'a str,
        subsequence_number: u64,
        table: CatalogTable<'a>,
    },
    HttpEndpoint {
        subsequence_number: u64,
        data_id: &'a str,
    },
    /// Events a Splunk HTTP Event Collector did not acknowledge.
    Splunk {
        subsequence_number: u64,
        data_id: &'a str,
        event_id: &'a str,
    },
    /// An OpenSearch or Elasticsearch document the cluster did not index.
    OpenSearch {
        document_id: &'a str,
        index_name: &'a str,
        type_name: &'a str,
    },
    /// Dynamic partitioning and anything else: the core fields only.
    Plain,
}

pub struct ErrorRecord<'a> {
    pub attempts_made: u32,
    pub arrival_ms: i64,
    pub error_code: &'a str,
    pub error_message: &'a str,
    pub attempt_ending_ms: i64,
    pub raw_data: &'a [u8],
    pub detail: Detail<'a>,
}

impl ErrorRecord<'_> {
    /// One line of the error object, `\n` included.
    pub fn to_json_line(&self) -> Vec<u8> {
        let (code, message) = match self.detail {
            Detail::FormatConversion { .. } => ("lastErrorCode", "lastErrorMessage"),
            _ => ("errorCode", "errorMessage"),
        };
        let mut value = Value::map()
            .with("attemptsMade", self.attempts_made)
            .with("arrivalTimestamp", self.arrival_ms)
            .with(code, self.error_code)
            .with(message, self.error_message)
            .with("attemptEndingTimestamp", self.attempt_ending_ms)
            .with("rawData", Value::Bytes(self.raw_data.to_vec()));
        value = match &self.detail {
            Detail::Processing { lambda_arn } => value.with("lambdaArn", *lambda_arn),
            Detail::FormatConversion { sequence_number, subsequence_number, table } => value
                .with("sequenceNumber", *sequence_number)
                .with("subSequenceNumber", i64::try_from(*subsequence_number).unwrap_or(i64::MAX))
                .with(
                    "dataCatalogTable",
                    Value::map()
                        .with("catalogId", table.catalog_id)
                        .with("databaseName", table.database_name)
                        .with("tableName", table.table_name)
                        .with("region", table.region)
                        .with("versionId", table.version_id)
                        .with("catalogArn", table.catalog_arn),
                ),
            Detail::Splunk { subsequence_number, data_id, event_id } => value
                .with("subsequenceNumber", i64::try_from(*subsequence_number).unwrap_or(i64::MAX))
                .with("dataId", *data_id)
                .with("EventId", *event_id),
            Detail::OpenSearch { document_id, index_name, type_name } => value
                .with("esDocumentId", *document_id)
                .with("esIndexName", *index_name)
                .with("esTypeName", *type_name),
            Detail::HttpEndpoint { subsequence_number, data_id } => value
                .with("subsequenceNumber", i64::try_from(*subsequence_number).unwrap_or(i64::MAX))
                .with("dataId", *data_id),
            Detail::Plain => value,
        };
        let mut line = document::encode(Protocol::Json, &value);
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firehose::lambda::MISSING_RECORD_ID;

    #[test]
    fn lines_match_real_error_records() {
        let record = ErrorRecord {
            attempts_made: 1,
            arrival_ms: 1_575_020_067_711,
            error_code: "Lambda.MissingRecordId",
            error_message: MISSING_RECORD_ID,
            attempt_ending_ms: 1_575_020_129_986,
            raw_data: b"sample raw data",
            detail: Detail::Processing { lambda_arn: "" },
        };
        assert_eq!(
            String::from_utf8(record.to_json_line()).unwrap(),
            r#"{"attemptsMade":1,"arrivalTimestamp":1575020067711,"errorCode":"Lambda.MissingRecordId","errorMessage":"One or more record Ids were not returned. Ensure that the Lambda function returns all received record Ids.","attemptEndingTimestamp":1575020129986,"rawData":"c2FtcGxlIHJhdyBkYXRh","lambdaArn":""}"#
                .to_owned()
                + "\n"
        );
        // The documentation's http-endpoint example, field for field.
        let record = ErrorRecord {
            attempts_made: 5,
            arrival_ms: 1_594_265_943_615,
            error_code: "HttpEndpoint.DestinationException",
            error_message: "Received the following response from the endpoint destination. {\"errorMessage\": \"Unauthorized\"}",
            attempt_ending_ms: 1_594_266_081_318,
            raw_data: b"sample raw data",
            detail: Detail::HttpEndpoint {
                subsequence_number: 0,
                data_id: "49607357361271740811418664280693044274821622880012337186.0",
            },
        };
        assert_eq!(
            String::from_utf8(record.to_json_line()).unwrap(),
            r#"{"attemptsMade":5,"arrivalTimestamp":1594265943615,"errorCode":"HttpEndpoint.DestinationException","errorMessage":"Received the following response from the endpoint destination. {\"errorMessage\": \"Unauthorized\"}","attemptEndingTimestamp":1594266081318,"rawData":"c2FtcGxlIHJhdyBkYXRh","subsequenceNumber":0,"dataId":"49607357361271740811418664280693044274821622880012337186.0"}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn format_conversion_records_name_their_codes_last() {
        let table = CatalogTable {
            catalog_id: "000000000000",
            database_name: "db",
            table_name: "t",
            region: "us-east-1",
            version_id: "LATEST",
            catalog_arn: "arn:aws:glue:us-east-1:000000000000:catalog",
        };
        let record = ErrorRecord {
            attempts_made: 1,
            arrival_ms: 1,
            error_code: "DataFormatConversion.MalformedData",
            error_message: "bad",
            attempt_ending_ms: 2,
            raw_data: b"{",
            detail: Detail::FormatConversion { sequence_number: "7", subsequence_number: 0, table },
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json_line()).unwrap();
        assert_eq!(json["lastErrorCode"], "DataFormatConversion.MalformedData");
        assert_eq!(json["dataCatalogTable"]["versionId"], "LATEST");
        assert!(json.get("errorCode").is_none());
        assert_eq!(ErrorOutputType::OpenSearchFailed.as_str(), "AmazonOpenSearchService-failed");
    }
}
