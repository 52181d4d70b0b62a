//! From sqlparser's syntax tree to the plan: names resolved against the streams the code may
//! read, windows recognised, and every refusal placed at the text it refuses.

use sqlparser::ast::{self, Spanned};
use sqlparser::tokenizer::Span;

use super::lex::{self, normalized, PumpStatement, Statement};
use super::plan::{
    AggregateFunction, Application, BinaryOp, Column, EventWindow, Expr, Frame, Function, Literal, Name,
    Projected, Pump, Query, Relation, Source, SqlType, StreamDef, TimeColumn, TimeUnit, Watermark, Window,
    WINDOW_COLUMNS,
};
use super::{Position, SqlError};

/// KDA's limits on the tumbling table functions.
const TABLE_FUNCTION_WINDOW_S_MAX: u32 = 3_600;
const TOP_K_MAX: u32 = 100_000;

pub(crate) fn application(statements: Vec<Statement>, inputs: &[StreamDef]) -> Result<Application, SqlError> {
    let mut application = Application { streams: Vec::new(), pumps: Vec::new(), watermarks: Vec::new() };
    for statement in statements {
        match statement {
            Statement::CreateStream { at, name, columns, watermark } => {
                if application.streams.iter().chain(inputs).any(|stream| stream.name == name) {
                    return Err(SqlError::at(at, format!("stream {name} is already defined")));
                }
                let columns: Vec<Column> = columns.into_iter().map(|(column, _)| column).collect();
                if let Some((column, delay_ms, at)) = watermark {
                    match columns.iter().find(|candidate| candidate.name == column) {
                        Some(found) if found.sql_type == SqlType::Timestamp => {}
                        Some(found) => {
                            return Err(SqlError::at(
                                at,
                                format!(
                                    "the watermark's column {column} is {}, not TIMESTAMP",
                                    found.sql_type
                                ),
                            ))
                        }
                        None => {
                            return Err(SqlError::at(at, format!("stream {name} has no column {column}")))
                        }
                    }
                    application.watermarks.push(Watermark { stream: name.clone(), column, delay_ms });
                }
                application.streams.push(StreamDef { name, columns });
            }
            Statement::CreatePump(pump) => {
                if application.pumps.iter().any(|existing| existing.name == pump.name) {
                    return Err(SqlError::at(pump.at, format!("pump {} is already defined", pump.name)));
                }
                let lowered = self::pump(&application.streams, inputs, &application.watermarks, *pump)?;
                application.pumps.push(lowered);
            }
        }
    }
    Ok(application)
}

fn pump(
    streams: &[StreamDef],
    inputs: &[StreamDef],
    watermarks: &[Watermark],
    statement: PumpStatement,
) -> Result<Pump, SqlError> {
    let (target_name, target_at) = &statement.target;
    let Some(target) = streams.iter().find(|stream| &stream.name == target_name) else {
        let why = if inputs.iter().any(|input| &input.name == target_name) {
            "is an input of the application; a pump inserts into an in-application stream the code creates"
        } else {
            "is not defined (CREATE STREAM it before the pump)"
        };
        return Err(SqlError::at(*target_at, format!("stream {target_name} {why}")));
    };
    let target_columns = if statement.columns.is_empty() {
        (0..target.columns.len()).collect()
    } else {
        let mut indexes = Vec::new();
        for (name, at) in &statement.columns {
            let Some(index) = target.column(name) else {
                return Err(SqlError::at(*at, format!("stream {target_name} has no column {name}")));
            };
            if indexes.contains(&index) {
                return Err(SqlError::at(*at, format!("column {name} is named twice")));
            }
            indexes.push(index);
        }
        indexes
    };
    let lowering = Lowering {
        streams,
        inputs,
        watermarks,
        join_range: statement.join_range.as_ref(),
        fallback: statement.query_at,
    };
    let query = lowering.query(&statement.query, statement.stagger.as_ref())?;
    if query.projection.len() != target_columns.len() {
        return Err(SqlError::at(
            statement.query_at,
            format!(
                "the query gives {} columns and the pump inserts {} into {target_name}",
                query.projection.len(),
                target_columns.len()
            ),
        ));
    }
    Ok(Pump { name: statement.name, target: target_name.clone(), target_columns, query })
}

/// The relations a query reads, with their columns.
struct Scope<'a> {
    relations: Vec<(Relation, Vec<&'a Name>)>,
    /// The sliding window the query names in its WINDOW clause: every aggregate is OVER it.
    window_name: Option<Name>,
}

struct Lowering<'a> {
    streams: &'a [StreamDef],
    inputs: &'a [StreamDef],
    watermarks: &'a [Watermark],
    /// `JOIN s OVER (RANGE interval PRECEDING)`: the query joins two streams.
    join_range: Option<&'a (ast::Expr, Position)>,
    /// Where errors go whose syntax node has no location.
    fallback: Position,
}

/// The columns of a table function's output.
static TOP_K_COLUMNS: std::sync::LazyLock<[Name; 2]> =
    std::sync::LazyLock::new(|| [Name::new("ITEM"), Name::new("ITEM_COUNT")]);
static DISTINCT_COLUMNS: std::sync::LazyLock<[Name; 1]> =
    std::sync::LazyLock::new(|| [Name::new("NUMBER_OF_DISTINCT_ITEMS")]);
static WINDOW_NAMES: std::sync::LazyLock<[Name; 3]> =
    std::sync::LazyLock::new(|| WINDOW_COLUMNS.map(Name::new));

fn ident_name(ident: &ast::Ident) -> Name {
    normalized(&ident.value, ident.quote_style)
}

impl<'a> Lowering<'a> {
    fn at(&self, span: Span) -> Position {
        if span.start.line == 0 {
            self.fallback
        } else {
            lex::position(span.start)
        }
    }

    fn error(&self, span: Span, message: impl Into<String>) -> SqlError {
        SqlError::at(self.at(span), message)
    }

    fn stream(&self, name: &Name) -> Option<&'a StreamDef> {
        self.streams.iter().chain(self.inputs).find(|stream| &stream.name == name)
    }

    fn object_name(&self, name: &ast::ObjectName) -> Result<Name, SqlError> {
        match name.0.as_slice() {
            [ast::ObjectNamePart::Identifier(ident)] => Ok(ident_name(ident)),
            _ => Err(self.error(name.span(), format!("{name}: a stream is named by one identifier"))),
        }
    }

    fn query(&self, query: &ast::Query, stagger: Option<&(ast::Expr, Position)>) -> Result<Query, SqlError> {
        if query.with.is_some()
            || query.order_by.is_some()
            || query.limit_clause.is_some()
            || query.fetch.is_some()
        {
            return Err(self.error(query.span(), "a pump's query has no WITH, ORDER BY, LIMIT or FETCH"));
        }
        let ast::SetExpr::Select(select) = query.body.as_ref() else {
            return Err(self.error(query.body.span(), "a pump's query is one SELECT STREAM"));
        };
        if select.distinct.is_some() {
            return Err(self.error(select.span(), "SELECT STREAM DISTINCT is not supported; use GROUP BY"));
        }
        let [from] = select.from.as_slice() else {
            return Err(self.error(
                select.span(),
                "a pump's query reads FROM one stream (and may JOIN one reference table)",
            ));
        };
        let (source, scope) = self.source(from)?;
        let mut scope = scope;
        let filter = select.selection.as_ref().map(|expr| self.scalar(expr, &scope)).transpose()?;
        if let Some(filter) = &filter {
            if filter.has_aggregate() {
                let span = select.selection.as_ref().map_or(Span::empty(), |expr| expr.span());
                return Err(self.error(span, "WHERE cannot use an aggregate (use HAVING)"));
            }
        }
        let keys = match &select.group_by {
            ast::GroupByExpr::Expressions(keys, modifiers) if modifiers.is_empty() => keys.as_slice(),
            ast::GroupByExpr::Expressions(..) | ast::GroupByExpr::All(_) => {
                return Err(
                    self.error(select.span(), "GROUP BY takes expressions only (no ALL, ROLLUP or CUBE)")
                );
            }
        };
        let keys: Vec<Expr> = keys.iter().map(|key| self.scalar(key, &scope)).collect::<Result<_, _>>()?;
        // A sliding window: named in the WINDOW clause (one per query).
        let sliding = match select.named_window.as_slice() {
            [] => None,
            [ast::NamedWindowDefinition(name, ast::NamedWindowExpr::WindowSpec(spec))] => {
                scope.window_name = Some(ident_name(name));
                Some(self.sliding(ident_name(name), spec, &scope)?)
            }
            [definition, ..] => {
                return Err(self.error(definition.0.span, "a query has one named sliding window"));
            }
        };
        let windowed = matches!(source, Source::Windowed { .. });
        if windowed && (stagger.is_some() || sliding.is_some() || keys.is_empty()) {
            return Err(self.error(
                select.span(),
                "a window table function's query aggregates by GROUP BY window_start, window_end, … (no \
                 stagger or sliding window)",
            ));
        }
        let window = match (stagger, sliding) {
            _ if windowed => Window::Event { keys },
            (Some(_), Some(_)) => {
                return Err(self.error(select.span(), "a query is either staggered or sliding"))
            }
            (Some((interval, at)), None) => {
                let range_ms = self.interval_ms(interval)?;
                if range_ms <= 0 {
                    return Err(SqlError::at(*at, "a stagger window's range is at least 1 ms"));
                }
                Window::Stagger { keys, range_ms: range_ms as u64 }
            }
            (None, Some(window)) => {
                if !keys.is_empty() {
                    return Err(self.error(select.span(), "a sliding window's query has no GROUP BY"));
                }
                window
            }
            (None, None) if keys.is_empty() => Window::None,
            (None, None) => self.tumbling(keys, &select.group_by)?,
        };
        let having = select.having.as_ref().map(|expr| self.scalar(expr, &scope)).transpose()?;
        if having.is_some()
            && !matches!(window, Window::Tumbling { .. } | Window::Stagger { .. } | Window::Event { .. })
        {
            let span = select.having.as_ref().map_or(Span::empty(), |expr| expr.span());
            return Err(self.error(span, "HAVING needs a GROUP BY window"));
        }
        let mut projection = Vec::new();
        for (place, item) in select.projection.iter().enumerate() {
            self.projected(item, place, &scope, &mut projection)?;
        }
        let query = Query { source, filter, window, having, projection };
        self.check_grouping(&query, select, &scope)?;
        Ok(query)
    }

    fn source(&self, from: &ast::TableWithJoins) -> Result<(Source, Scope<'a>), SqlError> {
        if let ast::TableFactor::TableFunction { expr, alias } = &from.relation {
            if !from.joins.is_empty() {
                return Err(self.error(from.span(), "a table function's output cannot be joined"));
            }
            if let ast::Expr::Function(function) = expr {
                let name = function.name.to_string().to_uppercase();
                if matches!(name.as_str(), "TUMBLE" | "HOP" | "SESSION") {
                    if alias.as_ref().is_some_and(|alias| !alias.columns.is_empty()) {
                        return Err(
                            self.error(from.span(), "an alias renames the window's rows, not its columns")
                        );
                    }
                    return self.windowed(
                        &name,
                        function,
                        alias.as_ref().map(|alias| ident_name(&alias.name)),
                    );
                }
            }
            let source = self.table_function(expr)?;
            let columns: Vec<&'a Name> = match source {
                Source::TopK { .. } => TOP_K_COLUMNS.iter().collect(),
                _ => DISTINCT_COLUMNS.iter().collect(),
            };
            let alias = alias.as_ref().map(|alias| ident_name(&alias.name));
            let relation = Relation { stream: alias.clone().unwrap_or_else(|| Name::new("T")), alias };
            return Ok((source, Scope { relations: vec![(relation, columns)], window_name: None }));
        }
        let (stream, columns) = self.relation(&from.relation)?;
        let mut scope = Scope { relations: vec![(stream.clone(), columns)], window_name: None };
        match from.joins.as_slice() {
            [] => Ok((Source::Stream(stream), scope)),
            [join] => {
                let (left, constraint) = match &join.join_operator {
                    ast::JoinOperator::Join(constraint) | ast::JoinOperator::Inner(constraint) => {
                        (false, constraint)
                    }
                    ast::JoinOperator::Left(constraint) | ast::JoinOperator::LeftOuter(constraint) => {
                        (true, constraint)
                    }
                    _ => {
                        return Err(
                            self.error(join.span(), "a reference table joins with JOIN or LEFT JOIN … ON")
                        )
                    }
                };
                let (reference, columns) = self.relation(&join.relation)?;
                if reference.qualifier() == stream.qualifier() {
                    return Err(self
                        .error(join.span(), format!("{} names both sides of the join", stream.qualifier())));
                }
                scope.relations.push((reference.clone(), columns));
                let ast::JoinConstraint::On(on) = constraint else {
                    return Err(self.error(join.span(), "a join with reference data needs ON …"));
                };
                let on = self.scalar(on, &scope)?;
                if on.has_aggregate() {
                    return Err(self.error(join.span(), "a join's ON has no aggregate"));
                }
                if let Some((interval, at)) = self.join_range {
                    if left {
                        return Err(SqlError::at(*at, "a stream-to-stream join is an inner JOIN"));
                    }
                    let range_ms = self.interval_ms(interval)?;
                    if range_ms < 0 {
                        return Err(SqlError::at(*at, "a stream join's range is not negative"));
                    }
                    let source =
                        Source::StreamJoin { left: stream, right: reference, on, range_ms: range_ms as u64 };
                    return Ok((source, scope));
                }
                Ok((Source::Join { stream, reference, left, on }, scope))
            }
            [_, extra, ..] => Err(self.error(extra.span(), "a query joins at most one reference table")),
        }
    }

    fn relation(&self, factor: &ast::TableFactor) -> Result<(Relation, Vec<&'a Name>), SqlError> {
        let ast::TableFactor::Table { name, alias, args: None, .. } = factor else {
            return Err(self.error(factor.span(), "expected a stream's name"));
        };
        let stream_name = self.object_name(name)?;
        let Some(stream) = self.stream(&stream_name) else {
            return Err(SqlError::undefined(
                self.at(name.span()),
                format!("stream {stream_name} is not defined"),
            ));
        };
        let alias = match alias {
            Some(alias) if !alias.columns.is_empty() => {
                return Err(self.error(alias.name.span, "an alias renames the stream, not its columns"));
            }
            Some(alias) => Some(ident_name(&alias.name)),
            None => None,
        };
        let columns = stream.columns.iter().map(|column| &column.name).collect();
        Ok((Relation { stream: stream_name, alias }, columns))
    }

    /// `TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM s), 'column', k, seconds)` and
    /// `COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(…), 'column', seconds)`.
    fn table_function(&self, expr: &ast::Expr) -> Result<Source, SqlError> {
        let ast::Expr::Function(function) = expr else {
            return Err(self
                .error(expr.span(), "expected TOP_K_ITEMS_TUMBLING(…) or COUNT_DISTINCT_ITEMS_TUMBLING(…)"));
        };
        let name = function.name.to_string().to_uppercase();
        let args = self.plain_args(function)?;
        let arity = match name.as_str() {
            "TOP_K_ITEMS_TUMBLING" => 4,
            "COUNT_DISTINCT_ITEMS_TUMBLING" => 3,
            _ => return Err(self.error(function.span(), format!("unknown table function {name}"))),
        };
        if args.len() != arity {
            return Err(
                self.error(function.span(), format!("{name} takes {arity} arguments, not {}", args.len()))
            );
        }
        let stream = self.cursor(args[0])?;
        let column = match args[1] {
            ast::Expr::Value(ast::ValueWithSpan {
                value: ast::Value::SingleQuotedString(column), ..
            }) => Name::new(column.clone()),
            other => return Err(self.error(other.span(), "the column is named in single quotes")),
        };
        let Some(stream_def) = self.stream(&stream) else {
            return Err(SqlError::undefined(
                self.at(args[0].span()),
                format!("stream {stream} is not defined"),
            ));
        };
        if stream_def.column(&column).is_none() {
            return Err(self.error(args[1].span(), format!("stream {stream} has no column {column}")));
        }
        let window_s = self.whole(args[arity - 1], "the window size in seconds")?;
        if !(1..=TABLE_FUNCTION_WINDOW_S_MAX).contains(&window_s) {
            return Err(self.error(
                args[arity - 1].span(),
                format!("the window is 1 to {TABLE_FUNCTION_WINDOW_S_MAX} seconds, not {window_s}"),
            ));
        }
        if arity == 4 {
            let k = self.whole(args[2], "K")?;
            if !(1..=TOP_K_MAX).contains(&k) {
                return Err(self.error(args[2].span(), format!("K is 1 to {TOP_K_MAX}, not {k}")));
            }
            Ok(Source::TopK { stream, column, k, window_s })
        } else {
            Ok(Source::DistinctCount { stream, column, window_s })
        }
    }

    /// `TUMBLE(s, DESCRIPTOR(t), size)`, `HOP(s, DESCRIPTOR(t), slide, size)` and
    /// `SESSION(s [, PARTITION_KEYS(k…)], DESCRIPTOR(t), gap)` (after the pre-pass).
    fn windowed(
        &self,
        name: &str,
        function: &ast::Function,
        alias: Option<Name>,
    ) -> Result<(Source, Scope<'a>), SqlError> {
        let args = self.plain_args(function)?;
        let refuse = |what: &str| {
            let usage = match name {
                "TUMBLE" => "TUMBLE(TABLE stream, DESCRIPTOR(time), INTERVAL size)",
                "HOP" => "HOP(TABLE stream, DESCRIPTOR(time), INTERVAL slide, INTERVAL size)",
                _ => "SESSION(TABLE stream [PARTITION BY keys], DESCRIPTOR(time), INTERVAL gap)",
            };
            self.error(function.span(), format!("{what}: {usage}"))
        };
        let stream_name = match args.first() {
            Some(ast::Expr::Identifier(ident)) => ident_name(ident),
            _ => return Err(refuse("the first argument is TABLE and a stream's name")),
        };
        let Some(stream) = self.stream(&stream_name) else {
            return Err(SqlError::undefined(
                self.at(args[0].span()),
                format!("stream {stream_name} is not defined"),
            ));
        };
        let width = stream.columns.len();
        let mut columns: Vec<&'a Name> = stream.columns.iter().map(|column| &column.name).collect();
        columns.extend(WINDOW_NAMES.iter());
        let relation = Relation { stream: stream_name.clone(), alias };
        let scope = Scope { relations: vec![(relation.clone(), columns)], window_name: None };
        let mut rest = &args[1..];
        let mut partition = Vec::new();
        if let Some(ast::Expr::Function(keys)) = rest.first() {
            if keys.name.to_string().eq_ignore_ascii_case("PARTITION_KEYS") {
                if name != "SESSION" {
                    return Err(self.error(keys.span(), "PARTITION BY belongs to SESSION windows"));
                }
                partition = self
                    .plain_args(keys)?
                    .into_iter()
                    .map(|key| self.scalar(key, &scope))
                    .collect::<Result<_, _>>()?;
                rest = &rest[1..];
            }
        }
        let descriptor = match rest.first() {
            Some(ast::Expr::Function(descriptor))
                if descriptor.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") =>
            {
                descriptor
            }
            _ => return Err(refuse("the time column comes as DESCRIPTOR(column)")),
        };
        let time_name = match self.plain_args(descriptor)?.as_slice() {
            [ast::Expr::Identifier(ident)] => ident_name(ident),
            _ => return Err(self.error(descriptor.span(), "DESCRIPTOR names one column")),
        };
        let time = if time_name.as_str() == "ROWTIME" {
            TimeColumn::Rowtime
        } else {
            match stream.column(&time_name) {
                Some(index) if stream.columns[index].sql_type == SqlType::Timestamp => {
                    TimeColumn::Column(index)
                }
                Some(index) => {
                    return Err(self.error(
                        descriptor.span(),
                        format!(
                            "{time_name} is {}; a window's time is a TIMESTAMP column",
                            stream.columns[index].sql_type
                        ),
                    ))
                }
                None => {
                    return Err(self
                        .error(descriptor.span(), format!("stream {stream_name} has no column {time_name}")))
                }
            }
        };
        let intervals: Vec<u64> = rest[1..]
            .iter()
            .map(|interval| match self.interval_ms(interval)? {
                ms if ms > 0 => Ok(ms as u64),
                _ => Err(self.error(interval.span(), "a window's interval is at least 1 ms")),
            })
            .collect::<Result<_, _>>()?;
        let window = match (name, intervals.as_slice()) {
            ("TUMBLE", [size_ms]) => EventWindow::Tumble { size_ms: *size_ms },
            ("HOP", [slide_ms, size_ms]) => EventWindow::Hop { slide_ms: *slide_ms, size_ms: *size_ms },
            ("SESSION", [gap_ms]) => EventWindow::Session { gap_ms: *gap_ms },
            _ => return Err(refuse("wrong number of intervals")),
        };
        let delay_ms = match time {
            TimeColumn::Rowtime => 0,
            TimeColumn::Column(_) => self
                .watermarks
                .iter()
                .find(|watermark| watermark.stream == stream_name && watermark.column == time_name)
                .map_or(0, |watermark| watermark.delay_ms),
        };
        let source = Source::Windowed { stream: relation, width, time, window, partition, delay_ms };
        Ok((source, scope))
    }

    /// `CURSOR(SELECT STREAM * FROM s)`: the stream.
    fn cursor(&self, expr: &ast::Expr) -> Result<Name, SqlError> {
        let refuse = || self.error(expr.span(), "expected CURSOR(SELECT STREAM * FROM stream)");
        let ast::Expr::Function(function) = expr else { return Err(refuse()) };
        if !function.name.to_string().eq_ignore_ascii_case("CURSOR") {
            return Err(refuse());
        }
        let ast::FunctionArguments::Subquery(query) = &function.args else { return Err(refuse()) };
        let ast::SetExpr::Select(select) = query.body.as_ref() else { return Err(refuse()) };
        let all = matches!(select.projection.as_slice(), [ast::SelectItem::Wildcard(_)]);
        let plain = select.selection.is_none()
            && matches!(&select.group_by, ast::GroupByExpr::Expressions(keys, _) if keys.is_empty());
        match select.from.as_slice() {
            [ast::TableWithJoins { relation: ast::TableFactor::Table { name, .. }, joins }]
                if all && plain && joins.is_empty() =>
            {
                self.object_name(name)
            }
            _ => Err(refuse()),
        }
    }

    fn whole(&self, expr: &ast::Expr, what: &str) -> Result<u32, SqlError> {
        match expr {
            ast::Expr::Value(ast::ValueWithSpan { value: ast::Value::Number(text, _), .. }) => text
                .parse()
                .map_err(|_| self.error(expr.span(), format!("{what} is a whole number, not {text}"))),
            _ => Err(self.error(expr.span(), format!("{what} is a whole number"))),
        }
    }

    fn plain_args<'b>(&self, function: &'b ast::Function) -> Result<Vec<&'b ast::Expr>, SqlError> {
        match &function.args {
            ast::FunctionArguments::None => Ok(Vec::new()),
            ast::FunctionArguments::Subquery(_) => {
                Err(self
                    .error(function.span(), format!("{}: a query is not an argument here", function.name)))
            }
            ast::FunctionArguments::List(list) => {
                if !list.clauses.is_empty() {
                    return Err(self.error(
                        function.span(),
                        format!("{}: unsupported clause in the arguments", function.name),
                    ));
                }
                list.args
                    .iter()
                    .map(|arg| match arg {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(expr)) => Ok(expr),
                        _ => Err(self.error(
                            function.span(),
                            format!("{}: arguments are plain expressions", function.name),
                        )),
                    })
                    .collect()
            }
        }
    }

    fn sliding(&self, name: Name, spec: &ast::WindowSpec, scope: &Scope<'_>) -> Result<Window, SqlError> {
        let span = spec.partition_by.first().map_or(Span::empty(), |expr| expr.span());
        if spec.window_name.is_some() || !spec.order_by.is_empty() {
            return Err(self.error(
                span,
                format!(
                    "window {name}: PARTITION BY and RANGE/ROWS … PRECEDING only (rows are in ROWTIME order)"
                ),
            ));
        }
        let partition =
            spec.partition_by.iter().map(|expr| self.scalar(expr, scope)).collect::<Result<_, _>>()?;
        let Some(frame) = &spec.window_frame else {
            return Err(self
                .error(span, format!("window {name} needs RANGE INTERVAL … PRECEDING or ROWS n PRECEDING")));
        };
        if !matches!(frame.end_bound, None | Some(ast::WindowFrameBound::CurrentRow)) {
            return Err(self.error(span, format!("window {name} ends at the current row")));
        }
        let ast::WindowFrameBound::Preceding(Some(bound)) = &frame.start_bound else {
            return Err(
                self.error(span, format!("window {name} reaches a bounded distance back: … PRECEDING"))
            );
        };
        let frame = match frame.units {
            ast::WindowFrameUnits::Range => {
                let ms = self.interval_ms(bound)?;
                if ms <= 0 {
                    return Err(self.error(bound.span(), "a sliding window's range is at least 1 ms"));
                }
                Frame::RangeMs(ms as u64)
            }
            ast::WindowFrameUnits::Rows => Frame::Rows(u64::from(self.whole(bound, "the rows back")?)),
            ast::WindowFrameUnits::Groups => {
                return Err(self.error(bound.span(), "GROUPS windows are not part of KDA SQL"));
            }
        };
        Ok(Window::Sliding { name, partition, frame })
    }

    fn tumbling(&self, keys: Vec<Expr>, group_by: &ast::GroupByExpr) -> Result<Window, SqlError> {
        let span = match group_by {
            ast::GroupByExpr::Expressions(keys, _) => keys.first().map_or(Span::empty(), |key| key.span()),
            ast::GroupByExpr::All(_) => Span::empty(),
        };
        let mut found = None;
        for (place, key) in keys.iter().enumerate() {
            let size_ms = match key {
                Expr::Call { function: Function::Step, args } => match args.as_slice() {
                    [Expr::Rowtime, Expr::Interval { ms }] => Some(*ms),
                    _ => None,
                },
                Expr::FloorTime { expr, unit, ceil: false } if **expr == Expr::Rowtime => {
                    match unit.fixed_ms() {
                        Some(ms) => Some(ms as i64),
                        None => {
                            return Err(self.error(
                                span,
                                format!(
                                "FLOOR(ROWTIME TO {unit}) has no fixed length; use STEP or a day-time unit"
                            ),
                            ))
                        }
                    }
                }
                _ => None,
            };
            if let Some(size_ms) = size_ms {
                if size_ms <= 0 {
                    return Err(self.error(span, "a tumbling window is at least 1 ms"));
                }
                if found.is_some() {
                    return Err(self.error(span, "GROUP BY has one window on ROWTIME"));
                }
                found = Some((place, size_ms as u64));
            }
        }
        let Some((time_key, size_ms)) = found else {
            return Err(self.error(
                span,
                "a streaming GROUP BY needs a window on ROWTIME: STEP(ROWTIME BY INTERVAL …) or FLOOR(ROWTIME TO …)",
            ));
        };
        Ok(Window::Tumbling { keys, time_key, size_ms })
    }

    fn projected(
        &self,
        item: &ast::SelectItem,
        place: usize,
        scope: &Scope<'_>,
        out: &mut Vec<Projected>,
    ) -> Result<(), SqlError> {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(expr) => (expr, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(ident_name(alias))),
            ast::SelectItem::Wildcard(_) => {
                for (relation, (_, columns)) in scope.relations.iter().enumerate() {
                    for (index, name) in columns.iter().enumerate() {
                        out.push(Projected { name: (*name).clone(), expr: Expr::Column { relation, index } });
                    }
                }
                return Ok(());
            }
            other => return Err(self.error(other.span(), "expected an expression, or *")),
        };
        let lowered = self.scalar(expr, scope)?;
        let name = alias.unwrap_or_else(|| match &lowered {
            Expr::Column { relation, index } => scope.relations[*relation].1[*index].clone(),
            Expr::Rowtime => Name::new("ROWTIME"),
            _ => Name::new(format!("EXPR${place}")),
        });
        out.push(Projected { name, expr: lowered });
        Ok(())
    }

    /// In a GROUP BY window, what is projected is made of keys and aggregates.
    fn check_grouping(&self, query: &Query, select: &ast::Select, scope: &Scope<'_>) -> Result<(), SqlError> {
        let keys = match &query.window {
            Window::Tumbling { keys, .. } | Window::Stagger { keys, .. } | Window::Event { keys } => keys,
            Window::None | Window::Sliding { .. } => {
                for (projected, item) in query.projection.iter().zip(&select.projection) {
                    if matches!(query.window, Window::None) && projected.expr.has_aggregate() {
                        return Err(self.error(
                            item.span(),
                            "an aggregate needs a window: GROUP BY … STEP(ROWTIME BY …), OVER a sliding window, or WINDOWED BY STAGGER",
                        ));
                    }
                }
                return Ok(());
            }
        };
        for (projected, item) in query.projection.iter().zip(&select.projection) {
            if let Some((relation, index)) = ungrouped(&projected.expr, keys) {
                let (source, columns) = &scope.relations[relation];
                let column = columns[index];
                return Err(self.error(
                    item.span(),
                    format!("{}.{column} is neither grouped nor aggregated", source.qualifier()),
                ));
            }
        }
        Ok(())
    }

    fn interval_ms(&self, expr: &ast::Expr) -> Result<i64, SqlError> {
        let ast::Expr::Interval(interval) = expr else {
            return Err(self.error(expr.span(), "expected INTERVAL '…' unit"));
        };
        if interval.last_field.is_some() {
            return Err(self.error(expr.span(), "an interval here has one unit (INTERVAL '10' SECOND)"));
        }
        let unit = match &interval.leading_field {
            Some(field) => self.time_unit(field, expr.span())?,
            None => return Err(self.error(expr.span(), "an interval names its unit: INTERVAL '10' SECOND")),
        };
        let Some(unit_ms) = unit.fixed_ms() else {
            return Err(self.error(
                expr.span(),
                "year-month intervals are not supported (KDA has day-time intervals only)",
            ));
        };
        let text = match interval.value.as_ref() {
            ast::Expr::Value(ast::ValueWithSpan {
                value: ast::Value::SingleQuotedString(text) | ast::Value::Number(text, _),
                ..
            }) => text.trim().to_string(),
            other => {
                return Err(self.error(other.span(), "an interval's value is a literal: INTERVAL '10' SECOND"))
            }
        };
        let bad = || self.error(expr.span(), format!("'{text}' is not a number of {unit}S"));
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        // The fraction, to the millisecond (only seconds have one that fits in ms).
        let fraction_ms = if fraction.is_empty() {
            0
        } else {
            if unit != TimeUnit::Second || fraction.len() > 3 {
                return Err(self.error(expr.span(), "an interval's fraction is whole milliseconds of SECOND"));
            }
            format!("{fraction:0<3}").parse::<i64>().map_err(|_| bad())?
        };
        let ms =
            whole.checked_mul(unit_ms as i64).and_then(|ms| ms.checked_add(fraction_ms)).ok_or_else(bad)?;
        Ok(if negative { -ms } else { ms })
    }

    fn time_unit(&self, field: &ast::DateTimeField, span: Span) -> Result<TimeUnit, SqlError> {
        Ok(match field {
            ast::DateTimeField::Year | ast::DateTimeField::Years => TimeUnit::Year,
            ast::DateTimeField::Month | ast::DateTimeField::Months => TimeUnit::Month,
            ast::DateTimeField::Day | ast::DateTimeField::Days => TimeUnit::Day,
            ast::DateTimeField::Hour | ast::DateTimeField::Hours => TimeUnit::Hour,
            ast::DateTimeField::Minute | ast::DateTimeField::Minutes => TimeUnit::Minute,
            ast::DateTimeField::Second | ast::DateTimeField::Seconds => TimeUnit::Second,
            other => {
                return Err(self.error(
                    span,
                    format!("{other}: the units are YEAR, MONTH, DAY, HOUR, MINUTE and SECOND"),
                ))
            }
        })
    }

    fn column(
        &self,
        qualifier: Option<&ast::Ident>,
        column: &ast::Ident,
        scope: &Scope<'_>,
    ) -> Result<Expr, SqlError> {
        let name = ident_name(column);
        if let Some(qualifier) = qualifier {
            let qualifier_name = ident_name(qualifier);
            let Some(relation) =
                scope.relations.iter().position(|(relation, _)| relation.qualifier() == &qualifier_name)
            else {
                return Err(
                    self.error(qualifier.span, format!("{qualifier_name} is not a stream of this query"))
                );
            };
            if name.as_str() == "ROWTIME" && relation == 0 {
                return Ok(Expr::Rowtime);
            }
            return match scope.relations[relation].1.iter().position(|found| **found == name) {
                Some(index) => Ok(Expr::Column { relation, index }),
                None => Err(self.error(column.span, format!("{qualifier_name} has no column {name}"))),
            };
        }
        let mut found = None;
        for (relation, (_, columns)) in scope.relations.iter().enumerate() {
            if let Some(index) = columns.iter().position(|found| **found == name) {
                if found.is_some() {
                    return Err(self.error(column.span, format!("column {name} is ambiguous: qualify it")));
                }
                found = Some(Expr::Column { relation, index });
            }
        }
        match (found, name.as_str()) {
            (Some(expr), _) => Ok(expr),
            (None, "ROWTIME") => Ok(Expr::Rowtime),
            (None, "CURRENT_ROW_TIMESTAMP") => Ok(Expr::CurrentRowTimestamp),
            (None, _) => Err(self.error(column.span, format!("no stream of this query has a column {name}"))),
        }
    }

    fn scalar(&self, expr: &ast::Expr, scope: &Scope<'_>) -> Result<Expr, SqlError> {
        let boxed = |expr: &ast::Expr| self.scalar(expr, scope).map(Box::new);
        Ok(match expr {
            ast::Expr::Identifier(ident) => self.column(None, ident, scope)?,
            ast::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [qualifier, column] => self.column(Some(qualifier), column, scope)?,
                _ => return Err(self.error(expr.span(), "a column is `column` or `stream.column`")),
            },
            ast::Expr::Value(value) => Expr::Literal(match &value.value {
                ast::Value::Number(text, _) => Literal::Number(text.clone()),
                ast::Value::SingleQuotedString(text) => Literal::String(text.clone()),
                ast::Value::Boolean(value) => Literal::Boolean(*value),
                ast::Value::Null => Literal::Null,
                other => return Err(self.error(value.span, format!("{other}: unsupported literal"))),
            }),
            ast::Expr::Nested(inner) => self.scalar(inner, scope)?,
            ast::Expr::UnaryOp { op, expr: inner } => match op {
                ast::UnaryOperator::Minus => Expr::Negate(boxed(inner)?),
                ast::UnaryOperator::Plus => self.scalar(inner, scope)?,
                ast::UnaryOperator::Not => Expr::Not(boxed(inner)?),
                other => return Err(self.error(expr.span(), format!("unsupported operator {other}"))),
            },
            ast::Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    ast::BinaryOperator::Plus => BinaryOp::Add,
                    ast::BinaryOperator::Minus => BinaryOp::Subtract,
                    ast::BinaryOperator::Multiply => BinaryOp::Multiply,
                    ast::BinaryOperator::Divide => BinaryOp::Divide,
                    ast::BinaryOperator::Modulo => BinaryOp::Modulo,
                    ast::BinaryOperator::StringConcat => BinaryOp::Concat,
                    ast::BinaryOperator::Eq => BinaryOp::Eq,
                    ast::BinaryOperator::NotEq => BinaryOp::NotEq,
                    ast::BinaryOperator::Lt => BinaryOp::Lt,
                    ast::BinaryOperator::LtEq => BinaryOp::LtEq,
                    ast::BinaryOperator::Gt => BinaryOp::Gt,
                    ast::BinaryOperator::GtEq => BinaryOp::GtEq,
                    ast::BinaryOperator::And => BinaryOp::And,
                    ast::BinaryOperator::Or => BinaryOp::Or,
                    other => return Err(self.error(expr.span(), format!("unsupported operator {other}"))),
                };
                Expr::Binary { op, left: boxed(left)?, right: boxed(right)? }
            }
            ast::Expr::IsNull(inner) => Expr::IsNull { expr: boxed(inner)?, negated: false },
            ast::Expr::IsNotNull(inner) => Expr::IsNull { expr: boxed(inner)?, negated: true },
            ast::Expr::Like { negated, any: false, expr: inner, pattern, escape_char: None } => Expr::Like {
                expr: boxed(inner)?,
                pattern: boxed(pattern)?,
                negated: *negated,
                similar: false,
            },
            ast::Expr::SimilarTo { negated, expr: inner, pattern, escape_char: None } => {
                Expr::Like { expr: boxed(inner)?, pattern: boxed(pattern)?, negated: *negated, similar: true }
            }
            ast::Expr::Between { expr: inner, negated, low, high } => {
                Expr::Between { expr: boxed(inner)?, low: boxed(low)?, high: boxed(high)?, negated: *negated }
            }
            ast::Expr::Case { operand, conditions, else_result, .. } => Expr::Case {
                operand: operand.as_deref().map(boxed).transpose()?,
                branches: conditions
                    .iter()
                    .map(|when| Ok((self.scalar(&when.condition, scope)?, self.scalar(&when.result, scope)?)))
                    .collect::<Result<_, SqlError>>()?,
                otherwise: else_result.as_deref().map(boxed).transpose()?,
            },
            ast::Expr::Cast { kind: ast::CastKind::Cast, expr: inner, data_type, format: None } => {
                Expr::Cast { expr: boxed(inner)?, sql_type: self.sql_type(data_type, expr.span())? }
            }
            ast::Expr::Floor { expr: inner, field } | ast::Expr::Ceil { expr: inner, field } => {
                let ceil = matches!(expr, ast::Expr::Ceil { .. });
                match field {
                    ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) => Expr::Call {
                        function: if ceil { Function::Ceil } else { Function::Floor },
                        args: vec![self.scalar(inner, scope)?],
                    },
                    ast::CeilFloorKind::DateTimeField(field) => Expr::FloorTime {
                        expr: boxed(inner)?,
                        unit: self.time_unit(field, expr.span())?,
                        ceil,
                    },
                    ast::CeilFloorKind::Scale(_) => {
                        return Err(self.error(expr.span(), "FLOOR/CEIL take a number, or a time TO a unit"));
                    }
                }
            }
            ast::Expr::Position { expr: needle, r#in } => Expr::Call {
                function: Function::Position,
                args: vec![self.scalar(needle, scope)?, self.scalar(r#in, scope)?],
            },
            ast::Expr::Substring { expr: inner, substring_from, substring_for, .. } => {
                let mut args = vec![self.scalar(inner, scope)?];
                match substring_from {
                    Some(from) => args.push(self.scalar(from, scope)?),
                    None => {
                        return Err(self.error(
                            expr.span(),
                            "SUBSTRING needs a start: SUBSTRING(s FROM start [FOR length])",
                        ))
                    }
                }
                if let Some(length) = substring_for {
                    args.push(self.scalar(length, scope)?);
                }
                Expr::Call { function: Function::Substring, args }
            }
            ast::Expr::Trim { trim_where, trim_what, expr: inner, trim_characters: None } => {
                let function = match trim_where {
                    None | Some(ast::TrimWhereField::Both) => Function::TrimBoth,
                    Some(ast::TrimWhereField::Leading) => Function::TrimLeading,
                    Some(ast::TrimWhereField::Trailing) => Function::TrimTrailing,
                };
                let what = match trim_what {
                    Some(what) => self.scalar(what, scope)?,
                    None => Expr::Literal(Literal::String(" ".into())),
                };
                Expr::Call { function, args: vec![self.scalar(inner, scope)?, what] }
            }
            ast::Expr::Interval(_) => Expr::Interval { ms: self.interval_ms(expr)? },
            // `TIMESTAMP '2004-09-30 13:48:23'`: the string cast to the type.
            ast::Expr::TypedString(typed) => match &typed.value.value {
                ast::Value::SingleQuotedString(text) => Expr::Cast {
                    expr: Box::new(Expr::Literal(Literal::String(text.clone()))),
                    sql_type: self.sql_type(&typed.data_type, expr.span())?,
                },
                _ => return Err(self.error(expr.span(), format!("unsupported literal: {expr}"))),
            },
            ast::Expr::Function(function) => self.function(function, scope)?,
            other => return Err(self.error(other.span(), format!("unsupported expression: {other}"))),
        })
    }

    fn sql_type(&self, data_type: &ast::DataType, span: Span) -> Result<SqlType, SqlError> {
        // The type as sqlparser writes it, read by the same rules as a column's type.
        let text = format!("CREATE STREAM S (C {data_type})");
        match lex::statements(&text) {
            Ok(mut statements) => match statements.pop() {
                Some(Statement::CreateStream { mut columns, .. }) if columns.len() == 1 => Ok(columns
                    .pop()
                    .map(|(column, _): (Column, Position)| column.sql_type)
                    .expect("one column")),
                _ => Err(self.error(span, format!("CAST to {data_type}: not a KDA type"))),
            },
            Err(error) => Err(self.error(span, format!("CAST to {data_type}: {}", error.message))),
        }
    }

    fn function(&self, function: &ast::Function, scope: &Scope<'_>) -> Result<Expr, SqlError> {
        let span = function.span();
        let name = match function.name.0.as_slice() {
            [ast::ObjectNamePart::Identifier(ident)] => ident.value.to_uppercase(),
            _ => return Err(self.error(span, format!("unknown function {}", function.name))),
        };
        if function.filter.is_some() || function.null_treatment.is_some() || !function.within_group.is_empty()
        {
            return Err(
                self.error(span, format!("{name}: FILTER, WITHIN GROUP and NULLS options are not supported"))
            );
        }
        let aggregate = match name.as_str() {
            "COUNT" => Some(AggregateFunction::Count),
            "SUM" => Some(AggregateFunction::Sum),
            "MIN" => Some(AggregateFunction::Min),
            "MAX" => Some(AggregateFunction::Max),
            "AVG" => Some(AggregateFunction::Avg),
            "APPROX_PERCENTILE" => Some(AggregateFunction::Percentile { ppm: 0 }),
            _ => None,
        };
        if let Some(aggregate) = aggregate {
            return self.aggregate(function, aggregate, &name, scope);
        }
        if function.over.is_some() {
            return Err(self.error(span, format!("{name} is not an aggregate: it has no OVER")));
        }
        let Some(scalar) = Function::by_name(&name) else {
            return Err(self.error(span, format!("unknown function {name}")));
        };
        let args: Vec<Expr> = self
            .plain_args(function)?
            .into_iter()
            .map(|arg| self.scalar(arg, scope))
            .collect::<Result<_, _>>()?;
        let arity_ok = match scalar {
            Function::Substring => (2..=3).contains(&args.len()),
            Function::Step | Function::TsDiff => args.len() == 2,
            _ => args.len() == 1,
        };
        if !arity_ok {
            return Err(self.error(span, format!("{name} does not take {} arguments", args.len())));
        }
        Ok(Expr::Call { function: scalar, args })
    }

    fn aggregate(
        &self,
        function: &ast::Function,
        aggregate: AggregateFunction,
        name: &str,
        scope: &Scope<'_>,
    ) -> Result<Expr, SqlError> {
        let span = function.span();
        match &function.over {
            None => {}
            Some(ast::WindowType::NamedWindow(window)) => {
                let window = ident_name(window);
                if scope.window_name.as_ref() != Some(&window) {
                    return Err(self.error(
                        span,
                        format!("{name} OVER {window}: no WINDOW {window} AS (…) in this query"),
                    ));
                }
            }
            Some(ast::WindowType::WindowSpec(_)) => {
                return Err(self.error(span, format!("{name} OVER (…): name the window in a WINDOW clause")));
            }
        }
        if function.over.is_none() && scope.window_name.is_some() {
            return Err(self.error(span, format!("{name} in a sliding window's query needs OVER the window")));
        }
        let ast::FunctionArguments::List(list) = &function.args else {
            return Err(self.error(span, format!("{name} takes one argument")));
        };
        let distinct = match list.duplicate_treatment {
            Some(ast::DuplicateTreatment::Distinct) => true,
            Some(ast::DuplicateTreatment::All) | None => false,
        };
        if distinct && aggregate != AggregateFunction::Count {
            return Err(
                self.error(span, format!("{name}(DISTINCT …) is not supported; COUNT(DISTINCT …) is"))
            );
        }
        if let AggregateFunction::Percentile { .. } = aggregate {
            let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg)), ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(fraction))] =
                list.args.as_slice()
            else {
                return Err(self.error(
                    span,
                    "APPROX_PERCENTILE takes a value and a fraction: APPROX_PERCENTILE(x, 0.95)",
                ));
            };
            let ppm = match fraction {
                ast::Expr::Value(ast::ValueWithSpan { value: ast::Value::Number(text, _), .. }) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .map(|q| (q * 1e6).round() as u32),
                _ => None,
            };
            let Some(ppm) = ppm else {
                return Err(self.error(fraction.span(), "the percentile is a number from 0 to 1"));
            };
            let arg = self.scalar(arg, scope)?;
            if arg.has_aggregate() {
                return Err(self.error(span, format!("{name}: aggregates do not nest")));
            }
            return Ok(Expr::Aggregate {
                function: AggregateFunction::Percentile { ppm },
                arg: Some(Box::new(arg)),
                distinct: false,
            });
        }
        match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
                if aggregate == AggregateFunction::Count && !distinct =>
            {
                Ok(Expr::Aggregate { function: AggregateFunction::CountRows, arg: None, distinct: false })
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] => {
                let arg = self.scalar(arg, scope)?;
                if arg.has_aggregate() {
                    return Err(self.error(span, format!("{name}: aggregates do not nest")));
                }
                Ok(Expr::Aggregate { function: aggregate, arg: Some(Box::new(arg)), distinct })
            }
            _ => Err(self.error(span, format!("{name} takes one argument"))),
        }
    }
}

/// The first column reference in `expr` (relation, index) that is outside every aggregate and
/// not a group key.
fn ungrouped(expr: &Expr, keys: &[Expr]) -> Option<(usize, usize)> {
    if keys.contains(expr) {
        return None;
    }
    match expr {
        Expr::Aggregate { .. } => None,
        // ROWTIME of a window's row is the window's end.
        Expr::Rowtime | Expr::CurrentRowTimestamp | Expr::Literal(_) | Expr::Interval { .. } => None,
        Expr::Column { relation, index } => Some((*relation, *index)),
        _ => {
            let mut found = None;
            let mut children = Vec::new();
            collect_children(expr, &mut children);
            for child in children {
                if found.is_none() {
                    found = ungrouped(child, keys);
                }
            }
            found
        }
    }
}

fn collect_children<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::Column { .. }
        | Expr::Rowtime
        | Expr::CurrentRowTimestamp
        | Expr::Literal(_)
        | Expr::Interval { .. } => {}
        Expr::Negate(inner) | Expr::Not(inner) => out.push(inner),
        Expr::Binary { left, right, .. } => out.extend([&**left, &**right]),
        Expr::IsNull { expr, .. } | Expr::Cast { expr, .. } | Expr::FloorTime { expr, .. } => out.push(expr),
        Expr::Like { expr, pattern, .. } => out.extend([&**expr, &**pattern]),
        Expr::Between { expr, low, high, .. } => out.extend([&**expr, &**low, &**high]),
        Expr::Case { operand, branches, otherwise } => {
            out.extend(operand.as_deref());
            for (when, then) in branches {
                out.extend([when, then]);
            }
            out.extend(otherwise.as_deref());
        }
        Expr::Call { args, .. } => out.extend(args.iter()),
        Expr::Aggregate { arg, .. } => out.extend(arg.as_deref()),
    }
}
