//! The decision, apart from any I/O: from the configured topic and what the broker
//! described, the actions that bring it in line and the warnings about what is left.
//!
//! An existing topic keeps its partitions and replication factor (partitions may only
//! grow, and only with `allow_partition_increase`); config entries that differ are set;
//! with `strict_sync`, overrides the config does not list are deleted.

use std::collections::BTreeMap;
use std::fmt;

use super::TopicConfig;
use super::describe::TopicState;

/// What `migrate` would do, and what it leaves as it is and says so.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The changes, in the order they are sent.
    pub actions: Vec<Action>,
    /// Differences that are left as they are.
    pub warnings: Vec<Warning>,
}

/// One change to the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// CreateTopics with the configured settings.
    Create {
        /// Partitions.
        partitions: i32,
        /// Replication factor.
        replication_factor: i16,
        /// Config entries.
        config: BTreeMap<String, String>,
    },
    /// CreatePartitions up to `to`.
    IncreasePartitions {
        /// The current count.
        from: i32,
        /// The configured count.
        to: i32,
    },
    /// Set a config entry.
    Set {
        /// The key.
        key: String,
        /// The value the broker reported, if it reported the key.
        from: Option<String>,
        /// The configured value.
        to: String,
    },
    /// Delete an override the config does not list (`strict_sync`).
    Delete {
        /// The key.
        key: String,
        /// Its value as reported.
        value: Option<String>,
    },
}

/// A difference left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The topic has fewer partitions than configured and increases are not allowed.
    PartitionsNotIncreased {
        /// The topic's.
        actual: i32,
        /// The config's.
        configured: i32,
    },
    /// The topic has more partitions than configured: partitions are never removed.
    PartitionsNotDecreased {
        /// The topic's.
        actual: i32,
        /// The config's.
        configured: i32,
    },
    /// The replication factor differs: it is never changed.
    Replication {
        /// The topic's.
        actual: i16,
        /// The config's.
        configured: i16,
    },
    /// The broker says this entry cannot be changed.
    ReadOnly {
        /// The key.
        key: String,
    },
    /// The broker hides this entry's value, so it cannot be compared.
    Hidden {
        /// The key.
        key: String,
    },
}

/// The plan for the configured topic given what the broker described (`None`: missing).
pub fn plan(wanted: &TopicConfig, state: Option<&TopicState>) -> Plan {
    let Some(state) = state else {
        return Plan {
            actions: vec![Action::Create {
                partitions: wanted.partitions,
                replication_factor: wanted.replication_factor,
                config: wanted.config.clone(),
            }],
            warnings: Vec::new(),
        };
    };
    let mut plan = Plan::default();
    let (actual, configured) = (state.partitions, wanted.partitions);
    if actual < configured && wanted.allow_partition_increase {
        plan.actions.push(Action::IncreasePartitions {
            from: actual,
            to: configured,
        });
    } else if actual < configured {
        plan.warnings
            .push(Warning::PartitionsNotIncreased { actual, configured });
    } else if actual > configured {
        plan.warnings
            .push(Warning::PartitionsNotDecreased { actual, configured });
    }
    if state.replication_factor != wanted.replication_factor {
        plan.warnings.push(Warning::Replication {
            actual: state.replication_factor,
            configured: wanted.replication_factor,
        });
    }
    for (key, value) in &wanted.config {
        let reported = state.configs.get(key);
        match reported {
            Some(entry) if entry.value.as_ref() == Some(value) => {}
            Some(entry) if entry.read_only => {
                plan.warnings.push(Warning::ReadOnly { key: key.clone() });
            }
            Some(entry) if entry.value.is_none() => {
                plan.warnings.push(Warning::Hidden { key: key.clone() });
            }
            _ => plan.actions.push(Action::Set {
                key: key.clone(),
                from: reported.and_then(|e| e.value.clone()),
                to: value.clone(),
            }),
        }
    }
    if wanted.strict_sync {
        for (key, entry) in &state.configs {
            if entry.is_override && !entry.read_only && !wanted.config.contains_key(key) {
                plan.actions.push(Action::Delete {
                    key: key.clone(),
                    value: entry.value.clone(),
                });
            }
        }
    }
    plan
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create {
                partitions,
                replication_factor,
                config,
            } => {
                let entries: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "create the topic: {partitions} partitions, replication factor \
                     {replication_factor}, config {{{}}}",
                    entries.join(", ")
                )
            }
            Action::IncreasePartitions { from, to } => {
                write!(f, "increase partitions from {from} to {to}")
            }
            Action::Set { key, from, to } => match from {
                Some(from) => write!(f, "set {key} = {to} (now {from})"),
                None => write!(f, "set {key} = {to} (now unset)"),
            },
            Action::Delete { key, value } => write!(
                f,
                "delete override {key} (now {}; not in the config, strict_sync is on)",
                value.as_deref().unwrap_or("<hidden>")
            ),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::PartitionsNotIncreased { actual, configured } => write!(
                f,
                "the topic has {actual} partitions, the config says {configured}: left at \
                 {actual} (allow_partition_increase is off)"
            ),
            Warning::PartitionsNotDecreased { actual, configured } => write!(
                f,
                "the topic has {actual} partitions, the config says {configured}: left at \
                 {actual} (partitions are never decreased)"
            ),
            Warning::Replication { actual, configured } => write!(
                f,
                "the topic's replication factor is {actual}, the config says {configured}: \
                 left at {actual} (it is never changed)"
            ),
            Warning::ReadOnly { key } => {
                write!(
                    f,
                    "{key} differs from the config but the broker marks it read-only"
                )
            }
            Warning::Hidden { key } => {
                write!(
                    f,
                    "{key}: the broker hides its value, so it is left as it is"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::describe::ConfigEntry;

    fn wanted(entries: &[(&str, &str)]) -> TopicConfig {
        TopicConfig {
            partitions: 6,
            replication_factor: 3,
            strict_sync: true,
            allow_partition_increase: false,
            config: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn state(partitions: i32, rf: i16, entries: &[(&str, ConfigEntry)]) -> TopicState {
        TopicState {
            partitions,
            replication_factor: rf,
            configs: entries
                .iter()
                .map(|(k, e)| ((*k).to_owned(), e.clone()))
                .collect(),
        }
    }

    fn default_entry(value: &str) -> ConfigEntry {
        ConfigEntry {
            is_override: false,
            ..ConfigEntry::overridden(value)
        }
    }

    const RETENTION: (&str, &str) = ("retention.ms", "86400000");

    #[test]
    fn a_missing_topic_is_created_with_everything_configured() {
        let plan = plan(&wanted(&[RETENTION]), None);
        assert_eq!(
            plan.actions,
            vec![Action::Create {
                partitions: 6,
                replication_factor: 3,
                config: BTreeMap::from([("retention.ms".into(), "86400000".into())]),
            }]
        );
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn a_topic_in_line_needs_nothing() {
        let current = state(
            6,
            3,
            &[("retention.ms", ConfigEntry::overridden("86400000"))],
        );
        assert_eq!(plan(&wanted(&[RETENTION]), Some(&current)), Plan::default());
    }

    #[test]
    fn a_differing_entry_is_set_and_a_missing_one_added() {
        let current = state(
            6,
            3,
            &[("retention.ms", ConfigEntry::overridden("3600000"))],
        );
        let plan = plan(
            &wanted(&[RETENTION, ("cleanup.policy", "delete")]),
            Some(&current),
        );
        assert_eq!(
            plan.actions,
            vec![
                Action::Set {
                    key: "cleanup.policy".into(),
                    from: None,
                    to: "delete".into()
                },
                Action::Set {
                    key: "retention.ms".into(),
                    from: Some("3600000".into()),
                    to: "86400000".into()
                },
            ]
        );
    }

    #[test]
    fn a_default_equal_to_the_config_is_in_line() {
        let current = state(6, 3, &[("retention.ms", default_entry("86400000"))]);
        assert!(
            plan(&wanted(&[RETENTION]), Some(&current))
                .actions
                .is_empty()
        );
    }

    #[test]
    fn strict_sync_deletes_unlisted_overrides_only() {
        let current = state(
            6,
            3,
            &[
                ("retention.ms", ConfigEntry::overridden("86400000")),
                ("segment.bytes", ConfigEntry::overridden("1048576")),
                ("cleanup.policy", default_entry("delete")),
            ],
        );
        let strict = plan(&wanted(&[RETENTION]), Some(&current));
        assert_eq!(
            strict.actions,
            vec![Action::Delete {
                key: "segment.bytes".into(),
                value: Some("1048576".into())
            }]
        );
        let lenient = TopicConfig {
            strict_sync: false,
            ..wanted(&[RETENTION])
        };
        assert_eq!(plan(&lenient, Some(&current)), Plan::default());
    }

    #[test]
    fn fewer_partitions_warn_unless_increase_is_allowed() {
        let current = state(3, 3, &[]);
        let plan_off = plan(&wanted(&[]), Some(&current));
        assert!(plan_off.actions.is_empty());
        assert_eq!(
            plan_off.warnings,
            vec![Warning::PartitionsNotIncreased {
                actual: 3,
                configured: 6
            }]
        );
        let allowed = TopicConfig {
            allow_partition_increase: true,
            ..wanted(&[])
        };
        let plan_on = plan(&allowed, Some(&current));
        assert_eq!(
            plan_on.actions,
            vec![Action::IncreasePartitions { from: 3, to: 6 }]
        );
        assert!(plan_on.warnings.is_empty());
    }

    #[test]
    fn more_partitions_are_never_decreased() {
        let allowed = TopicConfig {
            allow_partition_increase: true,
            ..wanted(&[])
        };
        let plan = plan(&allowed, Some(&state(12, 3, &[])));
        assert!(plan.actions.is_empty());
        assert_eq!(
            plan.warnings,
            vec![Warning::PartitionsNotDecreased {
                actual: 12,
                configured: 6
            }]
        );
        assert!(plan.warnings[0].to_string().contains("12"));
        assert!(plan.warnings[0].to_string().contains('6'));
    }

    #[test]
    fn a_replication_mismatch_warns_naming_both_values() {
        let plan = plan(&wanted(&[]), Some(&state(6, 1, &[])));
        assert!(plan.actions.is_empty());
        assert_eq!(
            plan.warnings,
            vec![Warning::Replication {
                actual: 1,
                configured: 3
            }]
        );
        let text = plan.warnings[0].to_string();
        assert!(text.contains("is 1") && text.contains("says 3"), "{text}");
    }

    #[test]
    fn read_only_and_hidden_entries_are_left_with_a_warning() {
        let read_only = ConfigEntry {
            read_only: true,
            ..ConfigEntry::overridden("1")
        };
        let hidden = ConfigEntry {
            value: None,
            ..ConfigEntry::overridden("")
        };
        let current = state(6, 3, &[("a", read_only), ("b", hidden)]);
        let plan = plan(&wanted(&[("a", "2"), ("b", "3")]), Some(&current));
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert_eq!(
            plan.warnings,
            vec![
                Warning::ReadOnly { key: "a".into() },
                Warning::Hidden { key: "b".into() }
            ]
        );
    }

    #[test]
    fn everything_at_once_comes_in_sending_order() {
        let allowed = TopicConfig {
            allow_partition_increase: true,
            ..wanted(&[RETENTION])
        };
        let current = state(
            3,
            1,
            &[
                ("retention.ms", ConfigEntry::overridden("1")),
                ("segment.bytes", ConfigEntry::overridden("2")),
                (
                    "message.format.version",
                    ConfigEntry {
                        read_only: true,
                        ..ConfigEntry::overridden("3.0")
                    },
                ),
            ],
        );
        let plan = plan(&allowed, Some(&current));
        assert_eq!(
            plan.actions,
            vec![
                Action::IncreasePartitions { from: 3, to: 6 },
                Action::Set {
                    key: "retention.ms".into(),
                    from: Some("1".into()),
                    to: "86400000".into()
                },
                Action::Delete {
                    key: "segment.bytes".into(),
                    value: Some("2".into())
                },
            ],
            "a read-only override is never deleted"
        );
        assert_eq!(
            plan.warnings,
            vec![Warning::Replication {
                actual: 1,
                configured: 3
            }]
        );
    }

    #[test]
    fn actions_read_well() {
        let set = Action::Set {
            key: "retention.ms".into(),
            from: Some("1".into()),
            to: "2".into(),
        };
        assert_eq!(set.to_string(), "set retention.ms = 2 (now 1)");
        let create = plan(&wanted(&[RETENTION]), None).actions.remove(0);
        assert_eq!(
            create.to_string(),
            "create the topic: 6 partitions, replication factor 3, config {retention.ms=86400000}"
        );
    }
}
