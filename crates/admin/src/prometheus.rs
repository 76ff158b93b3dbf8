//! `GET /metrics` in Prometheus' text exposition format (0.0.4).
//!
//! Counters and histograms are the node's [`weir_core::metrics::Metrics`];
//! gauges (connections, uptime, lag, queue depths, disk, memory) and the
//! queues' retention losses are read at scrape time into a registry made
//! for the scrape. `prometheus-client` writes both.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::{Metric, Registry};
use weir_core::metrics::Protocol;

use crate::{system, Admin};

/// Label names and values of one series.
type Labels<const N: usize> = [(&'static str, String); N];

/// The scrape.
pub async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = admin.broker.metrics().encode(&mut text);
    let _ = prometheus_text::encode(&mut text, &scrape(&admin));
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
}

/// The families measured now. Help texts lose their final full stop:
/// `prometheus-client` adds it.
fn scrape(admin: &Admin) -> Registry {
    let mut registry = Registry::default();
    let connections: Family<Labels<1>, Gauge> = family(
        &mut registry,
        "weir_connections",
        "Open client connections, by protocol",
    );
    for protocol in [Protocol::Kafka, Protocol::Amqp] {
        let count = admin.broker.connections().count(protocol);
        connections
            .get_or_create(&[("protocol", protocol.name().to_owned())])
            .set(saturating(count as u64));
    }
    let uptime: Gauge<f64, AtomicU64> = family(
        &mut registry,
        "weir_uptime_seconds",
        "Seconds since the broker started",
    );
    uptime.set(admin.broker.metrics().uptime().as_secs_f64());
    groups(&mut registry, admin);
    queues(&mut registry, admin);
    resources(&mut registry, admin);
    registry
}

/// Registers a new metric (or family) and returns it to be filled.
fn family<M: Metric + TypedMetric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn groups(registry: &mut Registry, admin: &Admin) {
    let lags: Family<Labels<3>, Gauge> = family(
        registry,
        "weir_consumer_group_lag",
        "Messages between a group's committed offset and the high watermark",
    );
    for group in admin.broker.list_groups() {
        for lag in admin.broker.group_lag(&group.group_id) {
            let labels = [
                ("group", group.group_id.clone()),
                ("topic", lag.partition.0),
                ("partition", lag.partition.1.to_string()),
            ];
            lags.get_or_create(&labels).set(lag.lag);
        }
    }
}

fn queues(registry: &mut Registry, admin: &Admin) {
    let messages: Family<Labels<3>, Gauge> = family(
        registry,
        "weir_queue_messages",
        "Messages in AMQP queues, ready or delivered and unacknowledged",
    );
    let consumers: Family<Labels<2>, Gauge> =
        family(registry, "weir_queue_consumers", "Consumers of AMQP queues");
    let lost: Family<Labels<2>, Counter> = family(
        registry,
        "weir_queue_lost_to_retention",
        "Messages of queues over a topic that the topic's retention removed before they were settled (since the broker started)",
    );
    for (vhost_name, host) in &admin.vhosts {
        for queue in host.queues() {
            let labels = [
                ("vhost", vhost_name.clone()),
                ("queue", queue.name().to_owned()),
            ];
            for (state, value) in [
                ("ready", queue.message_count()),
                ("unacked", queue.unacked_count()),
            ] {
                let [vhost, name] = labels.clone();
                messages
                    .get_or_create(&[vhost, name, ("state", state.to_owned())])
                    .set(saturating(value));
            }
            consumers
                .get_or_create(&labels)
                .set(i64::from(queue.consumer_count()));
            if queue.topic().is_some() {
                lost.get_or_create(&labels)
                    .inc_by(queue.lost_to_retention());
            }
        }
    }
}

fn resources(registry: &mut Registry, admin: &Admin) {
    let gauges = [
        (
            "weir_disk_free_bytes",
            "Free space on the data directory's file system",
            system::disk_free_bytes(&admin.data_dir),
        ),
        (
            "weir_disk_free_limit_bytes",
            "Free space below which publishers are blocked",
            admin.disk_free_limit_bytes,
        ),
        (
            "weir_memory_used_bytes",
            "Resident memory of the broker process",
            system::memory_rss_bytes(),
        ),
        (
            "weir_memory_high_watermark_bytes",
            "Memory high watermark (40 % of physical memory)",
            system::memory_high_watermark_bytes(),
        ),
        (
            "weir_under_replicated_partitions",
            "Partitions this node leads with fewer replicas in sync than assigned",
            admin.broker.under_replicated_partitions() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge: Gauge = family(registry, name, help);
        gauge.set(saturating(value));
    }
}
