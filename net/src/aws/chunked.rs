//! The `aws-chunked` content encoding that SigV4's streaming payloads use: a body of
//! chunks, each `hex-size[;chunk-signature=SIG]\r\n DATA \r\n`, ending with a zero-size
//! chunk and (for `STREAMING-UNSIGNED-PAYLOAD-TRAILER`) trailing headers. With
//! `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` each chunk's signature chains off the previous one
//! (the first off the request's own signature):
//!
//! ```text
//! AWS4-HMAC-SHA256-PAYLOAD \n amz-date \n scope \n previous-signature \n
//! hex(sha256("")) \n hex(sha256(chunk data))
//! ```
//!
//! A push decoder: it takes whatever bytes arrived and hands out the data of every chunk
//! that is complete and verified, so that a long upload streams through it; nothing of a
//! chunk is handed out before its signature checks. Pure; fuzzed by `fuzz_targets/aws_chunked.rs`.

use sha2::{Digest, Sha256};

use super::sigv4::{constant_time_eq, hex, hmac, Verified};

/// Largest chunk taken.
pub const CHUNK_BYTES_MAX: usize = 16 << 20;
/// Longest chunk header or trailer line.
const LINE_BYTES_MAX: usize = 4096;
/// Most trailer bytes.
const TRAILER_BYTES_MAX: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("aws-chunked body: malformed chunk header {line:?}")]
    BadHeader { line: String },
    #[error("aws-chunked body: chunk of {size} bytes is above the limit of {CHUNK_BYTES_MAX}")]
    TooLarge { size: usize },
    #[error("aws-chunked body: chunk data is not followed by CRLF")]
    MissingCrlf,
    #[error("aws-chunked body: the chunk signature does not match (chunk {index})")]
    BadSignature { index: u64 },
    #[error("aws-chunked body: chunk {index} carries no signature")]
    MissingSignature { index: u64 },
    #[error("aws-chunked body ends before its final chunk")]
    Incomplete,
    #[error("aws-chunked body: bytes after the final chunk")]
    Trailing,
    #[error("aws-chunked body: trailers too long")]
    TrailersTooLong,
}

/// How chunks are checked.
#[derive(Debug, Clone)]
enum Signing {
    Unsigned,
    Signed { key: [u8; 32], amz_date: String, scope: String, previous: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk header line.
    Header,
    /// Reading `remaining` bytes of chunk data, then its CRLF.
    Data {
        size: usize,
    },
    /// After the final chunk: trailers (if any), then the closing CRLF.
    Trailers,
    Done,
}

/// Decodes an aws-chunked body as it arrives.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    signing: Signing,
    state: State,
    buffer: Vec<u8>,
    signature: Option<String>,
    chunks: u64,
    trailer_bytes: usize,
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl ChunkedDecoder {
    /// For a request whose signature passed; its `x-amz-content-sha256` says whether chunks
    /// are signed.
    pub fn new(verified: &Verified) -> ChunkedDecoder {
        let signing = if verified.chunks_signed() {
            Signing::Signed {
                key: verified.signing_key,
                amz_date: verified.amz_date.clone(),
                scope: verified.scope.clone(),
                previous: verified.signature.clone(),
            }
        } else {
            Signing::Unsigned
        };
        ChunkedDecoder {
            signing,
            state: State::Header,
            buffer: Vec::new(),
            signature: None,
            chunks: 0,
            trailer_bytes: 0,
        }
    }

    /// A decoder that checks no signatures (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, or tests).
    pub fn unsigned() -> ChunkedDecoder {
        ChunkedDecoder {
            signing: Signing::Unsigned,
            state: State::Header,
            buffer: Vec::new(),
            signature: None,
            chunks: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next bytes of the body; appends the data of every complete, verified chunk
    /// to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        while !bytes.is_empty() || self.ready() {
            match self.state {
                State::Header | State::Trailers => {
                    let Some(line) = self.take_line(&mut bytes)? else { return Ok(()) };
                    if self.state == State::Header {
                        self.header(&line)?;
                    } else {
                        self.trailer(&line)?;
                    }
                }
                State::Data { size } => {
                    let want = size + 2;
                    let take = (want - self.buffer.len()).min(bytes.len());
                    self.buffer.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buffer.len() < want {
                        return Ok(());
                    }
                    if &self.buffer[size..] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    let chunk = std::mem::take(&mut self.buffer);
                    self.verify(&chunk[..size])?;
                    out.extend_from_slice(&chunk[..size]);
                    self.state = State::Header;
                }
                State::Done => return Err(ChunkError::Trailing),
            }
        }
        Ok(())
    }

    /// The body ended: was it whole?
    pub fn finish(&self) -> Result<(), ChunkError> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err(ChunkError::Incomplete)
        }
    }

    fn ready(&self) -> bool {
        matches!(self.state, State::Header | State::Trailers)
            && self.buffer.windows(2).any(|pair| pair == b"\r\n")
    }

    /// The next CRLF-ended line, from what is buffered and `bytes`.
    fn take_line(&mut self, bytes: &mut &[u8]) -> Result<Option<String>, ChunkError> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                return Ok(Some(line));
            }
            if self.buffer.len() > LINE_BYTES_MAX {
                let line = String::from_utf8_lossy(&self.buffer[..64]).into_owned();
                return Err(ChunkError::BadHeader { line });
            }
            let Some((&byte, rest)) = bytes.split_first() else { return Ok(None) };
            self.buffer.push(byte);
            *bytes = rest;
        }
    }

    fn header(&mut self, line: &str) -> Result<(), ChunkError> {
        let bad = || ChunkError::BadHeader { line: line.chars().take(80).collect() };
        let (size_text, extensions) = line.split_once(';').unwrap_or((line, ""));
        if size_text.is_empty()
            || size_text.len() > 8
            || !size_text.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        if size > CHUNK_BYTES_MAX {
            return Err(ChunkError::TooLarge { size });
        }
        self.signature = None;
        for extension in extensions.split(';').filter(|part| !part.is_empty()) {
            let (name, value) = extension.split_once('=').ok_or_else(bad)?;
            if name.trim() == "chunk-signature" {
                let value = value.trim();
                if value.len() != 64 || !value.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                self.signature = Some(value.to_ascii_lowercase());
            }
        }
        if size == 0 {
            self.verify(&[])?;
            self.state = State::Trailers;
        } else {
            self.state = State::Data { size };
        }
        Ok(())
    }

    fn trailer(&mut self, line: &str) -> Result<(), ChunkError> {
        if line.is_empty() {
            self.state = State::Done;
            return Ok(());
        }
        self.trailer_bytes += line.len() + 2;
        if self.trailer_bytes > TRAILER_BYTES_MAX {
            return Err(ChunkError::TrailersTooLong);
        }
        if !line.contains(':') {
            return Err(ChunkError::BadHeader { line: line.chars().take(80).collect() });
        }
        Ok(())
    }

    fn verify(&mut self, data: &[u8]) -> Result<(), ChunkError> {
        let index = self.chunks;
        self.chunks += 1;
        let Signing::Signed { key, amz_date, scope, previous } = &mut self.signing else { return Ok(()) };
        let claimed = self.signature.take().ok_or(ChunkError::MissingSignature { index })?;
        let expected = chunk_signature(key, amz_date, scope, previous, data);
        if !constant_time_eq(expected.as_bytes(), claimed.as_bytes()) {
            return Err(ChunkError::BadSignature { index });
        }
        *previous = expected;
        Ok(())
    }
}

/// The signature of one chunk, chained off `previous`.
pub fn chunk_signature(key: &[u8; 32], amz_date: &str, scope: &str, previous: &str, data: &[u8]) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{}",
        hex(&Sha256::digest(data))
    );
    hex(&hmac(key, string_to_sign.as_bytes()))
}

/// Encodes `chunks` as a signed aws-chunked body, as an SDK sends it (for Millrace's own
/// clients and the tests).
pub fn encode_signed(key: &[u8; 32], amz_date: &str, scope: &str, seed: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut previous = seed.to_owned();
    for data in chunks.iter().copied().chain(std::iter::once(&[][..])) {
        let signature = chunk_signature(key, amz_date, scope, &previous, data);
        out.extend_from_slice(format!("{:x};chunk-signature={signature}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        previous = signature;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::sigv4::signing_key;
    use proptest::prelude::*;

    /// AWS's published chunked-upload example (S3 documentation, "Signature Calculations for
    /// the Authorization Header: Transferring Payload in Multiple Chunks"): 64 KiB and 1 KiB of
    /// `a`, seeded from the request signature 4f232c43….
    fn aws_example() -> (Verified, Vec<u8>) {
        let key = signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3");
        let verified = Verified {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            amz_date: "20130524T000000Z".into(),
            signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
            signing_key: key,
            content_sha256: Some(crate::aws::sigv4::STREAMING_SIGNED.into()),
        };
        let mut body = Vec::new();
        body.extend_from_slice(
            b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n",
        );
        body.extend(std::iter::repeat_n(b'a', 65_536));
        body.extend_from_slice(
            b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n",
        );
        body.extend(std::iter::repeat_n(b'a', 1024));
        body.extend_from_slice(
            b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n",
        );
        (verified, body)
    }

    #[test]
    fn the_aws_example_decodes_in_any_pieces() {
        let (verified, body) = aws_example();
        for piece in [1, 7, 4096, body.len()] {
            let mut decoder = ChunkedDecoder::new(&verified);
            let mut out = Vec::new();
            for bytes in body.chunks(piece) {
                decoder.push(bytes, &mut out).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(out, vec![b'a'; 66_560]);
        }
        // Our encoder writes exactly that body.
        let encoded = encode_signed(
            &verified.signing_key,
            &verified.amz_date,
            &verified.scope,
            &verified.signature,
            &[&[b'a'; 65_536], &[b'a'; 1024]],
        );
        assert_eq!(encoded, body);
    }

    #[test]
    fn tampering_is_caught_before_the_chunk_is_handed_out() {
        let (verified, mut body) = aws_example();
        let at = body.len() - 200;
        body[at] = b'b';
        let mut decoder = ChunkedDecoder::new(&verified);
        let mut out = Vec::new();
        assert_eq!(decoder.push(&body, &mut out), Err(ChunkError::BadSignature { index: 1 }));
        assert_eq!(out.len(), 65_536, "only the first, intact chunk came out");
        // A body cut short is not whole.
        let (verified, body) = aws_example();
        let mut decoder = ChunkedDecoder::new(&verified);
        decoder.push(&body[..body.len() - 10], &mut Vec::new()).unwrap();
        assert_eq!(decoder.finish(), Err(ChunkError::Incomplete));
    }

    #[test]
    fn unsigned_chunks_with_trailers() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        let mut decoder = ChunkedDecoder::unsigned();
        let mut out = Vec::new();
        decoder.push(body, &mut out).unwrap();
        decoder.finish().unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(decoder.push(b"x", &mut out), Err(ChunkError::Trailing));
    }

    proptest! {
        #[test]
        fn encoded_bodies_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..6), piece in 1usize..64) {
            let (verified, _) = aws_example();
            let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let body = encode_signed(&verified.signing_key, &verified.amz_date, &verified.scope, &verified.signature, &slices);
            let mut decoder = ChunkedDecoder::new(&verified);
            let mut out = Vec::new();
            for bytes in body.chunks(piece) {
                decoder.push(bytes, &mut out).unwrap();
            }
            prop_assert!(decoder.finish().is_ok());
            prop_assert_eq!(out, chunks.concat());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (verified, _) = aws_example();
            let mut decoder = ChunkedDecoder::new(&verified);
            let _ = decoder.push(&bytes, &mut Vec::new());
            let mut unsigned = ChunkedDecoder::unsigned();
            let _ = unsigned.push(&bytes, &mut Vec::new());
        }
    }
}
