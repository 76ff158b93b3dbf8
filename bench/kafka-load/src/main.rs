//! `kafka-load`: a Kafka-protocol load generator built on librdkafka.
//!
//! Two subcommands, each printing exactly one JSON line of results on stdout
//! (progress and librdkafka logs go to stderr):
//!
//! * `produce` — sends N messages of S bytes to one topic partition, waits
//!   until every one is acknowledged (or failed), and reports msgs/s, MB/s,
//!   elapsed time and the client's own CPU time.
//! * `consume` — assigns one partition from its first offset (no consumer
//!   group), reads N messages, and reports the same figures plus what it saw:
//!   gaps, duplicates and reordering, checked through a sequence number the
//!   producer writes into the first 8 bytes of every value.
//!
//! Used by `bench/kafka-throughput.sh` to compare brokers side by side.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
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
    /// Produce N messages of S bytes to one partition and wait for all acks.
    Produce(ProduceArgs),
    /// Read N messages of one partition from its first offset (assign, no group).
    Consume(ConsumeArgs),
}

/// Options shared by both subcommands.
#[derive(Args, Debug)]
struct Common {
    /// Bootstrap servers (host:port[,host:port]).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partition to produce to / read from.
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Number of messages.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    messages: u64,
    /// A label copied into the JSON result (e.g. the broker's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Give up when no progress is made for this many seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_s: u64,
    /// Extra librdkafka property, repeatable: -X key=value.
    #[arg(short = 'X', value_parser = parse_property)]
    property: Vec<(String, String)>,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Value size in bytes (the first 8 bytes carry a sequence number).
    #[arg(long, short = 's', default_value_t = 100)]
    size: usize,
    /// acks: 0, 1 or all (-1).
    #[arg(long, default_value = "all")]
    acks: String,
    /// linger.ms: how long librdkafka waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// batch.size in bytes (upper bound of one partition's batch).
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u64,
    /// batch.num.messages: upper bound of messages in one batch.
    #[arg(long, default_value_t = 10_000)]
    batch_messages: u64,
    /// compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// enable.idempotence.
    #[arg(long, default_value_t = false)]
    idempotence: bool,
    /// Create the topic first (AdminClient), tolerating "already exists".
    #[arg(long, default_value_t = false)]
    create_topic: bool,
    /// Partitions of the topic when --create-topic is given.
    #[arg(long, default_value_t = 1)]
    topic_partitions: i32,
    /// Keep the connection open this long after the last delivery report
    /// (with acks=0 a report only means "written to the socket").
    #[arg(long, default_value_t = 0.0)]
    hold_s: f64,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Expected value size; values of another size are counted as bad.
    /// 0 disables the check.
    #[arg(long, short = 's', default_value_t = 0)]
    size: usize,
    /// max.partition.fetch.bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    partition_fetch_bytes: u64,
    /// fetch.max.bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    fetch_bytes: u64,
    /// Leave librdkafka's own fetch and queue settings alone (1 MiB per
    /// partition fetch, queued.min.messages 100000, fetch.queue.backoff.ms
    /// 1000, ...) instead of the larger ones this tool sets by default;
    /// --partition-fetch-bytes and --fetch-bytes are then ignored.
    #[arg(long, default_value_t = false)]
    client_defaults: bool,
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

/// Writes librdkafka's log lines (which rust-rdkafka hands to the `log`
/// crate) to stderr, so `-X debug=fetch,...` shows something.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{} {}: {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(args) => produce(&args),
        Command::Consume(args) => consume(&args),
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
fn process_cpu_s() -> f64 {
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

fn base_config(common: &Common) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &common.bootstrap)
        .set("client.id", "kafka-load")
        .set("log_level", "4");
    config
}

fn apply_properties(config: &mut ClientConfig, common: &Common) {
    for (key, value) in &common.property {
        config.set(key, value);
    }
}

/// Counts acknowledgements from librdkafka's delivery-report callback.
#[derive(Default)]
struct DeliveryCounter {
    delivered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

fn create_topic(args: &ProduceArgs) -> Result<String, String> {
    let mut config = base_config(&args.common);
    apply_properties(&mut config, &args.common);
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|error| format!("admin client: {error}"))?;
    let topic = NewTopic::new(
        &args.common.topic,
        args.topic_partitions,
        TopicReplication::Fixed(1),
    );
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
fn filler(size: usize) -> Vec<u8> {
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

fn produce(args: &ProduceArgs) -> Result<Value, String> {
    let common = &args.common;
    let topic_created = if args.create_topic {
        create_topic(args)?
    } else {
        "not-asked".into()
    };
    let mut config = base_config(common);
    config
        .set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("batch.num.messages", args.batch_messages.to_string())
        .set("compression.type", &args.compression)
        .set("enable.idempotence", args.idempotence.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "300000");
    apply_properties(&mut config, common);
    let producer: BaseProducer<DeliveryCounter> = config
        .create_with_context(DeliveryCounter::default())
        .map_err(|error| format!("producer: {error}"))?;
    // Connect and learn the partition's leader before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(&common.topic), Duration::from_secs(30))
        .map_err(|error| format!("metadata: {error}"))?;

    let mut value = filler(args.size);
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let mut queue_full_waits: u64 = 0;
    for sequence in 0..common.messages {
        write_sequence(&mut value, sequence);
        let mut record = BaseRecord::<(), [u8]>::to(&common.topic)
            .partition(common.partition)
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    queue_full_waits += 1;
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(format!("send #{sequence}: {error}")),
            }
        }
        if sequence % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    let enqueued = started.elapsed();
    let context = producer.context();
    wait_for_acks(&producer, context, common)?;
    let elapsed = started.elapsed();
    let cpu_s = process_cpu_s() - cpu_before;
    if args.hold_s > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(args.hold_s));
    }

    use std::sync::atomic::Ordering::Relaxed;
    let delivered = context.delivered.load(Relaxed);
    let failed = context.failed.load(Relaxed);
    let first_error = context.first_error.lock().ok().and_then(|e| e.clone());
    let mut report = rates(
        "produce",
        common,
        delivered,
        args.size as u64,
        elapsed,
        cpu_s,
    );
    let extra = json!({
        "complete": delivered == common.messages && failed == 0,
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "batch_size": args.batch_size,
        "batch_messages": args.batch_messages,
        "compression": args.compression,
        "idempotence": args.idempotence,
        "topic_created": topic_created,
        "failed": failed,
        "first_error": first_error,
        "enqueue_s": enqueued.as_secs_f64(),
        "queue_full_waits": queue_full_waits,
    });
    merge(&mut report, extra);
    Ok(report)
}

fn write_sequence(value: &mut [u8], sequence: u64) {
    let bytes = sequence.to_be_bytes();
    let len = value.len().min(bytes.len());
    value[..len].copy_from_slice(&bytes[..len]);
}

fn read_sequence(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Polls until every message has a delivery report, giving up after
/// `idle_timeout_s` without a new one.
fn wait_for_acks(
    producer: &BaseProducer<DeliveryCounter>,
    context: &DeliveryCounter,
    common: &Common,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    let settled = || context.delivered.load(Relaxed) + context.failed.load(Relaxed);
    let mut last_progress = Instant::now();
    let mut last_settled = settled();
    while settled() < common.messages {
        producer.poll(Duration::from_millis(10));
        let now_settled = settled();
        if now_settled != last_settled {
            last_settled = now_settled;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(common.idle_timeout_s) {
            eprintln!(
                "kafka-load: no delivery report for {}s; {now_settled}/{} settled, {} in flight",
                common.idle_timeout_s,
                common.messages,
                producer.in_flight_count()
            );
            return Ok(());
        }
    }
    Ok(())
}

/// What the consumer saw, beyond the count.
#[derive(Default)]
struct ConsumeCheck {
    received: u64,
    bytes: u64,
    wrong_size: u64,
    offset_gaps: u64,
    offset_regressions: u64,
    sequence_breaks: u64,
    next_offset: Option<i64>,
    next_sequence: Option<u64>,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

impl ConsumeCheck {
    fn observe(&mut self, offset: i64, value: &[u8], expected_size: usize) {
        self.received += 1;
        self.bytes += value.len() as u64;
        if expected_size != 0 && value.len() != expected_size {
            self.wrong_size += 1;
        }
        self.first_offset.get_or_insert(offset);
        self.last_offset = Some(offset);
        if let Some(next) = self.next_offset {
            if offset > next {
                self.offset_gaps += 1;
            } else if offset < next {
                self.offset_regressions += 1;
            }
        }
        self.next_offset = Some(offset + 1);
        if let Some(sequence) = read_sequence(value) {
            if self.next_sequence.is_some_and(|next| next != sequence) {
                self.sequence_breaks += 1;
            }
            self.next_sequence = Some(sequence.wrapping_add(1));
        }
    }
}

fn consume(args: &ConsumeArgs) -> Result<Value, String> {
    let common = &args.common;
    let mut config = base_config(common);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    if !args.client_defaults {
        // A local queue deep enough that librdkafka does not pause fetching
        // (fetch.queue.backoff.ms, 1 s by default) whenever the broker
        // answers faster than this one thread drains messages.
        config
            .set(
                "max.partition.fetch.bytes",
                args.partition_fetch_bytes.to_string(),
            )
            .set("fetch.max.bytes", args.fetch_bytes.to_string())
            .set("queued.max.messages.kbytes", "1048576")
            .set("queued.min.messages", "1000000");
    }
    // librdkafka refuses assign() without a group.id ("Unknown group"), so
    // one is set; nothing subscribes or commits, so no group is ever joined
    // (librdkafka still looks up the group's coordinator in the background).
    config.set("group.id", format!("kafka-load-{}", std::process::id()));
    apply_properties(&mut config, common);
    let consumer: BaseConsumer = config
        .create()
        .map_err(|error| format!("consumer: {error}"))?;
    let (low, high) = consumer
        .fetch_watermarks(&common.topic, common.partition, Duration::from_secs(30))
        .map_err(|error| format!("watermarks: {error}"))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&common.topic, common.partition, Offset::Beginning)
        .map_err(|error| format!("assignment: {error}"))?;

    let mut check = ConsumeCheck::default();
    let mut first_error: Option<String> = None;
    let mut errors: u64 = 0;
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    consumer
        .assign(&assignment)
        .map_err(|error| format!("assign: {error}"))?;
    let mut first_message_s: Option<f64> = None;
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    while check.received < common.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                first_message_s.get_or_insert_with(|| started.elapsed().as_secs_f64());
                let value = message.payload().unwrap_or(&[]);
                check.observe(message.offset(), value, args.size);
                last_progress = Instant::now();
            }
            Some(Err(error)) => {
                errors += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
            None => {
                if last_progress.elapsed() > Duration::from_secs(common.idle_timeout_s) {
                    timed_out = true;
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu_s = process_cpu_s() - cpu_before;
    let average_size = check.bytes.checked_div(check.received).unwrap_or(0);
    let mut report = rates(
        "consume",
        common,
        check.received,
        average_size,
        elapsed,
        cpu_s,
    );
    let extra = json!({
        "complete": check.received == common.messages && !timed_out,
        "client_defaults": args.client_defaults,
        "timed_out": timed_out,
        "payload_bytes": check.bytes,
        "low_watermark": low,
        "high_watermark": high,
        "first_offset": check.first_offset,
        "last_offset": check.last_offset,
        "first_message_s": first_message_s,
        "wrong_size": check.wrong_size,
        "offset_gaps": check.offset_gaps,
        "offset_regressions": check.offset_regressions,
        "sequence_breaks": check.sequence_breaks,
        "errors": errors,
        "first_error": first_error,
    });
    merge(&mut report, extra);
    Ok(report)
}

fn rates(
    mode: &str,
    common: &Common,
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
        "partition": common.partition,
        "requested": common.messages,
        "messages": messages,
        "message_bytes": message_bytes,
        "elapsed_s": seconds,
        "msgs_per_s": messages as f64 / seconds,
        "mb_per_s": (messages * message_bytes) as f64 / seconds / 1e6,
        "client_cpu_s": cpu_s,
        "client_cpu_us_per_msg": per_message(cpu_s),
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}
