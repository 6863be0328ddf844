//! canaryd-sim: runs rollout policies offline against simulated or replayed
//! traffic with the daemon's own engine and a virtual clock, many times over
//! (Monte Carlo), and reports how often and how fast each analysis style
//! rolls back, promotes, or runs out of time.
//!
//! It links `canaryd` with `default-features = false`: only the pure core
//! (policy, stats, engine) is available here, which is how the build proves
//! that the core needs no I/O stack.
//!
//! - `scenario.rs`: scenario files → [`scenario::Scenario`] (located errors).
//! - `traffic.rs`: the scenario's traffic model, sampled per interval.
//! - `values.rs`: mean signals' values (for `kind: mean` metrics).
//! - `source.rs`: model or replay; the Prometheus `query_range` converter.
//! - `run.rs`: one rollout on a virtual clock.
//! - `peers.rs`: the `--compare` styles (threshold, Mann-Whitney, the SPRT
//!   oracles: known-baseline and two-sample).
//! - `report.rs`: aggregation, the `--json` report and the table.
//!
//! Reproducibility: run `i` draws its traffic from Xoshiro256++ seeded with
//! `(seed, i)` alone, so the thread count never changes a result, and every
//! style sees the same counts for the same run (while their weight schedules
//! agree). Latencies come from a second
//! stream seeded from the first, drawn as far as the analysis reads them
//! (in full under `--compare`, so every style sees the same latencies too).

pub mod latency;
pub mod peers;
pub mod report;
pub mod run;
pub mod sampling;
pub mod scenario;
pub mod source;
pub mod traffic;
pub mod values;

pub use canaryd::policy;

use std::time::Duration;

use canaryd::monitor::Monitor;
use canaryd::policy::{Metric, Policy};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rayon::prelude::*;

use peers::{PeerAnalysis, Style};
use report::{Report, StyleResult};
use run::{RunOptions, RunResult, run_one};
use source::Source;

/// Most runs accepted in one invocation (a loop bound).
pub const MAX_RUNS: u32 = 1_000_000;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub runs: u32,
    pub seed: u64,
    /// `None`: all cores.
    pub threads: Option<usize>,
    pub approval_delay: Duration,
    pub compare: bool,
    /// Flagger's failed-check limit for the `threshold` style.
    pub failure_limit: u32,
    /// Called after each finished run (progress bars).
    pub progress: Option<fn(u64)>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            runs: 200,
            seed: 1,
            threads: None,
            approval_delay: Duration::from_secs(3600),
            compare: false,
            failure_limit: peers::DEFAULT_FAILURE_LIMIT,
            progress: None,
        }
    }
}

/// The analysis a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Analyst {
    Canaryd,
    Peer(Style),
}

impl Analyst {
    pub fn name(self) -> &'static str {
        match self {
            Analyst::Canaryd => "canaryd",
            Analyst::Peer(s) => s.name(),
        }
    }
}

/// The run's seed from the invocation's seed and the run index (splitmix64).
pub fn run_seed(seed: u64, index: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(seed ^ mix(index))
}

/// Whether any metric of the policy reads latency (else latency is not
/// sampled at all).
pub fn needs_latency(policy: &Policy) -> bool {
    policy
        .metrics
        .values()
        .any(|m| matches!(m, Metric::Latency { .. }))
}

/// The counters a policy reads per group: both sides of its `groupBy`
/// metrics (the engine's disparity checks and the peers read these alone).
pub fn grouped_signals(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for m in policy.metrics.values() {
        if let Metric::Ratio {
            numerator,
            denominator,
            group_by: Some(_),
        } = m
        {
            out.extend([numerator.clone(), denominator.clone()]);
        }
    }
    out
}

/// The value signals a policy's `kind: mean` metrics read.
pub fn mean_signals(policy: &Policy) -> Vec<String> {
    policy
        .metrics
        .values()
        .filter_map(|m| match m {
            Metric::Mean { signal } => Some(signal.clone()),
            Metric::Ratio { .. } | Metric::Latency { .. } => None,
        })
        .collect()
}

/// A source from a scenario, sampling latency only when the policy reads it,
/// group counts only for the counters it reads per group and mean signals'
/// values only for the ones it reads.
pub fn model_source(scenario: &scenario::Scenario, policy: &Policy) -> Source {
    Source::Model(Box::new(
        traffic::TrafficModel::new(scenario, needs_latency(policy))
            .grouping_only(&grouped_signals(policy))
            .means_only(&mean_signals(policy)),
    ))
}

/// A copy of `policy` with every bake, approval timeout, experiment duration
/// and `maxDuration` divided by `factor` (at least 1s each); the interval
/// and the triggers' own windows stay. For tests and quick looks at policies
/// whose real schedule is days long.
pub fn time_compressed(policy: &Policy, factor: u32) -> Policy {
    use canaryd::policy::Step;
    let f = factor.max(1);
    let scale = |d: Duration| (d / f).max(Duration::from_secs(1));
    let mut p = policy.clone();
    for step in &mut p.steps {
        match step {
            Step::Bake(d) => *d = scale(*d),
            Step::Approval(a) => a.timeout = a.timeout.map(scale),
            Step::SetWeight(_) => {}
        }
    }
    p.analysis.max_duration = scale(p.analysis.max_duration);
    if let Some(e) = &mut p.experiment {
        e.duration = scale(e.duration);
    }
    p.emergency.bypass_for = scale(p.emergency.bypass_for);
    p
}

/// One run of one analyst, seeded by `(seed, index)`.
pub fn simulate_one(
    policy: &Policy,
    source: &Source,
    analyst: Analyst,
    seed: u64,
    index: u64,
    opts: &SimOptions,
    record_timeline: bool,
) -> Result<RunResult, String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(run_seed(seed, index));
    let run_opts = RunOptions {
        approval_delay: opts.approval_delay,
        record_timeline,
        full_latency: opts.compare,
    };
    match analyst {
        Analyst::Canaryd => {
            let mut monitor = Monitor::new(policy).map_err(|e| policy_rejected(policy, &e))?;
            // Only the evidence of the trigger that fires is reported.
            monitor.set_lean(true);
            run_one(policy, monitor, source, &mut rng, &run_opts)
        }
        Analyst::Peer(style) => {
            let a = PeerAnalysis::new(policy, style, opts.failure_limit, source.model())
                .map_err(|e| policy_rejected(policy, &e))?;
            run_one(policy, a, source, &mut rng, &run_opts)
        }
    }
}

fn policy_rejected(policy: &Policy, e: &dyn std::fmt::Display) -> String {
    format!(
        "policy `{}` cannot be simulated: the engine's analysis rejects it: {e}",
        policy.name
    )
}

/// Checks that the engine accepts the policy (before spending any time).
pub fn check_policy(policy: &Policy) -> Result<(), String> {
    Monitor::new(policy)
        .map(|_| ())
        .map_err(|e| policy_rejected(policy, &e))
}

/// The Monte Carlo: `opts.runs` runs per analyst, in parallel.
pub fn simulate(policy: &Policy, source: &Source, opts: &SimOptions) -> Result<Report, String> {
    check_policy(policy)?;
    if opts.runs == 0 || opts.runs > MAX_RUNS {
        return Err(format!(
            "--runs: must be from 1 to {MAX_RUNS}, got {}",
            opts.runs
        ));
    }
    let mut analysts = vec![Analyst::Canaryd];
    if opts.compare {
        analysts.extend([
            Analyst::Peer(Style::Threshold),
            Analyst::Peer(Style::MannWhitney),
            Analyst::Peer(Style::SprtOracle),
            Analyst::Peer(Style::SprtOracleTwoSample),
        ]);
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = opts.threads {
        builder = builder.num_threads(n.max(1));
    }
    let pool = builder
        .build()
        .map_err(|e| format!("cannot start threads: {e}"))?;
    let mut results = Vec::new();
    for analyst in analysts {
        let runs: Vec<RunResult> = pool.install(|| {
            (0..u64::from(opts.runs))
                .into_par_iter()
                .map(|i| {
                    let r = simulate_one(policy, source, analyst, opts.seed, i, opts, false);
                    if let Some(tick) = opts.progress {
                        tick(1);
                    }
                    r
                })
                .collect::<Result<Vec<_>, String>>()
        })?;
        results.push(StyleResult::aggregate(analyst.name(), &runs));
    }
    Ok(Report {
        scenario: source.name(),
        policy: policy.name.clone(),
        runs: opts.runs,
        seed: opts.seed,
        results,
    })
}
