//! One client connection: frames in, answers out, in request order.
//!
//! The reader decodes and dispatches each request as it arrives, so the
//! writes of pipelined produce requests reach the log in the order they were
//! sent; answers that must wait (a produce awaiting fsync, a fetch long
//! poll) are futures, queued in order for the writer task, which awaits
//! each in turn. At most `requests_in_flight_max` answers are queued; the
//! reader stops reading while the queue is full.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use weir_core::connections::Registration;
use weir_core::metrics::{Metrics, Protocol};
use weir_core::{Escaped, Principal};

use crate::dispatch::{self, DispatchError, Reply};
use crate::server::Context;

/// Bytes read from the socket at a time while a frame arrives; a frame's
/// buffer grows with what was received, not with what its prefix claims.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error("frame length {0} is negative or over socket.request.max.bytes")]
    FrameTooLarge(i64),
    #[error("the client closed the connection in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Dispatch(DispatchError),
    #[error("socket error: {0}")]
    Io(std::io::Error),
    #[error("closed by an operator")]
    ClosedByOperator,
}

/// Serves one connection until the client leaves, sends something that
/// cannot be answered, or the broker shuts down.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set_nodelay failed");
    }
    let (reader, writer) = stream.into_split();
    let (replies, queued) = mpsc::channel(context.config.requests_in_flight_max);
    let registration = context.broker.connections().register(Protocol::Kafka, peer);
    // Everything logged for this connection (errors answered included) names it.
    let span = tracing::info_span!("kafka", %peer, connection = registration.id());
    let metrics = Arc::clone(context.broker.metrics());
    let writer = tokio::spawn(write_replies(writer, queued, metrics).instrument(span.clone()));
    match read_requests(
        reader,
        &context,
        (&peer.ip().to_string(), &registration),
        replies,
        &mut shutdown,
    )
    .instrument(span)
    .await
    {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(CloseReason::Io(error)) => tracing::debug!(%peer, %error, "connection lost"),
        Err(reason) => tracing::warn!(%peer, reason = %Escaped(&reason), "closing connection"),
    }
    if let Ok(Err(error)) = writer.await {
        tracing::debug!(%peer, %error, "writing answers failed");
    }
}

async fn read_requests(
    mut reader: OwnedReadHalf,
    context: &Arc<Context>,
    (client_host, registration): (&str, &Registration),
    replies: mpsc::Sender<Reply>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), CloseReason> {
    // No SASL yet: every Kafka client is anonymous.
    let principal = Principal::anonymous(registration.id());
    loop {
        let length = tokio::select! {
            () = registration.close_requested() => return Err(CloseReason::ClosedByOperator),
            length = reader.read_i32() => match length {
                Ok(length) => length,
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(error) => return Err(CloseReason::Io(error)),
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= context.config.request_bytes_max)
            .ok_or(CloseReason::FrameTooLarge(i64::from(length)))?;
        let frame = read_frame(&mut reader, length).await?;
        context
            .broker
            .metrics()
            .bytes_received(Protocol::Kafka, length as u64 + 4);
        if let Some(client_id) = client_id(&frame) {
            registration.set_client(client_id);
        }
        match dispatch::handle(context, (client_host, &principal), frame.freeze()) {
            Ok(Some(reply)) => {
                if replies.send(reply).await.is_err() {
                    return Ok(()); // the writer stopped: the socket is gone
                }
            }
            Ok(None) => {}
            Err(error) => return Err(CloseReason::Dispatch(error)),
        }
    }
}

async fn read_frame(reader: &mut OwnedReadHalf, length: usize) -> Result<BytesMut, CloseReason> {
    let mut frame = BytesMut::with_capacity(length.min(READ_CHUNK_BYTES));
    while frame.len() < length {
        frame.reserve((length - frame.len()).min(READ_CHUNK_BYTES));
        let mut limited = (&mut *reader).take((length - frame.len()) as u64);
        match limited.read_buf(&mut frame).await {
            Ok(0) => return Err(CloseReason::Truncated),
            Ok(_) => {}
            Err(error) => return Err(CloseReason::Io(error)),
        }
    }
    Ok(frame)
}

/// The `client.id` of a request header (v1 and later: a nullable int16
/// string after api key, version and correlation id).
fn client_id(frame: &[u8]) -> Option<&str> {
    let length = i16::from_be_bytes([*frame.get(8)?, *frame.get(9)?]);
    let end = 10 + usize::try_from(length).ok()?;
    std::str::from_utf8(frame.get(10..end)?).ok()
}

async fn write_replies(
    writer: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Reply>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(READ_CHUNK_BYTES, writer);
    while let Some(reply) = queued.recv().await {
        let Some(bytes) = reply.await else {
            // The answer could not be encoded: a bug of ours, already logged.
            break;
        };
        writer.write_all(&bytes).await?;
        metrics.bytes_sent(Protocol::Kafka, bytes.len() as u64);
        if queued.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    writer.shutdown().await
}
