//! ApiVersions: the list of APIs and versions Weir handles.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::api::SUPPORTED;
use crate::dispatch::Answer;
use crate::server::Context;

/// Answers with [`SUPPORTED`].
pub fn handle(
    _context: &Arc<Context>,
    _request: ApiVersionsRequest,
    _version: i16,
) -> Answer<ApiVersionsResponse> {
    Answer::Now(ApiVersionsResponse::default().with_api_keys(api_keys()))
}

/// The v0 answer to an ApiVersions request of a version Weir does not know.
pub fn unsupported_version() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}
