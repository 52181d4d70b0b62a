//! The analytics runner's state decoder (what a restart reads back from the disk) fed real
//! states, damaged: the input's first bytes are rows fed to a runner of every window kind,
//! whose snapshot is then cut and flipped where the rest of the input says, and restored (the
//! raw input is restored too). A runner or an error, never a panic; and a state it accepts
//! has a canonical form (partitions and sets in order) that restores to itself.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use millrace_gpu::run::{ApplicationRunner, Row, Value};
use millrace_gpu::sql::plan::{Application, Column, Name, SqlType, StreamDef};
use millrace_gpu::sql::parse_application;

const CODE: &str = r#"CREATE STREAM T (ticker VARCHAR(4), total BIGINT, n BIGINT, low DOUBLE, tickers BIGINT);
CREATE STREAM S (ticker VARCHAR(4), n BIGINT);
CREATE STREAM W (ticker VARCHAR(4), total DOUBLE);
CREATE STREAM K (item VARCHAR(4), n BIGINT);
CREATE STREAM D (n BIGINT);
CREATE PUMP P1 AS INSERT INTO T SELECT STREAM ticker_symbol, SUM(CAST(price AS BIGINT)), COUNT(*), MIN(price),
  COUNT(DISTINCT ticker_symbol) FROM SOURCE_SQL_STREAM_001 GROUP BY ticker_symbol, STEP(ROWTIME BY INTERVAL '10' SECOND);
CREATE PUMP P2 AS INSERT INTO S SELECT STREAM ticker_symbol, COUNT(*) FROM SOURCE_SQL_STREAM_001
  WINDOWED BY STAGGER (PARTITION BY ticker_symbol RANGE INTERVAL '7' SECOND);
CREATE PUMP P3 AS INSERT INTO W SELECT STREAM ticker_symbol, AVG(price) OVER X FROM SOURCE_SQL_STREAM_001
  WINDOW X AS (PARTITION BY ticker_symbol RANGE INTERVAL '5' SECOND PRECEDING);
CREATE PUMP P4 AS INSERT INTO K SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM SOURCE_SQL_STREAM_001), 'TICKER_SYMBOL', 2, 15));
CREATE PUMP P5 AS INSERT INTO D SELECT STREAM * FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM SOURCE_SQL_STREAM_001), 'TICKER_SYMBOL', 15));
CREATE STREAM E (ws TIMESTAMP, ticker VARCHAR(4), n BIGINT);
INSERT INTO E SELECT window_start, ticker_symbol, COUNT(*)
  FROM TABLE(HOP(TABLE SOURCE_SQL_STREAM_001, DESCRIPTOR(ROWTIME), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
  GROUP BY ticker_symbol, window_start, window_end;
CREATE STREAM F (ticker VARCHAR(4), n BIGINT);
INSERT INTO F SELECT ticker_symbol, COUNT(*)
  FROM TABLE(SESSION(TABLE SOURCE_SQL_STREAM_001 PARTITION BY ticker_symbol, DESCRIPTOR(ROWTIME), INTERVAL '1' SECOND))
  GROUP BY ticker_symbol, window_start, window_end;
CREATE STREAM J (ticker VARCHAR(4), a BIGINT, b BIGINT);
CREATE PUMP P6 AS INSERT INTO J SELECT STREAM s.ticker, s.n, e.n
  FROM S AS s JOIN E OVER (RANGE INTERVAL '3' SECOND PRECEDING) AS e ON s.ticker = e.ticker;"#;

fn plan() -> &'static (Application, Vec<StreamDef>) {
    static PLAN: OnceLock<(Application, Vec<StreamDef>)> = OnceLock::new();
    PLAN.get_or_init(|| {
        let column = |name: &str, sql_type| Column { name: Name::new(name), sql_type, not_null: false };
        let inputs = vec![StreamDef {
            name: Name::new("SOURCE_SQL_STREAM_001"),
            columns: vec![column("TICKER_SYMBOL", SqlType::Varchar(4)), column("PRICE", SqlType::Double)],
        }];
        (parse_application(CODE, &inputs).expect("the plan parses"), inputs)
    })
}

fn check(application: &Application, inputs: &[StreamDef], data: &[u8]) {
    if let Ok(runner) = ApplicationRunner::restore(application, inputs, &HashMap::new(), data) {
        let canonical = runner.snapshot();
        let again = ApplicationRunner::restore(application, inputs, &HashMap::new(), &canonical)
            .expect("a snapshot the runner wrote restores");
        assert_eq!(again.snapshot(), canonical, "the canonical form restores to itself");
    }
}

fuzz_target!(|data: &[u8]| {
    let (application, inputs) = plan();
    check(application, inputs, data);
    // Rows: 3 bytes each (ticker, price, ms step), as many as the first byte says.
    let Some((&count, rest)) = data.split_first() else { return };
    let rows = usize::from(count % 48).min(rest.len() / 3);
    let (script, damage) = rest.split_at(rows * 3);
    let mut runner = ApplicationRunner::new(application, inputs, &HashMap::new()).expect("runnable");
    let source = Name::new("SOURCE_SQL_STREAM_001");
    let mut rowtime_ms = 0i64;
    for row in script.chunks_exact(3) {
        rowtime_ms += i64::from(row[2]) * 97;
        let values = vec![Value::String(format!("T{}", row[0] % 4)), Value::Double(f64::from(row[1]) - 20.0)];
        runner.push(&source, Row { rowtime_ms, values }, 0);
    }
    let mut snapshot = runner.snapshot();
    check(application, inputs, &snapshot);
    // Damage: (position, xor) pairs, then a cut where the last byte says.
    for pair in damage.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % snapshot.len();
        snapshot[at] ^= pair[2];
    }
    if damage.len() % 3 == 1 {
        let cut = usize::from(damage[damage.len() - 1]) % snapshot.len();
        snapshot.truncate(cut);
    }
    check(application, inputs, &snapshot);
});
