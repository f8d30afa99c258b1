//! The agent's configuration file (TOML).
//!
//! Every section rejects keys it does not know, so a typo stops start-up instead
//! of silently running with a default. Both kinds of mistake name the key at
//! fault: syntax and type errors through the path `serde_path_to_error` tracks,
//! semantic ones (a bad regex, a zero batch size) through [`ConfigError::Invalid`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::decode::{DecodeOptions, ExporterAddressSource, TimestampSource};

/// Why a configuration cannot be used. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// A key is unknown or its value has the wrong type.
    #[error("key `{key}`: {message}")]
    Key { key: String, message: String },
    /// A value parses but makes no sense.
    #[error("key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// UDP sockets flows arrive on.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<ListenerConfig>,
    /// What the agent knows about each exporter, by address.
    #[serde(default)]
    pub exporters: Vec<ExporterConfig>,
    /// Rules that classify interfaces from their description, tried in order.
    #[serde(default)]
    pub classifiers: Vec<ClassifierConfig>,
    /// Interfaces discovered from the local OS, for an agent running on the router.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// Where flows go.
    pub kafka: KafkaConfig,
    /// How much the agent holds while Kafka is slow or away.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// The `/metrics` and `/healthz` listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// How long shutdown may spend flushing what the agent holds.
    #[serde(default = "default_shutdown_flush_ms")]
    pub shutdown_flush_ms: u64,
}

fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig {
        address: SocketAddr::from(([0, 0, 0, 0], 2055)),
        ..ListenerConfig::default()
    }]
}

fn default_shutdown_flush_ms() -> u64 {
    5_000
}

/// One UDP port, and how the datagrams arriving on it are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `address:port` to bind.
    pub address: SocketAddr,
    /// Which protocol to expect; `auto` recognises each datagram by its header.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Sockets bound to the same port with SO_REUSEPORT, one thread each.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// SO_RCVBUF: what the kernel holds while a worker is busy (bursts).
    #[serde(default = "default_receive_buffer_bytes")]
    pub receive_buffer_bytes: usize,
    /// Where the exporter address comes from.
    #[serde(default)]
    pub exporter_address: AddressSource,
    /// Where `time_received` comes from.
    #[serde(default)]
    pub timestamps: Timestamps,
    /// Sampling rate for flows that carry none and whose exporter sets none.
    #[serde(default = "default_sampling_rate")]
    pub default_sampling_rate: u64,
    /// Seconds a NetFlow v9/IPFIX data set that arrives before its template waits
    /// for it (bounded per exporter); 0 drops such sets (counted as template misses).
    #[serde(default)]
    pub hold_early_data_seconds: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            address: SocketAddr::from(([0, 0, 0, 0], 2055)),
            protocol: ListenerProtocol::default(),
            workers: default_workers(),
            receive_buffer_bytes: default_receive_buffer_bytes(),
            exporter_address: AddressSource::default(),
            timestamps: Timestamps::default(),
            default_sampling_rate: default_sampling_rate(),
            hold_early_data_seconds: 0,
        }
    }
}

impl ListenerConfig {
    /// The decoder options this listener's datagrams are read with.
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            exporter_address: match self.exporter_address {
                AddressSource::Datagram => ExporterAddressSource::Datagram,
                AddressSource::Packet => ExporterAddressSource::Packet,
            },
            timestamps: match self.timestamps {
                Timestamps::Received => TimestampSource::Received,
                Timestamps::Flow => TimestampSource::Flow,
            },
            default_sampling_rate: self.default_sampling_rate,
            hold_early_data_seconds: self.hold_early_data_seconds,
        }
    }
}

/// Longer holds would keep stale data waiting for a template that is not coming.
const MAX_HOLD_EARLY_DATA_SECONDS: u64 = 60;

fn default_workers() -> usize {
    1
}

fn default_receive_buffer_bytes() -> usize {
    8 << 20
}

fn default_sampling_rate() -> u64 {
    1
}

/// Which protocol a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerProtocol {
    /// Any protocol, recognised per datagram.
    #[default]
    Auto,
    /// NetFlow v5, v9 and IPFIX only.
    Netflow,
    /// sFlow v5 only.
    Sflow,
}

/// TOML spelling of [`ExporterAddressSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressSource {
    #[default]
    Datagram,
    Packet,
}

/// TOML spelling of [`TimestampSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timestamps {
    #[default]
    Received,
    Flow,
}

/// What the operator states about one exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// The exporter's address, as flows carry it.
    pub address: IpAddr,
    /// Its name in the flows (`exporter_name`).
    #[serde(default)]
    pub name: String,
    /// Its group (`exporter_group`): site, role, …
    #[serde(default)]
    pub group: String,
    /// Sampling rate for flows from it that carry none.
    pub default_sampling_rate: Option<u64>,
    /// Sampling rate forced on every flow from it, whatever they carry.
    pub sampling_rate_override: Option<u64>,
    /// Interfaces by SNMP index.
    #[serde(default)]
    pub interfaces: BTreeMap<u32, InterfaceConfig>,
}

/// One interface of an exporter. Unset attributes may come from classifiers.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Mb/s.
    #[serde(default)]
    pub speed: u32,
    pub boundary: Option<Boundary>,
    pub provider: Option<String>,
    pub connectivity: Option<String>,
}

/// Whether an interface faces the outside of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boundary {
    External,
    Internal,
}

/// A regular expression on interface descriptions, and what a match sets.
/// `provider` and `connectivity` may use `$1`, `$name`, … from the match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub description: String,
    pub boundary: Option<Boundary>,
    pub provider: Option<String>,
    pub connectivity: Option<String>,
}

/// Local interface discovery (Linux sysfs), for an agent on the router itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    pub enabled: bool,
    /// Exporters whose interfaces are the local ones; empty means every exporter
    /// without an interface table entry.
    #[serde(default)]
    pub exporters: Vec<IpAddr>,
    /// Where the interfaces are listed.
    #[serde(default = "default_sysfs")]
    pub sysfs: PathBuf,
    /// How often the list is read again.
    #[serde(default = "default_refresh_seconds")]
    pub refresh_seconds: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: false,
            exporters: Vec::new(),
            sysfs: default_sysfs(),
            refresh_seconds: default_refresh_seconds(),
        }
    }
}

fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys/class/net")
}

fn default_refresh_seconds() -> u64 {
    60
}

/// The Kafka producer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic is `<topic_base>-v<schema version>`.
    #[serde(default = "default_topic_base")]
    pub topic_base: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub compression: Compression,
    /// How long a partition's batch may wait for more flows.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Bytes per produce request to one partition (a Kafka record batch).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Bytes of flows in one Kafka record.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Flows in one Kafka record.
    #[serde(default = "default_max_flows_per_message")]
    pub max_flows_per_message: usize,
    /// A produce call that takes longer is abandoned and retried (a frozen broker).
    #[serde(default = "default_produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// Longest wait between reconnection attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// `/healthz` fails once Kafka has been unreachable this long.
    #[serde(default = "default_unhealthy_after_seconds")]
    pub unhealthy_after_seconds: u64,
    /// TLS to the brokers; absent means plaintext.
    pub tls: Option<TlsConfig>,
    pub sasl: Option<SaslConfig>,
}

fn default_topic_base() -> String {
    "flows".to_owned()
}
fn default_client_id() -> String {
    "flow-agent".to_owned()
}
fn default_linger_ms() -> u64 {
    500
}
fn default_max_batch_bytes() -> usize {
    900_000
}
fn default_max_message_bytes() -> usize {
    64 << 10
}
fn default_max_flows_per_message() -> usize {
    500
}
fn default_produce_timeout_ms() -> u64 {
    10_000
}
fn default_max_backoff_ms() -> u64 {
    5_000
}
fn default_unhealthy_after_seconds() -> u64 {
    60
}

impl KafkaConfig {
    pub fn topic(&self) -> String {
        flow_proto::topic_name(&self.topic_base)
    }
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
    pub fn unhealthy_after(&self) -> Duration {
        Duration::from_secs(self.unhealthy_after_seconds)
    }
}

/// Kafka record compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Lz4,
    Zstd,
    Snappy,
}

/// `[kafka.tls]`: TLS to the brokers (see [`crate::tls`]). The keys are the
/// provisioner's, so one section serves both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// A PEM file of the certificate authorities to trust; the system's otherwise.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain), for brokers that require one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate (test setups only).
    pub insecure_skip_verify: bool,
}

/// SASL authentication (as rskafka offers it; use it with TLS for PLAIN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// The bound on what the agent holds between decoding and a successful produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Flows held (queued, batched or being produced); beyond, new flows are dropped.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_flows: default_max_flows(),
        }
    }
}

fn default_max_flows() -> usize {
    100_000
}

/// The HTTP listener; none when `listen` is absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            key_error(path, message)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot express. Command-line overrides are applied
    /// before, so call it again after changing fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError::invalid(
                "listeners",
                "at least one listener is needed",
            ));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.workers == 0 {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].workers"),
                    "must be at least 1",
                ));
            }
            if listener.hold_early_data_seconds > MAX_HOLD_EARLY_DATA_SECONDS {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].hold_early_data_seconds"),
                    format!("at most {MAX_HOLD_EARLY_DATA_SECONDS}: a hold is short"),
                ));
            }
            if listener.default_sampling_rate == 0 {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].default_sampling_rate"),
                    "must be at least 1",
                ));
            }
        }
        for (i, exporter) in self.exporters.iter().enumerate() {
            if self.exporters[..i]
                .iter()
                .any(|e| e.address == exporter.address)
            {
                return Err(ConfigError::invalid(
                    format!("exporters[{i}].address"),
                    format!("{} is listed twice", exporter.address),
                ));
            }
            for (key, rate) in [
                ("default_sampling_rate", exporter.default_sampling_rate),
                ("sampling_rate_override", exporter.sampling_rate_override),
            ] {
                if rate == Some(0) {
                    return Err(ConfigError::invalid(
                        format!("exporters[{i}].{key}"),
                        "must be at least 1",
                    ));
                }
            }
        }
        for (i, classifier) in self.classifiers.iter().enumerate() {
            if let Err(e) = regex_lite::Regex::new(&classifier.description) {
                return Err(ConfigError::invalid(
                    format!("classifiers[{i}].description"),
                    e.to_string(),
                ));
            }
        }
        if self.discovery.enabled && self.discovery.refresh_seconds == 0 {
            return Err(ConfigError::invalid(
                "discovery.refresh_seconds",
                "must be at least 1",
            ));
        }
        self.kafka.validate()?;
        if self.buffer.max_flows == 0 {
            return Err(ConfigError::invalid(
                "buffer.max_flows",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A deserialisation error at `path`. A missing field is reported at the path it
/// is missing from (`.` for the top level), so its own key is appended.
fn key_error(path: String, message: String) -> ConfigError {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    match missing {
        Some(field) => ConfigError::Key {
            key: if path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            },
            message: "required, but missing".to_owned(),
        },
        None => ConfigError::Key { key: path, message },
    }
}

impl KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.brokers",
                "at least one broker is needed",
            ));
        }
        if self.topic_base.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.topic_base",
                "must not be empty",
            ));
        }
        for (key, value) in [
            ("kafka.max_message_bytes", self.max_message_bytes),
            ("kafka.max_flows_per_message", self.max_flows_per_message),
            ("kafka.produce_timeout_ms", self.produce_timeout_ms as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.max_batch_bytes < self.max_message_bytes {
            return Err(ConfigError::invalid(
                "kafka.max_batch_bytes",
                "must be at least kafka.max_message_bytes",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n";

    fn error_of(text: &str) -> String {
        match Config::parse(text) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = Config::parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].address.port(), 2055);
        assert_eq!(config.kafka.compression, Compression::Lz4);
        assert_eq!(config.kafka.topic(), flow_proto::topic_name("flows"));
        assert_eq!(config.buffer.max_flows, 100_000);
        assert!(config.http.listen.is_none());
    }

    #[test]
    fn sample_file_is_valid() {
        let text = include_str!("../dist/agent.toml");
        let config = Config::parse(text).unwrap_or_else(|e| panic!("dist/agent.toml: {e}"));
        assert!(!config.exporters.is_empty());
        assert!(!config.classifiers.is_empty());
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let message = error_of(&format!("{MINIMAL}compresion = \"lz4\"\n"));
        assert!(message.contains("kafka.compresion"), "{message}");
        let message = error_of(&format!(
            "{MINIMAL}[[listeners]]\naddress = \"0.0.0.0:1\"\nworkerz = 2\n"
        ));
        assert!(message.contains("listeners[0].workerz"), "{message}");
    }

    #[test]
    fn wrong_values_are_named() {
        let message = error_of(&format!("{MINIMAL}compression = \"brotli\"\n"));
        assert!(message.contains("kafka.compression"), "{message}");
        let message = error_of(&format!("{MINIMAL}[[listeners]]\naddress = \"nowhere\"\n"));
        assert!(message.contains("listeners[0].address"), "{message}");
        let message = error_of("[kafka]\nbrokers = []\n");
        assert!(message.contains("kafka.brokers"), "{message}");
        let message = error_of(&format!(
            "{MINIMAL}[[classifiers]]\ndescription = \"(unclosed\"\n"
        ));
        assert!(message.contains("classifiers[0].description"), "{message}");
        let message = error_of(&format!(
            "{MINIMAL}[[listeners]]\naddress = \"0.0.0.0:1\"\nhold_early_data_seconds = 600\n"
        ));
        assert!(
            message.contains("listeners[0].hold_early_data_seconds"),
            "{message}"
        );
        let message = error_of(&format!("{MINIMAL}max_message_bytes = 2000000\n"));
        assert!(message.contains("kafka.max_batch_bytes"), "{message}");
    }

    #[test]
    fn missing_keys_are_named_with_their_path() {
        let message = error_of("");
        assert!(message.starts_with("key `kafka`: required"), "{message}");
        let message = error_of(&format!("{MINIMAL}[[exporters]]\nname = \"edge\"\n"));
        assert!(
            message.starts_with("key `exporters[0].address`: required"),
            "{message}"
        );
    }

    #[test]
    fn interface_tables_are_keyed_by_index() {
        let text = format!(
            "{MINIMAL}[[exporters]]\naddress = \"192.0.2.1\"\nname = \"edge1\"\n\
             [exporters.interfaces.10]\nname = \"xe-0/0/0\"\nspeed = 10000\nboundary = \"external\"\n"
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let interface = &config.exporters[0].interfaces[&10];
        assert_eq!(interface.name, "xe-0/0/0");
        assert_eq!(interface.boundary, Some(Boundary::External));
    }
}
