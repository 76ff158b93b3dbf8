//! Checks of stored batches, shared by recovery, reads and offline
//! verification: the CRC of a batch read a chunk at a time, the scan for
//! where valid batches resume after damage, and the checked read that
//! serves batches to consumers.

use std::io;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::error::BatchError;
use crate::storage::StorageFile;

/// Bytes read at a time when computing a stored batch's CRC or scanning for
/// the next valid batch after damage: memory stays bounded whatever length
/// a damaged header claims.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Byte of the header where the CRC-covered part starts (`attributes`).
const CRC_COVERED_FROM: usize = 21;

/// The first position in `from..size` where a batch starts whose header
/// parses, that `plausible` accepts (it must check the batch fits below
/// `size`), and whose CRC matches. Reads a chunk at a time.
pub(crate) fn find_valid_batch(
    file: &dyn StorageFile,
    from: u64,
    size: u64,
    plausible: impl Fn(&BatchHeader, u64) -> bool,
) -> io::Result<Option<(u64, BatchHeader)>> {
    let mut chunk_start = from;
    let rest = size.saturating_sub(from).min(SCAN_CHUNK_BYTES as u64);
    let mut chunk = vec![0u8; rest as usize];
    while chunk_start + HEADER_BYTES as u64 <= size {
        let length = (size - chunk_start).min(SCAN_CHUNK_BYTES as u64) as usize;
        file.read_exact_at(&mut chunk[..length], chunk_start)?;
        let candidates = length.saturating_sub(HEADER_BYTES - 1);
        for at in 0..candidates {
            if chunk[at + 16] as i8 != batch::MAGIC_V2 {
                continue;
            }
            let position = chunk_start + at as u64;
            let Ok(header) = BatchHeader::parse(&chunk[at..at + HEADER_BYTES]) else {
                continue;
            };
            if header.records_count >= 0
                && plausible(&header, position)
                && crc_matches(file, &header, position)?
            {
                return Ok(Some((position, header)));
            }
        }
        // Consecutive chunks overlap by a header, so no start is missed.
        chunk_start += candidates.max(1) as u64;
    }
    Ok(None)
}

/// Whether the stored CRC of the whole batch at `position` matches,
/// reading it a chunk at a time. The caller checked that it fits in the file.
pub(crate) fn crc_matches(
    file: &dyn StorageFile,
    header: &BatchHeader,
    position: u64,
) -> io::Result<bool> {
    let mut crc = 0u32;
    let mut at = position + CRC_COVERED_FROM as u64;
    let end = position + header.total_bytes() as u64;
    let mut buf = vec![0u8; (end - at).min(SCAN_CHUNK_BYTES as u64) as usize];
    while at < end {
        let length = (end - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..length], at)?;
        crc = crc32c::crc32c_append(crc, &buf[..length]);
        at += length as u64;
    }
    Ok(crc == header.crc)
}

/// A read of stored batches that found damage instead of a batch.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file system failed.
    Io(io::Error),
    /// The first batch of the read is damaged.
    Corrupt,
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> ReadError {
        ReadError::Io(error)
    }
}

/// Reads whole batches from `file` starting at `position`, up to `max_bytes`
/// but at least one batch, stopping before the first batch that reaches
/// `end_offset` (exclusive upper bound of what may be read). `limit` is
/// where the read must end (the file length when the read was planned, or a
/// fenced range): bytes below it do not change.
///
/// Every batch is checked (header, CRC, offsets following each other) before
/// it is returned: a damaged batch after good ones ends the read there, and
/// a damaged first batch is an error, so stored damage is never served.
pub(crate) fn read_batches(
    file: &dyn StorageFile,
    limit: u64,
    position: u64,
    max_bytes: usize,
    end_offset: u64,
) -> Result<Bytes, ReadError> {
    let available = limit.saturating_sub(position) as usize;
    if available == 0 {
        return Ok(Bytes::new());
    }
    if available < HEADER_BYTES {
        return Err(ReadError::Corrupt);
    }
    let mut probe = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut probe, position)?;
    let first = BatchHeader::parse(&probe).map_err(|_| ReadError::Corrupt)?;
    if first.last_offset() >= end_offset {
        return Ok(Bytes::new());
    }
    if first.total_bytes() > available {
        return Err(ReadError::Corrupt);
    }
    let want = max_bytes.max(first.total_bytes()).min(available);
    let mut buf = BytesMut::zeroed(want);
    file.read_exact_at(&mut buf, position)?;
    let mut whole = 0;
    let mut expected_base = first.base_offset;
    while whole + HEADER_BYTES <= buf.len() {
        let Ok(header) = BatchHeader::parse(&buf[whole..]) else {
            break;
        };
        let end = whole + header.total_bytes();
        if header.last_offset() >= end_offset || end > buf.len() {
            break;
        }
        let checked = batch::validate(&buf[whole..end]).and_then(|header| {
            if header.base_offset == expected_base {
                Ok(header)
            } else {
                Err(BatchError::Corrupt(
                    "base offset does not follow the batch before",
                ))
            }
        });
        match checked {
            Ok(header) => expected_base = header.last_offset() + 1,
            Err(_) if whole == 0 => return Err(ReadError::Corrupt),
            Err(_) => break,
        }
        whole = end;
    }
    if whole == 0 {
        return Err(ReadError::Corrupt);
    }
    buf.truncate(whole);
    Ok(buf.freeze())
}
