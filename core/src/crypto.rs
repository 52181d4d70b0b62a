//! Encryption at rest of batch bodies (Kinesis' server-side encryption).
//!
//! One master key per data directory (or from a key file the operator supplies); each
//! stream-level key id (Kinesis' `KeyId`, e.g. `alias/aws/kinesis`) names a key derived from
//! it with HMAC-SHA256, so turning encryption on with another key id really changes the key,
//! and old frames stay readable after the stream's key id changes. Bodies are sealed with
//! AES-256-GCM; the frame's sequence range is the associated data, so a sealed body cannot be
//! moved to another place in the log.
//!
//! Sealed body layout (little-endian):
//! ```text
//! offset  size  field
//!      0     2  key id length K (1..=2048)
//!      2     K  key id (UTF-8)
//!    2+K    12  nonce
//!   14+K     N  ciphertext of the rkyv body, then the 16-byte GCM tag
//! ```
//! Nonces are never derived from sequence numbers: after a crash the same numbers can be
//! written again with other data, and a repeated GCM nonce under one key leaks plaintext.
//! They are HMAC-SHA256(nonce key, counter), with a nonce key drawn at random each process
//! start, so they are unique within a process and random across processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_ID_BYTES_MAX: usize = 2048;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("sealed body is malformed")]
    Malformed,
    #[error("sealed body does not authenticate under key id {key_id} (wrong master key, or damage)")]
    Unauthentic { key_id: String },
    #[error("an encrypted frame was found but no encryption key is configured")]
    NoKeyring,
    #[error("key id must be 1..={KEY_ID_BYTES_MAX} bytes")]
    BadKeyId,
}

/// The master key and the nonce source.
pub struct Keyring {
    master: [u8; 32],
    nonce_key: [u8; 32],
    nonces: AtomicU64,
    /// Derived ciphers by key id, so that a frame costs no key derivation; bounded.
    ciphers: Mutex<Vec<(String, Aes256Gcm)>>,
}

/// Key ids whose derived ciphers are kept.
const CIPHERS_CACHED: usize = 64;

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Keyring(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Keyring {
    /// `nonce_key` must be fresh random bytes for every process start.
    pub fn new(master: [u8; 32], nonce_key: [u8; 32]) -> Keyring {
        Keyring { master, nonce_key, nonces: AtomicU64::new(0), ciphers: Mutex::new(Vec::new()) }
    }

    fn cipher(&self, key_id: &str) -> Aes256Gcm {
        let mut ciphers = self.ciphers.lock().expect("not poisoned");
        if let Some((_, cipher)) = ciphers.iter().find(|(id, _)| id == key_id) {
            return cipher.clone();
        }
        let key = hmac(&self.master, &[b"millrace stream key\0", key_id.as_bytes()]);
        let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
        if ciphers.len() == CIPHERS_CACHED {
            ciphers.remove(0);
        }
        ciphers.push((key_id.to_owned(), cipher.clone()));
        cipher
    }

    /// Seals a body under `key_id`, bound to `associated` (the frame's position).
    pub fn seal(&self, key_id: &str, body: &[u8], associated: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if key_id.is_empty() || key_id.len() > KEY_ID_BYTES_MAX {
            return Err(CryptoError::BadKeyId);
        }
        let counter = self.nonces.fetch_add(1, Ordering::Relaxed);
        let nonce_bytes = hmac(&self.nonce_key, &[&counter.to_le_bytes()]);
        let nonce = Nonce::from_slice(&nonce_bytes[..NONCE_BYTES]);
        let ciphertext = self
            .cipher(key_id)
            .encrypt(nonce, Payload { msg: body, aad: associated })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(2 + key_id.len() + NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&(key_id.len() as u16).to_le_bytes());
        sealed.extend_from_slice(key_id.as_bytes());
        sealed.extend_from_slice(nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens a sealed body; fails unless it authenticates under its key id and `associated`.
    pub fn open(&self, sealed: &[u8], associated: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (key_id, nonce, ciphertext) = split_sealed(sealed)?;
        self.cipher(key_id)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: associated })
            .map_err(|_| CryptoError::Unauthentic { key_id: key_id.to_owned() })
    }
}

/// The key id, nonce and ciphertext of a sealed body, lengths checked.
fn split_sealed(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), CryptoError> {
    let length = sealed.get(..2).ok_or(CryptoError::Malformed)?;
    let key_id_len = u16::from_le_bytes([length[0], length[1]]) as usize;
    if key_id_len == 0 || key_id_len > KEY_ID_BYTES_MAX {
        return Err(CryptoError::Malformed);
    }
    let key_id = sealed.get(2..2 + key_id_len).ok_or(CryptoError::Malformed)?;
    let key_id = std::str::from_utf8(key_id).map_err(|_| CryptoError::Malformed)?;
    let nonce = sealed.get(2 + key_id_len..2 + key_id_len + NONCE_BYTES).ok_or(CryptoError::Malformed)?;
    let ciphertext = &sealed[2 + key_id_len + NONCE_BYTES..];
    if ciphertext.len() < TAG_BYTES {
        return Err(CryptoError::Malformed);
    }
    Ok((key_id, nonce, ciphertext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keyring() -> Keyring {
        Keyring::new([1; 32], [2; 32])
    }

    proptest! {
        #[test]
        fn round_trips_and_hides_the_plaintext(body in proptest::collection::vec(any::<u8>(), 16..400)) {
            let ring = keyring();
            let sealed = ring.seal("alias/aws/kinesis", &body, b"position").unwrap();
            prop_assert!(!sealed.windows(16).any(|window| window == &body[..16]));
            prop_assert_eq!(ring.open(&sealed, b"position").unwrap(), body);
        }

        #[test]
        fn any_flipped_bit_is_refused(bit in 0usize..(2 + 5 + 12 + 8 + 16) * 8) {
            let ring = keyring();
            let mut sealed = ring.seal("key-1", b"8 bytes!", b"").unwrap();
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(ring.open(&sealed, b"").is_err());
        }

        #[test]
        fn garbage_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert!(keyring().open(&bytes, b"").is_err());
        }
    }

    #[test]
    fn keys_differ_by_key_id_and_master_and_position_binds() {
        let ring = keyring();
        let sealed = ring.seal("key-1", b"secret", b"at 1").unwrap();
        assert!(ring.open(&sealed, b"at 2").is_err(), "moved to another position");
        let other_master = Keyring::new([9; 32], [2; 32]);
        assert_eq!(
            other_master.open(&sealed, b"at 1"),
            Err(CryptoError::Unauthentic { key_id: "key-1".into() })
        );
        // Same plaintext, two seals: different nonces, different bytes.
        assert_ne!(ring.seal("key-1", b"secret", b"").unwrap(), ring.seal("key-1", b"secret", b"").unwrap());
        assert_eq!(ring.seal("", b"x", b""), Err(CryptoError::BadKeyId));
    }
}
