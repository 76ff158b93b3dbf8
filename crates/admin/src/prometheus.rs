//! `GET /metrics` in Prometheus' text exposition format (0.0.4).
//!
//! Counters and histograms come from [`weir_core::metrics`]; gauges (lag,
//! queue depths, connections, disk, memory) are read at scrape time.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use weir_core::connections::registry;
use weir_core::metrics::{self, HistogramSnapshot, Protocol, DURATION_BUCKETS_S};

use crate::{system, Admin};

/// A text exposition being written.
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in DURATION_BUCKETS_S.iter().zip(&snapshot.cumulative) {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *count as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, snapshot.count as f64);
        self.sample(&format!("{name}_sum"), labels, snapshot.sum_s);
        self.sample(&format!("{name}_count"), labels, snapshot.count as f64);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The scrape.
pub async fn metrics(State(admin): State<std::sync::Arc<Admin>>) -> impl IntoResponse {
    let mut out = Exposition {
        text: String::with_capacity(16 * 1024),
    };
    counters(&mut out);
    histograms(&mut out);
    groups(&mut out, &admin);
    queues(&mut out, &admin);
    resources(&mut out, &admin);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.text,
    )
}

fn counters(out: &mut Exposition) {
    let counters = metrics::global();
    out.family(
        "weir_messages_in_total",
        "counter",
        "Messages received from clients, by protocol and topic (AMQP: exchange).",
    );
    for ((protocol, topic), counter) in counters.messages_in.all() {
        let labels = [("protocol", protocol.name()), ("topic", topic.as_str())];
        out.sample("weir_messages_in_total", &labels, counter.get() as f64);
    }
    out.family(
        "weir_messages_out_total",
        "counter",
        "Messages sent to consumers, by protocol and topic (AMQP: queue).",
    );
    for ((protocol, topic), counter) in counters.messages_out.all() {
        let labels = [("protocol", protocol.name()), ("topic", topic.as_str())];
        out.sample("weir_messages_out_total", &labels, counter.get() as f64);
    }
    // By queue name (summed over virtual hosts, so the labels stay those of Kafka's series).
    let mut delivered: std::collections::BTreeMap<String, u64> = Default::default();
    for ((_, queue), queue_counters) in counters.queues.all() {
        *delivered.entry(queue).or_default() += queue_counters.delivered.get();
    }
    for (queue, count) in delivered {
        let labels = [("protocol", "amqp"), ("topic", queue.as_str())];
        out.sample("weir_messages_out_total", &labels, count as f64);
    }
    for (name, help, family) in [
        (
            "weir_bytes_in_total",
            "Bytes read from client sockets.",
            &counters.bytes_in,
        ),
        (
            "weir_bytes_out_total",
            "Bytes written to client sockets.",
            &counters.bytes_out,
        ),
    ] {
        out.family(name, "counter", help);
        for protocol in [Protocol::Kafka, Protocol::Amqp] {
            let value = family.get(&protocol).get();
            out.sample(name, &[("protocol", protocol.name())], value as f64);
        }
    }
    out.family(
        "weir_connections",
        "gauge",
        "Open client connections, by protocol.",
    );
    for protocol in [Protocol::Kafka, Protocol::Amqp] {
        let count = registry().count(protocol);
        out.sample(
            "weir_connections",
            &[("protocol", protocol.name())],
            count as f64,
        );
    }
    out.family(
        "weir_accept_errors_total",
        "counter",
        "Failed accepts of client connections (out of file descriptors, memory...), by listener.",
    );
    for protocol in [Protocol::Kafka, Protocol::Amqp, Protocol::Http] {
        let count = counters.accept_errors.get(&protocol).get();
        out.sample(
            "weir_accept_errors_total",
            &[("listener", protocol.name())],
            count as f64,
        );
    }
    out.family(
        "weir_corrupt_reads_total",
        "counter",
        "Reads refused because stored data failed its CRC or lies in a range fenced at recovery.",
    );
    out.sample(
        "weir_corrupt_reads_total",
        &[],
        counters.corrupt_reads.get() as f64,
    );
    out.family(
        "weir_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    out.sample("weir_uptime_seconds", &[], counters.uptime().as_secs_f64());
}

fn histograms(out: &mut Exposition) {
    let counters = metrics::global();
    out.family(
        "weir_log_fsync_duration_seconds",
        "histogram",
        "Duration of fdatasync calls on logs.",
    );
    out.histogram(
        "weir_log_fsync_duration_seconds",
        &[],
        &counters.fsync.snapshot(),
    );
    out.family(
        "weir_request_duration_seconds",
        "histogram",
        "Time from reading a request to having its answer, by protocol and API.",
    );
    for ((protocol, api), histogram) in counters.requests.all() {
        let labels = [("protocol", protocol.name()), ("api", api)];
        out.histogram(
            "weir_request_duration_seconds",
            &labels,
            &histogram.snapshot(),
        );
    }
}

fn groups(out: &mut Exposition, admin: &Admin) {
    out.family(
        "weir_consumer_group_lag",
        "gauge",
        "Messages between a group's committed offset and the high watermark.",
    );
    for group in admin.broker.list_groups() {
        for lag in admin.broker.group_lag(&group.group_id) {
            let partition = lag.partition.1.to_string();
            let labels = [
                ("group", group.group_id.as_str()),
                ("topic", lag.partition.0.as_str()),
                ("partition", partition.as_str()),
            ];
            out.sample("weir_consumer_group_lag", &labels, lag.lag as f64);
        }
    }
}

fn queues(out: &mut Exposition, admin: &Admin) {
    out.family(
        "weir_queue_messages",
        "gauge",
        "Messages in AMQP queues, ready or delivered and unacknowledged.",
    );
    let mut consumers = Vec::new();
    let mut lost = Vec::new();
    for (vhost_name, host) in &admin.vhosts {
        for queue in host.queues() {
            if queue.topic().is_some() {
                lost.push((
                    vhost_name.clone(),
                    queue.name().to_owned(),
                    queue.lost_to_retention(),
                ));
            }
            let base = [("vhost", vhost_name.as_str()), ("queue", queue.name())];
            for (state, value) in [
                ("ready", queue.message_count()),
                ("unacked", queue.unacked_count()),
            ] {
                let labels = [base[0], base[1], ("state", state)];
                out.sample("weir_queue_messages", &labels, value as f64);
            }
            consumers.push((
                vhost_name.clone(),
                queue.name().to_owned(),
                queue.consumer_count(),
            ));
        }
    }
    out.family("weir_queue_consumers", "gauge", "Consumers of AMQP queues.");
    for (vhost_name, queue, count) in consumers {
        let labels = [("vhost", vhost_name.as_str()), ("queue", queue.as_str())];
        out.sample("weir_queue_consumers", &labels, f64::from(count));
    }
    out.family(
        "weir_queue_lost_to_retention_total",
        "counter",
        "Messages of queues over a topic that the topic's retention removed before they were settled (since the broker started).",
    );
    for (vhost_name, queue, count) in lost {
        let labels = [("vhost", vhost_name.as_str()), ("queue", queue.as_str())];
        out.sample("weir_queue_lost_to_retention_total", &labels, count as f64);
    }
}

fn resources(out: &mut Exposition, admin: &Admin) {
    let gauges = [
        (
            "weir_disk_free_bytes",
            "Free space on the data directory's file system.",
            system::disk_free_bytes(&admin.data_dir),
        ),
        (
            "weir_disk_free_limit_bytes",
            "Free space below which publishers are blocked.",
            admin.disk_free_limit_bytes,
        ),
        (
            "weir_memory_used_bytes",
            "Resident memory of the broker process.",
            system::memory_rss_bytes(),
        ),
        (
            "weir_memory_high_watermark_bytes",
            "Memory high watermark (40 % of physical memory).",
            system::memory_high_watermark_bytes(),
        ),
    ];
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        out.sample(name, &[], value as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut out = Exposition {
            text: String::new(),
        };
        out.sample("m", &[("topic", "a\"b\\c\nd")], 1.0);
        assert_eq!(out.text, "m{topic=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
