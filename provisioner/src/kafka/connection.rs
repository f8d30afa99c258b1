//! One broker connection: TCP (TLS when configured), ApiVersions to agree on a version
//! per API, SASL when configured, then framed request/response calls whose bodies
//! `kafka-protocol` encodes and decodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, FetchRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{KafkaConfig, KafkaError, KafkaSasl, sasl, tls};

/// A byte stream to a broker, plaintext or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The largest response frame accepted; a broker's metadata for a large cluster fits.
const MAX_FRAME: usize = 256 << 20;

/// The ApiVersions version asked first (what Kafka 2.4 and later answer).
const API_VERSIONS_FIRST: i16 = 3;

/// Kafka's UNSUPPORTED_VERSION: the broker then answers ApiVersions in v0 form.
const UNSUPPORTED_VERSION: i16 = 35;

/// APIs used below kafka-protocol's newest version: Fetch names topics by id from v13,
/// which brokers that advertise it do not all honour (the test broker answers nothing).
const OUR_LIMITS: &[(i16, i16)] = &[(FetchRequest::KEY, 12)];

/// How to open connections: what the config says, prepared once for every broker.
#[derive(Clone)]
pub(super) struct Settings {
    client_id: StrBytes,
    timeout: Duration,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    sasl: Option<KafkaSasl>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("client_id", &self.client_id.as_str())
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl Settings {
    /// Prepares TLS (certificates are read here, once) and SASL from the config.
    pub(super) fn new(config: &KafkaConfig) -> Result<Settings, KafkaError> {
        Ok(Settings {
            client_id: StrBytes::from_string(config.client_id.clone()),
            timeout: config.timeout(),
            tls: config.tls.as_ref().map(tls::client_config).transpose()?,
            sasl: config.sasl.clone(),
        })
    }

    /// The TLS client configuration connections use, if any.
    #[cfg(test)]
    pub(super) fn tls(&self) -> Option<&tokio_rustls::rustls::ClientConfig> {
        self.tls.as_deref()
    }

    /// The SASL settings connections authenticate with, if any.
    #[cfg(test)]
    pub(super) fn sasl(&self) -> Option<&KafkaSasl> {
        self.sasl.as_ref()
    }
}

/// An open, negotiated (and authenticated) connection to one broker.
pub(super) struct Connection {
    broker: String,
    stream: Box<dyn Stream>,
    /// The broker's version range per API key, from ApiVersions.
    versions: HashMap<i16, (i16, i16)>,
    correlation_id: i32,
    client_id: StrBytes,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `broker` (`host:port`), negotiates versions and authenticates.
    pub(super) async fn open(broker: &str, settings: &Settings) -> Result<Connection, KafkaError> {
        let failed = |message: String| KafkaError::Broker {
            broker: broker.to_owned(),
            message,
        };
        let tcp = tokio::time::timeout(settings.timeout, TcpStream::connect(broker))
            .await
            .map_err(|_| failed(format!("no connection within {:?}", settings.timeout)))?
            .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &settings.tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = broker.rsplit_once(':').map_or(broker, |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
                        .map_err(|e| failed(format!("`{host}` is not a TLS server name: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = tokio::time::timeout(settings.timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| failed("TLS handshake timed out".into()))?
                    .map_err(|e| failed(format!("TLS handshake: {e}")))?;
                Box::new(tls)
            }
        };
        let mut connection = Connection {
            broker: broker.to_owned(),
            stream,
            versions: HashMap::new(),
            correlation_id: 0,
            client_id: settings.client_id.clone(),
            timeout: settings.timeout,
        };
        connection.negotiate().await?;
        if let Some(credentials) = &settings.sasl {
            sasl::authenticate(&mut connection, credentials).await?;
        }
        Ok(connection)
    }

    /// `host:port` of the broker, for messages.
    pub(super) fn broker(&self) -> &str {
        &self.broker
    }

    /// The request timeout in milliseconds, for admin requests' own `timeout_ms`.
    pub(super) fn timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// The highest version of `R` both sides support, if any.
    pub(super) fn version<R: Request>(&self) -> Option<i16> {
        let (min, max) = *self.versions.get(&R::KEY)?;
        let ours = R::VERSIONS;
        let limit = OUR_LIMITS
            .iter()
            .find(|(key, _)| *key == R::KEY)
            .map_or(ours.max, |(_, limit)| *limit);
        let version = max.min(ours.max).min(limit);
        (version >= min.max(ours.min)).then_some(version)
    }

    /// The highest common version of `R`, or an error saying what it was needed for.
    pub(super) fn require<R: Request>(
        &self,
        api: &'static str,
        purpose: &'static str,
    ) -> Result<i16, KafkaError> {
        self.version::<R>().ok_or_else(|| KafkaError::Unsupported {
            broker: self.broker.clone(),
            api,
            purpose,
        })
    }

    /// Sends `request` at the negotiated version and decodes the response.
    pub(super) async fn call<R: Request>(
        &mut self,
        request: &R,
        api: &'static str,
    ) -> Result<(R::Response, i16), KafkaError> {
        let version = self.require::<R>(api, "run this step")?;
        let mut body = self.exchange::<R>(request, version).await?;
        let response = R::Response::decode(&mut body, version)
            .map_err(|e| self.error(format!("cannot decode the {api} v{version} response: {e}")))?;
        Ok((response, version))
    }

    /// An error about this broker.
    pub(super) fn error(&self, message: String) -> KafkaError {
        KafkaError::Broker {
            broker: self.broker.clone(),
            message,
        }
    }

    /// An error for a Kafka error code in a response (`Ok` for code 0).
    pub(super) fn check(
        &self,
        request: impl std::fmt::Display,
        code: i16,
        message: Option<&StrBytes>,
    ) -> Result<(), KafkaError> {
        let Some(error) = ResponseError::try_from_code(code) else {
            return Ok(());
        };
        Err(KafkaError::Refused {
            broker: self.broker.clone(),
            request: request.to_string(),
            code,
            name: format!("{error}"),
            detail: message
                .map(|m| m.as_str())
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default(),
        })
    }

    /// ApiVersions: learns the broker's range per API. A broker that does not know the
    /// version asked answers in v0 form with its own range for ApiVersions; ask again then.
    async fn negotiate(&mut self) -> Result<(), KafkaError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("flow-provisioner"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = API_VERSIONS_FIRST;
        for _ in 0..2 {
            let body = self.exchange(&request, version).await?;
            let response = ApiVersionsResponse::decode(&mut body.clone(), version)
                .or_else(|_| ApiVersionsResponse::decode(&mut body.clone(), 0))
                .map_err(|e| self.error(format!("cannot decode ApiVersions: {e}")))?;
            if response.error_code == UNSUPPORTED_VERSION {
                let theirs = response
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiVersionsRequest::KEY);
                version = theirs.map_or(0, |k| k.max_version.min(version - 1));
                continue;
            }
            self.check("ApiVersions", response.error_code, None)?;
            self.versions = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            return Ok(());
        }
        Err(self.error("no ApiVersions version in common".into()))
    }

    /// One framed round trip: header and body out, the response body (header checked) back.
    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<Bytes, KafkaError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_request(request, version, correlation_id, self.client_id.clone())
            .map_err(|e| self.error(format!("cannot encode request {}: {e}", R::KEY)))?;
        let timeout = self.timeout;
        let round_trip = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            let size = self.stream.read_u32().await? as usize;
            if size > MAX_FRAME {
                return Err(std::io::Error::other(format!(
                    "a {size}-byte response frame"
                )));
            }
            let mut body = vec![0u8; size];
            self.stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(timeout, round_trip)
            .await
            .map_err(|_| {
                self.error(format!(
                    "no answer to request {} within {timeout:?}",
                    R::KEY
                ))
            })?
            .map_err(|e| self.error(format!("connection lost during request {}: {e}", R::KEY)))?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| self.error(format!("bad response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(self.error(format!(
                "response to request {correlation_id} carries id {}",
                header.correlation_id
            )));
        }
        Ok(body)
    }
}

/// A whole request frame: size, header and body at `version`.
pub(super) fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: StrBytes,
) -> Result<BytesMut, String> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version).map_err(text)?
        + request.compute_size(version).map_err(text)?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_u32(u32::try_from(size).map_err(text)?);
    header.encode(&mut frame, header_version).map_err(text)?;
    request.encode(&mut frame, version).map_err(text)?;
    Ok(frame)
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Config;
    use crate::kafka::SaslMechanism;

    #[test]
    fn tls_and_sasl_settings_reach_the_connection_settings() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/kafka/testdata");
        let config = Config::parse(&format!(
            "[kafka]\nclient_id = \"edge-prov\"\ntimeout_seconds = 7\n\
             [kafka.tls]\nca_file = \"{dir}/ca.pem\"\ncert_file = \"{dir}/client.pem\"\n\
             key_file = \"{dir}/client.key\"\n\
             [kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"flow\"\npassword = \"pw\"\n"
        ))
        .unwrap();
        let settings = Settings::new(&config.kafka).unwrap();
        let tls = settings.tls().unwrap();
        assert!(
            tls.client_auth_cert_resolver.has_certs(),
            "the client certificate is loaded"
        );
        let sasl = settings.sasl().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(sasl.username, "flow");
        assert_eq!(settings.client_id.as_str(), "edge-prov");
        assert_eq!(settings.timeout, Duration::from_secs(7));
        assert!(!format!("{settings:?}").contains("pw\""), "{settings:?}");

        let plain = Settings::new(&Config::parse("").unwrap().kafka).unwrap();
        assert!(plain.tls().is_none() && plain.sasl().is_none());
    }

    /// One TLS peer on loopback that answers a single ApiVersions, made with
    /// kafka-protocol's encoder, then closes.
    async fn tls_peer() -> u16 {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use tokio::net::TcpListener;

        let acceptor = crate::kafka::tls::tests::server(false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let size = tls.read_u32().await.unwrap();
            let mut frame = vec![0; size as usize];
            tls.read_exact(&mut frame).await.unwrap();
            let mut body = Bytes::from(frame);
            let header =
                RequestHeader::decode(&mut body, ApiVersionsRequest::header_version(3)).unwrap();
            assert_eq!(header.request_api_key, ApiVersionsRequest::KEY);
            let version = |key: i16, max: i16| {
                ApiVersion::default()
                    .with_api_key(key)
                    .with_min_version(0)
                    .with_max_version(max)
            };
            let response = ApiVersionsResponse::default().with_api_keys(vec![
                version(18, 3),
                version(3, 12),
                version(1, 17),
            ]);
            let mut out = BytesMut::new();
            out.put_u32(0);
            let response_header =
                ResponseHeader::default().with_correlation_id(header.correlation_id);
            response_header.encode(&mut out, 0).unwrap();
            response
                .encode(&mut out, header.request_api_version)
                .unwrap();
            let size = u32::try_from(out.len() - 4).unwrap();
            out[..4].copy_from_slice(&size.to_be_bytes());
            tls.write_all(&out).await.unwrap();
            tls.flush().await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn a_tls_connection_negotiates_versions_through_the_handshake() {
        use kafka_protocol::messages::MetadataRequest;

        let tls_settings = |ca: &str| {
            let ca = crate::kafka::tls::tests::testdata(ca);
            let text = format!("[kafka.tls]\nca_file = \"{}\"", ca.display());
            Settings::new(&Config::parse(&text).unwrap().kafka).unwrap()
        };
        let broker = format!("localhost:{}", tls_peer().await);
        let connection = Connection::open(&broker, &tls_settings("ca.pem"))
            .await
            .unwrap();
        assert_eq!(connection.version::<MetadataRequest>(), Some(12));
        // Fetch stops at v12 on our side (see OUR_LIMITS).
        assert_eq!(connection.version::<FetchRequest>(), Some(12));

        let broker = format!("localhost:{}", tls_peer().await);
        let error = Connection::open(&broker, &tls_settings("other-ca.pem"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("broker {broker}: TLS handshake")),
            "{error}"
        );
    }

    #[test]
    fn a_request_frame_is_sized_and_carries_its_header() {
        let request = ApiVersionsRequest::default();
        let frame = encode_request(&request, 3, 42, StrBytes::from_static_str("me")).unwrap();
        let mut bytes = frame.freeze();
        let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(size, bytes.len() - 4);
        let mut body = bytes.split_off(4);
        let header =
            RequestHeader::decode(&mut body, ApiVersionsRequest::header_version(3)).unwrap();
        assert_eq!(header.request_api_key, 18);
        assert_eq!(header.request_api_version, 3);
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client_id.unwrap().as_str(), "me");
        let decoded = ApiVersionsRequest::decode(&mut body, 3).unwrap();
        assert_eq!(decoded.client_software_name.as_str(), "");
    }
}
