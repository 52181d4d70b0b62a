//! The KDA SQL front end: application code as Kinesis Data Analytics for SQL defined it,
//! parsed and resolved into a [`plan::Application`] that the operators run.
//!
//! What it takes (the forms of AWS's own documentation examples):
//! - `CREATE [OR REPLACE] STREAM name (column type [NOT NULL], …)`: in-application streams.
//! - `CREATE [OR REPLACE] PUMP name AS INSERT INTO stream [(columns)] SELECT STREAM …`: the
//!   continuous queries that move rows between streams.
//! - In a pump's query: projections and expressions, `WHERE`, `GROUP BY … STEP(ROWTIME BY
//!   INTERVAL …)` or `FLOOR(ROWTIME TO unit)` (tumbling windows), `WINDOW w AS (PARTITION BY …
//!   RANGE INTERVAL … PRECEDING)` with `agg(…) OVER w` (sliding windows, one row out per row
//!   in), `WINDOWED BY STAGGER (PARTITION BY … RANGE INTERVAL …)`, a `[LEFT] JOIN` with a
//!   reference table, and the table functions `TOP_K_ITEMS_TUMBLING` and
//!   `COUNT_DISTINCT_ITEMS_TUMBLING`.
//!
//! Identifiers follow KDA: unquoted ones are upper-cased, quoted ones keep their case.
//! Every error names the line and column (1-based) of the code it rejects.
//!
//! How: the code is tokenized once with locations (sqlparser's tokenizer). `CREATE STREAM` and
//! the pump's header are parsed here, token by token; the `SELECT` is handed to sqlparser
//! after a pre-pass rewrites the three KDA forms it does not know (`SELECT STREAM`, `STEP(x BY
//! i)`, `WINDOWED BY STAGGER`) into forms it does, keeping every token's location. Lowering
//! ([`lower`]) then resolves names against the declared streams and builds the plan.
//!
//! Not here: running the plan (operators), event time and watermarks, the Flink-style dialect.

mod lex;
mod lower;
pub mod plan;

use std::fmt;

pub use plan::{Application, Name};

/// A place in the application code, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// Why application code was refused: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// Where the offending text starts; `None` when the code as a whole is at fault (empty).
    pub position: Option<Position>,
    pub message: String,
    /// The code reads a stream or table that is not defined (an input or a reference table
    /// not added yet, or a typo): a service may accept such code and refuse it at start.
    pub undefined_stream: bool,
}

impl SqlError {
    pub(crate) fn undefined(position: Position, message: impl Into<String>) -> SqlError {
        SqlError { undefined_stream: true, ..SqlError::at(position, message) }
    }

    pub(crate) fn at(position: Position, message: impl Into<String>) -> SqlError {
        SqlError {
            undefined_stream: false,
            position: (position.line > 0).then_some(position),
            message: message.into(),
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => write!(f, "line {line}, column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SqlError {}

/// Parses and resolves application code. `inputs` are the streams the application's inputs
/// feed (`SOURCE_SQL_STREAM_001`, …) and its reference tables; the code may read those and the
/// streams it declares itself, in order of declaration.
pub fn parse_application(code: &str, inputs: &[plan::StreamDef]) -> Result<Application, SqlError> {
    let statements = lex::statements(code)?;
    lower::application(statements, inputs)
}

/// A column's SQL type as an input schema's `RecordColumns` give it (`VARCHAR(8)`, `DECIMAL(10, 2)`).
pub fn parse_type(text: &str) -> Result<plan::SqlType, SqlError> {
    lex::sql_type_of(text)
}

#[cfg(test)]
mod tests;
