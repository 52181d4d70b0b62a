//! Dynamic partitioning's `MetadataExtraction` processor: a jq expression (jq 1.6 syntax,
//! evaluated by jaq) that turns each JSON record into its partition keys, e.g.
//! `{customer_id: .customer_id, year: .ts | strftime("%Y")}`.
//!
//! The filter is compiled once per delivery stream, on a thread of its own (jaq's values
//! are reference-counted, not `Send`): the delivery worker sends it batches of records and
//! gets their keys back.

use std::sync::mpsc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;

/// Partition keys of one record, in the order the query's object gives them.
pub type Keys = Vec<(String, String)>;

struct Job {
    records: Vec<Vec<u8>>,
    reply: tokio::sync::oneshot::Sender<Vec<Result<Keys, String>>>,
}

/// A compiled query, running on its own thread until dropped.
pub struct Extractor {
    jobs: mpsc::Sender<Job>,
}

/// Checks that a query compiles (for CreateDeliveryStream); the error says where it fails.
pub fn check(query: &str) -> Result<(), String> {
    with_filter(query, |_| ())
}

fn with_filter<T>(
    query: &str,
    run: impl FnOnce(&dyn Fn(&[u8]) -> Result<Keys, String>) -> T,
) -> Result<T, String> {
    let program = File { code: query, path: () };
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, program)
        .map_err(|errors| format!("MetadataExtractionQuery {query:?} does not parse: {errors:?}"))?;
    let filter = Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| format!("MetadataExtractionQuery {query:?} does not compile: {errors:?}"))?;
    let evaluate = |record: &[u8]| -> Result<Keys, String> {
        let input = jaq_json::read::parse_single(record)
            .map_err(|error| format!("the record is not JSON: {error}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
        let mut outputs = filter.id.run((ctx, input)).map(unwrap_valr);
        let output = match outputs.next() {
            Some(Ok(output)) => output,
            Some(Err(error)) => return Err(format!("the query failed on the record: {error}")),
            None => return Err("the query gave no value for the record".to_owned()),
        };
        let Val::Obj(members) = output else {
            return Err(format!("the query must give an object of partition keys, not {output}"));
        };
        let mut keys = Vec::with_capacity(members.len());
        for (name, value) in members.iter() {
            let name = match name {
                Val::TStr(text) | Val::BStr(text) => String::from_utf8_lossy(text).into_owned(),
                other => other.to_string(),
            };
            let value = match value {
                Val::TStr(text) | Val::BStr(text) => String::from_utf8_lossy(text).into_owned(),
                Val::Num(_) | Val::Bool(_) => value.to_string(),
                Val::Null => return Err(format!("partition key {name} is null for the record")),
                other => {
                    return Err(format!("partition key {name} must be a string or a number, not {other}"))
                }
            };
            keys.push((name, value));
        }
        Ok(keys)
    };
    Ok(run(&evaluate))
}

/// The keys of a query that is one object literal (`{a: …, "b": …}`, the form AWS
/// documents); `None` for any other form, whose keys are only known when it runs.
pub fn top_level_keys(query: &str) -> Option<Vec<String>> {
    let inner = query.trim().strip_prefix('{')?.strip_suffix('}')?;
    let (mut keys, mut depth, mut start, mut in_string, mut escaped) =
        (Vec::new(), 0i32, 0usize, false, false);
    let mut entries = Vec::new();
    for (at, c) in inner.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                entries.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    entries.push(&inner[start..]);
    for entry in entries {
        let (key, _) = entry.split_once(':')?;
        let key = key.trim();
        let key = match key.strip_prefix('"').and_then(|key| key.strip_suffix('"')) {
            Some(quoted) => quoted,
            None if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => key,
            None => return None,
        };
        keys.push(key.to_owned());
    }
    Some(keys)
}

impl Extractor {
    /// Compiles `query` on a new thread; fails as [`check`] does.
    pub fn start(query: &str, stream: &str) -> Result<Extractor, String> {
        let (jobs, receive) = mpsc::channel::<Job>();
        let (compiled, compiled_rx) = mpsc::channel::<Result<(), String>>();
        let query = query.to_owned();
        std::thread::Builder::new()
            .name(format!("jq {stream}"))
            .spawn(move || {
                let result = with_filter(&query, |evaluate| {
                    let _ = compiled.send(Ok(()));
                    for job in receive {
                        let keys = job.records.iter().map(|record| evaluate(record)).collect();
                        let _ = job.reply.send(keys);
                    }
                });
                if let Err(error) = result {
                    let _ = compiled.send(Err(error));
                }
            })
            .map_err(|error| format!("starting the query's thread: {error}"))?;
        compiled_rx.recv().map_err(|_| "the query's thread ended".to_owned())??;
        Ok(Extractor { jobs })
    }

    /// The keys of each record, in order (or why it has none).
    pub async fn extract(&self, records: Vec<Vec<u8>>) -> Vec<Result<Keys, String>> {
        let count = records.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job { records, reply }).is_err() {
            return vec![Err("the query's thread ended".to_owned()); count];
        }
        answer.await.unwrap_or_else(|_| vec![Err("the query's thread ended".to_owned()); count])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(query: &str, records: &[&str]) -> Vec<Result<Keys, String>> {
        let extractor = Extractor::start(query, "test").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(extractor.extract(records.iter().map(|r| r.as_bytes().to_vec()).collect()))
    }

    #[test]
    fn the_documented_query() {
        let got = keys(
            r#"{customer_id: .customer_id, year: .event_timestamp | strftime("%Y"), n: .n}"#,
            &[
                r#"{"customer_id":"c-7","event_timestamp":1700000000,"n":3}"#,
                "not json",
                r#"{"customer_id":null}"#,
            ],
        );
        assert_eq!(
            got[0].as_ref().unwrap(),
            &vec![
                ("customer_id".into(), "c-7".into()),
                ("year".into(), "2023".into()),
                ("n".into(), "3".into())
            ]
        );
        assert!(got[1].as_ref().unwrap_err().contains("not JSON"));
        assert!(got[2].as_ref().unwrap_err().contains("null"));
    }

    #[test]
    fn keys_of_an_object_literal() {
        assert_eq!(
            top_level_keys(
                r#"{customer_id: .customer_id, "year": .ts | strftime("%Y,%m"), m: {a: 1, b: 2}}"#
            ),
            Some(vec!["customer_id".into(), "year".into(), "m".into()])
        );
        assert_eq!(top_level_keys(".x | {a: 1}"), None);
    }

    #[test]
    fn bad_queries_are_refused_at_once() {
        assert!(check("{a: .a").is_err());
        assert!(check("{a: nosuchfunction}").is_err());
        assert!(check("{a: .a}").is_ok());
        assert!(Extractor::start("{", "t").is_err());
    }
}
