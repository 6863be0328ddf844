//! The command line (clap). A thin layer: it parses arguments, calls the core
//! (or, for rollout commands, the daemon's API), prints results, and maps
//! outcomes to the exit codes PRODUCT.md section 8 documents. Errors are
//! printed once, lowercase, with their cause chain.

mod audit;
pub mod client;
pub mod incident;
mod policy;
pub mod rollout;
mod token;

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
    /// Run the daemon.
    Serve {
        /// The config file (YAML).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// API address (default 127.0.0.1:7600).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// The policies directory (default ./rollout-policies).
        #[arg(long, value_name = "DIR")]
        policies: Option<std::path::PathBuf>,
    },
    /// Start, watch and steer rollouts.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Incidents: list, show, review.
    #[command(subcommand)]
    Incident(incident::IncidentCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// A real rollout on this machine in under two minutes: two services,
    /// the built-in proxy, load, and the daemon; ends with a promotion or a
    /// rollback and its incident.
    Demo {
        /// What is wrong with the canary.
        #[arg(long, value_enum, default_value = "errors")]
        regression: crate::demo::Regression,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token and the config line that grants it.
    Create {
        #[arg(long)]
        actor: String,
        /// viewer, operator, approver:<role>, admin (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
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
    let client = client::Client::new(&cli.server, cli.token.as_deref(), cli.data_dir.as_deref());
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => audit::run(cmd, cli.data_dir.as_deref(), &client),
        Command::Serve {
            config,
            listen,
            policies,
        } => serve(crate::daemon::ServeOptions {
            config,
            data_dir: cli.data_dir.clone(),
            listen,
            policies,
        }),
        Command::Rollout(cmd) => rollout::run(cmd, &client),
        Command::Incident(cmd) => incident::run(cmd, &client, cli.data_dir.as_deref()),
        Command::Token(TokenCommand::Create { actor, roles }) => token::create(&actor, &roles),
        Command::Demo { regression } => {
            init_logs(false);
            crate::demo::run(regression)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("canaryd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logs(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("CANARYD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json_logs = std::env::var("CANARYD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json_logs {
        let _ = builder.json().flatten_event(true).try_init();
    } else {
        let _ = builder.try_init();
    }
}

fn serve(opts: crate::daemon::ServeOptions) -> anyhow::Result<ExitCode> {
    init_logs(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    rt.block_on(crate::daemon::serve(opts))?;
    Ok(ExitCode::SUCCESS)
}
