//! Checkpoints written by an earlier build keep restoring.
//!
//! `checkpoint_fixture/checkpoint-v1.json` is the checkpoint of a rollout
//! mid-flight (awaiting approval at 10%, every trigger kind and a gate on
//! every metric kind, windows full of data), written by the build of
//! 2026-12-04 before the policy model and the statistics were reshaped.
//! `trace-v1.jsonl` is what that build's rollout did next, never stopped:
//! every effect and every assessment, evidence included, for 40 more
//! intervals. The test restores the old checkpoint with today's build, feeds
//! it the same intervals and requires the same lines, byte for byte. The
//! v1 form was what every build wrote until checkpoint version 2 (compact
//! windows, 2026-12-05): today's build writes version 2, much smaller, and a
//! round trip through it changes nothing the rollout does next.
//!
//! The fixture is never regenerated to make this test pass: a change that
//! cannot read it bumps `CHECKPOINT_VERSION` with a tested migration.
//! `CANARYD_WRITE_CHECKPOINT_FIXTURE=1` writes a new pair (for a new
//! version's fixture, kept beside the old one).

use canaryd::engine::{Actor, Checkpoint, Command, Effect, Input, Phase, Rollout, RolloutSpec};
use canaryd::monitor::Monitor;
use canaryd::policy::{ChangeType, Policy, Weight, parse_policy};
use canaryd::stats::IntervalSnapshot;
use canaryd::time::Timestamp;

const POLICY: &str = include_str!("checkpoint_fixture/policy.yaml");
const CHECKPOINT_V1: &str = include_str!("checkpoint_fixture/checkpoint-v1.json");
const TRACE_V1: &str = include_str!("checkpoint_fixture/trace-v1.jsonl");

const MINUTE_MS: u64 = 60_000;
/// Intervals fed before the checkpoint is taken, and after it.
const BEFORE: u64 = 30;
const AFTER: u64 = 40;

/// splitmix64: a generator that no dependency upgrade can change.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal (Box-Muller, one of the pair).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// About Binomial(n, p): the normal approximation, rounded and clamped.
    fn count(&mut self, n: u64, p: f64) -> u64 {
        let nf = n as f64;
        let x = nf * p + (nf * p * (1.0 - p)).sqrt() * self.normal();
        (x.round().max(0.0) as u64).min(n)
    }
}

/// One interval of traffic at canary weight `weight`: 3,000 requests split
/// by the weight, errors, clicks on impressions, approvals in two groups, a
/// latency per request and a basket value per request.
fn interval(rng: &mut Rng, i: u64, weight: Weight) -> IntervalSnapshot {
    let start = Timestamp::from_millis(i * MINUTE_MS);
    let mut s = IntervalSnapshot::new(start, Timestamp::from_millis((i + 1) * MINUTE_MS));
    let total = 3_000u64;
    let canary = rng.count(total, weight.fraction());
    for (arm, n) in [(&mut s.baseline, total - canary), (&mut s.canary, canary)] {
        arm.add("requests", n);
        arm.add("impressions", n);
        let errors = rng.count(n, 0.01);
        arm.add("errors", errors);
        let clicks = rng.count(n, 0.05);
        arm.add("clicks", clicks);
        let in_a = rng.count(n, 0.5);
        for (group, size) in [("a", in_a), ("b", n - in_a)] {
            let approved = rng.count(size, 0.3);
            arm.add_group("approvals", group, approved);
            arm.add_group("requests", group, size);
        }
        for _ in 0..n {
            let latency_ms = (100f64.ln() + 0.5 * rng.normal()).exp();
            arm.latency_mut("latency_ms").record_ms(latency_ms);
            let basket = (50.0 + 10.0 * rng.normal()).max(0.5);
            arm.latency_mut("basket_ms").record_ms(basket);
        }
    }
    s
}

fn policy() -> Policy {
    parse_policy("policy.yaml", POLICY.as_bytes()).expect("the fixture policy compiles")
}

/// Applies an input and then every effect it produced, acknowledging
/// weights at once; appends each effect to `trace` as a JSON line.
fn handle(
    rollout: &mut Rollout<Monitor>,
    now: Timestamp,
    input: Input<IntervalSnapshot>,
    trace: &mut Vec<String>,
) {
    rollout.handle(now, input).expect("input accepted");
    for _ in 0..1_000 {
        let Some(effect) = rollout.poll_effect() else {
            return;
        };
        trace.push(serde_json::to_string(&effect).expect("effects serialize"));
        let ack = match effect {
            Effect::SetWeight { weight, .. } => Some(weight),
            Effect::Rollback { .. } => Some(Weight::ZERO),
            _ => None,
        };
        if let Some(weight) = ack {
            rollout
                .handle(
                    now,
                    Input::RouterAck {
                        weight,
                        error: None,
                    },
                )
                .expect("ack accepted");
        }
    }
    panic!("effects did not run out");
}

/// Feeds intervals `from..to`, approving (once) three intervals after the
/// checkpoint; records effects and each interval's assessment.
fn drive(
    rollout: &mut Rollout<Monitor>,
    rng: &mut Rng,
    from: u64,
    to: u64,
    trace: &mut Vec<String>,
) {
    for i in from..to {
        let now = Timestamp::from_millis((i + 1) * MINUTE_MS);
        let snapshot = interval(rng, i, rollout.weight());
        handle(rollout, now, Input::Data { snapshot }, trace);
        trace.push(serde_json::to_string(rollout.latest()).expect("assessments serialize"));
        if rollout.phase() == Phase::AwaitingApproval && i >= BEFORE + 3 {
            let command = Command::Approve {
                by: Actor {
                    name: "alice".into(),
                    reason: "looks good".into(),
                    ticket: None,
                },
                role: "owner".into(),
            };
            handle(rollout, now, Input::Command { command }, trace);
        }
    }
}

fn started() -> Rollout<Monitor> {
    let policy = policy();
    let monitor = Monitor::new(&policy).expect("monitor builds");
    let spec = RolloutSpec {
        id: "r-fixture".into(),
        service: "checkout".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        change_type: ChangeType::Standard,
        dry_run: false,
        started_by: "starter".into(),
        reason: None,
        ticket: None,
    };
    Rollout::new(spec, policy, monitor, Timestamp::EPOCH).expect("rollout starts")
}

/// The seed of the traffic after the checkpoint (the generator's state is
/// not part of the checkpoint).
const AFTER_SEED: u64 = 0xC0FF_EE00_0000_0002;

#[test]
fn fixture_writer() {
    if std::env::var_os("CANARYD_WRITE_CHECKPOINT_FIXTURE").is_none() {
        return;
    }
    let mut rollout = started();
    let mut ignored = Vec::new();
    handle(&mut rollout, Timestamp::EPOCH, Input::Tick, &mut ignored);
    drive(&mut rollout, &mut Rng(1), 0, BEFORE, &mut ignored);
    assert_eq!(rollout.phase(), Phase::AwaitingApproval);
    let checkpoint = serde_json::to_string(&rollout.checkpoint()).expect("serializes");
    let mut trace = Vec::new();
    drive(
        &mut rollout,
        &mut Rng(AFTER_SEED),
        BEFORE,
        BEFORE + AFTER,
        &mut trace,
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/checkpoint_fixture");
    std::fs::write(format!("{dir}/checkpoint-new.json"), checkpoint).expect("write");
    std::fs::write(format!("{dir}/trace-new.jsonl"), trace.join("\n") + "\n").expect("write");
}

#[test]
fn a_checkpoint_of_the_reference_build_restores_and_runs_on_identically() {
    let checkpoint: Checkpoint<Monitor> =
        serde_json::from_str(CHECKPOINT_V1).expect("the v1 checkpoint deserializes");
    let mut rollout = Rollout::restore(checkpoint).expect("the v1 checkpoint restores");
    // Today's build writes version 2 (compact windows); a round trip
    // through it changes nothing that the rollout does next.
    let again = serde_json::to_string(&rollout.checkpoint()).expect("serializes");
    assert!(again.starts_with(r#"{"version":2,"#), "{}", &again[..40]);
    assert!(
        again.len() * 4 < CHECKPOINT_V1.len(),
        "compact windows: {} bytes against v1's {}",
        again.len(),
        CHECKPOINT_V1.len()
    );
    let checkpoint: Checkpoint<Monitor> = serde_json::from_str(&again).expect("v2 deserializes");
    let rollout_v2 = Rollout::restore(checkpoint).expect("v2 restores");
    assert_eq!(
        serde_json::to_string(&rollout_v2.checkpoint()).expect("serializes"),
        again,
        "v2 round trip"
    );
    assert_eq!(rollout.phase(), Phase::AwaitingApproval);
    // The reference build predates `requireNoHarm` and `overdispersion`:
    // its checkpoint records neither, so the rollout continues under the
    // rules it started with (the written gates only, tests without
    // inflation), while the same file compiled today gets the defaults.
    let mut as_started = policy();
    assert!(as_started.implied_gates().count() > 0);
    as_started.analysis.require_no_harm = None;
    as_started.analysis.overdispersion = None;
    as_started.gates.retain(|g| !g.is_implied());
    assert_eq!(
        rollout.policy(),
        &as_started,
        "the policy in the checkpoint"
    );
    let mut trace = Vec::new();
    drive(
        &mut rollout,
        &mut Rng(AFTER_SEED),
        BEFORE,
        BEFORE + AFTER,
        &mut trace,
    );
    let expected: Vec<&str> = TRACE_V1.lines().collect();
    assert_eq!(trace.len(), expected.len(), "lines in the trace");
    for (i, (got, want)) in trace.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "line {} of trace-v1.jsonl", i + 1);
    }
    let mut rollout_v2 = rollout_v2;
    let mut trace_v2 = Vec::new();
    drive(
        &mut rollout_v2,
        &mut Rng(AFTER_SEED),
        BEFORE,
        BEFORE + AFTER,
        &mut trace_v2,
    );
    assert!(
        trace_v2 == trace,
        "restored from v2, the rollout runs on as from v1"
    );
    assert!(
        trace.iter().any(|l| l.contains("set-weight")),
        "the trace covers an approval and a weight change"
    );
}
