//! `weir bench kafka e2e`: producers (open loop at `--rate`, or closed
//! loop) and consumers in one process; the latency of each message runs
//! from the send time carried in its value (the scheduled time, in open
//! loop) to when a consumer received it.

use std::sync::{Arc, Barrier, OnceLock};

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::consume::{consume_report, plan_assignments, read_all, ReadPlan};
use super::produce::{
    finished_at, join_producers, prepare_topic, producer_report, spawn_producers, SharedRun,
};
use super::{ConsumerArgs, KafkaArgs, ProducerArgs};
use crate::pacing::Schedule;
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, validate_clients, watch_broker, LoadArgs, OutputArgs};

/// Arguments of `weir bench kafka e2e`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct E2eArgs {
    /// Broker and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// How much and how fast (a count, or --duration-s with --rate).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Producer settings.
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Consumers (threads); partition p goes to consumer p mod N.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Consumer fetch settings.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Output and broker measurement.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `kafka e2e`.
///
/// # Errors
///
/// Bad arguments, or a broker that cannot be reached.
pub fn run(args: &E2eArgs) -> Result<Report, String> {
    args.load.validate()?;
    args.producer.validate()?;
    validate_clients("--consumers", args.consumers)?;
    let expected = args
        .load
        .message_count()
        .ok_or("kafka e2e needs a message count: --messages, or --duration-s with --rate")?;
    prepare_topic(&args.kafka, &args.producer)?;
    // The high watermarks now are where the consumers start.
    let assignments = plan_assignments(&args.kafka, &args.consumer, -1, args.consumers)?;
    let progress = Progress::start("received", Some(expected), !args.output.no_progress);
    let plan = ReadPlan {
        kafka: args.kafka.clone(),
        consumer: args.consumer.clone(),
        size_bytes: args.load.size_bytes,
        target: Some(expected),
        total: progress.counter(),
        idle_timeout_s: args.output.idle_timeout_s,
        from_start: false,
    };
    let readers = std::thread::spawn(move || read_all(&plan, assignments));
    let shared = Arc::new(SharedRun {
        kafka: args.kafka.clone(),
        load: args.load.clone(),
        producer: args.producer.clone(),
        idle_timeout_s: args.output.idle_timeout_s,
        progress: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        barrier: Barrier::new(args.producer.producers + 1),
        schedule: OnceLock::new(),
    });
    let producers = spawn_producers(&shared);
    shared.barrier.wait();
    let watch = watch_broker(&args.output)?;
    let cpu_before = client_cpu_s();
    let schedule = *shared
        .schedule
        .get_or_init(|| Schedule::start(args.load.rate_per_s));
    shared.barrier.wait();
    let produced = join_producers(producers)?;
    let read = readers
        .join()
        .map_err(|_| "the consumers panicked".to_string())??;
    let cpu_s = client_cpu_s() - cpu_before;
    progress.finish();
    let produce_elapsed = finished_at(&produced, schedule.started());
    let produce = producer_report("kafka produce", &args.load, &produced, produce_elapsed);
    let mut report = consume_report("kafka e2e", read, Some(expected), None, schedule.started());
    report.mode = args.load.mode().into();
    report.complete &= produce.complete;
    report.set_client_cpu_s(cpu_s);
    if let Some(details) = report.details.as_object_mut() {
        details.insert(
            "produce_rate_msgs_per_s".into(),
            json!(produce.rate_msgs_per_s),
        );
        details.insert("produce_latency_us".into(), json!(produce.latency_us));
        details.insert("produce".into(), produce.details);
    }
    let broker = watch.map(|watch| watch.finish(report.messages));
    finish_report(&mut report, &args.output, &args.kafka.broker, args, broker);
    Ok(report)
}
