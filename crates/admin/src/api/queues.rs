//! `/api/queues`: list, declare, delete, purge and peek (get) queues
//! through the core's virtual-host operations AMQP clients use.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use weir_core::queues::{ChannelHandle, Queue};
use weir_core::Escaped;

use crate::api::{check_name, http_principal, vhost, State};
use crate::error::{ApiError, ApiResult};
use crate::json::{field_table, parse_body, payload, properties_json, table_json};
use crate::rates::RateKey;

/// Messages one `get` returns at most.
const GET_MESSAGES_MAX: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclareRequest {
    durable: Option<bool>,
    auto_delete: Option<bool>,
    arguments: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetRequest {
    count: u32,
    ack: bool,
}

fn queue_json(admin: &crate::Admin, vhost: &str, queue: &Queue) -> Value {
    let spec = queue.spec();
    let key = (vhost.to_owned(), queue.name().to_owned());
    let rate = |key: RateKey| admin.rates.per_second(&key);
    json!({
        "vhost": vhost,
        "name": queue.name(),
        "type": spec.parsed.queue_type.name(),
        "durable": spec.durable,
        "auto_delete": spec.auto_delete,
        "exclusive": spec.exclusive_owner.is_some(),
        "arguments": table_json(&spec.arguments),
        "ready": queue.message_count(),
        "unacked": queue.unacked_count(),
        "consumers": queue.consumer_count(),
        "source_topic": spec.parsed.source_topic,
        "lost_to_retention": queue.lost_to_retention(),
        "dead_letter_exchange": spec.parsed.dead_letter_exchange,
        "publish_rate_per_s": rate(RateKey::QueuePublished(key.0.clone(), key.1.clone())),
        "deliver_rate_per_s": rate(RateKey::QueueDelivered(key.0, key.1)),
    })
}

/// Every queue of every virtual host.
pub async fn list(axum::extract::State(admin): State) -> Json<Value> {
    let mut names: Vec<&String> = admin.vhosts.keys().collect();
    names.sort();
    let queues = names
        .into_iter()
        .flat_map(|name| {
            let vhost = &admin.vhosts[name];
            vhost
                .queues()
                .iter()
                .map(|queue| queue_json(&admin, name, queue))
                .collect::<Vec<_>>()
        })
        .collect();
    Json(Value::Array(queues))
}

fn find(admin: &crate::Admin, vhost_name: &str, name: &str) -> ApiResult<Arc<Queue>> {
    let host = vhost(admin, vhost_name)?;
    host.queues()
        .into_iter()
        .find(|queue| queue.name() == name)
        .ok_or_else(|| ApiError::not_found(format!("no queue '{name}' in vhost '{vhost_name}'")))
}

/// One queue.
///
/// # Errors
///
/// 404 for an unknown vhost or queue.
pub async fn get(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let queue = find(&admin, &vhost_name, &name)?;
    Ok(Json(queue_json(&admin, &vhost_name, &queue)))
}

/// Declares a queue (201) or confirms an equivalent one exists (204).
///
/// # Errors
///
/// 404 for an unknown vhost; 400 for inequivalent or invalid arguments.
pub async fn declare(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: DeclareRequest = parse_body(&body)?;
    let host = vhost(&admin, &vhost_name)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("the queue name is empty"));
    }
    check_name("queue", &name)?;
    let existed = find(&admin, &vhost_name, &name).is_ok();
    let arguments = match &request.arguments {
        Some(arguments) => field_table("arguments", arguments)?,
        None => Default::default(),
    };
    host.declare_queue(
        &name,
        false,
        request.durable.unwrap_or(true),
        false,
        request.auto_delete.unwrap_or(false),
        arguments,
        &http_principal(),
    )?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// Deletes a queue and its messages.
///
/// # Errors
///
/// 404 for an unknown vhost or queue.
pub async fn delete(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    find(&admin, &vhost_name, &name)?;
    let host = vhost(&admin, &vhost_name)?;
    host.delete_queue(&name, false, false, &owner(&admin, &vhost_name, &name))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The connection an operation acts as: an exclusive queue's owner (an
/// operator may manage any queue, as RabbitMQ's management API lets them).
/// The operator acts as an exclusive queue's owner (as RabbitMQ's
/// management API may delete one).
fn owner(admin: &crate::Admin, vhost_name: &str, name: &str) -> weir_core::Principal {
    find(admin, vhost_name, name)
        .ok()
        .and_then(|queue| queue.spec().exclusive_owner)
        .map_or_else(http_principal, weir_core::Principal::anonymous)
}

/// Drops every ready message.
///
/// # Errors
///
/// 404 for an unknown vhost or queue.
pub async fn purge(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let queue = find(&admin, &vhost_name, &name)?;
    let purged = queue.purge()?;
    tracing::info!(vhost = %Escaped(&vhost_name), queue = %Escaped(&name), purged, "queue purged through the HTTP API");
    Ok(Json(json!({ "purged": purged })))
}

/// Takes up to `count` messages; with `ack: false` they go back to the
/// queue (marked redelivered), as RabbitMQ's management "get messages".
///
/// # Errors
///
/// 404 for an unknown vhost or queue; 400 for a bad count or a stream queue.
pub async fn get_messages(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: GetRequest = parse_body(&body)?;
    if request.count == 0 || request.count > GET_MESSAGES_MAX {
        return Err(ApiError::bad_request(format!(
            "field 'count' must be 1 to {GET_MESSAGES_MAX}"
        )));
    }
    let queue = find(&admin, &vhost_name, &name)?;
    let (sink, _unused) = mpsc::unbounded_channel();
    let channel = ChannelHandle::new(owner(&admin, &vhost_name, &name).connection(), 0, sink);
    let mut taken = Vec::new();
    let mut out = Vec::new();
    for _ in 0..request.count {
        let Some((delivery, remaining)) = queue.get(&channel, request.ack)? else {
            break;
        };
        let (text, encoding) = payload(&delivery.message.body);
        out.push(json!({
            "payload": text,
            "payload_encoding": encoding,
            "payload_bytes": delivery.message.body.len(),
            "properties": properties_json(&delivery.message.properties),
            "redelivered": delivery.redelivered,
            "exchange": delivery.message.exchange,
            "routing_key": delivery.message.routing_key,
            "message_count": remaining,
        }));
        taken.push(delivery.id);
    }
    if !request.ack && !taken.is_empty() {
        // All at once, after the gets: each goes back to its own place.
        queue.reject(&taken, true)?;
    }
    Ok(Json(Value::Array(out)))
}
