//! Exchanges and how each kind matches a binding against a message.

use amq_protocol::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::queues::args::text;

/// The routing rule of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Binding key is a pattern of dot-separated words with `*` and `#`.
    Topic,
    /// Binding arguments match the message's headers (`x-match`).
    Headers,
}

impl ExchangeKind {
    /// The kind named in `exchange.declare`, if known.
    pub fn from_name(name: &str) -> Option<ExchangeKind> {
        Some(match name {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    /// The name clients use.
    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    /// Whether a binding with `binding_key` and `binding_arguments` takes a
    /// message with `routing_key` and `headers`.
    pub fn matches(
        self,
        binding_key: &str,
        binding_arguments: &FieldTable,
        routing_key: &str,
        headers: &FieldTable,
    ) -> bool {
        match self {
            ExchangeKind::Direct => binding_key == routing_key,
            ExchangeKind::Fanout => true,
            ExchangeKind::Topic => topic_matches(binding_key, routing_key),
            ExchangeKind::Headers => headers_match(binding_arguments, headers),
        }
    }
}

/// AMQP topic matching: `*` is exactly one word, `#` zero or more words.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    matches_from(&split_words(pattern), &split_words(routing_key))
}

/// Words of a key; the empty key has none (as RabbitMQ's `split_topic_key`).
fn split_words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

fn matches_from(pattern: &[&str], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((&"#", rest)) => (0..=words.len()).any(|skip| matches_from(rest, &words[skip..])),
        Some((&word, rest)) => match words.split_first() {
            Some((first, remaining)) => {
                (word == "*" || word == *first) && matches_from(rest, remaining)
            }
            None => false,
        },
    }
}

/// Headers-exchange matching: `x-match` is `all` (default), `any`,
/// `all-with-x` or `any-with-x`; arguments starting with `x-` take part only
/// in the `-with-x` forms. A `void` binding value matches presence.
pub fn headers_match(binding_arguments: &FieldTable, headers: &FieldTable) -> bool {
    let mode = binding_arguments
        .inner()
        .get("x-match")
        .and_then(text)
        .unwrap_or_else(|| "all".into());
    let (any, with_x) = match mode.as_str() {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let mut considered = binding_arguments.inner().iter().filter(|(name, _)| {
        name.as_str() != "x-match" && (with_x || !name.as_str().starts_with("x-"))
    });
    let header_matches =
        |(name, wanted): (&amq_protocol::types::ShortString, &AMQPValue)| match headers
            .inner()
            .get(name.as_str())
        {
            Some(_) if matches!(wanted, AMQPValue::Void) => true,
            Some(value) => {
                value == wanted || (text(value).is_some() && text(value) == text(wanted))
            }
            None => false,
        };
    if any {
        considered.any(header_matches)
    } else {
        considered.all(header_matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_rabbitmq() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#.c", "c", true),
            ("#.c", "a.b.c", true),
            ("#", "", true),
            ("#", "a.b", true),
            ("*", "", false),
            ("*", "a", true),
            ("*.*", "a", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.x.y.c", true),
            ("#.#", "a", true),
            ("a.*.#", "a", false),
            ("", "", true),
            ("", "a", false),
            ("a..b", "a..b", true),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                topic_matches(pattern, key),
                expected,
                "pattern {pattern:?} key {key:?}"
            );
        }
    }

    #[test]
    fn headers_match_all_any_and_with_x() {
        let mut binding = FieldTable::default();
        binding.insert("format".into(), AMQPValue::LongString("pdf".into()));
        binding.insert("type".into(), AMQPValue::LongString("report".into()));
        let mut headers = FieldTable::default();
        headers.insert("format".into(), AMQPValue::LongString("pdf".into()));
        assert!(!headers_match(&binding, &headers));
        binding.insert("x-match".into(), AMQPValue::LongString("any".into()));
        assert!(headers_match(&binding, &headers));
        let mut with_x = FieldTable::default();
        with_x.insert("x-match".into(), AMQPValue::LongString("all-with-x".into()));
        with_x.insert("x-tag".into(), AMQPValue::LongString("t".into()));
        assert!(!headers_match(&with_x, &headers));
        headers.insert("x-tag".into(), AMQPValue::LongString("t".into()));
        assert!(headers_match(&with_x, &headers));
    }
}
