//! `/api/exchanges` and `/api/bindings`: declare, delete, publish a test
//! message; list, create and remove bindings.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use weir_core::queues::{Destination, ExchangeKind, Message};

use crate::api::{check_name, http_principal, vhost, State};
use crate::error::{ApiError, ApiResult};
use crate::json::{decode_payload, field_table, parse_body, table_json, PropertiesIn};

/// Name of the default exchange in paths ("" cannot be a path segment).
const DEFAULT_EXCHANGE: &str = "amq.default";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclareRequest {
    #[serde(rename = "type")]
    kind: String,
    durable: Option<bool>,
    auto_delete: Option<bool>,
    internal: Option<bool>,
    arguments: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default)]
    routing_key: String,
    payload: String,
    payload_encoding: Option<String>,
    properties: Option<PropertiesIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingRequest {
    vhost: Option<String>,
    source: String,
    destination: String,
    destination_type: String,
    #[serde(default)]
    routing_key: String,
    arguments: Option<Map<String, Value>>,
}

/// The core's name of an exchange in a path.
fn exchange_name(path_name: &str) -> &str {
    if path_name == DEFAULT_EXCHANGE {
        ""
    } else {
        path_name
    }
}

/// Every exchange of every virtual host ("" is the default exchange).
pub async fn list(axum::extract::State(admin): State) -> Json<Value> {
    let mut out = Vec::new();
    for (vhost_name, host) in sorted(&admin) {
        for exchange in host.exchanges() {
            out.push(json!({
                "vhost": vhost_name,
                "name": exchange.name,
                "type": exchange.kind.name(),
                "durable": exchange.durable,
                "auto_delete": exchange.auto_delete,
                "internal": exchange.internal,
                "arguments": table_json(&exchange.arguments),
            }));
        }
    }
    Json(Value::Array(out))
}

fn sorted(admin: &crate::Admin) -> Vec<(&String, &std::sync::Arc<weir_core::queues::VirtualHost>)> {
    let mut hosts: Vec<_> = admin.vhosts.iter().collect();
    hosts.sort_by(|a, b| a.0.cmp(b.0));
    hosts
}

fn exists(host: &weir_core::queues::VirtualHost, name: &str) -> bool {
    host.exchanges()
        .iter()
        .any(|exchange| exchange.name == name)
}

/// Declares an exchange (201) or confirms an equivalent one exists (204).
///
/// # Errors
///
/// 404 for an unknown vhost; 400 for an unknown type or inequivalent
/// properties; 403 for reserved names.
pub async fn declare(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: DeclareRequest = parse_body(&body)?;
    let host = vhost(&admin, &vhost_name)?;
    let kind = ExchangeKind::from_name(&request.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "field 'type': '{}' is not one of direct, fanout, topic, headers",
            request.kind
        ))
    })?;
    check_name("exchange", &name)?;
    let name = exchange_name(&name);
    let existed = exists(&host, name);
    let arguments = match &request.arguments {
        Some(arguments) => field_table("arguments", arguments)?,
        None => Default::default(),
    };
    host.declare_exchange(
        name,
        kind,
        false,
        request.durable.unwrap_or(true),
        request.auto_delete.unwrap_or(false),
        request.internal.unwrap_or(false),
        arguments,
    )?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// Deletes an exchange and its bindings.
///
/// # Errors
///
/// 404 for an unknown vhost or exchange; 403 for standard exchanges.
pub async fn delete(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let host = vhost(&admin, &vhost_name)?;
    let name = exchange_name(&name);
    if !exists(&host, name) {
        return Err(ApiError::not_found(format!(
            "no exchange '{name}' in vhost '{vhost_name}'"
        )));
    }
    host.delete_exchange(name, false)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes one message through the exchange; answers once the queues
/// it reached hold it durably (as a publisher confirm would).
///
/// # Errors
///
/// 404 for an unknown vhost or exchange; 400 for bad properties or payload.
pub async fn publish(
    axum::extract::State(admin): State,
    Path((vhost_name, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: PublishRequest = parse_body(&body)?;
    let host = vhost(&admin, &vhost_name)?;
    let payload = decode_payload(
        "payload",
        &request.payload,
        request.payload_encoding.as_deref(),
    )?;
    let properties = request.properties.unwrap_or_default().into_properties()?;
    crate::json::short("routing_key", &request.routing_key)?;
    let message = Message::with_properties(
        exchange_name(&name).to_owned(),
        request.routing_key,
        properties,
        bytes::Bytes::from(payload),
        weir_core::now_ms(),
    )?;
    let stored = host.publish(&message, &http_principal())?;
    let published = stored.published[0];
    for (log, written) in &stored.syncs {
        log.wait_committed(*written)
            .await
            .map_err(weir_core::queues::QueueError::from)?;
    }
    Ok(Json(json!({
        "routed": published.routed,
        "rejected": published.rejected,
    })))
}

/// Every binding of every virtual host.
pub async fn list_bindings(axum::extract::State(admin): State) -> Json<Value> {
    let mut out = Vec::new();
    for (vhost_name, host) in sorted(&admin) {
        for exchange in host.exchanges() {
            for binding in &exchange.bindings {
                let (destination, kind) = match &binding.destination {
                    Destination::Queue(queue) => (queue, "queue"),
                    Destination::Exchange(exchange) => (exchange, "exchange"),
                };
                out.push(json!({
                    "vhost": vhost_name,
                    "source": exchange.name,
                    "destination": destination,
                    "destination_type": kind,
                    "routing_key": binding.routing_key,
                    "arguments": table_json(&binding.arguments),
                }));
            }
        }
    }
    Json(Value::Array(out))
}

/// The vhost, destination and arguments of a binding request.
fn binding_parts(
    request: &BindingRequest,
) -> ApiResult<(String, Destination, amq_protocol::types::FieldTable)> {
    let destination = match request.destination_type.as_str() {
        "queue" => Destination::Queue(request.destination.clone()),
        "exchange" => Destination::Exchange(request.destination.clone()),
        other => {
            return Err(ApiError::bad_request(format!(
                "field 'destination_type': '{other}' is neither 'queue' nor 'exchange'"
            )))
        }
    };
    let arguments = match &request.arguments {
        Some(arguments) => field_table("arguments", arguments)?,
        None => Default::default(),
    };
    crate::json::short("routing_key", &request.routing_key)?;
    Ok((
        request.vhost.clone().unwrap_or_else(|| "/".to_owned()),
        destination,
        arguments,
    ))
}

/// Binds a queue or exchange to a source exchange.
///
/// # Errors
///
/// 404 when either end is missing; 400 for a bad body; 403 for the default exchange.
pub async fn create_binding(
    axum::extract::State(admin): State,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: BindingRequest = parse_body(&body)?;
    let (vhost_name, destination, arguments) = binding_parts(&request)?;
    let host = vhost(&admin, &vhost_name)?;
    host.bind(
        exchange_name(&request.source),
        destination,
        &request.routing_key,
        arguments,
        &http_principal(),
    )?;
    Ok(StatusCode::CREATED)
}

/// Removes a binding (the same fields as when it was made).
///
/// # Errors
///
/// 404 when either end is missing; 400 for a bad body.
pub async fn delete_binding(
    axum::extract::State(admin): State,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: BindingRequest = parse_body(&body)?;
    let (vhost_name, destination, arguments) = binding_parts(&request)?;
    let host = vhost(&admin, &vhost_name)?;
    host.unbind(
        exchange_name(&request.source),
        destination,
        &request.routing_key,
        &arguments,
        &http_principal(),
    )?;
    Ok(StatusCode::NO_CONTENT)
}
