//! Raw frames: splitting the byte stream (with `frame_max` enforced from
//! the 7-byte header, before a payload is buffered) and encoding.
//!
//! ```text
//! type: u8 | channel: u16 | size: u32 | payload: size bytes | 0xCE
//! ```

use amq_protocol::frame::{gen_frame, AMQPFrame};
use amq_protocol::protocol::AMQPClass;
use bytes::{Buf, Bytes, BytesMut};

use crate::errors::{AmqpError, FRAME_ERROR};

/// Frame type of methods.
pub const METHOD: u8 = 1;
/// Frame type of content headers.
pub const HEADER: u8 = 2;
/// Frame type of body frames.
pub const BODY: u8 = 3;
/// Frame type of heartbeats.
pub const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Bytes of a frame besides its payload (header and end octet).
pub const FRAME_OVERHEAD_BYTES: usize = 8;
/// Class id of `basic`, the only content class.
pub const BASIC_CLASS: u16 = 60;
/// The protocol header of AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// One frame off the wire.
#[derive(Debug)]
pub struct RawFrame {
    /// Frame type.
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload, without header and end octet.
    pub payload: Bytes,
}

/// Takes the next whole frame from `buffer`: `Ok(None)` when more bytes are
/// needed.
///
/// # Errors
///
/// 501 FRAME_ERROR for a frame larger than `frame_bytes_max`, an unknown
/// type or a bad end octet.
pub fn next_frame(
    buffer: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<RawFrame>, AmqpError> {
    if buffer.len() < 7 {
        return Ok(None);
    }
    let kind = buffer[0];
    let channel = u16::from_be_bytes([buffer[1], buffer[2]]);
    let size = u32::from_be_bytes([buffer[3], buffer[4], buffer[5], buffer[6]]) as usize;
    if !matches!(kind, METHOD | HEADER | BODY | HEARTBEAT) {
        return Err(AmqpError::connection(
            FRAME_ERROR,
            format!("unknown frame type {kind}"),
        ));
    }
    if size + FRAME_OVERHEAD_BYTES > frame_bytes_max {
        return Err(AmqpError::connection(
            FRAME_ERROR,
            format!(
                "frame size {} exceeds frame_max {frame_bytes_max}",
                size + FRAME_OVERHEAD_BYTES
            ),
        ));
    }
    if buffer.len() < 7 + size + 1 {
        buffer.reserve(7 + size + 1 - buffer.len());
        return Ok(None);
    }
    if buffer[7 + size] != FRAME_END {
        return Err(AmqpError::connection(
            FRAME_ERROR,
            format!("bad frame end octet {:#04x}", buffer[7 + size]),
        ));
    }
    buffer.advance(7);
    let payload = buffer.split_to(size).freeze();
    buffer.advance(1);
    Ok(Some(RawFrame {
        kind,
        channel,
        payload,
    }))
}

/// Appends a method frame to `out`.
pub fn put_method(out: &mut Vec<u8>, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    let buffer = std::mem::take(out);
    *out = cookie_factory::gen_simple(gen_frame(&frame), buffer)
        .expect("writing to a Vec cannot fail");
}

/// Appends a content header and the body frames of one message.
pub fn put_content(
    out: &mut Vec<u8>,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_bytes_max: usize,
) {
    let header_size = 12 + raw_properties.len();
    out.reserve(header_size + body.len() + 2 * FRAME_OVERHEAD_BYTES);
    out.push(HEADER);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(header_size as u32).to_be_bytes());
    out.extend_from_slice(&BASIC_CLASS.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(raw_properties);
    out.push(FRAME_END);
    for chunk in body.chunks(frame_bytes_max - FRAME_OVERHEAD_BYTES) {
        out.push(BODY);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
        out.push(FRAME_END);
    }
}

/// Appends a heartbeat frame.
pub fn put_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_limits_hold() {
        let mut buffer =
            BytesMut::from(&[BODY, 0, 1, 0, 0, 0, 2, b'h', b'i', FRAME_END, HEARTBEAT][..]);
        let frame = next_frame(&mut buffer, 4096)
            .expect("valid")
            .expect("whole");
        assert_eq!(
            (frame.kind, frame.channel, &frame.payload[..]),
            (BODY, 1, &b"hi"[..])
        );
        assert!(next_frame(&mut buffer, 4096)
            .expect("partial is fine")
            .is_none());
        let mut huge = BytesMut::from(&[BODY, 0, 1, 0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            next_frame(&mut huge, 4096).expect_err("too big").code,
            FRAME_ERROR
        );
        let mut bad_end = BytesMut::from(&[BODY, 0, 1, 0, 0, 0, 0, 0x00][..]);
        assert_eq!(
            next_frame(&mut bad_end, 4096).expect_err("bad end").code,
            FRAME_ERROR
        );
    }
}
