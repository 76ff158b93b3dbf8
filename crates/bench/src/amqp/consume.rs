//! `weir bench amqp consume`: consumers with prefetch and acks
//! (`multiple` every `--ack-every`), checking every message once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::json;
use tokio::sync::Barrier;

use super::{connect, declare_queues, AmqpArgs, AmqpConsumerArgs, ConsumeArgs};
use crate::check::ConsumeCheck;
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, validate_clients, watch_broker};

/// What every consumer shares.
#[derive(Clone)]
pub(super) struct ConsumeRun {
    pub(super) amqp: AmqpArgs,
    pub(super) consumer: AmqpConsumerArgs,
    pub(super) size_bytes: usize,
    pub(super) target: u64,
    pub(super) total: Arc<AtomicU64>,
    pub(super) idle_timeout_s: u64,
}

/// What one consumer did.
pub(super) struct ConsumeOutcome {
    pub(super) check: ConsumeCheck,
    pub(super) redelivered: u64,
    pub(super) last_message: Option<Instant>,
    pub(super) timed_out: bool,
    pub(super) first_error: Option<String>,
}

pub(super) async fn consume(args: ConsumeArgs) -> Result<Report, String> {
    args.amqp.validate()?;
    validate_clients("--consumers", args.consumer.consumers)?;
    let setup = connect(&args.amqp).await?;
    let channel = setup
        .create_channel()
        .await
        .map_err(|error| format!("channel: {error}"))?;
    let depth = declare_queues(&channel, &args.amqp, false).await?;
    let target = args.messages.unwrap_or(depth);
    let progress = Progress::start("read", Some(target), !args.output.no_progress);
    let run = ConsumeRun {
        amqp: args.amqp.clone(),
        consumer: args.consumer.clone(),
        size_bytes: args.size_bytes,
        target,
        total: progress.counter(),
        idle_timeout_s: args.output.idle_timeout_s,
    };
    let ready = Arc::new(Barrier::new(args.consumer.consumers + 1));
    let tasks = spawn_consumers(&run, &ready);
    ready.wait().await;
    let watch = watch_broker(&args.output)?;
    let cpu_before = client_cpu_s();
    let started = Instant::now();
    let outcomes = join_consumers(tasks).await?;
    let cpu_s = client_cpu_s() - cpu_before;
    progress.finish();
    let _ = setup.close(200, "bye".into()).await;
    let mut report = consume_report("amqp consume", outcomes, target, started);
    report.latency_us = None;
    report.set_client_cpu_s(cpu_s);
    let broker = watch.map(|watch| watch.finish(report.messages));
    finish_report(&mut report, &args.output, &args.amqp.broker, &args, broker);
    Ok(report)
}

type ConsumeTask = tokio::task::JoinHandle<Result<ConsumeOutcome, String>>;

pub(super) fn spawn_consumers(run: &ConsumeRun, ready: &Arc<Barrier>) -> Vec<ConsumeTask> {
    (0..run.consumer.consumers)
        .map(|index| {
            let (run, ready) = (run.clone(), Arc::clone(ready));
            tokio::spawn(async move { consumer_task(&run, index, &ready).await })
        })
        .collect()
}

pub(super) async fn join_consumers(tasks: Vec<ConsumeTask>) -> Result<Vec<ConsumeOutcome>, String> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(
            task.await
                .map_err(|error| format!("consumer task: {error}"))??,
        );
    }
    Ok(outcomes)
}

pub(super) fn consume_report(
    workload: &str,
    outcomes: Vec<ConsumeOutcome>,
    target: u64,
    started: Instant,
) -> Report {
    let mut check = ConsumeCheck::default();
    let (mut redelivered, mut timed_out, mut first_error, mut last) = (0, false, None, None);
    for outcome in outcomes {
        check.merge(outcome.check);
        redelivered += outcome.redelivered;
        timed_out |= outcome.timed_out;
        first_error = first_error.or(outcome.first_error);
        last = last.max(outcome.last_message);
    }
    let elapsed = last.map_or(Duration::ZERO, |last: Instant| {
        last.saturating_duration_since(started)
    });
    let mut report = Report::new(workload, check.received, check.bytes, elapsed.as_secs_f64());
    report.latency_us = check.latency.summary();
    report.details = check.details(Some(target));
    let missing = report.details["missing"].as_u64().unwrap_or(0);
    report.complete =
        !timed_out && check.received == target && check.duplicates == 0 && missing == 0;
    if let Some(details) = report.details.as_object_mut() {
        details.insert("redelivered".into(), json!(redelivered));
        details.insert("timed_out".into(), json!(timed_out));
        details.insert("first_error".into(), json!(first_error));
    }
    report
}

/// One consumer: connect, qos, consume queue `index mod queues`, meet the
/// others at `ready`, then read until all together have the target.
async fn consumer_task(
    run: &ConsumeRun,
    index: usize,
    ready: &Barrier,
) -> Result<ConsumeOutcome, String> {
    let opened = open_consumer(run, index).await;
    ready.wait().await;
    let (connection, channel, mut consumer) = opened?;
    let mut outcome = ConsumeOutcome {
        check: ConsumeCheck::default(),
        redelivered: 0,
        last_message: None,
        timed_out: false,
        first_error: None,
    };
    let queue_index = (index % run.amqp.queue_count) as i32;
    let mut unacked: u64 = 0;
    let mut last_tag = None;
    let mut last_progress = Instant::now();
    while run.total.load(Relaxed) < run.target {
        let delivery = match tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
        {
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(error))) => {
                outcome.first_error.get_or_insert(error.to_string());
                break;
            }
            Ok(None) => break,
            Err(_) if last_progress.elapsed() > Duration::from_secs(run.idle_timeout_s) => {
                outcome.timed_out = true;
                break;
            }
            Err(_) => continue,
        };
        last_progress = Instant::now();
        outcome.redelivered += u64::from(delivery.redelivered);
        let tag = delivery.delivery_tag;
        if outcome
            .check
            .observe(queue_index, tag as i64, &delivery.data, run.size_bytes)
        {
            run.total.fetch_add(1, Relaxed);
        }
        outcome.last_message = Some(Instant::now());
        if run.consumer.ack_every > 0 {
            unacked += 1;
            last_tag = Some(tag);
            if unacked >= run.consumer.ack_every {
                ack_through(&channel, tag).await?;
                unacked = 0;
            }
        }
    }
    if let (true, Some(tag)) = (unacked > 0, last_tag) {
        ack_through(&channel, tag).await?;
    }
    let _ = connection.close(200, "bye".into()).await;
    Ok(outcome)
}

async fn ack_through(channel: &Channel, tag: u64) -> Result<(), String> {
    channel
        .basic_ack(tag, BasicAckOptions { multiple: true })
        .await
        .map_err(|error| format!("basic.ack: {error}"))
}

async fn open_consumer(
    run: &ConsumeRun,
    index: usize,
) -> Result<(Connection, Channel, lapin::Consumer), String> {
    let connection = connect(&run.amqp).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| format!("channel: {error}"))?;
    channel
        .basic_qos(run.consumer.prefetch, BasicQosOptions::default())
        .await
        .map_err(|error| format!("basic.qos: {error}"))?;
    let queue = run.amqp.queue_name(index % run.amqp.queue_count);
    let options = BasicConsumeOptions {
        no_ack: run.consumer.ack_every == 0,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            format!("weir-bench-{index}").as_str().into(),
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|error| format!("basic.consume {queue}: {error}"))?;
    Ok((connection, channel, consumer))
}
