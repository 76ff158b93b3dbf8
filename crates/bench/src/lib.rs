//! `weir bench`: a load tool for any Kafka-protocol or AMQP 0-9-1 broker.
//!
//! Workloads, one module per protocol family:
//!
//! * [`kafka`] — `kafka produce`, `kafka consume`, `kafka e2e` and
//!   `kafka rebalance`, on librdkafka (the `rdkafka` crate, bundled build),
//!   the client production uses.
//! * [`amqp`] — `amqp publish`, `amqp consume` and `amqp e2e`, on `lapin`.
//!
//! Two ways to load a broker:
//!
//! * **closed loop** (no `--rate`): send as fast as the client and the broker
//!   allow; the figure is the maximum throughput.
//! * **open loop** (`--rate N`): message *i* is scheduled at `start + i / N`
//!   and its latency runs from that scheduled time, not from when the client
//!   got round to sending it, so a broker that stalls is charged for every
//!   message that queued up behind the stall (no coordinated omission).
//!
//! Latencies go into HDR histograms ([`histogram`]); the result is a table
//! or one JSON object ([`report`]); the broker's CPU seconds and RSS come
//! from `/proc/<pid>` when `--broker-pid` is given ([`procstat`]).

pub mod amqp;
pub mod check;
pub mod histogram;
pub mod kafka;
pub mod pacing;
pub mod payload;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod run;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Arguments of `weir bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The protocol family and workload.
    #[command(subcommand)]
    pub family: Family,
}

/// `weir bench kafka …` or `weir bench amqp …`.
#[derive(Debug, Subcommand)]
pub enum Family {
    /// Kafka-protocol workloads (librdkafka).
    #[command(subcommand)]
    Kafka(kafka::KafkaCommand),
    /// AMQP 0-9-1 workloads (lapin).
    #[command(subcommand)]
    Amqp(amqp::AmqpCommand),
}

/// Runs one workload and prints its result (a table, or JSON with `--json`).
///
/// Exit code 0 when the run completed (every message acknowledged or read,
/// nothing lost or duplicated), 2 when it ran but did not complete, 1 when
/// it could not run (bad arguments, broker unreachable).
pub fn run(args: BenchArgs) -> ExitCode {
    let outcome = match args.family {
        Family::Kafka(command) => kafka::run(command),
        Family::Amqp(command) => amqp::run(command),
    };
    match outcome {
        Ok(report) => {
            report.print();
            if report.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(error) => {
            eprintln!("weir bench: {error}");
            ExitCode::FAILURE
        }
    }
}
