//! HTTPS: the certificate chain and key from `[http.tls]`, read once at start-up
//! (an unreadable file stops it, naming the key). The handshake runs in each
//! connection's own task, under the header timeout, so a client that stalls in
//! it holds only its own slot.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{HttpError, TlsConfig};

/// The acceptor for the configured certificate and key. The crypto provider is
/// named here rather than taken from crate features, which other crates of the
/// workspace may set differently.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, HttpError> {
    let cert_error = |message: String| HttpError::Tls {
        key: "http.tls.cert_file",
        message: format!("{}: {message}", config.cert_file.display()),
    };
    let chain = CertificateDer::pem_file_iter(&config.cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| HttpError::Tls {
        key: "http.tls.key_file",
        message: format!("{}: {e}", config.key_file.display()),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| HttpError::Tls {
            key: "http.tls.key_file",
            message: format!("does not fit the certificate: {e}"),
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
