//! `/api/topics`: list, create, describe, configure, grow and delete topics
//! through the same core functions Kafka's admin requests call.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_core::{ConfigChange, ConfigSource, Replication, Topic, TopicConfig};

use crate::api::http_principal;
use crate::api::State;
use crate::error::{ApiError, ApiResult};
use crate::json::parse_body;

/// A config value given as a string, number or boolean.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// `"1000"`.
    Text(String),
    /// `1000`.
    Number(serde_json::Number),
    /// `true`.
    Flag(bool),
}

impl ConfigValue {
    fn text(&self) -> String {
        match self {
            ConfigValue::Text(text) => text.clone(),
            ConfigValue::Number(number) => number.to_string(),
            ConfigValue::Flag(flag) => flag.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    partitions: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, ConfigValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    #[serde(default)]
    set: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    delete: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reassignment {
    /// The target replicas, the preferred leader first.
    replicas: Vec<i32>,
    /// The partitions to move; every one when absent.
    partitions: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionCount {
    count: i32,
}

/// Messages (offsets between log start and high watermark) and bytes.
fn totals(topic: &Topic) -> (u64, u64) {
    topic
        .partitions()
        .iter()
        .fold((0, 0), |(messages, bytes), p| {
            let offsets = p.offsets();
            (
                messages
                    + offsets
                        .high_watermark
                        .saturating_sub(offsets.log_start_offset),
                bytes + offsets.size_bytes,
            )
        })
}

/// Every topic with its size.
pub async fn list(axum::extract::State(admin): State) -> Json<Value> {
    let topics = admin
        .broker
        .topics()
        .iter()
        .map(|topic| {
            let (messages, size_bytes) = totals(topic);
            json!({
                "name": topic.name(),
                "partitions": topic.partition_count(),
                "messages": messages,
                "size_bytes": size_bytes,
            })
        })
        .collect();
    Json(Value::Array(topics))
}

fn source_name(source: ConfigSource) -> &'static str {
    match source {
        ConfigSource::Topic => "topic",
        ConfigSource::Default => "default",
        ConfigSource::Broker => "broker",
    }
}

fn describe(admin: &crate::Admin, name: &str) -> ApiResult<Value> {
    let topic = admin.broker.topic(name).map_err(|_| unknown(name))?;
    let partitions: Vec<Value> = topic
        .partitions()
        .iter()
        .map(|p| {
            let offsets = p.offsets();
            json!({
                "partition": p.index(),
                "leader": admin.broker.partition_leader(name, p.index()),
                "replicas": admin.broker.partition_replicas(name, p.index()),
                "isr": admin.broker.partition_isr(name, p.index()),
                "moving_to": admin.broker.partition_reassignment(name, p.index()),
                "leader_epoch": p.leader_epoch(),
                "log_start_offset": offsets.log_start_offset,
                "high_watermark": offsets.high_watermark,
                "log_end_offset": offsets.log_end_offset,
                "size_bytes": offsets.size_bytes,
            })
        })
        .collect();
    let configs: Vec<Value> = admin
        .broker
        .describe_topic_config(name, &http_principal())?
        .iter()
        .map(|entry| {
            json!({
                "name": entry.name,
                "value": entry.value,
                "source": source_name(entry.source),
                "read_only": entry.read_only,
            })
        })
        .collect();
    let (messages, size_bytes) = totals(&topic);
    Ok(json!({
        "name": topic.name(),
        "id": topic.id().to_string(),
        "messages": messages,
        "size_bytes": size_bytes,
        "partitions": partitions,
        "configs": configs,
    }))
}

/// 404 for a topic that does not exist.
pub fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!("unknown topic '{name}'"))
}

/// One topic: partitions with offsets, effective configs.
///
/// # Errors
///
/// 404 for an unknown topic.
pub async fn get(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    describe(&admin, &name).map(Json)
}

/// Creates a topic.
///
/// # Errors
///
/// 400 for a bad name, count or config; 409 when it exists.
pub async fn create(
    axum::extract::State(admin): State,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: NewTopic = parse_body(&body)?;
    let pairs: Vec<(String, String)> = request
        .configs
        .iter()
        .map(|(key, value)| (key.clone(), value.text()))
        .collect();
    let config = TopicConfig::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    admin.broker.create_topic(
        &request.name,
        request.partitions,
        Replication::Default,
        config,
        false,
        &http_principal(),
    )?;
    Ok((StatusCode::CREATED, Json(describe(&admin, &request.name)?)))
}

/// Sets and deletes config overrides, all or nothing.
///
/// # Errors
///
/// 404 for an unknown topic; 400 for a bad config.
pub async fn patch_configs(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: ConfigPatch = parse_body(&body)?;
    let mut changes: Vec<(String, ConfigChange)> = request
        .set
        .iter()
        .map(|(key, value)| (key.clone(), ConfigChange::Set(value.text())))
        .collect();
    changes.extend(
        request
            .delete
            .into_iter()
            .map(|key| (key, ConfigChange::Delete)),
    );
    admin.broker.topic(&name).map_err(|_| unknown(&name))?;
    admin
        .broker
        .alter_topic_config(&name, &changes, false, &http_principal())?;
    describe(&admin, &name).map(Json)
}

/// Grows a topic to `count` partitions.
///
/// # Errors
///
/// 404 for an unknown topic; 400 when `count` is not larger.
pub async fn add_partitions(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: PartitionCount = parse_body(&body)?;
    admin.broker.topic(&name).map_err(|_| unknown(&name))?;
    admin
        .broker
        .create_partitions(&name, request.count, None, false, &http_principal())
        .map_err(|error| match error {
            weir_core::CoreError::InvalidPartitions(message) => {
                ApiError::bad_request(format!("field 'count': {message}"))
            }
            other => other.into(),
        })?;
    describe(&admin, &name).map(Json)
}

/// Moves partitions of a topic to other replicas (all partitions when
/// `partitions` is absent); the move completes in the background.
///
/// # Errors
///
/// 404 for an unknown topic; 400 for bad targets, a single node, or a
/// partition being moved already.
pub async fn reassign(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: Reassignment = parse_body(&body)?;
    let topic = admin.broker.topic(&name).map_err(|_| unknown(&name))?;
    let partitions = request
        .partitions
        .unwrap_or_else(|| (0..topic.partition_count()).collect());
    admin
        .broker
        .reassign_partitions(&name, &partitions, &request.replicas, &http_principal())?;
    Ok((StatusCode::ACCEPTED, Json(describe(&admin, &name)?)))
}

/// Deletes a topic and its data.
///
/// # Errors
///
/// 404 for an unknown topic.
pub async fn delete(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    admin
        .broker
        .delete_topic(&name, &http_principal())
        .map_err(|error| match error {
            weir_core::CoreError::UnknownTopicOrPartition => unknown(&name),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
