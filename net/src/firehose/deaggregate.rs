//! Records that carry several records: KPL aggregation (the Kinesis Producer Library's
//! format, de-aggregated whenever the source is a data stream, as Firehose does), and the
//! `RecordDeAggregation` processor's JSON and DELIMITED sub-records.
//!
//! The KPL format: the magic `F3 89 9A C2`, a protobuf `AggregatedRecord`
//! (`repeated string partition_key_table = 1; repeated string explicit_hash_key_table = 2;
//! repeated Record records = 3`, each `Record` with `uint64 partition_key_index = 1`,
//! `uint64 explicit_hash_key_index = 2`, `bytes data = 3`, `repeated Tag tags = 4`), then the
//! MD5 of the protobuf bytes. A record that does not check out is not aggregated: it is
//! delivered as it is, as the KPL's own de-aggregator does.
//!
//! Pure: bytes in, records out; fuzzed by `fuzz/fuzz_targets/firehose_deaggregate.rs`.

use md5::{Digest, Md5};

pub const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The sub-records of a KPL-aggregated record, or `None` when it is not one.
pub fn kpl(record: &[u8]) -> Option<Vec<&[u8]>> {
    let body = record.strip_prefix(&KPL_MAGIC)?;
    if body.len() < 16 {
        return None;
    }
    let (message, digest) = body.split_at(body.len() - 16);
    if Md5::digest(message).as_slice() != digest {
        return None;
    }
    let mut records = Vec::new();
    let mut fields = Fields { bytes: message };
    while let Some(field) = fields.next()? {
        if let (3, Wire::Bytes(record)) = field {
            let mut inner = Fields { bytes: record };
            let mut data = None;
            while let Some(field) = inner.next()? {
                if let (3, Wire::Bytes(bytes)) = field {
                    data = Some(bytes);
                }
            }
            records.push(data?);
        }
    }
    Some(records)
}

/// Builds a KPL-aggregated record (for tests and the fuzz target's round trip).
pub fn kpl_aggregate(partition_key: &str, records: &[&[u8]]) -> Vec<u8> {
    let mut message = Vec::new();
    put_bytes(&mut message, 1, partition_key.as_bytes());
    for data in records {
        let mut record = Vec::new();
        put_varint(&mut record, 1 << 3); // field 1, varint
        put_varint(&mut record, 0);
        put_bytes(&mut record, 3, data);
        put_bytes(&mut message, 3, &record);
    }
    let mut out = KPL_MAGIC.to_vec();
    out.extend_from_slice(&message);
    out.extend_from_slice(&Md5::digest(&message));
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Wire<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

/// A protobuf field reader: `Some(None)` at the end, `None` on malformed input.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    #[allow(clippy::type_complexity)]
    fn next(&mut self) -> Option<Option<(u64, Wire<'a>)>> {
        if self.bytes.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => {
                self.varint()?;
                Wire::Varint
            }
            1 => {
                self.bytes = self.bytes.get(8..)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let bytes = self.bytes.get(..len)?;
                self.bytes = &self.bytes[len..];
                Wire::Bytes(bytes)
            }
            5 => {
                self.bytes = self.bytes.get(4..)?;
                Wire::Fixed
            }
            _ => return None,
        };
        Some(Some((key >> 3, wire)))
    }
}

/// `RecordDeAggregation` with `SubRecordType` JSON: a record holding several JSON values one
/// after another (`{…}{…}`, or one per line). Each top-level value is a record.
pub fn json_values(record: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut in_string, mut escaped) = (0usize, None, false, false);
    for (at, &byte) in record.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    if depth == 0 {
                        out.push(&record[start.take().expect("a string started")..=at]);
                    }
                }
                _ => {}
            }
            continue;
        }
        match byte {
            b'{' | b'[' => {
                if depth == 0 {
                    start = Some(at);
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced {:?} at byte {at}", byte as char))?;
                if depth == 0 {
                    out.push(&record[start.take().expect("a value started")..=at]);
                }
            }
            b'"' => {
                in_string = true;
                if depth == 0 {
                    start = Some(at);
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => {}
            _ if depth == 0 => return Err(format!("byte {at} is outside any JSON object or array")),
            _ => {}
        }
    }
    if depth != 0 || in_string {
        return Err("the record ends inside a JSON value".to_owned());
    }
    Ok(out)
}

/// `RecordDeAggregation` with `SubRecordType` DELIMITED: records separated by `delimiter`
/// (empty pieces dropped).
pub fn delimited<'a>(record: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    if delimiter.is_empty() {
        return vec![record];
    }
    let mut out = Vec::new();
    let mut rest = record;
    while let Some(at) = rest.windows(delimiter.len()).position(|window| window == delimiter) {
        if at > 0 {
            out.push(&rest[..at]);
        }
        rest = &rest[at + delimiter.len()..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn not_aggregated_records_pass_through() {
        assert!(kpl(b"plain").is_none());
        let mut broken = kpl_aggregate("k", &[b"a"]);
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert!(kpl(&broken).is_none(), "a bad checksum is not an aggregate");
    }

    #[test]
    fn json_sub_records() {
        assert_eq!(
            json_values(br#"{"a":1}{"b":"}"} [1,2]"#).unwrap(),
            vec![&br#"{"a":1}"#[..], br#"{"b":"}"}"#, b"[1,2]"]
        );
        assert_eq!(json_values(b"{\"a\":1}\n{\"a\":2}\n").unwrap().len(), 2);
        assert!(json_values(b"{\"a\":1").is_err());
        assert!(json_values(b"{} x").is_err());
    }

    #[test]
    fn delimited_sub_records() {
        assert_eq!(delimited(b"a||b||||c", b"||"), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(delimited(b"abc", b""), vec![&b"abc"[..]]);
    }

    proptest! {
        #[test]
        fn kpl_round_trips(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let aggregated = kpl_aggregate("pk", &slices);
            prop_assert_eq!(kpl(&aggregated).unwrap(), slices);
        }

        #[test]
        fn kpl_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut record = KPL_MAGIC.to_vec();
            record.extend_from_slice(&bytes);
            let _ = kpl(&record);
        }
    }
}
