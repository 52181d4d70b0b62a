//! Garbage fed to the KDA SQL front end: it answers a plan or an error placed inside the
//! text, never panics, and a plan written back as SQL parses to the same plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_gpu::sql::parse_application;
use millrace_gpu::sql::plan::{Column, Name, SqlType, StreamDef};

fuzz_target!(|data: &[u8]| {
    let code = String::from_utf8_lossy(data);
    let column = |name: &str, sql_type| Column { name: Name::new(name), sql_type, not_null: false };
    let inputs = [
        StreamDef {
            name: Name::new("SOURCE_SQL_STREAM_001"),
            columns: vec![
                column("TICKER_SYMBOL", SqlType::Varchar(4)),
                column("SECTOR", SqlType::Varchar(16)),
                column("CHANGE", SqlType::Real),
                column("PRICE", SqlType::Real),
            ],
        },
        StreamDef { name: Name::new("REF"), columns: vec![column("TICKER", SqlType::Varchar(4))] },
    ];
    match parse_application(&code, &inputs) {
        Ok(application) => {
            let canonical = application.to_sql(&inputs);
            let again = parse_application(&canonical, &inputs)
                .unwrap_or_else(|error| panic!("the canonical text does not parse: {error}\n{canonical}"));
            assert_eq!(again, application, "{canonical}");
        }
        Err(error) => {
            if let Some(position) = error.position {
                let lines: Vec<&str> = code.split('\n').collect();
                assert!(position.line >= 1 && position.line as usize <= lines.len() + 1, "{error}");
            }
        }
    }
});
