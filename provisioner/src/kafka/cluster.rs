//! The cluster as the provisioner sees it: the first configured broker that answers,
//! the metadata it gives (brokers, controller, topics), and connections opened on
//! demand to the controller, partition leaders and group coordinators.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::{
    FindCoordinatorRequest, MetadataRequest, MetadataResponse,
    metadata_response::MetadataResponseTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::{Connection, Settings};
use super::{KafkaConfig, KafkaError, log};

/// FindCoordinator's key type for a consumer group.
const GROUP: i8 = 0;

/// Connections to one cluster, keyed by node id.
#[derive(Debug)]
pub(super) struct Cluster {
    settings: Settings,
    /// The broker that answered first, kept for metadata when it is not a known node.
    bootstrap: Connection,
    /// Node id → `host:port`, from the last metadata.
    nodes: BTreeMap<i32, String>,
    controller: i32,
    connections: HashMap<i32, Connection>,
}

impl Cluster {
    /// Tries the configured brokers in order; each failure is logged with the broker's
    /// name, and the error lists them all when none answers.
    pub(super) async fn connect(config: &KafkaConfig) -> Result<Cluster, KafkaError> {
        let settings = Settings::new(config)?;
        let mut failures = Vec::new();
        for broker in &config.brokers {
            match Connection::open(broker, &settings).await {
                Ok(bootstrap) => {
                    log(format_args!("connected to broker {broker}"));
                    let mut cluster = Cluster {
                        settings,
                        bootstrap,
                        nodes: BTreeMap::new(),
                        controller: -1,
                        connections: HashMap::new(),
                    };
                    cluster.metadata().await?;
                    return Ok(cluster);
                }
                Err(error) => {
                    log(format_args!("{error}; trying the next broker"));
                    failures.push(error.to_string());
                }
            }
        }
        Err(KafkaError::Unreachable(failures.join("; ")))
    }

    /// Metadata for every topic (naming ours could make a broker auto-create it; the flag
    /// against that exists from v4 only),
    /// remembered for the controller and the nodes.
    pub(super) async fn metadata(&mut self) -> Result<MetadataResponse, KafkaError> {
        let connection = &mut self.bootstrap;
        let version = connection.require::<MetadataRequest>("Metadata", "find the controller")?;
        let all_topics = if version == 0 { Some(Vec::new()) } else { None };
        let request = MetadataRequest::default()
            .with_topics(all_topics)
            .with_allow_auto_topic_creation(version < 4);
        let (response, _) = connection.call(&request, "Metadata").await?;
        self.nodes = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller = response.controller_id.0;
        Ok(response)
    }

    /// The connection to the controller, where admin requests go.
    pub(super) async fn controller(&mut self) -> Result<&mut Connection, KafkaError> {
        if self.controller < 0 {
            return Err(KafkaError::Cluster(format!(
                "broker {} reports no controller",
                self.bootstrap.broker()
            )));
        }
        self.node(self.controller).await
    }

    /// The connection to node `id`, opened on first use.
    pub(super) async fn node(&mut self, id: i32) -> Result<&mut Connection, KafkaError> {
        if !self.connections.contains_key(&id) {
            let address = self.nodes.get(&id).cloned().ok_or_else(|| {
                KafkaError::Cluster(format!("node {id} is not in the cluster's metadata"))
            })?;
            let connection = Connection::open(&address, &self.settings).await?;
            self.connections.insert(id, connection);
        }
        self.connections
            .get_mut(&id)
            .ok_or_else(|| KafkaError::Cluster(format!("node {id} vanished")))
    }

    /// The coordinator of consumer group `group`.
    pub(super) async fn coordinator(&mut self, group: &str) -> Result<&mut Connection, KafkaError> {
        let connection = &mut self.bootstrap;
        let version = connection.require::<FindCoordinatorRequest>(
            "FindCoordinator",
            "find the consumer group's coordinator",
        )?;
        let key = StrBytes::from_string(group.to_owned());
        let mut request = FindCoordinatorRequest::default().with_key_type(GROUP);
        if version >= 4 {
            request.coordinator_keys = vec![key];
        } else {
            request.key = key;
        }
        let (response, _) = connection.call(&request, "FindCoordinator").await?;
        let request_name = format!("FindCoordinator {group}");
        let node = if version >= 4 {
            let coordinator = response.coordinators.first().ok_or_else(|| {
                connection.error(format!("{request_name}: no coordinator in the answer"))
            })?;
            connection.check(
                &request_name,
                coordinator.error_code,
                coordinator.error_message.as_ref(),
            )?;
            coordinator.node_id.0
        } else {
            connection.check(
                &request_name,
                response.error_code,
                response.error_message.as_ref(),
            )?;
            response.node_id.0
        };
        self.node(node).await
    }
}

/// Our topic in a metadata answer, if it exists.
pub(super) fn find_topic<'a>(
    metadata: &'a MetadataResponse,
    topic: &str,
) -> Option<&'a MetadataResponseTopic> {
    metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
}
