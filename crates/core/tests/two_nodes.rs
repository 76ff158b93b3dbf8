//! Two nodes in one process keep their own metrics and connection
//! registries: nothing one of them counts shows in the other's exposition.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::FieldTable;
use bytes::Bytes;
use weir_core::metrics::Protocol;
use weir_core::queues::{Message, VirtualHost};
use weir_core::{Acks, Broker, BrokerConfig, Principal, Replication, TopicConfig};
use weir_log::batch::{encode_batch, NewRecord};
use weir_log::LogConfig;

fn node(dir: &std::path::Path) -> (Arc<Broker>, Arc<VirtualHost>) {
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

fn exposition(broker: &Broker) -> String {
    let mut text = String::new();
    broker.metrics().encode(&mut text).expect("encodes");
    text
}

/// The value of the sample line `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_produce_on_one_node_is_not_counted_by_the_other() {
    let (one_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, one_vhost) = node(one_dir.path());
    let (other, _other_vhost) = node(other_dir.path());
    let fsyncs = "weir_log_fsync_duration_seconds_count";
    let syncs_before = sample(&exposition(&other), fsyncs);

    one.create_topic(
        "t",
        Some(1),
        Replication::Default,
        TopicConfig::default(),
        false,
        &Principal::internal(),
    )
    .expect("topic");
    let record = NewRecord {
        timestamp: weir_core::now_ms(),
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Vec::new(),
    };
    one.append(
        "t",
        0,
        encode_batch(&[record]),
        Acks::All,
        &Principal::internal(),
    )
    .expect("append")
    .written()
    .await
    .expect("written")
    .durable()
    .await
    .expect("durable");
    let client = Principal::user("guest", 1);
    one_vhost
        .declare_queue(
            "q",
            false,
            true,
            false,
            false,
            FieldTable::default(),
            &client,
        )
        .expect("declare");
    let message = Message::with_properties(
        String::new(),
        "q".into(),
        BasicProperties::default().with_delivery_mode(2),
        Bytes::from_static(b"m"),
        weir_core::now_ms(),
    )
    .expect("properties encode");
    one_vhost.publish(&message, &client).expect("publish");
    let peer = "127.0.0.1:4000".parse().expect("address");
    let _registration = one.connections().register(Protocol::Amqp, peer);

    let published = r#"weir_messages_in_total{protocol="amqp",topic="amq.default"}"#;
    let (one_text, other_text) = (exposition(&one), exposition(&other));
    assert_eq!(sample(&one_text, published), Some(1.0), "{one_text}");
    assert!(sample(&one_text, fsyncs).is_some_and(|count| count >= 1.0));
    assert_eq!(sample(&other_text, published), None, "{other_text}");
    assert_eq!(sample(&other_text, fsyncs), syncs_before, "{other_text}");
    assert_eq!(one.metrics().messages_in_total(Protocol::Amqp), 1);
    assert_eq!(other.metrics().messages_in_total(Protocol::Amqp), 0);
    assert_eq!(one.connections().count(Protocol::Amqp), 1);
    assert_eq!(other.connections().count(Protocol::Amqp), 0);
}
