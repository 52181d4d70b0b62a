//! The byte layouts of delivered objects (`net/FIREHOSE-NOTES.md` §6): GZIP (RFC 1952), ZIP
//! (one deflated entry named by a UUID), `Snappy` (snappy-java's stream: a 16-byte header,
//! then blocks of at most 32 KiB, each `u32 length | raw Snappy`), and `HADOOP_SNAPPY`
//! (Hadoop's `BlockCompressorStream`: `u32 uncompressed | u32 compressed | raw Snappy` per
//! 32 KiB block, no header). Integers are big-endian.
//!
//! [`decompress`] reads all four back (the tests and the property tests use it next to the
//! reference decoders: flate2 for gzip, Python's `zipfile`, `gzip` and python-snappy in the
//! client suite).

use std::io::Write;

use super::key::Compression;

/// snappy-java's and Hadoop's block size on the write side.
pub const SNAPPY_BLOCK: usize = 32 * 1024;

/// snappy-java's stream header: magic, version 1, minimum compatible version 1.
pub const SNAPPY_JAVA_HEADER: [u8; 16] =
    [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];

/// Compresses one object's payload. `zip_entry` names the ZIP entry (AWS uses a UUID).
pub fn compress(format: Compression, payload: &[u8], zip_entry: &str) -> Vec<u8> {
    match format {
        Compression::Uncompressed => payload.to_vec(),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(payload.len() / 3 + 64),
                flate2::Compression::default(),
            );
            encoder.write_all(payload).expect("writing to memory");
            encoder.finish().expect("writing to memory")
        }
        Compression::Zip => zip_one(payload, zip_entry),
        Compression::Snappy => {
            let mut out = Vec::with_capacity(payload.len() / 2 + 64);
            out.extend_from_slice(&SNAPPY_JAVA_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in payload.chunks(SNAPPY_BLOCK) {
                let compressed = encoder.compress_vec(block).expect("a block within snappy's limits");
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
        Compression::HadoopSnappy => {
            let mut out = Vec::with_capacity(payload.len() / 2 + 64);
            let mut encoder = snap::raw::Encoder::new();
            for block in payload.chunks(SNAPPY_BLOCK) {
                let compressed = encoder.compress_vec(block).expect("a block within snappy's limits");
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
    }
}

/// [`compress`] taking the payload: an uncompressed object is the payload itself, not a copy.
pub fn compress_owned(format: Compression, payload: Vec<u8>, zip_entry: &str) -> Vec<u8> {
    match format {
        Compression::Uncompressed => payload,
        _ => compress(format, &payload, zip_entry),
    }
}

/// A ZIP archive with one deflated entry (PKWARE APPNOTE 6.3: local header, data, central
/// directory, end record; sizes known up front, so no data descriptor). ZIP64 is not
/// needed: an object is at most 128 MiB before compression.
fn zip_one(payload: &[u8], name: &str) -> Vec<u8> {
    let mut deflater = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(payload.len() / 3 + 64),
        flate2::Compression::default(),
    );
    deflater.write_all(payload).expect("writing to memory");
    let data = deflater.finish().expect("writing to memory");
    let mut crc = flate2::Crc::new();
    crc.update(payload);
    let crc = crc.sum();
    let (compressed, size) = (data.len() as u32, payload.len() as u32);
    // 1980-01-01 00:00 in DOS time: the entry's own time is not meaningful here.
    let (dos_time, dos_date): (u16, u16) = (0, (1 << 5) | 1);
    let name = name.as_bytes();
    let mut out = Vec::with_capacity(data.len() + 2 * name.len() + 128);
    let common = |out: &mut Vec<u8>| {
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0 (deflate)
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&8u16.to_le_bytes()); // method: deflate
        out.extend_from_slice(&dos_time.to_le_bytes());
        out.extend_from_slice(&dos_date.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&compressed.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // extra length
    };
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    common(&mut out);
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    let central_at = out.len() as u32;
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    out.extend_from_slice(&20u16.to_le_bytes()); // version made by
    common(&mut out);
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out.extend_from_slice(&0u16.to_le_bytes()); // disk number
    out.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    out.extend_from_slice(&0u32.to_le_bytes()); // external attributes
    out.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    out.extend_from_slice(name);
    let central_len = out.len() as u32 - central_at;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // this disk
    out.extend_from_slice(&0u16.to_le_bytes()); // disk with the directory
    out.extend_from_slice(&1u16.to_le_bytes()); // entries on this disk
    out.extend_from_slice(&1u16.to_le_bytes()); // entries
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

/// Why an object could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{format}: {what}")]
    Malformed { format: &'static str, what: String },
}

fn malformed(format: &'static str, what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed { format, what: what.into() }
}

fn be32(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn le(bytes: &[u8], at: usize, width: usize) -> Option<usize> {
    let slice = bytes.get(at..at + width)?;
    Some(slice.iter().rev().fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte)))
}

/// Reads an object back to its payload. Accepts what other writers produce too: several
/// gzip members, Hadoop blocks of several chunks and of any size.
pub fn decompress(format: Compression, object: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = snap::raw::Decoder::new();
    match format {
        Compression::Uncompressed => Ok(object.to_vec()),
        Compression::Gzip => {
            let mut out = Vec::new();
            let mut reader = flate2::read::MultiGzDecoder::new(object);
            std::io::Read::read_to_end(&mut reader, &mut out)
                .map_err(|e| malformed("gzip", e.to_string()))?;
            Ok(out)
        }
        Compression::Zip => {
            if le(object, 0, 4) != Some(0x0403_4b50) {
                return Err(malformed("zip", "no local file header"));
            }
            let bad = || malformed("zip", "truncated local header");
            let method = le(object, 8, 2).ok_or_else(bad)?;
            let compressed = le(object, 18, 4).ok_or_else(bad)?;
            let name_len = le(object, 26, 2).ok_or_else(bad)?;
            let extra_len = le(object, 28, 2).ok_or_else(bad)?;
            let start = 30 + name_len + extra_len;
            let data =
                object.get(start..start + compressed).ok_or_else(|| malformed("zip", "truncated data"))?;
            match method {
                0 => Ok(data.to_vec()),
                8 => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(data), &mut out)
                        .map_err(|e| malformed("zip", e.to_string()))?;
                    Ok(out)
                }
                other => Err(malformed("zip", format!("compression method {other}"))),
            }
        }
        Compression::Snappy => {
            let body = object
                .strip_prefix(&SNAPPY_JAVA_HEADER[..8])
                .ok_or_else(|| malformed("snappy-java", "no stream header"))?;
            let body = body.get(8..).ok_or_else(|| malformed("snappy-java", "truncated header"))?;
            let (mut at, mut out) = (0, Vec::new());
            while at < body.len() {
                let len = be32(body, at).ok_or_else(|| malformed("snappy-java", "truncated block length"))?;
                let block = body
                    .get(at + 4..at + 4 + len)
                    .ok_or_else(|| malformed("snappy-java", "truncated block"))?;
                out.extend(
                    decoder.decompress_vec(block).map_err(|e| malformed("snappy-java", e.to_string()))?,
                );
                at += 4 + len;
            }
            Ok(out)
        }
        Compression::HadoopSnappy => {
            let (mut at, mut out) = (0, Vec::new());
            while at < object.len() {
                let want = be32(object, at).ok_or_else(|| malformed("hadoop-snappy", "truncated block"))?;
                at += 4;
                let mut got = 0;
                while got < want {
                    let len = be32(object, at)
                        .ok_or_else(|| malformed("hadoop-snappy", "truncated chunk length"))?;
                    let chunk = object
                        .get(at + 4..at + 4 + len)
                        .ok_or_else(|| malformed("hadoop-snappy", "truncated chunk"))?;
                    let plain = decoder
                        .decompress_vec(chunk)
                        .map_err(|e| malformed("hadoop-snappy", e.to_string()))?;
                    got += plain.len();
                    out.extend(plain);
                    at += 4 + len;
                }
                if got != want {
                    return Err(malformed(
                        "hadoop-snappy",
                        format!("block says {want} bytes, chunks hold {got}"),
                    ));
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 5] = [
        Compression::Uncompressed,
        Compression::Gzip,
        Compression::Zip,
        Compression::Snappy,
        Compression::HadoopSnappy,
    ];

    #[test]
    fn empty_snappy_java_is_the_header_alone() {
        assert_eq!(compress(Compression::Snappy, b"", "x"), SNAPPY_JAVA_HEADER);
        assert!(compress(Compression::HadoopSnappy, b"", "x").is_empty());
    }

    #[test]
    fn snappy_java_layout_matches_the_recorded_object_sizes() {
        // A 690-byte payload: AWS's object was 193 bytes (16 + 4 + 173) and the Hadoop one
        // 181 (4 + 4 + 173): the framing overheads must be exactly those.
        let payload: Vec<u8> = (0..690).map(|i| b"abcdefghij"[i % 10]).collect();
        let java = compress(Compression::Snappy, &payload, "x");
        let hadoop = compress(Compression::HadoopSnappy, &payload, "x");
        let raw = snap::raw::Encoder::new().compress_vec(&payload).unwrap();
        assert_eq!(java.len(), 16 + 4 + raw.len());
        assert_eq!(hadoop.len(), 8 + raw.len());
        assert_eq!(&hadoop[..4], &690u32.to_be_bytes());
    }

    #[test]
    fn hadoop_reader_takes_blocks_of_several_chunks() {
        // Hadoop's own codec writes 256 KiB blocks in several chunks.
        let payload: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let mut object = (payload.len() as u32).to_be_bytes().to_vec();
        for chunk in payload.chunks(70_000) {
            let compressed = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            object.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
            object.extend_from_slice(&compressed);
        }
        assert_eq!(decompress(Compression::HadoopSnappy, &object).unwrap(), payload);
    }

    #[test]
    fn gzip_is_read_by_flate2_s_reference_decoder() {
        let object = compress(Compression::Gzip, b"hello firehose", "x");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&object[..]), &mut out).unwrap();
        assert_eq!(out, "hello firehose");
    }

    #[test]
    fn truncated_objects_are_refused_not_misread() {
        for format in [Compression::Gzip, Compression::Zip, Compression::Snappy, Compression::HadoopSnappy] {
            let payload: Vec<u8> =
                (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let object = compress(format, &payload, "entry");
            assert!(decompress(format, &object[..object.len() / 2]).is_err(), "{format:?}");
        }
    }

    proptest! {
        #[test]
        fn every_format_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..100_000), pick in 0usize..5) {
            let format = ALL[pick];
            let object = compress(format, &payload, "0f8fad5b-d9cb-469f-a165-70867728950e");
            prop_assert_eq!(decompress(format, &object).unwrap(), payload);
        }
    }
}
