//! Options every workload shares, their validation, and the broker
//! watch/progress/report plumbing around a run.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::payload::HEADER_BYTES;
use crate::procstat::{BrokerCost, BrokerWatch};
use crate::report::Report;

/// Largest message size accepted (librdkafka's own `message.max.bytes`
/// ceiling is 1 GB; past 64 MiB a load tool is not measuring a queue).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest number of producers, publishers or consumers of one run.
pub const CLIENTS_MAX: usize = 1024;

/// How the result is shown and what else is measured.
#[derive(Clone, Debug, Args, Serialize)]
pub struct OutputArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Pid of the broker process: report its CPU seconds and RSS during the
    /// run, from /proc/<pid>.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Free text copied into the result (e.g. the broker's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Give up when nothing moves for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_s: u64,
}

/// How much to send and how fast.
#[derive(Clone, Debug, Args, Serialize)]
pub struct LoadArgs {
    /// Messages in all (every producer together). Default 1,000,000 unless
    /// --duration-s is given.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Send for this many seconds instead of a fixed count.
    #[arg(long, conflicts_with = "messages")]
    pub duration_s: Option<f64>,
    /// Open loop: send this many messages per second in all, and measure
    /// latency from each message's scheduled send time. Without it, send as
    /// fast as possible (closed loop).
    #[arg(long = "rate")]
    pub rate_per_s: Option<f64>,
    /// Message (value) size in bytes; at least 16 (sequence number and
    /// send time).
    #[arg(long = "size", short = 's', default_value_t = 100)]
    pub size_bytes: usize,
}

/// Default message count when neither --messages nor --duration-s is given.
pub const MESSAGES_DEFAULT: u64 = 1_000_000;

impl LoadArgs {
    /// Checks the values clap cannot check on its own.
    ///
    /// # Errors
    ///
    /// A sentence naming the bad option.
    pub fn validate(&self) -> Result<(), String> {
        if self.size_bytes < HEADER_BYTES || self.size_bytes > MESSAGE_BYTES_MAX {
            return Err(format!(
                "--size must be {HEADER_BYTES}..={MESSAGE_BYTES_MAX} bytes (each message carries a sequence number and its send time), got {}",
                self.size_bytes
            ));
        }
        if let Some(rate) = self.rate_per_s {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!(
                    "--rate must be a positive number of messages per second, got {rate}"
                ));
            }
        }
        if let Some(duration) = self.duration_s {
            if !(duration.is_finite() && duration > 0.0) {
                return Err(format!("--duration-s must be positive, got {duration}"));
            }
        }
        if self.messages == Some(0) {
            return Err("--messages must be at least 1".into());
        }
        Ok(())
    }

    /// The message count of the run: `--messages`, or what `--rate` sends
    /// in `--duration-s`, or `None` (send until the duration is over).
    pub fn message_count(&self) -> Option<u64> {
        match (self.messages, self.duration_s, self.rate_per_s) {
            (Some(messages), _, _) => Some(messages),
            (None, Some(duration), Some(rate)) => Some(((duration * rate).ceil() as u64).max(1)),
            (None, Some(_), None) => None,
            (None, None, _) => Some(MESSAGES_DEFAULT),
        }
    }

    /// How long to send, when the run is timed rather than counted.
    pub fn duration(&self) -> Option<Duration> {
        self.duration_s.map(Duration::from_secs_f64)
    }

    /// `closed-loop` or `open-loop`.
    pub fn mode(&self) -> &'static str {
        if self.rate_per_s.is_some() {
            "open-loop"
        } else {
            "closed-loop"
        }
    }
}

/// Checks a count of clients (`--producers`, `--consumers`, …).
///
/// # Errors
///
/// When it is 0 or above [`CLIENTS_MAX`].
pub fn validate_clients(option: &str, count: usize) -> Result<(), String> {
    if count == 0 || count > CLIENTS_MAX {
        return Err(format!("{option} must be 1..={CLIENTS_MAX}, got {count}"));
    }
    Ok(())
}

/// Watches the broker when `--broker-pid` was given.
///
/// # Errors
///
/// When the pid was given but cannot be read.
pub fn watch_broker(output: &OutputArgs) -> Result<Option<BrokerWatch>, String> {
    output
        .broker_pid
        .map(BrokerWatch::start)
        .transpose()
        .map_err(|error| format!("--broker-pid: {error}"))
}

/// Fills in what every report has: label, address, parameters, broker cost.
pub fn finish_report(
    report: &mut Report,
    output: &OutputArgs,
    broker_address: &str,
    parameters: &impl Serialize,
    broker: Option<BrokerCost>,
) {
    report.label = output.label.clone();
    report.broker_address = broker_address.to_owned();
    report.parameters = serde_json::to_value(parameters).unwrap_or_default();
    report.broker = broker;
    report.json = output.json;
}

/// Splits `total` into `parts` shares that differ by at most one.
pub fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadArgs, String> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|error| error.to_string())?;
        cli.load.validate()?;
        Ok(cli.load)
    }

    #[test]
    fn defaults_are_a_million_closed_loop() {
        let load = parse(&[]).expect("defaults are valid");
        assert_eq!(load.message_count(), Some(MESSAGES_DEFAULT));
        assert_eq!(load.mode(), "closed-loop");
    }

    #[test]
    fn rejects_bad_sizes_rates_and_counts() {
        assert!(parse(&["--size", "15"]).unwrap_err().contains("--size"));
        assert!(parse(&["--size", "100000000"]).is_err());
        assert!(parse(&["--rate", "0"]).unwrap_err().contains("--rate"));
        assert!(parse(&["--rate", "-5"]).is_err());
        assert!(parse(&["--rate", "NaN"]).is_err());
        assert!(parse(&["--duration-s", "0"]).is_err());
        assert!(parse(&["-n", "0"]).is_err());
        assert!(parse(&["-n", "10", "--duration-s", "1"]).is_err());
        assert!(parse(&["-n", "ten"]).is_err());
    }

    #[test]
    fn duration_and_rate_give_a_count() {
        let load = parse(&["--duration-s", "2.5", "--rate", "1000"]).expect("valid");
        assert_eq!(load.message_count(), Some(2_500));
        assert_eq!(load.mode(), "open-loop");
        let timed = parse(&["--duration-s", "3"]).expect("valid");
        assert_eq!(timed.message_count(), None);
        assert_eq!(timed.duration(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn client_counts_are_bounded() {
        assert!(validate_clients("--producers", 0).is_err());
        assert!(validate_clients("--producers", CLIENTS_MAX + 1).is_err());
        assert!(validate_clients("--producers", 8).is_ok());
    }

    #[test]
    fn shares_add_up() {
        let shares: Vec<u64> = (0..3).map(|index| share(10, 3, index)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(shares.iter().sum::<u64>(), 10);
    }
}
