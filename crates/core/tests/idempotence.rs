//! An idempotent producer's retry is recognised across a broker restart,
//! clean or not: the producer state is rebuilt from its snapshot and the log.

use bytes::Bytes;
use weir_core::{Acks, Broker, BrokerConfig, Principal, Replication, TopicConfig};
use weir_log::batch::{encode_batch, NewRecord};

/// A one-record batch from producer `producer_id`, epoch 0, at `sequence`.
fn idempotent_batch(producer_id: i64, sequence: i32, value: &str) -> Bytes {
    let mut bytes = encode_batch(&[NewRecord {
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Vec::new(),
    }])
    .to_vec();
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&0i16.to_be_bytes());
    bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

async fn append(broker: &Broker, batch: Bytes) -> (u64, u64) {
    let appended = broker
        .append("t", 0, batch, Acks::All, &Principal::internal())
        .expect("append")
        .written()
        .await
        .expect("written");
    appended.durable().await.expect("durable");
    let end = broker
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition")
        .offsets()
        .log_end_offset;
    (appended.base_offset, end)
}

#[tokio::test]
async fn a_retry_after_a_restart_is_not_appended_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Broker::open(BrokerConfig::new(dir.path())).expect("open");
    {
        let broker = open();
        broker
            .create_topic(
                "t",
                Some(1),
                Replication::Default,
                TopicConfig::default(),
                false,
                &Principal::internal(),
            )
            .expect("create");
        assert_eq!(append(&broker, idempotent_batch(7, 0, "a")).await, (0, 1));
        assert_eq!(append(&broker, idempotent_batch(7, 1, "b")).await, (1, 2));
        // Dropped without shutdown: no snapshot, as after kill -9.
    }
    {
        let broker = open();
        assert_eq!(
            append(&broker, idempotent_batch(7, 1, "b")).await,
            (1, 2),
            "retry after a crash"
        );
        assert_eq!(append(&broker, idempotent_batch(7, 2, "c")).await, (2, 3));
        broker.shutdown().expect("clean shutdown");
    }
    let broker = open();
    assert_eq!(
        append(&broker, idempotent_batch(7, 2, "c")).await,
        (2, 3),
        "retry after a clean restart"
    );
    // The sequence is checked in write order, when the write runs.
    assert!(broker
        .append(
            "t",
            0,
            idempotent_batch(7, 9, "gap"),
            Acks::All,
            &Principal::internal()
        )
        .expect("queued")
        .written()
        .await
        .is_err());
}
