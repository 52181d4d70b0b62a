//! Record format conversion, JSON → Apache Parquet, with the schema of a Glue table (its
//! `StorageDescriptor.Columns`, partition keys left out): each record's JSON object is read
//! as the OpenX JSON SerDe reads it (keys matched case-insensitively unless told otherwise,
//! `ColumnToJsonKeyMappings`, dots in keys optionally read as underscores; a missing key is
//! null), typed by its column's Hive type, and written as one row of a Parquet file whose
//! columns are optional (nullable). A record that cannot be read or typed fails on its own
//! and goes to `format-conversion-failed`; the others are converted.
//!
//! Hive types: string, char, varchar, boolean, tinyint, smallint, int, bigint, float,
//! double, decimal(p,s) with p ≤ 18, date, timestamp. Nested types (array, map, struct) are
//! refused with a clear message rather than flattened wrongly.
//!
//! Timestamps are written as INT64 TIMESTAMP(MILLIS, UTC), read from epoch seconds or
//! milliseconds (numbers), RFC 3339 text, or `yyyy-MM-dd HH:mm:ss[.fff]` (UTC); dates as
//! DATE from `yyyy-MM-dd` or a day count.

use std::sync::Arc;

use parquet::basic::{
    Compression as ParquetCompression, LogicalType, Repetition, TimeUnit, Type as Physical,
};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::aws::document::{self, Protocol, Value};
use crate::glue::Column;

/// How a column is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Int { bits: u8 },
    BigInt,
    Float,
    Double,
    Decimal { precision: u8, scale: u8 },
    Date,
    Timestamp,
}

impl Kind {
    pub fn of(hive_type: &str) -> Result<Kind, String> {
        let hive = hive_type.trim().to_ascii_lowercase();
        let base = hive.split(['(', '<']).next().unwrap_or("").trim();
        Ok(match base {
            "string" | "char" | "varchar" => Kind::String,
            "boolean" => Kind::Boolean,
            "tinyint" => Kind::Int { bits: 8 },
            "smallint" => Kind::Int { bits: 16 },
            "int" | "integer" => Kind::Int { bits: 32 },
            "bigint" => Kind::BigInt,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "date" => Kind::Date,
            "timestamp" => Kind::Timestamp,
            "decimal" => {
                let arguments = hive
                    .strip_prefix("decimal")
                    .map(str::trim)
                    .and_then(|rest| rest.strip_prefix('('))
                    .and_then(|rest| rest.strip_suffix(')'));
                let (precision, scale) = match arguments {
                    None => (10, 0),
                    Some(arguments) => {
                        let mut parts = arguments.split(',').map(|part| part.trim().parse::<u8>());
                        match (parts.next(), parts.next(), parts.next()) {
                            (Some(Ok(precision)), Some(Ok(scale)), None) => (precision, scale),
                            (Some(Ok(precision)), None, None) => (precision, 0),
                            _ => {
                                return Err(format!(
                                    "column type {hive_type:?}: expected decimal(precision,scale)"
                                ))
                            }
                        }
                    }
                };
                if precision == 0 || precision > 18 || scale > precision {
                    return Err(format!(
                        "column type {hive_type:?}: decimals up to precision 18 are converted here (scale ≤ precision)"
                    ));
                }
                Kind::Decimal { precision, scale }
            }
            "array" | "map" | "struct" | "uniontype" => {
                return Err(format!(
                    "column type {hive_type:?}: nested types are not converted by this server yet"
                ))
            }
            _ => return Err(format!("column type {hive_type:?} is not a Hive type this server converts")),
        })
    }

    fn parquet_type(self, name: &str) -> Result<Type, String> {
        let (physical, logical) = match self {
            Kind::String => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            Kind::Boolean => (Physical::BOOLEAN, None),
            Kind::Int { bits: 32 } => (Physical::INT32, None),
            Kind::Int { bits } => (Physical::INT32, Some(LogicalType::integer(bits as i8, true))),
            Kind::BigInt => (Physical::INT64, None),
            Kind::Float => (Physical::FLOAT, None),
            Kind::Double => (Physical::DOUBLE, None),
            Kind::Decimal { precision, scale } => {
                let physical = if precision <= 9 { Physical::INT32 } else { Physical::INT64 };
                let built = Type::primitive_type_builder(name, physical)
                    .with_repetition(Repetition::OPTIONAL)
                    .with_logical_type(Some(LogicalType::decimal(i32::from(scale), i32::from(precision))))
                    .with_precision(i32::from(precision))
                    .with_scale(i32::from(scale))
                    .build();
                return built.map_err(|error| format!("column {name}: {error}"));
            }
            Kind::Date => (Physical::INT32, Some(LogicalType::Date)),
            Kind::Timestamp => (Physical::INT64, Some(LogicalType::timestamp(true, TimeUnit::MILLIS))),
        };
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(logical)
            .build()
            .map_err(|error| format!("column {name}: {error}"))
    }
}

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bytes(Vec<u8>),
}

/// `ParquetSerDe` and `OpenXJsonSerDe` options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub compression: ParquetCompression,
    pub block_size_bytes: usize,
    pub page_size_bytes: usize,
    pub dictionary: bool,
    pub writer_v2: bool,
    pub case_insensitive: bool,
    pub dots_to_underscores: bool,
    /// `ColumnToJsonKeyMappings`: column → the JSON key it reads.
    pub key_mappings: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            compression: ParquetCompression::SNAPPY,
            block_size_bytes: 256 << 20,
            page_size_bytes: 1 << 20,
            dictionary: false,
            writer_v2: false,
            case_insensitive: true,
            dots_to_underscores: false,
            key_mappings: Vec::new(),
        }
    }
}

/// What converting a batch gave: the Parquet file of the records that converted (`None` if
/// none did), and, for each record that did not, its index and why.
pub struct Converted {
    pub file: Option<Vec<u8>>,
    pub failed: Vec<(usize, String)>,
}

pub fn convert(columns: &[Column], options: &Options, records: &[&[u8]]) -> Result<Converted, String> {
    let kinds: Vec<Kind> =
        columns.iter().map(|column| Kind::of(&column.hive_type)).collect::<Result<_, _>>()?;
    let mut cells: Vec<Vec<Option<Cell>>> = vec![Vec::with_capacity(records.len()); columns.len()];
    let mut failed = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match row(columns, &kinds, options, record) {
            Ok(row) => {
                for (column, cell) in cells.iter_mut().zip(row) {
                    column.push(cell);
                }
            }
            Err(why) => failed.push((index, why)),
        }
    }
    if failed.len() == records.len() {
        return Ok(Converted { file: None, failed });
    }
    let fields = columns
        .iter()
        .zip(&kinds)
        .map(|(column, kind)| kind.parquet_type(&column.name).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let schema = Type::group_type_builder("hive_schema")
        .with_fields(fields)
        .build()
        .map_err(|error| format!("the table's schema: {error}"))?;
    let properties = WriterProperties::builder()
        .set_compression(options.compression)
        .set_dictionary_enabled(options.dictionary)
        .set_data_page_size_limit(options.page_size_bytes.max(64 << 10))
        .set_writer_version(if options.writer_v2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        })
        .set_created_by("millrace firehose".to_owned())
        .build();
    let written = write(Arc::new(schema), Arc::new(properties), &cells);
    let file = written.map_err(|error| format!("writing Parquet: {error}"))?;
    Ok(Converted { file: Some(file), failed })
}

fn write(
    schema: Arc<Type>,
    properties: Arc<WriterProperties>,
    cells: &[Vec<Option<Cell>>],
) -> parquet::errors::Result<Vec<u8>> {
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    let mut group = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut column) = group.next_column()? {
        let values = &cells[index];
        let levels: Vec<i16> = values.iter().map(|cell| i16::from(cell.is_some())).collect();
        let present = values.iter().flatten();
        match column.untyped() {
            ColumnWriter::BoolColumnWriter(writer) => {
                let data: Vec<bool> = present.map(|cell| matches!(cell, Cell::Bool(true))).collect();
                writer.write_batch(&data, Some(&levels), None)?;
            }
            ColumnWriter::Int32ColumnWriter(writer) => {
                let data: Vec<i32> =
                    present.map(|cell| if let Cell::I32(v) = cell { *v } else { 0 }).collect();
                writer.write_batch(&data, Some(&levels), None)?;
            }
            ColumnWriter::Int64ColumnWriter(writer) => {
                let data: Vec<i64> =
                    present.map(|cell| if let Cell::I64(v) = cell { *v } else { 0 }).collect();
                writer.write_batch(&data, Some(&levels), None)?;
            }
            ColumnWriter::FloatColumnWriter(writer) => {
                let data: Vec<f32> =
                    present.map(|cell| if let Cell::F32(v) = cell { *v } else { 0.0 }).collect();
                writer.write_batch(&data, Some(&levels), None)?;
            }
            ColumnWriter::DoubleColumnWriter(writer) => {
                let data: Vec<f64> =
                    present.map(|cell| if let Cell::F64(v) = cell { *v } else { 0.0 }).collect();
                writer.write_batch(&data, Some(&levels), None)?;
            }
            ColumnWriter::ByteArrayColumnWriter(writer) => {
                let data: Vec<ByteArray> = present
                    .map(|cell| {
                        if let Cell::Bytes(v) = cell {
                            ByteArray::from(v.clone())
                        } else {
                            ByteArray::from(Vec::new())
                        }
                    })
                    .collect();
                writer.write_batch(&data, Some(&levels), None)?;
            }
            _ => unreachable!("only the physical types of Kind::parquet_type are written"),
        }
        column.close()?;
        index += 1;
    }
    group.close()?;
    writer.into_inner()
}

fn row(
    columns: &[Column],
    kinds: &[Kind],
    options: &Options,
    record: &[u8],
) -> Result<Vec<Option<Cell>>, String> {
    let value = document::decode(Protocol::Json, record)
        .map_err(|error| format!("the record is not a JSON object: {}", error.message))?;
    let Value::Map(members) = &value else { return Err("the record is not a JSON object".to_owned()) };
    let key_of = |key: &str| {
        let key = if options.dots_to_underscores { key.replace('.', "_") } else { key.to_owned() };
        if options.case_insensitive {
            key.to_lowercase()
        } else {
            key
        }
    };
    let mut out = Vec::with_capacity(columns.len());
    for (column, kind) in columns.iter().zip(kinds) {
        let wanted = options
            .key_mappings
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&column.name))
            .map_or_else(|| key_of(&column.name), |(_, key)| key_of(key));
        let found = members.iter().find(|(key, _)| key_of(key) == wanted).map(|(_, value)| value);
        let cell = match found {
            None | Some(Value::Null) => None,
            Some(value) => Some(cell(*kind, value).map_err(|why| format!("column {}: {why}", column.name))?),
        };
        out.push(cell);
    }
    Ok(out)
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Str(text) => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        Value::Float(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn cell(kind: Kind, value: &Value) -> Result<Cell, String> {
    let shown = || String::from_utf8_lossy(&document::encode(Protocol::Json, value)).into_owned();
    let bad = |what: &str| format!("{} is not {what}", shown());
    let integer = || -> Result<i64, String> {
        match value {
            Value::Int(number) => Ok(*number),
            Value::Float(number) if number.fract() == 0.0 && number.abs() < 9.2e18 => Ok(*number as i64),
            Value::Str(text) => text.trim().parse::<i64>().map_err(|_| bad("an integer")),
            _ => Err(bad("an integer")),
        }
    };
    let float = || -> Result<f64, String> {
        match value {
            Value::Int(number) => Ok(*number as f64),
            Value::Float(number) => Ok(*number),
            Value::Str(text) => text.trim().parse::<f64>().map_err(|_| bad("a number")),
            _ => Err(bad("a number")),
        }
    };
    Ok(match kind {
        Kind::String => Cell::Bytes(match value {
            Value::Str(text) => text.clone().into_bytes(),
            other => document::encode(Protocol::Json, other),
        }),
        Kind::Boolean => Cell::Bool(match value {
            Value::Bool(flag) => *flag,
            Value::Str(text) if text.eq_ignore_ascii_case("true") => true,
            Value::Str(text) if text.eq_ignore_ascii_case("false") => false,
            _ => return Err(bad("a boolean")),
        }),
        Kind::Int { bits } => {
            let number = integer()?;
            let limit = 1i64 << (bits - 1);
            if number < -limit || number >= limit {
                return Err(format!("{number} does not fit a {bits}-bit integer"));
            }
            Cell::I32(number as i32)
        }
        Kind::BigInt => Cell::I64(integer()?),
        Kind::Float => Cell::F32(float()? as f32),
        Kind::Double => Cell::F64(float()?),
        Kind::Decimal { precision, scale } => {
            let text = text_of(value).ok_or_else(|| bad("a decimal"))?;
            let scaled = scaled_decimal(&text, precision, scale)
                .ok_or_else(|| bad(&format!("a decimal({precision},{scale})")))?;
            if precision <= 9 {
                Cell::I32(scaled as i32)
            } else {
                Cell::I64(scaled)
            }
        }
        Kind::Date => Cell::I32(match value {
            Value::Int(days) => i32::try_from(*days).map_err(|_| bad("a date"))?,
            Value::Str(text) => date_days(text.trim()).ok_or_else(|| bad("a date (yyyy-MM-dd)"))?,
            _ => return Err(bad("a date")),
        }),
        Kind::Timestamp => Cell::I64(match value {
            Value::Int(number) => epoch_ms(*number as f64),
            Value::Float(number) => epoch_ms(*number),
            Value::Str(text) => timestamp_ms(text.trim()).ok_or_else(|| bad("a timestamp"))?,
            _ => return Err(bad("a timestamp")),
        }),
    })
}

/// Epoch seconds, or milliseconds when the number is too large to be seconds (after 5138).
fn epoch_ms(number: f64) -> i64 {
    if number.abs() >= 1e11 {
        number as i64
    } else {
        (number * 1000.0).round() as i64
    }
}

fn date_days(text: &str) -> Option<i32> {
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.get(..2)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    i32::try_from(crate::aws::sigv4::days_from_civil(year, i64::from(month), i64::from(day))).ok()
}

fn timestamp_ms(text: &str) -> Option<i64> {
    if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        return Some(instant.as_millisecond());
    }
    if let Ok(number) = text.parse::<f64>() {
        return Some(epoch_ms(number));
    }
    let civil = text.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>().ok()?;
    civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|zoned| zoned.timestamp().as_millisecond())
}

/// `text` (a decimal number) times 10^scale, rounded half away from zero; `None` when it is
/// not a number or has more than `precision` digits.
fn scaled_decimal(text: &str, precision: u8, scale: u8) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()?),
        None => (digits, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().chain(fraction.bytes()).all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let all: String = format!("{whole}{fraction}");
    // The value is all × 10^(exponent − fraction digits); shift to × 10^−scale.
    let shift = exponent - fraction.len() as i32 + i32::from(scale);
    let mut value: i128 = 0;
    for byte in all.bytes() {
        value = value.checked_mul(10)?.checked_add(i128::from(byte - b'0'))?;
        if value > 10i128.pow(38) {
            return None;
        }
    }
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow((-shift) as u32)?;
        value = (value + divisor / 2) / divisor;
    }
    if value >= 10i128.pow(u32::from(precision)) {
        return None;
    }
    let value = i64::try_from(value).ok()?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(spec: &[(&str, &str)]) -> Vec<Column> {
        spec.iter().map(|(name, kind)| Column { name: (*name).into(), hive_type: (*kind).into() }).collect()
    }

    #[test]
    fn hive_types() {
        assert_eq!(Kind::of("decimal(10,2)").unwrap(), Kind::Decimal { precision: 10, scale: 2 });
        assert_eq!(Kind::of("VARCHAR(20)").unwrap(), Kind::String);
        assert!(Kind::of("array<string>").unwrap_err().contains("nested"));
        assert!(Kind::of("decimal(38,2)").is_err());
        assert!(Kind::of("blob").is_err());
    }

    #[test]
    fn decimals() {
        assert_eq!(scaled_decimal("12.345", 10, 2), Some(1235));
        assert_eq!(scaled_decimal("-0.5", 4, 0), Some(-1));
        assert_eq!(scaled_decimal("1e3", 6, 2), Some(100_000));
        assert_eq!(scaled_decimal("123456", 5, 0), None, "too many digits");
        assert_eq!(scaled_decimal("abc", 5, 0), None);
    }

    #[test]
    fn times() {
        assert_eq!(timestamp_ms("2026-12-01T19:40:00Z"), Some(1_796_154_000_000));
        assert_eq!(timestamp_ms("2026-12-01 19:40:00.5"), Some(1_796_154_000_500));
        assert_eq!(epoch_ms(1_796_154_000.0), 1_796_154_000_000);
        assert_eq!(epoch_ms(1_796_154_000_123.0), 1_796_154_000_123);
        assert_eq!(date_days("1970-01-02"), Some(1));
    }

    #[test]
    fn records_convert_or_fail_one_by_one() {
        let columns =
            columns(&[("name", "string"), ("n", "int"), ("price", "decimal(8,2)"), ("at", "timestamp")]);
        let records: [&[u8]; 3] = [
            br#"{"Name":"a","n":1,"price":"9.99","at":1796154000}"#,
            br#"{"name":"b","n":"x"}"#,
            b"not json",
        ];
        let converted = convert(&columns, &Options::default(), &records).unwrap();
        assert_eq!(converted.failed.iter().map(|(index, _)| *index).collect::<Vec<_>>(), vec![1, 2]);
        assert!(converted.failed[0].1.contains("column n"));
        let file = converted.file.unwrap();
        assert_eq!(&file[..4], b"PAR1");
        assert_eq!(&file[file.len() - 4..], b"PAR1");
    }
}
