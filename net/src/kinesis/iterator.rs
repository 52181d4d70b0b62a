//! Shard iterators: opaque, tamper-evident tokens that say where a reader is.
//!
//! A token is base64 of a fixed little-endian payload followed by a truncated HMAC-SHA256
//! over it, keyed with a secret kept in the data directory (so that iterators survive a
//! restart but cannot be forged or edited by a client):
//!
//! ```text
//! offset size field
//!      0    1 version (1)
//!      1    8 stream uid   (a stream re-created under the same name gets a new uid)
//!      9    4 shard id
//!     13   16 position     (the sequence number the next read starts at)
//!     29    8 issued at, ms since the epoch (i64)
//!     37    1 stream name length N (1..=128)
//!     38    N stream name (UTF-8)
//!   38+N   16 HMAC-SHA256(key, bytes 0..38+N), first 16 bytes
//! ```
//!
//! Pure: the key and `now` come from the caller.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const FIXED_BYTES: usize = 38;
const MAC_BYTES: usize = 16;

/// Where a reader stands in one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator {
    pub stream_uid: u64,
    pub stream_name: String,
    pub shard: u32,
    pub position: u128,
    pub issued_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IteratorError {
    #[error("Invalid ShardIterator.")]
    Invalid,
    #[error(
        "Iterator expired. The iterator was created at time {issued_ms} while right now it is {now_ms} which \
         is further in the future than the tolerated delay of {ttl_ms} milliseconds."
    )]
    Expired { issued_ms: i64, now_ms: i64, ttl_ms: i64 },
}

impl ShardIterator {
    pub fn encode(&self, key: &[u8; 32]) -> String {
        let name = self.stream_name.as_bytes();
        assert!(!name.is_empty() && name.len() <= 128, "stream names are 1..=128 bytes");
        let mut bytes = Vec::with_capacity(FIXED_BYTES + name.len() + MAC_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.stream_uid.to_le_bytes());
        bytes.extend_from_slice(&self.shard.to_le_bytes());
        bytes.extend_from_slice(&self.position.to_le_bytes());
        bytes.extend_from_slice(&self.issued_ms.to_le_bytes());
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        let mac = mac(key, &bytes);
        bytes.extend_from_slice(&mac[..MAC_BYTES]);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Checks the MAC before reading any field, then the expiry.
    pub fn decode(
        token: &str,
        key: &[u8; 32],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<ShardIterator, IteratorError> {
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| IteratorError::Invalid)?;
        if bytes.len() < FIXED_BYTES + 1 + MAC_BYTES {
            return Err(IteratorError::Invalid);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut check = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        check.update(payload);
        check.verify_truncated_left(tag).map_err(|_| IteratorError::Invalid)?;
        // Authentic from here on: written by `encode` with this key.
        if payload[0] != VERSION || payload[37] as usize != payload.len() - FIXED_BYTES {
            return Err(IteratorError::Invalid);
        }
        let field = |range: std::ops::Range<usize>| &payload[range];
        let iterator = ShardIterator {
            stream_uid: u64::from_le_bytes(field(1..9).try_into().expect("8 bytes")),
            shard: u32::from_le_bytes(field(9..13).try_into().expect("4 bytes")),
            position: u128::from_le_bytes(field(13..29).try_into().expect("16 bytes")),
            issued_ms: i64::from_le_bytes(field(29..37).try_into().expect("8 bytes")),
            stream_name: String::from_utf8(payload[FIXED_BYTES..].to_vec())
                .map_err(|_| IteratorError::Invalid)?,
        };
        if now_ms.saturating_sub(iterator.issued_ms) > ttl_ms {
            return Err(IteratorError::Expired { issued_ms: iterator.issued_ms, now_ms, ttl_ms });
        }
        Ok(iterator)
    }
}

fn mac(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    fn sample() -> ShardIterator {
        ShardIterator {
            stream_uid: 42,
            stream_name: "orders".into(),
            shard: 3,
            position: (5u128 << 64) | 77,
            issued_ms: 1_000_000,
        }
    }

    proptest! {
        #[test]
        fn round_trips(uid in any::<u64>(), shard in any::<u32>(), position in any::<u128>(),
                       issued in 0i64..i64::MAX / 2, name in "[a-zA-Z0-9_.-]{1,128}") {
            let iterator = ShardIterator { stream_uid: uid, stream_name: name, shard, position, issued_ms: issued };
            let token = iterator.encode(&KEY);
            prop_assert_eq!(ShardIterator::decode(&token, &KEY, issued, 300_000), Ok(iterator));
        }

        #[test]
        fn any_flipped_bit_is_refused(bit in 0usize..(38 + 6 + 16) * 8) {
            let token = sample().encode(&KEY);
            let mut bytes = base64::engine::general_purpose::STANDARD.decode(&token).unwrap();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let forged = base64::engine::general_purpose::STANDARD.encode(bytes);
            prop_assert_eq!(ShardIterator::decode(&forged, &KEY, 1_000_000, 300_000), Err(IteratorError::Invalid));
        }

        #[test]
        fn garbage_is_refused(token in ".{0,100}") {
            prop_assert!(ShardIterator::decode(&token, &KEY, 0, 300_000).is_err());
        }
    }

    #[test]
    fn expires_after_the_ttl_and_not_before() {
        let token = sample().encode(&KEY);
        assert!(ShardIterator::decode(&token, &KEY, 1_300_000, 300_000).is_ok());
        assert!(matches!(
            ShardIterator::decode(&token, &KEY, 1_300_001, 300_000),
            Err(IteratorError::Expired { issued_ms: 1_000_000, now_ms: 1_300_001, ttl_ms: 300_000 })
        ));
        assert_eq!(ShardIterator::decode(&token, &[8; 32], 1_000_000, 300_000), Err(IteratorError::Invalid));
    }
}
