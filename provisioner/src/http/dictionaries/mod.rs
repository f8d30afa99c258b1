//! The dictionaries' data, served as CSVWithNames for ClickHouse's HTTP dictionary
//! sources. The column orders are fixed: the migrations' dictionaries read them.
//!
//! - [`protocols`]: IANA protocol numbers, from a table the program carries.
//! - [`asns`]: AS numbers and names, from the operator's file (reloaded when it changes).
//! - [`networks`]: the operator's prefixes and their attributes, from the config.

use std::path::PathBuf;

use serde::Deserialize;

use super::resource::Resource;
use crate::config::ConfigError;

pub mod asns;
pub mod networks;
pub mod protocols;

/// The media type of every dictionary file.
const CSV: &str = "text/csv; charset=utf-8";

/// `[dictionaries]`: where the AS names and the operator's networks come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DictionariesConfig {
    /// The AS names: a CSV file (`asn,name`, or MaxMind GeoLite2-ASN's CSV) or a
    /// MaxMind `.mmdb` file; without it, a small built-in list.
    pub asns: Option<PathBuf>,
    /// `[[dictionaries.networks]]`: the operator's prefixes.
    pub networks: Vec<networks::NetworkConfig>,
}

impl DictionariesConfig {
    /// Checks every prefix, naming the key of the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        networks::validate(&self.networks).map(|_| ())
    }
}

/// A CSV table with its header line, built in memory and then served.
#[derive(Debug)]
pub struct Table {
    writer: csv::Writer<Vec<u8>>,
}

impl Table {
    /// A table whose first line is `header`.
    pub fn new(header: &[&str]) -> Table {
        let mut table = Table {
            writer: csv::Writer::from_writer(Vec::new()),
        };
        table.row(header);
        table
    }

    /// Appends one row, quoted where CSV needs it.
    pub fn row(&mut self, fields: &[&str]) {
        self.writer
            .write_record(fields)
            .expect("writing CSV into memory cannot fail");
    }

    /// The table as a servable resource.
    pub fn into_resource(self) -> Resource {
        let bytes = self
            .writer
            .into_inner()
            .expect("flushing CSV into memory cannot fail");
        Resource::new(bytes, CSV)
    }
}
