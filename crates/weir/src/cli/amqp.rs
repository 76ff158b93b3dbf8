//! `weir queue …`, `weir exchange …`, `weir binding …` and
//! `weir connection …`: AMQP objects and client connections.

use std::io::Read;

use clap::{ArgAction, Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::encode;
use super::record::decode_base64;
use super::table::{self, Table};
use super::{cell, json_pairs, parse, print, print_json, time, ApiOptions, CliError, Client};

const QUEUE_EXAMPLES: &str = "Examples:
  weir queue list
  weir queue declare jobs --type quorum --argument x-max-length=10000
  weir queue declare scratch --durable false --auto-delete
  weir queue get jobs --count 5            # look: messages go back to the queue
  weir queue get jobs --count 5 --ack      # take them
  weir queue purge jobs
  weir queue delete jobs --vhost /";

const EXCHANGE_EXAMPLES: &str = "Examples:
  weir exchange list
  weir exchange declare events --type topic
  weir exchange publish events --routing-key order.created '{\"id\": 1}'
  echo hello | weir exchange publish amq.default --routing-key jobs
  weir exchange delete events";

const BINDING_EXAMPLES: &str = "Examples:
  weir binding list
  weir binding create --source events --destination jobs --routing-key 'order.*'
  weir binding create --source events --destination audit --destination-type exchange
  weir binding delete --source events --destination jobs --routing-key 'order.*'";

const CONNECTION_EXAMPLES: &str = "Examples:
  weir connection list
  weir connection close 42";

const QUEUE_HINT: &str = "list the queues with `weir queue list` (and check --vhost)";
const EXCHANGE_HINT: &str = "list the exchanges with `weir exchange list` (and check --vhost)";

/// The vhost option shared by the AMQP commands.
#[derive(Debug, Clone, Args)]
struct VhostOption {
    /// Virtual host [default: /].
    #[arg(long, global = true)]
    vhost: Option<String>,
}

impl VhostOption {
    fn get(&self) -> &str {
        self.vhost.as_deref().unwrap_or("/")
    }

    /// The vhost as a URL path segment (`/` is `%2F`).
    fn segment(&self) -> String {
        encode(self.get())
    }
}

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

/// Keeps only the items of `list` in `vhost` (all when `None`).
fn filter_vhost(list: Value, vhost: Option<&str>) -> Value {
    match (list, vhost) {
        (Value::Array(items), Some(vhost)) => Value::Array(
            items
                .into_iter()
                .filter(|item| {
                    item.get("vhost")
                        .and_then(Value::as_str)
                        .is_none_or(|v| v == vhost)
                })
                .collect(),
        ),
        (list, _) => list,
    }
}

/// Prints the API's answer (or `fallback` when it had none) for JSON, or `message`.
fn done(json: bool, answer: Value, fallback: Value, message: &str) -> Result<(), CliError> {
    if json {
        print_json(if answer.is_null() { &fallback } else { &answer })
    } else {
        print(&format!("{message}\n"))
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

/// Arguments of `weir exchange`.
#[derive(Debug, Args)]
#[command(after_help = EXCHANGE_EXAMPLES, subcommand_required = true)]
pub struct ExchangeArgs {
    #[command(flatten)]
    api: ApiOptions,
    #[command(flatten)]
    vhost: VhostOption,
    #[command(subcommand)]
    command: ExchangeCommand,
}

/// The kinds of exchange.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

#[derive(Debug, Subcommand)]
enum ExchangeCommand {
    /// List exchanges (all vhosts unless --vhost).
    List,
    /// Declare an exchange.
    Declare {
        /// Exchange name.
        name: String,
        /// Exchange type.
        #[arg(long = "type", value_enum)]
        exchange_type: ExchangeType,
        /// Whether the exchange survives a restart.
        #[arg(long, action = ArgAction::Set, default_value_t = true, value_name = "BOOL")]
        durable: bool,
        /// Delete the exchange when its last binding goes.
        #[arg(long)]
        auto_delete: bool,
        /// Only other exchanges may publish to it.
        #[arg(long)]
        internal: bool,
    },
    /// Delete an exchange and its bindings.
    Delete {
        /// Exchange name.
        name: String,
    },
    /// Publish one message (the payload argument, or stdin when absent).
    Publish {
        /// Exchange name; `amq.default` is the default exchange.
        exchange: String,
        /// Routing key (for the default exchange: the queue's name).
        #[arg(long, default_value = "")]
        routing_key: String,
        /// A message property, e.g. content_type=application/json or delivery_mode=2 (repeatable).
        #[arg(long = "property", value_name = "NAME=VALUE")]
        properties: Vec<String>,
        /// A message header (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// The payload [default: all of stdin].
        payload: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
struct ExchangeRow {
    #[serde(default)]
    vhost: String,
    name: String,
    #[serde(default, rename = "type")]
    exchange_type: String,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
}

/// Runs `weir exchange …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run_exchange(args: ExchangeArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let json = args.api.json();
    let vhost = &args.vhost;
    let path = |name: &str| format!("/api/exchanges/{}/{}", vhost.segment(), encode(name));
    match args.command {
        ExchangeCommand::List => {
            let value = filter_vhost(client.get("/api/exchanges")?, vhost.vhost.as_deref());
            if json {
                return print_json(&value);
            }
            let exchanges: Vec<ExchangeRow> = parse(value, "GET /api/exchanges")?;
            print(&render_exchanges(&exchanges))
        }
        ExchangeCommand::Declare {
            name,
            exchange_type,
            durable,
            auto_delete,
            internal,
        } => {
            let kind = format!("{exchange_type:?}").to_lowercase();
            let body = json!({ "type": kind, "durable": durable, "auto_delete": auto_delete, "internal": internal });
            let answer = client
                .call("PUT", &path(&name), Some(&body))
                .map_err(|error| {
                    error.hint_for(
                        409,
                        "the exchange exists with other settings (see `weir exchange list`)",
                    )
                })?;
            done(
                json,
                answer,
                json!({ "vhost": vhost.get(), "name": name, "declared": true }),
                &format!("declared exchange {name}"),
            )
        }
        ExchangeCommand::Delete { name } => {
            let answer = client
                .call("DELETE", &path(&name), None)
                .map_err(|error| error.hint_for(404, EXCHANGE_HINT))?;
            done(
                json,
                answer,
                json!({ "vhost": vhost.get(), "name": name, "deleted": true }),
                &format!("deleted exchange {name}"),
            )
        }
        ExchangeCommand::Publish {
            exchange,
            routing_key,
            properties,
            headers,
            payload,
        } => {
            let payload = match payload {
                Some(payload) => payload,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(|error| {
                            CliError::Usage(format!(
                                "cannot read the payload from stdin (it must be UTF-8): {error}"
                            ))
                        })?;
                    text
                }
            };
            let mut properties = json_pairs(&properties, "--property")?;
            if !headers.is_empty() {
                properties.insert(
                    "headers".into(),
                    Value::Object(json_pairs(&headers, "--header")?),
                );
            }
            let body =
                json!({ "routing_key": routing_key, "payload": payload, "properties": properties });
            let answer = client
                .call("POST", &format!("{}/publish", path(&exchange)), Some(&body))
                .map_err(|error| error.hint_for(404, EXCHANGE_HINT))?;
            if json {
                return print_json(&answer);
            }
            if answer.get("routed").and_then(Value::as_bool) == Some(false) {
                print("published, but not routed: no queue is bound with that routing key (see `weir binding list`)\n")
            } else {
                print("published and routed\n")
            }
        }
    }
}

fn render_exchanges(exchanges: &[ExchangeRow]) -> String {
    let mut table = Table::new(&[
        "VHOST",
        "NAME",
        "TYPE",
        "DURABLE",
        "AUTO-DELETE",
        "INTERNAL",
    ]);
    let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_owned();
    for exchange in exchanges {
        table.row(vec![
            exchange.vhost.clone(),
            if exchange.name.is_empty() {
                "(default)".to_owned()
            } else {
                exchange.name.clone()
            },
            exchange.exchange_type.clone(),
            yes_no(exchange.durable),
            yes_no(exchange.auto_delete),
            yes_no(exchange.internal),
        ]);
    }
    table.render()
}

/// Arguments of `weir binding`.
#[derive(Debug, Args)]
#[command(after_help = BINDING_EXAMPLES, subcommand_required = true)]
pub struct BindingArgs {
    #[command(flatten)]
    api: ApiOptions,
    #[command(flatten)]
    vhost: VhostOption,
    #[command(subcommand)]
    command: BindingCommand,
}

/// What a binding leads to.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DestinationType {
    Queue,
    Exchange,
}

/// One binding, as given on the command line.
#[derive(Debug, Args)]
struct BindingSpec {
    /// The exchange messages come from.
    #[arg(long)]
    source: String,
    /// The queue (or exchange) they go to.
    #[arg(long)]
    destination: String,
    /// Whether the destination is a queue or an exchange.
    #[arg(long, value_enum, default_value = "queue")]
    destination_type: DestinationType,
    /// Routing key (a pattern for topic exchanges).
    #[arg(long, default_value = "")]
    routing_key: String,
    /// A binding argument, e.g. x-match=all (repeatable).
    #[arg(long = "argument", value_name = "NAME=VALUE")]
    arguments: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum BindingCommand {
    /// List bindings (all vhosts unless --vhost).
    List,
    /// Bind a queue or exchange to an exchange.
    #[command(visible_alias = "add")]
    Create(BindingSpec),
    /// Remove a binding (give the same options it was created with).
    #[command(visible_alias = "remove")]
    Delete(BindingSpec),
}

#[derive(Debug, Deserialize)]
struct BindingRow {
    #[serde(default)]
    vhost: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    destination_type: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

/// Runs `weir binding …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run_binding(args: BindingArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let json = args.api.json();
    let vhost = args.vhost.get().to_owned();
    let body = |spec: &BindingSpec| -> Result<Value, CliError> {
        Ok(json!({
            "vhost": vhost,
            "source": spec.source,
            "destination": spec.destination,
            "destination_type": format!("{:?}", spec.destination_type).to_lowercase(),
            "routing_key": spec.routing_key,
            "arguments": json_pairs(&spec.arguments, "--argument")?,
        }))
    };
    match args.command {
        BindingCommand::List => {
            let value = filter_vhost(client.get("/api/bindings")?, args.vhost.vhost.as_deref());
            if json {
                return print_json(&value);
            }
            let bindings: Vec<BindingRow> = parse(value, "GET /api/bindings")?;
            print(&render_bindings(&bindings))
        }
        BindingCommand::Create(spec) => {
            let body = body(&spec)?;
            let answer = client
                .call("POST", "/api/bindings", Some(&body))
                .map_err(|error| error.hint_for(404, "the exchange or the destination does not exist (see `weir exchange list`, `weir queue list`)"))?;
            done(
                json,
                answer,
                body,
                &format!("bound {} to {}", spec.destination, spec.source),
            )
        }
        BindingCommand::Delete(spec) => {
            let body = body(&spec)?;
            let answer = client
                .call("DELETE", "/api/bindings", Some(&body))
                .map_err(|error| {
                    error.hint_for(404, "no such binding; list them with `weir binding list`")
                })?;
            done(
                json,
                answer,
                body,
                &format!("unbound {} from {}", spec.destination, spec.source),
            )
        }
    }
}

fn render_bindings(bindings: &[BindingRow]) -> String {
    let mut table = Table::new(&[
        "VHOST",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "ROUTING-KEY",
        "ARGUMENTS",
    ]);
    for binding in bindings {
        let arguments = match &binding.arguments {
            Value::Object(map) if map.is_empty() => String::new(),
            other => cell(other),
        };
        table.row(vec![
            binding.vhost.clone(),
            if binding.source.is_empty() {
                "(default)".to_owned()
            } else {
                binding.source.clone()
            },
            binding.destination.clone(),
            binding.destination_type.clone(),
            binding.routing_key.clone(),
            arguments,
        ]);
    }
    table.render()
}

/// Arguments of `weir connection`.
#[derive(Debug, Args)]
#[command(after_help = CONNECTION_EXAMPLES, subcommand_required = true)]
pub struct ConnectionArgs {
    #[command(flatten)]
    api: ApiOptions,
    #[command(subcommand)]
    command: ConnectionCommand,
}

#[derive(Debug, Subcommand)]
enum ConnectionCommand {
    /// List client connections (Kafka and AMQP).
    List,
    /// Close a connection by its id (from `weir connection list`).
    Close {
        /// Connection id.
        id: String,
    },
}

#[derive(Debug, Deserialize)]
struct ConnectionRow {
    id: Value,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    peer: String,
    #[serde(default)]
    user: Value,
    #[serde(default)]
    client: Value,
    #[serde(default)]
    channels: Value,
    #[serde(default)]
    connected_at_ms: Option<i64>,
}

/// Runs `weir connection …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run_connection(args: ConnectionArgs) -> Result<(), CliError> {
    let client: Client = args.api.client()?;
    let json = args.api.json();
    match args.command {
        ConnectionCommand::List => {
            let value = client.get("/api/connections")?;
            if json {
                return print_json(&value);
            }
            let connections: Vec<ConnectionRow> = parse(value, "GET /api/connections")?;
            let mut table = Table::new(&[
                ">ID",
                "PROTOCOL",
                "PEER",
                "USER",
                "CLIENT",
                ">CHANNELS",
                "CONNECTED-AT",
            ]);
            for connection in &connections {
                table.row(vec![
                    cell(&connection.id),
                    connection.protocol.clone(),
                    connection.peer.clone(),
                    cell(&connection.user),
                    cell(&connection.client),
                    cell(&connection.channels),
                    connection
                        .connected_at_ms
                        .map(time::format_rfc3339)
                        .unwrap_or_default(),
                ]);
            }
            print(&table.render())
        }
        ConnectionCommand::Close { id } => {
            let answer = client
                .call("DELETE", &format!("/api/connections/{}", encode(&id)), None)
                .map_err(|error| {
                    error.hint_for(
                        404,
                        "no such connection; list them with `weir connection list`",
                    )
                })?;
            done(
                json,
                answer,
                json!({ "id": id, "closed": true }),
                &format!("closed connection {id}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_vhost() {
        let list = json!([{"vhost": "/", "name": "a"}, {"vhost": "v", "name": "b"}]);
        assert_eq!(
            filter_vhost(list.clone(), Some("v")),
            json!([{"vhost": "v", "name": "b"}])
        );
        assert_eq!(filter_vhost(list.clone(), None), list);
    }

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
