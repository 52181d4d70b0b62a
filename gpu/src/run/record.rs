//! Records to rows and rows to records, as an application's input schema and output's
//! destination schema say: KDA's `RecordFormat` JSON (a row path, and a JSONPath mapping per
//! column) or CSV (row and column delimiters, columns in order), UTF-8.
//!
//! Decoding takes bytes from outside: a record that does not decode is an error for the
//! application's error stream, never a panic, and the other records go on.

use std::fmt;

use super::value::{timestamp_text, Value, ValueError};
use crate::sql::plan::{Column, SqlType};

/// One step of a JSONPath.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[0:]` or `[*]`: every element (a row path only).
    Each,
}

/// A JSONPath of the subset KDA's mappings use: `$`, `.name`, `['name']`, `[n]`, `[0:]`, `[*]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

/// Why a schema, or a record, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub String);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordError {}

impl std::str::FromStr for JsonPath {
    type Err = RecordError;

    fn from_str(text: &str) -> Result<JsonPath, RecordError> {
        let bad = |why: &str| RecordError(format!("JSONPath {text:?}: {why}"));
        let mut rest = text.strip_prefix('$').ok_or_else(|| bad("it starts with $"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return Err(bad("an empty field name"));
                }
                steps.push(Step::Field(name.to_string()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').ok_or_else(|| bad("a [ is never closed"))?;
                let inside = after[..end].trim();
                steps.push(match inside {
                    "*" | "0:" => Step::Each,
                    _ if inside.len() >= 2
                        && ((inside.starts_with('\'') && inside.ends_with('\''))
                            || (inside.starts_with('"') && inside.ends_with('"'))) =>
                    {
                        Step::Field(inside[1..inside.len() - 1].to_string())
                    }
                    _ => Step::Index(
                        inside.parse().map_err(|_| bad("[…] holds an index, 0:, * or a quoted name"))?,
                    ),
                });
                rest = &after[end + 1..];
            } else {
                return Err(bad("expected . or ["));
            }
        }
        Ok(JsonPath { steps })
    }
}

impl JsonPath {
    /// The values the path reaches (several where it has `[0:]`).
    fn select<'a>(&self, root: &'a serde_json::Value) -> Vec<&'a serde_json::Value> {
        let mut current = vec![root];
        for step in &self.steps {
            current = current
                .into_iter()
                .flat_map(|value| -> Vec<&serde_json::Value> {
                    match (step, value) {
                        (Step::Field(name), serde_json::Value::Object(fields)) => {
                            fields.get(name).into_iter().collect()
                        }
                        (Step::Index(index), serde_json::Value::Array(items)) => {
                            items.get(*index).into_iter().collect()
                        }
                        (Step::Each, serde_json::Value::Array(items)) => items.iter().collect(),
                        _ => Vec::new(),
                    }
                })
                .collect();
        }
        current
    }

    fn expands(&self) -> bool {
        self.steps.contains(&Step::Each)
    }

    /// The one value a path without `[0:]` reaches, if any (no allocation: what a column's
    /// mapping is).
    fn select_one<'a>(&self, root: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut current = root;
        for step in &self.steps {
            current = match (step, current) {
                (Step::Field(name), serde_json::Value::Object(fields)) => fields.get(name)?,
                (Step::Index(index), serde_json::Value::Array(items)) => items.get(*index)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// How records become rows.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordFormat {
    Json { row_path: JsonPath, mappings: Vec<JsonPath> },
    Csv { row_delimiter: String, column_delimiter: String },
}

/// An input schema: the format, and the columns (name and type) rows get.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSchema {
    pub format: RecordFormat,
    pub columns: Vec<Column>,
}

impl InputSchema {
    /// A JSON schema; `mappings` are the columns' JSONPaths (`$.ticker_symbol`), one each.
    pub fn json(row_path: &str, columns: Vec<Column>, mappings: &[&str]) -> Result<InputSchema, RecordError> {
        if mappings.len() != columns.len() {
            return Err(RecordError(format!("{} columns and {} mappings", columns.len(), mappings.len())));
        }
        let mappings =
            mappings.iter().map(|mapping| mapping.parse()).collect::<Result<Vec<JsonPath>, _>>()?;
        if let Some(mapping) = mappings.iter().find(|mapping| mapping.expands()) {
            return Err(RecordError(format!(
                "a column's mapping reaches one value, not every element: {mapping:?}"
            )));
        }
        Ok(InputSchema { format: RecordFormat::Json { row_path: row_path.parse()?, mappings }, columns })
    }

    pub fn csv(
        row_delimiter: &str,
        column_delimiter: &str,
        columns: Vec<Column>,
    ) -> Result<InputSchema, RecordError> {
        if row_delimiter.is_empty() || column_delimiter.is_empty() || row_delimiter == column_delimiter {
            return Err(RecordError("CSV delimiters are non-empty and differ".into()));
        }
        Ok(InputSchema {
            format: RecordFormat::Csv {
                row_delimiter: row_delimiter.to_string(),
                column_delimiter: column_delimiter.to_string(),
            },
            columns,
        })
    }

    /// The rows of one record, each a value per column.
    pub fn decode(&self, record: &[u8]) -> Result<Vec<Vec<Value>>, RecordError> {
        let text = std::str::from_utf8(record).map_err(|error| {
            RecordError(format!("the record is not UTF-8 (byte {})", error.valid_up_to()))
        })?;
        match &self.format {
            RecordFormat::Json { row_path, mappings } => {
                let document: serde_json::Value = serde_json::from_str(text)
                    .map_err(|error| RecordError(format!("the record is not JSON: {error}")))?;
                row_path
                    .select(&document)
                    .into_iter()
                    .map(|row| {
                        mappings
                            .iter()
                            .zip(&self.columns)
                            .map(|(mapping, column)| {
                                // Mappings reach one value (`json` refuses `[0:]` in them).
                                let value = mapping.select_one(row).map_or(Value::Null, json_value);
                                typed(value, column)
                            })
                            .collect()
                    })
                    .collect()
            }
            RecordFormat::Csv { row_delimiter, column_delimiter } => text
                .split(row_delimiter.as_str())
                .filter(|line| !line.is_empty())
                .map(|line| {
                    let fields: Vec<&str> = line.split(column_delimiter.as_str()).collect();
                    if fields.len() != self.columns.len() {
                        return Err(RecordError(format!(
                            "a CSV row has {} fields and the schema {} columns",
                            fields.len(),
                            self.columns.len()
                        )));
                    }
                    fields
                        .into_iter()
                        .zip(&self.columns)
                        .map(|(field, column)| {
                            let value = match column.sql_type {
                                SqlType::Char(_) | SqlType::Varchar(_) => Value::String(field.to_string()),
                                _ if field.is_empty() => Value::Null,
                                _ => Value::String(field.to_string()),
                            };
                            typed(value, column)
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

/// A JSON value as the value a column starts from (then cast to its type).
fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(value) => Value::Boolean(*value),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(integer) => Value::Integer(integer),
            // A number in decimal notation keeps its digits for DECIMAL columns.
            None => Value::String(number.to_string()),
        },
        serde_json::Value::String(text) => Value::String(text.clone()),
        // Objects and arrays reach a VARCHAR column as their JSON text.
        other => Value::String(other.to_string()),
    }
}

fn typed(value: Value, column: &Column) -> Result<Value, RecordError> {
    let value = value
        .cast(column.sql_type)
        .map_err(|ValueError(why)| RecordError(format!("column {}: {why}", column.name)))?;
    if column.not_null && value.is_null() {
        return Err(RecordError(format!(
            "column {} is NOT NULL and the record has no value for it",
            column.name
        )));
    }
    Ok(value)
}

/// How rows become records on an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `{"COLUMN": value, …}`, one object per record.
    Json,
    /// Values joined by commas, one row per record, ended by a newline.
    Csv,
}

/// One row as one output record, its columns named as the stream declares them.
pub fn encode(format: OutputFormat, columns: &[Column], values: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    match format {
        OutputFormat::Json => {
            out.push('{');
            for (place, (column, value)) in columns.iter().zip(values).enumerate() {
                if place > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(column.name.as_str().to_string()).to_string());
                out.push(':');
                out.push_str(&json_text(value));
            }
            out.push('}');
        }
        OutputFormat::Csv => {
            for (place, value) in values.iter().enumerate() {
                if place > 0 {
                    out.push(',');
                }
                out.push_str(&csv_text(value));
            }
            out.push('\n');
        }
    }
    out.into_bytes()
}

fn json_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Boolean(value) => value.to_string(),
        Value::Integer(value) => value.to_string(),
        Value::Decimal { .. } => value.text(),
        // Rust prints the shortest digits that read back as the same double.
        Value::Double(value) if value.is_finite() => value.to_string(),
        Value::Double(_) => "null".into(),
        Value::Timestamp(ms) => serde_json::Value::String(timestamp_text(*ms)).to_string(),
        other => serde_json::Value::String(other.text()).to_string(),
    }
}

fn csv_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) if text.contains([',', '"', '\n']) => {
            format!("\"{}\"", text.replace('"', "\"\""))
        }
        other => other.text(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::run::value::parse_timestamp;
    use crate::sql::plan::Name;

    fn column(name: &str, sql_type: SqlType) -> Column {
        Column { name: Name::new(name), sql_type, not_null: false }
    }

    fn demo_columns() -> Vec<Column> {
        vec![
            column("TICKER_SYMBOL", SqlType::Varchar(4)),
            column("SECTOR", SqlType::Varchar(16)),
            column("CHANGE", SqlType::Real),
            column("PRICE", SqlType::Double),
        ]
    }

    fn demo_json() -> InputSchema {
        let mappings = ["$.TICKER_SYMBOL", "$.SECTOR", "$.CHANGE", "$.PRICE"];
        InputSchema::json("$", demo_columns(), &mappings).expect("a schema")
    }

    #[test]
    fn the_demo_streams_records() {
        let rows = demo_json()
            .decode(br#"{"TICKER_SYMBOL": "AMZN", "SECTOR": "TECHNOLOGY", "CHANGE": -0.5, "PRICE": 123.25}"#)
            .expect("a row");
        assert_eq!(
            rows,
            [vec![
                Value::String("AMZN".into()),
                // VARCHAR(16) keeps it whole; VARCHAR(4) would cut it.
                Value::String("TECHNOLOGY".into()),
                Value::Double(-0.5),
                Value::Double(123.25),
            ]]
        );
        // A missing field is NULL; an extra one is ignored.
        let rows = demo_json().decode(br#"{"TICKER_SYMBOL": "LONGER", "other": 1}"#).expect("a row");
        assert_eq!(rows[0][0], Value::String("LONG".into()));
        assert_eq!(rows[0][3], Value::Null);
    }

    #[test]
    fn a_row_path_with_an_array_gives_a_row_per_element_and_mappings_reach_inside() {
        let columns = vec![
            column("ID", SqlType::BigInt),
            column("CITY", SqlType::Varchar(32)),
            column("AT", SqlType::Timestamp),
            column("AMOUNT", SqlType::Decimal { precision: 10, scale: 2 }),
        ];
        let schema =
            InputSchema::json("$.batch[0:]", columns, &["$.id", "$.where.city", "$['at time']", "$.amount"])
                .expect("a schema");
        let record = br#"{"batch": [
            {"id": 1, "where": {"city": "Oslo"}, "at time": "2024-05-01 10:00:00.250", "amount": 12.5},
            {"id": 2, "where": {}, "at time": 1714557600000, "amount": "0.1"}
        ]}"#;
        let rows = schema.decode(record).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], Value::String("Oslo".into()));
        assert_eq!(rows[0][2], Value::Timestamp(parse_timestamp("2024-05-01 10:00:00.250").expect("a time")));
        assert_eq!(rows[0][3], Value::Decimal { unscaled: 1250, scale: 2 });
        assert_eq!(rows[1][1], Value::Null);
        assert_eq!(rows[1][2], Value::Timestamp(1_714_557_600_000));
        assert_eq!(rows[1][3], Value::Decimal { unscaled: 10, scale: 2 });
    }

    #[test]
    fn bad_records_and_schemas_are_refused_with_the_reason() {
        let schema = demo_json();
        assert!(schema.decode(b"not json").unwrap_err().0.contains("not JSON"));
        assert!(schema.decode(b"{\"SECTOR\": \"\xff\"}").unwrap_err().0.contains("UTF-8"));
        let price = schema.decode(br#"{"PRICE": "cheap"}"#).unwrap_err();
        assert!(price.0.contains("column \"PRICE\""), "{price}");
        let mut columns = demo_columns();
        columns[0].not_null = true;
        let schema = InputSchema::json("$", columns, &["$.TICKER_SYMBOL", "$.SECTOR", "$.CHANGE", "$.PRICE"])
            .expect("a schema");
        assert!(schema.decode(b"{}").unwrap_err().0.contains("NOT NULL"));
        assert!("TICKER".parse::<JsonPath>().is_err());
        assert!("$.a[".parse::<JsonPath>().is_err());
        assert!("$..a".parse::<JsonPath>().is_err());
        assert!(InputSchema::json("$", demo_columns(), &["$.a[0:]", "$.b", "$.c", "$.d"]).is_err());
        assert!(InputSchema::json("$", demo_columns(), &["$.a"]).is_err());
        assert!(InputSchema::csv(",", ",", demo_columns()).is_err());
    }

    #[test]
    fn csv_records() {
        let schema = InputSchema::csv("\n", ",", demo_columns()).expect("a schema");
        let rows = schema.decode(b"AMZN,TECH,-0.5,123.25\nGOOG,,1,\n").expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            [Value::String("GOOG".into()), Value::String(String::new()), Value::Double(1.0), Value::Null]
        );
        assert!(schema.decode(b"AMZN,TECH\n").unwrap_err().0.contains("2 fields"));
    }

    #[test]
    fn rows_are_encoded_as_kda_writes_them() {
        let columns = vec![
            column("TICKER", SqlType::Varchar(4)),
            column("Avg", SqlType::Double),
            column("AT", SqlType::Timestamp),
        ];
        let values = [Value::String("A\"B".into()), Value::Double(1.5), Value::Timestamp(0)];
        assert_eq!(
            String::from_utf8(encode(OutputFormat::Json, &columns, &values)).expect("UTF-8"),
            r#"{"TICKER":"A\"B","Avg":1.5,"AT":"1970-01-01 00:00:00.000"}"#
        );
        assert_eq!(
            String::from_utf8(encode(OutputFormat::Csv, &columns, &values)).expect("UTF-8"),
            "\"A\"\"B\",1.5,1970-01-01 00:00:00.000\n"
        );
    }

    fn typed_value() -> impl Strategy<Value = (SqlType, Value)> {
        prop_oneof![
            any::<i64>().prop_map(|value| (SqlType::BigInt, Value::Integer(value))),
            any::<i32>().prop_map(|value| (SqlType::Integer, Value::Integer(i64::from(value)))),
            any::<f64>()
                .prop_filter("finite", |value| value.is_finite())
                .prop_map(|value| (SqlType::Double, Value::Double(value))),
            any::<bool>().prop_map(|value| (SqlType::Boolean, Value::Boolean(value))),
            "\\PC{0,12}".prop_map(|text| (SqlType::Varchar(12), Value::String(text))),
            (-1_000_000_000_000i128..1_000_000_000_000).prop_map(|unscaled| {
                (SqlType::Decimal { precision: 19, scale: 3 }, Value::Decimal { unscaled, scale: 3 })
            }),
            (-10_000_000_000_000i64..10_000_000_000_000)
                .prop_map(|ms| (SqlType::Timestamp, Value::Timestamp(ms))),
            Just((SqlType::Varchar(4), Value::Null)),
        ]
    }

    proptest! {
        /// A row written as a JSON record reads back as the same row.
        #[test]
        fn json_records_round_trip(row in proptest::collection::vec(typed_value(), 1..8)) {
            let columns: Vec<Column> = row.iter().enumerate().map(|(place, (sql_type, _))| column(&format!("C{place}"), *sql_type)).collect();
            let values: Vec<Value> = row.into_iter().map(|(_, value)| value).collect();
            let mappings: Vec<String> = (0..columns.len()).map(|place| format!("$.C{place}")).collect();
            let mappings: Vec<&str> = mappings.iter().map(String::as_str).collect();
            let schema = InputSchema::json("$", columns.clone(), &mappings).expect("a schema");
            let record = encode(OutputFormat::Json, &columns, &values);
            let decoded = schema.decode(&record).map_err(|error| TestCaseError::fail(format!("{error}: {}", String::from_utf8_lossy(&record))))?;
            prop_assert_eq!(decoded, vec![values]);
        }

        /// Whatever the bytes, decoding answers rows or an error.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = demo_json().decode(&bytes);
            let _ = InputSchema::csv("\n", ",", demo_columns()).expect("a schema").decode(&bytes);
        }
    }
}
