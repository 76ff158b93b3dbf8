//! Rates per second measured by the broker: every [`SAMPLE_INTERVAL`] the
//! queues' publish/deliver counters, the groups' committed offsets and the
//! per-protocol message totals are sampled; rates span the last minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weir_core::metrics::{Metrics, Protocol, Rates};

use crate::Admin;

/// How often counters are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// How far back rates look.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What a rate is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// Messages stored in a queue (vhost, queue).
    QueuePublished(String, String),
    /// Messages delivered from a queue (vhost, queue).
    QueueDelivered(String, String),
    /// A group's committed offset (group, topic, partition).
    Committed(String, String, i32),
}

/// The samples.
#[derive(Debug)]
pub struct Sampler {
    rates: Rates<RateKey>,
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler {
            rates: Rates::new(RATE_WINDOW),
        }
    }
}

impl Sampler {
    /// Increase per second of `key` over the window, once two samples exist.
    pub fn per_second(&self, key: &RateKey) -> Option<f64> {
        self.rates.per_second(key)
    }

    fn sample(&self, admin: &Admin, now: Instant) {
        let counters = admin.broker.metrics();
        for (vhost_name, vhost) in &admin.vhosts {
            for queue in vhost.queues() {
                let queue_counters = counters.queue(vhost_name, queue.name());
                let key = (vhost_name.clone(), queue.name().to_owned());
                let published = i64::try_from(queue_counters.published.get()).unwrap_or(i64::MAX);
                let delivered = i64::try_from(queue_counters.delivered.get()).unwrap_or(i64::MAX);
                self.rates.record(
                    RateKey::QueuePublished(key.0.clone(), key.1.clone()),
                    published,
                    now,
                );
                self.rates
                    .record(RateKey::QueueDelivered(key.0, key.1), delivered, now);
            }
        }
        for group in admin.broker.list_groups() {
            for lag in admin.broker.group_lag(&group.group_id) {
                let (topic, partition) = lag.partition;
                let key = RateKey::Committed(group.group_id.clone(), topic, partition);
                self.rates.record(key, lag.committed, now);
            }
        }
        self.rates.forget_stale(now);
    }
}

/// Samples until `stopping` turns true.
pub async fn run(admin: Arc<Admin>, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => admin.rates.sample(&admin, Instant::now()),
            _ = stopping.changed() => return,
        }
    }
}

/// Messages in and out so far for one protocol.
pub fn totals(counters: &Metrics, protocol: Protocol) -> (u64, u64) {
    (
        counters.messages_in_total(protocol),
        counters.messages_out_total(protocol),
    )
}
