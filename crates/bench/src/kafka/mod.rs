//! Kafka-protocol workloads on librdkafka: `produce`, `consume`, `e2e` and
//! `rebalance`. Each runs against any Kafka-protocol broker.
//!
//! * [`produce`] — N producers, closed loop (max throughput) or open loop
//!   (`--rate`, latency from the scheduled send time to the delivery
//!   report), plain, idempotent or transactional.
//! * [`consume`] — reads a topic that is already filled (assign from the
//!   first offset, no group) and checks every message arrived exactly once.
//! * [`e2e`] — producers at a rate and consumers in one process; latency
//!   from the send time carried in each message to its receipt.
//! * [`rebalance`] — how long a consumer group takes to form.

pub mod consume;
pub mod e2e;
pub mod events;
pub mod produce;
pub mod rebalance;

use std::time::Duration;

use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use serde::Serialize;

use crate::report::Report;

/// Largest partition count `--partitions` accepts.
pub const PARTITIONS_MAX: i32 = 100_000;

/// How long metadata, watermark and admin requests may take.
pub const REQUEST_TIMEOUT_S: u64 = 30;

/// `weir bench kafka …`.
#[derive(Debug, Subcommand)]
pub enum KafkaCommand {
    /// Produce messages and wait for every acknowledgement (closed loop, or
    /// open loop with --rate).
    Produce(produce::ProduceArgs),
    /// Read a filled topic from its first offset (assign, no group).
    Consume(consume::ConsumeArgs),
    /// Produce at a rate and consume at once; latency from send to receipt.
    E2e(e2e::E2eArgs),
    /// Start K group consumers together; time until all are assigned and
    /// reading.
    Rebalance(rebalance::RebalanceArgs),
}

/// Runs one Kafka workload.
///
/// # Errors
///
/// Bad arguments, or a broker that cannot be reached.
pub fn run(command: KafkaCommand) -> Result<Report, String> {
    match command {
        KafkaCommand::Produce(args) => produce::run(&args),
        KafkaCommand::Consume(args) => consume::run(&args),
        KafkaCommand::E2e(args) => e2e::run(&args),
        KafkaCommand::Rebalance(args) => rebalance::run(&args),
    }
}

/// Where to connect and which topic.
#[derive(Clone, Debug, Args, Serialize)]
pub struct KafkaArgs {
    /// Bootstrap servers (host:port[,host:port]).
    #[arg(long, alias = "bootstrap", default_value = "127.0.0.1:9092")]
    pub broker: String,
    /// Topic to use.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Extra librdkafka property, repeatable: -X key=value (applied last).
    #[arg(short = 'X', value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

/// Producer settings.
#[derive(Clone, Debug, Args, Serialize)]
pub struct ProducerArgs {
    /// Producers (each its own librdkafka client and thread).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Partition to send to; -1 spreads messages round-robin over all of
    /// them (by sequence number). Ignored with --keys.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub partition: i32,
    /// Give messages keys `key-<sequence mod K>` and let librdkafka's
    /// partitioner pick the partition. 0 = no keys.
    #[arg(long = "keys", default_value_t = 0)]
    pub key_count: u64,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// linger.ms: how long librdkafka waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// batch.size in bytes (upper bound of one partition's batch).
    #[arg(long = "batch-size", default_value_t = 1_000_000)]
    pub batch_size_bytes: u64,
    /// batch.num.messages: upper bound of messages in one batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch_messages: u64,
    /// compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// enable.idempotence.
    #[arg(long)]
    pub idempotence: bool,
    /// Send in transactions of this many messages each (begin, send, commit,
    /// in a loop). Sets a new transactional.id per producer. 0 = none.
    #[arg(long, default_value_t = 0)]
    pub transactional_batch: u64,
    /// Do not create the topic (by default it is created through the Admin
    /// API with --partitions, and "already exists" is fine).
    #[arg(long)]
    pub no_create_topic: bool,
    /// No warm-up message (one per partition, acknowledged before the clock
    /// starts, so connecting and the producer id are not measured).
    #[arg(long)]
    pub no_warmup: bool,
}

impl ProducerArgs {
    /// Checks values clap cannot.
    ///
    /// # Errors
    ///
    /// A sentence naming the bad option.
    pub fn validate(&self) -> Result<(), String> {
        crate::run::validate_clients("--producers", self.producers)?;
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(format!(
                "--partitions must be 1..={PARTITIONS_MAX}, got {}",
                self.partitions
            ));
        }
        if self.partition < -1 {
            return Err(format!(
                "--partition must be -1 or a partition number, got {}",
                self.partition
            ));
        }
        if !self.no_create_topic && self.partition >= self.partitions {
            return Err(format!(
                "--partition {} is not one of the {} partitions the topic is created with",
                self.partition, self.partitions
            ));
        }
        if !["0", "1", "all", "-1"].contains(&self.acks.as_str()) {
            return Err(format!("--acks must be 0, 1 or all, got {}", self.acks));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return Err(format!(
                "--compression must be none, gzip, snappy, lz4 or zstd, got {}",
                self.compression
            ));
        }
        Ok(())
    }
}

/// Consumer fetch settings.
#[derive(Clone, Debug, Args, Serialize)]
pub struct ConsumerArgs {
    /// max.partition.fetch.bytes.
    #[arg(long = "partition-fetch-bytes", default_value_t = 8 * 1024 * 1024)]
    pub partition_fetch_bytes: u64,
    /// fetch.max.bytes.
    #[arg(long = "fetch-bytes", default_value_t = 64 * 1024 * 1024)]
    pub fetch_bytes: u64,
    /// fetch.wait.max.ms (librdkafka's default: 500).
    #[arg(long)]
    pub fetch_wait_ms: Option<u64>,
    /// Leave librdkafka's fetch and queue settings alone (1 MiB per
    /// partition, queued.min.messages 100000, fetch.queue.backoff.ms 1000)
    /// instead of this tool's larger ones; --partition-fetch-bytes and
    /// --fetch-bytes are then ignored.
    #[arg(long)]
    pub client_defaults: bool,
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

/// The settings every client starts from.
pub fn base_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.broker)
        .set("client.id", "weir-bench")
        .set("log_level", "4");
    config
}

/// Applies `-X` properties, last so they win.
pub fn apply_properties(config: &mut ClientConfig, kafka: &KafkaArgs) {
    for (key, value) in &kafka.property {
        config.set(key, value);
    }
}

/// A producer's settings.
pub fn producer_config(kafka: &KafkaArgs, producer: &ProducerArgs) -> ClientConfig {
    let mut config = base_config(kafka);
    config
        .set("acks", &producer.acks)
        .set("linger.ms", producer.linger_ms.to_string())
        .set("batch.size", producer.batch_size_bytes.to_string())
        .set("batch.num.messages", producer.batch_messages.to_string())
        .set("compression.type", &producer.compression)
        // A transactional producer is always idempotent (librdkafka refuses
        // a transactional.id with enable.idempotence=false).
        .set(
            "enable.idempotence",
            (producer.idempotence || producer.transactional_batch > 0).to_string(),
        )
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "300000");
    config
}

/// A consumer's settings (assign only, no commits).
pub fn consumer_config(kafka: &KafkaArgs, consumer: &ConsumerArgs) -> ClientConfig {
    let mut config = base_config(kafka);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    if !consumer.client_defaults {
        // A local queue deep enough that librdkafka does not pause fetching
        // (fetch.queue.backoff.ms, 1 s by default) whenever the broker
        // answers faster than one thread drains messages.
        config
            .set(
                "max.partition.fetch.bytes",
                consumer.partition_fetch_bytes.to_string(),
            )
            .set("fetch.max.bytes", consumer.fetch_bytes.to_string())
            .set("queued.max.messages.kbytes", "1048576")
            .set("queued.min.messages", "1000000");
    }
    if let Some(wait_ms) = consumer.fetch_wait_ms {
        config.set("fetch.wait.max.ms", wait_ms.to_string());
    }
    // librdkafka refuses assign() without a group.id; nothing subscribes or
    // commits, so no group is ever joined.
    config.set("group.id", unique_name("weir-bench"));
    apply_properties(&mut config, kafka);
    config
}

/// A name no earlier run used: `<prefix>-<pid>-<unix nanoseconds>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        crate::payload::clock_ns()
    )
}

/// Creates the topic through the Admin API; "already exists" is fine.
/// Returns `created` or `already-exists`.
///
/// # Errors
///
/// When the broker cannot be reached or refuses the topic.
pub fn create_topic(kafka: &KafkaArgs, partitions: i32) -> Result<String, String> {
    let mut config = base_config(kafka);
    apply_properties(&mut config, kafka);
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|error| format!("admin client: {error}"))?;
    let topic = NewTopic::new(&kafka.topic, partitions, TopicReplication::Fixed(1));
    let options =
        AdminOptions::new().operation_timeout(Some(Duration::from_secs(REQUEST_TIMEOUT_S)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|error| format!("tokio runtime: {error}"))?;
    let results = runtime
        .block_on(admin.create_topics([&topic], &options))
        .map_err(|error| {
            format!(
                "create topic {}: {error} (is a broker listening on {}?)",
                kafka.topic, kafka.broker
            )
        })?;
    let mut outcome = String::from("created");
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => outcome = "already-exists".into(),
            Err((name, code)) => return Err(format!("create topic {name}: {code}")),
        }
    }
    Ok(outcome)
}
