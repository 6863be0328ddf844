//! `canaryd-sim`: the command line of the simulator. Exit 0 on success, 1 on
//! bad input (with a located error) or a failure.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use canaryd::policy::parse_policy;
use canaryd::yaml::units::{UnitError, parse_duration};
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::source::{Source, parse_replay, replay_from_prometheus};
use canaryd_sim::{SimOptions, simulate};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs a rollout policy many times against simulated or recorded traffic
/// with canaryd's own engine and a virtual clock.
#[derive(Parser)]
#[command(name = "canaryd-sim", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert Prometheus query_range JSON responses into a replay file
    /// (series labelled `arm` and `signal`, optionally `group`; values are
    /// per-step increases).
    ReplayFromPrometheus {
        /// query_range responses (JSON), one or more
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where to write the replay (stdout when absent)
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The rollout policy (YAML)
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The traffic scenario (YAML)
    #[arg(long, conflicts_with = "replay")]
    scenario: Option<PathBuf>,
    /// Recorded per-interval counts (JSON, see simulator/README.md)
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Runs per analysis style
    #[arg(long, default_value_t = 200)]
    runs: u32,
    /// Seed; the same seed gives the same report whatever --threads
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
    /// Also run the threshold (Flagger/Argo), mann-whitney (Kayenta),
    /// sprt-oracle and sprt-oracle-two-sample styles on the same traffic
    #[arg(long)]
    compare: bool,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Time before each approval is granted
    #[arg(long, default_value = "0s", value_parser = duration_arg)]
    approval_delay: Duration,
    /// Divide the policy's bakes, approval timeouts, experiment duration,
    /// emergency bypass and maxDuration by N (a quick look at a policy whose
    /// real schedule is days long; the interval and trigger windows stay)
    #[arg(long, default_value_t = 1)]
    compress: u32,
    /// Failed-check limit of the threshold style (Flagger's `threshold`)
    #[arg(long, default_value_t = canaryd_sim::peers::DEFAULT_FAILURE_LIMIT)]
    failure_limit: u32,
    /// Instead of the Monte Carlo report, print the timeline of run number
    /// RUN (0-based, the same run the report counts): transitions, weights,
    /// gates, and each fired trigger with its evidence
    #[arg(long, value_name = "RUN")]
    trace: Option<u64>,
}

fn duration_arg(s: &str) -> Result<Duration, UnitError> {
    parse_duration(s)
}

static BAR: OnceLock<ProgressBar> = OnceLock::new();

fn tick(n: u64) {
    if let Some(b) = BAR.get() {
        b.inc(n);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::ReplayFromPrometheus { inputs, out }) => convert(&inputs, out.as_ref()),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}:1:1: cannot read the file: {e}", path.display()))
}

fn convert(inputs: &[PathBuf], out: Option<&PathBuf>) -> Result<(), String> {
    let mut files = Vec::new();
    for p in inputs {
        files.push((p.display().to_string(), read(p)?));
    }
    let replay = replay_from_prometheus(&files)?;
    let text = serde_json::to_string_pretty(&replay).map_err(|e| e.to_string())?;
    match out {
        Some(p) => std::fs::write(p, text + "\n")
            .map_err(|e| format!("{}: cannot write: {e}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    let policy_path = args
        .policy
        .as_ref()
        .ok_or("--policy FILE is required (see --help)")?;
    let policy_name = policy_path.display().to_string();
    let policy = parse_policy(&policy_name, &read(policy_path)?).map_err(|d| d.to_string())?;
    if args.compress == 0 {
        return Err("--compress: must be at least 1".into());
    }
    let policy = canaryd_sim::time_compressed(&policy, args.compress);
    let source = match (&args.scenario, &args.replay) {
        (Some(p), None) => {
            let s =
                parse_scenario(&p.display().to_string(), &read(p)?).map_err(|d| d.to_string())?;
            canaryd_sim::model_source(&s, &policy)
        }
        (None, Some(p)) => Source::Replay(parse_replay(&p.display().to_string(), &read(p)?)?),
        _ => return Err("one of --scenario FILE or --replay FILE is required".into()),
    };
    if let Some(index) = args.trace {
        let opts = SimOptions {
            runs: 1,
            seed: args.seed,
            threads: Some(1),
            approval_delay: args.approval_delay,
            compare: false,
            failure_limit: args.failure_limit,
            progress: None,
        };
        let r = canaryd_sim::simulate_one(
            &policy,
            &source,
            canaryd_sim::Analyst::Canaryd,
            args.seed,
            index,
            &opts,
            true,
        )?;
        let at = r.decided_at_s.map_or("-".to_owned(), |s| {
            canaryd::time::format_duration(Duration::from_secs_f64(s))
        });
        println!(
            "run {index} (seed {}): {} at {at}, trigger {}, canary requests {}",
            args.seed,
            r.outcome.as_str(),
            r.trigger.as_deref().unwrap_or("-"),
            r.canary_requests_before_decision
        );
        for line in &r.timeline {
            println!("{line}");
        }
        return Ok(());
    }
    let styles = if args.compare { 5 } else { 1 };
    let show_bar = !args.json && std::io::stderr().is_terminal();
    if show_bar {
        let bar = ProgressBar::with_draw_target(
            Some(u64::from(args.runs) * styles),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} runs, eta {eta}") {
            bar.set_style(style);
        }
        let _ = BAR.set(bar);
    }
    let opts = SimOptions {
        runs: args.runs,
        seed: args.seed,
        threads: args.threads,
        approval_delay: args.approval_delay,
        compare: args.compare,
        failure_limit: args.failure_limit,
        progress: show_bar.then_some(tick as fn(u64)),
    };
    let report = simulate(&policy, &source, &opts)?;
    if let Some(b) = BAR.get() {
        b.finish_and_clear();
    }
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
