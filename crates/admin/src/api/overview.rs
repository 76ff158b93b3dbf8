//! `GET /api/overview`: totals for the console's header and charts.

use axum::Json;
use serde_json::{json, Value};
use weir_core::metrics::Protocol;

use crate::api::State;
use crate::rates::totals;
use crate::system;

/// Counts, totals and resources now.
pub async fn get(axum::extract::State(admin): State) -> Json<Value> {
    let counters = admin.broker.metrics();
    let connections = admin.broker.connections();
    let (kafka_in, kafka_out) = totals(counters, Protocol::Kafka);
    let (amqp_in, amqp_out) = totals(counters, Protocol::Amqp);
    let queues: usize = admin.vhosts.values().map(|v| v.queues().len()).sum();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "cluster_id": admin.broker.cluster_id(),
        "uptime_s": counters.uptime().as_secs(),
        "connections": {
            "kafka": connections.count(Protocol::Kafka),
            "amqp": connections.count(Protocol::Amqp),
        },
        "topics": admin.broker.topics().len(),
        "queues": queues,
        "groups": admin.broker.list_groups().len(),
        "messages_in_total": { "kafka": kafka_in, "amqp": amqp_in },
        "messages_out_total": { "kafka": kafka_out, "amqp": amqp_out },
        "bytes_in_total": counters.bytes_received_total(),
        "bytes_out_total": counters.bytes_sent_total(),
        "disk_free_bytes": system::disk_free_bytes(&admin.data_dir),
        "disk_free_limit_bytes": admin.disk_free_limit_bytes,
        "memory_rss_bytes": system::memory_rss_bytes(),
        "memory_high_watermark_bytes": system::memory_high_watermark_bytes(),
    }))
}
