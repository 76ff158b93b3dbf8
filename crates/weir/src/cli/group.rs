//! `weir group list|describe|reset-offsets|delete`.

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::encode;
use super::table::{self, Table};
use super::{parse, print, print_json, progress, time, ApiOptions, CliError, Client};

const EXAMPLES: &str = "Examples:
  weir group list
  weir group describe billing
  weir group reset-offsets billing --to-earliest                    # dry run: shows the new offsets
  weir group reset-offsets billing --topic orders --shift-by -100 --execute
  weir group reset-offsets billing --to-datetime 2024-05-01T12:00:00Z --execute
  weir group reset-offsets --all-groups --to-latest --execute
  weir group delete billing";

const LIST_HINT: &str = "list the groups with `weir group list`";

/// Arguments of `weir group`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, subcommand_required = true)]
pub struct GroupArgs {
    #[command(flatten)]
    api: ApiOptions,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's members and, per partition, committed offset, log-end
    /// offset, lag, consumption rate and the time to drain the lag at that rate.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets (a dry run unless --execute).
    ///
    /// As Kafka's kafka-consumer-groups.sh: without --execute nothing
    /// changes and the offsets it would set are shown. The group must have
    /// no active members for --execute.
    #[command(after_help = "Examples:
  weir group reset-offsets billing --to-earliest
  weir group reset-offsets billing --topic orders --to-offset 42 --execute
  weir group reset-offsets billing --shift-by -100 --execute
  weir group reset-offsets g1 g2 g3 --to-datetime 2024-05-01T12:00:00Z --execute")]
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (it must have no members).
    Delete {
        /// Group id.
        group: String,
    },
}

/// Arguments of `weir group reset-offsets`.
#[derive(Debug, Args)]
struct ResetArgs {
    /// Groups to reset.
    #[arg(required_unless_present = "all_groups")]
    groups: Vec<String>,
    /// Reset every group the broker knows.
    #[arg(long, conflicts_with = "groups")]
    all_groups: bool,
    /// Only these topics (repeatable) [default: every topic the group committed].
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    #[command(flatten)]
    target: ResetTarget,
    /// Apply the new offsets (without it this is a dry run).
    #[arg(long)]
    execute: bool,
}

/// Where the offsets go: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// To each partition's log start.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end (skip everything not yet consumed).
    #[arg(long)]
    to_latest: bool,
    /// To the first record at or after this time (RFC 3339 or epoch ms).
    #[arg(long, value_name = "TIME")]
    to_datetime: Option<String>,
    /// To this offset (clamped to the partition's range).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// Move by N (negative: back) from the committed offset.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
}

impl ResetTarget {
    /// The API's `to` and `value`.
    fn to_api(&self) -> Result<(&'static str, Option<i64>), CliError> {
        Ok(if self.to_earliest {
            ("earliest", None)
        } else if self.to_latest {
            ("latest", None)
        } else if let Some(text) = &self.to_datetime {
            let timestamp_ms = time::parse_timestamp_ms(text)
                .map_err(|message| CliError::Usage(format!("--to-datetime: {message}")))?;
            ("datetime", Some(timestamp_ms))
        } else if let Some(offset) = self.to_offset {
            ("offset", Some(offset))
        } else if let Some(delta) = self.shift_by {
            ("shift-by", Some(delta))
        } else {
            return Err(CliError::Usage(
                "say where to: --to-earliest, --to-latest, --to-datetime, --to-offset or --shift-by"
                    .into(),
            ));
        })
    }
}

#[derive(Debug, Deserialize)]
struct GroupSummary {
    group: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    members: u64,
    #[serde(default)]
    protocol_type: String,
}

#[derive(Debug, Deserialize)]
struct GroupDetail {
    group: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    members: Vec<Member>,
    #[serde(default)]
    offsets: Vec<OffsetRow>,
}

#[derive(Debug, Deserialize)]
struct Member {
    member_id: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    assignments: Vec<Assignment>,
}

#[derive(Debug, Deserialize)]
struct Assignment {
    topic: String,
    partition: i32,
}

#[derive(Debug, Deserialize)]
struct OffsetRow {
    topic: String,
    partition: i32,
    #[serde(default)]
    committed: Option<i64>,
    #[serde(default)]
    log_end: Option<i64>,
    #[serde(default)]
    lag: Option<i64>,
    #[serde(default)]
    rate_per_s: Option<f64>,
    #[serde(default)]
    drain_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ResetAnswer {
    #[serde(default)]
    executed: bool,
    #[serde(default)]
    offsets: Vec<ResetRow>,
}

#[derive(Debug, Deserialize)]
struct ResetRow {
    topic: String,
    partition: i32,
    #[serde(default)]
    current: Option<i64>,
    target: i64,
}

/// Runs `weir group …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run(args: GroupArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let json = args.api.json();
    match args.command {
        GroupCommand::List => {
            let value = client.get("/api/groups")?;
            if json {
                return print_json(&value);
            }
            let groups: Vec<GroupSummary> = parse(value, "GET /api/groups")?;
            print(&render_list(&groups))
        }
        GroupCommand::Describe { group } => {
            let value = client
                .get(&format!("/api/groups/{}", encode(&group)))
                .map_err(|error| error.hint_for(404, LIST_HINT))?;
            if json {
                return print_json(&value);
            }
            let detail: GroupDetail = parse(value, "GET /api/groups/{group}")?;
            print(&render_detail(&detail))
        }
        GroupCommand::ResetOffsets(reset) => run_reset(&client, reset, json),
        GroupCommand::Delete { group } => {
            let answer = client
                .call("DELETE", &format!("/api/groups/{}", encode(&group)), None)
                .map_err(|error| {
                    error.hint_for(404, LIST_HINT).hint_for(
                        409,
                        "stop the group's consumers first (see `weir group describe`)",
                    )
                })?;
            if json {
                let fallback = json!({ "group": group, "deleted": true });
                return print_json(if answer.is_null() { &fallback } else { &answer });
            }
            print(&format!("deleted group {group}\n"))
        }
    }
}

fn run_reset(client: &Client, reset: ResetArgs, json: bool) -> Result<(), CliError> {
    let (to, value) = reset.target.to_api()?;
    let groups = if reset.all_groups {
        let groups: Vec<GroupSummary> = parse(client.get("/api/groups")?, "GET /api/groups")?;
        groups.into_iter().map(|group| group.group).collect()
    } else {
        reset.groups
    };
    let mut body = json!({ "to": to, "execute": reset.execute });
    if let Some(value) = value {
        body["value"] = json!(value);
    }
    if !reset.topics.is_empty() {
        body["topics"] = json!(reset.topics);
    }
    let bar = if groups.len() > 1 {
        progress::bar(groups.len() as u64, "resetting groups", false)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut answers = Vec::new();
    for group in &groups {
        let answer = client
            .call(
                "POST",
                &format!("/api/groups/{}/reset-offsets", encode(group)),
                Some(&body),
            )
            .map_err(|error| {
                error.hint_for(404, LIST_HINT).hint_for(
                    409,
                    "offsets of a group with active members cannot change; stop its consumers first",
                )
            })?;
        bar.inc(1);
        answers.push((group.clone(), answer));
    }
    bar.finish_and_clear();
    if json {
        let list: Vec<Value> = answers
            .into_iter()
            .map(|(group, answer)| {
                let mut answer = answer;
                if let Value::Object(object) = &mut answer {
                    object.insert("group".into(), json!(group));
                }
                answer
            })
            .collect();
        // One group: its answer; several: a list of answers.
        return match <[Value; 1]>::try_from(list) {
            Ok([single]) => print_json(&single),
            Err(list) => print_json(&Value::Array(list)),
        };
    }
    let mut text = String::new();
    let mut executed = reset.execute;
    for (group, answer) in answers {
        let answer: ResetAnswer = parse(answer, "POST /api/groups/{group}/reset-offsets")?;
        executed = answer.executed;
        text.push_str(&render_reset(&group, &answer));
    }
    if !executed {
        text.push_str("dry run: nothing changed; add --execute to apply these offsets\n");
    }
    print(&text)
}

fn render_list(groups: &[GroupSummary]) -> String {
    if groups.is_empty() {
        return "no consumer groups\n".to_owned();
    }
    let mut table = Table::new(&["GROUP", "STATE", ">MEMBERS", "PROTOCOL-TYPE"]);
    for group in groups {
        table.row(vec![
            group.group.clone(),
            group.state.clone(),
            group.members.to_string(),
            group.protocol_type.clone(),
        ]);
    }
    table.render()
}

fn optional(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// Time to drain as shown: the API's estimate, `0s` without lag, `never`
/// when there is lag and nothing consumes.
fn drain(row: &OffsetRow) -> String {
    match (row.drain_s, row.lag, row.rate_per_s) {
        (Some(seconds), _, _) => table::duration(seconds),
        (None, Some(0), _) => table::duration(0.0),
        (None, Some(_), Some(rate)) if rate <= 0.0 => "never".to_owned(),
        (None, Some(_), None) => "never".to_owned(),
        _ => "-".to_owned(),
    }
}

fn render_detail(detail: &GroupDetail) -> String {
    let mut text = format!(
        "group {}  state {}  protocol {}  members {}\n",
        detail.group,
        detail.state,
        if detail.protocol.is_empty() {
            "-"
        } else {
            &detail.protocol
        },
        detail.members.len()
    );
    if !detail.members.is_empty() {
        let mut members = Table::new(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENTS"]);
        for member in &detail.members {
            let assignments: Vec<String> = member
                .assignments
                .iter()
                .map(|assignment| format!("{}/{}", assignment.topic, assignment.partition))
                .collect();
            members.row(vec![
                member.member_id.clone(),
                member.client_id.clone(),
                member.host.clone(),
                assignments.join(","),
            ]);
        }
        text.push('\n');
        text.push_str(&members.render());
    }
    text.push('\n');
    if detail.offsets.is_empty() {
        text.push_str("no committed offsets\n");
        return text;
    }
    let mut offsets = Table::new(&[
        "TOPIC",
        ">PARTITION",
        ">COMMITTED",
        ">LOG-END",
        ">LAG",
        ">RATE/S",
        ">DRAIN",
    ]);
    for row in &detail.offsets {
        offsets.row(vec![
            row.topic.clone(),
            row.partition.to_string(),
            optional(row.committed),
            optional(row.log_end),
            optional(row.lag),
            row.rate_per_s.map_or_else(|| "-".to_owned(), table::rate),
            drain(row),
        ]);
    }
    text.push_str(&offsets.render());
    let total_lag: i64 = detail.offsets.iter().filter_map(|row| row.lag).sum();
    text.push_str(&format!("total lag {total_lag}\n"));
    text
}

fn render_reset(group: &str, answer: &ResetAnswer) -> String {
    let mut text = format!(
        "group {group}: {}\n",
        if answer.executed {
            "offsets reset"
        } else {
            "new offsets (dry run)"
        }
    );
    if answer.offsets.is_empty() {
        text.push_str(
            "no partitions to reset (the group committed nothing; name them with --topic)\n",
        );
        return text;
    }
    let mut table = Table::new(&["TOPIC", ">PARTITION", ">CURRENT", ">TARGET"]);
    for row in &answer.offsets {
        table.row(vec![
            row.topic.clone(),
            row.partition.to_string(),
            optional(row.current),
            row.target.to_string(),
        ]);
    }
    text.push_str(&table.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lag_rate_and_drain() {
        let detail: GroupDetail = serde_json::from_value(json!({
            "group": "billing", "state": "Stable", "protocol": "range",
            "members": [{"member_id": "m-1", "client_id": "c", "host": "/127.0.0.1",
                         "assignments": [{"topic": "orders", "partition": 0},
                                         {"topic": "orders", "partition": 1}]}],
            "offsets": [
                {"topic": "orders", "partition": 0, "committed": 90, "log_end": 100, "lag": 10,
                 "rate_per_s": 2.5, "drain_s": 4.0},
                {"topic": "orders", "partition": 1, "committed": null, "log_end": 7, "lag": 7,
                 "rate_per_s": 0.0, "drain_s": null},
                {"topic": "orders", "partition": 2, "committed": 5, "log_end": 5, "lag": 0,
                 "rate_per_s": null, "drain_s": null}
            ]
        }))
        .unwrap();
        let text = render_detail(&detail);
        assert!(
            text.starts_with("group billing  state Stable  protocol range  members 1\n"),
            "{text}"
        );
        assert!(
            text.contains("m-1     c       /127.0.0.1  orders/0,orders/1\n"),
            "{text}"
        );
        assert!(
            text.contains("orders          0         90      100   10    2.50     4s\n"),
            "{text}"
        );
        assert!(
            text.contains("orders          1          -        7    7       0  never\n"),
            "{text}"
        );
        assert!(
            text.contains("orders          2          5        5    0       -     0s\n"),
            "{text}"
        );
        assert!(text.ends_with("total lag 17\n"), "{text}");
    }

    #[test]
    fn reset_targets_map_to_the_api() {
        let target = |to_earliest, to_datetime: Option<&str>, shift_by| ResetTarget {
            to_earliest,
            to_latest: false,
            to_datetime: to_datetime.map(str::to_owned),
            to_offset: None,
            shift_by,
        };
        assert_eq!(
            target(true, None, None).to_api().unwrap(),
            ("earliest", None)
        );
        assert_eq!(
            target(false, Some("2024-05-01T12:00:00Z"), None)
                .to_api()
                .unwrap(),
            ("datetime", Some(1_714_564_800_000))
        );
        assert_eq!(
            target(false, None, Some(-5)).to_api().unwrap(),
            ("shift-by", Some(-5))
        );
        assert!(matches!(
            target(false, Some("last tuesday"), None).to_api(),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn renders_a_dry_run() {
        let answer: ResetAnswer = serde_json::from_value(json!({
            "executed": false,
            "offsets": [{"topic": "t", "partition": 0, "current": 5, "target": 0}]
        }))
        .unwrap();
        assert_eq!(
            render_reset("g", &answer),
            "group g: new offsets (dry run)\nTOPIC  PARTITION  CURRENT  TARGET\nt              0        5       0\n"
        );
    }
}
