//! The native protocol over QUIC (see `net/PROTOCOL.md`): the frame codec, the server, the
//! client connection and the producer SDK.

pub mod client;
pub mod consumer;
pub mod frame;
pub mod producer;
pub mod server;

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated certificate (DER) in the data directory; clients on the box trust it.
pub const CERT_FILE: &str = "quic-cert.der";
/// Its private key (PKCS#8 DER), readable by the owner only.
pub const KEY_FILE: &str = "quic-key.der";
/// The client token (random bytes) a HELLO must present.
pub const TOKEN_FILE: &str = "quic.token";

/// The server's certificate chain and key: from `cert`/`key` files (PEM or DER) when given,
/// else a self-signed certificate for `localhost`/127.0.0.1 generated into the data directory
/// on first start. Returns them and whether they were generated now.
pub fn identity(
    data_dir: &Path,
) -> std::io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, bool)> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    let mut generated = false;
    if !cert_path.exists() || !key_path.exists() {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
                .map_err(std::io::Error::other)?;
        let (key, _) = crate::secrets::load_or_create(&key_path, || Ok(certified.key_pair.serialize_der()))?;
        if key != certified.key_pair.serialize_der() {
            return Err(std::io::Error::other(format!(
                "{} exists without {}: remove it to generate a new pair",
                key_path.display(),
                cert_path.display()
            )));
        }
        crate::secrets::load_or_create(&cert_path, || Ok(certified.cert.der().to_vec()))?;
        generated = true;
    }
    let cert = CertificateDer::from(std::fs::read(&cert_path)?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(std::fs::read(&key_path)?));
    Ok((vec![cert], key, generated))
}

/// Certificates and key from files the operator supplies (PEM).
pub fn identity_from_files(
    cert: &Path,
    key: &Path,
) -> std::io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(std::io::Error::other)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
    Ok((chain, key))
}

/// The client token in the data directory, generated on first start (32 random bytes).
pub fn token(data_dir: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    crate::secrets::load_or_create(&data_dir.join(TOKEN_FILE), || crate::secrets::random_bytes(32))
}
