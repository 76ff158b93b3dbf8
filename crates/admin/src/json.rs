//! JSON in and out: request bodies (errors name the field), AMQP field
//! tables and properties, payloads as text or base64.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

/// Deepest nesting of tables and arrays accepted in a request (the JSON
/// parser's own recursion limit is 128; AMQP encoders recurse too).
const NESTING_DEPTH_MAX: usize = 16;

/// Parses a request body; a 400 names the field that is wrong.
///
/// # Errors
///
/// 400 with the path of the bad field and what was expected.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let whole_body = path.is_empty() || path == "." || path == "?";
            let message = if whole_body || inner.is_syntax() || inner.is_eof() {
                format!("invalid body: {inner}")
            } else {
                format!("invalid field '{path}': {inner}")
            };
            Err(ApiError::bad_request(message))
        }
    }
}

/// A short string from user input; 400 naming `field` when too long.
///
/// # Errors
///
/// 400 for more than 255 bytes.
pub fn short(field: &str, text: &str) -> ApiResult<ShortString> {
    ShortString::try_new(text)
        .map_err(|_| ApiError::bad_request(format!("field '{field}' is longer than 255 bytes")))
}

/// A JSON object as an AMQP field table (integers as signed 64-bit,
/// strings as long strings, objects as tables, arrays as arrays).
///
/// # Errors
///
/// 400 naming `field` for keys longer than 255 bytes or nesting too deep.
pub fn field_table(field: &str, object: &Map<String, Value>) -> ApiResult<FieldTable> {
    table_at(field, object, 0)
}

fn table_at(field: &str, object: &Map<String, Value>, depth: usize) -> ApiResult<FieldTable> {
    if depth > NESTING_DEPTH_MAX {
        return Err(ApiError::bad_request(format!(
            "field '{field}' is nested too deeply"
        )));
    }
    let mut table = FieldTable::default();
    for (key, value) in object {
        let path = format!("{field}.{key}");
        table.insert(short(&path, key)?, amqp_value(&path, value, depth)?);
    }
    Ok(table)
}

fn amqp_value(field: &str, value: &Value, depth: usize) -> ApiResult<AMQPValue> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => {
            if depth >= NESTING_DEPTH_MAX {
                return Err(ApiError::bad_request(format!(
                    "field '{field}' is nested too deeply"
                )));
            }
            let values = items
                .iter()
                .map(|item| amqp_value(field, item, depth + 1))
                .collect::<ApiResult<Vec<_>>>()?;
            AMQPValue::FieldArray(FieldArray::from(values))
        }
        Value::Object(object) => AMQPValue::FieldTable(table_at(field, object, depth + 1)?),
    })
}

/// An AMQP field table as JSON.
pub fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.as_str().to_owned(), value_json(value)))
            .collect(),
    )
}

fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_json).collect())
        }
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(bytes) => json!(base64_text(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// Message properties as the management API shows them.
pub fn properties_json(properties: &AMQPProperties) -> Value {
    let mut out = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(name.to_owned(), value);
        }
    };
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| json!(s.as_str()));
    put("content_type", text(properties.content_type()));
    put("content_encoding", text(properties.content_encoding()));
    put("headers", properties.headers().as_ref().map(table_json));
    put(
        "delivery_mode",
        properties.delivery_mode().map(|m| json!(m)),
    );
    put("priority", properties.priority().map(|p| json!(p)));
    put("correlation_id", text(properties.correlation_id()));
    put("reply_to", text(properties.reply_to()));
    put("expiration", text(properties.expiration()));
    put("message_id", text(properties.message_id()));
    put("timestamp", properties.timestamp().map(|t| json!(t)));
    put("type", text(properties.kind()));
    put("user_id", text(properties.user_id()));
    put("app_id", text(properties.app_id()));
    Value::Object(out)
}

/// Properties given as JSON in a publish request.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertiesIn {
    content_type: Option<String>,
    content_encoding: Option<String>,
    headers: Option<Map<String, Value>>,
    delivery_mode: Option<u8>,
    priority: Option<u8>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    expiration: Option<String>,
    message_id: Option<String>,
    timestamp: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    user_id: Option<String>,
    app_id: Option<String>,
}

impl PropertiesIn {
    /// The AMQP properties; 400 naming a field that does not fit.
    ///
    /// # Errors
    ///
    /// 400 for strings longer than 255 bytes or a delivery mode other than 1 or 2.
    pub fn into_properties(self) -> ApiResult<AMQPProperties> {
        let mut properties = AMQPProperties::default();
        let field = |name: &str, value: Option<String>| -> ApiResult<Option<ShortString>> {
            value
                .map(|v| short(&format!("properties.{name}"), &v))
                .transpose()
        };
        if let Some(v) = field("content_type", self.content_type)? {
            properties = properties.with_content_type(v);
        }
        if let Some(v) = field("content_encoding", self.content_encoding)? {
            properties = properties.with_content_encoding(v);
        }
        if let Some(headers) = &self.headers {
            properties = properties.with_headers(field_table("properties.headers", headers)?);
        }
        match self.delivery_mode {
            None => {}
            Some(mode @ (1 | 2)) => properties = properties.with_delivery_mode(mode),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "field 'properties.delivery_mode' must be 1 (transient) or 2 (persistent)",
                ))
            }
        }
        if let Some(priority) = self.priority {
            properties = properties.with_priority(priority);
        }
        if let Some(v) = field("correlation_id", self.correlation_id)? {
            properties = properties.with_correlation_id(v);
        }
        if let Some(v) = field("reply_to", self.reply_to)? {
            properties = properties.with_reply_to(v);
        }
        if let Some(v) = field("expiration", self.expiration)? {
            properties = properties.with_expiration(v);
        }
        if let Some(v) = field("message_id", self.message_id)? {
            properties = properties.with_message_id(v);
        }
        if let Some(timestamp) = self.timestamp {
            properties = properties.with_timestamp(timestamp);
        }
        if let Some(v) = field("type", self.kind)? {
            properties = properties.with_type(v);
        }
        if let Some(v) = field("user_id", self.user_id)? {
            properties = properties.with_user_id(v);
        }
        if let Some(v) = field("app_id", self.app_id)? {
            properties = properties.with_app_id(v);
        }
        Ok(properties)
    }
}

/// Bytes as text when they are UTF-8, else base64: `(text, encoding)` with
/// encoding `"string"` or `"base64"`.
pub fn payload(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), "string"),
        Err(_) => (base64_text(bytes), "base64"),
    }
}

/// Standard base64.
pub fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a payload given as `encoding` ("string" or "base64").
///
/// # Errors
///
/// 400 naming `field` for bad base64 or an unknown encoding.
pub fn decode_payload(field: &str, text: &str, encoding: Option<&str>) -> ApiResult<Vec<u8>> {
    match encoding.unwrap_or("string") {
        "string" => Ok(text.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| ApiError::bad_request(format!("field '{field}': {error}"))),
        other => Err(ApiError::bad_request(format!(
            "field '{field}_encoding': '{other}' is neither 'string' nor 'base64'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        partitions: Option<i32>,
    }

    #[test]
    fn errors_name_the_field() {
        let error = parse_body::<Body>(br#"{"name": "t", "partitions": "x"}"#).unwrap_err();
        assert!(error.message.contains("'partitions'"), "{}", error.message);
        let error = parse_body::<Body>(br#"{"partitions": 1}"#).unwrap_err();
        assert!(error.message.contains("name"), "{}", error.message);
        assert!(parse_body::<Body>(b"not json").is_err());
    }

    #[test]
    fn tables_round_trip() {
        let object = json!({"a": 1, "b": "x", "c": [true, null], "d": {"e": 2.5}});
        let table = field_table("arguments", object.as_object().unwrap()).unwrap();
        assert_eq!(table_json(&table), object);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut value = json!(1);
        for _ in 0..40 {
            value = json!({ "x": value });
        }
        assert!(field_table("arguments", value.as_object().unwrap()).is_err());
    }

    #[test]
    fn payloads_are_text_or_base64() {
        assert_eq!(payload(b"hi"), ("hi".to_owned(), "string"));
        assert_eq!(payload(&[0xff]), ("/w==".to_owned(), "base64"));
        assert_eq!(
            decode_payload("payload", "/w==", Some("base64")).unwrap(),
            vec![0xff]
        );
        assert!(decode_payload("payload", "x", Some("hex")).is_err());
    }
}
