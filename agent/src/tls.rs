//! TLS to the Kafka brokers (`[kafka.tls]`), with rustls and the ring provider.
//!
//! The client configuration is built once, at start-up (and by `check`), so an
//! unreadable or malformed CA, certificate or key stops start-up with its key
//! named instead of failing every reconnection later. Brokers are verified
//! against the `ca_file` roots, or the system's when it is absent; the name
//! checked is the broker's host as configured or advertised (an IP address
//! needs an IP subject alternative name). `insecure_skip_verify` accepts any
//! certificate but still checks the handshake's signatures: it is for test
//! setups with throw-away certificates.
//!
//! Built without the `tls` feature (a smaller binary), the agent refuses a
//! configuration that asks for TLS.

#[cfg(not(feature = "tls"))]
use crate::config::{ConfigError, KafkaConfig};

/// How the producer reaches the brokers: plaintext, or TLS with this configuration.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

#[cfg(not(feature = "tls"))]
impl Transport {
    /// Plaintext; `[kafka.tls]` is an error in this build.
    pub fn new(config: &KafkaConfig) -> Result<Transport, ConfigError> {
        match config.tls {
            Some(_) => Err(ConfigError::Invalid {
                key: "kafka.tls".to_owned(),
                message: "this build has no TLS (cargo feature `tls`)".to_owned(),
            }),
            None => Ok(Transport::default()),
        }
    }

    /// The builder unchanged.
    pub fn apply(&self, builder: rskafka::client::ClientBuilder) -> rskafka::client::ClientBuilder {
        builder
    }
}

#[cfg(feature = "tls")]
pub use with_tls::*;

#[cfg(feature = "tls")]
mod with_tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use super::Transport;
    use crate::config::{ConfigError, KafkaConfig, TlsConfig};

    impl Transport {
        /// Plaintext without `[kafka.tls]`; otherwise TLS, its files read now.
        pub fn new(config: &KafkaConfig) -> Result<Transport, ConfigError> {
            let tls = config.tls.as_ref().map(client_config).transpose()?;
            Ok(Transport { tls })
        }

        /// Sets the TLS configuration on a client builder, when there is one.
        pub fn apply(
            &self,
            builder: rskafka::client::ClientBuilder,
        ) -> rskafka::client::ClientBuilder {
            match &self.tls {
                Some(tls) => builder.tls_config(Arc::clone(tls)),
                None => builder,
            }
        }

        /// The TLS client configuration, when TLS is on.
        pub fn tls(&self) -> Option<&Arc<ClientConfig>> {
            self.tls.as_ref()
        }
    }

    fn invalid(key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            key: format!("kafka.tls.{key}"),
            message: message.to_string(),
        }
    }

    /// The rustls client configuration `[kafka.tls]` describes.
    pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("ca_file", e))?;
        let builder = if tls.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else {
            builder.with_root_certificates(roots(tls.ca_file.as_deref())?)
        };
        let config = match (&tls.cert_file, &tls.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let chain = certificates(cert_file).map_err(|e| invalid("cert_file", e))?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|e| invalid("key_file", format!("{}: {e}", key_file.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("key_file", e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(invalid("key_file", "needed with cert_file")),
            (None, Some(_)) => return Err(invalid("cert_file", "needed with key_file")),
        };
        Ok(Arc::new(config))
    }

    /// The certificates of a PEM file; an error when it holds none.
    fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("{}: no certificate in it", path.display()));
        }
        Ok(certificates)
    }

    /// The roots to verify brokers against: the CA file's, or the system's.
    fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, ConfigError> {
        let mut roots = RootCertStore::empty();
        let certificates = match ca_file {
            Some(path) => certificates(path).map_err(|e| invalid("ca_file", e))?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    return Err(invalid(
                        "ca_file",
                        "not set, and no system certificate authority was found",
                    ));
                }
                found.certs
            }
        };
        for certificate in certificates {
            roots.add(certificate).map_err(|e| invalid("ca_file", e))?;
        }
        Ok(roots)
    }

    /// `insecure_skip_verify`: any certificate, but signatures still checked.
    #[derive(Debug)]
    struct AnyCertificate {
        algorithms: WebPkiSupportedAlgorithms,
    }

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;
    use crate::config::Config;

    fn transport(tls: &str) -> Result<Transport, String> {
        let text = format!("[kafka]\nbrokers = [\"127.0.0.1:9093\"]\n[kafka.tls]\n{tls}");
        let config = Config::parse(&text).map_err(|e| e.to_string())?;
        Transport::new(&config.kafka).map_err(|e| e.to_string())
    }

    fn error_of(tls: &str) -> String {
        match transport(tls) {
            Ok(transport) => panic!("accepted: {transport:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn no_section_is_plaintext() {
        let config = Config::parse("[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let transport = Transport::new(&config.kafka).unwrap_or_else(|e| panic!("{e}"));
        assert!(transport.tls().is_none());
    }

    #[test]
    fn bad_files_are_named_by_their_key() {
        let dir = std::env::temp_dir().join(format!("flow-agent-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));

        let message = error_of("ca_file = \"/nonexistent/ca.pem\"\n");
        assert!(
            message.starts_with("key `kafka.tls.ca_file`: /nonexistent/ca.pem"),
            "{message}"
        );
        let message = error_of(&format!("ca_file = \"{}\"\n", not_pem.display()));
        assert!(message.contains("no certificate in it"), "{message}");
        let message = error_of(&format!(
            "insecure_skip_verify = true\ncert_file = \"{}\"\n",
            not_pem.display()
        ));
        assert!(
            message.starts_with("key `kafka.tls.key_file`: needed"),
            "{message}"
        );
        let message = error_of(&format!(
            "insecure_skip_verify = true\ncert_file = \"{0}\"\nkey_file = \"{0}\"\n",
            not_pem.display()
        ));
        assert!(
            message.starts_with("key `kafka.tls.cert_file`:"),
            "{message}"
        );
        let message = error_of("insecure_skip_verify = \"yes\"\n");
        assert!(
            message.starts_with("key `kafka.tls.insecure_skip_verify`:"),
            "{message}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn skip_verify_needs_no_files() {
        let transport =
            transport("insecure_skip_verify = true\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(transport.tls().is_some());
    }
}
