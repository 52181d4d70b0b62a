//! The resolved application: streams with typed columns, and pumps whose queries name columns
//! by position in their sources. `Display` writes it back as canonical KDA SQL (every name
//! quoted, so case survives), which parses to the same plan: the round trip the tests check.

use std::fmt;

/// An identifier as KDA compares it: unquoted names upper-cased, quoted ones as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// A name as it will be compared (already normalized: no case folding here).
    pub fn new(name: impl Into<String>) -> Name {
        Name(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    /// Quoted, with embedded quotes doubled, so that the text parses back to this name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// The SQL types of KDA's reference, "Data Types".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Boolean,
    TinyInt,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    /// DECIMAL(precision, scale): up to 19 significant digits.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Char(u32),
    Varchar(u32),
    Binary(u32),
    Varbinary(u32),
    Date,
    Time,
    Timestamp,
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::TinyInt => f.write_str("TINYINT"),
            SqlType::SmallInt => f.write_str("SMALLINT"),
            SqlType::Integer => f.write_str("INTEGER"),
            SqlType::BigInt => f.write_str("BIGINT"),
            SqlType::Real => f.write_str("REAL"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::Char(length) => write!(f, "CHAR({length})"),
            SqlType::Varchar(length) => write!(f, "VARCHAR({length})"),
            SqlType::Binary(length) => write!(f, "BINARY({length})"),
            SqlType::Varbinary(length) => write!(f, "VARBINARY({length})"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: Name,
    pub sql_type: SqlType,
    pub not_null: bool,
}

/// A stream (or a reference table) and its columns. ROWTIME is every stream's implicit
/// column and is not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDef {
    pub name: Name,
    pub columns: Vec<Column>,
}

impl StreamDef {
    pub fn column(&self, name: &Name) -> Option<usize> {
        self.columns.iter().position(|column| &column.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The in-application streams the code declares, in order.
    pub streams: Vec<StreamDef>,
    pub pumps: Vec<Pump>,
    /// `WATERMARK FOR column AS column - INTERVAL …` declared with streams.
    pub watermarks: Vec<Watermark>,
}

/// A stream's event-time column and how far behind the latest time seen its watermark
/// trails (the out-of-orderness allowed before a row is late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub stream: Name,
    pub column: Name,
    pub delay_ms: u64,
}

/// A window table function of the Flink-style dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventWindow {
    /// `TUMBLE(TABLE s, DESCRIPTOR(t), size)`.
    Tumble { size_ms: u64 },
    /// `HOP(TABLE s, DESCRIPTOR(t), slide, size)`.
    Hop { slide_ms: u64, size_ms: u64 },
    /// `SESSION(TABLE s [PARTITION BY k], DESCRIPTOR(t), gap)`.
    Session { gap_ms: u64 },
}

/// The time a window table function windows on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    /// ROWTIME: the rowtime bound moves its watermark too.
    Rowtime,
    /// A TIMESTAMP column of the stream, by position.
    Column(usize),
}

/// The columns a window table function adds after its stream's.
pub const WINDOW_COLUMNS: [&str; 3] = ["WINDOW_START", "WINDOW_END", "WINDOW_TIME"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pump {
    pub name: Name,
    /// The in-application stream it inserts into.
    pub target: Name,
    /// The target's columns each output value goes to, by position in the target.
    pub target_columns: Vec<usize>,
    pub query: Query,
}

/// One relation a query reads, under the name its columns are qualified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub stream: Name,
    pub alias: Option<Name>,
}

impl Relation {
    /// The name that qualifies its columns: the alias, or the stream's name.
    pub fn qualifier(&self) -> &Name {
        self.alias.as_ref().unwrap_or(&self.stream)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Rows of one stream; relation 0.
    Stream(Relation),
    /// A stream (relation 0) joined with a reference table (relation 1).
    Join { stream: Relation, reference: Relation, left: bool, on: Expr },
    /// `TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM s), 'column', k, seconds))`:
    /// relation 0 is the function's output, columns ITEM and ITEM_COUNT.
    TopK { stream: Name, column: Name, k: u32, window_s: u32 },
    /// `TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(…), 'column', seconds))`: one column,
    /// NUMBER_OF_DISTINCT_ITEMS.
    DistinctCount { stream: Name, column: Name, window_s: u32 },
    /// `FROM a JOIN b OVER (RANGE INTERVAL range PRECEDING) ON on`: two streams (relations 0
    /// and 1); rows meet rows of the other stream whose ROWTIMEs are within `range_ms` of
    /// theirs, whichever arrives first.
    StreamJoin { left: Relation, right: Relation, on: Expr, range_ms: u64 },
    /// `TABLE(TUMBLE|HOP|SESSION(TABLE s, DESCRIPTOR(t), …))`: relation 0 is the stream's
    /// `width` columns, then WINDOW_START, WINDOW_END and WINDOW_TIME. `partition`: a
    /// session's PARTITION BY (over relation 0). `delay_ms`: the stream's watermark delay on
    /// that column (0 when it declares none).
    Windowed {
        stream: Relation,
        width: usize,
        time: TimeColumn,
        window: EventWindow,
        partition: Vec<Expr>,
        delay_ms: u64,
    },
}

/// How rows are grouped into windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Row by row: no aggregates.
    None,
    /// `GROUP BY keys` with one key `STEP(ROWTIME BY INTERVAL size)` or `FLOOR(ROWTIME TO
    /// unit)` (`time_key` is its place among `keys`). A window's row comes out when ROWTIME
    /// passes its end, and carries the end as its ROWTIME.
    Tumbling { keys: Vec<Expr>, time_key: usize, size_ms: u64 },
    /// `WINDOW name AS (PARTITION BY keys RANGE INTERVAL range PRECEDING)` (or `ROWS n
    /// PRECEDING`): one row out per row in, aggregating the rows of its partition in range.
    Sliding { name: Name, partition: Vec<Expr>, frame: Frame },
    /// `WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL range)`: a window per partition
    /// opens with its first row and closes `range_ms` later.
    Stagger { keys: Vec<Expr>, range_ms: u64 },
    /// `GROUP BY keys` over a window table function: windows on event time, put out once the
    /// watermark passes their end. Keys that are the function's window columns take each
    /// window's values.
    Event { keys: Vec<Expr> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    RangeMs(u64),
    Rows(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub source: Source,
    pub filter: Option<Expr>,
    pub window: Window,
    pub having: Option<Expr>,
    pub projection: Vec<Projected>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projected {
    pub name: Name,
    pub expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Boolean(bool),
    /// An exact number as written (integer or decimal), kept as text so that the plan does
    /// not round it before its type is known.
    Number(String),
    String(String),
}

impl Eq for Literal {}

/// Time units of FLOOR/CEIL … TO and of intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl TimeUnit {
    /// The unit's length, for the units that have a fixed one.
    pub fn fixed_ms(self) -> Option<u64> {
        match self {
            TimeUnit::Year | TimeUnit::Month => None,
            TimeUnit::Day => Some(86_400_000),
            TimeUnit::Hour => Some(3_600_000),
            TimeUnit::Minute => Some(60_000),
            TimeUnit::Second => Some(1_000),
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnit::Year => "YEAR",
            TimeUnit::Month => "MONTH",
            TimeUnit::Day => "DAY",
            TimeUnit::Hour => "HOUR",
            TimeUnit::Minute => "MINUTE",
            TimeUnit::Second => "SECOND",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    Concat,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Subtract => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
            BinaryOp::Concat => "||",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    /// COUNT(*): rows.
    CountRows,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// `APPROX_PERCENTILE(x, q)`: the nearest-rank percentile `q` (in millionths), from a
    /// log-bucket histogram ([`crate::agg::Histogram`]): within 2^-8 of the value, relatively.
    Percentile {
        ppm: u32,
    },
}

impl AggregateFunction {
    fn sql_name(self) -> &'static str {
        match self {
            AggregateFunction::CountRows | AggregateFunction::Count => "COUNT",
            AggregateFunction::Sum => "SUM",
            AggregateFunction::Min => "MIN",
            AggregateFunction::Max => "MAX",
            AggregateFunction::Avg => "AVG",
            AggregateFunction::Percentile { .. } => "APPROX_PERCENTILE",
        }
    }
}

/// Scalar functions of KDA's reference that user code calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Upper,
    Lower,
    CharLength,
    /// SUBSTRING(s, start [, length]), 1-based.
    Substring,
    /// POSITION(needle IN haystack), 1-based, 0 when absent.
    Position,
    /// TRIM(BOTH ' ' FROM s) in its three sides.
    TrimBoth,
    TrimLeading,
    TrimTrailing,
    /// STEP(value BY width): a time rounded down to a multiple of an interval from the epoch,
    /// or an integer to a multiple of an integer.
    Step,
    /// TSDIFF(start, end): milliseconds.
    TsDiff,
    Abs,
    /// FLOOR(number), CEIL(number).
    Floor,
    Ceil,
}

impl Function {
    pub(crate) fn by_name(name: &str) -> Option<Function> {
        Some(match name {
            "UPPER" => Function::Upper,
            "LOWER" => Function::Lower,
            "CHAR_LENGTH" | "CHARACTER_LENGTH" => Function::CharLength,
            "SUBSTRING" => Function::Substring,
            "STEP" => Function::Step,
            "TSDIFF" => Function::TsDiff,
            "ABS" => Function::Abs,
            "FLOOR" => Function::Floor,
            "CEIL" | "CEILING" => Function::Ceil,
            _ => return None,
        })
    }

    fn sql_name(self) -> &'static str {
        match self {
            Function::Upper => "UPPER",
            Function::Lower => "LOWER",
            Function::CharLength => "CHAR_LENGTH",
            Function::Substring => "SUBSTRING",
            Function::Position => "POSITION",
            Function::TrimBoth | Function::TrimLeading | Function::TrimTrailing => "TRIM",
            Function::Step => "STEP",
            Function::TsDiff => "TSDIFF",
            Function::Abs => "ABS",
            Function::Floor => "FLOOR",
            Function::Ceil => "CEIL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Column `index` of relation `relation` of the query's source.
    Column {
        relation: usize,
        index: usize,
    },
    /// The ROWTIME of the row (of relation 0).
    Rowtime,
    /// CURRENT_ROW_TIMESTAMP: when the row is output.
    CurrentRowTimestamp,
    Literal(Literal),
    /// An interval, in milliseconds (day-time intervals only, as KDA).
    Interval {
        ms: i64,
    },
    Negate(Box<Expr>),
    Not(Box<Expr>),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// LIKE, or SIMILAR TO (`similar`), with the pattern an expression.
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        similar: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        expr: Box<Expr>,
        sql_type: SqlType,
    },
    Call {
        function: Function,
        args: Vec<Expr>,
    },
    /// FLOOR(time TO unit) / CEIL(time TO unit).
    FloorTime {
        expr: Box<Expr>,
        unit: TimeUnit,
        ceil: bool,
    },
    /// An aggregate over the query's window (for a sliding window, `OVER` its name).
    Aggregate {
        function: AggregateFunction,
        arg: Option<Box<Expr>>,
        distinct: bool,
    },
}

impl Expr {
    /// Whether an aggregate appears anywhere inside.
    pub fn has_aggregate(&self) -> bool {
        let mut found = false;
        self.visit(&mut |expr| found |= matches!(expr, Expr::Aggregate { .. }));
        found
    }

    /// Calls `f` on this expression and every expression inside it.
    pub fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Column { .. }
            | Expr::Rowtime
            | Expr::CurrentRowTimestamp
            | Expr::Literal(_)
            | Expr::Interval { .. } => {}
            Expr::Negate(inner) | Expr::Not(inner) => inner.visit(f),
            Expr::Binary { left, right, .. } => {
                left.visit(f);
                right.visit(f);
            }
            Expr::IsNull { expr, .. } | Expr::Cast { expr, .. } | Expr::FloorTime { expr, .. } => {
                expr.visit(f)
            }
            Expr::Like { expr, pattern, .. } => {
                expr.visit(f);
                pattern.visit(f);
            }
            Expr::Between { expr, low, high, .. } => {
                expr.visit(f);
                low.visit(f);
                high.visit(f);
            }
            Expr::Case { operand, branches, otherwise } => {
                if let Some(operand) = operand {
                    operand.visit(f);
                }
                for (when, then) in branches {
                    when.visit(f);
                    then.visit(f);
                }
                if let Some(otherwise) = otherwise {
                    otherwise.visit(f);
                }
            }
            Expr::Call { args, .. } => args.iter().for_each(|arg| arg.visit(f)),
            Expr::Aggregate { arg, .. } => {
                if let Some(arg) = arg {
                    arg.visit(f);
                }
            }
        }
    }
}

/// An expression written back as SQL, with the names of the query it belongs to.
pub struct Sql<'a> {
    expr: &'a Expr,
    query: &'a RenderContext<'a>,
}

/// What rendering an expression needs: the source's relations and their columns, and the
/// sliding window's name (for `OVER`).
pub struct RenderContext<'a> {
    relations: Vec<(&'a Name, Vec<&'a Name>)>,
    over: Option<&'a Name>,
}

impl fmt::Display for Sql<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render(self.expr, self.query, f)
    }
}

fn render(expr: &Expr, context: &RenderContext<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let go = |expr: &Expr, f: &mut fmt::Formatter<'_>| render(expr, context, f);
    match expr {
        Expr::Column { relation, index } => {
            let (qualifier, columns) = &context.relations[*relation];
            write!(f, "{qualifier}.{}", columns[*index])
        }
        Expr::Rowtime => match context.relations.first() {
            Some((qualifier, _)) => write!(f, "{qualifier}.ROWTIME"),
            None => f.write_str("ROWTIME"),
        },
        Expr::CurrentRowTimestamp => f.write_str("CURRENT_ROW_TIMESTAMP"),
        Expr::Literal(Literal::Null) => f.write_str("NULL"),
        Expr::Literal(Literal::Boolean(value)) => f.write_str(if *value { "TRUE" } else { "FALSE" }),
        Expr::Literal(Literal::Number(text)) => f.write_str(text),
        Expr::Literal(Literal::String(text)) => write!(f, "'{}'", text.replace('\'', "''")),
        // Parenthesized: `CEIL(INTERVAL '1' MINUTE TO HOUR)` would read as a MINUTE TO HOUR
        // interval.
        Expr::Interval { ms } if *ms < 0 => write!(f, "(-({}))", interval_sql(ms.unsigned_abs())),
        Expr::Interval { ms } => write!(f, "({})", interval_sql(*ms as u64)),
        // Prefix operators are parenthesized whole: NOT binds looser than LIKE or =, so
        // `NOT (a) LIKE b` would read as `NOT (a LIKE b)`.
        Expr::Negate(inner) => {
            f.write_str("(-(")?;
            go(inner, f)?;
            f.write_str("))")
        }
        Expr::Not(inner) => {
            f.write_str("(NOT (")?;
            go(inner, f)?;
            f.write_str("))")
        }
        Expr::Binary { op, left, right } => {
            f.write_str("(")?;
            go(left, f)?;
            write!(f, " {} ", op.symbol())?;
            go(right, f)?;
            f.write_str(")")
        }
        Expr::IsNull { expr, negated } => {
            f.write_str("(")?;
            go(expr, f)?;
            f.write_str(if *negated { " IS NOT NULL)" } else { " IS NULL)" })
        }
        Expr::Like { expr, pattern, negated, similar } => {
            f.write_str("(")?;
            go(expr, f)?;
            f.write_str(if *negated { " NOT" } else { "" })?;
            f.write_str(if *similar { " SIMILAR TO " } else { " LIKE " })?;
            go(pattern, f)?;
            f.write_str(")")
        }
        Expr::Between { expr, low, high, negated } => {
            f.write_str("(")?;
            go(expr, f)?;
            f.write_str(if *negated { " NOT BETWEEN " } else { " BETWEEN " })?;
            go(low, f)?;
            f.write_str(" AND ")?;
            go(high, f)?;
            f.write_str(")")
        }
        Expr::Case { operand, branches, otherwise } => {
            f.write_str("CASE")?;
            if let Some(operand) = operand {
                f.write_str(" ")?;
                go(operand, f)?;
            }
            for (when, then) in branches {
                f.write_str(" WHEN ")?;
                go(when, f)?;
                f.write_str(" THEN ")?;
                go(then, f)?;
            }
            if let Some(otherwise) = otherwise {
                f.write_str(" ELSE ")?;
                go(otherwise, f)?;
            }
            f.write_str(" END")
        }
        Expr::Cast { expr, sql_type } => {
            f.write_str("CAST(")?;
            go(expr, f)?;
            write!(f, " AS {sql_type})")
        }
        Expr::Call { function: Function::Position, args } => {
            f.write_str("POSITION(")?;
            go(&args[0], f)?;
            f.write_str(" IN ")?;
            go(&args[1], f)?;
            f.write_str(")")
        }
        Expr::Call {
            function: function @ (Function::TrimBoth | Function::TrimLeading | Function::TrimTrailing),
            args,
        } => {
            let side = match function {
                Function::TrimLeading => "LEADING",
                Function::TrimTrailing => "TRAILING",
                _ => "BOTH",
            };
            write!(f, "TRIM({side} ")?;
            go(&args[1], f)?;
            f.write_str(" FROM ")?;
            go(&args[0], f)?;
            f.write_str(")")
        }
        Expr::Call { function: Function::Step, args } => {
            f.write_str("STEP(")?;
            go(&args[0], f)?;
            f.write_str(" BY ")?;
            go(&args[1], f)?;
            f.write_str(")")
        }
        Expr::Call { function, args } => {
            write!(f, "{}(", function.sql_name())?;
            for (place, arg) in args.iter().enumerate() {
                if place > 0 {
                    f.write_str(", ")?;
                }
                go(arg, f)?;
            }
            f.write_str(")")
        }
        Expr::FloorTime { expr, unit, ceil } => {
            f.write_str(if *ceil { "CEIL(" } else { "FLOOR(" })?;
            go(expr, f)?;
            write!(f, " TO {unit})")
        }
        Expr::Aggregate { function, arg, distinct } => {
            write!(f, "{}(", function.sql_name())?;
            if *distinct {
                f.write_str("DISTINCT ")?;
            }
            match arg {
                Some(arg) => go(arg, f)?,
                None => f.write_str("*")?,
            }
            if let AggregateFunction::Percentile { ppm } = function {
                write!(f, ", {}.{:06}", ppm / 1_000_000, ppm % 1_000_000)?;
            }
            f.write_str(")")?;
            match context.over {
                Some(window) => write!(f, " OVER {window}"),
                None => Ok(()),
            }
        }
    }
}

impl Application {
    /// The columns of `stream` as this application sees it: one it declares, or an input.
    fn columns_of<'a>(&'a self, inputs: &'a [StreamDef], stream: &Name) -> Vec<&'a Name> {
        self.streams
            .iter()
            .chain(inputs)
            .find(|candidate| &candidate.name == stream)
            .map(|found| found.columns.iter().map(|column| &column.name).collect())
            .unwrap_or_default()
    }

    /// The application written back as canonical KDA SQL. `inputs` are those it was parsed
    /// with (their column names are needed to write column references).
    pub fn to_sql(&self, inputs: &[StreamDef]) -> String {
        use fmt::Write;
        let mut out = String::new();
        for stream in &self.streams {
            let _ = write!(out, "CREATE OR REPLACE STREAM {} (", stream.name);
            for (place, column) in stream.columns.iter().enumerate() {
                let separator = if place > 0 { ", " } else { "" };
                let not_null = if column.not_null { " NOT NULL" } else { "" };
                let _ = write!(out, "{separator}{} {}{not_null}", column.name, column.sql_type);
            }
            for watermark in self.watermarks.iter().filter(|watermark| watermark.stream == stream.name) {
                let _ = write!(out, ", WATERMARK FOR {0} AS {0}", watermark.column);
                if watermark.delay_ms > 0 {
                    let _ = write!(out, " - {}", interval_sql(watermark.delay_ms));
                }
            }
            out.push_str(");\n");
        }
        for pump in &self.pumps {
            let target = self.columns_of(inputs, &pump.target);
            let _ = write!(out, "CREATE OR REPLACE PUMP {} AS INSERT INTO {} (", pump.name, pump.target);
            for (place, index) in pump.target_columns.iter().enumerate() {
                let separator = if place > 0 { ", " } else { "" };
                let _ = write!(out, "{separator}{}", target[*index]);
            }
            out.push_str(")\n");
            self.write_query(&mut out, inputs, &pump.query);
            out.push_str(";\n");
        }
        out
    }

    fn write_query(&self, out: &mut String, inputs: &[StreamDef], query: &Query) {
        use fmt::Write;
        let topk_columns = [Name::new("ITEM"), Name::new("ITEM_COUNT")];
        let distinct_columns = [Name::new("NUMBER_OF_DISTINCT_ITEMS")];
        let function_name = Name::new("T");
        let window_columns = WINDOW_COLUMNS.map(Name::new);
        let relations: Vec<(&Name, Vec<&Name>)> = match &query.source {
            Source::Stream(relation) => {
                vec![(relation.qualifier(), self.columns_of(inputs, &relation.stream))]
            }
            Source::Join { stream, reference, .. } => vec![
                (stream.qualifier(), self.columns_of(inputs, &stream.stream)),
                (reference.qualifier(), self.columns_of(inputs, &reference.stream)),
            ],
            Source::StreamJoin { left, right, .. } => vec![
                (left.qualifier(), self.columns_of(inputs, &left.stream)),
                (right.qualifier(), self.columns_of(inputs, &right.stream)),
            ],
            Source::Windowed { stream, .. } => {
                let mut columns = self.columns_of(inputs, &stream.stream);
                columns.extend(window_columns.iter());
                vec![(stream.qualifier(), columns)]
            }
            Source::TopK { .. } => vec![(&function_name, topk_columns.iter().collect())],
            Source::DistinctCount { .. } => vec![(&function_name, distinct_columns.iter().collect())],
        };
        let over = match &query.window {
            Window::Sliding { name, .. } => Some(name),
            _ => None,
        };
        let context = RenderContext { relations, over };
        let sql = |expr: &Expr| Sql { expr, query: &context }.to_string();
        out.push_str("  SELECT STREAM ");
        for (place, projected) in query.projection.iter().enumerate() {
            let separator = if place > 0 { ", " } else { "" };
            let _ = write!(out, "{separator}{} AS {}", sql(&projected.expr), projected.name);
        }
        let relation = |relation: &Relation| match &relation.alias {
            Some(alias) => format!("{} AS {alias}", relation.stream),
            None => relation.stream.to_string(),
        };
        match &query.source {
            Source::Stream(stream) => {
                let _ = write!(out, "\n  FROM {}", relation(stream));
            }
            Source::Join { stream, reference, left, on } => {
                let join = if *left { "LEFT JOIN" } else { "JOIN" };
                let _ = write!(
                    out,
                    "\n  FROM {} {join} {} ON {}",
                    relation(stream),
                    relation(reference),
                    sql(on)
                );
            }
            Source::StreamJoin { left, right, on, range_ms } => {
                let alias = right.alias.as_ref().map(|alias| format!(" AS {alias}")).unwrap_or_default();
                let _ = write!(
                    out,
                    "\n  FROM {} JOIN {} OVER (RANGE {} PRECEDING){alias} ON {}",
                    relation(left),
                    right.stream,
                    interval_sql(*range_ms),
                    sql(on)
                );
            }
            Source::TopK { stream, column, k, window_s } => {
                let _ = write!(
                    out,
                    "\n  FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM {stream}), '{}', {k}, \
                     {window_s})) AS {function_name}",
                    column.as_str().replace('\'', "''")
                );
            }
            Source::DistinctCount { stream, column, window_s } => {
                let _ = write!(
                    out,
                    "\n  FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM {stream}), '{}', \
                     {window_s})) AS {function_name}",
                    column.as_str().replace('\'', "''")
                );
            }
            Source::Windowed { stream, time, window, partition, .. } => {
                let columns = self.columns_of(inputs, &stream.stream);
                let time = match time {
                    TimeColumn::Rowtime => "ROWTIME".to_owned(),
                    TimeColumn::Column(index) => columns[*index].to_string(),
                };
                let (function, partition_by, intervals) = match window {
                    EventWindow::Tumble { size_ms } => ("TUMBLE", String::new(), interval_sql(*size_ms)),
                    EventWindow::Hop { slide_ms, size_ms } => (
                        "HOP",
                        String::new(),
                        format!("{}, {}", interval_sql(*slide_ms), interval_sql(*size_ms)),
                    ),
                    EventWindow::Session { gap_ms } => {
                        let keys = partition.iter().map(&sql).collect::<Vec<_>>().join(", ");
                        let by =
                            if keys.is_empty() { String::new() } else { format!(" PARTITION BY ({keys})") };
                        ("SESSION", by, interval_sql(*gap_ms))
                    }
                };
                let _ = write!(
                    out,
                    "\n  FROM TABLE({function}(TABLE {}{partition_by}, DESCRIPTOR({time}), {intervals}))",
                    stream.stream
                );
                if let Some(alias) = &stream.alias {
                    let _ = write!(out, " AS {alias}");
                }
            }
        }
        if let Some(filter) = &query.filter {
            let _ = write!(out, "\n  WHERE {}", sql(filter));
        }
        let keys = |keys: &[Expr]| keys.iter().map(&sql).collect::<Vec<_>>().join(", ");
        match &query.window {
            Window::None => {}
            Window::Tumbling { keys: group, .. } | Window::Event { keys: group } => {
                let _ = write!(out, "\n  GROUP BY {}", keys(group));
            }
            Window::Stagger { keys: partition, range_ms } => {
                let _ = write!(
                    out,
                    "\n  WINDOWED BY STAGGER (PARTITION BY {} RANGE {})",
                    keys(partition),
                    interval_sql(*range_ms)
                );
            }
            Window::Sliding { .. } => {}
        }
        if let Some(having) = &query.having {
            let _ = write!(out, "\n  HAVING {}", sql(having));
        }
        if let Window::Sliding { name, partition, frame } = &query.window {
            let _ = write!(out, "\n  WINDOW {name} AS (");
            if !partition.is_empty() {
                let _ = write!(out, "PARTITION BY {} ", keys(partition));
            }
            match frame {
                Frame::RangeMs(ms) => {
                    let _ = write!(out, "RANGE {} PRECEDING)", interval_sql(*ms));
                }
                Frame::Rows(rows) => {
                    let _ = write!(out, "ROWS {rows} PRECEDING)");
                }
            }
        }
    }
}

/// An interval in the largest whole unit.
fn interval_sql(ms: u64) -> String {
    for unit in [TimeUnit::Day, TimeUnit::Hour, TimeUnit::Minute, TimeUnit::Second] {
        let unit_ms = unit.fixed_ms().expect("day-time unit");
        if ms.is_multiple_of(unit_ms) {
            return format!("INTERVAL '{}' {unit}", ms / unit_ms);
        }
    }
    // Milliseconds: seconds with a fraction.
    format!("INTERVAL '{}.{:03}' SECOND", ms / 1000, ms % 1000)
}
