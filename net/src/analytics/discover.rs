//! DiscoverInputSchema: a schema inferred from sample records, as the console's "Discover
//! schema" proposes it. JSON objects give a column per scalar member (nested objects
//! flattened, their mapping the path to the member); anything else is read as CSV
//! (`,` between columns, a newline between rows) with columns `COL1`, `COL2`, ….
//!
//! Types: integers INTEGER (BIGINT past 32 bits), other numbers DOUBLE, booleans BOOLEAN,
//! text VARCHAR of the longest value seen rounded up to a power of two (KDA's proposals look
//! like that: `VARCHAR(4)` for tickers, `VARCHAR(16)` for sectors).

use crate::aws::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean,
    Integer,
    BigInt,
    Double,
    Text(usize),
}

impl Kind {
    fn widen(self, other: Kind) -> Kind {
        use Kind::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Text(a), Text(b)) => Text(a.max(b)),
            (Text(a), _) | (_, Text(a)) => Text(a.max(32)),
            (Integer, BigInt) | (BigInt, Integer) => BigInt,
            (Integer | BigInt | Double, Integer | BigInt | Double) => Double,
            _ => Text(32),
        }
    }

    fn sql(self) -> String {
        match self {
            Kind::Boolean => "BOOLEAN".into(),
            Kind::Integer => "INTEGER".into(),
            Kind::BigInt => "BIGINT".into(),
            Kind::Double => "DOUBLE".into(),
            Kind::Text(length) => format!("VARCHAR({})", length.max(1).next_power_of_two().min(65_534)),
        }
    }

    fn of_text(text: &str) -> Kind {
        if let Ok(number) = text.parse::<i64>() {
            return if i32::try_from(number).is_ok() { Kind::Integer } else { Kind::BigInt };
        }
        if text.parse::<f64>().is_ok_and(f64::is_finite) && !text.is_empty() {
            return Kind::Double;
        }
        if text == "true" || text == "false" {
            return Kind::Boolean;
        }
        Kind::Text(text.chars().count())
    }
}

struct Column {
    name: String,
    mapping: Option<String>,
    kind: Option<Kind>,
}

/// What was discovered.
pub struct Discovered {
    pub schema: Value,
    pub parsed: Vec<Vec<String>>,
}

/// A JSON document with its objects' members in the order they were written.
enum Node {
    Object(Vec<(String, Node)>),
    Array,
    Scalar(serde_json::Value),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Node;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Node>()? {
                    members.push((key, value));
                }
                Ok(Node::Object(members))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Node::Array)
            }

            fn visit_bool<E>(self, value: bool) -> Result<Node, E> {
                Ok(Node::Scalar(value.into()))
            }

            fn visit_i64<E>(self, value: i64) -> Result<Node, E> {
                Ok(Node::Scalar(value.into()))
            }

            fn visit_u64<E>(self, value: u64) -> Result<Node, E> {
                Ok(Node::Scalar(value.into()))
            }

            fn visit_f64<E>(self, value: f64) -> Result<Node, E> {
                Ok(Node::Scalar(value.into()))
            }

            fn visit_str<E>(self, value: &str) -> Result<Node, E> {
                Ok(Node::Scalar(value.into()))
            }

            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar(serde_json::Value::Null))
            }

            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar(serde_json::Value::Null))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The schema of `samples`; `None` when there is nothing to infer from.
pub fn discover(samples: &[Vec<u8>]) -> Option<Discovered> {
    if samples.is_empty() {
        return None;
    }
    let objects: Option<Vec<Vec<(String, Node)>>> = samples
        .iter()
        .map(|sample| match serde_json::from_slice::<Node>(sample) {
            Ok(Node::Object(members)) => Some(members),
            _ => None,
        })
        .collect();
    match objects {
        Some(objects) => Some(json(&objects)),
        None => csv(samples),
    }
}

fn json(objects: &[Vec<(String, Node)>]) -> Discovered {
    fn walk(
        object: &[(String, Node)],
        path: &str,
        columns: &mut Vec<Column>,
        values: &mut Vec<(String, String)>,
    ) {
        for (key, node) in object {
            let mapping = format!("{path}.{key}");
            let value = match node {
                Node::Object(inner) => {
                    walk(inner, &mapping, columns, values);
                    continue;
                }
                Node::Array => continue,
                Node::Scalar(value) => value,
            };
            let kind = match value {
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => continue,
                serde_json::Value::Null => None,
                serde_json::Value::Bool(_) => Some(Kind::Boolean),
                serde_json::Value::Number(number) => Some(match number.as_i64() {
                    Some(integer) if i32::try_from(integer).is_ok() => Kind::Integer,
                    Some(_) => Kind::BigInt,
                    None => Kind::Double,
                }),
                serde_json::Value::String(text) => Some(Kind::Text(text.chars().count())),
            };
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            values.push((mapping.clone(), text));
            match columns.iter_mut().find(|column| column.mapping.as_deref() == Some(mapping.as_str())) {
                Some(column) => {
                    column.kind = match (column.kind, kind) {
                        (Some(a), Some(b)) => Some(a.widen(b)),
                        (a, b) => a.or(b),
                    }
                }
                None => {
                    let mut name: String = key
                        .chars()
                        .map(|ch| if ch.is_alphanumeric() || ch == '_' { ch } else { '_' })
                        .collect();
                    if columns.iter().any(|column| column.name == name) {
                        name = mapping[2..].replace('.', "_");
                    }
                    columns.push(Column { name, mapping: Some(mapping), kind })
                }
            }
        }
    }
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for object in objects {
        let mut values = Vec::new();
        walk(object, "$", &mut columns, &mut values);
        rows.push(values);
    }
    let parsed = rows
        .into_iter()
        .map(|values| {
            columns
                .iter()
                .map(|column| {
                    values
                        .iter()
                        .find(|(mapping, _)| Some(mapping) == column.mapping.as_ref())
                        .map(|(_, text)| text.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let format = Value::map().with("RecordFormatType", "JSON").with(
        "MappingParameters",
        Value::map().with("JSONMappingParameters", Value::map().with("RecordRowPath", "$")),
    );
    Discovered { schema: schema(format, &columns), parsed }
}

fn csv(samples: &[Vec<u8>]) -> Option<Discovered> {
    let mut parsed: Vec<Vec<String>> = Vec::new();
    for sample in samples {
        let text = std::str::from_utf8(sample).ok()?;
        for line in text.split('\n').filter(|line| !line.trim().is_empty()) {
            parsed.push(line.trim_end_matches('\r').split(',').map(str::to_owned).collect());
        }
    }
    let width = parsed.iter().map(Vec::len).max()?;
    let mut columns: Vec<Column> =
        (1..=width).map(|index| Column { name: format!("COL{index}"), mapping: None, kind: None }).collect();
    for row in &parsed {
        for (column, text) in columns.iter_mut().zip(row) {
            let kind = Kind::of_text(text);
            column.kind = Some(column.kind.map_or(kind, |old| old.widen(kind)));
        }
    }
    let format = Value::map().with("RecordFormatType", "CSV").with(
        "MappingParameters",
        Value::map().with(
            "CSVMappingParameters",
            Value::map().with("RecordRowDelimiter", "\n").with("RecordColumnDelimiter", ","),
        ),
    );
    Some(Discovered { schema: schema(format, &columns), parsed })
}

fn schema(format: Value, columns: &[Column]) -> Value {
    let columns = columns
        .iter()
        .map(|column| {
            Value::map()
                .with("Name", column.name.as_str())
                .with_opt("Mapping", column.mapping.clone())
                .with("SqlType", column.kind.unwrap_or(Kind::Text(1)).sql())
        })
        .collect();
    Value::map()
        .with("RecordFormat", format)
        .with("RecordEncoding", "UTF-8")
        .with("RecordColumns", Value::List(columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(discovered: &Discovered) -> Vec<(String, String)> {
        let Some(Value::List(columns)) = discovered.schema.get("RecordColumns") else { panic!() };
        columns
            .iter()
            .map(|column| match (column.get("Name"), column.get("SqlType")) {
                (Some(Value::Str(name)), Some(Value::Str(kind))) => (name.clone(), kind.clone()),
                _ => panic!(),
            })
            .collect()
    }

    #[test]
    fn the_stock_ticker_demo() {
        let samples: Vec<Vec<u8>> = [
            r#"{"TICKER_SYMBOL":"AMZN","SECTOR":"TECHNOLOGY","CHANGE":-0.5,"PRICE":101.25}"#,
            r#"{"TICKER_SYMBOL":"QXZ","SECTOR":"HEALTHCARE","CHANGE":2,"PRICE":84}"#,
        ]
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .collect();
        let found = discover(&samples).unwrap();
        assert_eq!(
            columns(&found),
            [
                ("TICKER_SYMBOL", "VARCHAR(4)"),
                ("SECTOR", "VARCHAR(16)"),
                ("CHANGE", "DOUBLE"),
                ("PRICE", "DOUBLE")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(found.parsed[1], ["QXZ", "HEALTHCARE", "2", "84"]);
    }

    #[test]
    fn csv_and_nested_json() {
        let found = discover(&[b"1,abc,2.5\n2,de,3\n".to_vec()]).unwrap();
        assert_eq!(columns(&found)[0], ("COL1".to_owned(), "INTEGER".to_owned()));
        assert_eq!(columns(&found)[2], ("COL3".to_owned(), "DOUBLE".to_owned()));
        let found = discover(&[br#"{"a":{"b":1},"c":true}"#.to_vec()]).unwrap();
        assert_eq!(
            columns(&found),
            [("b".to_owned(), "INTEGER".to_owned()), ("c".to_owned(), "BOOLEAN".to_owned())]
        );
        assert!(discover(&[]).is_none());
    }
}
