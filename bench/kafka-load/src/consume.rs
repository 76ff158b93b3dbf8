//! `kafka-load consume`: read N messages of one partition (or of all of
//! them) from the first offset, with no consumer group, and check what came
//! back against the sequence numbers `produce` wrote.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::{
    apply_properties, base_config, merge, process_cpu_s, rates, read_sequence, Common, Workload,
    WARMUP_SEQUENCE,
};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    workload: Workload,
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

/// What the consumer saw, beyond the count.
///
/// Offsets are checked per partition: a gap is expected where a
/// transaction's commit marker sits, a regression never is. Sequence numbers
/// are checked three ways: exactly +1 from one message to the next
/// (`sequence_breaks`, meaningful when one partition was read), increasing
/// within each partition (`sequence_regressions`), and each of 0..N seen
/// exactly once (`duplicates`, `missing`, `out_of_range`).
struct ConsumeCheck {
    expected: u64,
    received: u64,
    /// `produce`'s warm-up messages, read but not counted.
    warmups: u64,
    bytes: u64,
    wrong_size: u64,
    offset_gaps: u64,
    offset_regressions: u64,
    sequence_breaks: u64,
    sequence_regressions: u64,
    duplicates: u64,
    out_of_range: u64,
    /// Values too short to carry a sequence number (not counted missing).
    unsequenced: u64,
    next_offset: HashMap<i32, i64>,
    last_sequence: HashMap<i32, u64>,
    next_sequence: Option<u64>,
    /// One bit per expected sequence number, set when it arrives.
    seen: Vec<u64>,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

impl ConsumeCheck {
    fn new(expected: u64) -> ConsumeCheck {
        ConsumeCheck {
            expected,
            received: 0,
            warmups: 0,
            bytes: 0,
            wrong_size: 0,
            offset_gaps: 0,
            offset_regressions: 0,
            sequence_breaks: 0,
            sequence_regressions: 0,
            duplicates: 0,
            out_of_range: 0,
            unsequenced: 0,
            next_offset: HashMap::new(),
            last_sequence: HashMap::new(),
            next_sequence: None,
            seen: vec![0; expected.div_ceil(64) as usize],
            first_offset: None,
            last_offset: None,
        }
    }

    fn observe(&mut self, partition: i32, offset: i64, value: &[u8], expected_size: usize) {
        if read_sequence(value) == Some(WARMUP_SEQUENCE) {
            self.warmups += 1;
            self.next_offset.insert(partition, offset + 1);
            return;
        }
        self.received += 1;
        self.bytes += value.len() as u64;
        if expected_size != 0 && value.len() != expected_size {
            self.wrong_size += 1;
        }
        self.first_offset.get_or_insert(offset);
        self.last_offset = Some(offset);
        if let Some(next) = self.next_offset.insert(partition, offset + 1) {
            if offset > next {
                self.offset_gaps += 1;
            } else if offset < next {
                self.offset_regressions += 1;
            }
        }
        let Some(sequence) = read_sequence(value) else {
            self.unsequenced += 1;
            return;
        };
        if self.next_sequence.is_some_and(|next| next != sequence) {
            self.sequence_breaks += 1;
        }
        self.next_sequence = Some(sequence.wrapping_add(1));
        if let Some(last) = self.last_sequence.insert(partition, sequence) {
            if sequence <= last {
                self.sequence_regressions += 1;
            }
        }
        if sequence >= self.expected {
            self.out_of_range += 1;
            return;
        }
        let bit = 1u64 << (sequence % 64);
        if let Some(bits) = self.seen.get_mut((sequence / 64) as usize) {
            if *bits & bit != 0 {
                self.duplicates += 1;
            }
            *bits |= bit;
        }
    }

    fn distinct(&self) -> u64 {
        self.seen
            .iter()
            .map(|bits| u64::from(bits.count_ones()))
            .sum()
    }
}

/// The partitions to read: the one asked for, or all of the topic's.
fn partitions_to_read(
    consumer: &BaseConsumer,
    common: &Common,
    workload: &Workload,
) -> Result<Vec<i32>, String> {
    if workload.partition >= 0 {
        return Ok(vec![workload.partition]);
    }
    let metadata = consumer
        .fetch_metadata(Some(&common.topic), Duration::from_secs(30))
        .map_err(|error| format!("metadata: {error}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|topic| topic.name() == common.topic)
        .flat_map(|topic| topic.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic {} has no partitions", common.topic));
    }
    Ok(partitions)
}

fn consumer_config(args: &ConsumeArgs) -> rdkafka::config::ClientConfig {
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
    config
}

pub fn consume(args: &ConsumeArgs) -> Result<Value, String> {
    let common = &args.common;
    let workload = &args.workload;
    let consumer: BaseConsumer = consumer_config(args)
        .create()
        .map_err(|error| format!("consumer: {error}"))?;
    let partitions = partitions_to_read(&consumer, common, workload)?;
    let (mut low, mut high) = (0, 0);
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        let (partition_low, partition_high) = consumer
            .fetch_watermarks(&common.topic, partition, Duration::from_secs(30))
            .map_err(|error| format!("watermarks: {error}"))?;
        low += partition_low;
        high += partition_high;
        assignment
            .add_partition_offset(&common.topic, partition, Offset::Beginning)
            .map_err(|error| format!("assignment: {error}"))?;
    }

    let mut check = ConsumeCheck::new(workload.messages);
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
    while check.received < workload.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                first_message_s.get_or_insert_with(|| started.elapsed().as_secs_f64());
                let value = message.payload().unwrap_or(&[]);
                check.observe(message.partition(), message.offset(), value, args.size);
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
        workload,
        check.received,
        average_size,
        elapsed,
        cpu_s,
    );
    let missing = workload
        .messages
        .saturating_sub(check.distinct() + check.unsequenced);
    let extra = json!({
        "complete": check.received == workload.messages && !timed_out
            && check.duplicates == 0 && missing == 0,
        "client_defaults": args.client_defaults,
        "partitions_read": partitions.len(),
        "timed_out": timed_out,
        "payload_bytes": check.bytes,
        "warmup_messages_skipped": check.warmups,
        "low_watermark": low,
        "high_watermark": high,
        "first_offset": check.first_offset,
        "last_offset": check.last_offset,
        "first_message_s": first_message_s,
        "wrong_size": check.wrong_size,
        "offset_gaps": check.offset_gaps,
        "offset_regressions": check.offset_regressions,
        "sequence_breaks": check.sequence_breaks,
        "sequence_regressions": check.sequence_regressions,
        "duplicates": check.duplicates,
        "missing": missing,
        "out_of_range": check.out_of_range,
        "errors": errors,
        "first_error": first_error,
    });
    merge(&mut report, extra);
    Ok(report)
}
