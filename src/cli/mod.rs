//! The command line (clap). A thin layer: it parses arguments, calls the core
//! or the daemon's API, prints results, and maps outcomes to exit codes.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "canaryd",
    version,
    about = "Canary rollouts with anytime-valid statistics and automatic rollback"
)]
pub struct Cli {}

pub fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
