//! Light enrichment, done once per flow right after decoding: exporter name and
//! group, interface attributes, sampling-rate overrides.
//!
//! Interface attributes come from the exporter's table in the configuration or,
//! for an agent on the router itself, from the local interfaces (Linux sysfs,
//! read again periodically). Classifier rules then fill what neither states:
//! the first rule whose regex matches the interface description sets the
//! boundary, provider and connectivity still unset. Interfaces are classified
//! when they are loaded, never per flow, so the per-flow cost is two lookups.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use flow_proto::FlowMessage;
use flow_proto::v1::InterfaceBoundary;
use regex_lite::Regex;

use crate::config::{Boundary, ClassifierConfig, Config, ConfigError, InterfaceConfig};
use crate::decode::{address_octets, same_exporter};

/// An exporter address as flows carry it (IPv4 mapped into IPv6).
type AddressKey = [u8; 16];

/// An interface as flows get it: every attribute resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub description: String,
    pub speed: u32,
    pub boundary: InterfaceBoundary,
    pub provider: String,
    pub connectivity: String,
}

/// One classifier rule, compiled.
#[derive(Debug)]
struct Classifier {
    description: Regex,
    boundary: Option<Boundary>,
    provider: Option<String>,
    connectivity: Option<String>,
}

/// The ordered rules; the first match fills what is still unset.
#[derive(Debug, Default)]
struct Classifiers(Vec<Classifier>);

impl Classifiers {
    fn compile(configs: &[ClassifierConfig]) -> Result<Classifiers, ConfigError> {
        configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let description =
                    Regex::new(&config.description).map_err(|e| ConfigError::Invalid {
                        key: format!("classifiers[{i}].description"),
                        message: e.to_string(),
                    })?;
                Ok(Classifier {
                    description,
                    boundary: config.boundary,
                    provider: config.provider.clone(),
                    connectivity: config.connectivity.clone(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Classifiers)
    }

    /// Resolves an interface: what the table states, then the first matching rule.
    fn resolve(&self, config: &InterfaceConfig) -> Interface {
        let mut boundary = config.boundary;
        let mut provider = config.provider.clone();
        let mut connectivity = config.connectivity.clone();
        let matched = self
            .0
            .iter()
            .find_map(|rule| Some((rule, rule.description.captures(&config.description)?)));
        if let Some((rule, captures)) = matched {
            let expand = |template: &String| {
                let mut out = String::new();
                captures.expand(template, &mut out);
                out
            };
            boundary = boundary.or(rule.boundary);
            provider = provider.or_else(|| rule.provider.as_ref().map(expand));
            connectivity = connectivity.or_else(|| rule.connectivity.as_ref().map(expand));
        }
        Interface {
            name: config.name.clone(),
            description: config.description.clone(),
            speed: config.speed,
            boundary: match boundary {
                None => InterfaceBoundary::Undefined,
                Some(Boundary::External) => InterfaceBoundary::External,
                Some(Boundary::Internal) => InterfaceBoundary::Internal,
            },
            provider: provider.unwrap_or_default(),
            connectivity: connectivity.unwrap_or_default(),
        }
    }
}

/// What the configuration says about one exporter, resolved.
#[derive(Debug)]
struct Exporter {
    name: String,
    group: String,
    default_sampling_rate: Option<u64>,
    sampling_rate_override: Option<u64>,
    interfaces: HashMap<u32, Interface>,
}

/// The router's own interfaces, read from sysfs and replaced on each refresh.
#[derive(Debug)]
pub struct LocalInterfaces {
    sysfs: PathBuf,
    interfaces: RwLock<Arc<HashMap<u32, Interface>>>,
}

impl LocalInterfaces {
    /// Reads `sysfs` (`/sys/class/net`): one directory per interface with
    /// `ifindex`, `ifalias` (the description) and `speed` (Mb/s, absent or
    /// negative when unknown). Returns how many interfaces were found.
    fn refresh(&self, classifiers: &Classifiers) -> std::io::Result<usize> {
        let mut interfaces = HashMap::new();
        for entry in std::fs::read_dir(&self.sysfs)? {
            let path = entry?.path();
            let Some(index) =
                read_trimmed(&path.join("ifindex")).and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let config = InterfaceConfig {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                description: read_trimmed(&path.join("ifalias")).unwrap_or_default(),
                speed: read_trimmed(&path.join("speed"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                ..InterfaceConfig::default()
            };
            interfaces.insert(index, classifiers.resolve(&config));
        }
        let count = interfaces.len();
        *self
            .interfaces
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(interfaces);
        Ok(count)
    }

    fn snapshot(&self) -> Arc<HashMap<u32, Interface>> {
        Arc::clone(
            &self
                .interfaces
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A sysfs attribute's text, trimmed; `None` when unreadable (speed of a down link).
fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Which exporters the local interfaces describe.
#[derive(Debug)]
enum LocalScope {
    /// Every exporter that has no interface table of its own.
    Unlisted,
    /// These exporters.
    Only(Vec<AddressKey>),
}

/// Adds what the agent knows to each flow; shared by every listener worker.
#[derive(Debug)]
pub struct Enricher {
    exporters: HashMap<AddressKey, Exporter>,
    classifiers: Classifiers,
    local: Option<(LocalInterfaces, LocalScope)>,
}

impl Enricher {
    /// Resolves the configuration (classifying every configured interface) and
    /// reads the local interfaces once when discovery is on.
    pub fn new(config: &Config) -> Result<Enricher, ConfigError> {
        let classifiers = Classifiers::compile(&config.classifiers)?;
        let exporters = config
            .exporters
            .iter()
            .map(|exporter| {
                let interfaces = exporter
                    .interfaces
                    .iter()
                    .map(|(index, interface)| (*index, classifiers.resolve(interface)))
                    .collect();
                let resolved = Exporter {
                    name: exporter.name.clone(),
                    group: exporter.group.clone(),
                    default_sampling_rate: exporter.default_sampling_rate,
                    sampling_rate_override: exporter.sampling_rate_override,
                    interfaces,
                };
                (address_octets(exporter.address), resolved)
            })
            .collect();
        let discovery = &config.discovery;
        let local = discovery.enabled.then(|| {
            let scope = if discovery.exporters.is_empty() {
                LocalScope::Unlisted
            } else {
                LocalScope::Only(
                    discovery
                        .exporters
                        .iter()
                        .copied()
                        .map(address_octets)
                        .collect(),
                )
            };
            let interfaces = LocalInterfaces {
                sysfs: discovery.sysfs.clone(),
                interfaces: RwLock::default(),
            };
            (interfaces, scope)
        });
        let enricher = Enricher {
            exporters,
            classifiers,
            local,
        };
        enricher.refresh_local().map_err(|e| ConfigError::Invalid {
            key: "discovery.sysfs".to_owned(),
            message: e.to_string(),
        })?;
        Ok(enricher)
    }

    /// Reads the local interfaces again (when discovery is on); returns how many were found.
    pub fn refresh_local(&self) -> std::io::Result<usize> {
        match &self.local {
            Some((interfaces, _)) => interfaces.refresh(&self.classifiers),
            None => Ok(0),
        }
    }

    /// The sampling rate for flows from `source` that carry none, if the exporter sets one.
    pub fn default_sampling_rate(&self, source: IpAddr) -> Option<u64> {
        self.exporters
            .get(&address_octets(source))?
            .default_sampling_rate
    }

    /// Fills the flows' exporter, interface and sampling attributes.
    pub fn enrich(&self, flows: &mut [FlowMessage]) {
        // A datagram's flows share their exporter: look it up once per run of them.
        for run in flows.chunk_by_mut(same_exporter) {
            let key: Option<AddressKey> = run
                .first()
                .and_then(|flow| flow.exporter_address.as_slice().try_into().ok());
            let exporter = key.and_then(|key| self.exporters.get(&key));
            let local = self.local_interfaces_for(key, exporter);
            if exporter.is_none() && local.is_none() {
                continue;
            }
            let lookup = |index: u32| {
                exporter
                    .and_then(|e| e.interfaces.get(&index))
                    .or_else(|| local.as_ref().and_then(|l| l.get(&index)))
            };
            for flow in run {
                Self::enrich_flow(flow, exporter, lookup);
            }
        }
    }

    /// Fills one flow from its exporter's settings and interface table.
    fn enrich_flow<'a>(
        flow: &mut FlowMessage,
        exporter: Option<&Exporter>,
        lookup: impl Fn(u32) -> Option<&'a Interface>,
    ) {
        if let Some(exporter) = exporter {
            flow.exporter_name.clone_from(&exporter.name);
            flow.exporter_group.clone_from(&exporter.group);
            if let Some(rate) = exporter.sampling_rate_override {
                flow.sampling_rate = rate;
            }
        }
        if let Some(interface) = lookup(flow.in_if) {
            flow.in_if_name.clone_from(&interface.name);
            flow.in_if_description.clone_from(&interface.description);
            flow.in_if_speed = interface.speed;
            flow.set_in_if_boundary(interface.boundary);
            flow.in_if_provider.clone_from(&interface.provider);
            flow.in_if_connectivity.clone_from(&interface.connectivity);
        }
        if let Some(interface) = lookup(flow.out_if) {
            flow.out_if_name.clone_from(&interface.name);
            flow.out_if_description.clone_from(&interface.description);
            flow.out_if_speed = interface.speed;
            flow.set_out_if_boundary(interface.boundary);
            flow.out_if_provider.clone_from(&interface.provider);
            flow.out_if_connectivity.clone_from(&interface.connectivity);
        }
    }

    fn local_interfaces_for(
        &self,
        key: Option<AddressKey>,
        exporter: Option<&Exporter>,
    ) -> Option<Arc<HashMap<u32, Interface>>> {
        let (interfaces, scope) = self.local.as_ref()?;
        let applies = match scope {
            LocalScope::Unlisted => exporter.is_none_or(|e| e.interfaces.is_empty()),
            LocalScope::Only(addresses) => key.is_some_and(|key| addresses.contains(&key)),
        };
        applies.then(|| interfaces.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::address_bytes;

    fn config(extra: &str) -> Config {
        let text = format!("[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n{extra}");
        Config::parse(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn flow_from(exporter: IpAddr, in_if: u32, out_if: u32) -> FlowMessage {
        FlowMessage {
            exporter_address: address_bytes(exporter),
            in_if,
            out_if,
            sampling_rate: 1,
            ..FlowMessage::default()
        }
    }

    const EXPORTER: &str = r#"
[[exporters]]
address = "192.0.2.1"
name = "edge1"
group = "paris"
sampling_rate_override = 1000
default_sampling_rate = 100
[exporters.interfaces.10]
name = "xe-0/0/0"
description = "Transit: Cogent 10G"
speed = 10000
[exporters.interfaces.20]
name = "xe-0/0/1"
description = "core link"
boundary = "internal"
[exporters.interfaces.30]
name = "xe-0/0/2"
description = "Transit: Level3"
provider = "lumen"

[[classifiers]]
description = "^Transit: (\\S+)"
boundary = "external"
provider = "${1}"
connectivity = "transit"
"#;

    #[test]
    fn each_run_of_flows_gets_its_own_exporter() {
        let enricher = Enricher::new(&config(EXPORTER)).unwrap_or_else(|e| panic!("{e}"));
        let known: IpAddr = [192, 0, 2, 1].into();
        let unknown: IpAddr = [198, 51, 100, 7].into();
        let mut flows = vec![
            flow_from(known, 10, 20),
            flow_from(known, 30, 20),
            flow_from(unknown, 10, 20),
            flow_from(known, 20, 10),
        ];
        enricher.enrich(&mut flows);
        let names: Vec<&str> = flows.iter().map(|f| f.exporter_name.as_str()).collect();
        assert_eq!(names, ["edge1", "edge1", "", "edge1"]);
        let inputs: Vec<&str> = flows.iter().map(|f| f.in_if_name.as_str()).collect();
        assert_eq!(inputs, ["xe-0/0/0", "xe-0/0/2", "", "xe-0/0/1"]);
        assert_eq!(
            flows[2].sampling_rate,
            flow_from(unknown, 10, 20).sampling_rate
        );
    }

    #[test]
    fn configured_exporter_and_classified_interfaces() {
        let enricher = Enricher::new(&config(EXPORTER)).unwrap_or_else(|e| panic!("{e}"));
        let exporter: IpAddr = [192, 0, 2, 1].into();
        let mut flow = flow_from(exporter, 10, 20);
        enricher.enrich(std::slice::from_mut(&mut flow));
        assert_eq!(flow.exporter_name, "edge1");
        assert_eq!(flow.exporter_group, "paris");
        assert_eq!(flow.sampling_rate, 1000);
        assert_eq!(flow.in_if_name, "xe-0/0/0");
        assert_eq!(flow.in_if_speed, 10000);
        assert_eq!(flow.in_if_boundary(), InterfaceBoundary::External);
        assert_eq!(flow.in_if_provider, "Cogent");
        assert_eq!(flow.in_if_connectivity, "transit");
        assert_eq!(flow.out_if_boundary(), InterfaceBoundary::Internal);
        assert_eq!(flow.out_if_provider, "", "no rule matches `core link`");
        assert_eq!(enricher.default_sampling_rate(exporter), Some(100));

        let mut flow = flow_from(exporter, 30, 99);
        enricher.enrich(std::slice::from_mut(&mut flow));
        assert_eq!(flow.in_if_provider, "lumen", "the table wins over the rule");
        assert_eq!(
            flow.in_if_connectivity, "transit",
            "the rule fills what the table leaves"
        );
        assert_eq!(flow.out_if_name, "", "unknown index stays empty");
    }

    #[test]
    fn unknown_exporter_is_left_alone() {
        let enricher = Enricher::new(&config(EXPORTER)).unwrap_or_else(|e| panic!("{e}"));
        let mut flow = flow_from([198, 51, 100, 7].into(), 10, 20);
        let before = flow.clone();
        enricher.enrich(std::slice::from_mut(&mut flow));
        assert_eq!(flow, before);
        assert_eq!(
            enricher.default_sampling_rate([198, 51, 100, 7].into()),
            None
        );
    }

    #[test]
    fn local_interfaces_come_from_sysfs_and_refresh() {
        let dir = std::env::temp_dir().join(format!("flow-agent-sysfs-{}", std::process::id()));
        let write = |name: &str, file: &str, text: &str| {
            std::fs::create_dir_all(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.join(name).join(file), text).unwrap_or_else(|e| panic!("{e}"));
        };
        write("eth0", "ifindex", "2\n");
        write("eth0", "ifalias", "Transit: Cogent\n");
        write("eth0", "speed", "1000\n");
        write("lo", "ifindex", "1\n");
        write("lo", "speed", "-1\n");
        let extra = format!(
            "{EXPORTER}\n[discovery]\nenabled = true\nexporters = [\"127.0.0.1\"]\nsysfs = \"{}\"\n",
            dir.display()
        );
        let enricher = Enricher::new(&config(&extra)).unwrap_or_else(|e| panic!("{e}"));
        let mut flow = flow_from([127, 0, 0, 1].into(), 2, 1);
        enricher.enrich(std::slice::from_mut(&mut flow));
        assert_eq!(flow.in_if_name, "eth0");
        assert_eq!(flow.in_if_speed, 1000);
        assert_eq!(flow.in_if_provider, "Cogent");
        assert_eq!(flow.out_if_name, "lo");
        assert_eq!(flow.out_if_speed, 0, "unknown speed");

        write("eth1", "ifindex", "3\n");
        assert_eq!(
            enricher.refresh_local().unwrap_or_else(|e| panic!("{e}")),
            3
        );
        let mut flow = flow_from([127, 0, 0, 1].into(), 3, 0);
        enricher.enrich(std::slice::from_mut(&mut flow));
        assert_eq!(flow.in_if_name, "eth1");

        let mut other = flow_from([192, 0, 2, 1].into(), 2, 0);
        enricher.enrich(std::slice::from_mut(&mut other));
        assert_eq!(other.in_if_name, "", "discovery is scoped to 127.0.0.1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
