//! Storage soak: short rollouts churned through the store's real commit
//! path (create, a tick, the router's ack, data intervals, an abort, the
//! router's ack of weight 0: ended; their lifecycle hooks run as the
//! outbox runs them), many services at once, with pruning
//! passes throughout, as the daemon's retention task runs them. Prints the
//! database file's size (and free pages, the WAL, the tables' rows) as the
//! churn goes on, beside the same churn with nothing pruned (the baseline,
//! measured in the same run), so the figure is a ratio.
//!
//! `cargo bench --bench storage_soak`; sizes by environment:
//! `CANARYD_SOAK_ROLLOUTS` (default 2,000; the full run: 100000),
//! `CANARYD_SOAK_INTERVALS` data intervals per rollout (default 8),
//! `CANARYD_SOAK_BASELINE=0` skips the baseline (a full run's baseline
//! file grows to gigabytes), `CANARYD_SOAK_RELEASE=0` keeps free pages in
//! the file (no incremental vacuum).
#![allow(clippy::disallowed_methods)] // benches read the clock

use std::time::{Duration, Instant};

use canaryd::engine::{Actor, Command, Effect, Input, Rollout, RolloutSpec};
use canaryd::monitor::Monitor;
use canaryd::policy::{ChangeType, Policy, Weight, parse_policy};
use canaryd::stats::IntervalSnapshot;
use canaryd::store::{Ages, Budget, EngineStep, PreparedStep, Store};
use canaryd::time::Timestamp;

const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: soak }
spec:
  analysis: { interval: 1s, alpha: 0.01, minSamples: 1000000000, maxDuration: 24h }
  steps: [ { setWeight: 10 }, { bake: 24h }, { setWeight: 100 } ]
  metrics:
    errors: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - { name: error-rate, metric: errors, threshold: { above: 1% } }
    - { name: errors-vs-baseline, metric: errors, vsBaseline: { relativeIncrease: 20% } }
    - { name: p95, metric: latency, quantile: 0.95, vsBaseline: { relativeIncrease: 10% } }
";

/// Services churning at once (one active rollout each).
const SERVICES: usize = 32;
/// Simulated seconds between two pruning passes.
const PASS_EVERY_S: u64 = 30;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn snapshot(t: u64) -> IntervalSnapshot {
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(t * 1000),
        Timestamp::from_millis((t + 1) * 1000),
    );
    for (arm, n) in [(&mut s.baseline, 900u64), (&mut s.canary, 100u64)] {
        arm.add("requests", n);
        arm.add("errors", n / 500);
        let h = arm.latency_mut("latency_ms");
        for k in 0..n {
            h.record_us(20_000 + (k * 7919) % 180_000);
        }
    }
    s
}

struct Live {
    rollout: Rollout<Monitor>,
    /// Inputs still to feed, in order.
    script: Vec<Input<IntervalSnapshot>>,
}

fn start(
    store: &mut Store,
    policy: &Policy,
    n: u64,
    service: usize,
    t: u64,
    intervals: u64,
) -> Live {
    let spec = RolloutSpec {
        id: format!("r-{n:08}"),
        service: format!("svc-{service}"),
        baseline: "1".into(),
        canary: "2".into(),
        change_type: ChangeType::Standard,
        dry_run: false,
        started_by: "soak".into(),
        reason: None,
        ticket: None,
    };
    let now = Timestamp::from_millis(t * 1000);
    let monitor = Monitor::new(policy).expect("policy builds");
    let rollout = Rollout::new(spec, policy.clone(), monitor, now).expect("valid spec");
    store
        .create_rollout(&rollout, "sha256:soak", now)
        .expect("create");
    let mut script = vec![
        Input::Tick,
        Input::RouterAck {
            weight: Weight::new(10).expect("10%"),
            error: None,
        },
    ];
    script.extend((0..intervals).map(|i| Input::Data {
        snapshot: snapshot(t + i),
    }));
    script.push(Input::Command {
        command: Command::Abort {
            by: Actor {
                name: "soak".into(),
                reason: "soak".into(),
                ticket: None,
            },
        },
    });
    script.push(Input::RouterAck {
        weight: Weight::ZERO,
        error: None,
    });
    script.reverse();
    Live { rollout, script }
}

/// One input of a live rollout, prepared for the group commit.
fn advance(live: &mut Live, now: Timestamp) -> Option<PreparedStep> {
    let input = live.script.pop()?;
    live.rollout.handle(now, input.clone()).ok()?;
    let mut effects = Vec::new();
    while let Some(e) = live.rollout.poll_effect() {
        effects.push(e);
    }
    let checkpoint = effects.iter().any(|e| matches!(e, Effect::Checkpoint))
        || live.rollout.phase().is_terminal();
    Some(
        EngineStep {
            at: now,
            input: &input,
            effects: &effects,
            rollout: &live.rollout,
            checkpoint,
            audit: &[],
        }
        .prepare()
        .expect("prepare"),
    )
}

struct Report {
    file_mb: f64,
    per_rollout_ms: f64,
}

/// Churn `total` rollouts; prune with `ages` (None: never). Prints a line
/// per tenth of the run; returns the last size and the commit cost.
fn churn(
    label: &str,
    total: u64,
    intervals: u64,
    ages: Option<Ages>,
    budget: Budget,
) -> Vec<Report> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open(dir.path()).expect("open");
    let policy = parse_policy("soak.yaml", POLICY.as_bytes()).expect("policy");
    let mut live: Vec<Option<Live>> = (0..SERVICES).map(|_| None).collect();
    let mut started = 0u64;
    let mut ended = 0u64;
    let mut t = 1_000u64;
    let mut next_pass = t + PASS_EVERY_S;
    let report_every = (total / 10).max(1);
    let mut next_report = report_every;
    let mut reports = Vec::new();
    let clock = Instant::now();
    let mut prune_time = Duration::ZERO;
    println!(
        "{label}: {:>8} {:>9} {:>9} {:>8} {:>10} {:>8} {:>8} {:>9}",
        "ended", "file MB", "free MB", "WAL MB", "journal", "audit", "rows", "ms/roll"
    );
    while ended < total {
        let now = Timestamp::from_millis(t * 1000);
        let mut steps = Vec::new();
        for (service, slot) in live.iter_mut().enumerate() {
            if slot.is_none() && started < total {
                *slot = Some(start(&mut store, &policy, started, service, t, intervals));
                started += 1;
            }
            if let Some(l) = slot {
                match advance(l, now) {
                    Some(step) => steps.push(step),
                    None => {
                        *slot = None;
                        ended += 1;
                    }
                }
            }
        }
        // The committer's group commit: one transaction per tick.
        if !steps.is_empty() {
            store.commit_prepared(&steps).expect("commit");
        }
        // The outbox runs the lifecycle hooks queued (a rollout with one
        // pending is kept whole), one transaction each, as the daemon's.
        for run in store.pending_hook_runs().expect("pending hooks") {
            store
                .record_hook_attempt(run.id, now, Ok(()), true)
                .expect("hook ran");
        }
        if let Some(ages) = &ages
            && t >= next_pass
        {
            next_pass = t + PASS_EVERY_S;
            let p = Instant::now();
            for _ in 0..100_000 {
                if store
                    .prune_step(now, ages, budget)
                    .expect("prune")
                    .is_idle()
                {
                    break;
                }
            }
            prune_time += p.elapsed();
        }
        if ended >= next_report {
            next_report += report_every;
            let size = store.storage_size().expect("size");
            let mb = |b: u64| b as f64 / (1 << 20) as f64;
            let per = clock.elapsed().as_secs_f64() * 1000.0 / ended.max(1) as f64;
            println!(
                "{label}: {:>8} {:>9.2} {:>9.2} {:>8.2} {:>10} {:>8} {:>8} {:>9.3}",
                ended,
                mb(size.file_bytes),
                mb(size.free_bytes),
                mb(size.wal_bytes),
                size.journal_rows,
                size.audit_entries,
                size.rollouts,
                per
            );
            reports.push(Report {
                file_mb: mb(size.file_bytes),
                per_rollout_ms: per,
            });
        }
        t += 1;
    }
    if ages.is_some() {
        println!(
            "{label}: pruning took {:.1}% of the run's time",
            100.0 * prune_time.as_secs_f64() / clock.elapsed().as_secs_f64()
        );
    }
    reports
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // else: run a token size then.
    let bench = std::env::args().any(|a| a == "--bench");
    let total = env("CANARYD_SOAK_ROLLOUTS", if bench { 2_000 } else { 100 });
    let intervals = env("CANARYD_SOAK_INTERVALS", 8);
    let baseline = env("CANARYD_SOAK_BASELINE", 1) == 1;
    // Simulated seconds: a rollout lasts about `intervals + 4` of them.
    let ages = Ages {
        journal: Some(Duration::from_secs(60)),
        rollouts: Some(Duration::from_secs(120)),
        audit: Some(Duration::from_secs(180)),
    };
    println!(
        "storage soak: {total} rollouts of {intervals} intervals, {SERVICES} services at once; retention journal 60s, rollouts 120s, audit 180s (simulated), a pass every {PASS_EVERY_S}s"
    );
    let budget = Budget {
        pages: if env("CANARYD_SOAK_RELEASE", 1) == 1 {
            Budget::default().pages
        } else {
            0
        },
        ..Budget::default()
    };
    let pruned = churn("retention", total, intervals, Some(ages), budget);
    if baseline {
        let kept = churn("baseline ", total, intervals, None, budget);
        if let (Some(p), Some(k)) = (pruned.last(), kept.last()) {
            println!(
                "at the end: file {:.2} MB with retention vs {:.2} MB without ({:.3}x); commit+prune cost per rollout {:.3} ms vs {:.3} ms ({:.2}x)",
                p.file_mb,
                k.file_mb,
                p.file_mb / k.file_mb,
                p.per_rollout_ms,
                k.per_rollout_ms,
                p.per_rollout_ms / k.per_rollout_ms
            );
        }
    }
}
