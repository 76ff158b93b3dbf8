//! `weir topic create|list|describe|alter|delete|add-partitions`.

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::encode;
use super::table::{self, Table};
use super::{json_pairs, parse, print, print_json, ApiOptions, CliError};

const EXAMPLES: &str = "Examples:
  weir topic create orders --partitions 6 --config retention.ms=86400000
  weir topic list
  weir topic describe orders
  weir topic alter orders --set retention.ms=3600000 --delete segment.bytes
  weir topic add-partitions orders --count 12
  weir topic reassign orders --replicas 4,2,3 --partition 0   (in a cluster)
  weir topic delete orders
  weir topic list --output json | jq -r '.[].name'";

const LIST_HINT: &str = "list the topics with `weir topic list`";

/// Arguments of `weir topic`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, subcommand_required = true)]
pub struct TopicArgs {
    #[command(flatten)]
    pub(super) api: ApiOptions,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Name of the new topic.
        name: String,
        /// Number of partitions [default: the broker's --num-partitions].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
        /// A topic setting, e.g. retention.ms=86400000 (repeatable).
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// List topics with their partitions, messages and size.
    List,
    /// Show a topic's partitions (offsets, sizes) and settings.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Set or remove topic settings.
    #[command(arg_required_else_help = true)]
    Alter {
        /// Topic name.
        name: String,
        /// A setting to set, e.g. retention.ms=3600000 (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A setting to return to its default (repeatable).
        #[arg(long = "delete", value_name = "NAME")]
        delete: Vec<String>,
    },
    /// Delete a topic and all its records.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Grow a topic to more partitions (partitions can never be removed).
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total number of partitions (as Kafka's CreatePartitions).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
    /// Move partitions to other nodes (cluster only). The new replicas
    /// copy the data as followers; once all of them are in sync they
    /// replace the old ones (`weir cluster status` shows the move).
    Reassign {
        /// Topic name.
        name: String,
        /// The node ids to hold the partitions, the preferred leader
        /// first, e.g. 4,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
        /// A partition to move (repeatable) [default: every partition].
        #[arg(long = "partition")]
        partitions: Vec<u32>,
    },
}

/// One row of `GET /api/topics`.
#[derive(Debug, Deserialize)]
struct TopicSummary {
    name: String,
    #[serde(default)]
    partitions: u64,
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    size_bytes: u64,
}

/// `GET /api/topics/{name}`.
#[derive(Debug, Deserialize)]
struct TopicDetail {
    name: String,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    partitions: Vec<PartitionDetail>,
    #[serde(default)]
    configs: Vec<ConfigEntry>,
}

/// One partition of a topic.
#[derive(Debug, Deserialize)]
pub(super) struct PartitionDetail {
    pub(super) partition: i32,
    #[serde(default)]
    pub(super) log_start_offset: i64,
    #[serde(default)]
    pub(super) high_watermark: i64,
    #[serde(default)]
    pub(super) log_end_offset: i64,
    #[serde(default)]
    pub(super) size_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct ConfigEntry {
    name: String,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    source: Value,
    #[serde(default)]
    read_only: bool,
}

/// Runs `weir topic …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run(args: TopicArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let json = args.api.json();
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let configs: serde_json::Map<String, Value> = json_pairs(&configs, "--config")?
                .into_iter()
                .map(|(key, value)| (key, Value::String(super::cell(&value))))
                .collect();
            let mut body = json!({ "name": name });
            if let Some(partitions) = partitions {
                body["partitions"] = json!(partitions);
            }
            if !configs.is_empty() {
                body["configs"] = Value::Object(configs);
            }
            let answer = client
                .call("POST", "/api/topics", Some(&body))
                .map_err(|error| {
                    error.hint_for(409, "the topic exists; see it with `weir topic describe`")
                })?;
            if json {
                return print_json(&or_object(answer, json!({ "name": name, "created": true })));
            }
            print(&format!("created topic {name}\n"))
        }
        TopicCommand::List => {
            let value = client.get("/api/topics")?;
            if json {
                return print_json(&value);
            }
            let topics: Vec<TopicSummary> = parse(value, "GET /api/topics")?;
            print(&render_list(&topics))
        }
        TopicCommand::Describe { name } => {
            let value = describe_value(&client, &name)?;
            if json {
                return print_json(&value);
            }
            let detail: TopicDetail = parse(value, "GET /api/topics/{name}")?;
            print(&render_detail(&detail))
        }
        TopicCommand::Alter { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::Usage(
                    "nothing to alter; pass --set name=value or --delete name".into(),
                ));
            }
            let set: serde_json::Map<String, Value> = json_pairs(&set, "--set")?
                .into_iter()
                .map(|(key, value)| (key, Value::String(super::cell(&value))))
                .collect();
            let body = json!({ "set": set, "delete": delete });
            let answer = client
                .call(
                    "PATCH",
                    &format!("/api/topics/{}/configs", encode(&name)),
                    Some(&body),
                )
                .map_err(|error| error.hint_for(404, LIST_HINT))?;
            if json {
                return print_json(&or_object(answer, json!({ "name": name, "altered": true })));
            }
            print(&format!("altered topic {name}\n"))
        }
        TopicCommand::Delete { name } => {
            let answer = client
                .call("DELETE", &format!("/api/topics/{}", encode(&name)), None)
                .map_err(|error| error.hint_for(404, LIST_HINT))?;
            if json {
                return print_json(&or_object(answer, json!({ "name": name, "deleted": true })));
            }
            print(&format!("deleted topic {name}\n"))
        }
        TopicCommand::AddPartitions { name, count } => {
            let answer = client
                .call(
                    "POST",
                    &format!("/api/topics/{}/partitions", encode(&name)),
                    Some(&json!({ "count": count })),
                )
                .map_err(|error| {
                    error.hint_for(404, LIST_HINT).hint_for(
                        400,
                        "--count is the new total, larger than the current count (see `weir topic describe`)",
                    )
                })?;
            if json {
                return print_json(&or_object(
                    answer,
                    json!({ "name": name, "partitions": count }),
                ));
            }
            print(&format!("topic {name} now has {count} partitions\n"))
        }
        TopicCommand::Reassign {
            name,
            replicas,
            partitions,
        } => {
            let mut body = json!({ "replicas": replicas });
            if !partitions.is_empty() {
                body["partitions"] = json!(partitions);
            }
            let answer = client
                .call(
                    "POST",
                    &format!("/api/topics/{}/reassign", encode(&name)),
                    Some(&body),
                )
                .map_err(|error| error.hint_for(404, LIST_HINT))?;
            if json {
                return print_json(&answer);
            }
            let which = if partitions.is_empty() {
                "every partition".to_owned()
            } else {
                format!("partitions {}", join(&partitions))
            };
            print(&format!(
                "moving {which} of topic {name} to nodes {}; `weir cluster status` shows the move until it completes\n",
                join(&replicas)
            ))
        }
    }
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// `GET /api/topics/{name}`, with a hint when the topic does not exist.
pub(super) fn describe_value(client: &super::Client, name: &str) -> Result<Value, CliError> {
    client
        .get(&format!("/api/topics/{}", encode(name)))
        .map_err(|error| error.hint_for(404, LIST_HINT))
}

/// The partitions of topic `name`.
///
/// # Errors
///
/// See [`CliError`].
pub(super) fn partitions(
    client: &super::Client,
    name: &str,
) -> Result<Vec<PartitionDetail>, CliError> {
    let detail: TopicDetail = parse(describe_value(client, name)?, "GET /api/topics/{name}")?;
    Ok(detail.partitions)
}

/// The API's answer when it has one, else `fallback`.
fn or_object(answer: Value, fallback: Value) -> Value {
    if answer.is_null() {
        fallback
    } else {
        answer
    }
}

fn render_list(topics: &[TopicSummary]) -> String {
    if topics.is_empty() {
        return "no topics; create one with `weir topic create <name>`\n".to_owned();
    }
    let mut table = Table::new(&["NAME", ">PARTITIONS", ">MESSAGES", ">SIZE"]);
    for topic in topics {
        table.row(vec![
            topic.name.clone(),
            topic.partitions.to_string(),
            topic.messages.to_string(),
            table::bytes(topic.size_bytes),
        ]);
    }
    table.render()
}

fn render_detail(detail: &TopicDetail) -> String {
    let mut text = format!("topic {}", detail.name);
    if !detail.id.is_null() {
        text.push_str(&format!("  (id {})", super::cell(&detail.id)));
    }
    text.push_str("\n\n");
    let mut partitions = Table::new(&[
        ">PARTITION",
        ">LOG-START",
        ">HIGH-WATERMARK",
        ">LOG-END",
        ">MESSAGES",
        ">SIZE",
    ]);
    for partition in &detail.partitions {
        partitions.row(vec![
            partition.partition.to_string(),
            partition.log_start_offset.to_string(),
            partition.high_watermark.to_string(),
            partition.log_end_offset.to_string(),
            (partition.high_watermark - partition.log_start_offset)
                .max(0)
                .to_string(),
            table::bytes(partition.size_bytes),
        ]);
    }
    text.push_str(&partitions.render());
    if !detail.configs.is_empty() {
        let mut configs = Table::new(&["CONFIG", "VALUE", "SOURCE", "READ-ONLY"]);
        for config in &detail.configs {
            configs.row(vec![
                config.name.clone(),
                super::cell(&config.value),
                super::cell(&config.source),
                if config.read_only { "yes" } else { "" }.to_owned(),
            ]);
        }
        text.push('\n');
        text.push_str(&configs.render());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_topic_list() {
        let topics: Vec<TopicSummary> = serde_json::from_value(json!([
            {"name": "orders", "partitions": 3, "messages": 1200, "size_bytes": 4096},
            {"name": "a", "partitions": 12, "messages": 0, "size_bytes": 0}
        ]))
        .unwrap();
        assert_eq!(
            render_list(&topics),
            "NAME    PARTITIONS  MESSAGES     SIZE\n\
             orders           3      1200  4.0 KiB\n\
             a               12         0      0 B\n"
        );
        assert!(render_list(&[]).contains("weir topic create"));
    }

    #[test]
    fn renders_a_topic() {
        let detail: TopicDetail = serde_json::from_value(json!({
            "name": "orders", "id": "abc",
            "partitions": [{"partition": 0, "log_start_offset": 2, "high_watermark": 10,
                            "log_end_offset": 10, "size_bytes": 100}],
            "configs": [{"name": "retention.ms", "value": "1000", "source": "topic", "read_only": false}]
        }))
        .unwrap();
        let text = render_detail(&detail);
        assert!(text.starts_with("topic orders  (id abc)\n\n"), "{text}");
        assert!(
            text.contains("        0          2              10       10         8  100 B\n"),
            "{text}"
        );
        assert!(text.contains("retention.ms  1000   topic\n"), "{text}");
    }
}
