//! One ClickHouse server: its connection, the migrations' bookkeeping there (golang-
//! migrate's semantics: a table of (version, dirty) rows, the latest one is the state),
//! and what the provisioner reads from it.

use std::collections::BTreeSet;

use super::config::ClickHouseConfig;
use super::render::{FlowsColumn, on_cluster};

/// The bookkeeping table, one per database.
pub const MIGRATIONS_TABLE: &str = "schema_migrations";

/// A server as the provisioner talks to it.
#[derive(Clone)]
pub struct Server {
    /// Its URL, as configured: every message about it starts with it.
    pub url: String,
    client: clickhouse::Client,
    database: String,
    on_cluster: String,
    replicated: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("url", &self.url).finish()
    }
}

/// The migrations' state on a server: the last recorded version and whether the run
/// that recorded it failed midway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct State {
    /// The migration last started (dirty) or finished (clean).
    pub version: i64,
    /// 1 when that migration did not finish.
    pub dirty: u8,
    /// Orders the records.
    pub sequence: u64,
}

/// A request that failed, with what it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {source}")]
pub struct RequestError {
    /// What the request was for.
    pub what: String,
    /// What the client or the server said.
    pub source: clickhouse::error::Error,
}

type Result<T> = std::result::Result<T, RequestError>;

fn context<T>(what: &str, result: clickhouse::error::Result<T>) -> Result<T> {
    result.map_err(|source| RequestError {
        what: what.to_owned(),
        source,
    })
}

impl Server {
    /// A connection to the server at `url` with the configured credentials.
    pub fn new(url: &str, config: &ClickHouseConfig) -> Server {
        let mut client = clickhouse::Client::default().with_url(url);
        if let Some(user) = &config.username {
            client = client.with_user(user);
        }
        if let Some(password) = &config.password {
            client = client.with_password(password);
        }
        Server {
            url: url.to_owned(),
            client,
            database: config.database.clone(),
            on_cluster: on_cluster(config.cluster.as_deref()),
            replicated: config.cluster.is_some(),
        }
    }

    /// Sends one statement as it is (no `?` binding).
    pub async fn execute(&self, sql: &str) -> clickhouse::error::Result<()> {
        self.client.query_raw(sql).execute().await
    }

    /// The names of the tables, views and dictionaries of the database.
    pub async fn objects(&self) -> Result<BTreeSet<String>> {
        let names = self
            .client
            .query("SELECT name FROM system.tables WHERE database = ?")
            .bind(&self.database)
            .fetch_all::<String>()
            .await;
        Ok(context("list the database's tables", names)?
            .into_iter()
            .collect())
    }

    /// An object's comment, empty when it has none or does not exist.
    pub async fn comment(&self, name: &str) -> Result<String> {
        let comment = self
            .client
            .query("SELECT comment FROM system.tables WHERE database = ? AND name = ?")
            .bind(&self.database)
            .bind(name)
            .fetch_optional::<String>()
            .await;
        Ok(context("read a table's comment", comment)?.unwrap_or_default())
    }

    /// The migrations' state, or None where nothing was ever recorded.
    pub async fn state(&self) -> Result<Option<State>> {
        if !self.objects().await?.contains(MIGRATIONS_TABLE) {
            return Ok(None);
        }
        let state = self
            .client
            .query(&format!(
                "SELECT version, dirty, sequence FROM {}.{MIGRATIONS_TABLE} \
                 ORDER BY sequence DESC LIMIT 1",
                self.database
            ))
            .fetch_optional::<State>()
            .await;
        context("read the migrations table", state)
    }

    /// Creates the database and the bookkeeping table where they are missing.
    pub async fn bootstrap(&self) -> Result<()> {
        let database = format!(
            "CREATE DATABASE IF NOT EXISTS {}{}",
            self.database, self.on_cluster
        );
        context("create the database", self.execute(&database).await)?;
        let table = format!(
            "CREATE TABLE IF NOT EXISTS {}.{MIGRATIONS_TABLE}{} \
             (version Int64, dirty UInt8, sequence UInt64) \
             ENGINE = {}MergeTree ORDER BY sequence",
            self.database,
            self.on_cluster,
            if self.replicated { "Replicated" } else { "" }
        );
        context("create the migrations table", self.execute(&table).await)
    }

    /// Records that `version` started (dirty) or finished (clean), after `previous`.
    pub async fn record(
        &self,
        previous: Option<State>,
        version: u32,
        dirty: bool,
    ) -> Result<State> {
        let state = State {
            version: i64::from(version),
            dirty: u8::from(dirty),
            sequence: previous.map_or(1, |s| s.sequence + 1),
        };
        let insert = format!(
            "INSERT INTO {}.{MIGRATIONS_TABLE} (version, dirty, sequence) VALUES ({}, {}, {})",
            self.database, state.version, state.dirty, state.sequence
        );
        context("record the migration", self.execute(&insert).await)?;
        Ok(state)
    }

    /// The insertable columns of `flows`, or none where it does not exist yet.
    pub async fn flows_columns(&self) -> Result<Vec<FlowsColumn>> {
        let columns = self
            .client
            .query(
                "SELECT name, type FROM system.columns \
                 WHERE database = ? AND table = 'flows' \
                 AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
            )
            .bind(&self.database)
            .fetch_all::<FlowsColumn>()
            .await;
        context("read the columns of flows", columns)
    }

    /// The server's `max_threads`, which caps a Kafka table's consumers.
    pub async fn max_threads(&self) -> Result<u64> {
        let threads = self
            .client
            .query("SELECT toUInt64(getSetting('max_threads'))")
            .fetch_one::<u64>()
            .await;
        context("read max_threads", threads)
    }

    /// Whether the server knows a setting (newer ones appear in newer versions).
    pub async fn has_setting(&self, name: &str) -> Result<bool> {
        let count = self
            .client
            .query("SELECT count() FROM system.settings WHERE name = ?")
            .bind(name)
            .fetch_one::<u64>()
            .await;
        Ok(context("read system.settings", count)? > 0)
    }

    /// Seconds since each schema version's newest flow, by version number.
    pub async fn idle_seconds(&self) -> Result<Vec<(u16, u64)>> {
        let idle = self
            .client
            .query(&format!(
                "SELECT schema_version, toUInt64(greatest(0, now() - max(time_received))) \
                 FROM {}.flows GROUP BY schema_version",
                self.database
            ))
            .fetch_all::<(u16, u64)>()
            .await;
        context("read when each version's newest flow arrived", idle)
    }

    /// `database.name`.
    pub fn qualified(&self, name: &str) -> String {
        format!("{}.{name}", self.database)
    }

    /// ` ON CLUSTER 'name'`, or nothing.
    pub fn on_cluster(&self) -> &str {
        &self.on_cluster
    }
}
