//! Values of rows, as KDA's types hold them, and the conversions between them (CAST, and the
//! cast every value goes through on its way into a stream's column).

use std::cmp::Ordering;
use std::fmt;

use crate::sql::plan::SqlType;

/// One value of a row. Timestamps are UTC milliseconds since the epoch, as KDA keeps them
/// (its TIMESTAMP has millisecond precision and no zone).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    /// TINYINT, SMALLINT, INTEGER and BIGINT.
    Integer(i64),
    /// DECIMAL: the unscaled value and the scale.
    Decimal {
        unscaled: i128,
        scale: u8,
    },
    /// REAL and DOUBLE.
    Double(f64),
    String(String),
    Binary(Vec<u8>),
    Timestamp(i64),
    /// DATE: days since the epoch.
    Date(i64),
    /// TIME: milliseconds since midnight.
    Time(i64),
    /// A day-time interval in milliseconds (expressions only; no column holds one).
    Interval(i64),
}

/// Why a value could not be converted or computed: the row that caused it goes to the
/// application's error stream, not into its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

pub(crate) fn fail<T>(message: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(message.into()))
}

const MS_PER_DAY: i64 = 86_400_000;
/// TIMESTAMP's range: 0001-01-01 00:00:00.000 to 9999-12-31 23:59:59.999.
const TIMESTAMP_MS_MIN: i64 = -62_135_596_800_000;
const TIMESTAMP_MS_MAX: i64 = 253_402_300_799_999;

fn timestamp_in_range(ms: i64) -> Result<Value, ValueError> {
    if (TIMESTAMP_MS_MIN..=TIMESTAMP_MS_MAX).contains(&ms) {
        Ok(Value::Timestamp(ms))
    } else {
        fail(format!("{ms} ms is outside TIMESTAMP's years 1 to 9999"))
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a double, for the numeric types.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(value) => Some(*value as f64),
            Value::Decimal { unscaled, scale } => Some(*unscaled as f64 / 10f64.powi(i32::from(*scale))),
            Value::Double(value) => Some(*value),
            _ => None,
        }
    }

    /// SQL's comparison: `None` when either side is NULL or the types do not compare.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Integer(left), Value::Integer(right)) => Some(left.cmp(right)),
            (Value::Decimal { .. } | Value::Integer(_), Value::Decimal { .. } | Value::Integer(_)) => {
                let (left, right, _) = aligned(self, other)?;
                Some(left.cmp(&right))
            }
            (Value::Double(_) | Value::Integer(_) | Value::Decimal { .. }, _) if other.as_f64().is_some() => {
                self.as_f64()?.partial_cmp(&other.as_f64()?)
            }
            (Value::Boolean(left), Value::Boolean(right)) => Some(left.cmp(right)),
            (Value::String(left), Value::String(right)) => Some(left.cmp(right)),
            (Value::Binary(left), Value::Binary(right)) => Some(left.cmp(right)),
            (Value::Timestamp(left), Value::Timestamp(right))
            | (Value::Date(left), Value::Date(right))
            | (Value::Time(left), Value::Time(right))
            | (Value::Interval(left), Value::Interval(right)) => Some(left.cmp(right)),
            (Value::Timestamp(left), Value::Date(right)) => Some(left.cmp(&(right * MS_PER_DAY))),
            (Value::Date(left), Value::Timestamp(right)) => Some((left * MS_PER_DAY).cmp(right)),
            // A string literal compared with a time is read as one (WHERE t > '2024-01-01 …').
            (Value::String(text), time @ (Value::Timestamp(_) | Value::Date(_) | Value::Time(_))) => {
                parse_time_like(text, time)?.compare(other)
            }
            (time @ (Value::Timestamp(_) | Value::Date(_) | Value::Time(_)), Value::String(text)) => {
                self.compare(&parse_time_like(text, time)?)
            }
            _ => None,
        }
    }

    /// Bytes that identify the value for grouping, COUNT DISTINCT and TOP-K: equal values
    /// (1, 1.0 and 1.00 among numbers) give equal bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9);
        match self {
            Value::Null => out.push(0),
            Value::Boolean(value) => out.extend([1, u8::from(*value)]),
            Value::Integer(_) | Value::Decimal { .. } | Value::Double(_) => match exact_integer(self) {
                Some(integer) => {
                    out.push(2);
                    out.extend(integer.to_le_bytes());
                }
                None => {
                    out.push(3);
                    let value = self.as_f64().unwrap_or(f64::NAN);
                    // -0.0 and 0.0 are one value; every NaN is one value.
                    let value = if value == 0.0 {
                        0.0
                    } else if value.is_nan() {
                        f64::NAN
                    } else {
                        value
                    };
                    out.extend(value.to_bits().to_le_bytes());
                }
            },
            Value::String(text) => {
                out.push(4);
                out.extend(text.as_bytes());
            }
            Value::Binary(bytes) => {
                out.push(5);
                out.extend(bytes);
            }
            Value::Timestamp(ms) => {
                out.push(6);
                out.extend(ms.to_le_bytes());
            }
            Value::Date(days) => {
                out.push(7);
                out.extend(days.to_le_bytes());
            }
            Value::Time(ms) => {
                out.push(8);
                out.extend(ms.to_le_bytes());
            }
            Value::Interval(ms) => {
                out.push(9);
                out.extend(ms.to_le_bytes());
            }
        }
        out
    }

    /// The value converted to `sql_type`, as CAST and INSERT do.
    pub fn cast(&self, sql_type: SqlType) -> Result<Value, ValueError> {
        if self.is_null() {
            return Ok(Value::Null);
        }
        match sql_type {
            SqlType::Boolean => match self {
                Value::Boolean(_) => Ok(self.clone()),
                Value::String(text) => match text.trim().to_ascii_uppercase().as_str() {
                    "TRUE" => Ok(Value::Boolean(true)),
                    "FALSE" => Ok(Value::Boolean(false)),
                    "UNKNOWN" => Ok(Value::Null),
                    _ => fail(format!("'{text}' is not a BOOLEAN")),
                },
                _ => fail(format!("{} cannot be a BOOLEAN", self.type_name())),
            },
            SqlType::TinyInt => self.integer_in(i64::from(i8::MIN), i64::from(i8::MAX), "TINYINT"),
            SqlType::SmallInt => self.integer_in(i64::from(i16::MIN), i64::from(i16::MAX), "SMALLINT"),
            SqlType::Integer => self.integer_in(i64::from(i32::MIN), i64::from(i32::MAX), "INTEGER"),
            SqlType::BigInt => self.integer_in(i64::MIN, i64::MAX, "BIGINT"),
            SqlType::Real => Ok(Value::Double(f64::from(self.double("REAL")? as f32))),
            SqlType::Double => Ok(Value::Double(self.double("DOUBLE")?)),
            SqlType::Decimal { precision, scale } => self.decimal(precision, scale),
            SqlType::Char(length) => {
                let mut text = self.text();
                let count = text.chars().count();
                if count > length as usize {
                    text = text.chars().take(length as usize).collect();
                } else {
                    text.extend(std::iter::repeat_n(' ', length as usize - count));
                }
                Ok(Value::String(text))
            }
            SqlType::Varchar(length) => {
                // Longer text is cut to the column's length (what KDA's in-application streams
                // do with a VARCHAR(n) column).
                Ok(Value::String(self.text().chars().take(length as usize).collect()))
            }
            SqlType::Binary(length) | SqlType::Varbinary(length) => match self {
                Value::Binary(bytes) => {
                    Ok(Value::Binary(bytes.iter().copied().take(length as usize).collect()))
                }
                Value::String(text) => {
                    Ok(Value::Binary(text.as_bytes().iter().copied().take(length as usize).collect()))
                }
                _ => fail(format!("{} cannot be BINARY", self.type_name())),
            },
            SqlType::Timestamp => match self {
                Value::Timestamp(ms) => timestamp_in_range(*ms),
                Value::Date(days) => timestamp_in_range(days.saturating_mul(MS_PER_DAY)),
                // Milliseconds since the epoch.
                Value::Integer(ms) => timestamp_in_range(*ms),
                Value::String(text) => parse_timestamp(text).and_then(timestamp_in_range),
                _ => fail(format!("{} cannot be a TIMESTAMP", self.type_name())),
            },
            SqlType::Date => match self {
                Value::Date(_) => Ok(self.clone()),
                Value::Timestamp(ms) => Ok(Value::Date(ms.div_euclid(MS_PER_DAY))),
                Value::String(text) => parse_timestamp(text).map(|ms| Value::Date(ms.div_euclid(MS_PER_DAY))),
                _ => fail(format!("{} cannot be a DATE", self.type_name())),
            },
            SqlType::Time => match self {
                Value::Time(_) => Ok(self.clone()),
                Value::Timestamp(ms) => Ok(Value::Time(ms.rem_euclid(MS_PER_DAY))),
                Value::String(text) => parse_time(text).map(Value::Time),
                _ => fail(format!("{} cannot be a TIME", self.type_name())),
            },
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Boolean(_) => "a BOOLEAN",
            Value::Integer(_) => "an integer",
            Value::Decimal { .. } => "a DECIMAL",
            Value::Double(_) => "a DOUBLE",
            Value::String(_) => "a string",
            Value::Binary(_) => "a BINARY",
            Value::Timestamp(_) => "a TIMESTAMP",
            Value::Date(_) => "a DATE",
            Value::Time(_) => "a TIME",
            Value::Interval(_) => "an INTERVAL",
        }
    }

    fn integer_in(&self, min: i64, max: i64, name: &str) -> Result<Value, ValueError> {
        let value = match self {
            Value::Integer(value) => i128::from(*value),
            Value::Decimal { unscaled, scale } => unscaled / 10i128.pow(u32::from(*scale)),
            // SQL's CAST of an approximate number to an integer rounds it.
            Value::Double(value) if value.is_finite() => value.round() as i128,
            Value::String(text) => match text.trim().parse::<i128>() {
                Ok(value) => value,
                Err(_) => return fail(format!("'{text}' is not an integer")),
            },
            Value::Boolean(value) => i128::from(*value),
            _ => return fail(format!("{} cannot be {name}", self.type_name())),
        };
        if value < i128::from(min) || value > i128::from(max) {
            return fail(format!("{value} is out of range for {name}"));
        }
        Ok(Value::Integer(value as i64))
    }

    fn double(&self, name: &str) -> Result<f64, ValueError> {
        match self {
            Value::String(text) => {
                text.trim().parse().map_err(|_| ValueError(format!("'{text}' is not a {name}")))
            }
            _ => self.as_f64().ok_or_else(|| ValueError(format!("{} cannot be {name}", self.type_name()))),
        }
    }

    fn decimal(&self, precision: u8, scale: u8) -> Result<Value, ValueError> {
        let unscaled = match self {
            Value::Integer(value) => i128::from(*value) * 10i128.pow(u32::from(scale)),
            Value::Decimal { unscaled, scale: from } => rescale(*unscaled, *from, scale),
            Value::Double(value) if value.is_finite() => {
                (value * 10f64.powi(i32::from(scale))).round() as i128
            }
            Value::String(text) => match parse_decimal(text.trim()) {
                Some((unscaled, from)) => rescale(unscaled, from, scale),
                None => return fail(format!("'{text}' is not a DECIMAL")),
            },
            _ => return fail(format!("{} cannot be a DECIMAL", self.type_name())),
        };
        if unscaled.unsigned_abs() >= 10u128.pow(u32::from(precision)) {
            return fail(format!("{} does not fit DECIMAL({precision}, {scale})", self.text()));
        }
        Ok(Value::Decimal { unscaled, scale })
    }

    /// The value as text, as CAST(… AS VARCHAR) writes it.
    pub fn text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Boolean(value) => if *value { "TRUE" } else { "FALSE" }.into(),
            Value::Integer(value) => value.to_string(),
            Value::Decimal { unscaled, scale } => decimal_text(*unscaled, *scale),
            Value::Double(value) => value.to_string(),
            Value::String(text) => text.clone(),
            Value::Binary(bytes) => bytes.iter().map(|byte| format!("{byte:02X}")).collect(),
            Value::Timestamp(ms) => timestamp_text(*ms),
            Value::Date(days) => {
                let (year, month, day) = civil_from_days(*days);
                format!("{year:04}-{month:02}-{day:02}")
            }
            Value::Time(ms) => time_text(*ms),
            Value::Interval(ms) => format!("{ms} ms"),
        }
    }
}

/// Both sides as integers at one scale, and that scale.
pub(crate) fn aligned(left: &Value, right: &Value) -> Option<(i128, i128, u8)> {
    let parts = |value: &Value| match value {
        Value::Integer(value) => Some((i128::from(*value), 0u8)),
        Value::Decimal { unscaled, scale } => Some((*unscaled, *scale)),
        _ => None,
    };
    let (left, left_scale) = parts(left)?;
    let (right, right_scale) = parts(right)?;
    let scale = left_scale.max(right_scale);
    let up = |value: i128, from: u8| value.checked_mul(10i128.checked_pow(u32::from(scale - from))?);
    Some((up(left, left_scale)?, up(right, right_scale)?, scale))
}

/// An integer value of a number, if it is one exactly.
fn exact_integer(value: &Value) -> Option<i128> {
    match value {
        Value::Integer(value) => Some(i128::from(*value)),
        Value::Decimal { unscaled, scale } => {
            let divisor = 10i128.pow(u32::from(*scale));
            (unscaled % divisor == 0).then_some(unscaled / divisor)
        }
        Value::Double(value) if value.fract() == 0.0 && value.abs() < 1e18 => Some(*value as i128),
        _ => None,
    }
}

/// `unscaled` at scale `from` brought to scale `to`, rounding half away from zero.
pub(crate) fn rescale(unscaled: i128, from: u8, to: u8) -> i128 {
    match from.cmp(&to) {
        Ordering::Equal => unscaled,
        Ordering::Less => unscaled.saturating_mul(10i128.pow(u32::from(to - from))),
        Ordering::Greater => {
            let divisor = 10i128.pow(u32::from(from - to));
            let (quotient, remainder) = (unscaled / divisor, unscaled % divisor);
            if remainder.abs() * 2 >= divisor {
                quotient + unscaled.signum()
            } else {
                quotient
            }
        }
    }
}

/// A decimal literal: its unscaled value and scale.
pub(crate) fn parse_decimal(text: &str) -> Option<(i128, u8)> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().chain(fraction.bytes()).all(|byte| byte.is_ascii_digit())
        || fraction.len() > 38
    {
        return None;
    }
    let unscaled: i128 = format!("{whole}{fraction}").parse().ok()?;
    Some((if negative { -unscaled } else { unscaled }, fraction.len() as u8))
}

fn decimal_text(unscaled: i128, scale: u8) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{}{whole}.{fraction}", if unscaled < 0 { "-" } else { "" })
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date of a day since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `yyyy-MM-dd HH:mm:ss.SSS` as KDA prints timestamps.
pub fn timestamp_text(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    format!("{year:04}-{month:02}-{day:02} {}", time_text(ms.rem_euclid(MS_PER_DAY)))
}

fn time_text(ms: i64) -> String {
    let (seconds, millis) = (ms / 1000, ms % 1000);
    format!("{:02}:{:02}:{:02}.{millis:03}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// `yyyy-MM-dd[ HH:mm[:ss[.fff]]]` (a `T` between date and time too), UTC.
pub fn parse_timestamp(text: &str) -> Result<i64, ValueError> {
    let bad = || ValueError(format!("'{text}' is not a timestamp (yyyy-MM-dd HH:mm:ss.SSS)"));
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time.trim_end_matches('Z'))),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let (Some(year), Some(month), Some(day)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if year.len() != 4 {
        return Err(bad());
    }
    let year: i64 = year.parse().map_err(|_| bad())?;
    let month: u32 = month.parse().map_err(|_| bad())?;
    let day: u32 = day.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad());
    }
    let time_ms = match time {
        Some(time) => parse_time(time).map_err(|_| bad())?,
        None => 0,
    };
    Ok(days_from_civil(year, month, day) * MS_PER_DAY + time_ms)
}

fn parse_time(text: &str) -> Result<i64, ValueError> {
    let bad = || ValueError(format!("'{text}' is not a time (HH:mm:ss.SSS)"));
    let (clock, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let fields: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&fields.len())
        || fraction.len() > 9
        || !fraction.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err(bad());
    }
    let field = |index: usize, max: i64| -> Result<i64, ValueError> {
        let value: i64 = fields.get(index).map_or(Ok(0), |field| field.parse()).map_err(|_| bad())?;
        if (0..=max).contains(&value) {
            Ok(value)
        } else {
            Err(bad())
        }
    };
    let millis: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{:0<3}", &fraction[..fraction.len().min(3)]).parse().map_err(|_| bad())?
    };
    Ok(((field(0, 23)? * 60 + field(1, 59)?) * 60 + field(2, 59)?) * 1000 + millis)
}

fn parse_time_like(text: &str, like: &Value) -> Option<Value> {
    let sql_type = match like {
        Value::Date(_) => SqlType::Date,
        Value::Time(_) => SqlType::Time,
        _ => SqlType::Timestamp,
    };
    Value::String(text.to_string()).cast(sql_type).ok()
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}
