//! The front end on AWS's own documentation examples (the application code of the KDA SQL
//! Developer Guide, verbatim), on code it must refuse (each refusal at its line and column),
//! and the round trip: a plan written back as SQL parses to the same plan.

use proptest::prelude::*;

use super::plan::*;
use super::{parse_application, Position, SqlError};

/// The demo stream of AWS's getting-started exercise, as the console maps it.
fn demo_input() -> Vec<StreamDef> {
    let column = |name: &str, sql_type| Column { name: Name::new(name), sql_type, not_null: false };
    vec![StreamDef {
        name: Name::new("SOURCE_SQL_STREAM_001"),
        columns: vec![
            column("TICKER_SYMBOL", SqlType::Varchar(4)),
            column("SECTOR", SqlType::Varchar(16)),
            column("CHANGE", SqlType::Real),
            column("PRICE", SqlType::Real),
        ],
    }]
}

fn parse(code: &str) -> Application {
    match parse_application(code, &demo_input()) {
        Ok(application) => application,
        Err(error) => panic!("{error}\n{code}"),
    }
}

fn refused(code: &str, inputs: &[StreamDef]) -> SqlError {
    match parse_application(code, inputs) {
        Ok(application) => panic!("accepted: {application:?}"),
        Err(error) => error,
    }
}

/// Parses, writes back, parses again: the same plan, and the same text the second time.
fn round_trip(application: &Application, inputs: &[StreamDef]) {
    let text = application.to_sql(inputs);
    let again = parse_application(&text, inputs).unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert_eq!(&again, application, "{text}");
    assert_eq!(again.to_sql(inputs), text);
}

const TICKER: Expr = Expr::Column { relation: 0, index: 0 };
const PRICE: Expr = Expr::Column { relation: 0, index: 3 };

#[test]
fn how_it_works_pump_copies_columns() {
    // dev/how-it-works-app-code.html
    let application = parse(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4),
                                                   change DOUBLE,
                                                   price DOUBLE);
-- Create a pump and insert into output stream.
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
  INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM ticker_symbol, change,price
    FROM   "SOURCE_SQL_STREAM_001";"#,
    );
    assert_eq!(application.streams.len(), 1);
    let stream = &application.streams[0];
    assert_eq!(stream.name, Name::new("DESTINATION_SQL_STREAM"));
    let names: Vec<&str> = stream.columns.iter().map(|column| column.name.as_str()).collect();
    assert_eq!(names, ["TICKER_SYMBOL", "CHANGE", "PRICE"]);
    assert_eq!(stream.columns[1].sql_type, SqlType::Double);
    let pump = &application.pumps[0];
    assert_eq!(pump.name, Name::new("STREAM_PUMP"));
    assert_eq!(pump.target_columns, [0, 1, 2]);
    assert_eq!(pump.query.window, Window::None);
    let exprs: Vec<&Expr> = pump.query.projection.iter().map(|projected| &projected.expr).collect();
    assert_eq!(exprs, [&TICKER, &Expr::Column { relation: 0, index: 2 }, &PRICE]);
    round_trip(&application, &demo_input());
}

#[test]
fn tumbling_window_by_step() {
    // dev/tumbling-window-concepts.html
    let application = parse(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
                                   ticker_symbol VARCHAR(4),
                                   Min_Price     DOUBLE,
                                   Max_Price     DOUBLE);
-- CREATE OR REPLACE PUMP to insert into output
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
  INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM Ticker_Symbol,
                  MIN(Price) AS Min_Price,
                  MAX(Price) AS Max_Price
    FROM    "SOURCE_SQL_STREAM_001"
    GROUP BY Ticker_Symbol,
             STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND);"#,
    );
    let query = &application.pumps[0].query;
    let Window::Tumbling { keys, time_key, size_ms } = &query.window else { panic!("{:?}", query.window) };
    assert_eq!((*time_key, *size_ms), (1, 60_000));
    assert_eq!(keys[0], TICKER);
    assert_eq!(
        keys[1],
        Expr::Call { function: Function::Step, args: vec![Expr::Rowtime, Expr::Interval { ms: 60_000 }] }
    );
    let min =
        Expr::Aggregate { function: AggregateFunction::Min, arg: Some(Box::new(PRICE)), distinct: false };
    assert_eq!(query.projection[1], Projected { name: Name::new("MIN_PRICE"), expr: min });
    round_trip(&application, &demo_input());
}

#[test]
fn tumbling_window_by_floor_and_count_star() {
    // The FLOOR form of sqlref/sql-reference-aggregate-functions.html, on the demo stream.
    let application = parse(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (minute_start TIMESTAMP, ticker VARCHAR(4), n BIGINT);
CREATE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM FLOOR(SOURCE_SQL_STREAM_001.ROWTIME TO MINUTE) AS minute_start, ticker_symbol, COUNT(*) AS n
  FROM SOURCE_SQL_STREAM_001
  GROUP BY FLOOR(SOURCE_SQL_STREAM_001.ROWTIME TO MINUTE), ticker_symbol"#,
    );
    let query = &application.pumps[0].query;
    let Window::Tumbling { time_key, size_ms, .. } = &query.window else { panic!("{:?}", query.window) };
    assert_eq!((*time_key, *size_ms), (0, 60_000));
    let count = Expr::Aggregate { function: AggregateFunction::CountRows, arg: None, distinct: false };
    assert_eq!(query.projection[2].expr, count);
    round_trip(&application, &demo_input());
}

#[test]
fn sliding_window_average() {
    // dev/sliding-window-concepts.html, example 2.
    let application = parse(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
                            ticker_symbol VARCHAR(10),
                            Avg_Percent_Change double);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS
   INSERT INTO "DESTINATION_SQL_STREAM"
      SELECT STREAM Ticker_Symbol,
                    AVG(Change / (Price - Change)) over W1 as Avg_Percent_Change
      FROM "SOURCE_SQL_STREAM_001"
      WINDOW W1 AS (
              PARTITION BY ticker_symbol
              RANGE INTERVAL '10' SECOND PRECEDING);"#,
    );
    let query = &application.pumps[0].query;
    assert_eq!(
        query.window,
        Window::Sliding { name: Name::new("W1"), partition: vec![TICKER], frame: Frame::RangeMs(10_000) }
    );
    assert!(matches!(query.projection[1].expr, Expr::Aggregate { function: AggregateFunction::Avg, .. }));
    round_trip(&application, &demo_input());
}

#[test]
fn sliding_window_of_rows() {
    // dev/sliding-window-concepts.html, example 3 (two windows there; one per query here).
    let application = parse(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), avg2 DOUBLE);
CREATE OR REPLACE PUMP "myPump" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM ticker_symbol, avg(price) over last2rows FROM SOURCE_SQL_STREAM_001
  WINDOW last2rows AS (PARTITION BY ticker_symbol ROWS 2 PRECEDING);"#,
    );
    let Window::Sliding { frame, .. } = &application.pumps[0].query.window else { panic!() };
    assert_eq!(*frame, Frame::Rows(2));
    assert_eq!(application.pumps[0].name, Name::new("myPump"));
    round_trip(&application, &demo_input());
}

#[test]
fn stagger_window() {
    // dev/stagger-window-concepts.html, with EVENT_TIME in the input.
    let mut inputs = demo_input();
    inputs[0].columns.push(Column {
        name: Name::new("EVENT_TIME"),
        sql_type: SqlType::Timestamp,
        not_null: false,
    });
    let code = r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker_symbol    VARCHAR(4),
    event_time       TIMESTAMP,
    ticker_count     DOUBLE);

CREATE OR REPLACE PUMP "STREAM_PUMP" AS
  INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM
        TICKER_SYMBOL,
        FLOOR(EVENT_TIME TO MINUTE),
        COUNT(TICKER_SYMBOL) AS ticker_count
    FROM "SOURCE_SQL_STREAM_001"
    WINDOWED BY STAGGER (
            PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL RANGE INTERVAL '1' MINUTE);"#;
    let application = parse_application(code, &inputs).expect("the stagger example");
    let query = &application.pumps[0].query;
    let event_minute = Expr::FloorTime {
        expr: Box::new(Expr::Column { relation: 0, index: 4 }),
        unit: TimeUnit::Minute,
        ceil: false,
    };
    assert_eq!(query.window, Window::Stagger { keys: vec![event_minute, TICKER], range_ms: 60_000 });
    round_trip(&application, &inputs);
}

#[test]
fn reference_data_join() {
    // dev/app-add-reference-data.html: the reference table "CompanyName" (Ticker, Company).
    let mut inputs = demo_input();
    inputs.push(StreamDef {
        name: Name::new("CompanyName"),
        columns: vec![
            Column { name: Name::new("Ticker"), sql_type: SqlType::Varchar(4), not_null: false },
            Column { name: Name::new("Company"), sql_type: SqlType::Varchar(20), not_null: false },
        ],
    });
    let code = r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), "Company" varchar(20), sector VARCHAR(12), change DOUBLE, price DOUBLE);

CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
   SELECT STREAM ticker_symbol, "c"."Company", sector, change, price
   FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" as "c"
   ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker";"#;
    let application = parse_application(code, &inputs).expect("the reference-data example");
    let query = &application.pumps[0].query;
    let Source::Join { reference, left, on, .. } = &query.source else { panic!("{:?}", query.source) };
    assert!(left);
    assert_eq!(reference.alias, Some(Name::new("c")));
    assert_eq!(
        *on,
        Expr::Binary {
            op: BinaryOp::Eq,
            left: Box::new(TICKER),
            right: Box::new(Expr::Column { relation: 1, index: 0 })
        }
    );
    assert_eq!(query.projection[1].expr, Expr::Column { relation: 1, index: 1 });
    assert_eq!(application.streams[0].columns[1].name, Name::new("Company"));
    round_trip(&application, &inputs);
}

#[test]
fn top_k_and_count_distinct_table_functions() {
    // sqlref/top-k.html and sqlref/count-distinct-items.html
    let application = parse(
        r#"CREATE OR REPLACE STREAM DESTINATION_SQL_STREAM (
  "TICKER_SYMBOL" VARCHAR(4),
  "MOST_FREQUENT_VALUES" BIGINT
);
CREATE OR REPLACE STREAM DISTINCT_SQL_STREAM (NUMBER_OF_DISTINCT_ITEMS BIGINT);

CREATE OR REPLACE PUMP "STREAM_PUMP" AS
    INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM *
        FROM TABLE (TOP_K_ITEMS_TUMBLING(
            CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"),
            'TICKER_SYMBOL',         -- name of column in single quotes
            5,                       -- number of the most frequently occurring values
            60                       -- tumbling window size in seconds
            )
        );
CREATE OR REPLACE PUMP "DISTINCT_PUMP" AS
   INSERT INTO "DISTINCT_SQL_STREAM"
      SELECT STREAM *
      FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(
          CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"),  -- pointer to the data stream
            'TICKER_SYMBOL',                                     -- name of column in single quotes
            60                                                   -- tumbling window size in seconds
      )
);"#,
    );
    let stream = Name::new("SOURCE_SQL_STREAM_001");
    let column = Name::new("TICKER_SYMBOL");
    assert_eq!(
        application.pumps[0].query.source,
        Source::TopK { stream: stream.clone(), column: column.clone(), k: 5, window_s: 60 }
    );
    assert_eq!(application.pumps[0].query.projection.len(), 2);
    assert_eq!(application.pumps[1].query.source, Source::DistinctCount { stream, column, window_s: 60 });
    round_trip(&application, &demo_input());
}

#[test]
fn expressions_users_write() {
    let application = parse(
        r#"CREATE OR REPLACE STREAM "OUT" (t VARCHAR(8), pct DOUBLE, kind VARCHAR(8), n INTEGER, at TIMESTAMP, s VARCHAR(4));
CREATE OR REPLACE PUMP "P" AS INSERT INTO "OUT"
  SELECT STREAM UPPER(TRIM(ticker_symbol)) || '!', change / (price - change) * 100,
    CASE WHEN change > 0 THEN 'up' WHEN change < 0 THEN 'down' ELSE 'flat' END,
    CHAR_LENGTH(sector) + POSITION('A' IN ticker_symbol), STEP(ROWTIME BY INTERVAL '10' SECOND),
    SUBSTRING(sector FROM 1 FOR 4)
  FROM "SOURCE_SQL_STREAM_001"
  WHERE ticker_symbol SIMILAR TO '%AMZN%' AND price IS NOT NULL AND NOT (change BETWEEN -1 AND 1)
    AND CAST(price AS INTEGER) <> 0"#,
    );
    let query = &application.pumps[0].query;
    assert!(query.filter.is_some());
    assert!(matches!(query.projection[2].expr, Expr::Case { .. }));
    round_trip(&application, &demo_input());
}

fn at(error: &SqlError) -> (u64, u64) {
    let Position { line, column } = error.position.expect("a position");
    (line, column)
}

#[test]
fn errors_name_line_and_column() {
    let inputs = demo_input();
    let stream = "CREATE STREAM \"OUT\" (t VARCHAR(4));\n";
    // An unknown column, on line 3 at column 15.
    let error = refused(
        &format!(
            "{stream}CREATE PUMP P AS INSERT INTO \"OUT\"\n  SELECT STREAM tickr FROM SOURCE_SQL_STREAM_001"
        ),
        &inputs,
    );
    assert_eq!(at(&error), (3, 17), "{error}");
    assert!(error.message.contains("TICKR"), "{error}");
    assert!(error.to_string().starts_with("line 3, column 17: "), "{error}");
    // A syntax error sqlparser finds.
    let error = refused(
        &format!("{stream}CREATE PUMP P AS INSERT INTO \"OUT\"\n  SELECT STREAM ticker_symbol FROM WHERE"),
        &inputs,
    );
    assert_eq!(at(&error).0, 3, "{error}");
    // An unterminated string: the tokenizer's location.
    let error = refused("CREATE STREAM S (a VARCHAR(4));\nCREATE PUMP P AS INSERT INTO S SELECT STREAM 'x FROM SOURCE_SQL_STREAM_001", &inputs);
    assert_eq!(at(&error).0, 2, "{error}");
    // Not a statement of application code.
    let error = refused("  DROP STREAM S", &inputs);
    assert_eq!(at(&error), (1, 3), "{error}");
    // An unknown type.
    let error = refused("CREATE STREAM S (a VARCHAR(4),\n b STRING)", &inputs);
    assert_eq!(at(&error), (2, 4), "{error}");
    assert!(error.message.contains("STRING"), "{error}");
    // A GROUP BY with no window on ROWTIME.
    let error = refused(
        &format!("{stream}CREATE PUMP P AS INSERT INTO \"OUT\" SELECT STREAM ticker_symbol\n FROM SOURCE_SQL_STREAM_001\n GROUP BY ticker_symbol"),
        &inputs,
    );
    assert_eq!(at(&error), (4, 11), "{error}");
    assert!(error.message.contains("STEP(ROWTIME"), "{error}");
    // A column neither grouped nor aggregated.
    let error = refused(
        "CREATE STREAM \"OUT\" (t VARCHAR(4), p REAL);\nCREATE PUMP P AS INSERT INTO \"OUT\" SELECT STREAM ticker_symbol,\n price FROM SOURCE_SQL_STREAM_001 GROUP BY ticker_symbol, STEP(ROWTIME BY INTERVAL '1' MINUTE)",
        &inputs,
    );
    assert_eq!(at(&error), (3, 2), "{error}");
    assert!(error.message.contains("PRICE"), "{error}");
    // Columns that do not match the target.
    let error = refused(&format!("{stream}CREATE PUMP P AS INSERT INTO \"OUT\"\n  SELECT STREAM ticker_symbol, price FROM SOURCE_SQL_STREAM_001"), &inputs);
    assert_eq!(at(&error), (3, 3), "{error}");
    // A pump into an input, and into a stream not yet declared.
    let error = refused(
        "CREATE PUMP P AS INSERT INTO SOURCE_SQL_STREAM_001 SELECT STREAM * FROM SOURCE_SQL_STREAM_001",
        &inputs,
    );
    assert_eq!(at(&error), (1, 30), "{error}");
    let error =
        refused("CREATE PUMP P AS INSERT INTO LATER SELECT STREAM * FROM SOURCE_SQL_STREAM_001", &inputs);
    assert!(error.message.contains("not defined"), "{error}");
    // An aggregate with no window.
    let error = refused(
        "CREATE STREAM \"OUT\" (n BIGINT);\nCREATE PUMP P AS INSERT INTO \"OUT\" SELECT STREAM COUNT(*) FROM SOURCE_SQL_STREAM_001",
        &inputs,
    );
    assert_eq!(at(&error).0, 2, "{error}");
    // A year-month interval, and a table function's bounds.
    let error = refused(
        &format!("{stream}CREATE PUMP P AS INSERT INTO \"OUT\" SELECT STREAM ticker_symbol FROM SOURCE_SQL_STREAM_001 GROUP BY ticker_symbol, STEP(ROWTIME BY INTERVAL '1' MONTH)"),
        &inputs,
    );
    assert!(error.message.contains("year-month"), "{error}");
    let error = refused(
        "CREATE STREAM S (n BIGINT);\nCREATE PUMP P AS INSERT INTO S SELECT STREAM * FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM SOURCE_SQL_STREAM_001), 'TICKER_SYMBOL', 7200))",
        &inputs,
    );
    assert!(error.message.contains("3600"), "{error}");
    // Empty code.
    assert_eq!(refused(" -- nothing\n", &inputs).position, None);
    // Declared twice.
    let error = refused("CREATE STREAM S (a INT);\nCREATE STREAM S (b INT)", &inputs);
    assert_eq!(at(&error), (2, 1), "{error}");
}

#[test]
fn case_of_identifiers_follows_kda() {
    // Unquoted names are upper-cased; quoted ones keep their case and differ from the unquoted.
    let application = parse("CREATE STREAM mixed (\"Quoted\" INT, plain INT)");
    assert_eq!(application.streams[0].name, Name::new("MIXED"));
    assert_eq!(application.streams[0].columns[0].name, Name::new("Quoted"));
    assert_eq!(application.streams[0].columns[1].name, Name::new("PLAIN"));
    let error = refused("CREATE STREAM s (a INT);\nCREATE PUMP p AS INSERT INTO \"s\" SELECT STREAM 1 FROM SOURCE_SQL_STREAM_001", &demo_input());
    assert!(error.message.contains("\"s\""), "{error}");
}

// The round trip on generated applications: random inputs, a declared stream, and a pump with
// a random projection, filter and window.

fn name_strategy() -> impl Strategy<Value = Name> {
    prop_oneof![
        "[A-Z][A-Z0-9_]{0,6}".prop_map(Name::new),
        // Quoted names with case, spaces and quotes inside.
        "[a-zA-Z][a-zA-Z0-9 \"_]{0,6}".prop_map(Name::new),
    ]
    .prop_filter("ROWTIME is every stream's own column", |name| {
        !["ROWTIME", "CURRENT_ROW_TIMESTAMP"].contains(&name.as_str())
    })
}

fn type_strategy() -> impl Strategy<Value = SqlType> {
    prop_oneof![
        Just(SqlType::Boolean),
        Just(SqlType::Integer),
        Just(SqlType::BigInt),
        Just(SqlType::Real),
        Just(SqlType::Double),
        Just(SqlType::Timestamp),
        (1u32..100).prop_map(SqlType::Varchar),
        (1u8..=19)
            .prop_flat_map(|precision| (Just(precision), 0..=precision))
            .prop_map(|(precision, scale)| SqlType::Decimal { precision, scale }),
    ]
}

fn columns_strategy() -> impl Strategy<Value = Vec<Column>> {
    proptest::collection::vec((name_strategy(), type_strategy(), any::<bool>()), 1..5).prop_map(|columns| {
        let mut seen = std::collections::HashSet::new();
        columns
            .into_iter()
            .filter(|(name, _, _)| seen.insert(name.clone()))
            .map(|(name, sql_type, not_null)| Column { name, sql_type, not_null })
            .collect()
    })
}

/// An expression over `width` columns of relation 0.
fn expr_strategy(width: usize) -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        (0..width).prop_map(|index| Expr::Column { relation: 0, index }),
        (0u32..1000).prop_map(|number| Expr::Literal(Literal::Number(number.to_string()))),
        "[a-z' ]{0,5}".prop_map(|text| Expr::Literal(Literal::String(text))),
        any::<bool>().prop_map(|value| Expr::Literal(Literal::Boolean(value))),
        Just(Expr::Literal(Literal::Null)),
        Just(Expr::Rowtime),
        (1i64..100).prop_map(|seconds| Expr::Interval { ms: seconds * 1000 }),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        let op = prop_oneof![
            Just(BinaryOp::Add),
            Just(BinaryOp::Subtract),
            Just(BinaryOp::Multiply),
            Just(BinaryOp::Divide),
            Just(BinaryOp::Concat),
            Just(BinaryOp::Eq),
            Just(BinaryOp::Lt),
            Just(BinaryOp::GtEq),
            Just(BinaryOp::And),
            Just(BinaryOp::Or),
        ];
        prop_oneof![
            (op, inner.clone(), inner.clone()).prop_map(|(op, left, right)| Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right)
            }),
            inner.clone().prop_map(|expr| Expr::Not(Box::new(expr))),
            (inner.clone(), any::<bool>())
                .prop_map(|(expr, negated)| Expr::IsNull { expr: Box::new(expr), negated }),
            (inner.clone(), inner.clone(), any::<bool>()).prop_map(|(expr, pattern, similar)| Expr::Like {
                expr: Box::new(expr),
                pattern: Box::new(pattern),
                negated: false,
                similar
            }),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(when, then, otherwise)| Expr::Case {
                operand: None,
                branches: vec![(when, then)],
                otherwise: Some(Box::new(otherwise)),
            }),
            inner.clone().prop_map(|expr| Expr::Call { function: Function::Upper, args: vec![expr] }),
            (inner.clone(), inner.clone()).prop_map(|(needle, haystack)| Expr::Call {
                function: Function::Position,
                args: vec![needle, haystack]
            }),
            inner.clone().prop_map(|expr| Expr::FloorTime {
                expr: Box::new(expr),
                unit: TimeUnit::Hour,
                ceil: true
            }),
            inner.clone().prop_map(|expr| Expr::Cast { expr: Box::new(expr), sql_type: SqlType::Varchar(8) }),
            inner.clone().prop_map(|expr| Expr::Negate(Box::new(expr))),
            (inner.clone(), inner.clone(), inner.clone(), any::<bool>()).prop_map(
                |(expr, low, high, negated)| {
                    Expr::Between { expr: Box::new(expr), low: Box::new(low), high: Box::new(high), negated }
                }
            ),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(operand, when, then)| Expr::Case {
                operand: Some(Box::new(operand)),
                branches: vec![(when, then)],
                otherwise: None,
            }),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(text, start, length)| Expr::Call {
                function: Function::Substring,
                args: vec![text, start, length]
            }),
            (inner.clone(), inner.clone()).prop_map(|(text, what)| Expr::Call {
                function: Function::TrimLeading,
                args: vec![text, what]
            }),
            (inner.clone(), inner)
                .prop_map(|(time, width)| Expr::Call { function: Function::Step, args: vec![time, width] }),
        ]
    })
}

fn aggregate_strategy(width: usize) -> impl Strategy<Value = Expr> {
    let function = prop_oneof![
        Just(AggregateFunction::Count),
        Just(AggregateFunction::Sum),
        Just(AggregateFunction::Min),
        Just(AggregateFunction::Max),
        Just(AggregateFunction::Avg),
        (0u32..=1_000_000).prop_map(|ppm| AggregateFunction::Percentile { ppm }),
    ];
    prop_oneof![
        Just(Expr::Aggregate { function: AggregateFunction::CountRows, arg: None, distinct: false }),
        (function, 0..width).prop_map(|(function, index)| Expr::Aggregate {
            function,
            arg: Some(Box::new(Expr::Column { relation: 0, index })),
            distinct: false,
        }),
    ]
}

prop_compose! {
    fn application_strategy()(
        input_columns in columns_strategy(),
        outputs in 1usize..4,
        window_kind in 0u8..4,
        seconds in 1u64..600,
    )(
        projection in proptest::collection::vec(
            if window_kind == 0 { expr_strategy(input_columns.len()).boxed() } else { aggregate_strategy(input_columns.len()).boxed() },
            outputs,
        ),
        filter in proptest::option::of(expr_strategy(input_columns.len())),
        key in 0..input_columns.len(),
        output_types in proptest::collection::vec(type_strategy(), outputs),
        input_columns in Just(input_columns),
        window_kind in Just(window_kind),
        seconds in Just(seconds),
    ) -> (Vec<StreamDef>, Application) {
        let input = StreamDef { name: Name::new("SOURCE_SQL_STREAM_001"), columns: input_columns };
        let output = StreamDef {
            name: Name::new("Out put"),
            columns: output_types.into_iter().enumerate()
                .map(|(place, sql_type)| Column { name: Name::new(format!("C{place}")), sql_type, not_null: false })
                .collect(),
        };
        let outputs = output.columns.len();
        let key_expr = Expr::Column { relation: 0, index: key };
        let window = match window_kind {
            0 => Window::None,
            1 => Window::Tumbling {
                keys: vec![key_expr, Expr::Call { function: Function::Step, args: vec![Expr::Rowtime, Expr::Interval { ms: seconds as i64 * 1000 }] }],
                time_key: 1,
                size_ms: seconds * 1000,
            },
            2 => Window::Sliding { name: Name::new("W"), partition: vec![key_expr], frame: Frame::RangeMs(seconds * 1000) },
            _ => Window::Stagger { keys: vec![key_expr], range_ms: seconds * 1000 },
        };
        let projection = projection.into_iter().enumerate()
            .map(|(place, expr)| Projected { name: Name::new(format!("P{place}")), expr })
            .collect();
        let query = Query {
            source: Source::Stream(Relation { stream: input.name.clone(), alias: None }),
            filter,
            window,
            having: None,
            projection,
        };
        let pump = Pump {
            name: Name::new("PUMP"),
            target: output.name.clone(),
            target_columns: (0..outputs).collect(),
            query,
        };
        (vec![input], Application { streams: vec![output], pumps: vec![pump], watermarks: Vec::new() })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plans_round_trip_through_sql((inputs, application) in application_strategy()) {
        let text = application.to_sql(&inputs);
        let parsed = parse_application(&text, &inputs).map_err(|error| TestCaseError::fail(format!("{error}\n{text}")))?;
        prop_assert_eq!(&parsed, &application, "{}", text);
    }

    /// Whatever the text, the front end answers (a plan or an error), and an error's position
    /// lies inside the text.
    #[test]
    fn any_text_gets_an_answer(code in "(CREATE|STREAM|PUMP|SELECT|FROM|GROUP|BY|STEP|\\(|\\)|,|;|'|\"|[a-z]{1,3}|[0-9]{1,2}| |\n){0,40}") {
        if let Err(error) = parse_application(&code, &demo_input()) {
            if let Some(Position { line, column }) = error.position {
                let lines: Vec<&str> = code.split('\n').collect();
                prop_assert!(line >= 1 && line as usize <= lines.len(), "{error} in {code:?}");
                prop_assert!(column >= 1 && column as usize <= lines[line as usize - 1].chars().count() + 1, "{error} in {code:?}");
            }
        }
    }
}

/// Nexmark's bids as a stream with a watermark, as the Flink-style queries declare it.
const BIDS: &str = r#"CREATE OR REPLACE STREAM BID (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND);
CREATE OR REPLACE PUMP TO_BID AS INSERT INTO BID
    SELECT STREAM CAST(price AS BIGINT), CAST(price AS BIGINT), CAST(price AS BIGINT), CURRENT_ROW_TIMESTAMP FROM SOURCE_SQL_STREAM_001;
"#;

#[test]
fn flink_style_window_table_functions() {
    let code = format!(
        r#"{BIDS}
CREATE OR REPLACE STREAM Q5 (auction BIGINT, num BIGINT, starttime TIMESTAMP);
INSERT INTO Q5
SELECT auction, COUNT(*) AS num, window_start
FROM TABLE(HOP(TABLE BID, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
CREATE OR REPLACE STREAM Q7 (maxprice BIGINT, wend TIMESTAMP);
INSERT INTO Q7 SELECT MAX(price), window_end FROM TABLE(TUMBLE(TABLE BID, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) AS b
GROUP BY b.window_start, b.window_end;
CREATE OR REPLACE STREAM Q11 (bidder BIGINT, bid_count BIGINT, starttime TIMESTAMP, endtime TIMESTAMP);
INSERT INTO Q11 SELECT bidder, COUNT(*), window_start, window_end
FROM TABLE(SESSION(TABLE BID PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end;
CREATE OR REPLACE STREAM Q0 (n BIGINT);
INSERT INTO Q0 SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(ROWTIME), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end HAVING COUNT(*) > 1;"#
    );
    let application = parse(&code);
    assert_eq!(
        application.watermarks,
        [Watermark { stream: Name::new("BID"), column: Name::new("DATE_TIME"), delay_ms: 4_000 }]
    );
    let pumps: Vec<&str> = application.pumps.iter().map(|pump| pump.name.as_str()).collect();
    assert_eq!(pumps, ["TO_BID", "INSERT_1", "INSERT_2", "INSERT_3", "INSERT_4"]);
    match &application.pumps[1].query.source {
        Source::Windowed {
            width: 4,
            time: TimeColumn::Column(3),
            window,
            delay_ms: 4_000,
            partition,
            ..
        } => {
            assert_eq!(*window, EventWindow::Hop { slide_ms: 2_000, size_ms: 10_000 });
            assert!(partition.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match &application.pumps[3].query.source {
        Source::Windowed { window: EventWindow::Session { gap_ms: 10_000 }, partition, .. } => {
            assert_eq!(partition, &[Expr::Column { relation: 0, index: 1 }]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        application.pumps[4].query.source,
        Source::Windowed { time: TimeColumn::Rowtime, window: EventWindow::Tumble { size_ms: 60_000 }, .. }
    ));
    // window_start is column 4 of the function's output (after BID's four).
    assert_eq!(
        application.pumps[1].query.window,
        Window::Event {
            keys: vec![
                Expr::Column { relation: 0, index: 0 },
                Expr::Column { relation: 0, index: 4 },
                Expr::Column { relation: 0, index: 5 }
            ]
        }
    );
    round_trip(&application, &demo_input());
}

#[test]
fn flink_style_refusals_name_their_place() {
    let refuse = |code: &str| refused(&format!("{BIDS}{code}"), &demo_input());
    let error = refuse(
        "CREATE STREAM O (n BIGINT);\nINSERT INTO O SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE BID, DESCRIPTOR(price), INTERVAL '1' SECOND)) GROUP BY window_start;",
    );
    assert!(error.message.contains("\"PRICE\" is BIGINT; a window's time is a TIMESTAMP column"), "{error}");
    let error = refuse(
        "CREATE STREAM O (n BIGINT);\nINSERT INTO O SELECT auction FROM TABLE(TUMBLE(TABLE BID, DESCRIPTOR(date_time), INTERVAL '1' SECOND));",
    );
    assert!(error.message.contains("GROUP BY window_start"), "{error}");
    let error = refuse(
        "CREATE STREAM O (n BIGINT);\nINSERT INTO O SELECT bidder FROM TABLE(TUMBLE(TABLE BID, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY window_start;",
    );
    assert!(error.message.contains("neither grouped nor aggregated"), "{error}");
    assert_eq!(error.position.map(|at| at.line), Some(6));
    let error =
        refused("CREATE STREAM S (a BIGINT, WATERMARK FOR a AS a - INTERVAL '1' SECOND);", &demo_input());
    assert!(error.message.contains("not TIMESTAMP"), "{error}");
    let error = refuse(
        "CREATE STREAM O (n BIGINT);\nINSERT INTO O SELECT COUNT(*) FROM TABLE(HOP(TABLE BID, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY window_start;",
    );
    assert!(error.message.contains("wrong number of intervals"), "{error}");
}

#[test]
fn stream_to_stream_joins_with_a_range() {
    let application = parse(
        r#"CREATE STREAM A (ticker VARCHAR(4), price DOUBLE);
CREATE STREAM B (ticker VARCHAR(4), change DOUBLE);
CREATE STREAM J (ticker VARCHAR(4), price DOUBLE, change DOUBLE);
CREATE PUMP PA AS INSERT INTO A SELECT STREAM ticker_symbol, price FROM SOURCE_SQL_STREAM_001 WHERE price > 10;
CREATE PUMP PB AS INSERT INTO B SELECT STREAM ticker_symbol, change FROM SOURCE_SQL_STREAM_001 WHERE change < 0;
CREATE PUMP PJ AS INSERT INTO J SELECT STREAM a.ticker, a.price, b.change
  FROM A AS a JOIN B OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS b ON a.ticker = b.ticker AND a.price > b.change;"#,
    );
    match &application.pumps[2].query.source {
        Source::StreamJoin { left, right, range_ms: 60_000, .. } => {
            assert_eq!((left.stream.as_str(), right.stream.as_str()), ("A", "B"));
        }
        other => panic!("{other:?}"),
    }
    round_trip(&application, &demo_input());
    let error = refused(
        "CREATE STREAM J (t VARCHAR(4));\nCREATE PUMP P AS INSERT INTO J SELECT STREAM a.ticker_symbol FROM SOURCE_SQL_STREAM_001 AS a\n  JOIN SOURCE_SQL_STREAM_001 OVER (ROWS 3 PRECEDING) AS b ON a.price = b.price;",
        &demo_input(),
    );
    assert_eq!(error.position, Some(Position { line: 3, column: 30 }), "{error}");
}

#[test]
fn approximate_percentiles_parse_and_are_refused_clearly() {
    let application = parse(
        r#"CREATE STREAM O (ticker VARCHAR(4), p95 DOUBLE);
CREATE PUMP P AS INSERT INTO O SELECT STREAM ticker_symbol, APPROX_PERCENTILE(price, 0.95) FROM SOURCE_SQL_STREAM_001
  GROUP BY ticker_symbol, STEP(SOURCE_SQL_STREAM_001.ROWTIME BY INTERVAL '1' MINUTE);"#,
    );
    assert_eq!(
        application.pumps[0].query.projection[1].expr,
        Expr::Aggregate {
            function: AggregateFunction::Percentile { ppm: 950_000 },
            arg: Some(Box::new(PRICE)),
            distinct: false
        }
    );
    round_trip(&application, &demo_input());
    let error = refused(
        "CREATE STREAM O (p DOUBLE);\nCREATE PUMP P AS INSERT INTO O SELECT STREAM APPROX_PERCENTILE(price, 1.5) FROM SOURCE_SQL_STREAM_001\n  GROUP BY STEP(SOURCE_SQL_STREAM_001.ROWTIME BY INTERVAL '1' MINUTE);",
        &demo_input(),
    );
    assert!(error.message.contains("a number from 0 to 1"), "{error}");
    assert_eq!(error.position.map(|at| at.line), Some(2));
}
