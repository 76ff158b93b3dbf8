//! AMQP 0-9-1 workloads on lapin: `publish`, `consume` and `e2e`, against
//! any AMQP broker (RabbitMQ, Weir, …).
//!
//! * `publish` — N publishers, each on its own connection and channel,
//!   persistent messages to durable queues through the default exchange,
//!   with publisher confirms: at most `--confirm-window` unconfirmed at a
//!   time. In open loop (`--rate`) each confirm's latency runs from the
//!   message's scheduled send time.
//! * `consume` — N consumers with `basic.qos` prefetch and manual acks
//!   (`multiple` every `--ack-every` messages), until the queues' depth at
//!   the start (or `--messages`) is read.
//! * `e2e` — both at once; latency from the send time in each message to
//!   its delivery.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{ArgAction, Args, Subcommand};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Barrier;

use crate::check::ConsumeCheck;
use crate::histogram::LatencyHistogram;
use crate::pacing::Schedule;
use crate::payload::{filler, latency_us_since, stamp};
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, validate_clients, watch_broker, LoadArgs, OutputArgs};

/// Largest `--confirm-window`.
pub const CONFIRM_WINDOW_MAX: usize = 1_000_000;

/// Largest `--queues`.
pub const QUEUES_MAX: usize = 10_000;

/// `weir bench amqp …`.
#[derive(Debug, Subcommand)]
pub enum AmqpCommand {
    /// Publish persistent messages with confirms (closed loop, or open loop
    /// with --rate).
    Publish(PublishArgs),
    /// Consume what the queues hold, with prefetch and manual acks.
    Consume(ConsumeArgs),
    /// Publish at a rate and consume at once; latency from send to delivery.
    E2e(E2eArgs),
}

/// Runs one AMQP workload.
///
/// # Errors
///
/// Bad arguments, or a broker that cannot be reached.
pub fn run(command: AmqpCommand) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |cores| cores.get()))
        .enable_all()
        .build()
        .map_err(|error| format!("tokio runtime: {error}"))?;
    match command {
        AmqpCommand::Publish(args) => runtime.block_on(publish(args)),
        AmqpCommand::Consume(args) => runtime.block_on(consume(args)),
        AmqpCommand::E2e(args) => runtime.block_on(e2e(args)),
    }
}

/// Where to connect and which queues.
#[derive(Clone, Debug, Args, Serialize)]
pub struct AmqpArgs {
    /// Broker: host:port (user guest/guest, vhost /) or a full
    /// amqp://user:password@host:port/vhost URI.
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub broker: String,
    /// Queue name (with --queues N > 1: <queue>-0 … <queue>-(N-1)).
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// Queues; messages go round-robin over them, consumer c reads queue
    /// c mod N.
    #[arg(long = "queues", default_value_t = 1)]
    pub queue_count: usize,
    /// Declare the queues durable.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub durable: bool,
    /// x-queue-type of the declared queues: classic, quorum, stream.
    #[arg(long, default_value = "classic")]
    pub queue_type: String,
    /// Purge the queues before the run.
    #[arg(long)]
    pub purge: bool,
}

impl AmqpArgs {
    fn validate(&self) -> Result<(), String> {
        if self.queue_count == 0 || self.queue_count > QUEUES_MAX {
            return Err(format!(
                "--queues must be 1..={QUEUES_MAX}, got {}",
                self.queue_count
            ));
        }
        if !["classic", "quorum", "stream"].contains(&self.queue_type.as_str()) {
            return Err(format!(
                "--queue-type must be classic, quorum or stream, got {}",
                self.queue_type
            ));
        }
        Ok(())
    }

    /// The AMQP URI of `--broker`.
    pub fn uri(&self) -> String {
        if self.broker.starts_with("amqp://") || self.broker.starts_with("amqps://") {
            self.broker.clone()
        } else {
            format!("amqp://guest:guest@{}/%2f", self.broker)
        }
    }

    /// The name of queue `index`.
    pub fn queue_name(&self, index: usize) -> String {
        if self.queue_count == 1 {
            self.queue.clone()
        } else {
            format!("{}-{index}", self.queue)
        }
    }
}

/// Publisher settings.
#[derive(Clone, Debug, Args, Serialize)]
pub struct PublisherArgs {
    /// Publishers (each its own connection and channel).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publisher confirms: at most this many messages unconfirmed per
    /// publisher. 0 = no confirms (fire and forget).
    #[arg(long, default_value_t = 1000)]
    pub confirm_window: usize,
    /// Persistent messages (delivery mode 2).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub persistent: bool,
}

/// Consumer settings.
#[derive(Clone, Debug, Args, Serialize)]
pub struct AmqpConsumerArgs {
    /// Consumers (each its own connection and channel).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// basic.qos prefetch count per consumer (0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Ack with multiple=true every N messages; 1 = each message on its
    /// own; 0 = no acks (auto-ack consumer).
    #[arg(long, default_value_t = 100)]
    pub ack_every: u64,
}

/// Arguments of `weir bench amqp publish`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct PublishArgs {
    /// Broker and queues.
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// How much and how fast.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publisher settings.
    #[command(flatten)]
    pub publisher: PublisherArgs,
    /// Output and broker measurement.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `weir bench amqp consume`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct ConsumeArgs {
    /// Broker and queues.
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Messages to read in all; default: the queues' depth at the start.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Expected message size; other sizes are counted as wrong. 0 = any.
    #[arg(long = "size", short = 's', default_value_t = 0)]
    pub size_bytes: usize,
    /// Consumer settings.
    #[command(flatten)]
    pub consumer: AmqpConsumerArgs,
    /// Output and broker measurement.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `weir bench amqp e2e`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct E2eArgs {
    /// Broker and queues.
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// How much and how fast (a count, or --duration-s with --rate).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publisher settings.
    #[command(flatten)]
    pub publisher: PublisherArgs,
    /// Consumer settings.
    #[command(flatten)]
    pub consumer: AmqpConsumerArgs,
    /// Output and broker measurement.
    #[command(flatten)]
    pub output: OutputArgs,
}

fn validate_publisher(publisher: &PublisherArgs) -> Result<(), String> {
    validate_clients("--publishers", publisher.publishers)?;
    if publisher.confirm_window > CONFIRM_WINDOW_MAX {
        return Err(format!(
            "--confirm-window must be 0..={CONFIRM_WINDOW_MAX}, got {}",
            publisher.confirm_window
        ));
    }
    Ok(())
}

/// Opens a connection, with a clear message when nothing listens.
async fn connect(amqp: &AmqpArgs) -> Result<Connection, String> {
    Connection::connect(&amqp.uri(), ConnectionProperties::default())
        .await
        .map_err(|error| format!("cannot connect to AMQP broker {}: {error}", amqp.broker))
}

/// Declares every queue (and purges them with --purge); returns the sum of
/// their depths.
async fn declare_queues(channel: &Channel, amqp: &AmqpArgs, purge: bool) -> Result<u64, String> {
    let mut arguments = FieldTable::default();
    if amqp.queue_type != "classic" {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(amqp.queue_type.as_str().into()),
        );
    }
    let options = QueueDeclareOptions {
        durable: amqp.durable,
        ..QueueDeclareOptions::default()
    };
    let mut depth = 0;
    for index in 0..amqp.queue_count {
        let name = amqp.queue_name(index);
        let queue = channel
            .queue_declare(name.as_str().into(), options, arguments.clone())
            .await
            .map_err(|error| format!("queue.declare {name}: {error}"))?;
        depth += u64::from(queue.message_count());
        if purge {
            channel
                .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(|error| format!("queue.purge {name}: {error}"))?;
            depth = 0;
        }
    }
    Ok(depth)
}

/// What one publisher did.
#[derive(Default)]
struct PublishOutcome {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    first_error: Option<String>,
    latency: LatencyHistogram,
    timed_out: bool,
    finished: Option<Instant>,
}

/// What every publisher shares.
struct PublishRun {
    amqp: AmqpArgs,
    load: LoadArgs,
    publisher: PublisherArgs,
    idle_timeout_s: u64,
    progress: Arc<AtomicU64>,
    barrier: Barrier,
    schedule: OnceLock<Schedule>,
}

async fn publish(args: PublishArgs) -> Result<Report, String> {
    args.load.validate()?;
    args.amqp.validate()?;
    validate_publisher(&args.publisher)?;
    let setup = connect(&args.amqp).await?;
    let channel = setup
        .create_channel()
        .await
        .map_err(|error| format!("channel: {error}"))?;
    declare_queues(&channel, &args.amqp, args.amqp.purge).await?;
    let progress = Progress::start(
        "confirmed",
        args.load.message_count(),
        !args.output.no_progress,
    );
    let run = Arc::new(PublishRun {
        amqp: args.amqp.clone(),
        load: args.load.clone(),
        publisher: args.publisher.clone(),
        idle_timeout_s: args.output.idle_timeout_s,
        progress: progress.counter(),
        barrier: Barrier::new(args.publisher.publishers + 1),
        schedule: OnceLock::new(),
    });
    let tasks = spawn_publishers(&run);
    run.barrier.wait().await;
    let watch = watch_broker(&args.output)?;
    let cpu_before = client_cpu_s();
    let schedule = *run
        .schedule
        .get_or_init(|| Schedule::start(args.load.rate_per_s));
    run.barrier.wait().await;
    let outcomes = join_publishers(tasks).await?;
    let cpu_s = client_cpu_s() - cpu_before;
    progress.finish();
    let _ = setup.close(200, "bye".into()).await;
    let mut report = publish_report(&args.load, &args.publisher, &outcomes, schedule.started());
    report.set_client_cpu_s(cpu_s);
    let broker = watch.map(|watch| watch.finish(report.messages));
    finish_report(&mut report, &args.output, &args.amqp.broker, &args, broker);
    Ok(report)
}

type PublishTask = tokio::task::JoinHandle<Result<PublishOutcome, String>>;

fn spawn_publishers(run: &Arc<PublishRun>) -> Vec<PublishTask> {
    (0..run.publisher.publishers)
        .map(|index| {
            let run = Arc::clone(run);
            tokio::spawn(async move { publisher_task(&run, index).await })
        })
        .collect()
}

async fn join_publishers(tasks: Vec<PublishTask>) -> Result<Vec<PublishOutcome>, String> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(
            task.await
                .map_err(|error| format!("publisher task: {error}"))??,
        );
    }
    Ok(outcomes)
}

fn publish_report(
    load: &LoadArgs,
    publisher: &PublisherArgs,
    outcomes: &[PublishOutcome],
    started: Instant,
) -> Report {
    let confirmed: u64 = outcomes.iter().map(|outcome| outcome.confirmed).sum();
    let sent: u64 = outcomes.iter().map(|outcome| outcome.sent).sum();
    let nacked: u64 = outcomes.iter().map(|outcome| outcome.nacked).sum();
    let timed_out = outcomes.iter().any(|outcome| outcome.timed_out);
    let mut latency = LatencyHistogram::new();
    for outcome in outcomes {
        latency.merge(&outcome.latency);
    }
    let last = outcomes.iter().filter_map(|outcome| outcome.finished).max();
    let elapsed = last.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(started)
    });
    let mut report = Report::new(
        "amqp publish",
        confirmed,
        confirmed * load.size_bytes as u64,
        elapsed.as_secs_f64(),
    );
    report.mode = load.mode().into();
    report.complete =
        confirmed == load.message_count().unwrap_or(sent) && nacked == 0 && !timed_out;
    report.latency_us = latency.summary();
    report.details = json!({
        "requested": load.message_count(),
        "sent": sent,
        "nacked": nacked,
        "timed_out": timed_out,
        "confirms": publisher.confirm_window > 0,
        "first_error": outcomes.iter().find_map(|outcome| outcome.first_error.clone()),
    });
    report
}

/// One publisher: connect, declare, wait for the start, then publish its
/// share (sequences `index`, `index + publishers`, …).
async fn publisher_task(run: &PublishRun, index: usize) -> Result<PublishOutcome, String> {
    let ready = open_publisher(run).await;
    run.barrier.wait().await;
    run.barrier.wait().await;
    let (connection, channel) = ready?;
    let schedule = *run.schedule.get().ok_or("the run's schedule was not set")?;
    let mut outcome = PublishOutcome::default();
    let result = publish_loop(run, &channel, index, &schedule, &mut outcome).await;
    outcome.finished = Some(Instant::now());
    if let Err(error) = result {
        outcome.first_error.get_or_insert(error);
    }
    let _ = connection.close(200, "bye".into()).await;
    Ok(outcome)
}

async fn open_publisher(run: &PublishRun) -> Result<(Connection, Channel), String> {
    let connection = connect(&run.amqp).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| format!("channel: {error}"))?;
    if run.publisher.confirm_window > 0 {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| format!("confirm.select: {error}"))?;
    }
    Ok((connection, channel))
}

type Confirm =
    std::pin::Pin<Box<dyn std::future::Future<Output = (lapin::Result<Confirmation>, u64)> + Send>>;

async fn publish_loop(
    run: &PublishRun,
    channel: &Channel,
    index: usize,
    schedule: &Schedule,
    outcome: &mut PublishOutcome,
) -> Result<(), String> {
    let count = run.load.message_count();
    // A count (also what --rate sends in --duration-s) wins over the clock.
    let deadline = run
        .load
        .duration()
        .filter(|_| count.is_none())
        .map(|duration| schedule.started() + duration);
    let window = run.publisher.confirm_window;
    let properties = if run.publisher.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut value = filler(run.load.size_bytes);
    let mut in_flight: FuturesUnordered<Confirm> = FuturesUnordered::new();
    let step = run.publisher.publishers as u64;
    let mut sequence = index as u64;
    while count.is_none_or(|count| sequence < count)
        && deadline.is_none_or(|deadline| Instant::now() < deadline)
    {
        let wait = schedule.wait_for(sequence);
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                Some(confirm) = in_flight.next(), if !in_flight.is_empty() => {
                    settle(run, outcome, confirm);
                    continue;
                }
            }
        }
        while window > 0 && in_flight.len() >= window {
            let confirm = next_confirm(&mut in_flight, run.idle_timeout_s).await?;
            settle(run, outcome, confirm);
        }
        let sent_ns = schedule.send_ns(sequence);
        stamp(&mut value, sequence, sent_ns);
        let queue = run
            .amqp
            .queue_name((sequence % run.amqp.queue_count as u64) as usize);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &value,
                properties.clone(),
            )
            .await
            .map_err(|error| format!("basic.publish: {error}"))?;
        outcome.sent += 1;
        if window > 0 {
            in_flight.push(Box::pin(confirm.map(move |result| (result, sent_ns))));
            while let Some(Some(confirm)) = in_flight.next().now_or_never() {
                settle(run, outcome, confirm);
            }
        } else {
            outcome.confirmed += 1;
            run.progress.fetch_add(1, Relaxed);
        }
        sequence += step;
    }
    while !in_flight.is_empty() {
        match next_confirm(&mut in_flight, run.idle_timeout_s).await {
            Ok(confirm) => settle(run, outcome, confirm),
            Err(error) => {
                outcome.timed_out = true;
                return Err(error);
            }
        }
    }
    Ok(())
}

async fn next_confirm(
    in_flight: &mut FuturesUnordered<Confirm>,
    idle_timeout_s: u64,
) -> Result<(lapin::Result<Confirmation>, u64), String> {
    match tokio::time::timeout(Duration::from_secs(idle_timeout_s), in_flight.next()).await {
        Ok(Some(confirm)) => Ok(confirm),
        Ok(None) => Err("no confirm outstanding".into()),
        Err(_) => Err(format!(
            "no confirm for {idle_timeout_s}s ({} outstanding)",
            in_flight.len()
        )),
    }
}

fn settle(
    run: &PublishRun,
    outcome: &mut PublishOutcome,
    (result, sent_ns): (lapin::Result<Confirmation>, u64),
) {
    match result {
        Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => {
            outcome.confirmed += 1;
            outcome.latency.record_us(latency_us_since(sent_ns));
            run.progress.fetch_add(1, Relaxed);
        }
        Ok(Confirmation::Nack(_)) => {
            outcome.nacked += 1;
            outcome
                .first_error
                .get_or_insert_with(|| "basic.nack".into());
        }
        Err(error) => {
            outcome.nacked += 1;
            outcome.first_error.get_or_insert_with(|| error.to_string());
        }
    }
}

/// What every consumer shares.
#[derive(Clone)]
struct ConsumeRun {
    amqp: AmqpArgs,
    consumer: AmqpConsumerArgs,
    size_bytes: usize,
    target: u64,
    total: Arc<AtomicU64>,
    idle_timeout_s: u64,
}

/// What one consumer did.
struct ConsumeOutcome {
    check: ConsumeCheck,
    redelivered: u64,
    last_message: Option<Instant>,
    timed_out: bool,
    first_error: Option<String>,
}

async fn consume(args: ConsumeArgs) -> Result<Report, String> {
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

fn spawn_consumers(run: &ConsumeRun, ready: &Arc<Barrier>) -> Vec<ConsumeTask> {
    (0..run.consumer.consumers)
        .map(|index| {
            let (run, ready) = (run.clone(), Arc::clone(ready));
            tokio::spawn(async move { consumer_task(&run, index, &ready).await })
        })
        .collect()
}

async fn join_consumers(tasks: Vec<ConsumeTask>) -> Result<Vec<ConsumeOutcome>, String> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(
            task.await
                .map_err(|error| format!("consumer task: {error}"))??,
        );
    }
    Ok(outcomes)
}

fn consume_report(
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

async fn e2e(args: E2eArgs) -> Result<Report, String> {
    args.load.validate()?;
    args.amqp.validate()?;
    validate_publisher(&args.publisher)?;
    validate_clients("--consumers", args.consumer.consumers)?;
    let expected = args
        .load
        .message_count()
        .ok_or("amqp e2e needs a message count: --messages, or --duration-s with --rate")?;
    let setup = connect(&args.amqp).await?;
    let channel = setup
        .create_channel()
        .await
        .map_err(|error| format!("channel: {error}"))?;
    declare_queues(&channel, &args.amqp, true).await?;
    let progress = Progress::start("received", Some(expected), !args.output.no_progress);
    let consume_run = ConsumeRun {
        amqp: args.amqp.clone(),
        consumer: args.consumer.clone(),
        size_bytes: args.load.size_bytes,
        target: expected,
        total: progress.counter(),
        idle_timeout_s: args.output.idle_timeout_s,
    };
    let ready = Arc::new(Barrier::new(args.consumer.consumers + 1));
    let consumers = spawn_consumers(&consume_run, &ready);
    ready.wait().await;
    let run = Arc::new(PublishRun {
        amqp: args.amqp.clone(),
        load: args.load.clone(),
        publisher: args.publisher.clone(),
        idle_timeout_s: args.output.idle_timeout_s,
        progress: Arc::new(AtomicU64::new(0)),
        barrier: Barrier::new(args.publisher.publishers + 1),
        schedule: OnceLock::new(),
    });
    let publishers = spawn_publishers(&run);
    run.barrier.wait().await;
    let watch = watch_broker(&args.output)?;
    let cpu_before = client_cpu_s();
    let schedule = *run
        .schedule
        .get_or_init(|| Schedule::start(args.load.rate_per_s));
    run.barrier.wait().await;
    let published = join_publishers(publishers).await?;
    let read = join_consumers(consumers).await?;
    let cpu_s = client_cpu_s() - cpu_before;
    progress.finish();
    let _ = setup.close(200, "bye".into()).await;
    let publish = publish_report(&args.load, &args.publisher, &published, schedule.started());
    let mut report = consume_report("amqp e2e", read, expected, schedule.started());
    report.mode = args.load.mode().into();
    report.complete &= publish.complete;
    report.set_client_cpu_s(cpu_s);
    if let Some(details) = report.details.as_object_mut() {
        details.insert(
            "publish_rate_msgs_per_s".into(),
            json!(publish.rate_msgs_per_s),
        );
        details.insert("confirm_latency_us".into(), json!(publish.latency_us));
        details.insert("publish".into(), publish.details);
    }
    let broker = watch.map(|watch| watch.finish(report.messages));
    finish_report(&mut report, &args.output, &args.amqp.broker, &args, broker);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amqp(broker: &str, queues: usize) -> AmqpArgs {
        AmqpArgs {
            broker: broker.into(),
            queue: "q".into(),
            queue_count: queues,
            durable: true,
            queue_type: "classic".into(),
            purge: false,
        }
    }

    #[test]
    fn broker_addresses_become_uris() {
        assert_eq!(
            amqp("127.0.0.1:5674", 1).uri(),
            "amqp://guest:guest@127.0.0.1:5674/%2f"
        );
        assert_eq!(amqp("amqp://u:p@h:1/v", 1).uri(), "amqp://u:p@h:1/v");
    }

    #[test]
    fn queue_names_and_bounds() {
        assert_eq!(amqp("h:1", 1).queue_name(0), "q");
        assert_eq!(amqp("h:1", 3).queue_name(2), "q-2");
        assert!(amqp("h:1", 0).validate().is_err());
        let mut bad_type = amqp("h:1", 1);
        bad_type.queue_type = "lazy".into();
        assert!(bad_type.validate().is_err());
    }

    #[test]
    fn unreachable_broker_is_a_clear_error() {
        let command = AmqpCommand::Publish(PublishArgs {
            amqp: amqp("127.0.0.1:1", 1),
            load: LoadArgs {
                messages: Some(1),
                duration_s: None,
                rate_per_s: None,
                size_bytes: 100,
            },
            publisher: PublisherArgs {
                publishers: 1,
                confirm_window: 10,
                persistent: true,
            },
            output: OutputArgs {
                json: true,
                no_progress: true,
                broker_pid: None,
                label: String::new(),
                idle_timeout_s: 1,
            },
        });
        let error = run(command).expect_err("nothing listens on port 1");
        assert!(
            error.contains("cannot connect to AMQP broker 127.0.0.1:1"),
            "{error}"
        );
    }
}
