//! What the AMQP commands share (the `--vhost` option, vhost filtering),
//! and `weir connection …`.

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::encode;
use super::table::Table;
use super::{cell, parse, print, print_json, time, ApiOptions, CliError, Client};

const CONNECTION_EXAMPLES: &str = "Examples:
  weir connection list
  weir connection close 42";

/// The vhost option shared by the AMQP commands.
#[derive(Debug, Clone, Args)]
pub(super) struct VhostOption {
    /// Virtual host [default: /].
    #[arg(long, global = true)]
    pub(super) vhost: Option<String>,
}

impl VhostOption {
    pub(super) fn get(&self) -> &str {
        self.vhost.as_deref().unwrap_or("/")
    }

    /// The vhost as a URL path segment (`/` is `%2F`).
    pub(super) fn segment(&self) -> String {
        encode(self.get())
    }
}

/// Keeps only the items of `list` in `vhost` (all when `None`).
pub(super) fn filter_vhost(list: Value, vhost: Option<&str>) -> Value {
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
pub(super) fn done(
    json: bool,
    answer: Value,
    fallback: Value,
    message: &str,
) -> Result<(), CliError> {
    if json {
        print_json(if answer.is_null() { &fallback } else { &answer })
    } else {
        print(&format!("{message}\n"))
    }
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
}
