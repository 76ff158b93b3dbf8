//! The API's one error type and how core errors map to HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_core::queues::QueueError;
use weir_core::CoreError;
use weir_core::Escaped;

/// An error answered as `{"error": "<message>"}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 400: a bad field or body.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %Escaped(&self.message), "HTTP API error");
        } else {
            tracing::info!(status = %self.status, error = %Escaped(&self.message), "HTTP API request refused");
        }
        let body = serde_json::json!({ "error": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> ApiError {
        let status = match &error {
            CoreError::UnknownTopicOrPartition | CoreError::GroupIdNotFound => {
                StatusCode::NOT_FOUND
            }
            CoreError::TopicAlreadyExists(_)
            | CoreError::NonEmptyGroup
            | CoreError::TopicInUse(_)
            | CoreError::GroupSubscribedToTopic => StatusCode::CONFLICT,
            CoreError::Storage(_) | CoreError::Io(_) | CoreError::StoredDataCorrupt(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            CoreError::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            CoreError::ClusterUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::NotLeaderOrFollower => StatusCode::MISDIRECTED_REQUEST,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, error.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> ApiError {
        let status = match &error {
            QueueError::NotFound(_) => StatusCode::NOT_FOUND,
            QueueError::ResourceLocked(_) => StatusCode::CONFLICT,
            QueueError::AccessRefused(_) | QueueError::NotAllowed(_) => StatusCode::FORBIDDEN,
            QueueError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, error.to_string())
    }
}
