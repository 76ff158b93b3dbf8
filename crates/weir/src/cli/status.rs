//! `weir status`: the broker at a glance (`GET /api/overview`).

use clap::Args;
use serde::Deserialize;

use super::{parse, print, print_json, table, ApiOptions, CliError};

/// Examples shown by `weir status --help`.
pub const EXAMPLES: &str = "Examples:
  weir status
  weir status --output json | jq .uptime_s
  weir status --api http://broker1:15672";

/// Arguments of `weir status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiOptions,
}

/// Kafka and AMQP counts of one kind.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PerProtocol {
    kafka: u64,
    amqp: u64,
}

/// `GET /api/overview`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Overview {
    version: String,
    uptime_s: f64,
    connections: PerProtocol,
    topics: u64,
    queues: u64,
    messages_in_total: PerProtocol,
    messages_out_total: PerProtocol,
    bytes_in_total: u64,
    bytes_out_total: u64,
    disk_free_bytes: u64,
    memory_rss_bytes: u64,
}

/// Runs `weir status`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run(args: StatusArgs) -> Result<(), CliError> {
    let value = args.api.client()?.get("/api/overview")?;
    if args.api.json() {
        return print_json(&value);
    }
    let overview: Overview = parse(value, "GET /api/overview")?;
    print(&render(&overview, &args.api.api))
}

fn render(overview: &Overview, api: &str) -> String {
    let mut table = table::Table::new(&["", ""]);
    let lines = [
        ("broker", format!("{api} (weir {})", overview.version)),
        ("uptime", table::duration(overview.uptime_s)),
        (
            "connections",
            format!(
                "kafka {}, amqp {}",
                overview.connections.kafka, overview.connections.amqp
            ),
        ),
        ("topics", overview.topics.to_string()),
        ("queues", overview.queues.to_string()),
        (
            "messages in",
            format!(
                "kafka {}, amqp {}",
                overview.messages_in_total.kafka, overview.messages_in_total.amqp
            ),
        ),
        (
            "messages out",
            format!(
                "kafka {}, amqp {}",
                overview.messages_out_total.kafka, overview.messages_out_total.amqp
            ),
        ),
        ("bytes in", table::bytes(overview.bytes_in_total)),
        ("bytes out", table::bytes(overview.bytes_out_total)),
        ("disk free", table::bytes(overview.disk_free_bytes)),
        ("memory (RSS)", table::bytes(overview.memory_rss_bytes)),
    ];
    for (name, value) in lines {
        table.row(vec![format!("{name}:"), value]);
    }
    // The header row of this two-column table is empty: drop it.
    table.render().trim_start_matches('\n').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_overview() {
        let overview: Overview = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "uptime_s": 75, "connections": {"kafka": 2, "amqp": 1},
            "topics": 3, "queues": 4, "messages_in_total": {"kafka": 10, "amqp": 5},
            "messages_out_total": {"kafka": 7, "amqp": 5}, "bytes_in_total": 2048,
            "bytes_out_total": 10, "disk_free_bytes": 1073741824, "memory_rss_bytes": 1048576
        }))
        .unwrap();
        let text = render(&overview, "http://127.0.0.1:15672");
        assert!(
            text.starts_with("broker:        http://127.0.0.1:15672 (weir 0.1.0)\n"),
            "{text}"
        );
        assert!(text.contains("uptime:        1m15s\n"), "{text}");
        assert!(text.contains("connections:   kafka 2, amqp 1\n"), "{text}");
        assert!(text.contains("bytes in:      2.0 KiB\n"), "{text}");
        assert!(text.contains("disk free:     1.0 GiB\n"), "{text}");
    }
}
