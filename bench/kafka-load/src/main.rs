//! `kafka-load`: a Kafka-protocol load generator built on librdkafka.
//!
//! Three subcommands, each printing exactly one JSON line of results on
//! stdout (progress and librdkafka logs go to stderr):
//!
//! * `produce` (`produce.rs`) — sends N messages of S bytes to one topic
//!   partition (or round-robin over several), plain, idempotent or in
//!   transactions of a fixed size, waits until every one is acknowledged (or
//!   failed), and reports msgs/s, MB/s, elapsed time and the client's own
//!   CPU time.
//! * `consume` (`consume.rs`) — assigns one partition (or all of them) from
//!   the first offset (no consumer group), reads N messages, and reports the
//!   same figures plus what it saw: gaps, duplicates, losses and reordering,
//!   checked through a sequence number the producer writes into the first 8
//!   bytes of every value.
//! * `rebalance` (`rebalance.rs`) — starts K group consumers at once on one
//!   topic and reports how long it took until every one of them held a share
//!   of the partitions and had read a message from it.
//!
//! Used by `bench/kafka-throughput.sh` and `bench/kafka-features.sh` to
//! compare brokers side by side.

mod consume;
mod produce;
mod rebalance;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use serde_json::{json, Value};

/// Command line of `kafka-load`.
#[derive(Parser, Debug)]
#[command(version, about = "Kafka produce/consume throughput with librdkafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce N messages of S bytes and wait for all acks.
    Produce(produce::ProduceArgs),
    /// Read N messages from the first offset (assign, no group).
    Consume(consume::ConsumeArgs),
    /// Start K group consumers together; time until all are assigned and reading.
    Rebalance(rebalance::RebalanceArgs),
}

/// Options shared by every subcommand.
#[derive(Args, Debug)]
pub struct Common {
    /// Bootstrap servers (host:port[,host:port]).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// A label copied into the JSON result (e.g. the broker's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Give up when no progress is made for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_s: u64,
    /// Extra librdkafka property, repeatable: -X key=value.
    #[arg(short = 'X', value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

/// How many messages, and where, for `produce` and `consume`.
#[derive(Args, Debug)]
pub struct Workload {
    /// Partition to produce to / read from; -1 means all of the topic's
    /// partitions (round-robin by sequence number when producing).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub partition: i32,
    /// Number of messages.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    pub messages: u64,
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

/// Writes librdkafka's log lines (which rust-rdkafka hands to the `log`
/// crate) to stderr, so `-X debug=fetch,...` shows something; each line
/// starts with the seconds since the process started.
struct StderrLogger;

static PROCESS_STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

impl log::Log for StderrLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let elapsed = PROCESS_STARTED
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64();
        eprintln!(
            "{elapsed:.6} {} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    PROCESS_STARTED.get_or_init(std::time::Instant::now);
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(args) => produce::produce(&args),
        Command::Consume(args) => consume::consume(&args),
        Command::Rebalance(args) => rebalance::rebalance(&args),
    };
    match result {
        Ok(report) => {
            let complete = report["complete"].as_bool().unwrap_or(false);
            println!("{report}");
            if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(error) => {
            println!("{}", json!({ "error": error }));
            ExitCode::FAILURE
        }
    }
}

/// CPU time (user + system) of this whole process, all threads, in seconds.
pub fn process_cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer is always a defined call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A name no earlier run used: `<prefix>-<pid>-<unix nanoseconds>`.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn base_config(common: &Common) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &common.bootstrap)
        .set("client.id", "kafka-load")
        .set("log_level", "4");
    config
}

pub fn apply_properties(config: &mut ClientConfig, common: &Common) {
    for (key, value) in &common.property {
        config.set(key, value);
    }
}

/// Creates the topic with `partitions` partitions through the Admin API.
/// Returns "created" or "already-exists".
pub fn create_topic(common: &Common, partitions: i32) -> Result<String, String> {
    let mut config = base_config(common);
    apply_properties(&mut config, common);
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|error| format!("admin client: {error}"))?;
    let topic = NewTopic::new(&common.topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|error| format!("tokio runtime: {error}"))?;
    let results = runtime
        .block_on(admin.create_topics([&topic], &options))
        .map_err(|error| format!("create_topics: {error}"))?;
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

/// Fills a value with non-repeating filler so that compression, when asked
/// for, has realistic rather than trivial input.
pub fn filler(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

/// The sequence number of `produce`'s warm-up messages, which `consume`
/// does not count.
pub const WARMUP_SEQUENCE: u64 = u64::MAX;

pub fn write_sequence(value: &mut [u8], sequence: u64) {
    let bytes = sequence.to_be_bytes();
    let len = value.len().min(bytes.len());
    value[..len].copy_from_slice(&bytes[..len]);
}

pub fn read_sequence(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The figures every produce/consume report starts with.
pub fn rates(
    mode: &str,
    common: &Common,
    workload: &Workload,
    messages: u64,
    message_bytes: u64,
    elapsed: Duration,
    cpu_s: f64,
) -> Value {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let per_message = |total: f64| {
        if messages == 0 {
            Value::Null
        } else {
            json!(total / messages as f64 * 1e6)
        }
    };
    json!({
        "mode": mode,
        "label": common.label,
        "bootstrap": common.bootstrap,
        "topic": common.topic,
        "partition": workload.partition,
        "requested": workload.messages,
        "messages": messages,
        "message_bytes": message_bytes,
        "elapsed_s": seconds,
        "msgs_per_s": messages as f64 / seconds,
        "mb_per_s": (messages * message_bytes) as f64 / seconds / 1e6,
        "client_cpu_s": cpu_s,
        "client_cpu_us_per_msg": per_message(cpu_s),
    })
}

pub fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// The value at `fraction` (0..=1) of sorted `values`, nearest rank.
pub fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
