//! `/api/topics/{name}/records`: produce test records (through the core's
//! append, `acks=all`) and peek at stored ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use weir_core::{Acks, Isolation, OffsetSpec, Partition};
use weir_log::batch::{encode_batch, split_batches, NewRecord};

use crate::api::http_principal;
use crate::api::topics::unknown;
use crate::api::State;
use crate::error::{ApiError, ApiResult};
use crate::json::{base64_text, decode_payload, parse_body, payload};

/// Records returned by one peek at most.
const PEEK_RECORDS_MAX: usize = 1000;
/// Records produced by one request at most.
const PRODUCE_RECORDS_MAX: usize = 10_000;
/// Bytes read from the log per step of a peek.
const PEEK_READ_BYTES: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRequest {
    records: Vec<RecordIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    key: Option<String>,
    value: Option<String>,
    /// "string" (default) or "base64", for key and value.
    encoding: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    partition: Option<i32>,
}

/// The partition a record goes to: given, by key hash, or round robin.
fn choose_partition(record: &RecordIn, key: Option<&[u8]>, count: u32) -> i32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let count = count.max(1);
    if let Some(partition) = record.partition {
        return partition;
    }
    match key {
        Some(key) => weir_core::partitioner::partition_for_key(key, count) as i32,
        None => (NEXT.fetch_add(1, Ordering::Relaxed) % count) as i32,
    }
}

fn new_record(index: usize, record: &RecordIn) -> ApiResult<NewRecord> {
    let encoding = record.encoding.as_deref();
    let field = |name: &str| format!("records[{index}].{name}");
    let key = record
        .key
        .as_deref()
        .map(|key| decode_payload(&field("key"), key, encoding))
        .transpose()?;
    let value = record
        .value
        .as_deref()
        .map(|value| decode_payload(&field("value"), value, encoding))
        .transpose()?;
    Ok(NewRecord {
        timestamp: weir_core::now_ms(),
        key: key.map(bytes::Bytes::from),
        value: value.map(bytes::Bytes::from),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(bytes::Bytes::from(v.clone().into_bytes()))))
            .collect(),
    })
}

/// Appends records (one batch per partition) and answers once durable.
///
/// # Errors
///
/// 404 for an unknown topic or partition; 400 for a bad record.
pub async fn produce(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: ProduceRequest = parse_body(&body)?;
    if request.records.is_empty() || request.records.len() > PRODUCE_RECORDS_MAX {
        return Err(ApiError::bad_request(format!(
            "field 'records': give 1 to {PRODUCE_RECORDS_MAX} records"
        )));
    }
    let topic = admin.broker.topic(&name).map_err(|_| unknown(&name))?;
    let count = topic.partition_count();
    let mut by_partition: BTreeMap<i32, Vec<(usize, NewRecord)>> = BTreeMap::new();
    for (index, record) in request.records.iter().enumerate() {
        let stored = new_record(index, record)?;
        let partition = choose_partition(record, stored.key.as_deref(), count);
        if partition < 0 || partition as u32 >= count {
            return Err(ApiError::not_found(format!(
                "field 'records[{index}].partition': topic '{name}' has no partition {partition}"
            )));
        }
        by_partition
            .entry(partition)
            .or_default()
            .push((index, stored));
    }
    let mut placed = vec![Value::Null; request.records.len()];
    for (partition, records) in by_partition {
        let (indexes, records): (Vec<usize>, Vec<NewRecord>) = records.into_iter().unzip();
        let appended = admin
            .broker
            .append(
                &name,
                partition,
                encode_batch(&records),
                Acks::All,
                &http_principal(),
            )?
            .written()
            .await?;
        appended.durable().await?;
        for (position, index) in indexes.into_iter().enumerate() {
            placed[index] = json!({
                "partition": partition,
                "offset": appended.base_offset + position as u64,
            });
        }
    }
    Ok(Json(Value::Array(placed)))
}

/// Where a peek starts and how much it returns.
struct Peek {
    partition: i32,
    start: Start,
    limit: usize,
}

enum Start {
    Offset(i64),
    Earliest,
    Latest,
    Timestamp(i64),
}

fn parse_peek(query: &HashMap<String, String>) -> ApiResult<Peek> {
    let number = |field: &str| -> ApiResult<Option<i64>> {
        query
            .get(field)
            .map(|text| {
                text.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "parameter '{field}': '{text}' is not an integer"
                    ))
                })
            })
            .transpose()
    };
    let partition = i32::try_from(number("partition")?.unwrap_or(0))
        .map_err(|_| ApiError::bad_request("parameter 'partition' is out of range"))?;
    let limit = number("limit")?.unwrap_or(100);
    if !(1..=PEEK_RECORDS_MAX as i64).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "parameter 'limit' must be 1 to {PEEK_RECORDS_MAX}"
        )));
    }
    let start = match (
        number("offset")?,
        number("timestamp_ms")?,
        query.get("from"),
    ) {
        (Some(offset), _, _) => Start::Offset(offset),
        (None, Some(timestamp), _) => Start::Timestamp(timestamp),
        (None, None, None) => Start::Earliest,
        (None, None, Some(from)) => match from.as_str() {
            "earliest" => Start::Earliest,
            "latest" => Start::Latest,
            other => {
                return Err(ApiError::bad_request(format!(
                    "parameter 'from': '{other}' is neither 'earliest' nor 'latest'"
                )))
            }
        },
    };
    Ok(Peek {
        partition,
        start,
        limit: limit as usize,
    })
}

/// The first offset a peek reads, clamped to what the partition holds.
fn first_offset(admin: &crate::Admin, partition: &Partition, peek: &Peek) -> ApiResult<u64> {
    let offsets = partition.offsets();
    let (start, end) = (offsets.log_start_offset, offsets.high_watermark);
    let wanted = match peek.start {
        Start::Offset(offset) => u64::try_from(offset).unwrap_or(0),
        Start::Earliest => start,
        // The last `limit` records, as a console wants to show them.
        Start::Latest => end.saturating_sub(peek.limit as u64),
        Start::Timestamp(ms) => admin
            .broker
            .list_offset(
                partition,
                OffsetSpec::Timestamp(ms),
                Isolation::ReadUncommitted,
                &http_principal(),
            )?
            .map_or(end, |(offset, _)| offset),
    };
    Ok(wanted.clamp(start, end))
}

/// A record as JSON: key, value and header values as UTF-8 text, or, when
/// any of them is not UTF-8, all of them base64 with `"encoding": "base64"`
/// (one rule per record, so a reader never has to guess per field).
fn record_json(partition: i32, record: &kafka_protocol::records::Record) -> Value {
    let fields = || {
        [&record.key, &record.value]
            .into_iter()
            .chain(record.headers.values())
    };
    let binary = fields()
        .flatten()
        .any(|bytes| std::str::from_utf8(bytes).is_err());
    let text = |bytes: &Option<bytes::Bytes>| match bytes {
        None => Value::Null,
        Some(bytes) if binary => json!(base64_text(bytes)),
        Some(bytes) => json!(payload(bytes).0),
    };
    let headers: Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect();
    let mut out = json!({
        "partition": partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": text(&record.key),
        "value": text(&record.value),
        "headers": headers,
    });
    if binary {
        out["encoding"] = json!("base64");
    }
    out
}

/// Reads up to `limit` records of a partition from an offset, a time, the
/// earliest or the latest.
///
/// # Errors
///
/// 404 for an unknown topic or partition; 400 for bad parameters.
pub async fn peek(
    axum::extract::State(admin): State,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let peek = parse_peek(&query)?;
    let topic = admin.broker.topic(&name).map_err(|_| unknown(&name))?;
    let partition = topic.partition(peek.partition).map_err(|_| {
        ApiError::not_found(format!(
            "topic '{name}' has no partition {}",
            peek.partition
        ))
    })?;
    let mut offset = first_offset(&admin, &partition, &peek)?;
    let end = partition.offsets().high_watermark;
    let mut out = Vec::new();
    while out.len() < peek.limit && offset < end {
        let read = admin.broker.read(
            &partition,
            offset as i64,
            PEEK_READ_BYTES,
            Isolation::ReadUncommitted,
            &http_principal(),
        )?;
        let batches = split_batches(read.records).map_err(weir_core::CoreError::from)?;
        if batches.is_empty() {
            break;
        }
        for (header, mut batch) in batches {
            let next = header.last_offset() + 1;
            if !header.is_control() {
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).map_err(
                    |error| {
                        ApiError::new(
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot decode a stored batch: {error}"),
                        )
                    },
                )?;
                for record in &set.records {
                    if record.offset >= offset as i64 && out.len() < peek.limit {
                        out.push(record_json(peek.partition, record));
                    }
                }
            }
            offset = offset.max(next);
        }
    }
    Ok(Json(Value::Array(out)))
}
