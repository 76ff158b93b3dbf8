//! Queues over topics without a protocol: a stream queue is its topic, a
//! queue over a topic reads committed records of every partition, and
//! counts what the topic's retention removed before it was settled.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::sync::mpsc;
use weir_core::queues::{ChannelHandle, VirtualHost};
use weir_core::{Acks, Broker, BrokerConfig, Replication, TopicConfig};
use weir_log::batch::{encode_batch, NewRecord};
use weir_log::LogConfig;

fn open(dir: &std::path::Path) -> (Arc<Broker>, Arc<VirtualHost>) {
    let broker =
        Arc::new(Broker::open(BrokerConfig::new(dir.join("broker"))).expect("broker opens"));
    let vhost = VirtualHost::open(
        "/",
        &dir.join("vhost"),
        LogConfig::default(),
        Arc::clone(&broker),
    )
    .expect("vhost opens");
    (broker, vhost)
}

async fn produce(broker: &Broker, topic: &str, partition: i32, values: &[&str]) {
    let records: Vec<NewRecord> = values
        .iter()
        .map(|value| NewRecord {
            timestamp: weir_core::now_ms(),
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Vec::new(),
        })
        .collect();
    broker
        .append(topic, partition, encode_batch(&records), Acks::All)
        .expect("append")
        .durable()
        .await
        .expect("durable");
}

fn arguments(entries: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert((*name).into(), AMQPValue::LongString((*value).into()));
    }
    table
}

fn body(delivery: &weir_core::queues::Delivery) -> String {
    String::from_utf8(delivery.message.body.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn a_queue_over_a_topic_counts_what_retention_removed_unsettled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, vhost) = open(dir.path());
    broker
        .create_topic("t", Some(1), Replication::Default, TopicConfig::default(), false)
        .expect("topic");
    let values: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    produce(&broker, "t", 0, &values).await;
    let declared = vhost
        .declare_queue(
            "q",
            false,
            true,
            false,
            false,
            arguments(&[("x-source-topic", "t"), ("x-source-offset", "first")]),
            1,
        )
        .expect("declare");
    assert_eq!(declared.message_count, 10);
    let queue = vhost.queue("q", 1).expect("queue");
    let (sink, _deliveries) = mpsc::unbounded_channel();
    let channel = ChannelHandle::new(1, 1, sink);
    let (acked, _) = queue.get(&channel, false).expect("get").expect("m0");
    let (held, _) = queue.get(&channel, false).expect("get").expect("m1");
    queue.ack(&[acked.id]).expect("ack");

    // Retention takes every record so far: eight were never delivered.
    let log = broker.topic("t").expect("topic").partition(0).expect("p0");
    log.log().roll().expect("roll");
    log.log().delete_segments_below(10).expect("retention");
    vhost.maintain(weir_core::now_ms()).await;
    assert_eq!(queue.lost_to_retention(), 8);
    assert_eq!(queue.message_count(), 0);
    // The held one is not lost: it was delivered, and its ack still works.
    queue.ack(&[held.id]).expect("ack after retention");

    produce(&broker, "t", 0, &["after"]).await;
    let (next, remaining) = queue.get(&channel, true).expect("get").expect("after");
    assert_eq!((body(&next), remaining), ("after".to_owned(), 0));
    assert_eq!(queue.lost_to_retention(), 8);
}

#[tokio::test]
async fn a_topic_read_by_a_queue_cannot_be_deleted_until_the_queue_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, vhost) = open(dir.path());
    broker
        .create_topic("orders", Some(2), Replication::Default, TopicConfig::default(), false)
        .expect("topic");
    vhost
        .declare_queue(
            "workers",
            false,
            true,
            false,
            false,
            arguments(&[("x-source-topic", "orders")]),
            1,
        )
        .expect("declare");
    let refused = broker.delete_topic("orders").expect_err("in use");
    assert!(
        refused.to_string().contains("AMQP queue 'workers' in vhost '/'"),
        "{refused}"
    );
    vhost.delete_queue("workers", false, false, 1).expect("delete queue");
    broker.delete_topic("orders").expect("delete topic");
}

#[tokio::test]
async fn a_stream_queue_is_its_topic_and_goes_when_a_kafka_client_deletes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, vhost) = open(dir.path());
    vhost
        .declare_queue(
            "s",
            false,
            true,
            false,
            false,
            arguments(&[("x-queue-type", "stream")]),
            1,
        )
        .expect("declare");
    let topic = broker.topic("s").expect("the stream queue is a topic");
    assert_eq!(topic.partition_count(), 1);
    produce(&broker, "s", 0, &["a", "b"]).await;
    assert_eq!(vhost.queue("s", 1).expect("queue").message_count(), 2);
    broker.delete_topic("s").expect("delete topic");
    vhost.maintain(weir_core::now_ms()).await;
    assert!(vhost.queues().iter().all(|queue| queue.name() != "s"));
    assert!(vhost.queue("s", 1).is_err());
}
