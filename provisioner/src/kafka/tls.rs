//! `[kafka.tls]` → a rustls client configuration: which roots to trust, the client
//! certificate if any, or (test setups only) no verification at all.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{KafkaError, KafkaTls};

/// Builds the client configuration, reading every file the settings name.
pub(super) fn client_config(settings: &KafkaTls) -> Result<Arc<ClientConfig>, KafkaError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| KafkaError::Tls(e.to_string()))?;
    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
    } else {
        builder.with_root_certificates(roots(settings.ca_file.as_deref())?)
    };
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = certificates(cert_file, "cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| KafkaError::Tls(format!("key_file {}: {e}", key_file.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| KafkaError::Tls(format!("cert_file and key_file: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The certificate authorities of `ca_file`, or the system's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, KafkaError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in certificates(path, "ca_file")? {
                store
                    .add(certificate)
                    .map_err(|e| KafkaError::Tls(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (_added, _unusable) = store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(KafkaError::Tls(
                    "no system certificate authorities found: set ca_file".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// Every certificate of a PEM file; none is an error.
fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, KafkaError> {
    let failed = |e: String| KafkaError::Tls(format!("{key} {}: {e}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certificates.is_empty() {
        return Err(failed("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

/// `insecure_skip_verify`: any certificate is accepted (signatures are still checked,
/// so the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Real TLS handshakes on loopback between the client configuration built from the
    //! settings and a rustls server holding the test certificates in `testdata/`.
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    pub(in crate::kafka) fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/kafka/testdata")
            .join(name)
    }

    /// A server with `server.pem`; with `client_ca`, it requires a client certificate.
    pub(in crate::kafka) fn server(client_ca: bool) -> TlsAcceptor {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_ca {
            let roots = roots(Some(&testdata("ca.pem"))).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = certificates(&testdata("server.pem"), "test").unwrap();
        let key = PrivateKeyDer::from_pem_file(testdata("server.key")).unwrap();
        TlsAcceptor::from(Arc::new(builder.with_single_cert(chain, key).unwrap()))
    }

    /// Handshakes with `settings` against `acceptor` and echoes one byte through.
    async fn handshake(settings: &KafkaTls, acceptor: TlsAcceptor) -> Result<(), String> {
        let config = client_config(settings).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut byte = [0u8];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        });
        let tcp = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = async {
            let mut tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"k").await.map_err(|e| e.to_string())?;
            let mut byte = [0u8];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(byte)
        };
        let echoed = client.await;
        let served = serve.await.unwrap();
        assert_eq!(echoed?, *b"k");
        served
    }

    #[tokio::test]
    async fn the_ca_file_is_what_is_trusted() {
        let trusted = KafkaTls {
            ca_file: Some(testdata("ca.pem")),
            ..KafkaTls::default()
        };
        handshake(&trusted, server(false)).await.unwrap();
        let other = KafkaTls {
            ca_file: Some(testdata("other-ca.pem")),
            ..KafkaTls::default()
        };
        let error = handshake(&other, server(false)).await.unwrap_err();
        assert!(
            error.contains("UnknownIssuer") || error.contains("issuer"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_an_unknown_issuer() {
        let insecure = KafkaTls {
            ca_file: Some(testdata("other-ca.pem")),
            insecure_skip_verify: true,
            ..KafkaTls::default()
        };
        handshake(&insecure, server(false)).await.unwrap();
    }

    #[tokio::test]
    async fn the_client_certificate_is_presented() {
        let without = KafkaTls {
            ca_file: Some(testdata("ca.pem")),
            ..KafkaTls::default()
        };
        assert!(handshake(&without, server(true)).await.is_err());
        let with = KafkaTls {
            cert_file: Some(testdata("client.pem")),
            key_file: Some(testdata("client.key")),
            ..without
        };
        handshake(&with, server(true)).await.unwrap();
    }

    #[test]
    fn unreadable_files_name_the_key() {
        let missing = KafkaTls {
            ca_file: Some(testdata("no-such.pem")),
            ..KafkaTls::default()
        };
        let error = client_config(&missing).unwrap_err().to_string();
        assert!(
            error.contains("ca_file") && error.contains("no-such.pem"),
            "{error}"
        );
        let not_a_certificate = KafkaTls {
            ca_file: Some(testdata("server.key")),
            ..KafkaTls::default()
        };
        let error = client_config(&not_a_certificate).unwrap_err().to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
