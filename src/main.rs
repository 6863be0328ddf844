//! The `canaryd` binary: parse the command line, run it, print errors once
//! (lowercase, with their cause chain) and exit with the code PRODUCT.md
//! section 8 documents.
//!
//! This is where the command line meets the server. `serve` runs the
//! daemon, `demo` runs one in-process, `token create` mints a token for its
//! config, and `--data-dir` hands `incident` and `audit` the state itself
//! (read-only, through the daemon's own views). Everything else is a client
//! of the API (`canaryd::cli`), which knows nothing of the daemon's insides.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use canaryd::cli::audit::AuditCommand;
use canaryd::cli::config::{ConfigChecker, ConfigCommand};
use canaryd::cli::incident::IncidentCommand;
use canaryd::cli::policy::PolicyCommand;
use canaryd::cli::rollout::RolloutCommand;
use canaryd::cli::{self, Client, StateReader};
use canaryd::daemon::{self, auth, view};
use canaryd::store::Store;
use canaryd::wire::{AuditEntry, AuditVerification, Incident};

#[derive(Debug, Parser)]
#[command(
    name = "canaryd",
    version,
    about = "Canary rollouts with anytime-valid statistics and automatic rollback"
)]
struct Cli {
    /// The daemon's API address.
    #[arg(
        long,
        global = true,
        env = "CANARYD_SERVER",
        default_value = "http://127.0.0.1:7600"
    )]
    server: String,
    /// API token [env: CANARYD_TOKEN] (default: <data-dir>/admin.token when
    /// it exists and no other token is given).
    #[arg(long, global = true)]
    token: Option<String>,
    /// A file holding the API token [env: CANARYD_TOKEN_FILE].
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) to trust for an `https://` server, instead
    /// of the system's roots.
    #[arg(long, global = true, value_name = "FILE", env = "CANARYD_CACERT")]
    cacert: Option<PathBuf>,
    /// State directory (for commands that read it directly).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and explain rollout policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check the daemon's config file, offline.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Read and verify the audit log (with --data-dir: directly, read-only).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the daemon.
    Serve {
        /// The config file (YAML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// API address (default 127.0.0.1:7600).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// The policies directory (default ./rollout-policies).
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
    /// Start, watch and steer rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Incidents: list, show, review.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a shell completion script: `source <(canaryd completions bash)`,
    /// or save it where your shell loads completions from.
    Completions {
        #[arg(value_enum)]
        shell: cli::completions::CompletionShell,
    },
    /// Print the man page (roff): `canaryd man > canaryd.1; man ./canaryd.1`.
    Man,
    /// A real rollout on this machine in under two minutes: two services,
    /// the built-in proxy, load, and the daemon; ends with a promotion or a
    /// rollback and its incident.
    Demo {
        /// What is wrong with the canary.
        #[arg(long, value_enum, default_value = "errors")]
        regression: canaryd::demo::Regression,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new token and the config line that grants it.
    Create {
        #[arg(long)]
        actor: String,
        /// viewer, operator, approver:<role>, admin (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; bad arguments exit 1.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let client = Client::from_command_line(
        &cli.server,
        cli.token.as_deref(),
        cli.token_file.as_deref(),
        cli.data_dir.as_deref(),
    );
    let client = match &cli.cacert {
        None => client,
        Some(ca) => match client.trusting(ca) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: --cacert: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let data_dir = cli.data_dir.clone().map(DataDir);
    // `incident` and `audit` read the data dir when one is given.
    let state: &dyn StateReader = match &data_dir {
        Some(dir) => dir,
        None => &client,
    };
    let result = match cli.command {
        Command::Policy(cmd) => cli::policy::run(cmd),
        Command::Audit(cmd) => cli::audit::run(cmd, state),
        Command::Config(cmd) => cli::config::run(
            cmd,
            &OfflineCheck {
                data_dir: cli.data_dir.clone(),
            },
        ),
        Command::Serve {
            config,
            listen,
            policies,
        } => serve(daemon::ServeOptions {
            config,
            data_dir: cli.data_dir,
            listen,
            policies,
        }),
        Command::Rollout(cmd) => cli::rollout::run(cmd, &client),
        Command::Incident(cmd) => cli::incident::run(cmd, state, &client),
        Command::Token(TokenCommand::Create { actor, roles }) => create_token(&actor, &roles),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            cli::completions::completions(shell, &mut command, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            cli::completions::man_page(&command, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
        Command::Demo { regression } => {
            init_logs(false);
            canaryd::demo::run(regression)
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

fn serve(opts: daemon::ServeOptions) -> anyhow::Result<ExitCode> {
    malloc_tuning();
    init_logs(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    rt.block_on(daemon::serve(opts))?;
    Ok(ExitCode::SUCCESS)
}

/// glibc malloc's settings for a long-running daemon, which glibc reads
/// from its environment at start, and only then. `serve` therefore runs
/// itself again, once, with those of them the environment does not set
/// (an operator's choice is kept), in the same process (`exec`). Setting
/// them in-process would need `unsafe` (`mallopt`), which the crate
/// forbids.
///
/// - `MALLOC_MMAP_THRESHOLD_=131072`: glibc raises its mmap threshold each
///   time a large block is freed, so after one big request body the next
///   ones come from heap arenas that keep the memory: 16 hostile 8 MB
///   observation bodies in parallel left the daemon at 74 MB RSS. With a
///   fixed threshold every block over 128 KiB is its own mapping, returned
///   when freed: the same load peaks at 59 MB and leaves 16 MB.
/// - `MALLOC_ARENA_MAX=2`: by default each thread that allocates while
///   another holds its arena gets an arena of its own, up to 8 per core;
///   every arena keeps what was freed in it after a step's peak (the
///   runtime's workers and blocking threads take turns on the same
///   rollouts). Two arenas for two cores' worth of contention: 1,000
///   rollouts at 30 s took 184 KiB of RSS each with glibc's default and
///   104 KiB with two (`benches/daemon_scale.rs`, `memory`), for no
///   measurable CPU.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TUNING: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ("MALLOC_ARENA_MAX", "2"),
];

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_tuning() {
    use std::os::unix::process::CommandExt;
    let missing: Vec<(&str, &str)> = MALLOC_TUNING
        .into_iter()
        .filter(|(var, _)| std::env::var_os(var).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let error = std::process::Command::new(&exe)
        .arg0(argv0)
        .args(args)
        .envs(missing.iter().copied())
        .exec();
    // `exec` returns only when it failed: run on with glibc's defaults.
    let names: Vec<&str> = missing.iter().map(|(var, _)| *var).collect();
    eprintln!(
        "canaryd: cannot run again with {} set ({error}); memory freed after peaks may stay held",
        names.join(" and ")
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_tuning() {}

/// `canaryd token create`: a new bearer token and the config line that
/// grants it. Only the SHA-256 goes into the config; the token is shown once.
fn create_token(actor: &str, roles: &[String]) -> anyhow::Result<ExitCode> {
    if actor.trim().is_empty() {
        bail!("--actor must not be empty");
    }
    if roles.is_empty() {
        bail!("--roles needs at least one role");
    }
    let mut parsed = Vec::new();
    for r in roles {
        parsed.push(auth::Role::parse(r.trim()).map_err(|e| anyhow::anyhow!("--roles: {e}"))?);
    }
    let token = auth::new_token().map_err(|e| anyhow::anyhow!("cannot draw random bytes: {e}"))?;
    let roles_yaml: Vec<String> = parsed
        .iter()
        .map(|r| format!("{:?}", r.to_string()))
        .collect();
    println!("token: {token}");
    println!(
        "# add to the config's `tokens:`, check it (`canaryd config check FILE`) and reload the daemon (SIGHUP); the token itself is not stored anywhere"
    );
    println!(
        "  - {{ actor: {:?}, sha256: \"{}\", roles: [{}] }}",
        actor,
        auth::sha256_hex(&token),
        roles_yaml.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `--data-dir`: the daemon's records read from its state directly, through
/// a read-only store (safe beside a running daemon), opened per read.
struct DataDir(PathBuf);

impl DataDir {
    fn store(&self) -> anyhow::Result<Store> {
        Store::open_read_only(&self.0)
            .with_context(|| format!("cannot read the state in {}", self.0.display()))
    }
}

impl StateReader for DataDir {
    fn incidents(&self) -> anyhow::Result<Vec<Incident>> {
        Ok(view::incidents(&self.store()?)?)
    }

    fn incident(&self, id: &str) -> anyhow::Result<Incident> {
        Ok(view::incident(&self.store()?, id)?)
    }

    fn audit_log(&self) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(view::audit_log(&self.store()?)?)
    }

    fn audit_verify(&self) -> anyhow::Result<AuditVerification> {
        Ok(view::audit_verification(&self.store()?)?)
    }

    fn restart_audit_chain(&self, actor: &str, reason: &str) -> anyhow::Result<AuditVerification> {
        use canaryd::daemon::clock::{Clock, SystemClock};
        Store::restart_chain(&self.0, actor, reason, SystemClock.now())
            .with_context(|| format!("cannot restart the audit chain in {}", self.0.display()))?;
        Ok(view::audit_verification(&self.store()?)?)
    }
}

/// `config check`: the daemon's own offline check (`serve` runs the same),
/// with `--data-dir` applied as `serve` applies it.
struct OfflineCheck {
    data_dir: Option<PathBuf>,
}

impl ConfigChecker for OfflineCheck {
    fn check(&self, file: &std::path::Path) -> cli::config::Report {
        use daemon::config::offline::{self, Place, Severity};
        let checked = offline::check_file(
            Some(file),
            &offline::Overrides {
                data_dir: self.data_dir.clone(),
                ..offline::Overrides::default()
            },
        );
        let problems = checked
            .findings
            .iter()
            .map(|f| {
                let (file, pos, flag) = match &f.place {
                    Place::At { file, pos } => (Some(file.clone()), Some(*pos), None),
                    Place::Flag(flag) => (None, None, Some(flag.to_string())),
                    Place::Default { file } => (file.clone(), None, None),
                };
                cli::config::Problem {
                    severity: match f.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    },
                    file,
                    line: pos.map(|p| p.line),
                    col: pos.map(|p| p.col),
                    flag,
                    path: f.path.clone(),
                    message: f.message.clone(),
                    text: f.to_string(),
                }
            })
            .collect();
        let summary = checked.config.as_ref().map(|c| {
            let n = |k: usize, one: &str, many: &str| {
                format!("{k} {}", if k == 1 { one } else { many })
            };
            let age = |a: Option<std::time::Duration>| {
                a.map_or("forever".to_string(), canaryd::time::format_duration)
            };
            let r = &c.retention;
            format!(
                "valid: {}, {}, {}; retention: journal {}, rollouts {}, audit {}, every {}",
                n(c.services.len(), "service", "services"),
                n(c.tokens.len(), "token", "tokens"),
                n(c.registries.len(), "registry", "registries"),
                age(r.ages.journal),
                age(r.ages.rollouts),
                age(r.ages.audit),
                canaryd::time::format_duration(r.every)
            )
        });
        cli::config::Report { problems, summary }
    }
}
