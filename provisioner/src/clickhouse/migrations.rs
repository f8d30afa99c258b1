//! The SQL of `migrations/`, embedded in the binary, and how a file becomes the
//! statements sent to a server: split one statement per request (servers refuse
//! several in one), then named values substituted.
//!
//! Splitting rule: lines whose first non-blank characters are `--` are comments and
//! dropped; a statement ends with a `;` that ends a line; blank statements are skipped.
//! Placeholders are `{name}` with `name` made of `a-z`, `0-9` and `_`; an unknown name is
//! an error, and substituted text is never scanned again.

use std::collections::BTreeMap;

/// One numbered migration: applied once per server, in order, recorded there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its number, the prefix of its file name.
    pub version: u32,
    /// The file name in `migrations/`.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

macro_rules! embedded {
    ($($version:literal => $file:literal),* $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../../../migrations/", $file)),
        }),*]
    };
}

/// Every numbered migration, in order.
pub const MIGRATIONS: &[Migration] = embedded![
    1 => "0001_flows.sql",
    2 => "0002_aggregates.sql",
    3 => "0003_exporters.sql",
    4 => "0004_dictionaries.sql",
    5 => "0005_raw_errors.sql",
];

/// The objects of one schema version, applied for every version after the migrations.
pub const PER_VERSION: &str = include_str!("../../../migrations/per_version.sql");

/// The Distributed tables of cluster mode, applied after the migrations when a cluster is set.
pub const CLUSTER: &str = include_str!("../../../migrations/cluster.sql");

/// What `CLUSTER` creates, in order.
pub const CLUSTER_OBJECTS: &[&str] = &[
    "flows_distributed",
    "flows_1m_distributed",
    "flows_5m_distributed",
    "flows_1h_distributed",
    "exporters_distributed",
];

/// The dictionaries the migrations create, reloaded after each run.
pub const DICTIONARIES: &[&str] = &["protocols", "asns", "networks"];

/// Splits a file into statements, per the rule in the module's documentation.
pub fn statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let trimmed = line.trim_end();
        match trimmed.strip_suffix(';') {
            Some(last) => {
                current.push_str(last);
                let statement = current.trim();
                if !statement.is_empty() {
                    statements.push(statement.to_owned());
                }
                current.clear();
            }
            None => {
                current.push_str(trimmed);
                current.push('\n');
            }
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        statements.push(rest.to_owned());
    }
    statements
}

/// A placeholder the values do not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placeholder {{{0}}}")]
pub struct UnknownPlaceholder(pub String);

/// The named values placeholders stand for.
#[derive(Debug, Clone, Default)]
pub struct Values(BTreeMap<&'static str, String>);

impl Values {
    /// Defines (or redefines) one value.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name, value.into());
        self
    }

    /// Replaces every `{name}` of `text`.
    pub fn substitute(&self, text: &str) -> Result<String, UnknownPlaceholder> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                let name = &after[..name_len];
                let value = self
                    .0
                    .get(name)
                    .ok_or_else(|| UnknownPlaceholder(name.to_owned()))?;
                out.push_str(value);
                rest = &after[name_len + 1..];
            } else {
                out.push('{');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `text` as the inside of a single-quoted SQL literal.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\'', "\\'")
        .replace('\n', "\\n")
}

/// `text` as a single-quoted SQL literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", escape(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_folder_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut numbered: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        numbered.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(listed, numbered);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "{}: numbers follow each other",
                m.name
            );
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn the_cluster_objects_are_what_the_file_creates() {
        let created: Vec<String> = statements(CLUSTER)
            .iter()
            .map(|s| {
                let name = s.split_whitespace().nth(5).unwrap_or_default();
                name.trim_start_matches("{database}.")
                    .trim_end_matches("{on_cluster}")
                    .to_owned()
            })
            .collect();
        assert_eq!(created, CLUSTER_OBJECTS);
    }

    #[test]
    fn splitting_follows_the_rule() {
        let text = "-- a comment; with a semicolon;\nCREATE TABLE a\n(x String DEFAULT ';')\nENGINE = Memory;\n\n  -- another\n;\nSELECT 1;SELECT 2;\nSELECT 3";
        assert_eq!(
            statements(text),
            vec![
                "CREATE TABLE a\n(x String DEFAULT ';')\nENGINE = Memory",
                "SELECT 1;SELECT 2",
                "SELECT 3",
            ]
        );
    }

    #[test]
    fn substitution_is_explicit_and_single_pass() {
        let mut values = Values::default();
        values
            .set("database", "db")
            .set("engine", "Replicated{shard}");
        assert_eq!(
            values
                .substitute("CREATE TABLE {database}.t ENGINE = {engine}MergeTree, '{}', {x:UInt8}")
                .unwrap(),
            "CREATE TABLE db.t ENGINE = Replicated{shard}MergeTree, '{}', {x:UInt8}"
        );
        assert_eq!(
            values.substitute("TTL {flows_ttl}"),
            Err(UnknownPlaceholder("flows_ttl".into()))
        );
    }

    #[test]
    fn escaping_keeps_literals_whole() {
        assert_eq!(quote(r"it's a \ path"), r"'it\'s a \\ path'");
    }
}
