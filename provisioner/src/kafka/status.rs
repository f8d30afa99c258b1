//! `status`: the topic as described against the config, one line per setting, each
//! marked `ok` or `DIFFERS`; a pure function, so the wording and the count are tested.

use super::TopicConfig;
use super::describe::{ConfigEntry, TopicState};

/// The lines to print for `topic` and how many of them differ.
pub(super) fn report(
    topic: &str,
    wanted: &TopicConfig,
    state: Option<&TopicState>,
) -> (Vec<String>, usize) {
    let Some(state) = state else {
        return (
            vec![format!("kafka topic {topic}: missing (migrate creates it)")],
            1,
        );
    };
    let mut lines = Vec::new();
    let mut differences = 0;
    let mut compare = |what: &str, actual: String, configured: String| {
        let mark = if actual == configured {
            "ok"
        } else {
            differences += 1;
            "DIFFERS"
        };
        lines.push(format!(
            "kafka topic {topic}: {what}: {actual} (config: {configured}) {mark}"
        ));
    };
    compare(
        "partitions",
        state.partitions.to_string(),
        wanted.partitions.to_string(),
    );
    compare(
        "replication factor",
        state.replication_factor.to_string(),
        wanted.replication_factor.to_string(),
    );
    for (key, value) in &wanted.config {
        let actual = state.configs.get(key).map(ConfigEntry::shown);
        compare(key, actual.unwrap_or_else(|| "unset".into()), value.clone());
    }
    for (key, entry) in &state.configs {
        if entry.is_override && !wanted.config.contains_key(key) {
            let mark = if wanted.strict_sync {
                differences += 1;
                "DIFFERS (strict_sync removes it)"
            } else {
                "kept (strict_sync is off)"
            };
            lines.push(format!(
                "kafka topic {topic}: {key}: {} (not in config) {mark}",
                entry.shown()
            ));
        }
    }
    (lines, differences)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn every_setting_is_compared_and_unlisted_overrides_shown() {
        let wanted = TopicConfig {
            partitions: 6,
            config: BTreeMap::from([
                ("retention.ms".into(), "1000".into()),
                ("cleanup.policy".into(), "delete".into()),
            ]),
            ..TopicConfig::default()
        };
        let state = TopicState {
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::from([
                ("retention.ms".into(), ConfigEntry::overridden("1000")),
                ("segment.bytes".into(), ConfigEntry::overridden("1048576")),
            ]),
        };
        let (lines, differences) = report("t-v1", &wanted, Some(&state));
        assert_eq!(
            lines,
            vec![
                "kafka topic t-v1: partitions: 3 (config: 6) DIFFERS",
                "kafka topic t-v1: replication factor: 1 (config: 1) ok",
                "kafka topic t-v1: cleanup.policy: unset (config: delete) DIFFERS",
                "kafka topic t-v1: retention.ms: 1000 (config: 1000) ok",
                "kafka topic t-v1: segment.bytes: 1048576 (not in config) DIFFERS (strict_sync removes it)",
            ]
        );
        assert_eq!(differences, 3);

        let lenient = TopicConfig {
            strict_sync: false,
            ..wanted
        };
        let (lines, differences) = report("t-v1", &lenient, Some(&state));
        assert!(lines[4].ends_with("kept (strict_sync is off)"), "{lines:?}");
        assert_eq!(differences, 2);
    }

    #[test]
    fn a_missing_topic_is_one_difference() {
        let (lines, differences) = report("t-v1", &TopicConfig::default(), None);
        assert_eq!(
            lines,
            vec!["kafka topic t-v1: missing (migrate creates it)"]
        );
        assert_eq!(differences, 1);
    }
}
