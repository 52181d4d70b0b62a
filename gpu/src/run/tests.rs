//! The runner against the answers AWS documents (the stagger-window page's tumbling and
//! stagger tables, the SQL reference's function examples), and against answers the tests
//! compute themselves.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::value::{parse_timestamp, timestamp_text};
use super::{ApplicationRunner, Produced, Row, RunError, Value};
use crate::sql::parse_application;
use crate::sql::plan::{Column, Name, SqlType, StreamDef};

fn column(name: &str, sql_type: SqlType) -> Column {
    Column { name: Name::new(name), sql_type, not_null: false }
}

fn source() -> Name {
    Name::new("SOURCE_SQL_STREAM_001")
}

/// The demo stream with the EVENT_TIME the stagger page's examples add.
fn inputs() -> Vec<StreamDef> {
    vec![StreamDef {
        name: source(),
        columns: vec![
            column("TICKER_SYMBOL", SqlType::Varchar(4)),
            column("SECTOR", SqlType::Varchar(16)),
            column("CHANGE", SqlType::Real),
            column("PRICE", SqlType::Real),
            column("EVENT_TIME", SqlType::Timestamp),
        ],
    }]
}

fn ts(text: &str) -> i64 {
    parse_timestamp(text).expect("a timestamp")
}

fn runner(code: &str) -> ApplicationRunner {
    let application = parse_application(code, &inputs()).unwrap_or_else(|error| panic!("{error}"));
    ApplicationRunner::new(&application, &inputs(), &HashMap::new()).expect("runnable")
}

fn row(rowtime: &str, ticker: &str, price: f64, event_time: &str) -> Row {
    Row {
        rowtime_ms: ts(rowtime),
        values: vec![
            Value::String(ticker.into()),
            Value::String("TECH".into()),
            Value::Double(0.5),
            Value::Double(price),
            Value::Timestamp(ts(event_time)),
        ],
    }
}

/// The rows of `stream` among what was produced, as text: ROWTIME then the values.
fn texts(produced: &[Produced], stream: &str) -> Vec<Vec<String>> {
    produced
        .iter()
        .flat_map(|produced| &produced.rows)
        .filter(|(name, _)| name.as_str() == stream)
        .map(|(_, row)| {
            let mut text = vec![timestamp_text(row.rowtime_ms)];
            text.extend(row.values.iter().map(Value::text));
            text
        })
        .collect()
}

/// The four rows of dev/stagger-window-concepts.html: (ROWTIME, EVENT_TIME), all AMZN.
fn stagger_page_rows() -> Vec<Row> {
    [
        ("2024-01-01 11:00:20", "2024-01-01 11:00:10"),
        ("2024-01-01 11:00:30", "2024-01-01 11:00:20"),
        ("2024-01-01 11:01:05", "2024-01-01 11:00:55"),
        ("2024-01-01 11:01:15", "2024-01-01 11:01:05"),
    ]
    .into_iter()
    .map(|(rowtime, event)| row(rowtime, "AMZN", 10.0, event))
    .collect()
}

#[test]
fn tumbling_window_as_the_stagger_page_documents() {
    // The page's tumbling query: a window ends when a row (or a rowtime bound) at its end
    // arrives, and its rows carry the end as ROWTIME.
    let mut runner = runner(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (event_time TIMESTAMP, ticker_symbol VARCHAR(4), ticker_count INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL, COUNT(*) AS ticker_count
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY ticker_symbol, FLOOR(EVENT_TIME TO MINUTE), STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' MINUTE);"#,
    );
    let mut produced: Vec<Produced> =
        stagger_page_rows().into_iter().map(|row| runner.push(&source(), row, 0)).collect();
    produced.push(runner.advance(&source(), ts("2024-01-01 11:02:00"), 0));
    assert_eq!(
        texts(&produced, "DESTINATION_SQL_STREAM"),
        [
            ["2024-01-01 11:01:00.000", "2024-01-01 11:00:00.000", "AMZN", "2"],
            ["2024-01-01 11:02:00.000", "2024-01-01 11:00:00.000", "AMZN", "1"],
            ["2024-01-01 11:02:00.000", "2024-01-01 11:01:00.000", "AMZN", "1"],
        ]
    );
}

#[test]
fn stagger_window_as_documented() {
    let mut runner = runner(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
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
            PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL RANGE INTERVAL '1' MINUTE);"#,
    );
    let mut produced: Vec<Produced> =
        stagger_page_rows().into_iter().map(|row| runner.push(&source(), row, 0)).collect();
    // Nothing closes before its minute is up.
    assert!(texts(&produced, "DESTINATION_SQL_STREAM").is_empty());
    produced.push(runner.advance(&source(), ts("2024-01-01 11:02:15"), 0));
    assert_eq!(
        texts(&produced, "DESTINATION_SQL_STREAM"),
        [
            ["2024-01-01 11:01:20.000", "AMZN", "2024-01-01 11:00:00.000", "3"],
            ["2024-01-01 11:02:15.000", "AMZN", "2024-01-01 11:01:00.000", "1"],
        ]
    );
}

#[test]
fn sliding_window_averages_the_range_before_each_row() {
    let mut runner = runner(
        r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), avg_price DOUBLE, n BIGINT);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM ticker_symbol, AVG(price) OVER W1, COUNT(*) OVER W1 FROM "SOURCE_SQL_STREAM_001"
  WINDOW W1 AS (PARTITION BY ticker_symbol RANGE INTERVAL '10' SECOND PRECEDING);"#,
    );
    let rows = [
        ("2024-01-01 00:00:00", "A", 10.0),
        ("2024-01-01 00:00:05", "B", 100.0),
        ("2024-01-01 00:00:06", "A", 20.0),
        ("2024-01-01 00:00:10", "A", 30.0),
        ("2024-01-01 00:00:11", "A", 40.0),
    ];
    let produced: Vec<Produced> = rows
        .into_iter()
        .map(|(rowtime, ticker, price)| runner.push(&source(), row(rowtime, ticker, price, rowtime), 0))
        .collect();
    assert_eq!(
        texts(&produced, "DESTINATION_SQL_STREAM"),
        [
            ["2024-01-01 00:00:00.000", "A", "10", "1"],
            ["2024-01-01 00:00:05.000", "B", "100", "1"],
            ["2024-01-01 00:00:06.000", "A", "15", "2"],
            // 00:00:00 is exactly 10 s before: still in range.
            ["2024-01-01 00:00:10.000", "A", "20", "3"],
            ["2024-01-01 00:00:11.000", "A", "30", "3"],
        ]
    );
}

#[test]
fn reference_join_and_pumps_chained_through_streams() {
    let mut inputs = inputs();
    inputs.push(StreamDef {
        name: Name::new("CompanyName"),
        columns: vec![column("Ticker", SqlType::Varchar(4)), column("Company", SqlType::Varchar(20))],
    });
    let code = r#"CREATE OR REPLACE STREAM "NAMED" (ticker_symbol VARCHAR(4), "Company" varchar(20), price DOUBLE);
CREATE OR REPLACE STREAM "PER_COMPANY" (company VARCHAR(20), total DOUBLE, n BIGINT);
CREATE OR REPLACE PUMP "NAME_PUMP" AS INSERT INTO "NAMED"
   SELECT STREAM ticker_symbol, "c"."Company", price
   FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" as "c"
   ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker";
CREATE OR REPLACE PUMP "SUM_PUMP" AS INSERT INTO "PER_COMPANY"
   SELECT STREAM "Company", SUM(price), COUNT(*) FROM "NAMED"
   WHERE "Company" IS NOT NULL
   GROUP BY "Company", STEP("NAMED".ROWTIME BY INTERVAL '1' MINUTE);"#;
    let application = parse_application(code, &inputs).unwrap_or_else(|error| panic!("{error}"));
    let references = HashMap::from([(
        Name::new("CompanyName"),
        vec![
            vec![Value::String("AMZN".into()), Value::String("Amazon".into())],
            vec![Value::String("ASD".into()), Value::String("SomeCompanyA".into())],
        ],
    )]);
    let mut runner = ApplicationRunner::new(&application, &inputs, &references).expect("runnable");
    let mut produced = Vec::new();
    for (second, ticker, price) in [(1, "AMZN", 1.5), (2, "XYZ", 2.0), (3, "ASD", 3.0), (4, "AMZN", 4.25)] {
        let rowtime = format!("2024-01-01 00:00:{second:02}");
        produced.push(runner.push(&source(), row(&rowtime, ticker, price, &rowtime), 0));
    }
    produced.push(runner.advance(&source(), ts("2024-01-01 00:01:00"), 0));
    assert_eq!(
        texts(&produced, "NAMED"),
        [
            ["2024-01-01 00:00:01.000", "AMZN", "Amazon", "1.5"],
            ["2024-01-01 00:00:02.000", "XYZ", "", "2"],
            ["2024-01-01 00:00:03.000", "ASD", "SomeCompanyA", "3"],
            ["2024-01-01 00:00:04.000", "AMZN", "Amazon", "4.25"],
        ]
    );
    assert!(produced.iter().flat_map(|produced| &produced.rows).any(|(_, row)| row.values[1] == Value::Null));
    // The bound on the input reached the second pump through "NAMED".
    assert_eq!(
        texts(&produced, "PER_COMPANY"),
        [
            ["2024-01-01 00:01:00.000", "Amazon", "5.75", "2"],
            ["2024-01-01 00:01:00.000", "SomeCompanyA", "3", "1"]
        ]
    );
}

#[test]
fn top_k_and_count_distinct_per_window() {
    let mut runner = runner(
        r#"CREATE OR REPLACE STREAM TOP_STREAM ("TICKER_SYMBOL" VARCHAR(4), "MOST_FREQUENT_VALUES" BIGINT);
CREATE OR REPLACE STREAM DISTINCT_STREAM (NUMBER_OF_DISTINCT_ITEMS BIGINT);
CREATE OR REPLACE PUMP "TOP_PUMP" AS INSERT INTO "TOP_STREAM"
    SELECT STREAM * FROM TABLE (TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 'TICKER_SYMBOL', 2, 60));
CREATE OR REPLACE PUMP "DISTINCT_PUMP" AS INSERT INTO "DISTINCT_STREAM"
    SELECT STREAM * FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 'TICKER_SYMBOL', 60));"#,
    );
    let mut produced = Vec::new();
    for (second, ticker) in [(1, "A"), (2, "B"), (3, "A"), (4, "C"), (5, "B"), (6, "A"), (61, "Z")] {
        let rowtime = format!("2024-01-01 00:{:02}:{:02}", second / 60, second % 60);
        produced.push(runner.push(&source(), row(&rowtime, ticker, 1.0, &rowtime), 0));
    }
    assert_eq!(
        texts(&produced, "TOP_STREAM"),
        [["2024-01-01 00:01:00.000", "A", "3"], ["2024-01-01 00:01:00.000", "B", "2"]]
    );
    assert_eq!(texts(&produced, "DISTINCT_STREAM"), [["2024-01-01 00:01:00.000", "3"]]);
}

#[test]
fn a_bad_row_goes_to_the_errors_and_the_others_go_on() {
    let mut runner = runner(
        r#"CREATE OR REPLACE STREAM "OUT" (ticker VARCHAR(4) NOT NULL, ratio INTEGER);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "OUT"
  SELECT STREAM CASE WHEN ticker_symbol = 'NULL' THEN NULL ELSE ticker_symbol END, 100 / CAST(price AS INTEGER)
  FROM "SOURCE_SQL_STREAM_001";"#,
    );
    let produced: Vec<Produced> = [("A", 4.0), ("B", 0.0), ("NULL", 5.0), ("C", 50.0)]
        .into_iter()
        .map(|(ticker, price)| {
            runner.push(&source(), row("2024-01-01 00:00:00", ticker, price, "2024-01-01 00:00:00"), 0)
        })
        .collect();
    let rows = texts(&produced, "OUT");
    assert_eq!(rows, [["2024-01-01 00:00:00.000", "A", "25"], ["2024-01-01 00:00:00.000", "C", "2"]]);
    let errors: Vec<&str> =
        produced.iter().flat_map(|produced| &produced.errors).map(|error| error.message.as_str()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("division by zero"), "{errors:?}");
    assert!(errors[1].contains("NOT NULL"), "{errors:?}");
}

#[test]
fn pumps_in_a_circle_are_refused() {
    let code = r#"CREATE STREAM A (x INTEGER);
CREATE STREAM B (x INTEGER);
CREATE PUMP P1 AS INSERT INTO B SELECT STREAM x FROM A;
CREATE PUMP P2 AS INSERT INTO A SELECT STREAM x FROM B;"#;
    let application = parse_application(code, &inputs()).expect("it parses");
    let refused = ApplicationRunner::new(&application, &inputs(), &HashMap::new());
    assert!(matches!(refused, Err(RunError::Cycle(_))), "{:?}", refused.err());
}

/// One expression of the SQL reference on one row: its value cast to `sql_type`.
fn one(expr: &str, sql_type: &str) -> Value {
    let code = format!(
        "CREATE STREAM \"OUT\" (v {sql_type});\nCREATE PUMP P AS INSERT INTO \"OUT\" SELECT STREAM {expr} FROM SOURCE_SQL_STREAM_001"
    );
    let mut runner = runner(&code);
    let produced = runner.push(&source(), row("2024-01-01 00:00:00", "AMZN", 1.0, "2024-01-01 00:00:00"), 0);
    assert!(produced.errors.is_empty(), "{expr}: {:?}", produced.errors);
    produced.rows[0].1.values[0].clone()
}

fn text(expr: &str) -> String {
    one(expr, "VARCHAR(64)").text()
}

#[test]
fn functions_as_the_sql_reference_documents() {
    // sql-reference-substring
    assert_eq!(text("SUBSTRING('123456789' FROM 3 FOR 4)"), "3456");
    assert_eq!(text("SUBSTRING('123456789' FROM 17 FOR 4)"), "");
    assert_eq!(text("SUBSTRING('123456789' FROM -1 FOR 4)"), "12");
    assert_eq!(text("SUBSTRING('123456789' FROM 6 FOR 0)"), "");
    assert_eq!(text("SUBSTRING('123456789' FROM 8 FOR 4)"), "89");
    // sql-reference-position
    assert_eq!(one("POSITION('findme' IN '1234findmeXXX')", "INTEGER"), Value::Integer(5));
    assert_eq!(one("POSITION('' IN 'abc')", "INTEGER"), Value::Integer(1));
    assert_eq!(one("POSITION('z' IN 'abc')", "INTEGER"), Value::Integer(0));
    // sql-reference-step
    let at = "CAST('2004-09-30 13:48:23' AS TIMESTAMP)";
    assert_eq!(text(&format!("STEP({at} BY INTERVAL '10' SECOND)")), "2004-09-30 13:48:20.000");
    assert_eq!(text(&format!("STEP({at} BY INTERVAL '2' HOUR)")), "2004-09-30 12:00:00.000");
    assert_eq!(text(&format!("STEP({at} BY INTERVAL '5' MINUTE)")), "2004-09-30 13:45:00.000");
    // The reference prints 2004-09-25 for this one, but its own formula, (t - epoch) /
    // interval * interval + epoch, which every other example on the page and every window
    // follows, gives 2004-09-24 (day 12,688 since the epoch; 12,688 mod 5 = 3). The formula wins.
    assert_eq!(
        text("STEP(CAST('2004-09-27 13:48:23' AS TIMESTAMP) BY INTERVAL '5' DAY)"),
        "2004-09-24 00:00:00.000"
    );
    assert_eq!(one("STEP(23 BY 5)", "INTEGER"), Value::Integer(20));
    // sql-reference-floor / -ceil, with the TIMESTAMP literal form
    assert_eq!(text("FLOOR(TIMESTAMP '2004-09-30 13:48:23' TO HOUR)"), "2004-09-30 13:00:00.000");
    assert_eq!(text("CEIL(TIMESTAMP '2004-09-30 13:48:23' TO HOUR)"), "2004-09-30 14:00:00.000");
    assert_eq!(text("CEIL(TIMESTAMP '2004-09-30 13:48:23' TO DAY)"), "2004-10-01 00:00:00.000");
    assert_eq!(text("FLOOR(TIMESTAMP '2004-09-30 13:48:23' TO MONTH)"), "2004-09-01 00:00:00.000");
    assert_eq!(text("CEIL(TIMESTAMP '2004-12-30 13:48:23' TO MONTH)"), "2005-01-01 00:00:00.000");
    assert_eq!(text("FLOOR(TIMESTAMP '2004-09-30 13:48:23' TO YEAR)"), "2004-01-01 00:00:00.000");
    // Strings, CASE, LIKE and SIMILAR TO, three-valued logic.
    assert_eq!(text("UPPER(TRIM(LEADING 'x' FROM 'xxab')) || LOWER('CD')"), "ABcd");
    assert_eq!(one("CHAR_LENGTH('ünï')", "INTEGER"), Value::Integer(3));
    assert_eq!(one("'xAMZNy' SIMILAR TO '%AMZN%'", "BOOLEAN"), Value::Boolean(true));
    assert_eq!(one("'AMZN' SIMILAR TO '(AM|GO)[A-Z]+'", "BOOLEAN"), Value::Boolean(true));
    assert_eq!(one("'A.B' LIKE 'A_B' AND NOT ('AXB' LIKE 'A.B')", "BOOLEAN"), Value::Boolean(true));
    assert_eq!(one("NULL = 1 OR TRUE", "BOOLEAN"), Value::Boolean(true));
    assert_eq!(one("NULL = 1 AND TRUE", "BOOLEAN"), Value::Null);
    assert_eq!(
        one("CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END", "VARCHAR(8)"),
        Value::String("two".into())
    );
    // Exact arithmetic.
    assert_eq!(text("0.1 + 0.2"), "0.3");
    assert_eq!(text("1.25 * 4"), "5.00");
    assert_eq!(one("7 / 2", "INTEGER"), Value::Integer(3));
    assert_eq!(
        one(
            "TSDIFF(CAST('2024-01-01 00:00:00' AS TIMESTAMP), CAST('2024-01-01 00:00:01.5' AS TIMESTAMP))",
            "BIGINT"
        ),
        Value::Integer(1500)
    );
    assert_eq!(
        text("CAST('2024-02-29 23:59:59.999' AS TIMESTAMP) + INTERVAL '1' SECOND"),
        "2024-03-01 00:00:00.999"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A tumbling SUM/COUNT/MIN/MAX per ticker equals the answer computed here from the rows.
    #[test]
    fn tumbling_aggregates_equal_the_answer_computed_directly(
        rows in proptest::collection::vec((0u8..3, -1000i64..1000, 0i64..3_000), 1..80),
        size_s in 1i64..30,
    ) {
        let code = format!(
            r#"CREATE STREAM "OUT" (ticker VARCHAR(4), total BIGINT, n BIGINT, low BIGINT, high BIGINT, average BIGINT);
CREATE PUMP P AS INSERT INTO "OUT"
  SELECT STREAM ticker_symbol, SUM(CAST(price AS BIGINT)), COUNT(*), MIN(CAST(price AS BIGINT)),
         MAX(CAST(price AS BIGINT)), AVG(CAST(price AS BIGINT))
  FROM SOURCE_SQL_STREAM_001
  GROUP BY ticker_symbol, STEP(ROWTIME BY INTERVAL '{size_s}' SECOND)"#
        );
        let mut runner = runner(&code);
        // Rows in ROWTIME order, as a stream has them.
        let mut rows = rows;
        rows.sort_by_key(|(_, _, time)| *time);
        let mut expected: BTreeMap<(i64, u8), Vec<i64>> = BTreeMap::new();
        let mut produced = Vec::new();
        for (ticker, price, time_ds) in &rows {
            let rowtime_ms = time_ds * 100;
            expected.entry((rowtime_ms.div_euclid(size_s * 1000), *ticker)).or_default().push(*price);
            let row = Row {
                rowtime_ms,
                values: vec![
                    Value::String(format!("T{ticker}")),
                    Value::Null,
                    Value::Null,
                    Value::Double(*price as f64),
                    Value::Null,
                ],
            };
            produced.push(runner.push(&source(), row, 0));
        }
        produced.push(runner.advance(&source(), i64::MAX / 2, 0));
        let mut got: BTreeMap<(i64, u8), Vec<i64>> = BTreeMap::new();
        for (_, row) in produced.iter().flat_map(|produced| &produced.rows) {
            let ticker = match &row.values[0] { Value::String(text) => text[1..].parse::<u8>().expect("T<n>"), other => panic!("{other:?}") };
            let numbers: Vec<i64> = row.values[1..].iter().map(|value| match value { Value::Integer(n) => *n, other => panic!("{other:?}") }).collect();
            prop_assert_eq!(row.rowtime_ms % (size_s * 1000), 0);
            got.insert((row.rowtime_ms / (size_s * 1000) - 1, ticker), numbers);
        }
        let expected: BTreeMap<(i64, u8), Vec<i64>> = expected
            .into_iter()
            .map(|(key, prices)| {
                let total: i64 = prices.iter().sum();
                let n = prices.len() as i64;
                (key, vec![total, n, *prices.iter().min().expect("one"), *prices.iter().max().expect("one"), total / n])
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn timestamps_print_and_parse_back(ms in -10_000_000_000_000i64..10_000_000_000_000) {
        prop_assert_eq!(parse_timestamp(&timestamp_text(ms)).expect("parses"), ms);
    }
}

/// Pumps of every stateful kind, two of them chained (a tumbling window over a filter, and
/// over a sliding window's output), and the two table functions.
const CHECKPOINTED: &str = r#"CREATE STREAM S1 (ticker VARCHAR(4), price BIGINT);
CREATE STREAM OUT_T (ticker VARCHAR(4), total BIGINT, n BIGINT, low BIGINT, average DOUBLE, tickers BIGINT);
CREATE STREAM OUT_S (ticker VARCHAR(4), n BIGINT);
CREATE STREAM OUT_W (ticker VARCHAR(4), total BIGINT);
CREATE STREAM OUT_R (ticker VARCHAR(4), high DOUBLE);
CREATE STREAM OUT_C (n BIGINT, total BIGINT);
CREATE STREAM OUT_K (item VARCHAR(4), n BIGINT);
CREATE STREAM OUT_D (n BIGINT);
CREATE PUMP P1 AS INSERT INTO S1 SELECT STREAM ticker_symbol, CAST(price AS BIGINT) FROM SOURCE_SQL_STREAM_001 WHERE price > 0;
CREATE PUMP P2 AS INSERT INTO OUT_T SELECT STREAM ticker, SUM(price), COUNT(*), MIN(price), AVG(CAST(price AS DOUBLE)), COUNT(DISTINCT ticker) FROM S1
  GROUP BY ticker, STEP(S1.ROWTIME BY INTERVAL '10' SECOND);
CREATE PUMP P3 AS INSERT INTO OUT_S SELECT STREAM ticker_symbol, COUNT(*) FROM SOURCE_SQL_STREAM_001
  WINDOWED BY STAGGER (PARTITION BY ticker_symbol RANGE INTERVAL '7' SECOND);
CREATE PUMP P4 AS INSERT INTO OUT_W SELECT STREAM ticker_symbol, SUM(CAST(price AS BIGINT)) OVER W FROM SOURCE_SQL_STREAM_001
  WINDOW W AS (PARTITION BY ticker_symbol RANGE INTERVAL '5' SECOND PRECEDING);
CREATE PUMP P5 AS INSERT INTO OUT_R SELECT STREAM ticker_symbol, MAX(price) OVER L FROM SOURCE_SQL_STREAM_001
  WINDOW L AS (PARTITION BY ticker_symbol ROWS 3 PRECEDING);
CREATE PUMP P6 AS INSERT INTO OUT_C SELECT STREAM COUNT(*), SUM(total) FROM OUT_W
  GROUP BY STEP(OUT_W.ROWTIME BY INTERVAL '20' SECOND);
CREATE PUMP P7 AS INSERT INTO OUT_K SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM SOURCE_SQL_STREAM_001), 'TICKER_SYMBOL', 2, 15));
CREATE PUMP P8 AS INSERT INTO OUT_D SELECT STREAM * FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM SOURCE_SQL_STREAM_001), 'TICKER_SYMBOL', 15));
CREATE STREAM EV (ticker VARCHAR(4), price BIGINT, et TIMESTAMP, WATERMARK FOR et AS et - INTERVAL '2' SECOND);
CREATE PUMP P9 AS INSERT INTO EV SELECT STREAM ticker_symbol, CAST(price AS BIGINT), EVENT_TIME FROM SOURCE_SQL_STREAM_001;
CREATE STREAM OUT_H (ws TIMESTAMP, ticker VARCHAR(4), n BIGINT, total BIGINT, low BIGINT, p90 DOUBLE);
INSERT INTO OUT_H SELECT window_start, ticker, COUNT(*), SUM(price), MIN(price), APPROX_PERCENTILE(price, 0.9)
  FROM TABLE(HOP(TABLE EV, DESCRIPTOR(et), INTERVAL '2' SECOND, INTERVAL '6' SECOND)) GROUP BY ticker, window_start, window_end;
CREATE STREAM OUT_E (ws TIMESTAMP, we TIMESTAMP, ticker VARCHAR(4), n BIGINT, distinct_prices BIGINT);
INSERT INTO OUT_E SELECT window_start, window_end, ticker, COUNT(*), COUNT(DISTINCT price)
  FROM TABLE(SESSION(TABLE EV PARTITION BY ticker, DESCRIPTOR(et), INTERVAL '1' SECOND)) GROUP BY ticker, window_start, window_end;
CREATE STREAM OUT_J (ticker VARCHAR(4), a BIGINT, b BIGINT);
CREATE PUMP P10 AS INSERT INTO OUT_J SELECT STREAM s.ticker, s.price, e.price
  FROM S1 AS s JOIN EV OVER (RANGE INTERVAL '1' SECOND PRECEDING) AS e ON s.ticker = e.ticker;
CREATE STREAM OUT_U (we TIMESTAMP, n BIGINT);
INSERT INTO OUT_U SELECT window_end, COUNT(*)
  FROM TABLE(TUMBLE(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(ROWTIME), INTERVAL '3' SECOND)) GROUP BY window_start, window_end;"#;

fn checkpointed_rows(rows: Vec<(u8, i64, i64)>) -> Vec<Row> {
    let mut rows = rows;
    rows.sort_by_key(|(_, _, time)| *time);
    rows.into_iter()
        .map(|(ticker, price, time)| {
            let mut row =
                row("2024-01-01 00:00:00", &format!("T{ticker}"), price as f64, "2024-01-01 00:00:00");
            row.rowtime_ms = time * 50;
            // Event times out of order by up to 3 s: some within the watermark's delay, some late.
            row.values[4] = Value::Timestamp(time * 50 - price.rem_euclid(7) * 500);
            row
        })
        .collect()
}

fn restored(snapshot: &[u8]) -> Result<ApplicationRunner, RunError> {
    let application = parse_application(CHECKPOINTED, &inputs()).expect("it parses");
    ApplicationRunner::restore(&application, &inputs(), &HashMap::new(), snapshot)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Cut the input anywhere, snapshot the state, restore it into a fresh runner and go on:
    /// what was put out before the cut, then what the restored runner puts out, is exactly
    /// what an uninterrupted run puts out, row for row and in order.
    #[test]
    fn a_restored_snapshot_continues_exactly(
        rows in proptest::collection::vec((0u8..3, -5i64..20, 0i64..3_000), 1..60),
        cut in 0usize..60,
    ) {
        let rows = checkpointed_rows(rows);
        let cut = cut.min(rows.len());
        let feed = |runner: &mut ApplicationRunner, rows: &[Row], end: bool| -> Vec<(Name, Row)> {
            let mut out: Vec<(Name, Row)> = rows.iter().flat_map(|row| runner.push(&source(), row.clone(), 0).rows).collect();
            if end {
                out.extend(runner.advance(&source(), i64::MAX / 2, 0).rows);
            }
            out
        };
        let whole = feed(&mut runner(CHECKPOINTED), &rows, true);
        let mut before = runner(CHECKPOINTED);
        let mut resumed = feed(&mut before, &rows[..cut], false);
        let snapshot = before.snapshot();
        let mut after = restored(&snapshot).map_err(|error| TestCaseError::fail(error.to_string()))?;
        // The state codec round-trips: the restored runner's snapshot is the same bytes.
        prop_assert_eq!(after.snapshot(), snapshot);
        resumed.extend(feed(&mut after, &rows[cut..], true));
        prop_assert_eq!(resumed, whole);
    }

    /// Whatever the bytes (cut short, flipped, or garbage), restoring answers an error or a
    /// runner, never a panic.
    #[test]
    fn damaged_snapshots_are_refused_not_misread(
        rows in proptest::collection::vec((0u8..3, -5i64..20, 0i64..3_000), 1..30),
        cut in 0usize..4000,
        flip in 0usize..4000,
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut runner = runner(CHECKPOINTED);
        for row in checkpointed_rows(rows) {
            runner.push(&source(), row, 0);
        }
        let snapshot = runner.snapshot();
        prop_assert!(restored(&snapshot[..cut.min(snapshot.len().saturating_sub(1))]).is_err());
        let mut flipped = snapshot.clone();
        let at = flip % flipped.len();
        flipped[at] ^= 0x5a;
        let _ = restored(&flipped);
        let _ = restored(&garbage);
    }
}

#[test]
fn a_snapshot_of_other_code_is_refused() {
    let mut runner = runner(CHECKPOINTED);
    runner.push(&source(), row("2024-01-01 00:00:01", "A", 1.0, "2024-01-01 00:00:01"), 0);
    let snapshot = runner.snapshot();
    let other = CHECKPOINTED.replace("INTERVAL '7' SECOND", "INTERVAL '8' SECOND");
    let application = parse_application(&other, &inputs()).expect("it parses");
    let refused = ApplicationRunner::restore(&application, &inputs(), &HashMap::new(), &snapshot);
    assert!(
        matches!(&refused, Err(RunError::Snapshot(error)) if error.0.contains("other application code")),
        "{:?}",
        refused.err()
    );
    assert!(restored(&snapshot).is_ok());
}

/// Event-time windows on the input's EVENT_TIME (no watermark declared: the delay is 0).
fn event_code(function: &str) -> String {
    format!(
        r#"CREATE STREAM OUT (ws TIMESTAMP, we TIMESTAMP, ticker VARCHAR(4), n BIGINT, total DOUBLE);
INSERT INTO OUT SELECT window_start, window_end, ticker_symbol, COUNT(*), SUM(price)
FROM TABLE({function}) GROUP BY ticker_symbol, window_start, window_end;"#
    )
}

/// Events (ticker, event time ms, price) in event-time order, each at ROWTIME = its time.
fn event_rows(events: &[(u8, i64, i64)]) -> Vec<Row> {
    events
        .iter()
        .map(|(ticker, time, price)| Row {
            rowtime_ms: *time,
            values: vec![
                Value::String(format!("T{ticker}")),
                Value::String("TECH".into()),
                Value::Double(0.5),
                Value::Double(*price as f64),
                Value::Timestamp(*time),
            ],
        })
        .collect()
}

/// (window start, end, ticker, count, total) of every row put out, sorted.
fn windows_out(runner: &mut ApplicationRunner, rows: &[Row]) -> Vec<(i64, i64, String, i64, i64)> {
    let mut out = Vec::new();
    for row in rows {
        for (_, row) in runner.push(&source(), row.clone(), 0).rows {
            let [Value::Timestamp(start), Value::Timestamp(end), Value::String(ticker), Value::Integer(n), Value::Double(total)] =
                row.values.as_slice()
            else {
                panic!("{row:?}")
            };
            out.push((*start, *end, ticker.clone(), *n, *total as i64));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// HOP (and TUMBLE, slide = size) in panes: every window the watermark (the latest event
    /// time) has passed, with the count and sum a direct computation over the events gives.
    #[test]
    fn hopping_windows_equal_the_answer_computed_directly(
        mut events in proptest::collection::vec((0u8..3, 0i64..20_000, -50i64..50), 1..80),
        slide_s in 1u64..4,
        panes in 1u64..4,
    ) {
        events.sort_by_key(|(_, time, _)| *time);
        let (slide, size) = (slide_s * 1000, slide_s * 1000 * panes);
        let function = format!(
            "HOP(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(EVENT_TIME), INTERVAL '{slide_s}' SECOND, INTERVAL '{}' SECOND)",
            slide_s * panes
        );
        let got = windows_out(&mut runner(&event_code(&function)), &event_rows(&events));
        let watermark = events.last().map(|(_, time, _)| *time).unwrap();
        let mut expected = BTreeMap::new();
        for (ticker, time, price) in &events {
            let mut start = time.div_euclid(slide as i64) * slide as i64;
            while start + size as i64 > *time {
                if start + size as i64 <= watermark {
                    let entry = expected.entry((start, start + size as i64, format!("T{ticker}"))).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 += price;
                }
                start -= slide as i64;
            }
        }
        let expected: Vec<_> = expected.into_iter().map(|((s, e, t), (n, total))| (s, e, t, n, total)).collect();
        prop_assert_eq!(got, expected);
    }

    /// SESSION per ticker: events closer than the gap share a session; a session is out once
    /// the watermark reaches its last event + gap.
    #[test]
    fn session_windows_equal_the_answer_computed_directly(
        mut events in proptest::collection::vec((0u8..3, 0i64..30_000, -50i64..50), 1..80),
        gap_s in 1i64..4,
    ) {
        events.sort_by_key(|(_, time, _)| *time);
        let function = format!(
            "SESSION(TABLE SOURCE_SQL_STREAM_001 PARTITION BY ticker_symbol, DESCRIPTOR(EVENT_TIME), INTERVAL '{gap_s}' SECOND)"
        );
        let got = windows_out(&mut runner(&event_code(&function)), &event_rows(&events));
        let watermark = events.last().map(|(_, time, _)| *time).unwrap();
        let gap = gap_s * 1000;
        let mut expected = Vec::new();
        for ticker in 0u8..3 {
            let mut open: Option<(i64, i64, i64, i64)> = None;
            for (_, time, price) in events.iter().filter(|(t, _, _)| *t == ticker) {
                open = match open {
                    Some((start, last, n, total)) if *time < last + gap => Some((start, *time, n + 1, total + price)),
                    Some((start, last, n, total)) => {
                        expected.push((start, last + gap, format!("T{ticker}"), n, total));
                        Some((*time, *time, 1, *price))
                    }
                    None => Some((*time, *time, 1, *price)),
                };
            }
            if let Some((start, last, n, total)) = open {
                expected.push((start, last + gap, format!("T{ticker}"), n, total));
            }
        }
        expected.retain(|(_, end, ..)| *end <= watermark);
        expected.sort();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn late_rows_are_counted_and_refused_and_the_delay_admits_the_rest() {
    let code = r#"CREATE STREAM EV (ticker VARCHAR(4), et TIMESTAMP, WATERMARK FOR et AS et - INTERVAL '2' SECOND);
CREATE PUMP P AS INSERT INTO EV SELECT STREAM ticker_symbol, EVENT_TIME FROM SOURCE_SQL_STREAM_001;
CREATE STREAM OUT (we TIMESTAMP, n BIGINT);
INSERT INTO OUT SELECT window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE EV, DESCRIPTOR(et), INTERVAL '1' SECOND))
GROUP BY window_start, window_end;"#;
    let mut runner = runner(code);
    let at = |seconds: f64| ts("2024-01-01 00:00:00") + (seconds * 1000.0) as i64;
    let mut produced = Vec::new();
    // 0.5, 1.5, then 4.2 (watermark 2.2: [0,1) and [1,2) close), then 1.9 (its window [1,2)
    // is out: late), 2.5 (within the delay: counted), 6.0 (closes [2,3) and [4,5)).
    for (rowtime, event) in [(0.5, 0.5), (1.5, 1.5), (4.2, 4.2), (4.3, 1.9), (4.4, 2.5), (6.0, 6.0)] {
        let mut row = row("2024-01-01 00:00:00", "A", 1.0, "2024-01-01 00:00:00");
        row.rowtime_ms = at(rowtime);
        row.values[4] = Value::Timestamp(at(event));
        produced.push(runner.push(&source(), row, 0));
    }
    assert_eq!(
        texts(&produced, "OUT"),
        [
            ["2024-01-01 00:00:04.200", "2024-01-01 00:00:01.000", "1"],
            ["2024-01-01 00:00:04.200", "2024-01-01 00:00:02.000", "1"],
            ["2024-01-01 00:00:06.000", "2024-01-01 00:00:03.000", "1"],
        ]
    );
    let errors: Vec<&str> = produced.iter().flat_map(|p| &p.errors).map(|e| e.message.as_str()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("late row: event time 2024-01-01 00:00:01.900"), "{errors:?}");
}

const JOINED: &str = r#"CREATE STREAM A (ticker VARCHAR(4), price BIGINT);
CREATE STREAM B (ticker VARCHAR(4), price BIGINT);
CREATE STREAM J (ticker VARCHAR(4), left_price BIGINT, right_price BIGINT);
CREATE PUMP PA AS INSERT INTO A SELECT STREAM ticker_symbol, CAST(price AS BIGINT) FROM SOURCE_SQL_STREAM_001 WHERE price >= 0;
CREATE PUMP PB AS INSERT INTO B SELECT STREAM ticker_symbol, CAST(price AS BIGINT) FROM SOURCE_SQL_STREAM_001 WHERE price < 5;
CREATE PUMP PJ AS INSERT INTO J SELECT STREAM a.ticker, a.price, b.price
  FROM A AS a JOIN B OVER (RANGE INTERVAL '2' SECOND PRECEDING) AS b ON a.ticker = b.ticker AND a.price <> b.price;"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every pair of an A row and a B row of one ticker within 2 s of ROWTIME whose prices
    /// differ meets once, whichever came first.
    #[test]
    fn stream_joins_meet_every_pair_in_range_once(
        rows in proptest::collection::vec((0u8..3, -5i64..20, 0i64..3_000), 1..60),
    ) {
        let rows = checkpointed_rows(rows);
        let mut runner = runner(JOINED);
        let mut got: Vec<(String, i64, i64, i64)> = Vec::new();
        for row in &rows {
            for (stream, out) in runner.push(&source(), row.clone(), 0).rows {
                if stream.as_str() == "J" {
                    let [Value::String(ticker), Value::Integer(a), Value::Integer(b)] = out.values.as_slice() else { panic!() };
                    got.push((ticker.clone(), *a, *b, out.rowtime_ms));
                }
            }
        }
        let side = |keep: fn(i64) -> bool| -> Vec<(String, i64, i64)> {
            rows.iter()
                .filter_map(|row| match (&row.values[0], &row.values[3]) {
                    (Value::String(ticker), Value::Double(price)) if keep(*price as i64) => {
                        Some((ticker.clone(), *price as i64, row.rowtime_ms))
                    }
                    _ => None,
                })
                .collect()
        };
        let (a, b) = (side(|price| price >= 0), side(|price| price < 5));
        let mut expected = Vec::new();
        for (ticker, price_a, time_a) in &a {
            for (other, price_b, time_b) in &b {
                if ticker == other && price_a != price_b && (time_a - time_b).abs() <= 2_000 {
                    expected.push((ticker.clone(), *price_a, *price_b, *time_a.max(time_b)));
                }
            }
        }
        got.sort();
        expected.sort();
        prop_assert_eq!(got, expected);
    }
}

/// The GPU path (`use_device`) puts out exactly what the CPU runner does, batch boundaries,
/// snapshots and all; on whatever adapter wgpu finds (lavapipe in CI).
#[cfg(feature = "device")]
mod on_the_gpu {
    use super::*;
    use crate::run::{open_device, DeviceChoice};

    const CODE: &str = r#"CREATE STREAM OUT (ws TIMESTAMP, ticker VARCHAR(4), n BIGINT, total BIGINT, low BIGINT,
    high BIGINT, average BIGINT, tickers BIGINT, doubles DOUBLE, counted BIGINT);
INSERT INTO OUT SELECT window_start, ticker_symbol, COUNT(*), SUM(CAST(price AS BIGINT)), MIN(CAST(price AS BIGINT)),
    MAX(CAST(price AS BIGINT)), AVG(CAST(price AS BIGINT)), COUNT(DISTINCT ticker_symbol), SUM(price),
    COUNT(CASE WHEN price > 0 THEN price END)
  FROM TABLE(HOP(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(EVENT_TIME), INTERVAL '1' SECOND, INTERVAL '3' SECOND))
  GROUP BY ticker_symbol, window_start, window_end;
CREATE STREAM OUT_T (we TIMESTAMP, n BIGINT, total BIGINT);
INSERT INTO OUT_T SELECT window_end, COUNT(*), SUM(CAST(price AS BIGINT))
  FROM TABLE(TUMBLE(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(ROWTIME), INTERVAL '2' SECOND))
  GROUP BY window_start, window_end;"#;

    fn device() -> Option<crate::run::Device> {
        match open_device(DeviceChoice::Gpu) {
            Ok(device) => device,
            Err(why) if std::env::var_os("MILLRACE_GPU_REQUIRED").is_some() => panic!("{why}"),
            Err(_) => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn the_gpu_path_equals_the_cpu_runner(
            mut events in proptest::collection::vec((0u8..3, 0i64..12_000, -1_000_000i64..1_000_000), 1..200),
            cut in 0usize..200,
        ) {
            let Some(device) = device() else { return Ok(()) };
            events.sort_by_key(|(_, time, _)| *time);
            let rows = event_rows(&events);
            let cut = cut.min(rows.len());
            let mut cpu = runner(CODE);
            let mut gpu = runner(CODE);
            prop_assert_eq!(gpu.use_device(&device), 2);
            let mut from_cpu = Vec::new();
            let mut from_gpu = Vec::new();
            for (place, row) in rows.iter().enumerate() {
                if place == cut {
                    // A snapshot aggregates what is staged; it is the CPU runner's, byte for byte.
                    prop_assert_eq!(gpu.snapshot(), cpu.snapshot());
                }
                from_cpu.extend(cpu.push(&source(), row.clone(), 0).rows);
                from_gpu.extend(gpu.push(&source(), row.clone(), 0).rows);
            }
            from_cpu.extend(cpu.advance(&source(), i64::MAX / 2, 0).rows);
            from_gpu.extend(gpu.advance(&source(), i64::MAX / 2, 0).rows);
            prop_assert!(!from_cpu.is_empty());
            prop_assert_eq!(from_gpu, from_cpu);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// APPROX_PERCENTILE per tumbling window: within 2^-8 (relatively) of the nearest-rank
    /// percentile of the window's values.
    #[test]
    fn approximate_percentiles_are_within_half_a_bucket(
        mut events in proptest::collection::vec((0u8..2, 0i64..6_000, -1_000_000i64..1_000_000), 1..120),
        q in 0.0f64..=1.0,
    ) {
        events.sort_by_key(|(_, time, _)| *time);
        let code = format!(
            r#"CREATE STREAM OUT (ws TIMESTAMP, ticker VARCHAR(4), p DOUBLE);
INSERT INTO OUT SELECT window_start, ticker_symbol, APPROX_PERCENTILE(price, {q:.6})
FROM TABLE(TUMBLE(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(EVENT_TIME), INTERVAL '2' SECOND))
GROUP BY ticker_symbol, window_start, window_end;"#
        );
        let q = (q * 1e6).round() / 1e6;
        let mut runner = runner(&code);
        let mut got = Vec::new();
        // A last event far later moves the watermark past every window (its own stays open).
        let mut all = events.clone();
        all.push((9, 1_000_000, 0));
        for row in event_rows(&all) {
            got.extend(runner.push(&source(), row, 0).rows);
        }
        prop_assert!(!got.is_empty());
        for (_, row) in got {
            let [Value::Timestamp(start), Value::String(ticker), Value::Double(answer)] = row.values.as_slice() else {
                panic!("{row:?}")
            };
            let mut values: Vec<i64> = events
                .iter()
                .filter(|(t, time, _)| format!("T{t}") == *ticker && time.div_euclid(2000) * 2000 == *start)
                .map(|(_, _, price)| *price)
                .collect();
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1] as f64;
            prop_assert!((answer - exact).abs() <= exact.abs() / 256.0 + 1e-9, "{answer} vs {exact}");
        }
    }
}
