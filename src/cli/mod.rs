//! The command line (clap). A thin layer: it parses arguments, calls the core
//! (or, for rollout commands, the daemon's API), prints results, and maps
//! outcomes to the exit codes PRODUCT.md section 8 documents. Errors are
//! printed once, lowercase, with their cause chain.

mod audit;
mod policy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "canaryd",
    version,
    about = "Canary rollouts with anytime-valid statistics and automatic rollback"
)]
pub struct Cli {
    /// The daemon's API address.
    #[arg(
        long,
        global = true,
        env = "CANARYD_SERVER",
        default_value = "http://127.0.0.1:7600"
    )]
    pub server: String,
    /// API token (default: <data-dir>/admin.token when it exists).
    #[arg(long, global = true, env = "CANARYD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// State directory (for commands that read it directly).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check and explain rollout policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Read and verify the audit log (with --data-dir: directly, read-only).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; bad arguments exit 1.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => audit::run(cmd, cli.data_dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("canaryd: {e:#}");
            ExitCode::from(1)
        }
    }
}
