//! `weir bench kafka produce`: N producers send messages and wait for every
//! delivery report; closed loop (max throughput) or open loop (`--rate`,
//! latency from each message's scheduled send time to its report).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::Serialize;
use serde_json::json;

use super::events::{serve_events, wait_for_acks, DeliveryStats};
use super::{
    create_topic, producer_config, unique_name, KafkaArgs, ProducerArgs, REQUEST_TIMEOUT_S,
};
use crate::histogram::LatencyHistogram;
use crate::pacing::Schedule;
use crate::payload::{filler, stamp, WARMUP_SEQUENCE};
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, watch_broker, LoadArgs, OutputArgs};

/// How long one `commit_transaction` may take before the run fails.
const COMMIT_TIMEOUT_S: u64 = 60;

/// Serve delivery reports after this many sends even when never waiting.
const SENDS_PER_EVENT_POLL: u64 = 1024;

/// Serve delivery reports at least this often while sending.
const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Arguments of `weir bench kafka produce`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct ProduceArgs {
    /// Broker and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// How much and how fast.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Producer settings.
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Output and broker measurement.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What one producer thread did.
#[derive(Default)]
pub struct ProducerOutcome {
    /// Messages handed to librdkafka.
    pub sent: u64,
    /// Acknowledged.
    pub delivered: u64,
    /// Failed.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Acknowledgement latencies.
    pub latency: LatencyHistogram,
    /// librdkafka's own produce-to-report latencies (see
    /// [`DeliveryStats::librdkafka_latency`]).
    pub librdkafka_latency: LatencyHistogram,
    /// Times the local queue was full and the loop waited.
    pub queue_full_waits: u64,
    /// Wall time of each transaction commit, ms.
    pub commit_ms: Vec<f64>,
    /// True when a delivery report never came.
    pub timed_out: bool,
    /// When the last report arrived.
    pub finished: Option<Instant>,
}

/// The parts of a run every producer thread shares.
pub struct SharedRun {
    /// Where to send.
    pub kafka: KafkaArgs,
    /// How much and how fast.
    pub load: LoadArgs,
    /// Producer settings.
    pub producer: ProducerArgs,
    /// Give up after this long without progress.
    pub idle_timeout_s: u64,
    /// Acknowledged messages of all producers.
    pub progress: Arc<AtomicU64>,
    /// Every producer and the coordinator meet here twice: ready, then go.
    pub barrier: Barrier,
    /// Set by the coordinator between the two barriers.
    pub schedule: OnceLock<Schedule>,
}

/// Runs `kafka produce`.
///
/// # Errors
///
/// Bad arguments, or a broker that cannot be reached.
pub fn run(args: &ProduceArgs) -> Result<Report, String> {
    args.load.validate()?;
    args.producer.validate()?;
    let topic_created = prepare_topic(&args.kafka, &args.producer)?;
    let progress = Progress::start("acked", args.load.message_count(), !args.output.no_progress);
    let shared = Arc::new(SharedRun {
        kafka: args.kafka.clone(),
        load: args.load.clone(),
        producer: args.producer.clone(),
        idle_timeout_s: args.output.idle_timeout_s,
        progress: progress.counter(),
        barrier: Barrier::new(args.producer.producers + 1),
        schedule: OnceLock::new(),
    });
    let threads = spawn_producers(&shared);
    shared.barrier.wait();
    let watch = watch_broker(&args.output)?;
    let cpu_before = client_cpu_s();
    let schedule = *shared
        .schedule
        .get_or_init(|| Schedule::start(args.load.rate_per_s));
    shared.barrier.wait();
    let outcomes = join_producers(threads)?;
    let elapsed = finished_at(&outcomes, schedule.started());
    let cpu_s = client_cpu_s() - cpu_before;
    progress.finish();
    let mut report = producer_report("kafka produce", &args.load, &outcomes, elapsed);
    report.set_client_cpu_s(cpu_s);
    let broker = watch.map(|watch| watch.finish(report.messages));
    finish_report(&mut report, &args.output, &args.kafka.broker, args, broker);
    if let Some(details) = report.details.as_object_mut() {
        details.insert("topic_created".into(), json!(topic_created));
    }
    Ok(report)
}

/// Creates the topic unless told not to.
///
/// # Errors
///
/// When creating it fails.
pub fn prepare_topic(kafka: &KafkaArgs, producer: &ProducerArgs) -> Result<String, String> {
    if producer.no_create_topic {
        Ok("not-asked".into())
    } else {
        create_topic(kafka, producer.partitions)
    }
}

/// Starts one thread per producer; each meets the coordinator at the
/// barrier twice (ready, go), even when its set-up failed.
pub fn spawn_producers(
    shared: &Arc<SharedRun>,
) -> Vec<std::thread::JoinHandle<Result<ProducerOutcome, String>>> {
    (0..shared.producer.producers)
        .map(|index| {
            let shared = Arc::clone(shared);
            std::thread::spawn(move || producer_thread(&shared, index))
        })
        .collect()
}

/// Waits for every producer thread.
///
/// # Errors
///
/// The first producer's error.
pub fn join_producers(
    threads: Vec<std::thread::JoinHandle<Result<ProducerOutcome, String>>>,
) -> Result<Vec<ProducerOutcome>, String> {
    threads
        .into_iter()
        .map(|thread| {
            thread
                .join()
                .map_err(|_| "a producer thread panicked".to_string())?
        })
        .collect()
}

/// From the start to the last delivery report of any producer.
pub fn finished_at(outcomes: &[ProducerOutcome], started: Instant) -> Duration {
    outcomes
        .iter()
        .filter_map(|outcome| outcome.finished)
        .max()
        .map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(started)
        })
}

/// The report of a set of producers.
pub fn producer_report(
    workload: &str,
    load: &LoadArgs,
    outcomes: &[ProducerOutcome],
    elapsed: Duration,
) -> Report {
    let delivered: u64 = outcomes.iter().map(|outcome| outcome.delivered).sum();
    let sent: u64 = outcomes.iter().map(|outcome| outcome.sent).sum();
    let failed: u64 = outcomes.iter().map(|outcome| outcome.failed).sum();
    let mut latency = LatencyHistogram::new();
    let mut librdkafka_latency = LatencyHistogram::new();
    let mut commit_ms: Vec<f64> = Vec::new();
    for outcome in outcomes {
        latency.merge(&outcome.latency);
        librdkafka_latency.merge(&outcome.librdkafka_latency);
        commit_ms.extend(&outcome.commit_ms);
    }
    commit_ms.sort_by(f64::total_cmp);
    let expected = load.message_count().unwrap_or(sent);
    let timed_out = outcomes.iter().any(|outcome| outcome.timed_out);
    let mut report = Report::new(
        workload,
        delivered,
        delivered * load.size_bytes as u64,
        elapsed.as_secs_f64(),
    );
    report.mode = load.mode().into();
    report.complete = delivered == expected && failed == 0 && !timed_out;
    report.latency_us = latency.summary();
    report.details = json!({
        "requested": load.message_count(),
        "sent": sent,
        "failed": failed,
        "timed_out": timed_out,
        "first_error": outcomes.iter().find_map(|outcome| outcome.first_error.clone()),
        "queue_full_waits": outcomes.iter().map(|outcome| outcome.queue_full_waits).sum::<u64>(),
        "librdkafka_latency_us": librdkafka_latency.summary(),
        "transactions": commit_ms.len(),
        "commit_ms_p50": percentile(&commit_ms, 0.5),
        "commit_ms_p99": percentile(&commit_ms, 0.99),
        "commit_ms_max": commit_ms.last(),
    });
    report
}

/// The value at `fraction` of sorted `values` (nearest rank).
pub fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn producer_thread(shared: &SharedRun, index: usize) -> Result<ProducerOutcome, String> {
    let ready = set_up_producer(shared);
    shared.barrier.wait();
    shared.barrier.wait();
    let (producer, partitions) = ready?;
    let schedule = *shared
        .schedule
        .get()
        .ok_or("the run's schedule was not set")?;
    let mut outcome = ProducerOutcome::default();
    let stopped_at = send_all(
        shared,
        &producer,
        partitions,
        index,
        &schedule,
        &mut outcome,
    )?;
    let expected = stopped_at.unwrap_or(outcome.sent);
    outcome.timed_out = !wait_for_acks(&producer, expected, shared.idle_timeout_s);
    outcome.finished = Some(Instant::now());
    let stats = producer.context();
    outcome.delivered = stats.delivered.load(Relaxed);
    outcome.failed = stats.failed.load(Relaxed);
    outcome.first_error = stats.first_error();
    if let Ok(latency) = stats.latency.lock() {
        outcome.latency = latency.clone();
    }
    if let Ok(latency) = stats.librdkafka_latency.lock() {
        outcome.librdkafka_latency = latency.clone();
    }
    Ok(outcome)
}

/// Creates the producer, learns the partition count, starts transactions
/// and sends the warm-up, all before the clock starts.
fn set_up_producer(shared: &SharedRun) -> Result<(BaseProducer<DeliveryStats>, i32), String> {
    let mut config = producer_config(&shared.kafka, &shared.producer);
    if shared.producer.transactional_batch > 0 {
        // librdkafka insists on message.timeout.ms <= transaction.timeout.ms.
        config
            .set("transactional.id", unique_name("weir-bench-txn"))
            .set("message.timeout.ms", "60000");
    }
    super::apply_properties(&mut config, &shared.kafka);
    // Warm-up reports are not added to the shared progress counter.
    let stats = DeliveryStats::new(Arc::clone(&shared.progress));
    let producer: BaseProducer<DeliveryStats> = config
        .create_with_context(stats)
        .map_err(|error| format!("producer: {error}"))?;
    let partitions = partition_count(&producer, &shared.kafka.topic)?;
    if shared.producer.transactional_batch > 0 {
        producer
            .init_transactions(Duration::from_secs(REQUEST_TIMEOUT_S))
            .map_err(|error| format!("init_transactions: {error}"))?;
    }
    if !shared.producer.no_warmup {
        warm_up(shared, &producer, partitions)?;
    }
    Ok((producer, partitions))
}

fn partition_count(producer: &BaseProducer<DeliveryStats>, topic: &str) -> Result<i32, String> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(REQUEST_TIMEOUT_S))
        .map_err(|error| format!("metadata: {error}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic)
        .map_or(0, |found| found.partitions().len() as i32);
    if partitions == 0 {
        return Err(format!("topic {topic} has no partitions"));
    }
    Ok(partitions)
}

/// One message per partition written to, acknowledged before the clock
/// starts (see `--no-warmup`); their sequence number is
/// [`WARMUP_SEQUENCE`], which consumers skip.
fn warm_up(
    shared: &SharedRun,
    producer: &BaseProducer<DeliveryStats>,
    partitions: i32,
) -> Result<(), String> {
    let targets: Vec<i32> = if shared.producer.partition >= 0 {
        vec![shared.producer.partition]
    } else {
        (0..partitions).collect()
    };
    let transactional = shared.producer.transactional_batch > 0;
    if transactional {
        producer
            .begin_transaction()
            .map_err(|error| format!("warm-up begin_transaction: {error}"))?;
    }
    let mut value = filler(shared.load.size_bytes);
    stamp(&mut value, WARMUP_SEQUENCE, 0);
    for &partition in &targets {
        let record = BaseRecord::<(), [u8]>::to(&shared.kafka.topic)
            .partition(partition)
            .payload(&value[..]);
        send_one(producer, record, &mut 0)?;
    }
    if transactional && !commit(producer, &mut Vec::new()) {
        return Err(format!(
            "warm-up: {}",
            producer.context().first_error().unwrap_or_default()
        ));
    }
    let stats = producer.context();
    wait_for_acks(producer, targets.len() as u64, REQUEST_TIMEOUT_S);
    if stats.delivered.load(Relaxed) != targets.len() as u64 {
        return Err(format!(
            "warm-up not acknowledged: {:?}",
            stats.first_error()
        ));
    }
    stats.delivered.store(0, Relaxed);
    if let Ok(mut latency) = stats.latency.lock() {
        *latency = LatencyHistogram::new();
    }
    Ok(())
}

/// Sends this producer's share: sequences `index`, `index + producers`, …
/// Returns `Some(sent)` when a failed transaction stopped the loop early.
fn send_all(
    shared: &SharedRun,
    producer: &BaseProducer<DeliveryStats>,
    partitions: i32,
    index: usize,
    schedule: &Schedule,
    outcome: &mut ProducerOutcome,
) -> Result<Option<u64>, String> {
    let settings = &shared.producer;
    let count = shared.load.message_count();
    // A count (also what --rate sends in --duration-s) wins over the clock.
    let deadline = shared
        .load
        .duration()
        .filter(|_| count.is_none())
        .map(|duration| schedule.started() + duration);
    let mut value = filler(shared.load.size_bytes);
    let mut sequence = index as u64;
    let step = settings.producers as u64;
    let batch = settings.transactional_batch;
    let mut last_served = Instant::now();
    while count.is_none_or(|count| sequence < count)
        && deadline.is_none_or(|deadline| Instant::now() < deadline)
    {
        if batch > 0 && outcome.sent % batch == 0 && !next_transaction(producer, outcome) {
            return Ok(Some(outcome.sent));
        }
        pace(producer, schedule, sequence);
        stamp(&mut value, sequence, schedule.send_ns(sequence));
        let key =
            (settings.key_count > 0).then(|| format!("key-{}", sequence % settings.key_count));
        let mut record = BaseRecord::<str, [u8]>::to(&shared.kafka.topic).payload(&value[..]);
        if let Some(key) = &key {
            record = record.key(key.as_str());
        } else if settings.partition >= 0 {
            record = record.partition(settings.partition);
        } else {
            record = record.partition((sequence % partitions as u64) as i32);
        }
        send_one(producer, record, &mut outcome.queue_full_waits)
            .map_err(|error| format!("send #{sequence}: {error}"))?;
        outcome.sent += 1;
        // Delivery reports are timed when they are served, so they are
        // served at least every millisecond (and every 1024 sends).
        if outcome.sent % SENDS_PER_EVENT_POLL == 0
            || (outcome.sent % 64 == 0 && last_served.elapsed() >= EVENT_POLL_INTERVAL)
        {
            serve_events(producer, Duration::ZERO);
            last_served = Instant::now();
        }
        sequence += step;
    }
    // The last transaction is still open (one begins before each batch).
    if batch > 0 && outcome.sent > 0 && !commit(producer, &mut outcome.commit_ms) {
        return Ok(Some(outcome.sent));
    }
    Ok(None)
}

/// Commits the open transaction (if any) and begins the next one; false
/// when either failed (the error is noted in the stats).
fn next_transaction(producer: &BaseProducer<DeliveryStats>, outcome: &mut ProducerOutcome) -> bool {
    if outcome.sent > 0 && !commit(producer, &mut outcome.commit_ms) {
        return false;
    }
    match producer.begin_transaction() {
        Ok(()) => true,
        Err(error) => {
            producer
                .context()
                .note_error(format!("begin_transaction: {error}"));
            false
        }
    }
}

/// In open loop, waits until message `sequence` is due, serving delivery
/// reports while it waits.
fn pace(producer: &BaseProducer<DeliveryStats>, schedule: &Schedule, sequence: u64) {
    loop {
        let wait = schedule.wait_for(sequence);
        if wait.is_zero() {
            return;
        }
        if wait >= Duration::from_millis(1) {
            serve_events(producer, Duration::from_millis(wait.as_millis() as u64));
        } else {
            serve_events(producer, Duration::ZERO);
            std::thread::sleep(schedule.wait_for(sequence));
        }
    }
}

/// Hands one record to librdkafka, waiting while its queue is full.
fn send_one<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer<DeliveryStats>,
    mut record: BaseRecord<'_, K, [u8]>,
    queue_full_waits: &mut u64,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                *queue_full_waits += 1;
                record = back;
                serve_events(producer, Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error.to_string()),
        }
    }
}

/// Commits the open transaction; false if that failed.
///
/// rdkafka's `commit_transaction` flushes first, and its flush polls in
/// 100 ms steps that never end early, which would add about 100 ms to every
/// commit; so the messages are flushed here with [`serve_events`] first.
fn commit(producer: &BaseProducer<DeliveryStats>, commit_ms: &mut Vec<f64>) -> bool {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(COMMIT_TIMEOUT_S);
    while producer.flush(Duration::ZERO).is_err() && Instant::now() < deadline {
        serve_events(producer, Duration::from_millis(1));
    }
    match producer.commit_transaction(Duration::from_secs(COMMIT_TIMEOUT_S)) {
        Ok(()) => {
            commit_ms.push(started.elapsed().as_secs_f64() * 1e3);
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
