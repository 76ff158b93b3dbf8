//! AMQP 0-9-1 integration tests with lapin against the real `weir` binary.
//!
//! The pika suite (`tests/test_amqp_*.py`) is the full contract; these tests
//! check that a second, independent client implementation sees the same
//! RabbitMQ behaviour: routing, competing consumers, publisher confirms across
//! a kill -9, message properties, TTL with dead-lettering, stream queues and
//! channel errors. Every test starts its own broker on free ports with a fresh
//! data directory (as `tests/conftest.py` does) and checks what the client got
//! byte for byte and count for count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind, ExchangeKind,
};

/// How long the broker may take to accept connections after exec; generous
/// for a loaded 2-core CI machine.
const BROKER_START_WAIT_MAX: Duration = Duration::from_secs(30);

/// How long a test waits for anything the broker should send.
const REPLY_WAIT_MAX: Duration = Duration::from_secs(10);

/// How long a test watches for a delivery that must not come.
const QUIET_WAIT: Duration = Duration::from_millis(300);

/// How much of the broker's log a failing test prints.
const LOG_TAIL_BYTES: usize = 20_000;

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("ephemeral port has an address")
        .port()
}

/// One `weir server` process (and its restarts) on fixed ports and a fixed
/// data directory; killed when dropped.
struct Broker {
    child: Option<Child>,
    work_dir: tempfile::TempDir,
    kafka_port: u16,
    amqp_port: u16,
    /// The HTTP API's port: each broker its own, so parallel tests never
    /// compete for the default 15672.
    http_port: u16,
}

impl Broker {
    /// Starts a broker on free ports, retrying when another process took a
    /// port between `free_port()` and the broker's bind.
    fn start() -> Broker {
        let work_dir = tempfile::tempdir().expect("create a temporary directory");
        let mut broker = Broker {
            child: None,
            work_dir,
            kafka_port: 0,
            amqp_port: 0,
            http_port: 0,
        };
        for attempt in 1..=3 {
            broker.kafka_port = free_port();
            broker.amqp_port = free_port();
            broker.http_port = free_port();
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(problem) if attempt < 3 && problem.to_lowercase().contains("in use") => {}
                Err(problem) => panic!("{problem}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn data_dir(&self) -> PathBuf {
        self.work_dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.work_dir.path().join("weir.log")
    }

    /// The AMQP URI of this broker: guest/guest, vhost "/".
    fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Execs the binary (output appended to `weir.log`) and waits until both
    /// ports accept connections.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the broker log");
        let log_for_stderr = log.try_clone().expect("clone the broker log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--kafka-listen")
            .arg(format!("127.0.0.1:{}", self.kafka_port))
            .arg("--amqp-listen")
            .arg(format!("127.0.0.1:{}", self.amqp_port))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .spawn()
            .expect("spawn the weir binary");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + BROKER_START_WAIT_MAX;
        for port in [self.kafka_port, self.amqp_port] {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                let child = self.child.as_mut().expect("broker was spawned");
                if let Some(status) = child.try_wait().expect("poll the broker process") {
                    self.child = None;
                    return Err(format!(
                        "weir exited with {status} before accepting connections\n{}",
                        self.log_tail()
                    ));
                }
                if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "weir did not accept connections on {address} within {BROKER_START_WAIT_MAX:?}\n{}",
                        self.log_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// SIGKILL (the crash case) and wait for the exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("send SIGKILL to the broker");
            child.wait().expect("reap the broker");
        }
    }

    /// Start again on the same ports and data directory.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running broker");
        if let Err(problem) = self.spawn_and_wait() {
            panic!("restart failed: {problem}");
        }
    }

    /// The test is over: the broker must still run and must not have logged a
    /// panic (a crash hidden behind a passing client check is still caught).
    fn check_healthy(&mut self) {
        let child = self.child.as_mut().expect("broker is running");
        let exited = child.try_wait().expect("poll the broker process");
        assert!(
            exited.is_none(),
            "weir exited on its own with {exited:?} during the test\n{}",
            self.log_tail()
        );
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&log).contains("panicked at"),
            "weir logged a panic\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(LOG_TAIL_BYTES)..];
        format!(
            "----- {} -----\n{}",
            self.log_path().display(),
            String::from_utf8_lossy(tail)
        )
    }

    async fn connect(&self) -> Connection {
        within(
            "the AMQP connection",
            Connection::connect(&self.uri(), ConnectionProperties::default()),
        )
        .await
        .expect("connect to weir with lapin")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.kill();
    }
}

/// Awaits `future`, failing the test after `REPLY_WAIT_MAX`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(REPLY_WAIT_MAX, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {REPLY_WAIT_MAX:?} waiting for {what}"),
    }
}

/// A channel with publisher confirms on.
async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.expect("open a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    channel
}

/// Publishes one message on a confirm channel and checks the confirm is an ack.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("basic.publish");
    let confirmation = within("the publisher confirm", confirm)
        .await
        .expect("publisher confirm");
    assert!(
        confirmation.is_ack(),
        "publish to {exchange:?}/{routing_key:?} was not acked: {confirmation:?}"
    );
}

/// Declares a plain (transient, shared) queue.
async fn declare_plain(channel: &Channel, name: &str) {
    declare_queue(
        channel,
        name,
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    let options = ExchangeDeclareOptions::default();
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
        .unwrap_or_else(|error| panic!("declare exchange {name}: {error}"));
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str, arguments: FieldTable) {
    let options = QueueBindOptions::default();
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            options,
            arguments,
        )
        .await
        .unwrap_or_else(|error| panic!("bind {queue} to {exchange} with {key:?}: {error}"));
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) {
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .unwrap_or_else(|error| panic!("declare queue {name}: {error}"));
}

/// How many ready messages `queue` holds, by a passive declare.
async fn message_count(channel: &Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|error| panic!("passive declare of {queue}: {error}"))
        .message_count()
}

/// Publishes `body` without properties to `queue` through the default exchange.
async fn publish(channel: &Channel, queue: &str, body: &[u8]) {
    publish_confirmed(channel, "", queue, body, BasicProperties::default()).await;
}

async fn basic_get(channel: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack })
        .await
        .unwrap_or_else(|error| panic!("basic.get from {queue}: {error}"))
}

/// Every message in `queue`, taken with basic.get and auto-ack, in order.
async fn get_all(channel: &Channel, queue: &str) -> Vec<BasicGetMessage> {
    let mut messages = Vec::new();
    while let Some(message) = basic_get(channel, queue, true).await {
        messages.push(message);
    }
    messages
}

async fn next_delivery(consumer: &mut Consumer, what: &str) -> Delivery {
    within(what, consumer.next())
        .await
        .unwrap_or_else(|| panic!("consumer ended while waiting for {what}"))
        .unwrap_or_else(|error| panic!("delivery error while waiting for {what}: {error}"))
}

/// Checks that `consumer` gets nothing more for a while.
async fn assert_quiet(consumer: &mut Consumer, what: &str) {
    if let Ok(Some(extra)) = tokio::time::timeout(QUIET_WAIT, consumer.next()).await {
        let extra = extra.map(|delivery| String::from_utf8_lossy(&delivery.data).into_owned());
        panic!("{what}: unexpected extra delivery {extra:?}");
    }
}

async fn consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
    no_ack: bool,
    arguments: FieldTable,
) -> Consumer {
    let options = BasicConsumeOptions {
        no_ack,
        ..BasicConsumeOptions::default()
    };
    channel
        .basic_consume(queue.into(), tag.into(), options, arguments)
        .await
        .unwrap_or_else(|error| panic!("basic.consume on {queue}: {error}"))
}

fn table<const N: usize>(entries: [(&str, AMQPValue); N]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(key.into(), value);
    }
    table
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(text.into())
}

fn body_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn bodies(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|delivery| body_text(&delivery.data))
        .collect()
}

/// (body, redelivered, delivery tag) of a basic.get answer.
fn got_view(message: &BasicGetMessage) -> (String, bool, u64) {
    let delivery = &message.delivery;
    (
        body_text(&delivery.data),
        delivery.redelivered,
        delivery.delivery_tag,
    )
}

/// The reply code and text of a channel or connection close that ended an
/// operation.
fn close_reason<T: std::fmt::Debug>(result: lapin::Result<T>) -> (u16, String) {
    let error = result.expect_err("the broker should refuse this");
    match error.kind() {
        ErrorKind::ProtocolError(amqp_error) => (
            amqp_error.get_id(),
            amqp_error.get_message().as_str().to_owned(),
        ),
        other => panic!("expected a channel close with a reply code, got {other:?}"),
    }
}

/// A header value in the routing table (`AMQPValue` cannot be built in a const).
#[derive(Clone, Copy)]
enum Header {
    Int(i32),
    Text(&'static str),
}

/// Header entries of a routing-table row.
type Headers = &'static [(&'static str, Header)];

fn header_table(headers: Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in headers {
        let value = match *value {
            Header::Int(number) => AMQPValue::LongInt(number),
            Header::Text(text) => long_string(text),
        };
        table.insert((*key).into(), value);
    }
    table
}

/// (queue, exchange, binding key, binding arguments): what the routing test binds.
const BINDINGS: &[(&str, &str, &str, Headers)] = &[
    ("d-orders", "ex.direct", "orders", &[]),
    ("d-both", "ex.direct", "orders", &[]),
    ("d-both", "ex.direct", "payments", &[]),
    ("d-payments", "ex.direct", "payments", &[]),
    ("f-one", "ex.fanout", "x", &[]),
    ("f-two", "ex.fanout", "", &[]),
    ("t-star", "ex.topic", "a.*", &[]),
    ("t-hash", "ex.topic", "a.#", &[]),
    ("t-middle", "ex.topic", "*.b.#", &[]),
    ("t-all", "ex.topic", "#", &[]),
    // One queue bound twice by patterns that both match gets one copy.
    ("t-twice", "ex.topic", "a.#", &[]),
    ("t-twice", "ex.topic", "#.b", &[]),
    (
        "h-all",
        "ex.headers",
        "",
        &[("x-match", Header::Text("all")), A1, B_TWO],
    ),
    (
        "h-any",
        "ex.headers",
        "",
        &[("x-match", Header::Text("any")), A1, B_TWO],
    ),
];

const A1: (&str, Header) = ("a", Header::Int(1));
const B_TWO: (&str, Header) = ("b", Header::Text("two"));

/// (exchange, routing key, headers, the queues that must get the message) as
/// RabbitMQ routes; each message's body names its row.
const ROUTES: &[(&str, &str, Headers, &[&str])] = &[
    ("ex.direct", "orders", &[], &["d-orders", "d-both"]),
    ("ex.direct", "payments", &[], &["d-both", "d-payments"]),
    ("ex.direct", "Orders", &[], &[]),
    ("ex.fanout", "anything", &[], &["f-one", "f-two"]),
    ("ex.topic", "a", &[], &["t-hash", "t-all", "t-twice"]),
    (
        "ex.topic",
        "a.b",
        &[],
        &["t-star", "t-hash", "t-middle", "t-all", "t-twice"],
    ),
    (
        "ex.topic",
        "a.b.c",
        &[],
        &["t-hash", "t-middle", "t-all", "t-twice"],
    ),
    ("ex.topic", "x.b", &[], &["t-middle", "t-all", "t-twice"]),
    // "#.b" matches "b": `#` may stand for zero words.
    ("ex.topic", "b", &[], &["t-all", "t-twice"]),
    ("ex.topic", "", &[], &["t-all"]),
    ("ex.topic", "b.a", &[], &["t-all"]),
    ("ex.headers", "", &[A1, B_TWO], &["h-all", "h-any"]),
    (
        "ex.headers",
        "",
        &[A1, B_TWO, ("c", Header::Int(3))],
        &["h-all", "h-any"],
    ),
    ("ex.headers", "", &[A1], &["h-any"]),
    ("ex.headers", "", &[B_TWO], &["h-any"]),
    ("ex.headers", "", &[("a", Header::Int(2))], &[]),
    ("ex.headers", "", &[("a", Header::Text("1"))], &[]),
    ("ex.headers", "", &[], &[]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_route_as_rabbitmq_does() {
    let mut broker = Broker::start();
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    for (exchange, kind) in [
        ("ex.direct", ExchangeKind::Direct),
        ("ex.fanout", ExchangeKind::Fanout),
        ("ex.topic", ExchangeKind::Topic),
        ("ex.headers", ExchangeKind::Headers),
    ] {
        declare_exchange(&channel, exchange, kind).await;
    }
    let queues: BTreeSet<&str> = BINDINGS.iter().map(|binding| binding.0).collect();
    for queue in &queues {
        declare_plain(&channel, queue).await;
    }
    for (queue, exchange, key, arguments) in BINDINGS {
        bind(&channel, queue, exchange, key, header_table(arguments)).await;
    }

    let mut expected: BTreeMap<&str, Vec<String>> =
        queues.iter().map(|queue| (*queue, Vec::new())).collect();
    for (index, (exchange, key, headers, targets)) in ROUTES.iter().enumerate() {
        let name = format!("{index}:{exchange}:{key}");
        let mut properties = BasicProperties::default();
        if !headers.is_empty() {
            properties = properties.with_headers(header_table(headers));
        }
        publish_confirmed(&channel, exchange, key, name.as_bytes(), properties).await;
        for queue in *targets {
            let bodies = expected.get_mut(queue).expect("routes name bound queues");
            bodies.push(name.clone());
        }
    }
    let mut got = BTreeMap::new();
    for queue in &queues {
        let messages = get_all(&channel, queue).await;
        let bodies = messages
            .iter()
            .map(|message| body_text(&message.delivery.data));
        got.insert(*queue, bodies.collect());
    }
    assert_eq!(got, expected);
    broker.check_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_redelivery_and_nack() {
    let mut broker = Broker::start();
    let connection = broker.connect().await;
    let publisher = confirm_channel(&connection).await;
    declare_plain(&publisher, "compete").await;
    let mut channels = Vec::new();
    let mut consumers = Vec::new();
    for tag in ["consumer-a", "consumer-b"] {
        let channel = connection.create_channel().await.expect("open a channel");
        channel
            .basic_qos(10, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        consumers.push(consume(&channel, "compete", tag, false, FieldTable::default()).await);
        channels.push(channel);
    }
    let sent: Vec<String> = (0..20).map(|index| format!("m{index}")).collect();
    for body in &sent {
        publish(&publisher, "compete", body.as_bytes()).await;
    }

    // Each consumer holds exactly its prefetch of 10, and they alternate.
    let mut received: Vec<Vec<Delivery>> = vec![Vec::new(), Vec::new()];
    for (consumer, deliveries) in consumers.iter_mut().zip(&mut received) {
        for _ in 0..10 {
            deliveries.push(next_delivery(consumer, "a share of the 20 messages").await);
        }
        assert_quiet(consumer, "prefetch 10 is full").await;
    }
    let shares = [bodies(&received[0]), bodies(&received[1])];
    let mut union = shares.concat();
    union.sort_by_key(|body| body[1..].parse::<u32>().expect("numbered body"));
    assert_eq!(union, sent, "the union is every message, each once");
    let evens: Vec<String> = sent.iter().step_by(2).cloned().collect();
    let odds: Vec<String> = sent.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(
        BTreeSet::from(shares.clone()),
        BTreeSet::from([evens, odds]),
        "round-robin"
    );
    assert!(received
        .iter()
        .flatten()
        .all(|delivery| !delivery.redelivered));

    // B acks its share; A's channel closes with 10 un-acked: B gets them,
    // redelivered, in their original order, with B's tags counting on.
    let ack_all = BasicAckOptions { multiple: true };
    channels[1]
        .basic_ack(10, ack_all)
        .await
        .expect("ack B's share");
    channels[0]
        .close(200, "OK".into())
        .await
        .expect("close A's channel");
    let mut redelivered = Vec::new();
    for _ in 0..10 {
        redelivered.push(next_delivery(&mut consumers[1], "A's un-acked messages").await);
    }
    assert_quiet(&mut consumers[1], "only A's 10 are redelivered").await;
    assert_eq!(bodies(&redelivered), shares[0]);
    assert!(redelivered.iter().all(|delivery| delivery.redelivered));
    let tags: Vec<u64> = redelivered
        .iter()
        .map(|delivery| delivery.delivery_tag)
        .collect();
    assert_eq!(tags, (11..=20).collect::<Vec<u64>>());
    channels[1]
        .basic_ack(20, ack_all)
        .await
        .expect("ack the redeliveries");
    assert_eq!(message_count(&publisher, "compete").await, 0);

    // nack with requeue puts a message back at its original position.
    declare_plain(&publisher, "nack").await;
    for index in 0..5 {
        publish(&publisher, "nack", format!("n{index}").as_bytes()).await;
    }
    let getter = connection.create_channel().await.expect("open a channel");
    let mut taken = Vec::new();
    for _ in 0..3 {
        let message = basic_get(&getter, "nack", false)
            .await
            .expect("a message to take");
        taken.push(got_view(&message));
    }
    let fresh = |body: &str, tag| (body.to_owned(), false, tag);
    assert_eq!(taken, [fresh("n0", 1), fresh("n1", 2), fresh("n2", 3)]);
    let requeue_one = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    getter.basic_nack(2, requeue_one).await.expect("nack n1");
    let again = basic_get(&getter, "nack", false).await.expect("n1 is back");
    assert_eq!(got_view(&again), ("n1".to_owned(), true, 4));
    let requeue = BasicRejectOptions { requeue: true };
    getter.basic_reject(1, requeue).await.expect("reject n0");
    let again = basic_get(&getter, "nack", false).await.expect("n0 is back");
    assert_eq!(got_view(&again), ("n0".to_owned(), true, 5));
    // nack multiple requeues everything up to the tag, back in queue order.
    let requeue_all = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    getter
        .basic_nack(0, requeue_all)
        .await
        .expect("nack everything");
    let rest: Vec<(String, bool)> = get_all(&getter, "nack")
        .await
        .iter()
        .map(|message| {
            (
                body_text(&message.delivery.data),
                message.delivery.redelivered,
            )
        })
        .collect();
    let expected = [
        ("n0", true),
        ("n1", true),
        ("n2", true),
        ("n3", false),
        ("n4", false),
    ];
    let expected: Vec<(String, bool)> = expected
        .iter()
        .map(|(body, redelivered)| (body.to_string(), *redelivered))
        .collect();
    assert_eq!(rest, expected);
    broker.check_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_persistent_messages_survive_kill_9() {
    const MESSAGES: usize = 10_000;
    const QUEUE: &str = "durable-confirms";
    let mut broker = Broker::start();
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare_queue(
        &channel,
        QUEUE,
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await;

    let sent: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|index| format!("persistent-{index:05}-{}", "x".repeat(index % 50)).into_bytes())
        .collect();
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::with_capacity(MESSAGES);
    for body in &sent {
        let options = BasicPublishOptions::default();
        let confirm = channel
            .basic_publish("".into(), QUEUE.into(), options, body, persistent.clone())
            .await
            .expect("basic.publish");
        confirms.push(confirm);
    }
    let mut acks = 0;
    for (index, confirm) in confirms.into_iter().enumerate() {
        let confirmation = within("a publisher confirm", confirm)
            .await
            .expect("confirm");
        assert!(
            confirmation.is_ack(),
            "publish {index} not acked: {confirmation:?}"
        );
        acks += 1;
    }
    assert_eq!(acks, MESSAGES);
    assert_eq!(message_count(&channel, QUEUE).await, MESSAGES as u32);

    broker.kill();
    drop(channel);
    drop(connection);
    broker.restart();

    let connection = broker.connect().await;
    let channel = connection.create_channel().await.expect("open a channel");
    assert_eq!(message_count(&channel, QUEUE).await, MESSAGES as u32);
    let mut consumer = consume(&channel, QUEUE, "after-crash", true, FieldTable::default()).await;
    let mut got = Vec::with_capacity(MESSAGES);
    for _ in 0..MESSAGES {
        let delivery = next_delivery(&mut consumer, "the messages confirmed before kill -9").await;
        assert_eq!(delivery.properties.delivery_mode(), &Some(2));
        got.push(delivery.data);
    }
    assert_quiet(&mut consumer, "exactly the confirmed messages").await;
    assert!(
        got == sent,
        "bodies after the restart differ from the confirmed ones"
    );
    assert_eq!(message_count(&channel, QUEUE).await, 0);
    broker.check_healthy();
}

/// A header table with every field type RabbitMQ's clients send.
fn headers_of_every_type() -> FieldTable {
    let deeper = table([("c", long_string("d"))]);
    let nested = table([
        ("inner", long_string("deep")),
        ("n", AMQPValue::LongInt(-7)),
        ("deeper", AMQPValue::FieldTable(deeper)),
    ]);
    let array = FieldArray::from(vec![
        AMQPValue::LongInt(1),
        long_string("two"),
        AMQPValue::Boolean(true),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongLongInt(4)])),
        AMQPValue::FieldTable(table([("five", AMQPValue::LongInt(5))])),
        AMQPValue::Void,
    ]);
    let decimal = DecimalValue {
        scale: 2,
        value: 314,
    };
    table([
        ("string", long_string("héllo wörld")),
        ("empty-string", long_string("")),
        ("i32-max", AMQPValue::LongInt(i32::MAX)),
        ("i32-min", AMQPValue::LongInt(i32::MIN)),
        ("i64", AMQPValue::LongLongInt(1 << 40)),
        ("i64-negative", AMQPValue::LongLongInt(-(1 << 40))),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("true", AMQPValue::Boolean(true)),
        ("false", AMQPValue::Boolean(false)),
        ("nested", AMQPValue::FieldTable(nested)),
        ("empty-table", AMQPValue::FieldTable(FieldTable::default())),
        ("array", AMQPValue::FieldArray(array)),
        ("empty-array", AMQPValue::FieldArray(FieldArray::default())),
        ("timestamp", AMQPValue::Timestamp(1_704_164_645)),
        ("double", AMQPValue::Double(2.5)),
        ("decimal", AMQPValue::DecimalValue(decimal)),
        ("bytes", AMQPValue::ByteArray(vec![0, 255, 1, b'b'].into())),
        ("void", AMQPValue::Void),
    ])
}

/// Every basic property set (user_id must be the authenticated user), no
/// expiration.
fn every_property() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json; charset=utf-8".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers_of_every_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-123".into())
        .with_reply_to("reply.queue".into())
        .with_message_id("msg-42".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("weir-tests".into())
        .with_cluster_id("cluster-x".into())
}

/// `size` bytes that neither repeat with the frame size nor are all alike.
fn pseudo_random_body(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_property_and_header_survives() {
    let mut broker = Broker::start();
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare_plain(&channel, "props").await;
    let large_body = pseudo_random_body(1 << 20);
    let plain_text = BasicProperties::default().with_content_type("text/plain".into());
    let sent = [
        (b"with properties".to_vec(), every_property()),
        (Vec::new(), every_property()),
        (Vec::new(), plain_text),
        (large_body.clone(), every_property()),
        (b"no properties".to_vec(), BasicProperties::default()),
    ];
    for (body, properties) in &sent {
        publish_confirmed(&channel, "", "props", body, properties.clone()).await;
    }
    for (index, (body, properties)) in sent.iter().enumerate() {
        let message = basic_get(&channel, "props", true)
            .await
            .expect("a message to get");
        let got = &message.delivery.data;
        assert!(
            got == body,
            "body {index}: {} bytes back, {} sent",
            got.len(),
            body.len()
        );
        assert_eq!(
            &message.delivery.properties, properties,
            "properties of message {index}"
        );
        assert_eq!(message.message_count, (sent.len() - index - 1) as u32);
    }
    assert!(basic_get(&channel, "props", true).await.is_none());

    // The same through a consumer, with the routing information.
    declare_exchange(&channel, "props-topic", ExchangeKind::Topic).await;
    bind(
        &channel,
        "props",
        "props-topic",
        "a.*",
        FieldTable::default(),
    )
    .await;
    publish_confirmed(
        &channel,
        "props-topic",
        "a.b",
        &large_body,
        every_property(),
    )
    .await;
    publish_confirmed(&channel, "props-topic", "a.c", b"", every_property()).await;
    let mut consumer = consume(&channel, "props", "props", true, FieldTable::default()).await;
    for (routing_key, body) in [("a.b", &large_body[..]), ("a.c", &[][..])] {
        let delivery = next_delivery(&mut consumer, "a message with every property").await;
        let route = (delivery.exchange.as_str(), delivery.routing_key.as_str());
        assert_eq!(route, ("props-topic", routing_key));
        let got = &delivery.data;
        assert!(
            got == body,
            "consumed body: {} bytes back, {} sent",
            got.len(),
            body.len()
        );
        assert_eq!(delivery.properties, every_property());
    }
    broker.check_healthy();
}

fn unix_now_s() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.expect("clock after 1970").as_secs()
}

/// Takes the one dead-letter record out of `headers`' `x-death` and checks
/// its `time` is a timestamp near now.
fn take_x_death(
    headers: &mut BTreeMap<ShortString, AMQPValue>,
) -> BTreeMap<ShortString, AMQPValue> {
    let deaths = match headers.remove("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().to_vec(),
        other => panic!("x-death must be an array, got {other:?}"),
    };
    let [AMQPValue::FieldTable(death)] = &deaths[..] else {
        panic!("x-death must hold one table: {deaths:?}");
    };
    let mut death = death.inner().clone();
    let Some(AMQPValue::Timestamp(time_s)) = death.remove("time") else {
        panic!("x-death time must be a timestamp: {death:?}");
    };
    let now_s = unix_now_s();
    assert!(
        now_s.abs_diff(time_s) <= 30,
        "x-death time {time_s} is not near now ({now_s})"
    );
    death
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_is_dead_lettered_with_x_death() {
    let mut broker = Broker::start();
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    declare_exchange(&channel, "dlx", ExchangeKind::Topic).await;
    declare_plain(&channel, "dead").await;
    bind(&channel, "dead", "dlx", "#", FieldTable::default()).await;
    let source_arguments = table([
        ("x-message-ttl", AMQPValue::LongInt(200)),
        ("x-dead-letter-exchange", long_string("dlx")),
    ]);
    declare_queue(
        &channel,
        "ttl-source",
        QueueDeclareOptions::default(),
        source_arguments,
    )
    .await;
    let sent = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(table([("app", long_string("h"))]))
        .with_message_id("m1".into())
        .with_delivery_mode(2);
    publish_confirmed(&channel, "", "ttl-source", b"expires", sent.clone()).await;

    let deadline = Instant::now() + REPLY_WAIT_MAX;
    let dead = loop {
        if let Some(message) = basic_get(&channel, "dead", true).await {
            break message.delivery;
        }
        assert!(
            Instant::now() < deadline,
            "nothing dead-lettered within {REPLY_WAIT_MAX:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(message_count(&channel, "ttl-source").await, 0);
    assert!(
        basic_get(&channel, "dead", true).await.is_none(),
        "dead-lettered once"
    );
    let route = (
        body_text(&dead.data),
        dead.exchange.as_str(),
        dead.routing_key.as_str(),
    );
    assert_eq!(route, ("expires".to_owned(), "dlx", "ttl-source"));

    let headers = dead
        .properties
        .headers()
        .clone()
        .expect("dead-lettered message has headers");
    let mut headers = headers.inner().clone();
    let death = take_x_death(&mut headers);
    let routing_keys = FieldArray::from(vec![long_string("ttl-source")]);
    let expected_death = table([
        ("count", AMQPValue::LongLongInt(1)),
        ("reason", long_string("expired")),
        ("queue", long_string("ttl-source")),
        ("exchange", long_string("")),
        ("routing-keys", AMQPValue::FieldArray(routing_keys)),
    ]);
    assert_eq!(&death, expected_death.inner());
    // RabbitMQ 3.10's other dead-letter headers (as the pika suite checks);
    // the message's own headers and properties stay, with no expiration.
    let expected_headers = table([
        ("app", long_string("h")),
        ("x-first-death-reason", long_string("expired")),
        ("x-first-death-queue", long_string("ttl-source")),
        ("x-first-death-exchange", long_string("")),
    ]);
    assert_eq!(&headers, expected_headers.inner());
    let without_headers =
        |properties: BasicProperties| properties.with_headers(FieldTable::default());
    assert_eq!(without_headers(dead.properties), without_headers(sent));
    broker.check_healthy();
}

/// Reads a stream from `offset` on a fresh channel (prefetch 10, manual
/// acks): the (`x-stream-offset` header, body) of the `expected` deliveries,
/// after checking that nothing more comes.
async fn read_stream(
    connection: &Connection,
    queue: &str,
    offset: AMQPValue,
    expected: usize,
) -> Vec<(AMQPValue, String)> {
    let channel = connection.create_channel().await.expect("open a channel");
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let arguments = table([("x-stream-offset", offset.clone())]);
    let mut consumer = consume(&channel, queue, "stream-reader", false, arguments).await;
    let mut got = Vec::new();
    for index in 0..expected {
        let delivery = next_delivery(&mut consumer, "a stream delivery").await;
        assert_eq!(
            (delivery.delivery_tag, delivery.redelivered),
            (index as u64 + 1, false)
        );
        let headers = delivery.properties.headers().as_ref();
        let Some(offset_header) =
            headers.and_then(|headers| headers.inner().get("x-stream-offset"))
        else {
            panic!("delivery from offset {offset:?} has no x-stream-offset header");
        };
        got.push((offset_header.clone(), body_text(&delivery.data)));
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack a stream delivery");
    }
    assert_quiet(&mut consumer, "the stream has no more messages").await;
    channel
        .close(200, "OK".into())
        .await
        .expect("close the reader's channel");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_queue_reads_from_offsets() {
    let mut broker = Broker::start();
    let connection = broker.connect().await;
    let channel = confirm_channel(&connection).await;
    let stream = table([("x-queue-type", long_string("stream"))]);
    declare_queue(&channel, "events", QueueDeclareOptions::durable(), stream).await;
    for index in 0..5 {
        publish(&channel, "events", format!("s{index}").as_bytes()).await;
    }
    let everything: Vec<(AMQPValue, String)> = (0..5)
        .map(|index| (AMQPValue::LongLongInt(index), format!("s{index}")))
        .collect();
    let first = read_stream(&connection, "events", long_string("first"), 5).await;
    assert_eq!(first, everything);
    let from_3 = read_stream(&connection, "events", AMQPValue::LongLongInt(3), 2).await;
    assert_eq!(from_3, everything[3..]);
    // Reading is not consuming.
    let again = read_stream(&connection, "events", long_string("first"), 5).await;
    assert_eq!(again, everything);
    broker.check_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_leave_the_connection_usable() {
    let mut broker = Broker::start();
    let connection = broker.connect().await;

    let channel = connection.create_channel().await.expect("open a channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let missing = channel
        .queue_declare("nowhere".into(), passive, FieldTable::default())
        .await;
    let not_found = "NOT_FOUND - no queue 'nowhere' in vhost '/'";
    assert_eq!(close_reason(missing), (404, not_found.to_owned()));
    let after_close = channel
        .basic_get("nowhere".into(), BasicGetOptions::default())
        .await;
    assert!(
        after_close.is_err(),
        "the channel is closed after the error"
    );

    let channel = connection
        .create_channel()
        .await
        .expect("a new channel after the error");
    let ttl = |ttl_ms| table([("x-message-ttl", AMQPValue::LongInt(ttl_ms))]);
    declare_queue(
        &channel,
        "with-ttl",
        QueueDeclareOptions::default(),
        ttl(1000),
    )
    .await;
    let options = QueueDeclareOptions::default();
    let redeclare = channel
        .queue_declare("with-ttl".into(), options, ttl(2000))
        .await;
    let inequivalent = "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue \
                        'with-ttl' in vhost '/': received '2000' but current is '1000'";
    assert_eq!(close_reason(redeclare), (406, inequivalent.to_owned()));

    assert!(
        connection.status().connected(),
        "a channel error leaves the connection open"
    );
    let channel = confirm_channel(&connection).await;
    assert_eq!(message_count(&channel, "with-ttl").await, 0);
    publish(&channel, "with-ttl", b"still works").await;
    let message = basic_get(&channel, "with-ttl", true)
        .await
        .expect("the message just published");
    assert_eq!(got_view(&message), ("still works".to_owned(), false, 1));
    broker.check_healthy();
}
