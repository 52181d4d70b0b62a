//! Tokens with locations, the KDA dialect, and the statements of application code: `CREATE
//! STREAM` and the pump's header parsed here, the pump's `SELECT` by sqlparser after a pre-pass
//! that rewrites KDA's own forms (see the module above).

use sqlparser::ast;
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::plan::{Column, Name, SqlType};
use super::{Position, SqlError};

/// Statements nested deeper than this are refused (sqlparser's own guard, stated here).
const RECURSION_LIMIT: usize = 64;

/// KDA's SQL: identifiers quoted with `"` only; `CURSOR(SELECT …)` as a function argument.
#[derive(Debug)]
pub(crate) struct KdaDialect;

impl Dialect for KdaDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '"'
    }

    fn supports_subquery_as_function_arg(&self) -> bool {
        true
    }
}

pub(crate) fn position(location: Location) -> Position {
    Position { line: location.line, column: location.column }
}

/// One statement of the code.
pub(crate) enum Statement {
    CreateStream {
        at: Position,
        name: Name,
        columns: Vec<(Column, Position)>,
        /// `WATERMARK FOR column AS column [- INTERVAL …]`: the column, the delay, where.
        watermark: Option<(Name, u64, Position)>,
    },
    CreatePump(Box<PumpStatement>),
}

pub(crate) struct PumpStatement {
    pub at: Position,
    pub name: Name,
    pub target: (Name, Position),
    /// The target's columns named by the INSERT, if any.
    pub columns: Vec<(Name, Position)>,
    pub query: ast::Query,
    /// Where the query starts (its SELECT).
    pub query_at: Position,
    /// `WINDOWED BY STAGGER (… RANGE interval)`: the interval, and where the clause starts.
    pub stagger: Option<(ast::Expr, Position)>,
    /// `JOIN stream OVER (RANGE interval PRECEDING)`: a stream-to-stream join's range.
    pub join_range: Option<(ast::Expr, Position)>,
}

/// The statements of `code`, in order.
pub(crate) fn statements(code: &str) -> Result<Vec<Statement>, SqlError> {
    let tokens = Tokenizer::new(&KdaDialect, code).tokenize_with_location().map_err(|error| SqlError {
        undefined_stream: false,
        position: (error.location.line > 0).then_some(position(error.location)),
        message: error.message,
    })?;
    let tokens: Vec<TokenWithSpan> =
        tokens.into_iter().filter(|token| !matches!(token.token, Token::Whitespace(_))).collect();
    let mut statements = Vec::new();
    let mut inserts = 0;
    for part in tokens.split(|token| token.token == Token::SemiColon) {
        if !part.is_empty() {
            statements.push(statement(part, &mut inserts)?);
        }
    }
    if statements.is_empty() {
        return Err(SqlError {
            undefined_stream: false,
            position: None,
            message: "the application code has no statement".into(),
        });
    }
    Ok(statements)
}

/// A cursor over one statement's tokens (no whitespace).
struct Cursor<'a> {
    tokens: &'a [TokenWithSpan],
    next: usize,
    /// Where the statement ends, for errors at its end.
    end: Position,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a TokenWithSpan> {
        self.tokens.get(self.next)
    }

    fn here(&self) -> Position {
        self.peek().map_or(self.end, |token| position(token.span.start))
    }

    fn error(&self, expected: &str) -> SqlError {
        match self.peek() {
            Some(token) => SqlError::at(self.here(), format!("expected {expected}, found {}", token.token)),
            None => SqlError::at(self.end, format!("expected {expected}, found the end of the statement")),
        }
    }

    /// Consumes an unquoted word, case-insensitively.
    fn eat_word(&mut self, word: &str) -> bool {
        match self.peek() {
            Some(TokenWithSpan { token: Token::Word(found), .. })
                if found.quote_style.is_none() && found.value.eq_ignore_ascii_case(word) =>
            {
                self.next += 1;
                true
            }
            _ => false,
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<(), SqlError> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.error(word))
        }
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek().is_some_and(|found| &found.token == token) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token) -> Result<(), SqlError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("{token}")))
        }
    }

    /// An identifier, normalized as KDA compares it (unquoted: upper case).
    fn name(&mut self, what: &str) -> Result<(Name, Position), SqlError> {
        let at = self.here();
        match self.peek() {
            Some(TokenWithSpan { token: Token::Word(word), .. }) => {
                self.next += 1;
                Ok((normalized(&word.value, word.quote_style), at))
            }
            _ => Err(self.error(what)),
        }
    }

    fn number(&mut self, what: &str) -> Result<u32, SqlError> {
        let at = self.here();
        match self.peek() {
            Some(TokenWithSpan { token: Token::Number(text, _), .. }) => {
                self.next += 1;
                text.parse()
                    .map_err(|_| SqlError::at(at, format!("{what} must be a whole number, not {text}")))
            }
            _ => Err(self.error(what)),
        }
    }
}

pub(crate) fn normalized(value: &str, quote_style: Option<char>) -> Name {
    match quote_style {
        Some(_) => Name::new(value),
        None => Name::new(value.to_uppercase()),
    }
}

/// `inserts`: the bare `INSERT INTO … SELECT …` statements so far (the Flink-style dialect's
/// form of a pump), which are named `INSERT_1`, `INSERT_2`, ….
fn statement(tokens: &[TokenWithSpan], inserts: &mut usize) -> Result<Statement, SqlError> {
    let end = tokens.last().map_or(Position::default(), |token| position(token.span.end));
    let mut cursor = Cursor { tokens, next: 0, end };
    let at = cursor.here();
    if cursor.peek().is_some_and(|token| is_word(token, "INSERT")) {
        *inserts += 1;
        return pump_body(cursor, tokens, at, Name::new(format!("INSERT_{inserts}")));
    }
    if !cursor.eat_word("CREATE") {
        return Err(cursor.error("CREATE (application code is CREATE STREAM and CREATE PUMP statements)"));
    }
    if cursor.eat_word("OR") {
        cursor.expect_word("REPLACE")?;
    }
    if cursor.eat_word("STREAM") {
        let (name, _) = cursor.name("the stream's name")?;
        cursor.expect(&Token::LParen)?;
        let mut columns = Vec::new();
        let mut watermark = None;
        loop {
            if cursor.peek().is_some_and(|token| is_word(token, "WATERMARK")) {
                let clause_at = cursor.here();
                cursor.next += 1;
                if watermark.is_some() {
                    return Err(SqlError::at(clause_at, "a stream declares one WATERMARK"));
                }
                watermark = Some(watermark_clause(&mut cursor, clause_at)?);
                if !cursor.eat(&Token::Comma) {
                    break;
                }
                continue;
            }
            let (column_name, column_at) = cursor.name("a column name")?;
            let sql_type = sql_type(&mut cursor)?;
            let not_null = if cursor.eat_word("NOT") {
                cursor.expect_word("NULL")?;
                true
            } else {
                false
            };
            if columns.iter().any(|(column, _): &(Column, Position)| column.name == column_name) {
                return Err(SqlError::at(column_at, format!("column {column_name} is declared twice")));
            }
            columns.push((Column { name: column_name, sql_type, not_null }, column_at));
            if !cursor.eat(&Token::Comma) {
                break;
            }
        }
        cursor.expect(&Token::RParen)?;
        if cursor.peek().is_some() {
            return Err(cursor.error("; after the stream's columns"));
        }
        return Ok(Statement::CreateStream { at, name, columns, watermark });
    }
    if cursor.eat_word("PUMP") {
        let (name, _) = cursor.name("the pump's name")?;
        cursor.expect_word("AS")?;
        return pump_body(cursor, tokens, at, name);
    }
    Err(cursor.error("STREAM or PUMP after CREATE"))
}

/// `FOR column AS column [- INTERVAL 'n' unit]` (after WATERMARK).
fn watermark_clause(cursor: &mut Cursor<'_>, clause_at: Position) -> Result<(Name, u64, Position), SqlError> {
    cursor.expect_word("FOR")?;
    let (column, _) = cursor.name("the event-time column")?;
    cursor.expect_word("AS")?;
    let (again, again_at) = cursor.name("the event-time column")?;
    if again != column {
        return Err(SqlError::at(
            again_at,
            format!("the watermark is {column} minus an interval, not {again}"),
        ));
    }
    if !cursor.eat(&Token::Minus) {
        return Ok((column, 0, clause_at));
    }
    cursor.expect_word("INTERVAL")?;
    let value_at = cursor.here();
    let text = match cursor.peek() {
        Some(TokenWithSpan { token: Token::SingleQuotedString(text) | Token::Number(text, _), .. }) => {
            text.clone()
        }
        _ => return Err(cursor.error("the interval's value in quotes")),
    };
    cursor.next += 1;
    let unit_at = cursor.here();
    let Some(TokenWithSpan { token: Token::Word(unit), .. }) = cursor.peek() else {
        return Err(cursor.error("the interval's unit (SECOND, MINUTE, …)"));
    };
    let unit_ms: u64 = match unit.value.to_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        other => return Err(SqlError::at(unit_at, format!("{other} is not an interval unit here"))),
    };
    cursor.next += 1;
    let value: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|value: &f64| value.is_finite() && *value >= 0.0 && *value <= 1e9)
        .ok_or_else(|| SqlError::at(value_at, format!("'{text}' is not a delay")))?;
    Ok((column, (value * unit_ms as f64).round() as u64, clause_at))
}

/// `INSERT INTO t [(columns)] SELECT …`: a pump's body.
fn pump_body(
    mut cursor: Cursor<'_>,
    tokens: &[TokenWithSpan],
    at: Position,
    name: Name,
) -> Result<Statement, SqlError> {
    cursor.expect_word("INSERT")?;
    cursor.expect_word("INTO")?;
    let target = cursor.name("the stream the pump inserts into")?;
    let mut columns = Vec::new();
    if cursor.eat(&Token::LParen) {
        loop {
            columns.push(cursor.name("a column of the target stream")?);
            if !cursor.eat(&Token::Comma) {
                break;
            }
        }
        cursor.expect(&Token::RParen)?;
    }
    let query_at = cursor.here();
    if cursor.peek().is_none() {
        return Err(cursor.error("SELECT STREAM"));
    }
    let (query, stagger, join_range) = query(&tokens[cursor.next..])?;
    Ok(Statement::CreatePump(Box::new(PumpStatement {
        at,
        name,
        target,
        columns,
        query,
        query_at,
        stagger,
        join_range,
    })))
}

fn sql_type(cursor: &mut Cursor<'_>) -> Result<SqlType, SqlError> {
    let at = cursor.here();
    let Some(TokenWithSpan { token: Token::Word(word), .. }) = cursor.peek() else {
        return Err(cursor.error("a type"));
    };
    let word = word.value.to_uppercase();
    cursor.next += 1;
    let length = |cursor: &mut Cursor<'_>, what: &str| -> Result<u32, SqlError> {
        cursor.expect(&Token::LParen)?;
        let at = cursor.here();
        let length = cursor.number(what)?;
        cursor.expect(&Token::RParen)?;
        if length == 0 || length >= 65_535 {
            return Err(SqlError::at(at, format!("{what} must be between 1 and 65534, not {length}")));
        }
        Ok(length)
    };
    Ok(match word.as_str() {
        "BOOLEAN" => SqlType::Boolean,
        "TINYINT" => SqlType::TinyInt,
        "SMALLINT" => SqlType::SmallInt,
        "INTEGER" | "INT" => SqlType::Integer,
        "BIGINT" => SqlType::BigInt,
        "REAL" => SqlType::Real,
        "DOUBLE" => {
            cursor.eat_word("PRECISION");
            SqlType::Double
        }
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let (mut precision, mut scale) = (19, 0);
            if cursor.eat(&Token::LParen) {
                let precision_at = cursor.here();
                precision = cursor.number("the precision")?;
                if cursor.eat(&Token::Comma) {
                    scale = cursor.number("the scale")?;
                }
                cursor.expect(&Token::RParen)?;
                if !(1..=19).contains(&precision) || scale > precision {
                    return Err(SqlError::at(
                        precision_at,
                        format!("DECIMAL({precision}, {scale}): precision 1 to 19 and scale at most the precision"),
                    ));
                }
            }
            SqlType::Decimal { precision: precision as u8, scale: scale as u8 }
        }
        "CHAR" | "CHARACTER" => {
            if cursor.eat_word("VARYING") {
                SqlType::Varchar(length(cursor, "a VARCHAR's length")?)
            } else {
                SqlType::Char(length(cursor, "a CHAR's length")?)
            }
        }
        "VARCHAR" => SqlType::Varchar(length(cursor, "a VARCHAR's length")?),
        "BINARY" => {
            if cursor.eat_word("VARYING") {
                SqlType::Varbinary(length(cursor, "a VARBINARY's length")?)
            } else {
                SqlType::Binary(length(cursor, "a BINARY's length")?)
            }
        }
        "VARBINARY" => SqlType::Varbinary(length(cursor, "a VARBINARY's length")?),
        "DATE" => SqlType::Date,
        "TIME" => SqlType::Time,
        "TIMESTAMP" => SqlType::Timestamp,
        other => {
            return Err(SqlError::at(
                at,
                format!(
                "unknown type {other}: KDA's types are BOOLEAN, TINYINT, SMALLINT, INTEGER, BIGINT, REAL, \
                     DOUBLE, DECIMAL, CHAR, VARCHAR, BINARY, VARBINARY, DATE, TIME and TIMESTAMP"
            ),
            ))
        }
    })
}

fn is_word(token: &TokenWithSpan, word: &str) -> bool {
    matches!(&token.token, Token::Word(found) if found.quote_style.is_none() && found.value.eq_ignore_ascii_case(word))
}

/// An interval cut out of the query by the pre-pass, parsed, and where its clause starts.
type Cut = Option<(ast::Expr, Position)>;

/// The interval tokens of a clause the pre-pass cut out, parsed.
fn cut_interval(cut: Option<(Vec<TokenWithSpan>, Position)>, what: &str) -> Result<Cut, SqlError> {
    let Some((interval, clause_at)) = cut else { return Ok(None) };
    let mut parser =
        Parser::new(&KdaDialect).with_recursion_limit(RECURSION_LIMIT).with_tokens_with_locations(interval);
    let expr = parser.parse_expr().map_err(parser_error)?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return Err(SqlError::at(
            position(rest.span.start),
            format!("expected ) after {what}, found {}", rest.token),
        ));
    }
    Ok(Some((expr, clause_at)))
}

/// `JOIN stream OVER (RANGE interval PRECEDING)` → `JOIN stream`, and the interval's tokens
/// returned aside.
fn cut_join_range(tokens: &[TokenWithSpan]) -> Result<Rewritten, SqlError> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut range = None;
    let mut index = 0;
    while index < tokens.len() {
        let token = &tokens[index];
        out.push(token.clone());
        let joined = is_word(token, "JOIN")
            && tokens.get(index + 1).is_some_and(|name| matches!(name.token, Token::Word(_)))
            && tokens.get(index + 2).is_some_and(|over| is_word(over, "OVER"))
            && tokens.get(index + 3).is_some_and(|open| open.token == Token::LParen);
        if !joined {
            index += 1;
            continue;
        }
        out.push(tokens[index + 1].clone());
        let clause_at = position(tokens[index + 2].span.start);
        let open = index + 3;
        let close = matching(tokens, open)?;
        let inner = &tokens[open + 1..close];
        let shape = inner.first().is_some_and(|first| is_word(first, "RANGE"))
            && inner.last().is_some_and(|last| is_word(last, "PRECEDING"))
            && inner.len() > 2;
        if !shape {
            return Err(SqlError::at(
                clause_at,
                "a stream join's window is OVER (RANGE INTERVAL … PRECEDING)",
            ));
        }
        if range.is_some() {
            return Err(SqlError::at(clause_at, "a query joins one stream"));
        }
        range = Some((inner[1..inner.len() - 1].to_vec(), clause_at));
        index = close + 1;
    }
    Ok((out, range))
}

/// The pump's query: the pre-pass, then sqlparser.
fn query(tokens: &[TokenWithSpan]) -> Result<(ast::Query, Cut, Cut), SqlError> {
    let (tokens, join_range) = cut_join_range(tokens)?;
    let join_range = cut_interval(join_range, "the join's range")?;
    let (tokens, stagger) = rewrite(&tokens)?;
    let mut parser =
        Parser::new(&KdaDialect).with_recursion_limit(RECURSION_LIMIT).with_tokens_with_locations(tokens);
    let query = parser.parse_query().map_err(parser_error)?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return Err(SqlError::at(
            position(rest.span.start),
            format!("expected the end of the statement, found {}", rest.token),
        ));
    }
    let stagger = cut_interval(stagger, "the stagger window's range")?;
    Ok((*query, stagger, join_range))
}

/// Rewrites KDA's forms into ones sqlparser parses, keeping every token's location:
/// - `SELECT STREAM` → `SELECT` (a stream query is the only kind a pump runs).
/// - `STEP(x BY width)` → `STEP(x, width)`.
/// - `WINDOWED BY STAGGER (PARTITION BY keys RANGE interval)` → `GROUP BY keys`, and the
///   interval's tokens returned aside.
type Rewritten = (Vec<TokenWithSpan>, Option<(Vec<TokenWithSpan>, Position)>);

fn rewrite(tokens: &[TokenWithSpan]) -> Result<Rewritten, SqlError> {
    let (tokens, stagger) = cut_stagger(tokens)?;
    Ok((rewrite_stream_and_step(&tokens), stagger))
}

/// `SELECT STREAM` → `SELECT`, and `STEP(x BY width)` → `STEP(x, width)` at any nesting: a
/// stack holds the depth of each open STEP's parentheses, and a BY at the top one's depth is
/// its separator.
///
/// And the Flink-style window table functions' forms:
/// - `TUMBLE(TABLE s, …)` → `TUMBLE(s, …)` (`TABLE` before a name, first in parentheses);
/// - `SESSION(TABLE s PARTITION BY k, …)` or `PARTITION BY (k1, k2)` →
///   `SESSION(s, PARTITION_KEYS(k…), …)`.
fn rewrite_stream_and_step(tokens: &[TokenWithSpan]) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut depth = 0usize;
    let mut steps: Vec<usize> = Vec::new();
    let mut sessions: Vec<usize> = Vec::new();
    // A PARTITION BY without parentheses: its keys end at the next comma of the session.
    let mut open_keys = false;
    let mut skip = 0;
    for (index, token) in tokens.iter().enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let after_select = out.last().is_some_and(|last: &TokenWithSpan| {
            matches!(&last.token, Token::Word(word) if word.keyword == Keyword::SELECT && word.quote_style.is_none())
        });
        if after_select && is_word(token, "STREAM") {
            continue;
        }
        let after_paren = out.last().is_some_and(|last| last.token == Token::LParen);
        let next = tokens.get(index + 1);
        if after_paren
            && is_word(token, "TABLE")
            && next.is_some_and(|next| matches!(next.token, Token::Word(_)))
        {
            continue;
        }
        let in_session = sessions.last() == Some(&depth);
        if in_session && is_word(token, "PARTITION") && next.is_some_and(|next| is_word(next, "BY")) {
            skip = 1;
            out.push(TokenWithSpan { token: Token::Comma, span: token.span });
            out.push(TokenWithSpan { token: Token::make_word("PARTITION_KEYS", None), span: token.span });
            if tokens.get(index + 2).is_none_or(|after| after.token != Token::LParen) {
                out.push(TokenWithSpan { token: Token::LParen, span: token.span });
                open_keys = true;
            }
            continue;
        }
        if in_session && open_keys && token.token == Token::Comma {
            out.push(TokenWithSpan { token: Token::RParen, span: token.span });
            open_keys = false;
        }
        match token.token {
            Token::LParen => {
                depth += 1;
                let opens_step = index > 0 && is_word(&tokens[index - 1], "STEP");
                if opens_step {
                    steps.push(depth);
                }
                if index > 0 && is_word(&tokens[index - 1], "SESSION") {
                    sessions.push(depth);
                }
            }
            Token::RParen => {
                if steps.last() == Some(&depth) {
                    steps.pop();
                }
                if sessions.last() == Some(&depth) {
                    if open_keys {
                        out.push(TokenWithSpan { token: Token::RParen, span: token.span });
                        open_keys = false;
                    }
                    sessions.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        if steps.last() == Some(&depth) && is_word(token, "BY") {
            out.push(TokenWithSpan { token: Token::Comma, span: token.span });
        } else {
            out.push(token.clone());
        }
    }
    out
}

/// `WINDOWED BY STAGGER (PARTITION BY keys RANGE interval)` → `GROUP BY keys`, and the
/// interval's tokens returned aside.
fn cut_stagger(tokens: &[TokenWithSpan]) -> Result<Rewritten, SqlError> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut stagger = None;
    let mut index = 0;
    while index < tokens.len() {
        let token = &tokens[index];
        if is_word(token, "WINDOWED") {
            let clause_at = position(token.span.start);
            let word_at = |offset: usize, word: &str| {
                tokens.get(index + offset).is_some_and(|found| is_word(found, word))
            };
            if !(word_at(1, "BY") && word_at(2, "STAGGER")) {
                return Err(SqlError::at(
                    clause_at,
                    "expected WINDOWED BY STAGGER (PARTITION BY … RANGE INTERVAL …)",
                ));
            }
            if stagger.is_some() {
                return Err(SqlError::at(clause_at, "a query has one WINDOWED BY clause"));
            }
            let open = index + 3;
            if tokens.get(open).is_none_or(|found| found.token != Token::LParen) {
                return Err(SqlError::at(clause_at, "expected ( after WINDOWED BY STAGGER"));
            }
            let close = matching(tokens, open)?;
            let inner = &tokens[open + 1..close];
            if !(inner.len() >= 2 && is_word(&inner[0], "PARTITION") && is_word(&inner[1], "BY")) {
                let at = inner.first().map_or(clause_at, |found| position(found.span.start));
                return Err(SqlError::at(at, "expected PARTITION BY in WINDOWED BY STAGGER (…)"));
            }
            let mut depth = 0usize;
            let range = inner.iter().position(|found| {
                match found.token {
                    Token::LParen => depth += 1,
                    Token::RParen => depth = depth.saturating_sub(1),
                    _ => {}
                }
                depth == 0 && is_word(found, "RANGE")
            });
            let Some(range) = range else {
                return Err(SqlError::at(
                    position(tokens[close].span.start),
                    "expected RANGE INTERVAL … in WINDOWED BY STAGGER (…)",
                ));
            };
            out.push(TokenWithSpan { token: Token::make_keyword("GROUP"), span: token.span });
            out.push(TokenWithSpan { token: Token::make_keyword("BY"), span: tokens[index + 1].span });
            out.extend_from_slice(&inner[2..range]);
            stagger = Some((inner[range + 1..].to_vec(), clause_at));
            index = close + 1;
            continue;
        }
        out.push(token.clone());
        index += 1;
    }
    Ok((out, stagger))
}

/// The index of the `)` that closes the `(` at `open`.
fn matching(tokens: &[TokenWithSpan], open: usize) -> Result<usize, SqlError> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(open) {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(index);
                }
            }
            _ => {}
        }
    }
    Err(SqlError::at(position(tokens[open].span.start), "this ( is never closed"))
}

/// sqlparser's error, its " at Line: L, Column: C" turned into a position.
pub(crate) fn parser_error(error: ParserError) -> SqlError {
    let message = match error {
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => message,
        ParserError::RecursionLimitExceeded => {
            return SqlError {
                undefined_stream: false,
                position: None,
                message: "the statement nests too deeply".into(),
            }
        }
    };
    match message.rsplit_once(" at Line: ") {
        Some((text, place)) => {
            let mut parts = place.split(", Column: ");
            let line = parts.next().and_then(|line| line.trim().parse().ok());
            let column = parts.next().and_then(|column| column.trim().parse().ok());
            match (line, column) {
                (Some(line), Some(column)) => SqlError::at(Position { line, column }, text),
                _ => SqlError { undefined_stream: false, position: None, message },
            }
        }
        None => SqlError { undefined_stream: false, position: None, message },
    }
}

/// A column type as KDA's `RecordColumns` write it (`VARCHAR(4)`, `DECIMAL(10,2)`, `INTEGER`).
pub(crate) fn sql_type_of(text: &str) -> Result<SqlType, SqlError> {
    let tokens = Tokenizer::new(&KdaDialect, text).tokenize_with_location().map_err(|error| SqlError {
        undefined_stream: false,
        position: (error.location.line > 0).then_some(position(error.location)),
        message: error.message,
    })?;
    let tokens: Vec<TokenWithSpan> =
        tokens.into_iter().filter(|token| !matches!(token.token, Token::Whitespace(_))).collect();
    let end = tokens.last().map_or(Position { line: 1, column: 1 }, |token| position(token.span.end));
    let mut cursor = Cursor { tokens: &tokens, next: 0, end };
    let sql_type = sql_type(&mut cursor)?;
    if cursor.peek().is_some() {
        return Err(cursor.error("the end of the type"));
    }
    Ok(sql_type)
}
