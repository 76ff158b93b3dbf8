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

mod consume;
mod e2e;
mod publish;

use clap::{ArgAction, Args, Subcommand};
use lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde::Serialize;

use crate::report::Report;
use crate::run::{validate_clients, LoadArgs, OutputArgs};

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
        AmqpCommand::Publish(args) => runtime.block_on(publish::publish(args)),
        AmqpCommand::Consume(args) => runtime.block_on(consume::consume(args)),
        AmqpCommand::E2e(args) => runtime.block_on(e2e::e2e(args)),
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
    /// Declare the queues over this topic (`x-source-topic`, Weir only):
    /// their messages are the topic's records.
    #[arg(long)]
    pub source_topic: Option<String>,
    /// `x-source-offset` of queues over a topic: first, last or next.
    #[arg(long, default_value = "first")]
    pub source_offset: String,
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
    if let Some(topic) = &amqp.source_topic {
        arguments.insert(
            "x-source-topic".into(),
            AMQPValue::LongString(topic.as_str().into()),
        );
        arguments.insert(
            "x-source-offset".into(),
            AMQPValue::LongString(amqp.source_offset.as_str().into()),
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
            source_topic: None,
            source_offset: "first".into(),
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
