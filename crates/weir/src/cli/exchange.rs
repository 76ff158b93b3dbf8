//! `weir exchange list|declare|delete|publish` and
//! `weir binding list|create|delete`.

use std::io::Read;

use clap::{ArgAction, Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

use super::amqp::{done, filter_vhost, VhostOption};
use super::client::encode;
use super::table::Table;
use super::{cell, json_pairs, parse, print, print_json, ApiOptions, CliError};

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

const EXCHANGE_HINT: &str = "list the exchanges with `weir exchange list` (and check --vhost)";

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
