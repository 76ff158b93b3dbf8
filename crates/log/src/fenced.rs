//! Fenced ranges: damage inside a segment that valid batches follow, kept
//! (never cut) and refused to readers.
//!
//! On-disk format of a partition's `corrupt-ranges` file (present only
//! while some range is known; replaced atomically):
//!
//! ```text
//! 0                                                          version
//! N                                                          number of ranges
//! <segment_base> <position> <bytes> <first_offset> <end_offset>   N lines
//! ```

/// A fenced range of a segment: bytes that are not valid batches although
/// valid batches follow them. Reads of its offsets fail with
/// [`crate::LogError::Corrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptRange {
    /// Base offset of the segment holding the damage.
    pub segment_base_offset: u64,
    /// First damaged byte in the segment's `.log` file.
    pub position: u64,
    /// Damaged bytes.
    pub bytes: u64,
    /// First offset the damage covers (the end of the last good batch before it).
    pub first_offset: u64,
    /// Offset after the damage (the base offset of the valid batch after it).
    /// Equal to `first_offset` when the damage held no offsets.
    pub end_offset: u64,
}

impl CorruptRange {
    /// Whether `offset` lies in the range.
    pub fn holds_offset(&self, offset: u64) -> bool {
        (self.first_offset..self.end_offset).contains(&offset)
    }

    /// Byte after the range.
    pub fn end_position(&self) -> u64 {
        self.position + self.bytes
    }
}

/// The `corrupt-ranges` file's text for `ranges`.
pub(crate) fn format_corrupt_ranges(ranges: &[CorruptRange]) -> String {
    let mut text = format!("0\n{}\n", ranges.len());
    for range in ranges {
        text.push_str(&format!(
            "{} {} {} {} {}\n",
            range.segment_base_offset,
            range.position,
            range.bytes,
            range.first_offset,
            range.end_offset
        ));
    }
    text
}

/// The ranges of a `corrupt-ranges` file, `None` when it is malformed.
pub(crate) fn parse_corrupt_ranges(text: &str) -> Option<Vec<CorruptRange>> {
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let ranges = lines
        .map(|line| {
            let mut fields = line.split(' ').map(|field| field.parse::<u64>().ok());
            let mut next = || fields.next().flatten();
            Some(CorruptRange {
                segment_base_offset: next()?,
                position: next()?,
                bytes: next()?,
                first_offset: next()?,
                end_offset: next()?,
            })
        })
        .collect::<Option<Vec<CorruptRange>>>()?;
    (ranges.len() == count).then_some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_survive_their_file_format() {
        let ranges = vec![
            CorruptRange {
                segment_base_offset: 0,
                position: 4096,
                bytes: 311,
                first_offset: 40,
                end_offset: 43,
            },
            CorruptRange {
                segment_base_offset: 1000,
                position: 0,
                bytes: 7,
                first_offset: 1000,
                end_offset: 1000,
            },
        ];
        let text = format_corrupt_ranges(&ranges);
        assert_eq!(parse_corrupt_ranges(&text), Some(ranges));
        assert_eq!(parse_corrupt_ranges("0\n2\n1 2 3 4 5\n"), None);
        assert_eq!(parse_corrupt_ranges("1\n0\n"), None);
    }
}
