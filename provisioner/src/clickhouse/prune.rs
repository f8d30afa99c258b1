//! `prune`: removing an old schema version's Kafka table and views, an explicit
//! operator decision. The decision is a pure function of the rule, each version's
//! idle time and its topic's backlog; the rest gathers those and carries it out.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use flow_proto::SchemaVersion;

use super::server::Server;
use super::{ClickHouseError, Schema, conclude, drop_version, render};
use crate::config::Config;

/// Which old versions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneRule {
    /// Keep the newest K versions that have tables; the older go.
    KeepLast(u32),
    /// Versions whose newest flow is older than this go.
    IdleLongerThan(Duration),
}

/// The rule and `--force` as the command line gives them; the configuration's rule
/// applies when the command line gives none.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// `--keep-last K`.
    pub keep_last: Option<u32>,
    /// `--idle DURATION`.
    pub idle: Option<Duration>,
    /// `--force`: prune even while the topic still holds unconsumed records.
    pub force: bool,
}

impl PruneOptions {
    /// The rule from the flags, or else from the configuration.
    pub fn rule(&self, config: &Config) -> Result<PruneRule, ClickHouseError> {
        let ch = &config.clickhouse;
        let (keep_last, idle) = if self.keep_last.is_some() || self.idle.is_some() {
            (self.keep_last, self.idle)
        } else {
            (ch.prune_keep_last, ch.prune_idle)
        };
        match (keep_last, idle) {
            (Some(_), Some(_)) => Err(ClickHouseError::TwoPruneRules),
            (Some(k), None) => Ok(PruneRule::KeepLast(k.max(1))),
            (None, Some(d)) => Ok(PruneRule::IdleLongerThan(d)),
            (None, None) => Err(ClickHouseError::NoPruneRule),
        }
    }
}

/// An old version that still has tables, as `decide` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The version number.
    pub version: u32,
    /// Time since its newest flow; None when `flows` holds none of it.
    pub idle: Option<Duration>,
    /// Records of its topic the consumer group has not committed, or why that is unknown.
    pub backlog: Result<u64, String>,
}

/// What happens to a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It stays, and why.
    Keep(String),
    /// Its objects are dropped, and why.
    Prune(String),
    /// The rule would drop it, but its topic is not drained.
    Refuse(String),
}

/// The verdict for each candidate (the current version is always kept), in order.
pub fn decide(
    rule: PruneRule,
    current: u32,
    candidates: &[Candidate],
    force: bool,
) -> Vec<(u32, Verdict)> {
    let mut newest_first: Vec<u32> = candidates.iter().map(|c| c.version).collect();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    candidates
        .iter()
        .map(|c| {
            let selected = match rule {
                _ if c.version == current => Err("the current version".to_owned()),
                PruneRule::KeepLast(k) => {
                    // The current version always counts among those kept.
                    let rank = newest_first
                        .iter()
                        .filter(|&&v| v != current)
                        .position(|&v| v == c.version)
                        .unwrap_or(0)
                        + 1;
                    if rank < k as usize {
                        Err(format!("among the {k} newest"))
                    } else {
                        Ok(format!("older than the {k} newest"))
                    }
                }
                PruneRule::IdleLongerThan(limit) => match c.idle {
                    None => Ok("no flows of it are stored".to_owned()),
                    Some(idle) if idle > limit => {
                        Ok(format!("idle for {}", humantime::format_duration(idle)))
                    }
                    Some(idle) => Err(format!(
                        "its newest flow is {} old",
                        humantime::format_duration(idle)
                    )),
                },
            };
            let verdict = match (selected, &c.backlog) {
                (Err(why), _) => Verdict::Keep(why),
                (Ok(why), Ok(0)) => Verdict::Prune(format!("{why}, topic drained")),
                (Ok(why), Ok(n)) if force => {
                    Verdict::Prune(format!("{why}, forced despite {n} unconsumed records"))
                }
                (Ok(why), Err(e)) if force => {
                    Verdict::Prune(format!("{why}, forced with the backlog unknown ({e})"))
                }
                (Ok(_), Ok(n)) => Verdict::Refuse(format!("{n} unconsumed records")),
                (Ok(_), Err(e)) => Verdict::Refuse(format!("backlog unknown: {e}")),
            };
            (c.version, verdict)
        })
        .collect()
}

/// `flow-provisioner prune`: decides by the rule, logs every verdict, drops the pruned
/// versions' objects on every server. Returns the number of versions pruned.
pub async fn prune(
    config: &Config,
    options: PruneOptions,
    schema: Schema<'_>,
    out: &mut (dyn Write + Send),
) -> Result<usize, ClickHouseError> {
    let rule = options.rule(config)?;
    let Some(current) = schema.versions.last() else {
        return Ok(0);
    };
    let servers: Vec<Server> = config
        .clickhouse
        .servers
        .iter()
        .map(|url| Server::new(url, &config.clickhouse))
        .collect();
    let mut failures = Vec::new();
    // Per version with tables on some server: the shortest idle time seen.
    let mut present: BTreeMap<u32, Option<Duration>> = BTreeMap::new();
    for server in &servers {
        match survey(server, schema.versions).await {
            Ok(found) => {
                for (version, idle) in found {
                    let entry = present.entry(version).or_insert(idle);
                    *entry = match (*entry, idle) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            Err(e) => failures.push(render::redact(config, &format!("{}: {e}", server.url))),
        }
    }
    let mut kafka = config.kafka.clone();
    kafka.brokers = config.clickhouse.kafka_brokers(&config.kafka).to_vec();
    let mut candidates = Vec::new();
    for (&number, &idle) in &present {
        let backlog = match schema.versions.iter().find(|v| v.number == number) {
            Some(version) if number != current.number => crate::kafka::backlog(
                &kafka,
                &version.topic(&kafka.topic_base),
                &config.clickhouse.kafka_group,
            )
            .await
            .map_err(|e| e.to_string()),
            _ => Ok(0),
        };
        candidates.push(Candidate {
            version: number,
            idle,
            backlog,
        });
    }
    let mut pruned = 0;
    let mut refused = Vec::new();
    for (number, verdict) in decide(rule, current.number, &candidates, options.force) {
        let Some(version) = schema.versions.iter().find(|v| v.number == number) else {
            continue;
        };
        match verdict {
            Verdict::Keep(why) => {
                say_line(out, format_args!("prune: keeping schema {version}: {why}"));
            }
            Verdict::Refuse(why) => {
                say_line(out, format_args!("prune: refusing schema {version}: {why}"));
                refused.push(format!("{version} ({why})"));
            }
            Verdict::Prune(why) => {
                say_line(out, format_args!("prune: dropping schema {version}: {why}"));
                for server in &servers {
                    match drop_version(server, version).await {
                        Ok(()) => say_line(
                            out,
                            format_args!("{}: dropped schema {version}'s objects", server.url),
                        ),
                        Err(e) => failures.push(format!("{}: {e}", server.url)),
                    }
                }
                pruned += 1;
            }
        }
    }
    conclude(config, failures, pruned)?;
    if refused.is_empty() {
        Ok(pruned)
    } else {
        Err(ClickHouseError::PruneRefused { refused })
    }
}

fn say_line(out: &mut (dyn Write + Send), line: std::fmt::Arguments<'_>) {
    let _ = writeln!(out, "{line}");
}

/// The known versions with a raw table on the server, with their idle time there.
async fn survey(
    server: &Server,
    versions: &[SchemaVersion],
) -> Result<Vec<(u32, Option<Duration>)>, super::server::RequestError> {
    let existing = server.objects().await?;
    let idle: BTreeMap<u32, u64> = if existing.contains("flows") {
        server
            .idle_seconds()
            .await?
            .into_iter()
            .map(|(v, s)| (u32::from(v), s))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(versions
        .iter()
        .filter(|v| existing.contains(&v.clickhouse().raw_table))
        .map(|v| {
            (
                v.number,
                idle.get(&v.number).map(|&s| Duration::from_secs(s)),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn candidate(version: u32, idle_days: Option<u64>, backlog: Result<u64, &str>) -> Candidate {
        Candidate {
            version,
            idle: idle_days.map(|d| DAY * d as u32),
            backlog: backlog.map_err(str::to_owned),
        }
    }

    fn kinds(verdicts: &[(u32, Verdict)]) -> Vec<(u32, &'static str)> {
        verdicts
            .iter()
            .map(|(v, verdict)| {
                (
                    *v,
                    match verdict {
                        Verdict::Keep(_) => "keep",
                        Verdict::Prune(_) => "prune",
                        Verdict::Refuse(_) => "refuse",
                    },
                )
            })
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_and_always_the_current() {
        let candidates = [
            candidate(1, Some(90), Ok(0)),
            candidate(2, Some(10), Ok(0)),
            candidate(3, Some(0), Ok(0)),
        ];
        let verdicts = decide(PruneRule::KeepLast(2), 3, &candidates, false);
        assert_eq!(kinds(&verdicts), [(1, "prune"), (2, "keep"), (3, "keep")]);
        let verdicts = decide(PruneRule::KeepLast(1), 3, &candidates, false);
        assert_eq!(kinds(&verdicts), [(1, "prune"), (2, "prune"), (3, "keep")]);
    }

    #[test]
    fn idle_prunes_quiet_versions_and_those_with_no_flows_left() {
        let candidates = [
            candidate(1, None, Ok(0)),
            candidate(2, Some(40), Ok(0)),
            candidate(3, Some(2), Ok(0)),
            candidate(4, None, Ok(0)),
        ];
        let verdicts = decide(PruneRule::IdleLongerThan(DAY * 30), 4, &candidates, false);
        assert_eq!(
            kinds(&verdicts),
            [(1, "prune"), (2, "prune"), (3, "keep"), (4, "keep")]
        );
    }

    #[test]
    fn a_backlog_refuses_unless_forced() {
        let candidates = [
            candidate(1, Some(90), Ok(12)),
            candidate(2, Some(90), Err("broker unreachable")),
            candidate(3, Some(0), Ok(5)),
        ];
        let rule = PruneRule::KeepLast(1);
        let verdicts = decide(rule, 3, &candidates, false);
        assert_eq!(
            kinds(&verdicts),
            [(1, "refuse"), (2, "refuse"), (3, "keep")]
        );
        assert_eq!(
            verdicts[0].1,
            Verdict::Refuse("12 unconsumed records".into())
        );
        let forced = decide(rule, 3, &candidates, true);
        assert_eq!(kinds(&forced), [(1, "prune"), (2, "prune"), (3, "keep")]);
        assert!(matches!(&forced[0].1, Verdict::Prune(why) if why.contains("forced despite 12")));
    }

    #[test]
    fn the_rule_comes_from_flags_before_config_and_is_needed() {
        let mut config = Config::default();
        let none = PruneOptions::default();
        assert!(matches!(
            none.rule(&config),
            Err(ClickHouseError::NoPruneRule)
        ));
        config.clickhouse.prune_keep_last = Some(3);
        assert_eq!(none.rule(&config).unwrap(), PruneRule::KeepLast(3));
        let flags = PruneOptions {
            idle: Some(DAY),
            ..PruneOptions::default()
        };
        assert_eq!(flags.rule(&config).unwrap(), PruneRule::IdleLongerThan(DAY));
        let both = PruneOptions {
            keep_last: Some(1),
            idle: Some(DAY),
            force: false,
        };
        assert!(matches!(
            both.rule(&config),
            Err(ClickHouseError::TwoPruneRules)
        ));
    }
}
