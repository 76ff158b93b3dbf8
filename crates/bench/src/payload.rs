//! The bytes every message carries, so that a consumer can check what it
//! got and measure latency without any side channel.
//!
//! Layout of a value (big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | sequence number, unique in a run (0, 1, 2, … over all producers) |
//! | 8..16 | scheduled send time, nanoseconds on [`clock_ns`]'s clock |
//! | 16.. | filler that does not repeat, so compression has real work |

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Bytes of the header at the start of every value.
pub const HEADER_BYTES: usize = 16;

/// The sequence number of warm-up messages, sent before the clock starts and
/// skipped by every consumer.
pub const WARMUP_SEQUENCE: u64 = u64::MAX;

/// Nanoseconds since the Unix epoch, read from a monotonic clock anchored
/// once per process, so intervals never go backwards when NTP steps the
/// wall clock, while two processes on one machine still agree to within the
/// anchoring error (a few microseconds).
pub fn clock_ns() -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (instant, unix_ns) = ANCHOR.get_or_init(|| {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        (Instant::now(), unix_ns)
    });
    unix_ns + instant.elapsed().as_nanos() as u64
}

/// A value of `size_bytes` bytes: a zero header, then filler.
pub fn filler(size_bytes: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut value: Vec<u8> = (0..size_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect();
    stamp(&mut value, 0, 0);
    value
}

/// Writes the header into `value` (which is at least [`HEADER_BYTES`] long;
/// argument validation guarantees it, shorter values are left alone).
pub fn stamp(value: &mut [u8], sequence: u64, sent_ns: u64) {
    if let Some(header) = value.get_mut(..HEADER_BYTES) {
        header[..8].copy_from_slice(&sequence.to_be_bytes());
        header[8..].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// The header of a received value: `(sequence, sent_ns)`, or `None` when
/// the value is too short to carry one.
pub fn read_header(value: &[u8]) -> Option<(u64, u64)> {
    let sequence = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let sent_ns = u64::from_be_bytes(value.get(8..HEADER_BYTES)?.try_into().ok()?);
    Some((sequence, sent_ns))
}

/// Microseconds from `sent_ns` to now (0 if the clocks disagree).
pub fn latency_us_since(sent_ns: u64) -> u64 {
    clock_ns().saturating_sub(sent_ns) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut value = filler(100);
        stamp(&mut value, 42, 1_700_000_000_123_456_789);
        assert_eq!(read_header(&value), Some((42, 1_700_000_000_123_456_789)));
        assert_eq!(value.len(), 100);
        assert!(value[HEADER_BYTES..].iter().all(u8::is_ascii_lowercase));
    }

    #[test]
    fn short_values_have_no_header() {
        assert_eq!(read_header(&[0; 15]), None);
    }

    #[test]
    fn clock_moves_forward() {
        let first = clock_ns();
        let second = clock_ns();
        assert!(second >= first);
        assert!(first > 1_600_000_000_000_000_000);
    }
}
