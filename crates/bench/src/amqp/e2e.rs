//! `weir bench amqp e2e`: publishers at a rate and consumers at once;
//! latency from the send time in each message to its delivery.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use serde_json::json;
use tokio::sync::Barrier;

use super::{connect, declare_queues, validate_publisher, E2eArgs};
use crate::pacing::Schedule;
use crate::procstat::client_cpu_s;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{finish_report, validate_clients, watch_broker};

use super::consume::{consume_report, join_consumers, spawn_consumers, ConsumeRun};
use super::publish::{join_publishers, publish_report, spawn_publishers, PublishRun};

pub(super) async fn e2e(args: E2eArgs) -> Result<Report, String> {
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
