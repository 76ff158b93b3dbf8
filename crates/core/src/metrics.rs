//! Process-wide counters and histograms, plain atomics, read by the HTTP
//! API and `/metrics`. Front-ends count what crosses the wire (messages and
//! bytes per protocol, request durations); the core counts what happens to
//! queues; the log reports fsync durations through
//! [`weir_log::observe_syncs`], installed by [`install`].
//!
//! Labelled families are maps from labels to shared atomics: the map is
//! locked only to find (or, the first time, insert) a series, never while
//! counting.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

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
    /// The label value, e.g. `kafka`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka",
            Protocol::Amqp => "amqp",
            Protocol::Http => "http",
        }
    }
}

/// Upper bounds of the duration histograms' buckets, in seconds (as
/// Prometheus client libraries' defaults, with finer steps below 5 ms where
/// fsyncs and most requests land).
pub const DURATION_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of durations with [`DURATION_BUCKETS_S`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A histogram's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts for each bound of [`DURATION_BUCKETS_S`], then `+Inf`.
    pub cumulative: Vec<u64>,
    /// Sum of observations, in seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let index = DURATION_BUCKETS_S
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS_S.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts, cumulative as Prometheus wants them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_s: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            // The +Inf bucket, so count and buckets always agree.
            count: running,
        }
    }
}

/// A family of series keyed by their labels.
#[derive(Debug)]
pub struct Family<K, V> {
    series: RwLock<HashMap<K, Arc<V>>>,
}

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Family {
            series: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone + Ord, V: Default> Family<K, V> {
    /// The series for `key`, created on first use.
    pub fn get(&self, key: &K) -> Arc<V> {
        if let Some(series) = self.series.read().get(key) {
            return Arc::clone(series);
        }
        Arc::clone(self.series.write().entry(key.clone()).or_default())
    }

    /// Every series, sorted by labels.
    pub fn all(&self) -> Vec<(K, Arc<V>)> {
        let mut all: Vec<_> = self
            .series
            .read()
            .iter()
            .map(|(key, value)| (key.clone(), Arc::clone(value)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Drops the series for which `keep` is false (deleted topics, queues).
    pub fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.series.write().retain(|key, _| keep(key));
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `amount`.
    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Published and delivered messages of one queue.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Messages stored in the queue.
    pub published: Counter,
    /// Messages handed to consumers or `basic.get`.
    pub delivered: Counter,
}

/// Per-queue counters by virtual host, then queue: found without
/// allocating, as they are counted for every delivery.
#[derive(Debug, Default)]
pub struct QueueFamily {
    series: RwLock<HashMap<String, HashMap<String, Arc<QueueCounters>>>>,
}

impl QueueFamily {
    /// The counters of one queue, created on first use.
    pub fn get(&self, vhost: &str, queue: &str) -> Arc<QueueCounters> {
        if let Some(counters) = self
            .series
            .read()
            .get(vhost)
            .and_then(|queues| queues.get(queue))
        {
            return Arc::clone(counters);
        }
        let mut series = self.series.write();
        let queues = series.entry(vhost.to_owned()).or_default();
        Arc::clone(queues.entry(queue.to_owned()).or_default())
    }

    /// Every queue's counters, sorted by vhost and queue.
    pub fn all(&self) -> Vec<(QueueKey, Arc<QueueCounters>)> {
        let mut all: Vec<_> = self
            .series
            .read()
            .iter()
            .flat_map(|(vhost, queues)| {
                queues
                    .iter()
                    .map(|(queue, counters)| ((vhost.clone(), queue.clone()), Arc::clone(counters)))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Labels of per-destination message counters: protocol and topic (for
/// AMQP publishes the exchange; AMQP deliveries are counted per queue in
/// [`Metrics::queues`]).
pub type DestinationKey = (Protocol, String);
/// Labels of a queue's counters: virtual host and queue.
pub type QueueKey = (String, String);
/// Labels of request durations: protocol and API (Kafka API or AMQP method).
pub type RequestKey = (Protocol, &'static str);

/// Every counter the broker keeps.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Messages received, by protocol and topic.
    pub messages_in: Family<DestinationKey, Counter>,
    /// Messages sent to consumers, by protocol and topic.
    pub messages_out: Family<DestinationKey, Counter>,
    /// Bytes received from clients, by protocol.
    pub bytes_in: Family<Protocol, Counter>,
    /// Bytes sent to clients, by protocol.
    pub bytes_out: Family<Protocol, Counter>,
    /// Per queue: published and delivered (AMQP's messages out).
    pub queues: QueueFamily,
    /// Duration of every `fdatasync` of a log.
    pub fsync: Histogram,
    /// Time from reading a request to having its answer, by protocol and API.
    pub requests: Family<RequestKey, Histogram>,
    /// Client-visible errors, by protocol.
    pub errors: Family<Protocol, Counter>,
    /// Failed `accept` calls, by listener (see [`crate::listener`]).
    pub accept_errors: Family<Protocol, Counter>,
    /// Reads refused because the stored data failed its checks.
    pub corrupt_reads: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            queues: QueueFamily::default(),
            fsync: Histogram::default(),
            requests: Family::default(),
            errors: Family::default(),
            accept_errors: Family::default(),
            corrupt_reads: Counter::default(),
        }
    }

    /// Time since the process started keeping metrics.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts `count` messages received for `topic`.
    pub fn message_in(&self, protocol: Protocol, topic: &str, count: u64) {
        self.messages_in
            .get(&(protocol, topic.to_owned()))
            .add(count);
    }

    /// Counts `count` messages sent from `topic`.
    pub fn message_out(&self, protocol: Protocol, topic: &str, count: u64) {
        self.messages_out
            .get(&(protocol, topic.to_owned()))
            .add(count);
    }

    /// Counts bytes received from a client.
    pub fn bytes_received(&self, protocol: Protocol, bytes: u64) {
        self.bytes_in.get(&protocol).add(bytes);
    }

    /// Counts bytes sent to a client.
    pub fn bytes_sent(&self, protocol: Protocol, bytes: u64) {
        self.bytes_out.get(&protocol).add(bytes);
    }

    /// The counters of one queue.
    pub fn queue(&self, vhost: &str, queue: &str) -> Arc<QueueCounters> {
        self.queues.get(vhost, queue)
    }

    /// Records how long a request took.
    pub fn request(&self, protocol: Protocol, api: &'static str, duration: Duration) {
        self.requests.get(&(protocol, api)).observe(duration);
    }

    /// Messages received so far over one protocol.
    pub fn messages_in_total(&self, protocol: Protocol) -> u64 {
        sum_of(&self.messages_in, protocol)
    }

    /// Messages sent so far over one protocol (AMQP: every queue's deliveries).
    pub fn messages_out_total(&self, protocol: Protocol) -> u64 {
        match protocol {
            Protocol::Amqp => self
                .queues
                .all()
                .iter()
                .map(|(_, counters)| counters.delivered.get())
                .sum(),
            other => sum_of(&self.messages_out, other),
        }
    }
}

fn sum_of(family: &Family<DestinationKey, Counter>, protocol: Protocol) -> u64 {
    family
        .all()
        .iter()
        .filter(|((p, _), _)| *p == protocol)
        .map(|(_, counter)| counter.get())
        .sum()
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Starts the clock and connects the log's fsync timings to the histogram.
pub fn install() {
    global();
    weir_log::observe_syncs(|duration| global().fsync.observe(duration));
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

/// Counts one message handed out by a queue (to a consumer or `basic.get`).
pub fn count_delivery(vhost: &str, queue: &str) {
    global().queue(vhost, queue).delivered.add(1);
}

/// Counts the messages a queue stored (`accepted[i]`: message i was stored).
pub fn count_stored(vhost: &str, queue: &str, accepted: &[bool]) {
    let stored = accepted.iter().filter(|&&stored| stored).count() as u64;
    global().queue(vhost, queue).published.add(stored);
}

/// Counts AMQP messages published, by exchange (`amq.default` for "").
pub fn count_published<'a>(messages: impl Iterator<Item = &'a crate::queues::Message>) {
    let metrics = global();
    let mut run: Option<(&str, u64)> = None;
    for message in messages {
        match &mut run {
            Some((exchange, count)) if *exchange == message.exchange => *count += 1,
            _ => {
                flush_published(metrics, run.take());
                run = Some((&message.exchange, 1));
            }
        }
    }
    flush_published(metrics, run);
}

fn flush_published(metrics: &Metrics, run: Option<(&str, u64)>) {
    if let Some((exchange, count)) = run {
        let exchange = if exchange.is_empty() {
            "amq.default"
        } else {
            exchange
        };
        metrics.message_in(Protocol::Amqp, exchange, count);
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
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.cumulative[0], 1);
        assert_eq!(snapshot.cumulative[DURATION_BUCKETS_S.len() - 1], 2);
        assert_eq!(*snapshot.cumulative.last().unwrap(), 3);
        assert!((snapshot.sum_s - 10.00305).abs() < 1e-6);
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
