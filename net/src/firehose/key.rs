//! The name of each object Firehose delivers: `<evaluated prefix><stream>-<version>-
//! <yyyy>-<MM>-<dd>-<HH>-<mm>-<ss>-<uuid><extension>`, the suffix fixed as AWS writes it
//! (`net/FIREHOSE-NOTES.md` §2); the compression formats with their extensions and
//! `Content-Encoding`; and `FileExtension`, which replaces the compression's extension.
//!
//! Pure: the caller brings the random bytes, so names are reproducible in tests.

use std::fmt::Write as _;

use super::prefix::{DatePattern, RANDOM_STRING_CHARS};

/// `CompressionFormat`, spelled as AWS spells it (case-sensitive; note `Snappy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Uncompressed,
    Gzip,
    Zip,
    Snappy,
    HadoopSnappy,
}

impl Compression {
    /// AWS's own order of the set, as its validation message lists it.
    pub const ENUM_SET: &'static str = "[ZIP, HADOOP_SNAPPY, Snappy, GZIP, UNCOMPRESSED]";

    /// `field` is where the value arrived (`extendedS3DestinationConfiguration.compressionFormat`).
    pub fn parse(value: &str, field: &str) -> Result<Compression, String> {
        Ok(match value {
            "UNCOMPRESSED" => Compression::Uncompressed,
            "GZIP" => Compression::Gzip,
            "ZIP" => Compression::Zip,
            "Snappy" => Compression::Snappy,
            "HADOOP_SNAPPY" => Compression::HadoopSnappy,
            _ => {
                return Err(format!(
                    "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must satisfy enum value set: {}",
                    Compression::ENUM_SET
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Uncompressed => "UNCOMPRESSED",
            Compression::Gzip => "GZIP",
            Compression::Zip => "ZIP",
            Compression::Snappy => "Snappy",
            Compression::HadoopSnappy => "HADOOP_SNAPPY",
        }
    }

    /// The extension the service writes. Hadoop-Snappy objects end in `.snappy` as observed
    /// on the service (the documentation's table says `.hsnappy`); `Content-Encoding` tells
    /// the two Snappy framings apart.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Uncompressed => "",
            Compression::Gzip => ".gz",
            Compression::Zip => ".zip",
            Compression::Snappy | Compression::HadoopSnappy => ".snappy",
        }
    }

    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Uncompressed => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zip => Some("zip"),
            Compression::Snappy => Some("snappy-java"),
            Compression::HadoopSnappy => Some("hadoop-snappy"),
        }
    }
}

/// Checks `FileExtension` (`^$|\.[0-9a-z!\-_.*'()]+`, at most 128 characters). `None` for
/// the empty string, which means "not set".
pub fn file_extension(value: &str, field: &str) -> Result<Option<String>, String> {
    if value.chars().count() > 128 {
        return Err(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length less than or equal to 128"
        ));
    }
    if value.is_empty() {
        return Ok(None);
    }
    let allowed = |c: char| c.is_ascii_digit() || c.is_ascii_lowercase() || "!-_.*'()".contains(c);
    let mut chars = value.chars();
    if chars.next() != Some('.') || value.len() < 2 || !chars.all(allowed) {
        return Err(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(|\\.[0-9a-z!\\-_.*'()]+)$"
        ));
    }
    Ok(Some(value.to_owned()))
}

/// The object's name after its prefix. `instant_ms` is the same instant as the prefix's
/// (the arrival of the object's oldest record); `random` becomes a version-4 UUID.
pub fn object_suffix(
    stream: &str,
    version: u64,
    instant_ms: i64,
    random: [u8; 16],
    extension: &str,
) -> String {
    let time = DatePattern::parse("yyyy-MM-dd-HH-mm-ss").expect("a valid pattern").render(instant_ms);
    format!("{stream}-{version}-{time}-{}{extension}", uuid_v4(random))
}

/// Lowercase hyphenated 8-4-4-4-12, version 4, RFC 4122 variant.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `!{firehose:random-string}`: 11 lowercase hex digits. AWS does not document the alphabet;
/// one of its examples (`5abf82daaa5`) is 11 hex digits.
pub fn random_string(bytes: [u8; 6]) -> String {
    let mut out = String::with_capacity(12);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out.truncate(RANDOM_STRING_CHARS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "extendedS3DestinationConfiguration.fileExtension";

    #[test]
    fn names_look_like_the_services() {
        // 2023-12-28T17:28:04Z, from a real key:
        // tf-lambda-firehose-to-s3-1-2023-12-28-17-28-04-fa9ee534-7fa0-4ac9-a4c3-44da5692e8f6
        let random =
            [0xfa, 0x9e, 0xe5, 0x34, 0x7f, 0xa0, 0x4a, 0xc9, 0xa4, 0xc3, 0x44, 0xda, 0x56, 0x92, 0xe8, 0xf6];
        assert_eq!(
            object_suffix("tf-lambda-firehose-to-s3", 1, 1_703_784_484_000, random, ""),
            "tf-lambda-firehose-to-s3-1-2023-12-28-17-28-04-fa9ee534-7fa0-4ac9-a4c3-44da5692e8f6"
        );
        assert_eq!(
            object_suffix("s", 3, 0, [0xff; 16], Compression::Gzip.extension()),
            "s-3-1970-01-01-00-00-00-ffffffff-ffff-4fff-bfff-ffffffffffff.gz"
        );
        assert_eq!(random_string([0x5a, 0xbf, 0x82, 0xda, 0xaa, 0x5f]), "5abf82daaa5");
    }

    #[test]
    fn compression_formats_as_aws_spells_them() {
        for format in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zip,
            Compression::Snappy,
            Compression::HadoopSnappy,
        ] {
            assert_eq!(Compression::parse(format.as_str(), "f"), Ok(format));
        }
        assert_eq!(
            Compression::parse("SNAPPY", "extendedS3DestinationConfiguration.compressionFormat").unwrap_err(),
            "1 validation error detected: Value at 'extendedS3DestinationConfiguration.compressionFormat' failed to satisfy constraint: Member must satisfy enum value set: [ZIP, HADOOP_SNAPPY, Snappy, GZIP, UNCOMPRESSED]"
        );
        assert_eq!(Compression::HadoopSnappy.content_encoding(), Some("hadoop-snappy"));
    }

    #[test]
    fn file_extensions_as_aws_checks_them() {
        assert_eq!(file_extension("", FIELD), Ok(None));
        assert_eq!(file_extension(".custom.log", FIELD), Ok(Some(".custom.log".into())));
        assert_eq!(file_extension("..", FIELD), Ok(Some("..".into())));
        assert_eq!(file_extension(".a!-_.*'()9", FIELD), Ok(Some(".a!-_.*'()9".into())));
        for bad in [".", ".Custom.LOG", "nodot", "gz.", ".é"] {
            let error = file_extension(bad, FIELD).unwrap_err();
            assert!(error.contains("regular expression pattern"), "{bad}: {error}");
        }
        let long = format!(".{}", "a".repeat(128));
        assert!(file_extension(&long, FIELD).unwrap_err().contains("less than or equal to 128"));
    }
}
