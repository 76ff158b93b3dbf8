//! The node's counters and histograms, kept with `prometheus-client` and
//! read by the HTTP API and `/metrics`. Each node owns one [`Metrics`]
//! (made by [`Broker::open`](crate::Broker::open), reached with
//! [`Broker::metrics`](crate::Broker::metrics)), never a process global, so
//! several nodes can run in one process. Front-ends count what crosses the
//! wire (messages and bytes per protocol, request durations); the core
//! counts what happens to queues; the node's logs report fsync durations
//! through [`weir_log::SyncObserver`]. Gauges (queue depths, lag,
//! connections, disk, memory) are measured by the HTTP API when scraped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Kafka clients.
    Kafka,
    /// AMQP 0-9-1 clients.
    Amqp,
    /// The HTTP API.
    Http,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Kafka, Protocol::Amqp, Protocol::Http];

    /// The label value, e.g. `kafka`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka",
            Protocol::Amqp => "amqp",
            Protocol::Http => "http",
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// Upper bounds of the duration histograms' buckets, in seconds (as
/// Prometheus client libraries' defaults, with finer steps below 5 ms where
/// fsyncs and most requests land).
pub const DURATION_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_S)
}

/// Labels of per-destination message counters: protocol and topic (for
/// AMQP publishes the exchange, for AMQP deliveries the queue).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TopicLabels {
    protocol: Protocol,
    topic: String,
}

/// Labels of per-protocol counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

/// Labels of per-listener counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: Protocol,
}

/// Labels of request durations: protocol and API (Kafka API or AMQP method).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    protocol: Protocol,
    api: &'static str,
}

/// Published and delivered messages of one queue.
#[derive(Debug)]
pub struct QueueCounters {
    /// Messages stored in the queue.
    pub published: Counter,
    /// Messages handed to consumers or `basic.get`.
    pub delivered: Counter,
    /// The queue's series of `weir_messages_out_total` (`protocol="amqp"`),
    /// which queues of one name in several virtual hosts share.
    messages_out: Counter,
}

/// Per-queue counters by virtual host, then queue: found without
/// allocating, as they are counted for every delivery.
type QueueCounterMap = HashMap<String, HashMap<String, Arc<QueueCounters>>>;

/// Every counter and histogram a node keeps, and the registry that
/// writes them out.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    registry: Registry,
    messages_in: Family<TopicLabels, Counter>,
    messages_out: Family<TopicLabels, Counter>,
    /// Sums of `messages_in` and `messages_out` by protocol, indexed by
    /// `Protocol as usize`, for the HTTP API's overview.
    messages_in_totals: [Counter; 3],
    messages_out_totals: [Counter; 3],
    bytes_in: Family<ProtocolLabels, Counter>,
    bytes_out: Family<ProtocolLabels, Counter>,
    queues: RwLock<QueueCounterMap>,
    fsync: Histogram,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    accept_errors: Family<ListenerLabels, Counter>,
    corrupt_reads: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A node's metrics, all zero; the uptime counts from now.
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            started: Instant::now(),
            registry: Registry::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            messages_in_totals: Default::default(),
            messages_out_totals: Default::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            queues: RwLock::default(),
            fsync: duration_histogram(),
            requests: Family::new_with_constructor(duration_histogram),
            accept_errors: Family::default(),
            corrupt_reads: Counter::default(),
        };
        metrics.register();
        // Series that are always shown, zero until something happens.
        for protocol in [Protocol::Kafka, Protocol::Amqp] {
            metrics
                .bytes_in
                .get_or_create_owned(&ProtocolLabels { protocol });
            metrics
                .bytes_out
                .get_or_create_owned(&ProtocolLabels { protocol });
        }
        for listener in Protocol::ALL {
            metrics.accept_errors(listener);
        }
        metrics
    }

    /// Names the families, with their help text (`prometheus-client` adds
    /// the `_total` of counters and the final full stop).
    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "weir_messages_in",
            "Messages received from clients, by protocol and topic (AMQP: exchange)",
            self.messages_in.clone(),
        );
        registry.register(
            "weir_messages_out",
            "Messages sent to consumers, by protocol and topic (AMQP: queue)",
            self.messages_out.clone(),
        );
        registry.register(
            "weir_bytes_in",
            "Bytes read from client sockets",
            self.bytes_in.clone(),
        );
        registry.register(
            "weir_bytes_out",
            "Bytes written to client sockets",
            self.bytes_out.clone(),
        );
        registry.register(
            "weir_accept_errors",
            "Failed accepts of client connections (out of file descriptors, memory...), by listener",
            self.accept_errors.clone(),
        );
        registry.register(
            "weir_corrupt_reads",
            "Reads refused because stored data failed its CRC or lies in a range fenced at recovery",
            self.corrupt_reads.clone(),
        );
        registry.register(
            "weir_log_fsync_duration_seconds",
            "Duration of fdatasync calls on logs",
            self.fsync.clone(),
        );
        registry.register(
            "weir_request_duration_seconds",
            "Time from reading a request to having its answer, by protocol and API",
            self.requests.clone(),
        );
    }

    /// Writes every family in Prometheus' text format (0.0.4).
    ///
    /// # Errors
    ///
    /// Those of `out`'s `write_str`: none for a `String`.
    pub fn encode(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }

    /// Time since the node started keeping metrics.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts `count` messages received for `topic`.
    pub fn message_in(&self, protocol: Protocol, topic: &str, count: u64) {
        let labels = TopicLabels {
            protocol,
            topic: topic.to_owned(),
        };
        self.messages_in.get_or_create(&labels).inc_by(count);
        self.messages_in_totals[protocol as usize].inc_by(count);
    }

    /// Counts `count` messages sent from `topic` (AMQP deliveries: see
    /// [`Metrics::count_delivery`]).
    pub fn message_out(&self, protocol: Protocol, topic: &str, count: u64) {
        let labels = TopicLabels {
            protocol,
            topic: topic.to_owned(),
        };
        self.messages_out.get_or_create(&labels).inc_by(count);
        self.messages_out_totals[protocol as usize].inc_by(count);
    }

    /// Counts bytes received from a client.
    pub fn bytes_received(&self, protocol: Protocol, bytes: u64) {
        self.bytes_in
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(bytes);
    }

    /// Counts bytes sent to a client.
    pub fn bytes_sent(&self, protocol: Protocol, bytes: u64) {
        self.bytes_out
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(bytes);
    }

    /// Bytes received so far over every protocol.
    pub fn bytes_received_total(&self) -> u64 {
        sum_by_protocol(&self.bytes_in)
    }

    /// Bytes sent so far over every protocol.
    pub fn bytes_sent_total(&self) -> u64 {
        sum_by_protocol(&self.bytes_out)
    }

    /// The counters of one queue, created on first use.
    pub fn queue(&self, vhost: &str, queue: &str) -> Arc<QueueCounters> {
        if let Some(counters) = self
            .queues
            .read()
            .get(vhost)
            .and_then(|queues| queues.get(queue))
        {
            return Arc::clone(counters);
        }
        let mut queues = self.queues.write();
        let counters = queues
            .entry(vhost.to_owned())
            .or_default()
            .entry(queue.to_owned())
            .or_insert_with(|| {
                let labels = TopicLabels {
                    protocol: Protocol::Amqp,
                    topic: queue.to_owned(),
                };
                Arc::new(QueueCounters {
                    published: Counter::default(),
                    delivered: Counter::default(),
                    messages_out: self.messages_out.get_or_create_owned(&labels),
                })
            });
        Arc::clone(counters)
    }

    /// Records how long a request took.
    pub fn request(&self, protocol: Protocol, api: &'static str, duration: Duration) {
        self.requests
            .get_or_create(&RequestLabels { protocol, api })
            .observe(duration.as_secs_f64());
    }

    /// The counter of failed accepts of one listener.
    pub fn accept_errors(&self, listener: Protocol) -> Counter {
        self.accept_errors
            .get_or_create_owned(&ListenerLabels { listener })
    }

    /// Counts one read refused because the stored data failed its checks.
    pub fn corrupt_read(&self) {
        self.corrupt_reads.inc();
    }

    /// Messages received so far over one protocol.
    pub fn messages_in_total(&self, protocol: Protocol) -> u64 {
        self.messages_in_totals[protocol as usize].get()
    }

    /// Messages sent so far over one protocol (AMQP: every queue's deliveries).
    pub fn messages_out_total(&self, protocol: Protocol) -> u64 {
        self.messages_out_totals[protocol as usize].get()
    }

    /// Counts one message handed out by a queue (to a consumer or `basic.get`).
    pub fn count_delivery(&self, vhost: &str, queue: &str) {
        let counters = self.queue(vhost, queue);
        counters.delivered.inc();
        counters.messages_out.inc();
        self.messages_out_totals[Protocol::Amqp as usize].inc();
    }

    /// Counts the messages a queue stored (`accepted[i]`: message i was stored).
    pub fn count_stored(&self, vhost: &str, queue: &str, accepted: &[bool]) {
        let stored = accepted.iter().filter(|&&stored| stored).count() as u64;
        self.queue(vhost, queue).published.inc_by(stored);
    }

    /// Counts AMQP messages published, by exchange (`amq.default` for "").
    pub fn count_published<'a>(&self, messages: impl Iterator<Item = &'a crate::queues::Message>) {
        let mut run: Option<(&str, u64)> = None;
        for message in messages {
            match &mut run {
                Some((exchange, count)) if *exchange == message.exchange => *count += 1,
                _ => {
                    self.flush_published(run.take());
                    run = Some((&message.exchange, 1));
                }
            }
        }
        self.flush_published(run);
    }

    fn flush_published(&self, run: Option<(&str, u64)>) {
        if let Some((exchange, count)) = run {
            let exchange = if exchange.is_empty() {
                "amq.default"
            } else {
                exchange
            };
            self.message_in(Protocol::Amqp, exchange, count);
        }
    }
}

impl weir_log::SyncObserver for Metrics {
    fn synced(&self, duration: Duration) {
        self.fsync.observe(duration.as_secs_f64());
    }
}

fn sum_by_protocol(family: &Family<ProtocolLabels, Counter>) -> u64 {
    Protocol::ALL
        .iter()
        .filter_map(|&protocol| family.get(&ProtocolLabels { protocol }))
        .map(|counter| counter.get())
        .sum()
}

/// Samples of counters over a sliding window, for rates per second.
#[derive(Debug)]
pub struct Rates<K> {
    window: Duration,
    samples: Mutex<HashMap<K, Vec<(Instant, i64)>>>,
}

impl<K: Eq + Hash + Clone> Rates<K> {
    /// Rates over the last `window`.
    pub fn new(window: Duration) -> Rates<K> {
        Rates {
            window,
            samples: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `key`'s counter was `value` at `now`.
    pub fn record(&self, key: K, value: i64, now: Instant) {
        let mut samples = self.samples.lock();
        let series = samples.entry(key).or_default();
        series.push((now, value));
        let window = self.window;
        // Keep one sample older than the window, so the rate spans all of it.
        while series.len() > 2 && now.duration_since(series[1].0) > window {
            series.remove(0);
        }
    }

    /// Forgets keys not sampled in the last window (deleted queues, groups).
    pub fn forget_stale(&self, now: Instant) {
        let window = self.window;
        self.samples.lock().retain(|_, series| {
            series
                .last()
                .is_some_and(|(at, _)| now.duration_since(*at) <= window)
        });
    }

    /// Increase per second between the oldest and newest sample, if there
    /// are two samples at least 0.5 s apart.
    pub fn per_second(&self, key: &K) -> Option<f64> {
        let samples = self.samples.lock();
        let series = samples.get(key)?;
        let (first_at, first) = *series.first()?;
        let (last_at, last) = *series.last()?;
        let elapsed_s = last_at.duration_since(first_at).as_secs_f64();
        (elapsed_s >= 0.5).then(|| ((last - first) as f64 / elapsed_s).max(0.0))
    }
}

/// Records in a run of stored batches (as a fetch returns them).
pub fn count_records(mut batches: &[u8]) -> u64 {
    let mut records = 0;
    while let Ok(header) = weir_log::batch::BatchHeader::parse(batches) {
        let total = header.total_bytes();
        if total > batches.len() || total == 0 {
            break;
        }
        if !header.is_control() {
            records += u64::try_from(header.records_count).unwrap_or(0);
        }
        batches = &batches[total..];
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_keeps_the_families_names_and_labels() {
        let metrics = Metrics::new();
        metrics.message_in(Protocol::Kafka, "a\"b", 3);
        metrics.count_delivery("/", "q");
        metrics.count_delivery("other", "q");
        metrics.request(Protocol::Amqp, "queue.declare", Duration::from_millis(3));
        weir_log::SyncObserver::synced(&metrics, Duration::from_micros(50));
        let mut text = String::new();
        metrics.encode(&mut text).expect("encodes");
        for line in [
            "# HELP weir_messages_in_total Messages received from clients, by protocol and topic (AMQP: exchange).",
            "# TYPE weir_messages_in_total counter",
            "weir_messages_in_total{protocol=\"kafka\",topic=\"a\\\"b\"} 3",
            "weir_messages_out_total{protocol=\"amqp\",topic=\"q\"} 2",
            "weir_bytes_in_total{protocol=\"amqp\"} 0",
            "weir_accept_errors_total{listener=\"http\"} 0",
            "weir_corrupt_reads_total 0",
            "# TYPE weir_log_fsync_duration_seconds histogram",
            "weir_log_fsync_duration_seconds_bucket{le=\"0.0001\"} 1",
            "weir_log_fsync_duration_seconds_count 1",
            "weir_request_duration_seconds_bucket{protocol=\"amqp\",api=\"queue.declare\",le=\"0.0025\"} 0",
            "weir_request_duration_seconds_bucket{protocol=\"amqp\",api=\"queue.declare\",le=\"0.005\"} 1",
            "weir_request_duration_seconds_bucket{protocol=\"amqp\",api=\"queue.declare\",le=\"+Inf\"} 1",
        ] {
            assert!(text.lines().any(|got| got == line), "{line}\nnot in\n{text}");
        }
        assert_eq!(metrics.messages_in_total(Protocol::Kafka), 3);
        assert_eq!(metrics.messages_out_total(Protocol::Amqp), 2);
        assert_eq!(metrics.queue("/", "q").delivered.get(), 1);
    }

    #[test]
    fn rates_span_the_window() {
        let rates = Rates::new(Duration::from_secs(60));
        let start = Instant::now();
        rates.record("q", 0, start);
        assert_eq!(rates.per_second(&"q"), None);
        rates.record("q", 100, start + Duration::from_secs(10));
        assert_eq!(rates.per_second(&"q"), Some(10.0));
    }

    #[test]
    fn counts_records_of_batches() {
        let records: Vec<_> = (0..3)
            .map(|i| weir_log::batch::NewRecord {
                key: None,
                value: Some(bytes::Bytes::from(vec![i; 4])),
                headers: Vec::new(),
                timestamp: 0,
            })
            .collect();
        let one = weir_log::batch::encode_batch(&records);
        let two = [one.as_ref(), one.as_ref()].concat();
        assert_eq!(count_records(&two), 6);
        assert_eq!(count_records(&two[..two.len() - 1]), 3);
    }
}
