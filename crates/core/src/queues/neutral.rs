//! Conversions between the AMQP types the virtual hosts use today and the
//! protocol-neutral forms metadata commands carry ([`crate::metadata`]).
//! They live here, beside the only code that needs AMQP's types, so that
//! the metadata module depends on no protocol crate; when the core loses
//! its `amq-protocol` dependency this file moves to the AMQP front-end.
//!
//! Every conversion is lossless both ways: integer widths, short versus
//! long strings and float bits are kept, so argument equivalence checks
//! give the same answers on either form.

use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};

use crate::metadata::{ArgumentValue, Arguments, BindingDestination, ExchangeType};
use crate::queues::exchange::ExchangeKind;
use crate::queues::vhost::Destination;

/// An AMQP field table as neutral arguments.
pub fn arguments_from_table(table: &FieldTable) -> Arguments {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.as_str().to_owned(), argument_from_value(value)))
        .collect()
}

/// Neutral arguments as an AMQP field table.
pub fn table_from_arguments(arguments: &Arguments) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        table.insert(key.as_str().into(), value_from_argument(value));
    }
    table
}

fn argument_from_value(value: &AMQPValue) -> ArgumentValue {
    match value {
        AMQPValue::Boolean(b) => ArgumentValue::Bool(*b),
        AMQPValue::ShortShortInt(n) => ArgumentValue::I8(*n),
        AMQPValue::ShortShortUInt(n) => ArgumentValue::U8(*n),
        AMQPValue::ShortInt(n) => ArgumentValue::I16(*n),
        AMQPValue::ShortUInt(n) => ArgumentValue::U16(*n),
        AMQPValue::LongInt(n) => ArgumentValue::I32(*n),
        AMQPValue::LongUInt(n) => ArgumentValue::U32(*n),
        AMQPValue::LongLongInt(n) => ArgumentValue::I64(*n),
        AMQPValue::Float(f) => ArgumentValue::F32Bits(f.to_bits()),
        AMQPValue::Double(f) => ArgumentValue::F64Bits(f.to_bits()),
        AMQPValue::DecimalValue(d) => ArgumentValue::Decimal {
            scale: d.scale,
            value: d.value,
        },
        AMQPValue::ShortString(s) => ArgumentValue::ShortString(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => ArgumentValue::Text(text.to_owned()),
            Err(_) => ArgumentValue::TextBytes(s.as_bytes().to_vec()),
        },
        AMQPValue::FieldArray(values) => {
            ArgumentValue::List(values.as_slice().iter().map(argument_from_value).collect())
        }
        AMQPValue::Timestamp(t) => ArgumentValue::Timestamp(*t),
        AMQPValue::FieldTable(table) => ArgumentValue::Table(arguments_from_table(table)),
        AMQPValue::ByteArray(bytes) => ArgumentValue::Bytes(bytes.as_slice().to_vec()),
        AMQPValue::Void => ArgumentValue::Void,
    }
}

fn value_from_argument(argument: &ArgumentValue) -> AMQPValue {
    match argument {
        ArgumentValue::Bool(b) => AMQPValue::Boolean(*b),
        ArgumentValue::I8(n) => AMQPValue::ShortShortInt(*n),
        ArgumentValue::U8(n) => AMQPValue::ShortShortUInt(*n),
        ArgumentValue::I16(n) => AMQPValue::ShortInt(*n),
        ArgumentValue::U16(n) => AMQPValue::ShortUInt(*n),
        ArgumentValue::I32(n) => AMQPValue::LongInt(*n),
        ArgumentValue::U32(n) => AMQPValue::LongUInt(*n),
        ArgumentValue::I64(n) => AMQPValue::LongLongInt(*n),
        ArgumentValue::F32Bits(bits) => AMQPValue::Float(f32::from_bits(*bits)),
        ArgumentValue::F64Bits(bits) => AMQPValue::Double(f64::from_bits(*bits)),
        ArgumentValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        ArgumentValue::ShortString(s) => AMQPValue::ShortString(s.as_str().into()),
        ArgumentValue::Text(text) => AMQPValue::LongString(LongString::from(text.as_bytes())),
        ArgumentValue::TextBytes(bytes) => AMQPValue::LongString(LongString::from(bytes.clone())),
        ArgumentValue::List(values) => AMQPValue::FieldArray(FieldArray::from(
            values.iter().map(value_from_argument).collect::<Vec<_>>(),
        )),
        ArgumentValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        ArgumentValue::Table(table) => AMQPValue::FieldTable(table_from_arguments(table)),
        ArgumentValue::Bytes(bytes) => AMQPValue::ByteArray(ByteArray::from(bytes.clone())),
        ArgumentValue::Void => AMQPValue::Void,
    }
}

impl From<ExchangeKind> for ExchangeType {
    fn from(kind: ExchangeKind) -> ExchangeType {
        match kind {
            ExchangeKind::Direct => ExchangeType::Direct,
            ExchangeKind::Fanout => ExchangeType::Fanout,
            ExchangeKind::Topic => ExchangeType::Topic,
            ExchangeKind::Headers => ExchangeType::Headers,
        }
    }
}

impl From<ExchangeType> for ExchangeKind {
    fn from(kind: ExchangeType) -> ExchangeKind {
        match kind {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Headers => ExchangeKind::Headers,
        }
    }
}

impl From<Destination> for BindingDestination {
    fn from(destination: Destination) -> BindingDestination {
        match destination {
            Destination::Queue(name) => BindingDestination::Queue(name),
            Destination::Exchange(name) => BindingDestination::Exchange(name),
        }
    }
}

impl From<BindingDestination> for Destination {
    fn from(destination: BindingDestination) -> Destination {
        match destination {
            BindingDestination::Queue(name) => Destination::Queue(name),
            BindingDestination::Exchange(name) => Destination::Exchange(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_amqp_value_survives_the_round_trip() {
        let mut nested = FieldTable::default();
        nested.insert("deep".into(), AMQPValue::LongString("x".into()));
        let mut table = FieldTable::default();
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-3),
            AMQPValue::ShortShortUInt(3),
            AMQPValue::ShortInt(-300),
            AMQPValue::ShortUInt(300),
            AMQPValue::LongInt(-70_000),
            AMQPValue::LongUInt(70_000),
            AMQPValue::LongLongInt(-1 << 40),
            AMQPValue::Float(1.5),
            AMQPValue::Double(f64::MIN_POSITIVE),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
            AMQPValue::ShortString("short".into()),
            AMQPValue::LongString("quorum".into()),
            AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Void,
                AMQPValue::LongInt(1),
            ])),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::FieldTable(nested),
            AMQPValue::ByteArray(ByteArray::from(vec![1, 2, 3])),
            AMQPValue::Void,
        ];
        for (index, value) in values.into_iter().enumerate() {
            table.insert(format!("k{index}").into(), value);
        }
        let neutral = arguments_from_table(&table);
        assert_eq!(table_from_arguments(&neutral), table);
        // And through the stored form.
        let json = serde_json::to_vec(&neutral).expect("serializes");
        let back: Arguments = serde_json::from_slice(&json).expect("deserializes");
        assert_eq!(table_from_arguments(&back), table);
    }

    #[test]
    fn nan_compares_equal_to_itself_in_the_neutral_form() {
        let mut table = FieldTable::default();
        table.insert("nan".into(), AMQPValue::Double(f64::NAN));
        assert_eq!(arguments_from_table(&table), arguments_from_table(&table));
    }
}
