//! TLS for the integration tests: certificates made by the `openssl` command, and a
//! TLS terminator to put in front of a plaintext service. Tansu, the test broker, has
//! no usable TLS listener (its `--cert` and `--key` flags exclude each other in this
//! build), so the tests of `[kafka.tls]` run a terminator in front of it and have the
//! broker advertise the terminator's address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

/// A test's own certificates, made fresh by `openssl` (Debian package openssl, from
/// `tests/install`) so that none is checked in to expire or leak. In a temporary
/// folder, each as `NAME.pem` and `NAME.key`:
/// - `ca` and `other-ca`: two self-signed CAs, the second to be refused;
/// - `server`: signed by `ca`, for IP 127.0.0.1 (subject alternative name), serverAuth;
/// - `client`: signed by `ca`, clientAuth.
#[derive(Debug)]
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes the certificates; panics with openssl's message if it fails.
    pub fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certificates = Certificates { dir };
        for ca in ["ca", "other-ca"] {
            certificates.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=flow test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, extensions) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(certificates.path(&format!("{name}.ext")), extensions)
                .expect("write the extensions");
            certificates.openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=flow test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            certificates.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        certificates
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The path of one of the files, e.g. `ca.pem` or `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rustls client that trusts `ca` and presents the client certificate.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.roots("ca.pem"))
            .with_client_auth_cert(self.chain("client.pem"), self.key("client.key"))
            .expect("the client certificate")
    }

    fn chain(&self, name: &str) -> Vec<CertificateDer<'static>> {
        certificate_chain(&self.path(name))
    }

    fn key(&self, name: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(self.path(name)).expect("a PEM key")
    }

    fn roots(&self, name: &str) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for certificate in self.chain(name) {
            roots.add(certificate).expect("a CA certificate");
        }
        Arc::new(roots)
    }
}

fn certificate_chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("a PEM file")
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// The project's crypto provider (ring), passed explicitly rather than relying on a
/// process-wide default being installed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether the terminator asks its clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any client may connect (server authentication only).
    NotAsked,
    /// A client must present a certificate signed by the test CA (`ca`).
    Required,
}

/// Terminates TLS with the `server` certificate and forwards each connection in
/// plaintext to `upstream`, counting the handshakes that succeed and fail so that a
/// test can tell that its client went through TLS, or was refused. Stops when dropped.
#[derive(Debug)]
pub struct TlsTerminator {
    address: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    /// Serves on `listener` (bound by the caller, who may have to advertise its
    /// address before the upstream starts); must be called within a Tokio runtime.
    pub fn start(
        certificates: &Certificates,
        listener: TcpListener,
        upstream: SocketAddr,
        client_auth: ClientAuth,
    ) -> TlsTerminator {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_auth {
            ClientAuth::NotAsked => builder.with_no_client_auth(),
            ClientAuth::Required => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(
                    certificates.roots("ca.pem"),
                    provider(),
                )
                .build()
                .expect("a client verifier"),
            ),
        };
        let config = builder
            .with_single_cert(
                certificates.chain("server.pem"),
                certificates.key("server.key"),
            )
            .expect("the server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let address = listener.local_addr().expect("the terminator's address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let (ok, failed) = (Arc::clone(&handshakes), Arc::clone(&failures));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, ok, failed) =
                    (acceptor.clone(), Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsTerminator {
            address,
            handshakes,
            failures,
            task,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// TLS handshakes that succeeded so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed so far (untrusted certificate, no client certificate,
    /// plaintext).
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
