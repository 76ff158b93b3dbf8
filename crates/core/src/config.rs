//! Broker settings and topic-level configuration.
//!
//! A topic stores only its overrides; every other setting falls back to the
//! broker's default, as in Kafka. Names and meanings follow Kafka's topic
//! configs; where Weir differs, the difference is in the entry's doc.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use weir_log::LogConfig;

use crate::clock::Clock;
use crate::error::{CoreError, Result};
use crate::group::GroupSettings;

/// Settings of the broker core.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where topics, logs and metadata live.
    pub data_dir: PathBuf,
    /// This broker's id in metadata answers.
    pub node_id: i32,
    /// Partitions of a topic created without a count (auto-creation, `-1`).
    pub default_partitions: u32,
    /// Create unknown topics on first produce or metadata request.
    pub auto_create_topics: bool,
    /// How often retention and periodic flushes run.
    pub retention_check_interval: Duration,
    /// Defaults of the topic-level settings.
    pub topic_defaults: TopicDefaults,
    /// Group coordinator bounds and delays.
    pub groups: GroupSettings,
    /// Offsets of a group without members expire this long after their
    /// commit (`offsets.retention.minutes`).
    pub offsets_retention: Duration,
    /// Below this many free bytes on the data directory's file system the
    /// disk alarm refuses produces and blocks publishers (crate::alarm).
    pub disk_free_limit_bytes: u64,
    /// In a cluster, replicas of a topic created without a factor, at most
    /// the live node count (`default.replication.factor`).
    pub default_replication_factor: i16,
    /// A follower that has not caught up for this long leaves the in-sync
    /// set (`replica.lag.time.max.ms`).
    pub replica_lag_time_max: Duration,
    /// How long an `acks=all` append waits for replication before the
    /// producer gets `REQUEST_TIMED_OUT` (and retries).
    pub replication_timeout: Duration,
    /// Where the core reads the time: the system's clock, or a manual one
    /// in tests that drive time (group and transaction timeouts, offsets
    /// retention).
    pub clock: Clock,
}

/// Broker-wide defaults of the topic settings (Kafka's `log.*` broker configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    /// `log.segment.bytes`.
    pub segment_bytes: i64,
    /// `log.roll.ms`.
    pub segment_ms: i64,
    /// `log.retention.ms`; -1 keeps data forever.
    pub retention_ms: i64,
    /// `log.retention.bytes`; -1 means no size limit.
    pub retention_bytes: i64,
    /// `message.max.bytes`.
    pub max_message_bytes: i64,
}

impl Default for TopicDefaults {
    fn default() -> TopicDefaults {
        TopicDefaults {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
        }
    }
}

impl BrokerConfig {
    /// The broker's own settings, as read-only config entries.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        let defaults = &self.topic_defaults;
        let entry = |name: &str, value: String, kind: ConfigKind, documentation: &'static str| {
            ConfigEntry {
                name: name.to_string(),
                value,
                source: ConfigSource::Broker,
                read_only: true,
                documentation,
                kind,
            }
        };
        vec![
            entry(
                "node.id",
                self.node_id.to_string(),
                ConfigKind::Int,
                "This broker's id.",
            ),
            entry(
                "num.partitions",
                self.default_partitions.to_string(),
                ConfigKind::Int,
                "Partitions of auto-created topics.",
            ),
            entry(
                "auto.create.topics.enable",
                self.auto_create_topics.to_string(),
                ConfigKind::Boolean,
                "Create unknown topics on first use.",
            ),
            entry(
                "log.segment.bytes",
                defaults.segment_bytes.to_string(),
                ConfigKind::Int,
                "Default segment.bytes.",
            ),
            entry(
                "log.roll.ms",
                defaults.segment_ms.to_string(),
                ConfigKind::Long,
                "Default segment.ms.",
            ),
            entry(
                "log.retention.ms",
                defaults.retention_ms.to_string(),
                ConfigKind::Long,
                "Default retention.ms.",
            ),
            entry(
                "log.retention.bytes",
                defaults.retention_bytes.to_string(),
                ConfigKind::Long,
                "Default retention.bytes.",
            ),
            entry(
                "message.max.bytes",
                defaults.max_message_bytes.to_string(),
                ConfigKind::Int,
                "Default max.message.bytes.",
            ),
            entry(
                "log.retention.check.interval.ms",
                self.retention_check_interval.as_millis().to_string(),
                ConfigKind::Long,
                "How often retention runs.",
            ),
            entry(
                "group.initial.rebalance.delay.ms",
                self.groups.initial_rebalance_delay.as_millis().to_string(),
                ConfigKind::Int,
                "How long a new group waits for more members before its first rebalance.",
            ),
        ]
    }

    /// Defaults with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            node_id: 0,
            default_partitions: 1,
            auto_create_topics: true,
            retention_check_interval: Duration::from_secs(300),
            topic_defaults: TopicDefaults::default(),
            groups: GroupSettings::default(),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            disk_free_limit_bytes: 50 << 20,
            default_replication_factor: 3,
            replica_lag_time_max: Duration::from_secs(10),
            replication_timeout: Duration::from_secs(30),
            clock: Clock::system(),
        }
    }
}

/// One topic setting as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka's name, e.g. `retention.ms`.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether clients may change it.
    pub read_only: bool,
    /// What it does.
    pub documentation: &'static str,
    /// Type of the value.
    pub kind: ConfigKind,
}

/// Type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// Free text or an enumeration.
    String,
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Long,
    /// true or false.
    Boolean,
}

/// Origin of an effective setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// The broker's default.
    Default,
    /// Fixed by the broker's own settings.
    Broker,
}

/// An incremental change to one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set the value.
    Set(String),
    /// Remove the override, falling back to the default.
    Delete,
}

struct Known {
    name: &'static str,
    kind: ConfigKind,
    documentation: &'static str,
    read_only: bool,
    default: fn(&TopicDefaults) -> String,
    validate: fn(&str) -> std::result::Result<(), String>,
}

const KNOWN: &[Known] = &[
    Known {
        name: "cleanup.policy",
        kind: ConfigKind::String,
        documentation: "delete: old segments are removed by retention. Weir does not compact logs yet.",
        read_only: false,
        default: |_| "delete".into(),
        validate: |value| match value {
            "delete" => Ok(()),
            "compact" | "compact,delete" | "delete,compact" => Err("log compaction is not supported by Weir yet".into()),
            other => Err(format!("'{other}' is not a cleanup policy")),
        },
    },
    Known {
        name: "retention.ms",
        kind: ConfigKind::Long,
        documentation: "Delete a sealed segment once its newest record is older than this; -1 keeps data forever.",
        read_only: false,
        default: |d| d.retention_ms.to_string(),
        validate: |value| int_in(value, -1, i64::MAX),
    },
    Known {
        name: "retention.bytes",
        kind: ConfigKind::Long,
        documentation: "Delete the oldest segments while the partition is larger than this; -1 means no limit.",
        read_only: false,
        default: |d| d.retention_bytes.to_string(),
        validate: |value| int_in(value, -1, i64::MAX),
    },
    Known {
        name: "segment.bytes",
        kind: ConfigKind::Int,
        documentation: "Roll to a new segment at this size. Weir allows down to 1024 bytes.",
        read_only: false,
        default: |d| d.segment_bytes.to_string(),
        validate: |value| int_in(value, 1024, i64::from(i32::MAX)),
    },
    Known {
        name: "segment.ms",
        kind: ConfigKind::Long,
        documentation: "Roll to a new segment when the active one's first record is older than this.",
        read_only: false,
        default: |d| d.segment_ms.to_string(),
        validate: |value| int_in(value, 1, i64::MAX),
    },
    Known {
        name: "max.message.bytes",
        kind: ConfigKind::Int,
        documentation: "Largest record batch accepted.",
        read_only: false,
        default: |d| d.max_message_bytes.to_string(),
        validate: |value| int_in(value, 0, i64::from(i32::MAX)),
    },
    Known {
        name: "flush.ms",
        kind: ConfigKind::Long,
        documentation: "0 (Weir's default): a write is acknowledged only after fdatasync. \
                        N > 0: acknowledged once written and synced within N ms; a machine crash can lose up to N ms of acknowledged writes.",
        read_only: false,
        default: |_| "0".into(),
        validate: |value| int_in(value, 0, i64::MAX),
    },
    Known {
        name: "index.interval.bytes",
        kind: ConfigKind::Int,
        documentation: "Bytes of log between two sparse index entries.",
        read_only: false,
        default: |_| "4096".into(),
        validate: |value| int_in(value, 0, i64::from(i32::MAX)),
    },
    Known {
        name: "min.insync.replicas",
        kind: ConfigKind::Int,
        documentation: "acks=all produces fail with NOT_ENOUGH_REPLICAS while fewer replicas are in sync; a single broker has one.",
        read_only: false,
        default: |_| "1".into(),
        validate: |value| int_in(value, 1, i64::from(i32::MAX)),
    },
    Known {
        name: "message.timestamp.type",
        kind: ConfigKind::String,
        documentation: "CreateTime: records keep the producer's timestamp. LogAppendTime is not supported yet.",
        read_only: false,
        default: |_| "CreateTime".into(),
        validate: |value| match value {
            "CreateTime" => Ok(()),
            _ => Err("only message.timestamp.type=CreateTime is supported".into()),
        },
    },
    Known {
        name: "compression.type",
        kind: ConfigKind::String,
        documentation: "producer: batches are stored compressed as the producer sent them. Weir does not recompress.",
        read_only: false,
        default: |_| "producer".into(),
        validate: |value| match value {
            "producer" => Ok(()),
            _ => Err("only compression.type=producer is supported: batches are stored as sent".into()),
        },
    },
];

fn int_in(value: &str, min: i64, max: i64) -> std::result::Result<(), String> {
    match value.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        Ok(n) => Err(format!("{n} is outside [{min}, {max}]")),
        Err(_) => Err(format!("'{value}' is not an integer")),
    }
}

fn known(name: &str) -> Result<&'static Known> {
    KNOWN
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| CoreError::InvalidConfig(format!("unknown topic config '{name}'")))
}

/// A topic's overrides of the broker defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Validates and collects overrides given at topic creation.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidConfig`] naming the first bad entry.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig> {
        let mut config = TopicConfig::default();
        for (name, value) in pairs {
            config.apply(name, &ConfigChange::Set(value.to_string()))?;
        }
        Ok(config)
    }

    /// Overrides that were validated before (by the metadata state).
    pub(crate) fn from_validated(overrides: BTreeMap<String, String>) -> TopicConfig {
        TopicConfig { overrides }
    }

    /// The overrides, by name.
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// Applies one change after validating it.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidConfig`] for an unknown name or a bad value.
    pub fn apply(&mut self, name: &str, change: &ConfigChange) -> Result<()> {
        let known = known(name)?;
        match change {
            ConfigChange::Set(value) => {
                (known.validate)(value.trim())
                    .map_err(|why| CoreError::InvalidConfig(format!("{name}: {why}")))?;
                self.overrides
                    .insert(name.to_string(), value.trim().to_string());
            }
            ConfigChange::Delete => {
                self.overrides.remove(name);
            }
        }
        Ok(())
    }

    /// Every known setting with its effective value.
    pub fn entries(&self, defaults: &TopicDefaults) -> Vec<ConfigEntry> {
        KNOWN
            .iter()
            .map(|known| match self.overrides.get(known.name) {
                Some(value) => ConfigEntry {
                    name: known.name.into(),
                    value: value.clone(),
                    source: ConfigSource::Topic,
                    read_only: known.read_only,
                    documentation: known.documentation,
                    kind: known.kind,
                },
                None => ConfigEntry {
                    name: known.name.into(),
                    value: (known.default)(defaults),
                    source: ConfigSource::Default,
                    read_only: known.read_only,
                    documentation: known.documentation,
                    kind: known.kind,
                },
            })
            .collect()
    }

    fn int(&self, name: &str, defaults: &TopicDefaults) -> i64 {
        let value = match self.overrides.get(name) {
            Some(value) => value.clone(),
            None => known(name)
                .map(|k| (k.default)(defaults))
                .unwrap_or_default(),
        };
        value
            .parse()
            .unwrap_or_else(|_| panic!("validated config {name}={value} must parse"))
    }

    /// `min.insync.replicas`.
    pub fn min_insync_replicas(&self, defaults: &TopicDefaults) -> i64 {
        self.int("min.insync.replicas", defaults)
    }

    /// The storage settings these overrides and defaults give.
    pub fn log_config(&self, defaults: &TopicDefaults) -> LogConfig {
        let positive = |value: i64| (value >= 0).then_some(value as u64);
        let flush_ms = self.int("flush.ms", defaults);
        LogConfig {
            segment_bytes: self.int("segment.bytes", defaults) as u64,
            segment_ms: self.int("segment.ms", defaults) as u64,
            retention_ms: positive(self.int("retention.ms", defaults)),
            retention_bytes: positive(self.int("retention.bytes", defaults)),
            max_message_bytes: self.int("max.message.bytes", defaults) as usize,
            index_interval_bytes: self.int("index.interval.bytes", defaults) as u64,
            flush_interval: (flush_ms > 0).then(|| Duration::from_millis(flush_ms as u64)),
            // Kafka producers batch themselves; their syncs are not delayed.
            sync_spacing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_shape_the_log_config() {
        let config =
            TopicConfig::from_pairs([("segment.bytes", "2048"), ("retention.bytes", "4096")])
                .expect("valid");
        let log = config.log_config(&TopicDefaults::default());
        assert_eq!(log.segment_bytes, 2048);
        assert_eq!(log.retention_bytes, Some(4096));
        assert_eq!(log.flush_interval, None);
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        assert!(matches!(
            TopicConfig::from_pairs([("no.such", "1")]),
            Err(CoreError::InvalidConfig(_))
        ));
        assert!(matches!(
            TopicConfig::from_pairs([("segment.bytes", "10")]),
            Err(CoreError::InvalidConfig(_))
        ));
        assert!(matches!(
            TopicConfig::from_pairs([("cleanup.policy", "compact")]),
            Err(CoreError::InvalidConfig(_))
        ));
    }

    #[test]
    fn deleting_an_override_restores_the_default() {
        let mut config = TopicConfig::from_pairs([("retention.ms", "1000")]).expect("valid");
        config
            .apply("retention.ms", &ConfigChange::Delete)
            .expect("delete");
        let entry = config
            .entries(&TopicDefaults::default())
            .into_iter()
            .find(|e| e.name == "retention.ms")
            .expect("listed");
        assert_eq!(entry.source, ConfigSource::Default);
    }
}
