//! `asns.csv`: AS numbers and their organisations' names, from the file the operator
//! names in `[dictionaries] asns` (reloaded when its modification time or size
//! changes), or from a small built-in list when none is named.
//!
//! The file may be a CSV with an `asn,name` header, MaxMind GeoLite2-ASN's CSV
//! (`network,autonomous_system_number,autonomous_system_organization`, one row per
//! network, so an AS appears many times), or a MaxMind `.mmdb` database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::Table;
use crate::http::resource::Resource;

/// A few well-known networks, so the dictionary is never empty.
const BUILT_IN: &[(u32, &str)] = &[
    (174, "COGENT-174"),
    (714, "APPLE-ENGINEERING"),
    (1299, "TWELVE99"),
    (2906, "AS-SSI"),
    (3356, "LEVEL3"),
    (6939, "HURRICANE"),
    (8075, "MICROSOFT-CORP-MSN-AS-BLOCK"),
    (13335, "CLOUDFLARENET"),
    (15169, "GOOGLE"),
    (16509, "AMAZON-02"),
    (20940, "AKAMAI-ASN1"),
    (32934, "FACEBOOK"),
    (36459, "GITHUB"),
];

/// Why the AS names could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AsnsError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A CSV file is malformed or has unknown columns.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A MaxMind database could not be read.
    #[error("{path}: not a readable MaxMind ASN database: {message}")]
    Mmdb {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
}

/// The AS names being served, and what they were read from.
#[derive(Debug)]
pub struct Asns {
    path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

/// One reading of the file.
#[derive(Debug)]
struct Loaded {
    stamp: Option<Stamp>,
    resource: Arc<Resource>,
    /// The last version of the file that could not be read, reported once.
    rejected: Option<Stamp>,
}

/// What tells that the file changed: its modification time and size.
type Stamp = (SystemTime, u64);

impl Asns {
    /// Reads the file once (an error stops start-up), or takes the built-in list.
    pub fn load(path: Option<&Path>) -> Result<Asns, AsnsError> {
        let loaded = match path {
            Some(path) => {
                let stamp = stamp(path)?;
                let resource = Arc::new(table(&read(path)?).into_resource());
                Loaded {
                    stamp: Some(stamp),
                    resource,
                    rejected: None,
                }
            }
            None => Loaded {
                stamp: None,
                resource: Arc::new(
                    table(
                        &BUILT_IN
                            .iter()
                            .map(|(n, s)| (*n, (*s).to_owned()))
                            .collect(),
                    )
                    .into_resource(),
                ),
                rejected: None,
            },
        };
        Ok(Asns {
            path: path.map(Path::to_owned),
            loaded: Mutex::new(loaded),
        })
    }

    /// The names to serve now: read again first if the file changed. When that
    /// reading fails, the previous names stay and the error is returned beside
    /// them, once for each version of the file.
    pub fn current(&self) -> (Arc<Resource>, Option<AsnsError>) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return (Arc::clone(&loaded.resource), None);
        };
        let reloaded = stamp(path).and_then(|now| {
            if loaded.stamp == Some(now) || loaded.rejected == Some(now) {
                return Ok(());
            }
            let names = read(path).inspect_err(|_| loaded.rejected = Some(now))?;
            loaded.resource = Arc::new(table(&names).into_resource());
            loaded.stamp = Some(now);
            Ok(())
        });
        (Arc::clone(&loaded.resource), reloaded.err())
    }
}

fn stamp(path: &Path) -> Result<Stamp, AsnsError> {
    let meta = std::fs::metadata(path).map_err(|source| AsnsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let modified = meta.modified().map_err(|source| AsnsError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((modified, meta.len()))
}

/// `asn,name`, by AS number.
fn table(names: &BTreeMap<u32, String>) -> Table {
    let mut table = Table::new(&["asn", "name"]);
    for (asn, name) in names {
        table.row(&[&asn.to_string(), name]);
    }
    table
}

/// Reads the file in whichever of the three forms it is.
fn read(path: &Path) -> Result<BTreeMap<u32, String>, AsnsError> {
    let bytes = std::fs::read(path).map_err(|source| AsnsError::Read {
        path: path.to_owned(),
        source,
    })?;
    if is_mmdb(&bytes) {
        return read_mmdb(path, bytes);
    }
    read_csv(path, &bytes)
}

/// MaxMind databases end with a metadata section that starts with this marker.
fn is_mmdb(bytes: &[u8]) -> bool {
    const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
    let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
    tail.windows(MARKER.len()).any(|w| w == MARKER)
}

fn read_csv(path: &Path, bytes: &[u8]) -> Result<BTreeMap<u32, String>, AsnsError> {
    let error = |message: String| AsnsError::Csv {
        path: path.to_owned(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| error(format!("no header line: {e}")))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    // `asn,name`, or GeoLite2-ASN-Blocks (one row per network).
    let (asn_at, name_at) = match (
        column("asn"),
        column("name"),
        column("autonomous_system_number"),
        column("autonomous_system_organization"),
    ) {
        (Some(asn), Some(name), _, _) | (_, _, Some(asn), Some(name)) => (asn, name),
        _ => {
            return Err(error(format!(
                "the header `{}` has neither `asn,name` nor GeoLite2's \
                 `autonomous_system_number,autonomous_system_organization`",
                header.iter().collect::<Vec<_>>().join(",")
            )));
        }
    };
    let mut names = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| error(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let (Some(asn), Some(name)) = (record.get(asn_at), record.get(name_at)) else {
            return Err(error(format!("line {line}: too few columns")));
        };
        let asn = asn.trim();
        let number: u32 = asn
            .strip_prefix("AS")
            .unwrap_or(asn)
            .parse()
            .map_err(|_| error(format!("line {line}: `{asn}` is not an AS number")))?;
        // GeoLite lists an AS once per network, always with the same name: keep the first.
        names
            .entry(number)
            .or_insert_with(|| name.trim().to_owned());
    }
    Ok(names)
}

fn read_mmdb(path: &Path, bytes: Vec<u8>) -> Result<BTreeMap<u32, String>, AsnsError> {
    let error = |e: maxminddb::MaxMindDbError| AsnsError::Mmdb {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let reader = maxminddb::Reader::from_source(bytes).map_err(error)?;
    let mut names = BTreeMap::new();
    for network in reader.networks(Default::default()).map_err(error)? {
        let record = network.map_err(error)?.decode::<maxminddb::geoip2::Asn>();
        if let Some(maxminddb::geoip2::Asn {
            autonomous_system_number: Some(number),
            autonomous_system_organization,
        }) = record.map_err(error)?
        {
            names
                .entry(number)
                .or_insert_with(|| autonomous_system_organization.unwrap_or("").to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A temporary `asns.csv` holding `text` (kept while the directory lives).
    fn written(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asns.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn body(asns: &Asns) -> String {
        String::from_utf8(asns.current().0.body().to_vec()).unwrap()
    }

    #[test]
    fn without_a_file_the_built_in_list_is_served() {
        let text = body(&Asns::load(None).unwrap());
        assert!(text.starts_with("asn,name\n174,COGENT-174\n"), "{text}");
        assert!(text.contains("\n15169,GOOGLE\n"));
    }

    #[test]
    fn geolite_csv_is_read_once_per_as() {
        let (_dir, path) = written(
            "network,autonomous_system_number,autonomous_system_organization\n\
             1.0.0.0/24,13335,CLOUDFLARENET\n8.8.8.0/24,15169,GOOGLE\n\
             8.8.4.0/24,15169,GOOGLE\n1.1.1.0/24,13335,CLOUDFLARENET\n\
             5.6.7.0/24,64512,\"Example, Inc.\"\n",
        );
        let text = body(&Asns::load(Some(&path)).unwrap());
        assert_eq!(
            text,
            "asn,name\n13335,CLOUDFLARENET\n15169,GOOGLE\n64512,\"Example, Inc.\"\n"
        );
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_old_names() {
        let (_dir, path) = written("asn,name\n1,ONE\n");
        let asns = Asns::load(Some(&path)).unwrap();
        assert_eq!(body(&asns), "asn,name\n1,ONE\n");
        std::fs::write(&path, "asn,name\n1,ONE\n2,TWO\n").unwrap();
        assert_eq!(body(&asns), "asn,name\n1,ONE\n2,TWO\n");
        std::fs::write(&path, "asn,name\n1,ONE\nthree,THREE\n").unwrap();
        let (resource, error) = asns.current();
        assert_eq!(resource.body().as_ref(), b"asn,name\n1,ONE\n2,TWO\n");
        let error = error.unwrap().to_string();
        assert!(
            error.contains("line 3: `three` is not an AS number"),
            "{error}"
        );
        assert!(
            asns.current().1.is_none(),
            "one report per version of the file"
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let (dir, path) = written("number,organisation\n1,ONE\n");
        let err = Asns::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("neither `asn,name`"), "{err}");
        let err = Asns::load(Some(&dir.path().join("missing.csv")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.csv"), "{err}");
    }
}
