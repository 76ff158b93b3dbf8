//! Kafka RecordBatch v2, the on-disk and on-wire unit of the log.
//!
//! Layout of the 61-byte header (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            written by the broker
//!      8     4  batch_length           bytes after this field
//!     12     4  partition_leader_epoch written by the broker
//!     16     1  magic                  must be 2
//!     17     4  crc                    CRC-32C of bytes 21..end
//!     21     2  attributes             compression (bits 0-2), timestamp type (3),
//!                                      transactional (4), control (5)
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  records_count
//!     61     …  records (possibly compressed)
//! ```
//!
//! The broker never re-encodes a batch: it overwrites `base_offset` and
//! `partition_leader_epoch`, which the CRC does not cover, and stores the rest
//! as the producer sent it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::BatchError;

/// Size of the RecordBatch v2 header in bytes.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` ends: a batch occupies `LOG_OVERHEAD + batch_length` bytes.
pub const LOG_OVERHEAD: usize = 12;
/// The only record format Weir stores.
pub const MAGIC_V2: i8 = 2;

const PARTITION_LEADER_EPOCH_AT: usize = 12;
/// Attribute bit of transactional batches.
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
/// Attribute bit of control batches (transaction markers).
pub const CONTROL_FLAG: i16 = 0x20;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// The parsed header of one RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes of the batch after the length field.
    pub batch_length: u32,
    /// Leader epoch under which the batch was appended.
    pub partition_leader_epoch: i32,
    /// CRC-32C stored in the batch.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// `last_offset - base_offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records the batch claims to hold.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes` without checking the CRC.
    ///
    /// # Errors
    ///
    /// [`BatchError::Incomplete`] when fewer than [`HEADER_BYTES`] bytes are
    /// given; [`BatchError::Corrupt`] when the magic byte is not 2 or the
    /// length field is too small to hold a header.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Incomplete);
        }
        let batch_length = read_u32(bytes, 8);
        if (batch_length as usize) < HEADER_BYTES - LOG_OVERHEAD {
            return Err(BatchError::Corrupt("batch length shorter than its header"));
        }
        if bytes[MAGIC_AT] as i8 != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(bytes[MAGIC_AT] as i8));
        }
        let last_offset_delta = read_u32(bytes, 23);
        if last_offset_delta > i32::MAX as u32 {
            return Err(BatchError::Corrupt("negative last offset delta"));
        }
        Ok(BatchHeader {
            base_offset: read_u64(bytes, 0),
            batch_length,
            partition_leader_epoch: read_u32(bytes, PARTITION_LEADER_EPOCH_AT) as i32,
            crc: read_u32(bytes, CRC_AT),
            attributes: i16::from_be_bytes([bytes[21], bytes[22]]),
            last_offset_delta,
            base_timestamp: read_u64(bytes, 27) as i64,
            max_timestamp: read_u64(bytes, 35) as i64,
            producer_id: read_u64(bytes, 43) as i64,
            producer_epoch: i16::from_be_bytes([bytes[51], bytes[52]]),
            base_sequence: read_u32(bytes, 53) as i32,
            records_count: read_u32(bytes, 57) as i32,
        })
    }

    /// Total bytes the batch occupies, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch (saturating: a damaged
    /// header may name any base offset, and is refused by its CRC later).
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.last_offset_delta))
    }

    /// Number of offsets the batch takes.
    pub fn offset_count(&self) -> u64 {
        u64::from(self.last_offset_delta) + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }

    /// Whether this is a control batch (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
}

/// Checks one complete batch: header, length and CRC-32C.
///
/// `bytes` must be exactly the batch (`header.total_bytes()` long).
///
/// # Errors
///
/// [`BatchError`] describing the first problem found.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_bytes() != bytes.len() {
        return Err(BatchError::Corrupt("batch length does not match its bytes"));
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0 || (header.records_count as u64) > header.offset_count() {
        return Err(BatchError::Corrupt(
            "record count does not fit the offset range",
        ));
    }
    Ok(header)
}

/// Splits a buffer holding consecutive batches (as in a produce request) into
/// validated batches.
///
/// # Errors
///
/// [`BatchError`] when any batch is incomplete or fails validation; the
/// buffer is all-or-nothing, as a produce request is.
pub fn split_batches(mut bytes: Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut batches = Vec::new();
    while !bytes.is_empty() {
        let header = BatchHeader::parse(&bytes)?;
        let size = header.total_bytes();
        if size > bytes.len() {
            return Err(BatchError::Incomplete);
        }
        let batch = bytes.split_to(size);
        validate(&batch)?;
        batches.push((header, batch));
    }
    Ok(batches)
}

/// Bytes at the start of a batch that hold the broker-owned fields
/// (`base_offset`, `batch_length`, `partition_leader_epoch`).
pub const STAMPED_PREFIX_BYTES: usize = 16;

/// The first [`STAMPED_PREFIX_BYTES`] of `batch` with the broker-owned fields
/// set; the CRC does not cover them, so the rest of the batch stays as sent.
pub fn stamped_prefix(
    batch: &[u8],
    base_offset: u64,
    partition_leader_epoch: i32,
) -> [u8; STAMPED_PREFIX_BYTES] {
    let mut prefix = [0u8; STAMPED_PREFIX_BYTES];
    prefix.copy_from_slice(&batch[..STAMPED_PREFIX_BYTES]);
    prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
    prefix
}

/// One record to put in a batch built by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Optional value (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Header key/value pairs, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes uncompressed records as one RecordBatch v2 with base offset 0.
///
/// Used for appends that do not arrive as Kafka batches (other protocols,
/// tests). `records` must not be empty.
pub fn encode_batch(records: &[NewRecord]) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_timestamp = records[0].timestamp;
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(base_timestamp);
    let mut body = BytesMut::new();
    for (delta, record) in records.iter().enumerate() {
        encode_record(&mut body, record, base_timestamp, delta as i64);
    }
    let mut buf = BytesMut::with_capacity(HEADER_BYTES + body.len());
    buf.put_u64(0);
    buf.put_u32((HEADER_BYTES - LOG_OVERHEAD + body.len()) as u32);
    buf.put_i32(0);
    buf.put_i8(MAGIC_V2);
    buf.put_u32(0); // CRC, filled below
    buf.put_i16(0);
    buf.put_u32((records.len() - 1) as u32);
    buf.put_i64(base_timestamp);
    buf.put_i64(max_timestamp);
    buf.put_i64(-1);
    buf.put_i16(-1);
    buf.put_i32(-1);
    buf.put_i32(records.len() as i32);
    buf.extend_from_slice(&body);
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

/// A transaction marker: a control batch with one record whose key is
/// `(version 0, type)` — type 0 aborts, 1 commits — and whose value is
/// `(version 0, coordinator_epoch)`, as Kafka's `EndTransactionMarker`.
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    let record = NewRecord {
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Vec::new(),
    };
    let mut batch = encode_batch(&[record]).to_vec();
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
        .copy_from_slice(&(TRANSACTIONAL_FLAG | CONTROL_FLAG).to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

/// Whether a control batch is a COMMIT marker (`None` if it is not a
/// well-formed marker). Markers are uncompressed, one record each.
pub fn marker_commits(batch: &[u8]) -> Option<bool> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    // Record: length, attributes, timestamp delta, offset delta, key length, key.
    let mut at = HEADER_BYTES;
    at += varint_len(batch.get(at..)?)?;
    at += 1;
    for _ in 0..3 {
        at += varint_len(batch.get(at..)?)?;
    }
    let key = batch.get(at..at + 4)?;
    Some(i16::from_be_bytes([key[2], key[3]]) == 1)
}

fn varint_len(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| b & 0x80 == 0).map(|i| i + 1)
}

fn encode_record(out: &mut BytesMut, record: &NewRecord, base_timestamp: i64, offset_delta: i64) {
    let mut body = BytesMut::new();
    body.put_i8(0); // record attributes, unused
    put_varlong(&mut body, record.timestamp - base_timestamp);
    put_varlong(&mut body, offset_delta);
    put_optional_bytes(&mut body, record.key.as_deref());
    put_optional_bytes(&mut body, record.value.as_deref());
    put_varlong(&mut body, record.headers.len() as i64);
    for (key, value) in &record.headers {
        put_optional_bytes(&mut body, Some(key.as_bytes()));
        put_optional_bytes(&mut body, value.as_deref());
    }
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// One record read back from an uncompressed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Absolute offset (the batch's base offset plus the record's delta).
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Optional value.
    pub value: Option<Bytes>,
    /// Header key/value pairs, in order.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Decodes the records of one uncompressed batch (as [`encode_batch`]
/// writes them), slicing `batch` without copying.
///
/// # Errors
///
/// [`BatchError::Corrupt`] when the batch is compressed or a record does not
/// parse; [`BatchError::Incomplete`] when bytes are missing.
pub fn decode_records(batch: &Bytes) -> Result<Vec<StoredRecord>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != 0 {
        return Err(BatchError::Corrupt(
            "compressed batch where uncompressed expected",
        ));
    }
    let base_timestamp = read_u64(batch, 27) as i64;
    let count = read_u32(batch, 57) as usize;
    let end = header.total_bytes().min(batch.len());
    let mut reader = RecordReader {
        bytes: batch,
        at: HEADER_BYTES,
        end,
    };
    let mut records = Vec::with_capacity(count.min(end / 8));
    for _ in 0..count {
        let length = reader.varlong()?;
        let record_end = reader.at
            + usize::try_from(length).map_err(|_| BatchError::Corrupt("negative record length"))?;
        if record_end > end {
            return Err(BatchError::Incomplete);
        }
        reader.at += 1; // record attributes, unused
        let timestamp = base_timestamp + reader.varlong()?;
        let offset = header.base_offset + reader.varlong()? as u64;
        let key = reader.optional_bytes()?;
        let value = reader.optional_bytes()?;
        let header_count = reader.varlong()?.max(0) as usize;
        let mut headers = Vec::with_capacity(header_count.min(16));
        for _ in 0..header_count {
            let name = reader.optional_bytes()?.unwrap_or_default();
            headers.push((name, reader.optional_bytes()?));
        }
        reader.at = record_end;
        records.push(StoredRecord {
            offset,
            timestamp,
            key,
            value,
            headers,
        });
    }
    Ok(records)
}

/// A position inside a batch's records section.
struct RecordReader<'a> {
    bytes: &'a Bytes,
    at: usize,
    end: usize,
}

impl RecordReader<'_> {
    /// Zig-zag varint, as Kafka's `ByteUtils.readVarlong`.
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes[..self.end]
                .get(self.at)
                .ok_or(BatchError::Incomplete)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(BatchError::Corrupt("varint longer than 10 bytes"))
    }

    fn optional_bytes(&mut self) -> Result<Option<Bytes>, BatchError> {
        let length = self.varlong()?;
        if length < 0 {
            return Ok(None);
        }
        let end = self.at + length as usize;
        if end > self.end {
            return Err(BatchError::Incomplete);
        }
        let bytes = self.bytes.slice(self.at..end);
        self.at = end;
        Ok(Some(bytes))
    }
}

fn put_optional_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => put_varlong(out, -1),
    }
}

/// Zig-zag varint, as Kafka's `ByteUtils.writeVarlong`.
fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> NewRecord {
        NewRecord {
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
        }
    }

    #[test]
    fn encoded_batch_validates_and_reports_its_shape() {
        let batch = encode_batch(&[record("a"), record("bb"), record("ccc")]);
        let header = validate(&batch).expect("valid batch");
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.total_bytes(), batch.len());
    }

    #[test]
    fn records_decode_as_encoded() {
        let mut records = vec![record("a"), record("bb"), record("")];
        records[1].key = None;
        records[1].timestamp += 5;
        records[2].value = None;
        records[2].headers.push(("empty".into(), None));
        let mut bytes = encode_batch(&records).to_vec();
        bytes[..8].copy_from_slice(&100u64.to_be_bytes());
        let decoded = decode_records(&Bytes::from(bytes)).expect("decodes");
        assert_eq!(decoded.len(), 3);
        for (index, (stored, sent)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(stored.offset, 100 + index as u64);
            assert_eq!(stored.timestamp, sent.timestamp);
            assert_eq!(stored.key, sent.key);
            assert_eq!(stored.value, sent.value);
            let headers: Vec<_> = sent
                .headers
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.clone()))
                .collect();
            assert_eq!(stored.headers, headers);
        }
    }

    #[test]
    fn truncated_records_are_refused_not_panicked_on() {
        let bytes = encode_batch(&[record("abc"), record("def")]);
        for cut in HEADER_BYTES..bytes.len() {
            let mut broken = bytes.slice(..cut).to_vec();
            broken[8..12].copy_from_slice(&((cut - LOG_OVERHEAD) as u32).to_be_bytes());
            assert!(
                decode_records(&Bytes::from(broken)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut bytes = encode_batch(&[record("a")]).to_vec();
        let prefix = stamped_prefix(&bytes, 42, 7);
        bytes[..STAMPED_PREFIX_BYTES].copy_from_slice(&prefix);
        let header = validate(&bytes).expect("CRC does not cover stamped fields");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut bytes = encode_batch(&[record("payload")]).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn markers_say_commit_or_abort() {
        for commit in [true, false] {
            let marker = encode_marker(7, 3, commit, 0, 1);
            let header = validate(&marker).expect("valid marker");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (7, 3));
            assert_eq!(marker_commits(&marker), Some(commit));
        }
    }

    #[test]
    fn split_rejects_a_truncated_second_batch() {
        let one = encode_batch(&[record("a")]);
        let mut two = BytesMut::new();
        two.extend_from_slice(&one);
        two.extend_from_slice(&one[..one.len() - 3]);
        assert_eq!(split_batches(two.freeze()), Err(BatchError::Incomplete));
    }
}
