//! Logging what clients send without letting them write the log.
//!
//! The human log format prints `%` fields as they display: a queue name,
//! client id or reply text holding a newline would start a line of its own,
//! one that looks like the broker's (`x\nERROR forged line`), and escape
//! sequences could rewrite a terminal. So every string a client chose, and
//! every error or reply text that may quote one, is logged as
//! `field = %Escaped(value)`. (A bare `&str` field is quoted and escaped by
//! the subscriber already; `Escaped` keeps the form the same wherever the
//! value comes from, and works for errors, which are `Display`.)

use std::fmt::{self, Display, Write};

/// Displays the inner value with control and other non-printable
/// characters escaped as Rust's `Debug` escapes them (`\n`, `\r`, `\t`,
/// `\0`, `\u{1b}`, `\u{202e}`…) and `\` doubled, so that what is printed
/// is one line and reads back to the original unambiguously. Printable
/// text, quotes included, is left as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping { out: formatter }, "{}", self.0)
    }
}

/// Escapes what is written through it into `out`.
struct Escaping<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
}

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Runs of characters that need nothing are written in one piece.
        let mut plain_from = 0;
        for (index, character) in text.char_indices() {
            if !needs_escape(character) {
                continue;
            }
            self.out.write_str(&text[plain_from..index])?;
            if character == '\\' {
                self.out.write_str("\\\\")?;
            } else {
                write!(self.out, "{}", character.escape_debug())?;
            }
            plain_from = index + character.len_utf8();
        }
        self.out.write_str(&text[plain_from..])
    }
}

fn needs_escape(character: char) -> bool {
    match character {
        '\\' => true,
        // Debug escapes quotes, but they cannot break a line.
        '\'' | '"' => false,
        ' '..='~' => false,
        // Control characters (C0, DEL, C1), line and paragraph separators,
        // format characters such as bidirectional overrides, unassigned code
        // points: whatever Debug would not print as itself.
        other => other.escape_debug().len() > 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        Escaped(text).to_string()
    }

    #[test]
    fn a_newline_cannot_start_a_line() {
        assert_eq!(
            escaped("x\nERROR forged line"),
            "x\\nERROR forged line".to_owned()
        );
        assert_eq!(escaped("a\r\tb\0"), "a\\r\\tb\\0");
    }

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        assert_eq!(escaped("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escaped("\u{7f}\u{85}"), "\\u{7f}\\u{85}");
        assert_eq!(escaped("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
    }

    #[test]
    fn printable_text_is_kept() {
        let text = "queue 'orders' in \"/\": é, 日本, ✓";
        assert_eq!(escaped(text), text);
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_cannot_be_faked() {
        assert_eq!(escaped("a\\nb"), "a\\\\nb");
    }

    #[test]
    fn errors_are_escaped_through_display() {
        let error = std::io::Error::other("no queue 'x\ny'");
        assert_eq!(Escaped(&error).to_string(), "no queue 'x\\ny'");
    }
}
