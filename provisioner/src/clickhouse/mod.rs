//! ClickHouse: the migrations in `migrations/`, applied in order on every configured
//! server, the per-version Kafka tables, and pruning of old versions.
//!
//! A run goes server by server; a server that fails is named and the others are still
//! done. On each: the numbered migrations past the recorded version (a dirty one runs
//! again: every statement is idempotent), then `per_version.sql` for every schema
//! version whose objects are missing, then the dictionaries are reloaded.

mod config;
mod migrations;
mod prune;
mod render;
mod server;

use std::io::Write;

use flow_proto::SchemaVersion;

pub use config::{ClickHouseConfig, SettingValue};
pub use migrations::{MIGRATIONS, Migration};
pub use prune::{Candidate, PruneOptions, PruneRule, Verdict, decide, prune};

use crate::Mode;
use crate::config::Config;
use migrations::{
    CLUSTER, CLUSTER_OBJECTS, DICTIONARIES, PER_VERSION, UnknownPlaceholder, Values, statements,
};
use render::{KafkaEngine, VersionError};
use server::{RequestError, Server, State};

/// What the provisioner applies: the numbered migrations and the schema versions.
/// The binary uses [`Schema::embedded`]; tests present others (a synthetic version).
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    /// The numbered migrations, in order.
    pub migrations: &'a [Migration],
    /// The schema versions, oldest first; the last is the current one.
    pub versions: &'a [SchemaVersion],
}

impl Schema<'static> {
    /// What this binary was built with.
    pub fn embedded() -> Schema<'static> {
        Schema {
            migrations: MIGRATIONS,
            versions: flow_proto::VERSIONS,
        }
    }
}

/// Why a ClickHouse step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// Some servers failed; each message starts with the server's URL.
    #[error("{} of {total} servers failed:\n{}", failures.len(), failures.join("\n"))]
    Servers {
        /// How many servers there were.
        total: usize,
        /// One message per failed server, secrets hidden.
        failures: Vec<String>,
    },
    /// `prune` has no rule to go by.
    #[error(
        "prune needs a rule: set clickhouse.prune_keep_last or clickhouse.prune_idle, or pass --keep-last or --idle"
    )]
    NoPruneRule,
    /// `prune` was given two rules.
    #[error("prune takes one rule: keep-last or idle, not both")]
    TwoPruneRules,
    /// `prune` left versions whose topics still hold unconsumed records.
    #[error("prune refused for {}: unconsumed records remain (wait for them to drain, or pass --force)", refused.join(", "))]
    PruneRefused {
        /// The versions and why.
        refused: Vec<String>,
    },
}

/// Why one server failed.
#[derive(Debug, thiserror::Error)]
enum ServerError {
    #[error("no answer within {} s", ANSWER_TIMEOUT.as_secs())]
    NoAnswer,
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(
        "{file}: statement {index} of {count} failed: {source}\n    statement: {statement}\n    {advice}"
    )]
    Statement {
        file: String,
        index: usize,
        count: usize,
        statement: String,
        source: clickhouse::error::Error,
        advice: &'static str,
    },
    #[error(
        "the server is at migration {applied}, past the last this provisioner knows ({known}): run a newer flow-provisioner"
    )]
    Newer { applied: i64, known: u32 },
    #[error(
        "migration {version} was left dirty, and this provisioner does not know it: run the flow-provisioner that started it"
    )]
    UnknownDirty { version: i64 },
    #[error("schema {version}: cannot drop its Kafka table and views to replace them: {source}")]
    Replace {
        version: String,
        source: clickhouse::error::Error,
    },
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("{file}: {source}")]
    Template {
        file: String,
        source: UnknownPlaceholder,
    },
}

/// How long a server may take to answer its first request: a server that drops
/// packets would otherwise hold the run for the system's TCP timeout.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The migrations' state, the first request to a server, within [`ANSWER_TIMEOUT`].
async fn first_contact(server: &Server) -> Result<Option<State>, ServerError> {
    tokio::time::timeout(ANSWER_TIMEOUT, server.state())
        .await
        .map_err(|_| ServerError::NoAnswer)?
        .map_err(ServerError::from)
}

const DIRTY_ADVICE: &str = "The migration is left dirty. Remove the cause, then run migrate again: its statements are idempotent, so it runs again from its first one.";
const VERSION_ADVICE: &str =
    "Remove the cause, then run migrate again: the missing objects are created then.";

/// Writes one line of the run's report; a report that cannot be written changes nothing.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

/// Applies the pending migrations on every server (or, in [`Mode::Plan`], lists them).
/// Returns the number of migrations and per-version objects applied or pending.
pub async fn migrate(config: &Config, mode: Mode) -> Result<usize, ClickHouseError> {
    migrate_with(config, mode, Schema::embedded(), &mut std::io::stdout()).await
}

/// [`migrate`] with a given schema, reporting to `out`.
pub async fn migrate_with(
    config: &Config,
    mode: Mode,
    schema: Schema<'_>,
    out: &mut (dyn Write + Send),
) -> Result<usize, ClickHouseError> {
    on_every_server(config, schema, Task::Migrate(mode), out).await
}

/// Prints, per server, the applied version, the dirty flag and the schema versions' tables.
/// Returns the number of differences from what `migrate` would leave.
pub async fn status(config: &Config) -> Result<usize, ClickHouseError> {
    status_with(config, Schema::embedded(), &mut std::io::stdout()).await
}

/// [`status`] with a given schema, reporting to `out`.
pub async fn status_with(
    config: &Config,
    schema: Schema<'_>,
    out: &mut (dyn Write + Send),
) -> Result<usize, ClickHouseError> {
    on_every_server(config, schema, Task::Status, out).await
}

/// What a run does on each server.
#[derive(Debug, Clone, Copy)]
enum Task {
    Migrate(Mode),
    Status,
}

/// Runs the task on every server in turn; one that fails is named, the others still run.
async fn on_every_server(
    config: &Config,
    schema: Schema<'_>,
    task: Task,
    out: &mut (dyn Write + Send),
) -> Result<usize, ClickHouseError> {
    let base = render::base_values(config);
    let mut failures = Vec::new();
    let mut count = 0;
    for url in &config.clickhouse.servers {
        let server = Server::new(url, &config.clickhouse);
        let result = match task {
            Task::Migrate(mode) => migrate_server(&server, config, &base, schema, mode, out).await,
            Task::Status => server_status(&server, config, &base, schema, out).await,
        };
        match result {
            Ok(n) => count += n,
            Err(e) => failures.push(render::redact(config, &format!("{url}: {e}"))),
        }
    }
    conclude(config, failures, count)
}

/// The run's outcome: the count, or every server's failure.
fn conclude(
    config: &Config,
    failures: Vec<String>,
    count: usize,
) -> Result<usize, ClickHouseError> {
    if failures.is_empty() {
        Ok(count)
    } else {
        Err(ClickHouseError::Servers {
            total: config.clickhouse.servers.len(),
            failures,
        })
    }
}

/// The numbered migrations still to run on a server from its state, and whether the
/// first of them is a dirty one running again.
fn pending<'a>(
    schema: Schema<'a>,
    state: Option<State>,
) -> Result<(Vec<&'a Migration>, bool), ServerError> {
    let known = schema.migrations.last().map_or(0, |m| m.version);
    let (from, dirty) = match state {
        None => (1, false),
        Some(s) if s.version > i64::from(known) => {
            return Err(ServerError::Newer {
                applied: s.version,
                known,
            });
        }
        Some(s) if s.dirty != 0 => {
            if !schema
                .migrations
                .iter()
                .any(|m| i64::from(m.version) == s.version)
            {
                return Err(ServerError::UnknownDirty { version: s.version });
            }
            (s.version, true)
        }
        Some(s) => (s.version + 1, false),
    };
    let pending = schema
        .migrations
        .iter()
        .filter(|m| i64::from(m.version) >= from)
        .collect();
    Ok((pending, dirty))
}

/// A file's statements with the values substituted.
fn rendered(file: &str, text: &str, values: &Values) -> Result<Vec<String>, ServerError> {
    statements(text)
        .iter()
        .map(|s| {
            values
                .substitute(s)
                .map_err(|source| ServerError::Template {
                    file: file.to_owned(),
                    source,
                })
        })
        .collect()
}

async fn migrate_server(
    server: &Server,
    config: &Config,
    base: &Values,
    schema: Schema<'_>,
    mode: Mode,
    out: &mut (dyn Write + Send),
) -> Result<usize, ServerError> {
    let url = &server.url;
    let mut state = first_contact(server).await?;
    let (pending, dirty) = pending(schema, state)?;
    if let (true, Some(first)) = (dirty, pending.first()) {
        say!(
            out,
            "{url}: migration {} was left dirty by an earlier run that failed midway; its statements are idempotent, so it runs again from its first one",
            first.name
        );
    }
    if mode == Mode::Apply && state.is_none() {
        server.bootstrap().await?;
    }
    for migration in &pending {
        let sql = rendered(migration.name, migration.sql, base)?;
        if mode == Mode::Plan {
            say!(out, "{url}: pending {}:", migration.name);
            for statement in &sql {
                say!(out, "{};\n", render::redact(config, statement));
            }
            continue;
        }
        state = Some(server.record(state, migration.version, true).await?);
        run(server, migration.name, &sql, DIRTY_ADVICE).await?;
        state = Some(server.record(state, migration.version, false).await?);
        say!(out, "{url}: applied {}", migration.name);
    }
    let mut created = 0;
    if config.clickhouse.cluster.is_some() {
        created += distributed(server, base, mode, out).await?;
    }
    let migrations_pending = mode == Mode::Plan && !pending.is_empty();
    created += versions(
        server,
        config,
        base,
        schema.versions,
        migrations_pending,
        mode,
        out,
    )
    .await?;
    if mode == Mode::Apply {
        for dictionary in DICTIONARIES {
            let reload = format!("SYSTEM RELOAD DICTIONARY {}", server.qualified(dictionary));
            if let Err(e) = server.execute(&reload).await {
                say!(
                    out,
                    "{url}: warning: dictionary {dictionary} did not load (is `flow-provisioner serve` reachable at {}?): {e}",
                    config.http.public_url()
                );
            }
        }
    }
    Ok(pending.len() + created)
}

/// Sends a file's statements one by one; the error names the one that failed.
async fn run(
    server: &Server,
    file: &str,
    sql: &[String],
    advice: &'static str,
) -> Result<(), ServerError> {
    for (i, statement) in sql.iter().enumerate() {
        server
            .execute(statement)
            .await
            .map_err(|source| ServerError::Statement {
                file: file.to_owned(),
                index: i + 1,
                count: sql.len(),
                statement: statement.clone(),
                source,
                advice,
            })?;
    }
    Ok(())
}

/// Creates (or, in [`Mode::Plan`], lists) the missing Distributed tables of cluster mode.
async fn distributed(
    server: &Server,
    base: &Values,
    mode: Mode,
    out: &mut (dyn Write + Send),
) -> Result<usize, ServerError> {
    let url = &server.url;
    let existing = server.objects().await?;
    let missing: Vec<&str> = CLUSTER_OBJECTS
        .iter()
        .copied()
        .filter(|n| !existing.contains(*n))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let sql = rendered("cluster.sql", CLUSTER, base)?;
    match mode {
        Mode::Plan => {
            say!(out, "{url}: pending cluster.sql: {}", missing.join(", "));
            for statement in &sql {
                say!(out, "{statement};\n");
            }
        }
        Mode::Apply => {
            run(server, "cluster.sql", &sql, VERSION_ADVICE).await?;
            say!(out, "{url}: created {}", missing.join(", "));
        }
    }
    Ok(missing.len())
}

/// The objects `per_version.sql` creates for a version.
fn version_objects(version: &SchemaVersion) -> [String; 3] {
    let names = version.clickhouse();
    [
        names.raw_table,
        names.consumer_view,
        render::errors_view(version),
    ]
}

/// What `per_version.sql` must do for one version on a server.
struct VersionChange<'a> {
    version: &'a SchemaVersion,
    /// The version's objects that do not exist.
    missing: Vec<String>,
    /// The Kafka table exists with other settings or columns than the configuration's.
    stale: bool,
    /// The file's statements for this version, and the file's name for messages.
    sql: Vec<String>,
    file: String,
}

/// The versions whose objects are missing or stale; or, while migrations are pending
/// (a plan or status before `migrate`: `flows` may lack a new version's columns, or
/// not exist), the names of the missing objects only.
async fn version_changes<'a>(
    server: &Server,
    config: &Config,
    base: &Values,
    versions: &'a [SchemaVersion],
    migrations_pending: bool,
    out: &mut (dyn Write + Send),
) -> Result<Result<Vec<VersionChange<'a>>, Vec<String>>, ServerError> {
    let existing = server.objects().await?;
    let columns = server.flows_columns().await?;
    if migrations_pending || columns.is_empty() {
        return Ok(Err(versions
            .iter()
            .flat_map(version_objects)
            .filter(|n| !existing.contains(n))
            .collect()));
    }
    let inline = config.clickhouse.inline_schema;
    let inline_possible = inline && server.has_setting("format_schema_source").await?;
    if inline && !inline_possible {
        say!(
            out,
            "{}: warning: no format_schema_source on this server: its Kafka tables read the .proto files init.sh writes",
            server.url
        );
    }
    let kafka = KafkaEngine::new(config, server.max_threads().await?, inline_possible);
    let mut changes = Vec::new();
    for version in versions {
        let (values, fingerprint) = render::version_values(base, version, &columns, &kafka)?;
        let missing: Vec<String> = version_objects(version)
            .into_iter()
            .filter(|n| !existing.contains(n))
            .collect();
        let raw = version.clickhouse().raw_table;
        let stale = existing.contains(&raw) && server.comment(&raw).await? != fingerprint;
        if missing.is_empty() && !stale {
            continue;
        }
        let file = format!("per_version.sql (schema {version})");
        let sql = rendered(&file, PER_VERSION, &values)?;
        changes.push(VersionChange {
            version,
            missing,
            stale,
            sql,
            file,
        });
    }
    Ok(Ok(changes))
}

impl VersionChange<'_> {
    /// How many objects it creates or replaces.
    fn count(&self) -> usize {
        if self.stale { 3 } else { self.missing.len() }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("create {}", self.missing.join(", ")));
        }
        if self.stale {
            parts.push(format!(
                "replace {} and its views: its settings or columns differ from the configuration",
                self.version.clickhouse().raw_table
            ));
        }
        parts.join("; ")
    }
}

/// Creates (or, in [`Mode::Plan`], lists) the missing objects of every version, and
/// replaces a Kafka table whose settings changed (the consumer group keeps its offsets,
/// so the new table goes on where the old one stopped).
async fn versions(
    server: &Server,
    config: &Config,
    base: &Values,
    versions: &[SchemaVersion],
    migrations_pending: bool,
    mode: Mode,
    out: &mut (dyn Write + Send),
) -> Result<usize, ServerError> {
    let url = &server.url;
    let changes =
        match version_changes(server, config, base, versions, migrations_pending, out).await? {
            Ok(changes) => changes,
            Err(missing) => {
                if !missing.is_empty() {
                    say!(
                        out,
                        "{url}: pending after the migrations: {}",
                        missing.join(", ")
                    );
                }
                return Ok(missing.len());
            }
        };
    for change in &changes {
        let version = change.version;
        match mode {
            Mode::Plan => {
                say!(
                    out,
                    "{url}: pending for schema {version}: {}",
                    change.describe()
                );
                for statement in &change.sql {
                    say!(out, "{};\n", render::redact(config, statement));
                }
            }
            Mode::Apply => {
                if change.stale {
                    drop_version(server, version)
                        .await
                        .map_err(|source| ServerError::Replace {
                            version: version.to_string(),
                            source,
                        })?;
                }
                run(server, &change.file, &change.sql, VERSION_ADVICE).await?;
                say!(out, "{url}: schema {version}: done: {}", change.describe());
            }
        }
    }
    Ok(changes.iter().map(VersionChange::count).sum())
}

/// Drops a version's views, then its Kafka table (so nothing consumes in between).
async fn drop_version(
    server: &Server,
    version: &SchemaVersion,
) -> Result<(), clickhouse::error::Error> {
    let [raw, consumer, errors] = version_objects(version);
    for (kind, name) in [("VIEW", consumer), ("VIEW", errors), ("TABLE", raw)] {
        server
            .execute(&format!(
                "DROP {kind} IF EXISTS {}{}",
                server.qualified(&name),
                server.on_cluster()
            ))
            .await?;
    }
    Ok(())
}

async fn server_status(
    server: &Server,
    config: &Config,
    base: &Values,
    schema: Schema<'_>,
    out: &mut (dyn Write + Send),
) -> Result<usize, ServerError> {
    let url = &server.url;
    let state = first_contact(server).await?;
    let existing = server.objects().await?;
    let (pending, _) = pending(schema, state)?;
    let applied = match state {
        None => "no migration applied".to_owned(),
        Some(s) => format!(
            "migration {} {}",
            s.version,
            if s.dirty != 0 { "DIRTY" } else { "clean" }
        ),
    };
    let mut raw: Vec<u32> = existing
        .iter()
        .filter_map(|name| {
            name.strip_prefix("flows_")?
                .strip_suffix("_raw")?
                .parse()
                .ok()
        })
        .collect();
    raw.sort_unstable();
    let raw: Vec<String> = raw.iter().map(|n| format!("v{n}")).collect();
    say!(
        out,
        "{url}: {applied}, {} pending; raw tables for schema versions: {}",
        pending.len(),
        if raw.is_empty() {
            "none".to_owned()
        } else {
            raw.join(", ")
        }
    );
    let mut missing = 0;
    if config.clickhouse.cluster.is_some() {
        let absent: Vec<&str> = CLUSTER_OBJECTS
            .iter()
            .copied()
            .filter(|n| !existing.contains(*n))
            .collect();
        if !absent.is_empty() {
            say!(out, "{url}: cluster mode lacks {}", absent.join(", "));
            missing += absent.len();
        }
    }
    match version_changes(
        server,
        config,
        base,
        schema.versions,
        !pending.is_empty(),
        out,
    )
    .await?
    {
        Ok(changes) => {
            for change in &changes {
                say!(
                    out,
                    "{url}: schema {}: {}",
                    change.version,
                    change.describe()
                );
                missing += change.count();
            }
        }
        Err(absent) => {
            if !absent.is_empty() {
                say!(out, "{url}: lacks {}", absent.join(", "));
            }
            missing += absent.len();
        }
    }
    Ok(pending.len() + missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: i64, dirty: bool) -> Option<State> {
        Some(State {
            version,
            dirty: u8::from(dirty),
            sequence: 7,
        })
    }

    fn numbers(pending: &[&Migration]) -> Vec<u32> {
        pending.iter().map(|m| m.version).collect()
    }

    #[test]
    fn pending_follows_golang_migrate() {
        let schema = Schema::embedded();
        let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let last = i64::from(*all.last().unwrap());

        let (list, dirty) = pending(schema, None).unwrap();
        assert_eq!((numbers(&list), dirty), (all.clone(), false));
        let (list, dirty) = pending(schema, state(2, false)).unwrap();
        assert_eq!((numbers(&list), dirty), (all[2..].to_vec(), false));
        let (list, dirty) = pending(schema, state(2, true)).unwrap();
        assert_eq!((numbers(&list), dirty), (all[1..].to_vec(), true));
        let (list, _) = pending(schema, state(last, false)).unwrap();
        assert!(list.is_empty());

        let newer = pending(schema, state(last + 1, false)).unwrap_err();
        assert!(
            newer.to_string().contains("run a newer flow-provisioner"),
            "{newer}"
        );
        let first_only = Schema {
            migrations: &MIGRATIONS[..1],
            versions: schema.versions,
        };
        let unknown = pending(first_only, state(0, true)).unwrap_err();
        assert!(
            matches!(unknown, ServerError::UnknownDirty { version: 0 }),
            "{unknown}"
        );
    }
}
