//! The `weir` binary: `weir server` runs the broker; `weir topic`,
//! `weir produce`, `weir status` and the other operator commands talk to a
//! running broker's HTTP API.

mod cli;
mod data;
mod server;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Weir: one message broker for Kafka clients (and, soon, AMQP clients) on a
/// durable, sequentially written log.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (Kafka on 127.0.0.1:9092, data in ./data by default).
    ///
    /// Every setting is a flag, a WEIR_* environment variable, or a key of
    /// the TOML file given with --config, in that order of precedence.
    Server(settings::ServerSettings),
    /// Load a Kafka-protocol or AMQP broker (any, not only Weir) and report
    /// throughput, latency percentiles and the broker's CPU and memory.
    Bench(weir_bench::BenchArgs),
    /// Offline tools for a stopped broker's data directory (`weir data check DIR`).
    Data(data::DataArgs),
    /// The operator commands (`topic`, `group`, `queue`, `exchange`,
    /// `binding`, `connection`, `produce`, `consume`, `status`).
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(settings) => match settings.resolve() {
            Ok(resolved) => server::run(resolved),
            Err(message) => {
                eprintln!("weir: {message}");
                ExitCode::from(2)
            }
        },
        Command::Bench(args) => weir_bench::run(args),
        Command::Data(args) => data::run(args),
        Command::Admin(command) => cli::run(command),
    }
}
