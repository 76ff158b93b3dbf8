//! `kafka-load produce`: N values of S bytes, plain, idempotent or in
//! transactions of `--transactional-batch` messages, to one partition or
//! round-robin over all of them.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::bindings as rdsys;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::{json, Value};

use crate::{
    apply_properties, base_config, create_topic, filler, merge, percentile, process_cpu_s, rates,
    unique_name, write_sequence, Common, Workload, WARMUP_SEQUENCE,
};

/// How long one `commit_transaction` (which first flushes the
/// transaction's messages) may take before the run counts as failed.
const COMMIT_TIMEOUT_S: u64 = 60;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    workload: Workload,
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
    /// Send in transactions of this many messages each (begin, produce this
    /// many, commit, in a loop; the last one may be shorter). Sets a
    /// transactional.id, which implies idempotence. 0 = no transactions.
    #[arg(long, default_value_t = 0)]
    transactional_batch: u64,
    /// transactional.id with --transactional-batch (default: a new one per run).
    #[arg(long)]
    transactional_id: Option<String>,
    /// Create the topic first (AdminClient), tolerating "already exists".
    #[arg(long, default_value_t = false)]
    create_topic: bool,
    /// Partitions of the topic when --create-topic is given.
    #[arg(long, default_value_t = 1)]
    topic_partitions: i32,
    /// Do not send the warm-up message (one per partition, acknowledged
    /// before the clock starts; see `warm_up`).
    #[arg(long, default_value_t = false)]
    no_warmup: bool,
    /// Keep the connection open this long after the last delivery report
    /// (with acks=0 a report only means "written to the socket").
    #[arg(long, default_value_t = 0.0)]
    hold_s: f64,
}

/// Counts acknowledgements from librdkafka's delivery-report callback.
#[derive(Default)]
struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryCounter {
    fn settled(&self) -> u64 {
        self.delivered.load(Relaxed) + self.failed.load(Relaxed)
    }

    fn note_error(&self, error: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Relaxed);
                self.note_error(error.to_string());
            }
        }
    }
}

/// What the send loop did, beyond the delivery counts.
#[derive(Default)]
struct SendOutcome {
    queue_full_waits: u64,
    /// Wall time of each `commit_transaction`, in milliseconds.
    commit_ms: Vec<f64>,
    /// Messages handed to librdkafka before a failed begin/commit stopped
    /// the loop (every one of them still gets a delivery report).
    stopped_at: Option<u64>,
}

pub fn produce(args: &ProduceArgs) -> Result<Value, String> {
    let common = &args.common;
    let workload = &args.workload;
    let topic_created = if args.create_topic {
        create_topic(common, args.topic_partitions)?
    } else {
        "not-asked".into()
    };
    let transactional = args.transactional_batch > 0;
    let transactional_id = transactional.then(|| {
        args.transactional_id
            .clone()
            .unwrap_or_else(|| unique_name("kafka-load-txn"))
    });
    let mut config = base_config(common);
    config
        .set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("batch.num.messages", args.batch_messages.to_string())
        .set("compression.type", &args.compression)
        .set(
            "enable.idempotence",
            (args.idempotence || transactional).to_string(),
        )
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "300000");
    if let Some(id) = &transactional_id {
        // librdkafka insists on message.timeout.ms <= transaction.timeout.ms
        // (60 s by default).
        config
            .set("transactional.id", id)
            .set("message.timeout.ms", "60000");
    }
    apply_properties(&mut config, common);
    let producer: BaseProducer<DeliveryCounter> = config
        .create_with_context(DeliveryCounter::default())
        .map_err(|error| format!("producer: {error}"))?;
    // Connect, learn the partitions' leader and (with transactions) get a
    // producer id from the coordinator before the clock starts.
    let metadata = producer
        .client()
        .fetch_metadata(Some(&common.topic), Duration::from_secs(30))
        .map_err(|error| format!("metadata: {error}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|topic| topic.name() == common.topic)
        .map_or(0, |topic| topic.partitions().len() as i32);
    if workload.partition < 0 && partitions == 0 {
        return Err(format!("topic {} has no partitions", common.topic));
    }
    if transactional {
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|error| format!("init_transactions: {error}"))?;
    }

    let warmup_messages = if args.no_warmup {
        0
    } else {
        warm_up(args, &producer, partitions)?
    };

    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let outcome = send_all(args, &producer, partitions)?;
    let enqueued = started.elapsed();
    let context = producer.context();
    let expected = outcome.stopped_at.unwrap_or(workload.messages);
    wait_for_acks(&producer, context, common, expected);
    let elapsed = started.elapsed();
    let cpu_s = process_cpu_s() - cpu_before;
    if args.hold_s > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(args.hold_s));
    }

    let delivered = context.delivered.load(Relaxed);
    let failed = context.failed.load(Relaxed);
    let first_error = context.first_error.lock().ok().and_then(|e| e.clone());
    let mut report = rates(
        "produce",
        common,
        workload,
        delivered,
        args.size as u64,
        elapsed,
        cpu_s,
    );
    let mut commit_ms = outcome.commit_ms;
    commit_ms.sort_by(f64::total_cmp);
    let extra = json!({
        "complete": delivered == workload.messages && failed == 0 && outcome.stopped_at.is_none(),
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "batch_size": args.batch_size,
        "batch_messages": args.batch_messages,
        "compression": args.compression,
        "idempotence": args.idempotence || transactional,
        "transactional_batch": args.transactional_batch,
        "transactional_id": transactional_id,
        "transactions": commit_ms.len(),
        "commit_ms_p50": percentile(&commit_ms, 0.5),
        "commit_ms_p99": percentile(&commit_ms, 0.99),
        "commit_ms_max": commit_ms.last(),
        "topic_partitions_used": if workload.partition < 0 { partitions } else { 1 },
        "topic_created": topic_created,
        "warmup_messages": warmup_messages,
        "failed": failed,
        "first_error": first_error,
        "enqueue_s": enqueued.as_secs_f64(),
        "queue_full_waits": outcome.queue_full_waits,
    });
    merge(&mut report, extra);
    Ok(report)
}

/// Sends one warm-up message to every partition the run writes to (in a
/// transaction of its own when transactional) and waits for its
/// acknowledgement, then zeroes the delivery counters. This keeps
/// connection set-up and, with idempotence, the wait for a producer id out
/// of the measurement: librdkafka asks for the id only once a connection to
/// a broker is up, and otherwise retries on a 500 ms timer, which some runs
/// hit and others did not. A warm-up value carries the sequence number
/// [`WARMUP_SEQUENCE`], which `consume` skips. Returns how many it sent.
fn warm_up(
    args: &ProduceArgs,
    producer: &BaseProducer<DeliveryCounter>,
    partitions: i32,
) -> Result<u64, String> {
    let transactional = args.transactional_batch > 0;
    let targets: Vec<i32> = if args.workload.partition < 0 {
        (0..partitions).collect()
    } else {
        vec![args.workload.partition]
    };
    if transactional {
        producer
            .begin_transaction()
            .map_err(|error| format!("warm-up begin_transaction: {error}"))?;
    }
    let mut value = filler(args.size);
    write_sequence(&mut value, WARMUP_SEQUENCE);
    for &partition in &targets {
        let record = BaseRecord::<(), [u8]>::to(&args.common.topic)
            .partition(partition)
            .payload(&value[..]);
        producer
            .send(record)
            .map_err(|(error, _)| format!("warm-up send: {error}"))?;
    }
    if transactional {
        let mut ignored = SendOutcome::default();
        if !commit(producer, &mut ignored) {
            let error = producer
                .context()
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone());
            return Err(format!("warm-up: {}", error.unwrap_or_default()));
        }
    }
    let context = producer.context();
    wait_for_acks(producer, context, &args.common, targets.len() as u64);
    if context.delivered.load(Relaxed) != targets.len() as u64 {
        let error = context.first_error.lock().ok().and_then(|e| e.clone());
        return Err(format!("warm-up not acknowledged: {error:?}"));
    }
    context.delivered.store(0, Relaxed);
    Ok(targets.len() as u64)
}

/// Sends every message, wrapping each `transactional_batch` of them in a
/// transaction. A failed begin or commit stops the loop (and is reported as
/// the first error); a failed send of one message is an error of the run.
fn send_all(
    args: &ProduceArgs,
    producer: &BaseProducer<DeliveryCounter>,
    partitions: i32,
) -> Result<SendOutcome, String> {
    let common = &args.common;
    let workload = &args.workload;
    let batch = args.transactional_batch;
    let mut outcome = SendOutcome::default();
    let mut value = filler(args.size);
    for sequence in 0..workload.messages {
        if batch > 0 && sequence % batch == 0 {
            if sequence > 0 && !commit(producer, &mut outcome) {
                outcome.stopped_at = Some(sequence);
                return Ok(outcome);
            }
            if let Err(error) = producer.begin_transaction() {
                producer
                    .context()
                    .note_error(format!("begin_transaction: {error}"));
                outcome.stopped_at = Some(sequence);
                return Ok(outcome);
            }
        }
        write_sequence(&mut value, sequence);
        let partition = if workload.partition < 0 {
            (sequence % partitions as u64) as i32
        } else {
            workload.partition
        };
        let mut record = BaseRecord::<(), [u8]>::to(&common.topic)
            .partition(partition)
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    outcome.queue_full_waits += 1;
                    record = back;
                    serve_events(producer, Duration::from_millis(1));
                }
                Err((error, _)) => return Err(format!("send #{sequence}: {error}")),
            }
        }
        if sequence % 1024 == 0 {
            serve_events(producer, Duration::ZERO);
        }
    }
    if batch > 0 && workload.messages > 0 && !commit(producer, &mut outcome) {
        outcome.stopped_at = Some(workload.messages);
    }
    Ok(outcome)
}

/// Commits the open transaction; false if that failed.
///
/// rdkafka's `commit_transaction` flushes first, and its flush polls in
/// steps of 100 ms that never end early (rdkafka 0.39's `BaseProducer::poll`
/// runs until its deadline), which would add about 100 ms to every commit.
/// So the transaction's messages are flushed here first, with
/// [`serve_events`], and `commit_transaction` finds nothing left to flush.
fn commit(producer: &BaseProducer<DeliveryCounter>, outcome: &mut SendOutcome) -> bool {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(COMMIT_TIMEOUT_S);
    // flush(0) wakes the broker threads to send without waiting for
    // linger.ms and reports whether messages are still outstanding.
    while producer.flush(Duration::ZERO).is_err() && Instant::now() < deadline {
        serve_events(producer, Duration::from_millis(1));
    }
    match producer.commit_transaction(Duration::from_secs(COMMIT_TIMEOUT_S)) {
        Ok(()) => {
            outcome
                .commit_ms
                .push(started.elapsed().as_secs_f64() * 1e3);
            true
        }
        Err(error) => {
            producer
                .context()
                .note_error(format!("commit_transaction: {error}"));
            false
        }
    }
}

/// Polls until `expected` messages have a delivery report, giving up after
/// `idle_timeout_s` without a new one.
fn wait_for_acks(
    producer: &BaseProducer<DeliveryCounter>,
    context: &DeliveryCounter,
    common: &Common,
    expected: u64,
) {
    let mut last_progress = Instant::now();
    let mut last_settled = context.settled();
    while context.settled() < expected {
        serve_events(producer, Duration::from_millis(10));
        let now_settled = context.settled();
        if now_settled != last_settled {
            last_settled = now_settled;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(common.idle_timeout_s) {
            eprintln!(
                "kafka-load: no delivery report for {}s; {now_settled}/{expected} settled, {} in flight",
                common.idle_timeout_s,
                producer.in_flight_count()
            );
            return;
        }
    }
}

/// Serves librdkafka's main event queue: waits up to `timeout` for the first
/// event, then takes whatever else is already there, and returns.
///
/// This replaces rdkafka 0.39's `BaseProducer::poll`, which keeps polling
/// until its deadline even after an event arrived, and for the last
/// fraction of a millisecond spins on the clock (a `Deadline` converts to a
/// 0 ms wait). In a loop of short polls that spinning used nearly a whole
/// core, taken from the broker on a 2-core machine. Delivery reports are
/// counted into the producer's [`DeliveryCounter`] exactly as its
/// `delivery` callback would; log lines go to the `log` crate.
fn serve_events(producer: &BaseProducer<DeliveryCounter>, timeout: Duration) {
    let context = producer.context();
    let client = producer.client().native_ptr();
    let mut wait_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `client` is the producer's live handle, borrowed for this
    // call; the queue reference taken here is released before returning,
    // and every event polled is destroyed after it was read.
    unsafe {
        let queue = rdsys::rd_kafka_queue_get_main(client);
        loop {
            let event = rdsys::rd_kafka_queue_poll(queue, wait_ms);
            if event.is_null() {
                break;
            }
            handle_event(context, event);
            rdsys::rd_kafka_event_destroy(event);
            wait_ms = 0;
        }
        rdsys::rd_kafka_queue_destroy(queue);
    }
}

/// Reads one event of the main queue (see [`serve_events`]).
///
/// # Safety
///
/// `event` must be a live event polled from the producer's main queue.
unsafe fn handle_event(context: &DeliveryCounter, event: *mut rdsys::rd_kafka_event_t) {
    match rdsys::rd_kafka_event_type(event) {
        rdsys::RD_KAFKA_EVENT_DR => loop {
            let message = rdsys::rd_kafka_event_message_next(event);
            if message.is_null() {
                break;
            }
            let error = (*message).err;
            if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                context.delivered.fetch_add(1, Relaxed);
            } else {
                context.failed.fetch_add(1, Relaxed);
                context.note_error(RDKafkaErrorCode::from(error).to_string());
            }
        },
        rdsys::RD_KAFKA_EVENT_LOG => {
            let (mut facility, mut text, mut level) = (std::ptr::null(), std::ptr::null(), 0);
            if rdsys::rd_kafka_event_log(event, &mut facility, &mut text, &mut level) == 0 {
                let facility = CStr::from_ptr(facility).to_string_lossy();
                let text = CStr::from_ptr(text).to_string_lossy();
                let level = match level {
                    0..=3 => log::Level::Error,
                    4 => log::Level::Warn,
                    5 | 6 => log::Level::Info,
                    _ => log::Level::Debug,
                };
                log::log!(target: "librdkafka", level, "librdkafka: {facility} {text}");
            }
        }
        rdsys::RD_KAFKA_EVENT_ERROR => {
            let text = CStr::from_ptr(rdsys::rd_kafka_event_error_string(event));
            log::error!(target: "librdkafka", "librdkafka: error: {}", text.to_string_lossy());
        }
        _ => {}
    }
}
