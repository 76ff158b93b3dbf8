//! `weir data check DIR`: verifies a stopped broker's data directory
//! offline and changes nothing. Exit codes: 0 nothing wrong, 1 damage or
//! metadata problems found (each printed with its path, byte position and
//! offsets), 2 the directory cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use weir_core::data_check::{check_data_dir, DataCheck};

/// `weir data …`.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Verify every log (batch CRCs, offsets, indexes) and the metadata of a
    /// stopped broker's data directory; exit 0 when clean, 1 when damaged.
    #[command(
        after_help = "Examples:\n  weir data check ./data\n  weir data check --verbose /var/lib/weir"
    )]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The data directory (the broker must not be running on it).
    dir: PathBuf,
    /// Also print one line per log checked.
    #[arg(long)]
    verbose: bool,
}

/// Runs a `weir data` command and returns its exit code.
pub fn run(args: DataArgs) -> ExitCode {
    let DataCommand::Check(args) = args.command;
    match check_data_dir(&args.dir) {
        Ok(check) => {
            print_check(&check, args.verbose);
            if check.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("weir: cannot check {}: {error}", args.dir.display());
            ExitCode::from(2)
        }
    }
}

fn print_check(check: &DataCheck, verbose: bool) {
    for report in &check.logs {
        if verbose || !report.is_clean() {
            println!(
                "{} {}: {} segments, {} batches, {} records, offsets {}..{}",
                if report.is_clean() {
                    "ok     "
                } else {
                    "DAMAGED"
                },
                report.dir.display(),
                report.segments,
                report.batches,
                report.records,
                report
                    .log_start_offset
                    .map_or("-".into(), |o| o.to_string()),
                report.log_end_offset.map_or("-".into(), |o| o.to_string()),
            );
        }
        for problem in &report.problems {
            println!("  problem: {problem}");
        }
    }
    for problem in &check.problems {
        println!("problem: {problem}");
    }
    for note in &check.notes {
        println!("note: {note}");
    }
    let damaged = check.logs.iter().filter(|r| !r.is_clean()).count();
    let problems: usize =
        check.logs.iter().map(|r| r.problems.len()).sum::<usize>() + check.problems.len();
    let batches: u64 = check.logs.iter().map(|r| r.batches).sum();
    println!(
        "{} logs checked ({batches} batches), {damaged} damaged, {problems} problems",
        check.logs.len()
    );
}
