//! What a consumer saw: counts, offsets in order, every sequence number
//! exactly once, and the latency carried in each value.

use std::collections::HashMap;

use serde_json::json;

use crate::histogram::LatencyHistogram;
use crate::payload::{latency_us_since, read_header, WARMUP_SEQUENCE};

/// What consumers saw, beyond the count.
///
/// Offsets are checked per partition: a gap is expected where a
/// transaction's commit marker sits, a regression never is. Sequence
/// numbers must be increasing within each partition (meaningful with one
/// producer) and each of 0..N must be seen exactly once.
#[derive(Default)]
pub struct ConsumeCheck {
    /// Messages counted (warm-ups excluded).
    pub received: u64,
    /// Warm-up messages skipped.
    pub warmups: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Values of another size than `--size`.
    pub wrong_size: u64,
    /// Offsets that jumped forward.
    pub offset_gaps: u64,
    /// Offsets that went back.
    pub offset_regressions: u64,
    /// Sequence numbers that went back within a partition.
    pub sequence_regressions: u64,
    /// Sequence numbers seen more than once.
    pub duplicates: u64,
    /// Values too short for a header.
    pub unsequenced: u64,
    /// End-to-end latency from the send time in each value (meaningful only
    /// when the producer ran at the same time).
    pub latency: LatencyHistogram,
    next_offset: HashMap<i32, i64>,
    last_sequence: HashMap<i32, u64>,
    /// One bit per sequence number seen.
    seen: Vec<u64>,
}

impl ConsumeCheck {
    /// Records one message. Returns false for a warm-up message.
    pub fn observe(
        &mut self,
        partition: i32,
        offset: i64,
        value: &[u8],
        size_bytes: usize,
    ) -> bool {
        let header = read_header(value);
        self.next_offset_check(partition, offset);
        if header.is_some_and(|(sequence, _)| sequence == WARMUP_SEQUENCE) {
            self.warmups += 1;
            return false;
        }
        self.received += 1;
        self.bytes += value.len() as u64;
        if size_bytes != 0 && value.len() != size_bytes {
            self.wrong_size += 1;
        }
        let Some((sequence, sent_ns)) = header else {
            self.unsequenced += 1;
            return true;
        };
        self.latency.record_us(latency_us_since(sent_ns));
        if let Some(last) = self.last_sequence.insert(partition, sequence) {
            if sequence <= last {
                self.sequence_regressions += 1;
            }
        }
        self.mark_seen(sequence);
        true
    }

    fn next_offset_check(&mut self, partition: i32, offset: i64) {
        if let Some(next) = self.next_offset.insert(partition, offset + 1) {
            if offset > next {
                self.offset_gaps += 1;
            } else if offset < next {
                self.offset_regressions += 1;
            }
        }
    }

    fn mark_seen(&mut self, sequence: u64) {
        let word = (sequence / 64) as usize;
        // Sequence numbers come from a producer of this tool, dense from 0;
        // a stray huge one is not worth gigabytes of bitmap.
        if word > (1 << 26) {
            return;
        }
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (sequence % 64);
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
        }
        self.seen[word] |= bit;
    }

    /// Adds another consumer's check; a sequence number both saw is a
    /// duplicate.
    pub fn merge(&mut self, other: ConsumeCheck) {
        self.received += other.received;
        self.warmups += other.warmups;
        self.bytes += other.bytes;
        self.wrong_size += other.wrong_size;
        self.offset_gaps += other.offset_gaps;
        self.offset_regressions += other.offset_regressions;
        self.sequence_regressions += other.sequence_regressions;
        self.duplicates += other.duplicates;
        self.unsequenced += other.unsequenced;
        self.latency.merge(&other.latency);
        if other.seen.len() > self.seen.len() {
            self.seen.resize(other.seen.len(), 0);
        }
        for (mine, theirs) in self.seen.iter_mut().zip(other.seen) {
            self.duplicates += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
    }

    /// Distinct sequence numbers below `expected` that were seen.
    pub fn distinct_below(&self, expected: u64) -> u64 {
        let full_words = (expected / 64) as usize;
        let mut count: u64 = self
            .seen
            .iter()
            .take(full_words)
            .map(|bits| u64::from(bits.count_ones()))
            .sum();
        if let Some(bits) = self.seen.get(full_words) {
            let mask = (1u64 << (expected % 64)) - 1;
            count += u64::from((bits & mask).count_ones());
        }
        count
    }

    /// Checks and counters for the report.
    pub fn details(&self, expected: Option<u64>) -> serde_json::Value {
        let missing = expected.map(|expected| {
            expected.saturating_sub(self.distinct_below(expected) + self.unsequenced)
        });
        json!({
            "requested": expected,
            "warmup_messages_skipped": self.warmups,
            "wrong_size": self.wrong_size,
            "offset_gaps": self.offset_gaps,
            "offset_regressions": self.offset_regressions,
            "sequence_regressions": self.sequence_regressions,
            "duplicates": self.duplicates,
            "missing": missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{filler, stamp};

    fn value(sequence: u64) -> Vec<u8> {
        let mut value = filler(32);
        stamp(&mut value, sequence, 0);
        value
    }

    #[test]
    fn counts_duplicates_missing_and_gaps() {
        let mut check = ConsumeCheck::default();
        for (offset, sequence) in [(0, 0), (1, 1), (3, 3), (4, 3)] {
            check.observe(0, offset, &value(sequence), 32);
        }
        assert!(!check.observe(0, 5, &value(WARMUP_SEQUENCE), 32));
        assert_eq!(check.received, 4);
        assert_eq!(check.warmups, 1);
        assert_eq!(check.offset_gaps, 1);
        assert_eq!(check.duplicates, 1);
        assert_eq!(check.sequence_regressions, 1);
        assert_eq!(check.details(Some(5))["missing"], 2);
    }

    #[test]
    fn merging_finds_duplicates_across_consumers() {
        let mut left = ConsumeCheck::default();
        let mut right = ConsumeCheck::default();
        left.observe(0, 0, &value(0), 0);
        left.observe(0, 1, &value(2), 0);
        right.observe(1, 0, &value(1), 0);
        right.observe(1, 1, &value(2), 0);
        left.merge(right);
        assert_eq!(left.received, 4);
        assert_eq!(left.duplicates, 1);
        assert_eq!(left.distinct_below(3), 3);
        assert_eq!(left.details(Some(3))["missing"], 0);
    }
}
