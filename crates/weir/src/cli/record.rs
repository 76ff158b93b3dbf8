//! Records as the API returns them, and `weir consume`'s `--format` templates.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One record of `GET /api/topics/{name}/records`.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Timestamp, milliseconds since the epoch.
    #[serde(default)]
    pub timestamp_ms: i64,
    /// Key: text, base64 when `encoding` is `base64`, or null.
    #[serde(default)]
    pub key: Option<String>,
    /// Value: as `key`.
    #[serde(default)]
    pub value: Option<String>,
    /// Headers: name → value (text, or base64 with `encoding`), or null.
    #[serde(default)]
    pub headers: Option<Value>,
    /// `base64` when key, value and header values are base64.
    #[serde(default)]
    pub encoding: Option<String>,
}

impl Record {
    fn is_base64(&self) -> bool {
        self.encoding.as_deref() == Some("base64")
    }

    fn decode(&self, text: &str) -> Vec<u8> {
        if self.is_base64() {
            // The API produced it; if it is not base64 after all, show it as is.
            decode_base64(text).unwrap_or_else(|| text.as_bytes().to_vec())
        } else {
            text.as_bytes().to_vec()
        }
    }

    /// The key's bytes (empty for a null key).
    pub fn key_bytes(&self) -> Vec<u8> {
        self.key
            .as_deref()
            .map(|key| self.decode(key))
            .unwrap_or_default()
    }

    /// The value's bytes (empty for a null value).
    pub fn value_bytes(&self) -> Vec<u8> {
        self.value
            .as_deref()
            .map(|value| self.decode(value))
            .unwrap_or_default()
    }

    /// Headers as `name=value` pairs joined by `,`, in the API's order.
    pub fn headers_bytes(&self) -> Vec<u8> {
        let mut text = Vec::new();
        let mut push = |name: &str, value: &Value| {
            if !text.is_empty() {
                text.push(b',');
            }
            text.extend_from_slice(name.as_bytes());
            text.push(b'=');
            match value {
                Value::String(value) => text.extend_from_slice(&self.decode(value)),
                Value::Null => {}
                other => text.extend_from_slice(other.to_string().as_bytes()),
            }
        };
        match &self.headers {
            Some(Value::Object(map)) => map.iter().for_each(|(name, value)| push(name, value)),
            // Also accept a list of {key|name, value} objects or [name, value] pairs.
            Some(Value::Array(list)) => {
                for item in list {
                    match item {
                        Value::Array(pair) if pair.len() == 2 => {
                            push(pair[0].as_str().unwrap_or_default(), &pair[1]);
                        }
                        Value::Object(object) => {
                            let name = object
                                .get("key")
                                .or_else(|| object.get("name"))
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            push(name, object.get("value").unwrap_or(&Value::Null));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        text
    }
}

/// One field a template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Field(Field),
}

/// A parsed `--format` template such as `{offset}\t{key}={value}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`: `{topic}`, `{partition}`, `{offset}`, `{timestamp}`,
    /// `{key}`, `{value}`, `{headers}`; `{{` and `}}` for braces; `\n`, `\t`,
    /// `\\` for a newline, a tab and a backslash.
    ///
    /// # Errors
    ///
    /// A message naming the unknown field or the unclosed brace.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(current) = chars.next() {
            match (current, chars.peek().copied()) {
                ('{', Some('{')) | ('}', Some('}')) => {
                    chars.next();
                    literal.push(current as u8);
                }
                ('\\', Some(escaped @ ('n' | 't' | '\\'))) => {
                    chars.next();
                    literal.push(match escaped {
                        'n' => b'\n',
                        't' => b'\t',
                        _ => b'\\',
                    });
                }
                ('{', _) => {
                    let mut name = String::new();
                    let mut closed = false;
                    for next in chars.by_ref() {
                        if next == '}' {
                            closed = true;
                            break;
                        }
                        name.push(next);
                    }
                    if !closed {
                        return Err(format!(
                            "--format has an unclosed `{{{name}`; close it with `}}` or write `{{{{` for a brace"
                        ));
                    }
                    let field = field_named(&name).ok_or_else(|| {
                        format!(
                            "--format names {{{name}}}, which is not a field; use {{topic}} \
                             {{partition}} {{offset}} {{timestamp}} {{key}} {{value}} {{headers}} \
                             (and {{{{ }}}} for braces)"
                        )
                    })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(field));
                }
                ('}', _) => {
                    return Err("--format has a `}` without `{`; write `}}` for a brace".to_owned())
                }
                (other, _) => {
                    let mut buffer = [0; 4];
                    literal.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Appends `record` rendered by this template (no newline added) to `out`.
    pub fn render(&self, topic: &str, record: &Record, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text),
                Piece::Field(Field::Topic) => out.extend_from_slice(topic.as_bytes()),
                Piece::Field(Field::Partition) => {
                    out.extend_from_slice(record.partition.to_string().as_bytes());
                }
                Piece::Field(Field::Offset) => {
                    out.extend_from_slice(record.offset.to_string().as_bytes());
                }
                Piece::Field(Field::Timestamp) => {
                    out.extend_from_slice(record.timestamp_ms.to_string().as_bytes());
                }
                Piece::Field(Field::Key) => out.extend_from_slice(&record.key_bytes()),
                Piece::Field(Field::Value) => out.extend_from_slice(&record.value_bytes()),
                Piece::Field(Field::Headers) => out.extend_from_slice(&record.headers_bytes()),
            }
        }
    }
}

fn field_named(name: &str) -> Option<Field> {
    Some(match name {
        "topic" => Field::Topic,
        "partition" => Field::Partition,
        "offset" => Field::Offset,
        "timestamp" => Field::Timestamp,
        "key" => Field::Key,
        "value" => Field::Value,
        "headers" => Field::Headers,
        _ => return None,
    })
}

/// Decodes standard base64 (padding optional); `None` if `text` is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    let mut accumulator: u32 = 0;
    let mut bits = 0;
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return None;
    }
    for byte in trimmed.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        accumulator = (accumulator << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((accumulator >> bits) as u8);
        }
    }
    // A lone sextet cannot end a valid encoding.
    (bits < 6).then_some(bytes)
}

/// Encodes `bytes` as standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, byte)| {
            word | u32::from(*byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                text.push(char::from(
                    ALPHABET[(word >> (18 - 6 * index) & 63) as usize],
                ));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Header options `name=value` as the API's `{name: value}` object.
///
/// # Errors
///
/// A message naming the option without `=`.
pub fn parse_pairs(pairs: &[String], option: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{option} {pair:?} has no `=`; write {option} name=value"))?;
        map.insert(name.to_owned(), value.to_owned());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        serde_json::from_value(serde_json::json!({
            "partition": 2, "offset": 41, "timestamp_ms": 1714564800000_i64,
            "key": "k1", "value": "hello", "headers": {"a": "1", "b": "x"}
        }))
        .unwrap()
    }

    fn render(template: &str, record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        Template::parse(template)
            .unwrap()
            .render("orders", record, &mut out);
        out
    }

    #[test]
    fn renders_every_field() {
        assert_eq!(
            render(
                "{topic}/{partition}@{offset} {timestamp} {key}={value} [{headers}]",
                &record()
            ),
            b"orders/2@41 1714564800000 k1=hello [a=1,b=x]"
        );
        assert_eq!(render("{value}", &record()), b"hello");
        assert_eq!(
            render("{{{value}}}\\t\\n\\\\ é", &record()),
            "{hello}\t\n\\ é".as_bytes()
        );
    }

    #[test]
    fn decodes_base64_records_byte_for_byte() {
        let record: Record = serde_json::from_value(serde_json::json!({
            "partition": 0, "offset": 0, "timestamp_ms": 0, "key": null,
            "value": "/wBh", "encoding": "base64", "headers": [{"key": "h", "value": "AA=="}]
        }))
        .unwrap();
        assert_eq!(
            render("[{key}]{value}|{headers}", &record),
            b"[]\xff\x00a|h=\x00"
        );
    }

    #[test]
    fn refuses_unknown_fields_and_stray_braces() {
        let error = Template::parse("{vaule}").unwrap_err();
        assert!(
            error.contains("{vaule}") && error.contains("{value}"),
            "{error}"
        );
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("{value").is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("/w==").unwrap(), b"\xff");
        assert!(decode_base64("a").is_none());
        assert!(decode_base64("a$==").is_none());
        for bytes in [&b""[..], b"h", b"he", b"hel", b"hello", b"\xff\x00\xfe"] {
            assert_eq!(decode_base64(&encode_base64(bytes)).unwrap(), bytes);
        }
        assert_eq!(encode_base64(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn pairs() {
        let map = parse_pairs(&["a=1".into(), "b=x=y".into(), "c=".into()], "--header").unwrap();
        assert_eq!(map["a"], "1");
        assert_eq!(map["b"], "x=y");
        assert_eq!(map["c"], "");
        assert!(parse_pairs(&["nope".into()], "--header")
            .unwrap_err()
            .contains("name=value"));
    }
}
