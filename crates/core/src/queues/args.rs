//! Queue arguments (`x-message-ttl`, `x-max-length`, `x-queue-type`…):
//! parsing with RabbitMQ's validation, and the equivalence check a
//! redeclaration must pass.

use amq_protocol::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::queues::consumer::StreamStart;
use crate::queues::error::QueueError;

/// What a queue does when it is full (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready message.
    #[default]
    DropHead,
    /// Refuse the new message (a confirm nack).
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

/// How a queue delivers (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QueueType {
    /// Competing consumers; messages go once acknowledged.
    #[default]
    Classic,
    /// As classic here (one node); must be durable.
    Quorum,
    /// An append-only log read from an offset; messages stay until retention.
    Stream,
}

impl QueueType {
    /// The name clients use.
    pub fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// The arguments of a queue that change what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArguments {
    /// `x-message-ttl`: ms a message may wait in the queue.
    pub message_ttl_ms: Option<u64>,
    /// `x-expires`: ms unused before the queue is deleted.
    pub expires_ms: Option<u64>,
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: ready body bytes at most (streams: retention).
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-max-priority`: priorities 0..=this are honoured.
    pub max_priority: Option<u8>,
    /// `x-queue-type`.
    pub queue_type: QueueType,
    /// `x-max-age` of a stream, in ms.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`: a stream's segment size.
    pub stream_segment_bytes: Option<u64>,
    /// `x-source-topic`: the queue's messages are this topic's records.
    pub source_topic: Option<String>,
    /// `x-source-offset`: where a queue over a topic starts (default `next`).
    pub source_offset: Option<StreamStart>,
}

/// Arguments RabbitMQ compares when a queue is declared again.
const COMPARED: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-single-active-consumer",
    "x-max-priority",
    "x-queue-type",
    "x-max-age",
    "x-source-topic",
    "x-source-offset",
];

/// The integer in an AMQP value of any integer type.
pub fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    })
}

/// The text in an AMQP string value.
pub fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

/// RabbitMQ's rendering of a value in error texts.
fn describe(value: &AMQPValue) -> String {
    match (integer(value), text(value)) {
        (Some(number), _) => number.to_string(),
        (_, Some(text)) => format!("<<\"{text}\">>"),
        _ => format!("{value:?}"),
    }
}

/// RabbitMQ's name of a value's type in error texts.
fn type_name(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => "longstr",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::FieldArray(_) => "array",
        _ if integer(value).is_some() => "signedint",
        _ => "unknown",
    }
}

impl QueueArguments {
    /// Parses and validates the arguments of `queue.declare`.
    ///
    /// # Errors
    ///
    /// [`QueueError::PreconditionFailed`] with RabbitMQ's text for an
    /// invalid value.
    pub fn parse(
        arguments: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<QueueArguments, QueueError> {
        let invalid = |name: &str, why: String| {
            QueueError::PreconditionFailed(format!(
                "invalid arg '{name}' for queue '{queue}' in vhost '{vhost}': {why}"
            ))
        };
        let mut parsed = QueueArguments::default();
        for (name, value) in arguments {
            let name = name.as_str();
            let non_negative = || match integer(value) {
                Some(v) if v >= 0 => Ok(v as u64),
                Some(v) => Err(invalid(name, format!("{{value_negative,{v}}}"))),
                None => Err(invalid(
                    name,
                    format!("\"expected integer, got {}\"", type_name(value)),
                )),
            };
            let string = || {
                text(value).ok_or_else(|| {
                    invalid(name, format!("{{unacceptable_type,{}}}", type_name(value)))
                })
            };
            match name {
                "x-message-ttl" => parsed.message_ttl_ms = Some(non_negative()?),
                "x-expires" => match non_negative()? {
                    0 => return Err(invalid(name, "{value_zero,0}".into())),
                    v => parsed.expires_ms = Some(v),
                },
                "x-max-length" => parsed.max_length = Some(non_negative()?),
                "x-max-length-bytes" => parsed.max_length_bytes = Some(non_negative()?),
                "x-max-priority" => match non_negative()? {
                    over if over > 255 => {
                        return Err(invalid(name, format!("{{max_value_exceeded,{over}}}")))
                    }
                    priority => parsed.max_priority = Some(priority as u8),
                },
                "x-overflow" => {
                    parsed.overflow = match string()?.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        _ => return Err(invalid(name, "invalid_overflow".into())),
                    }
                }
                "x-dead-letter-exchange" => parsed.dead_letter_exchange = Some(string()?),
                "x-dead-letter-routing-key" => parsed.dead_letter_routing_key = Some(string()?),
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(v) => parsed.single_active_consumer = *v,
                    _ => {
                        return Err(invalid(
                            name,
                            format!("{{unacceptable_type,{}}}", type_name(value)),
                        ))
                    }
                },
                "x-queue-type" => {
                    parsed.queue_type = match string()?.as_str() {
                        "classic" => QueueType::Classic,
                        "quorum" => QueueType::Quorum,
                        "stream" => QueueType::Stream,
                        other => {
                            return Err(invalid(
                                name,
                                format!("\"unsupported queue type '{other}'\""),
                            ))
                        }
                    }
                }
                "x-stream-max-segment-size-bytes" => {
                    parsed.stream_segment_bytes = Some(non_negative()?)
                }
                "x-source-topic" => parsed.source_topic = Some(string()?),
                "x-source-offset" => {
                    parsed.source_offset =
                        Some(stream_start(value, crate::now_ms()).ok_or_else(|| {
                            invalid(name, "\"first, last, next, an offset, a timestamp or an interval such as 1h\"".into())
                        })?);
                }
                "x-max-age" => {
                    let text = string()?;
                    parsed.max_age_ms = Some(parse_age_ms(&text).ok_or_else(|| {
                        invalid(name, format!("{{invalid_max_age,<<\"{text}\">>}}"))
                    })?);
                }
                _ => {}
            }
        }
        if parsed.source_topic.is_some() {
            let unsupported = |argument: &str| {
                QueueError::PreconditionFailed(format!(
                    "invalid arg '{argument}' for queue '{queue}' in vhost '{vhost}': not supported by a queue over a topic"
                ))
            };
            if parsed.queue_type != QueueType::Classic {
                return Err(unsupported("x-queue-type"));
            }
            for (argument, set) in [
                ("x-max-length", parsed.max_length.is_some()),
                ("x-max-length-bytes", parsed.max_length_bytes.is_some()),
                ("x-max-priority", parsed.max_priority.is_some()),
            ] {
                if set {
                    return Err(unsupported(argument));
                }
            }
        } else if parsed.source_offset.is_some() {
            return Err(invalid(
                "x-source-offset",
                "Key x-source-topic should be specified".into(),
            ));
        }
        if parsed.dead_letter_routing_key.is_some() && parsed.dead_letter_exchange.is_none() {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "Key x-dead-letter-exchange should be specified".into(),
            ));
        }
        Ok(parsed)
    }
}

/// Where a reader starts, from an `x-stream-offset` (or `x-source-offset`)
/// value as RabbitMQ reads it: "first", "last", "next", an offset, a
/// timestamp, or an interval back from `now_ms` ("1h"). `None` when the
/// value is none of these.
pub fn stream_start(value: &AMQPValue, now_ms: i64) -> Option<StreamStart> {
    if let AMQPValue::Timestamp(seconds) = value {
        return Some(StreamStart::Timestamp(
            (*seconds as i64).saturating_mul(1000),
        ));
    }
    if let Some(offset) = integer(value) {
        return Some(StreamStart::Offset(offset.max(0) as u64));
    }
    match text(value)?.as_str() {
        "first" => Some(StreamStart::First),
        "last" => Some(StreamStart::Last),
        "next" => Some(StreamStart::Next),
        interval => {
            let age_ms = parse_age_ms(interval)? as i64;
            Some(StreamStart::Timestamp(now_ms.saturating_sub(age_ms)))
        }
    }
}

/// `x-max-age` (and interval `x-stream-offset`s) as RabbitMQ writes them:
/// a number and one of Y, M, D, h, m, s.
pub fn parse_age_ms(text: &str) -> Option<u64> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().ok()?;
    let unit_s: u64 = match unit {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return None,
    };
    number.checked_mul(unit_s)?.checked_mul(1000)
}

/// Checks that a redeclaration's arguments equal the queue's, as RabbitMQ
/// does for the arguments it knows; integers of different widths with the
/// same value are equal.
///
/// # Errors
///
/// [`QueueError::PreconditionFailed`] naming the first argument that differs.
pub fn check_equivalent(
    current: &FieldTable,
    received: &FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<(), QueueError> {
    // A missing x-queue-type means classic.
    let lookup =
        |table: &FieldTable, name: &str| {
            table.inner().get(name).cloned().or_else(|| {
                (name == "x-queue-type").then(|| AMQPValue::LongString("classic".into()))
            })
        };
    for name in COMPARED {
        let (was, now) = (lookup(current, name), lookup(received, name));
        let same = match (&was, &now) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a == b
                    || (integer(a).is_some() && integer(a) == integer(b))
                    || (text(a).is_some() && text(a) == text(b))
            }
            _ => false,
        };
        if same {
            continue;
        }
        // RabbitMQ names the types only when they differ (or one side is missing).
        let plain = |value: &AMQPValue| describe(value).trim_matches(['<', '>', '"']).to_owned();
        let same_type = matches!((&was, &now), (Some(a), Some(b)) if type_name(a) == type_name(b));
        let render = |value: &Option<AMQPValue>| match value {
            Some(value) if same_type => format!("'{}'", plain(value)),
            Some(value) => format!(
                "the value '{}' of type '{}'",
                plain(value),
                type_name(value)
            ),
            None => "none".into(),
        };
        let (received, current) = (render(&now), render(&was));
        return Err(QueueError::PreconditionFailed(format!(
            "inequivalent arg '{name}' for queue '{queue}' in vhost '{vhost}': received {received} but current is {current}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert((*name).into(), value.clone());
        }
        table
    }

    #[test]
    fn arguments_parse_and_refuse_as_rabbitmq_does() {
        let args = table(&[
            ("x-message-ttl", AMQPValue::LongInt(500)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString("dlx".into()),
            ),
            ("x-max-age", AMQPValue::LongString("7D".into())),
        ]);
        let parsed = QueueArguments::parse(&args, "q", "/").expect("valid");
        assert_eq!(parsed.message_ttl_ms, Some(500));
        assert_eq!(parsed.overflow, Overflow::RejectPublish);
        assert_eq!(parsed.max_age_ms, Some(7 * 86_400_000));
        let negative = table(&[("x-message-ttl", AMQPValue::LongInt(-1))]);
        let error = QueueArguments::parse(&negative, "q", "/").expect_err("negative ttl");
        assert_eq!(
            error.to_string(),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"
        );
    }

    #[test]
    fn equivalence_ignores_integer_width_but_not_values() {
        let a = table(&[("x-max-length", AMQPValue::LongInt(10))]);
        let b = table(&[("x-max-length", AMQPValue::LongLongInt(10))]);
        check_equivalent(&a, &b, "q", "/").expect("same value");
        let c = table(&[("x-max-length", AMQPValue::LongInt(11))]);
        let error = check_equivalent(&a, &c, "q", "/").expect_err("differs");
        assert!(error
            .to_string()
            .starts_with("PRECONDITION_FAILED - inequivalent arg 'x-max-length'"));
        check_equivalent(&a, &FieldTable::default(), "q", "/").expect_err("removed");
    }
}
