//! Delivery reports, read straight from librdkafka's event queue.
//!
//! rust-rdkafka 0.39's `BaseProducer::poll` keeps polling until its
//! deadline even after an event arrived, and for the last fraction of a
//! millisecond spins on the clock; in a loop of short polls that spinning
//! took nearly a whole core from the broker on a 2-core machine. So the
//! producer serves the main queue itself ([`serve_events`]). Each delivery
//! report still carries the value that was sent, whose header holds the
//! scheduled send time, so the acknowledgement latency is measured without
//! any per-message bookkeeping.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::histogram::LatencyHistogram;
use crate::payload::{latency_us_since, read_header, WARMUP_SEQUENCE};

/// Counts acknowledgements and their latencies for one producer.
pub struct DeliveryStats {
    /// Messages acknowledged (warm-up messages included until reset).
    pub delivered: AtomicU64,
    /// Messages that failed.
    pub failed: AtomicU64,
    /// The first failure, as text.
    pub first_error: Mutex<Option<String>>,
    /// Latency from each message's send time to its delivery report.
    pub latency: Mutex<LatencyHistogram>,
    /// librdkafka's own figure for each message: from `produce()` to the
    /// moment its broker thread created the delivery report. Set against
    /// `latency`, it shows whether a tail is in the client's event loop or
    /// before the report existed (the broker, the network, librdkafka).
    pub librdkafka_latency: Mutex<LatencyHistogram>,
    /// Shared progress counter (acknowledged messages of every producer).
    pub progress: Arc<AtomicU64>,
}

impl DeliveryStats {
    /// Stats that also add to `progress`.
    pub fn new(progress: Arc<AtomicU64>) -> DeliveryStats {
        DeliveryStats {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latency: Mutex::new(LatencyHistogram::new()),
            librdkafka_latency: Mutex::new(LatencyHistogram::new()),
            progress,
        }
    }

    /// Acknowledged or failed.
    pub fn settled(&self) -> u64 {
        self.delivered.load(Relaxed) + self.failed.load(Relaxed)
    }

    /// Keeps the first error only.
    pub fn note_error(&self, error: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    /// The first error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }

    fn delivered_value(&self, value: &[u8]) {
        if let Some((sequence, sent_ns)) = read_header(value) {
            if sequence == WARMUP_SEQUENCE {
                self.delivered.fetch_add(1, Relaxed);
                return;
            }
            if let Ok(mut latency) = self.latency.lock() {
                latency.record_us(latency_us_since(sent_ns));
            }
        }
        self.delivered.fetch_add(1, Relaxed);
        self.progress.fetch_add(1, Relaxed);
    }
}

impl ClientContext for DeliveryStats {
    /// librdkafka's warnings and errors go to stderr (there is no logger).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        if (level as i32) <= (rdkafka::config::RDKafkaLogLevel::Warning as i32) {
            eprintln!("weir bench: librdkafka {level:?} {facility}: {message}");
        }
    }
}

impl ProducerContext for DeliveryStats {
    type DeliveryOpaque = ();

    // Only reached through rdkafka's own poll (transactions' flush); the
    // send loop serves events itself.
    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        use rdkafka::message::Message;
        match result {
            Ok(message) => self.delivered_value(message.payload().unwrap_or(&[])),
            Err((error, _)) => {
                self.failed.fetch_add(1, Relaxed);
                self.note_error(error.to_string());
            }
        }
    }
}

/// Serves librdkafka's main event queue: waits up to `timeout` for the
/// first event, takes whatever else is already there, and returns.
pub fn serve_events(producer: &BaseProducer<DeliveryStats>, timeout: Duration) {
    let stats = producer.context();
    let client = producer.client().native_ptr();
    let mut wait_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `client` is the producer's live handle, borrowed for this
    // call; the queue reference taken here is released before returning,
    // and every event polled is destroyed after it was read.
    unsafe {
        let queue = rdsys::rd_kafka_queue_get_main(client);
        loop {
            let event = rdsys::rd_kafka_queue_poll(queue, wait_ms);
            if event.is_null() {
                break;
            }
            handle_event(stats, event);
            rdsys::rd_kafka_event_destroy(event);
            wait_ms = 0;
        }
        rdsys::rd_kafka_queue_destroy(queue);
    }
}

/// Reads one event of the main queue (see [`serve_events`]).
///
/// # Safety
///
/// `event` must be a live event polled from the producer's main queue.
unsafe fn handle_event(stats: &DeliveryStats, event: *mut rdsys::rd_kafka_event_t) {
    match rdsys::rd_kafka_event_type(event) {
        rdsys::RD_KAFKA_EVENT_DR => loop {
            let message = rdsys::rd_kafka_event_message_next(event);
            if message.is_null() {
                break;
            }
            let error = (*message).err;
            if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let payload = (*message).payload as *const u8;
                let value = if payload.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(payload, (*message).len)
                };
                stats.delivered_value(value);
                let librdkafka_us = rdsys::rd_kafka_message_latency(message);
                if librdkafka_us >= 0
                    && read_header(value).is_some_and(|(seq, _)| seq != WARMUP_SEQUENCE)
                {
                    if let Ok(mut latency) = stats.librdkafka_latency.lock() {
                        latency.record_us(librdkafka_us as u64);
                    }
                }
            } else {
                stats.failed.fetch_add(1, Relaxed);
                stats.note_error(RDKafkaErrorCode::from(error).to_string());
            }
        },
        rdsys::RD_KAFKA_EVENT_ERROR => {
            let text = CStr::from_ptr(rdsys::rd_kafka_event_error_string(event));
            eprintln!("weir bench: librdkafka error: {}", text.to_string_lossy());
        }
        _ => {}
    }
}

/// Polls until `expected` messages have a delivery report, giving up after
/// `idle_timeout_s` without a new one. Returns false on time-out.
pub fn wait_for_acks(
    producer: &BaseProducer<DeliveryStats>,
    expected: u64,
    idle_timeout_s: u64,
) -> bool {
    let stats = producer.context();
    let mut last_progress = std::time::Instant::now();
    let mut last_settled = stats.settled();
    while stats.settled() < expected {
        serve_events(producer, Duration::from_millis(10));
        let settled = stats.settled();
        if settled != last_settled {
            last_settled = settled;
            last_progress = std::time::Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(idle_timeout_s) {
            eprintln!(
                "weir bench: no delivery report for {idle_timeout_s}s; {settled}/{expected} settled, {} in flight",
                producer.in_flight_count()
            );
            return false;
        }
    }
    true
}
