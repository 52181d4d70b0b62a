//! Garbage fed to an analytics application's record decoders (KDA's RecordFormat JSON with
//! JSONPath mappings and a row path over an array, and CSV): rows or an error, never a
//! panic; the JSONPath parser likewise; and a JSON row written back reads as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_gpu::run::record::{encode, InputSchema, JsonPath, OutputFormat};
use millrace_gpu::sql::plan::{Column, Name, SqlType};

fuzz_target!(|data: &[u8]| {
    let column = |name: &str, sql_type| Column { name: Name::new(name), sql_type, not_null: false };
    let columns = vec![
        column("ID", SqlType::BigInt),
        column("NAME", SqlType::Varchar(8)),
        column("AT", SqlType::Timestamp),
        column("AMOUNT", SqlType::Decimal { precision: 12, scale: 2 }),
        column("RATE", SqlType::Double),
    ];
    let mappings = ["$.id", "$.who['name']", "$.at", "$.amount", "$.rate"];
    let json = InputSchema::json("$.rows[0:]", columns.clone(), &mappings).expect("a valid schema");
    if let Ok(rows) = json.decode(data) {
        let flat = InputSchema::json("$", columns.clone(), &["$.ID", "$.NAME", "$.AT", "$.AMOUNT", "$.RATE"])
            .expect("a valid schema");
        for row in rows {
            let record = encode(OutputFormat::Json, &columns, &row);
            let again = flat.decode(&record).expect("an encoded row decodes");
            assert_eq!(again, vec![row], "{}", String::from_utf8_lossy(&record));
        }
    }
    let csv = InputSchema::csv("\n", "|", columns).expect("a valid schema");
    let _ = csv.decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<JsonPath>();
    }
});
