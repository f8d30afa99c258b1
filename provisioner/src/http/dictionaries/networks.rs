//! `networks.csv`: the operator's prefixes and what they are (name, role, site,
//! region, tenant), for the `networks` ip_trie dictionary. Prefixes are checked at
//! start-up, so ClickHouse never gets a row it would reject.

use std::collections::HashMap;

use ipnet::IpNet;
use serde::Deserialize;

use super::Table;
use crate::config::ConfigError;

/// The columns, in the order the `networks` dictionary reads them.
const COLUMNS: [&str; 6] = ["network", "name", "role", "site", "region", "tenant"];

/// One `[[dictionaries.networks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The prefix, IPv4 or IPv6, in CIDR form with no host bits set.
    pub prefix: String,
    /// A name for the network.
    #[serde(default)]
    pub name: String,
    /// What it is for (customers, servers, infrastructure, …).
    #[serde(default)]
    pub role: String,
    /// Where it is.
    #[serde(default)]
    pub site: String,
    /// The region of the site.
    #[serde(default)]
    pub region: String,
    /// Whom it belongs to.
    #[serde(default)]
    pub tenant: String,
}

/// The prefixes parsed, in config order; the first bad or repeated one is an error
/// naming its key.
pub fn validate(networks: &[NetworkConfig]) -> Result<Vec<IpNet>, ConfigError> {
    let mut seen: HashMap<IpNet, usize> = HashMap::new();
    let mut parsed = Vec::with_capacity(networks.len());
    for (i, network) in networks.iter().enumerate() {
        let key = format!("dictionaries.networks[{i}].prefix");
        let invalid = |message: String| ConfigError::Invalid {
            key: key.clone(),
            message,
        };
        let net: IpNet = network.prefix.trim().parse().map_err(|_| {
            invalid(format!(
                "`{}` is not a prefix such as 192.0.2.0/24 or 2001:db8::/32",
                network.prefix
            ))
        })?;
        if net.trunc() != net {
            return Err(invalid(format!(
                "`{}` has host bits set; the prefix is {}",
                network.prefix,
                net.trunc()
            )));
        }
        if let Some(first) = seen.insert(net, i) {
            return Err(invalid(format!(
                "{net} is already dictionaries.networks[{first}]"
            )));
        }
        parsed.push(net);
    }
    Ok(parsed)
}

/// `networks.csv`, one row per configured prefix.
pub fn csv(networks: &[NetworkConfig]) -> Result<Table, ConfigError> {
    let prefixes = validate(networks)?;
    let mut table = Table::new(&COLUMNS);
    for (net, n) in prefixes.iter().zip(networks) {
        table.row(&[
            &net.to_string(),
            &n.name,
            &n.role,
            &n.site,
            &n.region,
            &n.tenant,
        ]);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn network(prefix: &str) -> NetworkConfig {
        NetworkConfig {
            prefix: prefix.into(),
            name: "a, \"quoted\" name".into(),
            role: String::new(),
            site: String::new(),
            region: String::new(),
            tenant: String::new(),
        }
    }

    #[test]
    fn bad_prefixes_name_their_key() {
        let cases = [
            ("10.0.0.0/33", "not a prefix"),
            ("banana", "not a prefix"),
            ("10.1.2.3/16", "the prefix is 10.1.0.0/16"),
            ("2001:db8::1/32", "the prefix is 2001:db8::/32"),
        ];
        for (prefix, message) in cases {
            let err = validate(&[network("192.0.2.0/24"), network(prefix)]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("dictionaries.networks[1].prefix"), "{text}");
            assert!(text.contains(message), "{text}");
        }
        let err = validate(&[network("192.0.2.0/24"), network("192.0.2.0/24")]).unwrap_err();
        assert!(
            err.to_string().contains("already dictionaries.networks[0]"),
            "{err}"
        );
    }

    #[test]
    fn rows_come_in_the_fixed_column_order_and_are_quoted() {
        let table = csv(&[network("2001:db8::/32")]).unwrap().into_resource();
        let text = String::from_utf8(table.body().to_vec()).unwrap();
        assert_eq!(
            text,
            "network,name,role,site,region,tenant\n2001:db8::/32,\"a, \"\"quoted\"\" name\",,,,\n"
        );
    }
}
