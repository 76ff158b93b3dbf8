//! A queued message and how it is stored as one record of a RecordBatch v2.
//!
//! Record layout (so that a Kafka client reading the same log sees something
//! sensible): key = routing key, value = body, timestamp = when the broker
//! accepted the message, and two headers:
//!
//! ```text
//! amqp-exchange    the exchange it was published to (UTF-8)
//! amqp-properties  the content-header property bytes (flags + fields)
//!                  exactly as the publisher sent them
//! ```
//!
//! Properties are kept as sent, so every property and header table reaches
//! the consumer byte for byte; they are decoded only to read TTL, priority,
//! persistence and headers, and re-encoded only when the broker must change
//! them (dead-lettering adds `x-death`, streams add `x-stream-offset`).

use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use weir_log::batch::{NewRecord, StoredRecord};

use crate::queues::error::QueueError;

const EXCHANGE_HEADER: &str = "amqp-exchange";
const PROPERTIES_HEADER: &str = "amqp-properties";
/// `delivery_mode` of a message that must survive a restart.
pub const PERSISTENT: u8 = 2;

/// A message as published: where it went, its properties and its body.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to ("" for the default exchange).
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Content-header property bytes exactly as published.
    pub raw_properties: Bytes,
    /// The same properties, decoded.
    pub properties: AMQPProperties,
    /// The body.
    pub body: Bytes,
    /// When the broker accepted it, in ms since the epoch.
    pub timestamp_ms: i64,
}

impl Message {
    /// A message from its parts; `raw_properties` must encode `properties`.
    pub fn new(
        exchange: String,
        routing_key: String,
        raw_properties: Bytes,
        properties: AMQPProperties,
        body: Bytes,
        timestamp_ms: i64,
    ) -> Message {
        Message {
            exchange,
            routing_key,
            raw_properties,
            properties,
            body,
            timestamp_ms,
        }
    }

    /// A message whose properties the broker built or changed.
    ///
    /// # Errors
    ///
    /// [`QueueError::Internal`] if the properties cannot be encoded.
    pub fn with_properties(
        exchange: String,
        routing_key: String,
        properties: AMQPProperties,
        body: Bytes,
        timestamp_ms: i64,
    ) -> Result<Message, QueueError> {
        let raw_properties = encode_properties(&properties)?;
        Ok(Message {
            exchange,
            routing_key,
            raw_properties,
            properties,
            body,
            timestamp_ms,
        })
    }

    /// Whether the publisher asked for it to survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode() == &Some(PERSISTENT)
    }

    /// The per-message TTL (`expiration`) in ms, if set and valid.
    pub fn expiration_ms(&self) -> Option<u64> {
        self.properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse().ok())
    }

    /// Priority, 0 when unset.
    pub fn priority(&self) -> u8 {
        self.properties.priority().unwrap_or(0)
    }

    /// The `headers` table (empty when unset).
    pub fn headers(&self) -> FieldTable {
        self.properties.headers().clone().unwrap_or_default()
    }

    /// The record this message is stored as.
    pub fn to_record(&self) -> NewRecord {
        NewRecord {
            timestamp: self.timestamp_ms,
            key: Some(Bytes::copy_from_slice(self.routing_key.as_bytes())),
            value: Some(self.body.clone()),
            headers: vec![
                (
                    EXCHANGE_HEADER.into(),
                    Some(Bytes::copy_from_slice(self.exchange.as_bytes())),
                ),
                (PROPERTIES_HEADER.into(), Some(self.raw_properties.clone())),
            ],
        }
    }

    /// The record this message is stored as in a topic (a stream queue):
    /// as [`Message::to_record`], plus each property and each header-table
    /// entry as a record header of its own, so that Kafka consumers can read
    /// them (the README's "AMQP and Kafka" table): properties as
    /// `amqp-content-type`, `amqp-correlation-id`, …; header entries under
    /// their own names, numbers and booleans as decimal text, strings and
    /// byte arrays as they are. Nested tables and arrays stay in
    /// `amqp-properties` only.
    pub fn to_topic_record(&self) -> NewRecord {
        let mut record = self.to_record();
        let properties = &self.properties;
        let text = |name: &str, value: Option<String>| {
            value.map(|value| (format!("amqp-{name}"), Some(Bytes::from(value))))
        };
        let short = |value: &Option<amq_protocol::types::ShortString>| {
            value.as_ref().map(|v| v.as_str().to_owned())
        };
        let mapped = [
            text("content-type", short(properties.content_type())),
            text("content-encoding", short(properties.content_encoding())),
            text(
                "delivery-mode",
                properties.delivery_mode().map(|v| v.to_string()),
            ),
            text("priority", properties.priority().map(|v| v.to_string())),
            text("correlation-id", short(properties.correlation_id())),
            text("reply-to", short(properties.reply_to())),
            text("expiration", short(properties.expiration())),
            text("message-id", short(properties.message_id())),
            text("timestamp", properties.timestamp().map(|v| v.to_string())),
            text("type", short(properties.kind())),
            text("user-id", short(properties.user_id())),
            text("app-id", short(properties.app_id())),
        ];
        record.headers.extend(mapped.into_iter().flatten());
        if let Some(table) = properties.headers() {
            for (name, value) in table {
                if let Some(value) = header_text(value) {
                    record.headers.push((name.as_str().to_owned(), Some(value)));
                }
            }
        }
        record
    }

    /// Reads a message back from its record: one stored by
    /// [`Message::to_record`] or [`Message::to_topic_record`] exactly as
    /// published; one a Kafka producer wrote with its key as routing key
    /// and its headers as header-table entries (byte strings; a header
    /// without value as void), persistent, from the default exchange.
    ///
    /// # Errors
    ///
    /// [`QueueError::Internal`] when stored AMQP properties do not parse
    /// (the log is corrupt).
    pub fn from_record(record: StoredRecord) -> Result<Message, QueueError> {
        let corrupt =
            |what| QueueError::Internal(format!("stored message {}: {what}", record.offset));
        let mut exchange = None;
        let mut raw_properties = None;
        for (name, value) in &record.headers {
            match &name[..] {
                b"amqp-exchange" => exchange = value.clone(),
                b"amqp-properties" => raw_properties = value.clone(),
                _ => {}
            }
        }
        let routing_key =
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        let body = record.value.clone().unwrap_or_default();
        let Some(raw_properties) = raw_properties else {
            return from_kafka_record(record, routing_key, body);
        };
        let exchange =
            String::from_utf8_lossy(exchange.as_deref().unwrap_or_default()).into_owned();
        let properties =
            decode_properties(&raw_properties).ok_or_else(|| corrupt("bad properties"))?;
        Ok(Message {
            exchange,
            routing_key,
            raw_properties,
            properties,
            body,
            timestamp_ms: record.timestamp,
        })
    }

    /// Bytes the message counts for against `x-max-length-bytes` (its body,
    /// as RabbitMQ counts).
    pub fn body_bytes(&self) -> u64 {
        self.body.len() as u64
    }
}

/// A message for a record a Kafka producer wrote (see [`Message::from_record`]).
fn from_kafka_record(
    record: StoredRecord,
    routing_key: String,
    body: Bytes,
) -> Result<Message, QueueError> {
    let mut headers = FieldTable::default();
    for (name, value) in record.headers {
        let value = match value {
            Some(bytes) => AMQPValue::LongString(bytes.to_vec().into()),
            None => AMQPValue::Void,
        };
        headers.insert(String::from_utf8_lossy(&name).into_owned().into(), value);
    }
    let mut properties = AMQPProperties::default().with_delivery_mode(PERSISTENT);
    if !headers.inner().is_empty() {
        properties = properties.with_headers(headers);
    }
    Message::with_properties(
        String::new(),
        routing_key,
        properties,
        body,
        record.timestamp,
    )
}

/// A header-table value as Kafka header bytes (`None` for nested tables
/// and arrays, which have no plain text form).
fn header_text(value: &AMQPValue) -> Option<Bytes> {
    let text = match value {
        AMQPValue::LongString(s) => return Some(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::ShortString(s) => return Some(Bytes::copy_from_slice(s.as_str().as_bytes())),
        AMQPValue::ByteArray(b) => return Some(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(d) => d.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::DecimalValue(d) => {
            format!("{}e-{}", d.value, d.scale)
        }
        AMQPValue::Void => return Some(Bytes::new()),
        AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) => return None,
        other => crate::queues::args::integer(other)?.to_string(),
    };
    Some(Bytes::from(text))
}

/// Decodes content-header property bytes; `None` when they do not parse
/// completely.
pub fn decode_properties(raw: &[u8]) -> Option<AMQPProperties> {
    match parse_properties(raw) {
        Ok(([], properties)) => Some(properties),
        _ => None,
    }
}

/// Encodes properties as a content header carries them.
///
/// # Errors
///
/// [`QueueError::Internal`] if the encoder fails (it does not for valid
/// property values).
pub fn encode_properties(properties: &AMQPProperties) -> Result<Bytes, QueueError> {
    let buffer = cookie_factory::gen_simple(gen_properties(properties), Vec::with_capacity(64))
        .map_err(|error| QueueError::Internal(format!("encoding properties: {error:?}")))?;
    Ok(Bytes::from(buffer))
}

impl Message {
    /// The message with `name` set to `value` in its headers table (the
    /// properties re-encoded; exchange, routing key, body and time kept).
    ///
    /// # Errors
    ///
    /// [`QueueError::Internal`] if the properties cannot be encoded.
    pub fn with_header(self, name: &str, value: AMQPValue) -> Result<Message, QueueError> {
        let mut headers = self.headers();
        headers.insert(name.into(), value);
        let properties = self.properties.with_headers(headers);
        Message::with_properties(
            self.exchange,
            self.routing_key,
            properties,
            self.body,
            self.timestamp_ms,
        )
    }
}
