-- Names for protocol numbers, AS numbers and the operator's networks, loaded from the
-- provisioner's own endpoints (`flow-provisioner serve`). Reloaded after every migrate.
CREATE DICTIONARY IF NOT EXISTS {database}.protocols{on_cluster}
(
    `proto` UInt64,
    `name` String,
    `description` String
)
PRIMARY KEY proto
SOURCE(HTTP(URL '{provisioner_url}/api/v0/clickhouse/protocols.csv' FORMAT 'CSVWithNames'{http_credentials}))
LIFETIME(MIN 0 MAX 3600)
LAYOUT(HASHED());

CREATE DICTIONARY IF NOT EXISTS {database}.asns{on_cluster}
(
    `asn` UInt64,
    `name` String
)
PRIMARY KEY asn
SOURCE(HTTP(URL '{provisioner_url}/api/v0/clickhouse/asns.csv' FORMAT 'CSVWithNames'{http_credentials}))
LIFETIME(MIN 0 MAX 3600)
LAYOUT(HASHED());

CREATE DICTIONARY IF NOT EXISTS {database}.networks{on_cluster}
(
    `network` String,
    `name` String,
    `role` String,
    `site` String,
    `region` String,
    `tenant` String
)
PRIMARY KEY network
SOURCE(HTTP(URL '{provisioner_url}/api/v0/clickhouse/networks.csv' FORMAT 'CSVWithNames'{http_credentials}))
LIFETIME(MIN 0 MAX 3600)
LAYOUT(IP_TRIE());
