//! What the SQL files' placeholders stand for: the configuration's values for the
//! numbered migrations, and for each schema version the Kafka-engine table's columns
//! and settings, derived from the version's `.proto` and the `flows` table.

use flow_proto::SchemaVersion;

use super::config::{ClickHouseConfig, SettingValue};
use super::migrations::{Values, escape, quote};
use crate::config::Config;
use crate::kafka::SaslMechanism;

/// The values every file may use.
///
/// - `database`, `on_cluster` (` ON CLUSTER 'name'` or nothing), `cluster` (`'name'`,
///   for cluster.sql), `replicated`
///   (`Replicated` before a MergeTree engine's name, or nothing);
/// - `flows_ttl`, `flows_1m_ttl`, `flows_5m_ttl`, `flows_1h_ttl`: seconds;
/// - `provisioner_url`: the endpoints' base URL, escaped for a quoted literal;
/// - `http_credentials`: the dictionaries' ` CREDENTIALS(…)` clause, or nothing.
pub fn base_values(config: &Config) -> Values {
    let ch = &config.clickhouse;
    let mut values = Values::default();
    values
        .set("database", ch.database.clone())
        .set("on_cluster", on_cluster(ch.cluster.as_deref()))
        .set(
            "cluster",
            ch.cluster.as_deref().map(quote).unwrap_or_default(),
        )
        .set(
            "replicated",
            if ch.cluster.is_some() {
                "Replicated"
            } else {
                ""
            },
        )
        .set("flows_ttl", ch.flows_ttl.as_secs().to_string())
        .set("flows_1m_ttl", ch.flows_1m_ttl.as_secs().to_string())
        .set("flows_5m_ttl", ch.flows_5m_ttl.as_secs().to_string())
        .set("flows_1h_ttl", ch.flows_1h_ttl.as_secs().to_string())
        .set("provisioner_url", escape(&config.http.public_url()))
        .set(
            "http_credentials",
            config
                .http
                .auth
                .as_ref()
                .map(|a| {
                    format!(
                        " CREDENTIALS(USER {} PASSWORD {})",
                        quote(&a.username),
                        quote(&a.password)
                    )
                })
                .unwrap_or_default(),
        );
    values
}

/// ` ON CLUSTER 'name'` with a cluster, nothing without.
pub fn on_cluster(cluster: Option<&str>) -> String {
    cluster
        .map(|c| format!(" ON CLUSTER {}", quote(c)))
        .unwrap_or_default()
}

/// `text` with every configured password replaced by `[HIDDEN]`, as written in SQL
/// or as configured, for anything printed.
pub fn redact(config: &Config, text: &str) -> String {
    let passwords = [
        config.http.auth.as_ref().map(|a| a.password.as_str()),
        config.kafka.sasl.as_ref().map(|s| s.password.as_str()),
        config.clickhouse.password.as_deref(),
    ];
    let mut text = text.to_owned();
    for password in passwords.into_iter().flatten().filter(|p| !p.is_empty()) {
        text = text
            .replace(&escape(password), "[HIDDEN]")
            .replace(password, "[HIDDEN]");
    }
    text
}

/// A column of `flows` as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct FlowsColumn {
    /// Its name, which is the protobuf field's.
    pub name: String,
    /// Its ClickHouse type.
    pub r#type: String,
}

/// Why a version's objects cannot be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The `.proto` text does not parse.
    #[error("schema {version}: its .proto does not parse: {message}")]
    Proto {
        /// The version.
        version: String,
        /// What the parser said.
        message: String,
    },
    /// The `.proto` lacks its message.
    #[error("schema {version}: no message {message} in its .proto")]
    NoMessage {
        /// The version.
        version: String,
        /// The message it should declare.
        message: String,
    },
    /// A field has no column in `flows`: a migration must add it first.
    #[error(
        "schema {version}: field `{field}` has no column in flows; add a migration that adds it (ALTER TABLE flows ADD COLUMN IF NOT EXISTS …)"
    )]
    MissingColumn {
        /// The version.
        version: String,
        /// The field.
        field: String,
    },
}

/// The field names of a version's message, in declaration order.
pub fn field_names(version: &SchemaVersion) -> Result<Vec<String>, VersionError> {
    let file = protox::file::File::from_source(&version.proto_file_name(), version.proto_text)
        .map_err(|e| VersionError::Proto {
            version: version.to_string(),
            message: e.to_string(),
        })?;
    let message = version.message_name();
    let descriptor = file
        .file_descriptor_proto()
        .message_type
        .iter()
        .find(|m| m.name() == message)
        .ok_or_else(|| VersionError::NoMessage {
            version: version.to_string(),
            message,
        })?;
    Ok(descriptor
        .field
        .iter()
        .map(|f| f.name().to_owned())
        .collect())
}

/// How the Kafka-engine tables reach Kafka, the same for every version.
#[derive(Debug, Clone)]
pub struct KafkaEngine {
    /// `host:port` of the brokers.
    pub brokers: Vec<String>,
    /// The topic base name.
    pub topic_base: String,
    /// Consumers per table, already capped at the server's `max_threads`.
    pub consumers: u64,
    /// Whether the tables carry the `.proto` text itself rather than a file name.
    pub inline_schema: bool,
    /// The settings that follow from the configuration, rendered, in order.
    pub settings: Vec<(String, String)>,
}

impl KafkaEngine {
    /// The engine settings from the configuration, consumers capped at `max_threads`;
    /// `inline_schema` when the configuration asks and the server can.
    pub fn new(config: &Config, max_threads: u64, inline_schema: bool) -> KafkaEngine {
        let ch: &ClickHouseConfig = &config.clickhouse;
        let mut settings = vec![("kafka_group_name".to_owned(), quote(&ch.kafka_group))];
        let security = match (&config.kafka.tls, &config.kafka.sasl) {
            (None, None) => None,
            (Some(_), None) => Some("ssl"),
            (None, Some(_)) => Some("sasl_plaintext"),
            (Some(_), Some(_)) => Some("sasl_ssl"),
        };
        if let Some(protocol) = security {
            settings.push(("kafka_security_protocol".into(), quote(protocol)));
        }
        if let Some(sasl) = &config.kafka.sasl {
            let mechanism = match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            settings.push(("kafka_sasl_mechanism".into(), quote(mechanism)));
            settings.push(("kafka_sasl_username".into(), quote(&sasl.username)));
            settings.push(("kafka_sasl_password".into(), quote(&sasl.password)));
        }
        for (key, value) in &ch.kafka_settings {
            let value = match value {
                SettingValue::Integer(n) => n.to_string(),
                SettingValue::Boolean(b) => u8::from(*b).to_string(),
                SettingValue::Text(t) => quote(t),
            };
            settings.push((key.clone(), value));
        }
        KafkaEngine {
            brokers: ch.kafka_brokers(&config.kafka).to_vec(),
            topic_base: config.kafka.topic_base.clone(),
            consumers: u64::from(ch.kafka_consumers).clamp(1, max_threads.max(1)),
            inline_schema,
            settings,
        }
    }
}

/// The view that keeps a version's rejected records, `flows_N_raw_errors`.
pub fn errors_view(version: &SchemaVersion) -> String {
    format!("{}_errors", version.clickhouse().raw_table)
}

/// The values of `per_version.sql` for one version: the base values plus `raw_table`,
/// `errors_view`, `consumer_view`, `raw_columns`, `kafka_settings`, `raw_comment`,
/// `consumer_columns` and `schema_version`; and the raw table's fingerprint, its
/// comment, which says what it was made with (passwords left out) so that a later run
/// sees when the configuration changed.
pub fn version_values(
    base: &Values,
    version: &SchemaVersion,
    flows: &[FlowsColumn],
    kafka: &KafkaEngine,
) -> Result<(Values, String), VersionError> {
    let names = version.clickhouse();
    let fields = field_names(version)?;
    let mut raw_columns = Vec::with_capacity(fields.len());
    for field in &fields {
        let column =
            flows
                .iter()
                .find(|c| &c.name == field)
                .ok_or_else(|| VersionError::MissingColumn {
                    version: version.to_string(),
                    field: field.clone(),
                })?;
        raw_columns.push(format!("    `{field}` {}", raw_type(&column.r#type)));
    }
    let mut settings = vec![
        (
            "kafka_broker_list".to_owned(),
            quote(&kafka.brokers.join(",")),
        ),
        (
            "kafka_topic_list".to_owned(),
            quote(&version.topic(&kafka.topic_base)),
        ),
        ("kafka_format".to_owned(), quote("Protobuf")),
        (
            "kafka_num_consumers".to_owned(),
            kafka.consumers.to_string(),
        ),
        ("kafka_handle_error_mode".to_owned(), quote("stream")),
    ];
    if kafka.inline_schema {
        // Not kafka_schema: the Kafka engine expands {macros} in its own settings, and
        // a .proto is full of braces; the format's setting is passed through as it is.
        settings.push(("format_schema".to_owned(), quote(version.proto_text)));
        settings.push(("format_schema_source".to_owned(), quote("string")));
        settings.push((
            "format_schema_message_name".to_owned(),
            quote(&version.message_name()),
        ));
    } else {
        settings.push(("kafka_schema".to_owned(), quote(&names.kafka_schema)));
    }
    settings.extend(kafka.settings.iter().cloned());
    let fingerprint = format!(
        "made by flow-provisioner from: {}; columns: {}",
        settings
            .iter()
            .map(|(k, v)| match k.as_str() {
                "kafka_sasl_password" => format!("{k} = [HIDDEN]"),
                // A released .proto never changes: its name says it all.
                "format_schema" => format!("{k} = <{} inline>", version.proto_file_name()),
                _ => format!("{k} = {v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        raw_columns
            .iter()
            .map(|c| c.trim())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut values = base.clone();
    values
        .set("raw_comment", quote(&fingerprint))
        .set("raw_table", names.raw_table)
        .set("errors_view", errors_view(version))
        .set("consumer_view", names.consumer_view)
        .set("raw_columns", raw_columns.join(",\n"))
        .set(
            "kafka_settings",
            settings
                .iter()
                .map(|(k, v)| format!("    {k} = {v}"))
                .collect::<Vec<_>>()
                .join(",\n"),
        )
        .set(
            "consumer_columns",
            fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .set("schema_version", version.number.to_string());
    Ok((values, fingerprint))
}

/// The raw table's type for a `flows` column: the same, without LowCardinality (a
/// Kafka table holds one block at a time, where a dictionary does not pay).
fn raw_type(flows_type: &str) -> &str {
    flows_type
        .strip_prefix("LowCardinality(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(flows_type)
}

#[cfg(test)]
mod tests {
    use super::super::migrations::{CLUSTER, MIGRATIONS, PER_VERSION, statements};
    use super::*;

    fn flows_columns() -> Vec<FlowsColumn> {
        field_names(&flow_proto::current())
            .unwrap()
            .into_iter()
            .map(|name| FlowsColumn {
                r#type: if name.ends_with("_name") {
                    "LowCardinality(String)".into()
                } else {
                    "UInt32".into()
                },
                name,
            })
            .collect()
    }

    /// Every statement of every file, substituted with `config`'s values.
    fn all_statements(config: &Config) -> Vec<String> {
        let base = base_values(config);
        let kafka = KafkaEngine::new(config, 8, false);
        let mut out = Vec::new();
        for migration in MIGRATIONS {
            for statement in statements(migration.sql) {
                out.push(
                    base.substitute(&statement)
                        .unwrap_or_else(|e| panic!("{}: {e}", migration.name)),
                );
            }
        }
        if config.clickhouse.cluster.is_some() {
            for statement in statements(CLUSTER) {
                out.push(
                    base.substitute(&statement)
                        .unwrap_or_else(|e| panic!("cluster.sql: {e}")),
                );
            }
        }
        for version in flow_proto::VERSIONS {
            let (values, _) = version_values(&base, version, &flows_columns(), &kafka).unwrap();
            for statement in statements(PER_VERSION) {
                out.push(
                    values
                        .substitute(&statement)
                        .unwrap_or_else(|e| panic!("per_version.sql: {e}")),
                );
            }
        }
        out
    }

    #[test]
    fn every_placeholder_of_every_file_is_known_and_every_statement_idempotent() {
        let statements = all_statements(&Config::default());
        assert!(statements.len() > 10);
        for statement in &statements {
            assert!(!statement.contains(";\n"), "one statement: {statement}");
            assert!(
                statement.contains(" IF NOT EXISTS ") || statement.contains(" IF EXISTS "),
                "not idempotent: {statement}"
            );
        }
    }

    fn cluster_config() -> Config {
        Config::parse(
            "[clickhouse]\ncluster = \"flows\"\ndatabase = \"netflow\"\n\
             [http]\npublic_url = \"http://provisioner:8080/\"\nauth = { username = \"ch\", password = \"it's\" }\n\
             [kafka]\nsasl = { mechanism = \"SCRAM-SHA-512\", username = \"u\", password = \"p\" }\ntls = {}",
        )
        .unwrap()
    }

    #[test]
    fn cluster_mode_puts_on_cluster_on_every_statement_and_replicates_merge_trees() {
        for statement in all_statements(&cluster_config()) {
            let head = statement.lines().next().unwrap_or_default();
            assert!(head.contains(" IF NOT EXISTS "), "not idempotent: {head}");
            assert!(
                head.contains(" ON CLUSTER 'flows'"),
                "no ON CLUSTER: {head}"
            );
            if let Some((_, engine)) = statement.split_once("ENGINE = ") {
                assert!(
                    ["Replicated", "Kafka", "Distributed('flows', netflow, "]
                        .iter()
                        .any(|e| engine.starts_with(e)),
                    "{head}: ENGINE = {engine}"
                );
            }
            assert!(head.contains("netflow."), "{head}");
        }
    }

    #[test]
    fn cluster_mode_snapshot_of_the_flows_table_head_and_the_dictionary_source() {
        let statements = all_statements(&cluster_config());
        assert!(statements.contains(
            &"CREATE TABLE IF NOT EXISTS netflow.flows_distributed ON CLUSTER 'flows' AS netflow.flows\n\
              ENGINE = Distributed('flows', netflow, flows, rand())"
                .to_owned()
        ));
        let flows = &statements[0];
        assert!(
            flows.starts_with("CREATE TABLE IF NOT EXISTS netflow.flows ON CLUSTER 'flows'\n(")
        );
        assert!(
            flows.contains(
                "\nENGINE = ReplicatedMergeTree\nPARTITION BY toYYYYMMDD(time_received)\n"
            )
        );
        assert!(flows.contains("TTL time_received + toIntervalSecond(1296000)"));
        let protocols = statements
            .iter()
            .find(|s| s.contains("DICTIONARY IF NOT EXISTS netflow.protocols"))
            .unwrap();
        assert!(
            protocols.contains(
                "SOURCE(HTTP(URL 'http://provisioner:8080/api/v0/clickhouse/protocols.csv' FORMAT 'CSVWithNames' CREDENTIALS(USER 'ch' PASSWORD 'it\\'s')))"
            ),
            "{protocols}"
        );
    }

    #[test]
    fn the_kafka_table_carries_security_consumers_and_extra_settings() {
        let mut config = cluster_config();
        config.clickhouse.kafka_consumers = 16;
        config
            .clickhouse
            .kafka_settings
            .insert("kafka_flush_interval_ms".into(), SettingValue::Integer(500));
        let kafka = KafkaEngine::new(&config, 4, false);
        assert_eq!(kafka.consumers, 4, "capped at max_threads");
        let v1 = flow_proto::current();
        let (values, fingerprint) =
            version_values(&base_values(&config), &v1, &flows_columns(), &kafka).unwrap();
        assert!(!fingerprint.contains("= 'p'"), "{fingerprint}");
        let raw = values.substitute(&statements(PER_VERSION)[0]).unwrap();
        for expected in [
            "CREATE TABLE IF NOT EXISTS netflow.flows_1_raw ON CLUSTER 'flows'",
            "    `exporter_name` String,",
            "    `in_if` UInt32,",
            "ENGINE = Kafka",
            "    kafka_broker_list = '127.0.0.1:9092',",
            "    kafka_topic_list = 'flows-v1',",
            "    kafka_format = 'Protobuf',",
            "    kafka_schema = 'flow-v1.proto:FlowMessageV1',",
            "    kafka_num_consumers = 4,",
            "    kafka_handle_error_mode = 'stream',",
            "    kafka_group_name = 'clickhouse',",
            "    kafka_security_protocol = 'sasl_ssl',",
            "    kafka_sasl_mechanism = 'SCRAM-SHA-512',",
            "    kafka_sasl_password = 'p',",
            "    kafka_flush_interval_ms = 500",
        ] {
            assert!(
                raw.lines().any(|l| l == expected),
                "{expected:?} not in\n{raw}"
            );
        }
    }

    #[test]
    fn an_inline_schema_carries_the_proto_text_and_the_message_name() {
        let config = Config::default();
        let v1 = flow_proto::current();
        let kafka = KafkaEngine::new(&config, 2, true);
        let (values, _) =
            version_values(&base_values(&config), &v1, &flows_columns(), &kafka).unwrap();
        let raw = values.substitute(&statements(PER_VERSION)[0]).unwrap();
        assert!(
            raw.contains("    format_schema = '// Flow schema, version 1.\\n"),
            "{raw}"
        );
        assert!(!raw.contains("    kafka_schema = "), "{raw}");
        assert!(
            raw.contains("    format_schema_source = 'string',"),
            "{raw}"
        );
        assert!(
            raw.contains("    format_schema_message_name = 'FlowMessageV1',"),
            "{raw}"
        );
    }

    #[test]
    fn a_field_without_a_flows_column_is_named() {
        let config = Config::default();
        let mut columns = flows_columns();
        columns.retain(|c| c.name != "src_vlan");
        let err = version_values(
            &base_values(&config),
            &flow_proto::current(),
            &columns,
            &KafkaEngine::new(&config, 2, false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`src_vlan`"), "{err}");
    }
}
