//! The queue model without a protocol: routing, delivery order, acks,
//! requeue position, restart recovery, TTL and dead-lettering.

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::sync::mpsc;
use weir_core::queues::{
    ChannelHandle, ConsumerSpec, Destination, ExchangeKind, Message, Outbound, VirtualHost,
};
use weir_log::LogConfig;

fn message(exchange: &str, routing_key: &str, body: &str, persistent: bool) -> Message {
    let properties = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    Message::with_properties(
        exchange.into(),
        routing_key.into(),
        properties,
        Bytes::copy_from_slice(body.as_bytes()),
        weir_core::now_ms(),
    )
    .expect("properties encode")
}

fn open(dir: &std::path::Path) -> Arc<VirtualHost> {
    let broker = weir_core::Broker::open(weir_core::BrokerConfig::new(dir.join("broker")))
        .expect("broker opens");
    VirtualHost::open(
        "/",
        &dir.join("vhost"),
        LogConfig::default(),
        Arc::new(broker),
    )
    .expect("vhost opens")
}

/// The client connection the tests act as.
fn client() -> weir_core::Principal {
    weir_core::Principal::user("guest", 1)
}

fn body(delivery: &weir_core::queues::Delivery) -> String {
    String::from_utf8(delivery.message.body.to_vec()).expect("utf-8 body")
}

#[tokio::test]
async fn messages_go_in_order_and_a_requeued_one_returns_to_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vhost = open(dir.path());
    vhost
        .declare_queue(
            "q",
            false,
            true,
            false,
            false,
            FieldTable::default(),
            &client(),
        )
        .expect("declare");
    for index in 0..5 {
        vhost
            .publish(&message("", "q", &format!("m{index}"), true), &client())
            .expect("publish");
    }
    let queue = vhost.queue("q", &client()).expect("queue");
    let (sink, _deliveries) = mpsc::unbounded_channel();
    let channel = ChannelHandle::new(1, 1, sink);
    let (first, remaining) = queue.get(&channel, false).expect("get").expect("a message");
    assert_eq!(
        (body(&first), remaining, first.redelivered),
        ("m0".into(), 4, false)
    );
    let (second, _) = queue.get(&channel, false).expect("get").expect("a message");
    queue.reject(&[first.id], true).expect("requeue");
    let (again, _) = queue.get(&channel, false).expect("get").expect("a message");
    assert_eq!((body(&again), again.redelivered), ("m0".into(), true));
    queue.ack(&[again.id, second.id]).expect("ack");
    assert_eq!(queue.message_count(), 3);
    assert_eq!(queue.unacked_count(), 0);
}

#[tokio::test]
async fn a_restart_keeps_unacked_messages_and_forgets_acked_and_transient_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let vhost = open(dir.path());
        vhost
            .declare_queue(
                "durable",
                false,
                true,
                false,
                false,
                FieldTable::default(),
                &client(),
            )
            .expect("declare");
        vhost
            .declare_queue(
                "transient",
                false,
                false,
                false,
                false,
                FieldTable::default(),
                &client(),
            )
            .expect("declare");
        for index in 0..4 {
            vhost
                .publish(
                    &message("", "durable", &format!("d{index}"), true),
                    &client(),
                )
                .expect("publish");
        }
        vhost
            .publish(&message("", "durable", "not-persistent", false), &client())
            .expect("publish");
        vhost
            .publish(&message("", "transient", "t", true), &client())
            .expect("publish");
        let queue = vhost.queue("durable", &client()).expect("queue");
        let (sink, _deliveries) = mpsc::unbounded_channel();
        let channel = ChannelHandle::new(1, 1, sink);
        let (acked, _) = queue.get(&channel, false).expect("get").expect("d0");
        let (unacked, _) = queue.get(&channel, false).expect("get").expect("d1");
        queue.ack(&[acked.id]).expect("ack");
        assert_eq!(body(&unacked), "d1");
        vhost.close();
    }
    let vhost = open(dir.path());
    assert!(
        vhost.queue("transient", &client()).is_err(),
        "transient queues do not survive"
    );
    let queue = vhost
        .queue("durable", &client())
        .expect("durable queue survives");
    let (sink, _deliveries) = mpsc::unbounded_channel();
    let channel = ChannelHandle::new(2, 1, sink);
    let mut got = Vec::new();
    while let Some((delivery, _)) = queue.get(&channel, true).expect("get") {
        got.push((body(&delivery), delivery.redelivered));
    }
    assert_eq!(
        got,
        vec![
            ("d1".into(), true),
            ("d2".into(), false),
            ("d3".into(), false)
        ]
    );
}

#[tokio::test]
async fn consumers_share_round_robin_within_their_prefetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vhost = open(dir.path());
    vhost
        .declare_queue(
            "work",
            false,
            false,
            false,
            false,
            FieldTable::default(),
            &client(),
        )
        .expect("declare");
    let queue = vhost.queue("work", &client()).expect("queue");
    let (sink, mut deliveries) = mpsc::unbounded_channel();
    let channel = Arc::new(ChannelHandle::new(1, 1, sink));
    for tag in ["a", "b"] {
        let spec = ConsumerSpec {
            tag: Arc::from(tag),
            channel: Arc::clone(&channel),
            no_ack: false,
            exclusive: false,
            priority: 0,
            prefetch: 2,
            stream_start: None,
        };
        queue.consume(spec).expect("consume");
    }
    for index in 0..6 {
        vhost
            .publish(&message("", "work", &format!("m{index}"), false), &client())
            .expect("publish");
    }
    let mut by_consumer = std::collections::BTreeMap::<String, Vec<String>>::new();
    for _ in 0..4 {
        let outbound = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
            .await
            .expect("in time");
        let Some(Outbound::Deliver(delivery)) = outbound else {
            panic!("a delivery")
        };
        by_consumer
            .entry(delivery.consumer_tag.to_string())
            .or_default()
            .push(body(&delivery));
    }
    assert_eq!(by_consumer["a"].len(), 2);
    assert_eq!(by_consumer["b"].len(), 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), deliveries.recv())
            .await
            .is_err(),
        "prefetch holds the rest"
    );
    assert_eq!(queue.message_count(), 2);
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_with_x_death() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vhost = open(dir.path());
    vhost
        .declare_exchange(
            "dlx",
            ExchangeKind::Fanout,
            false,
            false,
            false,
            false,
            FieldTable::default(),
        )
        .expect("dlx");
    vhost
        .declare_queue(
            "dead",
            false,
            false,
            false,
            false,
            FieldTable::default(),
            &client(),
        )
        .expect("declare");
    vhost
        .bind(
            "dlx",
            Destination::Queue("dead".into()),
            "",
            FieldTable::default(),
            &client(),
        )
        .expect("bind");
    let mut arguments = FieldTable::default();
    arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(50));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    vhost
        .declare_queue("source", false, false, false, false, arguments, &client())
        .expect("declare");
    vhost
        .publish(&message("", "source", "late", false), &client())
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(100)).await;
    vhost.maintain(weir_core::now_ms()).await;
    let dead = vhost.queue("dead", &client()).expect("queue");
    let (sink, _deliveries) = mpsc::unbounded_channel();
    let channel = ChannelHandle::new(1, 1, sink);
    let mut delivery = None;
    for _ in 0..100 {
        delivery = dead.get(&channel, true).expect("get");
        if delivery.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (delivery, _) = delivery.expect("dead-lettered in time");
    assert_eq!(body(&delivery), "late");
    let headers = delivery.message.headers();
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("x-death")
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("an entry")
    };
    assert_eq!(
        death.inner().get("reason"),
        Some(&AMQPValue::LongString("expired".into()))
    );
    assert_eq!(
        death.inner().get("queue"),
        Some(&AMQPValue::LongString("source".into()))
    );
    assert_eq!(death.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(
        headers.inner().get("x-first-death-reason"),
        Some(&AMQPValue::LongString("expired".into()))
    );
}
