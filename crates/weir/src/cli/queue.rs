//! `weir queue list|declare|purge|delete|get`.

use clap::{ArgAction, Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

use super::amqp::{done, filter_vhost, VhostOption};
use super::client::encode;
use super::record::decode_base64;
use super::table::{self, Table};
use super::{cell, json_pairs, parse, print, print_json, ApiOptions, CliError};

const QUEUE_EXAMPLES: &str = "Examples:
  weir queue list
  weir queue declare jobs --type quorum --argument x-max-length=10000
  weir queue declare scratch --durable false --auto-delete
  weir queue get jobs --count 5            # look: messages go back to the queue
  weir queue get jobs --count 5 --ack      # take them
  weir queue purge jobs
  weir queue delete jobs --vhost /";

const QUEUE_HINT: &str = "list the queues with `weir queue list` (and check --vhost)";

/// Arguments of `weir queue`.
#[derive(Debug, Args)]
#[command(after_help = QUEUE_EXAMPLES, subcommand_required = true)]
pub struct QueueArgs {
    #[command(flatten)]
    api: ApiOptions,
    #[command(flatten)]
    vhost: VhostOption,
    #[command(subcommand)]
    command: QueueCommand,
}

/// The kinds of queue.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum QueueType {
    Classic,
    Quorum,
    Stream,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List queues with their depth, consumers and rates (all vhosts unless --vhost).
    List,
    /// Declare a queue (nothing changes if it exists with the same settings).
    Declare {
        /// Queue name.
        name: String,
        /// Whether the queue survives a restart.
        #[arg(long, action = ArgAction::Set, default_value_t = true, value_name = "BOOL")]
        durable: bool,
        /// Delete the queue when its last consumer goes.
        #[arg(long)]
        auto_delete: bool,
        /// Queue type (x-queue-type).
        #[arg(long = "type", value_enum)]
        queue_type: Option<QueueType>,
        /// A queue argument, e.g. x-max-length=1000 (repeatable; numbers stay numbers).
        #[arg(long = "argument", value_name = "NAME=VALUE")]
        arguments: Vec<String>,
    },
    /// Remove every ready message from a queue.
    Purge {
        /// Queue name.
        name: String,
    },
    /// Delete a queue and its messages.
    Delete {
        /// Queue name.
        name: String,
    },
    /// Read messages from a queue (they go back unless --ack).
    Get {
        /// Queue name.
        name: String,
        /// How many messages at most.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Take the messages off the queue instead of requeueing them.
        #[arg(long)]
        ack: bool,
    },
}

#[derive(Debug, Deserialize)]
struct QueueRow {
    #[serde(default)]
    vhost: String,
    name: String,
    #[serde(default, rename = "type")]
    queue_type: String,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    ready: u64,
    #[serde(default)]
    unacked: u64,
    #[serde(default)]
    consumers: u64,
    #[serde(default)]
    publish_rate_per_s: Option<f64>,
    #[serde(default)]
    deliver_rate_per_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct GotMessage {
    #[serde(default)]
    payload: String,
    #[serde(default)]
    payload_encoding: String,
    #[serde(default)]
    redelivered: bool,
    #[serde(default)]
    exchange: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    message_count: Option<u64>,
}

/// Runs `weir queue …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run_queue(args: QueueArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let json = args.api.json();
    let vhost = &args.vhost;
    let path = |name: &str| format!("/api/queues/{}/{}", vhost.segment(), encode(name));
    match args.command {
        QueueCommand::List => {
            let value = filter_vhost(client.get("/api/queues")?, vhost.vhost.as_deref());
            if json {
                return print_json(&value);
            }
            let queues: Vec<QueueRow> = parse(value, "GET /api/queues")?;
            print(&render_queues(&queues))
        }
        QueueCommand::Declare {
            name,
            durable,
            auto_delete,
            queue_type,
            arguments,
        } => {
            let mut arguments = json_pairs(&arguments, "--argument")?;
            if let Some(queue_type) = queue_type {
                let name = format!("{queue_type:?}").to_lowercase();
                arguments.insert("x-queue-type".into(), Value::String(name));
            }
            let body =
                json!({ "durable": durable, "auto_delete": auto_delete, "arguments": arguments });
            let answer = client.call("PUT", &path(&name), Some(&body)).map_err(|error| {
                error.hint_for(
                    409,
                    "the queue exists with other settings; delete it first or declare it as it is (see `weir queue list`)",
                )
            })?;
            done(
                json,
                answer,
                json!({ "vhost": vhost.get(), "name": name, "declared": true }),
                &format!("declared queue {name}"),
            )
        }
        QueueCommand::Purge { name } => {
            let answer = client
                .call("DELETE", &format!("{}/contents", path(&name)), None)
                .map_err(|error| error.hint_for(404, QUEUE_HINT))?;
            if json {
                return print_json(&answer);
            }
            let purged = answer.get("purged").map(cell).unwrap_or_default();
            print(&format!("purged {purged} messages from queue {name}\n"))
        }
        QueueCommand::Delete { name } => {
            let answer = client
                .call("DELETE", &path(&name), None)
                .map_err(|error| error.hint_for(404, QUEUE_HINT))?;
            done(
                json,
                answer,
                json!({ "vhost": vhost.get(), "name": name, "deleted": true }),
                &format!("deleted queue {name}"),
            )
        }
        QueueCommand::Get { name, count, ack } => {
            let body = json!({ "count": count, "ack": ack });
            let value = client
                .call("POST", &format!("{}/get", path(&name)), Some(&body))
                .map_err(|error| error.hint_for(404, QUEUE_HINT))?;
            if json {
                return print_json(&value);
            }
            let messages: Vec<GotMessage> = parse(value, "POST /api/queues/{vhost}/{name}/get")?;
            print(&render_messages(&messages))
        }
    }
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), table::rate)
}

fn render_queues(queues: &[QueueRow]) -> String {
    if queues.is_empty() {
        return "no queues; declare one with `weir queue declare <name>`\n".to_owned();
    }
    let mut table = Table::new(&[
        "VHOST",
        "NAME",
        "TYPE",
        "DURABLE",
        ">READY",
        ">UNACKED",
        ">CONSUMERS",
        ">PUBLISH/S",
        ">DELIVER/S",
    ]);
    for queue in queues {
        table.row(vec![
            queue.vhost.clone(),
            queue.name.clone(),
            queue.queue_type.clone(),
            if queue.durable { "yes" } else { "no" }.to_owned(),
            queue.ready.to_string(),
            queue.unacked.to_string(),
            queue.consumers.to_string(),
            rate(queue.publish_rate_per_s),
            rate(queue.deliver_rate_per_s),
        ]);
    }
    table.render()
}

/// A payload for a table cell: text with control characters escaped, or
/// `<N bytes>` for binary.
fn payload_text(message: &GotMessage) -> String {
    let bytes = if message.payload_encoding == "base64" {
        decode_base64(&message.payload).unwrap_or_else(|| message.payload.as_bytes().to_vec())
    } else {
        message.payload.as_bytes().to_vec()
    };
    match String::from_utf8(bytes) {
        Ok(text) => text.escape_debug().to_string(),
        Err(error) => format!("<{} bytes, binary>", error.as_bytes().len()),
    }
}

fn render_messages(messages: &[GotMessage]) -> String {
    if messages.is_empty() {
        return "the queue is empty\n".to_owned();
    }
    let mut table = Table::new(&[
        ">#",
        "EXCHANGE",
        "ROUTING-KEY",
        "REDELIVERED",
        ">REMAINING",
        "PAYLOAD",
    ]);
    for (index, message) in messages.iter().enumerate() {
        table.row(vec![
            (index + 1).to_string(),
            if message.exchange.is_empty() {
                "(default)".to_owned()
            } else {
                message.exchange.clone()
            },
            message.routing_key.clone(),
            if message.redelivered { "yes" } else { "no" }.to_owned(),
            message
                .message_count
                .map_or_else(|| "-".to_owned(), |count| count.to_string()),
            payload_text(message),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_queues_and_messages() {
        let queues: Vec<QueueRow> = serde_json::from_value(json!([{
            "vhost": "/", "name": "jobs", "type": "quorum", "durable": true, "ready": 3,
            "unacked": 1, "consumers": 2, "publish_rate_per_s": 1.5, "deliver_rate_per_s": null
        }]))
        .unwrap();
        assert_eq!(
            render_queues(&queues),
            "VHOST  NAME  TYPE    DURABLE  READY  UNACKED  CONSUMERS  PUBLISH/S  DELIVER/S\n\
             /      jobs  quorum  yes          3        1          2       1.50          -\n"
        );
        let messages: Vec<GotMessage> = serde_json::from_value(json!([
            {"payload": "hi\nthere", "payload_encoding": "string", "redelivered": false,
             "exchange": "", "routing_key": "jobs", "message_count": 2},
            {"payload": "/w==", "payload_encoding": "base64", "redelivered": true,
             "exchange": "x", "routing_key": "k", "message_count": 1}
        ]))
        .unwrap();
        let text = render_messages(&messages);
        assert!(
            text.contains("1  (default)  jobs         no                   2  hi\\nthere\n"),
            "{text}"
        );
        assert!(text.contains("<1 bytes, binary>"), "{text}");
        assert_eq!(render_messages(&[]), "the queue is empty\n");
    }
}
