//! `weir bench kafka consume`: read a filled topic from its first offset
//! with one or more consumers (assign, no group), and check what came back
//! against the sequence numbers the producer wrote.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use super::{consumer_config, ConsumerArgs, KafkaArgs, REQUEST_TIMEOUT_S};
use crate::check::ConsumeCheck;
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, validate_clients, watch_broker, OutputArgs};

/// Arguments of `weir bench kafka consume`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct ConsumeArgs {
    /// Broker and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Messages to read in all; default: everything up to the high
    /// watermarks at the start.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Expected value size; other sizes are counted as wrong. 0 = any.
    #[arg(long = "size", short = 's', default_value_t = 0)]
    pub size_bytes: usize,
    /// Partition to read; -1 = all of the topic's partitions.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub partition: i32,
    /// Consumers (threads, each its own client); partition p goes to
    /// consumer p mod N.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Fetch settings.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Output and broker measurement.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One consumer's partitions and where each ends.
pub struct Assignment {
    /// `(partition, low watermark, high watermark)`.
    pub partitions: Vec<(i32, i64, i64)>,
}

impl Assignment {
    /// Messages between the watermarks.
    pub fn backlog(&self) -> u64 {
        self.partitions
            .iter()
            .map(|&(_, low, high)| (high - low).max(0) as u64)
            .sum()
    }
}

/// Reads the topic's partitions and their watermarks, dealt out to
/// `consumers` consumers (partition p to consumer p mod N).
///
/// # Errors
///
/// When metadata or watermarks cannot be read.
pub fn plan_assignments(
    kafka: &KafkaArgs,
    consumer: &ConsumerArgs,
    partition: i32,
    consumers: usize,
) -> Result<Vec<Assignment>, String> {
    let client: BaseConsumer = consumer_config(kafka, consumer)
        .create()
        .map_err(|error| format!("consumer: {error}"))?;
    let timeout = Duration::from_secs(REQUEST_TIMEOUT_S);
    let partitions: Vec<i32> = if partition >= 0 {
        vec![partition]
    } else {
        let metadata = client
            .fetch_metadata(Some(&kafka.topic), timeout)
            .map_err(|error| {
                format!(
                    "metadata: {error} (is a broker listening on {}?)",
                    kafka.broker
                )
            })?;
        metadata
            .topics()
            .iter()
            .filter(|topic| topic.name() == kafka.topic)
            .flat_map(|topic| topic.partitions().iter().map(|found| found.id()))
            .collect()
    };
    if partitions.is_empty() {
        return Err(format!("topic {} has no partitions", kafka.topic));
    }
    let mut assignments: Vec<Assignment> = (0..consumers.min(partitions.len()))
        .map(|_| Assignment {
            partitions: Vec::new(),
        })
        .collect();
    let dealt = assignments.len();
    for (index, &id) in partitions.iter().enumerate() {
        let (low, high) = client
            .fetch_watermarks(&kafka.topic, id, timeout)
            .map_err(|error| format!("watermarks of partition {id}: {error}"))?;
        assignments[index % dealt].partitions.push((id, low, high));
    }
    Ok(assignments)
}

/// Runs `kafka consume`.
///
/// # Errors
///
/// Bad arguments, or a broker that cannot be reached.
pub fn run(args: &ConsumeArgs) -> Result<Report, String> {
    validate_clients("--consumers", args.consumers)?;
    if args.messages == Some(0) {
        return Err("--messages must be at least 1".into());
    }
    let assignments =
        plan_assignments(&args.kafka, &args.consumer, args.partition, args.consumers)?;
    let backlog: u64 = assignments.iter().map(Assignment::backlog).sum();
    let target = args.messages.unwrap_or(backlog);
    let progress = Progress::start("read", Some(target), !args.output.no_progress);
    let watch = watch_broker(&args.output)?;
    let cpu_before = client_cpu_s();
    let started = Instant::now();
    let plan = ReadPlan {
        kafka: args.kafka.clone(),
        consumer: args.consumer.clone(),
        size_bytes: args.size_bytes,
        target: args.messages,
        total: progress.counter(),
        idle_timeout_s: args.output.idle_timeout_s,
        from_start: true,
    };
    let outcomes = read_all(&plan, assignments)?;
    let cpu_s = client_cpu_s() - cpu_before;
    progress.finish();
    let mut report = consume_report(
        "kafka consume",
        outcomes,
        args.messages,
        Some(backlog),
        started,
    );
    report.set_client_cpu_s(cpu_s);
    // Latency in a plain consume is the age of each message, not a
    // measure of the broker; it stays in the histogram of `kafka e2e` only.
    report.latency_us = None;
    let broker = watch.map(|watch| watch.finish(report.messages));
    finish_report(&mut report, &args.output, &args.kafka.broker, args, broker);
    Ok(report)
}

/// What every reading thread shares.
#[derive(Clone)]
pub struct ReadPlan {
    /// Broker and topic.
    pub kafka: KafkaArgs,
    /// Fetch settings.
    pub consumer: ConsumerArgs,
    /// Expected value size, 0 = any.
    pub size_bytes: usize,
    /// Stop once all consumers together read this many; `None` = read each
    /// partition up to its high watermark at the start.
    pub target: Option<u64>,
    /// Messages read by all consumers (also the progress counter).
    pub total: Arc<AtomicU64>,
    /// Give up after this long without a message.
    pub idle_timeout_s: u64,
    /// Start at the low watermark (consume) or the high one (e2e).
    pub from_start: bool,
}

/// What one consumer thread did.
pub struct ReadOutcome {
    /// What it saw.
    pub check: ConsumeCheck,
    /// When it read its last message.
    pub last_message: Option<Instant>,
    /// It gave up waiting.
    pub timed_out: bool,
    /// Consumer errors seen.
    pub errors: u64,
    /// The first of them.
    pub first_error: Option<String>,
}

/// Reads with one thread per assignment and waits for all of them.
///
/// # Errors
///
/// When a consumer cannot be created or assigned.
pub fn read_all(plan: &ReadPlan, assignments: Vec<Assignment>) -> Result<Vec<ReadOutcome>, String> {
    let threads: Vec<_> = assignments
        .into_iter()
        .map(|assignment| {
            let plan = plan.clone();
            std::thread::spawn(move || read_partitions(&plan, &assignment))
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| {
            thread
                .join()
                .map_err(|_| "a consumer thread panicked".to_string())?
        })
        .collect()
}

/// Builds the report of a set of consumers.
///
/// `expected` is the count asked for; `backlog` (when no count was asked)
/// is what lay between the watermarks, warm-up messages included.
pub fn consume_report(
    workload: &str,
    outcomes: Vec<ReadOutcome>,
    expected: Option<u64>,
    backlog: Option<u64>,
    started: Instant,
) -> Report {
    let mut check = ConsumeCheck::default();
    let mut errors = 0;
    let mut first_error = None;
    let mut timed_out = false;
    let mut last = None;
    for outcome in outcomes {
        check.merge(outcome.check);
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
        timed_out |= outcome.timed_out;
        last = last.max(outcome.last_message);
    }
    let expected = expected.or(backlog.map(|backlog| backlog.saturating_sub(check.warmups)));
    let elapsed = last.map_or(Duration::ZERO, |last: Instant| {
        last.saturating_duration_since(started)
    });
    let mut report = Report::new(workload, check.received, check.bytes, elapsed.as_secs_f64());
    let details = check.details(expected);
    let missing = details["missing"].as_u64().unwrap_or(0);
    report.complete = !timed_out
        && expected.is_none_or(|expected| check.received == expected)
        && check.duplicates == 0
        && missing == 0;
    report.latency_us = check.latency.summary();
    report.details = details;
    if let Some(details) = report.details.as_object_mut() {
        details.insert("timed_out".into(), json!(timed_out));
        details.insert("errors".into(), json!(errors));
        details.insert("first_error".into(), json!(first_error));
    }
    report
}

fn read_partitions(plan: &ReadPlan, assignment: &Assignment) -> Result<ReadOutcome, String> {
    let consumer: BaseConsumer = consumer_config(&plan.kafka, &plan.consumer)
        .create()
        .map_err(|error| format!("consumer: {error}"))?;
    let mut list = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for &(partition, low, high) in &assignment.partitions {
        let start = if plan.from_start { low } else { high };
        list.add_partition_offset(&plan.kafka.topic, partition, Offset::Offset(start))
            .map_err(|error| format!("assignment: {error}"))?;
        if high > start {
            remaining.insert(partition, high);
        }
    }
    consumer
        .assign(&list)
        .map_err(|error| format!("assign: {error}"))?;
    let mut outcome = ReadOutcome {
        check: ConsumeCheck::default(),
        last_message: None,
        timed_out: false,
        errors: 0,
        first_error: None,
    };
    let mut last_progress = Instant::now();
    while !done(plan, &remaining) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                let value = message.payload().unwrap_or(&[]);
                if outcome
                    .check
                    .observe(partition, offset, value, plan.size_bytes)
                {
                    plan.total.fetch_add(1, Relaxed);
                }
                if remaining
                    .get(&partition)
                    .is_some_and(|&high| offset + 1 >= high)
                {
                    remaining.remove(&partition);
                }
                outcome.last_message = Some(Instant::now());
                last_progress = Instant::now();
            }
            Some(Err(error)) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| error.to_string());
            }
            None if last_progress.elapsed() > Duration::from_secs(plan.idle_timeout_s) => {
                outcome.timed_out = true;
                break;
            }
            None => {}
        }
    }
    Ok(outcome)
}

fn done(plan: &ReadPlan, remaining: &HashMap<i32, i64>) -> bool {
    match plan.target {
        Some(target) => plan.total.load(Relaxed) >= target,
        None => remaining.is_empty(),
    }
}
