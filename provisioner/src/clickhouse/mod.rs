//! ClickHouse: the migrations in `migrations/`, applied in order on every configured
//! server, the per-version Kafka-engine tables, and pruning of old versions.

use serde::Deserialize;

use crate::Mode;
use crate::config::Config;

/// `[clickhouse]`: the servers and what the migrations create there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {}

/// Why a ClickHouse step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {}

/// Applies the pending migrations on every server (or, in [`Mode::Plan`], lists them).
/// Returns the number of migrations applied or pending.
pub async fn migrate(_config: &Config, _mode: Mode) -> Result<usize, ClickHouseError> {
    unimplemented!("issue 6")
}

/// Prints, per server, the applied version, the dirty flag and the schema versions' tables.
/// Returns the number of differences from what `migrate` would leave.
pub async fn status(_config: &Config) -> Result<usize, ClickHouseError> {
    unimplemented!("issue 6")
}
