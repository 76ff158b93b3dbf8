//! Operator commands of the `weir` binary (`weir topic …`, `weir produce`,
//! `weir status`, …): thin clients of the broker's HTTP API.
//!
//! Every command takes `--api` (env `WEIR_API`, default
//! `http://127.0.0.1:15672`) and `--output table|json`. Exit codes: 0 done,
//! 1 the broker refused (its message is printed), 2 usage error, 3 the broker
//! cannot be reached.

mod amqp;
mod client;
mod cluster;
mod consume;
mod error;
mod exchange;
mod group;
mod produce;
mod progress;
mod queue;
mod record;
mod status;
mod table;
mod time;
mod topic;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use client::Client;
pub use error::CliError;

/// The operator commands, flattened into `weir`'s own subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create, list, describe, configure, grow and delete Kafka topics.
    Topic(topic::TopicArgs),
    /// List, describe (lag, rate, time to drain), reset and delete consumer groups.
    Group(group::GroupArgs),
    /// List, declare, read from, purge and delete AMQP queues.
    Queue(queue::QueueArgs),
    /// List, declare, delete and publish to AMQP exchanges.
    Exchange(exchange::ExchangeArgs),
    /// List, add and remove AMQP bindings.
    Binding(exchange::BindingArgs),
    /// List and close client connections (Kafka and AMQP).
    Connection(amqp::ConnectionArgs),
    /// Produce records to a topic from stdin lines or a file.
    #[command(after_help = produce::EXAMPLES)]
    Produce(produce::ProduceArgs),
    /// Print a topic's records to stdout.
    #[command(after_help = consume::EXAMPLES)]
    Consume(consume::ConsumeArgs),
    /// The broker's version, uptime, connections, counts and traffic.
    #[command(after_help = status::EXAMPLES)]
    Status(status::StatusArgs),
    /// The cluster: controller leader, nodes, fenced nodes.
    #[command(after_help = cluster::EXAMPLES)]
    Cluster(cluster::ClusterArgs),
}

/// Runs one operator command, prints its error if any, and returns the exit
/// code (0 ok, 1 refused, 2 usage, 3 unreachable).
pub fn run(command: AdminCommand) -> ExitCode {
    let result = match command {
        AdminCommand::Topic(args) => topic::run(args),
        AdminCommand::Group(args) => group::run(args),
        AdminCommand::Queue(args) => queue::run_queue(args),
        AdminCommand::Exchange(args) => exchange::run_exchange(args),
        AdminCommand::Binding(args) => exchange::run_binding(args),
        AdminCommand::Connection(args) => amqp::run_connection(args),
        AdminCommand::Produce(args) => produce::run(args),
        AdminCommand::Consume(args) => consume::run(args),
        AdminCommand::Status(args) => status::run(args),
        AdminCommand::Cluster(args) => cluster::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir: {error}");
            error.exit_code()
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts (one object per line for `weir consume`).
    Json,
}

/// Options every operator command takes.
#[derive(Debug, Clone, Args)]
pub struct ApiOptions {
    /// URL of the broker's HTTP API.
    #[arg(
        long,
        env = "WEIR_API",
        default_value = "http://127.0.0.1:15672",
        global = true
    )]
    pub api: String,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

impl ApiOptions {
    /// A client for `--api`.
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] for a URL that is not `http://`.
    pub fn client(&self) -> Result<Client, CliError> {
        Client::new(&self.api)
    }

    /// Whether `--output json` was given.
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Reads the API's JSON answer as `T`.
///
/// # Errors
///
/// [`CliError::BadAnswer`] naming `what` when the shape differs.
pub fn parse<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, CliError> {
    serde_json::from_value(value)
        .map_err(|error| CliError::BadAnswer(format!("unexpected answer for {what}: {error}")))
}

/// Writes `text` to stdout; a closed stdout (`weir … | head`) is not an error.
///
/// # Errors
///
/// [`CliError::Local`] for any other write failure.
pub fn print(text: &str) -> Result<(), CliError> {
    write_stdout(text.as_bytes())
}

/// Writes bytes to stdout and flushes (see [`print`]).
///
/// # Errors
///
/// [`CliError::Local`] for a write failure other than a closed pipe.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away: stop quietly, as `cat` does.
            std::process::exit(0)
        }
        Err(error) => Err(CliError::Local(format!("cannot write to stdout: {error}"))),
    }
}

/// Prints `value` as pretty JSON (for `--output json`).
///
/// # Errors
///
/// See [`print`].
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::Local(format!("cannot encode JSON: {error}")))?;
    print(&format!("{text}\n"))
}

/// A JSON value as a table cell: strings without quotes, null as empty.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `name=value` options as a JSON object whose values are JSON when they
/// parse as JSON numbers, booleans or null (`x-max-length=10` → 10) and
/// strings otherwise.
///
/// # Errors
///
/// [`CliError::Usage`] naming the option without `=`.
pub fn json_pairs(
    pairs: &[String],
    option: &str,
) -> Result<serde_json::Map<String, Value>, CliError> {
    let mut map = serde_json::Map::new();
    for (name, text) in record::parse_pairs(pairs, option).map_err(CliError::Usage)? {
        let value = match serde_json::from_str::<Value>(&text) {
            Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => value,
            _ => Value::String(text),
        };
        map.insert(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The CLI as `weir` mounts it, for parsing tests.
    #[derive(Debug, Parser)]
    struct Weir {
        #[command(subcommand)]
        command: AdminCommand,
    }

    fn parse_args(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        Weir::try_parse_from(std::iter::once("weir").chain(args.iter().copied()))
            .map(|weir| weir.command)
    }

    #[test]
    fn global_options_go_anywhere() {
        let AdminCommand::Topic(args) =
            parse_args(&["topic", "list", "--output", "json", "--api", "http://h:1"]).unwrap()
        else {
            panic!("not a topic command")
        };
        assert_eq!(args.api.api, "http://h:1");
        assert!(args.api.json());
        let AdminCommand::Topic(args) = parse_args(&["topic", "--output", "json", "list"]).unwrap()
        else {
            panic!("not a topic command")
        };
        assert!(args.api.json());
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["topic"][..],
            &["topic", "create"],
            &["topic", "list", "--output", "yaml"],
            &["group", "reset-offsets", "g"],
            &[
                "group",
                "reset-offsets",
                "g",
                "--to-earliest",
                "--to-latest",
            ],
            &["consume"],
            &["produce", "t", "--partition", "x"],
        ] {
            let error = parse_args(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }

    #[test]
    fn pairs_become_typed_json() {
        let map = json_pairs(
            &[
                "x-max-length=10".into(),
                "x-queue-type=quorum".into(),
                "flag=true".into(),
            ],
            "--argument",
        )
        .unwrap();
        assert_eq!(map["x-max-length"], Value::from(10));
        assert_eq!(map["x-queue-type"], Value::from("quorum"));
        assert_eq!(map["flag"], Value::from(true));
        assert!(matches!(
            json_pairs(&["x".into()], "--argument"),
            Err(CliError::Usage(_))
        ));
    }
}
