//! `weir bench amqp publish`: publishers with a window of outstanding
//! confirms; confirm latency from each message's scheduled send time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde_json::json;
use tokio::sync::Barrier;

use super::{connect, declare_queues, validate_publisher, AmqpArgs, PublishArgs, PublisherArgs};
use crate::histogram::LatencyHistogram;
use crate::pacing::Schedule;
use crate::payload::{filler, latency_us_since, stamp};
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, watch_broker, LoadArgs};

/// What one publisher did.
#[derive(Default)]
pub(super) struct PublishOutcome {
    pub(super) sent: u64,
    pub(super) confirmed: u64,
    pub(super) nacked: u64,
    pub(super) first_error: Option<String>,
    pub(super) latency: LatencyHistogram,
    pub(super) timed_out: bool,
    pub(super) finished: Option<Instant>,
}

/// What every publisher shares.
pub(super) struct PublishRun {
    pub(super) amqp: AmqpArgs,
    pub(super) load: LoadArgs,
    pub(super) publisher: PublisherArgs,
    pub(super) idle_timeout_s: u64,
    pub(super) progress: Arc<AtomicU64>,
    pub(super) barrier: Barrier,
    pub(super) schedule: OnceLock<Schedule>,
}

pub(super) async fn publish(args: PublishArgs) -> Result<Report, String> {
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

pub(super) fn spawn_publishers(run: &Arc<PublishRun>) -> Vec<PublishTask> {
    (0..run.publisher.publishers)
        .map(|index| {
            let run = Arc::clone(run);
            tokio::spawn(async move { publisher_task(&run, index).await })
        })
        .collect()
}

pub(super) async fn join_publishers(
    tasks: Vec<PublishTask>,
) -> Result<Vec<PublishOutcome>, String> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(
            task.await
                .map_err(|error| format!("publisher task: {error}"))??,
        );
    }
    Ok(outcomes)
}

pub(super) fn publish_report(
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
