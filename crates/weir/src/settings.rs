//! `weir server` settings: flags, then `WEIR_*` environment variables, then
//! a TOML file (`--config`), then built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use weir_amqp::AmqpConfig;
use weir_cluster::{parse_voters, ClusterConfig};
use weir_core::{BrokerConfig, TopicDefaults};
use weir_kafka::KafkaConfig;

/// The log filter unless one is given. openraft logs every failed RPC to
/// a dead peer at WARN and ERROR, twice a second, for as long as it is
/// down; the controller logs what an operator needs (leader changes,
/// fenced and unfenced nodes) itself.
pub const DEFAULT_LOG_LEVEL: &str = "info,openraft=off";

/// Settings of `weir server`, each a flag, a `WEIR_*` variable and a TOML key.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// TOML file with any of these settings (keys in snake_case).
    #[arg(long, env = "WEIR_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for logs and metadata [default: ./data].
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Kafka listener [default: 127.0.0.1:9092].
    #[arg(long, env = "WEIR_KAFKA_LISTEN")]
    pub kafka_listen: Option<SocketAddr>,
    /// Address of the AMQP 0-9-1 listener [default: 127.0.0.1:5672].
    #[arg(long, env = "WEIR_AMQP_LISTEN")]
    pub amqp_listen: Option<SocketAddr>,
    /// Heartbeat interval proposed to AMQP clients, in seconds; 0 turns it off [default: 60].
    #[arg(long, env = "WEIR_AMQP_HEARTBEAT_S")]
    pub amqp_heartbeat_s: Option<u16>,
    /// Publishers are blocked while free disk space is below this [default: 52428800].
    #[arg(long, env = "WEIR_DISK_FREE_LIMIT_BYTES")]
    pub disk_free_limit_bytes: Option<u64>,
    /// Host name given to Kafka clients in metadata [default: the listen address].
    #[arg(long, env = "WEIR_KAFKA_ADVERTISED_HOST")]
    pub kafka_advertised_host: Option<String>,
    /// In a cluster, replicas of topics created without a replication
    /// factor, at most the live node count [default: 3].
    #[arg(long, env = "WEIR_DEFAULT_REPLICATION_FACTOR", value_parser = clap::value_parser!(i16).range(1..=255))]
    pub default_replication_factor: Option<i16>,
    /// In a cluster, a follower that has not caught up for this long leaves
    /// the in-sync replicas [default: 10000].
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS", value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Partitions of topics created without a count [default: 1].
    #[arg(long, env = "WEIR_NUM_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub num_partitions: Option<u32>,
    /// Create unknown topics on first produce or metadata request [default: true].
    #[arg(long, env = "WEIR_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Default segment.bytes [default: 1073741824].
    #[arg(long, env = "WEIR_LOG_SEGMENT_BYTES", value_parser = clap::value_parser!(i64).range(1024..=i64::from(i32::MAX)))]
    pub log_segment_bytes: Option<i64>,
    /// Default segment.ms [default: 604800000].
    #[arg(long, env = "WEIR_LOG_ROLL_MS", value_parser = clap::value_parser!(i64).range(1..))]
    pub log_roll_ms: Option<i64>,
    /// Default retention.ms; -1 keeps data forever [default: 604800000].
    #[arg(long, env = "WEIR_LOG_RETENTION_MS", value_parser = clap::value_parser!(i64).range(-1..), allow_negative_numbers = true)]
    pub log_retention_ms: Option<i64>,
    /// Default retention.bytes; -1 means no limit [default: -1].
    #[arg(long, env = "WEIR_LOG_RETENTION_BYTES", value_parser = clap::value_parser!(i64).range(-1..), allow_negative_numbers = true)]
    pub log_retention_bytes: Option<i64>,
    /// How often retention runs, in ms [default: 300000].
    #[arg(long, env = "WEIR_LOG_RETENTION_CHECK_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(10..))]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Largest Kafka request accepted; larger closes the connection [default: 104857600].
    #[arg(long, env = "WEIR_SOCKET_REQUEST_MAX_BYTES", value_parser = clap::value_parser!(u64).range(1024..=i32::MAX as u64))]
    pub socket_request_max_bytes: Option<u64>,
    /// Default max.message.bytes (largest record batch) [default: 1048588].
    #[arg(long, env = "WEIR_MESSAGE_MAX_BYTES", value_parser = clap::value_parser!(i64).range(0..=i64::from(i32::MAX)))]
    pub message_max_bytes: Option<i64>,
    /// Offsets of a group without members expire this long after their commit [default: 10080].
    #[arg(long, env = "WEIR_OFFSETS_RETENTION_MINUTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub offsets_retention_minutes: Option<u64>,
    /// How long a new group's first rebalance waits for more members, in ms; 0 rebalances at once [default: 3000].
    #[arg(long, env = "WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS", value_parser = clap::value_parser!(u64).range(0..=i32::MAX as u64))]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Connections served at once, per protocol [default: 10000].
    #[arg(long, env = "WEIR_CONNECTIONS_MAX", value_parser = clap::value_parser!(u64).range(1..))]
    pub connections_max: Option<u64>,
    /// Log filter, e.g. `info` or `weir_kafka=debug` [default: info,openraft=off].
    #[arg(long, env = "WEIR_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Address of the HTTP API, console and /metrics [default: 127.0.0.1:15672].
    #[arg(long, env = "WEIR_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Log format: `human` or `json` (one object per line) [default: human].
    #[arg(long, env = "WEIR_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// This node's id in a cluster (Kafka's broker id); with the two
    /// controller settings below it makes the node part of a cluster.
    #[arg(long, env = "WEIR_NODE_ID", value_parser = clap::value_parser!(u64).range(0..=i32::MAX as u64))]
    pub node_id: Option<u64>,
    /// Where this node listens for the other controllers, e.g. 127.0.0.1:9093.
    #[arg(long, env = "WEIR_CONTROLLER_LISTEN")]
    pub controller_listen: Option<SocketAddr>,
    /// Every controller voter as ID@HOST:PORT, comma-separated; the same on every node.
    #[arg(long, env = "WEIR_CONTROLLER_QUORUM_VOTERS")]
    pub controller_quorum_voters: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for people.
    #[default]
    Human,
    /// One JSON object per line, for machines.
    Json,
}

/// Fully resolved settings.
#[derive(Debug)]
pub struct Resolved {
    /// Settings of the core.
    pub broker: BrokerConfig,
    /// Where the Kafka listener binds.
    pub kafka_listen: SocketAddr,
    /// Settings of the Kafka listener.
    pub kafka: KafkaConfig,
    /// Where the AMQP listener binds.
    pub amqp_listen: SocketAddr,
    /// Settings of the AMQP listener.
    pub amqp: AmqpConfig,
    /// Log filter.
    pub log_level: String,
    /// Where the HTTP API binds.
    pub http_listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// The controller quorum, when this node is part of a cluster.
    pub cluster: Option<ClusterConfig>,
}

impl ServerSettings {
    /// Merges flags/environment with the TOML file and defaults.
    ///
    /// # Errors
    ///
    /// A message naming the file and what is wrong with it.
    pub fn resolve(self) -> Result<Resolved, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServerSettings::default(),
        };
        let defaults = TopicDefaults::default();
        let kafka_listen = self
            .kafka_listen
            .or(file.kafka_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let mut broker = BrokerConfig::new(
            self.data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
        );
        broker.default_partitions = self.num_partitions.or(file.num_partitions).unwrap_or(1);
        if let Some(limit) = self.disk_free_limit_bytes.or(file.disk_free_limit_bytes) {
            broker.disk_free_limit_bytes = limit;
        }
        if let Some(factor) = self
            .default_replication_factor
            .or(file.default_replication_factor)
        {
            broker.default_replication_factor = factor;
        }
        if let Some(lag) = self
            .replica_lag_time_max_ms
            .or(file.replica_lag_time_max_ms)
        {
            broker.replica_lag_time_max = Duration::from_millis(lag);
        }
        broker.auto_create_topics = self
            .auto_create_topics
            .or(file.auto_create_topics)
            .unwrap_or(true);
        broker.retention_check_interval = Duration::from_millis(
            self.log_retention_check_interval_ms
                .or(file.log_retention_check_interval_ms)
                .unwrap_or(300_000),
        );
        broker.offsets_retention = Duration::from_secs(
            60 * self
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes)
                .unwrap_or(7 * 24 * 60),
        );
        if let Some(delay_ms) = self
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
        {
            broker.groups.initial_rebalance_delay = Duration::from_millis(delay_ms);
        }
        broker.topic_defaults = TopicDefaults {
            segment_bytes: self
                .log_segment_bytes
                .or(file.log_segment_bytes)
                .unwrap_or(defaults.segment_bytes),
            segment_ms: self
                .log_roll_ms
                .or(file.log_roll_ms)
                .unwrap_or(defaults.segment_ms),
            retention_ms: self
                .log_retention_ms
                .or(file.log_retention_ms)
                .unwrap_or(defaults.retention_ms),
            retention_bytes: self
                .log_retention_bytes
                .or(file.log_retention_bytes)
                .unwrap_or(defaults.retention_bytes),
            max_message_bytes: self
                .message_max_bytes
                .or(file.message_max_bytes)
                .unwrap_or(defaults.max_message_bytes),
        };
        let mut kafka = KafkaConfig::new(kafka_listen);
        if let Some(host) = self.kafka_advertised_host.or(file.kafka_advertised_host) {
            kafka.advertised_host = host;
        }
        if let Some(bytes) = self
            .socket_request_max_bytes
            .or(file.socket_request_max_bytes)
        {
            kafka.request_bytes_max = bytes as usize;
        }
        if let Some(connections) = self.connections_max.or(file.connections_max) {
            kafka.connections_max = connections as usize;
        }
        let amqp_listen = self
            .amqp_listen
            .or(file.amqp_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5672)));
        let mut amqp = AmqpConfig::default();
        if let Some(heartbeat_s) = self.amqp_heartbeat_s.or(file.amqp_heartbeat_s) {
            amqp.heartbeat_s = heartbeat_s;
        }
        if let Some(connections) = self.connections_max.or(file.connections_max) {
            amqp.connections_max = connections as usize;
        }
        let cluster = resolve_cluster(
            self.node_id.or(file.node_id),
            self.controller_listen.or(file.controller_listen),
            self.controller_quorum_voters
                .or(file.controller_quorum_voters),
            &broker.data_dir,
        )?;
        if let Some(cluster) = &cluster {
            // Kafka's broker id is the node id (checked to fit an i32).
            broker.node_id = cluster.node_id as i32;
        }
        Ok(Resolved {
            cluster,
            broker,
            kafka_listen,
            kafka,
            amqp_listen,
            amqp,
            log_level: self
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
            http_listen: self
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 15672))),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// The cluster settings come all three or not at all.
fn resolve_cluster(
    node_id: Option<u64>,
    controller_listen: Option<SocketAddr>,
    voters: Option<String>,
    data_dir: &Path,
) -> Result<Option<ClusterConfig>, String> {
    match (node_id, controller_listen, voters) {
        (None, None, None) => Ok(None),
        (Some(node_id), Some(listen), Some(voters)) => {
            let voters = parse_voters(&voters).map_err(|error| error.to_string())?;
            ClusterConfig::new(node_id, listen, voters, data_dir.join("controller"))
                .map(Some)
                .map_err(|error| error.to_string())
        }
        _ => Err(
            "a cluster node needs all of --node-id, --controller-listen and \
                  --controller-quorum-voters (or none of them, to run alone)"
                .into(),
        ),
    }
}

fn read_file(path: &Path) -> Result<ServerSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
}
