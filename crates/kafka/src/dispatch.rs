//! Request routing: header, version check, one API module per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use weir_core::metrics::{Metrics, Protocol};

use weir_core::Principal;

use crate::api;
use crate::server::Context;

/// An encoded answer (length prefix included), now or later; `None` means
/// it could not be encoded and the connection must close.
pub type Reply = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// What an API handler gives back.
pub enum Answer<R> {
    /// The response is ready.
    Now(R),
    /// The response needs waiting (durability, long poll).
    Later(Pin<Box<dyn Future<Output = R> + Send>>),
    /// No response at all (produce with `acks=0`).
    Nothing,
}

/// A request that cannot be answered: the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Shorter than a request header.
    #[error("request of {0} bytes is shorter than a request header")]
    TooShort(usize),
    /// An API key Weir does not know.
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    /// A known API at a version Weir does not advertise.
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not decode.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// What was wrong.
        reason: String,
    },
}

/// Who sent a request, for group membership records.
#[derive(Debug, Clone)]
pub struct Client {
    /// The `client.id` in the request header.
    pub client_id: String,
    /// The peer's address.
    pub client_host: String,
    /// Who the core is told makes the request.
    pub principal: Principal,
}

/// The fixed part every request starts with: api key, api version, correlation id.
const REQUEST_PREFIX_BYTES: usize = 8;

/// Decodes one request frame and starts answering it.
///
/// # Errors
///
/// [`DispatchError`] when the request cannot be answered at all.
pub fn handle(
    context: &Arc<Context>,
    (client_host, principal): (&str, &Principal),
    mut frame: Bytes,
) -> Result<Option<Reply>, DispatchError> {
    if frame.len() < REQUEST_PREFIX_BYTES {
        return Err(DispatchError::TooShort(frame.len()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(api_key).map_err(|()| DispatchError::UnknownApi(api_key))?;
    if !api::supports(api, version) {
        if api == ApiKey::ApiVersions {
            // The protocol's rule: answer with a v0 ApiVersions response
            // carrying UNSUPPORTED_VERSION and the versions we do support.
            let response = api::api_versions::unsupported_version();
            return Ok(Some(ready(encode(api, 0, correlation_id, &response))));
        }
        return Err(DispatchError::UnsupportedVersion { api, version });
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|error| malformed(api, version, error))?;
    let client = Client {
        client_id: header
            .client_id
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        client_host: client_host.to_string(),
        principal: principal.clone(),
    };
    route(context, api, &header, &client, frame)
}

fn route(
    context: &Arc<Context>,
    api: ApiKey,
    header: &RequestHeader,
    client: &Client,
    body: Bytes,
) -> Result<Option<Reply>, DispatchError> {
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    let started = Instant::now();
    macro_rules! call {
        ($module:ident) => {{
            let request = decode(api, version, body)?;
            Ok(finish(
                (api, started, Arc::clone(context.broker.metrics())),
                version,
                correlation_id,
                api::$module::handle(context, request, version),
            ))
        }};
        ($module:ident, client) => {{
            let request = decode(api, version, body)?;
            Ok(finish(
                (api, started, Arc::clone(context.broker.metrics())),
                version,
                correlation_id,
                api::$module::handle(context, request, version, client),
            ))
        }};
    }
    match api {
        ApiKey::ApiVersions => call!(api_versions),
        ApiKey::Metadata => call!(metadata, client),
        ApiKey::Produce => call!(produce, client),
        ApiKey::Fetch => call!(fetch, client),
        ApiKey::ListOffsets => call!(list_offsets, client),
        ApiKey::CreateTopics => call!(create_topics, client),
        ApiKey::DeleteTopics => call!(delete_topics, client),
        ApiKey::CreatePartitions => call!(create_partitions, client),
        ApiKey::DescribeConfigs => call!(describe_configs, client),
        ApiKey::AlterConfigs => call!(alter_configs, client),
        ApiKey::IncrementalAlterConfigs => call!(incremental_alter_configs, client),
        ApiKey::DescribeCluster => call!(describe_cluster),
        ApiKey::InitProducerId => call!(init_producer_id),
        ApiKey::FindCoordinator => call!(find_coordinator),
        ApiKey::JoinGroup => call!(join_group, client),
        ApiKey::SyncGroup => call!(sync_group),
        ApiKey::Heartbeat => call!(heartbeat),
        ApiKey::LeaveGroup => call!(leave_group),
        ApiKey::OffsetCommit => call!(offset_commit),
        ApiKey::OffsetFetch => call!(offset_fetch),
        ApiKey::ListGroups => call!(list_groups),
        ApiKey::DescribeGroups => call!(describe_groups),
        ApiKey::DeleteGroups => call!(delete_groups),
        ApiKey::OffsetDelete => call!(offset_delete),
        ApiKey::AddPartitionsToTxn => call!(add_partitions_to_txn),
        ApiKey::AddOffsetsToTxn => call!(add_offsets_to_txn),
        ApiKey::TxnOffsetCommit => call!(txn_offset_commit),
        ApiKey::EndTxn => call!(end_txn),
        other => Err(DispatchError::UnsupportedVersion {
            api: other,
            version,
        }),
    }
}

/// Decodes a request body. Bytes left over are tolerated, as Apache Kafka
/// tolerates them: librdkafka 2.x sends three extra bytes after some
/// Metadata v12 requests, and refusing them would break those clients.
fn decode<R: Decodable>(api: ApiKey, version: i16, mut body: Bytes) -> Result<R, DispatchError> {
    let request = R::decode(&mut body, version).map_err(|error| malformed(api, version, error))?;
    if body.has_remaining() {
        tracing::debug!(
            ?api,
            version,
            extra = body.remaining(),
            "bytes after the request body ignored"
        );
    }
    Ok(request)
}

fn malformed(api: ApiKey, version: i16, error: impl std::fmt::Display) -> DispatchError {
    DispatchError::Malformed {
        api,
        version,
        reason: error.to_string(),
    }
}

fn finish<R: Encodable + Send + 'static>(
    (api, started, metrics): (ApiKey, Instant, Arc<Metrics>),
    version: i16,
    correlation_id: i32,
    answer: Answer<R>,
) -> Option<Reply> {
    match answer {
        Answer::Now(response) => {
            observe(&metrics, api, started);
            Some(ready(encode(api, version, correlation_id, &response)))
        }
        Answer::Later(future) => Some(Box::pin(async move {
            let response = future.await;
            observe(&metrics, api, started);
            encode(api, version, correlation_id, &response)
        })),
        Answer::Nothing => {
            observe(&metrics, api, started);
            None
        }
    }
}

/// Records a request's duration (decoded to answered) for `/metrics`.
fn observe(metrics: &Metrics, api: ApiKey, started: Instant) {
    metrics.request(Protocol::Kafka, api_name(api), started.elapsed());
}

/// The API's name as Kafka's own metrics spell it (`request="Produce"`).
fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::EndTxn => "EndTxn",
        _ => "Other",
    }
}

fn ready(bytes: Option<Bytes>) -> Reply {
    Box::pin(std::future::ready(bytes))
}

/// Encodes a response with its header and length prefix.
fn encode<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Option<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encoded = header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|()| response.encode(&mut buf, version));
    if let Err(error) = encoded {
        tracing::error!(?api, version, %error, "cannot encode a response; closing the connection");
        return None;
    }
    let length = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    Some(buf.freeze())
}
