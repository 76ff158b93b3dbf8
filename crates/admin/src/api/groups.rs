//! `/api/groups`: list and describe consumer groups (members, assignments,
//! lag, committed-offset rate and drain estimate), reset offsets, delete.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_core::group::MemberDescription;
use weir_core::{CoreError, ResetTarget};

use crate::api::State;
use crate::error::{ApiError, ApiResult};
use crate::json::parse_body;
use crate::rates::RateKey;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    topics: Option<Vec<String>>,
    to: String,
    value: Option<Value>,
    #[serde(default)]
    execute: bool,
}

fn unknown(group: &str) -> ApiError {
    ApiError::not_found(format!("unknown group '{group}'"))
}

/// Every group with its state.
pub async fn list(axum::extract::State(admin): State) -> Json<Value> {
    let groups = admin
        .broker
        .list_groups()
        .iter()
        .map(|group| {
            json!({
                "group": group.group_id,
                "state": group.state.name(),
                "members": group.members.len(),
                "protocol_type": group.protocol_type,
            })
        })
        .collect();
    Json(Value::Array(groups))
}

/// The partitions a consumer-protocol assignment names (empty when it is
/// not one, e.g. Kafka Connect's).
fn assignments(member: &MemberDescription) -> Vec<Value> {
    let mut bytes = member.assignment.clone();
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16();
    let Ok(assignment) = ConsumerProtocolAssignment::decode(&mut bytes, version) else {
        return Vec::new();
    };
    assignment
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(
                move |partition| json!({"topic": topic.topic.0.as_str(), "partition": partition}),
            )
        })
        .collect()
}

/// One group: members and their assignments, offsets with lag and rates.
///
/// # Errors
///
/// 404 for an unknown group.
pub async fn get(
    axum::extract::State(admin): State,
    Path(group): Path<String>,
) -> ApiResult<Json<Value>> {
    let description = admin
        .broker
        .describe_group(&group)
        .ok_or_else(|| unknown(&group))?;
    let members: Vec<Value> = description
        .members
        .iter()
        .map(|member| {
            json!({
                "member_id": member.member_id,
                "group_instance_id": member.group_instance_id,
                "client_id": member.client_id,
                "host": member.client_host,
                "assignments": assignments(member),
            })
        })
        .collect();
    let offsets: Vec<Value> = admin
        .broker
        .group_lag(&group)
        .into_iter()
        .map(|lag| {
            let (topic, partition) = lag.partition;
            let key = RateKey::Committed(group.clone(), topic.clone(), partition);
            let rate = admin.rates.per_second(&key);
            let drain_s = match (lag.lag, rate) {
                (0, _) => Some(0.0),
                (lag, Some(rate)) if rate > 0.0 => Some(lag as f64 / rate),
                _ => None,
            };
            json!({
                "topic": topic,
                "partition": partition,
                "committed": lag.committed,
                "log_end": lag.log_end,
                "lag": lag.lag,
                "rate_per_s": rate,
                "drain_s": drain_s,
            })
        })
        .collect();
    Ok(Json(json!({
        "group": description.group_id,
        "state": description.state.name(),
        "protocol_type": description.protocol_type,
        "protocol": description.protocol_name,
        "members": members,
        "offsets": offsets,
    })))
}

fn integer_value(request: &ResetRequest) -> ApiResult<i64> {
    request
        .value
        .as_ref()
        .and_then(|value| match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "field 'value': an integer is required with to={}",
                request.to
            ))
        })
}

fn reset_target(request: &ResetRequest) -> ApiResult<ResetTarget> {
    Ok(match request.to.as_str() {
        "earliest" => ResetTarget::Earliest,
        "latest" => ResetTarget::Latest,
        "datetime" => ResetTarget::Timestamp(integer_value(request)?),
        "offset" => ResetTarget::Offset(integer_value(request)?),
        "shift-by" => ResetTarget::ShiftBy(integer_value(request)?),
        other => {
            return Err(ApiError::bad_request(format!(
                "field 'to': '{other}' is not one of earliest, latest, datetime, offset, shift-by"
            )))
        }
    })
}

/// Plans (dry run) or executes a reset of the group's committed offsets.
///
/// # Errors
///
/// 400 for a bad target; 404 for an unknown topic or group; 409 when
/// executing while the group has members.
pub async fn reset_offsets(
    axum::extract::State(admin): State,
    Path(group): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: ResetRequest = parse_body(&body)?;
    let target = reset_target(&request)?;
    let plan = admin
        .broker
        .reset_offsets(&group, request.topics.as_deref(), target, request.execute)
        .await
        .map_err(|error| match error {
            CoreError::NonEmptyGroup => ApiError::conflict(format!(
                "group '{group}' has active members; offsets can only be reset while it is inactive"
            )),
            CoreError::GroupIdNotFound => unknown(&group),
            CoreError::UnknownTopicOrPartition => {
                ApiError::not_found("field 'topics': an unknown topic is named")
            }
            other => other.into(),
        })?;
    let offsets: Vec<Value> = plan
        .iter()
        .map(|reset| {
            json!({
                "topic": reset.partition.0,
                "partition": reset.partition.1,
                "current": reset.current,
                "target": reset.target,
            })
        })
        .collect();
    Ok(Json(
        json!({"executed": request.execute, "offsets": offsets}),
    ))
}

/// Deletes a group without members, with its offsets.
///
/// # Errors
///
/// 404 for an unknown group; 409 while it has members.
pub async fn delete(
    axum::extract::State(admin): State,
    Path(group): Path<String>,
) -> ApiResult<StatusCode> {
    admin
        .broker
        .delete_group(&group)
        .await
        .map_err(|error| match error {
            CoreError::GroupIdNotFound => unknown(&group),
            CoreError::NonEmptyGroup => {
                ApiError::conflict(format!("group '{group}' has active members"))
            }
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
