//! `/api/connections`: list live client connections, close one.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use weir_core::connections::ConnectionInfo;

use crate::api::State;
use crate::error::{ApiError, ApiResult};

fn connection_json(info: &ConnectionInfo) -> Value {
    json!({
        "id": info.id,
        "protocol": info.protocol.name(),
        "peer": info.peer.to_string(),
        "user": info.user,
        "client": info.client,
        "channels": info.channels,
        "connected_at_ms": info.connected_at_ms,
    })
}

/// Every live connection.
pub async fn list(axum::extract::State(admin): State) -> Json<Value> {
    let connections = admin.broker.connections().list();
    Json(Value::Array(
        connections.iter().map(connection_json).collect(),
    ))
}

/// Closes a connection (AMQP: `connection.close` 320; Kafka: the socket).
///
/// # Errors
///
/// 400 for an id that is not a number, 404 for an unknown one.
pub async fn close(
    axum::extract::State(admin): State,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("connection id '{id}' is not a number")))?;
    if admin.broker.connections().close(id) {
        tracing::info!(connection = id, "connection closed through the HTTP API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no connection {id}")))
    }
}
