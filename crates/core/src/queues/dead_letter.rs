//! Dead-lettering: the message a queue gives up on (rejected, expired,
//! over its length limit) is republished to the queue's dead-letter
//! exchange with RabbitMQ's `x-death` history.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use crate::queues::error::QueueError;
use crate::queues::message::Message;

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// `basic.reject` / `basic.nack` without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// The queue was over `x-max-length(-bytes)`.
    MaxLength,
}

impl DeathReason {
    /// RabbitMQ's name.
    pub fn name(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLength => "maxlen",
        }
    }
}

/// A message on its way to a dead-letter exchange.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message as it was in the queue.
    pub message: Message,
    /// Why.
    pub reason: DeathReason,
    /// The queue that gave up on it.
    pub queue: String,
    /// `x-dead-letter-exchange` of that queue.
    pub exchange: String,
    /// `x-dead-letter-routing-key`, or `None` to keep the message's own.
    pub routing_key: Option<String>,
    /// When, in ms since the epoch.
    pub time_ms: i64,
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes().to_vec()))
}

impl DeadLetter {
    /// The message to publish to the dead-letter exchange: `x-death`
    /// updated as RabbitMQ 3.10 does (an entry per queue and reason, the
    /// latest first, `count` incremented on a repeat), `x-first-death-*`
    /// set on the first death, and `expiration` moved into the entry as
    /// `original-expiration`.
    ///
    /// # Errors
    ///
    /// [`QueueError::Internal`] if the new properties cannot be encoded.
    pub fn into_message(self) -> Result<Message, QueueError> {
        let original = &self.message;
        let routing_key = self
            .routing_key
            .clone()
            .unwrap_or_else(|| original.routing_key.clone());
        let mut entry = FieldTable::default();
        entry.insert("reason".into(), long_string(self.reason.name()));
        entry.insert("queue".into(), long_string(&self.queue));
        entry.insert(
            "time".into(),
            AMQPValue::Timestamp((self.time_ms / 1000) as u64),
        );
        entry.insert("exchange".into(), long_string(&original.exchange));
        let mut keys = FieldArray::default();
        keys.push(long_string(&original.routing_key));
        entry.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
        if let Some(expiration) = original.properties.expiration() {
            entry.insert(
                "original-expiration".into(),
                long_string(expiration.as_str()),
            );
        }
        let mut headers = original.headers();
        let mut history: Vec<AMQPValue> = match headers.inner().get("x-death") {
            Some(AMQPValue::FieldArray(array)) => array.as_slice().to_vec(),
            _ => Vec::new(),
        };
        let first_death = history.is_empty();
        let same = |value: &AMQPValue| match value {
            AMQPValue::FieldTable(table) => {
                table.inner().get("queue") == Some(&long_string(&self.queue))
                    && table.inner().get("reason") == Some(&long_string(self.reason.name()))
            }
            _ => false,
        };
        let entry = match history.iter().position(same) {
            Some(index) => match history.remove(index) {
                AMQPValue::FieldTable(mut previous) => {
                    let count = previous
                        .inner()
                        .get("count")
                        .and_then(crate::queues::args::integer)
                        .unwrap_or(0);
                    previous.insert("count".into(), AMQPValue::LongLongInt(count + 1));
                    previous
                }
                _ => entry,
            },
            None => {
                entry.insert("count".into(), AMQPValue::LongLongInt(1));
                entry
            }
        };
        history.insert(0, AMQPValue::FieldTable(entry));
        headers.insert("x-death".into(), AMQPValue::FieldArray(history.into()));
        if first_death {
            headers.insert(
                "x-first-death-reason".into(),
                long_string(self.reason.name()),
            );
            headers.insert("x-first-death-queue".into(), long_string(&self.queue));
            headers.insert(
                "x-first-death-exchange".into(),
                long_string(&original.exchange),
            );
        }
        let mut properties = original.properties.clone().with_headers(headers);
        if properties.expiration().is_some() {
            properties = clear_expiration(properties);
        }
        Message::with_properties(
            self.exchange,
            routing_key,
            properties,
            original.body.clone(),
            self.time_ms,
        )
    }
}

/// The properties without `expiration` (the builder API cannot unset one).
fn clear_expiration(
    properties: amq_protocol::protocol::BasicProperties,
) -> amq_protocol::protocol::BasicProperties {
    let mut cleared = amq_protocol::protocol::BasicProperties::default();
    macro_rules! copy {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(value) = properties.$get().clone() { cleared = cleared.$set(value); })*
        };
    }
    copy!(content_type => with_content_type, content_encoding => with_content_encoding, headers => with_headers,
        delivery_mode => with_delivery_mode, priority => with_priority, correlation_id => with_correlation_id,
        reply_to => with_reply_to, message_id => with_message_id, timestamp => with_timestamp, kind => with_type,
        user_id => with_user_id, app_id => with_app_id, cluster_id => with_cluster_id);
    cleared
}
