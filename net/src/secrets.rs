//! Secrets kept in the data directory: the SigV4 key pair generated on first start, and the
//! key that makes shard iterators tamper-evident. Written once, readable by the owner only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `count` bytes from the kernel's CSPRNG.
pub fn random_bytes(count: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; count];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes)
}

/// Reads a secret file, or creates it with `make()` if missing. Returns the contents and
/// whether it was created now. The file is written to a temporary name, synced, then renamed,
/// so a crash never leaves a half-written secret.
pub fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> std::io::Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Ok(bytes) => return Ok((bytes, false)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let bytes = make()?;
    let temporary = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok((bytes, true))
}

/// The iterator key: 32 random bytes in `iterator.key`.
pub fn iterator_key(data_dir: &Path) -> std::io::Result<[u8; 32]> {
    let (bytes, _) = load_or_create(&data_dir.join("iterator.key"), || random_bytes(32))?;
    bytes.try_into().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "iterator.key in the data directory is not 32 bytes",
        )
    })
}

/// A SigV4 key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The key pair in `credentials` (two lines: access key id, secret), generated on first
/// start. Returns it and whether it was generated now (to be printed once).
pub fn credentials(data_dir: &Path) -> std::io::Result<(Credentials, bool)> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (bytes, created) = load_or_create(&data_dir.join("credentials"), || {
        let random = random_bytes(56)?;
        let id: String = "MRAK"
            .chars()
            .chain(random[..16].iter().map(|byte| ALPHABET[*byte as usize % 32] as char))
            .collect();
        let secret: String =
            random[16..].iter().map(|byte| SECRET_ALPHABET[*byte as usize % 64] as char).collect();
        Ok(format!("{id}\n{secret}\n").into_bytes())
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "credentials file is not UTF-8"))?;
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok((
            Credentials { access_key_id: id.trim().to_owned(), secret_access_key: secret.trim().to_owned() },
            created,
        )),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "credentials file in the data directory must hold an access key id and a secret on two lines",
        )),
    }
}
