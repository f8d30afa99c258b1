//! Every name that follows from a schema version, in one place so that the agent,
//! the provisioner and ClickHouse never disagree on them.

use std::fmt;

/// One released version of the flow schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The version number, `N` in `flow-vN.proto`.
    pub number: u32,
    /// The `.proto` text, as ClickHouse must find it in its format_schemas directory.
    pub proto_text: &'static str,
}

/// Every released version, oldest first. The last one is what the agent writes.
pub const VERSIONS: &[SchemaVersion] = &[SchemaVersion {
    number: 1,
    proto_text: include_str!("../flow-v1.proto"),
}];

/// The version the agent writes.
pub fn current() -> SchemaVersion {
    *VERSIONS
        .last()
        .expect("VERSIONS lists at least one version")
}

impl SchemaVersion {
    /// The version with this number, if it was released.
    pub fn get(number: u32) -> Option<SchemaVersion> {
        VERSIONS.iter().copied().find(|v| v.number == number)
    }

    /// `flow-vN.proto`: the file name init.sh writes and `kafka_schema` refers to.
    pub fn proto_file_name(&self) -> String {
        format!("flow-v{}.proto", self.number)
    }

    /// `FlowMessageVN`: the message type in that file.
    pub fn message_name(&self) -> String {
        format!("FlowMessageV{}", self.number)
    }

    /// The names ClickHouse uses for this version.
    pub fn clickhouse(&self) -> ClickHouseNames {
        ClickHouseNames {
            raw_table: format!("flows_{}_raw", self.number),
            consumer_view: format!("flows_{}_raw_consumer", self.number),
            kafka_schema: format!("{}:{}", self.proto_file_name(), self.message_name()),
        }
    }

    /// The Kafka topic this version is written to, for a topic base name.
    pub fn topic(&self, base: &str) -> String {
        format!("{base}-v{}", self.number)
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number)
    }
}

/// The topic the agent writes to today: `flows` → `flows-v1`.
pub fn topic_name(base: &str) -> String {
    current().topic(base)
}

/// ClickHouse objects of one schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseNames {
    /// The Kafka-engine table, `flows_N_raw`.
    pub raw_table: String,
    /// The materialized view from the raw table into `flows`, `flows_N_raw_consumer`.
    pub consumer_view: String,
    /// The `kafka_schema` / `format_schema` value, `flow-vN.proto:FlowMessageVN`.
    pub kafka_schema: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_version() {
        let v1 = SchemaVersion::get(1).unwrap();
        assert_eq!(v1.topic("flows"), "flows-v1");
        assert_eq!(v1.proto_file_name(), "flow-v1.proto");
        assert_eq!(
            v1.clickhouse(),
            ClickHouseNames {
                raw_table: "flows_1_raw".into(),
                consumer_view: "flows_1_raw_consumer".into(),
                kafka_schema: "flow-v1.proto:FlowMessageV1".into(),
            }
        );
        assert_eq!(SchemaVersion::get(0), None);
    }

    #[test]
    fn current_is_the_newest_version() {
        let newest = VERSIONS.iter().map(|v| v.number).max().unwrap();
        assert_eq!(current().number, newest);
        assert_eq!(topic_name("flows"), format!("flows-v{newest}"));
        assert!(
            current()
                .proto_text
                .contains(&format!("message {} {{", current().message_name()))
        );
    }

    #[test]
    fn versions_are_ordered_and_each_file_declares_its_message() {
        for pair in VERSIONS.windows(2) {
            assert!(pair[0].number < pair[1].number);
        }
        for version in VERSIONS {
            assert!(version.proto_text.contains("syntax = \"proto3\";"));
            assert!(
                version
                    .proto_text
                    .contains(&format!("message {} {{", version.message_name()))
            );
        }
    }
}
